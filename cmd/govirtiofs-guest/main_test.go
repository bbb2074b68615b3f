package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/fuseproto/stream"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

func TestParseArgs(t *testing.T) {
	def := func(src source, mnt string, change func(c *config)) *config {
		c := &config{src: src, mountpoint: mnt, allowOther: true, defaultPerm: true, autoUnmount: true,
			fsname: src.raw, timeout: 10 * time.Second, logLevel: hclog.Info}
		if change != nil {
			change(c)
		}
		return c
	}
	sock := source{raw: "unix:/run/g.sock", kind: "unix", path: "/run/g.sock"}
	for _, tc := range []struct {
		name    string
		args    []string
		want    *config
		wantErr string
	}{
		{name: "unix", args: []string{"unix:/run/g.sock", "/mnt"}, want: def(sock, "/mnt", nil)},
		{name: "vsock", args: []string{"vsock:2:5000", "/mnt"},
			want: def(source{raw: "vsock:2:5000", kind: "vsock", cid: 2, port: 5000}, "/mnt", nil)},
		{name: "vsock max", args: []string{"vsock:4294967295:4294967295", "m"},
			want: def(source{raw: "vsock:4294967295:4294967295", kind: "vsock", cid: 1<<32 - 1, port: 1<<32 - 1}, "m", nil)},
		{name: "serial", args: []string{"serial:/dev/virtio-ports/govirtiofs", "/mnt"},
			want: def(source{raw: "serial:/dev/virtio-ports/govirtiofs", kind: "serial", path: "/dev/virtio-ports/govirtiofs"}, "/mnt", nil)},
		{name: "path with colons", args: []string{"unix:/a:b", "/mnt"},
			want: def(source{raw: "unix:/a:b", kind: "unix", path: "/a:b"}, "/mnt", nil)},
		{name: "-o", args: []string{"-o", "ro,no_allow_other,no_default_permissions,fsname=share,max_read=131072,no_auto_unmount", "unix:/run/g.sock", "/mnt"},
			want: def(sock, "/mnt", func(c *config) {
				c.readOnly, c.allowOther, c.defaultPerm, c.autoUnmount = true, false, false, false
				c.fsname, c.maxRead = "share", 131072
			})},
		{name: "-o repeated, last wins", args: []string{"-o", "ro", "-o", "rw,allow_other", "unix:/run/g.sock", "/mnt"}, want: def(sock, "/mnt", nil)},
		{name: "-o=", args: []string{"-o=ro,,", "unix:/run/g.sock", "/mnt"}, want: def(sock, "/mnt", func(c *config) { c.readOnly = true })},
		{name: "options after", args: []string{"unix:/run/g.sock", "/mnt", "-o", "ro", "--timeout", "3s"},
			want: def(sock, "/mnt", func(c *config) { c.readOnly, c.timeout = true, 3*time.Second })},
		{name: "options between", args: []string{"unix:/run/g.sock", "--log-level=debug", "/mnt"},
			want: def(sock, "/mnt", func(c *config) { c.logLevel = hclog.Debug })},
		{name: "--", args: []string{"--timeout=1m", "--", "unix:/run/g.sock", "-o"},
			want: def(sock, "-o", func(c *config) { c.timeout = time.Minute })},

		{name: "nothing", args: nil, wantErr: "want SOURCE and MOUNTPOINT"},
		{name: "no mount point", args: []string{"unix:/run/g.sock"}, wantErr: "want SOURCE and MOUNTPOINT"},
		{name: "too many", args: []string{"unix:/run/g.sock", "/mnt", "/x"}, wantErr: `too many arguments: ["/x"]`},
		{name: "bad kind", args: []string{"tcp:1.2.3.4:5", "/mnt"}, wantErr: `bad source "tcp:1.2.3.4:5": want vsock:CID:PORT, unix:PATH or serial:PATH`},
		{name: "no kind", args: []string{"/run/g.sock", "/mnt"}, wantErr: `bad source "/run/g.sock"`},
		{name: "vsock no port", args: []string{"vsock:2", "/mnt"}, wantErr: `bad source "vsock:2"`},
		{name: "vsock bad cid", args: []string{"vsock:host:5000", "/mnt"}, wantErr: `bad source "vsock:host:5000"`},
		{name: "vsock port too big", args: []string{"vsock:2:4294967296", "/mnt"}, wantErr: `bad source "vsock:2:4294967296"`},
		{name: "unix empty", args: []string{"unix:", "/mnt"}, wantErr: `bad source "unix:"`},
		{name: "unix too long", args: []string{"unix:/" + strings.Repeat("x", 120), "/mnt"}, wantErr: "too long"},
		{name: "serial empty", args: []string{"serial:", "/mnt"}, wantErr: `bad source "serial:"`},
		{name: "empty mount point", args: []string{"unix:/s", ""}, wantErr: "empty MOUNTPOINT"},
		{name: "unknown flag", args: []string{"--foreground", "unix:/s", "/mnt"}, wantErr: "flag provided but not defined: -foreground"},
		{name: "unknown -o", args: []string{"-o", "rw,cache=none", "unix:/s", "/mnt"}, wantErr: `unknown mount option "cache=none"`},
		{name: "-o value on a flag", args: []string{"-o", "ro=1", "unix:/s", "/mnt"}, wantErr: "mount option ro takes no value"},
		{name: "-o fsname empty", args: []string{"-o", "fsname=", "unix:/s", "/mnt"}, wantErr: "fsname=NAME"},
		{name: "-o max_read bad", args: []string{"-o", "max_read=lots", "unix:/s", "/mnt"}, wantErr: "max_read wants a number"},
		{name: "-o max_read zero", args: []string{"-o", "max_read=0", "unix:/s", "/mnt"}, wantErr: "max_read wants a number"},
		{name: "-o missing value", args: []string{"unix:/s", "/mnt", "-o"}, wantErr: "flag needs an argument: -o"},
		{name: "bad timeout", args: []string{"--timeout", "soon", "unix:/s", "/mnt"}, wantErr: "want a positive duration"},
		{name: "zero timeout", args: []string{"--timeout", "0s", "unix:/s", "/mnt"}, wantErr: "want a positive duration"},
		{name: "bad log level", args: []string{"--log-level", "loud", "unix:/s", "/mnt"}, wantErr: "want off, error, warn, info, debug or trace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseArgs(%q) = %+v, %v; want an error with %q", tc.args, cfg, err, tc.wantErr)
				}
				// The command says it in one line and exits 2.
				var stdout, stderr bytes.Buffer
				if code := run(tc.args, &stdout, &stderr); code != 2 {
					t.Errorf("run exited %d, want 2", code)
				}
				if out := stderr.String(); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, progName+": ") || !strings.HasSuffix(out, "\n") {
					t.Errorf("stderr is %q, want one line starting %q", out, progName+": ")
				}
				if stdout.Len() != 0 {
					t.Errorf("stdout is %q, want nothing", stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tc.args, err)
			}
			if *cfg != *tc.want {
				t.Fatalf("parseArgs(%q) =\n %+v, want\n %+v", tc.args, *cfg, *tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{arg}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
			t.Errorf("run(%s) = %d, stderr %q; want 0 and nothing", arg, code, stderr.String())
		}
		for _, want := range []string{"Usage: govirtiofs-guest [options] SOURCE MOUNTPOINT", "vsock:CID:PORT", "no_auto_unmount", "--timeout", "--log-level"} {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("run(%s) help lacks %q", arg, want)
			}
		}
		if strings.Contains(stdout.String(), "watch-unmount") {
			t.Errorf("the help shows the watcher's hidden option")
		}
	}
}

func TestMountInfoUnescape(t *testing.T) {
	for in, want := range map[string]string{`/mnt`: "/mnt", `/a\040b`: "/a b", `/t\011\134x`: "/t\t\\x", `/bad\9`: `/bad\9`} {
		if got := unescapeMountInfo(in); got != want {
			t.Errorf("unescapeMountInfo(%q) = %q, want %q", in, got, want)
		}
	}
}

var guestBin struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// buildGuest builds the command, static as it ships, once per test run.
func buildGuest(t *testing.T) string {
	t.Helper()
	guestBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "govirtiofs-guest-test-")
		if err != nil {
			guestBin.err = err
			return
		}
		guestBin.path = filepath.Join(dir, progName)
		build := exec.Command("go", "build", "-p", "1", "-o", guestBin.path, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		guestBin.out, guestBin.err = build.CombinedOutput()
	})
	if guestBin.err != nil {
		t.Fatalf("go build: %v\n%s", guestBin.err, guestBin.out)
	}
	return guestBin.path
}

func TestMain(m *testing.M) {
	if path := os.Getenv(lockHelperEnv); path != "" {
		lockHelper(path)
	}
	code := m.Run()
	if guestBin.path != "" {
		os.RemoveAll(filepath.Dir(guestBin.path))
	}
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer for a command's output, read while the
// command runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is an in-process stream daemon on a unix socket: Serve over a
// passthrough share of dir for each connection.
type daemon struct {
	sock  string
	dir   string
	conns chan net.Conn // each accepted connection
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	d := &daemon{sock: filepath.Join(t.TempDir(), "g.sock"), dir: t.TempDir(), conns: make(chan net.Conn, 16)}
	ln, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	newSession := func() (*stream.Session, error) {
		pfs, err := passthrough.New(d.dir, passthrough.Options{})
		if err != nil {
			return nil, err
		}
		return &stream.Session{Server: fuseproto.NewServer(pfs, fuseproto.Options{}), Close: func() { pfs.Close() }}, nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.conns <- c
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream.Serve(ctx, c, newSession, stream.Options{})
			}()
		}
	}()
	return d
}

// guest is a running govirtiofs-guest.
type guest struct {
	cmd    *exec.Cmd
	mnt    string
	stderr *syncBuffer
	done   chan error // Wait's result
}

// startGuest runs the command on unix:SOCK and a new mount point, and
// waits until it has mounted.
func startGuest(t *testing.T, d *daemon, args ...string) *guest {
	t.Helper()
	mnt, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{mnt: mnt, stderr: new(syncBuffer), done: make(chan error, 1)}
	g.cmd = exec.Command(buildGuest(t), append(args, "unix:"+d.sock, mnt)...)
	g.cmd.Stderr = g.stderr
	g.cmd.WaitDelay = 5 * time.Second
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.done
		g.done <- nil
		if isMounted(g.mnt) {
			unix.Unmount(g.mnt, unix.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(mnt) {
		select {
		case err := <-g.done:
			g.done <- err
			t.Fatalf("%s exited before mounting: %v\n%s", progName, err, g.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 20 s\n%s", mnt, g.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

func isMounted(mnt string) bool {
	fstype, _, ok := mountAt(mnt)
	return ok && fstype == devfuse.FSType
}

// exit waits up to d for the command to exit and returns its status.
func (g *guest) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case err := <-g.done:
		g.done <- err
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		}
		t.Fatalf("waiting for %s: %v", progName, err)
	case <-time.After(d):
		t.Fatalf("%s still running %v later\n%s", progName, d, g.stderr)
	}
	return -1
}

// waitUnmounted fails unless the mount is gone within d.
func (g *guest) waitUnmounted(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for isMounted(g.mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted %v later\n%s", g.mnt, d, g.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// useMount writes and reads a file through the mount. The daemon is in
// this process, so only raw system calls touch the mount (os.Open would
// register the file with the netpoller, see fuseproto/devfuse's tests).
func useMount(t *testing.T, d *daemon, g *guest) {
	t.Helper()
	data := bytes.Repeat([]byte("stream "), 300_000) // 2.1 MB: several WRITEs
	path := filepath.Join(g.mnt, "hello")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if got, err := os.ReadFile(filepath.Join(d.dir, "hello")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the share holds %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	got := make([]byte, len(data)+1)
	n, err := unix.Pread(fd, got, 0)
	if err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("read back %d bytes (%v), want %d", n, err, len(data))
	}
}

// TestGuest runs the command against an in-process daemon: it mounts,
// serves, and ends as each way of ending asks.
func TestGuest(t *testing.T) {
	testenv.RequireFUSE(t)
	d := startDaemon(t)

	t.Run("SIGTERM", func(t *testing.T) {
		g := startGuest(t, d)
		useMount(t, d, g)
		g.cmd.Process.Signal(syscall.SIGTERM)
		if code := g.exit(t, 15*time.Second); code != 0 {
			t.Fatalf("exit status %d after SIGTERM, want 0\n%s", code, g.stderr)
		}
		if isMounted(g.mnt) {
			t.Fatalf("%s still mounted after the exit", g.mnt)
		}
		t.Logf("stderr:\n%s", g.stderr)
		for _, want := range []string{"mounted unix:" + d.sock + " on " + g.mnt + " (stream protocol 1.0)", "unmounted " + g.mnt} {
			if !strings.Contains(g.stderr.String(), want) {
				t.Errorf("the log lacks %q:\n%s", want, g.stderr)
			}
		}
	})

	t.Run("SIGTERM busy", func(t *testing.T) {
		g := startGuest(t, d)
		useMount(t, d, g)
		// A file open on the mount keeps it busy: it is detached, and
		// its connection aborted after the grace period.
		fd, err := unix.Open(filepath.Join(g.mnt, "hello"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		start := time.Now()
		g.cmd.Process.Signal(syscall.SIGTERM)
		if code := g.exit(t, 20*time.Second); code != 0 {
			t.Fatalf("exit status %d after SIGTERM, want 0\n%s", code, g.stderr)
		}
		if d := time.Since(start); d < unmountGrace {
			t.Errorf("exited %v after SIGTERM, before the grace period of %v", d, unmountGrace)
		}
		if isMounted(g.mnt) {
			t.Errorf("%s still mounted after the exit", g.mnt)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != unix.ENOTCONN && err != unix.ECONNABORTED {
			t.Errorf("fstat of a file open on the aborted mount: %v, want ENOTCONN", err)
		}
		if !strings.Contains(g.stderr.String(), "aborting its connection") {
			t.Errorf("the log does not say the connection was aborted:\n%s", g.stderr)
		}
	})

	t.Run("umount", func(t *testing.T) {
		g := startGuest(t, d, "-o", "fsname=test-share")
		if fstype, src, _ := mountAt(g.mnt); fstype != devfuse.FSType || src != "test-share" {
			t.Errorf("mounted as %s from %q, want %s from test-share", fstype, src, devfuse.FSType)
		}
		useMount(t, d, g)
		if err := unix.Unmount(g.mnt, 0); err != nil {
			t.Fatal(err)
		}
		if code := g.exit(t, 15*time.Second); code != 0 {
			t.Fatalf("exit status %d after umount, want 0\n%s", code, g.stderr)
		}
	})

	t.Run("daemon gone", func(t *testing.T) {
		g := startGuest(t, d)
		useMount(t, d, g)
		var c net.Conn
		select {
		case c = <-d.conns:
		default:
			t.Fatal("no connection accepted")
		}
		for len(d.conns) > 0 { // the newest is this guest's
			c = <-d.conns
		}
		c.Close()
		if code := g.exit(t, 15*time.Second); code != 1 {
			t.Fatalf("exit status %d after the daemon went, want 1\n%s", code, g.stderr)
		}
		t.Logf("stderr:\n%s", g.stderr)
		want := progName + ": connection to unix:" + d.sock + " lost: connection to the daemon closed"
		if !strings.Contains(g.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, g.stderr)
		}
		if isMounted(g.mnt) {
			t.Errorf("%s still mounted after the exit", g.mnt)
		}
	})

	t.Run("SIGKILL", func(t *testing.T) {
		g := startGuest(t, d)
		useMount(t, d, g)
		g.cmd.Process.Signal(syscall.SIGKILL)
		g.exit(t, 15*time.Second)
		// The watcher detaches the dead mount.
		g.waitUnmounted(t, 5*time.Second)
		g.cmd.Wait() // the watcher has let go of stderr
		t.Logf("stderr:\n%s", g.stderr)
	})

	t.Run("SIGKILL no_auto_unmount", func(t *testing.T) {
		g := startGuest(t, d, "-o", "no_auto_unmount")
		g.cmd.Process.Signal(syscall.SIGKILL)
		g.exit(t, 15*time.Second)
		time.Sleep(500 * time.Millisecond)
		if !isMounted(g.mnt) {
			t.Fatalf("%s was unmounted without a watcher", g.mnt)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(g.mnt, "x"), &st); err != unix.ENOTCONN {
			t.Errorf("stat on the dead mount: %v, want ENOTCONN", err)
		}
		if err := unix.Unmount(g.mnt, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("no daemon", func(t *testing.T) {
		mnt := t.TempDir()
		var stdout, stderr bytes.Buffer
		sock := filepath.Join(t.TempDir(), "none.sock")
		if code := run([]string{"--timeout", "1s", "unix:" + sock, mnt}, &stdout, &stderr); code != 1 {
			t.Fatalf("exit status %d, want 1\n%s", code, &stderr)
		}
		want := progName + ": cannot connect to unix:" + sock + ": no such file or directory\n"
		if stderr.String() != want {
			t.Errorf("stderr is %q, want %q", stderr.String(), want)
		}
	})
}
