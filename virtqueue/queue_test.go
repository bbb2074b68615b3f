package virtqueue_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

const (
	regA   = 0x0        // 1 MiB, rings at ringAt
	regB   = 0x100000   // 1 MiB, adjacent to A (another memfd, mmap offset 4096)
	regC   = 0x10000000 // 1 MiB after a gap
	mib    = 1 << 20
	ringAt = 0x1000
)

// testLayout is three regions: A and B adjacent in guest address (so
// buffers may straddle them), C after a gap.
var testLayout = []vqtest.Layout{
	{GuestAddr: regA, Size: mib},
	{GuestAddr: regB, Size: mib, MmapOffset: 4096},
	{GuestAddr: regC, Size: mib},
}

type fixture struct {
	mem *vqtest.Memory
	gm  *virtqueue.GuestMemory
	drv *vqtest.Driver
	q   *virtqueue.Queue
}

// newFixture sets up memory, a driver with buffers in [0x80000, 0x180000)
// (crossing the A/B boundary) and the device queue.
func newFixture(t testing.TB, size uint16, eventIdx bool) *fixture {
	t.Helper()
	mem := vqtest.NewMemory(t, testLayout...)
	gm := mem.Map(t)
	drv := vqtest.NewDriver(mem, size, ringAt, vqtest.NewAlloc(0x80000, mib))
	drv.EventIdx = eventIdx
	q, err := virtqueue.NewQueue(gm, drv.Config())
	if err != nil {
		t.Fatalf("NewQueue: %v", err)
	}
	return &fixture{mem: mem, gm: gm, drv: drv, q: q}
}

func readAll(c *virtqueue.Chain) []byte {
	var r virtqueue.Reader
	r.Reset(c.Readable())
	out := make([]byte, r.Len())
	n, _ := r.Read(out)
	return out[:n]
}

func TestPopPushRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	tests := []struct {
		name string
		out  [][]byte
		in   []uint32
		opts vqtest.ChainOpts
	}{
		{"one readable", [][]byte{[]byte("hello")}, nil, vqtest.ChainOpts{}},
		{"one writable", nil, []uint32{100}, vqtest.ChainOpts{}},
		{"readable and writable", [][]byte{[]byte("header"), []byte("args")}, []uint32{16, 4096}, vqtest.ChainOpts{}},
		{"indirect", [][]byte{[]byte("header"), big}, []uint32{16, 8192}, vqtest.ChainOpts{Indirect: true}},
		{"split pieces", [][]byte{big}, []uint32{70000}, vqtest.ChainOpts{Split: 4096, Indirect: true}},
		{"zero-length buffers", [][]byte{{}, []byte("x")}, []uint32{0, 8}, vqtest.ChainOpts{}},
		// 600 KiB buffers starting at 0x80000 must cross the A/B boundary
		// at 0x100000.
		{"straddles regions", [][]byte{bytes.Repeat([]byte{7}, 600<<10)}, []uint32{300 << 10}, vqtest.ChainOpts{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 64, false)
			head, err := f.drv.AddChain(tt.out, tt.in, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var c virtqueue.Chain
			if err := f.q.Pop(&c); err != nil {
				t.Fatalf("Pop: %v", err)
			}
			if c.Head() != head {
				t.Errorf("head %d, want %d", c.Head(), head)
			}
			if got, want := readAll(&c), bytes.Join(tt.out, nil); !bytes.Equal(got, want) {
				t.Errorf("readable bytes differ: got %d bytes, want %d", len(got), len(want))
			}
			var wantW int
			for _, n := range tt.in {
				wantW += int(n)
			}
			if c.WritableLen() != wantW {
				t.Errorf("WritableLen %d, want %d", c.WritableLen(), wantW)
			}
			reply := bytes.Repeat([]byte("R"), wantW)
			var w virtqueue.Writer
			w.Reset(c.Writable())
			if n, err := w.Write(reply); n != wantW || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
			if err := f.q.Push(&c, uint32(wantW)); err != nil {
				t.Fatalf("Push: %v", err)
			}
			u, ok := f.drv.PopUsed()
			if !ok || u.Head != head || u.Len != uint32(wantW) || !bytes.Equal(u.Data, reply) {
				t.Fatalf("used %+v ok %v, want head %d len %d", u.Head, ok, head, wantW)
			}
			if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrEmpty) {
				t.Fatalf("second Pop: %v, want ErrEmpty", err)
			}
		})
	}
}

func TestStraddleSplitsPerRegion(t *testing.T) {
	f := newFixture(t, 8, false)
	// A buffer from 0xff000 to 0x101000 crosses A and B: two slices.
	addr := virtqueue.GuestAddress(regB - 0x1000)
	data := bytes.Repeat([]byte("ab"), 0x1000)
	f.mem.Write(addr, data)
	f.drv.WriteDesc(0, vqtest.Desc{Addr: addr, Len: uint32(len(data))})
	f.drv.ReuseDescs(0)
	f.drv.PublishRaw(0)
	var c virtqueue.Chain
	if err := f.q.Pop(&c); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Readable()); n != 2 {
		t.Errorf("%d slices, want 2", n)
	}
	if !bytes.Equal(readAll(&c), data) {
		t.Error("data differs")
	}
	f.q.Push(&c, 0)
}

// hostile describes a hand-made chain: descriptors written at table
// indexes, optional indirect tables written at guest addresses, a head.
type hostile struct {
	name  string
	descs map[uint16]vqtest.Desc
	// tables are indirect tables: address → entries.
	tables map[virtqueue.GuestAddress][]vqtest.Desc
	head   uint16
	want   error
}

const tbl = virtqueue.GuestAddress(0x40000) // scratch for indirect tables, in A

func dsc(a virtqueue.GuestAddress, n uint32, flags, next uint16) vqtest.Desc {
	return vqtest.Desc{Addr: a, Len: n, Flags: flags, Next: next}
}

func TestHostileChains(t *testing.T) {
	const (
		N = virtqueue.DescFNext
		W = virtqueue.DescFWrite
		I = virtqueue.DescFIndirect
	)
	buf := virtqueue.GuestAddress(0x50000)
	tests := []hostile{
		{name: "self loop", descs: map[uint16]vqtest.Desc{10: dsc(buf, 8, N, 10)}, head: 10, want: virtqueue.ErrChainTooLong},
		{name: "two-step loop", descs: map[uint16]vqtest.Desc{10: dsc(buf, 8, N, 11), 11: dsc(buf, 8, N, 10)}, head: 10, want: virtqueue.ErrChainTooLong},
		{name: "next out of table", descs: map[uint16]vqtest.Desc{10: dsc(buf, 8, N, 16)}, head: 10, want: virtqueue.ErrDescIndex},
		{name: "address outside memory", descs: map[uint16]vqtest.Desc{10: dsc(0x5000_0000, 8, 0, 0)}, head: 10, want: virtqueue.ErrOutOfMemory},
		{name: "address in the gap after B", descs: map[uint16]vqtest.Desc{10: dsc(regB+mib-8, 16, 0, 0)}, head: 10, want: virtqueue.ErrOutOfMemory},
		{name: "address wraps around", descs: map[uint16]vqtest.Desc{10: dsc(^virtqueue.GuestAddress(0)-15, 32, 0, 0)}, head: 10, want: virtqueue.ErrOutOfMemory},
		{name: "huge length", descs: map[uint16]vqtest.Desc{10: dsc(buf, 0xffffffff, W, 0)}, head: 10, want: virtqueue.ErrOutOfMemory},
		{name: "readable after writable", descs: map[uint16]vqtest.Desc{10: dsc(buf, 8, W|N, 11), 11: dsc(buf, 8, 0, 0)}, head: 10, want: virtqueue.ErrReadAfterWrite},
		{name: "indirect size not a multiple of 16", descs: map[uint16]vqtest.Desc{10: dsc(tbl, 24, I, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{name: "indirect size zero", descs: map[uint16]vqtest.Desc{10: dsc(tbl, 0, I, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{name: "indirect too large", descs: map[uint16]vqtest.Desc{10: dsc(tbl, 16*(virtqueue.MaxIndirectDescs+1), I, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{name: "indirect with next", descs: map[uint16]vqtest.Desc{10: dsc(tbl, 16, I|N, 11), 11: dsc(buf, 8, 0, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{name: "indirect table outside memory", descs: map[uint16]vqtest.Desc{10: dsc(0x6000_0000, 32, I, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{name: "indirect table across the gap", descs: map[uint16]vqtest.Desc{10: dsc(regB+mib-16, 32, I, 0)}, head: 10, want: virtqueue.ErrBadIndirect},
		{
			name:   "nested indirect",
			descs:  map[uint16]vqtest.Desc{10: dsc(tbl, 32, I, 0)},
			tables: map[virtqueue.GuestAddress][]vqtest.Desc{tbl: {dsc(buf, 8, N, 1), dsc(tbl+0x100, 16, I, 0)}},
			head:   10, want: virtqueue.ErrNestedIndirect,
		},
		{
			name:   "loop inside indirect table",
			descs:  map[uint16]vqtest.Desc{10: dsc(tbl, 32, I, 0)},
			tables: map[virtqueue.GuestAddress][]vqtest.Desc{tbl: {dsc(buf, 8, N, 1), dsc(buf, 8, N, 0)}},
			head:   10, want: virtqueue.ErrChainTooLong,
		},
		{
			name:   "next outside indirect table",
			descs:  map[uint16]vqtest.Desc{10: dsc(tbl, 32, I, 0)},
			tables: map[virtqueue.GuestAddress][]vqtest.Desc{tbl: {dsc(buf, 8, N, 5), dsc(buf, 8, 0, 0)}},
			head:   10, want: virtqueue.ErrDescIndex,
		},
		{
			name:   "readable after writable in indirect table",
			descs:  map[uint16]vqtest.Desc{10: dsc(tbl, 32, I, 0)},
			tables: map[virtqueue.GuestAddress][]vqtest.Desc{tbl: {dsc(buf, 8, W|N, 1), dsc(buf, 8, 0, 0)}},
			head:   10, want: virtqueue.ErrReadAfterWrite,
		},
		{
			name:   "direct then indirect is fine",
			descs:  map[uint16]vqtest.Desc{10: dsc(buf, 8, N, 11), 11: dsc(tbl, 32, I|W, 0)},
			tables: map[virtqueue.GuestAddress][]vqtest.Desc{tbl: {dsc(buf, 8, N, 1), dsc(buf, 8, W, 0)}},
			head:   10, want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 16, false)
			for i, d := range tt.descs {
				f.drv.WriteDesc(i, d)
				if !f.drv.ReuseDescs(i) {
					t.Fatalf("descriptor %d taken", i)
				}
			}
			for a, ds := range tt.tables {
				for i, d := range ds {
					f.mem.PutDesc(a+virtqueue.GuestAddress(16*i), d)
				}
			}
			f.drv.PublishRaw(tt.head)
			var c virtqueue.Chain
			err := f.q.Pop(&c)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Pop: %v", err)
				}
				f.q.Push(&c, 0)
			} else {
				var ce *virtqueue.ChainError
				if !errors.As(err, &ce) || !errors.Is(err, tt.want) || ce.Head != tt.head {
					t.Fatalf("Pop: %v, want a ChainError at head %d wrapping %v", err, tt.head, tt.want)
				}
			}
			// The chain is returned with length 0 and the queue goes on.
			u, ok := f.drv.PopUsed()
			if !ok || u.Head != tt.head || u.Len != 0 {
				t.Fatalf("used %+v %v, want head %d len 0", u, ok, tt.head)
			}
			head, err := f.drv.AddChain([][]byte{[]byte("next")}, []uint32{4}, vqtest.ChainOpts{})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.q.Pop(&c); err != nil || c.Head() != head || string(readAll(&c)) != "next" {
				t.Fatalf("Pop after a hostile chain: %v", err)
			}
			f.q.Push(&c, 4)
		})
	}
}

func TestChainTooBig(t *testing.T) {
	// Two 3 GiB buffers in a sparse memfd: 6 GiB does not fit a used
	// element's 32-bit length.
	const big = 3 << 30
	mem := vqtest.NewMemory(t, vqtest.Layout{GuestAddr: 0, Size: mib}, vqtest.Layout{GuestAddr: 1 << 32, Size: big})
	gm := mem.Map(t)
	drv := vqtest.NewDriver(mem, 8, ringAt, vqtest.NewAlloc(0x80000, 0x10000))
	q, err := virtqueue.NewQueue(gm, drv.Config())
	if err != nil {
		t.Fatal(err)
	}
	drv.WriteDesc(0, vqtest.Desc{Addr: 1 << 32, Len: big, Flags: virtqueue.DescFNext | virtqueue.DescFWrite, Next: 1})
	drv.WriteDesc(1, vqtest.Desc{Addr: 1 << 32, Len: big, Flags: virtqueue.DescFWrite})
	drv.ReuseDescs(0, 1)
	drv.PublishRaw(0)
	var c virtqueue.Chain
	if err := q.Pop(&c); !errors.Is(err, virtqueue.ErrChainTooBig) {
		t.Fatalf("Pop: %v, want ErrChainTooBig", err)
	}
}

func TestBrokenQueue(t *testing.T) {
	t.Run("index jump", func(t *testing.T) {
		f := newFixture(t, 16, false)
		f.drv.SetAvailIdx(17)
		var c virtqueue.Chain
		if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrBroken) {
			t.Fatalf("Pop: %v, want ErrBroken", err)
		}
		f.drv.SetAvailIdx(1)
		if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrBroken) {
			t.Fatalf("Pop after break: %v, want ErrBroken", err)
		}
	})
	t.Run("head out of range", func(t *testing.T) {
		f := newFixture(t, 16, false)
		f.drv.PublishRaw(16)
		var c virtqueue.Chain
		if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrBroken) || !errors.Is(err, virtqueue.ErrDescIndex) {
			t.Fatalf("Pop: %v, want ErrBroken", err)
		}
		if _, err := f.q.EnableNotify(); !errors.Is(err, virtqueue.ErrBroken) {
			t.Fatalf("EnableNotify: %v, want ErrBroken", err)
		}
	})
	t.Run("rings removed", func(t *testing.T) {
		f := newFixture(t, 16, false)
		if err := f.gm.Remove(f.mem.Regions[0].Spec); err != nil {
			t.Fatal(err)
		}
		var c virtqueue.Chain
		if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrBroken) {
			t.Fatalf("Pop: %v, want ErrBroken", err)
		}
	})
}

func TestNewQueueValidation(t *testing.T) {
	mem := vqtest.NewMemory(t, testLayout...)
	gm := mem.Map(t)
	ok := virtqueue.Config{Size: 16, Desc: ringAt, Avail: ringAt + 256, Used: ringAt + 512}
	tests := []struct {
		name string
		mod  func(c *virtqueue.Config)
	}{
		{"size 0", func(c *virtqueue.Config) { c.Size = 0 }},
		{"size not a power of two", func(c *virtqueue.Config) { c.Size = 24 }},
		{"size too big", func(c *virtqueue.Config) { c.Size = 65535 }},
		{"desc misaligned", func(c *virtqueue.Config) { c.Desc += 8 }},
		{"avail misaligned", func(c *virtqueue.Config) { c.Avail++ }},
		{"used misaligned", func(c *virtqueue.Config) { c.Used += 2 }},
		{"desc outside memory", func(c *virtqueue.Config) { c.Desc = 0x4000_0000 }},
		{"used crosses the gap", func(c *virtqueue.Config) { c.Used = regB + mib - 64 }},
	}
	if _, err := virtqueue.NewQueue(gm, ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			if _, err := virtqueue.NewQueue(gm, c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// eventfd returns a nonblocking eventfd closed at the end of the test.
func eventfd(t testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// signalled reads and clears an eventfd.
func signalled(fd int) bool {
	var b [8]byte
	n, _ := unix.Read(fd, b[:])
	return n == 8 && binary.LittleEndian.Uint64(b[:]) > 0
}

func roundTrip(t *testing.T, f *fixture) {
	t.Helper()
	if _, err := f.drv.AddChain(nil, []uint32{8}, vqtest.ChainOpts{}); err != nil {
		t.Fatal(err)
	}
	var c virtqueue.Chain
	if err := f.q.Pop(&c); err != nil {
		t.Fatal(err)
	}
	if err := f.q.Push(&c, 8); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.drv.PopUsed(); !ok {
		t.Fatal("no used element")
	}
}

func TestNotifyWithoutEventIdx(t *testing.T) {
	f := newFixture(t, 16, false)
	call := eventfd(t)
	f.q.SetCall(call)
	roundTrip(t, f)
	if !signalled(call) {
		t.Error("no notification")
	}
	f.drv.SetAvailFlags(virtqueue.AvailFNoInterrupt)
	roundTrip(t, f)
	if signalled(call) {
		t.Error("notified despite VIRTQ_AVAIL_F_NO_INTERRUPT")
	}
	f.drv.SetAvailFlags(0)
	roundTrip(t, f)
	if !signalled(call) {
		t.Error("no notification after the flag was cleared")
	}
}

func TestNotifyEventIdx(t *testing.T) {
	f := newFixture(t, 16, true)
	call := eventfd(t)
	f.q.SetCall(call)
	// First push always notifies.
	roundTrip(t, f)
	if !signalled(call) {
		t.Fatal("first push not notified")
	}
	// used_event = 3: notify when the used index passes 3, i.e. on the
	// push that makes it 4.
	f.drv.SetUsedEvent(3)
	var got []bool
	for range 4 {
		roundTrip(t, f)
		got = append(got, signalled(call))
	}
	want := []bool{false, false, true, false} // used idx 2, 3, 4, 5
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("notifications %v, want %v", got, want)
		}
	}
	// avail_event: EnableNotify publishes the next index to serve.
	if more, err := f.q.EnableNotify(); err != nil || more {
		t.Fatalf("EnableNotify = %v, %v", more, err)
	}
	if ev, next := f.drv.AvailEvent(), f.q.NextAvail(); ev != next {
		t.Fatalf("avail_event %d, want %d", ev, next)
	}
	old := f.drv.AvailIdx()
	if _, err := f.drv.AddChain(nil, []uint32{8}, vqtest.ChainOpts{}); err != nil {
		t.Fatal(err)
	}
	if !f.drv.NeedKick(old) {
		t.Fatal("driver would not kick after avail_event")
	}
	if more, err := f.q.EnableNotify(); err != nil || !more {
		t.Fatalf("EnableNotify with a chain pending = %v, %v", more, err)
	}
	// A new call fd makes the next push notify regardless.
	call2 := eventfd(t)
	f.q.SetCall(call2)
	f.drv.SetUsedEvent(1000)
	var c virtqueue.Chain
	if err := f.q.Pop(&c); err != nil {
		t.Fatal(err)
	}
	f.q.Push(&c, 0)
	if !signalled(call2) || signalled(call) {
		t.Fatal("push after SetCall did not notify the new fd only")
	}
}

// TestPushDeferred publishes used elements without notifying, and checks
// that Flush then notifies once, exactly when an element published since
// the last decision crossed used_event (EVENT_IDX) or the driver allows
// interrupts (without).
func TestPushDeferred(t *testing.T) {
	for _, tc := range []struct {
		name      string
		eventIdx  bool
		usedEvent uint16 // with EVENT_IDX
		noIntr    bool   // without: VIRTQ_AVAIL_F_NO_INTERRUPT
		n         int    // chains pushed deferred before Flush
		want      bool
	}{
		{"event idx crossed", true, 2, false, 4, true},       // used idx 2..5 passes 2
		{"event idx not reached", true, 10, false, 4, false}, // 5 < 11
		{"event idx crossed by the last", true, 4, false, 4, true},
		{"event idx behind", true, 0, false, 4, false}, // already notified at 1
		{"no event idx", false, 0, false, 3, true},
		{"no event idx, no interrupt", false, 0, true, 3, false},
		{"nothing deferred", true, 2, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 16, tc.eventIdx)
			call := eventfd(t)
			f.q.SetCall(call)
			roundTrip(t, f) // used idx 1; the first push always notifies
			if !signalled(call) {
				t.Fatal("first push not notified")
			}
			if tc.eventIdx {
				f.drv.SetUsedEvent(tc.usedEvent)
			}
			if tc.noIntr {
				f.drv.SetAvailFlags(virtqueue.AvailFNoInterrupt)
			}
			for range tc.n {
				if _, err := f.drv.AddChain(nil, []uint32{8}, vqtest.ChainOpts{}); err != nil {
					t.Fatal(err)
				}
				var c virtqueue.Chain
				if err := f.q.Pop(&c); err != nil {
					t.Fatal(err)
				}
				if err := f.q.PushDeferred(&c, 8); err != nil {
					t.Fatal(err)
				}
				if _, ok := f.drv.PopUsed(); !ok {
					t.Fatal("deferred push did not publish the used element")
				}
			}
			if signalled(call) {
				t.Fatal("PushDeferred notified")
			}
			f.q.Flush()
			if got := signalled(call); got != tc.want {
				t.Fatalf("Flush notified: %v, want %v", got, tc.want)
			}
			f.q.Flush()
			if signalled(call) {
				t.Fatal("a second Flush notified again")
			}
		})
	}
}

func TestStop(t *testing.T) {
	f := newFixture(t, 16, false)
	if _, err := f.drv.AddChain(nil, []uint32{8}, vqtest.ChainOpts{}); err != nil {
		t.Fatal(err)
	}
	var c virtqueue.Chain
	if err := f.q.Pop(&c); err != nil {
		t.Fatal(err)
	}
	if used := f.q.Stop(); used != 0 {
		t.Errorf("Stop = %d", used)
	}
	if err := f.q.Push(&c, 8); !errors.Is(err, virtqueue.ErrStopped) {
		t.Fatalf("Push after Stop: %v", err)
	}
	if f.drv.UsedIdx() != 0 {
		t.Fatal("used ring written after Stop")
	}
	if f.q.NextAvail() != 1 {
		t.Fatalf("NextAvail %d", f.q.NextAvail())
	}
	if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrStopped) {
		t.Fatalf("Pop after Stop: %v", err)
	}
	// A new incarnation resumes at the reported base and the used index
	// found in memory.
	cfg := f.drv.Config()
	cfg.NextAvail = 1
	q2, err := virtqueue.NewQueue(f.gm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Pop(&c); !errors.Is(err, virtqueue.ErrEmpty) {
		t.Fatalf("Pop on resumed queue: %v", err)
	}
}

func TestMemoryChangesWhileRunning(t *testing.T) {
	f := newFixture(t, 16, false)
	// A chain whose buffer is in region C.
	data := []byte("in region C")
	f.mem.Write(regC+0x100, data)
	f.drv.WriteDesc(0, vqtest.Desc{Addr: regC + 0x100, Len: uint32(len(data))})
	f.drv.ReuseDescs(0)
	f.drv.PublishRaw(0)
	var c virtqueue.Chain
	if err := f.q.Pop(&c); err != nil {
		t.Fatal(err)
	}
	// Remove C and add a new region D while the chain is in flight: the
	// chain's view stays mapped until it is pushed.
	if err := f.gm.Remove(f.mem.Regions[2].Spec); err != nil {
		t.Fatal(err)
	}
	hot := vqtest.NewMemory(t, vqtest.Layout{GuestAddr: 0x2000_0000, Size: mib})
	reg, err := virtqueue.MapRegion(hot.Regions[0].FD, hot.Regions[0].Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.gm.Add(reg); err != nil {
		t.Fatal(err)
	}
	if got := readAll(&c); !bytes.Equal(got, data) {
		t.Fatalf("chain data after hot-unplug: %q", got)
	}
	if err := f.q.Push(&c, 0); err != nil {
		t.Fatal(err)
	}
	// New chains use the new table: D is reachable, C is not.
	hot.Write(0x2000_0000, []byte("in region D"))
	f.drv.WriteDesc(1, vqtest.Desc{Addr: 0x2000_0000, Len: 11})
	f.drv.ReuseDescs(1)
	f.drv.PublishRaw(1)
	if err := f.q.Pop(&c); err != nil || string(readAll(&c)) != "in region D" {
		t.Fatalf("Pop from the hot-plugged region: %v", err)
	}
	f.q.Push(&c, 0)
	f.drv.PublishRaw(0) // still points into C
	if err := f.q.Pop(&c); !errors.Is(err, virtqueue.ErrOutOfMemory) {
		t.Fatalf("Pop into the removed region: %v", err)
	}
	if f.gm.Len() != 3 {
		t.Fatalf("%d regions", f.gm.Len())
	}
}
