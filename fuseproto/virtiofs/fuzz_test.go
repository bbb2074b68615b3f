package virtiofs

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// fuzzInput lays out a fuzz case: byte 0 picks how readable and writable
// buffers are cut and whether the header's length is fixed up, bytes 1-2
// the writable size, the rest is the FUSE request.
func fuzzInput(split byte, room uint16, req []byte) []byte {
	return append([]byte{split, byte(room >> 8), byte(room)}, req...)
}

func fuzzReq(op fuseproto.Opcode, node uint64, args ...[]byte) []byte {
	n := fuseproto.InHeaderSize
	for _, a := range args {
		n += len(a)
	}
	h := fuseproto.InHeader{Len: uint32(n), Opcode: op, Unique: 9, NodeID: node}
	b := enc(&h)
	for _, a := range args {
		b = append(b, a...)
	}
	return b
}

// FuzzChainRequest sends arbitrary requests, cut arbitrarily into readable
// buffers and with arbitrary writable room, through a worker over a
// passthrough share: nothing may panic, every chain must come back, and
// never with more bytes than it had room for.
func FuzzChainRequest(f *testing.F) {
	wi := fuseproto.WriteIn{Size: 10}
	ri := fuseproto.ReadIn{Size: 100}
	mi := fuseproto.MkdirIn{Mode: 0o755}
	f.Add(fuzzInput(0, 200, fuzzReq(fuseproto.OpGetattr, 1, enc(&fuseproto.GetattrIn{}))))
	f.Add(fuzzInput(7, 100, fuzzReq(fuseproto.OpWrite, 1, enc(&wi), []byte("0123456789"))))
	f.Add(fuzzInput(3, 300, fuzzReq(fuseproto.OpRead, 1, enc(&ri))))
	f.Add(fuzzInput(1, 300, fuzzReq(fuseproto.OpMkdir, 1, enc(&mi), cstr("d"))))
	f.Add(fuzzInput(0, 4096, fuzzReq(fuseproto.OpReaddirplus, 1, enc(&ri))))
	f.Add(fuzzInput(9, 10, fuzzReq(fuseproto.OpLookup, 1, cstr(".."))))

	x := newDirect(f)
	init := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 1 << 17, Flags: 0xffffffff}
	x.call(fuseproto.OpInit, 0, [][]byte{enc(&init)}, 256)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		x.t = t
		split := data[0]
		room := uint32(binary.BigEndian.Uint16(data[1:3]))
		req := data[3:]
		if len(req) >= fuseproto.InHeaderSize {
			req = append([]byte(nil), req...)
			if split&1 != 0 {
				binary.LittleEndian.PutUint32(req, uint32(len(req)))
			}
			// SETLKW could wait forever for a lock held by an earlier
			// case; make it a GETLK.
			if op := fuseproto.Opcode(binary.LittleEndian.Uint32(req[4:])); op == fuseproto.OpSetlkw {
				binary.LittleEndian.PutUint32(req[4:], uint32(fuseproto.OpGetlk))
			}
		}
		var out [][]byte
		if len(req) > 0 {
			out = [][]byte{req}
		}
		var in []uint32
		if room > 0 {
			in = []uint32{room}
		}
		if out == nil && in == nil {
			return
		}
		o := vqtest.ChainOpts{Indirect: split&2 != 0, Split: uint32(split >> 2)}
		if _, err := x.drv.AddChain(out, in, o); err != nil {
			return // too many pieces for the ring
		}
		err := x.q.Pop(&x.c)
		var ce *virtqueue.ChainError
		switch {
		case errors.As(err, &ce):
			// Too many pieces for an indirect table: refused unserved.
		case err != nil:
			t.Fatal(err)
		default:
			x.w.serve(&x.c)
		}
		u, ok := x.drv.PopUsed()
		if !ok {
			t.Fatal("chain not returned")
		}
		if u.Len > room {
			t.Fatalf("%d bytes used of %d", u.Len, room)
		}
		if u.Len > 0 {
			var oh fuseproto.OutHeader
			if !fuseproto.Decode(u.Data, &oh) || oh.Len != u.Len {
				t.Fatalf("reply header %+v for %d bytes", oh, u.Len)
			}
		}
	})
}
