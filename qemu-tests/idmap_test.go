package qemutests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/idcase"
	"golang.org/x/sys/unix"
)

// idmapDefaultPairs are the pairs the id-mapping case boots unless
// QEMUTEST_IDMAP_PAIRS (or QEMUTEST_PAIRS) names others: one, as the
// overlay case does.
const idmapDefaultPairs = "6.12"

// TestQEMUIDMap boots a guest on a share the daemon serves with uid and gid
// translation (idcase.DaemonArgs: guest 0 and 1000 are host 200000 and
// 201000, guest uid 666 is forbidden). In the guest (guesttest -idmap),
// root, user 1000 and user 666 create and chown objects and check the
// owners stat shows, warm, after a cold lookup and through a cold listing;
// each check is a subtest (TestQEMUIDMap/<pair>/idmap_<check>) that, when
// it passes in the guest, also checks on the host the owners of what it
// made. After the guest has powered off, host_owners compares every object
// of the share with the table of internal/idcase: the exact host owner and
// type, nothing missing, nothing more. It needs root (to chown the host's
// objects to 200000 and up).
//
// The C virtiofsd has no translation options; a QEMUTEST_DAEMON_CMD daemon
// gets idcase.DaemonArgs appended (virtiofsd's syntax). By default only the
// 6.12 pair boots (about 10 s); QEMUTEST_IDMAP_PAIRS chooses others, as
// QEMUTEST_OVERLAY_PAIRS does for the overlay case.
func TestQEMUIDMap(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.name == "virtiofsd-c" {
		t.Skipf("%s has no --translate-uid/--translate-gid", daemon.name)
	}
	if os.Geteuid() != 0 {
		prereq(t, "the id-mapping case chowns the share's files to host ids 200000 and up: it needs root")
	}
	list := os.Getenv("QEMUTEST_IDMAP_PAIRS")
	if list == "" {
		list = os.Getenv("QEMUTEST_PAIRS")
	}
	if list == "" {
		list = idmapDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	plan := planIDMapGuest(t)
	logRoot := logRootDir(t)
	var summary []string
	for _, p := range selected {
		t.Run(p.name, func(t *testing.T) {
			summary = append(summary, runIDMapPair(t, setup, daemon, p, plan, logRoot))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// planIDMapGuest builds the checker and fills in guest.sh for the idmap
// mode.
func planIDMapGuest(t *testing.T) *guestPlan {
	t.Helper()
	watchdog := envDuration(t, "QEMUTEST_WATCHDOG", defaultWatchdog)
	script := strings.NewReplacer(
		"@MODE@", "idmap",
		"@CHECKS@", "",
		"@POSIXRUN@", "",
		"@POSIXSKIP@", "",
		"@WATCHDOG@", strconv.Itoa(int(watchdog.Seconds())),
	).Replace(string(readFile(t, filepath.Join("guest", "guest.sh"))))
	guestBin := filepath.Join(t.TempDir(), "guesttest")
	buildGuest(t, guestBin)
	checks := append([]string{"mount"}, idcase.Checks...)
	return &guestPlan{
		files: []cpioFile{
			{name: "init", mode: 0o100755, data: readFile(t, filepath.Join("guest", "init.sh"))},
			{name: "guest.sh", mode: 0o100644, data: []byte(script)},
			{name: "bin/guesttest", mode: 0o100755, data: readFile(t, guestBin)},
		},
		checks: append(checks, "umount"),
	}
}

func runIDMapPair(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-idmap-")
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
	must(t, idcase.Prepare(g.share))
	g.logDir = filepath.Join(logRoot, "idmap-"+p.name)
	must(t, os.MkdirAll(g.logDir, 0o755))
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)
	g.daemonArgv = append(daemon.argv(g.socket, g.share, p.tag()), idcase.DaemonArgs...)
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
	for _, name := range plan.checks {
		sub(name, func(t *testing.T) {
			v, reported := res.checks[name]
			switch {
			case !reported:
				t.Fatalf("the guest reported no verdict for %s", name)
			case !v.pass:
				t.Fatalf("guest: %s", v.detail)
			}
			t.Logf("guest: %s", v.detail)
			verifyIDMapCheck(t, g.share, name)
		})
	}
	for _, name := range res.order {
		if !slices.Contains(plan.checks, name) {
			sub(name, func(t *testing.T) { t.Errorf("the guest reported a check nobody expects: %s", name) })
		}
	}
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	sub("host_owners", func(t *testing.T) { checkHostOwners(t, g.share) })
	return fmt.Sprintf("idmap on %s with %s: %d passed, %d failed; boot-to-verdict %.1fs (mounted at %.1fs); daemon CPU %.1fs; logs in %s",
		p.name, daemon.name, passed, failed, res.verdict.Seconds(), res.mounted.Seconds(), res.daemonCPU.Seconds(), g.logDir)
}

// verifyIDMapCheck checks on the host what the passing guest check name
// left: the owners of the objects it made or chowned, what it was refused.
func verifyIDMapCheck(t *testing.T, share, name string) {
	t.Helper()
	for _, o := range idcase.Objects {
		if o.By == name {
			if err := hostOwner(share, o); err != nil {
				t.Error(err)
			}
		}
	}
	switch name {
	case "idmap_root_create":
		wantLink(t, filepath.Join(share, "byroot/sym"), idcase.RootSymTarget)
	case "idmap_user_create":
		wantLink(t, filepath.Join(share, "tmp/u1000-sym"), idcase.UserSymTarget)
	case "idmap_forbidden_create":
		for _, rel := range idcase.Absent {
			if _, err := os.Lstat(filepath.Join(share, rel)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("host: lstat %s: %v; user 666's create was refused, want ENOENT", rel, err)
			}
		}
	case "idmap_user_change":
		checkUserChanged(t, share)
	case "idmap_forbidden_change":
		checkNotChanged(t, share)
	}
}

// hostOwner compares o with what lstat shows on the host.
func hostOwner(share string, o idcase.Object) error {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(share, o.Path), &st); err != nil {
		return fmt.Errorf("host: %v", err)
	}
	if st.Mode&unix.S_IFMT != o.Type || st.Uid != o.HostUID || st.Gid != o.HostGID {
		return fmt.Errorf("host: %s is a %s owned by %d:%d, want a %s owned by %d:%d",
			o.Path, idcase.TypeName(st.Mode), st.Uid, st.Gid, idcase.TypeName(o.Type), o.HostUID, o.HostGID)
	}
	return nil
}

// checkUserChanged wants host/w1000 changed by user 1000: emptied,
// touched, its xattrs swapped, a second link.
func checkUserChanged(t *testing.T, share string) {
	t.Helper()
	w1000 := filepath.Join(share, "host/w1000")
	wantFile(t, w1000, "")
	var st unix.Stat_t
	must(t, unix.Stat(w1000, &st))
	if st.Mtim.Sec == idcase.WritableTime.Unix() || st.Nlink != 2 {
		t.Errorf("host: host/w1000 has mtime %d and %d links; user 1000 touched it and linked it as tmp/u1000-link", st.Mtim.Sec, st.Nlink)
	}
	wantHostXattrs(t, w1000, map[string]string{idcase.KeptXattr: "", idcase.XattrName: idcase.XattrValue})
}

// checkNotChanged wants host/w666 as the host made it: user 666's touch,
// truncate, setxattr, removexattr and link were refused.
func checkNotChanged(t *testing.T, share string) {
	t.Helper()
	w666 := filepath.Join(share, "host/w666")
	wantFile(t, w666, idcase.WritableData)
	var st unix.Stat_t
	must(t, unix.Stat(w666, &st))
	if st.Mtim.Sec != idcase.WritableTime.Unix() || st.Nlink != 1 {
		t.Errorf("host: host/w666 has mtime %d and %d links, want %d and 1", st.Mtim.Sec, st.Nlink, idcase.WritableTime.Unix())
	}
	wantHostXattrs(t, w666, map[string]string{idcase.KeptXattr: idcase.XattrValue, idcase.XattrName: ""})
	if _, err := os.Lstat(filepath.Join(share, "tmp/u666-link")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("host: lstat tmp/u666-link: %v, want ENOENT", err)
	}
}

// wantHostXattrs wants the xattrs of p to have the values want gives ("":
// absent).
func wantHostXattrs(t *testing.T, p string, want map[string]string) {
	t.Helper()
	for name, value := range want {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case value == "" && !errors.Is(err, unix.ENODATA):
			t.Errorf("host: %s of %s is %q, %v; want ENODATA", name, p, buf[:max(n, 0)], err)
		case value != "" && (err != nil || string(buf[:n]) != value):
			t.Errorf("host: %s of %s is %q, %v; want %q", name, p, buf[:max(n, 0)], err, value)
		}
	}
}

// checkHostOwners compares the whole share with idcase.Objects once the
// daemon is gone: every object there with its exact host owner and type,
// and nothing else.
func checkHostOwners(t *testing.T, share string) {
	var got []string
	err := filepath.WalkDir(share, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(share, p)
		got = append(got, rel)
		return err
	})
	if err != nil {
		t.Errorf("host: walking the share: %v", err)
	}
	var want []string
	for _, o := range idcase.Objects {
		want = append(want, o.Path)
		if err := hostOwner(share, o); err != nil {
			t.Error(err)
		}
	}
	for _, rel := range got {
		if !slices.Contains(want, rel) {
			t.Errorf("host: the share holds %s, which nobody should have made", rel)
		}
	}
	if !t.Failed() {
		t.Logf("host: all %d objects with the owners the table wants, nothing else", len(want))
	}
}
