package overlaytest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// ours is the implementation compared with the kernel: govirtiofsd unless
// OVERLAYTEST_OURS names fuse-overlayfs or kernel (harness checks).
func ours(t *testing.T) Impl {
	switch v := os.Getenv("OVERLAYTEST_OURS"); v {
	case "", string(Govirtiofsd):
		return Govirtiofsd
	case string(FuseOverlayfs):
		return FuseOverlayfs
	case string(Kernel):
		return Kernel
	default:
		t.Fatalf("OVERLAYTEST_OURS=%q: want govirtiofsd, fuse-overlayfs or kernel", v)
		return ""
	}
}

// daemonBin is the govirtiofsd binary built once for the package's tests.
var daemonBin struct {
	once sync.Once
	path string
	err  error
}

// buildDaemon builds cmd/govirtiofsd once, as internal/posixtest does.
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "overlaytest-bin-")
		if err != nil {
			daemonBin.err = err
			return
		}
		daemonBin.path = filepath.Join(dir, "govirtiofsd")
		build := exec.Command("go", "build", "-o", daemonBin.path, "../../cmd/govirtiofsd")
		// The daemon drops capabilities on every thread, which a cgo
		// binary cannot do (syscall.AllThreadsSyscall).
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			daemonBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if daemonBin.err != nil {
		t.Fatalf("building govirtiofsd: %v", daemonBin.err)
	}
	return daemonBin.path
}

// TestMain removes the daemon binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if daemonBin.path != "" {
		os.RemoveAll(filepath.Dir(daemonBin.path))
	}
	os.Exit(code)
}

// requireMachine checks root, /dev/fuse, kernel overlayfs and the stand-in
// daemon if one is asked for (skip here, fail under CI=true).
func requireMachine(t *testing.T, impl Impl) {
	t.Helper()
	testenv.RequireFUSE(t)
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fss), "\toverlay\n") {
		// Mounting may still load the module; try once.
		dir := t.TempDir()
		a, b, m := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "m")
		for _, d := range []string{a, b, m} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount("overlay", m, "overlay", 0, "lowerdir="+a+":"+b); err != nil {
			testenv.Missing(t, "kernel overlayfs is not available: %v", err)
			return
		}
		unix.Unmount(m, 0)
	}
	if impl == FuseOverlayfs {
		if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
			testenv.Missing(t, "OVERLAYTEST_OURS=fuse-overlayfs but fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
		}
	}
}

// side is one of the two overlays of a case.
type side struct {
	impl    Impl
	dir     string // holds l1.., upper, work, mnt
	layers  Layers
	mnt     string
	opts    MountOptions
	m       *Mount
	tracker *inoTracker
	last    *Manifest // the last merged manifest
}

func (s *side) mount() error {
	// With index=on the kernel marks upper and work dirs in use until the
	// last superblock reference of the previous mount goes, which can come
	// a moment after umount(2) returns (a deferred fput): EBUSY then.
	for i := 0; ; i++ {
		m, err := MountImpl(s.impl, s.layers, s.opts, s.mnt)
		if errors.Is(err, unix.EBUSY) && i < 50 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		s.m = m
		return nil
	}
}

func (s *side) unmount(t *testing.T) error {
	m := s.m
	s.m = nil
	if m == nil {
		return nil
	}
	err := m.Unmount()
	if out := m.Output(); out != "" && err == nil {
		t.Logf("%s wrote: %s", s.impl, out)
	}
	return err
}

// inoTracker turns st_ino values, which differ between the sides by
// nature, into comparable identities: an inode is labelled path@step where
// and when it was first seen, and keeps the label while it stays in the
// merged view. Equal labels on both sides mean the same objects share an
// inode number (hard links), keep it across a step (copy-up, rename,
// remount), and no two objects share one (uniqueness across layers).
type inoTracker struct {
	labels map[uint64]string
}

func newTracker() *inoTracker { return &inoTracker{labels: map[uint64]string{}} }

func (tr *inoTracker) label(m *Manifest, step string) {
	seen := map[uint64]bool{}
	for _, p := range m.Paths() {
		e := m.Entries[p]
		l, ok := tr.labels[e.Ino]
		if !ok {
			l = p + "@" + step
			tr.labels[e.Ino] = l
		}
		e.Identity = l
		seen[e.Ino] = true
	}
	for ino := range tr.labels {
		if !seen[ino] {
			delete(tr.labels, ino)
		}
	}
}

// caseRun is one case being run.
type caseRun struct {
	t         *testing.T
	c         Case
	start     time.Time
	k, o      *side
	ours      Impl
	reported  int
	tolerated int
	persisted int
	prev      map[string]map[Diff]bool // per view, the diffs of the last comparison
}

const maxDiffsPerView = 25

// report fails the test for every diff not covered by a Differ. Diffs of
// a view ("merged", "upper"; "" for none) that are exactly as they were at
// the previous comparison of that view are counted, not repeated.
func (r *caseRun) report(view, stepName string, diffs []Diff, format func(Diff) string) {
	r.t.Helper()
	if r.prev == nil {
		r.prev = map[string]map[Diff]bool{}
	}
	now := map[Diff]bool{}
	shown := 0
	for _, d := range diffs {
		key := d
		key.Where = ""
		if view != "" {
			now[key] = true
			if r.prev[view][key] {
				r.persisted++
				continue
			}
		}
		if why, ok := r.intentional(stepName, d); ok {
			r.tolerated++
			r.t.Logf("intentional difference: %s (%s)", format(d), why)
			continue
		}
		r.reported++
		if shown < maxDiffsPerView {
			r.t.Errorf("%s", format(d))
		}
		shown++
	}
	if shown > maxDiffsPerView {
		r.t.Errorf("... and %d more differences at %s", shown-maxDiffsPerView, diffs[0].Where)
	}
	if view != "" {
		r.prev[view] = now
	}
}

func (r *caseRun) intentional(stepName string, d Diff) (string, bool) {
	if r.ours != Govirtiofsd {
		return "", false
	}
	for _, x := range r.c.Differs {
		if x.matches(stepName, d) {
			return x.Why, true
		}
	}
	return "", false
}

func kernelVsOurs(d Diff) string { return d.String() }

// compareViews compares the merged views and the uppers after a step.
func (r *caseRun) compareViews(where, stepName, label string, upper bool) {
	r.t.Helper()
	if !r.c.NoManifest {
		mk, err := MergedManifest(r.k.mnt, r.start)
		if err != nil {
			r.t.Fatalf("%s: kernel manifest: %v", where, err)
		}
		mo, err := MergedManifest(r.o.mnt, r.start)
		if err != nil {
			r.t.Fatalf("%s: %s manifest: %v", where, r.ours, err)
		}
		r.k.tracker.label(mk, label)
		r.o.tracker.label(mo, label)
		r.k.last, r.o.last = mk, mo
		diffs := append(CompareManifests(where+": merged", mk, mo), CompareChecks(where+": merged", mk, mo)...)
		r.report("merged", stepName, diffs, kernelVsOurs)
	}
	if upper && !r.c.ReadOnly {
		r.compareUppers(where, stepName)
	}
}

func (r *caseRun) compareUppers(where, stepName string) {
	r.t.Helper()
	uk, err := UpperManifest(r.k.layers.Upper, r.start)
	if err != nil {
		r.t.Fatalf("%s: kernel upper: %v", where, err)
	}
	uo, err := UpperManifest(r.o.layers.Upper, r.start)
	if err != nil {
		r.t.Fatalf("%s: %s upper: %v", where, r.ours, err)
	}
	r.report("upper", stepName, CompareManifests(where+": upper", uk, uo), kernelVsOurs)
}

// newSide builds one copy of the case's fixture below dir.
func newSide(t *testing.T, c Case, impl Impl, dir string, convert bool, bin string) *side {
	t.Helper()
	s := &side{impl: impl, dir: dir, mnt: filepath.Join(dir, "mnt"), tracker: newTracker(),
		opts: MountOptions{Extra: c.options(), Bin: bin}}
	for i, l := range c.Lower {
		ld := filepath.Join(dir, fmt.Sprintf("l%d", i+1))
		if c.SeparateFS {
			if err := os.MkdirAll(ld, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := MountTmpfs(ld); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(ld, unix.MNT_DETACH) })
		}
		if sabotage := os.Getenv("OVERLAYTEST_SABOTAGE"); sabotage == c.Name && impl != Kernel && i == 0 {
			l = append(append(Layer{}, l...), File("sabotage", "only on our side", 0o644))
		}
		if err := l.Build(ld); err != nil {
			t.Fatalf("building %s: %v", ld, err)
		}
		if convert {
			if err := ConvertForKernel(ld); err != nil {
				t.Fatal(err)
			}
		}
		s.layers.Lower = append(s.layers.Lower, ld)
	}
	if !c.ReadOnly {
		s.layers.Upper, s.layers.Work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		if err := c.Upper.Build(s.layers.Upper); err != nil {
			t.Fatalf("building the upper: %v", err)
		}
		if err := os.Mkdir(s.layers.Work, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDifferential runs every case on kernel overlayfs and on ours and
// compares, after every step, the step's result and errno, the merged
// views and the uppers; then, after unmounting, the uppers once more;
// then remounts ours on its own upper (same manifest, same st_ino); then
// mounts ours's layers with the kernel (the round trip: the kernel must
// see what ours showed).
func TestDifferential(t *testing.T) {
	impl := ours(t)
	requireMachine(t, impl)
	bin := ""
	if impl == Govirtiofsd {
		bin = buildDaemon(t)
	}
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) { runCase(t, c, impl, bin) })
	}
}

func runCase(t *testing.T, c Case, impl Impl, bin string) {
	r := &caseRun{t: t, c: c, start: time.Now(), ours: impl}
	top := t.TempDir()
	if err := MountTmpfs(top); err != nil {
		testenv.Missing(t, "%v", err)
	}
	t.Cleanup(func() { unix.Unmount(top, unix.MNT_DETACH) })
	oci := c.HasOCIMarkers()
	r.k = newSide(t, c, Kernel, filepath.Join(top, "kernel"), oci, bin)
	r.o = newSide(t, c, impl, filepath.Join(top, "ours"), oci && impl == Kernel, bin)
	for _, s := range []*side{r.k, r.o} {
		t.Cleanup(func() { s.m.Close() })
		if err := s.mount(); err != nil {
			t.Fatalf("mounting %s: %v", s.impl, err)
		}
	}
	setup := time.Since(r.start)

	r.compareViews("initial", "initial", "initial", true)
	for i, s := range c.Steps {
		where := fmt.Sprintf("step %d %q", i+1, s.Name)
		label := fmt.Sprintf("step %d", i+1)
		if s.Remount {
			for _, sd := range []*side{r.k, r.o} {
				if err := sd.unmount(t); err != nil {
					t.Errorf("%s: unmounting %s: %v", where, sd.impl, err)
				}
				if err := sd.mount(); err != nil {
					t.Fatalf("%s: mounting %s again: %v", where, sd.impl, err)
				}
			}
		} else {
			t0 := time.Now()
			rk := s.Run(r.k.mnt)
			t1 := time.Now()
			ro := s.Run(r.o.mnt)
			if os.Getenv("OVERLAYTEST_LOG_STEPS") != "" {
				t.Logf("%s: kernel %s (%v, %s %v)", where, rk, t1.Sub(t0).Round(time.Microsecond), impl, time.Since(t1).Round(time.Microsecond))
			}
			if rk != ro {
				r.report("", s.Name, []Diff{{Where: where, Field: "result", Kernel: rk.String(), Ours: ro.String()}}, kernelVsOurs)
			}
		}
		r.compareViews(where, s.Name, label, !c.NoManifest)
	}
	for _, sd := range []*side{r.k, r.o} {
		if err := sd.unmount(t); err != nil {
			t.Errorf("final unmount of %s: %v", sd.impl, err)
		}
	}
	if !c.ReadOnly {
		r.compareUppers("after unmount", "upper")
	}
	steps := time.Since(r.start) - setup

	// Remount ours on its own upper: the same manifest, every object with
	// the st_ino it had before.
	if !c.NoManifest {
		r.remountOurs()
	}
	r.roundTrip(oci)
	t.Logf("%s vs kernel: %d steps, %d differences (%d intentional, %d more unchanged from the comparison before and not repeated); setup %v, steps %v, total %v",
		impl, len(c.Steps), r.reported, r.tolerated, r.persisted, setup.Round(time.Millisecond), steps.Round(time.Millisecond), time.Since(r.start).Round(time.Millisecond))
}

// remountOurs mounts ours again on the layers it left and compares the
// merged view with the last one before the unmount, st_ino included.
func (r *caseRun) remountOurs() {
	t := r.t
	if err := r.o.mount(); err != nil {
		t.Errorf("remount: mounting %s on its own upper: %v", r.ours, err)
		return
	}
	m, err := MergedManifest(r.o.mnt, r.start)
	if err != nil {
		t.Errorf("remount: %s manifest: %v", r.ours, err)
	} else {
		r.o.tracker.label(m, "after the final remount")
		where := "remount of " + string(r.ours) + " on its own upper: merged"
		diffs := append(CompareManifests(where, r.o.last, m), CompareChecks(where, r.o.last, m)...)
		r.report("", "remount", diffs, func(d Diff) string {
			return fmt.Sprintf("%s: %s: %s: before %s, after %s", d.Where, d.Path, d.Field, show(d.Kernel), show(d.Ours))
		})
	}
	if err := r.o.unmount(t); err != nil {
		t.Errorf("remount: unmounting %s: %v", r.ours, err)
	}
}

// roundTrip mounts the layers ours left (its upper, its lowers converted
// for the kernel if they hold OCI markers) with kernel overlayfs and
// compares the kernel's merged view with the last one ours showed.
func (r *caseRun) roundTrip(oci bool) {
	t := r.t
	if r.c.NoManifest || r.ours == Kernel || r.o.last == nil {
		return
	}
	if oci {
		for _, l := range r.o.layers.Lower {
			if err := ConvertForKernel(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	m, err := MountKernel(r.o.layers, r.o.opts, r.o.mnt)
	if err != nil {
		t.Errorf("round trip: the kernel does not mount the upper %s left: %v", r.ours, err)
		return
	}
	defer func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("round trip: %v", err)
		}
	}()
	got, err := MergedManifest(r.o.mnt, r.start)
	if err != nil {
		t.Errorf("round trip: kernel manifest: %v", err)
		return
	}
	// Inode numbers are the kernel's now: compare which objects share one.
	newTracker().label(got, "round trip")
	newTracker().label(r.o.last, "round trip")
	where := "round trip: kernel on the upper " + string(r.ours) + " left: merged"
	r.report("", "roundtrip", CompareManifests(where, got, r.o.last), func(d Diff) string {
		return fmt.Sprintf("%s: %s: %s: kernel on it %s, %s before %s", d.Where, d.Path, d.Field, show(d.Kernel), r.ours, show(d.Ours))
	})
	// The kernel's own consistency on this upper is compared with its
	// consistency on the upper it made itself.
	r.report("", "roundtrip", CompareChecks(where, r.k.last, got), func(d Diff) string {
		return fmt.Sprintf("%s: %s: %s: kernel on its own upper %s, kernel on this one %s", d.Where, d.Path, d.Field, show(d.Kernel), show(d.Ours))
	})
}

// TestDiffReadable checks, without mounting anything, that two manifests
// that differ give one readable line per difference, naming the step, the
// path, the field and both values, and that a Differ silences only what it
// names.
func TestDiffReadable(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := L(File("same", "same", 0o644), File("f", "content", 0o644), Dir("dir", 0o755)).Build(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := L(Chmod("f", 0o600), File("extra", "x", 0o644)).Build(b); err != nil {
		t.Fatal(err)
	}
	ma, err := MergedManifest(a, FixtureTime)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := MergedManifest(b, FixtureTime)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range CompareManifests(`step 2 "chmod f 0600": merged`, ma, mb) {
		if d.Field == "st_ino" || d.Field == "size" && d.Path == "." {
			continue // a plain directory has no identities; its size counts entries
		}
		got = append(got, d.String())
	}
	want := []string{
		`step 2 "chmod f 0600": merged: extra: exists: kernel absent, ours file 0644 0:0 size 1 content "x"`,
		`step 2 "chmod f 0600": merged: f: mode: kernel 0644, ours 0600`,
	}
	if os.Geteuid() != 0 {
		for i := range want {
			want[i] = strings.ReplaceAll(want[i], "0:0", fmt.Sprintf("%d:%d", os.Geteuid(), os.Getegid()))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diffs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	r := &caseRun{t: t, ours: Govirtiofsd, c: Case{Differs: []Differ{{Step: "chmod", Field: "mode", Why: "test"}}}}
	d := Diff{Where: "w", Path: "f", Field: "mode"}
	if _, ok := r.intentional("chmod f 0600", d); !ok {
		t.Errorf("a Differ for step chmod, field mode does not cover a mode diff at chmod")
	}
	d.Field = "owner"
	if _, ok := r.intentional("chmod f 0600", d); ok {
		t.Errorf("a Differ for field mode covers an owner diff")
	}
}
