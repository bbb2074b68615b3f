// Package vutest is a fake vhost-user front-end for tests: a small VMM with
// memfd guest memory, the client side of the vhost-user socket with fd
// passing, and driver-side virtqueues (vqtest) that build descriptor
// chains, kick, and read the used ring. It replays the message orders QEMU
// and Cloud Hypervisor use.
package vutest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/frontend"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// Timeout bounds every wait of the fake front-end.
const Timeout = 10 * time.Second

// Socketpair returns two connected unix stream sockets: the front-end's and
// the back-end's.
func Socketpair(tb testing.TB) (front, back *net.UnixConn) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conv := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "vhost-user")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			tb.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	front, back = conv(fds[0]), conv(fds[1])
	tb.Cleanup(func() { front.Close() })
	return front, back
}

// Layout is the default guest memory of a Frontend: rings in region 0
// (4 MiB at 0), buffers in region 0's upper half and region 1 (60 MiB right
// after it, in another memfd with a nonzero mmap offset), so buffers may
// straddle the two.
var Layout = []vqtest.Layout{
	{GuestAddr: 0, Size: 4 << 20},
	{GuestAddr: 4 << 20, Size: 60 << 20, MmapOffset: 1 << 20},
}

// Frontend is the fake VMM: a frontend.Client (Conn, NeedReply, Log,
// Protocol; Send, SendRaw, Recv, Do) with test-failing helpers.
type Frontend struct {
	*frontend.Client
	tb  testing.TB
	Mem *vqtest.Memory

	Queues map[int]*VQ
	// Features is what was negotiated (Protocol, in Client, too).
	Features uint64
	// Logging makes SendAddr ask for used-ring logging
	// (VHOST_VRING_F_LOG), as QEMU does while it migrates.
	Logging bool

	alloc *vqtest.Alloc
}

// New returns a front-end talking over conn with guest memory laid out as
// layout (Layout when nil).
func New(tb testing.TB, conn *net.UnixConn, layout []vqtest.Layout) *Frontend {
	if layout == nil {
		layout = Layout
	}
	mem := vqtest.NewMemory(tb, layout...)
	last := layout[len(layout)-1]
	f := &Frontend{
		Client: &frontend.Client{Conn: conn},
		tb:     tb, Mem: mem, Queues: make(map[int]*VQ),
		alloc: vqtest.NewAlloc(layout[0].GuestAddr+virtqueue.GuestAddress(layout[0].Size/2),
			uint32(uint64(last.GuestAddr)+last.Size-uint64(layout[0].GuestAddr)-layout[0].Size/2)),
	}
	if len(layout) > 1 && layout[1].GuestAddr != layout[0].GuestAddr+virtqueue.GuestAddress(layout[0].Size) {
		// Regions are not adjacent: buffers only in region 0's upper half.
		f.alloc = vqtest.NewAlloc(layout[0].GuestAddr+virtqueue.GuestAddress(layout[0].Size/2), uint32(layout[0].Size/2))
	}
	return f
}

// ErrNack is a REPLY_ACK with a nonzero status.
var ErrNack = frontend.ErrNack

// Must is Do failing the test on error.
func (f *Frontend) Must(req vhostuser.Request, payload []byte, fds ...int) []byte {
	f.tb.Helper()
	p, err := f.Do(req, payload, fds...)
	if err != nil {
		f.tb.Fatalf("%v: %v", req, err)
	}
	return p
}

// Sync waits until the back-end has handled every message sent so far, by
// a GET_FEATURES round trip.
func (f *Frontend) Sync() {
	f.tb.Helper()
	f.Must(vhostuser.GetFeatures, nil)
}

// GetU64 sends a GET whose reply is a u64.
func (f *Frontend) GetU64(req vhostuser.Request) uint64 {
	f.tb.Helper()
	v, err := vhostuser.DecodeU64(f.Must(req, nil))
	if err != nil {
		f.tb.Fatalf("%v: %v", req, err)
	}
	return v
}

// Negotiate does GET_FEATURES, GET_PROTOCOL_FEATURES and
// SET_PROTOCOL_FEATURES with the offered protocol features masked by
// wantProto.
func (f *Frontend) Negotiate(wantProto uint64) {
	f.tb.Helper()
	feat := f.GetU64(vhostuser.GetFeatures)
	if feat&vhostuser.FeatureProtocolFeatures == 0 {
		f.tb.Fatalf("back-end features %#x lack PROTOCOL_FEATURES", feat)
	}
	f.Features = feat
	proto := f.GetU64(vhostuser.GetProtocolFeatures)
	f.Protocol = proto & wantProto
	f.Must(vhostuser.SetProtocolFeatures, vhostuser.EncodeU64(f.Protocol))
}

// SetFeatures acks the virtio features offered and wanted, except
// VHOST_F_LOG_ALL, which a VMM sets only while it migrates
// (QEMUStartLogging).
func (f *Frontend) SetFeatures(want uint64) {
	f.tb.Helper()
	f.Features &= want &^ virtqueue.FeatureLogAll
	f.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(f.Features))
}

// SetMemTable sends the whole memory table with one fd per region.
func (f *Frontend) SetMemTable() {
	f.tb.Helper()
	fds := make([]int, len(f.Mem.Regions))
	for i, r := range f.Mem.Regions {
		fds[i] = r.FD
	}
	f.Must(vhostuser.SetMemTable, vhostuser.EncodeMemTable(f.Mem.Specs()), fds...)
}

// AddMemRegs sends ADD_MEM_REG for every region of mem.
func (f *Frontend) AddMemRegs(mem *vqtest.Memory) {
	f.tb.Helper()
	for _, r := range mem.Regions {
		f.Must(vhostuser.AddMemReg, vhostuser.EncodeMemReg(r.Spec), r.FD)
	}
}

// VQ is one virtqueue of the fake front-end.
type VQ struct {
	Index  int
	Driver *vqtest.Driver
	Kick   int // eventfd the front-end signals
	Call   int // eventfd the back-end signals
	f      *Frontend
}

// RingAddr is where vring i of size entries lives: 64 KiB apart from 64 KiB
// up in region 0.
func RingAddr(i int) virtqueue.GuestAddress {
	return virtqueue.GuestAddress(0x10000 * (i + 1))
}

// NewVQ prepares vring i (memory, eventfds) without telling the back-end.
func (f *Frontend) NewVQ(i int, size uint16) *VQ {
	f.tb.Helper()
	if vqtest.RingBytes(size) > 0x10000 {
		f.tb.Fatalf("ring of %d entries does not fit 64 KiB", size)
	}
	drv := vqtest.NewDriver(f.Mem, size, RingAddr(i), f.alloc)
	drv.EventIdx = f.Features&virtqueue.FeatureEventIdx != 0
	vq := &VQ{Index: i, Driver: drv, Kick: newEventfd(f.tb), Call: newEventfd(f.tb), f: f}
	f.Queues[i] = vq
	return vq
}

func newEventfd(tb testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

// SendNum sends SET_VRING_NUM.
func (vq *VQ) SendNum() {
	vq.f.Must(vhostuser.SetVringNum, vhostuser.VringState{Index: uint32(vq.Index), Num: uint32(vq.Driver.Size)}.Encode())
}

// SendAddr sends SET_VRING_ADDR with the front-end's addresses and, while
// the front-end is Logging, VHOST_VRING_F_LOG with the used ring's guest
// address as the log address (QEMU's vhost_virtqueue_set_addr).
func (vq *VQ) SendAddr() {
	m := vq.f.Mem
	a := vhostuser.VringAddr{
		Index: uint32(vq.Index),
		Desc:  m.UserAddr(vq.Driver.Desc), Used: m.UserAddr(vq.Driver.Used), Avail: m.UserAddr(vq.Driver.Avail),
		Log: uint64(vq.Driver.Used),
	}
	if vq.f.Logging {
		a.Flags = vhostuser.VringFLog
	}
	vq.f.Must(vhostuser.SetVringAddr, a.Encode())
}

// SendBase sends SET_VRING_BASE.
func (vq *VQ) SendBase(base uint16) {
	vq.f.Must(vhostuser.SetVringBase, vhostuser.VringState{Index: uint32(vq.Index), Num: uint32(base)}.Encode())
}

// SendKick sends SET_VRING_KICK with the kick eventfd.
func (vq *VQ) SendKick() {
	vq.f.Must(vhostuser.SetVringKick, vhostuser.EncodeU64(uint64(vq.Index)), vq.Kick)
}

// SendCall sends SET_VRING_CALL with the call eventfd.
func (vq *VQ) SendCall() {
	vq.f.Must(vhostuser.SetVringCall, vhostuser.EncodeU64(uint64(vq.Index)), vq.Call)
}

// Enable sends SET_VRING_ENABLE.
func (vq *VQ) Enable(on bool) {
	var n uint32
	if on {
		n = 1
	}
	vq.f.Must(vhostuser.SetVringEnable, vhostuser.VringState{Index: uint32(vq.Index), Num: n}.Encode())
}

// GetBase sends GET_VRING_BASE, which stops the ring, and returns the base.
func (vq *VQ) GetBase() uint16 {
	vq.f.tb.Helper()
	st, err := vhostuser.DecodeVringState(vq.f.Must(vhostuser.GetVringBase, vhostuser.VringState{Index: uint32(vq.Index)}.Encode()))
	if err != nil || st.Index != uint32(vq.Index) {
		vq.f.tb.Fatalf("GET_VRING_BASE reply %+v, %v", st, err)
	}
	return uint16(st.Num)
}

// DoKick signals the kick eventfd.
func (vq *VQ) DoKick() {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	unix.Write(vq.Kick, b[:])
}

// Add publishes a chain and kicks.
func (vq *VQ) Add(out [][]byte, in []uint32, o vqtest.ChainOpts) uint16 {
	vq.f.tb.Helper()
	for {
		head, err := vq.Driver.AddChain(out, in, o)
		if errors.Is(err, vqtest.ErrFull) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			vq.f.tb.Fatal(err)
		}
		vq.DoKick()
		return head
	}
}

// Called waits up to d for the call eventfd and reports whether it fired.
func (vq *VQ) Called(d time.Duration) bool {
	pfd := []unix.PollFd{{Fd: int32(vq.Call), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(d/time.Millisecond))
	if err != nil || n == 0 {
		return false
	}
	var b [8]byte
	unix.Read(vq.Call, b[:])
	return true
}

// Wait waits for the next used element, as a guest does: on the call
// eventfd, re-checking the used ring.
func (vq *VQ) Wait() (vqtest.Used, error) {
	deadline := time.Now().Add(Timeout)
	for {
		if u, ok := vq.Driver.PopUsed(); ok {
			return u, nil
		}
		if time.Now().After(deadline) {
			return vqtest.Used{}, fmt.Errorf("vring %d: no used element within %v", vq.Index, Timeout)
		}
		vq.Called(20 * time.Millisecond)
	}
}

// SetupVring sends NUM, ADDR, BASE, KICK and CALL for vq, in QEMU's order.
func (vq *VQ) SetupVring(base uint16) {
	vq.SendNum()
	vq.SendAddr()
	vq.SendBase(base)
	vq.SendKick()
	vq.SendCall()
}

// QEMUStart replays QEMU's vhost-user-fs start-up: SET_OWNER,
// GET_FEATURES, GET/SET_PROTOCOL_FEATURES (CONFIG stripped), GET_QUEUE_NUM,
// GET_MAX_MEM_SLOTS, SET_BACKEND_REQ_FD, SET_FEATURES, ADD_MEM_REG per
// region, per vring SET_VRING_NUM/ADDR/BASE/KICK/CALL, then
// SET_VRING_ENABLE for each. NEED_REPLY is set once REPLY_ACK is
// negotiated on the messages QEMU sets it on (here: all after it).
func (f *Frontend) QEMUStart(nvqs int, size uint16, features uint64) {
	f.tb.Helper()
	f.QEMUInit(nvqs)
	f.SetFeatures(features)
	f.AddMemRegs(f.Mem)
	for i := range nvqs {
		f.NewVQ(i, size).SetupVring(0)
	}
	for i := range nvqs {
		f.Queues[i].Enable(true)
	}
}

// QEMUInit replays what QEMU sends when the device is realized
// (vhost_dev_init), before the guest drives it: SET_OWNER, GET_FEATURES,
// GET/SET_PROTOCOL_FEATURES (CONFIG stripped), GET_QUEUE_NUM,
// GET_MAX_MEM_SLOTS and SET_BACKEND_REQ_FD. A migration destination sees
// this, then the device state, then QEMUResume.
func (f *Frontend) QEMUInit(nvqs int) {
	f.tb.Helper()
	f.Must(vhostuser.SetOwner, nil)
	f.Negotiate(^uint64(vhostuser.ProtocolConfig))
	if f.Protocol&vhostuser.ProtocolReplyAck != 0 {
		f.NeedReply = true
	}
	if n := f.GetU64(vhostuser.GetQueueNum); n < uint64(nvqs) {
		f.tb.Fatalf("GET_QUEUE_NUM %d < %d", n, nvqs)
	}
	if n := f.GetU64(vhostuser.GetMaxMemSlots); n < uint64(len(f.Mem.Regions)) {
		f.tb.Fatalf("GET_MAX_MEM_SLOTS %d", n)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(func() { unix.Close(sp[0]) })
	f.Must(vhostuser.SetBackendReqFD, nil, sp[1])
	unix.Close(sp[1])
}

// CHStart replays Cloud Hypervisor's start-up: SET_OWNER, GET_FEATURES,
// GET/SET_PROTOCOL_FEATURES, NEED_REPLY on every message from then on,
// GET_QUEUE_NUM, SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM for every
// vring, then per vring SET_VRING_ADDR/BASE/CALL/KICK and
// SET_VRING_ENABLE.
func (f *Frontend) CHStart(nvqs int, size uint16, features uint64) {
	f.tb.Helper()
	f.Must(vhostuser.SetOwner, nil)
	f.Negotiate(vhostuser.ProtocolMQ | vhostuser.ProtocolConfigureMemSlots | vhostuser.ProtocolReplyAck |
		vhostuser.ProtocolInflightShmfd | vhostuser.ProtocolLogShmfd | vhostuser.ProtocolDeviceState)
	if f.Protocol&vhostuser.ProtocolReplyAck == 0 {
		f.tb.Fatal("REPLY_ACK not offered")
	}
	f.NeedReply = true
	if n := f.GetU64(vhostuser.GetQueueNum); n < uint64(nvqs) {
		f.tb.Fatalf("GET_QUEUE_NUM %d < %d", n, nvqs)
	}
	f.SetFeatures(features)
	f.SetMemTable()
	for i := range nvqs {
		f.NewVQ(i, size).SendNum()
	}
	for i := range nvqs {
		vq := f.Queues[i]
		vq.SendAddr()
		vq.SendBase(0)
		vq.SendCall()
		vq.SendKick()
		vq.Enable(true)
	}
}

// CHPause replays Cloud Hypervisor's pause of a vring: SET_VRING_ENABLE(0)
// and GET_VRING_BASE, returning the base.
func (vq *VQ) CHPause() uint16 {
	vq.Enable(false)
	return vq.GetBase()
}

// CHResume sets the vring up again at base and enables it.
func (vq *VQ) CHResume(base uint16) {
	vq.SendAddr()
	vq.SendBase(base)
	vq.SendCall()
	vq.SendKick()
	vq.Enable(true)
}
