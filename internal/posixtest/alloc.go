package posixtest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// testFallocate checks fallocate(2) without flags (allocates and grows the
// size, contents read as zeros) and with FALLOC_FL_KEEP_SIZE (allocates
// past the end, size unchanged).
func testFallocate(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	f := openFile(t, p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	fd := fdOf(f)
	const mib = 1 << 20
	check(t, unix.Fallocate(fd, 0, 0, mib), "fallocate 1 MiB")
	st := fstat(t, fd)
	if st.Size != mib {
		t.Errorf("size after fallocate = %d, want %d", st.Size, mib)
	}
	if st.Blocks*512 < mib {
		t.Errorf("fallocate of 1 MiB left %d bytes allocated", st.Blocks*512)
	}
	if s := stat(t, p); s.Size != mib {
		t.Errorf("stat size after fallocate = %d, want %d", s.Size, mib)
	}
	got := make([]byte, mib)
	n, err := unix.Pread(fd, got, 0)
	check(t, err, "read of fallocated space")
	if n != mib || !bytes.Equal(got, make([]byte, mib)) {
		t.Errorf("fallocated space reads %d bytes, not all zero", n)
	}

	blocks := st.Blocks
	check(t, unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, mib, mib), "fallocate KEEP_SIZE past the end")
	st = fstat(t, fd)
	if st.Size != mib {
		t.Errorf("size after FALLOC_FL_KEEP_SIZE = %d, want %d unchanged", st.Size, mib)
	}
	if st.Blocks*512 < blocks*512+mib {
		t.Errorf("FALLOC_FL_KEEP_SIZE of 1 MiB grew the allocation from %d to %d bytes", blocks*512, st.Blocks*512)
	}

	// Growing in the middle of existing data keeps it.
	_, err = unix.Pwrite(fd, []byte("data"), 100)
	check(t, err, "pwrite")
	check(t, unix.Fallocate(fd, 0, 0, 3*mib+4096), "fallocate over data and past the end")
	if st := fstat(t, fd); st.Size != 3*mib+4096 {
		t.Errorf("size after growing fallocate = %d, want %d", st.Size, 3*mib+4096)
	}
	buf := make([]byte, 4)
	_, err = unix.Pread(fd, buf, 100)
	check(t, err, "pread")
	if string(buf) != "data" {
		t.Errorf("fallocate over existing data changed it to %q", buf)
	}
	wantErrno(t, unix.Fallocate(fd, 0, 0, 0), "fallocate of length 0", unix.EINVAL)
	r := openFile(t, p, os.O_RDONLY, 0)
	wantErrno(t, unix.Fallocate(fdOf(r), 0, 0, 4096), "fallocate on a read-only descriptor", unix.EBADF)
	check(t, r.Close(), "close")
	check(t, f.Close(), "close")
	if st := stat(t, p); st.Size != 3*mib+4096 {
		t.Errorf("size after close = %d", st.Size)
	}
	remove(t, p)
}

// testFallocPunchHole punches a hole with FALLOC_FL_PUNCH_HOLE|KEEP_SIZE:
// the range reads as zeros, the rest is intact, the size is unchanged and
// space is freed; PUNCH_HOLE without KEEP_SIZE is EOPNOTSUPP.
func testFallocPunchHole(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	const k64 = 64 << 10
	data := bytes.Repeat([]byte{0xab}, 3*k64)
	writeFile(t, p, data, 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	fd := fdOf(f)
	check(t, unix.Fsync(fd), "fsync")
	before := fstat(t, fd)
	check(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, k64, k64), "punch hole")
	after := fstat(t, fd)
	if after.Size != 3*k64 {
		t.Errorf("size after punching = %d, want %d", after.Size, 3*k64)
	}
	if after.Blocks >= before.Blocks {
		t.Errorf("punching 64 KiB did not free space: %d blocks before, %d after", before.Blocks, after.Blocks)
	}
	copy(data[k64:2*k64], make([]byte, k64))
	got := make([]byte, 3*k64)
	n, err := unix.Pread(fd, got, 0)
	check(t, err, "pread after punching")
	if !bytes.Equal(got[:n], data) {
		t.Errorf("after punching: %s", diffBytes(got[:n], data))
	}
	wantContent(t, p, data)

	// A hole punched at the end keeps the size too.
	check(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 2*k64+100, k64), "punch hole over the end")
	if st := fstat(t, fd); st.Size != 3*k64 {
		t.Errorf("size after punching over the end = %d, want %d", st.Size, 3*k64)
	}
	copy(data[2*k64+100:], make([]byte, k64-100))
	wantContent(t, p, data)

	wantErrno(t, unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE, 0, 4096), "PUNCH_HOLE without KEEP_SIZE", unix.EOPNOTSUPP)
	check(t, f.Close(), "close")
	remove(t, p)
}

// testSeekDataHole checks lseek SEEK_DATA and SEEK_HOLE on a sparse file:
// data at [0, 64K) and [2M, 2M+64K), a hole between, the implicit hole at
// the end of file, ENXIO at and past the end, and a file that is all hole.
func testSeekDataHole(t *testing.T, dir string) {
	p := filepath.Join(dir, "sparse")
	const k64, m2 = 64 << 10, 2 << 20
	f := openFile(t, p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	fd := fdOf(f)
	_, err := unix.Pwrite(fd, bytes.Repeat([]byte{1}, k64), 0)
	check(t, err, "pwrite")
	_, err = unix.Pwrite(fd, bytes.Repeat([]byte{2}, k64), m2)
	check(t, err, "pwrite")
	size := int64(m2 + k64)

	seek := func(off int64, whence int) (int64, error) { return unix.Seek(fd, off, whence) }
	wantSeek := func(what string, off int64, whence int, want int64) {
		t.Helper()
		got, err := seek(off, whence)
		if err != nil || got != want {
			t.Errorf("%s: lseek(%d) = %d, %v; want %d", what, off, got, err, want)
		}
	}
	wantSeek("SEEK_DATA at the start", 0, unix.SEEK_DATA, 0)
	wantSeek("SEEK_DATA inside data", 100, unix.SEEK_DATA, 100)
	wantSeek("SEEK_HOLE from the start", 0, unix.SEEK_HOLE, k64)
	wantSeek("SEEK_DATA from the hole", k64, unix.SEEK_DATA, m2)
	wantSeek("SEEK_DATA from inside the hole", m2/2, unix.SEEK_DATA, m2)
	wantSeek("SEEK_HOLE inside the hole", m2/2, unix.SEEK_HOLE, m2/2)
	wantSeek("SEEK_HOLE from the second extent", m2, unix.SEEK_HOLE, size)
	wantSeek("SEEK_DATA at the last byte", size-1, unix.SEEK_DATA, size-1)
	_, err = seek(size, unix.SEEK_DATA)
	wantErrno(t, err, "SEEK_DATA at end of file", unix.ENXIO)
	_, err = seek(size, unix.SEEK_HOLE)
	wantErrno(t, err, "SEEK_HOLE at end of file", unix.ENXIO)
	_, err = seek(size+100, unix.SEEK_DATA)
	wantErrno(t, err, "SEEK_DATA past end of file", unix.ENXIO)
	_, err = seek(-1, unix.SEEK_DATA)
	wantErrno(t, err, "SEEK_DATA at a negative offset", unix.ENXIO, unix.EINVAL)

	// The descriptor's offset is where the last successful lseek put it.
	pos, err := seek(0, unix.SEEK_HOLE)
	check(t, err, "SEEK_HOLE")
	if cur, err := seek(0, io.SeekCurrent); err != nil || cur != pos {
		t.Errorf("offset after SEEK_HOLE = %d, %v; want %d", cur, err, pos)
	}

	// A file that is all hole.
	q := filepath.Join(dir, "empty")
	g := openFile(t, q, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	check(t, unix.Ftruncate(fdOf(g), 1<<20), "ftruncate")
	_, err = unix.Seek(fdOf(g), 0, unix.SEEK_DATA)
	wantErrno(t, err, "SEEK_DATA in a file with no data", unix.ENXIO)
	if off, err := unix.Seek(fdOf(g), 0, unix.SEEK_HOLE); err != nil || off != 0 {
		t.Errorf("SEEK_HOLE in a file with no data = %d, %v; want 0", off, err)
	}
	check(t, g.Close(), "close")
	check(t, f.Close(), "close")
	remove(t, p)
	remove(t, q)
}

// testCopyFileRange checks copy_file_range(2) with explicit offsets (which
// are advanced, while the descriptors' offsets are not) and with the
// descriptors' own offsets, at end of file, and for overlapping ranges of
// one file (EINVAL).
func testCopyFileRange(t *testing.T, dir string) {
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := pattern(256<<10, 21)
	writeFile(t, src, data, 0o644)
	s := openFile(t, src, os.O_RDONLY, 0)
	d := openFile(t, dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	sfd, dfd := fdOf(s), fdOf(d)

	const length = 65536
	offIn, offOut := int64(4096), int64(100)
	copied := 0
	for copied < length {
		n, err := unix.CopyFileRange(sfd, &offIn, dfd, &offOut, length-copied, 0)
		check(t, err, "copy_file_range")
		if n == 0 {
			t.Fatalf("copy_file_range returned 0 after %d bytes", copied)
		}
		copied += n
	}
	if offIn != 4096+length || offOut != 100+length {
		t.Errorf("offsets after copying: in %d out %d, want %d and %d", offIn, offOut, 4096+length, 100+length)
	}
	for _, fd := range []int{sfd, dfd} {
		if cur, err := unix.Seek(fd, 0, io.SeekCurrent); err != nil || cur != 0 {
			t.Errorf("copy_file_range with explicit offsets moved a file offset to %d (%v)", cur, err)
		}
	}
	want := make([]byte, 100+length)
	copy(want[100:], data[4096:4096+length])
	if st := fstat(t, dfd); st.Size != int64(len(want)) {
		t.Errorf("destination size %d, want %d", st.Size, len(want))
	}
	wantContent(t, dst, want)

	// With the descriptors' offsets.
	_, err := unix.Seek(sfd, 1000, io.SeekStart)
	check(t, err, "lseek")
	_, err = unix.Seek(dfd, 0, io.SeekEnd)
	check(t, err, "lseek")
	copied = 0
	for copied < 5000 {
		n, err := unix.CopyFileRange(sfd, nil, dfd, nil, 5000-copied, 0)
		check(t, err, "copy_file_range with file offsets")
		if n == 0 {
			t.Fatalf("copy_file_range returned 0 after %d bytes", copied)
		}
		copied += n
	}
	if cur, _ := unix.Seek(sfd, 0, io.SeekCurrent); cur != 6000 {
		t.Errorf("source offset after copying = %d, want 6000", cur)
	}
	if cur, _ := unix.Seek(dfd, 0, io.SeekCurrent); cur != int64(len(want))+5000 {
		t.Errorf("destination offset after copying = %d, want %d", cur, len(want)+5000)
	}
	want = append(want, data[1000:6000]...)
	wantContent(t, dst, want)

	// Overwrite in the middle of the destination.
	offIn, offOut = 0, 50
	n, err := unix.CopyFileRange(sfd, &offIn, dfd, &offOut, 10, 0)
	check(t, err, "copy_file_range into the middle")
	if n != 10 {
		t.Errorf("short copy of 10 bytes: %d", n)
	}
	copy(want[50:], data[:10])
	wantContent(t, dst, want)

	// At the end of the source nothing is copied.
	offIn, offOut = int64(len(data)), 0
	n, err = unix.CopyFileRange(sfd, &offIn, dfd, &offOut, 100, 0)
	if err != nil || n != 0 {
		t.Errorf("copy_file_range at the source's end = %d, %v; want 0", n, err)
	}

	// Overlapping ranges of one file.
	rw := openFile(t, src, os.O_RDWR, 0)
	offIn, offOut = 0, 100
	_, err = unix.CopyFileRange(fdOf(rw), &offIn, fdOf(rw), &offOut, 1000, 0)
	wantErrno(t, err, "copy_file_range between overlapping ranges of one file", unix.EINVAL)
	// Non-overlapping ranges of one file work.
	offIn, offOut = 0, int64(len(data))
	n, err = unix.CopyFileRange(fdOf(rw), &offIn, fdOf(rw), &offOut, 1000, 0)
	check(t, err, "copy_file_range within one file")
	if n != 1000 {
		t.Errorf("copy within one file copied %d bytes, want 1000", n)
	}
	wantContent(t, src, append(append([]byte(nil), data...), data[:1000]...))

	for _, f := range []*os.File{s, d, rw} {
		check(t, f.Close(), "close")
	}
	remove(t, src)
	remove(t, dst)
}
