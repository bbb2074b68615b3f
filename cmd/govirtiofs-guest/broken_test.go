package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto/stream"
)

// daemonBin is cmd/govirtiofsd, built once.
var daemonBin struct {
	once sync.Once
	path string
	err  error
}

func buildGovirtiofsd(t *testing.T) string {
	t.Helper()
	daemonBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "guest-test-daemon-")
		if err != nil {
			daemonBin.err = err
			return
		}
		daemonBin.path = filepath.Join(dir, "govirtiofsd")
		build := exec.Command("go", "build", "-o", daemonBin.path, "../govirtiofsd")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			daemonBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if daemonBin.err != nil {
		t.Fatal(daemonBin.err)
	}
	return daemonBin.path
}

// realDaemon is govirtiofsd --listen unix:SOCK in its own process group
// (its sandboxed child with it), serving dir, which holds a 64 MiB file.
type realDaemon struct {
	daemon
	cmd    *exec.Cmd
	stderr *syncBuffer
}

func startRealDaemon(t *testing.T) *realDaemon {
	t.Helper()
	d := &realDaemon{daemon: daemon{sock: filepath.Join(t.TempDir(), "g.sock"), dir: t.TempDir()}, stderr: new(syncBuffer)}
	if err := os.WriteFile(filepath.Join(d.dir, "big"), bytes.Repeat([]byte("0123456789abcdef"), 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(buildGovirtiofsd(t), "--shared-dir", d.dir, "--listen", "unix:"+d.sock, "--cache", "never", "--log-level", "debug")
	d.cmd.Stderr = d.stderr
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		d.cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(d.sock); err == nil {
			break
		}
		if i > 400 {
			t.Fatalf("no socket 20 s after starting govirtiofsd:\n%s", d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// readLoop reads the big file through the mount over and over with
// direct I/O (every READ crosses the stream) until a read fails, and
// sends that error. Raw system calls only: see useMount.
func readLoop(path string, started chan<- struct{}) <-chan error {
	errc := make(chan error, 1)
	go func() {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		// Direct I/O wants an aligned buffer: a mapping is.
		b, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Munmap(b)
		for first := true; ; first = false {
			for pos := int64(0); pos < 64<<20; pos += 1 << 20 {
				if _, err := unix.Pread(fd, b, pos); err != nil {
					errc <- err
					return
				}
			}
			if first {
				close(started)
			}
		}
	}()
	return errc
}

// TestBrokenStreams breaks the stream while requests are in flight: the
// daemon killed, the relay killed, a daemon that sends garbage. Nothing
// hangs, the error is clear, the mount goes away.
func TestBrokenStreams(t *testing.T) {
	t.Run("daemon killed mid-request", func(t *testing.T) {
		d := startRealDaemon(t)
		g := startGuest(t, &d.daemon)
		started := make(chan struct{})
		errc := readLoop(filepath.Join(g.mnt, "big"), started)
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("reading through the mount: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("no full pass over the file in 60 s")
		}
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case err := <-errc:
			if err != unix.ECONNABORTED && err != unix.ENOTCONN {
				t.Errorf("the read in flight failed with %v, want ECONNABORTED or ENOTCONN", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the reader still blocked 15 s after the daemon was killed")
		}
		if code := g.exit(t, 15*time.Second); code != 1 {
			t.Errorf("exit status %d, want 1\n%s", code, g.stderr)
		}
		if want := "connection to unix:" + d.sock + " lost"; !strings.Contains(g.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, g.stderr)
		}
		g.waitUnmounted(t, 5*time.Second)
	})

	t.Run("relay killed mid-request", func(t *testing.T) {
		d := startRealDaemon(t)
		g := startGuest(t, &d.daemon)
		started := make(chan struct{})
		errc := readLoop(filepath.Join(g.mnt, "big"), started)
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("reading through the mount: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("no full pass over the file in 60 s")
		}
		g.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case err := <-errc:
			if err != unix.ECONNABORTED && err != unix.ENOTCONN {
				t.Errorf("the read in flight failed with %v, want ECONNABORTED or ENOTCONN", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the reader still blocked 15 s after the relay was killed")
		}
		g.waitUnmounted(t, 10*time.Second) // the watcher
		// The daemon saw the connection end and serves the next relay.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(d.stderr.String(), "connection ended") {
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not log the connection's end:\n%s", d.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
		g2 := startGuest(t, &d.daemon)
		useMount(t, &d.daemon, g2)
		g2.cmd.Process.Signal(syscall.SIGTERM)
		if code := g2.exit(t, 15*time.Second); code != 0 {
			t.Errorf("the next relay's exit status %d, want 0\n%s", code, g2.stderr)
		}
	})

	for _, tc := range []struct {
		name    string
		serve   func(c net.Conn)
		mounts  bool   // the relay gets as far as mounting
		wantErr string // in the relay's stderr
	}{
		{name: "garbage hello", serve: func(c net.Conn) {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		}, wantErr: "no hello from the daemon"},
		{name: "garbage after hello", mounts: true, serve: func(c net.Conn) {
			if _, err := stream.ReadHello(c, 0); err != nil {
				return
			}
			stream.WriteHello(c, stream.Hello{Version: stream.Version})
			buf := make([]byte, 4096)
			c.Read(buf) // the kernel's INIT
			c.Write(bytes.Repeat([]byte{0xee}, 64))
		}, wantErr: "malformed stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "fake.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				tc.serve(c)
				time.Sleep(20 * time.Second) // hold the stream open: the relay must not wait for its end
			}()
			mnt := t.TempDir()
			cmd := exec.Command(buildGuest(t), "--timeout", "5s", "unix:"+sock, mnt)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			if tc.mounts {
				// The kernel's first access sends INIT; trigger it.
				go func() {
					deadline := time.Now().Add(10 * time.Second)
					for !isMounted(mnt) && time.Now().Before(deadline) {
						time.Sleep(10 * time.Millisecond)
					}
					var st unix.Stat_t
					unix.Stat(filepath.Join(mnt, "x"), &st)
				}()
			}
			select {
			case err := <-done:
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
					t.Errorf("exit %v, want status 1\n%s", err, &stderr)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("the relay still running 15 s later\n%s", &stderr)
			}
			if !strings.Contains(stderr.String(), tc.wantErr) || strings.Count(strings.TrimSpace(stderr.String()), "\n") > 3 {
				t.Errorf("stderr %q, want a short message with %q", stderr.String(), tc.wantErr)
			}
			if isMounted(mnt) {
				unix.Unmount(mnt, unix.MNT_DETACH)
				t.Errorf("%s still mounted after the relay exited", mnt)
			}
		})
	}
}

// lockHelperEnv makes the test binary the locking child of TestInterrupt.
const lockHelperEnv = "GVT_TEST_LOCK_HELPER"

// lockHelper waits for a write lock on path with F_SETLKW on a thread
// that a second later gets SIGUSR1 (handled, so not fatal): the kernel
// sends FUSE_INTERRUPT. FUSE lock waits restart after a handled signal
// (the kernel turns the daemon's EINTR into ERESTARTSYS, and Go's
// handlers are SA_RESTART), so the wait goes on until the lock is free.
// It prints the result and exits.
func lockHelper(path string) {
	runtime.LockOSThread()
	signal.Notify(make(chan os.Signal, 1), syscall.SIGUSR1)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	tid := unix.Gettid()
	go func() {
		time.Sleep(time.Second)
		unix.Tgkill(os.Getpid(), tid, syscall.SIGUSR1)
	}()
	err = unix.FcntlFlock(uintptr(fd), unix.F_SETLKW, &unix.Flock_t{Type: unix.F_WRLCK})
	fmt.Println("setlkw:", err)
	os.Exit(0)
}

// TestInterrupt checks that FUSE_INTERRUPT goes through the relay: a
// process waits (through the mount) for a lock the host holds and is
// signalled; the daemon must get the INTERRUPT and end that SETLKW with
// EINTR (its debug log says so), the kernel then sends the wait again,
// and it is granted once the host lets go.
func TestInterrupt(t *testing.T) {
	d := startRealDaemon(t)
	g := startGuest(t, &d.daemon)
	hostPath := filepath.Join(d.dir, "locked")
	if err := os.WriteFile(hostPath, []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	hfd, err := unix.Open(hostPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hfd)
	if err := unix.FcntlFlock(uintptr(hfd), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=XXX")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+filepath.Join(g.mnt, "locked"))
	done := make(chan []byte, 1)
	go func() {
		out, _ := cmd.CombinedOutput()
		done <- out
	}()
	interrupted := regexp.MustCompile(`opcode=SETLKW unique=\d+ nodeid=\d+ errno=4 `)
	deadline := time.Now().Add(15 * time.Second)
	for !interrupted.MatchString(d.stderr.String()) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no SETLKW ended by an INTERRUPT in the daemon's log 15 s after the signal:\n%s", d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(d.stderr.String(), "opcode=INTERRUPT") {
		t.Errorf("no INTERRUPT in the daemon's log:\n%s", d.stderr)
	}
	// The kernel waits again; the host lets go.
	if err := unix.FcntlFlock(uintptr(hfd), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_UNLCK}); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-done:
		if !strings.Contains(string(out), "setlkw: <nil>") {
			t.Errorf("the lock wait ended with %q, want the lock", out)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the lock wait still blocked 15 s after the host unlocked; helper: %q", <-done)
	}
}
