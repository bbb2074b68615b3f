package virtiofs

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// idleTimeout is how long a worker beyond the pool's size waits for work
// before it exits.
const idleTimeout = time.Second

// job is a chain and the queue it came from.
type job struct {
	c *virtqueue.Chain
	r *runner
}

// pool is the workers serving the request queues.
type pool struct {
	d     *Device
	work  chan job // unbuffered: a send succeeds only if a worker waits
	keep  int
	limit int

	mu     sync.Mutex
	total  int
	spare  []*worker
	closed bool
	warned bool
	wg     sync.WaitGroup
	busy   atomic.Int32 // workers serving a request, for tests
}

func newPool(d *Device, keep, limit int) *pool {
	p := &pool{d: d, work: make(chan job), keep: keep, limit: limit}
	p.mu.Lock()
	for range keep {
		p.startLocked(newWorker(d), job{}, false)
	}
	p.mu.Unlock()
	return p
}

// startLocked starts a worker goroutine, optionally with a first job; a
// temporary worker exits after idleTimeout without work.
func (p *pool) startLocked(w *worker, first job, temporary bool) {
	p.total++
	p.wg.Add(1)
	go p.run(w, first, temporary)
}

// submit hands c to a worker: an idle one, or a new one while under the
// limit, or the next to become free. It returns false if r stops while
// waiting.
func (p *pool) submit(c *virtqueue.Chain, r *runner) bool {
	j := job{c, r}
	select {
	case p.work <- j:
		return true
	default:
	}
	p.mu.Lock()
	if !p.closed && p.total < p.limit {
		var w *worker
		if n := len(p.spare); n > 0 {
			w, p.spare = p.spare[n-1], p.spare[:n-1]
		} else {
			w = newWorker(p.d)
		}
		p.startLocked(w, j, true)
		p.mu.Unlock()
		return true
	}
	if !p.warned {
		p.warned = true
		p.d.log.Warn("all virtio-fs workers are busy; requests wait for one", "workers", p.total)
	}
	p.mu.Unlock()
	select {
	case p.work <- j:
		return true
	case <-r.quit:
		return false
	}
}

func (p *pool) run(w *worker, first job, temporary bool) {
	defer p.wg.Done()
	debug.SetPanicOnFault(true)
	if first.c != nil {
		p.serve(w, first)
	}
	var idle *time.Timer
	var idleC <-chan time.Time
	if temporary {
		idle = time.NewTimer(idleTimeout)
		idleC = idle.C
	}
	for {
		select {
		case j, ok := <-p.work:
			if !ok {
				return
			}
			p.serve(w, j)
			if idle != nil {
				idle.Reset(idleTimeout)
			}
		case <-idleC:
			p.mu.Lock()
			p.total--
			p.spare = append(p.spare, w)
			p.mu.Unlock()
			return
		}
	}
}

func (p *pool) serve(w *worker, j job) {
	p.busy.Add(1)
	w.queue = j.r.index
	w.serve(j.c)
	p.busy.Add(-1)
	p.d.chains.Put(j.c)
	j.r.inflight.Done()
}

// close stops every worker once the queues are stopped.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.work)
	p.wg.Wait()
}

// worker is the reusable state of one request in progress: the request
// buffer, the Server's request state, the reply's scatter-gather state, and
// the Replier.
type worker struct {
	d   *Device
	buf []byte
	st  fuseproto.RequestState
	c   *virtqueue.Chain

	req     virtqueue.Reader // the chain's readable buffers
	data    virtqueue.Writer // READ data, after the reply header
	hdr     virtqueue.Writer // the reply itself
	src     chainSource
	dst     chainDest
	replied bool
	placed  bool // DataDest was used: data may be in the writable buffers
	queue   int  // the virtqueue the chain came from, for the debug log
	// deferNotify: the chain is pushed without notifying the driver;
	// the queue's goroutine, serving a burst inline, notifies once for
	// the burst (virtqueue.Queue.Flush).
	deferNotify bool
}

// push returns c to its queue with n bytes written.
func (w *worker) push(c *virtqueue.Chain, n uint32) {
	if w.deferNotify {
		c.Queue().PushDeferred(c, n)
		return
	}
	c.Queue().Push(c, n)
}

func newWorker(d *Device) *worker {
	w := &worker{d: d, buf: make([]byte, d.srv.BufferSize())}
	w.src.r = &w.req
	w.dst.w = &w.data
	return w
}

var _ fuseproto.QueueReplier = (*worker)(nil)

// Queue implements fuseproto.QueueReplier: the index of the virtqueue the
// request came from (0 is the high-priority queue).
func (w *worker) Queue() int { return w.queue }

// serve handles one chain and pushes it to the used ring.
func (w *worker) serve(c *virtqueue.Chain) {
	w.c, w.replied, w.placed = c, false, false
	defer func() {
		if p := recover(); p != nil {
			// A fault on guest memory (the front-end shrank a region
			// under us) or a bug outside the Server's own recovery.
			w.d.log.Error("fault while serving a virtio-fs request", "panic", fmt.Sprint(p))
		}
		if !w.replied {
			// FORGET and friends have no reply; a failed one gets none
			// either. The chain goes back with nothing written (but
			// data placed for it is still dirty).
			w.notePlaced()
			w.push(c, 0)
		}
		w.c = nil
	}()
	req, payload := w.request(c)
	w.d.srv.HandleWith(&w.st, req, payload, w)
}

// request reads the FUSE request from c's readable buffers into w.buf. A
// WRITE stops after fuse_write_in: its data stays in guest memory and is
// returned as the payload.
func (w *worker) request(c *virtqueue.Chain) ([]byte, fuseproto.WriteSource) {
	w.req.Reset(c.Readable())
	total := w.req.Len()
	n, _ := w.req.Read(w.buf[:min(total, fuseproto.InHeaderSize)])
	if n == fuseproto.InHeaderSize && writeWithPayload(w.buf[:n], total) {
		k, _ := w.req.Read(w.buf[n : n+writeInSize])
		return w.buf[:n+k], &w.src
	}
	// A request longer than the buffer is truncated: the Server then sees
	// a length mismatch and answers EIO.
	k, _ := w.req.Read(w.buf[n:min(total, len(w.buf))])
	return w.buf[:n+k], nil
}

// writeInSize is sizeof(struct fuse_write_in).
const writeInSize = 40

// writeWithPayload reports whether the request whose fuse_in_header is hdr
// is a WRITE with data after its fuse_write_in and no extensions.
func writeWithPayload(hdr []byte, total int) bool {
	var h fuseproto.InHeader
	fuseproto.Decode(hdr, &h)
	return h.Opcode == fuseproto.OpWrite && h.TotalExtlen == 0 && total >= fuseproto.InHeaderSize+writeInSize
}

// DataDest implements fuseproto.Replier: READ data goes straight into the
// writable buffers after the reply header.
func (w *worker) DataDest(limit int) fuseproto.ReadDest {
	w.placed = true
	w.data.Reset(w.c.Writable())
	w.data.Skip(fuseproto.OutHeaderSize)
	w.data.Limit(limit)
	w.dst.base = w.data.Written()
	return &w.dst
}

// Reply implements fuseproto.Replier: msg goes at the start of the writable
// buffers (before the data already placed by DataDest), and the chain is
// returned with the reply's length. A reply that does not fit is dropped
// and the chain returned with length 0.
func (w *worker) Reply(msg []byte, dataLen int) {
	c := w.c
	total := len(msg) + dataLen
	w.replied = true
	w.notePlaced()
	if total > c.WritableLen() || (dataLen > 0 && len(msg) != fuseproto.OutHeaderSize) {
		if w.d.log.IsDebug() {
			var h fuseproto.OutHeader
			fuseproto.Decode(msg, &h)
			w.d.log.Debug("reply does not fit the chain's writable buffers; dropped", "unique", h.Unique, "len", total, "room", c.WritableLen())
		}
		w.push(c, 0)
		return
	}
	w.hdr.Reset(c.Writable())
	w.hdr.Write(msg)
	w.push(c, uint32(total))
}

// notePlaced tells the chain how far data placed by DataDest reached, which
// may be beyond the length it is pushed with (a READ that turned into an
// error, a reply that does not fit), for the dirty log.
func (w *worker) notePlaced() {
	if w.placed {
		w.c.NoteWritten(w.data.Written())
	}
}

// chainDest is the ReadDest over the writable buffers after the header.
type chainDest struct {
	w    *virtqueue.Writer
	base int
}

// Room implements fuseproto.ReadDest.
func (d *chainDest) Room() int { return d.w.Room() }

// Len implements fuseproto.ReadDest.
func (d *chainDest) Len() int { return d.w.Written() - d.base }

// ReadFromFD implements fuseproto.ReadDest with preadv into guest memory.
func (d *chainDest) ReadFromFD(fd int, off int64, n int) (int, fuseproto.Errno) {
	return d.w.ReadFromFD(fd, off, n)
}

// Write implements fuseproto.ReadDest.
func (d *chainDest) Write(p []byte) (int, error) { return d.w.Write(p) }

// chainSource is the WriteSource over a WRITE's data in guest memory.
type chainSource struct {
	r *virtqueue.Reader
}

// Len implements fuseproto.WriteSource.
func (s *chainSource) Len() int { return s.r.Len() }

// WriteToFD implements fuseproto.WriteSource with pwritev from guest memory.
func (s *chainSource) WriteToFD(fd int, off int64) (int, fuseproto.Errno) {
	return s.r.WriteToFD(fd, off)
}

// Read implements fuseproto.WriteSource.
func (s *chainSource) Read(p []byte) (int, error) { return s.r.Read(p) }

var (
	_ fuseproto.ReadDest    = (*chainDest)(nil)
	_ fuseproto.WriteSource = (*chainSource)(nil)
)
