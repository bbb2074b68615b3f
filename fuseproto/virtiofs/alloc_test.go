package virtiofs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// direct drives a worker without vhost-user: a driver-side queue in memfd
// memory, the device's Queue, and one worker.
type direct struct {
	t    testing.TB
	root string
	mem  *vqtest.Memory
	drv  *vqtest.Driver
	q    *virtqueue.Queue
	w    *worker
	c    virtqueue.Chain
}

func newDirect(t testing.TB) *direct {
	root := t.TempDir()
	pfs, err := passthrough.New(root, passthrough.Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := fuseproto.NewServer(pfs, fuseproto.Options{})
	d, err := NewDevice(srv, Options{ThreadPoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	mem := vqtest.NewMemory(t, vutest.Layout...)
	gm := mem.Map(t)
	drv := vqtest.NewDriver(mem, 64, 0x10000, vqtest.NewAlloc(2<<20, 8<<20))
	drv.EventIdx = true
	q, err := virtqueue.NewQueue(gm, drv.Config())
	if err != nil {
		t.Fatal(err)
	}
	return &direct{t: t, root: root, mem: mem, drv: drv, q: q, w: newWorker(d)}
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

// fixed writes a request at fixed guest addresses once, with descriptors
// 40.. describing it, so that it can be published again and again. It
// returns where the writable buffers after the reply header are.
func (x *direct) fixed(hdr []byte, args [][]byte, data []byte, out []uint32) virtqueue.GuestAddress {
	addr := virtqueue.GuestAddress(1 << 20)
	var descs []vqtest.Desc
	put := func(b []byte, n uint32, flags uint16) {
		if b != nil {
			x.mem.Write(addr, b)
		}
		descs = append(descs, vqtest.Desc{Addr: addr, Len: n, Flags: flags})
		addr += virtqueue.GuestAddress((n + 4095) &^ 4095)
	}
	put(hdr, uint32(len(hdr)), 0)
	for _, a := range args {
		put(a, uint32(len(a)), 0)
	}
	for off := 0; off < len(data); off += 4096 {
		put(data[off:off+4096], 4096, 0)
	}
	put(nil, 16, virtqueue.DescFWrite)
	outAt := addr
	for _, n := range out {
		for off := uint32(0); off < n; off += 4096 {
			put(nil, min(4096, n-off), virtqueue.DescFWrite)
		}
	}
	for i, d := range descs {
		if i+1 < len(descs) {
			d.Flags |= virtqueue.DescFNext
			d.Next = uint16(40 + i + 1)
		}
		x.drv.WriteDesc(uint16(40+i), d)
	}
	return outAt
}

func TestHotPathAllocs(t *testing.T) {
	x := newDirect(t)
	x.drv.ReuseDescs(40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51)
	in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 1 << 17, Flags: 0xffffffff}
	x.call(fuseproto.OpInit, 0, [][]byte{enc(&in)}, 256)
	ci := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o100644}
	body := x.call(fuseproto.OpCreate, fuseproto.RootID, [][]byte{enc(&ci), cstr("f")}, fuseproto.EntryOutSize, 16)
	var eo fuseproto.EntryOut
	var oo fuseproto.OpenOut
	fuseproto.Decode(body, &eo)
	fuseproto.Decode(body[fuseproto.EntryOutSize:], &oo)

	data := pattern(16384, 9)
	tests := []struct {
		name string
		op   fuseproto.Opcode
		args [][]byte
		data []byte
		out  []uint32
	}{
		// Fixed-size reply structs.
		{"STATFS", fuseproto.OpStatfs, nil, nil, []uint32{80}},
		{"GETATTR", fuseproto.OpGetattr, [][]byte{enc(&fuseproto.GetattrIn{})}, nil, []uint32{fuseproto.AttrOutSize}},
		{"WRITE", fuseproto.OpWrite, [][]byte{enc(&fuseproto.WriteIn{Fh: oo.Fh, Size: uint32(len(data))})}, data, []uint32{8}},
		{"READ", fuseproto.OpRead, [][]byte{enc(&fuseproto.ReadIn{Fh: oo.Fh, Size: 16384})}, nil, []uint32{16384}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := fuseproto.InHeaderSize + len(tt.data)
			for _, a := range tt.args {
				n += len(a)
			}
			h := fuseproto.InHeader{Len: uint32(n), Opcode: tt.op, Unique: 4, NodeID: eo.NodeID}
			outAt := x.fixed(enc(&h), tt.args, tt.data, tt.out)
			step := func() {
				x.drv.PublishRaw(40)
				x.serve()
			}
			step()
			used0 := x.drv.UsedIdx()
			if a := testing.AllocsPerRun(100, step); a != 0 {
				t.Errorf("%v allocations per %s", a, tt.name)
			}
			if got := x.drv.UsedIdx() - used0; got != 101 {
				t.Errorf("%d chains used, want 101", got)
			}
			if tt.op == fuseproto.OpRead {
				got := make([]byte, 16384)
				x.mem.Read(outAt, got)
				if !bytes.Equal(got, data) {
					t.Error("READ data in guest memory differs")
				}
			}
		})
	}
	if got, err := os.ReadFile(filepath.Join(x.root, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("host file after WRITEs: %d bytes, %v", len(got), err)
	}
}

// BenchmarkWorker measures one 128 KiB READ or WRITE served by a worker,
// from popping the chain to pushing it.
func BenchmarkWorker(b *testing.B) {
	for _, op := range []fuseproto.Opcode{fuseproto.OpWrite, fuseproto.OpRead} {
		b.Run(op.String(), func(b *testing.B) {
			x := newDirect(b)
			x.drv.ReuseDescs(40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51)
			for i := uint16(52); i < 64; i++ {
				x.drv.ReuseDescs(i)
			}
			in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 1 << 17, Flags: 0xffffffff}
			x.call(fuseproto.OpInit, 0, [][]byte{enc(&in)}, 256)
			// Descriptors 0..39 are left for call; the fixed request (at
			// most 21 page-sized pieces) uses 40 onwards.
			ci := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o100644}
			body := x.call(fuseproto.OpCreate, fuseproto.RootID, [][]byte{enc(&ci), cstr("f")}, fuseproto.EntryOutSize, 16)
			var eo fuseproto.EntryOut
			var oo fuseproto.OpenOut
			fuseproto.Decode(body, &eo)
			fuseproto.Decode(body[fuseproto.EntryOutSize:], &oo)
			const size = 16 * 4096
			data := pattern(size, 1)
			var h fuseproto.InHeader
			if op == fuseproto.OpWrite {
				wi := fuseproto.WriteIn{Fh: oo.Fh, Size: size}
				h = fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + 40 + size), Opcode: op, Unique: 4, NodeID: eo.NodeID}
				x.fixed(enc(&h), [][]byte{enc(&wi)}, data, []uint32{8})
			} else {
				x.call(fuseproto.OpWrite, eo.NodeID, [][]byte{enc(&fuseproto.WriteIn{Fh: oo.Fh, Size: size}), data}, 8)
				ri := fuseproto.ReadIn{Fh: oo.Fh, Size: size}
				h = fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + 40), Opcode: op, Unique: 4, NodeID: eo.NodeID}
				x.fixed(enc(&h), [][]byte{enc(&ri)}, nil, []uint32{size})
			}
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				x.drv.PublishRaw(40)
				x.serve()
			}
		})
	}
}
