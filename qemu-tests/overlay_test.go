package qemutests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/ovlcase"
	"golang.org/x/sys/unix"
)

// overlayDefaultPairs are the pairs the overlay case boots unless
// QEMUTEST_OVERLAY_PAIRS (or QEMUTEST_PAIRS) names others: one, to keep the
// package's run time down; the multi-queue one, so the union's operations
// come in from several CPUs at once.
const overlayDefaultPairs = "6.12"

// kernelFeatures are the overlayfs options of the host's kernel mounts of
// the layers: the features whose on-disk records (redirects, index,
// metacopy) the daemon writes with its defaults.
const kernelFeatures = "redirect_dir=on,index=on,metacopy=on"

// TestQEMUOverlay boots a guest whose share is an overlay served by
// `govirtiofsd --overlay`, has it change the union heavily (the steps of
// internal/ovlcase), and checks on the host that the lower layers did not
// change by a byte, and that kernel overlayfs, mounted on the same layers
// with the upper and work directories the daemon wrote, shows exactly the
// tree the guest saw last (the round trip "written by govirtiofsd, read by
// the kernel"). The same steps also run on a kernel overlayfs mount of the
// same lowers, the reference: the guest's final tree must equal it but for
// the mtimes of changed objects, and each upper must hold the changes and
// nothing more.
//
// The layers live on a tmpfs mounted for the test: all on one filesystem,
// as overlayfs wants them, and one with a UUID and file handles, which
// index=on needs (the root filesystem of these machines has a null UUID).
func TestQEMUOverlay(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.overlayArgv == nil {
		t.Skipf("%s serves no overlay (a QEMUTEST_DAEMON_CMD needs an {overlay} placeholder)", daemon.name)
	}
	if os.Geteuid() != 0 {
		prereq(t, "the overlay case mounts tmpfs and overlayfs on the host: it needs root")
	}
	list := os.Getenv("QEMUTEST_OVERLAY_PAIRS")
	if list == "" {
		list = os.Getenv("QEMUTEST_PAIRS")
	}
	if list == "" {
		list = overlayDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	goroot, err := exec.Command(goTool(), "env", "GOROOT").Output()
	if err != nil {
		prereq(t, "go env GOROOT: %v (the overlay case untars a part of Go's source tree)", err)
	}
	plan := planOverlayGuest(t)
	logRoot := logRootDir(t)
	var summary []string
	for _, p := range selected {
		t.Run(p.name, func(t *testing.T) {
			summary = append(summary, runOverlayPair(t, setup, daemon, p, plan, strings.TrimSpace(string(goroot)), logRoot))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// planOverlayGuest builds the checker and fills in guest.sh for the
// overlay mode.
func planOverlayGuest(t *testing.T) *guestPlan {
	t.Helper()
	watchdog := envDuration(t, "QEMUTEST_WATCHDOG", defaultWatchdog)
	script := strings.NewReplacer(
		"@MODE@", "overlay",
		"@CHECKS@", "",
		"@POSIXRUN@", "",
		"@POSIXSKIP@", "",
		"@WATCHDOG@", strconv.Itoa(int(watchdog.Seconds())),
	).Replace(string(readFile(t, filepath.Join("guest", "guest.sh"))))
	guestBin := filepath.Join(t.TempDir(), "guesttest")
	buildGuest(t, guestBin)
	plan := &guestPlan{
		files: []cpioFile{
			{name: "init", mode: 0o100755, data: readFile(t, filepath.Join("guest", "init.sh"))},
			{name: "guest.sh", mode: 0o100644, data: []byte(script)},
			{name: "bin/guesttest", mode: 0o100755, data: readFile(t, guestBin)},
		},
		checks: []string{"mount"},
	}
	for _, st := range ovlcase.Steps {
		plan.checks = append(plan.checks, "overlay_"+st.Name)
	}
	plan.checks = append(plan.checks, "overlay_manifest", "umount")
	return plan
}

// ovlLayers are the directories of one run, all on one tmpfs but mnt.
type ovlLayers struct {
	tmpfs              string
	l1, l2             string // lower layers, l1 on top
	upper, work        string // the daemon's
	refUpper, refWork  string // the kernel reference's
	mnt                string // where the host mounts kernel overlayfs
	guestStart, refRun time.Time
}

func (l *ovlLayers) lowerdir() string { return "lowerdir=" + l.l1 + ":" + l.l2 }

// notManifest leaves the guest's manifest out of a listing of the union.
func notManifest(rel string) bool { return rel == ovlcase.ManifestDir }

func runOverlayPair(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, goroot, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-ovl-")
	if err != nil {
		t.Fatal(err)
	}
	l := &ovlLayers{tmpfs: filepath.Join(work, "layers"), mnt: filepath.Join(work, "mnt")}
	for _, d := range []string{l.tmpfs, l.mnt} {
		must(t, os.Mkdir(d, 0o755))
	}
	if err := unix.Mount("tmpfs", l.tmpfs, "tmpfs", 0, "size=2g,mode=0755"); err != nil {
		os.RemoveAll(work)
		prereq(t, "mount -t tmpfs: %v", err)
	}
	keep := os.Getenv("QEMUTEST_KEEP") == "1"
	t.Cleanup(func() {
		if keep {
			t.Logf("kept the layers, still mounted, in %s (umount %s when done)", l.tmpfs, l.tmpfs)
			return
		}
		if err := unix.Unmount(l.tmpfs, 0); err != nil {
			t.Errorf("umount %s: %v", l.tmpfs, err)
			unix.Unmount(l.tmpfs, unix.MNT_DETACH)
		}
		if t.Failed() {
			t.Logf("QEMUTEST_KEEP=1 keeps the layers for a look after a failure")
		}
		os.RemoveAll(work)
	})
	l.l1, l.l2 = filepath.Join(l.tmpfs, "l1"), filepath.Join(l.tmpfs, "l2")
	l.upper, l.work = filepath.Join(l.tmpfs, "upper"), filepath.Join(l.tmpfs, "work")
	l.refUpper, l.refWork = filepath.Join(l.tmpfs, "ref-upper"), filepath.Join(l.tmpfs, "ref-work")
	for _, d := range []string{l.l1, l.l2, l.upper, l.work, l.refUpper, l.refWork} {
		must(t, os.Mkdir(d, 0o755))
	}

	start := time.Now()
	stats, err := ovlcase.BuildLowers(l.l1, l.l2, goroot)
	if err != nil {
		t.Fatalf("building the lower layers from %s: %v", goroot, err)
	}
	lm0 := lowerManifests(t, l)
	t.Logf("lower layers built in %.1fs: L1 %d objects, L2 %d objects with the tarball %s (%d entries, %.1f MiB of Go's source)",
		time.Since(start).Seconds(), stats.L1, stats.L2, ovlcase.TarPath, stats.TarEntries, float64(stats.TarBytes)/(1<<20))
	// The union before the changes, as kernel overlayfs shows it.
	m0, msgs, err := kernelView(l, l.lowerdir(), unix.MS_RDONLY)
	if err != nil {
		if errors.Is(err, unix.ENODEV) {
			prereq(t, "kernel overlayfs: %v", err)
		}
		t.Fatalf("the lowers as kernel overlayfs shows them: %v", err)
	}
	logKernel(t, msgs)

	g.share = l.upper
	g.socket = filepath.Join(work, "vhost.sock")
	g.logDir = filepath.Join(logRoot, "overlay-"+p.name)
	must(t, os.MkdirAll(g.logDir, 0o755))
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)
	g.daemonArgv = daemon.overlayArgv(g.socket, l.lowerdir()+",upperdir="+l.upper+",workdir="+l.work, p.tag())
	t.Logf("daemon: %s", shellJoin(g.daemonArgv))
	t.Logf("qemu:   %s", shellJoin(g.qemuArgv()))

	l.guestStart = time.Now()
	res := g.run(t)
	// Before anything else touches the layers.
	lm1 := lowerManifests(t, l)
	logRun(t, g, res)

	passed, failed := 0, 0
	sub := func(name string, f func(t *testing.T)) {
		if t.Run(name, f) {
			passed++
		} else {
			failed++
		}
	}
	reportVerdicts(sub, plan.checks, res, func(t *testing.T, name string) {
		t.Logf("guest: %s", res.checks[name].detail)
	})
	if g.queues > 1 {
		sub("request_queues", func(t *testing.T) { checkQueueSpread(t, res.info, g.queues) })
	}
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	sub("lowers_unchanged", func(t *testing.T) { compareLowers(t, lm0, lm1, "while the daemon served the guest") })
	sub("workdir_clean", func(t *testing.T) { checkWorkdir(t, l) })

	var g1, k1 ovlcase.Manifest
	sub("guest_manifest", func(t *testing.T) {
		g1 = readGuestManifest(t, l, res)
	})
	sub("kernel_roundtrip", func(t *testing.T) {
		if g1 == nil {
			t.Fatal("no manifest from the guest to compare with")
		}
		logUpper(t, l)
		// The daemon's own work directory: its index/ is part of the
		// state (lower hard links stay linked across copy-up through
		// it). Kernel 6.18 mounts the upper with a fresh workdir too,
		// but then shows the link not copied up with its lower data.
		var msgs []string
		var err error
		k1, msgs, err = kernelView(l, l.lowerdir()+",upperdir="+l.upper+",workdir="+l.work+","+kernelFeatures, 0)
		logKernel(t, msgs)
		if err != nil {
			t.Fatalf("kernel overlayfs on the layers the daemon left: %v", err)
		}
		reportDiffs(t, "the guest's view of the union (A) against kernel overlayfs's view of the layers the daemon left (B)",
			ovlcase.Compare(g1, k1, 0, 0))
	})
	sub("upper_holds_changes", func(t *testing.T) {
		if k1 == nil {
			t.Fatal("no kernel view of the union after the changes")
		}
		checkUpper(t, l.upper, m0, k1)
	})
	sub("reference", func(t *testing.T) {
		r1 := runReference(t, l, m0)
		if g1 == nil || r1 == nil {
			t.Fatal("nothing to compare")
		}
		reportDiffs(t, `the guest's view of the union (A) against the same steps on kernel overlayfs (B; "recent": an mtime the steps set)`,
			ovlcase.Compare(g1, r1, l.guestStart.UnixNano(), l.refRun.UnixNano()))
		logUpperVsKernel(t, l)
	})
	sub("lowers_unchanged_at_end", func(t *testing.T) {
		compareLowers(t, lm0, lowerManifests(t, l), "by the end (kernel overlayfs mounted them too)")
	})
	return fmt.Sprintf("overlay on %s with %s: %d passed, %d failed; lowers %d+%d objects, tarball %d entries; boot-to-verdict %.1fs (mounted at %.1fs); daemon CPU %.1fs; logs in %s",
		p.name, daemon.name, passed, failed, stats.L1, stats.L2, stats.TarEntries, res.verdict.Seconds(), res.mounted.Seconds(), res.daemonCPU.Seconds(), g.logDir)
}

// lowerManifests lists each lower layer as it is on the host: every byte,
// owner, xattr and time (atime aside), and the inode numbers.
func lowerManifests(t *testing.T, l *ovlLayers) map[string]ovlcase.Manifest {
	t.Helper()
	out := map[string]ovlcase.Manifest{}
	for name, dir := range map[string]string{"L1": l.l1, "L2": l.l2} {
		m, err := ovlcase.Walk(dir, ovlcase.WalkOptions{Raw: true, Workers: 4})
		if err != nil {
			t.Fatalf("listing lower layer %s: %v", name, err)
		}
		out[name] = m
	}
	return out
}

func compareLowers(t *testing.T, before, after map[string]ovlcase.Manifest, when string) {
	t.Helper()
	for _, name := range []string{"L1", "L2"} {
		if !reportDiffs(t, fmt.Sprintf("lower layer %s changed %s (A: before the guest, B: after)", name, when),
			ovlcase.Compare(before[name], after[name], 0, 0)) {
			t.Logf("%s: %d objects, every one unchanged", name, len(before[name]))
		}
	}
}

// checkWorkdir wants the daemon's work directory free of temporary
// objects once it has exited.
func checkWorkdir(t *testing.T, l *ovlLayers) {
	ents, err := os.ReadDir(filepath.Join(l.work, "work"))
	if err != nil {
		t.Fatalf("the daemon's work directory: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("%s/work holds %d objects after the daemon exited: %q", l.work, len(names), clipNames(names))
	}
	if idx, err := os.ReadDir(filepath.Join(l.work, "index")); err == nil {
		t.Logf("%s/index holds %d entries", l.work, len(idx))
	}
}

func clipNames(names []string) []string {
	if len(names) > 10 {
		return append(names[:10:10], "...")
	}
	return names
}

// readGuestManifest reads the manifest the guest left in the union (in the
// upper layer) and checks it is the one the guest announced.
func readGuestManifest(t *testing.T, l *ovlLayers, res *bootResult) ovlcase.Manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(l.upper, ovlcase.ManifestPath))
	if err != nil {
		t.Fatalf("the guest's manifest: %v", err)
	}
	sum := sha256.Sum256(data)
	if want := res.sums[ovlcase.ManifestPath]; want != hex.EncodeToString(sum[:]) {
		t.Fatalf("%s in the upper layer has sha256 %x; the guest announced %q", ovlcase.ManifestPath, sum, want)
	}
	m, err := ovlcase.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the guest's manifest: %v", err)
	}
	t.Logf("the guest's manifest lists %d objects", len(m))
	return m
}

// kernelView mounts kernel overlayfs with opts on l.mnt and lists it;
// it also returns the kernel's messages about overlayfs meanwhile.
func kernelView(l *ovlLayers, opts string, flags uintptr) (ovlcase.Manifest, []string, error) {
	mark := kernelLog()
	if err := unix.Mount("overlay", l.mnt, "overlay", flags, opts); err != nil {
		return nil, kernelLogSince(mark), fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
	}
	m, err := ovlcase.Walk(l.mnt, ovlcase.WalkOptions{Skip: notManifest, Workers: 4})
	if uerr := unix.Unmount(l.mnt, 0); uerr != nil && err == nil {
		err = fmt.Errorf("umount %s: %w", l.mnt, uerr)
	}
	return m, kernelLogSince(mark), err
}

// kernelLog returns the host kernel's overlayfs messages so far.
func kernelLog() []string {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		return nil
	}
	var lines []string
	for l := range strings.Lines(string(out)) {
		// (Other tests' mounts may log too; "xino" lines only inform.)
		if strings.Contains(l, "overlayfs") && !strings.Contains(l, `"xino" feature enabled`) {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

func kernelLogSince(before []string) []string {
	after := kernelLog()
	if len(after) < len(before) {
		return after // the ring wrapped
	}
	return after[len(before):]
}

func logKernel(t *testing.T, msgs []string) {
	t.Helper()
	for _, m := range msgs {
		t.Logf("host kernel: %s", m)
	}
}

// logUpper summarises what the daemon wrote into the upper layer.
func logUpper(t *testing.T, l *ovlLayers) {
	t.Helper()
	up, err := ovlcase.Walk(l.upper, ovlcase.WalkOptions{Raw: true, Skip: notManifest, Workers: 4})
	if err != nil {
		t.Errorf("listing the upper layer: %v", err)
		return
	}
	types := map[string]int{}
	xattrs := map[string]int{}
	for _, e := range up {
		kind := e.Type
		if e.Whiteout() {
			kind = "whiteout"
		}
		types[kind]++
		for _, x := range e.Xattrs {
			name, _, _ := strings.Cut(x, "=")
			if strings.HasPrefix(name, "trusted.overlay.") {
				xattrs[strings.TrimPrefix(name, "trusted.overlay.")]++
			}
		}
	}
	t.Logf("upper layer: %d objects %v; overlay xattrs %v", len(up), types, xattrs)
}

// logUpperVsKernel logs how the daemon's upper layer differs from the one
// kernel overlayfs wrote for the same steps: objects and their types, and
// the overlay's xattrs (by name; by value for opaque and directories'
// redirects). The two may differ and both be right (a redirect may name
// either link of a hard-linked lower file, say); the checks above decide.
func logUpperVsKernel(t *testing.T, l *ovlLayers) {
	t.Helper()
	shape := func(dir string) map[string]string {
		m, err := ovlcase.Walk(dir, ovlcase.WalkOptions{Raw: true, Skip: notManifest, Workers: 4})
		if err != nil {
			t.Errorf("listing %s: %v", dir, err)
		}
		out := map[string]string{}
		for p, e := range m {
			var xs []string
			for _, x := range e.Xattrs {
				name, value, _ := strings.Cut(x, "=")
				switch {
				case !strings.HasPrefix(name, "trusted.overlay."), name == "trusted.overlay.origin", name == "trusted.overlay.uuid":
				case name == "trusted.overlay.opaque", name == "trusted.overlay.redirect" && e.Type == "dir":
					xs = append(xs, x)
				default:
					xs = append(xs, name+"="+strings.Repeat("*", min(len(value), 1)))
				}
			}
			out[p] = e.Type + " " + strings.Join(xs, " ")
		}
		return out
	}
	ours, kernel := shape(l.upper), shape(l.refUpper)
	var diffs []string
	for p, o := range ours {
		if k, ok := kernel[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %s vs absent", p, o))
		} else if k != o {
			diffs = append(diffs, fmt.Sprintf("%s: %s vs %s", p, o, k))
		}
	}
	for p, k := range kernel {
		if _, ok := ours[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: absent vs %s", p, k))
		}
	}
	slices.Sort(diffs)
	t.Logf("the daemon's upper layer (%d objects) against kernel overlayfs's for the same steps (%d): %d differ (object: daemon's vs kernel's)", len(ours), len(kernel), len(diffs))
	for i, d := range diffs {
		if i == 20 {
			t.Logf("  ... and %d more", len(diffs)-i)
			break
		}
		t.Logf("  %s", d)
	}
}

// checkUpper audits an upper layer against the union before and after.
func checkUpper(t *testing.T, upper string, before, after ovlcase.Manifest) {
	t.Helper()
	up, err := ovlcase.Walk(upper, ovlcase.WalkOptions{Raw: true, Skip: notManifest, Workers: 4})
	if err != nil {
		t.Fatalf("listing the upper layer %s: %v", upper, err)
	}
	problems := ovlcase.AuditUpper(up, before, after)
	for i, p := range problems {
		if i == 40 {
			t.Errorf("... and %d more", len(problems)-i)
			break
		}
		t.Error(p)
	}
}

// runReference runs the steps on kernel overlayfs over the same lowers with
// an upper of its own, and lists the result. A step failing there, or the
// kernel's upper failing the audit, is a fault of the test.
func runReference(t *testing.T, l *ovlLayers, m0 ovlcase.Manifest) ovlcase.Manifest {
	t.Helper()
	opts := l.lowerdir() + ",upperdir=" + l.refUpper + ",workdir=" + l.refWork + "," + kernelFeatures
	if err := unix.Mount("overlay", l.mnt, "overlay", 0, opts); err != nil {
		t.Fatalf("mount -t overlay -o %s: %v", opts, err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			mounted = false
			if err := unix.Unmount(l.mnt, 0); err != nil {
				t.Errorf("umount %s: %v", l.mnt, err)
			}
		}
	}
	defer unmount()
	old := unix.Umask(0) // as in the guest
	defer unix.Umask(old)
	l.refRun = time.Now()
	e := &ovlcase.Env{Root: l.mnt}
	for _, st := range ovlcase.Steps {
		if err := ovlcase.RunStep(e, st); err != nil {
			t.Errorf("step %s fails on kernel overlayfs too (a fault of the test): %v", st.Name, err)
		}
	}
	r1, err := ovlcase.Walk(l.mnt, ovlcase.WalkOptions{Skip: notManifest, Workers: 4})
	if err != nil {
		t.Fatalf("listing the reference union: %v", err)
	}
	unmount()
	t.Logf("the reference ran the steps in %.1fs; it lists %d objects", time.Since(l.refRun).Seconds(), len(r1))
	up, err := ovlcase.Walk(l.refUpper, ovlcase.WalkOptions{Raw: true, Skip: notManifest, Workers: 4})
	if err != nil {
		t.Fatalf("listing the reference's upper layer: %v", err)
	}
	for _, p := range ovlcase.AuditUpper(up, m0, r1) {
		t.Errorf("kernel overlayfs's own upper fails the audit (a fault of the test): %s", p)
	}
	return r1
}

// reportDiffs fails the test with the differences, if any, and says
// whether there were.
func reportDiffs(t *testing.T, what string, diffs []ovlcase.Diff) bool {
	t.Helper()
	if len(diffs) == 0 {
		return false
	}
	var b strings.Builder
	for i, d := range diffs {
		if i == 60 {
			fmt.Fprintf(&b, "... and %d more\n", len(diffs)-i)
			break
		}
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	t.Errorf("%s: %d differences (path: field: A vs B):\n%s", what, len(diffs), b.String())
	return true
}
