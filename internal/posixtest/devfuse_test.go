package posixtest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/posixtest"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

// fuseMount is a passthrough filesystem served over /dev/fuse by the
// govirtiofsd binary in a child process. The daemon must not be this test
// process: a Go program that serves a FUSE mount and also uses it can
// deadlock, because the runtime sometimes waits for a thread that touches
// the mount outside a system call (a page fault on an mmap of a file there,
// the first epoll_ctl on one of its files) while the goroutines that would
// answer the kernel are stopped for garbage collection.
type fuseMount struct {
	backing string // the shared host directory
	mnt     string // the mount point
	daemon  *exec.Cmd
	done    chan error // the daemon's exit
	stopped bool
}

// daemonBin is the govirtiofsd binary built once for the package's tests.
var daemonBin struct {
	once sync.Once
	path string
	err  error
}

// buildDaemon builds cmd/govirtiofsd into a directory every user can read
// (a child acting as another user never runs it, but the path must not be
// below a 0700 test directory to be reusable across tests).
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "posixtest-bin-")
		if err != nil {
			daemonBin.err = err
			return
		}
		daemonBin.path = filepath.Join(dir, "govirtiofsd")
		build := exec.Command("go", "build", "-o", daemonBin.path, "../../cmd/govirtiofsd")
		// The daemon drops capabilities on every thread, which a cgo
		// binary cannot do (syscall.AllThreadsSyscall).
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			daemonBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if daemonBin.err != nil {
		t.Fatalf("building govirtiofsd: %v", daemonBin.err)
	}
	return daemonBin.path
}

// TestMain removes the daemon binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if daemonBin.path != "" {
		os.RemoveAll(filepath.Dir(daemonBin.path))
	}
	os.Exit(code)
}

// mountPassthrough shares a fresh 0777 directory with the given cache
// policy through `govirtiofsd --mountpoint` (passthrough, fuseproto.Server,
// devfuse; mounted with allow_other and default_permissions, as a virtio-fs
// guest would see it), with further daemon flags extra. The cleanup stops
// the daemon if the test has not.
func mountPassthrough(t *testing.T, cache passthrough.CachePolicy, extra ...string) *fuseMount {
	t.Helper()
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	top := worldDir(t, "posixtest-fuse-")
	m := &fuseMount{backing: filepath.Join(top, "shared"), mnt: filepath.Join(top, "mnt"), done: make(chan error, 1)}
	for _, d := range []string{m.backing, m.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(m.backing, 0o777); err != nil {
		t.Fatal(err)
	}
	m.daemon = exec.Command(bin, append([]string{"--shared-dir", m.backing, "--mountpoint", m.mnt,
		"--cache", cache.String(), "--xattr", "--log-level", "warn"}, extra...)...)
	m.daemon.Stdout, m.daemon.Stderr = os.Stderr, os.Stderr
	if err := m.daemon.Start(); err != nil {
		t.Fatalf("starting govirtiofsd: %v", err)
	}
	go func() { m.done <- m.daemon.Wait() }()
	t.Cleanup(func() {
		if !m.stopped {
			m.daemon.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(30 * time.Second):
				m.daemon.Process.Kill()
				t.Errorf("govirtiofsd did not exit within 30s of SIGTERM")
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(t, m.mnt) {
		select {
		case err := <-m.done:
			m.stopped = true
			t.Fatalf("govirtiofsd exited before mounting: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted 20s after starting govirtiofsd", m.mnt)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m
}

// unmount stops the daemon with SIGTERM and checks that it unmounts and
// exits 0.
func (m *fuseMount) unmount(t *testing.T) {
	t.Helper()
	m.stopped = true
	if err := m.daemon.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("govirtiofsd exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		m.daemon.Process.Kill()
		t.Fatalf("govirtiofsd did not exit within 30s of SIGTERM")
	}
	if mounted(t, m.mnt) {
		t.Errorf("%s is still in /proc/self/mountinfo after the daemon exited", m.mnt)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.mnt, &st); err != nil {
		t.Errorf("statfs of the mount point after unmount: %v", err)
	} else if st.Type == unix.FUSE_SUPER_MAGIC {
		t.Errorf("mount point is still a FUSE filesystem after unmount")
	}
}

// mounted reports whether a filesystem is mounted on dir.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestDevFusePassthrough runs the whole suite over a real /dev/fuse mount
// of the passthrough filesystem, once per cache policy, then checks on the
// host that what was done through the mount is really in the shared
// directory, and that unmounting ends the session. cache=auto and never run
// with --killpriv-v2 (the daemon clears set-ID bits when the kernel says
// so), metadata and always with virtiofsd's default (the kernel clears them
// with SETATTR); never and metadata with --allow-mmap, so that MmapShared
// works with direct I/O.
func TestDevFusePassthrough(t *testing.T) {
	for _, cache := range []passthrough.CachePolicy{passthrough.CacheAuto, passthrough.CacheNever, passthrough.CacheMetadata, passthrough.CacheAlways} {
		t.Run("cache="+cache.String(), func(t *testing.T) {
			skip := map[string]string{}
			var extra []string
			switch cache {
			case passthrough.CacheAuto, passthrough.CacheNever:
				extra = append(extra, "--killpriv-v2")
			default:
				skip["SetuidClearedOTrunc"] = "without --killpriv-v2 the kernel keeps set-ID bits on an O_TRUNC open"
			}
			if cache == passthrough.CacheNever || cache == passthrough.CacheMetadata {
				extra = append(extra, "--allow-mmap")
			}
			m := mountPassthrough(t, cache, extra...)
			if !mounted(t, m.mnt) {
				t.Fatalf("%s is not in /proc/self/mountinfo after Mount", m.mnt)
			}
			opts := posixtest.Options{Skip: skip}
			if cache != passthrough.CacheAuto {
				// The 1 GiB test exercises the data path, which is the same
				// for every policy but page caching; once is enough in CI.
				opts.Skip["LargeFile1GiB"] = "run under cache=auto only"
			}
			posixtest.RunWith(t, m.mnt, opts)
			if names, err := dirNames(m.backing); err != nil || len(names) != 0 {
				t.Errorf("shared directory after the suite holds %q (%v); everything the suite removed should be gone on the host", names, err)
			}
			t.Run("HostView", func(t *testing.T) { testHostView(t, m) })
			m.unmount(t)
		})
	}
}

func dirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// testHostView makes entries through the mount and checks them on the host
// side in the shared directory, and the other way round.
func testHostView(t *testing.T, m *fuseMount) {
	g := func(name string) string { return filepath.Join(m.mnt, "hostview", name) }
	h := func(name string) string { return filepath.Join(m.backing, "hostview", name) }
	must := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must(os.Mkdir(filepath.Join(m.mnt, "hostview"), 0o755), "mkdir")
	data := bytes.Repeat([]byte("through the mount\n"), 1000)
	must(os.WriteFile(g("file"), data, 0o640), "write")
	must(unix.Chown(g("file"), 1000, 2000), "chown")
	must(unix.Chmod(g("file"), 0o4751), "chmod") // after chown, which clears setuid
	ts := []unix.Timespec{{Sec: 1234567890, Nsec: 123456789}, {Sec: 1500000000, Nsec: 987654321}}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, g("file"), ts, 0), "utimensat")
	must(unix.Setxattr(g("file"), "user.origin", []byte("guest"), 0), "setxattr")
	must(unix.Link(g("file"), g("hardlink")), "link")
	must(unix.Symlink("file", g("symlink")), "symlink")
	must(unix.Mknod(g("chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))), "mknod")
	must(unix.Mkfifo(g("fifo"), 0o600), "mkfifo")
	must(os.WriteFile(g("renamed-from"), []byte("r"), 0o644), "write")
	must(unix.Rename(g("renamed-from"), g("renamed-to")), "rename")

	// Stat before reading: a read moves atime.
	var gs, hs unix.Stat_t
	must(unix.Lstat(g("file"), &gs), "lstat through the mount")
	must(unix.Lstat(h("file"), &hs), "lstat on the host")
	got, err := os.ReadFile(h("file"))
	must(err, "reading the file on the host")
	if !bytes.Equal(got, data) {
		t.Errorf("host sees %d bytes in the file, want %d written through the mount", len(got), len(data))
	}
	if hs.Mode != unix.S_IFREG|0o4751 || hs.Uid != 1000 || hs.Gid != 2000 || hs.Nlink != 2 || hs.Size != int64(len(data)) {
		t.Errorf("host file: mode %#o uid %d gid %d nlink %d size %d; want %#o 1000 2000 2 %d",
			hs.Mode, hs.Uid, hs.Gid, hs.Nlink, hs.Size, unix.S_IFREG|0o4751, len(data))
	}
	if hs.Atim != ts[0] || hs.Mtim != ts[1] {
		t.Errorf("host file times: atime %v mtime %v, want %v %v", hs.Atim, hs.Mtim, ts[0], ts[1])
	}
	if gs.Ino != hs.Ino {
		t.Errorf("inode number through the mount %d, on the host %d", gs.Ino, hs.Ino)
	}
	if gs.Mode != hs.Mode || gs.Uid != hs.Uid || gs.Gid != hs.Gid || gs.Size != hs.Size || gs.Blocks != hs.Blocks || gs.Mtim != hs.Mtim || gs.Ctim != hs.Ctim {
		t.Errorf("stat through the mount %+v differs from the host's %+v", gs, hs)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(h("file"), "user.origin", buf); err != nil || string(buf[:n]) != "guest" {
		t.Errorf("host xattr user.origin = %q, %v", buf[:n], err)
	}
	var hl unix.Stat_t
	if err := unix.Lstat(h("hardlink"), &hl); err != nil || hl.Ino != hs.Ino {
		t.Errorf("host hard link: ino %d (%v), want %d", hl.Ino, err, hs.Ino)
	}
	if n, err := unix.Readlink(h("symlink"), buf); err != nil || string(buf[:n]) != "file" {
		t.Errorf("host symlink target %q, %v", buf[:n], err)
	}
	var cs unix.Stat_t
	if err := unix.Lstat(h("chr"), &cs); err != nil || cs.Mode&unix.S_IFMT != unix.S_IFCHR || cs.Rdev != unix.Mkdev(1, 5) {
		t.Errorf("host device node: mode %#o rdev %d:%d (%v), want a char device 1:5", cs.Mode, unix.Major(cs.Rdev), unix.Minor(cs.Rdev), err)
	}
	var fs unix.Stat_t
	if err := unix.Lstat(h("fifo"), &fs); err != nil || fs.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("host fifo: mode %#o (%v)", fs.Mode, err)
	}
	if _, err := os.Lstat(h("renamed-from")); !os.IsNotExist(err) {
		t.Errorf("host still has the rename source: %v", err)
	}
	if b, err := os.ReadFile(h("renamed-to")); err != nil || string(b) != "r" {
		t.Errorf("host rename target %q, %v", b, err)
	}

	// Birth time, when both sides report one, is the host's.
	var gx, hx unix.Statx_t
	must(unix.Statx(unix.AT_FDCWD, g("file"), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &gx), "statx through the mount")
	must(unix.Statx(unix.AT_FDCWD, h("file"), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &hx), "statx on the host")
	switch {
	case hx.Mask&unix.STATX_BTIME == 0:
		t.Logf("the host filesystem reports no birth time")
	case gx.Mask&unix.STATX_BTIME == 0:
		t.Errorf("the host reports a birth time but statx through the mount does not (mask %#x)", gx.Mask)
	case gx.Btime != hx.Btime:
		t.Errorf("birth time through the mount %d.%09d, on the host %d.%09d", gx.Btime.Sec, gx.Btime.Nsec, hx.Btime.Sec, hx.Btime.Nsec)
	}

	// The other way: what the host creates is visible through the mount
	// (these names were never looked up, so no cache stands in the way).
	must(os.WriteFile(h("from-host"), []byte("made on the host"), 0o644), "host write")
	must(os.Mkdir(h("host-dir"), 0o700), "host mkdir")
	if b, err := os.ReadFile(g("from-host")); err != nil || string(b) != "made on the host" {
		t.Errorf("through the mount, the host's file reads %q, %v", b, err)
	}
	var ds unix.Stat_t
	if err := unix.Lstat(g("host-dir"), &ds); err != nil || ds.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("through the mount, the host's directory has mode %#o (%v)", ds.Mode, err)
	}

	must(os.RemoveAll(filepath.Join(m.mnt, "hostview")), "remove through the mount")
	if _, err := os.Lstat(filepath.Join(m.backing, "hostview")); !os.IsNotExist(err) {
		t.Errorf("after removing through the mount the host still has it: %v", err)
	}
}
