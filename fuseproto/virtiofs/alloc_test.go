package virtiofs

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
	"golang.org/x/sys/unix"
)

// The hot-path benchmarks and allocation gates drive a worker directly:
// requests are written once at fixed guest addresses, with fixed
// descriptors, and published again and again, so that what is measured is
// the device side only (pop, copy in the header, decode, dispatch, the
// passthrough FileSystem and its system calls, encode, push).

const (
	// directQueueSize is the ring size of a direct queue. Descriptors
	// below fixedDesc are left to call (AddChain); fixed chains use
	// fixedDesc onwards.
	directQueueSize = 256
	fixedDesc       = 128
	// fixedAddr is where fixed requests go in guest memory: region 0,
	// above the ring and below the AddChain allocator (2 MiB).
	fixedAddr = virtqueue.GuestAddress(1 << 20)
	// hotSize is the READ and WRITE size of the hot-path benchmarks.
	hotSize = 128 << 10
)

// direct drives a worker without vhost-user: a driver-side queue in memfd
// memory, the device's Queue, and one worker.
type direct struct {
	t    testing.TB
	root string
	fs   *passthrough.FS
	mem  *vqtest.Memory
	drv  *vqtest.Driver
	q    *virtqueue.Queue
	w    *worker
	c    virtqueue.Chain

	// nextDesc and nextAddr are where the next fixed chain goes.
	nextDesc uint16
	nextAddr virtqueue.GuestAddress
}

func newDirect(t testing.TB) *direct {
	return newDirectFS(t, func(fs *passthrough.FS) fuseproto.FileSystem { return fs })
}

// newDirectFS is newDirect with the passthrough FS wrapped by wrap.
func newDirectFS(t testing.TB, wrap func(*passthrough.FS) fuseproto.FileSystem) *direct {
	root := t.TempDir()
	pfs, err := passthrough.New(root, passthrough.Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := fuseproto.NewServer(wrap(pfs), fuseproto.Options{})
	d, err := NewDevice(srv, Options{ThreadPoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	mem := vqtest.NewMemory(t, vutest.Layout...)
	gm := mem.Map(t)
	drv := vqtest.NewDriver(mem, directQueueSize, 0x10000, vqtest.NewAlloc(2<<20, 8<<20))
	drv.EventIdx = true
	q, err := virtqueue.NewQueue(gm, drv.Config())
	if err != nil {
		t.Fatal(err)
	}
	return &direct{t: t, root: root, fs: pfs, mem: mem, drv: drv, q: q, w: newWorker(d),
		nextDesc: fixedDesc, nextAddr: fixedAddr}
}

// serve pops one chain and serves it.
func (x *direct) serve() {
	if err := x.q.Pop(&x.c); err != nil {
		x.t.Fatal(err)
	}
	x.w.serve(&x.c)
}

// call sends a request through AddChain (allocating; for setup) and
// returns the reply body.
func (x *direct) call(op fuseproto.Opcode, node uint64, args [][]byte, out ...uint32) []byte {
	x.t.Helper()
	n := fuseproto.InHeaderSize
	for _, a := range args {
		n += len(a)
	}
	h := fuseproto.InHeader{Len: uint32(n), Opcode: op, Unique: 2, NodeID: node}
	if _, err := x.drv.AddChain(append([][]byte{enc(&h)}, args...), append([]uint32{16}, out...), vqtest.ChainOpts{}); err != nil {
		x.t.Fatal(err)
	}
	x.serve()
	u, ok := x.drv.PopUsed()
	var oh fuseproto.OutHeader
	if !ok || !fuseproto.Decode(u.Data, &oh) || oh.Error != 0 {
		x.t.Fatalf("%v: %+v %+v", op, u, oh)
	}
	return u.Data[16:]
}

// fixedChain is a request written once into guest memory, to be published
// again and again.
type fixedChain struct {
	head  uint16
	reply virtqueue.GuestAddress // the writable buffers (reply header first)
	data  virtqueue.GuestAddress // the writable buffers after the reply header
}

// fixed writes a request at fixed guest addresses once, with the next free
// fixed descriptors describing it: the header, each argument and each page
// of data in readable buffers of their own, then a 16-byte writable buffer
// for the reply header and page-sized writable buffers for each of out (as
// the guest kernel hands over page-cache pages). hdr's Len is filled in.
func (x *direct) fixed(hdr fuseproto.InHeader, args [][]byte, data []byte, out []uint32) fixedChain {
	x.t.Helper()
	hdr.Len = uint32(fuseproto.InHeaderSize + len(data))
	for _, a := range args {
		hdr.Len += uint32(len(a))
	}
	var descs []vqtest.Desc
	put := func(b []byte, n uint32, flags uint16) {
		if b != nil {
			x.mem.Write(x.nextAddr, b)
		}
		descs = append(descs, vqtest.Desc{Addr: x.nextAddr, Len: n, Flags: flags})
		x.nextAddr += virtqueue.GuestAddress((n + 4095) &^ 4095)
	}
	put(enc(&hdr), fuseproto.InHeaderSize, 0)
	for _, a := range args {
		put(a, uint32(len(a)), 0)
	}
	for off := 0; off < len(data); off += 4096 {
		put(data[off:min(off+4096, len(data))], uint32(min(4096, len(data)-off)), 0)
	}
	fc := fixedChain{head: x.nextDesc}
	if out != nil {
		fc.reply = x.nextAddr
		put(nil, fuseproto.OutHeaderSize, virtqueue.DescFWrite)
		fc.data = x.nextAddr
	}
	for _, n := range out {
		for off := uint32(0); off < n; off += 4096 {
			put(nil, min(4096, n-off), virtqueue.DescFWrite)
		}
	}
	if x.nextAddr > 2<<20 || int(x.nextDesc)+len(descs) > directQueueSize {
		x.t.Fatal("fixed chains do not fit")
	}
	for i, d := range descs {
		idx := x.nextDesc + uint16(i)
		if !x.drv.ReuseDescs(idx) {
			x.t.Fatalf("descriptor %d taken", idx)
		}
		if i+1 < len(descs) {
			d.Flags |= virtqueue.DescFNext
			d.Next = idx + 1
		}
		x.drv.WriteDesc(idx, d)
	}
	x.nextDesc += uint16(len(descs))
	return fc
}

// run publishes the fixed chains in order and serves each.
func (x *direct) run(chains ...fixedChain) {
	for _, c := range chains {
		x.drv.PublishRaw(c.head)
		x.serve()
	}
}

// replyHeader returns the reply header a fixed chain got last.
func (x *direct) replyHeader(c fixedChain) fuseproto.OutHeader {
	var oh fuseproto.OutHeader
	fuseproto.Decode(x.mem.Bytes(c.reply, fuseproto.OutHeaderSize), &oh)
	return oh
}

// hotName is the hot-path file's name: longer than one byte, so that
// converting it to a string would allocate (Go has static one-byte strings).
const hotName = "hot-path-file.dat"

// hotPath is a session with one regular file hotName, open read-write and
// holding hotSize bytes, and the fixed requests of the hot-path operations.
type hotPath struct {
	*direct
	node, fh uint64
	data     []byte // what the file and WRITE's request hold
	ops      []hotOp
}

// hotOp is one hot-path operation: the chains an iteration publishes, and
// the payload bytes it moves (for b.SetBytes).
type hotOp struct {
	name   string
	chains []fixedChain
	bytes  int64
}

func newHotPath(tb testing.TB) *hotPath {
	return newHotPathFS(tb, func(fs *passthrough.FS) fuseproto.FileSystem { return fs })
}

func newHotPathFS(tb testing.TB, wrap func(*passthrough.FS) fuseproto.FileSystem) *hotPath {
	x := newDirectFS(tb, wrap)
	in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 1 << 17, Flags: 0xffffffff}
	x.call(fuseproto.OpInit, 0, [][]byte{enc(&in)}, 256)
	ci := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o100644}
	body := x.call(fuseproto.OpCreate, fuseproto.RootID, [][]byte{enc(&ci), cstr(hotName)}, fuseproto.EntryOutSize, 16)
	var eo fuseproto.EntryOut
	var oo fuseproto.OpenOut
	fuseproto.Decode(body, &eo)
	fuseproto.Decode(body[fuseproto.EntryOutSize:], &oo)
	h := &hotPath{direct: x, node: eo.NodeID, fh: oo.Fh, data: pattern(hotSize, 1)}
	if err := os.WriteFile(filepath.Join(x.root, hotName), h.data, 0o644); err != nil {
		tb.Fatal(err)
	}

	hdr := func(op fuseproto.Opcode, node uint64) fuseproto.InHeader {
		return fuseproto.InHeader{Opcode: op, Unique: 4, NodeID: node}
	}
	getattr := x.fixed(hdr(fuseproto.OpGetattr, h.node), [][]byte{enc(&fuseproto.GetattrIn{})}, nil, []uint32{fuseproto.AttrOutSize})
	getattrFh := x.fixed(hdr(fuseproto.OpGetattr, h.node), [][]byte{enc(&fuseproto.GetattrIn{GetattrFlags: fuseproto.GetattrFh, Fh: h.fh})}, nil, []uint32{fuseproto.AttrOutSize})
	lookup := x.fixed(hdr(fuseproto.OpLookup, fuseproto.RootID), [][]byte{cstr(hotName)}, nil, []uint32{fuseproto.EntryOutSize})
	missing := x.fixed(hdr(fuseproto.OpLookup, fuseproto.RootID), [][]byte{cstr("no-such-file.dat")}, nil, []uint32{fuseproto.EntryOutSize})
	forget := x.fixed(hdr(fuseproto.OpForget, h.node), [][]byte{enc(&fuseproto.ForgetIn{Nlookup: 1})}, nil, nil)
	read := x.fixed(hdr(fuseproto.OpRead, h.node), [][]byte{enc(&fuseproto.ReadIn{Fh: h.fh, Size: hotSize})}, nil, []uint32{hotSize})
	write := x.fixed(hdr(fuseproto.OpWrite, h.node), [][]byte{enc(&fuseproto.WriteIn{Fh: h.fh, Size: hotSize})}, h.data, []uint32{8})
	h.ops = []hotOp{
		{name: "GETATTR", chains: []fixedChain{getattr}},
		// GETATTR of an open file (the guest's fstat).
		{name: "GETATTR-FH", chains: []fixedChain{getattrFh}},
		// LOOKUP of a name the guest already knows: the inode's lookup
		// count goes up by one per request (the kernel would FORGET
		// them later); the inode table does not grow.
		{name: "LOOKUP", chains: []fixedChain{lookup}},
		// The same, each LOOKUP followed by the FORGET of it (two
		// requests per iteration; the file keeps CREATE's lookup, so
		// the inode is never dropped and re-made).
		{name: "LOOKUP+FORGET", chains: []fixedChain{lookup, forget}},
		// LOOKUP of a name that does not exist (ENOENT), as a guest
		// searching a PATH sends.
		{name: "LOOKUP-ENOENT", chains: []fixedChain{missing}},
		{name: "READ", chains: []fixedChain{read}, bytes: hotSize},
		{name: "WRITE", chains: []fixedChain{write}, bytes: hotSize},
	}
	return h
}

// check verifies the replies of op's last iteration.
func (h *hotPath) check(tb testing.TB, op hotOp) {
	tb.Helper()
	for _, c := range op.chains {
		if c.reply == 0 {
			continue // FORGET: no reply
		}
		want := int32(0)
		if op.name == "LOOKUP-ENOENT" {
			want = -int32(syscall.ENOENT)
		}
		if oh := h.replyHeader(c); oh.Error != want || oh.Unique != 4 {
			tb.Fatalf("%s: reply %+v", op.name, oh)
		}
	}
	c := op.chains[0]
	switch op.name {
	case "GETATTR", "GETATTR-FH":
		var ao fuseproto.AttrOut
		fuseproto.Decode(h.mem.Bytes(c.data, fuseproto.AttrOutSize), &ao)
		if ao.Attr.Size != hotSize || ao.Attr.Mode&0o170000 != 0o100000 {
			tb.Fatalf("GETATTR: %+v", ao.Attr)
		}
	case "LOOKUP", "LOOKUP+FORGET":
		var eo fuseproto.EntryOut
		fuseproto.Decode(h.mem.Bytes(c.data, fuseproto.EntryOutSize), &eo)
		if eo.NodeID != h.node || eo.Attr.Size != hotSize {
			tb.Fatalf("%s: %+v", op.name, eo)
		}
	case "READ":
		if oh := h.replyHeader(c); oh.Len != fuseproto.OutHeaderSize+hotSize {
			tb.Fatalf("READ: reply %+v", oh)
		}
		got := make([]byte, hotSize)
		h.mem.Read(c.data, got)
		if !bytes.Equal(got, h.data) {
			tb.Fatal("READ: data in guest memory differs from the file")
		}
	case "WRITE":
		var wo fuseproto.WriteOut
		fuseproto.Decode(h.mem.Bytes(c.data, 8), &wo)
		if wo.Size != hotSize {
			tb.Fatalf("WRITE: %+v", wo)
		}
		got, err := os.ReadFile(filepath.Join(h.root, hotName))
		if err != nil || !bytes.Equal(got, h.data) {
			tb.Fatalf("WRITE: host file holds %d other bytes (%v)", len(got), err)
		}
	}
}

// mallocs returns the heap allocations made by n calls of f, counted
// exactly (testing.AllocsPerRun rounds the average down).
func mallocs(n int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// TestHotPathAllocs checks that the hot-path requests allocate nothing:
// GETATTR, LOOKUP of a known name (with and without its FORGET), READ and
// WRITE of 128 KiB, served by a worker over passthrough, from popping the
// chain to pushing it. It holds under the race detector too: the worker
// brings its own request state, so no sync.Pool (which drops items at
// random under -race) is on the path.
func TestHotPathAllocs(t *testing.T) {
	h := newHotPath(t)
	statfs := h.fixed(fuseproto.InHeader{Opcode: fuseproto.OpStatfs, Unique: 4, NodeID: h.node}, nil, nil, []uint32{80})
	ops := append([]hotOp{{name: "STATFS", chains: []fixedChain{statfs}}}, h.ops...)
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			step := func() { h.run(op.chains...) }
			used0 := h.drv.UsedIdx()
			if a := testing.AllocsPerRun(100, step); a != 0 {
				t.Errorf("%v allocations per %s", a, op.name)
			}
			if n := mallocs(100, step); n != 0 {
				t.Errorf("%d allocations in 100 %s", n, op.name)
			}
			want := uint16(len(op.chains) * (101 + 101))
			if got := h.drv.UsedIdx() - used0; got != want {
				t.Errorf("%d chains used, want %d", got, want)
			}
			h.check(t, op)
		})
	}
}

// threadCPU returns the user and system CPU time the calling thread has
// used, in nanoseconds.
func threadCPU(tb testing.TB) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		tb.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkHotPath measures the hot-path requests one worker serves, from
// popping the chain to pushing it, over passthrough on a temporary
// directory: GETATTR, LOOKUP of a known name (the lookup count grows),
// LOOKUP+FORGET (two requests per op), READ and WRITE of 128 KiB in
// page-sized guest buffers. Besides wall time per op it reports cpu-ns/op,
// the serving thread's user+system CPU time per op, which a loaded machine
// disturbs much less.
func BenchmarkHotPath(b *testing.B) {
	h := newHotPath(b)
	for _, op := range h.ops {
		b.Run(op.name, func(b *testing.B) {
			if op.bytes != 0 {
				b.SetBytes(op.bytes)
			}
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU(b)
			for b.Loop() {
				h.run(op.chains...)
			}
			b.ReportMetric(float64(threadCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			h.check(b, op)
		})
	}
}
