package stream

// The guest end: Relay moves FUSE messages between the guest kernel's
// /dev/fuse and the stream, in both directions at once, without looking
// inside them beyond their fuse_in_header and fuse_out_header.
//
// Both file descriptors are switched to non-blocking mode and every wait is
// a poll(2) that also watches an eventfd, so that either direction can be
// told to stop wherever it waits: a thread blocked in read(2) on /dev/fuse
// or on a virtio-serial port cannot be woken by closing the descriptor (the
// system call holds its own reference to the file), and a port has no
// shutdown(2).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// DefaultMaxMessage is the largest message Relay moves by default, either
// way: a WRITE or READ of 1 MiB (fuseproto.DefaultMaxWrite, and the
// kernel's default limit of 256 pages) with its headers, with room to
// spare for a SETXATTR of the largest value.
const DefaultMaxMessage = 1<<20 + 64<<10

// DestroyUnique is the unique of the FUSE_DESTROY request Relay sends on
// the kernel's behalf when the filesystem is unmounted. The kernel numbers
// its requests with even uniques counting up from 2 and gives an INTERRUPT
// the unique of the request it interrupts with the low bit set, so this
// all-ones value is the INTERRUPT of request 2^64-2: one the kernel never
// sends. Its reply is the last message of a session and is not passed to
// the kernel (whose connection is gone by then).
const DestroyUnique = ^uint64(0)

// spliceMin is the smallest reply moved with splice(2): below it a copy
// costs less than the extra system calls.
const spliceMin = 64 << 10

// destroyWait is how long Relay waits for the daemon's answer to the
// FUSE_DESTROY it sends after the unmount.
const destroyWait = 2 * time.Second

// handshakeSkipMax is how much Handshake skips looking for the daemon's
// Hello: on a virtio-serial port, replies of an earlier session may still
// be queued before it.
const handshakeSkipMax = 16 << 20

var (
	// ErrStreamClosed is wrapped by Relay's error when the daemon closed
	// the stream, or the connection failed, while the filesystem was
	// still mounted.
	ErrStreamClosed = errors.New("connection to the daemon closed")
	// ErrMalformed is wrapped by Relay's error when the daemon sent a
	// message whose length is impossible: the stream is out of step and
	// nothing after it can be trusted.
	ErrMalformed = errors.New("malformed stream")
	// ErrConnAborted is returned by Relay when the FUSE connection was
	// aborted from outside (/sys/fs/fuse/connections/N/abort).
	ErrConnAborted = errors.New("the FUSE connection was aborted")
	// ErrStopped is returned by Relay when RelayOptions.Stop was closed.
	ErrStopped = errors.New("relay stopped")
	// ErrVersion is wrapped by Handshake's error when the daemon speaks
	// another major version of the stream protocol.
	ErrVersion = errors.New("incompatible stream protocol versions")
	// ErrBusy is wrapped by Handshake's error when the daemon refused the
	// session (StatusBusy).
	ErrBusy = errors.New("the daemon is busy and refused the session")
)

// errWoken is how a direction learns that Relay is ending.
var errWoken = errors.New("stream: relay woken to stop")

// errUnmounted is how the kernel→stream direction reports the normal end.
var errUnmounted = errors.New("stream: the filesystem was unmounted")

// RelayOptions configure Relay.
type RelayOptions struct {
	// Logger receives the relay's warnings (a reply the kernel refused)
	// and debug lines; nil discards them.
	Logger hclog.Logger
	// MaxMessage is the largest message moved either way, and the size of
	// the buffers; zero means DefaultMaxMessage. It must hold the
	// largest WRITE request (80 bytes of headers plus the max_write the
	// daemon negotiates: the kernel refuses to hand requests to a smaller
	// buffer) and the largest READ reply (16 bytes plus max_pages pages).
	// Values below 8192 (the kernel's FUSE_MIN_READ_BUFFER) are raised to
	// it.
	MaxMessage int
	// Stats, if not nil, receives the relay's counters as it runs.
	Stats *RelayStats
	// ConnID, if not zero, is the FUSE connection's number under
	// /sys/fs/fuse/connections (see ConnectionID): when the stream fails,
	// Relay aborts the connection there, so that the requests in flight
	// fail at once (ECONNABORTED) and later ones with ENOTCONN. Without
	// it the caller aborts by closing dev after Relay returns.
	ConnID int
	// Stop, if not nil, ends Relay when closed: it returns ErrStopped,
	// after aborting the connection as on a stream failure.
	Stop <-chan struct{}
	// NoSplice moves every message with read(2) and write(2), as when
	// splice(2) is not available.
	NoSplice bool
}

// RelayStats counts what a Relay moved. The fields may be read while Relay
// runs.
type RelayStats struct {
	// Requests and RequestBytes count the requests moved from the kernel
	// to the daemon, the FUSE_DESTROY Relay makes up not included.
	Requests, RequestBytes atomic.Uint64
	// SplicedRequests counts the requests moved with splice(2), without
	// copying them through the relay's memory.
	SplicedRequests atomic.Uint64
	// Replies and ReplyBytes count the messages moved from the daemon to
	// the kernel: replies and notifications.
	Replies, ReplyBytes atomic.Uint64
	// Notifications counts the messages with unique 0 among Replies.
	Notifications atomic.Uint64
	// SplicedReplies counts the replies moved with splice(2).
	SplicedReplies atomic.Uint64
	// SpliceFallbacks counts the replies whose splicing was begun but
	// which were then copied: they came in more pieces than the pipe has
	// slots, or the stream turned out not to splice.
	SpliceFallbacks atomic.Uint64
	// DroppedReplies counts the replies the kernel did not take: the
	// request was interrupted or the session was ending (ENOENT, ENODEV),
	// or the reply was refused (EINVAL).
	DroppedReplies atomic.Uint64
	// DestroySent is set when Relay sent FUSE_DESTROY after the unmount,
	// and DestroyReplied when the daemon answered it.
	DestroySent, DestroyReplied atomic.Bool
}

// relay is one Relay's state. The kernel→stream direction owns the k*
// fields, the stream→kernel direction the s* fields.
type relay struct {
	dev, stream int
	log         hclog.Logger
	stats       *RelayStats
	max         int
	connID      int // RelayOptions.ConnID
	wakeMu      sync.Mutex
	wake        int  // eventfd, readable once the relay is ending; -1 once closed
	woken       bool // wake was written
	devFlags    int  // dev's file status flags before Relay
	streamFlags int

	destroySent atomic.Bool
	destroy     [fuseproto.InHeaderSize]byte

	// kernel → stream
	kbuf          []byte
	kpipe         [2]int // -1: requests are copied
	kStreamSplice bool   // splice(kpipe → stream) has worked
	kDevSplice    bool   // splice(dev → kpipe) has worked
	kpfd          [2]unix.PollFd

	// stream → kernel
	sbuf          []byte
	sr, sw        int    // unread bytes are sbuf[sr:sw]
	spipe         [2]int // -1: replies are copied
	sStreamSplice bool   // splice(stream → spipe) has worked
	spfd          [2]unix.PollFd
}

// Relay serves a mounted FUSE filesystem over a stream to a daemon running
// Serve: it reads the guest kernel's requests from dev, the session's
// /dev/fuse descriptor, and writes them to stream, and writes the
// daemon's replies and notifications read from stream to dev. stream is a
// connected socket (unix or vsock) or a virtio-serial port opened
// read-write, on which Handshake has already been done. Requests are
// passed on as they come, never waiting for a reply: the daemon serves
// many at once and answers in any order.
//
// Relay switches both descriptors to non-blocking mode while it runs. Each
// direction has its own goroutine and buffers, made once; large messages
// go through a pipe with splice(2) where the descriptors allow it, so that
// WRITE and READ payloads are not copied through user memory.
//
// Relay returns nil when the filesystem was unmounted: it then sends the
// daemon a FUSE_DESTROY (the kernel sends none for a fuse mount) and waits
// up to two seconds for the answer. It returns ErrConnAborted when the
// connection was aborted from outside, and otherwise an error wrapping
// ErrStreamClosed when the stream closed or failed, or ErrMalformed when
// the daemon sent a message of impossible length. On such an error the
// kernel still holds the requests in flight: Relay aborts the connection
// through fusectl when RelayOptions.ConnID is set, and in any case the
// caller should close dev (which aborts the connection when it is its
// last descriptor: processes waiting on the mount then fail with
// ECONNABORTED, and later calls with ENOTCONN) and detach the mount
// (umount2 with MNT_DETACH).
func Relay(dev int, stream int, opts RelayOptions) error {
	r, err := newRelay(dev, stream, opts)
	if err != nil {
		return err
	}
	defer r.close()
	ended := make(chan struct{})
	defer close(ended)
	stopped := atomic.Bool{}
	if opts.Stop != nil {
		go func() {
			select {
			case <-opts.Stop:
				stopped.Store(true)
				r.stop()
			case <-ended:
			}
		}()
	}
	kc := make(chan error, 1)
	sc := make(chan error, 1)
	go func() { kc <- r.kernelToStream() }()
	go func() { sc <- r.streamToKernel() }()

	var kerr, serr error
	kdone := false
	select {
	case kerr = <-kc:
		kdone = true
	case serr = <-sc:
	}
	clean := kdone && (kerr == errUnmounted || kerr == ErrConnAborted) || !kdone && serr == nil
	if !clean {
		// One direction failed: stop the other, and make the requests
		// in flight fail instead of waiting for an answer that will
		// not come.
		r.stop()
		first := serr
		if kdone {
			first = kerr
			serr = <-sc
		} else {
			kerr = <-kc
		}
		if first == errWoken && stopped.Load() {
			first = ErrStopped
		}
		r.abort()
		r.log.Debug("relay ended", "error", first, "kernel-side", kerr, "stream-side", serr)
		return first
	}
	if !kdone {
		// The daemon answered DESTROY: the kernel side has sent it,
		// so it is ending.
		kerr = <-kc
	} else {
		t := time.NewTimer(destroyWait)
		select {
		case serr = <-sc:
			t.Stop()
		case <-t.C:
			r.log.Debug("no answer to DESTROY", "waited", destroyWait)
			r.stop()
			serr = <-sc
		}
	}
	if serr != nil && serr != errWoken {
		r.log.Debug("the stream failed after the unmount", "error", serr)
	}
	if kerr == ErrConnAborted {
		return kerr
	}
	return nil
}

// newRelay sets up a Relay: buffers, pipes, the eventfd, non-blocking
// descriptors.
func newRelay(dev, stream int, opts RelayOptions) (*relay, error) {
	r := &relay{dev: dev, stream: stream, log: opts.Logger, stats: opts.Stats, max: opts.MaxMessage, connID: opts.ConnID,
		wake: -1, devFlags: -1, streamFlags: -1, kpipe: [2]int{-1, -1}, spipe: [2]int{-1, -1}}
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	if r.stats == nil {
		r.stats = new(RelayStats)
	}
	if r.max <= 0 {
		r.max = DefaultMaxMessage
	}
	r.max = max(r.max, minReadBuffer)
	var err error
	if r.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("stream: eventfd: %w", err)
	}
	if r.devFlags, err = setNonblock(dev); err != nil {
		r.close()
		return nil, fmt.Errorf("stream: /dev/fuse descriptor: %w", err)
	}
	if r.streamFlags, err = setNonblock(stream); err != nil {
		r.close()
		return nil, fmt.Errorf("stream: stream descriptor: %w", err)
	}
	r.kbuf = make([]byte, r.max)
	r.sbuf = make([]byte, r.max+64<<10)
	if !opts.NoSplice {
		need := pipeNeed(r.max)
		r.kpipe = newPipe(need)
		r.spipe = newPipe(need)
		if testReplyPipeSize > 0 && r.spipe[0] >= 0 {
			unix.FcntlInt(uintptr(r.spipe[0]), unix.F_SETPIPE_SZ, testReplyPipeSize)
		}
	}
	binary.LittleEndian.PutUint32(r.destroy[0:], fuseproto.InHeaderSize)
	binary.LittleEndian.PutUint32(r.destroy[4:], uint32(fuseproto.OpDestroy))
	binary.LittleEndian.PutUint64(r.destroy[8:], DestroyUnique)
	r.log.Debug("relay starting", "max-message", r.max, "splice-requests", r.kpipe[0] >= 0, "splice-replies", r.spipe[0] >= 0)
	return r, nil
}

// minReadBuffer is FUSE_MIN_READ_BUFFER: the kernel refuses a read of
// /dev/fuse into less.
const minReadBuffer = 8192

// pipeNeed is the pipe size that splicing messages of up to max bytes
// needs. A request spliced from /dev/fuse must fit the pipe whole: the
// kernel cuts the length asked for to the pipe's free room, and refuses a
// length below the largest WRITE. Each page of it may take a slot of its
// own, and the headers one more.
func pipeNeed(max int) int {
	page := os.Getpagesize()
	return (max+page-1)/page*page + 3*page
}

// testReplyPipeSize, if set, shrinks the stream→kernel pipe, so that tests
// see replies that do not fit it.
var testReplyPipeSize int

// setNonblock sets O_NONBLOCK on fd and returns the flags it had.
func setNonblock(fd int) (int, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, err
	}
	if fl&unix.O_NONBLOCK == 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
			return -1, err
		}
	}
	return fl, nil
}

// newPipe makes a non-blocking pipe of at least need bytes, asking for
// 4 MiB and then less; it returns -1s when none is big enough (the limit
// for users without CAP_SYS_RESOURCE is /proc/sys/fs/pipe-max-size, 1 MiB
// by default).
func newPipe(need int) [2]int {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return [2]int{-1, -1}
	}
	for size := 4 << 20; size >= need; size /= 2 {
		if got, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, size); err == nil && got >= need {
			return p
		}
	}
	closePipe(&p)
	return p
}

func closePipe(p *[2]int) {
	for i, fd := range p {
		if fd >= 0 {
			unix.Close(fd)
			p[i] = -1
		}
	}
}

// close releases what newRelay made and gives the descriptors their flags
// back.
func (r *relay) close() {
	if r.devFlags >= 0 && r.devFlags&unix.O_NONBLOCK == 0 {
		unix.FcntlInt(uintptr(r.dev), unix.F_SETFL, r.devFlags)
	}
	if r.streamFlags >= 0 && r.streamFlags&unix.O_NONBLOCK == 0 {
		unix.FcntlInt(uintptr(r.stream), unix.F_SETFL, r.streamFlags)
	}
	closePipe(&r.kpipe)
	closePipe(&r.spipe)
	r.wakeMu.Lock()
	if r.wake >= 0 {
		unix.Close(r.wake)
		r.wake = -1
	}
	r.wakeMu.Unlock()
}

// stop makes both directions return errWoken from their next wait.
func (r *relay) stop() {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	if r.woken || r.wake < 0 {
		return
	}
	r.woken = true
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(r.wake, one[:])
}

// abort aborts the FUSE connection through fusectl, if its number is
// known.
func (r *relay) abort() {
	if r.connID == 0 {
		return
	}
	if err := AbortConnection(r.connID); errors.Is(err, fs.ErrNotExist) {
		r.log.Debug("fusectl is not mounted: closing /dev/fuse aborts the FUSE connection", "error", err)
	} else if err != nil {
		r.log.Warn("cannot abort the FUSE connection; closing /dev/fuse will", "error", err)
	}
}

// wait polls fd for events and the eventfd; it returns errWoken when the
// relay is ending. pfd is the calling direction's poll array.
func (r *relay) wait(pfd *[2]unix.PollFd, fd int, events int16) error {
	pfd[0] = unix.PollFd{Fd: int32(fd), Events: events}
	pfd[1] = unix.PollFd{Fd: int32(r.wake), Events: unix.POLLIN}
	for {
		_, err := unix.Poll(pfd[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("stream: poll: %w", err)
		}
		if pfd[1].Revents != 0 {
			return errWoken
		}
		if pfd[0].Revents != 0 {
			return nil
		}
	}
}

// kernelToStream moves requests from dev to the stream until the session
// ends or the stream fails.
func (r *relay) kernelToStream() error {
	for {
		n, spliced, err := r.readRequest()
		if err != nil {
			switch err {
			case unix.ENODEV:
				r.log.Debug("the filesystem was unmounted; sending DESTROY")
				r.sendDestroy()
				return errUnmounted
			case unix.ECONNABORTED:
				r.log.Debug("the FUSE connection was aborted; sending DESTROY")
				r.sendDestroy()
				return ErrConnAborted
			case errWoken:
				return err
			case unix.EINVAL:
				return fmt.Errorf("stream: reading /dev/fuse: %w (a request may be larger than the relay's %d-byte buffer: the daemon's max_write is too large for RelayOptions.MaxMessage)", err, r.max)
			}
			return fmt.Errorf("stream: reading /dev/fuse: %w", err)
		}
		if spliced {
			err = r.spliceRequest(n)
		} else {
			err = r.writeStream(r.kbuf[:n])
		}
		if err != nil {
			return err
		}
		r.stats.Requests.Add(1)
		r.stats.RequestBytes.Add(uint64(n))
	}
}

// readRequest takes the next request from dev: into the pipe when
// splicing (spliced), or into kbuf.
func (r *relay) readRequest() (n int, spliced bool, err error) {
	for {
		if r.kpipe[0] >= 0 {
			m, err := unix.Splice(r.dev, nil, r.kpipe[1], nil, r.max, unix.SPLICE_F_NONBLOCK)
			if err == nil {
				if m < fuseproto.InHeaderSize {
					return 0, false, fmt.Errorf("a request of %d bytes", m)
				}
				r.kDevSplice = true
				return int(m), true, nil
			}
			if !r.kDevSplice && notSupported(err) {
				r.log.Debug("/dev/fuse cannot splice; copying requests", "error", err)
				closePipe(&r.kpipe)
				continue
			}
			if err = r.retryRead(err); err != nil {
				return 0, false, err
			}
			continue
		}
		m, err := unix.Read(r.dev, r.kbuf)
		if err == nil {
			if m < fuseproto.InHeaderSize {
				return 0, false, fmt.Errorf("a request of %d bytes", m)
			}
			return m, false, nil
		}
		if err = r.retryRead(err); err != nil {
			return 0, false, err
		}
	}
}

// retryRead sorts the errors of reading dev: nil to read again (after
// waiting for a request when there was none), or the error.
func (r *relay) retryRead(err error) error {
	switch err {
	case unix.EINTR, unix.ENOENT:
		// ENOENT: the request was interrupted and taken back between
		// the wake-up and the read.
		return nil
	case unix.EAGAIN:
		return r.wait(&r.kpfd, r.dev, unix.POLLIN)
	}
	return err
}

// notSupported reports whether a splice(2) error means the descriptors
// cannot be spliced (rather than that the transfer failed).
func notSupported(err error) bool {
	return err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP
}

// spliceRequest moves the n-byte request in kpipe to the stream.
func (r *relay) spliceRequest(n int) error {
	for left := n; left > 0; {
		m, err := unix.Splice(r.kpipe[0], nil, r.stream, nil, left, unix.SPLICE_F_NONBLOCK)
		switch {
		case err == nil && m > 0:
			left -= int(m)
			r.kStreamSplice = true
		case err == nil:
			return r.streamWriteErr(io.ErrShortWrite)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := r.wait(&r.kpfd, r.stream, unix.POLLOUT); err != nil {
				return err
			}
		case left == n && !r.kStreamSplice && notSupported(err):
			// The stream takes no splice: copy this request out of
			// the pipe, and read the next ones straight from dev.
			r.log.Debug("the stream cannot splice; copying requests", "error", err)
			k, rerr := readPipe(r.kpipe[0], r.kbuf[:n])
			closePipe(&r.kpipe)
			if rerr != nil || k != n {
				return fmt.Errorf("stream: taking a request back from the pipe: %d of %d bytes: %v", k, n, rerr)
			}
			return r.writeStream(r.kbuf[:n])
		default:
			return r.streamWriteErr(err)
		}
	}
	r.stats.SplicedRequests.Add(1)
	return nil
}

// readPipe reads what the non-blocking pipe p holds into b, until b is
// full or the pipe empty.
func readPipe(p int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(p, b[n:])
		switch {
		case err == nil && m > 0:
			n += m
		case err == unix.EINTR:
		case err == nil || err == unix.EAGAIN:
			return n, nil
		default:
			return n, err
		}
	}
	return n, nil
}

// writeStream writes b whole to the stream.
func (r *relay) writeStream(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(r.stream, b)
		switch {
		case err == nil && n > 0:
			b = b[n:]
		case err == nil:
			return r.streamWriteErr(io.ErrShortWrite)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := r.wait(&r.kpfd, r.stream, unix.POLLOUT); err != nil {
				return err
			}
		default:
			return r.streamWriteErr(err)
		}
	}
	return nil
}

// streamWriteErr describes a failed write to the stream.
func (r *relay) streamWriteErr(err error) error {
	if closedErrno(err) {
		return fmt.Errorf("stream: %w: writing a request: %w", ErrStreamClosed, err)
	}
	return fmt.Errorf("stream: writing a request to the daemon: %w", err)
}

// closedErrno reports whether err says the connection is gone.
func closedErrno(err error) bool {
	switch err {
	case unix.EPIPE, unix.ECONNRESET, unix.ENOTCONN, unix.ESHUTDOWN, unix.ECONNABORTED, unix.ETIMEDOUT, unix.EHOSTUNREACH, unix.ENODEV:
		return true
	}
	return false
}

// sendDestroy tells the daemon that the session is over, as the kernel
// does for a fuseblk or virtio-fs mount.
func (r *relay) sendDestroy() {
	r.destroySent.Store(true)
	r.stats.DestroySent.Store(true)
	if err := r.writeStream(r.destroy[:]); err != nil && err != errWoken {
		r.log.Debug("sending DESTROY failed", "error", err)
	}
}

// streamToKernel moves replies and notifications from the stream to dev
// until the daemon answers DESTROY, the stream ends or fails, or it sends
// something that is not a FUSE message.
func (r *relay) streamToKernel() error {
	for {
		if err := r.need(fuseproto.OutHeaderSize); err != nil {
			return r.streamReadErr(err, r.sw > r.sr)
		}
		h := r.sbuf[r.sr:r.sw]
		n, unique, err := replyHeader(h, r.max)
		if err != nil {
			return err
		}
		if unique == DestroyUnique && r.destroySent.Load() {
			r.stats.DestroyReplied.Store(true)
			return nil
		}
		if r.spipe[0] >= 0 && n > spliceMin && r.sw-r.sr < n {
			if done, err := r.spliceReply(n, unique); err != nil {
				return err
			} else if done {
				continue
			}
			// Fell back: the message is being read into sbuf.
		}
		if err := r.need(n); err != nil {
			return r.streamReadErr(err, true)
		}
		msg := r.sbuf[r.sr : r.sr+n]
		r.sr += n
		if err := r.writeDev(msg, unique); err != nil {
			return err
		}
		r.count(n, unique)
	}
}

// replyHeader decodes the start of a reply or notification (at least its
// fuse_out_header): its length, checked against the limits, and unique.
func replyHeader(h []byte, max int) (n int, unique uint64, err error) {
	n = int(binary.LittleEndian.Uint32(h))
	unique = binary.LittleEndian.Uint64(h[8:])
	if n < fuseproto.OutHeaderSize || n > max {
		return 0, 0, fmt.Errorf("stream: %w: a reply of %d bytes (want %d to %d)", ErrMalformed, n, fuseproto.OutHeaderSize, max)
	}
	return n, unique, nil
}

func (r *relay) count(n int, unique uint64) {
	r.stats.Replies.Add(1)
	r.stats.ReplyBytes.Add(uint64(n))
	if unique == 0 {
		r.stats.Notifications.Add(1)
	}
}

// need reads until sbuf holds at least k unread bytes (k <= len(sbuf)).
func (r *relay) need(k int) error {
	if r.sr == r.sw {
		r.sr, r.sw = 0, 0
	}
	for r.sw-r.sr < k {
		if r.sr+k > len(r.sbuf) {
			r.sw = copy(r.sbuf, r.sbuf[r.sr:r.sw])
			r.sr = 0
		}
		n, err := unix.Read(r.stream, r.sbuf[r.sw:])
		switch {
		case err == nil && n > 0:
			r.sw += n
		case err == nil:
			return io.EOF
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := r.wait(&r.spfd, r.stream, unix.POLLIN); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

// streamReadErr describes a failed read of the stream; mid says it failed
// inside a message.
func (r *relay) streamReadErr(err error, mid bool) error {
	if err == errWoken {
		return err
	}
	if err == io.EOF && !mid && r.destroySent.Load() {
		// The daemon closed the stream instead of answering DESTROY:
		// the session is over all the same.
		return nil
	}
	where := ""
	if mid {
		where = " in the middle of a reply"
	}
	if err == io.EOF {
		return fmt.Errorf("stream: %w%s", ErrStreamClosed, where)
	}
	if closedErrno(err) {
		return fmt.Errorf("stream: %w%s: %w", ErrStreamClosed, where, err)
	}
	return fmt.Errorf("stream: reading from the daemon%s: %w", where, err)
}

// writeDev gives one whole reply to the kernel.
func (r *relay) writeDev(msg []byte, unique uint64) error {
	for {
		_, err := unix.Write(r.dev, msg)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// Never from /dev/fuse; from what stands for it in tests.
			if err := r.wait(&r.spfd, r.dev, unix.POLLOUT); err != nil {
				return err
			}
			continue
		}
		return r.devWriteErr(err, len(msg), unique)
	}
}

// devWriteErr sorts the result of writing a reply to dev: nil to go on,
// or a fatal error.
func (r *relay) devWriteErr(err error, n int, unique uint64) error {
	switch err {
	case nil:
		return nil
	case unix.ENOENT, unix.ENODEV, unix.ECONNABORTED:
		// ENOENT: the request was interrupted and is gone. ENODEV,
		// ECONNABORTED: the session is ending, which the other
		// direction learns from its next read.
		r.stats.DroppedReplies.Add(1)
		return nil
	case unix.EINVAL:
		r.stats.DroppedReplies.Add(1)
		r.log.Warn("the kernel refused a reply from the daemon", "unique", unique, "len", n, "error", err)
		return nil
	}
	return fmt.Errorf("stream: writing a reply to /dev/fuse: %w", err)
}

// spliceReply moves the n-byte message that starts at sbuf[sr:] to dev
// through spipe: what is buffered is written into the pipe, the rest
// spliced from the stream behind it, and the whole spliced into dev. done
// false means it fell back: the bytes moved so far are back in sbuf and
// the caller reads the rest.
func (r *relay) spliceReply(n int, unique uint64) (done bool, err error) {
	buffered := r.sw - r.sr
	inPipe, err := writeAll(r.spipe[1], r.sbuf[r.sr:r.sw])
	if err != nil {
		return false, r.unsplice(inPipe, buffered)
	}
	eagain := 0
	for inPipe < n {
		m, err := unix.Splice(r.stream, nil, r.spipe[1], nil, n-inPipe, unix.SPLICE_F_NONBLOCK)
		switch {
		case err == nil && m > 0:
			inPipe += int(m)
			eagain = 0
			r.sStreamSplice = true
		case err == nil:
			return false, r.streamReadErr(io.EOF, true)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			// Nothing to read, or the pipe is full (the message
			// came in more pieces than it has slots).
			if eagain > 0 && (eagain > 3 || !pollNow(r.spipe[1], unix.POLLOUT)) {
				return false, r.unsplice(inPipe, buffered)
			}
			eagain++
			if err := r.wait(&r.spfd, r.stream, unix.POLLIN); err != nil {
				return false, err
			}
		case !r.sStreamSplice && notSupported(err):
			r.log.Debug("the stream cannot splice; copying replies", "error", err)
			err := r.unsplice(inPipe, buffered)
			closePipe(&r.spipe)
			return false, err
		default:
			return false, r.streamReadErr(err, true)
		}
	}
	r.sr, r.sw = 0, 0
	r.stats.SplicedReplies.Add(1)
	var m int64
	for {
		m, err = unix.Splice(r.spipe[0], nil, r.dev, nil, n, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err == nil && int(m) != n {
		err = unix.EINVAL
	}
	// The kernel takes the pipe's buffers before it looks at the reply;
	// if it failed before, empty the pipe so the next message starts
	// clean (TIOCINQ is FIONREAD: the bytes a pipe holds).
	if left, _ := unix.IoctlGetInt(r.spipe[0], unix.TIOCINQ); left > 0 {
		readPipe(r.spipe[0], r.sbuf[:left])
	}
	if err := r.devWriteErr(err, n, unique); err != nil {
		return true, err
	}
	r.count(n, unique)
	return true, nil
}

// unsplice takes the inPipe bytes of a message back from spipe, for the
// copying path: the pipe holds the first inPipe bytes of sbuf[sr:sw]
// (buffered bytes), or all of them and more from the stream. The message
// ends up at the start of sbuf, followed by whatever else was buffered.
func (r *relay) unsplice(inPipe, buffered int) error {
	r.stats.SpliceFallbacks.Add(1)
	// The pipe's bytes go to the start of sbuf; those buffered bytes
	// that are not in the pipe lie beyond sr+inPipe, out of their way.
	k, err := readPipe(r.spipe[0], r.sbuf[:inPipe])
	if err != nil || k != inPipe {
		return fmt.Errorf("stream: taking a reply back from the pipe: %d of %d bytes: %v", k, inPipe, err)
	}
	if inPipe < buffered {
		copy(r.sbuf[inPipe:], r.sbuf[r.sr+inPipe:r.sw])
	}
	r.sr, r.sw = 0, max(inPipe, buffered)
	return nil
}

// writeAll writes b to the non-blocking pipe p, which has room for it.
func writeAll(p int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(p, b[n:])
		switch {
		case err == nil && m > 0:
			n += m
		case err == unix.EINTR:
		case err == nil:
			return n, io.ErrShortWrite
		default:
			return n, err
		}
	}
	return n, nil
}

// pollNow reports whether fd has events now.
func pollNow(fd int, events int16) bool {
	p := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		n, err := unix.Poll(p[:], 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && p[0].Revents&events != 0
	}
}

// Handshake sends our Hello on stream and reads the daemon's, waiting at
// most timeout for the exchange (zero or less: no limit). Bytes before
// the daemon's Hello are skipped, up to 16 MiB: on a virtio-serial port
// the replies of an earlier session may still be queued. The errors say
// what went wrong: no answer within the timeout (wrapping
// os.ErrDeadlineExceeded), a peer that is not a govirtiofs daemon
// (ErrNotStream), another major version of the protocol (ErrVersion), a
// daemon that refused the session (ErrBusy), or the connection closing.
//
// stream is a connected socket or a virtio-serial port; poll(2) times the
// waits, since a port has no deadlines.
func Handshake(stream int, timeout time.Duration) (Hello, error) {
	flags, err := setNonblock(stream)
	if err != nil {
		return Hello{}, fmt.Errorf("stream: %w", err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		defer unix.FcntlInt(uintptr(stream), unix.F_SETFL, flags)
	}
	c := &pollConn{fd: stream}
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
	}
	ours := Hello{Version: Version, FuseMajor: fuseproto.KernelVersion, FuseMinor: fuseproto.KernelMinorVersion}
	if err := WriteHello(c, ours); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Hello{}, fmt.Errorf("stream: cannot send the hello within %v (no daemon at the other end?): %w", timeout, err)
		}
		return Hello{}, fmt.Errorf("stream: sending the hello: %w", err)
	}
	h, err := ReadHello(c, handshakeSkipMax)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotStream):
		return Hello{}, fmt.Errorf("stream: the peer is not a govirtiofs daemon: %w", err)
	case errors.Is(err, os.ErrDeadlineExceeded) && c.seen > 0:
		return Hello{}, fmt.Errorf("stream: no hello from the daemon within %v, only %d other bytes (%q): %w", timeout, c.seen, c.head, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Hello{}, fmt.Errorf("stream: no answer from the daemon within %v: %w", timeout, err)
	case err == io.EOF:
		return Hello{}, fmt.Errorf("stream: the daemon closed the connection without answering the hello: %w", err)
	case err == io.ErrUnexpectedEOF:
		return Hello{}, fmt.Errorf("stream: the peer is not a govirtiofs daemon: it closed the connection without a whole hello (it sent %q): %w", c.head, ErrNotStream)
	default:
		return Hello{}, fmt.Errorf("stream: reading the daemon's hello: %w", err)
	}
	if h.Status == StatusVersion || !Compatible(h.Version) {
		return h, fmt.Errorf("stream: daemon speaks stream protocol %s, this relay %s: %w", VersionString(h.Version), VersionString(Version), ErrVersion)
	}
	switch h.Status {
	case StatusOK:
		return h, nil
	case StatusBusy:
		return h, fmt.Errorf("stream: %w", ErrBusy)
	}
	return h, fmt.Errorf("stream: the daemon refused the session (status %d)", h.Status)
}

// pollConn reads and writes a non-blocking descriptor, waiting in poll(2)
// up to a deadline; it never reads more than asked, so that nothing after
// the Hello is taken from the stream.
type pollConn struct {
	fd       int
	deadline time.Time // zero: none
	seen     int       // bytes read
	head     []byte    // the first bytes read, for messages
}

// wait polls for events until the deadline.
func (c *pollConn) wait(events int16) error {
	p := [1]unix.PollFd{{Fd: int32(c.fd), Events: events}}
	for {
		ms := -1
		if !c.deadline.IsZero() {
			left := time.Until(c.deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			ms = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := unix.Poll(p[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

func (c *pollConn) expired() bool { return !c.deadline.IsZero() && !time.Now().Before(c.deadline) }

// Read implements io.Reader.
func (c *pollConn) Read(b []byte) (int, error) {
	for {
		if c.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		n, err := unix.Read(c.fd, b)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			if len(c.head) < 32 {
				c.head = append(c.head, b[:min(n, 32-len(c.head))]...)
			}
			c.seen += n
			return n, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLIN); err != nil {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

// Write implements io.Writer.
func (c *pollConn) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		if c.expired() {
			return done, os.ErrDeadlineExceeded
		}
		n, err := unix.Write(c.fd, b[done:])
		switch {
		case err == nil:
			done += n
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLOUT); err != nil {
				return done, err
			}
		default:
			return done, err
		}
	}
	return done, nil
}

// ConnectionID returns the number of the FUSE connection mounted at
// mountpoint (an absolute path without symlinks, as mountinfo shows it),
// the name of its directory under /sys/fs/fuse/connections: the device
// number of the mount's superblock. It reads /proc/self/mountinfo and
// never touches the mount itself, which would wait for a daemon that may
// be gone. A FUSE mount stacked on top of ours at the same place would be
// found instead; devfuse.Mount refuses to make one.
func ConnectionID(mountpoint string) (int, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	id := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 0:44 / /mnt rw,relatime shared:1 - fuse.govirtiofs src rw,...
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMount(fields[4]) != mountpoint {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "fuse" && fstype != "fuseblk" && !strings.HasPrefix(fstype, "fuse.") && !strings.HasPrefix(fstype, "fuseblk.") {
			id = 0 // something else is mounted on top
			continue
		}
		major, minor, ok := strings.Cut(fields[2], ":")
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		// The kernel's dev_t: 12 bits of major above 20 of minor.
		id = int(ma<<20 | mi)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if id == 0 {
		return 0, fmt.Errorf("no FUSE filesystem is mounted on %s", mountpoint)
	}
	return id, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// AbortConnection aborts FUSE connection id (see ConnectionID) by writing
// to /sys/fs/fuse/connections/ID/abort: every request in flight fails with
// ECONNABORTED and later ones with ENOTCONN, as if the daemon had died.
// It needs fusectl mounted on /sys/fs/fuse/connections.
func AbortConnection(id int) error {
	path := "/sys/fs/fuse/connections/" + strconv.Itoa(id) + "/abort"
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("1")); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
