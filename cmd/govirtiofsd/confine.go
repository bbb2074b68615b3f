package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/internal/seccomp"
	"github.com/govirtiofs/govirtiofs/uidmap"
)

// The namespace sandbox runs the daemon as a child of the process started
// by the user (sandbox.Spawn): the parent makes what must exist in the
// host's namespaces (the listening socket, the /dev/fuse mount), hands the
// child the descriptor, forwards signals, cleans up after it and exits
// with its status. The child re-parses the same command line, opens the
// shared directories, confines itself and serves. These variables carry the
// descriptors' numbers to the child.
const (
	envTransportFD = "GOVIRTIOFSD_TRANSPORT_FD" // listening socket or /dev/fuse session
	envReportFD    = "GOVIRTIOFSD_REPORT_FD"    // pipe: "ok" once serving, or the error
	envSyslog      = "GOVIRTIOFSD_SYSLOG"       // "1": log to syslog (the parent is a mount daemon)
)

// idMap adapts the --translate-uid and --translate-gid tables to
// fuseproto.IDMap.
type idMap struct{ uids, gids *uidmap.Map }

func (m idMap) UIDToHost(id uint32) (uint32, bool) { return m.uids.ToHost(id) }
func (m idMap) GIDToHost(id uint32) (uint32, bool) { return m.gids.ToHost(id) }
func (m idMap) UIDToGuest(id uint32) uint32        { return m.uids.ToGuest(id) }
func (m idMap) GIDToGuest(id uint32) uint32        { return m.gids.ToGuest(id) }
func (m idMap) ACLToHost(v []byte) error           { return aclErr(uidmap.TranslateACL(v, m.uids, m.gids, true)) }
func (m idMap) ACLToGuest(v []byte) error {
	return aclErr(uidmap.TranslateACL(v, m.uids, m.gids, false))
}

func aclErr(err error) error {
	if errors.Is(err, uidmap.ErrForbidden) {
		return syscall.EPERM
	}
	return err
}

// capabilities returns the capabilities the daemon keeps: virtiofsd's set,
// CAP_LINUX_IMMUTABLE for the append-only and immutable flags
// (FS_IOC_SETFLAGS), for an overlay CAP_DAC_READ_SEARCH (its origin file
// handles) and, with trusted xattrs, CAP_SYS_ADMIN; CAP_SYS_ADMIN also
// for a mount the daemon unmounts itself; then --modcaps.
func (cfg *config) capabilities() ([]sandbox.Cap, error) {
	caps := append([]sandbox.Cap(nil), sandbox.DefaultCaps...)
	caps = append(caps, unix.CAP_LINUX_IMMUTABLE)
	var need []sandbox.Cap
	if cfg.overlay != nil {
		need = append(need, unix.CAP_DAC_READ_SEARCH)
		if !cfg.overlay.UserXattr {
			need = append(need, unix.CAP_SYS_ADMIN)
		}
	}
	if cfg.mountpoint != "" && cfg.sandbox != sandbox.Namespace {
		need = append(need, unix.CAP_SYS_ADMIN)
	}
	if cfg.fusePassthrough {
		// FUSE_DEV_IOC_BACKING_OPEN; passthroughUsable checked that
		// --modcaps keeps it.
		caps = append(caps, unix.CAP_SYS_ADMIN)
	}
	handles := cfg.overlay == nil && cfg.fileHandles != "never"
	if handles {
		// open_by_handle_at(2) needs it, as virtiofsd keeps it.
		need = append(need, unix.CAP_DAC_READ_SEARCH)
	}
	keep, dropped, err := sandbox.ModifyCaps(append(caps, need...), cfg.modcaps)
	if err != nil {
		return nil, err
	}
	for _, c := range dropped {
		for _, n := range need {
			if c == n {
				what := "an overlay"
				switch {
				case c == unix.CAP_SYS_ADMIN && cfg.overlay == nil:
					what = "--mountpoint without the namespace sandbox"
				case c == unix.CAP_DAC_READ_SEARCH && handles:
					return nil, fmt.Errorf("can't drop dac_read_search with --inode-file-handles=%s (use never)", cfg.fileHandles)
				}
				return nil, fmt.Errorf("%s needs %s", what, c)
			}
		}
	}
	return keep, nil
}

// passthroughUsable decides whether the /dev/fuse session uses FUSE
// passthrough (see fuseproto/passthrough.go): with --mountpoint, a
// filesystem that names its host files (not an overlay), a cache policy
// that lets the guest cache (not never or metadata, whose FOPEN_DIRECT_IO
// the kernel does not combine with passthrough), no writeback cache (the
// kernel turns passthrough off with it) and no --no-fuse-passthrough. The
// kernel registers backing files only for CAP_SYS_ADMIN in the initial
// user namespace: a daemon without it (not root, --uid-map, or a namespace
// sandbox started by a non-root user, whose root is a user namespace's;
// --modcaps=-sys_admin) says so once at info level and serves READ and
// WRITE itself. With it, the daemon keeps CAP_SYS_ADMIN in every sandbox,
// as it does for an overlay with trusted xattrs; the seccomp filter still
// refuses mount(2), pivot_root(2), setns(2) and unshare(2).
func (cfg *config) passthroughUsable(fs fuseproto.FileSystem, log hclog.Logger) bool {
	if _, ok := fs.(fuseproto.BackingFiler); !ok || cfg.mountpoint == "" || cfg.noFusePassthrough ||
		cfg.writeback || cfg.cache.OpenFlags()&fuseproto.FopenDirectIO != 0 {
		return false
	}
	why := ""
	if _, dropped, err := sandbox.ModifyCaps([]sandbox.Cap{unix.CAP_SYS_ADMIN}, cfg.modcaps); err != nil || len(dropped) > 0 {
		why = "--modcaps drops sys_admin"
	} else if caps, err := sandbox.Effective(); err != nil || !slices.Contains(caps, unix.CAP_SYS_ADMIN) {
		why = "no CAP_SYS_ADMIN"
	} else if !inInitUserNamespace() {
		why = "in a user namespace"
	}
	if why != "" {
		log.Info("FUSE passthrough is off: the kernel allows it only with CAP_SYS_ADMIN in the initial user namespace; the daemon serves READ and WRITE itself", "reason", why)
		return false
	}
	return true
}

// inInitUserNamespace reports whether the process is in the initial user
// namespace, whose uid_map is the identity over all ids.
func inInitUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return slices.Equal(strings.Fields(string(b)), []string{"0", "0", "4294967295"})
}

// transport is what serve serves on: a vhost-user listener or a /dev/fuse
// session.
type transport struct {
	listener *net.UnixListener
	cleanup  func()
	session  *devfuse.Session
	stream   *streamListener // --listen, --vsock-port
}

// openTransport makes the transport in the daemon's own namespaces.
func openTransport(cfg *config, log hclog.Logger) (*transport, error) {
	if cfg.listen.network != "" {
		l, err := listenStream(cfg)
		if err != nil {
			return nil, err
		}
		return &transport{stream: l, cleanup: l.cleanup}, nil
	}
	if cfg.mountpoint == "" {
		l, cleanup, err := listen(cfg)
		if err != nil {
			return nil, err
		}
		return &transport{listener: l, cleanup: cleanup}, nil
	}
	m, err := devfuse.Mount(cfg.mountpoint, mountOptions(cfg, log))
	if err != nil {
		return nil, err
	}
	return &transport{session: m}, nil
}

// mountOptions are the /dev/fuse mount's options.
func mountOptions(cfg *config, log hclog.Logger) devfuse.MountOptions {
	return devfuse.MountOptions{
		Source:             cfg.mountSource(),
		ReadOnly:           cfg.readonly,
		AllowOther:         true,
		DefaultPermissions: true,
		Logger:             log.Named("devfuse"),
	}
}

// inheritedTransport takes the transport the sandbox parent passed.
func inheritedTransport(cfg *config, log hclog.Logger) (*transport, error) {
	fd, err := strconv.Atoi(os.Getenv(envTransportFD))
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("bad %s=%q", envTransportFD, os.Getenv(envTransportFD))
	}
	os.Unsetenv(envTransportFD)
	syscall.CloseOnExec(fd)
	if cfg.mountpoint != "" {
		return &transport{session: devfuse.Attach(fd, cfg.mountpoint, mountOptions(cfg, log))}, nil
	}
	if cfg.listen.network != "" {
		l, err := inheritedStream(os.NewFile(uintptr(fd), "stream-socket"), cfg.listen.network)
		if err != nil {
			return nil, err
		}
		return &transport{stream: l, cleanup: l.cleanup}, nil
	}
	f := os.NewFile(uintptr(fd), "vhost-user-socket")
	defer f.Close()
	nl, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the listening socket: %w", err)
	}
	l := nl.(*net.UnixListener)
	l.SetUnlinkOnClose(false) // the parent owns the path
	return &transport{listener: l, cleanup: func() { l.Close() }}, nil
}

// close releases the transport; a session is unmounted and closed.
func (t *transport) close() {
	if t.cleanup != nil {
		t.cleanup()
	}
	if t.session != nil {
		t.session.Close()
	}
}

// confine applies the sandbox, drops capabilities and installs the seccomp
// filter, once the daemon holds every descriptor it serves through.
func confine(cfg *config, t *transport, log hclog.Logger) error {
	if cfg.sandbox != sandbox.None {
		// Both sandboxes hide /dev/fuse and the chroot hides /proc: keep
		// a descriptor of /proc/self/fd to reach them through.
		procFd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /proc/self/fd: %w", err)
		}
		if t.session != nil {
			// A reader of /dev/fuse needs a fresh open of the device.
			dev, err := unix.Open("/dev/fuse", unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open /dev/fuse: %w", err)
			}
			name := strconv.Itoa(dev)
			t.session.SetDeviceOpener(func() (int, error) {
				return unix.Openat(procFd, name, unix.O_RDWR|unix.O_CLOEXEC, 0)
			})
		}
		if cfg.sandbox == sandbox.Chroot {
			hostfs.UseProcFd(procFd)
		}
	}
	switch cfg.sandbox {
	case sandbox.Namespace:
		if err := sandbox.PivotRoot(); err != nil {
			return err
		}
	case sandbox.Chroot:
		if t.session != nil {
			if err := t.session.PinParent(); err != nil {
				return err
			}
		}
		if err := sandbox.EnterChroot(cfg.chrootDir()); err != nil {
			return err
		}
	}
	keep, err := cfg.capabilities()
	if err != nil {
		return err
	}
	if keep, err = sandbox.DropCapabilities(keep); err != nil {
		return err
	}
	if err := seccomp.Install(cfg.seccomp); err != nil {
		return err
	}
	log.Debug("confined", "sandbox", cfg.sandbox.String(), "seccomp", cfg.seccomp.String(), "capabilities", fmt.Sprint(keep))
	return nil
}

// chrootDir is the chroot sandbox's new root: the shared directory, or an
// overlay's upper layer (its topmost lower layer without one).
func (cfg *config) chrootDir() string {
	if cfg.overlay == nil {
		return cfg.sharedDir
	}
	if cfg.overlay.Upper != "" {
		return cfg.overlay.Upper
	}
	return cfg.overlay.Lower[0]
}

// childReport returns the function with which a sandboxed child tells its
// parent that it serves ("ok") or why it stopped; nil outside a child.
func childReport() func(error) {
	fd, err := strconv.Atoi(os.Getenv(envReportFD))
	if err != nil || fd < 3 {
		return nil
	}
	os.Unsetenv(envReportFD)
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "report")
	return func(err error) {
		msg := readyOK
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		f.WriteString(msg + "\n")
		f.Close()
	}
}

// childLog returns where a sandboxed child logs: syslog when its parent is
// a mount daemon that logs there, else stderr.
func childLog(stderr io.Writer) (io.Writer, func()) {
	if os.Getenv(envSyslog) != "1" {
		return stderr, func() {}
	}
	os.Unsetenv(envSyslog)
	if w, err := newSyslog(); err == nil {
		return w, func() { w.Close() }
	}
	return stderr, func() {}
}

// childFailed ends a sandbox parent whose child reported r instead of
// readyOK (or nothing: it exited): it returns the exit status.
func childFailed(r string, exited <-chan int, ready func(error)) int {
	status := <-exited
	if r == "" {
		r = fmt.Sprintf("the sandboxed daemon exited with status %d", status)
	}
	if ready != nil {
		ready(errors.New(r))
	}
	return max(status, 1)
}

// runSandboxParent is the namespace sandbox's parent: see the comment at
// the top of this file. It returns the exit status.
func runSandboxParent(cfg *config, stderr io.Writer, log hclog.Logger, ready func(error), fail func(error) int) int {
	// Pdeathsig fires when the thread that started the child ends: keep
	// this goroutine on its thread.
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	t, err := openTransport(cfg, log)
	if err != nil {
		return fail(err)
	}
	defer t.close()
	var tf *os.File
	switch {
	case t.stream != nil:
		tf, err = t.stream.file()
	case t.listener != nil:
		tf, err = t.listener.File()
	default:
		tf, err = dupFile(t.session.Fd(), "fuse")
	}
	if err != nil {
		return fail(err)
	}
	reportR, reportW, err := os.Pipe()
	if err != nil {
		tf.Close()
		return fail(err)
	}
	env := []string{envTransportFD + "=3", envReportFD + "=4"}
	if _, ok := stderr.(*syslogWriter); ok {
		env = append(env, envSyslog+"=1")
	}
	child, err := sandbox.Spawn(sandbox.SpawnOptions{
		Argv0:  os.Args[0],
		Args:   os.Args[1:],
		Files:  []*os.File{tf, reportW},
		Env:    env,
		UIDMap: idRanges(cfg.uidMap),
		GIDMap: idRanges(cfg.gidMap),
		Stderr: os.Stderr,
	})
	tf.Close()
	reportW.Close()
	if err != nil {
		reportR.Close()
		return fail(err)
	}
	exited := make(chan int, 1)
	go func() { exited <- child.Wait() }()
	report := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(reportR).ReadString('\n')
		reportR.Close()
		report <- strings.TrimSuffix(line, "\n")
	}()

	// Until the child reports, a signal stops it; an early exit is its
	// failure, which it has logged. A report already written when the
	// signal comes wins (select would pick either): the daemon served,
	// and the signal stops it the ordinary way below.
	var early os.Signal
	select {
	case r := <-report:
		if r != readyOK {
			return childFailed(r, exited, ready)
		}
	case sig := <-sigs:
		select {
		case r := <-report:
			if r != readyOK {
				return childFailed(r, exited, ready)
			}
			early = sig
		case <-time.After(100 * time.Millisecond):
			child.Signal(syscall.SIGKILL)
			<-exited
			log.Info("stopped before serving", "signal", sig.String())
			return 1
		}
	}
	if early != nil {
		// Raise it again for the loop below, once the mount flags
		// are set.
		syscall.Kill(os.Getpid(), early.(syscall.Signal))
	}
	if t.session != nil {
		if err := cfg.mountFlags.apply(t.session.Path(), cfg.readonly); err != nil {
			child.Signal(syscall.SIGKILL)
			<-exited
			return fail(err)
		}
	}
	log.Debug("sandboxed daemon serving", "pid", child.Pid())
	if ready != nil {
		ready(nil)
	}

	for {
		select {
		case status := <-exited:
			if t.session != nil {
				log.Info("unmounted; exiting")
			}
			return status
		case sig := <-sigs:
			if t.session == nil {
				child.Signal(sig)
				continue
			}
			// The child cannot see the mount: unmount it here,
			// which ends the child's session.
			log.Info("unmounting", "signal", sig.String())
			if err := t.session.Unmount(); err != nil {
				log.Error("unmount failed", "error", err)
			}
			select {
			case status := <-exited:
				log.Info("unmounted; exiting")
				return status
			case <-sigs:
				log.Warn("second signal; exiting while the mount is still in use")
			case <-time.After(unmountGrace):
				log.Warn("the detached mount is still in use; exiting, its open files will fail", "waited", unmountGrace)
			}
			child.Signal(syscall.SIGKILL)
			<-exited
			return 0
		}
	}
}

// idRanges converts user namespace ranges for sandbox.Spawn.
func idRanges(rs []uidmap.NSRange) []sandbox.IDRange {
	var out []sandbox.IDRange
	for _, r := range rs {
		out = append(out, sandbox.IDRange{Inside: r.Inside, Outside: r.Outside, Count: r.Count})
	}
	return out
}

// dupFile returns a duplicate of fd as an *os.File.
func dupFile(fd int, name string) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(d), name), nil
}
