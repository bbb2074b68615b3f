package qemutests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/migcase"
)

// migrationDefaultPairs is the pair the migration case boots: QEMU 7.2's
// vhost-user-fs device is unmigratable, QEMU 8.2 and later migrate it with
// the back-end's internal state.
const migrationDefaultPairs = "6.12"

// TestQEMUMigration live-migrates a guest between two QEMU 10.0 processes
// on this host. The source's share is served by one daemon (A), the
// destination, started with the same device configuration and
// -incoming unix:PATH, by another (B) on the same directory; guest memory
// is memory-backend-memfd,share=on, as for every vhost-user guest.
//
// QEMU 10.0 migrates a vhost-user-fs device only with the back-end's help,
// and has no device property to change that: the back-end must offer the
// LOG_SHMFD protocol feature, or vhost_user_backend_init
// (hw/virtio/vhost-user.c) adds a migration blocker ("Migration disabled:
// vhost-user backend lacks VHOST_USER_PROTOCOL_F_LOG_SHMFD feature."), and
// VHOST_F_LOG_ALL, or vhost_dev_init (hw/virtio/vhost.c) does ("Migration
// disabled: vhost lacks VHOST_F_LOG_ALL feature."), and it must then log
// the guest pages it writes into the memfd log SET_LOG_BASE hands it; and
// it must offer the DEVICE_STATE protocol feature, since the device's
// vmstate always carries the back-end's internal state
// (hw/virtio/vhost-user-fs.c, vuf_backend_vmstate: SET_DEVICE_STATE_FD,
// CHECK_DEVICE_STATE), or saving fails with "Back-end of vhost-user-fs
// device … does not support migration through qemu".
//
// The guest (guesttest -migrate, internal/migcase) opens files on the share
// (one read half-way, one appended to, a directory listed part-way, a
// directory descriptor) and reports migrate_ready on the source's console.
// The test then drives the migration over QMP (a QMP socket per QEMU:
// qmp_capabilities, migrate, query-migrate until completed), checks the
// destination runs, quits the source and makes the marker file the guest
// waits for. The guest, now on the destination (whose console has its own
// log), drops its caches and goes on with what it holds; each step is a
// verdict (TestQEMUMigration/<pair>/migrate_<step>). On the host:
// migration (QMP's account: total time, downtime, bytes), host_files (what
// the guest wrote before and after), and daemon_exit_source and
// daemon_exit_destination (each daemon exits 0 once its QEMU is gone).
//
// It passes only with a daemon that supports vhost-user-fs migration;
// QEMUTEST_DAEMON=virtiofsd-rust runs it against the reference virtiofsd.
func TestQEMUMigration(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.name == "virtiofsd-c" {
		t.Skipf("%s cannot migrate (and QEMU 7.2's vhost-user-fs is unmigratable)", daemon.name)
	}
	list := os.Getenv("QEMUTEST_MIGRATION_PAIRS")
	if list == "" {
		list = migrationDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	plan := planModeGuest(t, "migrate", migcase.Checks)
	logRoot := logRootDir(t)
	var summary []string
	for _, p := range selected {
		t.Run(p.name, func(t *testing.T) {
			if !p.qemu10 {
				t.Skipf("QEMU 7.2 marks vhost-user-fs unmigratable")
			}
			summary = append(summary, runMigration(t, setup, daemon, p, plan, logRoot))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// migrationRun is the state of one migration test.
type migrationRun struct {
	share   string
	logDir  string
	migSock string
	qmp     [2]string // source, destination
	qmpLog  *os.File
}

// migStats is QMP's account of a completed migration (query-migrate).
type migStats struct {
	status      string
	errorDesc   string
	totalTime   time.Duration // "total-time"
	downtime    time.Duration
	setupTime   time.Duration
	transferred int64 // ram.transferred, bytes
	wall        time.Duration
}

func runMigration(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, plan *guestPlan, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-mig-")
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
	m := &migrationRun{
		share:   filepath.Join(work, "share"),
		logDir:  filepath.Join(logRoot, "migration-"+p.name),
		migSock: filepath.Join(work, "migrate.sock"),
		qmp:     [2]string{filepath.Join(work, "qmp-src.sock"), filepath.Join(work, "qmp-dst.sock")},
	}
	must(t, os.Mkdir(m.share, 0o755))
	must(t, migcase.Prepare(m.share))
	must(t, os.MkdirAll(m.logDir, 0o755))
	m.qmpLog, err = os.Create(filepath.Join(m.logDir, "qmp.log"))
	must(t, err)
	defer m.qmpLog.Close()
	g.share = m.share
	// QEMU scans all guest memory while migrating; the guest needs far
	// less than the other cases' 2 GiB.
	g.memMiB = 512
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)

	sockets := [2]string{filepath.Join(work, "vhost-src.sock"), filepath.Join(work, "vhost-dst.sock")}
	sides := [2]string{"src", "dst"}
	var daemons [2]*process
	var qemuArgv [2][]string
	for i, side := range sides {
		argv := daemon.argv(sockets[i], m.share, p.tag())
		t.Logf("daemon %s: %s", side, shellJoin(argv))
		daemons[i] = startDaemon(t, argv, sockets[i], filepath.Join(m.logDir, "daemon-"+side+".log"))
		g.socket = sockets[i]
		qemuArgv[i] = append(g.qemuArgv(), "-qmp", "unix:"+m.qmp[i]+",server=on,wait=off")
	}
	qemuArgv[1] = append(qemuArgv[1], "-incoming", "unix:"+m.migSock)
	for i, side := range sides {
		t.Logf("qemu %s: %s", side, shellJoin(qemuArgv[i]))
	}

	start := time.Now()
	lines := make(chan consoleLine, 64)
	var followers sync.WaitGroup
	var qemus [2]*process
	// The destination first: it must be listening when the source
	// starts sending.
	for _, i := range []int{1, 0} {
		qemus[i] = startQEMU(t, qemuArgv[i], g.qemuEnv, sides[i], filepath.Join(m.logDir, "console-"+sides[i]+".log"), start, lines, &followers)
		if i == 1 {
			waitSocket(t, m.qmp[1], qemus[1], 10*time.Second, filepath.Join(m.logDir, "console-dst.log"))
		}
	}
	go func() { followers.Wait(); close(lines) }()

	res := newBootResult()
	var stats migStats
	var migErr error
	migStarted, migrated := false, false
	migDone := make(chan error, 1)
	srcDone := qemus[0].exited
	total := time.NewTimer(g.timeout)
	defer total.Stop()
	idle := time.NewTimer(g.idle)
	defer idle.Stop()
	var recent []string
follow:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break follow
			}
			idle.Reset(g.idle)
			recent = append(recent, sides[l.side]+": "+quoteGuest(l.text))
			if len(recent) > 40 {
				recent = recent[1:]
			}
			res.consume(l.text, l.at)
			if v, ok := res.checks["migrate_ready"]; ok && v.pass && !migStarted {
				migStarted = true
				go func() { migDone <- m.migrate(&stats) }()
			}
		case migErr = <-migDone:
			if migErr != nil {
				// The guest would wait for the marker for minutes.
				res.failure = fmt.Sprintf("migration: %v", migErr)
				qemus[0].kill()
				qemus[1].kill()
				continue
			}
			migrated = true
			t.Logf("migrated in %v (QMP total-time %v, downtime %v, setup %v, %.1f MiB of RAM sent)",
				stats.wall.Round(time.Millisecond), stats.totalTime, stats.downtime, stats.setupTime, float64(stats.transferred)/(1<<20))
		case <-srcDone:
			srcDone = nil
			if !migStarted {
				// The guest powered off on the source (or QEMU
				// failed): nothing will come to the destination.
				// Once a migration started, migrate reports how the
				// source ended.
				res.failure = "the source QEMU exited before the guest was ready to migrate"
				qemus[1].kill()
			}
		case <-idle.C:
			res.failure = fmt.Sprintf("no console output for %v (hang?)", g.idle)
			qemus[0].kill()
			qemus[1].kill()
		case <-total.C:
			res.failure = fmt.Sprintf("the guest ran longer than %v", g.timeout)
			qemus[0].kill()
			qemus[1].kill()
		}
	}
	for _, q := range qemus {
		q.wait(5 * time.Second)
	}
	if migStarted && !migrated && migErr == nil {
		// Both QEMUs are gone; migrate ends with an error soon.
		select {
		case migErr = <-migDone:
		case <-time.After(45 * time.Second):
			migErr = errors.New("the QMP exchange did not end 45 s after both QEMUs were gone")
		}
		if migErr == nil {
			migrated = true
		}
	}
	res.consoleTail = recent
	res.qemuExit = time.Since(start)
	if res.failure == "" && !res.done {
		res.failure = "the guest stopped before GUESTDONE"
	}
	daemonErrs := [2]error{}
	for i, d := range daemons {
		daemonErrs[i] = d.wait(15 * time.Second)
	}

	t.Logf("to migrate_ready %.1fs, to verdict %.1fs", res.checks["migrate_ready"].at.Seconds(), res.verdict.Seconds())
	for _, l := range res.info {
		t.Log(l)
	}
	if res.failure != "" {
		t.Errorf("%s; last console lines (logs in %s):\n%s", res.failure, m.logDir, strings.Join(res.consoleTail, "\n"))
	}

	passed, failed := 0, 0
	sub := func(name string, f func(t *testing.T)) {
		if t.Run(name, f) {
			passed++
		} else {
			failed++
		}
	}
	sub("migration", func(t *testing.T) {
		switch {
		case !migStarted:
			t.Fatal("the guest never got ready to migrate")
		case migErr != nil || !migrated:
			t.Fatalf("%v\nQMP log %s; daemon logs:\n%s\n%s", migErr, m.qmpLog.Name(),
				tail(filepath.Join(m.logDir, "daemon-src.log"), 10), tail(filepath.Join(m.logDir, "daemon-dst.log"), 10))
		}
		t.Logf("query-migrate: status %s, total-time %v, downtime %v, setup-time %v, %.1f MiB sent; %v from the migrate command to completed",
			stats.status, stats.totalTime, stats.downtime, stats.setupTime, float64(stats.transferred)/(1<<20), stats.wall.Round(time.Millisecond))
	})
	reportVerdicts(sub, plan.checks, res, nil)
	sub("host_files", func(t *testing.T) { checkMigrationFiles(t, m.share) })
	for i, side := range []string{"source", "destination"} {
		sub("daemon_exit_"+side, func(t *testing.T) {
			if daemonErrs[i] != nil {
				log := filepath.Join(m.logDir, "daemon-"+sides[i]+".log")
				t.Fatalf("the %s daemon did not exit cleanly after its QEMU went away: %v; log %s:\n%s", side, daemonErrs[i], log, tail(log, 20))
			}
		})
	}
	return fmt.Sprintf("migration on %s with %s: %d passed, %d failed; migration %v (QMP total-time %v, downtime %v); logs in %s",
		p.name, daemon.name, passed, failed, stats.wall.Round(time.Millisecond), stats.totalTime, stats.downtime, m.logDir)
}

// migrate drives the migration over QMP: capabilities on both QEMUs, the
// migrate command on the source, query-migrate until it ends; once it
// completed, it waits for the destination to run, quits the source and
// makes the guest's marker.
func (m *migrationRun) migrate(stats *migStats) error {
	src, err := dialQMP(m.qmp[0], "src", m.qmpLog)
	if err != nil {
		return err
	}
	defer src.close()
	dst, err := dialQMP(m.qmp[1], "dst", m.qmpLog)
	if err != nil {
		return err
	}
	defer dst.close()
	// The default bandwidth limit (128 MiB/s) only slows a test on one
	// host down.
	if _, err := src.cmd("migrate-set-parameters", map[string]any{"max-bandwidth": int64(8) << 30}); err != nil {
		return err
	}
	start := time.Now()
	if _, err := src.cmd("migrate", map[string]any{"uri": "unix:" + m.migSock}); err != nil {
		return err
	}
	for {
		r, err := src.cmd("query-migrate", nil)
		if err != nil {
			return err
		}
		var q struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
			TotalTime int64  `json:"total-time"`
			Downtime  int64  `json:"downtime"`
			SetupTime int64  `json:"setup-time"`
			RAM       struct {
				Transferred int64 `json:"transferred"`
			} `json:"ram"`
		}
		if err := json.Unmarshal(r, &q); err != nil {
			return fmt.Errorf("query-migrate: %v", err)
		}
		*stats = migStats{
			status: q.Status, errorDesc: q.ErrorDesc,
			totalTime: time.Duration(q.TotalTime) * time.Millisecond, downtime: time.Duration(q.Downtime) * time.Millisecond,
			setupTime: time.Duration(q.SetupTime) * time.Millisecond, transferred: q.RAM.Transferred,
			wall: time.Since(start),
		}
		switch q.Status {
		case "completed":
			return m.switchOver(src, dst)
		case "failed", "cancelled":
			return fmt.Errorf("query-migrate: %s: %s", q.Status, q.ErrorDesc)
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("query-migrate: still %s after %v", q.Status, time.Since(start).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// switchOver waits for the destination to run, quits the paused source and
// tells the guest it may go on.
func (m *migrationRun) switchOver(src, dst *qmpConn) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := dst.cmd("query-status", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(r, &st)
		if st.Status == "running" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the destination is %q, not running, 30 s after the migration completed", st.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := src.cmd("quit", nil); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(m.qmpLog, "# quit: %v\n", err)
	}
	return os.WriteFile(filepath.Join(m.share, migcase.Marker), nil, 0o644)
}

// checkMigrationFiles checks on the host what the guest wrote on both
// sides of the migration.
func checkMigrationFiles(t *testing.T, share string) {
	wantFile(t, filepath.Join(share, migcase.Append), migcase.AppendBefore+migcase.AppendAfter)
	wantFile(t, filepath.Join(share, migcase.Created), migcase.CreatedData)
	wantFile(t, filepath.Join(share, migcase.ViaDirfd), migcase.DirfdData)
	wantNames(t, filepath.Join(share, "out"), []string{"append.txt", "created.txt", "viadirfd.txt"})
	ents, err := os.ReadDir(filepath.Join(share, migcase.Dir))
	if err != nil || len(ents) != migcase.DirCount {
		t.Errorf("host: %s lists %d entries, %v; want %d", migcase.Dir, len(ents), err, migcase.DirCount)
	}
}

// qmpConn is a QMP client: one command at a time, events skipped.
type qmpConn struct {
	name string
	c    net.Conn
	r    *bufio.Reader
	log  io.Writer
}

// dialQMP connects to a QMP socket, reads the greeting and leaves
// capabilities negotiation mode.
func dialQMP(path, name string, log io.Writer) (*qmpConn, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %v", name, err)
	}
	q := &qmpConn{name: name, c: c, r: bufio.NewReader(c), log: log}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	greeting, err := q.r.ReadBytes('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("QMP %s greeting: %v", name, err)
	}
	fmt.Fprintf(log, "%s <- %s", name, greeting)
	if _, err := q.cmd("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) close() { q.c.Close() }

// cmd runs one command and returns its "return" value, or its error as
// "QMP <side> <command>: <class>: <desc>".
func (q *qmpConn) cmd(name string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": name}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if name != "query-migrate" && name != "query-status" {
		fmt.Fprintf(q.log, "%s -> %s\n", q.name, b)
	}
	q.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s %s: %v", q.name, name, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s %s: %w", q.name, name, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("QMP %s %s: %v in %q", q.name, name, err, line)
		}
		if resp.Event != "" || (name != "query-migrate" && name != "query-status") {
			fmt.Fprintf(q.log, "%s <- %s", q.name, line)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("QMP %s %s: %s: %s", q.name, name, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

// process is a daemon or QEMU the test started, in its own process group.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result, set before exited is closed
}

func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		<-p.exited
	})
	return p
}

// kill kills the process group.
func (p *process) kill() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }

// wait returns the exit error, or an error if the process is still
// running after d.
func (p *process) wait(d time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("still running %v after its QEMU exited", d)
	}
}

// startDaemon starts a daemon with its output in logPath and waits for
// its socket.
func startDaemon(t *testing.T, argv []string, socket, logPath string) *process {
	t.Helper()
	log, err := os.Create(logPath)
	must(t, err)
	defer log.Close()
	fmt.Fprintf(log, "# %s\n", shellJoin(argv))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	p := startProcess(t, cmd)
	waitSocket(t, socket, p, 10*time.Second, logPath)
	return p
}

// waitSocket waits for a unix socket to appear (without connecting: a
// vhost-user daemon serves its first connection only); logPath is the
// process's log, shown if it does not.
func waitSocket(t *testing.T, path string, p *process, limit time.Duration, logPath string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			time.Sleep(100 * time.Millisecond) // between bind and listen
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before making %s: %v; log %s:\n%s", p.cmd.Path, path, p.err, logPath, tail(logPath, 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s %v after starting %s; log %s:\n%s", path, limit, p.cmd.Path, logPath, tail(logPath, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consoleLine is one line of a QEMU's serial console.
type consoleLine struct {
	side int // 0 source, 1 destination
	text string
	at   time.Duration
}

// startQEMU starts QEMU with its console (stdio) logged to logPath and
// sent, line by line, to lines.
func startQEMU(t *testing.T, argv, env []string, side, logPath string, start time.Time, lines chan<- consoleLine, followers *sync.WaitGroup) *process {
	t.Helper()
	clog, err := os.Create(logPath)
	must(t, err)
	fmt.Fprintf(clog, "# %s\n", shellJoin(argv))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw, err := os.Pipe()
	must(t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	p := startProcess(t, cmd)
	pw.Close()
	n := 0
	if side == "dst" {
		n = 1
	}
	followers.Add(1)
	go func() {
		defer followers.Done()
		defer clog.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			at := time.Since(start)
			text := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintf(clog, "[%7.2f] %s\n", at.Seconds(), text)
			lines <- consoleLine{side: n, text: text, at: at}
		}
		fmt.Fprintf(clog, "# console closed after %.2fs\n", time.Since(start).Seconds())
	}()
	return p
}
