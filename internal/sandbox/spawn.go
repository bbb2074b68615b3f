package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Environment variables through which Spawn tells the child what it set
// up. They are removed from the child's environment when Child reads them.
const (
	envChild = "GOVIRTIOFSD_SANDBOX_CHILD" // "1" in a child of Spawn
	envSync  = "GOVIRTIOFSD_SANDBOX_SYNC"  // fd: one byte once the ID maps are written
)

// IDRange maps Count ids from Outside (the parent namespace) to Inside (the
// child's user namespace), one line of /proc/PID/uid_map or gid_map.
type IDRange struct {
	Inside, Outside, Count uint32
}

// SpawnOptions describe the child Spawn starts.
type SpawnOptions struct {
	// Argv0 is the child's program name; empty is the executable's path.
	Argv0 string
	// Args are the child's arguments, without the program name; the child
	// runs this same executable.
	Args []string
	// Files are passed to the child as descriptors 3, 4, ... in order.
	Files []*os.File
	// Env holds extra NAME=VALUE pairs for the child's environment.
	Env []string
	// UIDMap and GIDMap are --uid-map and --gid-map. When either is set,
	// or the caller is not root, the child gets a user namespace; a map
	// left empty then maps the caller's own id to root.
	UIDMap, GIDMap []IDRange
	// Stdout and Stderr receive the child's output; nil is os.Stdout and
	// os.Stderr.
	Stdout, Stderr io.Writer
}

// Process is a child started by Spawn.
type Process struct {
	cmd *exec.Cmd
}

// Spawn re-executes the running program in new mount, PID, network and IPC
// namespaces (and a user namespace, see SpawnOptions.UIDMap), the first
// step of the namespace sandbox. The child finds itself through IsChild and
// must call BecomeRoot before anything else.
func Spawn(opts SpawnOptions) (*Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sandbox: finding the daemon's executable: %w", err)
	}
	userNS := len(opts.UIDMap) > 0 || len(opts.GIDMap) > 0 || os.Geteuid() != 0
	cmd := exec.Command(exe, opts.Args...)
	if opts.Argv0 != "" {
		cmd.Args[0] = opts.Argv0
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = os.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.ExtraFiles = append([]*os.File(nil), opts.Files...)
	cmd.Env = append(append(os.Environ(), opts.Env...), envChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		// The child is the init of its PID namespace: when the parent
		// dies it must not live on unsupervised.
		Pdeathsig: syscall.SIGKILL,
	}
	var syncR, syncW *os.File
	if userNS {
		syncR, syncW, err = os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		defer syncR.Close()
		defer syncW.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, syncR)
		cmd.Env = append(cmd.Env, envSync+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		// Until its maps are written the child's ids are unmapped, so
		// execve would leave it without capabilities; ambient ones
		// survive, and it needs them to become root once mapped.
		cmd.SysProcAttr.AmbientCaps = allCaps()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: starting the sandboxed daemon: %w", err)
	}
	p := &Process{cmd: cmd}
	if userNS {
		syncR.Close()
		if err := writeIDMaps(cmd.Process.Pid, opts.UIDMap, opts.GIDMap); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, err
		}
		if _, err := syncW.Write([]byte{1}); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("sandbox: releasing the sandboxed daemon: %w", err)
		}
	}
	return p, nil
}

// Pid returns the child's process id (in the parent's PID namespace).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the child.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the child to exit and returns its exit status, 128+N when
// signal N ended it.
func (p *Process) Wait() int {
	err := p.cmd.Wait()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

// writeIDMaps writes the user namespace maps of process pid: directly when
// the caller may (root, or an unprivileged caller mapping only its own id),
// through newuidmap and newgidmap otherwise.
func writeIDMaps(pid int, uids, gids []IDRange) error {
	root := os.Geteuid() == 0
	// An unprivileged caller writing its own gid map must first give up
	// setgroups in the namespace; newgidmap leaves it allowed.
	if len(gids) == 0 && !root {
		if err := os.WriteFile(procFile(pid, "setgroups"), []byte("deny"), 0); err != nil {
			return fmt.Errorf("sandbox: denying setgroups in the user namespace: %w", err)
		}
	}
	for _, m := range []struct {
		kind, helper string
		ranges       []IDRange
		own          int
	}{
		{"uid", "newuidmap", uids, os.Geteuid()},
		{"gid", "newgidmap", gids, os.Getegid()},
	} {
		ranges := m.ranges
		if len(ranges) == 0 {
			ranges = []IDRange{{Inside: 0, Outside: uint32(m.own), Count: 1}}
		}
		if root || len(m.ranges) == 0 {
			var b strings.Builder
			for _, r := range ranges {
				fmt.Fprintf(&b, "%d %d %d\n", r.Inside, r.Outside, r.Count)
			}
			if err := os.WriteFile(procFile(pid, m.kind+"_map"), []byte(b.String()), 0); err != nil {
				return fmt.Errorf("sandbox: writing the %s map %q: %w", m.kind, strings.TrimSpace(b.String()), err)
			}
			continue
		}
		args := []string{strconv.Itoa(pid)}
		for _, r := range ranges {
			args = append(args, strconv.FormatUint(uint64(r.Inside), 10), strconv.FormatUint(uint64(r.Outside), 10), strconv.FormatUint(uint64(r.Count), 10))
		}
		out, err := exec.Command(m.helper, args...).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if errors.Is(err, exec.ErrNotFound) {
				msg = "not installed (Debian: apt-get install uidmap)"
			}
			return fmt.Errorf("sandbox: --%s-map needs %s: %s", m.kind, m.helper, msg)
		}
	}
	return nil
}

func procFile(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

// IsChild reports whether this process is a sandbox child started by Spawn.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// BecomeRoot is the first step of a child of Spawn: in a user namespace it
// waits until the parent has written the ID maps and then switches to root
// (uid and gid 0) inside the namespace, keeping its capabilities there.
// Outside a user namespace it does nothing. It removes Spawn's variables
// from the environment.
func BecomeRoot() error {
	os.Unsetenv(envChild)
	s, ok := os.LookupEnv(envSync)
	if !ok {
		return nil
	}
	os.Unsetenv(envSync)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return fmt.Errorf("sandbox: bad %s=%q", envSync, s)
	}
	f := os.NewFile(uintptr(fd), "sandbox-sync")
	defer f.Close()
	var b [1]byte
	if n, err := f.Read(b[:]); n != 1 {
		return fmt.Errorf("sandbox: the parent did not write the ID maps: %v", err)
	}
	// Go's setres[ug]id change every thread of the process.
	if err := syscall.Setresgid(0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: becoming gid 0 in the user namespace (is 0 in --gid-map?): %w", err)
	}
	if err := syscall.Setresuid(0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: becoming uid 0 in the user namespace (is 0 in --uid-map?): %w", err)
	}
	if b, err := os.ReadFile("/proc/self/setgroups"); err == nil && strings.TrimSpace(string(b)) == "allow" {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("sandbox: dropping supplementary groups: %w", err)
		}
	}
	// Ambient capabilities were only the bridge over execve.
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 {
		if e == unix.ENOTSUP {
			return errors.New("sandbox: " + errCgo)
		}
		return fmt.Errorf("sandbox: clearing ambient capabilities: %w", e)
	}
	return nil
}
