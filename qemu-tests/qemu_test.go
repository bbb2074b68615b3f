package qemutests

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is one guest kernel with one QEMU.
type pair struct {
	name    string
	short   string // for QEMUTEST_PAIRS
	kernel  string // setup.env keys
	initrd  string
	qemu10  bool // QEMU 10.0 from backports, else Debian 12's 7.2
	smp     int
	queues  int  // num-request-queues
	tagFlag bool // pass --tag to the daemon (QEMU 7.1 to 8.0 crash on CONFIG)
}

var pairs = []pair{
	{name: "linux-6.1+qemu-7.2", short: "6.1", kernel: "KERNEL61", initrd: "INITRD61", smp: 1, queues: 1},
	{name: "linux-6.12+qemu-10.0", short: "6.12", kernel: "KERNEL612", initrd: "INITRD612", qemu10: true, smp: 4, queues: 4, tagFlag: true},
}

// guestChecks are the verdicts every run must report, in the guest's order:
// /init's mount, the checker's (guest/main.go), /init's umount.
var guestChecks = []string{
	"mount",
	"statfs",
	"create_read_write_append",
	"setattr",
	"rename",
	"rename_flags",
	"hardlink",
	"symlink",
	"mkdir_rmdir",
	"xattr",
	"readdir_host_5000",
	"readdir_guest_5000",
	"mmap_read",
	"mmap_write",
	"fsync",
	"unlink_open",
	"parallel",
	"big_write_256m",
	"big_read_256m",
	"umount",
}

// defaultWatchdog is how long a guest program may print nothing before
// guest.sh reports it hung (see guest/guest.sh); the host's own idle limit
// is a minute longer, so the guest's diagnosis reaches the console first.
const defaultWatchdog = 90 * time.Second

// posixSkip names the posixtest tests the guest leaves out, whatever the
// daemon, with the reason.
var posixSkip = map[string]string{
	"LargeFile1GiB": "1 GiB takes minutes under TCG; big_write_256m and big_read_256m cover large files",
}

// TestQEMU boots each kernel/QEMU pair against the daemon and checks what
// the guest sees through virtiofs and what it leaves on the host.
func TestQEMU(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)

	selected := selectPairs(t, os.Getenv("QEMUTEST_PAIRS"), pairs)
	logRoot := logRootDir(t)

	plan := planGuest(t, daemon)
	var summary []string
	for _, p := range selected {
		t.Run(p.name, func(t *testing.T) {
			summary = append(summary, runPair(t, setup, daemon, p, plan, logRoot))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// selectPairs returns the pairs a comma-separated list names (by full name
// or kernel version), or def if the list is empty.
func selectPairs(t *testing.T, list string, def []pair) []pair {
	t.Helper()
	if list == "" {
		return def
	}
	var selected []pair
	for _, want := range strings.Split(list, ",") {
		i := slices.IndexFunc(pairs, func(p pair) bool { return p.name == want || p.short == want })
		if i < 0 {
			t.Fatalf("unknown pair %q (QEMUTEST_PAIRS, QEMUTEST_OVERLAY_PAIRS)", want)
		}
		selected = append(selected, pairs[i])
	}
	return selected
}

// logRootDir is where the console and daemon logs go (QEMUTEST_LOGDIR).
func logRootDir(t *testing.T) string {
	t.Helper()
	logRoot := os.Getenv("QEMUTEST_LOGDIR")
	if logRoot == "" {
		logRoot = filepath.Join("..", "bin", "qemu-tests")
	}
	logRoot, err := filepath.Abs(logRoot)
	if err != nil {
		t.Fatal(err)
	}
	return logRoot
}

// guestPlan is what every guest boots with and must report.
type guestPlan struct {
	files     []cpioFile        // appended to setup.sh's base initramfs
	checks    []string          // verdicts every run must report
	posixSkip map[string]string // posixtest tests left out on purpose, with why
}

// planGuest builds the guest programs and fills in guest.sh for daemon.
func planGuest(t *testing.T, daemon daemonSpec) *guestPlan {
	t.Helper()
	work := t.TempDir()
	plan := &guestPlan{posixSkip: maps.Clone(posixSkip)}
	maps.Copy(plan.posixSkip, daemon.posixSkip)
	skipNames := slices.Sorted(maps.Keys(plan.posixSkip))

	plan.checks = slices.Clone(guestChecks)
	checkRun := os.Getenv("QEMUTEST_CHECKS")
	if checkRun != "" {
		re, err := regexp.Compile(checkRun)
		if err != nil {
			t.Fatalf("QEMUTEST_CHECKS: %v", err)
		}
		plan.checks = slices.DeleteFunc(plan.checks, func(c string) bool {
			return c != "mount" && c != "umount" && !re.MatchString(c)
		})
	}
	posixRun := "^TestMountedDir$"
	if r := os.Getenv("QEMUTEST_POSIX_RUN"); r != "" {
		posixRun += "/" + r
	}
	watchdog := envDuration(t, "QEMUTEST_WATCHDOG", defaultWatchdog)
	script := strings.NewReplacer(
		"@MODE@", "",
		"@CHECKS@", checkRun,
		"@POSIXRUN@", posixRun,
		"@POSIXSKIP@", strings.Join(skipNames, ","),
		"@WATCHDOG@", strconv.Itoa(int(watchdog.Seconds())),
	).Replace(string(readFile(t, filepath.Join("guest", "guest.sh"))))

	start := time.Now()
	guestBin := filepath.Join(work, "guesttest")
	buildGuest(t, guestBin)
	plan.files = []cpioFile{
		{name: "init", mode: 0o100755, data: readFile(t, filepath.Join("guest", "init.sh"))},
		{name: "guest.sh", mode: 0o100644, data: []byte(script)},
		{name: "bin/guesttest", mode: 0o100755, data: readFile(t, guestBin)},
	}
	if os.Getenv("QEMUTEST_POSIX") != "0" {
		posixBin := filepath.Join(work, "posixtest.test")
		buildPosix(t, posixBin)
		plan.files = append(plan.files, cpioFile{name: "bin/posixtest.test", mode: 0o100755, data: readFile(t, posixBin)})
		plan.checks = slices.Insert(plan.checks, len(plan.checks)-1, "posix_suite")
		for _, n := range skipNames {
			t.Logf("posixtest %s is left out in the guest: %s", n, plan.posixSkip[n])
		}
	}
	t.Logf("guest programs built in %.1fs", time.Since(start).Seconds())
	return plan
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runPair boots one pair and reports its checks as subtests; it returns a
// one-line summary.
func runPair(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, logRoot string) string {
	return runPairWith(t, setup, daemon, p, plan, logRoot, nil)
}

// runPairWith is runPair with adjust, if not nil, applied to the guest run
// before it starts.
func runPairWith(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, logRoot string, adjust func(g *guestRun)) string {
	g := newGuestRun(t, setup, daemon, p)
	if adjust != nil {
		adjust(g)
	}

	// A short folder: the socket path must fit in sun_path.
	work, err := os.MkdirTemp("", "gvt-qemu-")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("QEMUTEST_KEEP") == "1"
	t.Cleanup(func() {
		switch {
		case keep:
			t.Logf("kept the share in %s", work)
		case t.Failed():
			// Keep what explains a failure, not the 512 MiB of big files.
			os.Remove(filepath.Join(work, "share/in/big-host.bin"))
			os.Remove(filepath.Join(work, "share/out/big-guest.bin"))
			t.Logf("kept the share (without its 256 MiB files) in %s", work)
		default:
			os.RemoveAll(work)
		}
	})
	g.share = filepath.Join(work, "share")
	g.socket = filepath.Join(work, "vhost.sock")
	if err := os.Mkdir(g.share, 0o755); err != nil {
		t.Fatal(err)
	}
	g.logDir = filepath.Join(logRoot, p.name)
	if err := os.MkdirAll(g.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)

	prepStart := time.Now()
	prepareShare(t, g.share)
	t.Logf("share prepared in %.1fs: %s", time.Since(prepStart).Seconds(), g.share)

	g.daemonArgv = daemon.argv(g.socket, g.share, p.tag())
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
	reportVerdicts(sub, plan.checks, res, func(t *testing.T, name string) {
		if hv := hostVerify[name]; hv != nil {
			hv(t, g.share, res)
		}
	})
	for _, name := range res.posixOrder {
		v := res.posix[name]
		if _, left := plan.posixSkip[name]; left && v.result == "SKIP" {
			continue // left out on purpose, logged above
		}
		sub("posix/"+name, func(t *testing.T) {
			for _, l := range res.posixLog[name] {
				t.Log(l)
			}
			switch v.result {
			case "FAIL":
				t.Fatalf("failed in the guest")
			case "SKIP":
				t.Skip("skipped in the guest")
			}
		})
	}
	if g.queues > 1 {
		sub("request_queues", func(t *testing.T) {
			checkQueueSpread(t, res.info, g.queues)
		})
	}
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	return fmt.Sprintf("%s with %s: %d passed, %d failed; boot-to-verdict %.1fs (guest userland at %.1fs, mounted at %.1fs); daemon CPU %.1fs; logs in %s",
		p.name, daemon.name, passed, failed, res.verdict.Seconds(), res.boot.Seconds(), res.mounted.Seconds(), res.daemonCPU.Seconds(), g.logDir)
}

// tag is what the daemon announces as the device's tag ("" for none).
func (p pair) tag() string {
	if p.tagFlag {
		return "myfs"
	}
	return ""
}

// logRun logs a guest run's timings and the guest's own lines, and fails
// the test if the guest did not get to the end.
func logRun(t *testing.T, g *guestRun, res *bootResult) {
	t.Helper()
	t.Logf("boot to guest userland %.1fs, to mount %.1fs, to verdict %.1fs, QEMU exit %.1fs; daemon CPU %.1fs",
		res.boot.Seconds(), res.mounted.Seconds(), res.verdict.Seconds(), res.qemuExit.Seconds(), res.daemonCPU.Seconds())
	for _, l := range res.info {
		t.Log(l)
	}
	if res.failure != "" || !res.done {
		why := res.failure
		if why == "" {
			why = "the guest stopped before GUESTDONE"
		}
		t.Errorf("%s; last console lines (full log %s):\n%s", why,
			filepath.Join(g.logDir, "console.log"), strings.Join(res.consoleTail, "\n"))
	}
}

// reportVerdicts makes a subtest of every verdict in want and of any other
// the guest reported; host, if not nil, runs in the subtest of a passing
// one.
func reportVerdicts(sub func(string, func(*testing.T)), want []string, res *bootResult, host func(t *testing.T, name string)) {
	names := slices.Clone(want)
	for _, n := range res.order {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, name := range names {
		sub(name, func(t *testing.T) {
			v, reported := res.checks[name]
			switch {
			case !reported:
				t.Fatalf("the guest reported no verdict for %s", name)
			case !v.pass:
				t.Fatalf("guest: %s", v.detail)
			}
			if host != nil {
				host(t, name)
			}
		})
	}
}

func checkDaemonExit(t *testing.T, g *guestRun, res *bootResult) {
	if res.daemonErr != nil {
		t.Fatalf("the daemon did not exit cleanly after the guest went away: %v; log %s:\n%s",
			res.daemonErr, filepath.Join(g.logDir, "daemon.log"), tail(filepath.Join(g.logDir, "daemon.log"), 20))
	}
}

// newGuestRun sets up the QEMU side of a boot of pair p.
func newGuestRun(t *testing.T, setup setupEnv, daemon daemonSpec, p pair) *guestRun {
	t.Helper()
	g := &guestRun{
		kernel:  setup.kernel(t, p.kernel),
		smp:     p.smp,
		queues:  p.queues,
		timeout: envDuration(t, "QEMUTEST_TIMEOUT", 600*time.Second),
		idle:    envDuration(t, "QEMUTEST_WATCHDOG", defaultWatchdog) + 60*time.Second,
	}
	if p.qemu10 {
		g.qemu = setup.file(t, "QEMU10")
		g.qemuPrefix = []string{"-L", setup.file(t, "QEMU10_DATA"), "-L", setup.file(t, "QEMU10_BIOS")}
		g.qemuEnv = []string{"QEMU_MODULE_DIR=" + setup.file(t, "QEMU10_MODULES")}
		if q := os.Getenv("QEMUTEST_REQUEST_QUEUES"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 1 {
				t.Fatalf("QEMUTEST_REQUEST_QUEUES=%q", q)
			}
			g.queues = n
		}
	} else {
		g.qemu = setup.file(t, "QEMU72")
	}
	if daemon.maxQueues > 0 && g.queues > daemon.maxQueues {
		t.Logf("%s serves %d request queue(s): num-request-queues=%d instead of %d", daemon.name, daemon.maxQueues, daemon.maxQueues, g.queues)
		g.queues = daemon.maxQueues
	}
	return g
}

// queueIRQ matches a /proc/interrupts line of a virtio-fs request queue:
// "  26:  1234  56  PCI-MSIX-0000:00:04.0  2-edge  virtio0-requests.0".
var queueIRQ = regexp.MustCompile(`^\s*\d+:((?:\s+\d+)+)\s.*\svirtio\d+-requests\.(\d+)\s*$`)

// checkQueueSpread checks, from the guest's /proc/interrupts (in info),
// that the guest used more than one of its request queues: Linux 6.11 and
// later map each CPU to a queue, and the checks run on several CPUs.
func checkQueueSpread(t *testing.T, info []string, queues int) {
	t.Helper()
	perQueue := queueInterrupts(info)
	t.Logf("interrupts per request queue: %v", perQueue)
	if err := queueSpread(perQueue, queues); err != nil {
		t.Error(err)
	}
}

// queueInterrupts sums /proc/interrupts lines of request queues over CPUs.
func queueInterrupts(info []string) map[int]int {
	perQueue := map[int]int{}
	for _, l := range info {
		m := queueIRQ.FindStringSubmatch(strings.TrimPrefix(l, "GUESTINFO"))
		if m == nil {
			continue
		}
		q, _ := strconv.Atoi(m[2])
		perQueue[q] += 0
		for _, f := range strings.Fields(m[1]) {
			n, _ := strconv.Atoi(f)
			perQueue[q] += n
		}
	}
	return perQueue
}

// queueSpread wants queues request queues, at least two of them used.
func queueSpread(perQueue map[int]int, queues int) error {
	if len(perQueue) != queues {
		return fmt.Errorf("the guest lists %d request queues with interrupts of their own, want %d", len(perQueue), queues)
	}
	used := 0
	for _, n := range perQueue {
		if n > 0 {
			used++
		}
	}
	if used < 2 {
		return fmt.Errorf("only %d of %d request queues saw completions; the guest should spread requests over its CPUs' queues", used, queues)
	}
	return nil
}

// bigSize and readdirCount match guest/main.go.
const (
	bigSize      = 256 << 20
	readdirCount = 5000
)

// prepareShare fills share/in with what the guest checks read:
//
//	in/hello.txt         "hello from the host\n"
//	in/hostlink          symlink to hello.txt
//	in/xattr.txt         with user.host = "from-host"
//	in/dir5000/h00000 …  5000 empty files
//	in/big-host.bin      256 MiB, its sha256 in in/big-host.sha256
func prepareShare(t *testing.T, share string) {
	t.Helper()
	in := filepath.Join(share, "in")
	must(t, os.MkdirAll(filepath.Join(in, "dir5000"), 0o755))
	must(t, os.WriteFile(filepath.Join(in, "hello.txt"), []byte("hello from the host\n"), 0o644))
	must(t, os.Symlink("hello.txt", filepath.Join(in, "hostlink")))
	x := filepath.Join(in, "xattr.txt")
	must(t, os.WriteFile(x, []byte("x"), 0o644))
	if err := unix.Setxattr(x, "user.host", []byte("from-host"), 0); err != nil {
		t.Fatalf("setxattr on the host share %s: %v (the share's filesystem needs user xattrs; set TMPDIR elsewhere)", x, err)
	}
	for i := range readdirCount {
		must(t, os.WriteFile(filepath.Join(in, "dir5000", fmt.Sprintf("h%05d", i)), nil, 0o644))
	}

	f, err := os.Create(filepath.Join(in, "big-host.bin"))
	must(t, err)
	defer f.Close()
	const block = 1 << 20
	base := make([]byte, block)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; i < block; i += 8 {
		binary.LittleEndian.PutUint64(base[i:], r.Uint64())
	}
	h := sha256.New()
	buf := make([]byte, block)
	for i := range bigSize / block {
		copy(buf, base)
		binary.LittleEndian.PutUint64(buf, ^uint64(i))
		_, err := f.Write(buf)
		must(t, err)
		h.Write(buf)
	}
	must(t, f.Close())
	must(t, os.WriteFile(filepath.Join(in, "big-host.sha256"), []byte(hex.EncodeToString(h.Sum(nil))+"\n"), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hostVerify checks, on the host, what a passing guest check left in the
// share (see the comments on the checks in guest/main.go).
var hostVerify = map[string]func(t *testing.T, share string, res *bootResult){
	"create_read_write_append": func(t *testing.T, share string, _ *bootResult) {
		wantFile(t, filepath.Join(share, "out/create/file.txt"), "HELLO world\nappended 1\nappended 2\n")
	},
	"rename": func(t *testing.T, share string, _ *bootResult) {
		d := filepath.Join(share, "out/rename")
		wantFile(t, filepath.Join(d, "final.txt"), "A")
		wantFile(t, filepath.Join(d, "dir2/inner.txt"), "inner")
		wantNames(t, d, []string{"dir2", "final.txt"})
	},
	"rename_flags": func(t *testing.T, share string, _ *bootResult) {
		d := filepath.Join(share, "out/rename_flags")
		wantFile(t, filepath.Join(d, "y"), "X")
		wantFile(t, filepath.Join(d, "z"), "Y")
		wantNames(t, d, []string{"y", "z"})
	},
	"hardlink": func(t *testing.T, share string, _ *bootResult) {
		d := filepath.Join(share, "out/hardlink")
		var a, b unix.Stat_t
		must(t, unix.Stat(filepath.Join(d, "one"), &a))
		must(t, unix.Stat(filepath.Join(d, "two"), &b))
		if a.Ino != b.Ino || a.Nlink != 2 {
			t.Errorf("host: one and two are inodes %d and %d with %d links; want one inode, 2 links", a.Ino, b.Ino, a.Nlink)
		}
		wantFile(t, filepath.Join(d, "one"), "linked\nvia two\n")
	},
	"symlink": func(t *testing.T, share string, _ *bootResult) {
		d := filepath.Join(share, "out/symlink")
		wantLink(t, filepath.Join(d, "sym"), "target.txt")
		wantLink(t, filepath.Join(d, "dangling"), "nowhere")
		wantFile(t, filepath.Join(d, "target.txt"), "target")
	},
	"mkdir_rmdir": func(t *testing.T, share string, _ *bootResult) {
		wantNames(t, filepath.Join(share, "out/mkdir"), nil)
	},
	"setattr": func(t *testing.T, share string, _ *bootResult) {
		p := filepath.Join(share, "out/setattr/f")
		var st unix.Stat_t
		must(t, unix.Stat(p, &st))
		if st.Mode&0o7777 != 0o751 || st.Size != 8 || st.Mtim.Sec != 1234567890 || st.Mtim.Nsec != 456 {
			t.Errorf("host: mode %o size %d mtime %v; want 0751, 8, 1234567890.000000456", st.Mode&0o7777, st.Size, st.Mtim)
		}
	},
	"xattr": func(t *testing.T, share string, _ *bootResult) {
		p := filepath.Join(share, "out/xattr/file")
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, "user.guest", buf)
		if err != nil || string(buf[:n]) != "from-guest" {
			t.Errorf("host: user.guest of %s is %q, %v; want from-guest", p, buf[:max(n, 0)], err)
		}
		if _, err := unix.Getxattr(p, "user.gvt", buf); err != unix.ENODATA {
			t.Errorf("host: user.gvt (removed by the guest) gives %v, want ENODATA", err)
		}
	},
	"readdir_guest_5000": func(t *testing.T, share string, _ *bootResult) {
		want := make([]string, readdirCount)
		for i := range want {
			want[i] = fmt.Sprintf("g%05d", i)
		}
		wantNames(t, filepath.Join(share, "out/readdir"), want)
	},
	"mmap_write": func(t *testing.T, share string, _ *bootResult) {
		got, err := os.ReadFile(filepath.Join(share, "out/mmap/mapped.bin"))
		must(t, err)
		if len(got) != 1<<20 {
			t.Fatalf("host: mapped.bin has %d bytes, want 1 MiB", len(got))
		}
		for i := range got {
			if got[i] != byte(i*7+3) {
				t.Fatalf("host: mapped.bin differs from what the guest stored through mmap at offset %d", i)
			}
		}
	},
	"fsync": func(t *testing.T, share string, _ *bootResult) {
		wantFile(t, filepath.Join(share, "out/fsync/synced.bin"), "synced data\n")
	},
	"unlink_open": func(t *testing.T, share string, _ *bootResult) {
		wantNames(t, filepath.Join(share, "out/unlink"), nil)
	},
	"parallel": func(t *testing.T, share string, _ *bootResult) {
		const workers, files, size = 8, 32, 64 << 10
		d := filepath.Join(share, "out/parallel")
		var want []string
		for w := range workers {
			for f := range files {
				name := fmt.Sprintf("w%d-f%d", w, f)
				want = append(want, name)
				got, err := os.ReadFile(filepath.Join(d, name))
				must(t, err)
				exp := make([]byte, size)
				for i := range exp {
					exp[i] = byte(w*31 + f*17 + i)
				}
				if !bytes.Equal(got, exp) {
					t.Fatalf("host: %s differs from what the guest wrote", name)
				}
			}
		}
		wantNames(t, d, want)
	},
	"big_write_256m": func(t *testing.T, share string, res *bootResult) {
		p := filepath.Join(share, "out/big-guest.bin")
		guestSum := res.sums["out/big-guest.bin"]
		if guestSum == "" {
			t.Fatal("the guest printed no GUESTSUM for out/big-guest.bin")
		}
		f, err := os.Open(p)
		must(t, err)
		defer f.Close()
		h := sha256.New()
		buf := make([]byte, 1<<20)
		var n int64
		for {
			k, err := f.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			if err != nil {
				break
			}
		}
		if got := hex.EncodeToString(h.Sum(nil)); n != bigSize || got != guestSum {
			t.Errorf("host: %s has %d bytes, sha256 %s; the guest wrote %d bytes, sha256 %s", p, n, got, bigSize, guestSum)
		}
	},
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("host: %v", err)
		return
	}
	if string(got) != want {
		t.Errorf("host: %s holds %q, want %q", path, got, want)
	}
}

func wantLink(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.Readlink(path)
	if err != nil || got != want {
		t.Errorf("host: readlink %s = %q, %v; want %q", path, got, err, want)
	}
}

// wantNames checks a directory lists exactly want (in any order).
func wantNames(t *testing.T, dir string, want []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("host: %v", err)
		return
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		if len(got) > 10 || len(want) > 10 {
			t.Errorf("host: %s lists %d entries, want %d", dir, len(got), len(want))
		} else {
			t.Errorf("host: %s lists %q, want %q", dir, got, want)
		}
	}
}
