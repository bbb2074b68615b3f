package virtiofs

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// This file is a small FUSE client over the fake front-end: it lays out
// requests as Linux's virtio-fs driver does (fuse_in_header and each
// argument in its own readable buffer, data in page-sized pieces; the
// fuse_out_header and each reply part in writable buffers).

func testLogger() hclog.Logger {
	if os.Getenv("VIRTIOFS_DEBUG") != "" {
		return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr})
	}
	return hclog.NewNullLogger()
}

// env is a running device over a passthrough share of a temporary
// directory, and the fake front-end connected to it.
type env struct {
	t    *testing.T
	root string
	srv  *fuseproto.Server
	fe   *vutest.Frontend
	done chan error
	uniq atomic.Uint64
}

func newEnv(t *testing.T, opts Options, wrap func(*passthrough.FS) fuseproto.FileSystem) *env {
	t.Helper()
	root := t.TempDir()
	pfs, err := passthrough.New(root, passthrough.Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	var fs fuseproto.FileSystem = pfs
	if wrap != nil {
		fs = wrap(pfs)
	}
	srv := fuseproto.NewServer(fs, fuseproto.Options{Logger: testLogger()})
	opts.Logger = testLogger()
	front, back := vutest.Socketpair(t)
	e := &env{t: t, root: root, srv: srv, done: make(chan error, 1)}
	go func() { e.done <- ServeConn(context.Background(), back, srv, opts) }()
	t.Cleanup(func() {
		front.Close()
		select {
		case <-e.done:
		case <-time.After(vutest.Timeout):
			t.Error("ServeConn did not return after the front-end closed")
		}
	})
	e.fe = vutest.New(t, front, nil)
	return e
}

// end disconnects and returns ServeConn's result.
func (e *env) end() error {
	e.fe.Conn.Close()
	select {
	case err := <-e.done:
		e.done <- err
		return err
	case <-time.After(vutest.Timeout):
		e.t.Fatal("ServeConn did not return")
		return nil
	}
}

func enc[T any](v *T) []byte { return fuseproto.Encode(nil, v) }

// req is one FUSE request as a chain.
type req struct {
	op   fuseproto.Opcode
	node uint64
	args [][]byte // each in its own readable buffer
	out  []uint32 // writable buffers after the 16-byte fuse_out_header
	opts vqtest.ChainOpts
	// noReply: FORGET-like, no writable buffers at all.
	noReply bool
}

// reply is what came back.
type reply struct {
	hdr  fuseproto.OutHeader
	body []byte
	used uint32
}

func (e *env) build(r req) ([][]byte, []uint32, uint64) {
	n := fuseproto.InHeaderSize
	for _, a := range r.args {
		n += len(a)
	}
	u := e.uniq.Add(2)
	h := fuseproto.InHeader{Len: uint32(n), Opcode: r.op, Unique: u, NodeID: r.node, PID: 1}
	out := append([][]byte{enc(&h)}, r.args...)
	var in []uint32
	if !r.noReply {
		in = append([]uint32{fuseproto.OutHeaderSize}, r.out...)
	}
	return out, in, u
}

// do sends r on vq and waits for its reply; vq must not be used by another
// goroutine meanwhile.
func (e *env) do(vq *vutest.VQ, r req) reply {
	e.t.Helper()
	out, in, u := e.build(r)
	head := vq.Add(out, in, r.opts)
	used, err := vq.Wait()
	if err != nil {
		e.t.Fatalf("%v: %v", r.op, err)
	}
	if used.Head != head {
		e.t.Fatalf("%v: used head %d, want %d", r.op, used.Head, head)
	}
	if r.noReply {
		if used.Len != 0 {
			e.t.Fatalf("%v: %d bytes written", r.op, used.Len)
		}
		return reply{}
	}
	var rep reply
	rep.used = used.Len
	if !fuseproto.Decode(used.Data, &rep.hdr) {
		e.t.Fatalf("%v: reply of %d bytes", r.op, used.Len)
	}
	if rep.hdr.Len != used.Len || rep.hdr.Unique != u {
		e.t.Fatalf("%v: out header %+v, used len %d, unique %d", r.op, rep.hdr, used.Len, u)
	}
	rep.body = used.Data[fuseproto.OutHeaderSize:]
	return rep
}

// ok is do expecting success.
func (e *env) ok(vq *vutest.VQ, r req) []byte {
	e.t.Helper()
	rep := e.do(vq, r)
	if rep.hdr.Error != 0 {
		e.t.Fatalf("%v: errno %d", r.op, -rep.hdr.Error)
	}
	return rep.body
}

func (e *env) init(vq *vutest.VQ) fuseproto.InitOut {
	e.t.Helper()
	in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 1 << 17, Flags: 0xffffffff, Flags2: 0}
	body := e.ok(vq, req{op: fuseproto.OpInit, args: [][]byte{enc(&in)}, out: []uint32{uint32(len(enc(&fuseproto.InitOut{})))}})
	var out fuseproto.InitOut
	fuseproto.Decode(body, &out)
	return out
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func (e *env) lookup(vq *vutest.VQ, parent uint64, name string) (fuseproto.EntryOut, int32) {
	e.t.Helper()
	rep := e.do(vq, req{op: fuseproto.OpLookup, node: parent, args: [][]byte{cstr(name)}, out: []uint32{fuseproto.EntryOutSize}})
	var eo fuseproto.EntryOut
	fuseproto.Decode(rep.body, &eo)
	return eo, -rep.hdr.Error
}

func (e *env) create(vq *vutest.VQ, parent uint64, name string) (node, fh uint64) {
	e.t.Helper()
	in := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o100644}
	body := e.ok(vq, req{op: fuseproto.OpCreate, node: parent, args: [][]byte{enc(&in), cstr(name)},
		out: []uint32{fuseproto.EntryOutSize, uint32(len(enc(&fuseproto.OpenOut{})))}})
	var eo fuseproto.EntryOut
	var oo fuseproto.OpenOut
	fuseproto.Decode(body, &eo)
	fuseproto.Decode(body[fuseproto.EntryOutSize:], &oo)
	return eo.NodeID, oo.Fh
}

// write sends data in page-sized pieces straight from guest memory.
func (e *env) write(vq *vutest.VQ, node, fh uint64, off uint64, data []byte, o vqtest.ChainOpts) uint32 {
	e.t.Helper()
	in := fuseproto.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}
	if o.Split == 0 {
		o.Split = 4096
	}
	body := e.ok(vq, req{op: fuseproto.OpWrite, node: node, args: [][]byte{enc(&in), data}, out: []uint32{8}, opts: o})
	var wo fuseproto.WriteOut
	fuseproto.Decode(body, &wo)
	return wo.Size
}

// read reads size bytes at off into page-sized writable buffers.
func (e *env) read(vq *vutest.VQ, node, fh uint64, off uint64, size uint32, o vqtest.ChainOpts) []byte {
	e.t.Helper()
	in := fuseproto.ReadIn{Fh: fh, Offset: off, Size: size}
	if o.Split == 0 {
		o.Split = 4096
	}
	return e.ok(vq, req{op: fuseproto.OpRead, node: node, args: [][]byte{enc(&in)}, out: []uint32{size}, opts: o})
}

func (e *env) release(vq *vutest.VQ, node, fh uint64) {
	e.t.Helper()
	in := fuseproto.ReleaseIn{Fh: fh}
	e.ok(vq, req{op: fuseproto.OpRelease, node: node, args: [][]byte{enc(&in)}})
}

func (e *env) getattr(vq *vutest.VQ, node uint64) fuseproto.AttrOut {
	e.t.Helper()
	var in fuseproto.GetattrIn
	body := e.ok(vq, req{op: fuseproto.OpGetattr, node: node, args: [][]byte{enc(&in)}, out: []uint32{fuseproto.AttrOutSize}})
	var ao fuseproto.AttrOut
	fuseproto.Decode(body, &ao)
	return ao
}

func (e *env) forget(hiprio *vutest.VQ, node, n uint64) {
	e.t.Helper()
	in := fuseproto.ForgetIn{Nlookup: n}
	e.do(hiprio, req{op: fuseproto.OpForget, node: node, args: [][]byte{enc(&in)}, noReply: true})
}

// readdirplus lists a directory and returns the names found.
func (e *env) readdirplus(vq *vutest.VQ, dir uint64) []string {
	e.t.Helper()
	var oi fuseproto.OpenIn
	body := e.ok(vq, req{op: fuseproto.OpOpendir, node: dir, args: [][]byte{enc(&oi)}, out: []uint32{16}})
	var oo fuseproto.OpenOut
	fuseproto.Decode(body, &oo)
	var names []string
	off := uint64(0)
	for {
		in := fuseproto.ReadIn{Fh: oo.Fh, Offset: off, Size: 8192}
		b := e.ok(vq, req{op: fuseproto.OpReaddirplus, node: dir, args: [][]byte{enc(&in)}, out: []uint32{8192}, opts: vqtest.ChainOpts{Split: 4096}})
		if len(b) == 0 {
			break
		}
		for len(b) > 0 {
			var ent fuseproto.Dirent
			fuseproto.Decode(b[fuseproto.EntryOutSize:], &ent)
			start := fuseproto.DirentplusSize
			names = append(names, string(b[start:start+int(ent.Namelen)]))
			rec := (start + int(ent.Namelen) + 7) &^ 7
			off = ent.Off
			b = b[min(rec, len(b)):]
		}
	}
	ri := fuseproto.ReleaseIn{Fh: oo.Fh}
	e.ok(vq, req{op: fuseproto.OpReleasedir, node: dir, args: [][]byte{enc(&ri)}})
	return names
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

func listenUnix(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

func dialUnix(path string) (*net.UnixConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}
