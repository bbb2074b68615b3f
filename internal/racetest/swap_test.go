package racetest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// resolveHow is how the test resolves every path in the mount: never
// through a symlink, never above the starting descriptor.
var resolveHow = unix.OpenHow{Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV}

// openIn opens path below dirfd without following any symlink.
func openIn(dirfd int, path string, flags int, mode uint32) (int, error) {
	how := resolveHow
	how.Flags = uint64(flags | unix.O_CLOEXEC)
	if flags&unix.O_CREAT != 0 || flags&unix.O_TMPFILE == unix.O_TMPFILE {
		how.Mode = uint64(mode) // openat2 refuses a mode otherwise
	}
	for {
		fd, err := unix.Openat2(dirfd, path, &how)
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}

// layout is the host side of one run.
type layout struct {
	top     string
	outside string   // the sibling that must stay untouched
	mnt     string   // the mount point
	bases   []string // host directories holding d that host swappers swap
	args    []string // daemon arguments but --mountpoint
	token   string   // in the name of everything the workers make
}

// makeTree builds the tree every d (and outside/, its mirror) holds: the
// file X, comm (a name /proc/self also has), sub/Y and tmp/ (a name / also
// has). what goes into the contents.
func makeTree(t *testing.T, dir, token, what string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, token+"sub"), filepath.Join(dir, "tmp"), filepath.Join(dir, "sub2")} {
		must(os.MkdirAll(d, 0o755))
	}
	must(os.WriteFile(filepath.Join(dir, token+"x"), []byte(what+" x\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "comm"), []byte(what+" comm\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, token+"sub", token+"y"), []byte(what+" y\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "sub2", "deep"), []byte(what+" deep\n"), 0o600))
	must(unix.Lsetxattr(filepath.Join(dir, token+"x"), "user.rt", []byte(what), 0))
	must(unix.Lsetxattr(filepath.Join(dir, token+"sub"), "user.rt", []byte(what), 0))
}

// newLayout makes top/{outside,mnt} and, for passthrough, top/share/d, or
// for the overlay top/{lower/d,upper,work}.
func newLayout(t *testing.T, overlay bool) *layout {
	t.Helper()
	top := t.TempDir()
	b := make([]byte, 5)
	rand.Read(b)
	l := &layout{top: top, outside: filepath.Join(top, "outside"), mnt: filepath.Join(top, "mnt"), token: "rt" + hex.EncodeToString(b)}
	if err := os.Mkdir(l.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	makeTree(t, l.outside, l.token, "outside")
	if err := os.Symlink("/etc/hostname", filepath.Join(l.outside, l.token+"link")); err != nil {
		t.Fatal(err)
	}
	// Old times on everything outside, children before parents (making
	// a child moves its parent's mtime).
	var paths []string
	filepath.WalkDir(l.outside, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	slices.Reverse(paths)
	for _, p := range paths {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, oldTimes, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	if overlay {
		lower, upper, work := filepath.Join(top, "lower"), filepath.Join(top, "upper"), filepath.Join(top, "work")
		for _, d := range []string{upper, work} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		makeTree(t, filepath.Join(lower, "d"), l.token, "lower")
		l.bases = []string{lower, upper}
		l.args = []string{"--overlay", "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work, "--xattr"}
	} else {
		share := filepath.Join(top, "share")
		makeTree(t, filepath.Join(share, "d"), l.token, "share")
		l.bases = []string{share}
		l.args = []string{"--shared-dir", share, "--xattr"}
	}
	level := "warn"
	if v := os.Getenv("RACETEST_LOG_LEVEL"); v != "" {
		level = v // debug logs every request and reply
	}
	l.args = append(l.args, "--cache", "never", "--log-level", level)
	return l
}

// targets are what swappers point d at: the host root, the daemon's own
// /proc entry, and the sibling outside the share, relative and absolute.
func (l *layout) targets() []string {
	return []string{"/", "/proc/self", "../outside", l.outside}
}

// counters count tries, successes and errors by operation.
type counters struct {
	mu   sync.Mutex
	m    map[string]*[2]atomic.Int64
	errs map[string]int // "op: error"
}

func (c *counters) add(op string, err error) {
	c.mu.Lock()
	if c.m == nil {
		c.m, c.errs = map[string]*[2]atomic.Int64{}, map[string]int{}
	}
	n := c.m[op]
	if n == nil {
		n = new([2]atomic.Int64)
		c.m[op] = n
	}
	if err != nil {
		c.errs[op+": "+err.Error()]++
	}
	c.mu.Unlock()
	n[0].Add(1)
	if err == nil {
		n[1].Add(1)
	}
}

// errorsOf counts, by operation, the failures with any of errs.
func (c *counters) errorsOf(errs ...unix.Errno) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, n := range c.errs {
		for _, e := range errs {
			if op, ok := strings.CutSuffix(k, ": "+e.Error()); ok {
				out[op] += n
			}
		}
	}
	return out
}

// errors returns the errors seen, most frequent first.
func (c *counters) errors() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lines []string
	for e, n := range c.errs {
		lines = append(lines, fmt.Sprintf("%6d %s", n, e))
	}
	slices.Sort(lines)
	slices.Reverse(lines)
	return strings.Join(lines, "\n")
}

// report returns "op ok/tries" lines, the total successes and the number
// of operations that succeeded at least once.
func (c *counters) report() (string, int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lines []string
	var total int64
	kinds := 0
	for _, op := range slices.Sorted(maps.Keys(c.m)) {
		n := c.m[op]
		ok := n[1].Load()
		total += ok
		if ok > 0 {
			kinds++
		}
		lines = append(lines, fmt.Sprintf("%s %d/%d", op, ok, n[0].Load()))
	}
	return strings.Join(lines, ", "), total, kinds
}

// swapper replaces d in the directory open as base with a symlink to one
// of targets and puts it back, until stop, either atomically
// (RENAME_EXCHANGE) or as rename, symlink, unlink, rename. base is a host
// directory (a hostile host process) or the mount's root (a hostile
// guest). Only names in base are touched, and none is followed.
func swapper(base int, id string, targets []string, stop *atomic.Bool, c *counters) {
	hold := ".hold-" + id
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 0))
	pause := func() { time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond) }
	for n := 0; !stop.Load(); n++ {
		target := targets[rng.IntN(len(targets))]
		if rng.IntN(2) == 0 {
			if err := unix.Symlinkat(target, base, hold); err != nil {
				restore(base, hold, n)
				continue
			}
			err := unix.Renameat2(base, hold, base, "d", unix.RENAME_EXCHANGE)
			c.add(side(id)+" exchange", err)
			if err == nil {
				pause()
				unix.Renameat2(base, hold, base, "d", unix.RENAME_EXCHANGE)
			}
		} else {
			if err := unix.Renameat(base, "d", base, hold); err != nil {
				pause()
				continue
			}
			err := unix.Symlinkat(target, base, "d")
			c.add(side(id)+" rename", err)
			pause()
			if err == nil {
				unix.Unlinkat(base, "d", 0)
			}
		}
		restore(base, hold, n)
		pause()
	}
}

// side names the swapper with id: g for the guest, else the host.
func side(id string) string {
	if strings.HasPrefix(id, "g") {
		return "guest"
	}
	return "host"
}

// recyclingSwapper is swapper for a layer whose objects must not be
// deleted while mounted: its symlinks are made once, as .lnk-ID-K, and
// only ever exchanged with d, so no object of the layer goes away and no
// inode number is freed for reuse. (An overlay keys inodes by their
// lower origins; a lower object deleted under it lets a new object take
// its number, which the overlay then mistakes for the old one. That is a
// known overlay bug this test would otherwise trip over, not what it
// checks.)
func recyclingSwapper(base int, id string, targets []string, stop *atomic.Bool, c *counters) {
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))
	pause := func() { time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond) }
	var lnks []string
	for k, target := range targets {
		name := ".lnk-" + id + "-" + strconv.Itoa(k)
		if unix.Symlinkat(target, base, name) == nil {
			lnks = append(lnks, name)
		}
	}
	if len(lnks) == 0 {
		return
	}
	isDir := func(name string) bool {
		var st unix.Stat_t
		return unix.Fstatat(base, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	for !stop.Load() {
		lnk := lnks[rng.IntN(len(lnks))]
		if isDir(lnk) {
			// A directory ended up here: give it back to d.
			unix.Renameat2(base, lnk, base, "d", unix.RENAME_EXCHANGE)
			pause()
			continue
		}
		err := unix.Renameat2(base, lnk, base, "d", unix.RENAME_EXCHANGE)
		c.add(side(id)+" exchange", err)
		pause()
		for i := 0; err == nil && i < 4 && isDir(lnk); i++ {
			unix.Renameat2(base, lnk, base, "d", unix.RENAME_EXCHANGE)
		}
		pause()
	}
}

// restore puts back a directory a swapper holds as hold, and removes the
// symlink it holds instead.
func restore(base int, hold string, n int) {
	for i := 0; i < 4; i++ {
		var st unix.Stat_t
		if err := unix.Fstatat(base, hold, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Unlinkat(base, hold, 0)
			return
		}
		err := unix.Renameat2(base, hold, base, "d", unix.RENAME_NOREPLACE)
		if err == nil || err == unix.ENOENT {
			return
		}
		// d is back, a symlink of another swapper's: take it instead.
		unix.Renameat2(base, hold, base, "d", unix.RENAME_EXCHANGE)
	}
	// Two directories named d (an overlay's copy-up made a new one):
	// keep ours aside.
	unix.Renameat2(base, hold, base, hold+"."+strconv.Itoa(n), unix.RENAME_NOREPLACE)
}

// rootState records what the workers would change on / and /tmp through a
// daemon that followed d there: mode, owner and the xattr they set.
func rootState() map[string]string {
	out := map[string]string{}
	for _, p := range []string{"/", "/tmp"} {
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			continue
		}
		v := make([]byte, 64)
		n, err := unix.Lgetxattr(p, "user.rt", v)
		x := "none"
		if err == nil {
			x = strconv.Quote(string(v[:n]))
		}
		out[p] = fmt.Sprintf("mode=%#o uid=%d gid=%d user.rt=%s", st.Mode, st.Uid, st.Gid, x)
	}
	return out
}

// restoreRoots undoes what a broken daemon did to / and /tmp.
func restoreRoots(before map[string]string) {
	for p, was := range before {
		var mode uint32
		var uid, gid int
		var x string
		fmt.Sscanf(was, "mode=%o uid=%d gid=%d user.rt=%s", &mode, &uid, &gid, &x)
		unix.Chmod(p, mode&0o7777)
		unix.Lchown(p, uid, gid)
		if x == "none" {
			unix.Lremovexattr(p, "user.rt")
		}
	}
}

// workload is the guest's side: operations under d through the mount.
type workload struct {
	mntFd int
	token string
	c     counters
	stop  atomic.Bool

	heldMu sync.Mutex
	held   []int // descriptors of d opened earlier, kept across swaps
}

// hold opens d (when it is a directory) and keeps the descriptor.
func (w *workload) hold() {
	fd, err := openIn(w.mntFd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	w.c.add("hold d", err)
	if err != nil {
		return
	}
	w.heldMu.Lock()
	w.held = append(w.held, fd)
	w.heldMu.Unlock()
}

// dir returns a directory descriptor to work in and whether the caller
// closes it: d opened now, d held from before, their subdirectories, or
// (with tmp) d/tmp.
func (w *workload) dir(rng *mrand.Rand, tmp bool) (int, bool, error) {
	w.heldMu.Lock()
	held := -1
	if len(w.held) > 0 {
		held = w.held[rng.IntN(len(w.held))]
	}
	w.heldMu.Unlock()
	n := 5
	if tmp {
		n = 6
	}
	switch k := rng.IntN(n); {
	case k == 0 || held < 0:
		fd, err := openIn(w.mntFd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return fd, true, err
	case k <= 2:
		return held, false, nil
	case k == 3:
		fd, err := openIn(held, w.token+"sub", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return fd, true, err
	case k == 4:
		fd, err := openIn(w.mntFd, "d/"+w.token+"sub", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return fd, true, err
	default:
		fd, err := openIn(w.mntFd, "d/tmp", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return fd, true, err
	}
}

// ops are the workers' operations in directory dir; me is unique to the
// worker. Every name made contains the token.
func (w *workload) ops() map[string]func(dir int, me string) error {
	tok := w.token
	x := tok + "x"
	withFile := func(dir int, name string, flags int, f func(fd int) error) error {
		fd, err := openIn(dir, name, flags, 0o644)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return f(fd)
	}
	pwrite := func(data string) func(fd int) error {
		return func(fd int) error { _, err := unix.Pwrite(fd, []byte(data), 0); return err }
	}
	return map[string]func(dir int, me string) error{
		"create": func(dir int, me string) error {
			return withFile(dir, tok+"c"+me, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, pwrite("created"))
		},
		"create deep": func(dir int, me string) error {
			return withFile(dir, tok+"sub/"+tok+"n"+me, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, pwrite("deep"))
		},
		"write": func(dir int, me string) error { return withFile(dir, x, unix.O_WRONLY, pwrite("W")) },
		"write comm": func(dir int, me string) error {
			return withFile(dir, "comm", unix.O_WRONLY|unix.O_TRUNC, pwrite("pwned"))
		},
		"append": func(dir int, me string) error { return withFile(dir, x, unix.O_WRONLY|unix.O_APPEND, pwrite("A")) },
		"chmod": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDONLY, func(fd int) error { return unix.Fchmod(fd, 0o640) })
		},
		"chmod dir": func(dir int, me string) error { return unix.Fchmod(dir, 0o755) },
		"chown": func(dir int, me string) error {
			return unix.Fchownat(dir, x, 1234, 1234, unix.AT_SYMLINK_NOFOLLOW)
		},
		"truncate": func(dir int, me string) error {
			return withFile(dir, x, unix.O_WRONLY, func(fd int) error { return unix.Ftruncate(fd, 2) })
		},
		"fallocate": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDWR, func(fd int) error { return unix.Fallocate(fd, 0, 0, 64) })
		},
		"utimes": func(dir int, me string) error {
			ts := []unix.Timespec{{Sec: 5}, {Sec: 6}}
			return unix.UtimesNanoAt(dir, x, ts, unix.AT_SYMLINK_NOFOLLOW)
		},
		"setxattr": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDONLY, func(fd int) error { return unix.Fsetxattr(fd, "user.rt", []byte("changed"), 0) })
		},
		"removexattr": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDONLY, func(fd int) error { return unix.Fremovexattr(fd, "user.rt") })
		},
		"setxattr dir": func(dir int, me string) error { return unix.Fsetxattr(dir, "user.rt", []byte("dir"), 0) },
		"mkdir": func(dir int, me string) error {
			if err := unix.Mkdirat(dir, tok+"m"+me, 0o755); err != nil {
				return err
			}
			return unix.Unlinkat(dir, tok+"m"+me, unix.AT_REMOVEDIR)
		},
		"mknod": func(dir int, me string) error {
			if err := unix.Mknodat(dir, tok+"p"+me, unix.S_IFIFO|0o644, 0); err != nil {
				return err
			}
			return unix.Unlinkat(dir, tok+"p"+me, 0)
		},
		"symlink": func(dir int, me string) error {
			if err := unix.Symlinkat("/", dir, tok+"s"+me); err != nil {
				return err
			}
			return unix.Unlinkat(dir, tok+"s"+me, 0)
		},
		"link": func(dir int, me string) error {
			if err := unix.Linkat(dir, x, dir, tok+"l"+me, 0); err != nil {
				return err
			}
			return unix.Unlinkat(dir, tok+"l"+me, 0)
		},
		"rename into": func(dir int, me string) error {
			name := tok + "r" + me
			fd, err := openIn(w.mntFd, name, unix.O_CREAT|unix.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
			if err := unix.Renameat(w.mntFd, name, dir, name); err != nil {
				unix.Unlinkat(w.mntFd, name, 0)
				return err
			}
			return unix.Unlinkat(dir, name, 0)
		},
		"rename within": func(dir int, me string) error {
			return unix.Renameat2(dir, tok+"c"+me, dir, tok+"v"+me, 0)
		},
		"unlink": func(dir int, me string) error {
			err := unix.Unlinkat(dir, tok+"v"+me, 0)
			if err == unix.ENOENT {
				err = unix.Unlinkat(dir, tok+"c"+me, 0)
			}
			return err
		},
		"tmpfile": func(dir int, me string) error {
			return withFile(dir, ".", unix.O_TMPFILE|unix.O_RDWR, pwrite("tmp"))
		},
		"copy_file_range": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDONLY, func(in int) error {
				return withFile(dir, tok+"c"+me, unix.O_CREAT|unix.O_WRONLY, func(out int) error {
					_, err := unix.CopyFileRange(in, nil, out, nil, 16, 0)
					return err
				})
			})
		},
		"read": func(dir int, me string) error {
			return withFile(dir, x, unix.O_RDONLY, func(fd int) error {
				_, err := unix.Pread(fd, make([]byte, 64), 0)
				return err
			})
		},
		"readdir": func(dir int, me string) error {
			return withFile(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY, func(fd int) error {
				_, err := unix.Getdents(fd, make([]byte, 4096))
				return err
			})
		},
	}
}

// worker runs random operations in random directories until stop.
func (w *workload) worker(id int) {
	ops := w.ops()
	names := slices.Sorted(maps.Keys(ops))
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	me := strconv.Itoa(id)
	for !w.stop.Load() {
		name := names[rng.IntN(len(names))]
		// Changing a directory itself is never tried in d/tmp: a
		// broken daemon would change the host's /tmp.
		dir, closeIt, err := w.dir(rng, !strings.HasSuffix(name, " dir"))
		w.c.add("open dir", err)
		if err != nil {
			continue
		}
		w.c.add(name, ops[name](dir, me))
		if closeIt {
			unix.Close(dir)
		}
	}
}

// TestSymlinkSwap races swappers that replace the shared directory d with
// symlinks to "/", "/proc/self" and outside/ (a sibling of the share), on
// the host and through the mount, against workers changing things under d
// through the mount, on passthrough and on the overlay (d in the lower).
// Afterwards outside/ must be exactly as it was, atimes included (the
// daemon read nothing there either), no file of the test's may have
// appeared in /, /tmp or next to the share, the daemon's threads must keep
// their names (writing comm under /proc/self would rename one), and the
// daemon must exit 0 at unmount without a panic.
func TestSymlinkSwap(t *testing.T) {
	testenv.RequireFUSE(t)
	buildDaemon(t)
	type variant struct {
		name    string
		overlay bool
		extra   []string
	}
	variants := []variant{{"passthrough", false, nil}, {"overlay", true, nil}}
	if daemonBin.sandbox {
		variants = append(variants,
			variant{"passthrough sandbox=none", false, []string{"--sandbox", "none"}},
			variant{"overlay sandbox=none", true, []string{"--sandbox", "none"}})
	}
	run := 4 * time.Second
	if len(variants) > 2 {
		run = 2500 * time.Millisecond
	}
	if testing.Short() {
		run = time.Second
	}
	if s := os.Getenv("RACETEST_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("RACETEST_DURATION: %v", err)
		}
		run = d
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) { testSymlinkSwap(t, v.overlay, v.extra, run) })
	}
}

func testSymlinkSwap(t *testing.T, overlay bool, extra []string, run time.Duration) {
	l := newLayout(t, overlay)
	outsideBefore := snapshot(t, l.outside)
	rootsBefore := rootState()
	topBefore := namesWith(l.top, "")
	d := startDaemon(t, l.mnt, append(l.args, extra...)...)
	commsBefore, _, err := d.threadComms()
	if err != nil {
		t.Fatal(err)
	}

	mntFd, err := unix.Open(l.mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{mntFd: mntFd, token: l.token}
	for range 4 {
		w.hold()
	}
	var swaps counters
	var wg sync.WaitGroup
	var baseFds []int
	for i, b := range l.bases {
		fd, err := unix.Open(b, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		baseFds = append(baseFds, fd)
		swap := swapper
		if overlay && i == 0 {
			swap = recyclingSwapper // the lower
		}
		for j := range 2 {
			wg.Go(func() { swap(fd, fmt.Sprintf("h%d%d", i, j), l.targets(), &w.stop, &swaps) })
		}
	}
	wg.Go(func() { swapper(mntFd, "g0", l.targets(), &w.stop, &swaps) })
	for i := range 6 {
		wg.Go(func() { w.worker(i) })
	}
	wg.Go(func() {
		// More descriptors of d, opened while it is being swapped.
		for i := 0; i < 28 && !w.stop.Load(); i++ {
			time.Sleep(50 * time.Millisecond)
			w.hold()
		}
	})

	time.Sleep(run)
	w.stop.Store(true)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		stacks := kernelStacks()
		d.dumpAndKill()
		<-finished
		t.Fatalf("workers still blocked 20s after stopping (a hung request?)\ntest threads in the kernel:\n%s\ndaemon output:\n%s", stacks, d.out.String())
	}

	// Writing comm under /proc/self renames the daemon thread that does
	// it: every thread keeps its name, or has its process's.
	commsAfter, pids, err := d.threadComms()
	if err != nil {
		t.Errorf("daemon threads: %v", err)
	}
	for tid, c := range commsAfter {
		want, ok := commsBefore[tid]
		if !ok {
			want = commsAfter[pids[tid]]
		}
		if c != want {
			t.Errorf("daemon thread %s is named %q, not %q: its /proc/self/comm was written", tid, c, want)
		}
	}
	for _, fd := range w.held {
		unix.Close(fd)
	}
	for _, fd := range baseFds {
		unix.Close(fd)
	}
	unix.Close(mntFd)
	d.unmount(t)
	out := d.out.String()
	for _, bad := range []string{"panic", "fatal error", "DATA RACE"} {
		if strings.Contains(out, bad) {
			t.Errorf("daemon output has %q:\n%s", bad, out)
			break
		}
	}

	compareSnapshots(t, "outside/", outsideBefore, snapshot(t, l.outside))
	if topAfter := namesWith(l.top, ""); !slices.Equal(slices.Sorted(slices.Values(topAfter)), slices.Sorted(slices.Values(topBefore))) {
		t.Errorf("next to the share: %q, was %q", topAfter, topBefore)
	}
	if after := rootState(); !maps.Equal(after, rootsBefore) {
		t.Errorf("the daemon changed / or /tmp: %v, was %v", after, rootsBefore)
		restoreRoots(rootsBefore)
	}
	for _, dir := range []string{"/", "/tmp", os.TempDir(), "/proc/self"} {
		if got := namesWith(dir, l.token); len(got) > 0 {
			t.Errorf("the daemon made %q", got)
			for _, p := range got {
				os.RemoveAll(p) // ours: the token is in the name
			}
		}
	}

	// The kernel answers EIO when a reply contradicts what it knows (a
	// new entry of the wrong type, an inode whose type changed) and the
	// daemon when it recovered from a panic; ELOOP from a name that is
	// never a symlink means the daemon returned the wrong inode.
	for op, n := range w.c.errorsOf(unix.EIO, unix.ELOOP) {
		if op == "open dir" || op == "hold d" {
			continue // d itself is a symlink half the time
		}
		if overlay {
			// Lowers change under the union: a metacopy file
			// whose data vanished answers EIO, as on the kernel's.
			t.Logf("%s: %d times EIO or ELOOP", op, n)
			continue
		}
		t.Errorf("%s: %d times EIO or ELOOP: the daemon answered with the wrong object or panicked", op, n)
	}

	wr, wok, kinds := w.c.report()
	sr, sok, _ := swaps.report()
	t.Logf("swaps: %s", sr)
	t.Logf("operations (ok/tries): %s", wr)
	// A loaded two-CPU machine manages some thousand of each a second.
	if sok < 50 {
		t.Errorf("only %d swaps of d succeeded; the test exercised little", sok)
	}
	if wok < int64(50*run.Seconds()) || kinds < 20 {
		t.Errorf("only %d operations of %d kinds succeeded in %v; the test exercised little", wok, kinds, run)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("errors:\n%s", w.c.errors())
		t.Logf("daemon output:\n%s", out)
	}
}
