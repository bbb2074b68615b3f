package qemutests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/aclcase"
	"golang.org/x/sys/unix"
)

// TestQEMUPosixACL boots a guest (by default the 6.12 pair;
// QEMUTEST_ACL_PAIRS chooses others) on a share the daemon serves with
// --xattr --posix-acl. In the guest (guesttest -acl, internal/aclcase),
// root puts an access ACL granting user 1000 rw- on a 0600 root file and an
// access and default ACL on a directory, writing system.posix_acl_access
// and system.posix_acl_default in the kernel's binary format; users 1000
// and 1001 (child processes) are granted and refused what the ACLs say,
// with warm and with dropped caches; getxattr returns the ACLs; what root
// and user 1000 create in the directory inherits its default ACL. Each is
// a subtest (TestQEMUPosixACL/<pair>/acl_<check>). On the host, host_acls
// reads the ACL xattrs, modes and owners of every object of the case.
func TestQEMUPosixACL(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.name == "virtiofsd-c" {
		t.Skipf("%s: the case is written for --posix-acl", daemon.name)
	}
	list := os.Getenv("QEMUTEST_ACL_PAIRS")
	if list == "" {
		list = os.Getenv("QEMUTEST_PAIRS")
	}
	if list == "" {
		list = dropinDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	plan := planModeGuest(t, "acl", aclcase.Checks)
	logRoot := logRootDir(t)
	var summary []string
	for _, p := range selected {
		t.Run(p.name, func(t *testing.T) {
			summary = append(summary, runACLPair(t, setup, daemon, p, plan, logRoot))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// hostACLSupport fails (or skips) the test if dir's filesystem has no
// POSIX ACLs: the daemon could not store the guest's.
func hostACLSupport(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "acl-probe")
	must(t, os.WriteFile(p, nil, 0o600))
	defer os.Remove(p)
	if err := unix.Setxattr(p, aclcase.Access, aclcase.FileACL.Encode(), 0); err != nil {
		prereq(t, "%s has no POSIX ACLs (setxattr %s: %v); set TMPDIR to a filesystem with ACLs", dir, aclcase.Access, err)
	}
}

func runACLPair(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-acl-")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("QEMUTEST_KEEP") == "1"
	t.Cleanup(func() {
		if keep || t.Failed() {
			t.Logf("kept the share in %s", work)
			return
		}
		os.RemoveAll(work)
	})
	g.share = filepath.Join(work, "share")
	g.socket = filepath.Join(work, "vhost.sock")
	must(t, os.Mkdir(g.share, 0o755))
	hostACLSupport(t, g.share)
	g.logDir = filepath.Join(logRoot, "acl-"+p.name)
	must(t, os.MkdirAll(g.logDir, 0o755))
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)
	g.daemonArgv = append(daemon.argv(g.socket, g.share, p.tag()), "--posix-acl")
	if !slices.Contains(g.daemonArgv, "--xattr") {
		g.daemonArgv = append(g.daemonArgv, "--xattr")
	}
	t.Logf("daemon: %s", shellJoin(g.daemonArgv))
	t.Logf("qemu:   %s", shellJoin(g.qemuArgv()))

	res := g.run(t)
	logRun(t, g, res)

	passed, failed := 0, 0
	sub := func(name string, f func(t *testing.T)) {
		if t.Run(name, f) {
			passed++
		} else {
			failed++
		}
	}
	reportVerdicts(sub, plan.checks, res, nil)
	sub("host_acls", func(t *testing.T) { checkHostACLs(t, g.share) })
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	return fmt.Sprintf("posix-acl on %s with %s: %d passed, %d failed; QEMU start to guest verdict %.1fs; logs in %s",
		p.name, daemon.name, passed, failed, res.verdict.Seconds(), g.logDir)
}

// hostACL reads the ACL xattr name of p on the host (nil: none).
func hostACL(p, name string) (aclcase.ACL, error) {
	buf := make([]byte, 1024)
	n, err := unix.Lgetxattr(p, name, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getxattr %s: %v", name, err)
	}
	return aclcase.Decode(buf[:n])
}

// checkHostACLs compares every object of the case with what the host
// shows: mode, owner, the access and default ACL xattrs; acl/file's
// content with user 1000's append, and no acl/dir/by1001.
func checkHostACLs(t *testing.T, share string) {
	for _, o := range aclcase.Objects {
		p := filepath.Join(share, o.Path)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("host: %v", err)
			continue
		}
		if st.Mode&0o7777 != o.Mode || st.Uid != o.UID {
			t.Errorf("host: %s has mode %o, uid %d; want %o, %d", o.Path, st.Mode&0o7777, st.Uid, o.Mode, o.UID)
		}
		for _, x := range []struct {
			name string
			want aclcase.ACL
		}{{aclcase.Access, o.Access}, {aclcase.Default, o.Default}} {
			got, err := hostACL(p, x.name)
			if err != nil {
				t.Errorf("host: %s: %v", o.Path, err)
				continue
			}
			if !got.Equal(x.want) {
				t.Errorf("host: %s of %s is %s, want %s", x.name, o.Path, got, x.want)
			}
		}
	}
	wantFile(t, filepath.Join(share, "acl/file"), aclcase.Content+aclcase.AppendData)
	if _, err := os.Lstat(filepath.Join(share, "acl/dir/by1001")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("host: acl/dir/by1001: %v; user 1001's create was refused, want ENOENT", err)
	}
}
