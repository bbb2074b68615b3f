package racetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// daemonBin is the govirtiofsd binary built once for the package's tests,
// as internal/posixtest and internal/overlaytest build theirs.
var daemonBin struct {
	once    sync.Once
	path    string
	err     error
	sandbox bool // it takes --sandbox
}

// buildDaemon builds cmd/govirtiofsd into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "racetest-bin-")
		if err != nil {
			daemonBin.err = err
			return
		}
		daemonBin.path = filepath.Join(dir, "govirtiofsd")
		build := exec.Command("go", "build", "-o", daemonBin.path, "../../cmd/govirtiofsd")
		// As the other integration tests build it: a sandboxing daemon
		// drops capabilities on every thread, which cgo prevents.
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			daemonBin.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// A later daemon sandboxes itself by default and takes
		// --sandbox none; this one may not know the flag yet.
		help, _ := exec.Command(daemonBin.path, "--help").CombinedOutput()
		daemonBin.sandbox = bytes.Contains(help, []byte("-sandbox"))
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

// syncBuffer collects the daemon's output.
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

// daemon is govirtiofsd serving a mount point in a child process.
type daemon struct {
	cmd    *exec.Cmd
	mnt    string
	done   chan error
	out    *syncBuffer
	exited bool
	err    error // the exit status, once exited
}

// startDaemon runs govirtiofsd with args plus --mountpoint mnt and waits
// until mnt is a FUSE mount. The cleanup kills it and detaches the mount
// if the test has not stopped it.
func startDaemon(t *testing.T, mnt string, args ...string) *daemon {
	t.Helper()
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	args = append(args, "--mountpoint", mnt)
	d := &daemon{cmd: exec.Command(bin, args...), mnt: mnt, done: make(chan error, 1), out: &syncBuffer{}}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting govirtiofsd: %v", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if !d.exited {
			d.cmd.Process.Kill()
			<-d.done
			d.exited = true
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err == nil && st.Type == unix.FUSE_SUPER_MAGIC {
			return d
		}
		select {
		case err := <-d.done:
			d.exited = true
			t.Fatalf("govirtiofsd %s exited before mounting (%v):\n%s", strings.Join(args, " "), err, d.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted 20s after starting govirtiofsd:\n%s", mnt, d.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unmount unmounts with umount(2), as a guest unmount ends the session,
// and checks that the daemon then exits with status 0 within 10 s.
func (d *daemon) unmount(t *testing.T) {
	t.Helper()
	for i := 0; ; i++ {
		err := unix.Unmount(d.mnt, 0)
		if err == nil {
			break
		}
		if err == unix.EBUSY && i < 100 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		t.Errorf("umount %s: %v", d.mnt, err)
		unix.Unmount(d.mnt, unix.MNT_DETACH)
		break
	}
	select {
	case err := <-d.done:
		d.exited, d.err = true, err
		if err != nil {
			t.Errorf("govirtiofsd exited with %v after umount, want status 0", err)
		}
	case <-time.After(10 * time.Second):
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
		d.exited = true
		t.Errorf("govirtiofsd did not exit within 10s of umount")
	}
}

// kill stops the daemon at once (a hung test), which fails every request
// still waiting on the mount.
func (d *daemon) kill() {
	if !d.exited {
		d.cmd.Process.Kill()
	}
	unix.Unmount(d.mnt, unix.MNT_DETACH)
}

// dumpAndKill makes the daemon print its goroutines (SIGQUIT) and then
// kills it, for a hung test.
func (d *daemon) dumpAndKill() {
	if !d.exited {
		d.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case err := <-d.done:
			d.exited, d.err = true, err
		case <-time.After(5 * time.Second):
		}
	}
	d.kill()
}

// kernelStacks returns the kernel stacks of this process's threads that
// are blocked in the kernel, for a hung test.
func kernelStacks() string {
	var b strings.Builder
	ents, _ := os.ReadDir("/proc/self/task")
	for _, e := range ents {
		stack, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "stack"))
		if err != nil || !bytes.Contains(stack, []byte("fuse")) {
			continue
		}
		fmt.Fprintf(&b, "thread %s:\n%s", e.Name(), stack)
	}
	return b.String()
}

// threadComms returns the comm of each thread of the daemon and of its
// descendants (a sandboxing daemon may serve from a child), by thread id,
// and each thread's process id.
func (d *daemon) threadComms() (comms map[string]string, pids map[string]string, err error) {
	comms, pids = map[string]string{}, map[string]string{}
	todo := []string{strconv.Itoa(d.cmd.Process.Pid)}
	for len(todo) > 0 {
		pid := todo[0]
		todo = todo[1:]
		dir := filepath.Join("/proc", pid, "task")
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range ents {
			tid := e.Name()
			b, err := os.ReadFile(filepath.Join(dir, tid, "comm"))
			if err != nil {
				continue // the thread exited
			}
			comms[tid], pids[tid] = strings.TrimSpace(string(b)), pid
			if kids, err := os.ReadFile(filepath.Join(dir, tid, "children")); err == nil {
				todo = append(todo, strings.Fields(string(kids))...)
			}
		}
	}
	return comms, pids, nil
}
