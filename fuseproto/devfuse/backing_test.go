package devfuse

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

// countingFS is a passthrough.FS that counts the READs and WRITEs that
// reach it.
type countingFS struct {
	*passthrough.FS
	reads, writes atomic.Int64
}

func (f *countingFS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	f.reads.Add(1)
	return f.FS.Read(ctx, node, in, dst)
}

func (f *countingFS) Write(ctx *fuseproto.Context, node uint64, in *fuseproto.WriteIn, src fuseproto.WriteSource) (uint32, fuseproto.Errno) {
	f.writes.Add(1)
	return f.FS.Write(ctx, node, in, src)
}

// serveCounting serves a new host directory through a countingFS with
// FUSE passthrough negotiated.
func serveCounting(t *testing.T, opts passthrough.Options) (*countingFS, *served, string) {
	t.Helper()
	shared := t.TempDir()
	pfs, err := passthrough.New(shared, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pfs.Close() })
	fs := &countingFS{FS: pfs}
	sv := serveTestWith(t, fs, 2, MountOptions{DefaultPermissions: true}, fuseproto.Options{Enable: fuseproto.InitPassthrough})
	return fs, sv, shared
}

// checkIO writes a file through the mount, changes it on the host and
// reads it back through the mount, with open(2), pread(2) and pwrite(2)
// only. fresh reports whether a descriptor opened before the host's
// change must see it at once (passthrough: the host's page cache is the
// only one).
func checkIO(t *testing.T, mnt, shared string, fresh bool) {
	t.Helper()
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: several WRITEs
	path := filepath.Join(mnt, "file")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(fd, data[off:], int64(off))
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if got := preadAll(t, fd, len(data)+10); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes through the writing descriptor, want the %d written", len(got), len(data))
	}
	if got, err := os.ReadFile(filepath.Join(shared, "file")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("shared dir holds %d bytes (%v), want the %d written", len(got), err, len(data))
	}

	// The host changes the file while the mount has it open.
	host, err := os.OpenFile(filepath.Join(shared, "file"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if _, err := host.WriteAt([]byte("HOST WROTE THIS"), 5000); err != nil {
		t.Fatal(err)
	}
	copy(data[5000:], "HOST WROTE THIS")
	if fresh {
		if got := preadAll(t, fd, len(data)+10); !bytes.Equal(got, data) {
			t.Fatal("an open descriptor does not see the host's write")
		}
	}
	if _, err := host.WriteAt([]byte("tail"), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	data = append(data, "tail"...)
	if got, err := readFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reopened after the host's writes: %d bytes (%v), want %d", len(got), err, len(data))
	}
}

// preadAll reads up to n bytes of fd from offset 0.
func preadAll(t *testing.T, fd, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := unix.Pread(fd, buf[got:], int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("pread: %v", err)
		}
		if m == 0 {
			break
		}
		got += m
	}
	return buf[:got]
}

// waitBalanced waits for every backing id the Server registered to be
// closed again (RELEASE is asynchronous) and returns the stats.
func waitBalanced(t *testing.T, srv *fuseproto.Server) fuseproto.PassthroughStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := srv.PassthroughStats()
		if st.Opened == st.Closed {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("backing ids leak: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// openClose opens and closes many files, some several times at once, in
// every access mode.
func openClose(t *testing.T, mnt string) {
	t.Helper()
	const files, rounds = 20, 10
	for i := range files {
		fd, err := unix.Open(filepath.Join(mnt, fmt.Sprint("f", i)), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, []byte(fmt.Sprint("content ", i))); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	modes := []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_DIRECT}
	for r := range rounds {
		var fds []int
		for i := range files {
			for k := range 1 + i%3 {
				fd, err := unix.Open(filepath.Join(mnt, fmt.Sprint("f", i)), modes[(r+k)%len(modes)]|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatalf("open f%d mode %#x: %v", i, modes[(r+k)%len(modes)], err)
				}
				fds = append(fds, fd)
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	want := []byte("content 7")
	if got, err := readFile(filepath.Join(mnt, "f7")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("f7 holds %q (%v), want %q", got, err, want)
	}
}

// TestKernelPassthrough serves a host directory with FUSE passthrough:
// data written and read through the mount, and written by the host behind
// it, is right, no READ or WRITE reaches the daemon, and every backing id
// is closed once its files are.
func TestKernelPassthrough(t *testing.T) {
	fs, sv, shared := serveCounting(t, passthrough.Options{})
	checkIO(t, sv.mnt, shared, true)
	openClose(t, sv.mnt)
	if r, w := fs.reads.Load(), fs.writes.Load(); r != 0 || w != 0 {
		t.Errorf("%d READs and %d WRITEs reached the daemon, want none (passthrough: %+v)", r, w, sv.srv.PassthroughStats())
	}
	st := waitBalanced(t, sv.srv)
	if st.Refused || st.Opened < 21 || st.Passthrough < 400 || st.Served != 0 {
		t.Errorf("passthrough stats %+v, want over 21 ids and 400 passthrough opens, none served", st)
	}
}

// TestKernelPassthroughFallback serves with --cache never's FOPEN_DIRECT_IO,
// which the kernel does not combine with passthrough: the daemon serves
// READ and WRITE itself and registers no backing file.
func TestKernelPassthroughFallback(t *testing.T) {
	fs, sv, shared := serveCounting(t, passthrough.Options{Cache: passthrough.CacheNever})
	checkIO(t, sv.mnt, shared, true)
	openClose(t, sv.mnt)
	if r, w := fs.reads.Load(), fs.writes.Load(); r == 0 || w == 0 {
		t.Errorf("%d READs and %d WRITEs reached the daemon, want both", r, w)
	}
	st := waitBalanced(t, sv.srv)
	if st.Opened != 0 || st.Passthrough != 0 || st.Served < 400 {
		t.Errorf("passthrough stats %+v, want no ids and 400 served opens", st)
	}
}
