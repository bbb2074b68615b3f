package virtiofs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"golang.org/x/sys/unix"
)

// ioSpy is passthrough with READ's ReadDest and WRITE's WriteSource
// observed: which types the transport handed over, and how the FileSystem
// moved the data through them (positional I/O on a descriptor, or a copy
// through Write/Read).
type ioSpy struct {
	*passthrough.FS
	dst spyDest
	src spySource
}

type spyDest struct {
	fuseproto.ReadDest
	fdCalls, copies int
}

func (d *spyDest) ReadFromFD(fd int, off int64, n int) (int, fuseproto.Errno) {
	d.fdCalls++
	return d.ReadDest.ReadFromFD(fd, off, n)
}

func (d *spyDest) Write(p []byte) (int, error) {
	d.copies++
	return d.ReadDest.Write(p)
}

type spySource struct {
	fuseproto.WriteSource
	fdCalls, copies int
}

func (s *spySource) WriteToFD(fd int, off int64) (int, fuseproto.Errno) {
	s.fdCalls++
	return s.WriteSource.WriteToFD(fd, off)
}

func (s *spySource) Read(p []byte) (int, error) {
	s.copies++
	return s.WriteSource.Read(p)
}

func (f *ioSpy) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	f.dst = spyDest{ReadDest: dst}
	return f.FS.Read(ctx, node, in, &f.dst)
}

func (f *ioSpy) Write(ctx *fuseproto.Context, node uint64, in *fuseproto.WriteIn, src fuseproto.WriteSource) (uint32, fuseproto.Errno) {
	f.src = spySource{WriteSource: src}
	return f.FS.Write(ctx, node, in, &f.src)
}

// threadIO is the calling thread's I/O accounting
// (/proc/thread-self/io): read and write system calls (read, pread64,
// readv, preadv...; write, pwritev...) and the bytes they moved.
type threadIO struct {
	rchar, wchar, syscr, syscw uint64
	text                       int // bytes of the file read to get these
}

// ioCounter reads /proc/thread-self/io of the thread that opened it with
// one pread each time; the caller stays locked to that thread.
type ioCounter struct {
	fd  int
	buf [512]byte
}

func (c *ioCounter) read(t *testing.T) threadIO {
	n, err := unix.Pread(c.fd, c.buf[:], 0)
	if err != nil {
		t.Fatal(err)
	}
	var v threadIO
	v.text = n
	if _, err := fmt.Sscanf(string(c.buf[:n]), "rchar: %d\nwchar: %d\nsyscr: %d\nsyscw: %d\n", &v.rchar, &v.wchar, &v.syscr, &v.syscw); err != nil {
		t.Fatalf("%q: %v", c.buf[:n], err)
	}
	return v
}

// TestZeroCopyIO checks that READ and WRITE move file data with exactly one
// preadv or pwritev on guest memory and no other copy: the transport hands
// passthrough its chain ReadDest/WriteSource, passthrough uses only their
// descriptor methods (never Write or Read, the copying ones), the serving
// thread makes exactly one read (or write) system call, moving exactly the
// request's bytes, and the data lands in guest memory (or the host file).
// TestHotPathAllocs shows that nothing is allocated on the way, so there is
// no bounce buffer either.
func TestZeroCopyIO(t *testing.T) {
	var spy *ioSpy
	h := newHotPathFS(t, func(fs *passthrough.FS) fuseproto.FileSystem {
		spy = &ioSpy{FS: fs}
		return spy
	})
	// Clear the READ destination, then write different data for WRITE.
	for _, op := range h.ops {
		if op.name == "READ" {
			h.mem.Write(op.chains[0].data, make([]byte, hotSize))
		}
	}
	for _, op := range h.ops {
		if op.name != "READ" && op.name != "WRITE" {
			continue
		}
		t.Run(op.name, func(t *testing.T) {
			if op.name == "WRITE" {
				if err := os.WriteFile(filepath.Join(h.root, hotName), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Count on this goroutine's thread (t.Run starts a
			// goroutine per subtest).
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			fd, err := unix.Open("/proc/thread-self/io", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Skipf("no per-thread I/O accounting: %v", err)
			}
			defer unix.Close(fd)
			c := &ioCounter{fd: fd}
			before := c.read(t)
			h.run(op.chains...)
			after := c.read(t)
			// The second snapshot counts the first one's pread.
			reads := after.syscr - before.syscr - 1
			readBytes := after.rchar - before.rchar - uint64(before.text)
			writes, written := after.syscw-before.syscw, after.wchar-before.wchar
			t.Logf("read syscalls %d (%d bytes), write syscalls %d (%d bytes)", reads, readBytes, writes, written)
			if op.name == "READ" {
				if _, ok := spy.dst.ReadDest.(*chainDest); !ok {
					t.Errorf("READ got a %T, want the chain's *chainDest", spy.dst.ReadDest)
				}
				if spy.dst.fdCalls != 1 || spy.dst.copies != 0 {
					t.Errorf("READ: %d ReadFromFD, %d Write copies; want 1, 0", spy.dst.fdCalls, spy.dst.copies)
				}
				if reads != 1 || readBytes != hotSize || writes != 0 {
					t.Errorf("READ: %d read syscalls of %d bytes and %d write syscalls; want one preadv of %d", reads, readBytes, writes, hotSize)
				}
			} else {
				if _, ok := spy.src.WriteSource.(*chainSource); !ok {
					t.Errorf("WRITE got a %T, want the chain's *chainSource", spy.src.WriteSource)
				}
				if spy.src.fdCalls != 1 || spy.src.copies != 0 {
					t.Errorf("WRITE: %d WriteToFD, %d Read copies; want 1, 0", spy.src.fdCalls, spy.src.copies)
				}
				if writes != 1 || written != hotSize || reads != 0 {
					t.Errorf("WRITE: %d write syscalls of %d bytes and %d read syscalls; want one pwritev of %d", writes, written, reads, hotSize)
				}
			}
			h.check(t, op)
		})
	}
	if !bytes.Equal(h.data, pattern(hotSize, 1)) {
		t.Fatal("test data changed")
	}
}
