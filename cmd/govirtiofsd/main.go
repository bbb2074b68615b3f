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
	"github.com/govirtiofs/govirtiofs/fuseproto/virtiofs"
	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/internal/seccomp"
	"github.com/govirtiofs/govirtiofs/overlay"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/uidmap"
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
	overlay           *overlay.Config // --overlay: serve this union instead of sharedDir
	source            string          // the mount's source as mount(8) shows it; "" for sharedDir or "overlay"
	mountpoint        string
	mountFlags        mountFlags // per-mount flags from -o in the mount(8) convention
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

	// Identity and isolation.
	sandbox      sandbox.Mode
	seccomp      seccomp.Action
	modcaps      string
	rlimitNofile uint64
	rlimitSet    bool             // --rlimit-nofile given
	uidMap       []uidmap.NSRange // --uid-map: the user namespace's uid map
	gidMap       []uidmap.NSRange // --gid-map
	translateUID []string         // --translate-uid rules
	translateGID []string         // --translate-gid rules
	uids, gids   *uidmap.Map      // the parsed --translate-uid/--translate-gid
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
// overlayOpts, if not nil, receives the --overlay value.
func newFlagSet(cfg *config, overlayOpts *string) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if overlayOpts == nil {
		overlayOpts = new(string)
	}
	fs.StringVar(&cfg.sharedDir, "shared-dir", "", "the host `directory` to share (this or --overlay is required)")
	fs.StringVar(overlayOpts, "overlay", "", "share the union of overlay layers these overlayfs `options` describe instead: lowerdir=L1:L2[,upperdir=U,workdir=W][,userxattr,redirect_dir=on|off,index=on|off,metacopy=on|off,...]")
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
	fs.BoolVar(&cfg.xattr, "xattr", false, "enable extended attributes (an --overlay uses its layers' xattrs whatever this says)")
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
	fs.Func("sandbox", "sandbox `mechanism`: namespace (new mount, PID, network and IPC namespaces with an empty root), chroot (into the shared directory, for containers) or none (default namespace)", func(s string) error {
		m, err := sandbox.ParseMode(s)
		if err != nil {
			return err
		}
		cfg.sandbox = m
		return nil
	})
	fs.Func("seccomp", "`action` for a system call outside the daemon's allow-list: kill, log, trap or none (default kill)", func(s string) error {
		a, err := seccomp.ParseAction(s)
		if err != nil {
			return err
		}
		cfg.seccomp = a
		return nil
	})
	fs.StringVar(&cfg.modcaps, "modcaps", "", "change the capabilities the daemon keeps: `+cap:-cap...`, e.g. +sys_admin:-mknod")
	fs.Func("rlimit-nofile", "set the open-file limit to `N` (0 leaves it unchanged; default: raise it to 1000000 or fs.nr_open)", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errors.New("want a number, 0 or more")
		}
		cfg.rlimitNofile, cfg.rlimitSet = n, true
		return nil
	})
	fs.Func("uid-map", "run unprivileged in a user namespace with this uid `:inside:outside:count:` range (several allowed; newuidmap writes them)", func(s string) error {
		r, err := uidmap.ParseNSRange(s)
		if err != nil {
			return err
		}
		cfg.uidMap = append(cfg.uidMap, r)
		return nil
	})
	fs.Func("gid-map", "the user namespace's gid `:inside:outside:count:` ranges, as --uid-map", func(s string) error {
		r, err := uidmap.ParseNSRange(s)
		if err != nil {
			return err
		}
		cfg.gidMap = append(cfg.gidMap, r)
		return nil
	})
	fs.Func("translate-uid", "translate uids between guest and host: `TYPE:...` with TYPE guest, host, squash-guest, squash-host, forbid-guest or map (several allowed)", func(s string) error {
		cfg.translateUID = append(cfg.translateUID, s)
		_, err := uidmap.Parse([]string{s})
		return err
	})
	fs.Func("translate-gid", "translate gids between guest and host, as --translate-uid (`TYPE:...`)", func(s string) error {
		cfg.translateGID = append(cfg.translateGID, s)
		_, err := uidmap.Parse([]string{s})
		return err
	})
	return fs
}

// parseFlags parses the command line (without the program name). It
// returns flag.ErrHelp for -h or --help, and otherwise a one-line error
// for anything wrong.
func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	var overlayOpts string
	fs := newFlagSet(&cfg, &overlayOpts)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errors.New(doubleDash(err.Error()))
	}
	overlaySet := false
	fs.Visit(func(f *flag.Flag) { overlaySet = overlaySet || f.Name == "overlay" })
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case cfg.sharedDir != "" && overlaySet:
		return cfg, errors.New("--shared-dir and --overlay exclude each other")
	case cfg.sharedDir == "" && !overlaySet:
		return cfg, errors.New("--shared-dir or --overlay is required")
	case transports(&cfg) == 0:
		return cfg, errors.New("one of --socket-path, --fd or --mountpoint is required")
	case transports(&cfg) > 1:
		return cfg, errors.New("--socket-path, --fd and --mountpoint exclude each other")
	}
	if overlaySet {
		oc, err := overlay.ParseConfig(overlayOpts)
		if err != nil {
			return cfg, err
		}
		cfg.overlay = &oc
	}
	return cfg, checkConfig(&cfg, "--")
}

// defaultConfig returns the configuration before any option.
func defaultConfig() config {
	return config{cache: passthrough.CacheAuto, threads: defaultThreads, logLevel: hclog.Info,
		fd: -1, queueSize: 1024, requestQueues: defaultRequestQueues,
		sandbox: sandbox.Namespace, seccomp: seccomp.Kill}
}

// checkConfig checks the options against each other, naming them with
// prefix ("--" for the flags, "-o " for mount options).
func checkConfig(cfg *config, prefix string) error {
	name := func(flag string) string {
		if prefix != "--" {
			flag = strings.ReplaceAll(flag, "-", "_")
		}
		return prefix + flag
	}
	switch {
	case cfg.posixACL && !cfg.xattr:
		return fmt.Errorf("%s requires %s", name("posix-acl"), name("xattr"))
	case cfg.overlay != nil && cfg.allowDirectIO:
		return fmt.Errorf("%s does not apply to an overlay", name("allow-direct-io"))
	case cfg.overlay != nil && cfg.announceSubmounts:
		return fmt.Errorf("%s does not apply to an overlay", name("announce-submounts"))
	case (len(cfg.uidMap) > 0 || len(cfg.gidMap) > 0) && cfg.sandbox != sandbox.Namespace:
		return fmt.Errorf("%s and %s need %s namespace", name("uid-map"), name("gid-map"), name("sandbox"))
	}
	if err := uidmap.CheckNSRanges(cfg.uidMap); err != nil {
		return fmt.Errorf("%s: %v", name("uid-map"), err)
	}
	if err := uidmap.CheckNSRanges(cfg.gidMap); err != nil {
		return fmt.Errorf("%s: %v", name("gid-map"), err)
	}
	var err error
	if len(cfg.translateUID) > 0 {
		if cfg.uids, err = uidmap.Parse(cfg.translateUID); err != nil {
			return fmt.Errorf("%s: %v", name("translate-uid"), err)
		}
	}
	if len(cfg.translateGID) > 0 {
		if cfg.gids, err = uidmap.Parse(cfg.translateGID); err != nil {
			return fmt.Errorf("%s: %v", name("translate-gid"), err)
		}
	}
	if _, err := cfg.capabilities(); err != nil {
		return fmt.Errorf("%s: %v", name("modcaps"), err)
	}
	return nil
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
	fs := newFlagSet(&cfg, nil)
	fmt.Fprintf(w, "usage: %s (--shared-dir DIR | --overlay OVERLAY-OPTIONS) (--socket-path SOCK | --fd N | --mountpoint MNT) [options]\n", progName)
	fmt.Fprintf(w, "       %s SOURCE MOUNTPOINT [-o OPTIONS]... [-f]    (mount(8)'s convention; see below)\n\n", progName)
	fmt.Fprintf(w, "Shares DIR, or the union of overlay layers, with a VM as a vhost-user-fs\nbackend on SOCK (or the listening socket N), or on the host mount point MNT\nover /dev/fuse.\n\noptions:\n")
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
	fmt.Fprint(w, mountUsage)
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
	_, toSyslog := stderr.(syslogWriter) // syslog adds the time itself
	log := hclog.New(&hclog.LoggerOptions{Name: progName, Level: cfg.logLevel, Output: stderr, DisableTime: toSyslog})
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
	if t.session == nil {
		return serveVhostUser(cfg, t.listener, srv, log, sigs, fail, ready)
	}

	m := t.session
	done := make(chan error, 1)
	go func() { done <- m.Serve(srv, cfg.threads) }()
	k, v := cfg.what()
	log.Info("serving", k, v, "mountpoint", m.Path(), "cache", cfg.cache.String(), "threads", cfg.threads,
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
		Cache:             cfg.cache,
		Xattr:             cfg.xattr,
		ReadOnly:          cfg.readonly,
		AnnounceSubmounts: cfg.announceSubmounts,
		AllowDirectIO:     cfg.allowDirectIO,
		Logger:            log.Named("passthrough"),
	})
	if err != nil {
		return nil, err
	}
	return fs, nil
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
func serveVhostUser(cfg *config, l *net.UnixListener, srv *fuseproto.Server, log hclog.Logger, sigs <-chan os.Signal, fail func(error) int, ready func(error)) int {
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
	k, v := cfg.what()
	log.Info("waiting for the vhost-user front-end", "socket", l.Addr().String(), k, v,
		"cache", cfg.cache.String(), "request-queues", cfg.requestQueues,
		"sandbox", cfg.sandbox.String(), "seccomp", cfg.seccomp.String())
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
