package virtiofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// drainTimeout bounds how long stopping a queue waits for its requests in
// flight; a request still running after it completes into a stopped queue
// and its reply is dropped.
const drainTimeout = 10 * time.Second

// pollInterval is how often a ring without a kick eventfd is polled.
const pollInterval = 5 * time.Millisecond

// Serving inline, a queue goroutine notifies the driver once per burst of
// chains instead of once per chain: when the available ring runs empty,
// or after flushBurst chains or flushDelay since the first reply held
// back, whichever comes first, so a long burst does not hold replies the
// driver waits for.
const (
	flushBurst = 16
	flushDelay = 100 * time.Microsecond
)

// runner serves one started queue: one goroutine waits on the kick
// eventfd and drains the available ring.
type runner struct {
	d     *Device
	index int
	q     *virtqueue.Queue
	kick  int // owned by the vhost-user backend; -1: poll
	wake  int // our eventfd: stop
	done  chan struct{}
	quit  chan struct{} // closed by stop: unblocks a dispatch waiting for a worker

	stopping atomic.Bool
	inflight sync.WaitGroup // chains handed to workers and not yet pushed
	// own serves chains on this goroutine: always on queue 0 (the
	// high-priority queue), on request queues with Options.ServeInline.
	own      *worker
	peek     virtqueue.Reader // reads the opcode of a chain before serving it inline
	held     int              // replies pushed without notification since the last Flush
	heldAt   time.Time        // when the first of them was pushed
	chainErr int              // malformed chains seen, for rate-limited logging
}

func newRunner(d *Device, index int, q *virtqueue.Queue, kick int) (*runner, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("virtiofs: eventfd: %w", err)
	}
	r := &runner{d: d, index: index, q: q, kick: kick, wake: wake, done: make(chan struct{}), quit: make(chan struct{})}
	if index == 0 || d.inline {
		r.own = newWorker(d)
		r.own.deferNotify = true
	}
	return r, nil
}

// stop ends the queue goroutine and waits for the requests in flight.
func (r *runner) stop() {
	r.stopping.Store(true)
	close(r.quit)
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	unix.Write(r.wake, one[:])
	<-r.done
	unix.Close(r.wake)

	drained := make(chan struct{})
	go func() { r.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		r.d.log.Warn("requests still running on a stopped queue; their replies will be dropped", "queue", r.index)
	}
}

func (r *runner) loop() {
	defer close(r.done)
	debug.SetPanicOnFault(true)
	fds := []unix.PollFd{{Fd: int32(r.wake), Events: unix.POLLIN}, {Fd: int32(r.kick), Events: unix.POLLIN}}
	timeout := -1
	if r.kick < 0 {
		fds = fds[:1]
		timeout = int(pollInterval / time.Millisecond)
	}
	var buf [8]byte
	broken := false
	for {
		// Drain first: chains may have been kicked before the ring was
		// started or enabled.
		if !broken && !r.drain() {
			broken = true
			fds, timeout = fds[:1], -1
		}
		if r.stopping.Load() {
			return
		}
		fds[0].Revents = 0
		if len(fds) > 1 {
			fds[1].Revents = 0
		}
		err := r.wait(fds, timeout)
		if err != nil {
			r.d.log.Error("polling the kick eventfd failed; queue stopped", "queue", r.index, "error", err)
			broken = true
			fds, timeout = fds[:1], -1
			continue
		}
		if fds[0].Revents != 0 {
			return
		}
		if len(fds) > 1 && fds[1].Revents&unix.POLLIN != 0 {
			unix.Read(r.kick, buf[:])
		} else if len(fds) > 1 && fds[1].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			r.d.log.Error("the kick eventfd failed; polling the ring instead", "queue", r.index)
			fds, timeout = fds[:1], int(pollInterval/time.Millisecond)
		}
	}
}

// drain serves every available chain and re-enables notification. It
// returns false when the queue is broken.
func (r *runner) drain() (ok bool) {
	var c *virtqueue.Chain
	defer func() {
		if p := recover(); p != nil {
			// The front-end pulled guest memory from under the rings.
			r.d.log.Error("fault while reading the rings; queue stopped", "queue", r.index, "panic", fmt.Sprint(p))
			if c != nil {
				c.Release()
			}
			ok = false
		}
	}()
	for !r.stopping.Load() {
		c = r.d.chains.Get().(*virtqueue.Chain)
		err := r.q.Pop(c)
		if err == nil {
			cur := c
			c = nil // the worker owns it now
			r.dispatch(cur)
			continue
		}
		r.d.chains.Put(c)
		c = nil
		var ce *virtqueue.ChainError
		switch {
		case errors.Is(err, virtqueue.ErrEmpty):
			r.flush()
			more, err := r.q.EnableNotify()
			if err != nil {
				r.d.log.Error("virtqueue broken; it is not served any more", "queue", r.index, "error", err)
				return false
			}
			if !more {
				return true
			}
		case errors.As(err, &ce):
			r.chainErr++
			if r.chainErr <= 10 || r.chainErr%1000 == 0 {
				r.d.log.Warn("malformed descriptor chain returned unserved", "queue", r.index, "head", ce.Head, "error", ce.Err, "count", r.chainErr)
			}
		case errors.Is(err, virtqueue.ErrStopped):
			return true
		default:
			r.flush()
			r.d.log.Error("virtqueue broken; it is not served any more", "queue", r.index, "error", err)
			return false
		}
	}
	r.flush()
	return true
}

// dispatch serves c: inline on the high-priority queue and, with
// Options.ServeInline, on request queues unless the request may block;
// else by a worker.
func (r *runner) dispatch(c *virtqueue.Chain) {
	if r.own != nil && (r.index == 0 || !r.mayBlock(c)) {
		r.own.queue = r.index
		r.own.serve(c)
		r.d.chains.Put(c)
		if r.held == 0 {
			r.heldAt = time.Now()
		}
		if r.held++; r.held >= flushBurst || time.Since(r.heldAt) >= flushDelay {
			r.flush()
		}
		return
	}
	r.inflight.Add(1)
	if !r.d.pool.submit(c, r) {
		// Stopping while every worker is busy: give the chain back
		// unserved rather than wait.
		r.q.Push(c, 0)
		r.d.chains.Put(c)
		r.inflight.Done()
	}
}

// flush notifies the driver of the replies pushed inline since the last
// flush, if the ring's rules ask for it.
func (r *runner) flush() {
	if r.held > 0 {
		r.held = 0
		r.q.Flush()
	}
}

// mayBlock reports whether the request in c may wait for other requests
// to be served: SETLKW waits until the lock's holder releases it, which
// may take a request on this very queue. A chain too short to hold a
// header is not (the worker answers it at once).
func (r *runner) mayBlock(c *virtqueue.Chain) bool {
	var hdr [8]byte // fuse_in_header: len, opcode
	r.peek.Reset(c.Readable())
	if n, _ := r.peek.Read(hdr[:]); n < len(hdr) {
		return false
	}
	return fuseproto.Opcode(binary.LittleEndian.Uint32(hdr[4:])) == fuseproto.OpSetlkw
}

// rawWindow is how long a queue goroutine waits for the next kick without
// telling the Go scheduler (rawPoll) before it waits the ordinary way.
const rawWindow = 4 * time.Millisecond

// wait waits for fds (timeout in ms, -1 for ever) in two steps. For up to
// rawWindow after the last request it waits in rawPoll, keeping its P: a
// scheduler-aware poll cost more CPU than the request itself when
// requests come one at a time, since every return from it woke the
// runtime's monitor thread (sysmon), which then ticked every 20 µs. Then,
// the queue being idle, it waits in an ordinary poll that gives the P
// back, so an idle daemon takes no wake-ups at all (a goroutine left in
// rawPoll would be preempted by the runtime every 10 ms). The window is
// shorter than the runtime's 10 ms preemption slice, so waiting in it is
// rarely interrupted; when it is (EINTR), the goroutine yields and waits
// again without draining, which would write avail_event (and log it while
// migrating) for nothing.
func (r *runner) wait(fds []unix.PollFd, timeout int) error {
	raw := int(rawWindow / time.Millisecond)
	if timeout >= 0 && timeout < raw {
		raw = timeout
	}
	for {
		n, err := rawPoll(fds, raw)
		if err == unix.EINTR {
			runtime.Gosched()
			continue
		}
		if err != nil || n > 0 || raw == timeout {
			return err
		}
		break
	}
	for {
		_, err := unix.Poll(fds, timeout)
		if err != unix.EINTR {
			return err
		}
	}
}

// rawPoll is ppoll(2) without telling the Go scheduler about the system
// call: the goroutine keeps its P (and OS thread) while it waits, as a
// virtiofsd queue thread does. The runtime can still preempt it: its
// signal interrupts the wait with EINTR, returned here. Device raises
// GOMAXPROCS by one per started queue so that queues waiting here do not
// starve the other goroutines. It returns the number of ready fds.
func rawPoll(fds []unix.PollFd, timeout int) (int, error) {
	var ts *unix.Timespec // nil: wait for ever
	var t unix.Timespec
	if timeout >= 0 {
		t = unix.NsecToTimespec(int64(timeout) * int64(time.Millisecond))
		ts = &t
	}
	// ppoll, not poll: the seccomp allow-list has ppoll (poll does not
	// exist on arm64).
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
