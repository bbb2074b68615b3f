package virtqueue_test

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// logFile is a front-end's dirty log: a memfd of fileSize bytes and the
// test's own mapping of it.
type logFile struct {
	fd   int
	data []byte
}

func newLogFile(t testing.TB, fileSize int) *logFile {
	t.Helper()
	fd, err := unix.MemfdCreate("log", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, int64(fileSize)); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(fd, 0, fileSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(data) })
	return &logFile{fd: fd, data: data}
}

// pages returns the pages set in the log starting at off, and clears them.
func (f *logFile) pages(off, size int) []uint64 {
	var out []uint64
	for i, b := range f.data[off : off+size] {
		for k := range 8 {
			if b&(1<<k) != 0 {
				out = append(out, uint64(8*i+k))
			}
		}
		f.data[off+i] = 0
	}
	return out
}

// pagesOf lists the pages [a, a+n) touches.
func pagesOf(a, n uint64) []uint64 {
	var out []uint64
	for p := a / 4096; n > 0 && p <= (a+n-1)/4096; p++ {
		out = append(out, p)
	}
	return out
}

func union(sets ...[]uint64) []uint64 {
	var out []uint64
	for _, s := range sets {
		out = append(out, s...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestMapDirtyLogRefuses(t *testing.T) {
	f := newLogFile(t, 8192)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	for _, tt := range []struct {
		name         string
		fd           int
		size, offset uint64
	}{
		{"size 0", f.fd, 0, 0},
		{"larger than the file", f.fd, 8193, 0},
		{"offset past the end of the file", f.fd, 1, 8192},
		{"offset plus size past the end", f.fd, 4096, 4097},
		{"offset plus size wraps", f.fd, 4096, ^uint64(0) - 100},
		{"size beyond the maximum", f.fd, virtqueue.MaxLogSize + 1, 0},
		{"an eventfd", efd, 8, 0},
		{"a closed fd", 1 << 20, 8, 0},
	} {
		if l, err := virtqueue.MapDirtyLog(tt.fd, tt.size, tt.offset); err == nil || !errors.Is(err, virtqueue.ErrBadLog) {
			if l != nil {
				l.Close()
			}
			t.Errorf("%s: %v, want ErrBadLog", tt.name, err)
		}
	}
}

func TestDirtyLogMark(t *testing.T) {
	// The log starts 4099 bytes into the file: neither page- nor
	// word-aligned.
	const off, size = 4099, 64
	f := newLogFile(t, 3*4096)
	l, err := virtqueue.MapDirtyLog(f.fd, size, off)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	covered := uint64(size * 8 * 4096)
	for _, tt := range []struct {
		name string
		a, n uint64
		want []uint64
		ok   bool
	}{
		{"one byte of page 0", 0, 1, []uint64{0}, true},
		{"nothing", 5, 0, nil, true},
		{"two bytes across a page boundary", 4095, 2, []uint64{0, 1}, true},
		{"a page exactly", 3 * 4096, 4096, []uint64{3}, true},
		{"pages 30 to 70, across 32-bit words", 30 * 4096, 41 * 4096, pagesOf(30*4096, 41*4096), true},
		{"the last page", covered - 1, 1, []uint64{covered/4096 - 1}, true},
		{"the whole log", 0, covered, pagesOf(0, covered), true},
		{"one page beyond the log", covered, 1, nil, false},
		{"straddling the end of the log", covered - 4096, 8192, nil, false},
		{"wrapping around 2^64", ^uint64(0) - 10, 20, nil, false},
	} {
		if ok := l.Mark(virtqueue.GuestAddress(tt.a), tt.n); ok != tt.ok {
			t.Errorf("%s: Mark = %v", tt.name, ok)
		}
		if got := f.pages(off, size); !slices.Equal(got, tt.want) {
			t.Errorf("%s: pages %v, want %v", tt.name, got, tt.want)
		}
		// Nothing outside the log was touched.
		for i, b := range f.data {
			if (i < off || i >= off+size) && b != 0 {
				t.Fatalf("%s: byte %d of the file outside the log is %#x", tt.name, i, b)
			}
		}
	}
	if n := l.Dropped(); n != 3 {
		t.Errorf("Dropped = %d, want 3", n)
	}
}

func TestDirtyLogConcurrentMarks(t *testing.T) {
	f := newLogFile(t, 4096)
	l, err := virtqueue.MapDirtyLog(f.fd, 4096, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := g; p < 4096*8; p += 8 {
				l.Mark(virtqueue.GuestAddress(p*4096), 1)
			}
		}()
	}
	wg.Wait()
	if got := f.pages(0, 4096); len(got) != 4096*8 {
		t.Fatalf("%d pages set, want %d", len(got), 4096*8)
	}
}

// loggedFixture is a queue whose log lives in a memfd covering the
// fixture's memory (up to regC + 1 MiB).
func loggedFixture(t *testing.T, eventIdx bool) (*fixture, *logFile, *virtqueue.DirtyLog) {
	t.Helper()
	fx := newFixture(t, 64, eventIdx)
	size := (regC + mib) / 4096 / 8
	f := newLogFile(t, size)
	l, err := virtqueue.MapDirtyLog(f.fd, uint64(size), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return fx, f, l
}

func TestQueueLogsPushedBuffers(t *testing.T) {
	fx, f, l := loggedFixture(t, false)
	size := len(f.data)
	used := uint64(fx.drv.Used)
	usedSlot := func(i int) uint64 { return used + 4 + 8*uint64(i) }

	// pop publishes a chain with a readable request and writable buffers
	// of the lengths in (from 0x80000 up, so crossing the A/B boundary)
	// and pops it.
	pop := func(in []uint32, o vqtest.ChainOpts) *virtqueue.Chain {
		t.Helper()
		head, err := fx.drv.AddChain([][]byte{[]byte("request")}, in, o)
		if err != nil {
			t.Fatal(err)
		}
		var c virtqueue.Chain
		if err := fx.q.Pop(&c); err != nil {
			t.Fatal(err)
		}
		if c.Head() != head {
			t.Fatalf("popped head %d, want %d", c.Head(), head)
		}
		return &c
	}
	expect := func(name string, want []uint64) {
		t.Helper()
		if got := f.pages(0, size); !slices.Equal(got, want) {
			t.Errorf("%s: pages %v, want %v", name, got, want)
		}
	}

	// Not logging: nothing.
	c := pop([]uint32{16, 8192}, vqtest.ChainOpts{})
	fx.q.Push(c, 5000)
	fx.drv.PopUsed()
	expect("without a log", nil)

	// Buffers and used ring, the used ring at its own address.
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Buffers: true, Used: true, UsedAddr: fx.drv.Used})
	c = pop([]uint32{16, 3 << 20 >> 4}, vqtest.ChainOpts{Split: 4096})
	fx.q.Push(c, 70000)
	u, _ := fx.drv.PopUsed()
	wantData := dataPages(u.In, 70000)
	expect("buffers and used ring", union(wantData, pagesOf(usedSlot(1), 8), pagesOf(used, 4)))

	// The used ring logged at another address (log_guest_addr), buffers
	// not at all.
	const logAt = 0x40000 - 4 // used->idx and the elements on two pages
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Used: true, UsedAddr: logAt})
	c = pop([]uint32{4096}, vqtest.ChainOpts{})
	fx.q.Push(c, 4096)
	fx.drv.PopUsed()
	expect("used ring only, at log_guest_addr", union(pagesOf(logAt+4+8*2, 8), pagesOf(logAt, 4)))

	// Buffers only; NoteWritten extends what is logged past the length
	// pushed.
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Buffers: true})
	c = pop([]uint32{16, 16384}, vqtest.ChainOpts{Split: 4096})
	c.NoteWritten(16 + 9000)
	fx.q.Push(c, 16)
	u, _ = fx.drv.PopUsed()
	expect("NoteWritten beyond the pushed length", dataPages(u.In, 16+9000))

	// A refused chain goes back with length 0: only the used ring.
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Buffers: true, Used: true, UsedAddr: fx.drv.Used})
	fx.drv.WriteDesc(60, vqtest.Desc{Addr: 0x80000, Len: 16, Flags: virtqueue.DescFWrite | virtqueue.DescFNext, Next: 60})
	fx.drv.ReuseDescs(60)
	fx.drv.PublishRaw(60)
	var cc virtqueue.Chain
	var ce *virtqueue.ChainError
	if err := fx.q.Pop(&cc); !errors.As(err, &ce) {
		t.Fatalf("Pop of a looping chain: %v", err)
	}
	expect("refused chain", union(pagesOf(usedSlot(4), 8), pagesOf(used, 4)))

	// Logging off again, and after Stop nothing is logged.
	fx.q.SetLog(virtqueue.LogConfig{})
	c = pop([]uint32{100}, vqtest.ChainOpts{})
	fx.q.Push(c, 100)
	expect("logging off", nil)
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Buffers: true, Used: true, UsedAddr: fx.drv.Used})
	c = pop([]uint32{100}, vqtest.ChainOpts{})
	fx.q.Stop()
	fx.q.Push(c, 100)
	expect("pushed after Stop", nil)
}

// dataPages lists the pages of the first n bytes of bufs.
func dataPages(bufs []vqtest.Buf, n uint64) []uint64 {
	var out []uint64
	for _, b := range bufs {
		k := min(n, uint64(b.Len))
		out = append(out, pagesOf(uint64(b.Addr), k)...)
		n -= k
	}
	return union(out)
}

func TestQueueLogsAvailEvent(t *testing.T) {
	fx, f, l := loggedFixture(t, true)
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Used: true, UsedAddr: fx.drv.Used})
	if more, err := fx.q.EnableNotify(); err != nil || more {
		t.Fatalf("EnableNotify = %v, %v", more, err)
	}
	availEvent := uint64(fx.drv.Used) + 4 + 8*64
	if got, want := f.pages(0, len(f.data)), pagesOf(availEvent, 2); !slices.Equal(got, want) {
		t.Fatalf("pages %v, want %v (avail_event)", got, want)
	}
	// Without used-ring logging, avail_event is not logged.
	fx.q.SetLog(virtqueue.LogConfig{Log: l, Buffers: true})
	fx.q.EnableNotify()
	if got := f.pages(0, len(f.data)); got != nil {
		t.Fatalf("pages %v, want none", got)
	}
}
