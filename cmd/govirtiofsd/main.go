// Command govirtiofsd shares a host directory, or an overlay of several
// (a union of read-only lower layers and a writable upper, as overlayfs
// builds it), with a virtual machine as a vhost-user-fs backend
// (virtio-fs), or on a host mount point over /dev/fuse. Its options follow
// virtiofsd's:
//
//	govirtiofsd (--shared-dir DIR | --overlay OVERLAY-OPTIONS) --socket-path SOCK [--tag TAG] [--request-queues N]
//	govirtiofsd (--shared-dir DIR | --overlay OVERLAY-OPTIONS) --fd N   (a listening socket, as libvirt passes it)
//	govirtiofsd (--shared-dir DIR | --overlay OVERLAY-OPTIONS) --mountpoint MNT
//	    [--cache never|metadata|auto|always] [--xattr] [--readonly]
//	    [--thread-pool-size N] [--queue-size N] [--log-level LEVEL]
//	    [--allow-direct-io] [--writeback] [--posix-acl] [--no-readdirplus]
//	    [--announce-submounts] [--keep-serving]
//
// OVERLAY-OPTIONS are overlayfs's: "lowerdir=L1:L2,upperdir=U,workdir=W"
// and the options overlay.ParseConfig documents. The overlay reads and
// writes its layers' own xattrs (whiteouts, opaque directories, redirects)
// whatever --xattr says; --xattr only turns on the xattr operations of the
// guest (or host mount), as for --shared-dir.
//
// Both "--flag value" and "--flag=value" work. A bad command line prints one
// line on stderr and exits with status 2; -h or --help prints the options
// and exits 0. As a vhost-user backend it exits 0 when the front-end (the
// VMM) disconnects, unless --keep-serving; on a mount point SIGINT or
// SIGTERM unmounts and exits 0, as does an unmount from outside (umount,
// fusermount -u). Other failures exit 1.
//
// A first argument that is not an option selects mount(8)'s calling
// convention for filesystem helpers instead, which is also the only one
// when the program is called as mount.fuse.govirtiofs (the helper mount(8)
// runs for "mount -t fuse.govirtiofs" and fstab entries of that type):
//
//	govirtiofsd SOURCE MOUNTPOINT [-o OPTIONS]... [-f] [-s] [-n] [-v]
//
// See mounthelper.go: OPTIONS mix overlay options (with lowerdir SOURCE is
// only a name and the union is mounted; without, SOURCE is the directory to
// share), generic mount options and the daemon's own options spelled as -o
// keys. The command returns once the mount is in place, leaving a daemon in
// the background that serves it until it is unmounted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/virtiofs"
	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

const progName = "govirtiofsd"

// unmountGrace is how long a stop by signal waits for the session to end
// after a busy mount was detached; then the daemon exits anyway and the
// files still open on the mount fail with ENOTCONN.
const unmountGrace = 5 * time.Second

// serverOptions maps the command line to the FUSE session's options.
func serverOptions(cfg *config, log hclog.Logger) fuseproto.Options {
	// Every mount the daemon makes has default_permissions (a virtio-fs
	// guest's always does), which idmapped mounts need.
	opts := fuseproto.Options{MaxWrite: fuseproto.DefaultMaxWrite, Enable: fuseproto.InitAllowIdmap, Logger: log.Named("fuse")}
	if cfg.writeback {
		opts.Enable |= fuseproto.InitWritebackCache
	}
	if cfg.posixACL {
		opts.Enable |= fuseproto.InitPosixACL
	}
	// Under --cache never the attributes a READDIRPLUS reply carries
	// expire at once, so the guest would LOOKUP every entry again:
	// virtiofsd turns READDIRPLUS off for that policy, and so do we.
	if cfg.noReaddirplus || cfg.cache == passthrough.CacheNever {
		opts.Disable |= fuseproto.InitDoReaddirplus | fuseproto.InitReaddirplusAuto
	}
	if cfg.fusePassthrough {
		opts.Enable |= fuseproto.InitPassthrough
	}
	if cfg.killprivV2 {
		opts.Enable |= fuseproto.InitHandleKillprivV2
	}
	if cfg.allowMmap {
		opts.Enable |= fuseproto.InitDirectIOAllowMmap
	}
	if cfg.securityLabel {
		opts.Enable |= fuseproto.InitSecurityCtx
	}
	if cfg.xattrMap != nil {
		opts.XattrMap = cfg.xattrMap
	}
	if cfg.noFlock {
		opts.Disable |= fuseproto.InitFlockLocks
	}
	if cfg.noPosixLock {
		opts.Disable |= fuseproto.InitPosixLocks
	}
	if !cfg.announceSubmounts {
		opts.Disable |= fuseproto.InitSubmounts
	}
	if !cfg.uids.Identity() || !cfg.gids.Identity() {
		opts.IDMap = idMap{uids: cfg.uids, gids: cfg.gids}
		// With FUSE_ALLOW_IDMAP a kernel of 6.9 or later sends the
		// caller only with requests that make an inode, so a
		// forbidden guest id could still change attributes and
		// xattrs: translation wins over idmapped mounts in the guest.
		opts.Enable &^= fuseproto.InitAllowIdmap
	}
	return opts
}

func main() {
	os.Exit(run(os.Args[0], os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command: it returns the exit status. argv0 is the name it was
// called by.
func run(argv0 string, args []string, stdout, stderr io.Writer) int {
	if mountConvention(argv0, args) {
		return runMount(argv0, args, stdout, stderr)
	}
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 2
	}
	switch {
	case cfg.printCapabilities:
		stdout.Write(capabilitiesJSON())
		return 0
	case cfg.printVersion:
		fmt.Fprintf(stdout, "%s %s\n", progName, version)
		return 0
	}
	if cfg.syslog && !sandbox.IsChild() {
		// Without a syslog daemon the log stays on stderr, as virtiofsd's
		// does: a container runtime passing --syslog must still get a
		// daemon.
		if w, err := newSyslog(); err != nil {
			fmt.Fprintf(stderr, "%s: --syslog: %v; logging to stderr\n", progName, err)
		} else {
			defer w.Close()
			stderr = w
		}
	}
	return serve(&cfg, stderr, nil)
}

// serve is the daemon: it serves cfg's filesystem until the VMM disconnects
// or the mount ends, and returns the exit status. ready, if not nil, is
// called once: with nil when the mount is in place, or with the error that
// stopped the daemon before.
//
// With the namespace sandbox the process the user started only supervises
// (runSandboxParent); its child, which runs serve again, does the work.
func serve(cfg *config, stderr io.Writer, ready func(error)) int {
	child := sandbox.IsChild()
	if child {
		w, closeLog := childLog(stderr)
		defer closeLog()
		stderr = w
		ready = childReport()
	}
	_, toSyslog := stderr.(*syslogWriter) // syslog adds the time itself
	log := hclog.New(&hclog.LoggerOptions{Name: progName, Level: cfg.logLevel, Output: stderr, DisableTime: toSyslog})
	if !child {
		for _, d := range cfg.deprecated {
			log.Warn("deprecated option", "use", d)
		}
		if cfg.xattrMap != nil && !cfg.xattrMap.Terminated() {
			log.Warn("--xattrmap has no rule that matches every name; other names are refused (EPERM) and hidden", "rules", cfg.xattrMapRules)
		}
	}
	fail := func(err error) int {
		if ready != nil {
			ready(err)
			ready = nil
		}
		log.Error(err.Error())
		if cfg.logLevel == hclog.Off {
			fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		}
		return 1
	}

	if child {
		if err := sandbox.BecomeRoot(); err != nil {
			return fail(err)
		}
		if err := sandbox.PrepareNamespace(); err != nil {
			return fail(err)
		}
	} else {
		nofile, warn, err := sandbox.SetNofile(cfg.rlimitNofile, cfg.rlimitSet)
		if err != nil {
			return fail(err)
		}
		if warn != "" {
			log.Warn(warn)
		}
		log.Debug("open-file limit", "rlimit-nofile", nofile)
		if cfg.sandbox == sandbox.Namespace {
			return runSandboxParent(cfg, stderr, log, ready, fail)
		}
	}

	stopProfiles, err := startProfiles(cfg)
	if err != nil {
		return fail(err)
	}
	defer stopProfiles()

	// Take the signals before mounting, so that one arriving meanwhile
	// still unmounts.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	fs, err := newFileSystem(cfg, log)
	if err != nil {
		return fail(err)
	}
	defer fs.Close()
	cfg.fusePassthrough = cfg.passthroughUsable(fs, log)
	srv := fuseproto.NewServer(fs, serverOptions(cfg, log))

	var t *transport
	if child {
		t, err = inheritedTransport(cfg, log)
	} else {
		t, err = openTransport(cfg, log)
		if err == nil && t.session != nil {
			if err = cfg.mountFlags.apply(t.session.Path(), cfg.readonly); err != nil {
				t.close()
			}
		}
	}
	if err != nil {
		return fail(err)
	}
	defer t.close()
	if err := confine(cfg, t, log); err != nil {
		return fail(err)
	}
	if t.stream != nil {
		return serveStream(cfg, t.stream, fs, log, sigs, fail, ready)
	}
	if t.session == nil {
		var state virtiofs.State
		if _, ok := fs.(fuseproto.Migrator); ok {
			// The FUSE session migrates with the device (QEMU's
			// vhost-user-fs device state); an overlay does not.
			state = srv
		}
		return serveVhostUser(cfg, t.listener, srv, state, log, sigs, fail, ready)
	}

	m := t.session
	done := make(chan error, 1)
	go func() { done <- m.Serve(srv, cfg.readers()) }()
	k, v := cfg.what()
	log.Info("serving", k, v, "mountpoint", m.Path(), "cache", cfg.cache.String(), "threads", cfg.readers(),
		"sandbox", cfg.sandbox.String(), "seccomp", cfg.seccomp.String())
	if ready != nil {
		ready(nil)
		ready = nil
	}

	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
		log.Info("unmounted; exiting")
		return 0
	case sig := <-sigs:
		if child {
			// The mount is the parent's to unmount; it does on a
			// signal. Reaching here, the child alone was signalled:
			// closing the session aborts the connection.
			log.Info("stopping", "signal", sig.String())
			return 0
		}
		log.Info("unmounting", "signal", sig.String())
	}
	if err := m.Unmount(); err != nil {
		log.Error("unmount failed", "error", err)
	}
	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
		log.Info("unmounted; exiting")
	case <-sigs:
		log.Warn("second signal; exiting while the mount is still in use")
	case <-time.After(unmountGrace):
		log.Warn("the detached mount is still in use; exiting, its open files will fail", "waited", unmountGrace)
	}
	return 0
}

// fileSystem is what the daemon serves: a passthrough.FS or an overlay.FS.
type fileSystem interface {
	fuseproto.FileSystem
	Close() error
}

// newFileSystem makes the filesystem cfg describes.
func newFileSystem(cfg *config, log hclog.Logger) (fileSystem, error) {
	if cfg.overlay != nil {
		return newOverlay(cfg, log)
	}
	fs, err := passthrough.New(cfg.sharedDir, passthrough.Options{
		Cache:                  cfg.cache,
		Xattr:                  cfg.xattr,
		ReadOnly:               cfg.readonly,
		AnnounceSubmounts:      cfg.announceSubmounts,
		AllowDirectIO:          cfg.allowDirectIO,
		Timeout:                cfg.timeout,
		PreserveNoatime:        cfg.preserveNoatime,
		InodeFileHandles:       mustParse(passthrough.ParseInodeFileHandles(cfg.fileHandles)),
		MigrationMode:          mustParse(passthrough.ParseMigrationMode(cfg.migrationMode)),
		MigrationOnError:       mustParse(passthrough.ParseMigrationOnError(cfg.migrationOnError)),
		MigrationVerifyHandles: cfg.migrationVerifyHandles,
		MigrationConfirmPaths:  cfg.migrationConfirmPaths,
		Logger:                 log.Named("passthrough"),
	})
	if err != nil {
		return nil, err
	}
	return fs, nil
}

// mustParse returns v of a value the command line parser already checked.
func mustParse[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// what returns the log's key and value for what is served.
func (cfg *config) what() (string, string) {
	if cfg.overlay != nil {
		return "overlay", cfg.overlay.String()
	}
	return "shared-dir", cfg.sharedDir
}

// mountSource is the source of a host mount as mount(8) and
// /proc/self/mountinfo show it.
func (cfg *config) mountSource() string {
	switch {
	case cfg.source != "":
		return cfg.source
	case cfg.overlay != nil:
		return "overlay"
	}
	return cfg.sharedDir
}

// serveVhostUser runs the virtio-fs device on the --socket-path or --fd
// listener until the front-end disconnects (or, with --keep-serving, until a
// signal).
func serveVhostUser(cfg *config, l *net.UnixListener, srv *fuseproto.Server, state virtiofs.State, log hclog.Logger, sigs <-chan os.Signal, fail func(error) int, ready func(error)) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Logged before the listener accepts: the line is the signal that a
	// front-end may connect (Kata waits for it), and a short session's
	// "front-end disconnected" must not come before it.
	k, v := cfg.what()
	log.Info("Waiting for vhost-user socket connection...", "socket", l.Addr().String(), k, v,
		"cache", cfg.cache.String(), "request-queues", cfg.requestQueues,
		"sandbox", cfg.sandbox.String(), "seccomp", cfg.seccomp.String())
	done := make(chan error, 1)
	go func() {
		done <- virtiofs.ListenAndServe(ctx, l, srv, virtiofs.Options{
			Tag:            cfg.tag,
			RequestQueues:  cfg.requestQueues,
			ThreadPoolSize: cfg.threads,
			ServeInline:    cfg.threads == 0,
			QueueSize:      cfg.queueSize,
			KeepServing:    cfg.keepServing,
			State:          state,
			Logger:         log.Named("virtiofs"),
		})
	}()
	if ready != nil {
		ready(nil)
	}
	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
		log.Info("front-end disconnected; exiting")
		return 0
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
		cancel()
		l.Close()
		select {
		case <-done:
		case <-time.After(unmountGrace):
			log.Warn("requests still running; exiting anyway")
		}
		return 0
	}
}

// listen returns the vhost-user listener: the --fd socket, or a new socket at
// --socket-path (replacing a stale socket left there, refusing anything
// else), and a function that removes it again.
func listen(cfg *config) (*net.UnixListener, func(), error) {
	if cfg.fd >= 0 {
		f := os.NewFile(uintptr(cfg.fd), "vhost-user-socket")
		if f == nil {
			return nil, nil, fmt.Errorf("--fd %d is not an open file descriptor", cfg.fd)
		}
		defer f.Close()
		nl, err := net.FileListener(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--fd %d: %w", cfg.fd, err)
		}
		ul, ok := nl.(*net.UnixListener)
		if !ok {
			nl.Close()
			return nil, nil, fmt.Errorf("--fd %d is not a listening unix socket", cfg.fd)
		}
		return ul, func() { ul.Close() }, nil
	}
	return listenUnix(cfg.socketPath, cfg.socketGroup, "--socket-path")
}

// pidFile is a locked PATH.pid file next to the socket: a second daemon on
// the same socket path refuses to start instead of stealing it.
type pidFile struct {
	f    *os.File
	path string
	dir  int // a descriptor of the directory to remove it through, or -1
}

// lockPIDFile creates (or reuses) path, locks it and writes our pid.
func lockPIDFile(path string) (*pidFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pid file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pid file %s is locked: another daemon serves this socket", path)
		}
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pid file %s: %w", path, err)
	}
	return &pidFile{f: f, path: path, dir: -1}, nil
}

// release removes the pid file and drops the lock.
func (p *pidFile) release() {
	if p.dir >= 0 {
		unix.Unlinkat(p.dir, filepath.Base(p.path), 0)
		unix.Close(p.dir)
		p.dir = -1
	} else {
		os.Remove(p.path)
	}
	p.f.Close()
}
