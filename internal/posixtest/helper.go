package posixtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv names the environment variable that turns a re-executed test
// binary into a helper; its value is a JSON helperRequest.
const helperEnv = "POSIXTEST_HELPER"

// helperPrefix starts every line a helper writes for the parent; other
// output (from the testing package, say) is ignored.
const helperPrefix = "posixtest: "

// helperRequest describes what a helper process does.
type helperRequest struct {
	// Action is "ops" (run Ops, print one result line, exit) or "lock"
	// (take Lock on Path, report, then obey "unlock" and "exit" lines on
	// standard input).
	Action string
	// UID and GID, when UID is not -1, are the credentials the helper drops
	// to (with no supplementary groups) before anything else.
	UID, GID int
	Ops      []helperOp
	Path     string
	Lock     lockSpec
}

// helperOp is one system call made by an "ops" helper.
type helperOp struct {
	// Op is one of create, mkdir, symlink, mkfifo, mknod, write, truncate,
	// read, chown, chmod, setlk, getlk.
	Op     string
	Path   string
	Target string // symlink target
	Mode   uint32
	Data   []byte // for write
	Flags  int    // extra open flags for create and write
	UID    int    // for chown
	GID    int
	Lock   lockSpec // for setlk and getlk
}

// lockSpec is a struct flock in a portable form.
type lockSpec struct {
	Cmd    int // F_SETLK, F_SETLKW, F_GETLK, F_OFD_*
	Type   int16
	Start  int64
	Len    int64
	Pid    int32
	Whence int16
}

func (l lockSpec) flock() unix.Flock_t {
	return unix.Flock_t{Type: l.Type, Whence: l.Whence, Start: l.Start, Len: l.Len, Pid: l.Pid}
}

func lockSpecOf(cmd int, fl *unix.Flock_t) lockSpec {
	return lockSpec{Cmd: cmd, Type: fl.Type, Whence: fl.Whence, Start: fl.Start, Len: fl.Len, Pid: fl.Pid}
}

// helperResult is the outcome of one helperOp.
type helperResult struct {
	Errno int // 0 on success
	Data  []byte
	Lock  lockSpec // what F_GETLK reported
}

func (r helperResult) err() error {
	if r.Errno == 0 {
		return nil
	}
	return unix.Errno(r.Errno)
}

// HelperProcess performs a helper action and exits when the process was
// started as a suite helper (see the package comment); otherwise it returns
// at once. Call it from a test named TestPosixHelperProcess, or first thing
// in TestMain, in every package that runs the suite.
func HelperProcess() {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		return
	}
	var req helperRequest
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		fmt.Printf("%sfatal bad request: %v\n", helperPrefix, err)
		os.Exit(2)
	}
	if req.UID != -1 {
		if err := dropPrivileges(req.UID, req.GID); err != nil {
			fmt.Printf("%sfatal dropping privileges: %v\n", helperPrefix, err)
			os.Exit(2)
		}
	}
	switch req.Action {
	case "ops":
		res := make([]helperResult, len(req.Ops))
		for i, op := range req.Ops {
			res[i] = runOp(op)
		}
		b, _ := json.Marshal(res)
		fmt.Printf("%sresult %s\n", helperPrefix, b)
	case "lock":
		lockHelper(&req)
	default:
		fmt.Printf("%sfatal unknown action %q\n", helperPrefix, req.Action)
		os.Exit(2)
	}
	os.Exit(0)
}

// dropPrivileges switches every thread of the process to uid and gid with
// no supplementary groups. The syscall package applies these to all threads.
func dropPrivileges(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

func runOp(op helperOp) helperResult {
	var r helperResult
	var err error
	switch op.Op {
	case "create":
		var fd int
		fd, err = unix.Open(op.Path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC|op.Flags, op.Mode)
		if err == nil {
			err = unix.Close(fd)
		}
	case "mkdir":
		err = unix.Mkdir(op.Path, op.Mode)
	case "symlink":
		err = unix.Symlink(op.Target, op.Path)
	case "mkfifo":
		err = unix.Mkfifo(op.Path, op.Mode)
	case "mknod":
		err = unix.Mknod(op.Path, op.Mode, 0)
	case "write":
		var fd int
		fd, err = unix.Open(op.Path, unix.O_WRONLY|unix.O_CLOEXEC|op.Flags, 0)
		if err == nil {
			_, err = unix.Write(fd, op.Data)
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
		}
	case "truncate":
		err = unix.Truncate(op.Path, int64(op.Mode))
	case "read":
		r.Data, err = os.ReadFile(op.Path)
	case "chown":
		err = unix.Lchown(op.Path, op.UID, op.GID)
	case "chmod":
		err = unix.Chmod(op.Path, op.Mode)
	case "setlk", "getlk":
		// The descriptor stays open until the helper exits, so a lock
		// taken here is held for the rest of the helper's life.
		var fd int
		fd, err = unix.Open(op.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			fl := op.Lock.flock()
			err = unix.FcntlFlock(uintptr(fd), op.Lock.Cmd, &fl)
			r.Lock = lockSpecOf(op.Lock.Cmd, &fl)
		}
	default:
		err = unix.ENOSYS
	}
	r.Errno = int(errnoOf(err))
	if err != nil && r.Errno == 0 {
		r.Errno = int(unix.EIO)
	}
	return r
}

// lockHelper takes req.Lock on req.Path, reports "locked PID" (or "error
// ERRNO"), then waits for "unlock" (answered with "unlocked") or "exit"
// lines, or the end of its input.
func lockHelper(req *helperRequest) {
	fd, err := unix.Open(req.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		fl := req.Lock.flock()
		err = unix.FcntlFlock(uintptr(fd), req.Lock.Cmd, &fl)
	}
	if err != nil {
		fmt.Printf("%serror %d\n", helperPrefix, int(errnoOf(err)))
		return
	}
	fmt.Printf("%slocked %d\n", helperPrefix, os.Getpid())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "unlock":
			fl := req.Lock.flock()
			fl.Type = unix.F_UNLCK
			err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &fl)
			if err != nil {
				fmt.Printf("%serror %d\n", helperPrefix, int(errnoOf(err)))
			} else {
				fmt.Printf("%sunlocked\n", helperPrefix)
			}
		case "exit":
			return
		}
	}
}

// helper is a running helper process seen from the test.
type helper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *bytes.Buffer
	done   chan struct{}
	err    error // from cmd.Wait, valid after done is closed
	once   sync.Once
}

// startHelper starts a helper for req; it is killed when the test ends.
func startHelper(t *testing.T, req helperRequest) *helper {
	t.Helper()
	exe, err := os.Executable()
	check(t, err, "finding the test binary")
	spec, err := json.Marshal(req)
	check(t, err, "encoding the helper request")
	cmd := exec.Command(exe, "-test.run=^TestPosixHelperProcess$", "-test.count=1")
	// Under the race detector a process sleeps a second at exit to catch
	// late races; helpers have no goroutines worth that wait.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec), "GORACE="+gorace)
	h := &helper{cmd: cmd, lines: make(chan string, 16), stderr: new(bytes.Buffer), done: make(chan struct{})}
	cmd.Stderr = h.stderr
	h.stdin, err = cmd.StdinPipe()
	check(t, err, "helper stdin")
	stdout, err := cmd.StdoutPipe()
	check(t, err, "helper stdout")
	check(t, cmd.Start(), "starting helper %s", exe)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), helperPrefix); ok {
				h.lines <- line
			}
		}
		close(h.lines)
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() { h.kill() })
	return h
}

// kill ends the helper at once and waits for it.
func (h *helper) kill() {
	h.once.Do(func() { h.stdin.Close() })
	h.cmd.Process.Kill()
	<-h.done
}

// next returns the helper's next line, failing t after timeout or when the
// helper exits without one.
func (h *helper) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if ok {
			if rest, isFatal := strings.CutPrefix(line, "fatal "); isFatal {
				t.Fatalf("helper failed: %s", rest)
			}
			return line
		}
		<-h.done
		t.Fatalf("helper exited (%v) without answering; is TestPosixHelperProcess defined to call posixtest.HelperProcess? stderr: %s", h.err, h.stderr)
	case <-time.After(timeout):
		t.Fatalf("helper did not answer within %v", timeout)
	}
	return ""
}

// send writes one command line to the helper.
func (h *helper) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(h.stdin, line+"\n")
	check(t, err, "writing to helper")
}

// wait closes the helper's input and waits for it to exit successfully.
func (h *helper) wait(t *testing.T) {
	t.Helper()
	h.once.Do(func() { h.stdin.Close() })
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("helper did not exit")
	}
	if h.err != nil {
		t.Errorf("helper exited with %v; stderr: %s", h.err, h.stderr)
	}
}

// runOps runs ops in a helper process with the given credentials (uid -1
// keeps root) and returns one result per op.
func runOps(t *testing.T, uid, gid int, ops ...helperOp) []helperResult {
	t.Helper()
	h := startHelper(t, helperRequest{Action: "ops", UID: uid, GID: gid, Ops: ops})
	line := h.next(t, 60*time.Second)
	body, ok := strings.CutPrefix(line, "result ")
	if !ok {
		t.Fatalf("helper answered %q, want a result", line)
	}
	var res []helperResult
	check(t, json.Unmarshal([]byte(body), &res), "decoding helper result")
	if len(res) != len(ops) {
		t.Fatalf("helper returned %d results for %d ops", len(res), len(ops))
	}
	h.wait(t)
	return res
}

// startLocker starts a helper holding lk on path and returns it with its
// pid once the lock is held.
func startLocker(t *testing.T, path string, lk lockSpec) (*helper, int) {
	t.Helper()
	h := startHelper(t, helperRequest{Action: "lock", UID: -1, Path: path, Lock: lk})
	line := h.next(t, 30*time.Second)
	var pid int
	if _, err := fmt.Sscanf(line, "locked %d", &pid); err != nil {
		t.Fatalf("lock helper answered %q, want \"locked PID\"", line)
	}
	if pid != h.cmd.Process.Pid {
		t.Fatalf("lock helper reports pid %d, started as %d", pid, h.cmd.Process.Pid)
	}
	return h, pid
}
