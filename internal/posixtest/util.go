package posixtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// wantErrno fails t unless err carries one of want.
func wantErrno(t *testing.T, err error, what string, want ...unix.Errno) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %s", what, errnoNames(want))
		return
	}
	got := errnoOf(err)
	for _, w := range want {
		if got == w {
			return
		}
	}
	t.Errorf("%s: got %v (%s), want %s", what, err, unix.ErrnoName(got), errnoNames(want))
}

func errnoNames(errs []unix.Errno) string {
	var s []string
	for _, e := range errs {
		s = append(s, unix.ErrnoName(e))
	}
	return strings.Join(s, " or ")
}

// check fails t at once if err is not nil.
func check(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

// openFile opens path and closes it when the test ends (a second Close by
// the test is harmless).
func openFile(t *testing.T, path string, flag int, perm os.FileMode) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flag, perm)
	check(t, err, "open %s", path)
	t.Cleanup(func() { f.Close() })
	return f
}

// fdOf returns the descriptor of f without switching it to blocking mode.
func fdOf(f *os.File) int {
	sc, err := f.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	sc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// writeFile creates path (which must not exist) with data and mode perm.
func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	check(t, err, "create %s", path)
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatalf("write %s: %v", path, err)
	}
	check(t, f.Close(), "close %s", path)
}

// readFile reads path with open/read/close.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	check(t, err, "read %s", path)
	return b
}

// wantContent fails t unless path holds exactly want.
func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got := readFile(t, path)
	if !bytes.Equal(got, want) {
		t.Errorf("content of %s: %s", path, diffBytes(got, want))
	}
}

// diffBytes describes how got differs from want.
func diffBytes(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
	}
	i := firstDiff(got, want)
	end := min(i+16, len(got))
	return fmt.Sprintf("differs at offset %d: got %q, want %q", i, got[i:end], want[i:end])
}

func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	check(t, unix.Lstat(path, &st), "lstat %s", path)
	return st
}

func stat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	check(t, unix.Stat(path, &st), "stat %s", path)
	return st
}

func fstat(t *testing.T, fd int) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	check(t, unix.Fstat(fd, &st), "fstat %d", fd)
	return st
}

// wantGone fails t unless path does not exist.
func wantGone(t *testing.T, path string) {
	t.Helper()
	var st unix.Stat_t
	wantErrno(t, unix.Lstat(path, &st), "lstat "+path, unix.ENOENT)
}

// remove unlinks path or removes the empty directory path.
func remove(t *testing.T, path string) {
	t.Helper()
	check(t, os.Remove(path), "remove %s", path)
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("type %#o", mode&unix.S_IFMT)
}

// wantType fails t unless st has file type typ (an S_IF* constant).
func wantType(t *testing.T, what string, st *unix.Stat_t, typ uint32) {
	t.Helper()
	if st.Mode&unix.S_IFMT != typ {
		t.Errorf("%s: type %s, want %s", what, fileType(st.Mode), fileType(typ))
	}
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	fillPattern(b, seed)
	return b
}

func fillPattern(b []byte, seed uint64) {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "govirtiofs posixtest")
	rand.NewChaCha8(s).Read(b)
}

// umask is the process's file mode creation mask, read from
// /proc/self/status so that it never has to be changed.
var umask = sync.OnceValue(func() uint32 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o022
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o022
})

// dirent is one linux_dirent64 record.
type dirent struct {
	ino  uint64
	off  int64
	typ  uint8
	name string
}

// parseDirents decodes the records getdents64 wrote into b.
func parseDirents(b []byte) ([]dirent, error) {
	var out []dirent
	for len(b) > 0 {
		if len(b) < 20 {
			return out, fmt.Errorf("short dirent record: %d bytes left", len(b))
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:]))
		if reclen < 20 || reclen > len(b) || reclen%8 != 0 {
			return out, fmt.Errorf("bad d_reclen %d with %d bytes left", reclen, len(b))
		}
		name := b[19:reclen]
		i := bytes.IndexByte(name, 0)
		if i < 0 {
			return out, fmt.Errorf("dirent name without NUL terminator")
		}
		out = append(out, dirent{
			ino:  binary.NativeEndian.Uint64(b[0:]),
			off:  int64(binary.NativeEndian.Uint64(b[8:])),
			typ:  b[18],
			name: string(name[:i]),
		})
		b = b[reclen:]
	}
	return out, nil
}

// getdents reads the next batch of entries from the directory fd.
func getdents(fd int, buf []byte) ([]dirent, error) {
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		return nil, err
	}
	return parseDirents(buf[:n])
}

// readDirFD reads fd to its end with a buffer of bufSize bytes.
func readDirFD(fd int, bufSize int) ([]dirent, error) {
	buf := make([]byte, bufSize)
	var all []dirent
	for {
		ents, err := getdents(fd, buf)
		if err != nil {
			return all, err
		}
		if len(ents) == 0 {
			return all, nil
		}
		all = append(all, ents...)
	}
}

// readDir lists path (with "." and "..") using getdents64 directly.
func readDir(t *testing.T, path string, bufSize int) []dirent {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "opendir %s", path)
	defer unix.Close(fd)
	ents, err := readDirFD(fd, bufSize)
	check(t, err, "getdents64 %s", path)
	return ents
}

// dtype maps a stat mode to the d_type readdir should report.
func dtype(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	}
	return unix.DT_UNKNOWN
}

// waitDone waits up to d for ch to deliver a value.
func waitDone[T any](ch <-chan T, d time.Duration) (T, bool) {
	select {
	case v := <-ch:
		return v, true
	case <-time.After(d):
		var zero T
		return zero, false
	}
}

func tsTime(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// wantTimeNear fails t unless got lies in [lo-slack, hi+slack]. The slack
// covers the kernel's coarse clock used for file timestamps.
func wantTimeNear(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	const slack = 2 * time.Second
	if got.Before(lo.Add(-slack)) || got.After(hi.Add(slack)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, lo, hi)
	}
}
