package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain runs main when the test binary is started as the command (for
// the exit status tests).
func TestMain(m *testing.M) {
	if os.Getenv("VUFS_LOAD_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var daemonBin struct {
	once sync.Once
	path string
	err  error
}

// govirtiofsd builds the daemon once per test binary.
func govirtiofsd(t *testing.T) string {
	t.Helper()
	daemonBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "vufs-load-test")
		if err != nil {
			daemonBin.err = err
			return
		}
		daemonBin.path = filepath.Join(dir, "govirtiofsd")
		build := exec.Command("go", "build", "-o", daemonBin.path, "../../cmd/govirtiofsd")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			daemonBin.err = errors.New(string(out))
		}
	})
	if daemonBin.err != nil {
		t.Fatalf("building govirtiofsd: %v", daemonBin.err)
	}
	return daemonBin.path
}

func ourDaemon(t *testing.T) daemonSpec {
	return daemonSpec{name: "govirtiofsd", argv: []string{govirtiofsd(t), "--shared-dir", "{dir}", "--socket-path", "{sock}", "--sandbox", "none", "--cache", "auto", "--request-queues", "4"}}
}

func testConfig(mixes ...string) *config {
	if len(mixes) == 0 {
		mixes = mixNames
	}
	return &config{mixes: mixes, dur: 150 * time.Millisecond, warmup: 30 * time.Millisecond, threads: 3, depth: 4, rounds: 1}
}

// TestMixes runs every mix against a fresh govirtiofsd and checks that
// operations completed, every reply was validated, and the daemon's CPU
// and RSS were read; and that a wrong READ answer fails the run.
func TestMixes(t *testing.T) {
	tests := []struct {
		name      string
		queues    int
		wantQ     int
		mixes     []string
		corrupt   bool
		wantError string
	}{
		{name: "one queue", queues: 1, wantQ: 1},
		{name: "more queues than offered", queues: 8, wantQ: 4, mixes: []string{"lookup-getattr", "write-1m-seq", "create-cycle"}},
		{name: "wrong READ data fails", queues: 1, mixes: []string{"read-4k-rand"}, corrupt: true, wantError: "data differs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(tc.mixes...)
			c.corrupt = tc.corrupt
			base := t.TempDir()
			dir, sock := filepath.Join(base, "share"), filepath.Join(base, "sock")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := prepareTree(dir); err != nil {
				t.Fatal(err)
			}
			p, err := startDaemon(ourDaemon(t), dir, sock, filepath.Join(base, "log"))
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			rows, err := runSession(c, sock, p.cmd.Process.Pid, tc.queues, "govirtiofsd", 1)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("run error %v, want one containing %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				log, _ := os.ReadFile(filepath.Join(base, "log"))
				t.Fatalf("%v\ndaemon log:\n%s", err, log)
			}
			if len(rows) != len(c.mixes) {
				t.Fatalf("%d rows for %d mixes", len(rows), len(c.mixes))
			}
			cpu := 0.0
			for _, r := range rows {
				res := r.res
				t.Logf("%s: %d ops, %.0f ops/s, p50 %v p99 %v, %.4f CPU s/1000 ops, RssAnon %d kB", res.mix, res.ops, res.opsPerSec, res.p50, res.p99, res.cpuPer1000, res.rssAnonKB)
				if res.ops == 0 || res.opsPerSec <= 0 || res.p50 <= 0 || res.p99 < res.p50 {
					t.Errorf("%s: %+v", res.mix, res)
				}
				if res.queues != tc.wantQ || res.offered != 4 {
					t.Errorf("%s: %d queues used of %d offered, want %d of 4", res.mix, res.queues, res.offered, tc.wantQ)
				}
				if res.cpuPer1000 < 0 || res.rssAnonKB == 0 {
					t.Errorf("%s: CPU %v, RssAnon %d: not read", res.mix, res.cpuPer1000, res.rssAnonKB)
				}
				cpu += res.cpuPer1000
			}
			if cpu <= 0 {
				t.Error("the daemon used no CPU time in any mix")
			}
			if _, err := os.Stat(filepath.Join(dir, baseName, "create", "c0-0-1")); !os.IsNotExist(err) {
				t.Errorf("create-cycle left files behind: %v", err)
			}
		})
	}
}

// TestCompareMissing runs the comparison mode with a daemon whose binary
// does not exist: it is reported as missing, not dropped.
func TestCompareMissing(t *testing.T) {
	c := testConfig("lookup-getattr")
	c.dirBase = t.TempDir()
	c.queues = []int{1}
	c.daemons = []daemonSpec{ourDaemon(t), {name: "virtiofsd-rust", argv: []string{"/nonexistent/virtiofsd", "--shared-dir", "{dir}", "--socket-path", "{sock}"}}}
	c.ref = "virtiofsd-rust"
	var out bytes.Buffer
	c.stdout = &out
	c.out = filepath.Join(c.dirBase, "table.md")
	if err := run(c); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	t.Log("\n" + table)
	for _, want := range []string{"| lookup-getattr | 1 | virtiofsd-rust | missing |", "| lookup-getattr | 1 | govirtiofsd | ", "govirtiofsd/virtiofsd-rust | n/a | n/a |"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if b, err := os.ReadFile(c.out); err != nil || string(b) != table {
		t.Errorf("--out file: %v", err)
	}
}

// TestBadFlags checks that a bad command line is one line on stderr and
// exit status 2.
func TestBadFlags(t *testing.T) {
	tests := [][]string{
		{},
		{"--nope"},
		{"--socket", "/s"},
		{"--socket", "/s", "--dir", "/d", "--mix", "nope"},
		{"--socket", "/s", "--dir", "/d", "--threads", "0"},
		{"--socket", "/s", "--dir", "/d", "--queues", "1,x"},
		{"--socket", "/s", "--dir", "/d", "--duration", "0s"},
		{"--dir-base", "/tmp/x", "--daemon", "a=/bin/true"},
		{"--dir-base", "/tmp/x", "--daemon", "a=/bin/x {dir} {sock}", "--reference", "b"},
		{"--dir-base", "/tmp/x", "--daemon", "a=/bin/x {dir} {sock}", "--socket", "/s"},
		{"--socket", "/s", "--dir", "/d", "extra"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if _, err := parseFlags(args); err == nil {
				t.Fatal("accepted")
			}
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), "VUFS_LOAD_AS_MAIN=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want status 2", err)
			}
			if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.HasPrefix(stderr.String(), "vufs-load: ") {
				t.Fatalf("stderr %q, want one line", stderr.String())
			}
		})
	}
	if _, err := parseFlags([]string{"--socket", "/s", "--dir", "/d", "--pid", "1", "--mix", "readdirplus,read-1m-seq"}); err != nil {
		t.Fatalf("good flags refused: %v", err)
	}
}
