package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto/virtiofs"
	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/internal/seccomp"
	"github.com/govirtiofs/govirtiofs/overlay"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/uidmap"
)

// version is what --version prints.
const version = "0.6.0"

// defaultReaders is how many /dev/fuse readers wait for requests when
// --thread-pool-size is 0 (its default, as virtiofsd's).
const defaultReaders = 4

// defaultRequestQueues is the default --request-queues: how many request
// queues the virtio-fs device offers (QEMU's num-request-queues and Cloud
// Hypervisor's num_queues may ask for up to this many).
const defaultRequestQueues = 16

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
	threads           int // --thread-pool-size; 0: the default sizing
	logLevel          hclog.Level
	allowDirectIO     bool
	allowMmap         bool
	writeback         bool
	posixACL          bool
	noReaddirplus     bool
	noFusePassthrough bool // --no-fuse-passthrough
	// fusePassthrough: decided at start (passthroughUsable); INIT offers
	// FUSE_PASSTHROUGH and the daemon keeps CAP_SYS_ADMIN for it.
	fusePassthrough   bool
	announceSubmounts bool
	socketPath        string
	listen            streamAddr // --listen, --vsock-port: the stream transport
	socketGroup       string
	fd                int // -1: none
	tag               string
	queueSize         int
	requestQueues     int
	keepServing       bool
	syslog            bool
	killprivV2        bool
	securityLabel     bool
	preserveNoatime   bool
	noFlock           bool    // -o no_flock: the guest kernel keeps flock locks local
	noPosixLock       bool    // -o no_posix_lock: the guest kernel keeps POSIX locks local
	timeout           *uint64 // -o timeout=: entry and attribute timeout (seconds) instead of the cache policy's
	xattrMapRules     string
	xattrMap          xattrMapper // the parsed --xattrmap; nil: none
	fileHandles       string      // --inode-file-handles: never, prefer or mandatory
	printCapabilities bool
	printVersion      bool
	deprecated        []string // deprecated spellings used, warned about at start

	// Migration (vhost-user device state).
	migrationMode          string // find-paths or file-handles
	migrationOnError       string // abort or guest-error
	migrationVerifyHandles bool
	migrationConfirmPaths  bool

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

// logLevels are the --log-level names, virtiofsd's.
var logLevels = map[string]hclog.Level{
	"off":   hclog.Off,
	"error": hclog.Error,
	"warn":  hclog.Warn,
	"info":  hclog.Info,
	"debug": hclog.Debug,
	"trace": hclog.Trace,
}

// helpGroups are the sections of --help, in order, with the options in
// each. Every option is in exactly one (TestHelpGroups checks).
var helpGroups = []struct {
	title string
	flags []string
}{
	{"Share", []string{"shared-dir", "overlay", "readonly", "announce-submounts", "no-announce-submounts", "inode-file-handles", "tag"}},
	{"Transport (one of --socket-path, --fd, --mountpoint, --listen, --vsock-port)", []string{"socket-path", "socket", "socket-group", "fd", "mountpoint", "listen", "vsock-port", "request-queues", "queue-size", "keep-serving", "print-capabilities"}},
	{"Cache and performance", []string{"cache", "allow-mmap", "writeback", "allow-direct-io", "no-readdirplus", "no-fuse-passthrough", "thread-pool-size", "preserve-noatime"}},
	{"Security", []string{"sandbox", "seccomp", "modcaps", "rlimit-nofile", "xattr", "xattrmap", "posix-acl", "security-label", "killpriv-v2", "no-killpriv-v2"}},
	{"Identity", []string{"translate-uid", "translate-gid", "uid-map", "gid-map"}},
	{"Logging", []string{"log-level", "syslog"}},
	{"Migration (QEMU live migration of the vhost-user-fs device)", []string{"migration-mode", "migration-on-error", "migration-verify-handles", "migration-confirm-paths"}},
	{"Compatibility (deprecated spellings of the legacy C daemon)", []string{"o", "d", "f", "version", "V"}},
}

// newFlagSet returns the command line's flags, writing into cfg, which
// holds the defaults. overlayOpts, if not nil, receives the --overlay
// value. Every usage text names the option's default.
func newFlagSet(cfg *config, overlayOpts *string) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if overlayOpts == nil {
		overlayOpts = new(string)
	}

	// Share.
	fs.StringVar(&cfg.sharedDir, "shared-dir", "", "the host `directory` to share [default: none; this, -o source= or --overlay is required]")
	fs.StringVar(overlayOpts, "overlay", "", "share the union of overlay layers these overlayfs `options` describe instead: lowerdir=L1:L2[,upperdir=U,workdir=W][,userxattr,redirect_dir=on|off,index=on|off,metacopy=on|off,...] [default: none]")
	fs.BoolVar(&cfg.readonly, "readonly", false, "refuse every change to the share (EROFS) [default: read-write]")
	fs.BoolVar(&cfg.announceSubmounts, "announce-submounts", true, "tell the guest which directories are host mount points, so they get their own st_dev [default: on]")
	fs.BoolFunc("no-announce-submounts", "do not announce submounts [default: announce them]", func(s string) error {
		b, err := strconv.ParseBool(s)
		cfg.announceSubmounts = !b
		return err
	})
	fs.Func("inode-file-handles", "how inodes are held (`mode`): never (an O_PATH descriptor each), prefer (file handles where the filesystem has them, descriptors elsewhere; fallback is a deprecated alias) or mandatory (file handles only) [default: never]", func(s string) error {
		switch s {
		case "fallback":
			cfg.deprecated = append(cfg.deprecated, "--inode-file-handles=fallback: use prefer")
			s = "prefer"
		case "never", "prefer", "mandatory":
		default:
			return errors.New("want never, prefer or mandatory")
		}
		cfg.fileHandles = s
		return nil
	})
	fs.Func("tag", "virtio-fs `tag` served in the config space, 1 to 36 bytes (offers the CONFIG protocol feature) [default: none, the VMM supplies it]", func(s string) error {
		if len(s) == 0 || len(s) > virtiofs.TagSize {
			return fmt.Errorf("want 1 to %d bytes", virtiofs.TagSize)
		}
		cfg.tag = s
		return nil
	})

	// Transport.
	fs.StringVar(&cfg.socketPath, "socket-path", "", "listen for the VMM's vhost-user connection on this unix socket `path`; a PATH.pid file locks it [default: none]")
	fs.Func("socket", "deprecated spelling of --socket-path `path` [default: none]", func(s string) error {
		cfg.socketPath = s
		cfg.deprecated = append(cfg.deprecated, "--socket: use --socket-path")
		return nil
	})
	fs.StringVar(&cfg.socketGroup, "socket-group", "", "give the --socket-path socket to this `group` and let the group connect [default: owner only]")
	fs.Func("fd", "serve the vhost-user connection on this already listening socket `fd`, as libvirt and Kata pass it [default: none]", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a file descriptor number")
		}
		cfg.fd = n
		return nil
	})
	fs.StringVar(&cfg.mountpoint, "mountpoint", "", "serve the share on this host `directory` over /dev/fuse instead [default: none]")
	fs.Func("listen", "serve FUSE sessions over a stream, for govirtiofs-guest: `address` unix:PATH (the socket Firecracker and Cloud Hypervisor connect a guest's vsock port to, or a QEMU virtio-serial chardev) or vsock:PORT [default: none]", func(s string) error {
		a, err := parseStreamAddr(s)
		if err != nil {
			return err
		}
		cfg.listen = a
		return nil
	})
	fs.Func("vsock-port", "serve FUSE sessions over AF_VSOCK on this `port`, for govirtiofs-guest; the same as --listen vsock:PORT [default: none]", func(s string) error {
		a, err := parseStreamAddr("vsock:" + s)
		if err != nil {
			return err
		}
		cfg.listen = a
		return nil
	})
	fs.Func("request-queues", "`number` of virtio-fs request queues offered, 1 to "+strconv.Itoa(virtiofs.MaxRequestQueues)+" [default: "+strconv.Itoa(defaultRequestQueues)+"]", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > virtiofs.MaxRequestQueues {
			return fmt.Errorf("want 1 to %d", virtiofs.MaxRequestQueues)
		}
		cfg.requestQueues = n
		return nil
	})
	fs.Func("queue-size", "largest virtqueue `size` accepted, a power of 2 [default: 1024]", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 32768 || n&(n-1) != 0 {
			return errors.New("want a power of 2 up to 32768")
		}
		cfg.queueSize = n
		return nil
	})
	fs.BoolVar(&cfg.keepServing, "keep-serving", false, "after the VMM disconnects, wait for a new connection [default: exit 0]")
	fs.BoolVar(&cfg.printCapabilities, "print-capabilities", false, "print the vhost-user backend capabilities (JSON, as libvirt reads them) and exit [default: off]")

	// Cache and performance.
	fs.Func("cache", "caching `policy`: never, metadata, auto or always [default: auto]", func(s string) error {
		p, err := passthrough.ParseCachePolicy(s)
		if err != nil {
			return errors.New("want never, metadata, auto or always")
		}
		cfg.cache = p
		return nil
	})
	fs.BoolVar(&cfg.allowMmap, "allow-mmap", false, "with --cache never or metadata, let the guest mmap files shared (FUSE_DIRECT_IO_ALLOW_MMAP); only when the guest has the directory to itself [default: off]")
	fs.BoolVar(&cfg.writeback, "writeback", false, "enable the guest's writeback cache [default: off]")
	fs.BoolVar(&cfg.allowDirectIO, "allow-direct-io", false, "honour O_DIRECT from the guest on host files [default: off, dropped]")
	fs.BoolVar(&cfg.noReaddirplus, "no-readdirplus", false, "disable READDIRPLUS [default: enabled, except with --cache never]")
	fs.BoolVar(&cfg.noFusePassthrough, "no-fuse-passthrough", false, "with --mountpoint, serve READ and WRITE in the daemon instead of letting the kernel do them on the host files (FUSE passthrough, Linux 6.9+; used with --cache auto or always, without --writeback, when the daemon runs as root outside a user namespace; it keeps CAP_SYS_ADMIN for it) [default: passthrough where possible]")
	fs.Func("thread-pool-size", "`number` of request workers kept ready; more start while requests block. 0, as in virtiofsd, serves each virtio request queue on its own thread without a pool (4 readers on /dev/fuse) [default: 0]", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a number, 0 or more")
		}
		cfg.threads = n
		return nil
	})
	fs.BoolVar(&cfg.preserveNoatime, "preserve-noatime", false, "keep O_NOATIME on the guest's opens [default: cleared, so an unprivileged daemon does not fail with EPERM]")

	// Security.
	fs.Func("sandbox", "sandbox `mechanism`: namespace (new mount, PID, network and IPC namespaces with an empty root), chroot (into the share, for containers) or none [default: namespace]", func(s string) error {
		m, err := sandbox.ParseMode(s)
		if err != nil {
			return err
		}
		cfg.sandbox = m
		return nil
	})
	fs.Func("seccomp", "`action` for a system call outside the daemon's allow-list: kill, log, trap or none [default: kill]", func(s string) error {
		a, err := seccomp.ParseAction(s)
		if err != nil {
			return err
		}
		cfg.seccomp = a
		return nil
	})
	fs.StringVar(&cfg.modcaps, "modcaps", "", "change the capabilities kept: `+cap:-cap...`, e.g. +sys_admin:-mknod [default: chown, dac_override, fowner, fsetid, setgid, setuid, mknod, setfcap, linux_immutable, and dac_read_search with file handles]")
	fs.Func("rlimit-nofile", "set the open-file limit to `N` (0 leaves it unchanged) [default: 1000000, or fs.nr_open if lower]", func(s string) error {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return errors.New("want a number, 0 or more")
		}
		cfg.rlimitNofile, cfg.rlimitSet = n, true
		return nil
	})
	fs.BoolVar(&cfg.xattr, "xattr", false, "enable extended attributes (an --overlay uses its layers' own xattrs whatever this says) [default: off]")
	fs.Func("xattrmap", "translate xattr names between guest and host by these `rules`, e.g. :map::user.virtiofs.: (implies --xattr) [default: none]", func(s string) error {
		m, err := parseXattrMap(s)
		if err != nil {
			return err
		}
		cfg.xattrMapRules, cfg.xattrMap = s, m
		return nil
	})
	fs.BoolVar(&cfg.posixACL, "posix-acl", false, "enable POSIX ACLs (implies --xattr) [default: off]")
	fs.BoolVar(&cfg.securityLabel, "security-label", false, "store the security label (e.g. SELinux) the guest sends with each new file (implies --xattr) [default: off]")
	fs.BoolVar(&cfg.killprivV2, "killpriv-v2", false, "clear set-user-ID, set-group-ID and security.capability on write, truncate and chown in the daemon (FUSE_HANDLE_KILLPRIV_V2) [default: off]")
	fs.BoolFunc("no-killpriv-v2", "leave killpriv to the guest kernel [default]", func(s string) error {
		b, err := strconv.ParseBool(s)
		cfg.killprivV2 = !b
		return err
	})

	// Identity.
	fs.Func("translate-uid", "translate uids between guest and host: `TYPE:...`, TYPE guest, host, squash-guest, squash-host, forbid-guest or map (repeatable) [default: none]", func(s string) error {
		cfg.translateUID = append(cfg.translateUID, s)
		_, err := uidmap.Parse([]string{s})
		return err
	})
	fs.Func("translate-gid", "translate gids between guest and host, as --translate-uid (`TYPE:...`) [default: none]", func(s string) error {
		cfg.translateGID = append(cfg.translateGID, s)
		_, err := uidmap.Parse([]string{s})
		return err
	})
	fs.Func("uid-map", "run in a user namespace with this uid `:inside:outside:count:` range (repeatable; newuidmap writes them) [default: none]", func(s string) error {
		r, err := uidmap.ParseNSRange(s)
		if err != nil {
			return err
		}
		cfg.uidMap = append(cfg.uidMap, r)
		return nil
	})
	fs.Func("gid-map", "the user namespace's gid `:inside:outside:count:` ranges, as --uid-map [default: none]", func(s string) error {
		r, err := uidmap.ParseNSRange(s)
		if err != nil {
			return err
		}
		cfg.gidMap = append(cfg.gidMap, r)
		return nil
	})

	// Logging.
	fs.Func("log-level", "log `level`: off, error, warn, info, debug or trace [default: info]", func(s string) error {
		l, ok := logLevels[s]
		if !ok {
			return errors.New("want off, error, warn, info, debug or trace")
		}
		cfg.logLevel = l
		return nil
	})
	fs.BoolVar(&cfg.syslog, "syslog", false, "log to the system log (/dev/log) [default: stderr]")

	// Migration.
	fs.Func("migration-mode", "how inodes travel to the destination (`mode`): find-paths (as paths in the share, found from the daemon's records and checked) or file-handles (as file handles; same filesystem, needs dac_read_search on the destination) [default: find-paths]", func(s string) error {
		if s != "find-paths" && s != "file-handles" {
			return errors.New("want find-paths or file-handles")
		}
		cfg.migrationMode = s
		return nil
	})
	fs.Func("migration-on-error", "what the destination does with an inode it cannot open (`action`): abort (fail the migration) or guest-error (finish; the guest gets errors for that inode) [default: abort]", func(s string) error {
		if s != "abort" && s != "guest-error" {
			return errors.New("want abort or guest-error")
		}
		cfg.migrationOnError = s
		return nil
	})
	fs.BoolVar(&cfg.migrationVerifyHandles, "migration-verify-handles", false, "find-paths: send file handles too, and the destination checks it opened the very same inodes (same filesystem only) [default: off]")
	fs.BoolVar(&cfg.migrationConfirmPaths, "migration-confirm-paths", false, "find-paths: check every path again at switch-over and correct it if the host renamed it [default: off]")

	// Compatibility.
	fs.Func("o", "legacy `options`, comma-separated: source=DIR, cache=auto|always|none|metadata, xattr, no_xattr, xattrmap=RULES, posix_acl, no_posix_acl, security_label, no_security_label, readdirplus, no_readdirplus, writeback, no_writeback, allow_direct_io, no_allow_direct_io, announce_submounts, killpriv_v2, no_killpriv_v2, flock, no_flock, posix_lock, no_posix_lock, timeout=SECONDS, sandbox=namespace|chroot, modcaps=CAPS, log_level=LEVEL, max_idle_threads=N, allow_root, debug (deprecated) [default: none]", func(s string) error {
		if !cfg.compatSeen() {
			cfg.deprecated = append(cfg.deprecated, "-o: give the options as --flags")
		}
		return cfg.compatOptions(s)
	})
	fs.BoolFunc("d", "log at debug level (deprecated: use --log-level debug) [default: off]", func(s string) error {
		b, err := strconv.ParseBool(s)
		if b {
			cfg.logLevel = hclog.Debug
		}
		return err
	})
	fs.BoolFunc("f", "run in the foreground; no effect, the daemon always does (deprecated) [default: on]", func(string) error { return nil })
	fs.BoolVar(&cfg.printVersion, "version", false, "print the version and exit [default: off]")
	fs.BoolVar(&cfg.printVersion, "V", false, "print the version and exit, as --version [default: off]")
	return fs
}

// compatSeen reports whether -o was already given (so the deprecation is
// warned about once).
func (cfg *config) compatSeen() bool {
	for _, d := range cfg.deprecated {
		if strings.HasPrefix(d, "-o:") {
			return true
		}
	}
	return false
}

// compatOptions applies one -o argument: the legacy C virtiofsd's options
// (and the Rust one's, which accepts a subset), comma-separated.
func (cfg *config) compatOptions(s string) error {
	for _, opt := range strings.Split(s, ",") {
		if err := cfg.compatOption(opt); err != nil {
			return err
		}
	}
	return nil
}

// compatOption applies one legacy option.
func (cfg *config) compatOption(opt string) error {
	key, val, hasVal := strings.Cut(opt, "=")
	bad := func(want string) error { return fmt.Errorf("-o %s: want %s", opt, want) }
	if hasVal {
		switch key {
		case "source":
			if val == "" {
				return bad("a directory")
			}
			cfg.sharedDir = val
		case "cache":
			p, err := passthrough.ParseCachePolicy(val)
			if val == "none" {
				p, err = passthrough.CacheNever, nil
			}
			if err != nil {
				return bad("auto, always, none or metadata")
			}
			cfg.cache = p
		case "xattrmap":
			m, err := parseXattrMap(val)
			if err != nil {
				return fmt.Errorf("-o xattrmap: %v", err)
			}
			cfg.xattrMapRules, cfg.xattrMap = val, m
		case "loglevel", "log_level":
			l, ok := logLevels[val]
			if val == "err" {
				l, ok = hclog.Error, true
			}
			if !ok {
				return bad("debug, info, warn or err")
			}
			cfg.logLevel = l
		case "sandbox":
			m, err := sandbox.ParseMode(val)
			if err != nil {
				return bad("namespace, chroot or none")
			}
			cfg.sandbox = m
		case "modcaps":
			cfg.modcaps = val
		case "timeout":
			secs, err := strconv.ParseFloat(val, 64)
			if err != nil || secs < 0 || secs > 1e9 {
				return bad("seconds, 0 or more")
			}
			n := uint64(secs + 0.5)
			cfg.timeout = &n
		case "max_idle_threads", "thread_pool_size":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return bad("a number, 0 or more")
			}
			cfg.threads = n
		default:
			return fmt.Errorf("-o %s: unknown option", opt)
		}
		return nil
	}
	switch opt {
	case "xattr", "no_xattr":
		cfg.xattr = opt == "xattr"
	case "posix_acl", "no_posix_acl":
		cfg.posixACL = opt == "posix_acl"
	case "security_label", "no_security_label":
		cfg.securityLabel = opt == "security_label"
	case "readdirplus", "no_readdirplus":
		cfg.noReaddirplus = opt == "no_readdirplus"
	case "writeback", "no_writeback":
		cfg.writeback = opt == "writeback"
	case "allow_direct_io", "no_allow_direct_io":
		cfg.allowDirectIO = opt == "allow_direct_io"
	case "announce_submounts", "no_announce_submounts":
		cfg.announceSubmounts = opt == "announce_submounts"
	case "killpriv_v2", "no_killpriv_v2":
		cfg.killprivV2 = opt == "killpriv_v2"
	case "flock", "no_flock":
		cfg.noFlock = opt == "no_flock"
	case "posix_lock", "no_posix_lock":
		cfg.noPosixLock = opt == "no_posix_lock"
	case "debug":
		cfg.logLevel = hclog.Debug
	case "allow_root", "":
		// allow_root: the guest's root may always access the share.
	default:
		return fmt.Errorf("-o %s: unknown option", opt)
	}
	return nil
}

// parseFlags parses the command line (without the program name). It
// returns flag.ErrHelp for -h or --help, and otherwise a one-line error
// for anything wrong. With --print-capabilities or --version nothing else
// is required.
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
	case cfg.printCapabilities || cfg.printVersion:
		return cfg, nil
	case cfg.sharedDir != "" && overlaySet:
		return cfg, errors.New("--shared-dir and --overlay exclude each other")
	case cfg.sharedDir == "" && !overlaySet:
		return cfg, errors.New("--shared-dir (or -o source=) or --overlay is required")
	case transports(&cfg) == 0:
		return cfg, errors.New("one of --socket-path, --fd, --mountpoint or --listen is required")
	case transports(&cfg) > 1:
		return cfg, errors.New("--socket-path, --fd, --mountpoint and --listen (--vsock-port) exclude each other")
	case cfg.socketGroup != "" && cfg.socketPath == "" && cfg.listen.network != "unix":
		return cfg, errors.New("--socket-group applies only to --socket-path and --listen unix:PATH")
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

// defaultConfig returns the configuration before any option: virtiofsd's
// defaults.
func defaultConfig() config {
	return config{cache: passthrough.CacheAuto, logLevel: hclog.Info,
		fd: -1, queueSize: 1024, requestQueues: defaultRequestQueues,
		announceSubmounts: true, fileHandles: "never",
		migrationMode: "find-paths", migrationOnError: "abort",
		sandbox: sandbox.Namespace, seccomp: seccomp.Kill}
}

// checkConfig checks the options against each other, naming them with
// prefix ("--" for the flags, "-o " for mount options), and applies the
// implications (--posix-acl, --security-label and --xattrmap imply --xattr).
func checkConfig(cfg *config, prefix string) error {
	name := func(flag string) string {
		if prefix != "--" {
			flag = strings.ReplaceAll(flag, "-", "_")
		}
		return prefix + flag
	}
	cfg.xattr = cfg.xattr || cfg.posixACL || cfg.securityLabel || cfg.xattrMap != nil
	switch {
	case cfg.overlay != nil && cfg.allowDirectIO:
		return fmt.Errorf("%s does not apply to an overlay", name("allow-direct-io"))
	case (len(cfg.uidMap) > 0 || len(cfg.gidMap) > 0) && cfg.sandbox != sandbox.Namespace:
		return fmt.Errorf("%s and %s need %s namespace", name("uid-map"), name("gid-map"), name("sandbox"))
	case cfg.migrationMode == "file-handles" && cfg.migrationConfirmPaths:
		return fmt.Errorf("%s does not apply to %s file-handles", name("migration-confirm-paths"), name("migration-mode"))
	case cfg.migrationMode == "file-handles" && cfg.migrationVerifyHandles:
		return fmt.Errorf("%s does not apply to %s file-handles", name("migration-verify-handles"), name("migration-mode"))
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

// readers is the number of /dev/fuse readers: --thread-pool-size, or
// defaultReaders for 0.
func (cfg *config) readers() int {
	if cfg.threads == 0 {
		return defaultReaders
	}
	return cfg.threads
}

// transports counts the transports the command line names.
func transports(cfg *config) int {
	n := 0
	for _, set := range []bool{cfg.socketPath != "", cfg.fd >= 0, cfg.mountpoint != "", cfg.listen.network != ""} {
		if set {
			n++
		}
	}
	return n
}

// doubleDash rewrites the flag package's "-name" in its messages to the
// "--name" spelling of our documentation (single-letter flags keep one).
func doubleDash(msg string) string {
	for _, p := range []string{"flag: -", "flag -", "defined: -", "argument: -", " for -"} {
		i := strings.Index(msg, p)
		if i < 0 {
			continue
		}
		rest := msg[i+len(p):]
		end := strings.IndexAny(rest, " :")
		if end < 0 {
			end = len(rest)
		}
		if end > 1 {
			msg = msg[:i+len(p)] + "-" + rest
		}
		break
	}
	return msg
}

// usage writes the help text: the options by group, each with its default.
func usage(w io.Writer) {
	var cfg config
	fs := newFlagSet(&cfg, nil)
	fmt.Fprintf(w, "usage: %s (--shared-dir DIR | --overlay OVERLAY-OPTIONS) (--socket-path SOCK | --fd N | --mountpoint MNT | --listen unix:PATH | --vsock-port PORT) [options]\n", progName)
	fmt.Fprintf(w, "       %s --print-capabilities\n", progName)
	fmt.Fprintf(w, "       %s SOURCE MOUNTPOINT [-o OPTIONS]... [-f]    (mount(8)'s convention; see the end)\n\n", progName)
	fmt.Fprintf(w, "Shares DIR, or the union of overlay layers, with a VM as a vhost-user-fs\nbackend on SOCK (or the listening socket N), or on the host mount point MNT\nover /dev/fuse. Options follow virtiofsd's: --opt VALUE or --opt=VALUE.\n")
	for _, g := range helpGroups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, n := range g.flags {
			f := fs.Lookup(n)
			arg, help := flag.UnquoteUsage(f)
			if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
				arg = ""
			}
			if arg != "" {
				arg = " " + strings.ToUpper(arg)
			}
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			fmt.Fprintf(w, "  %s%s%s\n", dash, n, arg)
			for _, line := range wrap(help, 72) {
				fmt.Fprintf(w, "        %s\n", line)
			}
		}
	}
	fmt.Fprint(w, mountUsage)
}

// wrap splits s into lines of at most width bytes at spaces.
func wrap(s string, width int) []string {
	var lines []string
	for len(s) > width {
		i := strings.LastIndexByte(s[:width+1], ' ')
		if i <= 0 {
			break
		}
		lines = append(lines, s[:i])
		s = s[i+1:]
	}
	return append(lines, s)
}
