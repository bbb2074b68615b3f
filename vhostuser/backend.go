package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// Device is a virtio device served over vhost-user. The backend calls its
// methods from the goroutine that serves the connection, one at a time
// (StateTransferer's are the exception).
//
// The backend offers VHOST_F_LOG_ALL and LOG_SHMFD for every device and
// logs dirty pages in virtqueue.Queue.Push, so a device must write guest
// memory only into the writable buffers of the chains it pushes (calling
// Chain.NoteWritten for bytes beyond the length it pushes).
type Device interface {
	// Features returns the virtio feature bits the device offers; the
	// backend adds VHOST_USER_F_PROTOCOL_FEATURES and VHOST_F_LOG_ALL.
	Features() uint64
	// NumQueues returns the number of virtqueues (GET_QUEUE_NUM); vring
	// indexes from the front-end must be below it.
	NumQueues() int
	// MaxQueueSize returns the largest ring size SET_VRING_NUM may set.
	MaxQueueSize() int
	// Config returns the device configuration space, or nil when the
	// device does not serve GET_CONFIG (the CONFIG protocol feature is
	// then not offered).
	Config() []byte
	// SetConfig writes the config space (SET_CONFIG); flags are the
	// message's (1: live migration).
	SetConfig(offset uint32, data []byte, flags uint32) error
	// StartQueue starts serving virtqueue index: q is ready, kick is the
	// eventfd the driver signals (-1: none was given, poll the ring).
	// The backend owns kick and keeps it open until StopQueue returns.
	StartQueue(index int, q *virtqueue.Queue, kick int) error
	// StopQueue stops serving virtqueue index. When it returns the
	// device pops nothing more from the queue and has pushed what it
	// could of the chains in flight; the backend then stops the Queue,
	// which drops any later push.
	StopQueue(index int)
	// Reset ends the device's session: the front-end reset the device or
	// went away. All queues are stopped before.
	Reset()
}

// StateTransferer is implemented by a Device whose internal state can
// travel with a migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE): the
// source's back-end saves it into a pipe the front-end reads, the
// destination's loads it from a pipe the front-end writes.
//
// SaveState and LoadState run on a goroutine of their own, started by
// SET_DEVICE_STATE_FD while no vring is served; the session goes on
// meanwhile (so other Device methods may run concurrently with them), and
// CHECK_DEVICE_STATE waits for them and reports their error. No vring is
// served while a transfer runs: one the front-end starts and enables
// meanwhile gets StartQueue once the transfer is over (at
// CHECK_DEVICE_STATE, or at the next message). The device must be able to
// serve again afterwards, whether the transfer failed or not (QEMU resumes
// the source when a migration fails).
type StateTransferer interface {
	// CanTransferState reports whether DEVICE_STATE is offered; it is
	// asked once per connection.
	CanTransferState() bool
	// SaveState writes the device's state to w. The backend closes the
	// pipe after it returns: the end of the data.
	SaveState(w io.Writer) error
	// LoadState reads state written by SaveState from r, up to its end,
	// and makes it the device's. The state comes from the front-end and
	// must be checked like any other input from it. Data after the end
	// LoadState reads to is an error.
	LoadState(r io.Reader) error
}

// DefaultMaxMemSlots is the number of memory slots announced by
// GET_MAX_MEM_SLOTS, as virtiofsd does.
const DefaultMaxMemSlots = 509

// Options configure a Backend.
type Options struct {
	// MaxMemSlots bounds the regions of the memory table; zero means
	// DefaultMaxMemSlots. It is at most virtqueue.MaxRegions.
	MaxMemSlots int
	// Logger receives warnings and debug lines; nil discards them.
	Logger hclog.Logger
}

// Backend serves one Device to vhost-user front-ends, one connection at a
// time.
type Backend struct {
	dev      Device
	log      hclog.Logger
	maxSlots int
}

// NewBackend returns a backend for dev.
func NewBackend(dev Device, opts Options) *Backend {
	b := &Backend{dev: dev, log: opts.Logger, maxSlots: opts.MaxMemSlots}
	if b.log == nil {
		b.log = hclog.NewNullLogger()
	}
	if b.maxSlots <= 0 {
		b.maxSlots = DefaultMaxMemSlots
	}
	b.maxSlots = min(b.maxSlots, virtqueue.MaxRegions)
	return b
}

// Serve accepts front-end connections on l and serves them one after the
// other: a second front-end waits in the listen backlog until the first is
// gone. It returns after the first connection ends unless keepServing is
// set, and when ctx is done (with nil).
func (b *Backend) Serve(ctx context.Context, l *net.UnixListener, keepServing bool) error {
	l.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { l.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("vhostuser: accept: %w", err)
		}
		b.log.Info("front-end connected")
		err = b.ServeConn(ctx, c)
		if err != nil {
			b.log.Error("front-end connection ended", "error", err)
		} else {
			b.log.Info("front-end disconnected")
		}
		if !keepServing || ctx.Err() != nil {
			return err
		}
	}
}

// ServeConn serves one front-end on c until it disconnects (nil), ctx is
// done (nil), or the connection must be dropped (the error says why). All
// queues are stopped, the device is reset, every fd received is closed and
// c is closed before it returns.
func (b *Backend) ServeConn(ctx context.Context, c *net.UnixConn) error {
	s := b.newSession(ctx, c)
	defer s.close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		m, err := s.w.read()
		if err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		if err := s.dispatch(m); err != nil {
			return err
		}
	}
}

// vring is the back-end's state of one virtqueue.
type vring struct {
	num                    uint16
	desc, used, avail, log uint64 // front-end addresses
	addrFlags              uint32
	addrSet                bool
	base                   uint16
	kick, call, err        int
	started                bool // SET_VRING_KICK received, GET_VRING_BASE not yet
	enabled                bool
	running                bool // the device serves it
	q                      *virtqueue.Queue
}

// session is the state of one front-end connection.
type session struct {
	ctx        context.Context
	b          *Backend
	dev        Device
	log        hclog.Logger
	w          *wire
	mem        *virtqueue.GuestMemory
	features   uint64 // offered
	acked      uint64
	protocol   uint64 // offered
	ackedProto uint64
	status     uint64
	backendReq int
	vrings     []vring
	dirty      *virtqueue.DirtyLog // SET_LOG_BASE, nil before
	st         StateTransferer     // nil when DEVICE_STATE is not offered
	xfer       *transfer           // SET_DEVICE_STATE_FD not yet checked
	held       bool                // a vring waits for the transfer's end
}

func (b *Backend) newSession(ctx context.Context, c *net.UnixConn) *session {
	s := &session{
		ctx: ctx, b: b, dev: b.dev, log: b.log, w: newWire(c), mem: virtqueue.NewGuestMemory(),
		features: b.dev.Features() | FeatureProtocolFeatures | virtqueue.FeatureLogAll, backendReq: -1,
		protocol: ProtocolMQ | ProtocolLogShmfd | ProtocolReplyAck | ProtocolResetDevice |
			ProtocolConfigureMemSlots | ProtocolStatus,
	}
	if b.dev.Config() != nil {
		s.protocol |= ProtocolConfig
	}
	if st, ok := b.dev.(StateTransferer); ok && st.CanTransferState() {
		s.st = st
		s.protocol |= ProtocolDeviceState
	}
	s.vrings = make([]vring, b.dev.NumQueues())
	for i := range s.vrings {
		s.vrings[i] = vring{kick: -1, call: -1, err: -1}
	}
	return s
}

// close ends the session: a state transfer is cancelled, queues stop, the
// device resets, fds close.
func (s *session) close() {
	s.cancelTransfer()
	s.resetRings()
	s.dev.Reset()
	s.closeDirtyLog()
	closeFD(&s.backendReq)
	s.mem.Clear()
	s.w.c.Close()
}

func closeFD(fd *int) {
	if *fd >= 0 {
		unix.Close(*fd)
		*fd = -1
	}
}

// errUnknown marks a request the backend does not implement.
var errUnknown = errors.New("vhostuser: unsupported request")

// errVringIndex marks a vring index beyond the device's queues. Without
// NEED_REPLY the front-end would never learn that the ring is not served
// and the guest would wait forever on it, so the connection is dropped.
var errVringIndex = errors.New("vhostuser: vring index out of range")

// dispatch handles one message and sends its reply: the explicit reply of
// a GET, or a REPLY_ACK when NEED_REPLY is set. A failed request that
// expects an explicit reply, or an unknown request without NEED_REPLY,
// drops the connection, since the front-end could only misread what
// follows.
func (s *session) dispatch(m *message) error {
	defer m.closeFDs()
	req := m.hdr.Request
	if s.held && !s.transferring() {
		s.releaseRings()
	}
	if s.log.IsDebug() {
		s.log.Debug("vhost-user request", "request", req.String(), "flags", m.hdr.Flags, "size", m.hdr.Size, "fds", len(m.fds))
	}
	reply, err := s.handle(m)
	if req.hasStatusReply() || (req == SetLogBase && s.ackedProto&ProtocolLogShmfd != 0) {
		// The explicit u64 reply carries the failure; the front-end
		// learns of it, so the connection goes on.
		if err != nil {
			s.log.Warn("vhost-user request failed", "request", req.String(), "error", err)
			reply = EncodeU64(1)
			if req == SetDeviceStateFD {
				reply = EncodeU64(1 | VringNoFD)
			}
		}
		return s.w.reply(req, reply)
	}
	if req.hasReply() {
		if err != nil {
			if req == GetConfig {
				// An empty payload tells the front-end it failed.
				s.log.Warn("vhost-user request failed", "request", req.String(), "error", err)
				return s.w.reply(req, nil)
			}
			return fmt.Errorf("%w: %v: %v", errDrop, req, err)
		}
		return s.w.reply(req, reply)
	}
	if err != nil {
		s.log.Warn("vhost-user request failed", "request", req.String(), "error", err)
	}
	if m.hdr.Flags&FlagNeedReply != 0 {
		var ack uint64
		if err != nil {
			ack = 1
		}
		return s.w.reply(req, EncodeU64(ack))
	}
	if errors.Is(err, errUnknown) || errors.Is(err, errVringIndex) {
		return fmt.Errorf("%w: %v", errDrop, err)
	}
	return nil
}

// ring returns vring i, checking the index.
func (s *session) ring(i uint32) (*vring, error) {
	if i >= uint32(len(s.vrings)) {
		return nil, fmt.Errorf("%w: vring %d, but the device has %d queues (is the front-end configured for more queues than the back-end offers?)", errVringIndex, i, len(s.vrings))
	}
	return &s.vrings[i], nil
}

// handle carries out one request and returns the payload of its explicit
// reply, if it has one.
func (s *session) handle(m *message) ([]byte, error) {
	p := m.payload
	if len(p) != 0 && !m.hdr.Request.hasPayload() {
		return nil, fmt.Errorf("%w: %v with a payload of %d bytes", errMalformed, m.hdr.Request, len(p))
	}
	switch m.hdr.Request {
	case GetFeatures:
		return EncodeU64(s.features), nil

	case SetFeatures:
		v, err := DecodeU64(p)
		if err != nil {
			return nil, err
		}
		if extra := v &^ s.features; extra != 0 {
			return nil, fmt.Errorf("features %#x were not offered", extra)
		}
		s.acked = v
		if v&FeatureProtocolFeatures == 0 {
			// Without protocol features every ring is enabled.
			for i := range s.vrings {
				s.vrings[i].enabled = true
				s.apply(i)
			}
		}
		// VHOST_F_LOG_ALL starts or stops logging on running rings.
		s.applyLogs()
		return nil, nil

	case GetProtocolFeatures:
		return EncodeU64(s.protocol), nil

	case SetProtocolFeatures:
		v, err := DecodeU64(p)
		if err != nil {
			return nil, err
		}
		if extra := v &^ s.protocol; extra != 0 {
			return nil, fmt.Errorf("protocol features %#x were not offered", extra)
		}
		s.ackedProto = v
		return nil, nil

	case SetOwner:
		return nil, nil

	case ResetOwner:
		// Deprecated; as the spec recommends, only stop the rings.
		s.resetRings()
		return nil, nil

	case ResetDevice:
		s.cancelTransfer()
		s.resetRings()
		s.acked, s.status = 0, 0
		s.dev.Reset()
		s.closeDirtyLog()
		return nil, nil

	case GetQueueNum:
		return EncodeU64(uint64(len(s.vrings))), nil

	case GetMaxMemSlots:
		return EncodeU64(uint64(s.b.maxSlots)), nil

	case SetMemTable:
		return nil, s.setMemTable(m)

	case AddMemReg:
		spec, err := DecodeMemReg(p)
		if err != nil {
			return nil, err
		}
		fd, ok := m.takeFD()
		if !ok {
			return nil, fmt.Errorf("ADD_MEM_REG with %d fds", len(m.fds))
		}
		defer unix.Close(fd)
		if s.mem.Len() >= s.b.maxSlots {
			return nil, fmt.Errorf("all %d memory slots are in use", s.b.maxSlots)
		}
		r, err := virtqueue.MapRegion(fd, spec)
		if err != nil {
			return nil, err
		}
		if err := s.mem.Add(r); err != nil {
			r.Close()
			return nil, err
		}
		return nil, nil

	case RemMemReg:
		spec, err := DecodeMemReg(p)
		if err != nil {
			return nil, err
		}
		// An fd sent by mistake is closed unused, as the spec allows.
		return nil, s.mem.Remove(spec)

	case SetVringNum:
		st, err := DecodeVringState(p)
		if err != nil {
			return nil, err
		}
		v, err := s.ring(st.Index)
		if err != nil {
			return nil, err
		}
		if v.started {
			return nil, fmt.Errorf("SET_VRING_NUM on started vring %d", st.Index)
		}
		if st.Num == 0 || st.Num&(st.Num-1) != 0 || st.Num > uint32(min(s.dev.MaxQueueSize(), virtqueue.MaxQueueSize)) {
			return nil, fmt.Errorf("vring size %d is not a power of two up to %d", st.Num, s.dev.MaxQueueSize())
		}
		v.num = uint16(st.Num)
		return nil, nil

	case SetVringAddr:
		a, err := DecodeVringAddr(p)
		if err != nil {
			return nil, err
		}
		v, err := s.ring(a.Index)
		if err != nil {
			return nil, err
		}
		if a.Flags&^VringFLog != 0 {
			return nil, fmt.Errorf("vring %d address flags %#x", a.Index, a.Flags)
		}
		// On a started ring (logging toggled) the addresses apply from
		// the next start; the logging flag and address at once.
		v.desc, v.used, v.avail, v.log, v.addrFlags, v.addrSet = a.Desc, a.Used, a.Avail, a.Log, a.Flags, true
		s.applyLog(int(a.Index))
		return nil, nil

	case SetVringBase:
		st, err := DecodeVringState(p)
		if err != nil {
			return nil, err
		}
		v, err := s.ring(st.Index)
		if err != nil {
			return nil, err
		}
		if v.started {
			return nil, fmt.Errorf("SET_VRING_BASE on started vring %d", st.Index)
		}
		if st.Num > 0xffff {
			return nil, fmt.Errorf("vring base %#x out of range for a split ring", st.Num)
		}
		v.base = uint16(st.Num)
		return nil, nil

	case GetVringBase:
		st, err := DecodeVringState(p)
		if err != nil {
			return nil, err
		}
		v, err := s.ring(st.Index)
		if err != nil {
			return nil, err
		}
		s.stopRing(int(st.Index))
		closeFD(&v.kick)
		return VringState{Index: st.Index, Num: uint32(v.base)}.Encode(), nil

	case SetVringKick, SetVringCall, SetVringErr:
		return nil, s.setVringFD(m)

	case SetVringEnable:
		st, err := DecodeVringState(p)
		if err != nil {
			return nil, err
		}
		v, err := s.ring(st.Index)
		if err != nil {
			return nil, err
		}
		if st.Num > 1 {
			return nil, fmt.Errorf("SET_VRING_ENABLE with %d", st.Num)
		}
		v.enabled = st.Num == 1
		return nil, s.apply(int(st.Index))

	case SetBackendReqFD:
		fd, ok := m.takeFD()
		if !ok {
			return nil, fmt.Errorf("SET_BACKEND_REQ_FD with %d fds", len(m.fds))
		}
		closeFD(&s.backendReq)
		s.backendReq = fd
		return nil, nil

	case GetConfig:
		c, err := DecodeConfigAccess(p)
		if err != nil {
			return nil, err
		}
		cfg := s.dev.Config()
		if cfg == nil {
			return nil, errors.New("the device has no config space")
		}
		if uint64(c.Offset)+uint64(len(c.Data)) > uint64(len(cfg)) {
			return nil, fmt.Errorf("config read of %d bytes at %d beyond %d", len(c.Data), c.Offset, len(cfg))
		}
		c.Data = cfg[c.Offset : int(c.Offset)+len(c.Data)]
		return c.Encode(), nil

	case SetConfig:
		c, err := DecodeConfigAccess(p)
		if err != nil {
			return nil, err
		}
		return nil, s.dev.SetConfig(c.Offset, c.Data, c.Flags)

	case SetStatus:
		v, err := DecodeU64(p)
		if err != nil {
			return nil, err
		}
		if v > 0xff {
			return nil, fmt.Errorf("device status %#x", v)
		}
		s.status = v
		return nil, nil

	case GetStatus:
		return EncodeU64(s.status), nil

	case SetLogBase:
		return s.setLogBase(m)

	case SetDeviceStateFD:
		return s.setDeviceStateFD(m)

	case CheckDeviceState:
		return s.checkDeviceState()
	}
	return nil, fmt.Errorf("%w %v", errUnknown, m.hdr.Request)
}

func (s *session) setMemTable(m *message) error {
	specs, err := DecodeMemTable(m.payload)
	if err != nil {
		return err
	}
	if len(m.fds) != len(specs) {
		return fmt.Errorf("SET_MEM_TABLE with %d regions and %d fds", len(specs), len(m.fds))
	}
	regions := make([]*virtqueue.Region, 0, len(specs))
	undo := func() {
		for _, r := range regions {
			r.Close()
		}
	}
	for i, spec := range specs {
		r, err := virtqueue.MapRegion(m.fds[i], spec)
		if err != nil {
			undo()
			return fmt.Errorf("region %d: %w", i, err)
		}
		regions = append(regions, r)
	}
	if err := s.mem.SetTable(regions); err != nil {
		undo()
		return err
	}
	// The mappings outlive the fds, which dispatch closes.
	return nil
}

// setVringFD handles SET_VRING_KICK, SET_VRING_CALL and SET_VRING_ERR.
func (s *session) setVringFD(m *message) error {
	u, err := DecodeU64(m.payload)
	if err != nil {
		return err
	}
	if u&^(VringIndexMask|VringNoFD) != 0 {
		return fmt.Errorf("%v with unknown bits in %#x", m.hdr.Request, u)
	}
	idx := int(u & VringIndexMask)
	v, err := s.ring(uint32(idx))
	if err != nil {
		return err
	}
	fd := -1
	if u&VringNoFD == 0 {
		var ok bool
		if fd, ok = m.takeFD(); !ok {
			return fmt.Errorf("%v for vring %d with %d fds", m.hdr.Request, idx, len(m.fds))
		}
	}
	switch m.hdr.Request {
	case SetVringKick:
		// A new kick fd (re)starts the ring, continuing where it was.
		s.stopRing(idx)
		closeFD(&v.kick)
		v.kick = fd
		return s.startRing(idx)
	case SetVringCall:
		// The queue uses the new fd before the old one is closed and
		// before the reply is sent.
		if v.q != nil {
			v.q.SetCall(fd)
		}
		closeFD(&v.call)
		v.call = fd
	case SetVringErr:
		closeFD(&v.err)
		v.err = fd
	}
	return nil
}

// startRing creates the queue of vring i and starts it (SET_VRING_KICK).
func (s *session) startRing(i int) error {
	v := &s.vrings[i]
	if !v.addrSet || v.num == 0 {
		return fmt.Errorf("vring %d kicked before its size and addresses were set", i)
	}
	m := s.mem.Acquire()
	desc, err1 := m.UserToGuest(v.desc, 16*uint64(v.num))
	avail, err2 := m.UserToGuest(v.avail, 6+2*uint64(v.num))
	used, err3 := m.UserToGuest(v.used, 6+8*uint64(v.num))
	m.Release()
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("vring %d: %w", i, err)
	}
	q, err := virtqueue.NewQueue(s.mem, virtqueue.Config{
		Size: v.num, Desc: desc, Avail: avail, Used: used,
		EventIdx:  s.acked&virtqueue.FeatureEventIdx != 0,
		NextAvail: v.base,
	})
	if err != nil {
		return fmt.Errorf("vring %d: %w", i, err)
	}
	q.SetCall(v.call)
	v.q, v.started = q, true
	s.applyLog(i)
	return s.apply(i)
}

// apply starts or stops the device's service of vring i to match its
// state: served while started and enabled, and no device state transfer
// runs.
func (s *session) apply(i int) error {
	v := &s.vrings[i]
	want := v.started && v.enabled
	switch {
	case want && !v.running && s.transferring():
		// Served once the state transfer is over (releaseRings).
		s.held = true
	case want && !v.running:
		if err := s.dev.StartQueue(i, v.q, v.kick); err != nil {
			return fmt.Errorf("starting vring %d: %w", i, err)
		}
		v.running = true
	case !want && v.running:
		s.dev.StopQueue(i)
		v.running = false
	}
	return nil
}

// stopRing stops vring i (GET_VRING_BASE): the device lets go of it, the
// queue drops later pushes, and base becomes the next available index.
func (s *session) stopRing(i int) {
	v := &s.vrings[i]
	if v.running {
		s.dev.StopQueue(i)
		v.running = false
	}
	if v.q != nil {
		v.q.Stop()
		v.base = v.q.NextAvail()
		v.q = nil
	}
	v.started = false
}

// resetRings stops every ring and forgets its setup and fds.
func (s *session) resetRings() {
	for i := range s.vrings {
		s.stopRing(i)
		v := &s.vrings[i]
		closeFD(&v.kick)
		closeFD(&v.call)
		closeFD(&v.err)
		*v = vring{kick: -1, call: -1, err: -1}
	}
}
