package qemutests

// BenchmarkGuest: virtio-fs daemons side by side on the QEMU guests of the
// tests.
//
//	go test -run XXX -bench Guest -benchtime 1x -timeout 3h ./qemu-tests
//
// Configurations (BENCH_CONFIGS, default "6.1,6.12"):
//
//	6.1   Debian 12's 6.1 kernel on QEMU 7.2, 1 vCPU, 1 request queue
//	6.12  the 6.12 backports kernel on QEMU 10.0, -smp 4, num-request-queues=4
//	      (govirtiofsd --request-queues 4); the Rust and C daemons offer one
//	      request queue, and QEMU refuses to start a device with more
//	      request queues than the backend has ("Failed to initialize
//	      virtqueue 2"), so they get num-request-queues=1
//
// Daemons (BENCH_DAEMONS, default "govirtiofsd,virtiofsd-rust,virtiofsd-c"),
// alternating A B C for BENCH_ROUNDS rounds (default 3), each run on a
// fresh share with a freshly started daemon and the harness's options
// (govirtiofsd --xattr --killpriv-v2, Rust --xattr, C -o xattr -o
// killpriv_v2; --tag on QEMU 10), with cache auto; then a second boot with
// cache never (govirtiofsd and Rust --cache never, C -o cache=none) runs
// the metadata set again, and a third runs par_untar (6.12) and find_100k
// with --inode-file-handles=prefer (govirtiofsd and Rust; the C daemon has
// no such mode). The C daemon, QEMU 7.2's, runs with QEMU 7.2 only. A
// daemon that cannot be had is "missing" in the table.
//
// The guest (benchguest/, gvtbench) runs the workloads in sequence, caches
// dropped before each, and marks each start and end on the console; the
// host samples the daemon's CPU time (utime+stime over its process tree)
// at both marks and its RssAnon at the end, acknowledging each mark before
// the guest goes on. Results: a markdown table per configuration on stdout
// and in bin/bench-guest.md.
//
// Environment:
//
//	BENCH_ROUNDS     rounds (default 3)
//	BENCH_CONFIGS    "6.1,6.12" (short or full pair names)
//	BENCH_DAEMONS    subset of govirtiofsd,virtiofsd-rust,virtiofsd-c
//	BENCH_WORKLOADS  comma-separated rows or prefixes ("meta", "never",
//	                 "rand", "par", "seq_write"...); default all
//	BENCH_GOVIRTIOFSD_ARGS extra arguments for govirtiofsd
//	BENCH_OUT        the markdown file (default ../bin/bench-guest.md)
//	BENCH_LOGDIR     console and daemon logs (default ../bin/qemu-tests/bench)
//	BENCH_TIMEOUT    seconds one guest may run (default 3600)
//	GOVIRTIOFSD      the daemon binary (default ../bin/govirtiofsd)
//	GOVIRTIOFS_CACHE setup.sh's cache folder

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The workload rows, in the guest's order.
var (
	benchMainRows = []benchRow{
		{"seq_write", "MiB/s"},
		{"seq_read", "MiB/s"},
		{"rand_read_qd1", "IOPS"},
		{"rand_read_qd16", "IOPS"},
		{"meta_create", "s"},
		{"meta_stat", "s"},
		{"meta_list", "s"},
		{"meta_unlink", "s"},
		{"untar", "s"},
		{"find", "s"},
		{"grep", "s"},
		{"rm", "s"},
	}
	// benchParRows run on the multi-queue configuration only.
	benchParRows = []benchRow{
		{"par_rand_read", "IOPS"},
	}
	// benchLastRows run in a boot of their own with inodes held as file
	// handles (--inode-file-handles=prefer): a daemon that holds a
	// descriptor per inode the guest knows runs out of descriptors on the
	// 100,000-file tree, or on four source trees at once (51,000 inodes),
	// where RLIMIT_NOFILE is lower. par_untar runs on the multi-queue
	// configuration only.
	benchLastRows = []benchRow{
		{"par_untar", "s"},
		{"find_100k", "s"},
	}
	// benchNeverRows run in the cache-never boot; the guest's workload
	// is the name without "never_".
	benchNeverRows = []benchRow{
		{"never_meta_create", "s"},
		{"never_meta_stat", "s"},
		{"never_meta_list", "s"},
		{"never_meta_unlink", "s"},
	}
	benchDaemonNames = []string{"govirtiofsd", "virtiofsd-rust", "virtiofsd-c"}
)

// tree100k is the host-made tree find_100k lists: 100 directories of
// 1,000 empty files.
const tree100kDirs, tree100kFiles = 100, 1000

// benchDaemon is one daemon under comparison.
type benchDaemon struct {
	name      string
	missing   string // why it cannot run, or ""
	maxQueues int    // 0: any
	qemu72    string // if set, runs on QEMU 7.2 only; why
	// argv serves dir on socket; queues is what QEMU will ask for.
	argv func(socket, dir string, p pair, queues int, never bool) []string
}

func benchDaemons(b *testing.B, rustErr error) []benchDaemon {
	gov := os.Getenv("GOVIRTIOFSD")
	if gov == "" {
		gov = filepath.Join("..", "bin", "govirtiofsd")
	}
	gov, _ = filepath.Abs(gov)
	govExtra := strings.Fields(os.Getenv("BENCH_GOVIRTIOFSD_ARGS"))
	rustRoot := filepath.Join(cacheDir(), "virtiofsd-rust", "root")
	rustLib := filepath.Join(rustRoot, "usr", "lib", "x86_64-linux-gnu")
	rustBin := filepath.Join(rustRoot, "usr", "libexec", "virtiofsd")
	cBin := "/usr/lib/qemu/virtiofsd"

	cache := func(never bool) string {
		if never {
			return "never"
		}
		return "auto"
	}
	all := []benchDaemon{
		{
			name: "govirtiofsd",
			argv: func(socket, dir string, p pair, queues int, never bool) []string {
				argv := []string{gov, "--socket-path", socket, "--shared-dir", dir, "--xattr", "--killpriv-v2",
					"--cache", cache(never), "--request-queues", strconv.Itoa(queues)}
				if p.tag() != "" {
					argv = append(argv, "--tag", p.tag())
				}
				return append(argv, govExtra...)
			},
		},
		{
			name:      "virtiofsd-rust",
			maxQueues: 1,
			argv: func(socket, dir string, p pair, _ int, never bool) []string {
				argv := []string{filepath.Join(rustLib, "ld-linux-x86-64.so.2"), "--library-path", rustLib, rustBin,
					"--socket-path", socket, "--shared-dir", dir, "--xattr", "--cache", cache(never)}
				if p.tag() != "" {
					argv = append(argv, "--tag", p.tag())
				}
				return argv
			},
		},
		{
			name:      "virtiofsd-c",
			maxQueues: 1,
			qemu72:    "the C virtiofsd is QEMU 7.2's (QEMU 8.0 removed it), so it runs with QEMU 7.2 only",
			argv: func(socket, dir string, _ pair, _ int, never bool) []string {
				c := "cache=auto"
				if never {
					c = "cache=none"
				}
				return []string{cBin, "--socket-path=" + socket, "-o", "source=" + dir, "-o", c, "-o", "xattr", "-o", "killpriv_v2"}
			},
		},
	}
	if _, err := os.Stat(gov); err != nil {
		all[0].missing = fmt.Sprintf("%v (run make build or set GOVIRTIOFSD)", err)
	}
	if rustErr != nil {
		all[1].missing = fmt.Sprintf("setup-virtiofsd-rust.sh: %v", rustErr)
	} else if _, err := os.Stat(rustBin); err != nil {
		all[1].missing = err.Error()
	}
	if _, err := os.Stat(cBin); err != nil {
		all[2].missing = fmt.Sprintf("%v (Debian 12's qemu-system-x86 ships it)", err)
	}
	want := benchList(os.Getenv("BENCH_DAEMONS"), benchDaemonNames)
	var out []benchDaemon
	for _, w := range want {
		i := slices.IndexFunc(all, func(d benchDaemon) bool { return d.name == w })
		if i < 0 {
			b.Fatalf("BENCH_DAEMONS: unknown daemon %q (want some of %s)", w, strings.Join(benchDaemonNames, ","))
		}
		out = append(out, all[i])
	}
	return out
}

// benchList splits a comma-separated knob, or returns def.
func benchList(v string, def []string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return def
	}
	return out
}

// selectRows keeps the rows a BENCH_WORKLOADS list names exactly or by a
// prefix ending at "_" ("meta" is meta_*, "never" the cache-never rows).
func selectRows(rows []benchRow, sel []string) []benchRow {
	if len(sel) == 0 {
		return rows
	}
	return slices.DeleteFunc(slices.Clone(rows), func(r benchRow) bool {
		return !slices.ContainsFunc(sel, func(s string) bool { return r.name == s || strings.HasPrefix(r.name, s+"_") })
	})
}

func BenchmarkGuest(b *testing.B) {
	start := time.Now()
	setup, benchEnv, rustErr := benchSetup(b)
	daemons := benchDaemons(b, rustErr)
	rounds := 3
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_ROUNDS=%q", v)
		}
		rounds = n
	}
	timeout := 3600 * time.Second
	if v := os.Getenv("BENCH_TIMEOUT"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			b.Fatalf("BENCH_TIMEOUT=%q", v)
		}
		timeout = time.Duration(s * float64(time.Second))
	}
	sel := benchList(os.Getenv("BENCH_WORKLOADS"), nil)
	logRoot := benchPath("BENCH_LOGDIR", filepath.Join("..", "bin", "qemu-tests", "bench"))
	outPath := benchPath("BENCH_OUT", filepath.Join("..", "bin", "bench-guest.md"))

	var configs []pair
	for _, c := range benchList(os.Getenv("BENCH_CONFIGS"), []string{"6.1", "6.12"}) {
		i := slices.IndexFunc(pairs, func(p pair) bool { return p.short == c || p.name == c })
		if i < 0 {
			b.Fatalf("BENCH_CONFIGS: unknown configuration %q (want 6.1, 6.12)", c)
		}
		configs = append(configs, pairs[i])
	}

	helper := filepath.Join(b.TempDir(), "gvtbench")
	benchGoBuild(b, "build", "-trimpath", "-ldflags=-s -w", "-o", helper, "./benchguest")
	guestFiles := []cpioFile{
		{name: "init", mode: 0o100755, data: benchRead(b, filepath.Join("guest", "init.sh"))},
		{name: "guest.sh", mode: 0o100644, data: benchRead(b, filepath.Join("benchguest", "guest.sh"))},
		{name: "bin/gvtbench", mode: 0o100755, data: benchRead(b, helper)},
	}

	var report strings.Builder
	// flush writes what is known so far (the tables so far plus partial),
	// so an interrupted run leaves its results behind.
	flush := func(partial string) {
		if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(outPath, []byte(report.String()+partial), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Fprintf(&report, "## Guest benchmark (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&report, "%d round(s), daemons alternating; QEMU TCG, 2 GiB guests; %s; source tarball %s (%s entries). "+
		"Guest figures measured in the guest (fio's bandwidth/IOPS, else seconds); CPU s = the daemon's utime+stime over its process tree during the workload; "+
		"RssAnon summed over the tree after the workload. Cells: median (min–max). Ratios: medians, govirtiofsd / virtiofsd-rust (↑: higher is better, ↓: lower).\n\n",
		rounds, benchEnv["FIO_VERSION"], benchEnv["GOSRC"], benchEnv["GOSRC_ENTRIES"])

	for _, p := range configs {
		rows := selectRows(benchMainRows, sel)
		if p.queues > 1 {
			rows = append(rows, selectRows(benchParRows, sel)...)
		}
		// The 100,000-file find has a boot of its own, with inodes held
		// as file handles (--inode-file-handles=prefer for govirtiofsd
		// and the Rust daemon): with a descriptor per inode, the
		// default, both run out of descriptors on a host whose hard
		// RLIMIT_NOFILE is below about 100,000.
		last := selectRows(benchLastRows, sel)
		if p.queues == 1 {
			// selectRows may return the package's own slice: clone
			// before deleting, which clears the tail in place.
			last = slices.DeleteFunc(slices.Clone(last), func(r benchRow) bool { return r.name == "par_untar" })
		}
		never := selectRows(benchNeverRows, sel)
		tbl := &benchTable{
			ref:     "virtiofsd-rust",
			missing: map[string]string{},
			rows:    append(append(slices.Clone(rows), last...), never...),
		}
		for _, d := range daemons {
			tbl.daemons = append(tbl.daemons, d.name)
			if d.missing != "" {
				tbl.missing[d.name] = d.missing
			} else if d.qemu72 != "" && p.qemu10 {
				tbl.missing[d.name] = d.qemu72
			}
		}
		if !slices.Contains(tbl.daemons, tbl.ref) {
			tbl.ref = tbl.daemons[len(tbl.daemons)-1]
		}
		initrd := filepath.Join(b.TempDir(), "initrd-"+p.short+".cpio")
		benchInitrd(b, initrd, setup[p.initrd], benchEnv["BENCH_CPIO"], guestFiles)
		kernel := setup[p.kernel]
		if ok, err := hasPVHNote(kernel); err != nil || !ok {
			kernel = setup[p.kernel+"_BZIMAGE"]
		}
		qemuVer := setup["QEMU72_VERSION"]
		if p.qemu10 {
			qemuVer = setup["QEMU10_VERSION"]
		}
		tbl.title = fmt.Sprintf("%s (guest kernel %s, QEMU %s, -smp %d, %d request queue(s) where the daemon offers them)",
			p.name, setup[p.kernel+"_RELEASE"], qemuVer, p.smp, p.queues)
		var interrupts []string
		for round := 1; round <= rounds; round++ {
			for _, d := range daemons {
				if tbl.missing[d.name] != "" {
					continue
				}
				for _, boot := range []string{"auto", "never", "handles"} {
					rs := map[string][]benchRow{"auto": rows, "never": never, "handles": last}[boot]
					if len(rs) == 0 {
						continue
					}
					neverBoot := boot == "never"
					br := &benchBoot{
						setup: setup, p: p, d: d, kernel: kernel, initrd: initrd, rows: rs, never: neverBoot,
						handles: boot == "handles",
						timeout: timeout,
						logDir:  filepath.Join(logRoot, p.short, fmt.Sprintf("%s-r%d-%s", d.name, round, boot)),
					}
					t0 := time.Now()
					res := br.run(b)
					b.Logf("%s round %d %s %s: %d/%d workloads in %.0fs%s; logs %s", p.short, round, d.name,
						boot, len(res.samples), len(rs), time.Since(t0).Seconds(),
						failNote(res.failure), br.logDir)
					for _, r := range rs {
						if s, ok := res.samples[r.name]; ok {
							tbl.add(r.name, d.name, s)
						} else {
							tbl.fail(r.name, d.name)
							if why := res.failed[r.name]; why != "" {
								b.Logf("  %s failed: %s", r.name, why)
							}
						}
					}
					flush("(in progress)\n\n" + tbl.markdown())
					if round == 1 && boot == "auto" && p.queues > 1 {
						q := queueInterrupts(res.info)
						interrupts = append(interrupts, fmt.Sprintf("%s: completions per request queue %v", d.name, q))
					}
				}
			}
		}
		tbl.notes = interrupts
		md := tbl.markdown()
		report.WriteString(md + "\n")
	}
	fmt.Fprintf(&report, "Wall time: %.1f min.\n", time.Since(start).Minutes())
	fmt.Println(report.String())
	flush("")
	b.Logf("wrote %s", outPath)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func failNote(f string) string {
	if f == "" {
		return ""
	}
	return " (" + f + ")"
}

func benchPath(key, def string) string {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return v
	}
	return abs
}

func benchRead(b *testing.B, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// benchSetup runs setup.sh, setup-virtiofsd-rust.sh and setup-bench.sh
// (each quick once its downloads are cached) and reads what they wrote. A
// failure of the Rust daemon's setup makes it "missing", not fatal.
func benchSetup(b *testing.B) (setup, benchEnv map[string]string, rustErr error) {
	b.Helper()
	for _, s := range []string{"./setup.sh", "./setup-virtiofsd-rust.sh", "./setup-bench.sh"} {
		t0 := time.Now()
		out, err := exec.Command(s).CombinedOutput()
		if err != nil {
			if s == "./setup-virtiofsd-rust.sh" {
				rustErr = fmt.Errorf("%v: %s", err, lastLine(string(out)))
				b.Logf("%s failed; virtiofsd-rust is missing: %v\n%s", s, err, out)
				continue
			}
			b.Fatalf("qemu-tests/%s: %v\n%s", s, err, out)
		}
		b.Logf("%s took %.1fs", s, time.Since(t0).Seconds())
	}
	setup = readEnvFile(b, filepath.Join(cacheDir(), "setup.env"))
	benchEnv = readEnvFile(b, filepath.Join(cacheDir(), "bench", "bench.env"))
	return setup, benchEnv, rustErr
}

func readEnvFile(b *testing.B, path string) map[string]string {
	b.Helper()
	env := map[string]string{}
	for line := range strings.Lines(string(benchRead(b, path))) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

func benchGoBuild(b *testing.B, args ...string) {
	b.Helper()
	cmd := exec.Command(goTool(), args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// benchInitrd concatenates setup.sh's base archive, setup-bench.sh's (fio
// and the tarball) and one of files, each padded to 4 bytes.
func benchInitrd(b *testing.B, out, base, bench string, files []cpioFile) {
	b.Helper()
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var n int64
	for _, in := range []string{base, bench} {
		src, err := os.Open(in)
		if err != nil {
			b.Fatal(err)
		}
		k, err := io.Copy(f, src)
		src.Close()
		if err != nil {
			b.Fatal(err)
		}
		n += k
		for ; n%4 != 0; n++ {
			f.Write([]byte{0})
		}
	}
	if err := writeNewc(f, files); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchBoot is one daemon run: a fresh share, a fresh daemon, one guest.
type benchBoot struct {
	setup          map[string]string
	p              pair
	d              benchDaemon
	kernel, initrd string
	rows           []benchRow
	never          bool
	handles        bool // inodes as file handles where the daemon can (find_100k)
	timeout        time.Duration
	logDir         string
}

type benchBootResult struct {
	samples map[string]benchSample
	failed  map[string]string
	info    []string
	failure string
}

func (br *benchBoot) run(b *testing.B) *benchBootResult {
	b.Helper()
	res := &benchBootResult{samples: map[string]benchSample{}, failed: map[string]string{}}
	if err := os.MkdirAll(br.logDir, 0o755); err != nil {
		b.Fatal(err)
	}
	work, err := os.MkdirTemp("", "gvt-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	share := filepath.Join(work, "share")
	socket := filepath.Join(work, "vhost.sock")
	if err := os.Mkdir(share, 0o755); err != nil {
		b.Fatal(err)
	}
	var guestNames []string
	for _, r := range br.rows {
		guestNames = append(guestNames, strings.TrimPrefix(r.name, "never_"))
		if r.name == "find_100k" {
			makeTree100k(b, filepath.Join(share, "tree100k"))
		}
	}

	queues := br.p.queues
	if br.d.maxQueues > 0 && queues > br.d.maxQueues {
		queues = br.d.maxQueues
	}
	g := &guestRun{
		kernel: br.kernel, initrd: br.initrd, smp: br.p.smp, queues: queues, socket: socket,
		kernelArgs: "gvtbench.workloads=" + strings.Join(guestNames, ","),
	}
	if br.p.qemu10 {
		g.qemu = br.setup["QEMU10"]
		g.qemuPrefix = []string{"-L", br.setup["QEMU10_DATA"], "-L", br.setup["QEMU10_BIOS"]}
		g.qemuEnv = []string{"QEMU_MODULE_DIR=" + br.setup["QEMU10_MODULES"]}
	} else {
		g.qemu = br.setup["QEMU72"]
	}
	dargv := br.d.argv(socket, share, br.p, queues, br.never)
	if br.handles && br.d.name != "virtiofsd-c" { // the C daemon has no file-handle mode
		dargv = append(dargv, "--inode-file-handles=prefer")
	}

	dlog, err := os.Create(filepath.Join(br.logDir, "daemon.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer dlog.Close()
	fmt.Fprintf(dlog, "# %s\n", shellJoin(dargv))
	daemon := exec.Command(dargv[0], dargv[1:]...)
	daemon.Stdout, daemon.Stderr = dlog, dlog
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		res.failure = fmt.Sprintf("starting the daemon: %v", err)
		return res
	}
	daemonDone := make(chan error, 1)
	go func() { daemonDone <- daemon.Wait() }()
	daemonRunning := true
	defer func() {
		if daemonRunning {
			syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
			<-daemonDone
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			time.Sleep(100 * time.Millisecond)
			break
		}
		select {
		case err := <-daemonDone:
			daemonRunning = false
			res.failure = fmt.Sprintf("the daemon exited before listening: %v: %s", err, tail(dlog.Name(), 5))
			return res
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			res.failure = "no socket 10 s after starting the daemon"
			return res
		}
	}

	clog, err := os.Create(filepath.Join(br.logDir, "console.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer clog.Close()
	qemu := g.startQEMU(b, clog, true)
	defer qemu.stop()
	lines, start, stdin := qemu.lines, qemu.start, qemu.stdin

	pid := daemon.Process.Pid
	var cpu0 float64
	current := ""
	ack := func() { io.WriteString(stdin, "ack\n") }
	total := time.NewTimer(br.timeout)
	defer total.Stop()
	const idleLimit = 15 * time.Minute
	idle := time.NewTimer(idleLimit)
	defer idle.Stop()
	done := false
	// Once every workload has reported, the guest only unmounts and
	// powers off; a guest stuck there (seen: the C virtiofsd after it ran
	// out of descriptors leaves umount blocked) is stopped after a minute.
	reported := 0
	var finish <-chan time.Time
follow:
	for {
		select {
		case <-finish:
			res.failure = "the guest did not power off within a minute of its last workload (umount stuck?)"
			break follow
		case line, ok := <-lines:
			if !ok {
				break follow
			}
			line = strings.TrimRight(line, "\r")
			// Progress is the guest's own lines; a hung guest kernel
			// may go on printing (RCU stall reports, seen on the 4-vCPU
			// guest under a loaded host).
			if strings.Contains(line, "BENCH ") || strings.Contains(line, "GUEST") {
				idle.Reset(idleLimit)
			}
			fmt.Fprintf(clog, "[%7.2f] %s\n", time.Since(start).Seconds(), quoteGuest(line))
			if i := strings.Index(line, "BENCH "); i >= 0 {
				line = line[i:]
			} else if i := strings.Index(line, "GUESTINFO "); i >= 0 {
				res.info = append(res.info, line[i:])
				continue
			} else {
				if strings.Contains(line, "GUESTDONE") {
					done = true
				}
				continue
			}
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			switch f[1] {
			case "START":
				cpu0 = treeCPU(pid)
				current = f[2]
				ack()
			case "END":
				cpu1 := treeCPU(pid)
				rss := treeRssAnon(pid)
				ack()
				e, err := parseBenchEnd(strings.Join(f[2:], " "))
				name := current
				if err == nil {
					name = e.name
				}
				row := br.row(name)
				if err == nil && e.name != current {
					err = fmt.Errorf("END of %s after START of %s", e.name, current)
				}
				var v float64
				if err == nil {
					v, err = row.guestValue(e)
				}
				if err != nil {
					res.failed[row.name] = err.Error()
					continue
				}
				if reported++; reported == len(br.rows) {
					finish = time.After(time.Minute)
				}
				res.samples[row.name] = benchSample{guest: v, secs: e.secs, cpu: cpu1 - cpu0, rssKiB: rss}
				fmt.Fprintf(clog, "# %s: guest %s %s, daemon CPU %.2fs, RssAnon %d KiB, open descriptors %d\n",
					row.name, fmtNum(v), row.unit, cpu1-cpu0, rss, treeFDs(pid))
			case "FAIL":
				fmt.Fprintf(clog, "# %s failed: daemon RssAnon %d KiB, open descriptors %d\n", f[2], treeRssAnon(pid), treeFDs(pid))
				ack()
				res.failed[br.row(f[2]).name] = strings.Join(f[3:], " ")
				if reported++; reported == len(br.rows) {
					finish = time.After(time.Minute)
				}
			}
		case <-idle.C:
			res.failure = fmt.Sprintf("no progress from the guest for %v", idleLimit)
			break follow
		case <-total.C:
			res.failure = fmt.Sprintf("the guest ran longer than %v", br.timeout)
			break follow
		}
	}
	if res.failure != "" {
		qemu.kill()
	}
	qerr := qemu.wait()
	fmt.Fprintf(clog, "# QEMU exited after %.2fs: %v\n", time.Since(start).Seconds(), qerr)
	if res.failure == "" && !done {
		res.failure = fmt.Sprintf("the guest stopped before GUESTDONE (QEMU: %v); see %s", qerr, clog.Name())
	}
	select {
	case <-daemonDone:
		daemonRunning = false
	case <-time.After(15 * time.Second):
	}
	return res
}

// row finds the row of a guest workload name in this boot.
func (br *benchBoot) row(guestName string) benchRow {
	for _, r := range br.rows {
		if strings.TrimPrefix(r.name, "never_") == guestName {
			return r
		}
	}
	return benchRow{name: guestName, unit: "s"}
}

// makeTree100k makes tree100kDirs directories of tree100kFiles empty files.
func makeTree100k(b *testing.B, dir string) {
	b.Helper()
	for i := range tree100kDirs {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range tree100kFiles {
			f, err := os.OpenFile(filepath.Join(d, fmt.Sprintf("f%04d", j)), os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
}

// procTree reads /proc/*/stat and returns pid's process and descendants.
func procTree(pid int) []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var stats []procStat
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		if s, err := parseProcStat(string(data)); err == nil {
			stats = append(stats, s)
		}
	}
	return descendants(pid, stats)
}

// clockTicks is USER_HZ, 100 on Linux.
const clockTicks = 100

// treeCPU is the utime+stime, in seconds, of pid and its descendants.
func treeCPU(pid int) float64 {
	var ticks uint64
	for _, s := range procTree(pid) {
		ticks += s.ticks
	}
	return float64(ticks) / clockTicks
}

// treeRssAnon is the RssAnon (KiB) of pid and its descendants.
func treeRssAnon(pid int) int64 {
	var kib int64
	for _, s := range procTree(pid) {
		data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.pid), "status"))
		if err != nil {
			continue
		}
		if n, ok := parseRssAnon(string(data)); ok {
			kib += n
		}
	}
	return kib
}

// treeFDs counts the open descriptors of pid and its descendants.
func treeFDs(pid int) int {
	n := 0
	for _, s := range procTree(pid) {
		ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(s.pid), "fd"))
		if err == nil {
			n += len(ents)
		}
	}
	return n
}
