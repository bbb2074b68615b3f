package posixtest

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testRename moves a file within and across directories; the inode is
// kept, the old name is gone; renaming to itself or between two links of
// one inode does nothing; missing sources and target directories give
// ENOENT.
func testRename(t *testing.T, dir string) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("A"), 0o644)
	ino := lstat(t, a).Ino
	check(t, unix.Rename(a, b), "rename a b")
	wantGone(t, a)
	if st := lstat(t, b); st.Ino != ino {
		t.Errorf("renamed file has inode %d, want %d", st.Ino, ino)
	}
	wantContent(t, b, []byte("A"))

	check(t, unix.Rename(b, b), "rename to itself")
	wantContent(t, b, []byte("A"))

	sub := filepath.Join(dir, "sub")
	check(t, unix.Mkdir(sub, 0o755), "mkdir")
	c := filepath.Join(sub, "c")
	check(t, unix.Rename(b, c), "rename across directories")
	wantGone(t, b)
	if st := lstat(t, c); st.Ino != ino {
		t.Errorf("file moved across directories has inode %d, want %d", st.Ino, ino)
	}
	wantContent(t, c, []byte("A"))

	// Two links to one inode: rename does nothing and both stay.
	l := filepath.Join(dir, "link")
	check(t, unix.Link(c, l), "link")
	check(t, unix.Rename(c, l), "rename between two links of one inode")
	if st := lstat(t, c); st.Nlink != 2 {
		t.Errorf("after rename between links: nlink %d, want 2", st.Nlink)
	}
	lstat(t, l)

	wantErrno(t, unix.Rename(filepath.Join(dir, "missing"), filepath.Join(dir, "x")), "rename of a missing file", unix.ENOENT)
	wantErrno(t, unix.Rename(c, filepath.Join(dir, "nodir", "x")), "rename into a missing directory", unix.ENOENT)
	wantErrno(t, unix.Rename(c, filepath.Join(l, "x")), "rename below a regular file", unix.ENOTDIR)
	wantContent(t, c, []byte("A"))
	remove(t, l)
	remove(t, c)
	remove(t, sub)
}

// testRenameOverFile renames over existing files and directories: the
// replaced file stays readable through an open descriptor, and the type
// rules (EISDIR, ENOTDIR, ENOTEMPTY) hold.
func testRenameOverFile(t *testing.T, dir string) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("new"), 0o644)
	writeFile(t, b, []byte("old"), 0o644)
	inoA := lstat(t, a).Ino
	old := openFile(t, b, os.O_RDONLY, 0)
	check(t, unix.Rename(a, b), "rename over an existing file")
	wantGone(t, a)
	wantContent(t, b, []byte("new"))
	if st := lstat(t, b); st.Ino != inoA {
		t.Errorf("target inode after rename %d, want the source's %d", st.Ino, inoA)
	}
	if st := fstat(t, fdOf(old)); st.Nlink != 0 {
		t.Errorf("replaced file nlink = %d, want 0", st.Nlink)
	}
	buf := make([]byte, 8)
	n, err := unix.Pread(fdOf(old), buf, 0)
	check(t, err, "read of the replaced file")
	if string(buf[:n]) != "old" {
		t.Errorf("replaced file reads %q, want \"old\"", buf[:n])
	}
	check(t, old.Close(), "close")
	if names, _ := dirNames(dir); !slices.Equal(names, []string{"b"}) {
		t.Errorf("directory lists %q, want [b]", names)
	}

	d, e, full := filepath.Join(dir, "d"), filepath.Join(dir, "e"), filepath.Join(dir, "full")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	check(t, unix.Mkdir(e, 0o755), "mkdir")
	check(t, unix.Mkdir(full, 0o755), "mkdir")
	writeFile(t, filepath.Join(full, "x"), nil, 0o644)
	wantErrno(t, unix.Rename(b, d), "rename of a file over a directory", unix.EISDIR)
	wantErrno(t, unix.Rename(d, b), "rename of a directory over a file", unix.ENOTDIR)
	wantErrno(t, unix.Rename(d, full), "rename over a non-empty directory", unix.ENOTEMPTY, unix.EEXIST)
	inoD := lstat(t, d).Ino
	check(t, unix.Rename(d, e), "rename of a directory over an empty directory")
	wantGone(t, d)
	if st := lstat(t, e); st.Ino != inoD {
		t.Errorf("directory renamed over an empty one has inode %d, want %d", st.Ino, inoD)
	}
	wantContent(t, b, []byte("new"))
	remove(t, filepath.Join(full, "x"))
	remove(t, full)
	remove(t, e)
	remove(t, b)
}

// testRenameNoreplace checks renameat2 RENAME_NOREPLACE: EEXIST when the
// target exists, leaving both files alone; a plain move otherwise.
func testRenameNoreplace(t *testing.T, dir string) {
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	writeFile(t, a, []byte("A"), 0o644)
	writeFile(t, b, []byte("B"), 0o644)
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
	wantErrno(t, err, "RENAME_NOREPLACE over an existing file", unix.EEXIST)
	wantContent(t, a, []byte("A"))
	wantContent(t, b, []byte("B"))
	err = unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	wantErrno(t, err, "RENAME_NOREPLACE over a directory", unix.EEXIST)

	check(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, c, unix.RENAME_NOREPLACE), "RENAME_NOREPLACE to a free name")
	wantGone(t, a)
	wantContent(t, c, []byte("A"))

	// With directory descriptors and relative names.
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "open dir")
	defer unix.Close(dfd)
	wantErrno(t, unix.Renameat2(dfd, "c", dfd, "b", unix.RENAME_NOREPLACE), "renameat2 NOREPLACE relative", unix.EEXIST)
	check(t, unix.Renameat2(dfd, "c", dfd, "a", unix.RENAME_NOREPLACE), "renameat2 NOREPLACE relative to a free name")
	wantContent(t, a, []byte("A"))
	check(t, unix.Close(dfd), "close")
	remove(t, a)
	remove(t, b)
}

// testRenameExchange checks renameat2 RENAME_EXCHANGE: contents and inode
// numbers of the two names are swapped, also between a file and a
// directory; a missing side gives ENOENT.
func testRenameExchange(t *testing.T, dir string) {
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("AAA"), 0o644)
	writeFile(t, b, []byte("BBBBBB"), 0o600)
	ia, ib := lstat(t, a), lstat(t, b)
	check(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE), "RENAME_EXCHANGE")
	wantContent(t, a, []byte("BBBBBB"))
	wantContent(t, b, []byte("AAA"))
	na, nb := lstat(t, a), lstat(t, b)
	if na.Ino != ib.Ino || nb.Ino != ia.Ino {
		t.Errorf("inodes after exchange: a %d b %d, want a %d b %d", na.Ino, nb.Ino, ib.Ino, ia.Ino)
	}
	if na.Mode&0o777 != 0o600&^umask() || na.Size != 6 {
		t.Errorf("a after exchange: mode %#o size %d, want b's old mode and size", na.Mode&0o777, na.Size)
	}

	wantErrno(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, filepath.Join(dir, "missing"), unix.RENAME_EXCHANGE), "RENAME_EXCHANGE with a missing target", unix.ENOENT)
	wantErrno(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE|unix.RENAME_NOREPLACE), "RENAME_EXCHANGE|RENAME_NOREPLACE", unix.EINVAL)

	// A file and a directory (with contents) trade places.
	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o755), "mkdir")
	writeFile(t, filepath.Join(d, "inner"), []byte("in"), 0o644)
	check(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, d, unix.RENAME_EXCHANGE), "RENAME_EXCHANGE of a file and a directory")
	st := lstat(t, a)
	wantType(t, "a after exchange with a directory", &st, unix.S_IFDIR)
	st = lstat(t, d)
	wantType(t, "d after exchange with a file", &st, unix.S_IFREG)
	wantContent(t, filepath.Join(a, "inner"), []byte("in"))
	wantContent(t, d, []byte("BBBBBB"))

	// Across directories.
	check(t, unix.Renameat2(unix.AT_FDCWD, b, unix.AT_FDCWD, filepath.Join(a, "inner"), unix.RENAME_EXCHANGE), "RENAME_EXCHANGE across directories")
	wantContent(t, b, []byte("in"))
	wantContent(t, filepath.Join(a, "inner"), []byte("AAA"))

	remove(t, filepath.Join(a, "inner"))
	remove(t, a)
	remove(t, b)
	remove(t, d)
}

// testRenameDir moves a directory tree to another parent: its contents and
// open descriptors inside it follow, ".." is updated, and moving a
// directory below itself is EINVAL.
func testRenameDir(t *testing.T, dir string) {
	d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
	check(t, unix.Mkdir(d1, 0o755), "mkdir")
	check(t, unix.Mkdir(filepath.Join(d1, "sub"), 0o755), "mkdir")
	check(t, unix.Mkdir(d2, 0o755), "mkdir")
	writeFile(t, filepath.Join(d1, "sub", "f"), []byte("deep"), 0o644)
	f := openFile(t, filepath.Join(d1, "sub", "f"), os.O_RDWR, 0)
	ino := lstat(t, d1).Ino

	moved := filepath.Join(d2, "moved")
	check(t, unix.Rename(d1, moved), "rename of a directory to another parent")
	wantGone(t, d1)
	if st := lstat(t, moved); st.Ino != ino {
		t.Errorf("moved directory inode %d, want %d", st.Ino, ino)
	}
	wantContent(t, filepath.Join(moved, "sub", "f"), []byte("deep"))
	if dd, p := stat(t, filepath.Join(moved, "..")), stat(t, d2); dd.Ino != p.Ino {
		t.Errorf("moved/.. is inode %d, want the new parent %d", dd.Ino, p.Ino)
	}
	if dd, p := stat(t, filepath.Join(moved, "sub", "..")), stat(t, moved); dd.Ino != p.Ino {
		t.Errorf("moved/sub/.. is inode %d, want %d", dd.Ino, p.Ino)
	}
	// Directory link counts: 2 plus subdirectories (btrfs reports 1).
	if st := lstat(t, d2); st.Nlink != 3 && st.Nlink != 1 {
		t.Errorf("nlink of the new parent = %d, want 3", st.Nlink)
	}
	if st := lstat(t, dir); st.Nlink != 3 && st.Nlink != 1 {
		t.Errorf("nlink of the old parent = %d, want 3", st.Nlink)
	}

	// An open file inside the moved tree keeps working.
	_, err := f.WriteAt([]byte("DEEP"), 0)
	check(t, err, "write through a descriptor opened before the move")
	check(t, f.Close(), "close")
	wantContent(t, filepath.Join(moved, "sub", "f"), []byte("DEEP"))

	wantErrno(t, unix.Rename(moved, filepath.Join(moved, "sub", "inner")), "rename of a directory below itself", unix.EINVAL)
	wantErrno(t, unix.Rename(d2, filepath.Join(moved, "x")), "rename of a directory below its descendant", unix.EINVAL)

	// Rename a directory in place and back.
	check(t, unix.Rename(moved, filepath.Join(d2, "renamed")), "rename of a directory in place")
	wantContent(t, filepath.Join(d2, "renamed", "sub", "f"), []byte("DEEP"))
	check(t, os.RemoveAll(d2), "remove tree")
}

// testHardLink checks link(2): one inode with a growing and shrinking link
// count, data shared through every name, and the error cases.
func testHardLink(t *testing.T, dir string) {
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	writeFile(t, a, []byte("data"), 0o644)
	f := openFile(t, a, os.O_RDWR, 0)
	check(t, unix.Link(a, b), "link a b")
	sa, sb := lstat(t, a), lstat(t, b)
	if sa.Ino != sb.Ino {
		t.Errorf("link has inode %d, original %d", sb.Ino, sa.Ino)
	}
	if sa.Nlink != 2 || sb.Nlink != 2 {
		t.Errorf("nlink after link: %d and %d, want 2", sa.Nlink, sb.Nlink)
	}
	if st := fstat(t, fdOf(f)); st.Nlink != 2 {
		t.Errorf("fstat nlink after link = %d, want 2", st.Nlink)
	}
	_, err := f.WriteAt([]byte("DA"), 0)
	check(t, err, "write through the first name")
	wantContent(t, b, []byte("DAta"))

	sub := filepath.Join(dir, "sub")
	check(t, unix.Mkdir(sub, 0o755), "mkdir")
	check(t, unix.Link(b, filepath.Join(sub, "c")), "link into another directory")
	check(t, unix.Link(b, c), "link b c")
	if st := lstat(t, c); st.Nlink != 4 {
		t.Errorf("nlink after three links = %d, want 4", st.Nlink)
	}
	remove(t, a)
	if st := lstat(t, b); st.Nlink != 3 {
		t.Errorf("nlink after removing one name = %d, want 3", st.Nlink)
	}
	if st := fstat(t, fdOf(f)); st.Nlink != 3 {
		t.Errorf("fstat nlink after removing one name = %d, want 3", st.Nlink)
	}
	wantContent(t, c, []byte("DAta"))

	wantErrno(t, unix.Link(b, c), "link to an existing name", unix.EEXIST)
	wantErrno(t, unix.Link(sub, filepath.Join(dir, "dirlink")), "link of a directory", unix.EPERM)
	wantErrno(t, unix.Link(filepath.Join(dir, "missing"), filepath.Join(dir, "x")), "link of a missing file", unix.ENOENT)
	wantErrno(t, unix.Link(b, filepath.Join(dir, "nodir", "x")), "link into a missing directory", unix.ENOENT)

	// A hard link to a symlink links the symlink itself.
	s := filepath.Join(dir, "sym")
	check(t, unix.Symlink("b", s), "symlink")
	check(t, unix.Linkat(unix.AT_FDCWD, s, unix.AT_FDCWD, filepath.Join(dir, "symlink2"), 0), "linkat of a symlink")
	st := lstat(t, filepath.Join(dir, "symlink2"))
	wantType(t, "hard link to a symlink", &st, unix.S_IFLNK)
	if st.Nlink != 2 {
		t.Errorf("symlink nlink = %d, want 2", st.Nlink)
	}

	check(t, f.Close(), "close")
	for _, p := range []string{b, c, filepath.Join(sub, "c"), s, filepath.Join(dir, "symlink2"), sub} {
		remove(t, p)
	}
}

// testSymlink checks symlink(2) and readlink(2): the target is stored
// verbatim (relative, absolute, 4095 bytes), lstat reports a link of the
// target's length, stat follows it, O_NOFOLLOW refuses it, loops give ELOOP.
func testSymlink(t *testing.T, dir string) {
	file := filepath.Join(dir, "file")
	writeFile(t, file, []byte("target data"), 0o644)
	l := filepath.Join(dir, "link")
	check(t, unix.Symlink("file", l), "symlink")
	st := lstat(t, l)
	wantType(t, "lstat of a symlink", &st, unix.S_IFLNK)
	if st.Size != 4 {
		t.Errorf("symlink size = %d, want 4 (the target's length)", st.Size)
	}
	if st.Mode&0o777 != 0o777 {
		t.Errorf("symlink mode %#o, want 0777", st.Mode&0o777)
	}
	if got := readlink(t, l); got != "file" {
		t.Errorf("readlink = %q, want \"file\"", got)
	}
	fst, lst := stat(t, file), stat(t, l)
	if fst.Ino != lst.Ino || lst.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("stat through the link: inode %d %s, want %d regular", lst.Ino, fileType(lst.Mode), fst.Ino)
	}
	wantContent(t, l, []byte("target data"))
	_, err := unix.Open(l, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	wantErrno(t, err, "O_NOFOLLOW open of a symlink", unix.ELOOP)
	fd, err := unix.Open(l, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	check(t, err, "O_PATH|O_NOFOLLOW open of a symlink")
	unix.Close(fd)

	n, err := unix.Readlink(file, make([]byte, 64))
	wantErrno(t, err, "readlink of a regular file", unix.EINVAL)
	_ = n
	wantErrno(t, unix.Symlink("x", file), "symlink over an existing name", unix.EEXIST)

	// Targets are stored verbatim.
	targets := map[string]string{
		"abs":  "/nonexistent/absolute/path",
		"dots": "../x/./y//z/",
		"long": strings.Repeat("d/", 2047) + "e",
		"utf8": "ünïcödé target",
	}
	for name, target := range targets {
		p := filepath.Join(dir, name)
		check(t, unix.Symlink(target, p), "symlink %s", name)
		if got := readlink(t, p); got != target {
			t.Errorf("readlink of %s = %q (%d bytes), want %q (%d bytes)", name, truncStr(got), len(got), truncStr(target), len(target))
		}
		if st := lstat(t, p); st.Size != int64(len(target)) {
			t.Errorf("lstat size of %s = %d, want %d", name, st.Size, len(target))
		}
		remove(t, p)
	}
	wantErrno(t, unix.Symlink(strings.Repeat("x", 4096), filepath.Join(dir, "toolong")), "symlink with a 4096-byte target", unix.ENAMETOOLONG)

	// A symlink to a directory can be walked.
	check(t, unix.Symlink(".", filepath.Join(dir, "self")), "symlink to a directory")
	wantContent(t, filepath.Join(dir, "self", "self", "file"), []byte("target data"))

	// Loops.
	loop := filepath.Join(dir, "loop")
	check(t, unix.Symlink("loop", loop), "symlink loop")
	var sst unix.Stat_t
	wantErrno(t, unix.Stat(loop, &sst), "stat of a symlink loop", unix.ELOOP)

	for _, p := range []string{l, file, filepath.Join(dir, "self"), loop} {
		remove(t, p)
	}
}

// testSymlinkDangling checks a symlink whose target does not exist: lstat
// works, stat and open give ENOENT, and creating the target makes it work.
func testSymlinkDangling(t *testing.T, dir string) {
	l := filepath.Join(dir, "dangling")
	check(t, unix.Symlink("nowhere", l), "symlink")
	st := lstat(t, l)
	wantType(t, "lstat of a dangling symlink", &st, unix.S_IFLNK)
	var sst unix.Stat_t
	wantErrno(t, unix.Stat(l, &sst), "stat of a dangling symlink", unix.ENOENT)
	_, err := unix.Open(l, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	wantErrno(t, err, "open of a dangling symlink", unix.ENOENT)
	if got := readlink(t, l); got != "nowhere" {
		t.Errorf("readlink = %q", got)
	}
	writeFile(t, filepath.Join(dir, "nowhere"), []byte("now here"), 0o644)
	wantContent(t, l, []byte("now here"))
	remove(t, filepath.Join(dir, "nowhere"))
	wantErrno(t, unix.Stat(l, &sst), "stat after removing the target again", unix.ENOENT)
	remove(t, l)
}

// testMkfifo makes a fifo: lstat reports S_IFIFO and the mode; data flows
// through it (opened O_RDWR|O_NONBLOCK so no second opener is needed).
func testMkfifo(t *testing.T, dir string) {
	p := filepath.Join(dir, "fifo")
	check(t, unix.Mkfifo(p, 0o640), "mkfifo")
	st := lstat(t, p)
	wantType(t, "lstat of a fifo", &st, unix.S_IFIFO)
	if perm := st.Mode & 0o7777; perm != 0o640&^umask() {
		t.Errorf("fifo mode %#o, want %#o", perm, 0o640&^umask())
	}
	if st.Size != 0 {
		t.Errorf("fifo size %d, want 0", st.Size)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	check(t, err, "open fifo")
	_, err = unix.Write(fd, []byte("ping"))
	check(t, err, "write to fifo")
	buf := make([]byte, 16)
	n, err := unix.Read(fd, buf)
	check(t, err, "read from fifo")
	if string(buf[:n]) != "ping" {
		t.Errorf("fifo read %q, want \"ping\"", buf[:n])
	}
	_, err = unix.Read(fd, buf)
	wantErrno(t, err, "read from an empty non-blocking fifo", unix.EAGAIN)
	check(t, unix.Close(fd), "close")
	wantErrno(t, unix.Mkfifo(p, 0o640), "mkfifo over an existing name", unix.EEXIST)
	remove(t, p)
}

// testMknodDevices makes character and block device nodes (with major and
// minor numbers that need the full 32-bit encoding), a regular file, and a
// socket node with mknod(2), and checks type, mode and rdev.
func testMknodDevices(t *testing.T, dir string) {
	cases := []struct {
		name         string
		typ          uint32
		major, minor uint32
	}{
		{"null", unix.S_IFCHR, 1, 3},
		{"chr-big", unix.S_IFCHR, 511, 300000},
		{"loop", unix.S_IFBLK, 7, 0},
		{"blk-big", unix.S_IFBLK, 259, 65537},
		{"reg", unix.S_IFREG, 0, 0},
		{"sock", unix.S_IFSOCK, 0, 0},
		{"fifo", unix.S_IFIFO, 0, 0},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		dev := unix.Mkdev(c.major, c.minor)
		if err := unix.Mknod(p, c.typ|0o640, int(dev)); err != nil {
			t.Errorf("mknod %s (%s %d:%d): %v", c.name, fileType(c.typ), c.major, c.minor, err)
			continue
		}
		st := lstat(t, p)
		wantType(t, "mknod "+c.name, &st, c.typ)
		if perm := st.Mode & 0o7777; perm != 0o640&^umask() {
			t.Errorf("mknod %s: mode %#o, want %#o", c.name, perm, 0o640&^umask())
		}
		if c.typ == unix.S_IFCHR || c.typ == unix.S_IFBLK {
			if st.Rdev != dev {
				t.Errorf("mknod %s: rdev %d:%d, want %d:%d", c.name, unix.Major(st.Rdev), unix.Minor(st.Rdev), c.major, c.minor)
			}
		}
		if c.typ == unix.S_IFREG {
			wantContent(t, p, nil)
		}
	}
	wantErrno(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))), "mknod over an existing name", unix.EEXIST)
	for _, c := range cases {
		os.Remove(filepath.Join(dir, c.name))
	}
}

// testUnixSocket binds a unix socket in the directory and connects to it
// (through /proc/self/fd/N so long mount paths fit in sun_path).
func testUnixSocket(t *testing.T, dir string) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "open dir")
	defer unix.Close(dfd)
	addr := "/proc/self/fd/" + strconv.Itoa(dfd) + "/sock"
	ls, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	check(t, err, "socket")
	defer unix.Close(ls)
	check(t, unix.Bind(ls, &unix.SockaddrUnix{Name: addr}), "bind %s", addr)
	check(t, unix.Listen(ls, 1), "listen")
	st := lstat(t, filepath.Join(dir, "sock"))
	wantType(t, "lstat of a bound socket", &st, unix.S_IFSOCK)

	cs, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	check(t, err, "socket")
	defer unix.Close(cs)
	check(t, unix.Connect(cs, &unix.SockaddrUnix{Name: addr}), "connect")
	as, _, err := unix.Accept4(ls, unix.SOCK_CLOEXEC)
	check(t, err, "accept")
	defer unix.Close(as)
	_, err = unix.Write(cs, []byte("hello over a socket file"))
	check(t, err, "write")
	buf := make([]byte, 64)
	n, err := unix.Read(as, buf)
	check(t, err, "read")
	if string(buf[:n]) != "hello over a socket file" {
		t.Errorf("socket read %q", buf[:n])
	}
	wantErrno(t, unix.Bind(cs, &unix.SockaddrUnix{Name: addr}), "bind to an existing socket file", unix.EADDRINUSE, unix.EINVAL)
	for _, fd := range []int{as, cs, ls, dfd} {
		unix.Close(fd)
	}
	remove(t, filepath.Join(dir, "sock"))
}

// testMkdirRmdir checks mkdir and rmdir with their errors: EEXIST, ENOENT,
// ENOTEMPTY, ENOTDIR, EISDIR, EINVAL, and the mode bits mkdir keeps.
func testMkdirRmdir(t *testing.T, dir string) {
	d := filepath.Join(dir, "d")
	check(t, unix.Mkdir(d, 0o750), "mkdir")
	st := lstat(t, d)
	wantType(t, "mkdir", &st, unix.S_IFDIR)
	if perm := st.Mode & 0o7777; perm != 0o750&^umask() {
		t.Errorf("mkdir mode %#o, want %#o", perm, 0o750&^umask())
	}
	if st.Nlink != 2 && st.Nlink != 1 {
		t.Errorf("new directory nlink = %d, want 2", st.Nlink)
	}
	if names, err := dirNames(d); err != nil || len(names) != 0 {
		t.Errorf("new directory lists %q, %v", names, err)
	}
	wantErrno(t, unix.Mkdir(d, 0o755), "mkdir of an existing directory", unix.EEXIST)
	wantErrno(t, unix.Mkdir(filepath.Join(dir, "x", "y"), 0o755), "mkdir with a missing parent", unix.ENOENT)
	f := filepath.Join(dir, "f")
	writeFile(t, f, nil, 0o644)
	wantErrno(t, unix.Mkdir(f, 0o755), "mkdir over a file", unix.EEXIST)
	wantErrno(t, unix.Mkdir(filepath.Join(f, "x"), 0o755), "mkdir below a file", unix.ENOTDIR)

	// The sticky bit is kept; setgid in the mode is not (it is inherited
	// from a setgid parent only).
	s := filepath.Join(dir, "sticky")
	check(t, unix.Mkdir(s, 0o3777), "mkdir 03777")
	if perm := lstat(t, s).Mode & 0o7777; perm != 0o1777&^umask() {
		t.Errorf("mkdir 03777 gave mode %#o, want %#o", perm, 0o1777&^umask())
	}
	remove(t, s)

	sub := filepath.Join(d, "sub")
	check(t, unix.Mkdir(sub, 0o755), "mkdir sub")
	if st := lstat(t, d); st.Nlink != 3 && st.Nlink != 1 {
		t.Errorf("nlink with one subdirectory = %d, want 3", st.Nlink)
	}
	wantErrno(t, unix.Rmdir(d), "rmdir of a directory holding a directory", unix.ENOTEMPTY, unix.EEXIST)
	writeFile(t, filepath.Join(sub, "file"), nil, 0o644)
	wantErrno(t, unix.Rmdir(sub), "rmdir of a directory holding a file", unix.ENOTEMPTY, unix.EEXIST)
	wantErrno(t, unix.Rmdir(filepath.Join(sub, "file")), "rmdir of a file", unix.ENOTDIR)
	wantErrno(t, unix.Unlink(sub), "unlink of a directory", unix.EISDIR)
	wantErrno(t, unix.Rmdir(filepath.Join(dir, "missing")), "rmdir of a missing directory", unix.ENOENT)
	wantErrno(t, unix.Rmdir(sub+"/."), "rmdir of \".\"", unix.EINVAL)

	remove(t, filepath.Join(sub, "file"))
	check(t, unix.Rmdir(sub), "rmdir")
	wantGone(t, sub)
	if st := lstat(t, d); st.Nlink != 2 && st.Nlink != 1 {
		t.Errorf("nlink after rmdir of the subdirectory = %d, want 2", st.Nlink)
	}

	// A removed directory that is still open reads as empty and refuses
	// new entries.
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "open dir")
	check(t, unix.Rmdir(d), "rmdir of an open directory")
	// Linux answers getdents on a removed directory with ENOENT; an empty
	// listing would do as well.
	ents, err := readDirFD(fd, 4096)
	if err != nil && errnoOf(err) != unix.ENOENT {
		t.Errorf("getdents of a removed directory: %v, want ENOENT or an empty listing", err)
	}
	for _, e := range ents {
		if e.name != "." && e.name != ".." {
			t.Errorf("removed directory lists %q", e.name)
		}
	}
	_, err = unix.Openat(fd, "new", unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	wantErrno(t, err, "create in a removed directory", unix.ENOENT)
	unix.Close(fd)
	wantGone(t, d)
	remove(t, f)
}

// testNameMax checks name lengths: a 255-byte name works for every kind of
// entry, 256 bytes gives ENAMETOOLONG everywhere.
func testNameMax(t *testing.T, dir string) {
	n255 := filepath.Join(dir, strings.Repeat("x", 255))
	y255 := filepath.Join(dir, strings.Repeat("y", 255))
	u255 := filepath.Join(dir, strings.Repeat("é", 127)+"u")
	n256 := filepath.Join(dir, strings.Repeat("z", 256))

	writeFile(t, n255, []byte("long name"), 0o644)
	wantContent(t, n255, []byte("long name"))
	check(t, unix.Rename(n255, y255), "rename to a 255-byte name")
	check(t, unix.Link(y255, n255), "link to a 255-byte name")
	writeFile(t, u255, nil, 0o644)
	names, err := dirNames(dir)
	check(t, err, "readdir")
	if !slices.Equal(names, []string{filepath.Base(n255), filepath.Base(y255), filepath.Base(u255)}) {
		t.Errorf("readdir of 255-byte names gave %d names with lengths %v", len(names), nameLens(names))
	}
	for _, p := range []string{n255, y255, u255} {
		remove(t, p)
	}
	check(t, unix.Mkdir(n255, 0o755), "mkdir with a 255-byte name")
	remove(t, n255)
	check(t, unix.Symlink(strings.Repeat("t", 255), n255), "symlink with a 255-byte name")
	remove(t, n255)

	var st unix.Stat_t
	_, err = unix.Open(n256, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	wantErrno(t, err, "create with a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Lstat(n256, &st), "lstat of a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Mkdir(n256, 0o755), "mkdir with a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Mknod(n256, unix.S_IFREG|0o644, 0), "mknod with a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Symlink("x", n256), "symlink with a 256-byte name", unix.ENAMETOOLONG)
	writeFile(t, n255, nil, 0o644)
	wantErrno(t, unix.Link(n255, n256), "link to a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Rename(n255, n256), "rename to a 256-byte name", unix.ENAMETOOLONG)
	wantErrno(t, unix.Setxattr(n256, "user.x", []byte("v"), 0), "setxattr on a 256-byte name", unix.ENAMETOOLONG)
	remove(t, n255)
	wantErrno(t, unix.Lstat(filepath.Join(dir, strings.Repeat("z", 1100)), &st), "lstat of a 1100-byte name", unix.ENAMETOOLONG)
}

func nameLens(names []string) []int {
	var l []int
	for _, n := range names {
		l = append(l, len(n))
	}
	return l
}

// testNamesSpecialBytes creates names made of bytes that are legal but
// unusual (spaces, newlines, control bytes, invalid UTF-8, leading dots and
// dashes) and checks readdir returns them exactly.
func testNamesSpecialBytes(t *testing.T, dir string) {
	names := []string{
		"with space", "new\nline", "tab\there", "\x01ctl\x7f", "\xff\xfe invalid utf-8",
		"ünïcödé", "日本語", "-dash", "...", ".hidden", "a:b", `back\slash`, "*?[]", `'"quotes"'`,
		" leading-space", "trailing-space ", "%s%n", "x",
	}
	for i, n := range names {
		p := filepath.Join(dir, n)
		if i%2 == 0 {
			writeFile(t, p, []byte(n), 0o644)
		} else {
			check(t, unix.Mkdir(p, 0o755), "mkdir %q", n)
		}
	}
	ents := readDir(t, dir, 4096)
	var got []string
	for _, e := range ents {
		if e.name != "." && e.name != ".." {
			got = append(got, e.name)
		}
	}
	slices.Sort(got)
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("readdir names %q, want %q", got, want)
	}
	for i, n := range names {
		p := filepath.Join(dir, n)
		if i%2 == 0 {
			wantContent(t, p, []byte(n))
		}
		remove(t, p)
	}
}

// testDirentInodes checks that readdir's d_ino equals lstat's st_ino for
// every kind of entry (and for "." and ".."), and that d_type matches.
func testDirentInodes(t *testing.T, dir string) {
	writeFile(t, filepath.Join(dir, "file"), nil, 0o644)
	check(t, unix.Link(filepath.Join(dir, "file"), filepath.Join(dir, "hardlink")), "link")
	check(t, unix.Mkdir(filepath.Join(dir, "dir"), 0o755), "mkdir")
	check(t, unix.Symlink("file", filepath.Join(dir, "symlink")), "symlink")
	check(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644), "mkfifo")
	check(t, unix.Mknod(filepath.Join(dir, "sock"), unix.S_IFSOCK|0o644, 0), "mknod socket")
	check(t, unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))), "mknod char device")
	check(t, unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o644, int(unix.Mkdev(7, 1))), "mknod block device")

	// Twice: the second listing may be served from caches filled by the
	// lookups in between.
	for round := range 2 {
		ents := readDir(t, dir, 4096)
		seen := map[string]bool{}
		for _, e := range ents {
			if seen[e.name] {
				t.Errorf("round %d: %q listed twice", round, e.name)
			}
			seen[e.name] = true
			st := lstat(t, filepath.Join(dir, e.name))
			if e.ino != st.Ino {
				t.Errorf("round %d: %q has d_ino %d, lstat st_ino %d", round, e.name, e.ino, st.Ino)
			}
			if e.typ != dtype(st.Mode) && !(e.name == ".." && e.typ == unix.DT_DIR) {
				t.Errorf("round %d: %q has d_type %d, want %d (%s)", round, e.name, e.typ, dtype(st.Mode), fileType(st.Mode))
			}
		}
		for _, n := range []string{".", "..", "file", "hardlink", "dir", "symlink", "fifo", "sock", "chr", "blk"} {
			if !seen[n] {
				t.Errorf("round %d: readdir did not list %q", round, n)
			}
		}
		if len(seen) != 10 {
			t.Errorf("round %d: readdir listed %d entries, want 10", round, len(seen))
		}
	}
	for _, n := range []string{"file", "hardlink", "dir", "symlink", "fifo", "sock", "chr", "blk"} {
		remove(t, filepath.Join(dir, n))
	}
}

func readlink(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 8192)
	n, err := unix.Readlink(p, buf)
	check(t, err, "readlink %s", p)
	return string(buf[:n])
}

func truncStr(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
