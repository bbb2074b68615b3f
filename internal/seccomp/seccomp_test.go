package seccomp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests that load a filter do it in a child: the test binary started
// again with childEnv naming what to do (see child), since a filter cannot
// be removed.
const (
	childEnv  = "SECCOMP_TEST_CHILD"  // the child's mode
	actionEnv = "SECCOMP_TEST_ACTION" // the Action it installs
	dirEnv    = "SECCOMP_TEST_DIR"    // a directory it may write in
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode, os.Getenv(actionEnv), os.Getenv(dirEnv)))
	}
	os.Exit(m.Run())
}

// forbidden are calls the daemon never makes and the filter must refuse:
// they would load code into the kernel, reach other processes, change
// mounts or namespaces, change credentials for good, or start programs.
var forbidden = map[string]int{
	"ptrace": unix.SYS_PTRACE, "process_vm_readv": unix.SYS_PROCESS_VM_READV, "process_vm_writev": unix.SYS_PROCESS_VM_WRITEV,
	"kexec_load": unix.SYS_KEXEC_LOAD, "kexec_file_load": unix.SYS_KEXEC_FILE_LOAD, "reboot": unix.SYS_REBOOT,
	"init_module": unix.SYS_INIT_MODULE, "finit_module": unix.SYS_FINIT_MODULE, "delete_module": unix.SYS_DELETE_MODULE,
	"bpf": unix.SYS_BPF, "perf_event_open": unix.SYS_PERF_EVENT_OPEN, "userfaultfd": unix.SYS_USERFAULTFD,
	"keyctl": unix.SYS_KEYCTL, "add_key": unix.SYS_ADD_KEY, "request_key": unix.SYS_REQUEST_KEY,
	"mount": unix.SYS_MOUNT, "pivot_root": unix.SYS_PIVOT_ROOT, "chroot": unix.SYS_CHROOT, "setns": unix.SYS_SETNS,
	"open_tree": unix.SYS_OPEN_TREE, "move_mount": unix.SYS_MOVE_MOUNT, "fsopen": unix.SYS_FSOPEN, "fsmount": unix.SYS_FSMOUNT,
	"fsconfig": unix.SYS_FSCONFIG, "mount_setattr": unix.SYS_MOUNT_SETATTR,
	"swapon": unix.SYS_SWAPON, "swapoff": unix.SYS_SWAPOFF, "acct": unix.SYS_ACCT, "syslog": unix.SYS_SYSLOG,
	"execve": unix.SYS_EXECVE, "execveat": unix.SYS_EXECVEAT, "kill": unix.SYS_KILL,
	"setuid": unix.SYS_SETUID, "setgid": unix.SYS_SETGID, "setresuid": unix.SYS_SETRESUID, "setresgid": unix.SYS_SETRESGID,
	"capset": unix.SYS_CAPSET, "prctl": unix.SYS_PRCTL, "seccomp": unix.SYS_SECCOMP, "personality": unix.SYS_PERSONALITY,
	"socket": unix.SYS_SOCKET, "connect": unix.SYS_CONNECT, "bind": unix.SYS_BIND, "listen": unix.SYS_LISTEN,
	"io_uring_setup": unix.SYS_IO_URING_SETUP, "quotactl": unix.SYS_QUOTACTL,
	"settimeofday": unix.SYS_SETTIMEOFDAY, "clock_settime": unix.SYS_CLOCK_SETTIME, "sethostname": unix.SYS_SETHOSTNAME,
}

func TestParseAction(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Action
		ok   bool
	}{
		{"none", None, true},
		{"kill", Kill, true},
		{"log", Log, true},
		{"trap", Trap, true},
		{"", None, false},
		{"Kill", None, false},
		{"KILL", None, false},
		{"kill ", None, false},
		{"allow", None, false},
		{"errno", None, false},
		{"kill_process", None, false},
	} {
		got, err := ParseAction(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseAction(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			continue
		}
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, strconv.Quote(tc.in)) {
				t.Errorf("ParseAction(%q): error %q is not one line naming the value", tc.in, msg)
			}
			for _, name := range []string{"none", "kill", "log", "trap"} {
				if !strings.Contains(msg, name) {
					t.Errorf("ParseAction(%q): error %q does not list %q", tc.in, msg, name)
				}
			}
			continue
		}
		if s := got.String(); s != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, s, tc.in)
		}
	}
	if s := Action(9).String(); s != "Action(9)" {
		t.Errorf("Action(9).String() = %q", s)
	}
	if err := Install(Action(9)); err == nil {
		t.Errorf("Install(Action(9)) succeeded")
	}
}

// TestAllowed checks the list Allowed returns and the table behind it.
func TestAllowed(t *testing.T) {
	if len(allowList) == 0 {
		t.Skip("no allow-list on " + runtime.GOARCH)
	}
	names := Allowed()
	if !slices.IsSorted(names) || len(names) != len(allowList) {
		t.Errorf("Allowed() is not the %d names sorted: %q", len(allowList), names)
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("a name is listed twice: %q", names)
	}
	// Calls whose absence would kill the daemon in its first seconds.
	for _, need := range []string{"futex", "read", "write", "writev", "close", "mmap", "munmap", "madvise",
		"clone", "exit", "exit_group", "rt_sigreturn", "rt_sigprocmask", "sigaltstack", "tgkill", "getpid", "gettid",
		"nanosleep", "sched_yield", "restart_syscall", "epoll_pwait", "epoll_ctl",
		"openat", "openat2", "statx", "getdents64", "pread64", "pwrite64", "preadv", "pwritev",
		"setfsuid", "setfsgid", "setgroups", "umount2", "unlinkat", "ioctl", "recvmsg", "sendmsg", "accept4",
		"getxattr", "setxattr", "getxattrat", "open_by_handle_at", "name_to_handle_at", "memfd_create", "unshare", "fchdir"} {
		if _, ok := slices.BinarySearch(names, need); !ok {
			t.Errorf("%s is not allowed", need)
		}
	}
	for name := range forbidden {
		if _, ok := slices.BinarySearch(names, name); ok {
			t.Errorf("%s is allowed", name)
		}
	}
	for name := range argRestrictions {
		if _, ok := slices.BinarySearch(names, name); !ok {
			t.Errorf("argRestrictions names %s, which is not in the table", name)
		}
	}
	seen := map[uint32]string{}
	for _, e := range allowList {
		if other, ok := seen[e.nr]; ok {
			t.Errorf("%s and %s are both number %d", other, e.name, e.nr)
		}
		seen[e.nr] = e.name
	}
}

// TestTableNames checks that each entry of this architecture's table
// names the unix.SYS_ constant that gives its number, so a name cannot
// stand beside another call's number.
func TestTableNames(t *testing.T) {
	file := "syscalls_" + runtime.GOARCH + ".go"
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no table for " + runtime.GOARCH)
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		lit, ok := node.(*ast.CompositeLit)
		if !ok || len(lit.Elts) != 2 {
			return true
		}
		name, ok1 := lit.Elts[0].(*ast.BasicLit)
		sel, ok2 := lit.Elts[1].(*ast.SelectorExpr)
		if !ok1 || !ok2 {
			return true
		}
		n++
		s, _ := strconv.Unquote(name.Value)
		if pkg, _ := sel.X.(*ast.Ident); pkg == nil || pkg.Name != "unix" || sel.Sel.Name != "SYS_"+strings.ToUpper(s) {
			t.Errorf("%s: entry %q has the number of %s", file, s, sel.Sel.Name)
		}
		return true
	})
	if n != len(allowList) {
		t.Errorf("%s: checked %d entries, the table has %d", file, n, len(allowList))
	}
}

// childResult is how a child ended.
type childResult struct {
	code           int // exit status, -1 if killed by a signal
	signal         syscall.Signal
	stdout, stderr string
}

func (r childResult) String() string {
	how := fmt.Sprintf("exit status %d", r.code)
	if r.code < 0 {
		how = "killed by " + unix.SignalName(r.signal)
	}
	return fmt.Sprintf("%s\nstdout:\n%s\nstderr:\n%s", how, r.stdout, r.stderr)
}

// runChild runs the test binary as a child in mode with action a.
func runChild(t *testing.T, mode string, a Action) childResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, actionEnv+"="+a.String(), dirEnv+"="+t.TempDir(),
		"GOTRACEBACK=single") // not crash: a trapped call must end in exit status 2
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("child %s/%v timed out\nstdout:\n%s\nstderr:\n%s", mode, a, &stdout, &stderr)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("child %s/%v: %v", mode, a, err)
	}
	r := childResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.code, r.signal = -1, ws.Signal()
	}
	return r
}

// TestInstall installs the filter in a child with each action, has it
// work as the daemon does (which must go on) or make a call off the list
// (which must get the action).
func TestInstall(t *testing.T) {
	requireSeccomp(t)
	type want struct {
		code      int            // exit status, -1 for a signal
		signal    syscall.Signal // with code -1
		stdout    []string       // must all appear
		notStdout []string       // must not appear
		stderr    string         // must appear
	}
	ok := func(out ...string) want { return want{code: 0, stdout: out} }
	sigsys := want{code: -1, signal: unix.SIGSYS, stdout: []string{"calling"}, notStdout: []string{"returned"}}
	tests := []struct {
		mode   string
		action Action
		want   want
	}{
		{"work", None, ok("work done")},
		{"work", Kill, ok("installed", "work done")},
		{"work", Trap, ok("installed", "work done")},
		{"work", Log, ok("installed", "work done")},
		// acct(2) is off the list: Kill ends the process with SIGSYS,
		// Trap raises SIGSYS, which the Go runtime reports and exits 2
		// on, Log lets it run to its usual error.
		{"denied", Kill, sigsys},
		{"denied", Trap, want{code: 2, stdout: []string{"calling"}, notStdout: []string{"returned"}, stderr: "SIGSYS"}},
		{"denied", Log, ok("calling", "returned the same error")},
		{"denied", None, ok("calling", "returned the same error")},
		// unshare is allowed with CLONE_FS alone.
		{"unshare", Kill, sigsys},
		{"unshare", Log, ok("calling", "returned")},
	}
	if arch.refuseBit != 0 {
		// x32 calls are killed whatever the action.
		tests = append(tests, struct {
			mode   string
			action Action
			want   want
		}{"x32", Log, sigsys})
	}
	for _, tc := range tests {
		t.Run(tc.mode+"/"+tc.action.String(), func(t *testing.T) {
			t.Parallel()
			r := runChild(t, tc.mode, tc.action)
			bad := r.code != tc.want.code || (r.code < 0 && r.signal != tc.want.signal) || !strings.Contains(r.stderr, tc.want.stderr)
			for _, s := range tc.want.stdout {
				bad = bad || !strings.Contains(r.stdout, s)
			}
			for _, s := range tc.want.notStdout {
				bad = bad || strings.Contains(r.stdout, s)
			}
			if bad {
				wantHow := fmt.Sprintf("exit status %d", tc.want.code)
				if tc.want.code < 0 {
					wantHow = "killed by " + unix.SignalName(tc.want.signal)
				}
				t.Errorf("child: %v\nwant %s, stdout with %q and without %q, stderr with %q", r, wantHow, tc.want.stdout, tc.want.notStdout, tc.want.stderr)
			}
		})
	}
}

// TestInstallStatus checks /proc's view of every thread of a child after
// Install: filtered (Seccomp 2) with no_new_privs, or, with None, as the
// test process itself.
func TestInstallStatus(t *testing.T) {
	requireSeccomp(t)
	self, err := threadStatus()
	if err != nil {
		t.Fatal(err)
	}
	_, parent, _ := strings.Cut(self[0], " ")
	for _, a := range []Action{None, Kill, Log, Trap} {
		t.Run(a.String(), func(t *testing.T) {
			t.Parallel()
			r := runChild(t, "status", a)
			if r.code != 0 {
				t.Fatalf("child: %v", r)
			}
			want := "2 1"
			if a == None {
				want = parent
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) < 5 {
				t.Errorf("child reported %d threads, want at least 5 (it starts 4 besides the main one):\n%s", len(lines), r.stdout)
			}
			if len(lines) > 0 && lines[0] == "installed" {
				lines = lines[1:]
			}
			for _, l := range lines {
				if _, got, _ := strings.Cut(l, " "); got != want {
					t.Errorf("thread %q, want Seccomp and NoNewPrivs %q\n%v", l, want, r)
				}
			}
		})
	}
}

// requireSeccomp skips (fails under CI=true) where the kernel has no
// seccomp filters or this process is already filtered.
func requireSeccomp(t *testing.T) {
	t.Helper()
	if err := actionAvailable(unix.SECCOMP_RET_KILL_PROCESS); err != nil {
		msg := fmt.Sprintf("seccomp filters with SECCOMP_RET_KILL_PROCESS: %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: a missing prerequisite is a failure)", msg)
		}
		t.Skip(msg)
	}
}

// threadStatus returns "TID SECCOMP NONEWPRIVS" for each thread of this
// process, from /proc/self/task/*/status.
func threadStatus() ([]string, error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			return nil, err
		}
		fields := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		out = append(out, task.Name()+" "+fields["Seccomp"]+" "+fields["NoNewPrivs"])
	}
	return out, nil
}

// child is the test binary run by runChild: it installs the filter with
// the action named and does what mode says; its exit status and output
// are the parent's to judge.
func child(mode, action, dir string) int {
	a, err := ParseAction(action)
	if err != nil {
		fmt.Println(err)
		return 10
	}
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}) // no core file from a kill
	// Threads besides this one, for TSYNC to reach.
	for range 4 {
		started := make(chan bool)
		go func() {
			runtime.LockOSThread()
			started <- true
			select {}
		}()
		<-started
	}
	var before error
	if mode == "denied" {
		before = unix.Acct("/nonexistent-seccomp-test/acct")
	}
	if err := Install(a); err != nil {
		fmt.Println("Install:", err)
		return 11
	}
	fmt.Println("installed")
	switch mode {
	case "status":
		st, err := threadStatus()
		if err != nil {
			fmt.Println(err)
			return 12
		}
		fmt.Println(strings.Join(st, "\n"))
	case "work":
		if err := work(dir); err != nil {
			fmt.Println("work:", err)
			return 13
		}
		fmt.Println("work done")
	case "denied":
		fmt.Println("calling")
		after := unix.Acct("/nonexistent-seccomp-test/acct")
		if after != before {
			fmt.Printf("returned %v, before the filter %v\n", after, before)
			return 14
		}
		fmt.Println("returned the same error:", after)
	case "unshare":
		runtime.LockOSThread() // the thread's namespaces may change
		fmt.Println("calling")
		err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS)
		fmt.Println("returned", err)
	case "x32":
		fmt.Println("calling")
		_, _, e := unix.RawSyscall(uintptr(arch.refuseBit|unix.SYS_GETPID), 0, 0, 0)
		fmt.Println("returned", e)
	default:
		fmt.Println("unknown mode", mode)
		return 15
	}
	return 0
}

// work does, under the filter, what the daemon's runtime and filesystems
// do: goroutines, new threads, allocation and garbage collection, timers,
// and the daemon's kinds of file operations in dir.
func work(dir string) error {
	var wg sync.WaitGroup
	sums := make([]int, 64)
	for i := range sums {
		wg.Go(func() {
			var keep [][]byte
			for j := range 300 {
				keep = append(keep, make([]byte, 1024*(j%13+1)))
			}
			sums[i] = len(keep)
		})
	}
	// Threads: goroutines that hold their thread while it sleeps in the
	// kernel make the runtime start others; some end locked, which ends
	// their thread (the credential switcher's failure path).
	for i := range 8 {
		wg.Go(func() {
			runtime.LockOSThread()
			unix.Nanosleep(&unix.Timespec{Nsec: 20e6}, nil)
			if i%2 == 0 {
				runtime.UnlockOSThread()
			}
		})
	}
	wg.Wait()
	big := make([]byte, 128<<20)
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1
	}
	big = nil
	runtime.GC()
	debug.FreeOSMemory()
	timer := time.NewTimer(30 * time.Millisecond)
	select {
	case <-timer.C:
	case <-time.After(5 * time.Second):
		return errors.New("timer did not fire")
	}
	time.Sleep(20 * time.Millisecond)

	return fileOps(dir)
}

// fileOps runs the daemon's kinds of file system calls in dir. Calls the
// file system may not support are allowed to fail with that errno; the
// filter must let every one run.
func fileOps(dir string) error {
	unsupported := func(err error) bool {
		return err == nil || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODATA) ||
			errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EXDEV)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, "file", &unix.OpenHow{Flags: unix.O_CREAT | unix.O_RDWR | unix.O_CLOEXEC, Mode: 0o644, Resolve: unix.RESOLVE_BENEATH})
	if err != nil {
		return fmt.Errorf("openat2: %w", err)
	}
	defer unix.Close(fd)
	data := bytes.Repeat([]byte("seccomp "), 4096)
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		return fmt.Errorf("pwrite: %w", err)
	}
	if _, err := unix.Pwritev(fd, [][]byte{data[:100], data[100:200]}, int64(len(data))); err != nil {
		return fmt.Errorf("pwritev: %w", err)
	}
	buf := make([]byte, len(data))
	if n, err := unix.Pread(fd, buf, 0); err != nil || !bytes.Equal(buf[:n], data) {
		return fmt.Errorf("pread: %d, %v", n, err)
	}
	if _, err := unix.Preadv(fd, [][]byte{buf[:10], buf[10:20]}, 0); err != nil {
		return fmt.Errorf("preadv: %w", err)
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		return fmt.Errorf("lseek: %w", err)
	}
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &sx); err != nil {
		return fmt.Errorf("statx: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("fstatfs: %w", err)
	}
	for what, err := range map[string]error{
		"fsync":     unix.Fsync(fd),
		"fdatasync": unix.Fdatasync(fd),
		"syncfs":    unix.Syncfs(fd),
		"ftruncate": unix.Ftruncate(fd, 1<<16),
		"fchmod":    unix.Fchmod(fd, 0o640),
		"fchmodat":  unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), 0o600, 0),
		"fchownat":  unix.Fchownat(dfd, "file", int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW),
		"utimensat": unix.UtimesNanoAt(dfd, "file", []unix.Timespec{{Sec: 1}, {Sec: 2}}, unix.AT_SYMLINK_NOFOLLOW),
		"mkdirat":   unix.Mkdirat(dfd, "sub", 0o755),
		"symlinkat": unix.Symlinkat("file", dfd, "link"),
		"linkat":    unix.Linkat(dfd, "file", dfd, "hard", 0),
		"renameat2": unix.Renameat2(dfd, "hard", dfd, "sub/hard", unix.RENAME_NOREPLACE),
		"mknodat":   unix.Mknodat(dfd, "fifo", unix.S_IFIFO|0o600, 0),
		"flock":     unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB),
		"ofd lock":  unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Len: 10}),
		"faccess":   unix.Faccessat2(fd, "", unix.R_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS),
	} {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if n, err := unix.Readlinkat(dfd, "link", buf); err != nil || string(buf[:n]) != "file" {
		return fmt.Errorf("readlinkat: %q, %v", buf[:n], err)
	}
	if err := unix.Fallocate(fd, 0, 0, 1<<17); !unsupported(err) {
		return fmt.Errorf("fallocate: %w", err)
	}
	fd2, err := unix.Openat(dfd, "copy", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("openat: %w", err)
	}
	defer unix.Close(fd2)
	off := int64(0)
	if _, err := unix.CopyFileRange(fd, &off, fd2, nil, 4096, 0); !unsupported(err) {
		return fmt.Errorf("copy_file_range: %w", err)
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Setxattr(proc, "user.seccomp", []byte("v"), 0); !unsupported(err) {
		return fmt.Errorf("setxattr: %w", err)
	}
	if _, err := unix.Getxattr(proc, "user.seccomp", buf); !unsupported(err) {
		return fmt.Errorf("getxattr: %w", err)
	}
	if _, err := unix.Flistxattr(fd, buf); !unsupported(err) {
		return fmt.Errorf("flistxattr: %w", err)
	}
	if _, _, err := unix.NameToHandleAt(dfd, "file", 0); !unsupported(err) {
		return fmt.Errorf("name_to_handle_at: %w", err)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return fmt.Errorf("dup: %w", err)
	}
	unix.Close(dup)
	mfd, err := unix.MemfdCreate("seccomp-test", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	unix.Close(mfd)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(efd), Events: unix.POLLIN}}, 100); err != nil {
		return fmt.Errorf("ppoll: %w", err)
	}
	unix.Close(efd)
	if _, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); !unsupported(err) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("ioctl: %w", err)
	}
	// The credential switch and a thread's own working directory, on a
	// thread that is then discarded.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		unix.Setfsuid(int(st.Uid))
		unix.Setfsgid(int(st.Gid))
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		errc <- unix.Fchdir(dfd)
	}()
	if err := <-errc; err != nil {
		return err
	}
	names, err := os.ReadDir(dir)
	if err != nil || len(names) < 5 {
		return fmt.Errorf("readdir: %d entries, %v", len(names), err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return unix.Unlinkat(dfd, "fifo", 0)
}
