package posixtest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/posixtest"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// relayBin is the govirtiofs-guest binary built once for the package's
// tests.
var relayBin struct {
	once sync.Once
	path string
	err  error
}

func buildRelay(t *testing.T) string {
	t.Helper()
	relayBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "posixtest-relay-")
		if err != nil {
			relayBin.err = err
			return
		}
		relayBin.path = filepath.Join(dir, "govirtiofs-guest")
		build := exec.Command("go", "build", "-o", relayBin.path, "../../cmd/govirtiofs-guest")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			relayBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if relayBin.err != nil {
		t.Fatalf("building govirtiofs-guest: %v", relayBin.err)
	}
	return relayBin.path
}

// TestStreamPassthrough runs the whole suite over the stream transport on
// the host: govirtiofs-guest mounts a /dev/fuse filesystem whose stream
// goes over a unix socket to `govirtiofsd --listen unix:PATH` (sandboxed,
// under seccomp, its defaults), as a Firecracker guest's would over vsock.
// Then the host view, and the ends: SIGTERM makes the relay unmount and
// exit 0, and the daemon exits 0 on its own SIGTERM.
func TestStreamPassthrough(t *testing.T) {
	testenv.RequireFUSE(t)
	daemonPath, relayPath := buildDaemon(t), buildRelay(t)
	top := worldDir(t, "posixtest-stream-")
	m := &fuseMount{backing: filepath.Join(top, "shared"), mnt: filepath.Join(top, "mnt"), done: make(chan error, 1)}
	for _, d := range []string{m.backing, m.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(m.backing, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(top, "g.sock")
	daemon := exec.Command(daemonPath, "--shared-dir", m.backing, "--listen", "unix:"+sock,
		"--cache", "auto", "--xattr", "--killpriv-v2", "--log-level", "warn")
	daemon.Stdout, daemon.Stderr = os.Stderr, os.Stderr
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	daemonDone := make(chan error, 1)
	go func() { daemonDone <- daemon.Wait() }()
	defer func() {
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-daemonDone:
			if err != nil {
				t.Errorf("govirtiofsd exited with %v after SIGTERM, want status 0", err)
			}
		case <-time.After(30 * time.Second):
			daemon.Process.Kill()
			t.Errorf("govirtiofsd did not exit within 30s of SIGTERM")
		}
	}()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 400 {
			t.Fatalf("no socket %s 20 s after starting govirtiofsd", sock)
		}
		time.Sleep(50 * time.Millisecond)
	}

	m.daemon = exec.Command(relayPath, "unix:"+sock, m.mnt)
	m.daemon.Stdout, m.daemon.Stderr = os.Stderr, os.Stderr
	if err := m.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.daemon.Wait() }()
	t.Cleanup(func() {
		if !m.stopped {
			m.daemon.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(30 * time.Second):
				m.daemon.Process.Kill()
				t.Errorf("govirtiofs-guest did not exit within 30s of SIGTERM")
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(t, m.mnt) {
		select {
		case err := <-m.done:
			m.stopped = true
			t.Fatalf("govirtiofs-guest exited before mounting: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted 20s after starting govirtiofs-guest", m.mnt)
		}
		time.Sleep(10 * time.Millisecond)
	}

	posixtest.RunWith(t, m.mnt, posixtest.Options{Skip: map[string]string{}})
	if names, err := dirNames(m.backing); err != nil || len(names) != 0 {
		t.Errorf("shared directory after the suite holds %q (%v); everything the suite removed should be gone on the host", names, err)
	}
	t.Run("HostView", func(t *testing.T) { testHostView(t, m) })
	m.unmount(t)
}
