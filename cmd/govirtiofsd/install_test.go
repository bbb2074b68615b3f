package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// mountHelper is where mount(8) looks for the helper of "mount -t
// fuse.govirtiofs": util-linux's libmount tries /sbin/mount.TYPE (then
// /sbin/fs.d and /sbin/fs, and the type without its ".subtype").
const mountHelper = "/sbin/mount.fuse.govirtiofs"

// makeInstall runs "make install" of the repository into dest with the
// extra make variables.
func makeInstall(t *testing.T, dest string, vars ...string) {
	t.Helper()
	mk, err := exec.LookPath("make")
	if err != nil {
		testenv.Missing(t, "make not found")
	}
	args := append([]string{"-C", "../..", "install", "DESTDIR=" + dest, "BIN=" + t.TempDir()}, vars...)
	if out, err := exec.Command(mk, args...).CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestMakeInstall checks what "make install" lays out: the daemon, and the
// mount helper linked to it, whatever PREFIX.
func TestMakeInstall(t *testing.T) {
	for _, tc := range []struct {
		vars         []string
		bin, helper  string
		helperTarget string
	}{
		{nil, "/usr/libexec/govirtiofsd", "/sbin/mount.fuse.govirtiofs", "/usr/libexec/govirtiofsd"},
		{[]string{"PREFIX=/usr/local"}, "/usr/local/libexec/govirtiofsd", "/sbin/mount.fuse.govirtiofs", "/usr/local/libexec/govirtiofsd"},
		{[]string{"MOUNTHELPERDIR=/usr/sbin"}, "/usr/libexec/govirtiofsd", "/usr/sbin/mount.fuse.govirtiofs", "/usr/libexec/govirtiofsd"},
	} {
		t.Run(strings.Join(append([]string{"default"}, tc.vars...), ","), func(t *testing.T) {
			dest := t.TempDir()
			makeInstall(t, dest, tc.vars...)
			st, err := os.Stat(filepath.Join(dest, tc.bin))
			if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 {
				t.Fatalf("installed binary %s: %v, %v", tc.bin, st, err)
			}
			target, err := os.Readlink(filepath.Join(dest, tc.helper))
			if err != nil || target != tc.helperTarget {
				t.Fatalf("mount helper %s links to %q, %v; want %q", tc.helper, target, err, tc.helperTarget)
			}
			code, stdout, _ := runDaemon(t, filepath.Join(dest, tc.bin), "--help")
			if code != 0 || !strings.Contains(stdout, "SOURCE MOUNTPOINT") {
				t.Errorf("installed binary --help: status %d, %q", code, stdout)
			}
			checkDescriptor(t, filepath.Join(dest, "usr/share/qemu/vhost-user/40-govirtiofsd.json"), tc.bin, filepath.Join(dest, tc.bin))
		})
	}
}

// checkDescriptor checks the vhost-user backend descriptor make install
// wrote, as libvirt reads it (src/util/virvhostuser.c, QEMU's
// docs/interop/vhost-user.json): type "fs", an absolute binary path that
// names the installed daemon, features libvirt knows, and the same features
// the binary's --print-capabilities reports.
func checkDescriptor(t *testing.T, path, binary, installed string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("descriptor: %v", err)
	}
	var d struct {
		Description string   `json:"description"`
		Type        string   `json:"type"`
		Binary      string   `json:"binary"`
		Features    []string `json:"features"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("descriptor %s: %v\n%s", path, err, b)
	}
	if d.Type != "fs" || d.Binary != binary || d.Description == "" {
		t.Errorf("descriptor %+v, want type fs and binary %s", d, binary)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("descriptor mode %v, %v; want 0644", st, err)
	}
	code, stdout, stderr := runDaemon(t, installed, "--print-capabilities")
	var caps struct {
		Type     string   `json:"type"`
		Features []string `json:"features"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &caps) != nil {
		t.Fatalf("--print-capabilities: status %d, %q, %q", code, stdout, stderr)
	}
	if caps.Type != d.Type || !reflect.DeepEqual(caps.Features, d.Features) {
		t.Errorf("--print-capabilities %+v differs from the descriptor %+v", caps, d)
	}
}

// TestMountHelper puts the mount helper where mount(8) looks for it
// (linked to a binary installed into a temporary DESTDIR) and mounts with
// mount(8): "mount -t fuse.govirtiofs" and an fstab line (mount -T).
func TestMountHelper(t *testing.T) {
	testenv.RequireFUSE(t)
	mountCmd, err := exec.LookPath("mount")
	if err != nil {
		testenv.Missing(t, "mount (util-linux) not found")
	}
	dest := t.TempDir()
	makeInstall(t, dest)
	bin := filepath.Join(dest, "usr/libexec/govirtiofsd")
	installHelper(t, bin)

	t.Run("directory", func(t *testing.T) {
		src, mnt := t.TempDir(), t.TempDir()
		cleanupMount(t, mnt)
		if err := os.WriteFile(filepath.Join(src, "f"), []byte("shared\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runDaemon(t, mountCmd, "-t", "fuse.govirtiofs", src, mnt, "-o", "noexec,cache=never")
		if code != 0 {
			t.Fatalf("mount: status %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		mi := mountInfoLine(t, mnt)
		if mi == nil || mi.fstype != "fuse.govirtiofs" || mi.source != src || !mi.opts["noexec"] {
			t.Fatalf("mount %+v, want fuse.govirtiofs of %s with noexec", mi, src)
		}
		if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(got) != "shared\n" {
			t.Errorf("read through the mount: %q, %v", got, err)
		}
		if out, err := exec.Command(mountCmd, "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount -o remount,ro: %v\n%s", err, out)
		}
		if mi := mountInfoLine(t, mnt); mi == nil || !mi.opts["ro"] || !mi.opts["noexec"] {
			t.Errorf("after mount -o remount,ro: %+v, want ro and still noexec", mi)
		}
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v\n%s", err, out)
		}
		waitGone(t, mnt)
	})

	t.Run("overlay fstab", func(t *testing.T) {
		l1, l2, upper, work := overlayLayers(t)
		mnt := t.TempDir()
		cleanupMount(t, mnt)
		fstab := filepath.Join(t.TempDir(), "fstab")
		line := "overlay " + mnt + " fuse.govirtiofs noauto,nofail,x-systemd.requires-mounts-for=" + l1 +
			",lowerdir=" + l1 + ":" + l2 + ",upperdir=" + upper + ",workdir=" + work + " 0 0\n"
		if err := os.WriteFile(fstab, []byte("# test\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runDaemon(t, mountCmd, "-T", fstab, mnt)
		if code != 0 {
			t.Fatalf("mount -T %s %s: status %d, stdout %q, stderr %q\nfstab: %s", fstab, mnt, code, stdout, stderr, line)
		}
		if mi := mountInfoLine(t, mnt); mi == nil || mi.fstype != "fuse.govirtiofs" {
			t.Fatalf("mount %+v, want fuse.govirtiofs", mi)
		}
		checkOverlay(t, mnt, upper)
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v\n%s", err, out)
		}
		waitGone(t, mnt)
	})

	t.Run("fake and errors", func(t *testing.T) {
		src, mnt := t.TempDir(), t.TempDir()
		cleanupMount(t, mnt)
		if code, _, stderr := runDaemon(t, mountCmd, "-f", "-t", "fuse.govirtiofs", src, mnt); code != 0 || mountedFS(t, mnt) != "" {
			t.Errorf("mount -f: status %d, stderr %q, mounted %q; want 0 and nothing mounted", code, stderr, mountedFS(t, mnt))
		}
		code, _, stderr := runDaemon(t, mountCmd, "-t", "fuse.govirtiofs", src, mnt, "-o", "bogus")
		if code != 2 || stderr != progName+": unknown mount option \"bogus\"\n" || mountedFS(t, mnt) != "" {
			t.Errorf("bad option: status %d, stderr %q, mounted %q", code, stderr, mountedFS(t, mnt))
		}
		missing := filepath.Join(src, "missing")
		code, _, stderr = runDaemon(t, mountCmd, "-t", "fuse.govirtiofs", "overlay", mnt, "-o", "lowerdir="+missing)
		if code != 1 || !strings.Contains(stderr, missing) || strings.Count(stderr, "\n") != 1 || mountedFS(t, mnt) != "" {
			t.Errorf("missing layer: status %d, stderr %q, mounted %q", code, stderr, mountedFS(t, mnt))
		}
	})
}

// installHelper links mountHelper to bin for the test. A helper already
// there (a link, as make install makes) is put back afterwards; anything
// else there is left alone and the test cannot run.
func installHelper(t *testing.T, bin string) {
	t.Helper()
	old, err := os.Readlink(mountHelper)
	switch {
	case err == nil:
		t.Logf("%s links to %s; replacing it for the test", mountHelper, old)
		if err := os.Remove(mountHelper); err != nil {
			t.Fatal(err)
		}
	case errors.Is(err, unix.EINVAL):
		testenv.Missing(t, "%s exists and is not a link; not replacing it", mountHelper)
	case !errors.Is(err, os.ErrNotExist):
		t.Fatal(err)
	}
	if err := os.Symlink(bin, mountHelper); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(mountHelper)
		if old != "" {
			if err := os.Symlink(old, mountHelper); err != nil {
				t.Errorf("putting back %s -> %s: %v", mountHelper, old, err)
			}
		}
	})
}
