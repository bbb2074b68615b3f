// Package seccomp confines the daemon to the system calls it makes while
// serving: an allow-list seccomp filter, virtiofsd's
// "--seccomp kill|log|trap|none".
//
// Install loads one filter on every thread of the process
// (SECCOMP_FILTER_FLAG_TSYNC: the Go runtime runs on many threads, and a
// filter on the calling thread alone would leave the others free). The
// allow-list (syscalls_<arch>.go) holds what the daemon needs after its
// start: the Go runtime and C library (threads, signals, memory, timers,
// the network poller), the filesystems' calls on the shared directory
// (passthrough, overlay, internal/hostfs), the /dev/fuse transport
// (reading and writing requests, cloning the session fd, unmounting on
// SIGTERM), the vhost-user transport (messages with descriptors, guest
// memory maps, eventfds) and the per-thread credential switch
// (setfsuid, setfsgid, setgroups as raw system calls). It does not hold
// what only starting needs (mount, pivot_root, chroot, capset, prctl,
// socket, bind, listen, connect, execve, prlimit64, setresuid, ...), so the
// daemon must call Install last: once it has opened its shared
// directories, made or inherited its transport (the /dev/fuse mount and
// its mount flags, the listening socket), connected its log to syslog,
// entered its sandbox, dropped capabilities and started any child.
// Neither does it hold socket and connect for later: log/syslog redials
// /dev/log after a failed write (syslogd restarted), which the filter
// refuses.
//
// The filter admits only the native calling convention: on x86_64 a system
// call made through the i386 (int 0x80) or x32 ABI kills the process
// whatever the Action, as does any call on another architecture's
// convention. The program layout is described in bpf.go.
package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Action is what happens when the daemon makes a system call that is not
// on the allow-list.
type Action int

// The actions, named as virtiofsd's --seccomp values.
const (
	// None installs no filter.
	None Action = iota
	// Kill kills the whole process (SECCOMP_RET_KILL_PROCESS), as if by
	// an uncatchable SIGSYS.
	Kill
	// Log lets the call run and has the kernel log it (SECCOMP_RET_LOG,
	// to the audit log or the kernel log); it finds what the list lacks.
	Log
	// Trap sends SIGSYS to the calling thread (SECCOMP_RET_TRAP); the Go
	// runtime treats it as fatal, prints "SIGSYS: bad system call" and a
	// stack trace, and exits with status 2.
	Trap
)

// actionNames are the names ParseAction takes and String returns.
var actionNames = [...]string{None: "none", Kill: "kill", Log: "log", Trap: "trap"}

// ParseAction returns the Action named s: "none", "kill", "log" or "trap".
func ParseAction(s string) (Action, error) {
	for a, name := range actionNames {
		if s == name {
			return Action(a), nil
		}
	}
	return None, fmt.Errorf("unknown seccomp action %q (want none, kill, log or trap)", s)
}

// String returns the name of a, as ParseAction takes it.
func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// ret returns the SECCOMP_RET_* value of a, which must not be None.
func (a Action) ret() (uint32, error) {
	switch a {
	case Kill:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case Log:
		return unix.SECCOMP_RET_LOG, nil
	case Trap:
		return unix.SECCOMP_RET_TRAP, nil
	}
	return 0, fmt.Errorf("seccomp: no filter action for %v", a)
}

// Install sets no_new_privs and loads the allow-list filter on every
// thread of the process; a system call not on the list then gets a's
// action: Kill kills the process (SECCOMP_RET_KILL_PROCESS), Log lets it
// run and has the kernel log it (SECCOMP_RET_LOG), Trap raises SIGSYS
// (SECCOMP_RET_TRAP). None installs nothing and returns nil.
//
// The filter cannot be removed, and every filter installed later (by this
// process or a child it starts) only narrows it. Install must come after
// the daemon's start: see the package comment. It returns an error, and
// loads no filter, if the kernel lacks seccomp filters or the action, or
// refuses the filter; the error says which (no_new_privs may then be set
// on one thread).
func Install(a Action) error {
	if a == None {
		return nil
	}
	deny, err := a.ret()
	if err != nil {
		return err
	}
	prog, err := program(deny)
	if err != nil {
		return err
	}
	if err := actionAvailable(deny); err != nil {
		return fmt.Errorf("seccomp: the kernel cannot %s a refused system call (%s): %w", a, retName(deny), err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}

	// no_new_privs is a property of each thread: set it on the thread
	// that loads the filter, and TSYNC copies it to the others with the
	// filter (the kernel requires it, or CAP_SYS_ADMIN, to load a filter).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	switch {
	case errno == unix.EINVAL:
		return fmt.Errorf("seccomp: the kernel refused the filter (%d instructions): %w (does it have CONFIG_SECCOMP_FILTER and SECCOMP_FILTER_FLAG_TSYNC, Linux 3.17 or later?)", len(prog), errno)
	case errno == unix.ENOMEM:
		return fmt.Errorf("seccomp: the kernel refused the filter: %w (too many filters installed already)", errno)
	case errno != 0:
		return fmt.Errorf("seccomp: loading the filter: %w", errno)
	case tid != 0:
		// With TSYNC the call fails, returning the thread's id, if one
		// thread's filters are not an ancestor of the caller's.
		return fmt.Errorf("seccomp: thread %d has its own seccomp filter; cannot filter every thread", tid)
	}
	return nil
}

// Allowed returns the names of the system calls the filter allows on this
// architecture, sorted.
func Allowed() []string {
	names := make([]string, 0, len(allowList))
	for _, e := range allowList {
		names = append(names, e.name)
	}
	slices.Sort(names)
	return names
}

// sysEntry is one allowed system call: its name and its number on this
// architecture.
type sysEntry struct {
	name string
	nr   uint32
}

// argRestrictions are the allowed calls that are allowed with one first
// argument only, by name.
var argRestrictions = map[string]uint64{
	// hostfs gives a thread its own working directory for the xattr
	// calls in the chroot sandbox; other flags would make namespaces.
	"unshare": unix.CLONE_FS,
}

// program returns the filter of this architecture's allow-list with deny
// for the calls not on it.
func program(deny uint32) ([]unix.SockFilter, error) {
	if len(allowList) == 0 {
		return nil, errors.New("seccomp: no system call allow-list for " + runtime.GOARCH)
	}
	rules := make([]rule, len(allowList))
	for i, e := range allowList {
		rules[i] = rule{nr: e.nr}
		if v, ok := argRestrictions[e.name]; ok {
			rules[i].hasArg0, rules[i].arg0 = true, v
		}
	}
	return buildFilter(arch, rules, deny)
}

// actionAvailable asks the kernel whether it knows the SECCOMP_RET_*
// action ret (SECCOMP_RET_KILL_PROCESS and SECCOMP_RET_LOG need Linux
// 4.14; older kernels would treat them as another action).
func actionAvailable(ret uint32) error {
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&ret)))
	switch errno {
	case 0:
		return nil
	case unix.EINVAL:
		return fmt.Errorf("%w: the kernel has no seccomp filters, or is older than Linux 4.14", errno)
	case unix.EOPNOTSUPP:
		return fmt.Errorf("%w: the kernel does not know this action", errno)
	}
	return errno
}

// retName names a SECCOMP_RET_* action for messages.
func retName(ret uint32) string {
	switch ret {
	case unix.SECCOMP_RET_KILL_PROCESS:
		return "SECCOMP_RET_KILL_PROCESS"
	case unix.SECCOMP_RET_LOG:
		return "SECCOMP_RET_LOG"
	case unix.SECCOMP_RET_TRAP:
		return "SECCOMP_RET_TRAP"
	}
	return fmt.Sprintf("%#x", ret)
}
