package passthrough

import (
	"runtime"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// creds are the filesystem ids a request runs its host system calls with.
type creds struct {
	uid, gid uint32
	// groups are the caller's supplementary groups; nil when the kernel
	// sent none.
	groups []uint32
}

// credsOf returns the caller's ids from ctx; a nil ctx is root.
func credsOf(ctx *fuseproto.Context) creds {
	if ctx == nil {
		return creds{}
	}
	return creds{uid: ctx.UID, gid: ctx.GID, groups: ctx.SuppGroups}
}

// isRoot reports whether c needs no switch: the daemon already runs as
// uid 0, gid 0.
func (c creds) isRoot() bool { return c.uid == 0 && c.gid == 0 && len(c.groups) == 0 }

// asCaller runs fn with the calling OS thread's fsuid, fsgid and
// supplementary groups set to ctx's, so that whatever fn creates belongs to
// the caller from the instant it exists and the host kernel checks the
// caller's permissions (a nonzero fsuid also drops CAP_DAC_OVERRIDE,
// CAP_FOWNER, CAP_MKNOD and the other filesystem capabilities of the thread,
// as in virtiofsd). Callers without supplementary groups in ctx run with
// none rather than inheriting the daemon's.
//
// fn must only make system calls: it runs on a goroutine of its own, locked
// to its OS thread, and the ids are changed with raw per-thread system calls
// (never Go's setuid family, which changes every thread of the process).
// If the ids cannot be restored afterwards the goroutine exits still locked,
// so the Go runtime terminates that thread instead of reusing it. The
// runtime never clones new threads from a locked thread, so the switched ids
// cannot leak into other threads either.
func (fs *FS) asCaller(ctx *fuseproto.Context, fn func() error) error {
	c := credsOf(ctx)
	if c.isRoot() {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := c.enter()
		if err == nil {
			err = fn()
		}
		if !fs.restoreCreds() {
			fs.log.Error("cannot restore thread credentials; discarding the thread", "uid", c.uid, "gid", c.gid)
			done <- err
			return // still locked: the runtime ends the thread
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// enter switches the locked thread to c. Groups go first, while the thread
// still has its capabilities, then the gid, then the uid.
func (c creds) enter() error {
	groups := c.groups
	if groups == nil {
		groups = []uint32{}
	}
	if e := rawSetgroups(groups); e != 0 {
		return e
	}
	if !rawSetfsgid(c.gid) || !rawSetfsuid(c.uid) {
		return unix.EPERM
	}
	return nil
}

// restoreCreds puts the locked thread back to the daemon's ids: its fsuid
// first (for root that gives back the filesystem capabilities), then its
// fsgid and supplementary groups. It reports whether all of them took.
func (fs *FS) restoreCreds() bool {
	ok := rawSetfsuid(fs.uid)
	ok = rawSetfsgid(fs.gid) && ok
	ok = rawSetgroups(fs.groups) == 0 && ok
	return ok
}
