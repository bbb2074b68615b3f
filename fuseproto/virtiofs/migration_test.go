package virtiofs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// fakeState stands in for the Server's SaveState/LoadState: a byte string.
type fakeState struct {
	mu      sync.Mutex
	data    []byte
	saveErr error
	loadErr error
}

func (s *fakeState) SaveState(w io.Writer) error {
	s.mu.Lock()
	data, err := s.data, s.saveErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func (s *fakeState) LoadState(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loadErr != nil {
		return s.loadErr
	}
	s.data = b
	return nil
}

func (s *fakeState) get() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

func (s *fakeState) set(data []byte, saveErr, loadErr error) {
	s.mu.Lock()
	s.data, s.saveErr, s.loadErr = data, saveErr, loadErr
	s.mu.Unlock()
}

var _ State = (*fakeState)(nil)

// failingReadFS fails a READ at failingReadOffset after placing
// failingReadBytes of data.
type failingReadFS struct{ *passthrough.FS }

const (
	failingReadOffset = 1 << 40
	failingReadBytes  = 10000
)

func (f *failingReadFS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	if in.Offset == failingReadOffset {
		dst.Write(bytes.Repeat([]byte{0xee}, failingReadBytes))
		return syscall.EIO
	}
	return f.FS.Read(ctx, node, in, dst)
}

// doUsed sends r on vq and returns its used element (with the writable
// buffers' guest addresses).
func (e *env) doUsed(vq *vutest.VQ, r req) vqtest.Used {
	e.t.Helper()
	out, in, _ := e.build(r)
	head := vq.Add(out, in, r.opts)
	u, err := vq.Wait()
	if err != nil || u.Head != head {
		e.t.Fatalf("%v: used %+v, %v", r.op, u, err)
	}
	return u
}

// replyPages lists the pages of the first Len bytes of u's writable
// buffers: where the reply went.
func replyPages(u vqtest.Used) [][2]uint64 {
	var ranges [][2]uint64
	left := uint64(u.Len)
	for _, b := range u.In {
		k := min(left, uint64(b.Len))
		ranges = append(ranges, [2]uint64{uint64(b.Addr), k})
		left -= k
	}
	return ranges
}

func usedRing(vq *vutest.VQ) [2]uint64 {
	return [2]uint64{uint64(vq.Driver.Used), 6 + 8*uint64(vq.Driver.Size)}
}

// TestDirtyLogReplies: while QEMU logs, the pages of READ data and reply
// headers written into guest memory, and of the used rings, are logged,
// and nothing else; without VHOST_F_LOG_ALL nothing is.
func TestDirtyLogReplies(t *testing.T) {
	e := newEnv(t, Options{}, func(p *passthrough.FS) fuseproto.FileSystem { return &failingReadFS{p} })
	fe := e.fe
	fe.QEMUStart(2, 128, allFeatures)
	if fe.Protocol&vhostuser.ProtocolDeviceState != 0 {
		t.Fatal("DEVICE_STATE offered without Options.State")
	}
	hi, rq := fe.Queues[0], fe.Queues[1]
	e.init(rq)
	node, fh := e.create(rq, fuseproto.RootID, "file")
	data := pattern(300<<10, 3)
	e.write(rq, node, fh, 0, data, vqtest.ChainOpts{})
	read := func(off, size uint32, o vqtest.ChainOpts) vqtest.Used {
		in := fuseproto.ReadIn{Fh: fh, Offset: uint64(off), Size: size}
		u := e.doUsed(rq, req{op: fuseproto.OpRead, node: node, args: [][]byte{enc(&in)}, out: []uint32{size}, opts: o})
		if !bytes.Equal(u.Data[fuseproto.OutHeaderSize:], data[off:min(int(off+size), len(data))]) {
			t.Fatal("READ data differ")
		}
		return u
	}

	// A log without LOG_ALL: nothing.
	l := vutest.NewDirtyLog(t, fe.LogSize())
	if err := fe.SetLogBase(l); err != nil {
		t.Fatal(err)
	}
	read(0, 64<<10, vqtest.ChainOpts{Split: 4096})
	if p := l.TakePages(); p != nil {
		t.Fatalf("pages %v logged without LOG_ALL", p)
	}

	l = fe.QEMUStartLogging()
	for _, tt := range []struct {
		off, size uint32
		o         vqtest.ChainOpts
	}{
		{0, 128 << 10, vqtest.ChainOpts{Split: 4096}},
		{5000, 70000, vqtest.ChainOpts{Indirect: true, Split: 3000}},
		{300<<10 - 100, 8192, vqtest.ChainOpts{}}, // short: only 100 bytes of data
	} {
		u := read(tt.off, tt.size, tt.o)
		want := vutest.PagesOf(append(replyPages(u), usedRing(rq))...)
		if got := l.TakePages(); !slices.Equal(got, want) {
			t.Fatalf("READ of %d at %d: pages %v, want %v", tt.size, tt.off, got, want)
		}
	}
	// A READ that placed data and then failed: the data's pages too,
	// beyond the 16 bytes the chain is pushed with.
	in := fuseproto.ReadIn{Fh: fh, Offset: failingReadOffset, Size: 64 << 10}
	u := e.doUsed(rq, req{op: fuseproto.OpRead, node: node, args: [][]byte{enc(&in)}, out: []uint32{64 << 10}, opts: vqtest.ChainOpts{Split: 4096}})
	if u.Len != fuseproto.OutHeaderSize {
		t.Fatalf("failed READ pushed with %d bytes", u.Len)
	}
	u.Len += failingReadBytes
	if got, want := l.TakePages(), vutest.PagesOf(append(replyPages(u), usedRing(rq))...); !slices.Equal(got, want) {
		t.Fatalf("failed READ: pages %v, want %v", got, want)
	}
	// GETATTR: the header and attributes.
	var gin fuseproto.GetattrIn
	u = e.doUsed(rq, req{op: fuseproto.OpGetattr, node: node, args: [][]byte{enc(&gin)}, out: []uint32{fuseproto.AttrOutSize}})
	if got, want := l.TakePages(), vutest.PagesOf(append(replyPages(u), usedRing(rq))...); !slices.Equal(got, want) {
		t.Fatalf("GETATTR: pages %v, want %v", got, want)
	}
	// FORGET on the high-priority queue writes nothing but its used ring.
	e.forget(hi, node, 1)
	if got, want := l.TakePages(), vutest.PagesOf(usedRing(hi)); !slices.Equal(got, want) {
		t.Fatalf("FORGET: pages %v, want %v", got, want)
	}

	fe.QEMUStopLogging()
	l.TakePages()
	read(0, 64<<10, vqtest.ChainOpts{})
	if p := l.TakePages(); p != nil {
		t.Fatalf("pages %v logged after logging stopped", p)
	}
}

// TestMigrateDevice moves a virtio-fs device between two daemons as QEMU
// does, with a fake State: logging, switch-over, the state saved through
// the source's pipe and loaded on the destination, the destination's
// vrings started at the source's bases. Guest memory copied through the
// log equals the source's.
func TestMigrateDevice(t *testing.T) {
	srcState := &fakeState{data: bytes.Repeat([]byte("fuse session "), 20000)}
	dstState := &fakeState{}
	src := newEnv(t, Options{State: srcState}, nil)
	dst := newEnv(t, Options{State: dstState}, nil)
	sfe, dfe := src.fe, dst.fe
	sfe.QEMUStart(2, 128, allFeatures)
	if sfe.Protocol&vhostuser.ProtocolDeviceState == 0 {
		t.Fatal("DEVICE_STATE not offered with Options.State")
	}
	rq := sfe.Queues[1]
	src.init(rq)
	node, fh := src.create(rq, fuseproto.RootID, "file")
	data := pattern(200<<10, 9)
	src.write(rq, node, fh, 0, data, vqtest.ChainOpts{})

	dfe.QEMUInit(2)
	l := sfe.QEMUStartLogging()
	dfe.Mem.CopyFrom(sfe.Mem)
	l.TakePages()
	for i := range 5 {
		if got := src.read(rq, node, fh, uint64(i*1000), 100<<10, vqtest.ChainOpts{}); !bytes.Equal(got, data[i*1000:i*1000+100<<10]) {
			t.Fatal("READ data differ")
		}
	}
	dfe.Mem.CopyPages(sfe.Mem, l.TakePages())
	src.getattr(rq, node)

	bases := sfe.QEMUStop()
	dfe.Mem.CopyPages(sfe.Mem, l.TakePages())
	if diff := dfe.Mem.DiffPages(sfe.Mem); diff != nil {
		t.Fatalf("pages %v differ: written by the device, not logged", diff)
	}
	state, err := sfe.SaveState()
	if err != nil || !bytes.Equal(state, srcState.get()) {
		t.Fatalf("saved %d bytes, %v", len(state), err)
	}

	dfe.AdoptGuest(sfe)
	dfe.Must(vhostuser.ResetDevice, nil) // QEMU resets the device before it loads
	if err := dfe.LoadState(state); err != nil || !bytes.Equal(dstState.get(), state) {
		t.Fatalf("load: %v", err)
	}
	dfe.QEMUResume(bases)
	// The fake state did not carry the FUSE session: a new INIT, and the
	// file is there (same shared directory contents).
	drq := dfe.Queues[1]
	host, err := os.ReadFile(src.root + "/file")
	if err != nil || !bytes.Equal(host, data) {
		t.Fatal("source file")
	}
	if err := os.WriteFile(dst.root+"/file", data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst.init(drq)
	if eo, errno := dst.lookup(drq, fuseproto.RootID, "file"); errno != 0 || eo.Attr.Size != uint64(len(data)) {
		t.Fatalf("LOOKUP on the destination: %+v, errno %d", eo, errno)
	}
	if b := drq.GetBase(); b != bases[1]+2 {
		t.Fatalf("destination base %d, want %d", b, bases[1]+2)
	}
}

// TestLoadHoldsQueues: vrings started while the state loads serve nothing
// until the load is over.
func TestLoadHoldsQueues(t *testing.T) {
	st := &fakeState{}
	e := newEnv(t, Options{State: st}, nil)
	fe := e.fe
	fe.QEMUInit(2)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fe.Must(vhostuser.SetDeviceStateFD, vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferLoad}.Encode(), int(r.Fd()))
	r.Close()
	fe.SetFeatures(allFeatures)
	fe.AddMemRegs(fe.Mem)
	for i := range 2 {
		fe.NewVQ(i, 64).SetupVring(0)
		fe.Queues[i].Enable(true)
	}
	rq := fe.Queues[1]
	in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, Flags: 0xffffffff}
	out, ins, _ := e.build(req{op: fuseproto.OpInit, args: [][]byte{enc(&in)}, out: []uint32{uint32(len(enc(&fuseproto.InitOut{})))}})
	rq.Add(out, ins, vqtest.ChainOpts{})
	time.Sleep(100 * time.Millisecond)
	if _, ok := rq.Driver.PopUsed(); ok {
		t.Fatal("a request was served while the state was loading")
	}
	w.Write([]byte("state"))
	w.Close()
	fe.Must(vhostuser.CheckDeviceState, nil)
	if u, err := rq.Wait(); err != nil || u.Len == 0 {
		t.Fatalf("INIT after the load: %+v, %v", u, err)
	}
	if string(st.get()) != "state" {
		t.Fatalf("loaded %q", st.get())
	}
}

// TestStateFailures: CHECK_DEVICE_STATE reports a failing SaveState or
// LoadState, and the source resumes serving after a failed save.
func TestStateFailures(t *testing.T) {
	st := &fakeState{}
	e := newEnv(t, Options{State: st}, nil)
	fe := e.fe
	fe.QEMUStart(2, 128, allFeatures)
	rq := fe.Queues[1]
	e.init(rq)
	bases := fe.QEMUStop()

	st.set([]byte("x"), errors.New("cannot save"), nil)
	if _, err := fe.SaveState(); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("failing save: %v", err)
	}
	st.set(nil, nil, errors.New("cannot load"))
	if err := fe.LoadState([]byte("y")); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("failing load: %v", err)
	}
	// The migration failed: QEMU starts the source's vrings again.
	for i := range 2 {
		fe.Queues[i].SetupVring(bases[i])
		fe.Queues[i].Enable(true)
	}
	if a := e.getattr(rq, fuseproto.RootID); a.Attr.Ino == 0 {
		t.Fatal("GETATTR after the failed migration")
	}
}
