package posixtest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testChmod checks chmod, fchmod and fchmodat: every permission bit
// including setuid, setgid and sticky is stored, chmod follows symlinks,
// and ctime moves.
func testChmod(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("x"), 0o644)
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}, 0), "utimensat")
	before := time.Now()
	for _, mode := range []uint32{0o600, 0o4755, 0o2755, 0o1777, 0o7777, 0, 0o640} {
		check(t, unix.Chmod(p, mode), "chmod %#o", mode)
		if got := lstat(t, p).Mode & 0o7777; got != mode {
			t.Errorf("after chmod %#o, mode is %#o", mode, got)
		}
	}
	st := lstat(t, p)
	wantTimeNear(t, "ctime after chmod", tsTime(st.Ctim), before, time.Now())
	if st.Mtim.Sec != 1e9 {
		t.Errorf("chmod changed mtime to %v", tsTime(st.Mtim))
	}
	f := openFile(t, p, os.O_RDONLY, 0)
	check(t, unix.Fchmod(fdOf(f), 0o604), "fchmod")
	if got := fstat(t, fdOf(f)).Mode & 0o7777; got != 0o604 {
		t.Errorf("after fchmod 0604, mode is %#o", got)
	}
	check(t, f.Close(), "close")

	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	check(t, unix.Chmod(l, 0o612), "chmod through a symlink")
	if got := lstat(t, p).Mode & 0o7777; got != 0o612 {
		t.Errorf("chmod through a symlink: target mode %#o, want 0612", got)
	}
	if got := lstat(t, l).Mode & 0o7777; got != 0o777 {
		t.Errorf("chmod through a symlink changed the link's mode to %#o", got)
	}

	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	check(t, unix.Chmod(d, 0o1730), "chmod of a directory")
	if got := lstat(t, d).Mode & 0o7777; got != 0o1730 {
		t.Errorf("directory mode after chmod 01730 is %#o", got)
	}
	if st := lstat(t, d); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("chmod changed the file type to %s", fileType(st.Mode))
	}
	wantErrno(t, unix.Chmod(filepath.Join(dir, "missing"), 0o644), "chmod of a missing file", unix.ENOENT)
	remove(t, l)
	remove(t, p)
	remove(t, d)
}

// testChown checks chown, lchown and fchown (as root): owner and group
// change independently (-1 keeps one), lchown changes the link not its
// target, and chown of a regular file clears setuid and group-executable
// setgid.
func testChown(t *testing.T, dir string) {
	if os.Geteuid() != 0 {
		t.Skip("chown to other users needs root")
	}
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("x"), 0o644)
	check(t, unix.Chown(p, 1000, 2000), "chown 1000:2000")
	wantOwner(t, p, 1000, 2000)
	check(t, unix.Chown(p, -1, 3000), "chown -1:3000")
	wantOwner(t, p, 1000, 3000)
	check(t, unix.Chown(p, 4000, -1), "chown 4000:-1")
	wantOwner(t, p, 4000, 3000)

	f := openFile(t, p, os.O_RDONLY, 0)
	check(t, unix.Fchown(fdOf(f), 5, 6), "fchown")
	if st := fstat(t, fdOf(f)); st.Uid != 5 || st.Gid != 6 {
		t.Errorf("after fchown 5:6, owner is %d:%d", st.Uid, st.Gid)
	}
	check(t, f.Close(), "close")

	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	check(t, unix.Lchown(l, 1234, 4321), "lchown")
	wantOwner(t, l, 1234, 4321)
	wantOwner(t, p, 5, 6)
	check(t, unix.Chown(l, 77, 88), "chown through a symlink")
	wantOwner(t, p, 77, 88)
	wantOwner(t, l, 1234, 4321)

	// chown clears setuid, and setgid when group-executable, even for root.
	check(t, unix.Chmod(p, 0o6755), "chmod 06755")
	check(t, unix.Chown(p, 1000, 1000), "chown of a setuid file")
	if got := lstat(t, p).Mode & 0o7777; got != 0o755 {
		t.Errorf("after chown of a 06755 file, mode is %#o, want 0755", got)
	}
	// Setgid without group execute is kept.
	check(t, unix.Chmod(p, 0o2745), "chmod 02745")
	check(t, unix.Chown(p, 0, 0), "chown")
	if got := lstat(t, p).Mode & 0o7777; got != 0o2745 {
		t.Errorf("after chown of a 02745 file, mode is %#o, want 02745", got)
	}
	// Directories keep both bits.
	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	check(t, unix.Chmod(d, 0o2775), "chmod 02775")
	check(t, unix.Chown(d, 1000, 1000), "chown of a setgid directory")
	if got := lstat(t, d).Mode & 0o7777; got != 0o2775 {
		t.Errorf("after chown of a 02775 directory, mode is %#o, want 02775", got)
	}
	wantErrno(t, unix.Chown(filepath.Join(dir, "missing"), 0, 0), "chown of a missing file", unix.ENOENT)
	remove(t, l)
	remove(t, p)
	remove(t, d)
}

func wantOwner(t *testing.T, p string, uid, gid uint32) {
	t.Helper()
	if st := lstat(t, p); st.Uid != uid || st.Gid != gid {
		t.Errorf("%s is owned by %d:%d, want %d:%d", filepath.Base(p), st.Uid, st.Gid, uid, gid)
	}
}

// testUtimensat sets atime and mtime with nanoseconds (also before 1970 and
// after 2038), honours UTIME_OMIT and UTIME_NOW, changes a symlink's own
// times with AT_SYMLINK_NOFOLLOW, and moves ctime.
func testUtimensat(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("x"), 0o644)
	t1 := unix.Timespec{Sec: time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).Unix(), Nsec: 123456789}
	t2 := unix.Timespec{Sec: time.Date(2011, 12, 13, 14, 15, 16, 0, time.UTC).Unix(), Nsec: 987654321}
	t3 := unix.Timespec{Sec: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), Nsec: 1}
	t4 := unix.Timespec{Sec: -100, Nsec: 5}

	before := time.Now()
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{t1, t2}, 0), "utimensat")
	after := time.Now()
	st := lstat(t, p)
	wantTimes(t, "utimensat", &st, t1, t2)
	wantTimeNear(t, "ctime after utimensat", tsTime(st.Ctim), before, after)

	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{omit, t3}, 0), "utimensat UTIME_OMIT atime")
	st = lstat(t, p)
	wantTimes(t, "UTIME_OMIT atime", &st, t1, t3)
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{t4, omit}, 0), "utimensat UTIME_OMIT mtime")
	st = lstat(t, p)
	wantTimes(t, "UTIME_OMIT mtime", &st, t4, t3)

	before = time.Now()
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{omit, now}, 0), "utimensat UTIME_NOW mtime")
	after = time.Now()
	st = lstat(t, p)
	if st.Atim != t4 {
		t.Errorf("UTIME_NOW mtime changed atime to %v", tsTime(st.Atim))
	}
	wantTimeNear(t, "mtime after UTIME_NOW", tsTime(st.Mtim), before, after)
	before = time.Now()
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{now, now}, 0), "utimensat UTIME_NOW both")
	after = time.Now()
	st = lstat(t, p)
	wantTimeNear(t, "atime after UTIME_NOW", tsTime(st.Atim), before, after)
	wantTimeNear(t, "mtime after UTIME_NOW", tsTime(st.Mtim), before, after)

	// Through a descriptor (futimens is utimensat with AT_EMPTY_PATH).
	f := openFile(t, p, os.O_RDONLY, 0)
	check(t, unix.UtimesNanoAt(fdOf(f), "", []unix.Timespec{t2, t1}, unix.AT_EMPTY_PATH), "futimens")
	st = fstat(t, fdOf(f))
	wantTimes(t, "futimens", &st, t2, t1)
	check(t, f.Close(), "close")

	// A symlink's own times.
	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, l, []unix.Timespec{t3, t3}, unix.AT_SYMLINK_NOFOLLOW), "utimensat AT_SYMLINK_NOFOLLOW")
	st = lstat(t, l)
	wantTimes(t, "symlink after AT_SYMLINK_NOFOLLOW", &st, t3, t3)
	st = lstat(t, p)
	wantTimes(t, "symlink target after AT_SYMLINK_NOFOLLOW", &st, t2, t1)
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, l, []unix.Timespec{t4, t4}, 0), "utimensat through a symlink")
	st = lstat(t, p)
	wantTimes(t, "target after utimensat through a symlink", &st, t4, t4)

	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{t1, t2}, 0), "utimensat of a directory")
	st = lstat(t, d)
	wantTimes(t, "directory", &st, t1, t2)

	wantErrno(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "missing"), []unix.Timespec{t1, t1}, 0), "utimensat of a missing file", unix.ENOENT)
	remove(t, l)
	remove(t, p)
	remove(t, d)
}

func wantTimes(t *testing.T, what string, st *unix.Stat_t, atime, mtime unix.Timespec) {
	t.Helper()
	if st.Atim != atime {
		t.Errorf("%s: atime %v (%d.%09d), want %v (%d.%09d)", what, tsTime(st.Atim).UTC(), st.Atim.Sec, st.Atim.Nsec, tsTime(atime).UTC(), atime.Sec, atime.Nsec)
	}
	if st.Mtim != mtime {
		t.Errorf("%s: mtime %v (%d.%09d), want %v (%d.%09d)", what, tsTime(st.Mtim).UTC(), st.Mtim.Sec, st.Mtim.Nsec, tsTime(mtime).UTC(), mtime.Sec, mtime.Nsec)
	}
}

// testTimesUpdatedByWrite checks that write, truncate, and creating or
// removing entries move mtime and ctime to the present.
func testTimesUpdatedByWrite(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("x"), 0o644)
	old := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, old, 0), "utimensat")
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, dir, old, 0), "utimensat")

	before := time.Now()
	f := openFile(t, p, os.O_WRONLY, 0)
	_, err := f.Write([]byte("y"))
	check(t, err, "write")
	check(t, f.Close(), "close")
	after := time.Now()
	st := lstat(t, p)
	wantTimeNear(t, "mtime after write", tsTime(st.Mtim), before, after)
	wantTimeNear(t, "ctime after write", tsTime(st.Ctim), before, after)
	if st.Atim != old[0] {
		t.Errorf("write changed atime to %v", tsTime(st.Atim))
	}

	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, old, 0), "utimensat")
	before = time.Now()
	check(t, unix.Truncate(p, 100), "truncate")
	after = time.Now()
	st = lstat(t, p)
	wantTimeNear(t, "mtime after truncate", tsTime(st.Mtim), before, after)

	before = time.Now()
	writeFile(t, filepath.Join(dir, "new"), nil, 0o644)
	after = time.Now()
	st = lstat(t, dir)
	wantTimeNear(t, "directory mtime after creating an entry", tsTime(st.Mtim), before, after)
	check(t, unix.UtimesNanoAt(unix.AT_FDCWD, dir, old, 0), "utimensat")
	before = time.Now()
	remove(t, filepath.Join(dir, "new"))
	after = time.Now()
	st = lstat(t, dir)
	wantTimeNear(t, "directory mtime after removing an entry", tsTime(st.Mtim), before, after)
	remove(t, p)
}

// testStatfs checks that statfs and fstatfs report sane, consistent numbers
// and a 255-byte name limit.
func testStatfs(t *testing.T, dir string) {
	var s unix.Statfs_t
	check(t, unix.Statfs(dir, &s), "statfs")
	if s.Bsize <= 0 || s.Bsize&(s.Bsize-1) != 0 {
		t.Errorf("f_bsize = %d, want a positive power of two", s.Bsize)
	}
	if s.Frsize <= 0 {
		t.Errorf("f_frsize = %d", s.Frsize)
	}
	if s.Blocks == 0 || s.Bfree > s.Blocks || s.Bavail > s.Bfree {
		t.Errorf("f_blocks %d f_bfree %d f_bavail %d: want 0 < blocks, bavail <= bfree <= blocks", s.Blocks, s.Bfree, s.Bavail)
	}
	if s.Ffree > s.Files {
		t.Errorf("f_ffree %d > f_files %d", s.Ffree, s.Files)
	}
	if s.Namelen != 255 {
		t.Errorf("f_namelen = %d, want 255", s.Namelen)
	}
	p := filepath.Join(dir, "file")
	writeFile(t, p, nil, 0o644)
	f := openFile(t, p, os.O_RDONLY, 0)
	var fs unix.Statfs_t
	check(t, unix.Fstatfs(fdOf(f), &fs), "fstatfs")
	if fs.Bsize != s.Bsize || fs.Blocks != s.Blocks || fs.Namelen != s.Namelen || fs.Type != s.Type {
		t.Errorf("fstatfs of a file (bsize %d blocks %d namelen %d type %#x) differs from statfs of its directory (%d %d %d %#x)",
			fs.Bsize, fs.Blocks, fs.Namelen, fs.Type, s.Bsize, s.Blocks, s.Namelen, s.Type)
	}
	check(t, f.Close(), "close")
	wantErrno(t, unix.Statfs(filepath.Join(dir, "missing"), &fs), "statfs of a missing path", unix.ENOENT)
	remove(t, p)
}

// testStatx checks statx: the basic fields agree with stat, a requested
// subset is honoured, and when the filesystem reports a birth time it is
// the creation time and does not move when the file is written or its
// times are set.
func testStatx(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	before := time.Now()
	writeFile(t, p, []byte("hello"), 0o640)
	after := time.Now()

	var sx unix.Statx_t
	check(t, unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx), "statx")
	if sx.Mask&unix.STATX_BASIC_STATS != unix.STATX_BASIC_STATS {
		t.Errorf("statx mask %#x lacks basic stats %#x", sx.Mask, unix.STATX_BASIC_STATS&^sx.Mask)
	}
	st := lstat(t, p)
	if sx.Ino != st.Ino || uint32(sx.Mode) != st.Mode || uint64(sx.Nlink) != st.Nlink || sx.Uid != st.Uid || sx.Gid != st.Gid ||
		int64(sx.Size) != st.Size || int64(sx.Blocks) != st.Blocks {
		t.Errorf("statx (ino %d mode %#o nlink %d uid %d gid %d size %d blocks %d) disagrees with stat (%d %#o %d %d %d %d %d)",
			sx.Ino, sx.Mode, sx.Nlink, sx.Uid, sx.Gid, sx.Size, sx.Blocks, st.Ino, st.Mode, st.Nlink, st.Uid, st.Gid, st.Size, st.Blocks)
	}
	if sx.Mtime.Sec != st.Mtim.Sec || int64(sx.Mtime.Nsec) != st.Mtim.Nsec {
		t.Errorf("statx mtime %d.%09d, stat %d.%09d", sx.Mtime.Sec, sx.Mtime.Nsec, st.Mtim.Sec, st.Mtim.Nsec)
	}
	if sx.Mask&unix.STATX_BTIME != 0 {
		btime := time.Unix(sx.Btime.Sec, int64(sx.Btime.Nsec))
		wantTimeNear(t, "btime", btime, before, after)
		if btime.After(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)) {
			t.Errorf("btime %v is after mtime %v", btime, tsTime(st.Mtim))
		}
		check(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 1000}, {Sec: 1000}}, 0), "utimensat")
		f := openFile(t, p, os.O_WRONLY|os.O_APPEND, 0)
		_, err := f.Write([]byte(" world"))
		check(t, err, "write")
		check(t, f.Close(), "close")
		var sx2 unix.Statx_t
		check(t, unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_BTIME, &sx2), "statx")
		if sx2.Mask&unix.STATX_BTIME == 0 {
			t.Errorf("btime reported once, then not")
		} else if sx2.Btime != sx.Btime {
			t.Errorf("btime moved from %d.%09d to %d.%09d after write and utimensat", sx.Btime.Sec, sx.Btime.Nsec, sx2.Btime.Sec, sx2.Btime.Nsec)
		}
	} else {
		t.Logf("the filesystem reports no birth time (statx mask %#x)", sx.Mask)
	}

	// A subset: the type and mode must come back whatever else does.
	var sub unix.Statx_t
	check(t, unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_MODE, &sub), "statx STATX_TYPE|STATX_MODE")
	if sub.Mask&(unix.STATX_TYPE|unix.STATX_MODE) != unix.STATX_TYPE|unix.STATX_MODE || uint32(sub.Mode) != st.Mode {
		t.Errorf("statx STATX_TYPE|STATX_MODE: mask %#x mode %#o, want both bits and mode %#o", sub.Mask, sub.Mode, st.Mode)
	}
	check(t, unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_FORCE_SYNC, unix.STATX_SIZE, &sub), "statx AT_STATX_FORCE_SYNC")
	if sub.Mask&unix.STATX_SIZE == 0 || int64(sub.Size) != lstat(t, p).Size {
		t.Errorf("statx STATX_SIZE: mask %#x size %d", sub.Mask, sub.Size)
	}

	// Directories and symlinks.
	check(t, unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_BASIC_STATS, &sub), "statx of a directory")
	if sub.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("statx of a directory: type %s", fileType(uint32(sub.Mode)))
	}
	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	check(t, unix.Statx(unix.AT_FDCWD, l, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &sub), "statx of a symlink")
	if sub.Mode&unix.S_IFMT != unix.S_IFLNK || sub.Size != 4 {
		t.Errorf("statx of a symlink: %s size %d", fileType(uint32(sub.Mode)), sub.Size)
	}
	check(t, unix.Statx(unix.AT_FDCWD, l, 0, unix.STATX_BASIC_STATS, &sub), "statx through a symlink")
	if sub.Ino != st.Ino {
		t.Errorf("statx through a symlink: inode %d, want %d", sub.Ino, st.Ino)
	}
	wantErrno(t, unix.Statx(unix.AT_FDCWD, filepath.Join(dir, "missing"), 0, unix.STATX_BASIC_STATS, &sub), "statx of a missing file", unix.ENOENT)
	remove(t, l)
	remove(t, p)
}

// testXattrUser checks user.* extended attributes: set, get, the size
// query, ERANGE for a short buffer, list, remove, ENODATA, binary and empty
// values, descriptors, directories, and EPERM on symlinks.
func testXattrUser(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, nil, 0o644)
	check(t, unix.Setxattr(p, "user.test", []byte("value1"), 0), "setxattr")
	if n, err := unix.Getxattr(p, "user.test", nil); err != nil || n != 6 {
		t.Errorf("getxattr size query = %d, %v; want 6", n, err)
	}
	buf := make([]byte, 6)
	if n, err := unix.Getxattr(p, "user.test", buf); err != nil || string(buf[:n]) != "value1" {
		t.Errorf("getxattr = %q, %v", buf[:n], err)
	}
	_, err := unix.Getxattr(p, "user.test", make([]byte, 3))
	wantErrno(t, err, "getxattr into a short buffer", unix.ERANGE)
	_, err = unix.Getxattr(p, "user.missing", nil)
	wantErrno(t, err, "getxattr size query of a missing attribute", unix.ENODATA)
	_, err = unix.Getxattr(p, "user.missing", make([]byte, 64))
	wantErrno(t, err, "getxattr of a missing attribute", unix.ENODATA)

	bin := append([]byte("\x00bin\x00ary\xff"), pattern(3000, 5)...)
	check(t, unix.Setxattr(p, "user.binary", bin, 0), "setxattr binary")
	check(t, unix.Setxattr(p, "user.empty", nil, 0), "setxattr empty value")
	if got := getxattr(t, p, "user.binary"); !bytes.Equal(got, bin) {
		t.Errorf("binary value: %s", diffBytes(got, bin))
	}
	if n, err := unix.Getxattr(p, "user.empty", make([]byte, 16)); err != nil || n != 0 {
		t.Errorf("getxattr of an empty value = %d, %v; want 0", n, err)
	}
	wantXattrNames(t, p, "user.binary", "user.empty", "user.test")
	_, err = unix.Listxattr(p, make([]byte, 5))
	wantErrno(t, err, "listxattr into a short buffer", unix.ERANGE)

	check(t, unix.Removexattr(p, "user.test"), "removexattr")
	_, err = unix.Getxattr(p, "user.test", nil)
	wantErrno(t, err, "getxattr after removexattr", unix.ENODATA)
	wantErrno(t, unix.Removexattr(p, "user.test"), "removexattr of a missing attribute", unix.ENODATA)
	wantXattrNames(t, p, "user.binary", "user.empty")

	// Many attributes.
	for i := range 20 {
		check(t, unix.Setxattr(p, "user.many"+strconv.Itoa(i), []byte(strings.Repeat("v", i)), 0), "setxattr")
	}
	names := []string{"user.binary", "user.empty"}
	for i := range 20 {
		names = append(names, "user.many"+strconv.Itoa(i))
	}
	wantXattrNames(t, p, names...)

	// Through a descriptor.
	f := openFile(t, p, os.O_RDONLY, 0)
	check(t, unix.Fsetxattr(fdOf(f), "user.fd", []byte("via fd"), 0), "fsetxattr")
	fbuf := make([]byte, 64)
	if n, err := unix.Fgetxattr(fdOf(f), "user.fd", fbuf); err != nil || string(fbuf[:n]) != "via fd" {
		t.Errorf("fgetxattr = %q, %v", fbuf[:n], err)
	}
	check(t, unix.Fremovexattr(fdOf(f), "user.fd"), "fremovexattr")
	check(t, f.Close(), "close")

	// Directories.
	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	check(t, unix.Setxattr(d, "user.dir", []byte("on a dir"), 0), "setxattr on a directory")
	if got := getxattr(t, d, "user.dir"); string(got) != "on a dir" {
		t.Errorf("directory xattr = %q", got)
	}
	wantXattrNames(t, d, "user.dir")

	// user.* is not allowed on symlinks.
	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	wantErrno(t, unix.Lsetxattr(l, "user.x", []byte("v"), 0), "lsetxattr user.* on a symlink", unix.EPERM)
	_, err = unix.Lgetxattr(l, "user.x", nil)
	wantErrno(t, err, "lgetxattr user.* on a symlink", unix.ENODATA)
	check(t, unix.Setxattr(l, "user.followed", []byte("f"), 0), "setxattr through a symlink")
	if got := getxattr(t, p, "user.followed"); string(got) != "f" {
		t.Errorf("setxattr through a symlink: target has %q", got)
	}

	wantErrno(t, unix.Setxattr(filepath.Join(dir, "missing"), "user.x", nil, 0), "setxattr on a missing file", unix.ENOENT)
	remove(t, l)
	remove(t, p)
	remove(t, d)
}

// testXattrCreateReplace checks XATTR_CREATE (EEXIST if present) and
// XATTR_REPLACE (ENODATA if absent).
func testXattrCreateReplace(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, nil, 0o644)
	wantErrno(t, unix.Setxattr(p, "user.a", []byte("1"), unix.XATTR_REPLACE), "XATTR_REPLACE of a missing attribute", unix.ENODATA)
	_, err := unix.Getxattr(p, "user.a", nil)
	wantErrno(t, err, "getxattr after a failed XATTR_REPLACE", unix.ENODATA)
	check(t, unix.Setxattr(p, "user.a", []byte("1"), unix.XATTR_CREATE), "XATTR_CREATE of a new attribute")
	wantErrno(t, unix.Setxattr(p, "user.a", []byte("2"), unix.XATTR_CREATE), "XATTR_CREATE of an existing attribute", unix.EEXIST)
	if got := getxattr(t, p, "user.a"); string(got) != "1" {
		t.Errorf("value after a failed XATTR_CREATE = %q, want \"1\"", got)
	}
	check(t, unix.Setxattr(p, "user.a", []byte("three"), unix.XATTR_REPLACE), "XATTR_REPLACE of an existing attribute")
	if got := getxattr(t, p, "user.a"); string(got) != "three" {
		t.Errorf("value after XATTR_REPLACE = %q", got)
	}
	check(t, unix.Setxattr(p, "user.a", []byte("4"), 0), "setxattr replacing without flags")
	if got := getxattr(t, p, "user.a"); string(got) != "4" {
		t.Errorf("value after a plain replace = %q (a shorter value must not keep old bytes)", got)
	}
	wantErrno(t, unix.Setxattr(p, "user.a", []byte("x"), unix.XATTR_CREATE|unix.XATTR_REPLACE), "XATTR_CREATE|XATTR_REPLACE", unix.EINVAL, unix.EEXIST)
	remove(t, p)
}

func getxattr(t *testing.T, p, name string) []byte {
	t.Helper()
	n, err := unix.Getxattr(p, name, nil)
	check(t, err, "getxattr size of %s", name)
	buf := make([]byte, n)
	n, err = unix.Getxattr(p, name, buf)
	check(t, err, "getxattr %s", name)
	return buf[:n]
}

// wantXattrNames fails t unless the user.* attributes of p are exactly
// names (other namespaces, like security.*, are ignored).
func wantXattrNames(t *testing.T, p string, names ...string) {
	t.Helper()
	n, err := unix.Listxattr(p, nil)
	check(t, err, "listxattr size query")
	buf := make([]byte, n)
	m, err := unix.Listxattr(p, buf)
	check(t, err, "listxattr")
	if m != n {
		t.Errorf("listxattr returned %d bytes, the size query %d", m, n)
	}
	if m > 0 && buf[m-1] != 0 {
		t.Errorf("listxattr result does not end in NUL: %q", buf[:m])
	}
	var got []string
	for name := range strings.SplitSeq(strings.TrimSuffix(string(buf[:m]), "\x00"), "\x00") {
		if strings.HasPrefix(name, "user.") {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("listxattr user.* names %q, want %q", got, want)
	}
}
