package qemutests

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// ciMode reports whether a missing prerequisite must fail rather than skip.
func ciMode() bool { return testenv.CI() }

// prereq reports a missing prerequisite: a skip outside CI, a failure in it.
func prereq(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, format, args...)
}

// cacheDir is setup.sh's cache folder; it follows gvt_cache_dir in lib.sh.
func cacheDir() string {
	if d := os.Getenv("GOVIRTIOFS_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "govirtiofs")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/govirtiofs"
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "govirtiofs")
}

// setupEnv is setup.sh's description of what it installed (setup.env).
type setupEnv map[string]string

// loadSetup reads setup.env. Under CI=true (or QEMUTEST_SETUP=1) it runs
// setup.sh first: CI installs what it needs, and setup.sh takes about a
// second once its downloads are cached.
func loadSetup(t *testing.T) setupEnv {
	t.Helper()
	if ciMode() || os.Getenv("QEMUTEST_SETUP") == "1" {
		start := time.Now()
		out, err := exec.Command("./setup.sh").CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-tests/setup.sh: %v\n%s", err, out)
		}
		t.Logf("setup.sh took %.1fs", time.Since(start).Seconds())
	}
	p := filepath.Join(cacheDir(), "setup.env")
	data, err := os.ReadFile(p)
	if err != nil {
		prereq(t, "QEMU test prerequisites are not set up (%v); run qemu-tests/setup.sh as root", err)
	}
	env := setupEnv{}
	for line := range strings.Lines(string(data)) {
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

// file returns the path setup.env gives for key, which must exist.
func (s setupEnv) file(t *testing.T, key string) string {
	t.Helper()
	p := s[key]
	if p == "" {
		prereq(t, "setup.env has no %s; rerun qemu-tests/setup.sh", key)
	}
	if _, err := os.Stat(p); err != nil {
		prereq(t, "%s: %v; rerun qemu-tests/setup.sh", key, err)
	}
	return p
}

// kernel returns the kernel image for key: the ELF vmlinux setup.sh
// extracted if it has the PVH entry note QEMU needs, else the bzImage.
func (s setupEnv) kernel(t *testing.T, key string) string {
	t.Helper()
	k := s.file(t, key)
	if ok, err := hasPVHNote(k); err == nil && ok {
		return k
	} else if b := s[key+"_BZIMAGE"]; b != "" && b != k {
		t.Logf("%s is no bootable ELF (%v, note found: %v); booting the bzImage %s", k, err, ok, b)
		return s.file(t, key+"_BZIMAGE")
	}
	return k
}

// hasPVHNote reports whether path is an ELF file with the Xen
// PHYS32_ENTRY note, QEMU's sign that it can boot it through PVH.
func hasPVHNote(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return false, err
		}
		for len(data) >= 12 {
			namesz := binary.LittleEndian.Uint32(data[0:])
			descsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + int(namesz+3)&^3
			next := nameEnd + int(descsz+3)&^3
			if next > len(data) || namesz > 64 {
				break
			}
			if typ == xenElfnotePhys32Entry && string(bytes.TrimRight(data[12:12+namesz], "\x00")) == "Xen" {
				return true, nil
			}
			data = data[next:]
		}
	}
	return false, nil
}

// daemonSpec says how to start the vhost-user-fs daemon under test.
type daemonSpec struct {
	name string
	// command is how to run the daemon's program: the words an
	// orchestrator's command line (its options) is appended to, or nil
	// if this daemon cannot take other command lines (TestQEMUDropIn).
	command []string
	// maxQueues caps num-request-queues (0: no cap).
	maxQueues int
	// argv is the command line serving dir on socket; tag is the tag to
	// announce through the device's config space, or "" for none.
	argv func(socket, dir, tag string) []string
	// overlayArgv is the command line serving the union the overlayfs
	// options opts describe, or nil if the daemon cannot.
	overlayArgv func(socket, opts, tag string) []string
	// posixSkip names posixtest tests this daemon cannot pass, with why.
	posixSkip map[string]string
}

func daemonFromEnv(t *testing.T, s setupEnv) daemonSpec {
	t.Helper()
	extra := strings.Fields(os.Getenv("QEMUTEST_DAEMON_ARGS"))
	if cmd := os.Getenv("QEMUTEST_DAEMON_CMD"); cmd != "" {
		expand := func(r *strings.Replacer) []string {
			var argv []string
			for _, f := range strings.Fields(cmd) {
				argv = append(argv, r.Replace(f))
			}
			return append(argv, extra...)
		}
		d := daemonSpec{
			name: "custom",
			argv: func(socket, dir, _ string) []string {
				return expand(strings.NewReplacer("{socket}", socket, "{dir}", dir))
			},
		}
		if strings.Contains(cmd, "{overlay}") {
			d.overlayArgv = func(socket, opts, _ string) []string {
				return expand(strings.NewReplacer("{socket}", socket, "{overlay}", opts))
			}
		}
		return d
	}
	switch d := os.Getenv("QEMUTEST_DAEMON"); d {
	case "", "govirtiofsd":
		bin := os.Getenv("GOVIRTIOFSD")
		if bin == "" {
			bin = filepath.Join("..", "bin", "govirtiofsd")
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			prereq(t, "daemon binary: %v (run `make build`, or set GOVIRTIOFSD, or QEMUTEST_DAEMON=virtiofsd-c)", err)
		}
		return daemonSpec{
			name:    "govirtiofsd",
			command: []string{abs},
			argv: func(socket, dir, tag string) []string {
				// --killpriv-v2, as the C virtiofsd gets killpriv_v2:
				// posixtest's SetuidClearedOTrunc needs the daemon's
				// help (the devfuse suite covers the default too).
				argv := []string{abs, "--socket-path", socket, "--shared-dir", dir, "--xattr", "--killpriv-v2"}
				if tag != "" {
					argv = append(argv, "--tag", tag)
				}
				return append(argv, extra...)
			},
			overlayArgv: func(socket, opts, tag string) []string {
				argv := []string{abs, "--socket-path", socket, "--overlay", opts, "--xattr"}
				if tag != "" {
					argv = append(argv, "--tag", tag)
				}
				return append(argv, extra...)
			},
		}
	case "virtiofsd-c":
		bin := s["VIRTIOFSD_C"]
		if bin == "" {
			bin = "/usr/lib/qemu/virtiofsd"
		}
		if _, err := os.Stat(bin); err != nil {
			prereq(t, "the C virtiofsd: %v (Debian 12's qemu-system-x86 ships it; run qemu-tests/setup.sh)", err)
		}
		return daemonSpec{
			name:      "virtiofsd-c",
			command:   []string{bin},
			maxQueues: 1,
			posixSkip: map[string]string{
				"Tmpfile": "the C virtiofsd has no FUSE_TMPFILE",
			},
			argv: func(socket, dir, _ string) []string {
				argv := []string{bin, "--socket-path=" + socket, "-o", "source=" + dir, "-o", "cache=auto", "-o", "xattr", "-o", "killpriv_v2"}
				return append(argv, extra...)
			},
		}
	case "virtiofsd-rust":
		return rustDaemon(t, extra)
	default:
		t.Fatalf("QEMUTEST_DAEMON=%q: want govirtiofsd, virtiofsd-c or virtiofsd-rust (or set QEMUTEST_DAEMON_CMD)", d)
		return daemonSpec{}
	}
}

// rustDaemon is the reference Rust virtiofsd (Debian trixie's 1.13) that
// setup-virtiofsd-rust.sh unpacks into the cache, run through trixie's own
// dynamic loader since bookworm's libc is too old for it.
func rustDaemon(t *testing.T, extra []string) daemonSpec {
	t.Helper()
	root := filepath.Join(cacheDir(), "virtiofsd-rust", "root")
	lib := filepath.Join(root, "usr", "lib", "x86_64-linux-gnu")
	bin := filepath.Join(root, "usr", "libexec", "virtiofsd")
	if _, err := os.Stat(bin); err != nil {
		prereq(t, "the Rust virtiofsd: %v (run qemu-tests/setup-virtiofsd-rust.sh)", err)
	}
	command := []string{filepath.Join(lib, "ld-linux-x86-64.so.2"), "--library-path", lib, bin}
	return daemonSpec{
		name:      "virtiofsd-rust",
		command:   command,
		maxQueues: 1, // virtiofsd 1.13 serves one request queue
		posixSkip: map[string]string{
			"SetuidClearedOTrunc": "without --killpriv-v2 the kernel keeps set-ID bits on an O_TRUNC open",
		},

		argv: func(socket, dir, tag string) []string {
			argv := append(slices.Clone(command), "--socket-path", socket, "--shared-dir", dir, "--xattr")
			if tag != "" {
				argv = append(argv, "--tag", tag)
			}
			return append(argv, extra...)
		},
	}
}

// buildGuest compiles guest/ into a static binary for the guest.
func buildGuest(t *testing.T, out string) {
	t.Helper()
	goBuild(t, "the guest checker", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./guest")
}

// buildPosix compiles the conformance suite's test binary for the guest,
// where its TestMountedDir runs the suite on the virtiofs mount.
func buildPosix(t *testing.T, out string) {
	t.Helper()
	goBuild(t, "the posixtest suite", "test", "-c", "-tags", "posixtestdir", "-trimpath", "-ldflags=-s -w", "-o", out, "../internal/posixtest")
}

// goTool is the go command.
func goTool() string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where our machines keep it
	}
	return goBin
}

// goBuild runs the go command for a static linux/amd64 binary.
func goBuild(t *testing.T, what string, args ...string) {
	t.Helper()
	cmd := exec.Command(goTool(), args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", what, err, b)
	}
}

// cpioFile is one entry of a newc archive.
type cpioFile struct {
	name string
	mode uint32 // type and permission bits, e.g. 0o100755
	data []byte
}

// writeNewc writes files as a "newc" cpio archive, the format the kernel
// unpacks into its rootfs; later archives in one initramfs add to (and
// replace entries of) earlier ones.
func writeNewc(w io.Writer, files []cpioFile) error {
	var buf bytes.Buffer
	pad := func() {
		for buf.Len()%4 != 0 {
			buf.WriteByte(0)
		}
	}
	entry := func(ino int, f cpioFile) {
		nlink := 1
		if f.mode&0o170000 == 0o040000 {
			nlink = 2
		}
		fmt.Fprintf(&buf, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, 0, 0, len(f.name)+1, 0)
		buf.WriteString(f.name)
		buf.WriteByte(0)
		pad()
		buf.Write(f.data)
		pad()
	}
	for i, f := range files {
		entry(i+1, f)
	}
	entry(0, cpioFile{name: "TRAILER!!!"})
	_, err := w.Write(buf.Bytes())
	return err
}

// buildInitrd writes base (setup.sh's busybox and modules archive) followed
// by an archive of files to out.
func buildInitrd(t *testing.T, base, out string, files []cpioFile) {
	t.Helper()
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	var extra bytes.Buffer
	if err := writeNewc(&extra, files); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(b, extra.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// verdict is one GUESTTEST line.
type verdict struct {
	pass   bool
	detail string
	at     time.Duration // since QEMU started
}

// bootResult is what one guest run produced.
type bootResult struct {
	checks      map[string]verdict
	order       []string          // check names in the order reported
	sums        map[string]string // GUESTSUM file -> sha256
	info        []string          // GUESTINFO and guest.sh output worth showing
	done        bool              // GUESTDONE seen
	failure     string            // timeout, crash: why the run ended early
	boot        time.Duration     // QEMU start to GUESTBOOT (guest userland up)
	mounted     time.Duration     // QEMU start to the mount verdict
	verdict     time.Duration     // QEMU start to GUESTDONE
	qemuExit    time.Duration     // QEMU start to QEMU exit
	daemonErr   error             // the daemon's exit (nil: status 0)
	daemonCPU   time.Duration     // user+system CPU the daemon used
	consoleTail []string

	// The conformance suite's results, from its -test.v output.
	posix        map[string]posixResult
	posixOrder   []string
	posixLog     map[string][]string // output lines per test
	posixCurrent string
}

func newBootResult() *bootResult {
	return &bootResult{
		checks:   map[string]verdict{},
		sums:     map[string]string{},
		posix:    map[string]posixResult{},
		posixLog: map[string][]string{},
	}
}

// posixResult is one test of the guest's posixtest run.
type posixResult struct {
	result string // PASS, FAIL or SKIP
}

// guestRun is one boot of a guest against a daemon.
type guestRun struct {
	qemu       string   // qemu-system-x86_64 binary
	qemuPrefix []string // arguments before ours (-L for QEMU 10)
	qemuEnv    []string
	kernel     string
	initrd     string
	smp        int
	queues     int // num-request-queues; 1 leaves QEMU's default
	daemonArgv []string
	share      string
	socket     string
	logDir     string
	timeout    time.Duration // whole guest run
	idle       time.Duration // no console output for this long is a hang

	// inherit, if not nil, makes the files the daemon inherits as fds 3,
	// 4, ... (a nil entry leaves that fd closed) before each start; the
	// test closes its copies once the daemon runs.
	inherit func(t *testing.T) []*os.File
	// daemonCred, if not nil, runs the daemon as this user (as an
	// unprivileged orchestrator would).
	daemonCred *syscall.Credential
	// memMiB is the guest's memory (0: 2048).
	memMiB int
	// kernelArgs, if not empty, is appended to the guest's kernel
	// command line.
	kernelArgs string
	// serialPort, if not empty, replaces the vhost-user-fs device with a
	// virtio-serial port of this name whose host end connects to the
	// daemon's socket (govirtiofsd --listen unix:SOCK), for the stream
	// transport; the guest mounts through govirtiofs-guest (init.sh's
	// gvt.stream=). The daemon serves on after QEMU exits: the run stops
	// it with SIGTERM.
	serialPort string
}

func (g *guestRun) qemuArgv() []string {
	argv := append([]string{g.qemu}, g.qemuPrefix...)
	mem := g.memMiB
	if mem == 0 {
		mem = 2048
	}
	argv = append(argv, "-accel", "tcg", "-m", strconv.Itoa(mem))
	if g.smp > 1 {
		argv = append(argv, "-smp", strconv.Itoa(g.smp))
	}
	dev := "vhost-user-fs-pci,queue-size=1024,chardev=char0,tag=myfs"
	if g.queues > 1 {
		dev += ",num-request-queues=" + strconv.Itoa(g.queues)
	}
	cmdline := "console=ttyS0 panic=-1 edd=off quiet"
	if g.kernelArgs != "" {
		cmdline += " " + g.kernelArgs
	}
	if g.serialPort != "" {
		return append(argv,
			"-nographic", "-no-reboot",
			"-kernel", g.kernel, "-initrd", g.initrd,
			"-append", cmdline+" gvt.stream=serial:/dev/virtio-ports/"+g.serialPort,
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=char0,path="+g.socket,
			"-device", "virtserialport,bus=vser0.0,chardev=char0,name="+g.serialPort)
	}
	return append(argv,
		"-nographic", "-no-reboot",
		"-kernel", g.kernel, "-initrd", g.initrd,
		"-append", cmdline,
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", mem), "-numa", "node,memdev=mem",
		"-chardev", "socket,id=char0,path="+g.socket,
		"-device", dev)
}

// run starts the daemon, boots the guest, follows its console until it
// powers off (or a limit passes), and waits for the daemon to exit.
func (g *guestRun) run(t *testing.T) *bootResult {
	t.Helper()
	res := g.runOnce(t)
	if strings.HasPrefix(res.failure, "guest kernel RCU stall") {
		// An emulator fault, seen on -smp 4 guests on two host CPUs:
		// one more boot; a second stall fails the test.
		t.Logf("the guest stalled (%s); booting once more. Console tail:\n%s", res.failure, strings.Join(res.consoleTail, "\n"))
		os.Remove(g.socket)
		return g.runOnce(t)
	}
	if res.boot == 0 && strings.Contains(res.failure, "signal") {
		// QEMU itself died (seen: TCG's "iotlb_to_section: Assertion
		// failed" while SeaBIOS boots) before the guest's userland, so
		// before the daemon served any request: an emulator fault.
		// One more boot; a second crash fails the test.
		t.Logf("QEMU crashed before the guest's userland started (%s); booting once more. Console tail:\n%s",
			res.failure, strings.Join(res.consoleTail, "\n"))
		os.Remove(g.socket)
		res = g.runOnce(t)
	}
	return res
}

// runOnce starts the daemon and QEMU, follows the console and returns what
// the guest reported.
func (g *guestRun) runOnce(t *testing.T) *bootResult {
	t.Helper()
	res := newBootResult()

	dlog, err := os.Create(filepath.Join(g.logDir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer dlog.Close()
	fmt.Fprintf(dlog, "# %s\n", shellJoin(g.daemonArgv))
	daemon := exec.Command(g.daemonArgv[0], g.daemonArgv[1:]...)
	daemon.Stdout, daemon.Stderr = dlog, dlog
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	daemon.SysProcAttr.Credential = g.daemonCred
	if g.inherit != nil {
		daemon.ExtraFiles = g.inherit(t)
	}
	err = daemon.Start()
	for _, f := range daemon.ExtraFiles {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		t.Fatalf("starting the daemon: %v", err)
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

	// The socket appears when the daemon listens. Do not probe it by
	// connecting: a vhost-user daemon serves the first connection only.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(g.socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			time.Sleep(100 * time.Millisecond) // between bind and listen
			// With an inherited socket the path is there from the start:
			// a daemon that refused its command line is gone by now.
			if g.inherit != nil {
				select {
				case err := <-daemonDone:
					daemonRunning = false
					t.Fatalf("the daemon exited at once: %v; log %s:\n%s", err, dlog.Name(), tail(dlog.Name(), 20))
				default:
				}
			}
			break
		}
		select {
		case err := <-daemonDone:
			daemonRunning = false
			t.Fatalf("the daemon exited before listening: %v; log %s:\n%s", err, dlog.Name(), tail(dlog.Name(), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s 10 s after starting the daemon; log %s:\n%s", g.socket, dlog.Name(), tail(dlog.Name(), 20))
		}
	}

	clog, err := os.Create(filepath.Join(g.logDir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer clog.Close()
	qemu := g.startQEMU(t, clog, false)
	defer qemu.stop()
	lines, start := qemu.lines, qemu.start

	total := time.NewTimer(g.timeout)
	defer total.Stop()
	idle := time.NewTimer(g.idle)
	defer idle.Stop()
	var recent []string
follow:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break follow
			}
			idle.Reset(g.idle)
			at := time.Since(start)
			line = strings.TrimRight(line, "\r")
			fmt.Fprintf(clog, "[%7.2f] %s\n", at.Seconds(), line)
			recent = append(recent, quoteGuest(line))
			if len(recent) > 40 {
				recent = recent[1:]
			}
			res.consume(line, at)
			if strings.Contains(line, "rcu: INFO: rcu_preempt detected stalls") {
				// The emulator starved a vCPU; the console goes on
				// printing, so the idle watchdog would never fire.
				res.failure = "guest kernel RCU stall (a TCG vCPU starved)"
				break follow
			}
		case <-idle.C:
			res.failure = fmt.Sprintf("no console output for %v (hang?)", g.idle)
			break follow
		case <-total.C:
			res.failure = fmt.Sprintf("the guest ran longer than %v", g.timeout)
			break follow
		}
	}
	if res.failure != "" {
		qemu.kill()
	}
	qerr := qemu.wait()
	res.qemuExit = time.Since(start)
	res.consoleTail = recent
	if res.failure == "" && qerr != nil {
		res.failure = fmt.Sprintf("QEMU: %v", qerr)
	}
	fmt.Fprintf(clog, "# QEMU exited after %.2fs: %v\n", res.qemuExit.Seconds(), qerr)

	// The guest is gone: the daemon must notice the disconnect and exit 0.
	// A stream daemon serves on for the next connection: stop it.
	if g.serialPort != "" {
		syscall.Kill(daemon.Process.Pid, syscall.SIGTERM)
	}
	select {
	case err := <-daemonDone:
		daemonRunning = false
		res.daemonErr = err
	case <-time.After(15 * time.Second):
		res.daemonErr = fmt.Errorf("still running 15 s after QEMU exited")
	}
	if daemon.ProcessState != nil {
		res.daemonCPU = daemon.ProcessState.UserTime() + daemon.ProcessState.SystemTime()
	}
	return res
}

// consume interprets one console line.
func (r *bootResult) consume(line string, at time.Duration) {
	// Kernel messages can share a line with ours; start at our marker.
	for _, marker := range []string{"GUESTTEST ", "GUESTSUM ", "GUESTINFO ", "GUESTBOOT ", "GUESTDONE", "GUESTPOSIX "} {
		if i := strings.Index(line, marker); i >= 0 {
			line = line[i:]
			break
		}
	}
	if rest, ok := strings.CutPrefix(line, "GUESTPOSIX "); ok {
		r.consumePosix(rest)
		return
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	switch f[0] {
	case "GUESTBOOT":
		r.boot = at
		r.info = append(r.info, quoteGuest(line))
	case "GUESTTEST":
		if len(f) < 3 {
			return
		}
		name := f[1]
		v := verdict{pass: f[2] == "PASS", detail: strings.Join(f[3:], " "), at: at}
		if _, dup := r.checks[name]; !dup {
			r.order = append(r.order, name)
		}
		if old, dup := r.checks[name]; dup && !old.pass {
			return // a check reported twice keeps its failure
		}
		r.checks[name] = v
		if name == "mount" {
			r.mounted = at
		}
	case "GUESTSUM":
		if len(f) == 3 {
			r.sums[f[1]] = f[2]
		}
	case "GUESTINFO":
		r.info = append(r.info, quoteGuest(line))
	case "GUESTDONE":
		r.done = true
		r.verdict = at
	}
}

// posixLine matches go test -v's lines that start, resume or end a subtest
// of TestMountedDir.
var posixLine = regexp.MustCompile(`^\s*(?:=== (?:RUN|NAME|CONT|PAUSE)\s+|--- (PASS|FAIL|SKIP): )TestMountedDir/(\S+)`)

// consumePosix follows the guest's posixtest output: each subtest's verdict,
// and the lines logged while it was the current one.
func (r *bootResult) consumePosix(line string) {
	if m := posixLine.FindStringSubmatch(line); m != nil {
		name := m[2]
		if m[1] == "" {
			r.posixCurrent = name
			return
		}
		if _, seen := r.posix[name]; !seen {
			r.posixOrder = append(r.posixOrder, name)
		}
		r.posix[name] = posixResult{result: m[1]}
		return
	}
	if r.posixCurrent != "" && strings.HasPrefix(line, "    ") {
		l := r.posixLog[r.posixCurrent]
		if len(l) < 50 {
			r.posixLog[r.posixCurrent] = append(l, quoteGuest(strings.TrimSpace(line)))
		}
	}
}

// quoteGuest makes a guest's line safe to log on the host: go test's own
// "--- FAIL:" style markers inside it would be counted as host results by
// scripts/gotest.sh.
func quoteGuest(line string) string {
	for _, m := range []string{"--- PASS", "--- FAIL", "--- SKIP"} {
		line = strings.ReplaceAll(line, m, "-- "+m[4:])
	}
	return line
}

func shellJoin(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\"'$\\*?;&|<>()") {
			b.WriteString(strconv.Quote(a))
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// envDuration reads a number of seconds from the environment.
func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s <= 0 {
		t.Fatalf("%s=%q: want a number of seconds", key, v)
	}
	return time.Duration(s * float64(time.Second))
}

// qemuProc is a running QEMU of a guestRun, in its own process group, its
// console (stdout and stderr) arriving line by line.
type qemuProc struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser // the serial console's input, if asked for
	lines   <-chan string  // closed when the console ends
	start   time.Time
	console *os.File
	waited  bool
}

// startQEMU logs g's QEMU command line to clog and starts it; withStdin
// also gives a pipe to the console's input. tb fails if it cannot. The
// caller defers stop.
func (g *guestRun) startQEMU(tb testing.TB, clog io.Writer, withStdin bool) *qemuProc {
	tb.Helper()
	argv := g.qemuArgv()
	fmt.Fprintf(clog, "# %s\n", shellJoin(argv))
	q := &qemuProc{cmd: exec.Command(argv[0], argv[1:]...)}
	q.cmd.Env = append(os.Environ(), g.qemuEnv...)
	if withStdin {
		in, err := q.cmd.StdinPipe()
		if err != nil {
			tb.Fatal(err)
		}
		q.stdin = in
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	q.cmd.Stdout, q.cmd.Stderr = pw, pw
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	q.start = time.Now()
	if err := q.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		tb.Fatalf("starting QEMU: %v", err)
	}
	pw.Close()
	q.console = pr
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	q.lines = lines
	return q
}

// kill kills QEMU's process group and drains its console.
func (q *qemuProc) kill() {
	syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
	for range q.lines {
	}
}

// wait waits for QEMU to exit and closes its console.
func (q *qemuProc) wait() error {
	err := q.cmd.Wait()
	q.waited = true
	q.console.Close()
	return err
}

// stop kills QEMU if it was not waited for.
func (q *qemuProc) stop() {
	if !q.waited {
		syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
		q.wait()
	}
}
