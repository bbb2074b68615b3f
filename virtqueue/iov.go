package virtqueue

import (
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iovMax is IOV_MAX, the most iovecs one preadv/pwritev takes.
const iovMax = 1024

// sgCursor is a position in a list of buffers.
type sgCursor struct {
	bufs [][]byte
	i    int // current buffer
	off  int // offset in bufs[i]
	left int // bytes from the position to the end (or the limit)
}

func (s *sgCursor) reset(bufs [][]byte) {
	s.bufs, s.i, s.off, s.left = bufs, 0, 0, 0
	for _, b := range bufs {
		s.left += len(b)
	}
}

// advance moves the position n bytes forward (n <= left).
func (s *sgCursor) advance(n int) {
	s.left -= n
	for n > 0 {
		k := min(n, len(s.bufs[s.i])-s.off)
		n -= k
		s.off += k
		if s.off == len(s.bufs[s.i]) {
			s.i++
			s.off = 0
		}
	}
}

// current returns the rest of the current buffer, skipping empty ones.
func (s *sgCursor) current() []byte {
	for s.i < len(s.bufs) && s.off == len(s.bufs[s.i]) {
		s.i++
		s.off = 0
	}
	if s.i == len(s.bufs) {
		return nil
	}
	return s.bufs[s.i][s.off:]
}

// iovecs fills iov with up to n bytes from the position (at most iovMax
// entries) and returns the entries and the bytes they cover.
func (s *sgCursor) iovecs(iov []unix.Iovec, n int) ([]unix.Iovec, int) {
	iov = iov[:0]
	total := 0
	i, off := s.i, s.off
	for total < n && i < len(s.bufs) && len(iov) < iovMax {
		b := s.bufs[i][off:]
		i, off = i+1, 0
		if len(b) == 0 {
			continue
		}
		b = b[:min(len(b), n-total)]
		iov = append(iov, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
		total += len(b)
	}
	return iov, total
}

// Reader reads the device-readable buffers of a chain in order. The zero
// value is empty; Reset points it at a list of buffers. It keeps its iovec
// scratch space between uses, so a reused Reader allocates nothing.
type Reader struct {
	c   sgCursor
	iov []unix.Iovec
}

// Reset makes r read bufs from the start.
func (r *Reader) Reset(bufs [][]byte) {
	r.c.reset(bufs)
	if r.iov == nil {
		r.iov = make([]unix.Iovec, 0, iovMax)
	}
}

// Len returns the number of bytes not yet read.
func (r *Reader) Len() int { return r.c.left }

// Read copies the next bytes into p; it returns io.EOF at the end.
func (r *Reader) Read(p []byte) (int, error) {
	if r.c.left == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.c.left > 0 {
		k := copy(p[n:], r.c.current())
		r.c.advance(k)
		n += k
	}
	return n, nil
}

// Skip moves past n bytes (at most Len) and returns how many it skipped.
func (r *Reader) Skip(n int) int {
	n = max(0, min(n, r.c.left))
	r.c.advance(n)
	return n
}

// WriteToFD writes all remaining bytes to fd at offset off with pwritev(2)
// straight from guest memory, retrying on EINTR and after short writes. It
// returns the bytes written; an error is returned only if nothing was.
func (r *Reader) WriteToFD(fd int, off int64) (int, syscall.Errno) {
	total := 0
	for r.c.left > 0 {
		iov, n := r.c.iovecs(r.iov, r.c.left)
		got, errno := rwv(unix.SYS_PWRITEV, fd, iov, off+int64(total))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			if total > 0 {
				break
			}
			return 0, errno
		}
		if got <= 0 || got > n {
			break
		}
		r.c.advance(got)
		total += got
	}
	return total, 0
}

// Writer writes into the device-writable buffers of a chain in order, up
// to a limit. The zero value has no room; Reset points it at buffers.
type Writer struct {
	c       sgCursor
	written int
	iov     []unix.Iovec
}

// Reset makes w write into bufs from the start, with room for all of them.
func (w *Writer) Reset(bufs [][]byte) {
	w.c.reset(bufs)
	w.written = 0
	if w.iov == nil {
		w.iov = make([]unix.Iovec, 0, iovMax)
	}
}

// Limit reduces the room to at most n more bytes.
func (w *Writer) Limit(n int) { w.c.left = max(0, min(w.c.left, n)) }

// Room returns the number of bytes that still fit.
func (w *Writer) Room() int { return w.c.left }

// Written returns the number of bytes written (or skipped) since Reset.
func (w *Writer) Written() int { return w.written }

// Skip moves past n bytes (at most Room), leaving them as they are.
func (w *Writer) Skip(n int) int {
	n = max(0, min(n, w.c.left))
	w.c.advance(n)
	w.written += n
	return n
}

// Write copies p into the buffers; past the room it writes what fits and
// returns io.ErrShortWrite.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) && w.c.left > 0 {
		cur := w.c.current()
		k := copy(cur[:min(len(cur), w.c.left)], p[n:])
		w.c.advance(k)
		n += k
	}
	w.written += n
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// ReadFromFD reads up to n bytes (at most Room) from fd at offset off
// straight into guest memory with preadv(2), retrying on EINTR and after
// short reads until n bytes or end of file. An error is returned only if
// nothing was read.
func (w *Writer) ReadFromFD(fd int, off int64, n int) (int, syscall.Errno) {
	n = min(n, w.c.left)
	total := 0
	for total < n {
		iov, k := w.c.iovecs(w.iov, n-total)
		got, errno := rwv(unix.SYS_PREADV, fd, iov, off+int64(total))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			if total > 0 {
				break
			}
			return 0, errno
		}
		if got <= 0 || got > k {
			break
		}
		w.c.advance(got)
		w.written += got
		total += got
	}
	return total, 0
}

// rwv issues preadv or pwritev. On 64-bit Linux the offset travels whole in
// pos_l.
func rwv(trap uintptr, fd int, iov []unix.Iovec, off int64) (int, syscall.Errno) {
	if len(iov) == 0 {
		return 0, 0
	}
	n, _, errno := unix.Syscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)),
		uintptr(off), 0, 0)
	return int(n), errno
}
