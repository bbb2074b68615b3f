package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/internal/seccomp"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"github.com/govirtiofs/govirtiofs/uidmap"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/overlay"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

func TestParseFlags(t *testing.T) {
	base := []string{"--shared-dir", "/srv", "--mountpoint", "/mnt"}
	def := defaultConfig()
	def.sharedDir, def.mountpoint = "/srv", "/mnt"
	sock := defaultConfig()
	sock.sharedDir, sock.socketPath = "/srv", "/run/vfs.sock"
	const ovlOpts = "lowerdir=/l1:/l2:/l3,upperdir=/u,workdir=/w"
	ovl := &overlay.Config{Lower: []string{"/l1", "/l2", "/l3"}, Upper: "/u", Work: "/w", RedirectDir: true, Index: true, Metacopy: true}
	withOverlay := func(c config, oc *overlay.Config) config {
		c.sharedDir, c.overlay = "", oc
		return c
	}
	sockWith := func(f func(c *config)) config {
		c := sock
		f(&c)
		return c
	}
	with := func(f func(c *config)) config {
		c := def
		f(&c)
		return c
	}
	listenWith := func(a streamAddr) config {
		c := defaultConfig()
		c.sharedDir, c.listen = "/srv", a
		return c
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    config
		wantErr string // exact message; "" for success
	}{
		{name: "minimal", args: base, want: def},
		{name: "equals form", args: []string{"--shared-dir=/srv", "--mountpoint=/mnt"}, want: def},
		{name: "single dash", args: []string{"-shared-dir", "/srv", "-mountpoint=/mnt"}, want: def},
		{name: "cache never", args: append([]string{"--cache", "never"}, base...), want: with(func(c *config) { c.cache = passthrough.CacheNever })},
		{name: "cache=metadata", args: append([]string{"--cache=metadata"}, base...), want: with(func(c *config) { c.cache = passthrough.CacheMetadata })},
		{name: "cache always", args: append(base, "--cache", "always"), want: with(func(c *config) { c.cache = passthrough.CacheAlways })},
		{name: "cache auto", args: append(base, "--cache=auto"), want: def},
		{name: "threads", args: append(base, "--thread-pool-size", "16"), want: with(func(c *config) { c.threads = 16 })},
		{name: "threads zero", args: append(base, "--thread-pool-size=0"), want: with(func(c *config) { c.threads = 0 })},
		{name: "listen unix", args: []string{"--shared-dir", "/srv", "--listen", "unix:/run/g.sock"},
			want: listenWith(streamAddr{network: "unix", path: "/run/g.sock"})},
		{name: "listen unix with group", args: []string{"--shared-dir", "/srv", "--listen=unix:/run/g.sock", "--socket-group", "kvm"},
			want: func() config {
				c := listenWith(streamAddr{network: "unix", path: "/run/g.sock"})
				c.socketGroup = "kvm"
				return c
			}()},
		{name: "listen vsock", args: []string{"--shared-dir", "/srv", "--listen", "vsock:5000"},
			want: listenWith(streamAddr{network: "vsock", cid: unix.VMADDR_CID_ANY, port: 5000})},
		{name: "listen vsock cid", args: []string{"--shared-dir", "/srv", "--listen", "vsock:2:5000"},
			want: listenWith(streamAddr{network: "vsock", cid: 2, port: 5000})},
		{name: "vsock-port", args: []string{"--shared-dir", "/srv", "--vsock-port", "5000"},
			want: listenWith(streamAddr{network: "vsock", cid: unix.VMADDR_CID_ANY, port: 5000})},
		{name: "listen bad scheme", args: []string{"--shared-dir", "/srv", "--listen", "tcp:1"},
			wantErr: `invalid value "tcp:1" for flag --listen: bad address "tcp:1": want unix:PATH or vsock:PORT`},
		{name: "listen empty path", args: []string{"--shared-dir", "/srv", "--listen", "unix:"},
			wantErr: `invalid value "unix:" for flag --listen: bad address "unix:": want unix:PATH or vsock:PORT`},
		{name: "vsock-port not a number", args: []string{"--shared-dir", "/srv", "--vsock-port", "x"},
			wantErr: `invalid value "x" for flag --vsock-port: bad vsock port "x" in "vsock:x": want 0 to 4294967294`},
		{name: "vsock-port too big", args: []string{"--shared-dir", "/srv", "--vsock-port", "4294967295"},
			wantErr: `invalid value "4294967295" for flag --vsock-port: bad vsock port "4294967295" in "vsock:4294967295": want 0 to 4294967294`},
		{name: "listen bad cid", args: []string{"--shared-dir", "/srv", "--listen", "vsock:a:1"},
			wantErr: `invalid value "vsock:a:1" for flag --listen: bad vsock context id "a" in "vsock:a:1"`},
		{name: "listen and mountpoint", args: append(base, "--listen", "unix:/s"),
			wantErr: "--socket-path, --fd, --mountpoint and --listen (--vsock-port) exclude each other"},
		{name: "socket-group with vsock", args: []string{"--shared-dir", "/srv", "--vsock-port", "1", "--socket-group", "kvm"},
			wantErr: "--socket-group applies only to --socket-path and --listen unix:PATH"},
		{name: "log off", args: append(base, "--log-level", "off"), want: with(func(c *config) { c.logLevel = hclog.Off })},
		{name: "log trace", args: append(base, "--log-level=trace"), want: with(func(c *config) { c.logLevel = hclog.Trace })},
		{name: "log warn", args: append(base, "--log-level=warn"), want: with(func(c *config) { c.logLevel = hclog.Warn })},
		{name: "all booleans", args: append(base, "--xattr", "--readonly", "--allow-direct-io", "--writeback", "--posix-acl", "--no-readdirplus", "--announce-submounts"),
			want: with(func(c *config) {
				c.xattr, c.readonly, c.allowDirectIO, c.writeback, c.posixACL, c.noReaddirplus, c.announceSubmounts = true, true, true, true, true, true, true
			})},
		{name: "bool=true", args: append(base, "--xattr=true", "--readonly=false"), want: with(func(c *config) { c.xattr = true })},

		{name: "sandbox chroot", args: append(base, "--sandbox", "chroot"), want: with(func(c *config) { c.sandbox = sandbox.Chroot })},
		{name: "sandbox none seccomp log", args: append(base, "--sandbox=none", "--seccomp=log"), want: with(func(c *config) { c.sandbox, c.seccomp = sandbox.None, seccomp.Log })},
		{name: "seccomp none", args: append(base, "--seccomp", "none"), want: with(func(c *config) { c.seccomp = seccomp.None })},
		{name: "modcaps", args: append(base, "--modcaps", "+sys_admin:-mknod"), want: with(func(c *config) { c.modcaps = "+sys_admin:-mknod" })},
		{name: "rlimit", args: append(base, "--rlimit-nofile", "4096"), want: with(func(c *config) { c.rlimitNofile, c.rlimitSet = 4096, true })},
		{name: "rlimit 0", args: append(base, "--rlimit-nofile=0"), want: with(func(c *config) { c.rlimitSet = true })},
		{name: "uid and gid maps", args: append(base, "--uid-map=:0:1000:1:", "--uid-map=:1:100000:65535:", "--gid-map", ":0:1000:1:"),
			want: with(func(c *config) {
				c.uidMap = []uidmap.NSRange{{Inside: 0, Outside: 1000, Count: 1}, {Inside: 1, Outside: 100000, Count: 65535}}
				c.gidMap = []uidmap.NSRange{{Inside: 0, Outside: 1000, Count: 1}}
			})},
		{name: "translate", args: append(base, "--translate-uid", "map:0:100000:1000", "--translate-uid=forbid-guest:5000:10", "--translate-gid", "squash-guest:0:100:65536"),
			want: with(func(c *config) {
				c.translateUID = []string{"map:0:100000:1000", "forbid-guest:5000:10"}
				c.translateGID = []string{"squash-guest:0:100:65536"}
				c.uids = mustParseMap(t, c.translateUID)
				c.gids = mustParseMap(t, c.translateGID)
			})},
		{name: "bad sandbox", args: append(base, "--sandbox", "jail"), wantErr: `invalid value "jail" for flag --sandbox: want namespace, chroot or none`},
		{name: "bad seccomp", args: append(base, "--seccomp", "maybe"), wantErr: `invalid value "maybe" for flag --seccomp: ` + errText(seccomp.ParseAction("maybe"))},
		{name: "bad modcaps", args: append(base, "--modcaps", "+bogus"), wantErr: `--modcaps: unknown capability "bogus"`},
		{name: "modcaps no sign", args: append(base, "--modcaps", "chown"), wantErr: `--modcaps: bad entry "chown": want +capability or -capability, separated by ':'`},
		{name: "modcaps drops what an overlay needs", args: []string{"--overlay", ovlOpts, "--mountpoint", "/mnt", "--modcaps", "-dac_read_search"}, wantErr: "--modcaps: an overlay needs dac_read_search"},
		{name: "bad rlimit", args: append(base, "--rlimit-nofile", "-1"), wantErr: `invalid value "-1" for flag --rlimit-nofile: want a number, 0 or more`},
		{name: "bad uid-map", args: append(base, "--uid-map", "0:1:2"), wantErr: `invalid value "0:1:2" for flag --uid-map: ` + errText(uidmap.ParseNSRange("0:1:2"))},
		{name: "overlapping uid-map", args: append(base, "--uid-map=:0:1000:10:", "--uid-map=:5:2000:10:"),
			wantErr: "--uid-map: " + uidmap.CheckNSRanges([]uidmap.NSRange{{Inside: 0, Outside: 1000, Count: 10}, {Inside: 5, Outside: 2000, Count: 10}}).Error()},
		{name: "uid-map needs namespace", args: append(base, "--uid-map=:0:1000:1:", "--sandbox", "chroot"), wantErr: "--uid-map and --gid-map need --sandbox namespace"},
		{name: "bad translate", args: append(base, "--translate-uid", "guest:1:2"), wantErr: `invalid value "guest:1:2" for flag --translate-uid: ` + errText(uidmap.Parse([]string{"guest:1:2"}))},
		{name: "overlapping translate", args: append(base, "--translate-gid", "guest:0:100:10", "--translate-gid", "squash-guest:5:7:1"),
			wantErr: "--translate-gid: " + errText(uidmap.Parse([]string{"guest:0:100:10", "squash-guest:5:7:1"}))},

		{name: "no args", args: nil, wantErr: "--shared-dir (or -o source=) or --overlay is required"},
		{name: "no shared dir", args: []string{"--mountpoint", "/mnt"}, wantErr: "--shared-dir (or -o source=) or --overlay is required"},

		{name: "overlay mountpoint", args: []string{"--overlay", ovlOpts, "--mountpoint", "/mnt"}, want: withOverlay(def, ovl)},
		{name: "overlay socket", args: []string{"--overlay=" + ovlOpts, "--socket-path", "/run/vfs.sock", "--tag", "root"},
			want: withOverlay(sockWith(func(c *config) { c.tag = "root" }), ovl)},
		{name: "overlay fd", args: []string{"--overlay", ovlOpts, "--fd", "3"}, want: withOverlay(sockWith(func(c *config) { c.socketPath, c.fd = "", 3 }), ovl)},
		{name: "overlay read-only union", args: []string{"--overlay", `lowerdir=/a\:b:/c,userxattr`, "--mountpoint", "/mnt", "--readonly", "--xattr", "--posix-acl", "--cache=never"},
			want: withOverlay(with(func(c *config) { c.readonly, c.xattr, c.posixACL, c.cache = true, true, true, passthrough.CacheNever }),
				&overlay.Config{Lower: []string{"/a:b", "/c"}, UserXattr: true})},
		{name: "overlay and shared dir", args: append(base, "--overlay", ovlOpts), wantErr: "--shared-dir and --overlay exclude each other"},
		{name: "overlay empty", args: []string{"--overlay", "", "--mountpoint", "/mnt"}, wantErr: "overlay: lowerdir is required"},
		{name: "overlay unknown option", args: []string{"--overlay", "lowerdir=/l,bogus", "--mountpoint", "/mnt"}, wantErr: `overlay: unknown option "bogus"`},
		{name: "overlay upper without work", args: []string{"--overlay", "lowerdir=/l,upperdir=/u", "--mountpoint", "/mnt"}, wantErr: "overlay: upperdir and workdir go together"},
		{name: "overlay no transport", args: []string{"--overlay", ovlOpts}, wantErr: "one of --socket-path, --fd, --mountpoint or --listen is required"},
		{name: "overlay direct io", args: []string{"--overlay", ovlOpts, "--mountpoint", "/mnt", "--allow-direct-io"}, wantErr: "--allow-direct-io does not apply to an overlay"},
		{name: "overlay submounts", args: []string{"--overlay", ovlOpts, "--mountpoint", "/mnt", "--announce-submounts"}, want: withOverlay(def, ovl)},
		{name: "overlay acl implies xattr", args: []string{"--overlay", ovlOpts, "--mountpoint", "/mnt", "--posix-acl"},
			want: withOverlay(with(func(c *config) { c.xattr, c.posixACL = true, true }), ovl)},
		{name: "socket path", args: []string{"--shared-dir", "/srv", "--socket-path", "/run/vfs.sock"}, want: sock},
		{name: "deprecated --socket", args: []string{"--shared-dir=/srv", "--socket=/run/vfs.sock"},
			want: sockWith(func(c *config) { c.deprecated = []string{"--socket: use --socket-path"} })},
		{name: "virtio options", args: []string{"--shared-dir=/srv", "--socket-path=/run/vfs.sock", "--tag", "myfs", "--queue-size", "256", "--request-queues", "4", "--keep-serving"},
			want: sockWith(func(c *config) { c.tag, c.queueSize, c.requestQueues, c.keepServing = "myfs", 256, 4, true })},
		{name: "fd", args: []string{"--shared-dir=/srv", "--fd=3"}, want: sockWith(func(c *config) { c.socketPath, c.fd = "", 3 })},
		{name: "no transport", args: []string{"--shared-dir", "/srv"}, wantErr: "one of --socket-path, --fd, --mountpoint or --listen is required"},
		{name: "two transports", args: append(base, "--socket-path", "/s"), wantErr: "--socket-path, --fd, --mountpoint and --listen (--vsock-port) exclude each other"},
		{name: "tag too long", args: append(base, "--tag", strings.Repeat("t", 37)), wantErr: `invalid value "` + strings.Repeat("t", 37) + `" for flag --tag: want 1 to 36 bytes`},
		{name: "queue size not power of 2", args: append(base, "--queue-size", "1000"), wantErr: `invalid value "1000" for flag --queue-size: want a power of 2 up to 32768`},
		{name: "too many request queues", args: append(base, "--request-queues", "65"), wantErr: `invalid value "65" for flag --request-queues: want 1 to 64`},
		{name: "bad fd", args: []string{"--shared-dir=/srv", "--fd=x"}, wantErr: `invalid value "x" for flag --fd: want a file descriptor number`},
		{name: "unknown flag", args: append(base, "--bogus"), wantErr: "flag provided but not defined: --bogus"},
		{name: "missing value", args: []string{"--mountpoint", "/mnt", "--shared-dir"}, wantErr: "flag needs an argument: --shared-dir"},
		{name: "bad cache", args: append(base, "--cache", "sometimes"), wantErr: `invalid value "sometimes" for flag --cache: want never, metadata, auto or always`},
		{name: "bad threads", args: append(base, "--thread-pool-size", "many"), wantErr: `invalid value "many" for flag --thread-pool-size: want a number, 0 or more`},
		{name: "negative threads", args: append(base, "--thread-pool-size=-1"), wantErr: `invalid value "-1" for flag --thread-pool-size: want a number, 0 or more`},
		{name: "bad log level", args: append(base, "--log-level", "loud"), wantErr: `invalid value "loud" for flag --log-level: want off, error, warn, info, debug or trace`},
		{name: "bad bool", args: append(base, "--xattr=maybe"), wantErr: `invalid boolean value "maybe" for --xattr: parse error`},
		{name: "positional", args: append(base, "extra"), wantErr: `unexpected argument "extra"`},
		{name: "acl implies xattr", args: append(base, "--posix-acl"), want: with(func(c *config) { c.xattr, c.posixACL = true, true })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parseFlags(%q) error = %v, want %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseFlags(%q) = %+v, want %+v", tc.args, got, tc.want)
			}
		})
	}
	for _, h := range []string{"-h", "--help", "-help"} {
		if _, err := parseFlags([]string{h}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseFlags(%s) = %v, want flag.ErrHelp", h, err)
		}
	}
}

func TestServerOptions(t *testing.T) {
	const idmap = fuseproto.InitAllowIdmap
	for _, tc := range []struct {
		args            []string
		mount           []string // the same in mount(8)'s convention; nil: none
		enable, disable uint64
	}{
		{args: nil, enable: idmap},
		{args: []string{"--no-announce-submounts"}, enable: idmap, disable: fuseproto.InitSubmounts},
		{args: []string{"--writeback", "--xattr", "--posix-acl", "--no-readdirplus", "--announce-submounts"},
			mount:  []string{"-o", "writeback,xattr,posix_acl,no_readdirplus,announce_submounts"},
			enable: idmap | fuseproto.InitWritebackCache | fuseproto.InitPosixACL, disable: fuseproto.InitDoReaddirplus | fuseproto.InitReaddirplusAuto},
		{args: []string{"--killpriv-v2", "--allow-mmap", "--security-label"},
			mount:  []string{"-o", "killpriv_v2,allow_mmap,security_label"},
			enable: idmap | fuseproto.InitHandleKillprivV2 | fuseproto.InitDirectIOAllowMmap | fuseproto.InitSecurityCtx},
		{args: []string{"-o", "no_flock,no_posix_lock"}, enable: idmap, disable: fuseproto.InitFlockLocks | fuseproto.InitPosixLocks},
		{args: []string{"-o", "flock,posix_lock"}, enable: idmap},
		{args: []string{"--cache", "never"}, mount: []string{"-o", "cache=never"},
			enable: idmap, disable: fuseproto.InitDoReaddirplus | fuseproto.InitReaddirplusAuto},
		{args: []string{"--cache", "metadata"}, enable: idmap},
		{args: []string{"--translate-uid", "map:0:1000:1"}, enable: 0},
	} {
		cfg, err := parseFlags(append([]string{"--shared-dir=/s", "--mountpoint=/m"}, tc.args...))
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		o := serverOptions(&cfg, hclog.NewNullLogger())
		if o.Enable&fuseproto.InitPassthrough != 0 {
			t.Errorf("%q: INIT offers passthrough before the daemon decided it may use it", tc.args)
		}
		cfg.fusePassthrough = true
		if p := serverOptions(&cfg, hclog.NewNullLogger()); p.Enable != o.Enable|fuseproto.InitPassthrough {
			t.Errorf("%q: with passthrough enable %#x, want %#x", tc.args, p.Enable, o.Enable|fuseproto.InitPassthrough)
		}
		cfg.fusePassthrough = false
		if o.Enable != tc.enable || o.Disable != tc.disable || o.MaxWrite != fuseproto.DefaultMaxWrite {
			t.Errorf("%q: enable %#x disable %#x, want %#x and %#x", tc.args, o.Enable, o.Disable, tc.enable, tc.disable)
		}
		if tc.mount == nil {
			continue
		}
		mc, err := parseMountArgs(append([]string{"/s", "/m"}, tc.mount...), false)
		if err != nil {
			t.Fatalf("%q: %v", tc.mount, err)
		}
		if o2 := serverOptions(&mc.cfg, hclog.NewNullLogger()); o2.Enable != o.Enable || o2.Disable != o.Disable {
			t.Errorf("%q: %+v, want %+v", tc.mount, o2, o)
		}
	}
}

// buildDaemon builds the command into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), progName)
	build := exec.Command(goBin, "build", "-o", bin, ".")
	// The daemon drops capabilities on every thread, which a cgo
	// binary cannot do (syscall.AllThreadsSyscall).
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runTimeout bounds runDaemon: a command that returns by itself (a bad
// command line, mounting in the background) that hangs fails the test.
const runTimeout = time.Minute

// runDaemon runs bin to its end and returns its exit status and output.
func runDaemon(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second // a child left holding the output pipes
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q still running after %v (killed)\nstdout: %s\nstderr: %s", bin, args, runTimeout, &stdout, &stderr)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("running %s: %v", bin, err)
	return 0, "", ""
}

func TestCommandLineErrors(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--bogus"},
		{"--shared-dir", dir},
		{"--mountpoint", dir},
		{"--shared-dir", dir, "--mountpoint", dir, "--cache", "sometimes"},
		{"--shared-dir", dir, "--mountpoint", dir, "--thread-pool-size"},
		{"--shared-dir=" + dir, "--mountpoint=" + dir, "--log-level=verbose"},
	} {
		code, stdout, stderr := runDaemon(t, bin, args...)
		if code != 2 {
			t.Errorf("%q: exit status %d, want 2", args, code)
		}
		if stdout != "" {
			t.Errorf("%q: stdout %q, want nothing", args, stdout)
		}
		if !strings.HasPrefix(stderr, progName+": ") || !strings.HasSuffix(stderr, "\n") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%q: stderr %q, want one line %q", args, stderr, progName+": <message>")
		}
	}
	code, stdout, stderr := runDaemon(t, bin, "--help")
	if code != 0 || !strings.Contains(stdout, "--shared-dir") || stderr != "" {
		t.Errorf("--help: status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// mountedFS returns the filesystem type mounted on path, or "".
func mountedFS(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fstype := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != path {
			continue
		}
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				fstype = fields[i+1]
				break
			}
		}
	}
	return fstype
}

// daemon is a running govirtiofsd.
type daemon struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// startDaemon starts bin on a new shared directory and mount point and
// waits for the mount to appear.
func startDaemon(t *testing.T, bin string, extra ...string) (d *daemon, shared, mnt string) {
	t.Helper()
	shared, mnt = t.TempDir(), t.TempDir()
	args := append([]string{"--shared-dir", shared, "--mountpoint", mnt}, extra...)
	return startMounting(t, bin, mnt, args...), shared, mnt
}

// startMounting starts bin with args and waits for a mount to appear on
// mnt.
func startMounting(t *testing.T, bin, mnt string, args ...string) (d *daemon) {
	t.Helper()
	d = &daemon{cmd: exec.Command(bin, args...), stderr: new(bytes.Buffer), done: make(chan error, 1)}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if mountedFS(t, mnt) != "" {
			unix.Unmount(mnt, unix.MNT_DETACH)
			t.Errorf("%s was still mounted", mnt)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for mountedFS(t, mnt) == "" {
		select {
		case err := <-d.done:
			d.done <- err // for the cleanup
			t.Fatalf("daemon exited before mounting: %v\n%s", err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 10s\n%s", mnt, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

// wait waits for the daemon to exit and returns its exit status.
func (d *daemon) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(15 * time.Second):
		t.Fatalf("daemon did not exit\n%s", d.stderr)
		return -1
	}
}

func TestDaemonSIGTERM(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	d, shared, mnt := startDaemon(t, bin, "--thread-pool-size=2", "--log-level=debug")
	if got := mountedFS(t, mnt); got != "fuse.govirtiofs" {
		t.Fatalf("%s is mounted as %q", mnt, got)
	}
	data := []byte("written through the mount\n")
	if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(shared, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("shared dir has %q, %v; want %q", got, err, data)
	}
	if err := os.Mkdir(filepath.Join(shared, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(mnt, "d")); err != nil || !st.IsDir() {
		t.Fatalf("directory made in the shared dir: %v, %v", st, err)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0\n%s", code, d.stderr)
	}
	if got := mountedFS(t, mnt); got != "" {
		t.Fatalf("%s still mounted (%s) after the daemon exited", mnt, got)
	}
	if !strings.Contains(d.stderr.String(), "unmounted; exiting") {
		t.Errorf("log does not say the mount ended:\n%s", d.stderr)
	}
}

func TestDaemonExternalUnmount(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	d, _, mnt := startDaemon(t, bin)
	if _, err := os.ReadDir(mnt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d after umount, want 0\n%s", code, d.stderr)
	}
}

func TestDaemonBadMountpoint(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, stderr := runDaemon(t, bin, "--shared-dir", t.TempDir(), "--mountpoint", missing)
	if code != 1 || !strings.Contains(stderr, "mount point "+missing+" does not exist") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
}

// TestDaemonSIGTERMBusy stops the daemon while a file on the mount is open:
// the mount is detached at once, and the daemon exits when the file is
// closed.
// TestDaemonSIGTERMAtOnce stops the daemon the moment its mount appears,
// which can be before the sandbox parent has read its child's report: the
// daemon served, so it must unmount and exit 0 rather than "stop before
// serving" with status 1 (a race CI once hit).
func TestDaemonSIGTERMAtOnce(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	for i := range 10 {
		d, _, mnt := startDaemon(t, bin)
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := d.wait(t); code != 0 {
			t.Fatalf("run %d: exit status %d, want 0\n%s", i, code, d.stderr)
		}
		if fs := mountedFS(t, mnt); fs != "" {
			t.Fatalf("run %d: %s still mounted (%s) after the daemon exited", i, mnt, fs)
		}
	}
}

func TestDaemonSIGTERMBusy(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	d, shared, mnt := startDaemon(t, bin)
	if err := os.WriteFile(filepath.Join(shared, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for mountedFS(t, mnt) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted 10s after SIGTERM\n%s", mnt, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 4)
	if n, err := f.ReadAt(buf, 0); err != nil || string(buf[:n]) != "data" {
		t.Fatalf("read from the detached mount = %q, %v\n%s", buf[:n], err, d.stderr)
	}
	f.Close()
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0\n%s", code, d.stderr)
	}
	if strings.Contains(d.stderr.String(), "still in use") {
		t.Errorf("daemon gave up waiting instead of ending with the session:\n%s", d.stderr)
	}
}

// TestDaemonNoPermission runs the daemon without CAP_SYS_ADMIN (dropped by
// setpriv from util-linux).
func TestDaemonNoPermission(t *testing.T) {
	testenv.RequireFUSE(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.Missing(t, "setpriv (util-linux) not found")
	}
	bin := buildDaemon(t)
	mnt := t.TempDir()
	code, _, stderr := runDaemon(t, setpriv, "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--",
		bin, "--shared-dir", t.TempDir(), "--mountpoint", mnt, "--log-level=off")
	want := progName + ": mount point " + mnt + " cannot be mounted on: operation not permitted (mounting needs CAP_SYS_ADMIN)\n"
	if code != 1 || stderr != want {
		t.Fatalf("status %d, stderr %q; want 1, %q", code, stderr, want)
	}
}

// errText returns the message of a (value, error) pair's error.
func errText[T any](_ T, err error) string {
	if err == nil {
		return "<no error>"
	}
	return err.Error()
}

// mustParseMap parses --translate-* rules for an expected config.
func mustParseMap(t *testing.T, specs []string) *uidmap.Map {
	t.Helper()
	m, err := uidmap.Parse(specs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
