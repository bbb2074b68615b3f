package frontend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// Config says how Start sets a device up.
type Config struct {
	// QueueSize is the number of entries of every vring (a power of two;
	// 0 means 256).
	QueueSize uint16
	// MaxRequestQueues caps the request queues enabled (0: all the
	// back-end offers).
	MaxRequestQueues int
	// DataSize is the guest memory for buffers, after the rings.
	DataSize uint64
	// Features are the virtio features acked when offered (0 means
	// VERSION_1 and EVENT_IDX); PROTOCOL_FEATURES is always acked.
	Features uint64
}

// Queue is one started vring.
type Queue struct {
	// Index is the vring's index (0 is virtio-fs's hiprio queue).
	Index int
	// Driver is the split ring.
	Driver *Driver
	// Kick is the eventfd the front-end signals; Call the one the
	// back-end signals (non-blocking).
	Kick, Call int
}

// Notify signals the kick eventfd.
func (q *Queue) Notify() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	_, err := unix.Write(q.Kick, b[:])
	return err
}

// WaitCall waits up to d for the call eventfd, consumes it and reports
// whether it fired.
func (q *Queue) WaitCall(d time.Duration) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(q.Call), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(d/time.Millisecond))
	if errors.Is(err, unix.EINTR) {
		return false, nil
	}
	if err != nil || n == 0 {
		return false, err
	}
	var b [8]byte
	if _, err := unix.Read(q.Call, b[:]); err != nil && err != unix.EAGAIN {
		return false, err
	}
	return true, nil
}

// Device is a started vhost-user-fs device: the socket, guest memory, the
// hiprio queue and the request queues.
type Device struct {
	*Client
	// Mem is the guest memory; Data allocates buffers in it.
	Mem  *Memory
	Data *Alloc
	// Features are the acked virtio features.
	Features uint64
	// Offered is the number of request queues the back-end offers
	// (GET_QUEUE_NUM less the hiprio queue, capped by the config space's
	// num_request_queues when CONFIG is negotiated; 1 without MQ).
	Offered int
	// HiPrio is vring 0; Requests are vrings 1.. that were enabled.
	HiPrio   *Queue
	Requests []*Queue
	fds      []int
}

// wantProtocol are the protocol features a Device uses.
const wantProtocol = vhostuser.ProtocolMQ | vhostuser.ProtocolReplyAck | vhostuser.ProtocolConfig

// Start connects to the back-end at socket and starts a virtio-fs device as
// QEMU does: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
// GET_QUEUE_NUM (and GET_CONFIG's num_request_queues), SET_FEATURES,
// SET_MEM_TABLE with one memfd, per vring SET_VRING_NUM/ADDR/BASE/KICK/CALL,
// then SET_VRING_ENABLE for each.
func Start(socket string, cfg Config) (*Device, error) {
	c, err := Dial(socket)
	if err != nil {
		return nil, err
	}
	d := &Device{Client: c}
	if err := d.start(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) start(cfg Config) error {
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 256
	}
	if cfg.Features == 0 {
		cfg.Features = virtqueue.FeatureVersion1 | virtqueue.FeatureEventIdx
	}
	if _, err := d.Do(vhostuser.SetOwner, nil); err != nil {
		return err
	}
	feat, err := d.GetU64(vhostuser.GetFeatures)
	if err != nil {
		return err
	}
	if feat&vhostuser.FeatureProtocolFeatures == 0 {
		return fmt.Errorf("back-end features %#x lack PROTOCOL_FEATURES", feat)
	}
	proto, err := d.GetU64(vhostuser.GetProtocolFeatures)
	if err != nil {
		return err
	}
	if _, err := d.Do(vhostuser.SetProtocolFeatures, vhostuser.EncodeU64(proto&wantProtocol)); err != nil {
		return err
	}
	d.Protocol = proto & wantProtocol
	d.NeedReply = d.Protocol&vhostuser.ProtocolReplyAck != 0
	d.Offered = 1
	if d.Protocol&vhostuser.ProtocolMQ != 0 {
		n, err := d.GetU64(vhostuser.GetQueueNum)
		if err != nil {
			return err
		}
		if n < 2 {
			return fmt.Errorf("GET_QUEUE_NUM %d: no request queue", n)
		}
		d.Offered = int(min(n-1, 1024))
	}
	if d.Protocol&vhostuser.ProtocolConfig != 0 {
		p, err := d.Do(vhostuser.GetConfig, vhostuser.ConfigAccess{Data: make([]byte, 40)}.Encode())
		if err == nil {
			if ca, err := vhostuser.DecodeConfigAccess(p); err == nil && len(ca.Data) >= 40 {
				if n := int(binary.LittleEndian.Uint32(ca.Data[36:])); n > 0 && n < d.Offered {
					d.Offered = n
				}
			}
		}
	}
	nq := d.Offered
	if cfg.MaxRequestQueues > 0 {
		nq = min(nq, cfg.MaxRequestQueues)
	}
	d.Features = feat & (cfg.Features | vhostuser.FeatureProtocolFeatures)
	if _, err := d.Do(vhostuser.SetFeatures, vhostuser.EncodeU64(d.Features)); err != nil {
		return err
	}
	ringStep := (uint64(RingBytes(cfg.QueueSize)) + 4095) &^ 4095
	ringsEnd := ringStep * uint64(nq+1)
	size := (ringsEnd + cfg.DataSize + 1<<21 - 1) &^ (1<<21 - 1)
	if d.Mem, err = NewMemory(Layout{GuestAddr: 0, Size: size}); err != nil {
		return err
	}
	d.Data = NewAlloc(virtqueue.GuestAddress(ringsEnd), uint32(min(size-ringsEnd, 1<<32-16)))
	if _, err := d.Do(vhostuser.SetMemTable, vhostuser.EncodeMemTable(d.Mem.Specs()), d.Mem.FDs()...); err != nil {
		return err
	}
	var queues []*Queue
	for i := range nq + 1 {
		q, err := d.setupVring(i, cfg.QueueSize, virtqueue.GuestAddress(ringStep*uint64(i)))
		if err != nil {
			return err
		}
		queues = append(queues, q)
	}
	for _, q := range queues {
		if _, err := d.Do(vhostuser.SetVringEnable, vhostuser.VringState{Index: uint32(q.Index), Num: 1}.Encode()); err != nil {
			return err
		}
	}
	d.HiPrio, d.Requests = queues[0], queues[1:]
	return nil
}

func (d *Device) eventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, err
	}
	d.fds = append(d.fds, fd)
	return fd, nil
}

func (d *Device) setupVring(i int, size uint16, ring virtqueue.GuestAddress) (*Queue, error) {
	drv, err := NewDriver(d.Mem, size, ring, nil)
	if err != nil {
		return nil, err
	}
	drv.EventIdx = d.Features&virtqueue.FeatureEventIdx != 0
	q := &Queue{Index: i, Driver: drv}
	if q.Kick, err = d.eventfd(); err != nil {
		return nil, err
	}
	if q.Call, err = d.eventfd(); err != nil {
		return nil, err
	}
	desc, _ := d.Mem.UserAddr(drv.Desc)
	avail, _ := d.Mem.UserAddr(drv.Avail)
	used, _ := d.Mem.UserAddr(drv.Used)
	idx := uint32(i)
	steps := []struct {
		req     vhostuser.Request
		payload []byte
		fd      []int
	}{
		{vhostuser.SetVringNum, vhostuser.VringState{Index: idx, Num: uint32(size)}.Encode(), nil},
		{vhostuser.SetVringAddr, vhostuser.VringAddr{Index: idx, Desc: desc, Avail: avail, Used: used}.Encode(), nil},
		{vhostuser.SetVringBase, vhostuser.VringState{Index: idx}.Encode(), nil},
		{vhostuser.SetVringKick, vhostuser.EncodeU64(uint64(i)), []int{q.Kick}},
		{vhostuser.SetVringCall, vhostuser.EncodeU64(uint64(i)), []int{q.Call}},
	}
	for _, s := range steps {
		if _, err := d.Do(s.req, s.payload, s.fd...); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// Close closes the socket (the back-end then stops the device), the
// eventfds and the guest memory.
func (d *Device) Close() {
	d.Client.Close()
	for _, fd := range d.fds {
		unix.Close(fd)
	}
	d.fds = nil
	if d.Mem != nil {
		d.Mem.Close()
	}
}
