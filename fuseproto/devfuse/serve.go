package devfuse

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// ErrAborted is returned by Serve when the connection was aborted from
// outside (through /sys/fs/fuse/connections/N/abort) rather than unmounted.
var ErrAborted = errors.New("devfuse: the FUSE connection was aborted")

// minReaderLimit is the least number of readers Serve lets run at once,
// whatever threads it is given: enough that a burst of blocking requests
// (SETLKW waiting for a lock) leaves readers for the requests that end the
// wait (the unlock, or INTERRUPT).
const minReaderLimit = 64

// Serve answers the kernel's requests with srv until the session ends, and
// then calls srv.Destroy so that the filesystem drops its inodes and
// handles. It returns nil when the filesystem was unmounted (by Unmount, or
// from outside with umount(8) or fusermount -u), ErrAborted when the
// connection was aborted, and an error when /dev/fuse failed in a way that
// cannot be retried (it then detaches the mount so that the session ends).
//
// Requests are read by reader goroutines, each with its own clone of the
// session fd and its own buffers, reused from one request to the next. A
// reader reads one request (read(2) on /dev/fuse returns exactly one),
// serves it with srv.Handle, writes the reply with one writev(2) on the
// same fd, and reads again. threads+1 readers start (threads at least
// one): threads to wait for requests and one spare. Whenever a reader takes
// a request and leaves no other reader waiting in read(2), another starts,
// up to max(4*threads, 64) in all, so that requests which block for a long
// time (SETLKW) cannot starve the ones that would unblock them. A reader
// that finishes a request while more than threads others are waiting
// exits, so the pool shrinks back to threads+1 readers.
//
// Serve may be called once per Session.
func (s *Session) Serve(srv *fuseproto.Server, threads int) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("devfuse: Serve on a closed Session")
	}
	if s.served {
		s.mu.Unlock()
		return errors.New("devfuse: Serve called twice on one Session")
	}
	s.served, s.running = true, true
	threads = max(threads, 1)
	p := &pool{
		s:       s,
		fd:      s.fd,
		srv:     srv,
		log:     s.log,
		bufSize: max(srv.BufferSize(), minReadBuffer),
		keep:    threads,
		limit:   max(4*threads, minReaderLimit),
	}
	s.pool = p
	s.mu.Unlock()

	err := p.serve()
	srv.Destroy()
	s.mu.Lock()
	s.running = false
	if s.closed {
		s.closeFdLocked()
	}
	s.mu.Unlock()
	return err
}

// minReadBuffer is FUSE_MIN_READ_BUFFER: the kernel refuses a read(2) of
// /dev/fuse into anything smaller.
const minReadBuffer = 8192

// pool is the set of readers of one Serve.
//
// idle counts the readers that are in read(2) or on their way there; it is
// updated without the lock on every request. total, spare and err change
// only under mu, when a reader starts or stops.
type pool struct {
	s       *Session
	fd      int // the session fd, which clones are made from
	srv     *fuseproto.Server
	log     hclog.Logger
	bufSize int
	keep    int // threads: a reader that finds more than keep others idle exits
	limit   int // most readers at once

	idle  atomic.Int32
	ended atomic.Bool // the session is over: start no more readers

	mu          sync.Mutex
	total       int       // running readers
	peak        int       // most readers seen running at once
	spare       []*reader // stopped readers kept for reuse, at most keep
	err         error     // first fatal error
	warnedLimit bool
	wg          sync.WaitGroup
}

// serve starts keep+1 readers and waits until every reader has stopped.
func (p *pool) serve() error {
	first := make([]*reader, 0, p.keep+1)
	for range p.keep + 1 {
		r, err := p.newReader()
		if err != nil {
			for _, r := range first {
				r.close()
			}
			return err
		}
		first = append(first, r)
	}
	p.mu.Lock()
	p.total, p.peak = len(first), len(first)
	p.idle.Store(int32(len(first)))
	p.wg.Add(len(first))
	for _, r := range first {
		go p.loop(r)
	}
	p.mu.Unlock()

	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.spare {
		r.close()
	}
	p.spare = nil
	return p.err
}

// newReader opens a clone of the session fd and the buffers of a reader.
func (p *pool) newReader() (*reader, error) {
	fd, err := p.s.openDev()
	if err == unix.EACCES || err == unix.EPERM || err == unix.ENOENT {
		// The device is out of reach (a user namespace where
		// /dev/fuse is root's alone, a sandbox): several readers of
		// one descriptor work too, without the per-reader queues a
		// clone has.
		fd, err = unix.FcntlInt(uintptr(p.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("devfuse: dup of the session fd: %w", err)
		}
		return &reader{fd: fd, req: make([]byte, p.bufSize), log: p.log}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("devfuse: open %s: %w", devFuse, err)
	}
	if err := unix.IoctlSetPointerInt(fd, fuseDevIocClone, p.fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("devfuse: cloning the session fd (FUSE_DEV_IOC_CLONE): %w", err)
	}
	return &reader{fd: fd, req: make([]byte, p.bufSize), log: p.log}, nil
}

// loop is one reader goroutine.
func (p *pool) loop(r *reader) {
	defer p.wg.Done()
	for {
		n, err := r.read()
		if err != nil {
			p.stop(r, err)
			return
		}
		if p.idle.Add(-1) <= 0 {
			p.grow()
		}
		p.srv.Handle(r.req[:n], nil, r)
		if !p.rest(r) {
			return
		}
	}
}

// grow starts one more reader, because the caller took a request and left
// none waiting in read(2).
func (p *pool) grow() {
	if p.ended.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle.Load() > 0 || p.ended.Load() {
		return
	}
	if p.total >= p.limit {
		if !p.warnedLimit {
			p.warnedLimit = true
			p.log.Warn("all /dev/fuse readers are busy; requests wait until one is free", "readers", p.total)
		}
		return
	}
	var r *reader
	if n := len(p.spare); n > 0 {
		r = p.spare[n-1]
		p.spare[n-1] = nil
		p.spare = p.spare[:n-1]
	} else {
		var err error
		if r, err = p.newReader(); err != nil {
			p.log.Warn("cannot start another /dev/fuse reader", "readers", p.total, "error", err)
			return
		}
	}
	p.total++
	p.peak = max(p.peak, p.total)
	p.idle.Add(1)
	p.wg.Add(1)
	go p.loop(r)
}

// rest makes r idle again after a request, or stops it when more than keep
// other readers are idle; it reports whether r goes on reading. Stopping
// only above keep idle readers, rather than at keep, leaves one reader
// spare beyond a steady load, so that a sequential stream of requests does
// not start and stop a reader for each one.
func (p *pool) rest(r *reader) bool {
	for {
		n := p.idle.Load()
		if int(n) > p.keep {
			p.mu.Lock()
			p.total--
			if len(p.spare) < p.keep {
				p.spare = append(p.spare, r)
			} else {
				r.close()
			}
			p.mu.Unlock()
			return false
		}
		if p.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// stop ends reader r after read(2) failed with err.
func (p *pool) stop(r *reader, err error) {
	p.idle.Add(-1)
	p.ended.Store(true)
	r.close()
	fatal := false
	switch err {
	case unix.ENODEV:
		// Unmounted: the normal end of a session.
		err = nil
	case unix.ECONNABORTED:
		err = ErrAborted
	default:
		fatal = true
		p.log.Error("reading /dev/fuse failed; detaching the mount", "mountpoint", p.s.path, "error", err)
		err = fmt.Errorf("devfuse: reading %s: %w", devFuse, err)
	}
	p.mu.Lock()
	p.total--
	if err != nil && p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	if fatal {
		p.s.detach()
	}
}

// reader is one reader goroutine's fd and buffers, and the Replier of the
// request it is serving.
type reader struct {
	fd   int
	req  []byte // one request, as read(2) returned it
	data []byte // READ reply data, grown to the largest asked for
	dest fuseproto.BytesDest
	iov  [2][]byte
	log  hclog.Logger
}

var _ fuseproto.Replier = (*reader)(nil)

// read reads one request into r.req, retrying when interrupted.
func (r *reader) read() (int, error) {
	for {
		n, err := unix.Read(r.fd, r.req)
		switch err {
		case nil:
			if n == 0 {
				return 0, io.ErrUnexpectedEOF
			}
			return n, nil
		case unix.EINTR, unix.EAGAIN:
			continue
		}
		return 0, err
	}
}

// DataDest implements fuseproto.Replier with the reader's data buffer.
func (r *reader) DataDest(max int) fuseproto.ReadDest {
	if cap(r.data) < max {
		r.data = make([]byte, max)
	}
	r.dest.Reset(r.data[:max])
	return &r.dest
}

// Reply implements fuseproto.Replier: the kernel takes a reply only whole,
// in one write, so header and data go out in one writev(2).
func (r *reader) Reply(msg []byte, dataLen int) {
	var err error
	for {
		if dataLen > 0 {
			r.iov[0], r.iov[1] = msg, r.data[:min(dataLen, len(r.data))]
			_, err = unix.Writev(r.fd, r.iov[:])
			r.iov = [2][]byte{}
		} else {
			_, err = unix.Write(r.fd, msg)
		}
		if err != unix.EINTR {
			break
		}
	}
	switch err {
	case nil:
	case unix.ENOENT:
		// The request was interrupted or aborted and is gone.
	case unix.ENODEV, unix.ECONNABORTED:
		// The session ended; the next read(2) says so.
	default:
		r.log.Error("writing a FUSE reply failed", "error", err, "len", len(msg)+dataLen)
	}
}

func (r *reader) close() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}
