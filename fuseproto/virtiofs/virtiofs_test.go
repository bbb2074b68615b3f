package virtiofs

import (
	"bytes"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

const allFeatures = ^uint64(0)

// TestQEMUSession replays QEMU's start-up and a FUSE session: INIT, LOOKUP,
// CREATE, WRITE and READ through guest memory (checked on the host),
// READDIRPLUS, FORGET on the high-priority queue, then stop and disconnect.
func TestQEMUSession(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	fe := e.fe
	fe.QEMUStart(2, 128, allFeatures)
	hi, rq := fe.Queues[0], fe.Queues[1]
	if fe.Protocol&vhostuser.ProtocolConfig != 0 {
		t.Fatal("CONFIG offered without a tag")
	}

	init := e.init(rq)
	if init.Major != 7 || init.MaxWrite == 0 {
		t.Fatalf("INIT reply %+v", init)
	}
	if _, errno := e.lookup(rq, fuseproto.RootID, "file"); errno != int32(syscall.ENOENT) {
		t.Fatalf("LOOKUP of a missing file: errno %d", errno)
	}
	node, fh := e.create(rq, fuseproto.RootID, "file")
	data := pattern(256<<10, 1)
	if n := e.write(rq, node, fh, 0, data, vqtest.ChainOpts{}); n != uint32(len(data)) {
		t.Fatalf("WRITE wrote %d", n)
	}
	host, err := os.ReadFile(filepath.Join(e.root, "file"))
	if err != nil || !bytes.Equal(host, data) {
		t.Fatalf("host file: %d bytes, %v", len(host), err)
	}
	// The host changes the file; READ sees it, in one and in many pieces.
	copy(data[1000:], "changed on the host")
	if err := os.WriteFile(filepath.Join(e.root, "file"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.read(rq, node, fh, 0, uint32(len(data)), vqtest.ChainOpts{}); !bytes.Equal(got, data) {
		t.Fatalf("READ: %d bytes, differ", len(got))
	}
	if got := e.read(rq, node, fh, 100, 5000, vqtest.ChainOpts{Indirect: true, Split: 1000}); !bytes.Equal(got, data[100:5100]) {
		t.Fatal("READ at an offset differs")
	}
	// Short read at the end of the file.
	if got := e.read(rq, node, fh, uint64(len(data)-10), 4096, vqtest.ChainOpts{}); !bytes.Equal(got, data[len(data)-10:]) {
		t.Fatalf("short READ: %d bytes", len(got))
	}
	if a := e.getattr(rq, node); a.Attr.Size != uint64(len(data)) {
		t.Fatalf("GETATTR size %d", a.Attr.Size)
	}
	if names := e.readdirplus(rq, fuseproto.RootID); !slices.Contains(names, "file") {
		t.Fatalf("READDIRPLUS: %v", names)
	}
	e.release(rq, node, fh)
	// CREATE and the READDIRPLUS entry counted two lookups; FORGETs on
	// the high-priority queue give them back one at a time.
	getattrErr := func() int32 {
		var in fuseproto.GetattrIn
		return -e.do(rq, req{op: fuseproto.OpGetattr, node: node, args: [][]byte{enc(&in)}, out: []uint32{fuseproto.AttrOutSize}}).hdr.Error
	}
	e.forget(hi, node, 1)
	if errno := getattrErr(); errno != 0 {
		t.Fatalf("GETATTR after one FORGET: errno %d", errno)
	}
	e.forget(hi, node, 1)
	if errno := getattrErr(); errno != int32(syscall.EBADF) {
		t.Fatalf("GETATTR after the last FORGET: errno %d, want EBADF", errno)
	}

	if base := rq.GetBase(); base == 0 {
		t.Fatal("GET_VRING_BASE reported 0")
	}
	if err := e.end(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}

// TestCloudHypervisorSession replays Cloud Hypervisor: SET_MEM_TABLE,
// NEED_REPLY on everything, 4 request queues used concurrently, memory
// hot-plug, pause and resume.
func TestCloudHypervisorSession(t *testing.T) {
	e := newEnv(t, Options{RequestQueues: 4, Tag: "chfs"}, nil)
	fe := e.fe
	fe.CHStart(5, 256, allFeatures)
	e.init(fe.Queues[1])

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for q := 1; q <= 4; q++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs <- fmt.Errorf("queue %d: %v", q, p)
				}
			}()
			vq := fe.Queues[q]
			name := fmt.Sprintf("file%d", q)
			node, fh := e.create(vq, fuseproto.RootID, name)
			data := pattern(1<<20, byte(q))
			for off := 0; off < len(data); off += 128 << 10 {
				e.write(vq, node, fh, uint64(off), data[off:off+128<<10], vqtest.ChainOpts{Indirect: q%2 == 0})
			}
			for off := 0; off < len(data); off += 256 << 10 {
				if got := e.read(vq, node, fh, uint64(off), 256<<10, vqtest.ChainOpts{Indirect: q%2 == 1}); !bytes.Equal(got, data[off:off+256<<10]) {
					errs <- fmt.Errorf("queue %d: READ at %d differs", q, off)
					return
				}
			}
			e.release(vq, node, fh)
			host, err := os.ReadFile(filepath.Join(e.root, name))
			if err != nil || !bytes.Equal(host, data) {
				errs <- fmt.Errorf("queue %d: host file differs (%v)", q, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// Hot-plugged memory: a WRITE whose data lives in a new region.
	hot := vqtest.NewMemory(t, vqtest.Layout{GuestAddr: 1 << 32, Size: 1 << 20})
	fe.AddMemRegs(hot)
	vq := fe.Queues[2]
	node, fh := e.create(vq, fuseproto.RootID, "hot")
	payload := []byte("data in hot-plugged memory")
	hot.Write(1<<32, payload)
	wi := fuseproto.WriteIn{Fh: fh, Size: uint32(len(payload))}
	hdr := fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + 40 + len(payload)), Opcode: fuseproto.OpWrite, Unique: 1 << 40, NodeID: node}
	hdrAt, argAt, outAt := vq.Driver.AllocRaw(64), vq.Driver.AllocRaw(64), vq.Driver.AllocRaw(64)
	fe.Mem.Write(hdrAt, enc(&hdr))
	fe.Mem.Write(argAt, enc(&wi))
	d := func(a virtqueue.GuestAddress, n uint32, fl, next uint16) vqtest.Desc {
		return vqtest.Desc{Addr: a, Len: n, Flags: fl, Next: next}
	}
	vq.Driver.WriteDesc(250, d(hdrAt, 40, virtqueue.DescFNext, 251))
	vq.Driver.WriteDesc(251, d(argAt, 40, virtqueue.DescFNext, 252))
	vq.Driver.WriteDesc(252, d(1<<32, uint32(len(payload)), virtqueue.DescFNext, 253))
	vq.Driver.WriteDesc(253, d(outAt, 24, virtqueue.DescFWrite, 0))
	vq.Driver.ReuseDescs(250, 251, 252, 253)
	vq.Driver.PublishRaw(250)
	vq.DoKick()
	if u, err := vq.Wait(); err != nil || u.Head != 250 || u.Len != 24 {
		t.Fatalf("WRITE from hot-plugged memory: %+v %v", u, err)
	}
	if got, _ := os.ReadFile(filepath.Join(e.root, "hot")); !bytes.Equal(got, payload) {
		t.Fatalf("host file %q", got)
	}
	e.release(vq, node, fh)

	// Pause and resume queue 3 around requests.
	vq = fe.Queues[3]
	base := vq.CHPause()
	in := fuseproto.GetattrIn{}
	out, ins, _ := e.build(req{op: fuseproto.OpGetattr, node: fuseproto.RootID, args: [][]byte{enc(&in)}, out: []uint32{fuseproto.AttrOutSize}})
	head := vq.Add(out, ins, vqtest.ChainOpts{})
	time.Sleep(20 * time.Millisecond)
	if _, ok := vq.Driver.PopUsed(); ok {
		t.Fatal("a paused queue was served")
	}
	vq.CHResume(base)
	if u, err := vq.Wait(); err != nil || u.Head != head || u.Len != fuseproto.OutHeaderSize+fuseproto.AttrOutSize {
		t.Fatalf("after resume: %+v %v", u, err)
	}
	e.getattr(vq, fuseproto.RootID)
	if nb := vq.CHPause(); nb != base+2 {
		t.Fatalf("base %d after two more requests, want %d", nb, base+2)
	}
}

// gateFS blocks GETATTR of node 1 until released, to show that requests on
// different queues run at once and that the high-priority queue is served
// while every request worker is stuck.
type gateFS struct {
	*passthrough.FS
	arrived chan struct{}
	release chan struct{}
}

func (g *gateFS) Getattr(ctx *fuseproto.Context, node uint64, in *fuseproto.GetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	if in.Fh == 0xdead {
		g.arrived <- struct{}{}
		<-g.release
	}
	return g.FS.Getattr(ctx, node, in, out)
}

// threadingModes are the two ways request queues are served: a pool of
// workers (here of one kept worker), and each queue on its own goroutine.
var threadingModes = []struct {
	name string
	opts Options
}{
	{"pool", Options{ThreadPoolSize: 1}},
	{"inline", Options{ServeInline: true}},
}

func TestParallelQueuesAndHiprio(t *testing.T) {
	for _, m := range threadingModes {
		t.Run(m.name, func(t *testing.T) { testParallelQueuesAndHiprio(t, m.opts) })
	}
}

func testParallelQueuesAndHiprio(t *testing.T, opts Options) {
	g := &gateFS{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	opts.RequestQueues = 4
	e := newEnv(t, opts, func(fs *passthrough.FS) fuseproto.FileSystem {
		g.FS = fs
		return g
	})
	fe := e.fe
	fe.QEMUStart(5, 64, allFeatures)
	e.init(fe.Queues[1])
	node, fh := e.create(fe.Queues[1], fuseproto.RootID, "f")
	e.release(fe.Queues[1], node, fh)

	// One blocking GETATTR on each request queue: all four must be in the
	// filesystem at once (with a pool of one kept worker, or one
	// goroutine per queue).
	for q := 1; q <= 4; q++ {
		in := fuseproto.GetattrIn{Fh: 0xdead}
		out, ins, _ := e.build(req{op: fuseproto.OpGetattr, node: fuseproto.RootID, args: [][]byte{enc(&in)}, out: []uint32{fuseproto.AttrOutSize}})
		fe.Queues[q].Add(out, ins, vqtest.ChainOpts{})
	}
	for i := range 4 {
		select {
		case <-g.arrived:
		case <-time.After(vutest.Timeout):
			t.Fatalf("only %d of 4 requests running at once", i)
		}
	}
	// The high-priority queue is served meanwhile.
	e.forget(fe.Queues[0], node, 1)
	in := fuseproto.BatchForgetIn{Count: 0}
	e.do(fe.Queues[0], req{op: fuseproto.OpBatchForget, args: [][]byte{enc(&in)}, noReply: true})
	close(g.release)
	for q := 1; q <= 4; q++ {
		u, err := fe.Queues[q].Wait()
		if err != nil || u.Len != fuseproto.OutHeaderSize+fuseproto.AttrOutSize {
			t.Fatalf("queue %d: %+v %v", q, u, err)
		}
	}
}

// TestSetlkwSameQueue blocks a SETLKW behind a lock held by another owner,
// then releases that lock with a request on the same queue: in both
// threading modes the release must be served while SETLKW waits (serving
// inline, SETLKW goes to a worker), and then SETLKW is granted.
func TestSetlkwSameQueue(t *testing.T) {
	for _, m := range threadingModes {
		t.Run(m.name, func(t *testing.T) {
			opts := m.opts
			opts.RequestQueues = 1
			e := newEnv(t, opts, nil)
			fe := e.fe
			fe.QEMUStart(2, 64, allFeatures)
			vq := fe.Queues[1]
			e.init(vq)
			node, fh := e.create(vq, fuseproto.RootID, "locked")
			lock := func(op fuseproto.Opcode, owner uint64, typ uint32) req {
				in := fuseproto.LkIn{Fh: fh, Owner: owner, Lk: fuseproto.FileLock{Start: 0, End: 99, Type: typ, PID: uint32(owner)}}
				return req{op: op, node: node, args: [][]byte{enc(&in)}}
			}
			e.ok(vq, lock(fuseproto.OpSetlk, 1, unix.F_WRLCK))

			out, ins, u := e.build(lock(fuseproto.OpSetlkw, 2, unix.F_WRLCK))
			used := vq.Driver.UsedIdx()
			waiter := vq.Add(out, ins, vqtest.ChainOpts{})
			// (The used ring, not the call eventfd: serving inline, the
			// notification for the SETLK may come after its reply.)
			time.Sleep(300 * time.Millisecond)
			if vq.Driver.UsedIdx() != used {
				t.Fatal("SETLKW answered while the lock was held")
			}
			// The unlock, on the same queue, is answered first.
			unlock := lock(fuseproto.OpSetlk, 1, unix.F_UNLCK)
			out, ins, _ = e.build(unlock)
			vq.Add(out, ins, vqtest.ChainOpts{})
			got := map[uint16]fuseproto.OutHeader{}
			for range 2 {
				used, err := vq.Wait()
				if err != nil {
					t.Fatalf("waiting for the unlock and SETLKW: %v (the queue deadlocked?)", err)
				}
				var h fuseproto.OutHeader
				fuseproto.Decode(used.Data, &h)
				if h.Error != 0 {
					t.Fatalf("reply %+v", h)
				}
				got[used.Head] = h
			}
			if h, ok := got[waiter]; !ok || h.Unique != u {
				t.Fatalf("SETLKW (head %d, unique %d) not answered: %v", waiter, u, got)
			}
			e.release(vq, node, fh)
		})
	}
}

// TestHostileGuest sends malformed chains and requests; each is returned
// without a reply (or with an error reply) and the device keeps serving.
func TestHostileGuest(t *testing.T) {
	e := newEnv(t, Options{RequestQueues: 2}, nil)
	fe := e.fe
	fe.QEMUStart(3, 64, allFeatures)
	vq := fe.Queues[1]
	e.init(vq)
	buf := vq.Driver.AllocRaw(4096)
	ind := vq.Driver.AllocRaw(256)
	d := func(a virtqueue.GuestAddress, n uint32, fl, next uint16) vqtest.Desc {
		return vqtest.Desc{Addr: a, Len: n, Flags: fl, Next: next}
	}
	const N, W, I = virtqueue.DescFNext, virtqueue.DescFWrite, virtqueue.DescFIndirect
	vq.Driver.ReuseDescs(60, 61, 62, 63)
	raw := []struct {
		name   string
		descs  map[uint16]vqtest.Desc
		tables map[virtqueue.GuestAddress][]vqtest.Desc
	}{
		{"loop", map[uint16]vqtest.Desc{60: d(buf, 40, N, 61), 61: d(buf, 16, W|N, 60)}, nil},
		{"outside guest memory", map[uint16]vqtest.Desc{60: d(1<<40, 40, N, 61), 61: d(buf, 16, W, 0)}, nil},
		{"nested indirect", map[uint16]vqtest.Desc{60: d(ind, 32, I, 0)}, map[virtqueue.GuestAddress][]vqtest.Desc{ind: {d(buf, 40, N, 1), d(ind, 16, I, 0)}}},
		{"indirect size not a multiple of 16", map[uint16]vqtest.Desc{60: d(ind, 40, I, 0)}, nil},
		{"readable after writable", map[uint16]vqtest.Desc{60: d(buf, 16, W|N, 61), 61: d(buf, 40, 0, 0)}, nil},
		{"no writable room", map[uint16]vqtest.Desc{60: d(buf, 40, 0, 0)}, nil},
		{"header cut short", map[uint16]vqtest.Desc{60: d(buf, 10, N, 61), 61: d(buf+1024, 16, W, 0)}, nil},
	}
	// buf holds a GETATTR header; a correct chain over it gets a reply.
	gh := fuseproto.InHeader{Len: 56, Opcode: fuseproto.OpGetattr, Unique: 77, NodeID: fuseproto.RootID}
	fe.Mem.Write(buf, append(enc(&gh), make([]byte, 16)...))
	for _, tt := range raw {
		for i, ds := range tt.descs {
			vq.Driver.WriteDesc(i, ds)
		}
		for a, ds := range tt.tables {
			for i, ds := range ds {
				fe.Mem.PutDesc(a+virtqueue.GuestAddress(16*i), ds)
			}
		}
		vq.Driver.PublishRaw(60)
		vq.DoKick()
		u, err := vq.Wait()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		switch tt.name {
		case "header cut short":
			// The Server answers EIO with unique 0.
			var oh fuseproto.OutHeader
			got := fe.Mem.Bytes(buf+1024, 16)
			fuseproto.Decode(got, &oh)
			if u.Len != 16 || oh.Error != -int32(syscall.EIO) {
				t.Fatalf("%s: used %+v, header %+v", tt.name, u, oh)
			}
		default:
			if u.Head != 60 || u.Len != 0 {
				t.Fatalf("%s: used %+v, want head 60 len 0", tt.name, u)
			}
		}
		e.getattr(vq, fuseproto.RootID) // still serving
	}

	// FUSE-level lies: a length that does not match, a reply that does
	// not fit, a WRITE whose size disagrees with its data.
	lie := fuseproto.InHeader{Len: 999, Opcode: fuseproto.OpGetattr, NodeID: fuseproto.RootID}
	var gi fuseproto.GetattrIn
	head := vq.Add([][]byte{enc(&lie), enc(&gi)}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{})
	if u, _ := vq.Wait(); u.Head != head || u.Len != 16 {
		t.Fatalf("length mismatch: %+v", u)
	}
	// GETATTR with room for the header only: its reply does not fit.
	out, ins, _ := e.build(req{op: fuseproto.OpGetattr, node: fuseproto.RootID, args: [][]byte{enc(&gi)}})
	head = vq.Add(out, ins, vqtest.ChainOpts{})
	if u, _ := vq.Wait(); u.Head != head || u.Len != 0 {
		t.Fatalf("reply larger than the writable area: %+v", u)
	}
	node, fh := e.create(vq, fuseproto.RootID, "w")
	wi := fuseproto.WriteIn{Fh: fh, Size: 100}
	if r := e.do(vq, req{op: fuseproto.OpWrite, node: node, args: [][]byte{enc(&wi), make([]byte, 10)}, out: []uint32{8}}); r.hdr.Error != -int32(syscall.EINVAL) {
		t.Fatalf("WRITE with a wrong size: %+v", r.hdr)
	}
	// A READ asking for more than the writable room gets what fits.
	e.write(vq, node, fh, 0, pattern(8192, 3), vqtest.ChainOpts{})
	ri := fuseproto.ReadIn{Fh: fh, Size: 8192}
	r := e.do(vq, req{op: fuseproto.OpRead, node: node, args: [][]byte{enc(&ri)}, out: []uint32{100}})
	if r.hdr.Error != 0 || len(r.body) != 100 || !bytes.Equal(r.body, pattern(8192, 3)[:100]) {
		t.Fatalf("READ into a small area: %+v, %d bytes", r.hdr, len(r.body))
	}

	// Hostile vhost-user messages: bad queue indexes, a bad fd.
	for _, m := range []struct {
		req     vhostuser.Request
		payload []byte
	}{
		{vhostuser.SetVringNum, vhostuser.VringState{Index: 3, Num: 64}.Encode()},
		{vhostuser.SetVringEnable, vhostuser.VringState{Index: 200, Num: 1}.Encode()},
		{vhostuser.SetVringBase, vhostuser.VringState{Index: 1, Num: 0}.Encode()}, // started
		{vhostuser.AddMemReg, vhostuser.EncodeMemReg(virtqueue.RegionSpec{GuestAddr: 8 << 30, Size: 1 << 30})},
	} {
		var fds []int
		if m.req == vhostuser.AddMemReg {
			fds = []int{vq.Kick} // an eventfd is not guest memory
		}
		if _, err := fe.Do(m.req, m.payload, fds...); !errors.Is(err, vutest.ErrNack) {
			t.Fatalf("%v: %v, want a failed REPLY_ACK", m.req, err)
		}
	}
	// A broken queue (index jump) stops that queue only.
	vq.Driver.SetAvailIdx(vq.Driver.AvailIdx() + 100)
	vq.DoKick()
	time.Sleep(20 * time.Millisecond)
	e.getattr(fe.Queues[2], fuseproto.RootID)
	if err := e.end(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}

func TestConfigSpace(t *testing.T) {
	e := newEnv(t, Options{Tag: "myfs", RequestQueues: 4}, nil)
	fe := e.fe
	fe.Negotiate(allFeatures)
	if fe.Protocol&vhostuser.ProtocolConfig == 0 {
		t.Fatal("CONFIG not offered with a tag")
	}
	if n := fe.GetU64(vhostuser.GetQueueNum); n != 5 {
		t.Fatalf("GET_QUEUE_NUM %d", n)
	}
	c, err := vhostuser.DecodeConfigAccess(fe.Must(vhostuser.GetConfig, vhostuser.ConfigAccess{Data: make([]byte, 40)}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("myfs"), make([]byte, 32)...), 4, 0, 0, 0)
	if !bytes.Equal(c.Data, want) {
		t.Fatalf("config space %q", c.Data)
	}
	if _, err := NewDevice(e.srv, Options{Tag: string(make([]byte, 37))}); err == nil {
		t.Fatal("a 37-byte tag was accepted")
	}
	if _, err := NewDevice(e.srv, Options{RequestQueues: MaxRequestQueues + 1}); err == nil {
		t.Fatal("too many request queues accepted")
	}
}

func TestListenAndServe(t *testing.T) {
	root := t.TempDir()
	pfs, err := passthrough.New(root, passthrough.Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := fuseproto.NewServer(pfs, fuseproto.Options{})
	sock := filepath.Join(t.TempDir(), "vfsd.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() { done <- ListenAndServe(t.Context(), l, srv, Options{Logger: testLogger()}) }()
	c, err := dialUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, srv: srv, fe: vutest.New(t, c, nil)}
	e.fe.QEMUStart(2, 64, allFeatures)
	e.init(e.fe.Queues[1])
	node, fh := e.create(e.fe.Queues[1], fuseproto.RootID, "x")
	e.write(e.fe.Queues[1], node, fh, 0, []byte("hello"), vqtest.ChainOpts{})
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe: %v", err)
		}
	case <-time.After(vutest.Timeout):
		t.Fatal("ListenAndServe did not return when the front-end left")
	}
	if got, _ := os.ReadFile(filepath.Join(root, "x")); string(got) != "hello" {
		t.Fatalf("host file %q", got)
	}
}

// TestGuestMemoryFault shrinks the memfd behind a region while the device
// runs: reading a request from the vanished pages faults (SIGBUS), which
// must cost only that request.
func TestGuestMemoryFault(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	fe := e.fe
	fe.QEMUStart(2, 64, allFeatures)
	vq := fe.Queues[1]
	e.init(vq)
	r1 := fe.Mem.Regions[1]
	at := r1.Spec.GuestAddr + 8<<20 // inside region 1
	var gi fuseproto.GetattrIn
	h := fuseproto.InHeader{Len: 56, Opcode: fuseproto.OpGetattr, Unique: 5, NodeID: fuseproto.RootID}
	fe.Mem.Write(at, append(enc(&h), enc(&gi)...))
	out := vq.Driver.AllocRaw(256)
	vq.Driver.WriteDesc(60, vqtest.Desc{Addr: at, Len: 56, Flags: virtqueue.DescFNext, Next: 61})
	vq.Driver.WriteDesc(61, vqtest.Desc{Addr: out, Len: 120, Flags: virtqueue.DescFWrite})
	vq.Driver.ReuseDescs(60, 61)
	size := int64(r1.Spec.MmapOffset + r1.Spec.Size)
	if err := syscall.Ftruncate(r1.FD, 0); err != nil {
		t.Fatal(err)
	}
	vq.Driver.PublishRaw(60)
	vq.DoKick()
	u, err := vq.Wait()
	if err != nil || u.Head != 60 || u.Len != 0 {
		t.Fatalf("request in vanished memory: %+v %v", u, err)
	}
	if err := syscall.Ftruncate(r1.FD, size); err != nil {
		t.Fatal(err)
	}
	e.getattr(vq, fuseproto.RootID)

	// The rings themselves vanish: that queue breaks, the daemon does
	// not.
	r0 := fe.Mem.Regions[0]
	size = int64(r0.Spec.MmapOffset + r0.Spec.Size)
	if err := syscall.Ftruncate(r0.FD, 0); err != nil {
		t.Fatal(err)
	}
	vq.DoKick()
	time.Sleep(50 * time.Millisecond)
	if err := syscall.Ftruncate(r0.FD, size); err != nil {
		t.Fatal(err)
	}
	vq.GetBase()
	if err := e.end(); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}
