package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/uidmap"
)

// TestVirtiofsdOptions feeds every option of virtiofsd 1.13, spelled as
// virtiofsd spells it, and its bad values to the parser; then the command
// lines libvirt, Kata and Cloud Hypervisor generate.
func TestVirtiofsdOptions(t *testing.T) {
	base := []string{"--shared-dir", "/srv", "--socket-path", "/run/vfs.sock"}
	with := func(f func(c *config)) config {
		c := defaultConfig()
		c.sharedDir, c.socketPath = "/srv", "/run/vfs.sock"
		if f != nil {
			f(&c)
		}
		return c
	}
	fd := func(n int, f func(c *config)) config {
		return with(func(c *config) {
			c.socketPath, c.fd = "", n
			if f != nil {
				f(c)
			}
		})
	}
	seventy := uint64(70)
	for _, tc := range []struct {
		name    string
		args    []string
		want    config
		wantErr string // exact message; "" for success
	}{
		// Defaults are virtiofsd's.
		{name: "defaults", args: base, want: with(func(c *config) {
			if !c.announceSubmounts || c.fileHandles != "never" || c.threads != 0 || c.killprivV2 || c.xattr || c.sandbox != sandbox.Namespace {
				t.Errorf("defaults differ from virtiofsd's: %+v", c)
			}
		})},
		{name: "--tag", args: append(base, "--tag", "myfs"), want: with(func(c *config) { c.tag = "myfs" })},
		{name: "--tag empty", args: append(base, "--tag="), wantErr: `invalid value "" for flag --tag: want 1 to 36 bytes`},
		{name: "--socket", args: []string{"--shared-dir", "/srv", "--socket", "/run/vfs.sock"}, want: with(func(c *config) { c.deprecated = []string{"--socket: use --socket-path"} })},
		{name: "--socket-group", args: append(base, "--socket-group", "kvm"), want: with(func(c *config) { c.socketGroup = "kvm" })},
		{name: "--socket-group with --fd", args: []string{"--shared-dir", "/srv", "--fd", "3", "--socket-group", "kvm"}, wantErr: "--socket-group applies only to --socket-path and --listen unix:PATH"},
		{name: "--fd", args: []string{"--shared-dir=/srv", "--fd=7"}, want: fd(7, nil)},
		{name: "--fd negative", args: []string{"--shared-dir=/srv", "--fd=-1"}, wantErr: `invalid value "-1" for flag --fd: want a file descriptor number`},
		{name: "--fd and --socket-path", args: append(base, "--fd", "3"), wantErr: "--socket-path, --fd, --mountpoint and --listen (--vsock-port) exclude each other"},
		{name: "--thread-pool-size", args: append(base, "--thread-pool-size=16"), want: with(func(c *config) { c.threads = 16 })},
		{name: "--thread-pool-size bad", args: append(base, "--thread-pool-size=lots"), wantErr: `invalid value "lots" for flag --thread-pool-size: want a number, 0 or more`},
		{name: "--xattr", args: append(base, "--xattr"), want: with(func(c *config) { c.xattr = true })},
		{name: "--posix-acl implies --xattr", args: append(base, "--posix-acl"), want: with(func(c *config) { c.xattr, c.posixACL = true, true })},
		{name: "--security-label implies --xattr", args: append(base, "--security-label"), want: with(func(c *config) { c.xattr, c.securityLabel = true, true })},
		{name: "--sandbox", args: append(base, "--sandbox", "chroot"), want: with(func(c *config) { c.sandbox = sandbox.Chroot })},
		{name: "--sandbox bad", args: append(base, "--sandbox", "vm"), wantErr: `invalid value "vm" for flag --sandbox: want namespace, chroot or none`},
		{name: "--readonly", args: append(base, "--readonly"), want: with(func(c *config) { c.readonly = true })},
		{name: "--seccomp", args: append(base, "--seccomp=trap"), want: with(func(c *config) { c.seccomp = 3 })},
		{name: "--announce-submounts", args: append(base, "--announce-submounts"), want: with(nil)},
		{name: "--no-announce-submounts", args: append(base, "--no-announce-submounts"), want: with(func(c *config) { c.announceSubmounts = false })},
		{name: "--no-announce-submounts then --announce-submounts", args: append(base, "--no-announce-submounts", "--announce-submounts"), want: with(nil)},
		{name: "--inode-file-handles=never", args: append(base, "--inode-file-handles=never"), want: with(func(c *config) { c.fileHandles = "never" })},
		{name: "--inode-file-handles=mandatory", args: append(base, "--inode-file-handles=mandatory"), want: with(func(c *config) { c.fileHandles = "mandatory" })},
		{name: "--inode-file-handles=fallback", args: append(base, "--inode-file-handles=fallback"),
			want: with(func(c *config) {
				c.fileHandles, c.deprecated = "prefer", []string{"--inode-file-handles=fallback: use prefer"}
			})},
		{name: "--inode-file-handles bad", args: append(base, "--inode-file-handles=always"), wantErr: `invalid value "always" for flag --inode-file-handles: want never, prefer or mandatory`},
		{name: "--cache", args: append(base, "--cache", "metadata"), want: with(func(c *config) { c.cache = passthrough.CacheMetadata })},
		{name: "--cache none is legacy only", args: append(base, "--cache", "none"), wantErr: `invalid value "none" for flag --cache: want never, metadata, auto or always`},
		{name: "--allow-mmap", args: append(base, "--cache=never", "--allow-mmap"), want: with(func(c *config) { c.cache, c.allowMmap = passthrough.CacheNever, true })},
		{name: "--no-readdirplus", args: append(base, "--no-readdirplus"), want: with(func(c *config) { c.noReaddirplus = true })},
		{name: "--no-fuse-passthrough", args: append(base, "--no-fuse-passthrough"), want: with(func(c *config) { c.noFusePassthrough = true })},
		{name: "--writeback", args: append(base, "--writeback"), want: with(func(c *config) { c.writeback = true })},
		{name: "--allow-direct-io", args: append(base, "--allow-direct-io"), want: with(func(c *config) { c.allowDirectIO = true })},
		{name: "--print-capabilities alone", args: []string{"--print-capabilities"}, want: func() config {
			c := defaultConfig()
			c.printCapabilities = true
			return c
		}()},
		{name: "--modcaps", args: append(base, "--modcaps=+sys_admin:-chown"), want: with(func(c *config) { c.modcaps = "+sys_admin:-chown" })},
		{name: "--modcaps drops what file handles need", args: append(base, "--modcaps=-dac_read_search", "--inode-file-handles=prefer"),
			wantErr: "--modcaps: can't drop dac_read_search with --inode-file-handles=prefer (use never)"},
		{name: "--modcaps drops dac_read_search without file handles", args: append(base, "--modcaps=-dac_read_search", "--inode-file-handles=never"),
			want: with(func(c *config) { c.modcaps, c.fileHandles = "-dac_read_search", "never" })},
		{name: "--modcaps bad", args: append(base, "--modcaps=+nothing"), wantErr: `--modcaps: unknown capability "nothing"`},
		{name: "--log-level", args: append(base, "--log-level", "debug"), want: with(func(c *config) { c.logLevel = hclog.Debug })},
		{name: "--log-level bad", args: append(base, "--log-level", "verbose"), wantErr: `invalid value "verbose" for flag --log-level: want off, error, warn, info, debug or trace`},
		{name: "--syslog", args: append(base, "--syslog"), want: with(func(c *config) { c.syslog = true })},
		{name: "--rlimit-nofile", args: append(base, "--rlimit-nofile=65536"), want: with(func(c *config) { c.rlimitNofile, c.rlimitSet = 65536, true })},
		{name: "--rlimit-nofile bad", args: append(base, "--rlimit-nofile=many"), wantErr: `invalid value "many" for flag --rlimit-nofile: want a number, 0 or more`},
		{name: "-d", args: append(base, "-d"), want: with(func(c *config) { c.logLevel = hclog.Debug })},
		{name: "-f", args: append(base, "-f"), want: with(nil)},
		{name: "--killpriv-v2", args: append(base, "--killpriv-v2"), want: with(func(c *config) { c.killprivV2 = true })},
		{name: "--no-killpriv-v2 wins when last", args: append(base, "--killpriv-v2", "--no-killpriv-v2"), want: with(nil)},
		{name: "--uid-map --gid-map", args: append(base, "--uid-map=:0:100000:65536:", "--gid-map=:0:100000:65536:"), want: with(func(c *config) {
			c.uidMap = []uidmap.NSRange{{Inside: 0, Outside: 100000, Count: 65536}}
			c.gidMap = []uidmap.NSRange{{Inside: 0, Outside: 100000, Count: 65536}}
		})},
		{name: "--translate-uid", args: append(base, "--translate-uid", "host:0:1000:1"), want: with(func(c *config) {
			c.translateUID = []string{"host:0:1000:1"}
			c.uids = mustParseMap(t, c.translateUID)
		})},
		{name: "--translate-uid with --posix-acl", args: append(base, "--translate-uid", "map:0:1000:1", "--posix-acl"), want: with(func(c *config) {
			c.translateUID, c.xattr, c.posixACL = []string{"map:0:1000:1"}, true, true
			c.uids = mustParseMap(t, c.translateUID)
		})},
		{name: "--preserve-noatime", args: append(base, "--preserve-noatime"), want: with(func(c *config) { c.preserveNoatime = true })},
		{name: "--migration-mode", args: append(base, "--migration-mode", "file-handles"), want: with(func(c *config) { c.migrationMode = "file-handles" })},
		{name: "--migration-mode bad", args: append(base, "--migration-mode", "by-magic"), wantErr: `invalid value "by-magic" for flag --migration-mode: want find-paths or file-handles`},
		{name: "--migration-on-error", args: append(base, "--migration-on-error=guest-error"), want: with(func(c *config) { c.migrationOnError = "guest-error" })},
		{name: "--migration-on-error bad", args: append(base, "--migration-on-error=ignore"), wantErr: `invalid value "ignore" for flag --migration-on-error: want abort or guest-error`},
		{name: "--migration-verify-handles --migration-confirm-paths", args: append(base, "--migration-verify-handles", "--migration-confirm-paths"),
			want: with(func(c *config) { c.migrationVerifyHandles, c.migrationConfirmPaths = true, true })},
		{name: "--migration-confirm-paths with file-handles", args: append(base, "--migration-mode=file-handles", "--migration-confirm-paths"),
			wantErr: "--migration-confirm-paths does not apply to --migration-mode file-handles"},
		{name: "--migration-verify-handles with file-handles", args: append(base, "--migration-mode=file-handles", "--migration-verify-handles"),
			wantErr: "--migration-verify-handles does not apply to --migration-mode file-handles"},
		{name: "unknown option", args: append(base, "--cache-size=1G"), wantErr: "flag provided but not defined: --cache-size"},
		{name: "unknown short option", args: append(base, "-x"), wantErr: "flag provided but not defined: -x"},

		// -o, the legacy C daemon's options.
		{name: "-o source", args: []string{"-o", "source=/srv", "--socket-path=/run/vfs.sock"}, want: with(func(c *config) { c.deprecated = []string{"-o: give the options as --flags"} })},
		{name: "-o everything", args: append(base, "-o", "cache=none,xattr,no_xattr,xattr,posix_acl,security_label,no_readdirplus,writeback,allow_direct_io,announce_submounts,killpriv_v2,no_flock,no_posix_lock,timeout=70,sandbox=chroot,modcaps=+sys_admin,log_level=warn,max_idle_threads=8,allow_root"),
			want: with(func(c *config) {
				c.deprecated = []string{"-o: give the options as --flags"}
				c.cache, c.xattr, c.posixACL, c.securityLabel, c.noReaddirplus, c.writeback, c.allowDirectIO = passthrough.CacheNever, true, true, true, true, true, true
				c.killprivV2, c.noFlock, c.noPosixLock, c.timeout, c.sandbox, c.modcaps, c.logLevel, c.threads = true, true, true, &seventy, sandbox.Chroot, "+sys_admin", hclog.Warn, 8
			})},
		{name: "-o undo", args: append(base, "-o", "no_readdirplus,readdirplus,writeback,no_writeback,flock,posix_lock,no_allow_direct_io,no_killpriv_v2,no_posix_acl,no_security_label,loglevel=err"),
			want: with(func(c *config) { c.deprecated, c.logLevel = []string{"-o: give the options as --flags"}, hclog.Error })},
		{name: "-o twice", args: append(base, "-o", "cache=always", "-o", "debug"),
			want: with(func(c *config) {
				c.deprecated, c.cache, c.logLevel = []string{"-o: give the options as --flags"}, passthrough.CacheAlways, hclog.Debug
			})},
		{name: "-o unknown", args: append(base, "-o", "turbo"), wantErr: `invalid value "turbo" for flag -o: -o turbo: unknown option`},
		{name: "-o unknown key", args: append(base, "-o", "speed=max"), wantErr: `invalid value "speed=max" for flag -o: -o speed=max: unknown option`},
		{name: "-o bad cache", args: append(base, "-o", "cache=sometimes"), wantErr: `invalid value "cache=sometimes" for flag -o: -o cache=sometimes: want auto, always, none or metadata`},
		{name: "-o bad timeout", args: append(base, "-o", "timeout=-1"), wantErr: `invalid value "timeout=-1" for flag -o: -o timeout=-1: want seconds, 0 or more`},
		{name: "-o bad sandbox", args: append(base, "-o", "sandbox=jail"), wantErr: `invalid value "sandbox=jail" for flag -o: -o sandbox=jail: want namespace, chroot or none`},
		{name: "-o bad log level", args: append(base, "-o", "log_level=loud"), wantErr: `invalid value "log_level=loud" for flag -o: -o log_level=loud: want debug, info, warn or err`},
		{name: "-o empty source", args: append(base, "-o", "source="), wantErr: `invalid value "source=" for flag -o: -o source=: want a directory`},

		// The command lines orchestrators generate.
		{name: "libvirt", args: []string{"--fd=5", "--shared-dir=/srv", "--cache=never", "--sandbox=chroot", "--xattr", "--thread-pool-size=16", "--rlimit-nofile=65536", "--log-level=debug"},
			want: fd(5, func(c *config) {
				c.cache, c.sandbox, c.xattr, c.threads, c.rlimitNofile, c.rlimitSet, c.logLevel = passthrough.CacheNever, sandbox.Chroot, true, 16, 65536, true, hclog.Debug
			})},
		{name: "libvirt session", args: []string{"--fd=5", "--shared-dir=/srv", "--uid-map=:0:100000:65536:", "--gid-map=:0:100000:65536:"},
			want: fd(5, func(c *config) {
				c.uidMap = []uidmap.NSRange{{Inside: 0, Outside: 100000, Count: 65536}}
				c.gidMap = []uidmap.NSRange{{Inside: 0, Outside: 100000, Count: 65536}}
			})},
		{name: "libvirt legacy", args: []string{"--fd=5", "-o", "source=/srv,cache=none,sandbox=chroot,xattr", "-d"},
			want: fd(5, func(c *config) {
				c.deprecated = []string{"-o: give the options as --flags"}
				c.cache, c.sandbox, c.xattr, c.logLevel = passthrough.CacheNever, sandbox.Chroot, true, hclog.Debug
			})},
		{name: "kata go runtime", args: []string{"--syslog", "--cache=auto", "--shared-dir=/srv", "--fd=3", "--thread-pool-size=1", "--announce-submounts", "--inode-file-handles=prefer"},
			want: fd(3, func(c *config) { c.syslog, c.threads, c.fileHandles = true, 1, "prefer" })},
		{name: "kata runtime-rs", args: []string{"--socket-path", "/run/vfs.sock", "--shared-dir", "/srv", "--cache", "auto", "--thread-pool-size=1", "-o", "announce_submounts", "--xattr"},
			want: with(func(c *config) {
				c.threads, c.xattr, c.deprecated = 1, true, []string{"-o: give the options as --flags"}
			})},
		{name: "cloud hypervisor docs", args: []string{"--socket-path=/run/vfs.sock", "--shared-dir=/srv", "--cache=never", "--thread-pool-size=4"},
			want: with(func(c *config) { c.cache, c.threads = passthrough.CacheNever, 4 })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parseFlags(%q) error = %v, want %q", tc.args, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseFlags(%q) =\n %+v, want\n %+v", tc.args, got, tc.want)
			}
		})
	}
}

// TestBadOptionExit runs the command with bad options: one line on stderr
// and exit status 2, nothing on stdout.
func TestBadOptionExit(t *testing.T) {
	for _, args := range [][]string{
		{"--shared-dir", "/srv"},
		{"--shared-dir", "/srv", "--socket-path", "/s", "--bogus"},
		{"--shared-dir", "/srv", "--socket-path", "/s", "-o", "bogus"},
		{"--shared-dir", "/srv", "--socket-path", "/s", "--inode-file-handles=sometimes"},
		{"--shared-dir", "/srv", "--socket-path", "/s", "--migration-mode=x"},
		{"--shared-dir", "/srv", "--socket-path", "/s", "--xattrmap", ":bogus:"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(progName, args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
		if n := strings.Count(stderr.String(), "\n"); n != 1 || !strings.HasPrefix(stderr.String(), progName+": ") {
			t.Errorf("%q: stderr %q, want one line starting with %q", args, stderr.String(), progName+": ")
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: stdout %q, want nothing", args, stdout.String())
		}
	}
}

// TestHelpGroups checks --help: every option is in exactly one group and
// says its default, and the groups are all printed.
func TestHelpGroups(t *testing.T) {
	var cfg config
	fs := newFlagSet(&cfg, nil)
	seen := map[string]string{}
	for _, g := range helpGroups {
		for _, n := range g.flags {
			if fs.Lookup(n) == nil {
				t.Errorf("group %q lists %q, which is not an option", g.title, n)
			}
			if prev, dup := seen[n]; dup {
				t.Errorf("%q is in groups %q and %q", n, prev, g.title)
			}
			seen[n] = g.title
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := seen[f.Name]; !ok {
			t.Errorf("option %q is in no help group", f.Name)
		}
		if !strings.Contains(f.Usage, "[default") {
			t.Errorf("option %q does not say its default: %q", f.Name, f.Usage)
		}
	})
	var out, errOut bytes.Buffer
	if code := run(progName, []string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d, stderr %q", code, errOut.String())
	}
	for _, want := range []string{"Share:", "Transport", "Cache and performance:", "Security:", "Identity:", "Logging:", "Migration", "--no-announce-submounts", "--xattrmap RULES", "-o OPTIONS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if _, err := parseFlags([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

// TestPrintCapabilities checks --print-capabilities against what libvirt
// reads from a vhost-user backend of type fs: a JSON object with "type"
// "fs" and a "features" array of known names; it needs no other option.
func TestPrintCapabilities(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(progName, []string{"--print-capabilities"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	var caps struct {
		Type     string   `json:"type"`
		Features []string `json:"features"`
	}
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&caps); err != nil {
		t.Fatalf("not the capabilities JSON: %v", err)
	}
	if caps.Type != "fs" {
		t.Errorf("type %q, want fs", caps.Type)
	}
	// libvirt's virVhostUserFSFeature names (src/util/virvhostuser.c).
	known := map[string]bool{"migrate-precopy": true, "separate-options": true}
	for _, f := range caps.Features {
		if !known[f] {
			t.Errorf("feature %q unknown to libvirt", f)
		}
		delete(known, f)
	}
	if len(known) != 0 {
		t.Errorf("features lack %v", known)
	}
}
