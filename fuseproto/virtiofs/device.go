// Package virtiofs is the virtio-fs device (virtio device ID 26) on top of
// vhostuser and virtqueue: a high-priority queue plus request queues
// carrying FUSE requests to a fuseproto.Server.
//
// Queue 0 is the high-priority queue: FORGET, BATCH_FORGET and INTERRUPT.
// It is served by its own goroutine, inline, so request-queue load never
// stalls it. Queues 1..N are request queues (Linux does not negotiate
// VIRTIO_FS_F_NOTIFICATION, so there is no notification queue). Each
// started queue has a goroutine that waits on the kick eventfd, drains the
// available ring and hands every chain to a worker pool shared by all
// request queues, so requests on every queue run in parallel; or, with
// Options.ServeInline (virtiofsd's --thread-pool-size=0, our default),
// serves them itself one after the other, handing only requests that may
// wait for other requests (SETLKW) to the pool.
//
// A worker copies the FUSE header and arguments from the chain's readable
// buffers into its own buffer (Server.BufferSize bytes), except for WRITE:
// it stops after fuse_write_in and passes the data as a
// fuseproto.WriteSource that pwritev's straight from guest memory. The
// Replier's ReadDest preadv's READ data straight into the writable buffers
// after the 16-byte reply header. The reply is copied into the writable
// buffers and the chain pushed to the used ring with the reply's length
// (the driver is notified through the call eventfd as EVENT_IDX allows).
// A chain without room for its reply, or malformed, is returned with
// length 0; requests without a reply (FORGET) too. No request allocates:
// chains, buffers and reply state are pooled per worker.
//
// The pool keeps ThreadPoolSize workers and grows, while every worker is
// busy, up to max(4*ThreadPoolSize, 64), so that requests that block (a
// SETLKW waiting for a lock) cannot starve the ones that would release
// them; extra workers exit after a second of idleness.
//
// # Live migration
//
// With Options.State set the device offers VHOST_USER_PROTOCOL_F_DEVICE_STATE:
// SaveState and LoadState move the FUSE session (fuseproto.Server's inodes,
// handles and INIT parameters) through the pipe the front-end passes with
// SET_DEVICE_STATE_FD. The vhostuser backend serves no queue while a
// transfer runs, so a destination serves no request against a half-loaded
// session. Dirty page logging is the vhostuser and virtqueue packages'
// part: every reply reaches guest memory through Queue.Push (data placed
// for a reply that then failed is reported with Chain.NoteWritten).
//
// Lock order: Device.mu (queue table) is never held while waiting for a
// queue goroutine; pool.mu guards only the worker count and spare states.
package virtiofs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// Limits and defaults of the device options.
const (
	// TagSize is the size of the config space's tag field; a tag is 1 to
	// TagSize bytes.
	TagSize = 36
	// DefaultRequestQueues is the number of request queues offered when
	// Options.RequestQueues is zero.
	DefaultRequestQueues = 1
	// MaxRequestQueues bounds Options.RequestQueues.
	MaxRequestQueues = 64
)

// Options configure the virtio-fs device.
type Options struct {
	// Tag is the file-system tag. When set, the device serves its config
	// space (tag and number of request queues) through GET_CONFIG and
	// offers the CONFIG protocol feature; when empty it does not (QEMU
	// 7.1 to 8.0 crash on a back-end that offers CONFIG, and QEMU builds
	// the config space itself from its own tag= property).
	Tag string
	// RequestQueues is the number of request queues offered (GET_QUEUE_NUM
	// answers one more, for the high-priority queue); a front-end may set
	// up fewer. Zero means DefaultRequestQueues; at most MaxRequestQueues.
	RequestQueues int
	// ThreadPoolSize is the number of workers kept for the request
	// queues; zero means max(4, 2*GOMAXPROCS). It is ignored when
	// ServeInline is set.
	ThreadPoolSize int
	// ServeInline serves each request queue's requests on the queue's
	// own goroutine, one after the other, as virtiofsd does with
	// --thread-pool-size=0: no hand-off to another thread per request,
	// which roughly halves the CPU cost of a small request. Parallelism
	// then comes from the request queues (a multi-queue guest spreads
	// its CPUs' requests over them). Requests that may wait for other
	// requests (SETLKW waits for an unlock) still go to pool workers,
	// started on demand, so a queue never deadlocks on itself.
	ServeInline bool
	// QueueSize is the largest ring size accepted; zero means
	// virtqueue.MaxQueueSize.
	QueueSize int
	// KeepServing makes ListenAndServe wait for a new front-end when one
	// disconnects, instead of returning.
	KeepServing bool
	// MaxMemSlots is passed to vhostuser.Options.
	MaxMemSlots int
	// State is the state that migrates with the device, normally the
	// *fuseproto.Server the device serves. When nil the device does not
	// offer DEVICE_STATE and QEMU refuses to migrate it.
	State State
	// Logger receives warnings and debug lines; nil discards them.
	Logger hclog.Logger
}

// State is what travels with a live migration of the device: SaveState
// writes it on the source, LoadState reads it back on the destination,
// while no request is being served (every queue is stopped, and none is
// served until the transfer ends). fuseproto.Server implements it.
type State interface {
	SaveState(w io.Writer) error
	LoadState(r io.Reader) error
}

// Device is the virtio-fs device; it implements vhostuser.Device.
type Device struct {
	srv    *fuseproto.Server
	log    hclog.Logger
	config []byte
	nq     int
	qsize  int
	state  State
	pool   *pool
	inline bool      // Options.ServeInline
	chains sync.Pool // *virtqueue.Chain

	mu      sync.Mutex
	runners []*runner // by queue index, nil when not served
}

var (
	_ vhostuser.Device          = (*Device)(nil)
	_ vhostuser.StateTransferer = (*Device)(nil)
)

// NewDevice returns a device serving srv. Close it when done.
func NewDevice(srv *fuseproto.Server, opts Options) (*Device, error) {
	rq := opts.RequestQueues
	if rq == 0 {
		rq = DefaultRequestQueues
	}
	if rq < 1 || rq > MaxRequestQueues {
		return nil, fmt.Errorf("virtiofs: %d request queues (1 to %d)", rq, MaxRequestQueues)
	}
	if len(opts.Tag) > TagSize {
		return nil, fmt.Errorf("virtiofs: tag %q is longer than %d bytes", opts.Tag, TagSize)
	}
	qsize := opts.QueueSize
	if qsize == 0 {
		qsize = virtqueue.MaxQueueSize
	}
	if qsize < 1 || qsize > virtqueue.MaxQueueSize || qsize&(qsize-1) != 0 {
		return nil, fmt.Errorf("virtiofs: queue size %d is not a power of two up to %d", qsize, virtqueue.MaxQueueSize)
	}
	threads := opts.ThreadPoolSize
	if threads <= 0 {
		threads = max(4, 2*runtime.GOMAXPROCS(0))
	}
	keep := threads
	if opts.ServeInline {
		keep = 0 // workers only for the requests that may block
	}
	d := &Device{srv: srv, log: opts.Logger, nq: 1 + rq, qsize: qsize, state: opts.State, inline: opts.ServeInline}
	if d.log == nil {
		d.log = hclog.NewNullLogger()
	}
	if opts.Tag != "" {
		d.config = make([]byte, TagSize+4)
		copy(d.config, opts.Tag)
		binary.LittleEndian.PutUint32(d.config[TagSize:], uint32(rq))
	}
	d.runners = make([]*runner, d.nq)
	d.chains.New = func() any { return new(virtqueue.Chain) }
	d.pool = newPool(d, keep, max(4*threads, 64))
	return d, nil
}

// Close stops the worker pool. The device must not be serving.
func (d *Device) Close() { d.pool.close() }

// Features implements vhostuser.Device.
func (d *Device) Features() uint64 {
	return virtqueue.FeatureVersion1 | virtqueue.FeatureIndirectDesc | virtqueue.FeatureEventIdx
}

// NumQueues implements vhostuser.Device: the high-priority queue and the
// request queues.
func (d *Device) NumQueues() int { return d.nq }

// MaxQueueSize implements vhostuser.Device.
func (d *Device) MaxQueueSize() int { return d.qsize }

// Config implements vhostuser.Device: struct virtio_fs_config (tag[36],
// le32 num_request_queues) when a tag was given.
func (d *Device) Config() []byte { return d.config }

// SetConfig implements vhostuser.Device; the virtio-fs config space is
// read-only, so only live-migration writes of the same bytes are accepted.
func (d *Device) SetConfig(off uint32, data []byte, flags uint32) error {
	if d.config != nil && flags == 1 && uint64(off)+uint64(len(data)) <= uint64(len(d.config)) &&
		string(d.config[off:int(off)+len(data)]) == string(data) {
		return nil
	}
	return errors.New("virtiofs: the config space is read-only")
}

// StartQueue implements vhostuser.Device.
func (d *Device) StartQueue(index int, q *virtqueue.Queue, kick int) error {
	if index < 0 || index >= d.nq {
		return fmt.Errorf("virtiofs: no queue %d", index)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.runners[index] != nil {
		return fmt.Errorf("virtiofs: queue %d already started", index)
	}
	r, err := newRunner(d, index, q, kick)
	if err != nil {
		return err
	}
	d.runners[index] = r
	procs.add(1)
	go r.loop()
	return nil
}

// StopQueue implements vhostuser.Device: the queue goroutine stops, and the
// requests in flight on that queue are waited for (up to drainTimeout).
func (d *Device) StopQueue(index int) {
	if index < 0 || index >= d.nq {
		return
	}
	d.mu.Lock()
	r := d.runners[index]
	d.runners[index] = nil
	d.mu.Unlock()
	if r != nil {
		r.stop()
		procs.add(-1)
	}
}

// Reset implements vhostuser.Device: the FUSE session ends (every inode
// and handle of the guest is dropped); a new FUSE_INIT starts another.
func (d *Device) Reset() { d.srv.Destroy() }

// CanTransferState implements vhostuser.StateTransferer: the device
// migrates when Options.State was given.
func (d *Device) CanTransferState() bool { return d.state != nil }

// SaveState implements vhostuser.StateTransferer with Options.State.
func (d *Device) SaveState(w io.Writer) error {
	if d.state == nil {
		return errNoState
	}
	return d.state.SaveState(w)
}

// LoadState implements vhostuser.StateTransferer with Options.State.
func (d *Device) LoadState(r io.Reader) error {
	if d.state == nil {
		return errNoState
	}
	return d.state.LoadState(r)
}

var errNoState = errors.New("virtiofs: the device has no migratable state")

// ServeConn serves one front-end connection with srv until it disconnects.
func ServeConn(ctx context.Context, c *net.UnixConn, srv *fuseproto.Server, opts Options) error {
	d, err := NewDevice(srv, opts)
	if err != nil {
		c.Close()
		return err
	}
	defer d.Close()
	return vhostuser.NewBackend(d, vhostuser.Options{MaxMemSlots: opts.MaxMemSlots, Logger: opts.Logger}).ServeConn(ctx, c)
}

// ListenAndServe serves virtio-fs front-ends accepted on l with srv. It
// returns when the first front-end disconnects (as virtiofsd exits then),
// or, with opts.KeepServing, only when ctx is done or accepting fails. It
// returns nil on a clean end, the error of a dropped connection otherwise.
func ListenAndServe(ctx context.Context, l *net.UnixListener, srv *fuseproto.Server, opts Options) error {
	d, err := NewDevice(srv, opts)
	if err != nil {
		return err
	}
	defer d.Close()
	return vhostuser.NewBackend(d, vhostuser.Options{MaxMemSlots: opts.MaxMemSlots, Logger: opts.Logger}).Serve(ctx, l, opts.KeepServing)
}

// procs keeps GOMAXPROCS at the CPUs' count plus one for every queue
// goroutine, which holds a P while it waits in rawPoll.
var procs procBudget

type procBudget struct {
	mu     sync.Mutex
	base   int // GOMAXPROCS before the first queue started
	queues int
}

func (b *procBudget) add(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queues == 0 && n > 0 {
		b.base = runtime.GOMAXPROCS(0)
	}
	b.queues += n
	runtime.GOMAXPROCS(b.base + b.queues)
}
