package qemutests

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/seclabelcase"
	"golang.org/x/sys/unix"
)

// TestQEMUSecurityLabel boots one guest (by default the 6.12 pair;
// QEMUTEST_SECLABEL_PAIRS chooses others) per case of
// internal/seclabelcase, each against a daemon with --security-label, the
// guest kernel booted with lsm=selinux and no policy. The guest's checker
// (guesttest -seclabel) creates a file (CREATE), a directory (MKDIR), a
// symlink (SYMLINK) and a fifo (MKNOD); the kernel sends each one's
// SELinux label, and the guest reads security.selinux back (getxattr,
// listxattr, warm and with cold caches) and reports it. Each object is a
// subtest (TestQEMUSecurityLabel/<case>/<pair>/seclabel_<op>) which also
// requires, on the host, exactly the guest's value in the case's xattr:
// security.selinux (case security: --modcaps=+sys_admin, as setting
// security.* on a host without an LSM that owns it needs CAP_SYS_ADMIN),
// or user.virtiofs.security.selinux (case user_xattrmap: --xattrmap
// ":prefix:all:security.:user.virtiofs.::ok:all:::", where the host refuses
// user.* on the symlink and the fifo, so their creation must fail with
// EPERM and leave nothing behind).
func TestQEMUSecurityLabel(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.name == "virtiofsd-c" {
		t.Skipf("%s: the cases are written in virtiofsd's --security-label/--xattrmap syntax", daemon.name)
	}
	list := os.Getenv("QEMUTEST_SECLABEL_PAIRS")
	if list == "" {
		list = os.Getenv("QEMUTEST_PAIRS")
	}
	if list == "" {
		list = dropinDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	plan := planModeGuest(t, "seclabel", seclabelcase.Checks)
	logRoot := logRootDir(t)
	var summary []string
	for _, c := range seclabelcase.Cases {
		for _, p := range selected {
			t.Run(c.Name+"/"+p.short, func(t *testing.T) {
				summary = append(summary, runSecLabelCase(t, setup, daemon, p, c, plan, logRoot))
			})
		}
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// hostXattrSupport fails (or skips) the test if the share's filesystem
// cannot store name on a regular file (as the daemon would, as root).
func hostXattrSupport(t *testing.T, dir, name string) {
	t.Helper()
	p := filepath.Join(dir, "xattr-probe")
	must(t, os.WriteFile(p, nil, 0o600))
	defer os.Remove(p)
	if err := unix.Setxattr(p, name, []byte("probe"), 0); err != nil {
		prereq(t, "%s cannot store %s (setxattr: %v); set TMPDIR to a filesystem that can", dir, name, err)
	}
}

func runSecLabelCase(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, c seclabelcase.Case, plan *guestPlan, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-seclabel-")
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
	hostXattrSupport(t, g.share, c.HostName)
	g.logDir = filepath.Join(logRoot, "seclabel-"+c.Name+"-"+p.name)
	must(t, os.MkdirAll(g.logDir, 0o755))
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)
	g.kernelArgs = c.KernelArgs()
	g.daemonArgv = append(daemon.argv(g.socket, g.share, p.tag()), c.Args...)
	t.Logf("daemon: %s", shellJoin(g.daemonArgv))
	t.Logf("qemu:   %s", shellJoin(g.qemuArgv()))

	res := g.run(t)
	logRun(t, g, res)
	labels, err := guestLabels(res.info)
	if err != nil {
		t.Error(err)
	}

	passed, failed := 0, 0
	sub := func(name string, f func(t *testing.T)) {
		if t.Run(name, f) {
			passed++
		} else {
			failed++
		}
	}
	reportVerdicts(sub, plan.checks, res, func(t *testing.T, check string) {
		for _, o := range seclabelcase.Objects {
			if o.Check == check {
				checkHostLabel(t, g.share, c, o, labels)
			}
		}
	})
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	return fmt.Sprintf("security-label case %s on %s with %s: %d passed, %d failed; QEMU start to guest verdict %.1fs; logs in %s",
		c.Name, p.name, daemon.name, passed, failed, res.verdict.Seconds(), g.logDir)
}

// guestLabels collects the labels the guest reported
// (seclabelcase.ReportPrefix lines), by object path.
func guestLabels(info []string) (map[string][]byte, error) {
	labels := map[string][]byte{}
	for _, l := range info {
		rest, ok := strings.CutPrefix(l, seclabelcase.ReportPrefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 {
			return labels, fmt.Errorf("guest: malformed label line %q", l)
		}
		v, err := hex.DecodeString(f[1])
		if err != nil {
			return labels, fmt.Errorf("guest: label line %q: %v", l, err)
		}
		labels[f[0]] = v
	}
	return labels, nil
}

// checkHostLabel verifies o on the host: for an object the case's host
// cannot label, that it does not exist; else that the case's host xattr
// holds exactly the (non-empty) label the guest read back, and, when the
// case maps the name, that nothing is stored under the guest's name.
func checkHostLabel(t *testing.T, share string, c seclabelcase.Case, o seclabelcase.Object, labels map[string][]byte) {
	p := filepath.Join(share, o.Path)
	if want, refused := c.Refused[o.Path]; refused {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("host: %s: %v; the guest's %s was refused (%v), want ENOENT", o.Path, err, o.Op, want)
		}
		return
	}
	want := labels[o.Path]
	if len(want) == 0 {
		t.Fatalf("the guest reported no label for %s", o.Path)
	}
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, c.HostName, buf)
	if err != nil {
		t.Fatalf("host: lgetxattr %s %s: %v", o.Path, c.HostName, err)
	}
	if !bytes.Equal(buf[:n], want) {
		t.Errorf("host: %s of %s is %q, the guest read %q", c.HostName, o.Path, buf[:n], want)
	}
	if c.HostName != seclabelcase.Name {
		if n, err := unix.Lgetxattr(p, seclabelcase.Name, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("host: %s of %s: %q, %v; want ENODATA (the label belongs under %s)", seclabelcase.Name, o.Path, buf[:max(n, 0)], err, c.HostName)
		}
	}
	t.Logf("host: %s %s=%q", o.Path, c.HostName, buf[:n])
}
