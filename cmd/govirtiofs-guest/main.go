// Command govirtiofs-guest mounts, inside a virtual machine, a directory
// that govirtiofsd shares over a byte stream instead of virtio-fs: a vsock
// or unix socket connection, or a virtio-serial port. It mounts a FUSE
// filesystem through the guest kernel's /dev/fuse and relays the kernel's
// requests to the daemon and the daemon's replies back (see package
// fuseproto/stream), in the foreground, until the filesystem is unmounted:
//
//	govirtiofs-guest [options] SOURCE MOUNTPOINT
//
// SOURCE is vsock:CID:PORT, unix:PATH or serial:PATH (a virtio-serial port,
// e.g. serial:/dev/virtio-ports/govirtiofs). Run with --help for the
// options.
//
// It exits 0 when the filesystem was unmounted (umount(8), or SIGTERM,
// SIGINT or SIGHUP, on which it unmounts itself), 1 when the connection to
// the daemon was lost or could not be made (the mount is then aborted,
// so that processes using it get ENOTCONN instead of hanging, and
// detached), and 2 for a bad command line. If it is killed outright, a
// watcher process it starts before mounting (unless -o no_auto_unmount)
// detaches the mount.
//
// It is built static (CGO_ENABLED=0) so that it can be copied into any
// guest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/fuseproto/stream"
)

const progName = "govirtiofs-guest"

// unmountGrace is how long a stop by signal waits for the session to end
// after a busy mount was detached; then the connection is aborted, and
// the files still open on the mount fail with ENOTCONN.
const unmountGrace = 5 * time.Second

// watchFd is the descriptor on which the unmount watcher inherits the read
// end of its pipe from the relay.
const watchFd = 3

const usageText = `Usage: govirtiofs-guest [options] SOURCE MOUNTPOINT

Mounts the directory a govirtiofsd daemon shares over a stream on
MOUNTPOINT, and relays the kernel's FUSE requests to the daemon until the
filesystem is unmounted (umount, or SIGTERM, SIGINT or SIGHUP), in the
foreground.

SOURCE is where the daemon is:
  vsock:CID:PORT   an AF_VSOCK socket (CID 2 is the host)
  unix:PATH        a unix socket
  serial:PATH      a virtio-serial port, e.g. serial:/dev/virtio-ports/govirtiofs

Options:
  -o OPTIONS        mount options, comma-separated (repeatable):
                      ro, rw             read-only or read-write [rw]
                      allow_other, no_allow_other
                                         let every user use the mount [on]
                      default_permissions, no_default_permissions
                                         the kernel checks permissions (the
                                         daemon's idmapped mounts need it) [on]
                      fsname=NAME        the mount source mount(8) shows [SOURCE]
                      max_read=N         the largest READ in bytes [the daemon's]
                      auto_unmount, no_auto_unmount
                                         detach the mount if the relay is
                                         killed [on]
                      splice, nosplice   move large messages with splice(2)
                                         where the stream takes it [splice]
  --timeout DURATION
                    time allowed to connect and exchange hellos [10s]
  --log-level LEVEL off, error, warn, info, debug or trace [info]
  -h, --help        print this help and exit

Exit status: 0 after an unmount, 1 when the connection to the daemon is
lost or cannot be made, 2 for a bad command line.
`

// source is a parsed SOURCE.
type source struct {
	raw       string // as given
	kind      string // "vsock", "unix" or "serial"
	path      string // unix, serial
	cid, port uint32 // vsock
}

// config is the parsed command line.
type config struct {
	src         source
	mountpoint  string
	readOnly    bool
	allowOther  bool
	defaultPerm bool
	autoUnmount bool
	noSplice    bool
	fsname      string
	maxRead     uint32
	timeout     time.Duration
	logLevel    hclog.Level
	help        bool

	// The hidden mode of the unmount watcher (see startWatcher).
	watch       string // --watch-unmount MOUNTPOINT
	watchSource string // --watch-source FSNAME
}

// logLevels are the --log-level names.
var logLevels = map[string]hclog.Level{
	"off":   hclog.Off,
	"error": hclog.Error,
	"warn":  hclog.Warn,
	"info":  hclog.Info,
	"debug": hclog.Debug,
	"trace": hclog.Trace,
}

// parseArgs parses the command line. Options may come before, between or
// after SOURCE and MOUNTPOINT, as mount(8) passes them to helpers; "--"
// ends them.
func parseArgs(args []string) (*config, error) {
	cfg := &config{allowOther: true, defaultPerm: true, autoUnmount: true, timeout: 10 * time.Second, logLevel: hclog.Info}
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.Func("o", "mount options", cfg.mountOptions)
	fs.Func("timeout", "connect and hello timeout", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 10s")
		}
		cfg.timeout = d
		return nil
	})
	fs.Func("log-level", "log level", func(s string) error {
		l, ok := logLevels[s]
		if !ok {
			return errors.New("want off, error, warn, info, debug or trace")
		}
		cfg.logLevel = l
		return nil
	})
	fs.BoolVar(&cfg.help, "h", false, "help")
	fs.BoolVar(&cfg.help, "help", false, "help")
	fs.StringVar(&cfg.watch, "watch-unmount", "", "internal")
	fs.StringVar(&cfg.watchSource, "watch-source", "", "internal")

	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if cfg.help {
		return cfg, nil
	}
	if cfg.watch != "" {
		if len(pos) != 0 {
			return nil, errors.New("--watch-unmount takes no arguments")
		}
		return cfg, nil
	}
	switch {
	case len(pos) < 2:
		return nil, errors.New("want SOURCE and MOUNTPOINT (see --help)")
	case len(pos) > 2:
		return nil, fmt.Errorf("too many arguments: %q (want SOURCE and MOUNTPOINT)", pos[2:])
	}
	src, err := parseSource(pos[0])
	if err != nil {
		return nil, err
	}
	cfg.src = src
	if pos[1] == "" {
		return nil, errors.New("empty MOUNTPOINT")
	}
	cfg.mountpoint = pos[1]
	if cfg.fsname == "" {
		cfg.fsname = src.raw
	}
	return cfg, nil
}

// mountOptions applies one -o value.
func (c *config) mountOptions(s string) error {
	for _, opt := range strings.Split(s, ",") {
		key, val, hasVal := strings.Cut(opt, "=")
		set := func(p *bool, v bool) error {
			if hasVal {
				return fmt.Errorf("mount option %s takes no value", key)
			}
			*p = v
			return nil
		}
		var err error
		switch key {
		case "":
			if hasVal {
				err = fmt.Errorf("bad mount option %q", opt)
			}
		case "ro":
			err = set(&c.readOnly, true)
		case "rw":
			err = set(&c.readOnly, false)
		case "allow_other":
			err = set(&c.allowOther, true)
		case "no_allow_other":
			err = set(&c.allowOther, false)
		case "default_permissions":
			err = set(&c.defaultPerm, true)
		case "no_default_permissions":
			err = set(&c.defaultPerm, false)
		case "splice":
			err = set(&c.noSplice, false)
		case "nosplice", "no_splice":
			err = set(&c.noSplice, true)
		case "auto_unmount":
			err = set(&c.autoUnmount, true)
		case "no_auto_unmount":
			err = set(&c.autoUnmount, false)
		case "fsname":
			if val == "" {
				return errors.New("mount option fsname wants a name: fsname=NAME")
			}
			c.fsname = val
		case "max_read":
			n, perr := strconv.ParseUint(val, 10, 32)
			if perr != nil || n == 0 {
				return fmt.Errorf("mount option max_read wants a number of bytes, not %q", val)
			}
			c.maxRead = uint32(n)
		default:
			err = fmt.Errorf("unknown mount option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseSource parses vsock:CID:PORT, unix:PATH or serial:PATH.
func parseSource(s string) (source, error) {
	bad := func(why string) (source, error) {
		if why != "" {
			why = " (" + why + ")"
		}
		return source{}, fmt.Errorf("bad source %q: want vsock:CID:PORT, unix:PATH or serial:PATH%s", s, why)
	}
	kind, rest, _ := strings.Cut(s, ":")
	src := source{raw: s, kind: kind}
	switch kind {
	case "vsock":
		cid, port, ok := strings.Cut(rest, ":")
		c, err1 := strconv.ParseUint(cid, 10, 32)
		p, err2 := strconv.ParseUint(port, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return bad("CID and PORT are numbers")
		}
		src.cid, src.port = uint32(c), uint32(p)
	case "unix":
		if rest == "" {
			return bad("no path")
		}
		if len(rest) >= len(unix.RawSockaddrUnix{}.Path) {
			return bad("the socket path is too long")
		}
		src.path = rest
	case "serial":
		if rest == "" {
			return bad("no path")
		}
		src.path = rest
	default:
		return bad("")
	}
	return src, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the command: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 2
	}
	if cfg.help {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	if cfg.watch != "" {
		return watchUnmount(cfg.watch, cfg.watchSource, stderr)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: progName, Level: cfg.logLevel, Output: stderr})
	return relay(cfg, log, stderr)
}

// relay connects, mounts and relays until the end; it returns the exit
// status.
func relay(cfg *config, log hclog.Logger, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", progName, fmt.Sprintf(format, args...))
		return 1
	}
	deadline := time.Now().Add(cfg.timeout)
	fd, err := connect(cfg.src, deadline)
	if err != nil {
		return fail("cannot connect to %s: %v", cfg.src.raw, err)
	}
	defer unix.Close(fd)
	h, err := stream.Handshake(fd, max(time.Until(deadline), time.Millisecond))
	if err != nil {
		return fail("%s: %v", cfg.src.raw, err)
	}
	log.Debug("connected", "source", cfg.src.raw, "daemon-fuse", fmt.Sprintf("%d.%d", h.FuseMajor, h.FuseMinor))

	mnt, err := resolve(cfg.mountpoint)
	if err != nil {
		return fail("%v", err)
	}
	var w *watcher
	if cfg.autoUnmount {
		if w, err = startWatcher(mnt, cfg.fsname); err != nil {
			log.Warn("cannot start the unmount watcher; if this process is killed the mount stays, dead", "error", err)
		}
	}
	defer w.stop()

	sess, err := devfuse.Mount(mnt, devfuse.MountOptions{Source: cfg.fsname, ReadOnly: cfg.readOnly,
		AllowOther: cfg.allowOther, DefaultPermissions: cfg.defaultPerm, MaxRead: cfg.maxRead, Logger: log})
	if err != nil {
		return fail("%v", err)
	}
	mnt = sess.Path()
	connID, err := stream.ConnectionID(mnt)
	if err != nil {
		log.Debug("the FUSE connection's number is unknown", "error", err)
	}
	log.Info(fmt.Sprintf("mounted %s on %s (stream protocol %s)", cfg.src.raw, mnt, stream.VersionString(h.Version)))

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- stream.Relay(sess.Fd(), fd, stream.RelayOptions{Logger: log.Named("relay"), ConnID: connID, Stop: stop, NoSplice: cfg.noSplice})
	}()
	var grace <-chan time.Time
	var rerr error
wait:
	for {
		select {
		case sig := <-sigc:
			if grace == nil {
				log.Info("unmounting", "mountpoint", mnt, "signal", sig.String())
				if err := sess.Unmount(); err != nil {
					log.Warn("unmounting failed", "error", err)
				}
				grace = time.After(unmountGrace)
			}
		case <-grace:
			log.Warn("the detached mount is still in use; aborting its connection", "waited", unmountGrace)
			close(stop)
			grace = make(chan time.Time) // never again
		case rerr = <-done:
			break wait
		}
	}

	switch {
	case rerr == nil:
		sess.Close()
		log.Info("unmounted " + mnt)
		return 0
	case errors.Is(rerr, stream.ErrStopped):
		abort(sess, mnt)
		log.Info("unmounted " + mnt + " (its connection aborted)")
		return 0
	case errors.Is(rerr, stream.ErrConnAborted):
		abort(sess, mnt)
		return fail("the FUSE connection of %s was aborted", mnt)
	}
	abort(sess, mnt)
	why := strings.TrimPrefix(rerr.Error(), "stream: ")
	if errors.Is(rerr, stream.ErrStreamClosed) || errors.Is(rerr, stream.ErrMalformed) {
		return fail("connection to %s lost: %s", cfg.src.raw, why)
	}
	return fail("relaying %s failed: %s", mnt, why)
}

// abort ends a session whose daemon is gone: it aborts the FUSE connection
// by closing its descriptor (the connection's last), so that processes
// waiting on the mount fail instead of hanging, detaches the mount, and
// closes the session.
func abort(sess *devfuse.Session, mnt string) {
	if fd := sess.Fd(); fd >= 0 {
		// Put /dev/null in the session fd's place: that closes the
		// device file, and the number stays valid for sess.Close.
		if null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
			unix.Dup3(null, fd, unix.O_CLOEXEC)
			unix.Close(null)
		}
	}
	unix.Unmount(mnt, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	sess.Close()
}

// resolve makes mountpoint absolute and resolves its symlinks, as
// devfuse.Mount does, so that the watcher finds it in mountinfo.
func resolve(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	path, err := filepath.EvalSymlinks(abs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	return path, nil
}

// connect opens the stream to the daemon; a socket connect gives up at
// deadline.
func connect(src source, deadline time.Time) (int, error) {
	switch src.kind {
	case "unix":
		return dial(unix.AF_UNIX, &unix.SockaddrUnix{Name: src.path}, deadline)
	case "vsock":
		return dial(unix.AF_VSOCK, &unix.SockaddrVM{CID: src.cid, Port: src.port}, deadline)
	}
	fd, err := unix.Open(src.path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: src.path, Err: err}
	}
	return fd, nil
}

// dial connects a stream socket of family to sa, waiting until deadline,
// and returns it in blocking mode.
func dial(family int, sa unix.Sockaddr, deadline time.Time) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	for {
		err = unix.Connect(fd, sa)
		if err == unix.EAGAIN && time.Now().Before(deadline) {
			// A unix socket's backlog is full: try again.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EINPROGRESS || err == unix.EINTR {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return -1, errors.New("connection timed out")
			}
			n, perr := unix.Poll(p, int((left+time.Millisecond-1)/time.Millisecond))
			if perr == unix.EINTR || perr == nil && n == 0 {
				continue
			}
			if perr != nil {
				return -1, perr
			}
			break
		}
		soerr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return -1, gerr
		}
		err = nil
		if soerr != 0 {
			err = unix.Errno(soerr)
		}
	}
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return -1, err
	}
	ok = true
	return fd, nil
}

// watcher is the unmount watcher: a child process that detaches the mount
// if this process dies without unmounting it (SIGKILL, a crash).
type watcher struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end; the child sees EOF when it closes
}

// startWatcher starts the watcher of mnt, whose mount source will be
// fsname: this program again, with --watch-unmount, and the read end of a
// pipe as descriptor 3 whose write end only this process holds. It is
// started before mounting, so that it holds no descriptor of the FUSE
// connection: this process's death then also aborts the connection.
func startWatcher(mnt, fsname string) (*watcher, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", "--watch-unmount", mnt, "--watch-source", fsname)
	cmd.ExtraFiles = []*os.File{r} // descriptor 3 (watchFd)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	return &watcher{cmd: cmd, pipe: w}, nil
}

// stop tells the watcher that the mount was taken care of, and waits for
// it to exit.
func (w *watcher) stop() {
	if w == nil {
		return
	}
	w.pipe.Write([]byte{1})
	w.pipe.Close()
	exited := make(chan struct{})
	go func() {
		w.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		w.cmd.Process.Kill()
		<-exited
	}
}

// watchUnmount is the watcher (--watch-unmount): it waits on descriptor 3
// until the relay either writes a byte (it is exiting and took care of
// the mount) or dies (end of file), and then, if mnt is still a mount of
// ours with source fsname, detaches it. It ignores the signals a terminal
// or a service manager sends the relay's whole process group, so that it
// outlives a relay that dies of them.
func watchUnmount(mnt, fsname string, stderr io.Writer) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var b [1]byte
	for {
		n, err := unix.Read(watchFd, b[:])
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			return 0
		}
		break
	}
	fstype, source, ok := mountAt(mnt)
	if !ok || fstype != devfuse.FSType || source != fsname {
		return 0
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && err != unix.EINVAL {
		fmt.Fprintf(stderr, "%s: the relay serving %s died, and detaching the mount failed: %v\n", progName, mnt, err)
		return 1
	}
	fmt.Fprintf(stderr, "%s: the relay serving %s died; the mount was detached\n", progName, mnt)
	return 0
}

// mountAt returns the filesystem type and source of the topmost mount on
// path, from /proc/self/mountinfo.
func mountAt(path string) (fstype, source string, ok bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	for line := range strings.Lines(string(b)) {
		// 36 35 0:44 / /mnt rw,relatime shared:1 - fuse.govirtiofs SOURCE rw,...
		f := strings.Fields(line)
		if len(f) < 7 || unescapeMountInfo(f[4]) != path {
			continue
		}
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" {
				fstype, source, ok = f[i+1], unescapeMountInfo(f[i+2]), true
				break
			}
		}
	}
	return fstype, source, ok
}

// unescapeMountInfo undoes the kernel's \ooo escapes in mountinfo.
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
