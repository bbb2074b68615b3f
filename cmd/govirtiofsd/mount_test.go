package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"github.com/govirtiofs/govirtiofs/overlay"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

func TestMountConvention(t *testing.T) {
	for _, tc := range []struct {
		argv0 string
		args  []string
		want  bool
	}{
		{"govirtiofsd", []string{"--shared-dir", "/s", "--mountpoint", "/m"}, false},
		{"/usr/libexec/govirtiofsd", []string{"overlay", "/m", "-o", "lowerdir=/l"}, true},
		{"govirtiofsd", []string{"/srv", "/m"}, true},
		{"govirtiofsd", []string{"-h"}, false},
		{"govirtiofsd", nil, false},
		{"/sbin/mount.fuse.govirtiofs", []string{"-h"}, true},
		{"/sbin/mount.fuse.govirtiofs", nil, true},
	} {
		if got := mountConvention(tc.argv0, tc.args); got != tc.want {
			t.Errorf("mountConvention(%q, %q) = %v, want %v", tc.argv0, tc.args, got, tc.want)
		}
	}
}

func TestParseMountArgs(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	def := defaultConfig()
	def.sharedDir, def.mountpoint = "/srv", "/mnt"
	with := func(f func(c *config)) config {
		c := def
		f(&c)
		return c
	}
	ovl := func(oc overlay.Config, f func(c *config)) config {
		c := def
		c.sharedDir, c.source, c.overlay = "", "overlay", &oc
		if f != nil {
			f(&c)
		}
		return c
	}
	lower2 := overlay.Config{Lower: []string{"/l1", "/l2"}, Upper: "/u", Work: "/w", RedirectDir: true, Index: true, Metacopy: true}
	for _, tc := range []struct {
		name       string
		args       []string
		helper     bool // called as mount.fuse.govirtiofs
		want       config
		fake, fg   bool
		remount    bool
		wantErr    string // exact message; "" for success
		wantFlags  uintptr
		checkFlags bool
	}{
		{name: "share a directory", args: []string{"/srv", "/mnt"}, want: def},
		{name: "relative paths", args: []string{"srv", "mnt"}, want: with(func(c *config) {
			c.sharedDir, c.mountpoint = filepath.Join(cwd, "srv"), filepath.Join(cwd, "mnt")
		})},
		{name: "overlay", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w"}, want: ovl(lower2, nil)},
		{name: "overlay, options split", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l1:/l2", "-oupperdir=/u", "-o", "rw,workdir=/w"}, want: ovl(lower2, nil)},
		{name: "overlay, options first", args: []string{"-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "overlay", "/mnt"}, want: ovl(lower2, nil)},
		{name: "overlay any source", args: []string{"/work/overlay", "/mnt", "-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w"},
			want: ovl(lower2, func(c *config) { c.source = "/work/overlay" })},
		{name: "overlay relative layers", args: []string{"overlay", "/mnt", "-o", `lowerdir=l1:/l\,2,upperdir=u,workdir=w`},
			want: ovl(overlay.Config{Lower: []string{filepath.Join(cwd, "l1"), "/l,2"}, Upper: filepath.Join(cwd, "u"), Work: filepath.Join(cwd, "w"),
				RedirectDir: true, Index: true, Metacopy: true}, nil)},
		{name: "overlay options", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l1,userxattr,redirect_dir=on,index=off,metacopy=off,xino=auto,uuid=on,volatile,nfs_export=off"},
			want: ovl(overlay.Config{Lower: []string{"/l1"}, UserXattr: true, RedirectDir: true}, nil)},
		{name: "what mount(8) passes", helper: true,
			args:       []string{"/srv", "/mnt", "-s", "-n", "-v", "-o", "ro,nosuid,nodev,allow_other,default_permissions,_netdev,nofail,user,users,nouser,user=alice,auto,noauto,defaults,async,x-systemd.automount,comment=x"},
			want:       with(func(c *config) { c.readonly, c.mountFlags = true, mountFlags{set: unix.MS_NOSUID | unix.MS_NODEV} }),
			checkFlags: true, wantFlags: devfuseFlags},
		{name: "mount(8) -t", helper: true, args: []string{"/srv", "/mnt", "-t", "fuse.govirtiofs"}, want: def},
		{name: "ro then rw", args: []string{"/srv", "/mnt", "-o", "ro", "-o", "rw"}, want: def},
		{name: "daemon options", args: []string{"/srv", "/mnt", "-o", "cache=never,xattr,thread_pool_size=8,log_level=debug,writeback,posix_acl,no_readdirplus,allow_direct_io,announce_submounts"},
			want: with(func(c *config) {
				c.cache, c.xattr, c.threads, c.logLevel = passthrough.CacheNever, true, 8, hclog.Debug
				c.writeback, c.posixACL, c.noReaddirplus, c.allowDirectIO, c.announceSubmounts = true, true, true, true, true
			})},
		{name: "daemon options dashes and on/off", args: []string{"/srv", "/mnt", "-o", "thread-pool-size=2,xattr=on,xattr=off,readonly=on"},
			want: with(func(c *config) { c.threads, c.readonly = 2, true })},
		{name: "overlay daemon options", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,cache=always,xattr,ro"},
			want: ovl(lower2, func(c *config) { c.cache, c.xattr, c.readonly = passthrough.CacheAlways, true, true })},
		{name: "mount flags", args: []string{"/srv", "/mnt", "-o", "noexec,suid,dev,noatime,nodiratime"},
			want: with(func(c *config) {
				c.mountFlags = mountFlags{set: unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME, clear: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RELATIME | unix.MS_STRICTATIME}
			}),
			checkFlags: true, wantFlags: unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME},
		{name: "mount flags undone", args: []string{"/srv", "/mnt", "-o", "noexec,noatime,exec,relatime,nosuid"},
			want: with(func(c *config) {
				c.mountFlags = mountFlags{set: unix.MS_RELATIME | unix.MS_NOSUID, clear: unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_STRICTATIME}
			}),
			checkFlags: true, wantFlags: devfuseFlags | unix.MS_RELATIME},
		{name: "strictatime", args: []string{"/srv", "/mnt", "-o", "strictatime"},
			want: with(func(c *config) {
				c.mountFlags = mountFlags{set: unix.MS_STRICTATIME, clear: unix.MS_NOATIME | unix.MS_RELATIME}
			}),
			checkFlags: true, wantFlags: devfuseFlags | unix.MS_STRICTATIME},
		{name: "foreground", args: []string{"/srv", "/mnt", "-f"}, want: def, fg: true},
		{name: "helper fake", helper: true, args: []string{"/srv", "/mnt", "-f", "-o", "rw"}, want: def, fake: true},
		{name: "helper combined flags", helper: true, args: []string{"/srv", "/mnt", "-nfv"}, want: def, fake: true},
		{name: "sloppy", args: []string{"/srv", "/mnt", "-s", "-o", "bogus,other=1"}, want: def},
		{name: "after --", args: []string{"-o", "ro", "--", "/srv", "/mnt"}, want: with(func(c *config) { c.readonly = true })},

		{name: "remount as mount(8) passes it", helper: true,
			args: []string{"/srv", "/mnt", "-o", "ro,nosuid,nodev,noexec,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other"},
			want: func() config {
				c := defaultConfig()
				c.mountpoint, c.readonly = "/mnt", true
				c.mountFlags = mountFlags{set: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME, clear: unix.MS_NOATIME | unix.MS_STRICTATIME}
				return c
			}(),
			remount: true},
		{name: "remount daemon option", args: []string{"/srv", "/mnt", "-o", "remount,cache=never"}, wantErr: "-o cache cannot be changed by a remount"},
		{name: "remount overlay option", args: []string{"overlay", "/mnt", "-o", "remount,lowerdir=/l"}, wantErr: "-o lowerdir cannot be changed by a remount"},
		{name: "remount unknown option", args: []string{"/srv", "/mnt", "-o", "remount,bogus"}, wantErr: `unknown mount option "bogus"`},
		{name: "no arguments", helper: true, args: nil, wantErr: "want SOURCE MOUNTPOINT [-o OPTIONS]"},
		{name: "one argument", args: []string{"/srv"}, wantErr: "want SOURCE MOUNTPOINT [-o OPTIONS]"},
		{name: "three arguments", args: []string{"/srv", "/mnt", "/x"}, wantErr: "want SOURCE MOUNTPOINT [-o OPTIONS]"},
		{name: "empty source", args: []string{"", "/mnt"}, wantErr: "SOURCE and MOUNTPOINT must not be empty"},
		{name: "unknown option", args: []string{"/srv", "/mnt", "-o", "rw,bogus"}, wantErr: `unknown mount option "bogus"`},
		{name: "unknown flag", args: []string{"/srv", "/mnt", "-x"}, wantErr: "unknown option -x"},
		{name: "unknown long flag", args: []string{"/srv", "/mnt", "--shared-dir=/x"}, wantErr: "unknown option --shared-dir=/x"},
		{name: "missing -o value", args: []string{"/srv", "/mnt", "-o"}, wantErr: "option -o needs a value"},
		{name: "other type", args: []string{"/srv", "/mnt", "-t", "fuse.sshfs"}, wantErr: `filesystem type "fuse.sshfs" is not fuse.govirtiofs`},
		{name: "namespace", args: []string{"/srv", "/mnt", "-N", "/proc/1/ns/mnt"}, wantErr: "-N (mount in another namespace) is not supported"},
		{name: "transport option", args: []string{"/srv", "/mnt", "-o", "socket_path=/s"}, wantErr: `unknown mount option "socket_path"`},
		{name: "bad cache", args: []string{"/srv", "/mnt", "-o", "cache=sometimes"}, wantErr: "-o cache=sometimes: want never, metadata, auto or always"},
		{name: "cache without value", args: []string{"/srv", "/mnt", "-o", "cache"}, wantErr: "-o cache needs a value"},
		{name: "bad bool", args: []string{"/srv", "/mnt", "-o", "xattr=maybe"}, wantErr: "-o xattr=maybe: want on or off"},
		{name: "bad threads", args: []string{"/srv", "/mnt", "-o", "thread_pool_size=-1"}, wantErr: "-o thread_pool_size=-1: want a number, 0 or more"},
		{name: "flag with value", args: []string{"/srv", "/mnt", "-o", "noexec=1"}, wantErr: "-o noexec takes no value"},
		{name: "ro with value", args: []string{"/srv", "/mnt", "-o", "ro=yes"}, wantErr: "-o ro takes no value"},
		{name: "sync", args: []string{"/srv", "/mnt", "-o", "sync"}, wantErr: "-o sync is not supported"},
		{name: "acl implies xattr", args: []string{"/srv", "/mnt", "-o", "posix_acl"}, want: with(func(c *config) { c.xattr, c.posixACL = true, true })},
		{name: "overlay without lowerdir", args: []string{"overlay", "/mnt", "-o", "upperdir=/u,workdir=/w"}, wantErr: "overlay: lowerdir is required"},
		{name: "overlay bad value", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l,index=maybe"}, wantErr: `overlay: index="maybe": want on or off`},
		{name: "overlay upper without work", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l,upperdir=/u"}, wantErr: "overlay: upperdir and workdir go together"},
		{name: "overlay direct io", args: []string{"overlay", "/mnt", "-o", "lowerdir=/l,allow_direct_io"}, wantErr: "-o allow_direct_io does not apply to an overlay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountArgs(tc.args, tc.helper)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parseMountArgs(%q) error = %v, want %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMountArgs(%q): %v", tc.args, err)
			}
			if !reflect.DeepEqual(got.cfg, tc.want) {
				t.Errorf("parseMountArgs(%q) =\n%+v, want\n%+v", tc.args, got.cfg, tc.want)
				if got.cfg.overlay != nil && tc.want.overlay != nil {
					t.Errorf("overlay %+v, want %+v", *got.cfg.overlay, *tc.want.overlay)
				}
			}
			if got.fake != tc.fake || got.foreground != tc.fg || got.remount != tc.remount {
				t.Errorf("parseMountArgs(%q): fake %v, foreground %v, remount %v; want %v, %v, %v",
					tc.args, got.fake, got.foreground, got.remount, tc.fake, tc.fg, tc.remount)
			}
			if tc.checkFlags {
				if f := got.cfg.mountFlags.flags(); f != tc.wantFlags {
					t.Errorf("mount flags %#x, want %#x", f, tc.wantFlags)
				}
			}
		})
	}
	for _, h := range []string{"-h", "--help"} {
		if _, err := parseMountArgs([]string{"/srv", "/mnt", h}, true); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("parseMountArgs(%s) = %v, want flag.ErrHelp", h, err)
		}
	}
}

func TestSplitOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"ro", []string{"ro"}},
		{"ro,lowerdir=/a:/b,,x", []string{"ro", "lowerdir=/a:/b", "", "x"}},
		{`lowerdir=/a\,b:/c,ro`, []string{`lowerdir=/a\,b:/c`, "ro"}},
		{`upperdir=/u\\,ro`, []string{`upperdir=/u\\`, "ro"}},
		{`x\`, []string{`x\`}},
	} {
		if got := splitOptions(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitOptions(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMountUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run("/sbin/mount.fuse.govirtiofs", []string{"--help"}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("--help: status %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{"--overlay", "SOURCE MOUNTPOINT", "lowerdir=L1:L2", "cache=never"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help does not mention %q:\n%s", want, stdout.String())
		}
	}
}

// daemonPIDs returns the processes running bin with argument arg.
//
// A namespace sandbox's child (whose parent is one of the daemons found) is
// part of its parent's daemon and not counted.
func daemonPIDs(t *testing.T, arg string) []int {
	t.Helper()
	all := daemonProcs(t, arg)
	var pids []int
	for _, pid := range all {
		if !slices.Contains(all, parentPID(pid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// parentPID returns the parent of process pid, 0 if it is gone.
func parentPID(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// daemonProcs lists every govirtiofsd process with arg among its
// arguments, sandbox children included.
func daemonProcs(t *testing.T, arg string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "govirtiofs") {
			continue
		}
		for _, a := range args[1:] {
			if a == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// cleanupMount makes sure that nothing stays mounted on mnt and no daemon
// serving it stays running when the test ends.
func cleanupMount(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if fstype := mountedFS(t, mnt); fstype != "" {
			t.Errorf("%s was still mounted (%s)", mnt, fstype)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		for _, pid := range daemonPIDs(t, mnt) {
			t.Errorf("daemon %d serving %s still running", pid, mnt)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// waitGone waits for the daemons serving mnt to exit.
func waitGone(t *testing.T, mnt string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(daemonPIDs(t, mnt)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon serving %s still running 10s after the unmount: %v", mnt, daemonPIDs(t, mnt))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOneLine checks that a failed command wrote one line
// "govirtiofsd: ..." containing want on stderr, and nothing on stdout.
func checkOneLine(t *testing.T, args []string, stdout, stderr, want string) {
	t.Helper()
	if stdout != "" {
		t.Errorf("%q: stdout %q, want nothing", args, stdout)
	}
	if !strings.HasPrefix(stderr, progName+": ") || !strings.Contains(stderr, want) || !strings.HasSuffix(stderr, "\n") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("%q: stderr %q, want one line %q", args, stderr, progName+": ..."+want+"...")
	}
}

// TestMountCommandLineErrors runs the daemon in mount(8)'s convention with
// bad command lines: each exits 2 with one line and mounts nothing.
func TestMountCommandLineErrors(t *testing.T) {
	bin := buildDaemon(t)
	src, mnt := t.TempDir(), t.TempDir()
	cleanupMount(t, mnt)
	helper := filepath.Join(t.TempDir(), "mount.fuse.govirtiofs")
	if err := os.Symlink(bin, helper); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{bin, []string{src, mnt, "-o", "rw,bogus"}, `unknown mount option "bogus"`},
		{bin, []string{"overlay", mnt, "-o", "lowerdir=" + src + ",bogus=1"}, `unknown mount option "bogus"`},
		{bin, []string{"overlay", mnt, "-o", "lowerdir=" + src + ",upperdir=" + src}, "overlay: upperdir and workdir go together"},
		{bin, []string{"overlay", mnt, "-o", "upperdir=/u,workdir=/w"}, "overlay: lowerdir is required"},
		{bin, []string{src, mnt, "-o", "cache=sometimes"}, "-o cache=sometimes: want never"},
		{bin, []string{src}, "want SOURCE MOUNTPOINT"},
		{helper, nil, "want SOURCE MOUNTPOINT"},
		{helper, []string{src, mnt, "-x"}, "unknown option -x"},
	} {
		code, stdout, stderr := runDaemon(t, tc.bin, tc.args...)
		if code != 2 {
			t.Errorf("%q: exit status %d, want 2 (stderr %q)", tc.args, code, stderr)
		}
		checkOneLine(t, tc.args, stdout, stderr, tc.want)
		if fstype := mountedFS(t, mnt); fstype != "" {
			t.Fatalf("%q: %s is mounted (%s)", tc.args, mnt, fstype)
		}
	}
	// mount(8) -f: a fake mount checks the options and mounts nothing.
	code, stdout, stderr := runDaemon(t, helper, src, mnt, "-f", "-o", "rw,noatime")
	if code != 0 || stdout != "" || stderr != "" || mountedFS(t, mnt) != "" {
		t.Errorf("fake mount: status %d, stdout %q, stderr %q, mounted %q", code, stdout, stderr, mountedFS(t, mnt))
	}
}

// TestMountDaemonPassthrough shares a directory in mount(8)'s convention: the
// command returns 0 with the mount in place, served by a daemon in the
// background that exits when the mount is unmounted.
func TestMountDaemonPassthrough(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	src, mnt := t.TempDir(), t.TempDir()
	cleanupMount(t, mnt)
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("from the source\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, stdout, stderr := runDaemon(t, bin, src, mnt, "-o", "rw,nosuid,nodev,noexec,noatime,cache=never,xattr")
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	t.Logf("mounted in %v", time.Since(start))
	mi := mountInfoLine(t, mnt)
	if mi == nil {
		t.Fatalf("%s is not mounted after the command returned", mnt)
	}
	if mi.fstype != "fuse.govirtiofs" || mi.source != src {
		t.Errorf("mounted %s from %s, want fuse.govirtiofs from %s", mi.fstype, mi.source, src)
	}
	for _, opt := range []string{"rw", "nosuid", "nodev", "noexec", "noatime"} {
		if !mi.opts[opt] {
			t.Errorf("mount options %v lack %s", mi.opts, opt)
		}
	}
	pids := daemonPIDs(t, mnt)
	if len(pids) != 1 {
		t.Fatalf("daemons serving %s: %v, want one", mnt, pids)
	}
	if sid, err := unix.Getsid(pids[0]); err != nil || sid != pids[0] {
		t.Errorf("daemon %d: session %d, %v; want its own session", pids[0], sid, err)
	}
	if cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pids[0]), "cwd")); err != nil || cwd != "/" {
		t.Errorf("daemon working directory %q, %v; want /", cwd, err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(got) != "from the source\n" {
		t.Errorf("read through the mount: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "g"), []byte("written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(src, "g")); err != nil || string(got) != "written\n" {
		t.Errorf("written through the mount: source has %q, %v", got, err)
	}

	// -o remount changes the mount's flags in place, as mount(8) asks.
	for _, tc := range []struct {
		opts    string
		want    []string
		refused error
	}{
		{"ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other", []string{"ro", "relatime"}, unix.EROFS},
		{"rw,nosuid,nodev,noexec,remount", []string{"rw", "noexec"}, nil},
	} {
		if code, _, stderr := runDaemon(t, bin, src, mnt, "-o", tc.opts); code != 0 {
			t.Fatalf("-o %s: status %d, stderr %q", tc.opts, code, stderr)
		}
		mi := mountInfoLine(t, mnt)
		for _, opt := range tc.want {
			if mi == nil || !mi.opts[opt] {
				t.Errorf("after -o %s: mount %+v lacks %s", tc.opts, mi, opt)
			}
		}
		if err := os.WriteFile(filepath.Join(mnt, "h"), nil, 0o644); !errors.Is(err, tc.refused) {
			t.Errorf("after -o %s: create: %v, want %v", tc.opts, err, tc.refused)
		}
	}
	if pids := daemonPIDs(t, mnt); len(pids) != 1 {
		t.Errorf("daemons serving %s after the remounts: %v, want one", mnt, pids)
	}

	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	waitGone(t, mnt)
}

// TestMountDaemonReadOnly mounts read-only with "ro", as mount(8) passes it.
func TestMountDaemonReadOnly(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	src, mnt := t.TempDir(), t.TempDir()
	cleanupMount(t, mnt)
	code, _, stderr := runDaemon(t, bin, src, mnt, "-o", "ro,nosuid,nodev")
	if code != 0 {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	mi := mountInfoLine(t, mnt)
	if mi == nil || !mi.opts["ro"] {
		t.Errorf("mount %+v is not read-only", mi)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("create on the read-only mount: %v, want EROFS", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	waitGone(t, mnt)
}

// TestMountDaemonFailure checks that a mount that fails in the daemon
// (nothing to share, no mount point) returns 1 with the daemon's one-line
// error and leaves no daemon behind.
func TestMountDaemonFailure(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	dir := t.TempDir()
	mnt := t.TempDir()
	cleanupMount(t, mnt)
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{missing, mnt}, missing},
		{[]string{dir, missing}, "mount point " + missing + " does not exist"},
	} {
		code, stdout, stderr := runDaemon(t, bin, tc.args...)
		if code != 1 {
			t.Errorf("%q: exit status %d, want 1 (stderr %q)", tc.args, code, stderr)
		}
		checkOneLine(t, tc.args, stdout, stderr, tc.want)
		if pids := daemonPIDs(t, tc.args[1]); len(pids) > 0 {
			t.Errorf("%q: daemons %v left running", tc.args, pids)
		}
	}
}

// TestMountForeground runs the daemon with -f: it stays in the foreground
// and exits 0 when the mount is unmounted.
func TestMountForeground(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	src, mnt := t.TempDir(), t.TempDir()
	cleanupMount(t, mnt)
	d := startMounting(t, bin, mnt, src, mnt, "-f", "-o", "log_level=debug")
	if pids := daemonPIDs(t, mnt); len(pids) != 1 || pids[0] != d.cmd.Process.Pid {
		t.Errorf("daemons %v, want only the foreground process %d", pids, d.cmd.Process.Pid)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d\n%s", code, d.stderr)
	}
	if !strings.Contains(d.stderr.String(), "unmounted; exiting") {
		t.Errorf("log:\n%s", d.stderr)
	}
}

// overlayLayers makes two lower layers, an upper and a work directory.
func overlayLayers(t *testing.T) (l1, l2, upper, work string) {
	t.Helper()
	dir := t.TempDir()
	l1, l2, upper, work = filepath.Join(dir, "l1"), filepath.Join(dir, "l2"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{l1, l2, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, data := range map[string]string{
		filepath.Join(l2, "only-in-l2"): "from l2\n",
		filepath.Join(l2, "both"):       "l2 version\n",
		filepath.Join(l1, "both"):       "l1 version\n",
	} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return l1, l2, upper, work
}

// checkOverlay checks the union of overlayLayers mounted on mnt: the lower
// layers read through, the top one winning, and a new file lands in upper.
func checkOverlay(t *testing.T, mnt, upper string) {
	t.Helper()
	for name, want := range map[string]string{"only-in-l2": "from l2\n", "both": "l1 version\n"} {
		if got, err := os.ReadFile(filepath.Join(mnt, name)); err != nil || string(got) != want {
			t.Errorf("%s through the overlay: %q, %v; want %q", name, got, err, want)
		}
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || string(got) != "written\n" {
		t.Errorf("file written through the overlay: upper has %q, %v", got, err)
	}
}

// TestMountDaemonOverlay mounts an overlay in mount(8)'s convention, as
// "mount -t fuse.govirtiofs overlay MNT -o lowerdir=..." runs it.
func TestMountDaemonOverlay(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	l1, l2, upper, work := overlayLayers(t)
	mnt := t.TempDir()
	cleanupMount(t, mnt)
	code, stdout, stderr := runDaemon(t, bin, "overlay", mnt, "-o", "rw,lowerdir="+l1+":"+l2+",upperdir="+upper+",workdir="+work)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	mi := mountInfoLine(t, mnt)
	if mi == nil || mi.fstype != "fuse.govirtiofs" || mi.source != "overlay" {
		t.Fatalf("mount %+v, want fuse.govirtiofs from overlay", mi)
	}
	checkOverlay(t, mnt, upper)
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	waitGone(t, mnt)
}

// TestDaemonOverlayFlag serves an overlay with --overlay on a host mount
// point.
func TestDaemonOverlayFlag(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	l1, l2, upper, work := overlayLayers(t)
	mnt := t.TempDir()
	cleanupMount(t, mnt)
	d := startMounting(t, bin, mnt, "--overlay", "lowerdir="+l1+":"+l2+",upperdir="+upper+",workdir="+work, "--mountpoint", mnt)
	checkOverlay(t, mnt, upper)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d\n%s", code, d.stderr)
	}
}

// mountLine is what a test checks of a mount.
type mountLine struct {
	fstype, source string
	opts           map[string]bool // per-mount and superblock options
}

// mountInfoLine returns the topmost mount on path, or nil.
func mountInfoLine(t *testing.T, path string) *mountLine {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found *mountLine
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != path {
			continue
		}
		for i := 6; i+3 < len(f); i++ {
			if f[i] == "-" {
				ml := &mountLine{fstype: f[i+1], source: f[i+2], opts: map[string]bool{}}
				for _, o := range append(strings.Split(f[5], ","), strings.Split(f[i+3], ",")...) {
					ml.opts[o] = true
				}
				found = ml
				break
			}
		}
	}
	return found
}
