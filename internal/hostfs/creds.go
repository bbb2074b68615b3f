package hostfs

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// Creds are the filesystem ids a request runs its host system calls with.
type Creds struct {
	// UID and GID become the thread's fsuid and fsgid.
	UID, GID uint32
	// Groups are the caller's supplementary groups; nil when the kernel
	// sent none, which runs the request with none.
	Groups []uint32
}

// CredsOf returns the caller's ids from ctx; a nil ctx is root.
func CredsOf(ctx *fuseproto.Context) Creds {
	if ctx == nil {
		return Creds{}
	}
	return Creds{UID: ctx.UID, GID: ctx.GID, Groups: ctx.SuppGroups}
}

// IsRoot reports whether c needs no switch: uid 0, gid 0 and no
// supplementary groups, which the daemon (running as root) already has.
func (c Creds) IsRoot() bool { return c.UID == 0 && c.GID == 0 && len(c.Groups) == 0 }

// enter switches the locked calling thread to c. Groups go first, while the
// thread still has its capabilities, then the gid, then the uid.
func (c Creds) enter(noGroups bool) error {
	groups := c.Groups
	if groups == nil {
		groups = []uint32{}
	}
	if e := rawSetgroups(groups); e != 0 && !noGroups {
		return e
	}
	if !rawSetfsgid(c.GID) || !rawSetfsuid(c.UID) {
		return unix.EPERM
	}
	return nil
}

// Switcher runs functions with a caller's fsuid, fsgid and supplementary
// groups on a locked OS thread, and puts the daemon's own ids back
// afterwards. It is safe for concurrent use.
type Switcher struct {
	log hclog.Logger
	// uid, gid and groups are the daemon's own ids, which AsCaller
	// restores after running with a caller's.
	uid, gid uint32
	groups   []uint32
	// noGroups is set in a user namespace whose setgroups is denied
	// (an unprivileged daemon mapping only its own gid): requests then
	// run with the daemon's supplementary groups, which are none.
	noGroups bool
}

// NewSwitcher records the daemon's effective uid and gid and its
// supplementary groups, which every switch restores. log receives the error
// when a thread cannot be restored; nil discards it. The error, if any,
// names the failing call; callers add their own package prefix.
func NewSwitcher(log hclog.Logger) (*Switcher, error) {
	groups, e := rawGetgroups()
	if e != 0 {
		return nil, fmt.Errorf("getgroups: %w", e)
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	b, _ := os.ReadFile("/proc/self/setgroups")
	return &Switcher{
		log:      log,
		uid:      uint32(unix.Geteuid()),
		gid:      uint32(unix.Getegid()),
		groups:   groups,
		noGroups: strings.TrimSpace(string(b)) == "deny",
	}, nil
}

// AsCaller runs fn with the calling OS thread's fsuid, fsgid and
// supplementary groups set to c's, so that whatever fn creates belongs to
// the caller from the instant it exists and the host kernel checks the
// caller's permissions (a nonzero fsuid also drops CAP_DAC_OVERRIDE,
// CAP_FOWNER, CAP_MKNOD and the other filesystem capabilities of the thread,
// as in virtiofsd). Callers without supplementary groups run with none
// rather than inheriting the daemon's. Root's creds (Creds.IsRoot) run fn
// directly on the calling goroutine.
//
// fn must only make system calls: it runs on a goroutine of its own, locked
// to its OS thread, and the ids are changed with raw per-thread system calls
// (never Go's setuid family, which changes every thread of the process).
// If the ids cannot be restored afterwards the goroutine exits still locked,
// so the Go runtime terminates that thread instead of reusing it. The
// runtime never clones new threads from a locked thread, so the switched ids
// cannot leak into other threads either. AsCaller returns fn's error, or the
// error of the switch (fn then does not run).
func (s *Switcher) AsCaller(c Creds, fn func() error) error {
	if c.IsRoot() {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := c.enter(s.noGroups)
		if err == nil {
			err = fn()
		}
		if !s.restore() {
			s.log.Error("cannot restore thread credentials; discarding the thread", "uid", c.UID, "gid", c.GID)
			done <- err
			return // still locked: the runtime ends the thread
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// restore puts the locked thread back to the daemon's ids: its fsuid first
// (for root that gives back the filesystem capabilities), then its fsgid and
// supplementary groups. It reports whether all of them took.
func (s *Switcher) restore() bool {
	ok := rawSetfsuid(s.uid)
	ok = rawSetfsgid(s.gid) && ok
	ok = (s.noGroups || rawSetgroups(s.groups) == 0) && ok
	return ok
}
