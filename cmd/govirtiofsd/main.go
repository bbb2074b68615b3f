// Command govirtiofsd shares a host directory with a virtual machine as a
// vhost-user-fs backend (virtio-fs), or on a host mount point over
// /dev/fuse. Its options follow virtiofsd's:
//
//	govirtiofsd --shared-dir DIR --socket-path SOCK [--tag TAG] [--request-queues N]
//	govirtiofsd --shared-dir DIR --fd N            (a listening socket, as libvirt passes it)
//	govirtiofsd --shared-dir DIR --mountpoint MNT
//	    [--cache never|metadata|auto|always] [--xattr] [--readonly]
//	    [--thread-pool-size N] [--queue-size N] [--log-level LEVEL]
//	    [--allow-direct-io] [--writeback] [--posix-acl] [--no-readdirplus]
//	    [--announce-submounts] [--keep-serving]
//
// Both "--flag value" and "--flag=value" work. A bad command line prints one
// line on stderr and exits with status 2; -h or --help prints the options
// and exits 0. As a vhost-user backend it exits 0 when the front-end (the
// VMM) disconnects, unless --keep-serving; on a mount point SIGINT or
// SIGTERM unmounts and exits 0, as does an unmount from outside (umount,
// fusermount -u). Other failures exit 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/fuseproto/virtiofs"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

const progName = "govirtiofsd"

// defaultThreads is the default --thread-pool-size: the readers of
// /dev/fuse kept waiting for requests.
const defaultThreads = 4

// unmountGrace is how long a stop by signal waits for the session to end
// after a busy mount was detached; then the daemon exits anyway and the
// files still open on the mount fail with ENOTCONN.
const unmountGrace = 5 * time.Second

// config is the parsed command line.
type config struct {
	sharedDir         string
	mountpoint        string
	cache             passthrough.CachePolicy
	xattr             bool
	readonly          bool
	threads           int
	logLevel          hclog.Level
	allowDirectIO     bool
	writeback         bool
	posixACL          bool
	noReaddirplus     bool
	announceSubmounts bool
	socketPath        string
	fd                int // -1: none
	tag               string
	queueSize         int
	requestQueues     int
	keepServing       bool
}

// defaultRequestQueues is the default --request-queues: how many request
// queues the virtio-fs device offers (QEMU's num-request-queues and Cloud
// Hypervisor's num_queues may ask for up to this many).
const defaultRequestQueues = 16

// logLevels are the --log-level names, virtiofsd's.
var logLevels = map[string]hclog.Level{
	"off":   hclog.Off,
	"error": hclog.Error,
	"warn":  hclog.Warn,
	"info":  hclog.Info,
	"debug": hclog.Debug,
	"trace": hclog.Trace,
}

// newFlagSet returns the command line's flags, writing into cfg, which
// holds the defaults.
func newFlagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&cfg.sharedDir, "shared-dir", "", "the host `directory` to share (required)")
	fs.StringVar(&cfg.socketPath, "socket-path", "", "listen for the VMM's vhost-user connection on this unix socket `path`")
	fs.StringVar(&cfg.socketPath, "socket", "", "deprecated spelling of --socket-path")
	fs.Func("fd", "serve the vhost-user connection on this already listening socket `fd` (as libvirt passes it)", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a file descriptor number")
		}
		cfg.fd = n
		return nil
	})
	fs.StringVar(&cfg.mountpoint, "mountpoint", "", "serve the shared directory on this host `directory` over /dev/fuse instead")
	fs.Func("tag", "virtio-fs `tag` served in the config space (1 to 36 bytes; default: none, the VMM supplies it)", func(s string) error {
		if len(s) == 0 || len(s) > virtiofs.TagSize {
			return fmt.Errorf("want 1 to %d bytes", virtiofs.TagSize)
		}
		cfg.tag = s
		return nil
	})
	fs.Func("queue-size", "largest virtqueue `size` accepted (power of 2, default 1024)", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 32768 || n&(n-1) != 0 {
			return errors.New("want a power of 2 up to 32768")
		}
		cfg.queueSize = n
		return nil
	})
	fs.Func("request-queues", "`number` of virtio-fs request queues offered (default "+strconv.Itoa(defaultRequestQueues)+", at most "+strconv.Itoa(virtiofs.MaxRequestQueues)+")", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > virtiofs.MaxRequestQueues {
			return fmt.Errorf("want 1 to %d", virtiofs.MaxRequestQueues)
		}
		cfg.requestQueues = n
		return nil
	})
	fs.BoolVar(&cfg.keepServing, "keep-serving", false, "after the VMM disconnects, wait for a new connection instead of exiting")
	fs.Func("cache", "caching `policy`: never, metadata, auto or always (default auto)", func(s string) error {
		p, err := passthrough.ParseCachePolicy(s)
		if err != nil {
			return errors.New("want never, metadata, auto or always")
		}
		cfg.cache = p
		return nil
	})
	fs.BoolVar(&cfg.xattr, "xattr", false, "enable extended attributes")
	fs.BoolVar(&cfg.readonly, "readonly", false, "share the directory read-only")
	fs.Func("thread-pool-size", "`number` of request readers kept waiting (default "+strconv.Itoa(defaultThreads)+"); more start while requests block", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number, 0 or more")
		}
		cfg.threads = n
		return nil
	})
	fs.Func("log-level", "log `level`: off, error, warn, info, debug or trace (default info)", func(s string) error {
		l, ok := logLevels[s]
		if !ok {
			return errors.New("want off, error, warn, info, debug or trace")
		}
		cfg.logLevel = l
		return nil
	})
	fs.BoolVar(&cfg.allowDirectIO, "allow-direct-io", false, "open host files with O_DIRECT when the guest asks (default: dropped; the guest bypasses its own cache either way)")
	fs.BoolVar(&cfg.writeback, "writeback", false, "enable the kernel's writeback cache")
	fs.BoolVar(&cfg.posixACL, "posix-acl", false, "enable POSIX ACLs (needs --xattr)")
	fs.BoolVar(&cfg.noReaddirplus, "no-readdirplus", false, "disable READDIRPLUS")
	fs.BoolVar(&cfg.announceSubmounts, "announce-submounts", false, "give host mounts inside the shared directory their own st_dev in the guest")
	return fs
}

// parseFlags parses the command line (without the program name). It
// returns flag.ErrHelp for -h or --help, and otherwise a one-line error
// for anything wrong.
func parseFlags(args []string) (config, error) {
	cfg := config{cache: passthrough.CacheAuto, threads: defaultThreads, logLevel: hclog.Info,
		fd: -1, queueSize: 1024, requestQueues: defaultRequestQueues}
	fs := newFlagSet(&cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errors.New(doubleDash(err.Error()))
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case cfg.sharedDir == "":
		return cfg, errors.New("--shared-dir is required")
	case transports(&cfg) == 0:
		return cfg, errors.New("one of --socket-path, --fd or --mountpoint is required")
	case transports(&cfg) > 1:
		return cfg, errors.New("--socket-path, --fd and --mountpoint exclude each other")
	case cfg.posixACL && !cfg.xattr:
		return cfg, errors.New("--posix-acl requires --xattr")
	}
	return cfg, nil
}

// transports counts the transports the command line names.
func transports(cfg *config) int {
	n := 0
	for _, set := range []bool{cfg.socketPath != "", cfg.fd >= 0, cfg.mountpoint != ""} {
		if set {
			n++
		}
	}
	return n
}

// doubleDash rewrites the flag package's "-name" in its messages to the
// "--name" spelling of our documentation.
func doubleDash(msg string) string {
	for _, p := range []string{"flag: -", "flag -", "defined: -", "argument: -", " for -"} {
		msg = strings.Replace(msg, p, p+"-", 1)
	}
	return msg
}

// usage writes the help text.
func usage(w io.Writer) {
	var cfg config
	fs := newFlagSet(&cfg)
	fmt.Fprintf(w, "usage: %s --shared-dir DIR (--socket-path SOCK | --fd N | --mountpoint MNT) [options]\n\n", progName)
	fmt.Fprintf(w, "Shares DIR with a VM as a vhost-user-fs backend on SOCK (or the listening\nsocket N), or on the host mount point MNT over /dev/fuse.\n\noptions:\n")
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		if arg != "" {
			arg = " " + strings.ToUpper(arg)
		}
		fmt.Fprintf(w, "  --%s%s\n        %s\n", f.Name, arg, help)
	})
}

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
	if cfg.noReaddirplus {
		opts.Disable |= fuseproto.InitDoReaddirplus | fuseproto.InitReaddirplusAuto
	}
	if !cfg.announceSubmounts {
		opts.Disable |= fuseproto.InitSubmounts
	}
	return opts
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the daemon: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: progName, Level: cfg.logLevel, Output: stderr})
	fail := func(err error) int {
		log.Error(err.Error())
		if cfg.logLevel == hclog.Off {
			fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		}
		return 1
	}

	// Take the signals before mounting, so that one arriving meanwhile
	// still unmounts.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	fs, err := passthrough.New(cfg.sharedDir, passthrough.Options{
		Cache:             cfg.cache,
		Xattr:             cfg.xattr,
		ReadOnly:          cfg.readonly,
		AnnounceSubmounts: cfg.announceSubmounts,
		AllowDirectIO:     cfg.allowDirectIO,
		Logger:            log.Named("passthrough"),
	})
	if err != nil {
		return fail(err)
	}
	defer fs.Close()
	srv := fuseproto.NewServer(fs, serverOptions(&cfg, log))
	if cfg.mountpoint == "" {
		return serveVhostUser(&cfg, srv, log, sigs, fail)
	}

	m, err := devfuse.Mount(cfg.mountpoint, devfuse.MountOptions{
		Source:             cfg.sharedDir,
		ReadOnly:           cfg.readonly,
		AllowOther:         true,
		DefaultPermissions: true,
		Logger:             log.Named("devfuse"),
	})
	if err != nil {
		return fail(err)
	}
	defer m.Close()

	done := make(chan error, 1)
	go func() { done <- m.Serve(srv, cfg.threads) }()
	log.Info("serving", "shared-dir", cfg.sharedDir, "mountpoint", m.Path(), "cache", cfg.cache.String(), "threads", cfg.threads)

	select {
	case err := <-done:
		if err != nil {
			return fail(err)
		}
		log.Info("unmounted; exiting")
		return 0
	case sig := <-sigs:
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

// serveVhostUser runs the virtio-fs device on the --socket-path or --fd
// listener until the front-end disconnects (or, with --keep-serving, until a
// signal).
func serveVhostUser(cfg *config, srv *fuseproto.Server, log hclog.Logger, sigs <-chan os.Signal, fail func(error) int) int {
	l, cleanup, err := listen(cfg)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- virtiofs.ListenAndServe(ctx, l, srv, virtiofs.Options{
			Tag:            cfg.tag,
			RequestQueues:  cfg.requestQueues,
			ThreadPoolSize: cfg.threads,
			QueueSize:      cfg.queueSize,
			KeepServing:    cfg.keepServing,
			Logger:         log.Named("virtiofs"),
		})
	}()
	log.Info("waiting for the vhost-user front-end", "socket", l.Addr().String(), "shared-dir", cfg.sharedDir,
		"cache", cfg.cache.String(), "request-queues", cfg.requestQueues)
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
	if st, err := os.Lstat(cfg.socketPath); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("--socket-path %s exists and is not a socket", cfg.socketPath)
		}
		os.Remove(cfg.socketPath)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.socketPath, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", cfg.socketPath, err)
	}
	ul.SetUnlinkOnClose(true)
	return ul, func() { ul.Close() }, nil
}
