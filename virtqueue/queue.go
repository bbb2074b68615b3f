package virtqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// MaxQueueSize is the largest split-ring size virtio allows.
const MaxQueueSize = 32768

// MaxIndirectDescs is the largest indirect descriptor table accepted
// (entries). Linux's virtio-fs keeps its chains within the queue size, so
// this is far above what a well-behaved driver sends.
const MaxIndirectDescs = 4096

// Errors returned by Pop and Push. A *ChainError wraps one of the chain
// errors.
var (
	// ErrEmpty means no chain is available.
	ErrEmpty = errors.New("virtqueue: no available chain")
	// ErrBroken means the queue cannot be used any more: the driver
	// published an impossible available index or head, or the rings are
	// no longer in guest memory. The device should stop serving it.
	ErrBroken = errors.New("virtqueue: queue broken")
	// ErrStopped means the queue was stopped; a chain pushed after Stop is
	// dropped.
	ErrStopped = errors.New("virtqueue: queue stopped")

	ErrChainTooLong   = errors.New("virtqueue: descriptor chain loops or is longer than its table")
	ErrNestedIndirect = errors.New("virtqueue: nested indirect descriptor table")
	ErrBadIndirect    = errors.New("virtqueue: bad indirect descriptor")
	ErrReadAfterWrite = errors.New("virtqueue: device-readable descriptor after a device-writable one")
	ErrChainTooBig    = errors.New("virtqueue: descriptor chain longer than 4 GiB")
	ErrDescIndex      = errors.New("virtqueue: descriptor index out of range")
)

// ChainError reports a malformed chain. Pop has already returned it to the
// used ring with length 0.
type ChainError struct {
	Head uint16
	Err  error
}

// Error implements error.
func (e *ChainError) Error() string {
	return fmt.Sprintf("virtqueue: chain at head %d refused: %v", e.Head, e.Err)
}

// Unwrap returns the reason the chain was refused.
func (e *ChainError) Unwrap() error { return e.Err }

// Config locates a split ring in guest memory.
type Config struct {
	// Size is the number of descriptors, a power of two up to
	// MaxQueueSize.
	Size uint16
	// Desc, Avail and Used are the guest-physical addresses of the
	// descriptor table (16-byte aligned), the available ring (2-byte
	// aligned) and the used ring (4-byte aligned).
	Desc, Avail, Used GuestAddress
	// EventIdx enables VIRTIO_RING_F_EVENT_IDX.
	EventIdx bool
	// NextAvail is the first available-ring index to serve (the vring
	// base).
	NextAvail uint16
}

// Queue is the device side of one split virtqueue. One goroutine calls
// Pop and EnableNotify; any goroutine may call Push, SetCall and Stop.
type Queue struct {
	mem      *GuestMemory
	size     uint16
	desc     GuestAddress
	avail    GuestAddress
	used     GuestAddress
	eventIdx bool

	// Pop side, owned by the popping goroutine.
	nextAvail uint16
	pr        rings // valid while a reference on pr.mem is held
	brokenErr error

	// Push side.
	mu             sync.Mutex
	nextUsed       uint16
	signalled      uint16
	signalledValid bool
	deferred       bool // PushDeferred published elements not yet decided on
	ur             rings
	call           int // eventfd, -1 for none
	stopped        bool
	callBuf        [8]byte
	// Dirty logging (SetLog): logging is set when either log is.
	logging     bool
	logBuf      *DirtyLog
	logUsed     *DirtyLog
	logUsedAddr GuestAddress

	pushed      atomic.Uint64
	notified    atomic.Uint64
	isStopped   atomic.Bool
	loggingUsed atomic.Bool // logUsed != nil, for the popping goroutine
}

// NewQueue sets up a queue over mem. The rings must be mapped in the current
// table; the used index starts from what the used ring holds (zero on a
// fresh ring, or where a previous incarnation stopped).
func NewQueue(mem *GuestMemory, cfg Config) (*Queue, error) {
	if cfg.Size == 0 || cfg.Size > MaxQueueSize || cfg.Size&(cfg.Size-1) != 0 {
		return nil, fmt.Errorf("virtqueue: queue size %d is not a power of two up to %d", cfg.Size, MaxQueueSize)
	}
	if cfg.Desc%16 != 0 || cfg.Avail%2 != 0 || cfg.Used%4 != 0 {
		return nil, fmt.Errorf("virtqueue: misaligned rings (desc %#x, avail %#x, used %#x)", uint64(cfg.Desc), uint64(cfg.Avail), uint64(cfg.Used))
	}
	q := &Queue{
		mem: mem, size: cfg.Size, desc: cfg.Desc, avail: cfg.Avail, used: cfg.Used,
		eventIdx: cfg.EventIdx, nextAvail: cfg.NextAvail, call: -1,
	}
	binary.LittleEndian.PutUint64(q.callBuf[:], 1)
	m := mem.Acquire()
	defer m.Release()
	r, err := q.resolve(m)
	if err != nil {
		return nil, err
	}
	q.nextUsed = r.used.load16(2)
	return q, nil
}

// Size returns the number of descriptors.
func (q *Queue) Size() uint16 { return q.size }

// NextAvail returns the index of the next available-ring entry to serve:
// the vring base to report when the ring stops. It must not race with Pop.
func (q *Queue) NextAvail() uint16 { return q.nextAvail }

// Stats returns how many chains were pushed and how many notifications
// were sent.
func (q *Queue) Stats() (pushed, notified uint64) { return q.pushed.Load(), q.notified.Load() }

// breakQueue records err as the reason the queue is broken.
func (q *Queue) breakQueue(err error) error {
	q.brokenErr = fmt.Errorf("%w: %w", ErrBroken, err)
	return q.brokenErr
}

// popRings returns the rings resolved in m, refreshing the cache after a
// memory-table change.
func (q *Queue) popRings(m *Memory) (*rings, error) {
	if q.pr.mem != m {
		r, err := q.resolve(m)
		if err != nil {
			return nil, err
		}
		q.pr = r
	}
	return &q.pr, nil
}

// Pop takes the next available chain into c (which must not be in use). It
// returns nil with a chain, ErrEmpty when none is available, a *ChainError
// for a malformed chain (already returned to the used ring with length 0;
// call Pop again), ErrStopped, or an error wrapping ErrBroken, after which
// every Pop fails.
func (q *Queue) Pop(c *Chain) error {
	if q.brokenErr != nil {
		return q.brokenErr
	}
	if q.isStopped.Load() {
		return ErrStopped
	}
	m := q.mem.Acquire()
	r, err := q.popRings(m)
	if err != nil {
		m.Release()
		return q.breakQueue(err)
	}
	availIdx := r.avail.load16(2)
	if availIdx == q.nextAvail {
		m.Release()
		return ErrEmpty
	}
	if n := availIdx - q.nextAvail; n > q.size {
		m.Release()
		return q.breakQueue(fmt.Errorf("available index %d is %d entries ahead of %d", availIdx, n, q.nextAvail))
	}
	// The load of avail->idx above is atomic (acquire); the ring entry it
	// covers is read after it.
	head := r.avail.le16(availRingOff + 2*int(q.nextAvail&(q.size-1)))
	if head >= q.size {
		m.Release()
		return q.breakQueue(fmt.Errorf("%w: head %d in a queue of %d", ErrDescIndex, head, q.size))
	}
	q.nextAvail++
	c.reset(q, m, head)
	if err := q.walk(c, r); err != nil {
		c.rd, c.wr, c.rlen, c.wlen = c.rd[:0], c.wr[:0], 0, 0
		q.Push(c, 0)
		return &ChainError{Head: head, Err: err}
	}
	return nil
}

// walk collects the buffers of the chain starting at c.head.
func (q *Queue) walk(c *Chain, r *rings) error {
	table := r.desc
	n := int(q.size)
	idx := int(c.head)
	budget := n
	indirect := false
	writable := false
	var rlen, wlen uint64
	for {
		if budget == 0 {
			return ErrChainTooLong
		}
		budget--
		d := table[idx*descSize : idx*descSize+descSize]
		addr := binary.LittleEndian.Uint64(d[0:])
		length := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&DescFIndirect != 0 {
			switch {
			case indirect:
				return ErrNestedIndirect
			case flags&DescFNext != 0:
				return fmt.Errorf("%w: INDIRECT together with NEXT", ErrBadIndirect)
			case length == 0 || length%descSize != 0:
				return fmt.Errorf("%w: table of %d bytes", ErrBadIndirect, length)
			case length/descSize > MaxIndirectDescs:
				return fmt.Errorf("%w: table of %d entries (at most %d)", ErrBadIndirect, length/descSize, MaxIndirectDescs)
			}
			t, err := c.mem.Slice(GuestAddress(addr), uint64(length))
			if err != nil {
				return fmt.Errorf("%w: %v", ErrBadIndirect, err)
			}
			table, n, idx, budget, indirect = t, int(length/descSize), 0, int(length/descSize), true
			continue
		}

		var err error
		if flags&DescFWrite != 0 {
			writable = true
			wlen += uint64(length)
			c.wr, err = c.mem.AppendSlices(c.wr, GuestAddress(addr), uint64(length))
		} else {
			if writable {
				return ErrReadAfterWrite
			}
			rlen += uint64(length)
			c.rd, err = c.mem.AppendSlices(c.rd, GuestAddress(addr), uint64(length))
		}
		if err != nil {
			return err
		}
		if rlen > math.MaxUint32 || wlen > math.MaxUint32 {
			return ErrChainTooBig
		}
		if flags&DescFNext == 0 {
			c.rlen, c.wlen = uint32(rlen), uint32(wlen)
			return nil
		}
		if int(next) >= n {
			return fmt.Errorf("%w: next %d in a table of %d", ErrDescIndex, next, n)
		}
		idx = int(next)
	}
}

// EnableNotify asks the driver to notify (kick) for the next available
// chain and reports whether chains became available meanwhile, in which
// case the caller must Pop again before sleeping. With EVENT_IDX it writes
// avail_event; without, the driver always notifies and this only checks.
func (q *Queue) EnableNotify() (bool, error) {
	if q.brokenErr != nil {
		return false, q.brokenErr
	}
	m := q.mem.Acquire()
	defer m.Release()
	r, err := q.popRings(m)
	if err != nil {
		return false, q.breakQueue(err)
	}
	if q.eventIdx {
		r.used.store16(usedRingOff+usedElemSize*int(q.size), q.nextAvail)
		if q.loggingUsed.Load() {
			q.logAvailEvent()
		}
	}
	// Both are atomic, hence ordered: the driver either sees the new
	// avail_event, or we see its new index.
	return r.avail.load16(2) != q.nextAvail, nil
}

// Push returns chain c to the driver with n bytes written into its
// writable buffers (clamped to their length), notifies the driver through
// the call eventfd when the ring's notification rules ask for it, and
// releases c. With a dirty log set (SetLog) it logs the pages of the first
// max(n, NoteWritten) writable bytes and of the used-ring entry and index
// before it returns. After Stop it only releases c and returns ErrStopped.
func (q *Queue) Push(c *Chain, n uint32) error { return q.push(c, n, true) }

// PushDeferred is Push without the notification: the used element is
// published at once, but whether the driver must be notified is decided
// by the next Flush or Push, once for every element published since. A
// device serving a burst of chains notifies once for the burst instead of
// once per chain (with EVENT_IDX the driver still gets the notification
// it asked for, only later).
func (q *Queue) PushDeferred(c *Chain, n uint32) error { return q.push(c, n, false) }

// Flush notifies the driver if the elements published by PushDeferred
// since the last decision call for it.
func (q *Queue) Flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deferred && !q.stopped {
		q.notifyLocked()
	}
}

func (q *Queue) push(c *Chain, n uint32, notify bool) error {
	defer c.Release()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return ErrStopped
	}
	if c.q != q || c.mem == nil {
		return errors.New("virtqueue: Push of a chain not popped from this queue")
	}
	n = min(n, c.wlen)
	if q.ur.mem != c.mem {
		r, err := q.resolve(c.mem)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBroken, err)
		}
		q.ur = r
	}
	u := &q.ur.used
	slot := usedRingOff + usedElemSize*int(q.nextUsed&(q.size-1))
	u.putLE32(slot, uint32(c.head))
	u.putLE32(slot+4, n)
	q.nextUsed++
	// used->flags is ours and always 0; the store publishes the element.
	u.store32(0, uint32(q.nextUsed)<<16)
	if q.logging {
		q.logPush(c, n, slot)
	}
	q.pushed.Add(1)
	if notify {
		q.notifyLocked()
	} else {
		q.deferred = true
	}
	return nil
}

// notifyLocked notifies the driver if the elements published since the
// last decision ask for it. q.mu is held.
func (q *Queue) notifyLocked() {
	q.deferred = false
	if q.needNotify() && q.call >= 0 {
		q.notified.Add(1)
		for {
			_, err := unix.Write(q.call, q.callBuf[:])
			if err != unix.EINTR {
				break
			}
		}
	}
}

// needNotify applies the notification-suppression rules after a push.
// q.mu is held.
func (q *Queue) needNotify() bool {
	a := &q.ur.avail
	if !q.eventIdx {
		return a.load16(0)&AvailFNoInterrupt == 0
	}
	old, valid := q.signalled, q.signalledValid
	q.signalled, q.signalledValid = q.nextUsed, true
	if !valid {
		return true
	}
	usedEvent := a.load16(availRingOff + 2*int(q.size))
	return q.nextUsed-usedEvent-1 < q.nextUsed-old
}

// SetCall makes fd (an eventfd, or -1 for none) the call notifier. When it
// returns, no notification goes to the previous fd any more, so the caller
// may close it. The next push notifies unconditionally.
func (q *Queue) SetCall(fd int) {
	q.mu.Lock()
	q.call = fd
	q.signalledValid = false
	q.mu.Unlock()
}

// Notify signals the call eventfd unconditionally (used after a ring is
// restarted so the driver rechecks the used ring).
func (q *Queue) Notify() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.call >= 0 && !q.stopped {
		unix.Write(q.call, q.callBuf[:])
	}
}

// Stop stops the queue: later pushes are dropped and Pop fails. It returns
// the used index reached.
func (q *Queue) Stop() uint16 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.isStopped.Store(true)
	return q.nextUsed
}

// Chain is one descriptor chain taken from a Queue: its device-readable
// buffers followed by its device-writable ones, as slices into guest
// memory. The slices are valid until the chain is pushed or released.
// A Chain is reusable: Pop fills it again.
type Chain struct {
	q          *Queue
	mem        *Memory
	head       uint16
	rd, wr     [][]byte
	rlen, wlen uint32
	written    uint32 // NoteWritten, for the dirty log
}

func (c *Chain) reset(q *Queue, m *Memory, head uint16) {
	c.q, c.mem, c.head = q, m, head
	c.rd, c.wr = c.rd[:0], c.wr[:0]
	c.rlen, c.wlen, c.written = 0, 0, 0
}

// Queue returns the queue the chain came from.
func (c *Chain) Queue() *Queue { return c.q }

// Head returns the index of the chain's first descriptor.
func (c *Chain) Head() uint16 { return c.head }

// Readable returns the device-readable buffers in order.
func (c *Chain) Readable() [][]byte { return c.rd }

// Writable returns the device-writable buffers in order.
func (c *Chain) Writable() [][]byte { return c.wr }

// ReadableLen returns the total length of the readable buffers.
func (c *Chain) ReadableLen() int { return int(c.rlen) }

// WritableLen returns the total length of the writable buffers.
func (c *Chain) WritableLen() int { return int(c.wlen) }

// Release drops the chain's hold on guest memory without returning it to
// the driver (Push does this itself). It is safe to call more than once.
func (c *Chain) Release() {
	if c.mem != nil {
		c.mem.Release()
		c.mem = nil
	}
	c.rd, c.wr = c.rd[:0], c.wr[:0]
	c.rlen, c.wlen, c.written = 0, 0, 0
}
