package main

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/vhostuser/frontend"
)

// initFlags are the INIT flags a Linux 6.x guest offers (no writeback
// cache, no DAX).
const initFlags = fuseproto.InitAsyncRead | fuseproto.InitPosixLocks | fuseproto.InitAtomicOTrunc |
	fuseproto.InitExportSupport | fuseproto.InitBigWrites | fuseproto.InitDontMask |
	fuseproto.InitFlockLocks | fuseproto.InitAutoInvalData | fuseproto.InitDoReaddirplus |
	fuseproto.InitReaddirplusAuto | fuseproto.InitAsyncDIO | fuseproto.InitParallelDirops |
	fuseproto.InitMaxPages | fuseproto.InitCacheSymlinks | fuseproto.InitSubmounts

// hiprioBufs is the number of FORGET buffers in flight on the hiprio queue.
const hiprioBufs = 32

// maxBatchForget is the most entries one BATCH_FORGET carries.
const maxBatchForget = 256

// slot is one request in flight: its buffers in guest memory and the
// actor whose request it carries.
type slot struct {
	req     frontend.Buf // request header and arguments
	reqMem  []byte
	extra   frontend.Buf // a second readable buffer (WRITE data), or Len 0
	rep     frontend.Buf // the reply
	repMem  []byte
	unique  uint64
	op      fuseproto.Opcode
	sent    time.Time
	done    time.Time
	usedLen uint32
	actor   actor
	owner   chan *slot
}

// rq is one request queue with the slots in flight on it, indexed by head.
type rq struct {
	q       *frontend.Queue
	mu      sync.Mutex
	pending []*slot
	// kicks counts notifications sent.
	kicks atomic.Uint64
}

// conn is a FUSE session over a vhost-user-fs device.
type conn struct {
	dev      *frontend.Device
	queues   []*rq
	unique   atomic.Uint64
	maxWrite uint32
	maxRead  uint32
	minor    uint32

	hiMu      sync.Mutex
	hiFree    []frontend.Buf
	hiPending map[uint16]frontend.Buf

	stop    atomic.Bool
	reapers sync.WaitGroup
	errMu   sync.Mutex
	err     error
}

// dial starts the device, enabling at most maxQueues request queues (0:
// all), and sends INIT.
func dial(socket string, maxQueues int, dataSize uint64) (*conn, error) {
	dev, err := frontend.Start(socket, frontend.Config{MaxRequestQueues: maxQueues, DataSize: dataSize + hiprioBufs*16<<10 + 1<<20})
	if err != nil {
		return nil, err
	}
	c := &conn{dev: dev, hiPending: make(map[uint16]frontend.Buf)}
	for range hiprioBufs {
		a, err := dev.Data.Get(16 << 10)
		if err != nil {
			dev.Close()
			return nil, err
		}
		c.hiFree = append(c.hiFree, frontend.Buf{Addr: a, Len: 16 << 10})
	}
	for _, q := range dev.Requests {
		c.queues = append(c.queues, &rq{q: q, pending: make([]*slot, q.Driver.Size)})
	}
	if err := c.init(); err != nil {
		dev.Close()
		return nil, err
	}
	for _, q := range c.queues {
		c.reapers.Add(1)
		go c.reap(q)
	}
	return c, nil
}

// close stops the reapers and disconnects.
func (c *conn) close() {
	c.stop.Store(true)
	c.reapers.Wait()
	c.dev.Close()
}

func (c *conn) fail(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

// failed returns the first error a reaper met.
func (c *conn) failed() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// newSlot allocates a slot's buffers: a request buffer of reqLen bytes and
// a reply buffer of repLen.
func (c *conn) newSlot(reqLen, repLen uint32, owner chan *slot) (*slot, error) {
	s := &slot{owner: owner}
	for _, b := range []struct {
		buf *frontend.Buf
		mem *[]byte
		n   uint32
	}{{&s.req, &s.reqMem, reqLen}, {&s.rep, &s.repMem, repLen}} {
		a, err := c.dev.Data.Get(b.n)
		if err != nil {
			return nil, fmt.Errorf("guest memory for %d slots: %w", b.n, err)
		}
		*b.buf = frontend.Buf{Addr: a, Len: b.n}
		if *b.mem, err = c.dev.Mem.Bytes(a, int(b.n)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// freeSlot gives a slot's buffers back.
func (c *conn) freeSlot(s *slot) {
	c.dev.Data.Put(s.req.Addr, s.req.Len)
	c.dev.Data.Put(s.rep.Addr, s.rep.Len)
}

// request lays out a request in s: header (Len filled from the arguments and
// data), the fixed argument struct bytes and names (NUL-terminated), and a
// data buffer of dataLen bytes in s.extra when dataLen > 0.
func (s *slot) request(c *conn, op fuseproto.Opcode, node uint64, args []byte, dataLen uint32) error {
	const hs = 40
	if hs+len(args) > len(s.reqMem) {
		return fmt.Errorf("request %d of %d bytes does not fit", op, hs+len(args))
	}
	s.unique = c.unique.Add(1) << 1
	s.op = op
	h := fuseproto.InHeader{Len: uint32(hs+len(args)) + dataLen, Opcode: op, Unique: s.unique, NodeID: node}
	fuseproto.Encode(s.reqMem[:0], &h)
	copy(s.reqMem[hs:], args)
	s.req.Len = uint32(hs + len(args))
	if dataLen == 0 {
		s.extra.Len = 0
	}
	return nil
}

// submit publishes s on queue q and kicks when the device asks for it.
func (c *conn) submit(q *rq, s *slot, repLen uint32) error {
	out := []frontend.Buf{s.req}
	if s.extra.Len > 0 {
		out = append(out, s.extra)
	}
	in := []frontend.Buf{{Addr: s.rep.Addr, Len: repLen}}
	q.mu.Lock()
	old := q.q.Driver.AvailIdx()
	s.sent = time.Now()
	head, err := q.q.Driver.AddBufs(out, in)
	if err == nil {
		q.pending[head] = s
	}
	kick := err == nil && q.q.Driver.NeedKick(old)
	q.mu.Unlock()
	if err != nil {
		return err
	}
	if kick {
		q.kicks.Add(1)
		return q.q.Notify()
	}
	return nil
}

// reap takes used elements off q and hands each slot to its owner.
func (c *conn) reap(q *rq) {
	defer c.reapers.Done()
	drv := q.q.Driver
	for {
		got := false
		for {
			q.mu.Lock()
			head, n, ok := drv.PopUsedHead()
			var s *slot
			if ok {
				s = q.pending[head]
				q.pending[head] = nil
			}
			q.mu.Unlock()
			if !ok {
				break
			}
			got = true
			if s == nil {
				c.fail(fmt.Errorf("queue %d: used element for head %d that is not in flight", q.q.Index, head))
				continue
			}
			s.done, s.usedLen = time.Now(), n
			s.owner <- s
		}
		if got {
			continue
		}
		if drv.EventIdx {
			drv.SetUsedEvent(drv.LastUsed())
			if drv.UsedIdx() != drv.LastUsed() {
				continue
			}
		}
		if c.stop.Load() {
			return
		}
		if _, err := q.q.WaitCall(50 * time.Millisecond); err != nil {
			c.fail(fmt.Errorf("queue %d: waiting for the call eventfd: %w", q.q.Index, err))
			return
		}
	}
}

// reply checks a reply's header: length as used, unique, errno; it
// returns the body.
func (s *slot) reply() ([]byte, int32, error) {
	if s.usedLen < 16 || s.usedLen > s.rep.Len {
		return nil, 0, fmt.Errorf("op %d: used length %d", s.op, s.usedLen)
	}
	var h fuseproto.OutHeader
	fuseproto.Decode(s.repMem, &h)
	if h.Unique != s.unique {
		return nil, 0, fmt.Errorf("op %d: reply unique %d, sent %d", s.op, h.Unique, s.unique)
	}
	if h.Len != s.usedLen {
		return nil, 0, fmt.Errorf("op %d: reply len %d, used length %d", s.op, h.Len, s.usedLen)
	}
	return s.repMem[16:h.Len], h.Error, nil
}

// ok is reply requiring errno 0 and, when want >= 0, a body of exactly
// want bytes.
func (s *slot) ok(want int) ([]byte, error) {
	body, e, err := s.reply()
	if err != nil {
		return nil, err
	}
	if e != 0 {
		return nil, fmt.Errorf("op %d: errno %d", s.op, -e)
	}
	if want >= 0 && len(body) != want {
		return nil, fmt.Errorf("op %d: reply body %d bytes, want %d", s.op, len(body), want)
	}
	return body, nil
}

// call sends one request on queue 0 and waits for its reply (set-up
// only).
func (c *conn) call(s *slot, repLen uint32) error {
	ch := s.owner
	if err := c.submit(c.queues[0], s, repLen); err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-time.After(frontend.Timeout):
		return fmt.Errorf("op %d: no reply within %v", s.op, frontend.Timeout)
	}
}

// init sends FUSE INIT (polling queue 0 itself: the reapers are not
// running yet).
func (c *conn) init() error {
	s, err := c.newSlot(4096, 4096, nil)
	if err != nil {
		return err
	}
	defer c.freeSlot(s)
	in := fuseproto.InitIn{Major: 7, Minor: fuseproto.KernelMinorVersion, MaxReadahead: 128 << 10,
		Flags: uint32(initFlags) | uint32(fuseproto.InitInitExt), Flags2: uint32(initFlags >> 32)}
	if err := s.request(c, fuseproto.OpInit, 0, fuseproto.Encode(nil, &in), 0); err != nil {
		return err
	}
	q := c.queues[0]
	if err := c.submit(q, s, 4096); err != nil {
		return err
	}
	deadline := time.Now().Add(frontend.Timeout)
	for {
		q.mu.Lock()
		head, n, ok := q.q.Driver.PopUsedHead()
		if ok {
			q.pending[head] = nil
		}
		q.mu.Unlock()
		if ok {
			s.usedLen = n
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no reply to INIT")
		}
		if _, err := q.q.WaitCall(10 * time.Millisecond); err != nil {
			return err
		}
	}
	body, err := s.ok(-1)
	if err != nil {
		return fmt.Errorf("INIT: %w", err)
	}
	var out fuseproto.InitOut
	if !fuseproto.Decode(body, &out) && len(body) < 24 {
		return fmt.Errorf("INIT reply of %d bytes", len(body))
	}
	if out.Major != 7 || out.Minor < 26 {
		return fmt.Errorf("INIT: protocol %d.%d", out.Major, out.Minor)
	}
	c.minor = out.Minor
	c.maxWrite = max(out.MaxWrite, 4096)
	pages := uint32(32)
	if uint64(out.Flags)&fuseproto.InitMaxPages != 0 && out.MaxPages > 0 {
		pages = uint32(out.MaxPages)
	}
	c.maxRead = pages * 4096
	return nil
}

// forget sends BATCH_FORGET (or FORGET for one entry) on the hiprio queue,
// as the kernel does; there is no reply.
func (c *conn) forget(entries []fuseproto.ForgetOne) error {
	for len(entries) > 0 {
		n := min(len(entries), maxBatchForget)
		if err := c.forgetBatch(entries[:n]); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}

func (c *conn) forgetBatch(entries []fuseproto.ForgetOne) error {
	var b []byte
	h := fuseproto.InHeader{Unique: c.unique.Add(1) << 1}
	if len(entries) == 1 {
		h.Opcode, h.NodeID, h.Len = fuseproto.OpForget, entries[0].NodeID, 48
		b = fuseproto.Encode(b, &h)
		b = fuseproto.Encode(b, &fuseproto.ForgetIn{Nlookup: entries[0].Nlookup})
	} else {
		h.Opcode, h.Len = fuseproto.OpBatchForget, uint32(48+16*len(entries))
		b = fuseproto.Encode(b, &h)
		b = fuseproto.Encode(b, &fuseproto.BatchForgetIn{Count: uint32(len(entries))})
		for i := range entries {
			b = fuseproto.Encode(b, &entries[i])
		}
	}
	deadline := time.Now().Add(frontend.Timeout)
	hi := c.dev.HiPrio
	for {
		c.hiMu.Lock()
		for {
			head, _, ok := hi.Driver.PopUsedHead()
			if !ok {
				break
			}
			if buf, ok := c.hiPending[head]; ok {
				delete(c.hiPending, head)
				c.hiFree = append(c.hiFree, buf)
			}
		}
		if len(c.hiFree) > 0 {
			buf := c.hiFree[len(c.hiFree)-1]
			c.hiFree = c.hiFree[:len(c.hiFree)-1]
			err := c.dev.Mem.Write(buf.Addr, b)
			old := hi.Driver.AvailIdx()
			var head uint16
			if err == nil {
				head, err = hi.Driver.AddBufs([]frontend.Buf{{Addr: buf.Addr, Len: uint32(len(b))}}, nil)
			}
			if err != nil {
				c.hiFree = append(c.hiFree, buf)
				c.hiMu.Unlock()
				return err
			}
			c.hiPending[head] = buf
			kick := hi.Driver.NeedKick(old)
			c.hiMu.Unlock()
			if kick {
				return hi.Notify()
			}
			return nil
		}
		c.hiMu.Unlock()
		if time.Now().After(deadline) {
			return errors.New("hiprio queue: FORGETs not consumed")
		}
		if _, err := hi.WaitCall(time.Millisecond); err != nil {
			return err
		}
	}
}

// drainHiprio waits until every FORGET sent was consumed.
func (c *conn) drainHiprio() error {
	deadline := time.Now().Add(frontend.Timeout)
	for {
		c.hiMu.Lock()
		for {
			head, _, ok := c.dev.HiPrio.Driver.PopUsedHead()
			if !ok {
				break
			}
			if buf, ok := c.hiPending[head]; ok {
				delete(c.hiPending, head)
				c.hiFree = append(c.hiFree, buf)
			}
		}
		n := len(c.hiPending)
		c.hiMu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hiprio queue: %d FORGETs not consumed", n)
		}
		c.dev.HiPrio.WaitCall(time.Millisecond)
	}
}
