package posixtest

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testFileReadWrite covers write, read, pread, pwrite past the end (a hole
// reads as zeros), reads at and across end of file, O_TRUNC and EBADF.
func testFileReadWrite(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	data := pattern(100000, 1)
	f := openFile(t, p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	n, err := f.Write(data)
	check(t, err, "write")
	if n != len(data) {
		t.Fatalf("write returned %d, want %d", n, len(data))
	}
	st := fstat(t, fdOf(f))
	if st.Size != int64(len(data)) {
		t.Errorf("fstat size %d, want %d", st.Size, len(data))
	}
	wantType(t, "fstat", &st, unix.S_IFREG)
	if perm := st.Mode & 0o7777; perm != 0o644&^umask() {
		t.Errorf("mode %#o, want %#o", perm, 0o644&^umask())
	}

	// pread in the middle and across the end of file.
	buf := make([]byte, 1000)
	n, err = f.ReadAt(buf, 5000)
	check(t, err, "pread at 5000")
	if !bytes.Equal(buf[:n], data[5000:6000]) {
		t.Errorf("pread at 5000: %s", diffBytes(buf[:n], data[5000:6000]))
	}
	n, err = unix.Pread(fdOf(f), buf, int64(len(data)-10))
	check(t, err, "pread across EOF")
	if n != 10 || !bytes.Equal(buf[:n], data[len(data)-10:]) {
		t.Errorf("pread across EOF returned %d bytes %q, want the last 10 bytes", n, buf[:n])
	}
	n, err = unix.Pread(fdOf(f), buf, int64(len(data)))
	if err != nil || n != 0 {
		t.Errorf("pread at EOF = %d, %v; want 0, nil", n, err)
	}

	// Sequential read from the start through the file offset.
	_, err = f.Seek(0, io.SeekStart)
	check(t, err, "lseek")
	got, err := io.ReadAll(f)
	check(t, err, "read")
	if !bytes.Equal(got, data) {
		t.Errorf("read back: %s", diffBytes(got, data))
	}

	// pwrite far past the end leaves a hole that reads as zeros.
	const far = 1 << 20
	_, err = f.WriteAt([]byte("tail"), far)
	check(t, err, "pwrite at 1 MiB")
	want := make([]byte, far+4)
	copy(want, data)
	copy(want[far:], "tail")
	if st := stat(t, p); st.Size != far+4 {
		t.Errorf("size after pwrite past EOF = %d, want %d", st.Size, far+4)
	}
	check(t, f.Close(), "close")
	wantContent(t, p, want)

	// Overwrite in the middle through a second open.
	g := openFile(t, p, os.O_WRONLY, 0)
	_, err = g.WriteAt([]byte("MIDDLE"), 50)
	check(t, err, "pwrite in the middle")
	check(t, g.Close(), "close")
	copy(want[50:], "MIDDLE")
	wantContent(t, p, want)

	// A read-only descriptor refuses writes.
	r := openFile(t, p, os.O_RDONLY, 0)
	_, err = unix.Write(fdOf(r), []byte("x"))
	wantErrno(t, err, "write to O_RDONLY descriptor", unix.EBADF)
	check(t, r.Close(), "close")

	// O_TRUNC empties the file.
	tr := openFile(t, p, os.O_WRONLY|os.O_TRUNC, 0)
	if st := fstat(t, fdOf(tr)); st.Size != 0 {
		t.Errorf("size after O_TRUNC open = %d, want 0", st.Size)
	}
	check(t, tr.Close(), "close")
	wantContent(t, p, nil)
	remove(t, p)
	wantGone(t, p)
}

// testFileAppend checks O_APPEND: every write lands at the current end of
// file, whatever the descriptor's offset, even with pwrite (a documented
// Linux deviation from POSIX), and across two descriptors.
func testFileAppend(t *testing.T, dir string) {
	p := filepath.Join(dir, "log")
	f := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	fd := fdOf(f)
	_, err := unix.Write(fd, []byte("abc"))
	check(t, err, "write")
	_, err = unix.Seek(fd, 0, io.SeekStart)
	check(t, err, "lseek")
	_, err = unix.Write(fd, []byte("def"))
	check(t, err, "write after lseek to 0")
	wantContent(t, p, []byte("abcdef"))

	// On Linux, pwrite on an O_APPEND descriptor appends.
	_, err = unix.Pwrite(fd, []byte("ghi"), 0)
	check(t, err, "pwrite on O_APPEND descriptor")
	wantContent(t, p, []byte("abcdefghi"))

	g := openFile(t, p, os.O_WRONLY|os.O_APPEND, 0)
	_, err = unix.Write(fdOf(g), []byte("jkl"))
	check(t, err, "write through second descriptor")
	_, err = unix.Write(fd, []byte("mno"))
	check(t, err, "write through first descriptor")
	wantContent(t, p, []byte("abcdefghijklmno"))
	if off, err := unix.Seek(fd, 0, io.SeekCurrent); err != nil || off != 15 {
		t.Errorf("offset after append = %d, %v; want 15", off, err)
	}
	check(t, f.Close(), "close")
	check(t, g.Close(), "close")

	// Appending to a file that was grown by truncate.
	check(t, unix.Truncate(p, 20), "truncate")
	h := openFile(t, p, os.O_WRONLY|os.O_APPEND, 0)
	_, err = h.Write([]byte("END"))
	check(t, err, "append after truncate")
	check(t, h.Close(), "close")
	wantContent(t, p, []byte("abcdefghijklmno\x00\x00\x00\x00\x00END"))
	remove(t, p)
}

// testFileTruncate shrinks and grows a file with truncate(2) and checks size
// and contents, including through a descriptor opened before.
func testFileTruncate(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("hello, world"), 0o644)
	f := openFile(t, p, os.O_RDONLY, 0)

	check(t, unix.Truncate(p, 5), "truncate to 5")
	if st := stat(t, p); st.Size != 5 {
		t.Errorf("size after shrinking = %d, want 5", st.Size)
	}
	if st := fstat(t, fdOf(f)); st.Size != 5 {
		t.Errorf("fstat size of an open descriptor after shrinking = %d, want 5", st.Size)
	}
	wantContent(t, p, []byte("hello"))
	buf := make([]byte, 64)
	n, err := unix.Pread(fdOf(f), buf, 0)
	check(t, err, "pread after truncate")
	if string(buf[:n]) != "hello" {
		t.Errorf("pread through a descriptor opened before the truncate = %q, want \"hello\"", buf[:n])
	}

	check(t, unix.Truncate(p, 100), "truncate to 100")
	if st := stat(t, p); st.Size != 100 {
		t.Errorf("size after growing = %d, want 100", st.Size)
	}
	want := make([]byte, 100)
	copy(want, "hello")
	wantContent(t, p, want)

	check(t, unix.Truncate(p, 0), "truncate to 0")
	wantContent(t, p, nil)

	check(t, unix.Truncate(p, 3<<20), "truncate to 3 MiB")
	if st := stat(t, p); st.Size != 3<<20 {
		t.Errorf("size after growing to 3 MiB = %d", st.Size)
	} else if st.Blocks*512 >= 3<<20 {
		t.Errorf("growing by truncate allocated %d bytes; the file should be sparse", st.Blocks*512)
	}
	n, err = unix.Pread(fdOf(f), buf, 3<<20-10)
	if err != nil || n != 10 || !bytes.Equal(buf[:n], make([]byte, 10)) {
		t.Errorf("pread of the last 10 bytes = %d %q, %v; want 10 zeros", n, buf[:n], err)
	}

	wantErrno(t, unix.Truncate(p, -1), "truncate to -1", unix.EINVAL)
	wantErrno(t, unix.Truncate(dir, 0), "truncate of a directory", unix.EISDIR)
	wantErrno(t, unix.Truncate(filepath.Join(dir, "missing"), 0), "truncate of a missing file", unix.ENOENT)
	check(t, f.Close(), "close")
	remove(t, p)
}

// testFileFtruncate is testFileTruncate through ftruncate(2).
func testFileFtruncate(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	f := openFile(t, p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	fd := fdOf(f)
	_, err := f.Write([]byte("0123456789"))
	check(t, err, "write")

	check(t, unix.Ftruncate(fd, 3), "ftruncate to 3")
	if st := fstat(t, fd); st.Size != 3 {
		t.Errorf("fstat size = %d, want 3", st.Size)
	}
	if st := stat(t, p); st.Size != 3 {
		t.Errorf("stat size = %d, want 3", st.Size)
	}
	wantContent(t, p, []byte("012"))

	// The file offset is not moved by ftruncate: the next write at offset
	// 10 leaves a hole from 3 to 10.
	_, err = f.Write([]byte("X"))
	check(t, err, "write after ftruncate")
	wantContent(t, p, []byte("012\x00\x00\x00\x00\x00\x00\x00X"))

	check(t, unix.Ftruncate(fd, 1<<20), "ftruncate to 1 MiB")
	got := readFile(t, p)
	if len(got) != 1<<20 || !bytes.Equal(got[:11], []byte("012\x00\x00\x00\x00\x00\x00\x00X")) || !bytes.Equal(got[11:], make([]byte, 1<<20-11)) {
		t.Errorf("content after growing: %d bytes, want the old 11 then zeros", len(got))
	}
	check(t, unix.Ftruncate(fd, 5), "ftruncate to 5")
	wantContent(t, p, []byte("012\x00\x00"))
	wantErrno(t, unix.Ftruncate(fd, -1), "ftruncate to -1", unix.EINVAL)

	r := openFile(t, p, os.O_RDONLY, 0)
	wantErrno(t, unix.Ftruncate(fdOf(r), 0), "ftruncate of an O_RDONLY descriptor", unix.EINVAL, unix.EBADF)
	check(t, r.Close(), "close")
	check(t, f.Close(), "close")
	if st := stat(t, p); st.Size != 5 {
		t.Errorf("size after close = %d, want 5", st.Size)
	}
	remove(t, p)
}

// testFileOExcl checks O_CREAT|O_EXCL: EEXIST on an existing file, a
// directory and a symlink (even a dangling one, which is not followed),
// while plain O_CREAT through a dangling symlink creates its target.
func testFileOExcl(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	check(t, err, "O_EXCL create")
	unix.Close(fd)
	_, err = unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "O_EXCL create of an existing file", unix.EEXIST)
	_, err = unix.Open(dir, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "O_EXCL create of a directory", unix.EEXIST)

	link := filepath.Join(dir, "link")
	target := filepath.Join(dir, "target")
	check(t, unix.Symlink("target", link), "symlink")
	_, err = unix.Open(link, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "O_EXCL create through a dangling symlink", unix.EEXIST)
	wantGone(t, target)

	fd, err = unix.Open(link, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	check(t, err, "O_CREAT through a dangling symlink")
	unix.Close(fd)
	if st := lstat(t, target); st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("O_CREAT through a dangling symlink made a %s", fileType(st.Mode))
	}

	// O_CREAT without O_EXCL opens an existing file without truncating it.
	check(t, os.WriteFile(p, []byte("keep"), 0), "write")
	fd, err = unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	check(t, err, "O_CREAT of an existing file")
	unix.Close(fd)
	wantContent(t, p, []byte("keep"))

	_, err = unix.Open(dir, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "O_CREAT|O_WRONLY of a directory", unix.EISDIR)
	_, err = unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	wantErrno(t, err, "O_DIRECTORY open of a file", unix.ENOTDIR)
	_, err = unix.Open(filepath.Join(dir, "missing"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	wantErrno(t, err, "open of a missing file", unix.ENOENT)
	_, err = unix.Open(filepath.Join(p, "below"), unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "create below a regular file", unix.ENOTDIR)

	remove(t, p)
	remove(t, link)
	remove(t, target)
}

// testFileUnlinkOpen checks that an unlinked file stays readable and
// writable through a descriptor opened before, with st_nlink 0, and that a
// new file of the same name is a different file.
func testFileUnlinkOpen(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("keep me"), 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	fd := fdOf(f)
	ino := fstat(t, fd).Ino
	remove(t, p)
	wantGone(t, p)
	if names, _ := dirNames(dir); len(names) != 0 {
		t.Errorf("directory after unlink lists %q, want nothing", names)
	}
	st := fstat(t, fd)
	if st.Nlink != 0 || st.Size != 7 || st.Ino != ino {
		t.Errorf("fstat after unlink: nlink %d size %d ino %d, want 0, 7, %d", st.Nlink, st.Size, st.Ino, ino)
	}
	buf := make([]byte, 64)
	n, err := unix.Pread(fd, buf, 0)
	check(t, err, "read after unlink")
	if string(buf[:n]) != "keep me" {
		t.Errorf("read after unlink = %q", buf[:n])
	}
	_, err = unix.Pwrite(fd, []byte(", more"), 7)
	check(t, err, "write after unlink")
	n, err = unix.Pread(fd, buf, 0)
	check(t, err, "read after write after unlink")
	if string(buf[:n]) != "keep me, more" {
		t.Errorf("read after write after unlink = %q", buf[:n])
	}
	check(t, unix.Ftruncate(fd, 4), "ftruncate after unlink")
	if st := fstat(t, fd); st.Size != 4 {
		t.Errorf("size after ftruncate after unlink = %d", st.Size)
	}

	// Attributes of the unlinked file can still be changed through the
	// descriptor.
	check(t, unix.Fchmod(fd, 0o600), "fchmod after unlink")
	check(t, unix.UtimesNanoAt(fd, "", []unix.Timespec{{Sec: 1e9}, {Sec: 1e9, Nsec: 7}}, unix.AT_EMPTY_PATH), "futimens after unlink")
	if st := fstat(t, fd); st.Mode&0o7777 != 0o600 || st.Mtim != (unix.Timespec{Sec: 1e9, Nsec: 7}) {
		t.Errorf("after fchmod and futimens of the unlinked file: mode %#o mtime %v", st.Mode&0o7777, st.Mtim)
	}
	if err := unix.Fsetxattr(fd, "user.gone", []byte("v"), 0); err != nil {
		t.Errorf("fsetxattr after unlink: %v", err)
	} else if n, err := unix.Fgetxattr(fd, "user.gone", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("fgetxattr after unlink = %q, %v", buf[:n], err)
	}
	check(t, unix.Fsync(fd), "fsync after unlink")

	// A new file under the old name is a different file.
	writeFile(t, p, []byte("new"), 0o644)
	n, err = unix.Pread(fd, buf, 0)
	check(t, err, "read of the unlinked file after re-creating its name")
	if string(buf[:n]) != "keep" {
		t.Errorf("unlinked file reads %q after its name was reused, want \"keep\"", buf[:n])
	}
	wantContent(t, p, []byte("new"))
	check(t, f.Close(), "close")
	remove(t, p)
}

// testFileODirect writes and reads page-aligned buffers with O_DIRECT, which
// Linux local filesystems support.
func testFileODirect(t *testing.T, dir string) {
	p := filepath.Join(dir, "direct")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0o644)
	check(t, err, "open O_DIRECT")
	defer unix.Close(fd)
	const size = 64 << 10
	mem, err := unix.Mmap(-1, 0, 2*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	check(t, err, "mmap an aligned buffer")
	defer unix.Munmap(mem)
	if uintptr(unsafe.Pointer(&mem[0]))%4096 != 0 {
		t.Fatalf("mmap returned an unaligned buffer")
	}
	wbuf, rbuf := mem[:size], mem[size:]
	fillPattern(wbuf, 7)
	n, err := unix.Pwrite(fd, wbuf, 0)
	check(t, err, "O_DIRECT pwrite")
	if n != size {
		t.Errorf("O_DIRECT pwrite wrote %d, want %d", n, size)
	}
	n, err = unix.Pwrite(fd, wbuf[:4096], size)
	check(t, err, "O_DIRECT pwrite at %d", size)
	if n != 4096 {
		t.Errorf("O_DIRECT pwrite at %d wrote %d, want 4096", size, n)
	}
	n, err = unix.Pread(fd, rbuf, 0)
	check(t, err, "O_DIRECT pread")
	if n != size || !bytes.Equal(rbuf, wbuf) {
		t.Errorf("O_DIRECT read back %d bytes: %s", n, diffBytes(rbuf[:n], wbuf))
	}
	check(t, unix.Close(fd), "close")
	want := append(append([]byte(nil), wbuf...), wbuf[:4096]...)
	wantContent(t, p, want)
	remove(t, p)
}

// testFileFsync checks that fsync, fdatasync and syncfs succeed on files and
// directories.
func testFileFsync(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	f := openFile(t, p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	_, err := f.Write(pattern(8192, 3))
	check(t, err, "write")
	check(t, unix.Fsync(fdOf(f)), "fsync")
	check(t, unix.Fdatasync(fdOf(f)), "fdatasync")
	check(t, unix.Syncfs(fdOf(f)), "syncfs")
	d, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "open directory")
	check(t, unix.Fsync(d), "fsync of a directory")
	unix.Close(d)
	check(t, f.Close(), "close")
	wantContent(t, p, pattern(8192, 3))
	remove(t, p)
}

// testTmpfile creates an unnamed file with O_TMPFILE, writes it, and gives
// it a name with linkat through /proc/self/fd and with AT_EMPTY_PATH; an
// O_EXCL tmpfile can never be linked.
func testTmpfile(t *testing.T, dir string) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
	check(t, err, "open O_TMPFILE")
	defer unix.Close(fd)
	st := fstat(t, fd)
	wantType(t, "O_TMPFILE fstat", &st, unix.S_IFREG)
	if st.Nlink != 0 {
		t.Errorf("O_TMPFILE nlink = %d, want 0", st.Nlink)
	}
	if perm := st.Mode & 0o7777; perm != 0o640&^umask() {
		t.Errorf("O_TMPFILE mode %#o, want %#o", perm, 0o640&^umask())
	}
	_, err = unix.Write(fd, []byte("anonymous"))
	check(t, err, "write to O_TMPFILE")
	if names, _ := dirNames(dir); len(names) != 0 {
		t.Errorf("directory lists %q while the tmpfile is unnamed", names)
	}
	named := filepath.Join(dir, "named")
	check(t, unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, named, unix.AT_SYMLINK_FOLLOW), "linkat through /proc/self/fd")
	nst := stat(t, named)
	if nst.Ino != st.Ino || nst.Nlink != 1 {
		t.Errorf("linked tmpfile: ino %d nlink %d, want ino %d nlink 1", nst.Ino, nst.Nlink, st.Ino)
	}
	if fst := fstat(t, fd); fst.Nlink != 1 {
		t.Errorf("fstat nlink after linkat = %d, want 1", fst.Nlink)
	}
	wantContent(t, named, []byte("anonymous"))
	_, err = unix.Pwrite(fd, []byte("ANON"), 0)
	check(t, err, "write after linkat")
	wantContent(t, named, []byte("ANONymous"))

	// A second name with AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
	fd2, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	check(t, err, "open second O_TMPFILE")
	defer unix.Close(fd2)
	named2 := filepath.Join(dir, "named2")
	if err := unix.Linkat(fd2, "", unix.AT_FDCWD, named2, unix.AT_EMPTY_PATH); err != nil {
		if errnoOf(err) != unix.ENOENT || os.Geteuid() == 0 {
			t.Errorf("linkat AT_EMPTY_PATH: %v", err)
		}
	} else {
		wantContent(t, named2, nil)
		remove(t, named2)
	}

	// O_TMPFILE|O_EXCL files cannot be linked.
	fd3, err := unix.Open(dir, unix.O_TMPFILE|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	check(t, err, "open O_TMPFILE|O_EXCL")
	defer unix.Close(fd3)
	err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd3), unix.AT_FDCWD, filepath.Join(dir, "never"), unix.AT_SYMLINK_FOLLOW)
	wantErrno(t, err, "linkat of an O_TMPFILE|O_EXCL file", unix.ENOENT)

	_, err = unix.Open(dir, unix.O_TMPFILE|unix.O_RDONLY|unix.O_CLOEXEC, 0o600)
	wantErrno(t, err, "O_TMPFILE|O_RDONLY", unix.EINVAL)
	for _, f := range []int{fd, fd2, fd3} {
		check(t, unix.Close(f), "close")
	}
	remove(t, named)
}

// testMmapShared writes through a MAP_SHARED mapping, msyncs, and reads the
// change back with read(2) on another descriptor; a write(2) shows in the
// mapping; MAP_PRIVATE changes stay private.
func testMmapShared(t *testing.T, dir string) {
	p := filepath.Join(dir, "mapped")
	const size = 64 << 10
	data := pattern(size, 11)
	writeFile(t, p, data, 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	m, err := unix.Mmap(fdOf(f), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	check(t, err, "mmap MAP_SHARED")
	if !bytes.Equal(m, data) {
		t.Errorf("mapping: %s", diffBytes(m, data))
	}
	copy(m[100:], "written through the mapping")
	m[size-1] = 'Z'
	copy(data[100:], "written through the mapping")
	data[size-1] = 'Z'
	check(t, unix.Msync(m, unix.MS_SYNC), "msync")

	r := openFile(t, p, os.O_RDONLY, 0)
	got := make([]byte, size)
	n, err := unix.Pread(fdOf(r), got, 0)
	check(t, err, "pread after msync")
	if !bytes.Equal(got[:n], data) {
		t.Errorf("read after msync: %s", diffBytes(got[:n], data))
	}

	// write(2) is visible in the shared mapping.
	_, err = unix.Pwrite(fdOf(f), []byte("through write(2)"), 5000)
	check(t, err, "pwrite")
	copy(data[5000:], "through write(2)")
	if !bytes.Equal(m[5000:5016], data[5000:5016]) {
		t.Errorf("mapping after pwrite shows %q, want %q", m[5000:5016], data[5000:5016])
	}
	check(t, unix.Munmap(m), "munmap")

	// MAP_PRIVATE writes do not reach the file.
	pm, err := unix.Mmap(fdOf(r), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	check(t, err, "mmap MAP_PRIVATE")
	copy(pm, "private")
	check(t, unix.Munmap(pm), "munmap")
	check(t, f.Close(), "close")
	check(t, r.Close(), "close")
	wantContent(t, p, data)
	remove(t, p)
}

// testLargeFile1GiB writes a 1 GiB file in 1 MiB chunks and reads it back,
// comparing SHA-256 sums and a few chunks byte for byte.
func testLargeFile1GiB(t *testing.T, dir string) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("1 GiB test skipped under -short (CI=true always runs it)")
	}
	const chunk = 1 << 20
	const chunks = 1024
	var sfs unix.Statfs_t
	check(t, unix.Statfs(dir, &sfs), "statfs")
	if free := sfs.Bavail * uint64(sfs.Bsize); free < chunks*chunk+(256<<20) {
		t.Fatalf("only %d MiB free; the 1 GiB test needs 1.25 GiB", free>>20)
	}
	p := filepath.Join(dir, "large")
	f := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	buf := make([]byte, chunk)
	wsum := sha256.New()
	for i := range chunks {
		fillPattern(buf, uint64(1000+i))
		wsum.Write(buf)
		n, err := f.Write(buf)
		if err != nil || n != chunk {
			f.Close()
			remove(t, p)
			t.Fatalf("write of chunk %d: %d bytes, %v", i, n, err)
		}
	}
	check(t, unix.Fsync(fdOf(f)), "fsync")
	check(t, f.Close(), "close")
	st := stat(t, p)
	if st.Size != chunks*chunk {
		t.Errorf("size = %d, want %d", st.Size, chunks*chunk)
	}
	if st.Blocks*512 < chunks*chunk {
		t.Errorf("st_blocks*512 = %d, less than the %d bytes written", st.Blocks*512, chunks*chunk)
	}

	r := openFile(t, p, os.O_RDONLY, 0)
	rsum := sha256.New()
	nread, err := io.CopyBuffer(rsum, struct{ io.Reader }{r}, buf)
	check(t, err, "read back")
	if nread != chunks*chunk {
		t.Errorf("read back %d bytes, want %d", nread, chunks*chunk)
	}
	if got, want := rsum.Sum(nil), wsum.Sum(nil); !bytes.Equal(got, want) {
		t.Errorf("SHA-256 of the data read back %x, want %x", got, want)
	}
	want := make([]byte, chunk)
	for _, i := range []int{0, 1, 517, chunks - 1} {
		fillPattern(want, uint64(1000+i))
		n, err := r.ReadAt(buf, int64(i)*chunk)
		if err != nil && err != io.EOF {
			t.Errorf("pread of chunk %d: %v", i, err)
		} else if !bytes.Equal(buf[:n], want) {
			t.Errorf("chunk %d: %s", i, diffBytes(buf[:n], want))
		}
	}
	check(t, r.Close(), "close")
	remove(t, p)
}
