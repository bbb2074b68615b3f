// Command govirtiofsd shares a host directory through FUSE. For now it
// serves the directory on a host mount point over /dev/fuse; the vhost-user
// (virtio-fs) transport comes later. Its options follow virtiofsd's:
//
//	govirtiofsd --shared-dir DIR --mountpoint MNT [--cache never|metadata|auto|always]
//	    [--xattr] [--readonly] [--thread-pool-size N] [--log-level LEVEL]
//	    [--allow-direct-io] [--writeback] [--posix-acl] [--no-readdirplus]
//	    [--announce-submounts]
//
// Both "--flag value" and "--flag=value" work. A bad command line prints one
// line on stderr and exits with status 2; -h or --help prints the options
// and exits 0. SIGINT or SIGTERM unmounts and exits 0, as does an unmount
// from outside (umount, fusermount -u); other failures exit 1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
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

// newFlagSet returns the command line's flags, writing into cfg, which
// holds the defaults.
func newFlagSet(cfg *config) *flag.FlagSet {
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&cfg.sharedDir, "shared-dir", "", "the host `directory` to share (required)")
	fs.StringVar(&cfg.mountpoint, "mountpoint", "", "serve the shared directory on this host `directory` over /dev/fuse")
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
	fs.BoolVar(&cfg.allowDirectIO, "allow-direct-io", false, "honour O_DIRECT from the guest (currently always honoured)")
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
	cfg := config{cache: passthrough.CacheAuto, threads: defaultThreads, logLevel: hclog.Info}
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
	case cfg.mountpoint == "":
		return cfg, errors.New("one of --mountpoint is required")
	case cfg.posixACL && !cfg.xattr:
		return cfg, errors.New("--posix-acl requires --xattr")
	}
	return cfg, nil
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
	fmt.Fprintf(w, "usage: %s --shared-dir DIR --mountpoint MNT [options]\n\n", progName)
	fmt.Fprintf(w, "Shares DIR on the host mount point MNT over /dev/fuse (needs root).\n\noptions:\n")
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
		Logger:            log.Named("passthrough"),
	})
	if err != nil {
		return fail(err)
	}
	defer fs.Close()
	srv := fuseproto.NewServer(fs, serverOptions(&cfg, log))

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
