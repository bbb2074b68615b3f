package vhostuser_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// This file is the vhost-user half of issue 5's hostile-guest table (the
// FUSE and virtqueue half is fuseproto/virtiofs's TestHostileGuestTable):
// messages whose header size lies, missing or extra fds, fds that are not
// guest memory, vring indexes and sizes out of range, rings outside guest
// memory, unknown requests and features never offered. Every row gets the
// answer the vhost-user spec and doc.go call for (REPLY_ACK failure, the
// connection dropped, or accepted), and then one back-end keeps serving:
// on the same connection, or on a fresh one after a drop, with no fd or
// goroutine left behind. docs/hostile-guest.md lists the rows.

// vuAnswer is what the back-end does with a hostile message.
type vuAnswer int

const (
	vuAck     vuAnswer = iota // accepted (REPLY_ACK 0 or the GET's reply)
	vuNack                    // REPLY_ACK with a failure status
	vuEmpty                   // GET_CONFIG answered with an empty payload
	vuDropped                 // the back-end closed the connection
)

func (a vuAnswer) String() string {
	return [...]string{"accepted", "REPLY_ACK failure", "empty GET_CONFIG reply", "connection dropped"}[a]
}

// vuDaemon is one back-end serving one connection after another.
type vuDaemon struct {
	b   *vhostuser.Backend
	dev *echoDev
}

// vuConn is one connection to a vuDaemon.
type vuConn struct {
	fe   *vutest.Frontend
	done chan error
}

func (d *vuDaemon) connect(t *testing.T) *vuConn {
	t.Helper()
	front, back := vutest.Socketpair(t)
	c := &vuConn{done: make(chan error, 1)}
	go func() { c.done <- d.b.ServeConn(context.Background(), back) }()
	t.Cleanup(func() {
		front.Close()
		select {
		case err := <-c.done:
			c.done <- err
		case <-time.After(vutest.Timeout):
			t.Error("ServeConn did not return after the front-end closed")
		}
	})
	c.fe = vutest.New(t, front, nil)
	c.fe.NeedReply = true
	return c
}

// classify turns the result of sending a hostile message into an answer:
// a GET_FEATURES round trip tells whether the connection survived.
func (c *vuConn) classify(t *testing.T, reply []byte, err error) vuAnswer {
	t.Helper()
	if _, rerr := c.fe.Do(vhostuser.GetFeatures, nil); rerr != nil {
		select {
		case derr := <-c.done:
			c.done <- derr
			if derr == nil {
				t.Fatal("ServeConn returned nil: the connection ended but was not dropped")
			}
			return vuDropped
		case <-time.After(vutest.Timeout):
			t.Fatalf("no reply to GET_FEATURES (%v) and the connection was not dropped", rerr)
		}
	}
	switch {
	case errors.Is(err, vutest.ErrNack):
		return vuNack
	case err != nil:
		t.Fatalf("the connection survived but the hostile message got %v", err)
	case reply != nil && len(reply) == 0:
		return vuEmpty
	}
	return vuAck
}

// serves checks that the connection serves a whole start-up (Cloud
// Hypervisor's, whose SET_MEM_TABLE replaces any table a row left) and a
// chain.
func (c *vuConn) serves(t *testing.T) {
	t.Helper()
	c.fe.CHStart(2, 64, allFeatures)
	echo(t, c.fe.Queues[1], "still serving", vqtest.ChainOpts{})
}

// vuRow is one hostile message: send returns the reply payload (for GETs)
// and error of fe.Do or fe.Send; NEED_REPLY is set unless noReply.
type vuRow struct {
	name    string
	noReply bool
	send    func(t *testing.T, fe *vutest.Frontend) ([]byte, error)
	want    vuAnswer
}

func TestHostileVhostUser(t *testing.T) {
	d := &vuDaemon{dev: newEchoDev(2, []byte("config space"))}
	d.b = vhostuser.NewBackend(d.dev, vhostuser.Options{Logger: testLogger()})
	t.Run("warm-up", func(t *testing.T) { d.connect(t).serves(t) })
	rows := hostileVhostRows()
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			fds, goroutines := openFDs(t), runtime.NumGoroutine()
			t.Run("session", func(t *testing.T) {
				c := d.connect(t)
				c.fe.NeedReply = !row.noReply
				reply, err := row.send(t, c.fe)
				if got := c.classify(t, reply, err); got != row.want {
					t.Fatalf("answer: %v (%v), want %v", got, err, row.want)
				}
				if row.want == vuDropped {
					c = d.connect(t)
				}
				c.fe.NeedReply = false
				c.serves(t)
			})
			if after := openFDs(t); after != fds {
				t.Errorf("%d fds open after the session, %d before", after, fds)
			}
			deadline := time.Now().Add(3 * time.Second)
			for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > goroutines {
				t.Errorf("%d goroutines after the session, %d before", n, goroutines)
			}
		})
	}
	t.Logf("%d rows", len(rows))
}

// hdr encodes a header with the version bits, NEED_REPLY and a size.
func hdr(req vhostuser.Request, size uint32) []byte {
	return vhostuser.Header{Request: req, Flags: vhostuser.FlagVersion | vhostuser.FlagNeedReply, Size: size}.Encode(nil)
}

// memFDs returns the front-end's region fds.
func memFDs(fe *vutest.Frontend) []int {
	var fds []int
	for _, r := range fe.Mem.Regions {
		fds = append(fds, r.FD)
	}
	return fds
}

// tempFD returns an fd made by open, closed at the end of the test.
func tempFD(t *testing.T, open func() (int, error)) int {
	t.Helper()
	fd, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func hostileVhostRows() []vuRow {
	var rows []vuRow
	for _, part := range [][]vuRow{sizeRows(), streamRows(), fdRows(), indexRows(), ringRows(), requestRows(), migrationRows()} {
		rows = append(rows, part...)
	}
	return rows
}

// sizeRows send each message type with a payload one byte shorter and
// eight bytes longer than the type has; the header's size field agrees
// with the bytes sent, so the stream stays in step.
func sizeRows() []vuRow {
	region := virtqueue.RegionSpec{GuestAddr: 1 << 32, Size: 1 << 20, UserAddr: 1 << 40}
	type msgType struct {
		req     vhostuser.Request
		payload func(fe *vutest.Frontend) []byte
		fds     func(t *testing.T, fe *vutest.Frontend) []int
		want    vuAnswer // for a payload of the wrong size
		empty   bool     // the type has no payload
	}
	u64 := func(v uint64) func(*vutest.Frontend) []byte {
		return func(*vutest.Frontend) []byte { return vhostuser.EncodeU64(v) }
	}
	state := func(i, n uint32) func(*vutest.Frontend) []byte {
		return func(*vutest.Frontend) []byte { return vhostuser.VringState{Index: i, Num: n}.Encode() }
	}
	none := func(*vutest.Frontend) []byte { return nil }
	const empty = true
	eventfd := func(t *testing.T, _ *vutest.Frontend) []int {
		return []int{tempFD(t, func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC) })}
	}
	types := []msgType{
		{vhostuser.GetFeatures, none, nil, vuDropped, empty},
		{vhostuser.SetFeatures, u64(virtqueue.FeatureVersion1), nil, vuNack, false},
		{vhostuser.SetOwner, none, nil, vuNack, empty},
		{vhostuser.ResetOwner, none, nil, vuNack, empty},
		{vhostuser.SetMemTable, func(fe *vutest.Frontend) []byte { return vhostuser.EncodeMemTable(fe.Mem.Specs()) },
			func(_ *testing.T, fe *vutest.Frontend) []int { return memFDs(fe) }, vuNack, false},
		{vhostuser.SetVringNum, state(0, 64), nil, vuNack, false},
		{vhostuser.SetVringAddr, func(*vutest.Frontend) []byte { return vhostuser.VringAddr{Index: 0, Desc: 0x1000}.Encode() }, nil, vuNack, false},
		{vhostuser.SetVringBase, state(0, 0), nil, vuNack, false},
		{vhostuser.GetVringBase, state(0, 0), nil, vuDropped, false},
		{vhostuser.SetVringKick, u64(0), eventfd, vuNack, false},
		{vhostuser.SetVringCall, u64(0), eventfd, vuNack, false},
		{vhostuser.SetVringErr, u64(0), eventfd, vuNack, false},
		{vhostuser.GetProtocolFeatures, none, nil, vuDropped, empty},
		{vhostuser.SetProtocolFeatures, u64(vhostuser.ProtocolReplyAck), nil, vuNack, false},
		{vhostuser.GetQueueNum, none, nil, vuDropped, empty},
		{vhostuser.SetVringEnable, state(0, 1), nil, vuNack, false},
		{vhostuser.SetBackendReqFD, none, eventfd, vuNack, empty},
		{vhostuser.GetConfig, func(*vutest.Frontend) []byte { return vhostuser.ConfigAccess{Data: make([]byte, 4)}.Encode() }, nil, vuEmpty, false},
		{vhostuser.SetConfig, func(*vutest.Frontend) []byte { return vhostuser.ConfigAccess{Data: []byte("conf")}.Encode() }, nil, vuNack, false},
		{vhostuser.ResetDevice, none, nil, vuNack, empty},
		{vhostuser.GetMaxMemSlots, none, nil, vuDropped, empty},
		{vhostuser.AddMemReg, func(*vutest.Frontend) []byte { return vhostuser.EncodeMemReg(region) },
			func(t *testing.T, _ *vutest.Frontend) []int {
				return []int{vqtest.NewMemory(t, vqtest.Layout{GuestAddr: region.GuestAddr, Size: region.Size, UserAddr: region.UserAddr}).Regions[0].FD}
			}, vuNack, false},
		{vhostuser.RemMemReg, func(fe *vutest.Frontend) []byte { return vhostuser.EncodeMemReg(fe.Mem.Regions[0].Spec) }, nil, vuNack, false},
		{vhostuser.SetStatus, u64(0xf), nil, vuNack, false},
		{vhostuser.GetStatus, none, nil, vuDropped, empty},
	}
	var rows []vuRow
	for _, mt := range types {
		send := func(delta int) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
				p := mt.payload(fe)
				if delta < 0 {
					p = p[:len(p)+delta]
				} else {
					p = append(p, make([]byte, delta)...)
				}
				var fds []int
				if mt.fds != nil {
					fds = mt.fds(t, fe)
				}
				return fe.Do(mt.req, p, fds...)
			}
		}
		if !mt.empty {
			rows = append(rows, vuRow{name: fmt.Sprintf("%v payload one byte short", mt.req), send: send(-1), want: mt.want})
		}
		rows = append(rows, vuRow{name: fmt.Sprintf("%v payload eight bytes long", mt.req), send: send(8), want: mt.want})
	}
	return rows
}

// streamRows lie with the header's size field about the bytes that follow.
func streamRows() []vuRow {
	return []vuRow{
		{name: "size field larger than the payload swallows the next message", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			// SET_FEATURES says 20 bytes, sends 8, then a GET_FEATURES:
			// its header becomes the rest of the payload, which is then
			// refused as a malformed u64. One reply comes back.
			b := append(hdr(vhostuser.SetFeatures, 20), vhostuser.EncodeU64(virtqueue.FeatureVersion1)...)
			b = append(b, vhostuser.Header{Request: vhostuser.GetFeatures, Flags: vhostuser.FlagVersion}.Encode(nil)...)
			if err := fe.SendRaw(b); err != nil {
				return nil, err
			}
			return readAck(fe, vhostuser.SetFeatures)
		}, want: vuNack},
		{name: "size field smaller than the payload leaves bytes read as a header", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			// SET_FEATURES says 0 bytes and 12 bytes follow: refused as
			// malformed, then the 12 bytes are a header of protocol
			// version 3.
			b := append(hdr(vhostuser.SetFeatures, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			if err := fe.SendRaw(b); err != nil {
				return nil, err
			}
			if _, err := readAck(fe, vhostuser.SetFeatures); !errors.Is(err, vutest.ErrNack) {
				t.Fatalf("SET_FEATURES without payload: %v, want a failed REPLY_ACK", err)
			}
			return nil, nil
		}, want: vuDropped},
		{name: "NEED_REPLY on a GET gets the GET's reply only", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			if err := fe.SendRaw(hdr(vhostuser.GetQueueNum, 0)); err != nil {
				return nil, err
			}
			h, p, err := fe.Recv()
			if err != nil || h.Request != vhostuser.GetQueueNum || len(p) != 8 {
				t.Fatalf("reply %+v %x %v", h, p, err)
			}
			return p, nil
		}, want: vuAck},
		{name: "REPLY flag set on a request", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			if err := fe.Send(vhostuser.SetOwner, vhostuser.FlagReply, nil); err != nil {
				return nil, err
			}
			return readAck(fe, vhostuser.SetOwner)
		}, want: vuAck},
		{name: "protocol version 0", noReply: true, send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return nil, fe.SendRaw(vhostuser.Header{Request: vhostuser.GetFeatures}.Encode(nil))
		}, want: vuDropped},
	}
}

// readAck reads a REPLY_ACK to req.
func readAck(fe *vutest.Frontend, req vhostuser.Request) ([]byte, error) {
	h, p, err := fe.Recv()
	if err != nil {
		return nil, err
	}
	v, err := vhostuser.DecodeU64(p)
	if h.Request != req || err != nil {
		return nil, fmt.Errorf("reply %+v %x", h, p)
	}
	if v != 0 {
		return nil, vutest.ErrNack
	}
	return nil, nil
}

// fdRows send missing or extra fds, and fds that are not guest memory.
func fdRows() []vuRow {
	region := virtqueue.RegionSpec{GuestAddr: 1 << 32, Size: 1 << 20, UserAddr: 1 << 40}
	addReg := func(open func(t *testing.T) int) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.AddMemReg, vhostuser.EncodeMemReg(region), open(t))
		}
	}
	setTable := func(open func(t *testing.T) int) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable([]virtqueue.RegionSpec{region}), open(t))
		}
	}
	file := func(t *testing.T, flags int) int {
		p := filepath.Join(t.TempDir(), "mem")
		if err := os.WriteFile(p, make([]byte, region.Size), 0o600); err != nil {
			t.Fatal(err)
		}
		return tempFD(t, func() (int, error) { return unix.Open(p, flags|unix.O_CLOEXEC, 0) })
	}
	sealed := func(t *testing.T) int {
		fd := tempFD(t, func() (int, error) { return unix.MemfdCreate("sealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING) })
		if err := unix.Ftruncate(fd, int64(region.Size)); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	socket := func(t *testing.T) int {
		return tempFD(t, func() (int, error) { return unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) })
	}
	devZero := func(t *testing.T) int {
		return tempFD(t, func() (int, error) { return unix.Open("/dev/zero", unix.O_RDWR|unix.O_CLOEXEC, 0) })
	}
	eventfd := func(t *testing.T) int {
		return tempFD(t, func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC) })
	}
	return []vuRow{
		{name: "SET_VRING_CALL without fd or the no-fd bit", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetVringCall, vhostuser.EncodeU64(0))
		}, want: vuNack},
		{name: "SET_VRING_ERR without fd or the no-fd bit", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetVringErr, vhostuser.EncodeU64(1))
		}, want: vuNack},
		{name: "SET_VRING_CALL with the no-fd bit and an fd", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetVringCall, vhostuser.EncodeU64(1|vhostuser.VringNoFD), eventfd(t))
		}, want: vuAck},
		{name: "SET_FEATURES with an fd", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetFeatures, vhostuser.EncodeU64(virtqueue.FeatureVersion1), eventfd(t))
		}, want: vuAck},
		{name: "SET_MEM_TABLE with more fds than regions", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(fe.Mem.Specs()[:1]), memFDs(fe)...)
		}, want: vuNack},
		{name: "SET_MEM_TABLE without fds", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(fe.Mem.Specs()))
		}, want: vuNack},
		{name: "SET_MEM_TABLE of zero regions", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(nil))
		}, want: vuAck},
		{name: "SET_MEM_TABLE with overlapping regions", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			specs := fe.Mem.Specs()
			specs[1].GuestAddr = specs[0].GuestAddr + 4096
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(specs), memFDs(fe)...)
		}, want: vuNack},
		{name: "SET_MEM_TABLE region of size 0", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			r := region
			r.Size = 0
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable([]virtqueue.RegionSpec{r}), memFDs(fe)[0])
		}, want: vuNack},
		{name: "SET_MEM_TABLE region wrapping around 2^64", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			r := region
			r.GuestAddr = ^virtqueue.GuestAddress(0) - 4095
			return fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable([]virtqueue.RegionSpec{r}), memFDs(fe)[0])
		}, want: vuNack},
		{name: "ADD_MEM_REG with two fds", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.AddMemReg, vhostuser.EncodeMemReg(region), memFDs(fe)...)
		}, want: vuNack},
		{name: "SET_BACKEND_REQ_FD without fd", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetBackendReqFD, nil)
		}, want: vuNack},
		{name: "SET_MEM_TABLE with an eventfd", send: setTable(eventfd), want: vuNack},
		{name: "SET_MEM_TABLE with a read-only regular file", send: setTable(func(t *testing.T) int { return file(t, unix.O_RDONLY) }), want: vuNack},
		{name: "SET_MEM_TABLE with a directory", send: setTable(func(t *testing.T) int {
			return tempFD(t, func() (int, error) { return unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) })
		}), want: vuNack},
		{name: "SET_MEM_TABLE with a character device", send: setTable(devZero), want: vuNack},
		{name: "ADD_MEM_REG with a socket", send: addReg(socket), want: vuNack},
		{name: "ADD_MEM_REG with a write-sealed memfd", send: addReg(sealed), want: vuNack},
		{name: "ADD_MEM_REG with an O_PATH fd", send: addReg(func(t *testing.T) int { return file(t, unix.O_PATH) }), want: vuNack},
		{name: "ADD_MEM_REG with a writable regular file is mapped", send: addReg(func(t *testing.T) int { return file(t, unix.O_RDWR) }), want: vuAck},
	}
}

// indexRows use vring indexes beyond the device's 2 queues.
func indexRows() []vuRow {
	var rows []vuRow
	for _, req := range []vhostuser.Request{vhostuser.SetVringNum, vhostuser.SetVringAddr, vhostuser.SetVringBase, vhostuser.SetVringEnable} {
		payload := vhostuser.VringState{Index: 2, Num: 1}.Encode()
		if req == vhostuser.SetVringAddr {
			payload = vhostuser.VringAddr{Index: 2}.Encode()
		}
		rows = append(rows,
			vuRow{name: fmt.Sprintf("%v of vring 2 of 2", req), send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
				return fe.Do(req, payload)
			}, want: vuNack},
			vuRow{name: fmt.Sprintf("%v of vring 2 of 2 without NEED_REPLY", req), noReply: true, send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
				return fe.Do(req, payload)
			}, want: vuDropped})
	}
	for _, req := range []vhostuser.Request{vhostuser.SetVringKick, vhostuser.SetVringCall, vhostuser.SetVringErr} {
		for _, idx := range []uint64{2, 255} {
			rows = append(rows,
				vuRow{name: fmt.Sprintf("%v of vring %d of 2", req, idx), send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
					return fe.Do(req, vhostuser.EncodeU64(idx|vhostuser.VringNoFD))
				}, want: vuNack})
		}
		rows = append(rows, vuRow{name: fmt.Sprintf("%v of vring 2 of 2 without NEED_REPLY", req), noReply: true, send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(req, vhostuser.EncodeU64(2|vhostuser.VringNoFD))
		}, want: vuDropped})
	}
	rows = append(rows, vuRow{name: "GET_VRING_BASE of vring 2 of 2", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return fe.Do(vhostuser.GetVringBase, vhostuser.VringState{Index: 2}.Encode())
	}, want: vuDropped})
	return rows
}

// ringRows set rings outside guest memory, misaligned, or of bad sizes.
func ringRows() []vuRow {
	// start sets vring 1 up with its addresses changed by mod and kicks
	// it; the answer is the kick's.
	start := func(mod func(a *vhostuser.VringAddr, fe *vutest.Frontend)) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			fe.SetFeatures(allFeatures)
			fe.SetMemTable()
			vq := fe.NewVQ(1, 64)
			vq.SendNum()
			m := fe.Mem
			a := vhostuser.VringAddr{Index: 1, Desc: m.UserAddr(vq.Driver.Desc), Used: m.UserAddr(vq.Driver.Used), Avail: m.UserAddr(vq.Driver.Avail)}
			mod(&a, fe)
			fe.Must(vhostuser.SetVringAddr, a.Encode())
			return fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(1), vq.Kick)
		}
	}
	num := func(n uint32) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetVringNum, vhostuser.VringState{Index: 1, Num: n}.Encode())
		}
	}
	end := func(fe *vutest.Frontend) uint64 { s := fe.Mem.Regions[0].Spec; return s.UserAddr + s.Size }
	return []vuRow{
		{name: "vring addresses outside guest memory", send: start(func(a *vhostuser.VringAddr, _ *vutest.Frontend) {
			a.Desc, a.Avail, a.Used = 0x1000, 0x2000, 0x3000
		}), want: vuNack},
		{name: "descriptor table straddling the end of a region", send: start(func(a *vhostuser.VringAddr, fe *vutest.Frontend) {
			a.Desc = end(fe) - 512
		}), want: vuNack},
		{name: "available ring straddling the end of a region", send: start(func(a *vhostuser.VringAddr, fe *vutest.Frontend) {
			a.Avail = end(fe) - 64
		}), want: vuNack},
		{name: "available ring not 2-byte aligned", send: start(func(a *vhostuser.VringAddr, _ *vutest.Frontend) { a.Avail++ }), want: vuNack},
		{name: "used ring not 4-byte aligned", send: start(func(a *vhostuser.VringAddr, _ *vutest.Frontend) { a.Used += 2 }), want: vuNack},
		{name: "vring addresses wrapping around 2^64", send: start(func(a *vhostuser.VringAddr, _ *vutest.Frontend) { a.Used = ^uint64(0) - 7 }), want: vuNack},
		{name: "SET_VRING_KICK before SET_VRING_ADDR", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Must(vhostuser.SetVringNum, vhostuser.VringState{Index: 1, Num: 64}.Encode())
			return fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(1|vhostuser.VringNoFD))
		}, want: vuNack},
		{name: "SET_VRING_NUM 0", send: num(0), want: vuNack},
		{name: "SET_VRING_NUM 3", send: num(3), want: vuNack},
		{name: "SET_VRING_NUM 65536", send: num(1 << 16), want: vuNack},
		{name: "SET_VRING_NUM 2^32-1", send: num(^uint32(0)), want: vuNack},
		{name: "SET_VRING_NUM beyond the device's maximum", send: num(2048), want: vuNack},
	}
}

// requestRows send unknown or unimplemented requests, features never
// offered, and messages before SET_OWNER.
func requestRows() []vuRow {
	do := func(req vhostuser.Request, payload []byte) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) { return fe.Do(req, payload) }
	}
	var rows []vuRow
	for _, req := range []vhostuser.Request{0, vhostuser.SetLogBase, vhostuser.SetLogFD, vhostuser.GetInflightFD, vhostuser.SetInflightFD, 41, 1000, 1<<32 - 1} {
		rows = append(rows,
			vuRow{name: fmt.Sprintf("%v, not served", req), send: do(req, nil), want: vuNack},
			vuRow{name: fmt.Sprintf("%v, not served, without NEED_REPLY", req), noReply: true, send: do(req, nil), want: vuDropped})
	}
	rows = append(rows,
		vuRow{name: "SET_FEATURES bit 63, never offered", send: do(vhostuser.SetFeatures, vhostuser.EncodeU64(1<<63)), want: vuNack},
		vuRow{name: "SET_FEATURES RING_PACKED, never offered", send: do(vhostuser.SetFeatures, vhostuser.EncodeU64(virtqueue.FeatureVersion1|1<<34)), want: vuNack},
		vuRow{name: "SET_PROTOCOL_FEATURES BACKEND_REQ, never offered", send: do(vhostuser.SetProtocolFeatures, vhostuser.EncodeU64(vhostuser.ProtocolBackendReq)), want: vuNack},
		vuRow{name: "SET_PROTOCOL_FEATURES bit 63, never offered", send: do(vhostuser.SetProtocolFeatures, vhostuser.EncodeU64(1<<63)), want: vuNack},
		vuRow{name: "a whole set-up before SET_OWNER", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			// The spec does not make SET_OWNER a precondition, and the
			// back-end does not enforce it.
			fe.Negotiate(allFeatures)
			fe.SetFeatures(allFeatures)
			fe.SetMemTable()
			vq := fe.NewVQ(1, 64)
			vq.SetupVring(0)
			vq.Enable(true)
			echo(t, vq, "before SET_OWNER", vqtest.ChainOpts{})
			fe.Must(vhostuser.ResetDevice, nil)
			return fe.Do(vhostuser.SetOwner, nil)
		}, want: vuAck},
		vuRow{name: "SET_OWNER twice", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Must(vhostuser.SetOwner, nil)
			return fe.Do(vhostuser.SetOwner, nil)
		}, want: vuAck},
	)
	return rows
}

// migrationRows send bad dirty logs and device state transfers. With
// LOG_SHMFD, SET_LOG_BASE always gets a reply; SET_DEVICE_STATE_FD and
// CHECK_DEVICE_STATE always do. A failure is in the reply, and the
// connection goes on.
func migrationRows() []vuRow {
	memfd := func(t *testing.T, size int64) int {
		fd := tempFD(t, func() (int, error) { return unix.MemfdCreate("log", unix.MFD_CLOEXEC) })
		if err := unix.Ftruncate(fd, size); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	eventfd := func(t *testing.T) int {
		return tempFD(t, func() (int, error) { return unix.Eventfd(0, unix.EFD_CLOEXEC) })
	}
	// pipe returns a pipe's read and write ends, closed when the test ends.
	pipe := func(t *testing.T) (r, w int) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		return p[0], p[1]
	}
	logBase := func(ld vhostuser.LogDescription, fds func(t *testing.T) []int) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			return fe.Do(vhostuser.SetLogBase, ld.Encode(), fds(t)...)
		}
	}
	oneMemfd := func(t *testing.T) []int { return []int{memfd(t, 8192)} }
	transfer := func(dir, phase uint32) []byte {
		return vhostuser.DeviceStateTransfer{Direction: dir, Phase: phase}.Encode()
	}
	state := func(payload []byte, fds func(t *testing.T) []int) func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
		return func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			return fe.Do(vhostuser.SetDeviceStateFD, payload, fds(t)...)
		}
	}
	writeEnd := func(t *testing.T) []int { _, w := pipe(t); return []int{w} }
	readEnd := func(t *testing.T) []int { r, _ := pipe(t); return []int{r} }
	return []vuRow{
		{name: "SET_LOG_BASE of size 0", send: logBase(vhostuser.LogDescription{}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE larger than its memfd", send: logBase(vhostuser.LogDescription{Size: 8193}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE offset beyond its memfd", send: logBase(vhostuser.LogDescription{Size: 8, Offset: 8192}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE offset plus size wrapping around 2^64", send: logBase(vhostuser.LogDescription{Size: 8192, Offset: ^uint64(0) - 4095}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE of 2^63 bytes", send: logBase(vhostuser.LogDescription{Size: 1 << 63}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE without fd", send: logBase(vhostuser.LogDescription{Size: 8}, func(*testing.T) []int { return nil }), want: vuNack},
		{name: "SET_LOG_BASE with two fds", send: logBase(vhostuser.LogDescription{Size: 8}, func(t *testing.T) []int {
			return []int{memfd(t, 8), memfd(t, 8)}
		}), want: vuNack},
		{name: "SET_LOG_BASE with an eventfd", send: logBase(vhostuser.LogDescription{Size: 8}, func(t *testing.T) []int { return []int{eventfd(t)} }), want: vuNack},
		{name: "SET_LOG_BASE with a u64 payload", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			return fe.Do(vhostuser.SetLogBase, vhostuser.EncodeU64(0), memfd(t, 8))
		}, want: vuNack},
		{name: "SET_LOG_BASE with LOG_SHMFD is answered without NEED_REPLY", noReply: true,
			send: logBase(vhostuser.LogDescription{}, oneMemfd), want: vuNack},
		{name: "SET_LOG_BASE of a memfd is mapped", send: logBase(vhostuser.LogDescription{Size: 8192}, oneMemfd), want: vuAck},
		{name: "SET_VRING_ADDR with flags beyond VHOST_VRING_F_LOG", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetVringAddr, vhostuser.VringAddr{Index: 1, Flags: 2}.Encode())
		}, want: vuNack},
		{name: "SET_DEVICE_STATE_FD before DEVICE_STATE is negotiated", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			return fe.Do(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferSave, 0), writeEnd(t)...)
		}, want: vuNack},
		{name: "SET_DEVICE_STATE_FD direction 2", send: state(transfer(2, 0), writeEnd), want: vuNack},
		{name: "SET_DEVICE_STATE_FD phase 1", send: state(transfer(vhostuser.TransferSave, 1), writeEnd), want: vuNack},
		{name: "SET_DEVICE_STATE_FD without fd", send: state(transfer(vhostuser.TransferSave, 0), func(*testing.T) []int { return nil }), want: vuNack},
		{name: "SET_DEVICE_STATE_FD with two fds", send: state(transfer(vhostuser.TransferLoad, 0), func(t *testing.T) []int {
			r, w := pipe(t)
			return []int{r, w}
		}), want: vuNack},
		{name: "SET_DEVICE_STATE_FD payload of 7 bytes", send: state(transfer(vhostuser.TransferSave, 0)[:7], writeEnd), want: vuNack},
		{name: "SET_DEVICE_STATE_FD while a vring runs", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.CHStart(2, 64, allFeatures)
			_, err := fe.Do(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferSave, 0), writeEnd(t)...)
			fe.Must(vhostuser.ResetDevice, nil)
			return nil, err
		}, want: vuNack},
		{name: "SET_DEVICE_STATE_FD load never ended, then a second one", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			// The first transfer waits for data that never comes; the
			// second is refused; RESET_DEVICE cancels the first.
			fe.Negotiate(allFeatures)
			fe.Must(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferLoad, 0), readEnd(t)...)
			_, err := fe.Do(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferLoad, 0), readEnd(t)...)
			fe.Must(vhostuser.ResetDevice, nil)
			return nil, err
		}, want: vuNack},
		{name: "SET_DEVICE_STATE_FD load from /dev/zero, then CHECK_DEVICE_STATE", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			zero := tempFD(t, func() (int, error) { return unix.Open("/dev/zero", unix.O_RDONLY|unix.O_CLOEXEC, 0) })
			fe.Must(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferLoad, 0), zero)
			return fe.Do(vhostuser.CheckDeviceState, nil)
		}, want: vuNack},
		{name: "SET_DEVICE_STATE_FD save of an empty state into a pipe's read end, then CHECK_DEVICE_STATE", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			// The echo device's state is empty: only closing it is
			// left, which succeeds; an fd it cannot write is fine then.
			fe.Negotiate(allFeatures)
			fe.Must(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferSave, 0), readEnd(t)...)
			return fe.Do(vhostuser.CheckDeviceState, nil)
		}, want: vuAck},
		{name: "CHECK_DEVICE_STATE without a transfer", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			return fe.Do(vhostuser.CheckDeviceState, nil)
		}, want: vuNack},
		{name: "CHECK_DEVICE_STATE with a payload", send: func(t *testing.T, fe *vutest.Frontend) ([]byte, error) {
			fe.Negotiate(allFeatures)
			fe.Must(vhostuser.SetDeviceStateFD, transfer(vhostuser.TransferSave, 0), writeEnd(t)...)
			_, err := fe.Do(vhostuser.CheckDeviceState, vhostuser.EncodeU64(0))
			fe.Must(vhostuser.CheckDeviceState, nil)
			return nil, err
		}, want: vuNack},
	}
}
