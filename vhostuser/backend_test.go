package vhostuser_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

func testLogger() hclog.Logger {
	if os.Getenv("VHOSTUSER_DEBUG") != "" {
		return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr})
	}
	return hclog.NewNullLogger()
}

type harness struct {
	dev  *echoDev
	fe   *vutest.Frontend
	done chan error
}

// start runs a backend for dev on one end of a socketpair and returns the
// fake front-end on the other.
func start(t *testing.T, dev *echoDev, layout []vqtest.Layout) *harness {
	t.Helper()
	front, back := vutest.Socketpair(t)
	b := vhostuser.NewBackend(dev, vhostuser.Options{Logger: testLogger()})
	h := &harness{dev: dev, done: make(chan error, 1)}
	go func() { h.done <- b.ServeConn(context.Background(), back) }()
	t.Cleanup(func() {
		front.Close()
		select {
		case <-h.done:
		case <-time.After(vutest.Timeout):
			t.Error("ServeConn did not return after the front-end closed")
		}
	})
	h.fe = vutest.New(t, front, layout)
	return h
}

// end closes the front-end and returns ServeConn's result.
func (h *harness) end(t *testing.T) error {
	t.Helper()
	h.fe.Conn.Close()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(vutest.Timeout):
		t.Fatal("ServeConn did not return")
		return nil
	}
}

// dropped reports whether the back-end closed the connection.
func (h *harness) dropped(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		h.done <- err
		if err == nil {
			t.Fatal("ServeConn returned nil, want the connection dropped with an error")
		}
		return err
	case <-time.After(vutest.Timeout):
		t.Fatal("connection not dropped")
		return nil
	}
}

func echo(t *testing.T, vq *vutest.VQ, msg string, o vqtest.ChainOpts) {
	t.Helper()
	head := vq.Add([][]byte{[]byte(msg)}, []uint32{uint32(len(msg))}, o)
	u, err := vq.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if u.Head != head || string(u.Data) != msg {
		t.Fatalf("vring %d: used head %d data %q, want %d %q", vq.Index, u.Head, u.Data, head, msg)
	}
}

const allFeatures = ^uint64(0)

func TestQEMUSequence(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.QEMUStart(2, 128, allFeatures)
	want := []vhostuser.Request{
		vhostuser.SetOwner, vhostuser.GetFeatures, vhostuser.GetProtocolFeatures, vhostuser.SetProtocolFeatures,
		vhostuser.GetQueueNum, vhostuser.GetMaxMemSlots, vhostuser.SetBackendReqFD, vhostuser.SetFeatures,
		vhostuser.AddMemReg, vhostuser.AddMemReg,
	}
	if !slices.Equal(fe.Log[:len(want)], want) {
		t.Fatalf("message order %v", fe.Log)
	}
	if fe.Protocol&vhostuser.ProtocolConfig != 0 {
		t.Error("CONFIG offered although the device has no config space")
	}
	wantProto := uint64(vhostuser.ProtocolMQ | vhostuser.ProtocolLogShmfd | vhostuser.ProtocolReplyAck |
		vhostuser.ProtocolResetDevice | vhostuser.ProtocolConfigureMemSlots | vhostuser.ProtocolStatus |
		vhostuser.ProtocolDeviceState)
	if fe.Protocol != wantProto {
		t.Errorf("protocol features %#x, want %#x", fe.Protocol, wantProto)
	}
	if fe.Features&virtqueue.FeatureEventIdx == 0 || fe.Features&virtqueue.FeatureVersion1 == 0 {
		t.Errorf("features %#x", fe.Features)
	}
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"start 0", "start 1"}) {
		t.Fatalf("device events %v", ev)
	}
	echo(t, fe.Queues[1], "hello", vqtest.ChainOpts{})
	echo(t, fe.Queues[0], "hiprio", vqtest.ChainOpts{Indirect: true})
	// A buffer straddling the two regions (the second in another memfd).
	big := bytes.Repeat([]byte("x"), 3<<20)
	head := fe.Queues[1].Add([][]byte{big}, []uint32{3 << 20}, vqtest.ChainOpts{})
	if u, err := fe.Queues[1].Wait(); err != nil || u.Head != head || !bytes.Equal(u.Data, big) {
		t.Fatalf("3 MiB echo: %v", err)
	}
	// Stop: GET_VRING_BASE reports the next available index.
	if base := fe.Queues[1].GetBase(); base != 2 {
		t.Fatalf("GET_VRING_BASE = %d, want 2", base)
	}
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"stop 1"}) {
		t.Fatalf("device events %v", ev)
	}
	if err := h.end(t); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"stop 0", "reset"}) {
		t.Fatalf("device events after disconnect %v", ev)
	}
}

func TestCloudHypervisorSequence(t *testing.T) {
	h := start(t, newEchoDev(5, nil), nil)
	fe := h.fe
	fe.CHStart(5, 256, allFeatures)
	h.dev.Events()
	for i := 1; i < 5; i++ {
		echo(t, fe.Queues[i], "request queue", vqtest.ChainOpts{Indirect: i%2 == 0})
	}

	// Memory hotplug: a new region far away, then a chain using it.
	hot := vqtest.NewMemory(t, vqtest.Layout{GuestAddr: 1 << 32, Size: 1 << 20})
	fe.AddMemRegs(hot)
	vq := fe.Queues[3]
	hot.Write(1<<32, []byte("hot-plugged"))
	vq.Driver.WriteDesc(200, vqtest.Desc{Addr: 1 << 32, Len: 11, Flags: virtqueue.DescFNext, Next: 201})
	vq.Driver.WriteDesc(201, vqtest.Desc{Addr: 1<<32 + 4096, Len: 11, Flags: virtqueue.DescFWrite})
	vq.Driver.ReuseDescs(200, 201)
	vq.Driver.PublishRaw(200)
	vq.DoKick()
	if u, err := vq.Wait(); err != nil || u.Head != 200 || u.Len != 11 {
		t.Fatalf("chain in hot-plugged memory: %+v, %v", u, err)
	}
	if got := hot.Bytes(1<<32+4096, 11); string(got) != "hot-plugged" {
		t.Fatalf("hot-plugged region holds %q", got)
	}
	fe.Must(vhostuser.RemMemReg, vhostuser.EncodeMemReg(hot.Regions[0].Spec))

	// Pause and resume queue 2: chains published while paused wait, and
	// the ring resumes at the reported base.
	vq = fe.Queues[2]
	base := vq.CHPause()
	if base != 1 {
		t.Fatalf("base after pause %d, want 1", base)
	}
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"stop 2"}) {
		t.Fatalf("device events %v", ev)
	}
	head := vq.Add([][]byte{[]byte("while paused")}, []uint32{12}, vqtest.ChainOpts{})
	time.Sleep(20 * time.Millisecond)
	if _, ok := vq.Driver.PopUsed(); ok {
		t.Fatal("a paused ring was served")
	}
	vq.CHResume(base)
	if u, err := vq.Wait(); err != nil || u.Head != head || string(u.Data) != "while paused" {
		t.Fatalf("after resume: %+v, %v", u, err)
	}
	echo(t, vq, "after resume", vqtest.ChainOpts{})
	if base := vq.GetBase(); base != 3 {
		t.Fatalf("base %d, want 3", base)
	}
}

func TestWithoutProtocolFeatures(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	feat := fe.GetU64(vhostuser.GetFeatures)
	fe.Features = feat &^ vhostuser.FeatureProtocolFeatures
	fe.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(fe.Features))
	fe.SetMemTable()
	vq := fe.NewVQ(1, 64)
	vq.SendNum()
	vq.SendAddr()
	vq.SendBase(0)
	vq.SendCall()
	vq.SendKick() // no SET_VRING_ENABLE: the ring is enabled already
	fe.Sync()
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"start 1"}) {
		t.Fatalf("device events %v", ev)
	}
	echo(t, vq, "legacy", vqtest.ChainOpts{})
}

func TestRingStates(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.NeedReply = true
	fe.Negotiate(allFeatures)
	fe.SetFeatures(allFeatures)
	fe.SetMemTable()
	vq := fe.NewVQ(1, 64)
	vq.SendNum()
	vq.SendAddr()
	vq.SendBase(0)
	vq.SendCall()
	head := vq.Add([][]byte{[]byte("early")}, []uint32{5}, vqtest.ChainOpts{}) // kicked before the ring starts
	vq.SendKick()
	if ev := h.dev.Events(); len(ev) != 0 {
		t.Fatalf("a started but disabled ring is served: %v", ev)
	}
	// Setup of a started ring is refused.
	if _, err := fe.Do(vhostuser.SetVringNum, vhostuser.VringState{Index: 1, Num: 32}.Encode()); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("SET_VRING_NUM on a started ring: %v", err)
	}
	if _, err := fe.Do(vhostuser.SetVringBase, vhostuser.VringState{Index: 1, Num: 5}.Encode()); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("SET_VRING_BASE on a started ring: %v", err)
	}
	vq.Enable(true)
	if u, err := vq.Wait(); err != nil || u.Head != head {
		t.Fatalf("chain kicked before enable: %+v, %v", u, err)
	}
	vq.Enable(false)
	vq.Enable(false) // idempotent
	vq.Enable(true)
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"start 1", "stop 1", "start 1"}) {
		t.Fatalf("device events %v", ev)
	}
	echo(t, vq, "again", vqtest.ChainOpts{})
	// A second SET_VRING_KICK replaces the fd and goes on where it was.
	vq.Kick = newEventfd(t)
	vq.SendKick()
	echo(t, vq, "new kick fd", vqtest.ChainOpts{})
	if base := vq.GetBase(); base != 3 {
		t.Fatalf("base %d, want 3", base)
	}
	// GET_VRING_BASE of a ring that never started reports its base.
	if st, err := vhostuser.DecodeVringState(fe.Must(vhostuser.GetVringBase, vhostuser.VringState{Index: 0}.Encode())); err != nil || st.Num != 0 {
		t.Fatalf("GET_VRING_BASE of an idle ring: %+v %v", st, err)
	}
	// Kick without an fd: the ring is polled.
	vq.SendBase(3)
	fe.Must(vhostuser.SetVringKick, vhostuser.EncodeU64(1|vhostuser.VringNoFD))
	head = vq.Driver.AvailIdx()
	if _, err := vq.Driver.AddChain([][]byte{[]byte("polled")}, []uint32{6}, vqtest.ChainOpts{}); err != nil {
		t.Fatal(err)
	}
	if u, err := vq.Wait(); err != nil || string(u.Data) != "polled" {
		t.Fatalf("polled ring: %+v %v (%d)", u, err, head)
	}
}

func newEventfd(t *testing.T) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestCallFDSwap(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	vq := fe.Queues[1]
	echo(t, vq, "one", vqtest.ChainOpts{})
	old := vq.Call
	vq.Called(0)
	// SET_VRING_CALL with NEED_REPLY: once acked, the new fd is in use.
	vq.Call = newEventfd(t)
	vq.SendCall()
	vq.Add([][]byte{[]byte("two")}, []uint32{3}, vqtest.ChainOpts{})
	if !vq.Called(5 * time.Second) {
		t.Fatal("no interrupt on the new call fd")
	}
	pfd := []unix.PollFd{{Fd: int32(old), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 0); n != 0 {
		t.Fatal("interrupt on the old call fd")
	}
	// No call fd at all: the back-end goes on without notifying.
	fe.Must(vhostuser.SetVringCall, vhostuser.EncodeU64(1|vhostuser.VringNoFD))
	vq.Add([][]byte{[]byte("three")}, []uint32{5}, vqtest.ChainOpts{})
	for range 2 {
		if u, err := vq.Driver.WaitUsed(vutest.Timeout); err != nil || (string(u.Data) != "two" && string(u.Data) != "three") {
			t.Fatalf("%+v %v", u, err)
		}
	}
}

func TestConfigSpace(t *testing.T) {
	cfg := []byte("0123456789abcdef0123456789abcdef0123\x04\x00\x00\x00")
	h := start(t, newEchoDev(2, cfg), nil)
	fe := h.fe
	fe.Negotiate(allFeatures)
	if fe.Protocol&vhostuser.ProtocolConfig == 0 {
		t.Fatal("CONFIG not offered by a device with a config space")
	}
	get := func(off, size uint32) []byte {
		return fe.Must(vhostuser.GetConfig, vhostuser.ConfigAccess{Offset: off, Data: make([]byte, size)}.Encode())
	}
	c, err := vhostuser.DecodeConfigAccess(get(0, 40))
	if err != nil || !bytes.Equal(c.Data, cfg) {
		t.Fatalf("GET_CONFIG: %q %v", c.Data, err)
	}
	c, err = vhostuser.DecodeConfigAccess(get(36, 4))
	if err != nil || !bytes.Equal(c.Data, []byte{4, 0, 0, 0}) || c.Offset != 36 {
		t.Fatalf("GET_CONFIG at 36: %+v %v", c, err)
	}
	if p := get(30, 20); len(p) != 0 {
		t.Fatalf("GET_CONFIG past the end answered %d bytes", len(p))
	}
	fe.NeedReply = true
	if _, err := fe.Do(vhostuser.SetConfig, vhostuser.ConfigAccess{Offset: 0, Data: []byte("x")}.Encode()); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("SET_CONFIG on a read-only space: %v", err)
	}

	h2 := start(t, newEchoDev(2, nil), nil)
	h2.fe.Negotiate(allFeatures)
	if h2.fe.Protocol&vhostuser.ProtocolConfig != 0 {
		t.Fatal("CONFIG offered without a config space")
	}
	if p := h2.fe.Must(vhostuser.GetConfig, vhostuser.ConfigAccess{Data: make([]byte, 4)}.Encode()); len(p) != 0 {
		t.Fatalf("GET_CONFIG without a config space answered %d bytes", len(p))
	}
}

func TestStatusAndReset(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	fe.Must(vhostuser.SetStatus, vhostuser.EncodeU64(0xf))
	if v := fe.GetU64(vhostuser.GetStatus); v != 0xf {
		t.Fatalf("GET_STATUS = %#x", v)
	}
	h.dev.Events()
	fe.Must(vhostuser.ResetDevice, nil)
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"stop 0", "stop 1", "reset"}) {
		t.Fatalf("device events %v", ev)
	}
	if v := fe.GetU64(vhostuser.GetStatus); v != 0 {
		t.Fatalf("GET_STATUS after reset = %#x", v)
	}
	// The device can be set up again on the same connection.
	fe.SetFeatures(allFeatures)
	vq := fe.NewVQ(1, 64)
	vq.SetupVring(0)
	vq.Enable(true)
	echo(t, vq, "after reset", vqtest.ChainOpts{})
	// RESET_OWNER stops the rings too.
	fe.Must(vhostuser.ResetOwner, nil)
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"start 1", "stop 1"}) {
		t.Fatalf("device events %v", ev)
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestHostileMessages(t *testing.T) {
	pipeFD := func(t *testing.T) int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		t.Cleanup(func() { unix.Close(p[0]) })
		return p[0]
	}
	hdr := func(req vhostuser.Request, flags, size uint32) []byte {
		return vhostuser.Header{Request: req, Flags: flags, Size: size}.Encode(nil)
	}
	region := virtqueue.RegionSpec{GuestAddr: 0, Size: 4 << 20, UserAddr: vqtest.DefaultUserBase}
	tests := []struct {
		name string
		// send sends the hostile message; it may use the front-end's
		// memory fds.
		send func(t *testing.T, fe *vutest.Frontend) error
		// drop: the connection must end; otherwise a NACK (when
		// NEED_REPLY) and the connection goes on.
		drop bool
	}{
		{"unknown request with NEED_REPLY", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(99, nil)
			return err
		}, false},
		{"unknown request without NEED_REPLY", func(t *testing.T, fe *vutest.Frontend) error {
			return fe.Send(99, 0, nil)
		}, true},
		{"oversized payload", func(t *testing.T, fe *vutest.Frontend) error {
			return fe.SendRaw(hdr(vhostuser.SetFeatures, 1, 1<<20))
		}, true},
		{"wrong version", func(t *testing.T, fe *vutest.Frontend) error {
			return fe.SendRaw(hdr(vhostuser.SetOwner, 2, 0))
		}, true},
		{"nine fds", func(t *testing.T, fe *vutest.Frontend) error {
			fds := make([]int, 9)
			for i := range fds {
				fds[i] = fe.Mem.Regions[0].FD
			}
			return fe.SendRaw(hdr(vhostuser.SetOwner, 1, 0), fds...)
		}, true},
		{"truncated payload", func(t *testing.T, fe *vutest.Frontend) error {
			fe.SendRaw(append(hdr(vhostuser.SetFeatures, 1, 8), 1, 2, 3))
			return fe.Conn.CloseWrite()
		}, true},
		{"short u64", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetFeatures, []byte{1, 2, 3, 4})
			return err
		}, false},
		{"features not offered", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetFeatures, vhostuser.EncodeU64(1<<63))
			return err
		}, false},
		{"protocol features not offered", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetProtocolFeatures, vhostuser.EncodeU64(vhostuser.ProtocolBackendReq))
			return err
		}, false},
		{"vring index out of range", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringNum, vhostuser.VringState{Index: 99, Num: 64}.Encode())
			return err
		}, false},
		{"vring size not a power of two", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringNum, vhostuser.VringState{Index: 0, Num: 100}.Encode())
			return err
		}, false},
		{"vring size too big", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringNum, vhostuser.VringState{Index: 0, Num: 2048}.Encode())
			return err
		}, false},
		{"vring base too big", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringBase, vhostuser.VringState{Index: 0, Num: 1 << 16}.Encode())
			return err
		}, false},
		{"kick without fd", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(0))
			return err
		}, false},
		{"kick with two fds", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(0), fe.Mem.Regions[0].FD, fe.Mem.Regions[1].FD)
			return err
		}, false},
		{"kick index out of range", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(200), fe.Mem.Regions[0].FD)
			return err
		}, false},
		{"kick with unknown bits", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringCall, vhostuser.EncodeU64(1<<20), fe.Mem.Regions[0].FD)
			return err
		}, false},
		{"kick before the ring is set up", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringKick, vhostuser.EncodeU64(0), pipeFD(t))
			return err
		}, false},
		{"enable with 2", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetVringEnable, vhostuser.VringState{Index: 0, Num: 2}.Encode())
			return err
		}, false},
		{"memory table of nine regions", func(t *testing.T, fe *vutest.Frontend) error {
			p := vhostuser.EncodeMemTable(make([]virtqueue.RegionSpec, 8))
			p[0] = 9
			_, err := fe.Do(vhostuser.SetMemTable, p)
			return err
		}, false},
		{"memory table with fewer fds", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(fe.Mem.Specs()), fe.Mem.Regions[0].FD)
			return err
		}, false},
		{"memory region larger than its file", func(t *testing.T, fe *vutest.Frontend) error {
			r := region
			r.Size = 1 << 30
			_, err := fe.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable([]virtqueue.RegionSpec{r}), fe.Mem.Regions[0].FD)
			return err
		}, false},
		{"memory region from a pipe", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.AddMemReg, vhostuser.EncodeMemReg(region), pipeFD(t))
			return err
		}, false},
		{"overlapping memory regions", func(t *testing.T, fe *vutest.Frontend) error {
			fe.Must(vhostuser.AddMemReg, vhostuser.EncodeMemReg(region), fe.Mem.Regions[0].FD)
			r := region
			r.GuestAddr = 4096
			r.Size = 4096
			_, err := fe.Do(vhostuser.AddMemReg, vhostuser.EncodeMemReg(r), fe.Mem.Regions[0].FD)
			fe.Must(vhostuser.RemMemReg, vhostuser.EncodeMemReg(region))
			return err
		}, false},
		{"add memory region without fd", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.AddMemReg, vhostuser.EncodeMemReg(region))
			return err
		}, false},
		{"remove an unknown region", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.RemMemReg, vhostuser.EncodeMemReg(region), fe.Mem.Regions[0].FD)
			return err
		}, false},
		{"status too big", func(t *testing.T, fe *vutest.Frontend) error {
			_, err := fe.Do(vhostuser.SetStatus, vhostuser.EncodeU64(0x100))
			return err
		}, false},
		{"vring index out of range without NEED_REPLY", func(t *testing.T, fe *vutest.Frontend) error {
			fe.NeedReply = false
			return fe.Send(vhostuser.SetVringNum, 0, vhostuser.VringState{Index: 2, Num: 64}.Encode())
		}, true},
		{"GET_VRING_BASE out of range", func(t *testing.T, fe *vutest.Frontend) error {
			fe.NeedReply = false
			return fe.Send(vhostuser.GetVringBase, 0, vhostuser.VringState{Index: 7}.Encode())
		}, true},
		{"GET_VRING_BASE malformed", func(t *testing.T, fe *vutest.Frontend) error {
			fe.NeedReply = false
			return fe.Send(vhostuser.GetVringBase, 0, []byte{1})
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := openFDs(t)
			t.Run("session", func(t *testing.T) {
				h := start(t, newEchoDev(2, nil), nil)
				fe := h.fe
				fe.NeedReply = !tt.drop
				err := tt.send(t, fe)
				if tt.drop {
					h.dropped(t)
					return
				}
				if !errors.Is(err, vutest.ErrNack) {
					t.Fatalf("got %v, want a failed REPLY_ACK", err)
				}
				// Still serving.
				fe.QEMUStart(2, 64, allFeatures)
				echo(t, fe.Queues[1], "still serving", vqtest.ChainOpts{})
				if err := h.end(t); err != nil {
					t.Fatalf("ServeConn: %v", err)
				}
			})
			if after := openFDs(t); after > before {
				t.Fatalf("%d fds open after the session, %d before", after, before)
			}
		})
	}
}

func TestServeListener(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vhost.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dev := newEchoDev(2, nil)
	b := vhostuser.NewBackend(dev, vhostuser.Options{Logger: testLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, l, true) }()
	for round := range 2 {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		fe := vutest.New(t, c, nil)
		fe.QEMUStart(2, 64, allFeatures)
		echo(t, fe.Queues[1], "round", vqtest.ChainOpts{})
		c.Close()
		_ = round
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(vutest.Timeout):
		t.Fatal("Serve did not return after cancel")
	}
	// Without keepServing, Serve returns when the front-end leaves.
	go func() { done <- b.Serve(context.Background(), l, false) }()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fe := vutest.New(t, c, nil)
	fe.Negotiate(allFeatures)
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(vutest.Timeout):
		t.Fatal("Serve did not return after the front-end left")
	}
}

func TestDisconnectMidRequest(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	// A half-written message and then the front-end is gone.
	fe.SendRaw(vhostuser.Header{Request: vhostuser.SetFeatures, Flags: 1, Size: 8}.Encode(nil))
	fe.Conn.Close()
	err := <-h.done
	h.done <- err
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ServeConn: %v", err)
	}
	if ev := h.dev.Events(); !slices.Equal(ev, []string{"start 0", "start 1", "stop 0", "stop 1", "reset"}) {
		t.Fatalf("device events %v", ev)
	}
}
