package fuseproto

import (
	"io"

	"golang.org/x/sys/unix"
)

// BytesDest is a ReadDest over one contiguous buffer, used by the /dev/fuse
// and stream transports and by tests.
type BytesDest struct {
	buf []byte
	n   int
}

// Reset makes the destination write into buf from its start.
func (b *BytesDest) Reset(buf []byte) { b.buf, b.n = buf, 0 }

// Bytes returns what has been written.
func (b *BytesDest) Bytes() []byte { return b.buf[:b.n] }

// Room implements ReadDest.
func (b *BytesDest) Room() int { return len(b.buf) - b.n }

// Len implements ReadDest.
func (b *BytesDest) Len() int { return b.n }

// ReadFromFD implements ReadDest with pread(2), retrying on EINTR and
// continuing after short reads until n bytes or end of file.
func (b *BytesDest) ReadFromFD(fd int, off int64, n int) (int, Errno) {
	if n > b.Room() {
		n = b.Room()
	}
	total := 0
	for total < n {
		got, err := unix.Pread(fd, b.buf[b.n:b.n+n-total], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				break
			}
			return 0, err.(Errno)
		}
		if got == 0 {
			break
		}
		total += got
		b.n += got
	}
	return total, OK
}

// Write implements ReadDest.
func (b *BytesDest) Write(p []byte) (int, error) {
	n := copy(b.buf[b.n:], p)
	b.n += n
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// BytesSource is a WriteSource over one contiguous buffer.
type BytesSource struct {
	buf []byte
}

// Reset makes the source yield buf.
func (b *BytesSource) Reset(buf []byte) { b.buf = buf }

// Len implements WriteSource.
func (b *BytesSource) Len() int { return len(b.buf) }

// WriteToFD implements WriteSource with pwrite(2), retrying on EINTR and
// after short writes.
func (b *BytesSource) WriteToFD(fd int, off int64) (int, Errno) {
	total := 0
	for len(b.buf) > 0 {
		n, err := unix.Pwrite(fd, b.buf, off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				break
			}
			return 0, err.(Errno)
		}
		if n == 0 {
			break
		}
		total += n
		b.buf = b.buf[n:]
	}
	return total, OK
}

// Read implements WriteSource.
func (b *BytesSource) Read(p []byte) (int, error) {
	if len(b.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}
