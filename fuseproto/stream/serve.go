package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// Session is what Serve needs of one FUSE session: its Server, and a
// function that releases what was made for it once the session is over.
type Session struct {
	Server *fuseproto.Server
	// Close, if not nil, runs after the Server's Destroy.
	Close func()
}

// NewSession makes the Server (and the filesystem behind it) of a new
// session. Every session on a stream gets its own: node ids and file
// handles belong to one session.
type NewSession func() (*Session, error)

// Options configure Serve.
type Options struct {
	// Logger receives one line per session and the errors of the stream;
	// nil discards them.
	Logger hclog.Logger
	// MaxInFlight bounds the requests served at once on one stream; the
	// reader waits for one to finish beyond it. Zero means
	// DefaultMaxInFlight.
	MaxInFlight int
}

// DefaultMaxInFlight is the default bound on requests in flight on one
// stream: far above what a guest kernel keeps outstanding, so that it only
// bounds the buffers a hostile peer can make the daemon hold.
const DefaultMaxInFlight = 1024

// helloSkipMax is how many bytes Serve skips looking for a Hello after a
// session ended without the stream closing (see ReadHello). The first
// session of a stream gets the same allowance: on a virtio-serial port the
// daemon may connect while an earlier relay's bytes are still queued.
const helloSkipMax = 4 << 20

// Serve runs FUSE sessions on conn until it ends, then closes it. Each
// session starts with the peer's Hello, answered with ours; then the peer's
// FUSE requests are read one after another and served in parallel, each
// by a goroutine of a pool that grows as requests wait, and each reply is
// written whole, in the order the replies are ready, which need not be the
// order of the requests.
//
// A session ends when the stream closes or fails, when ctx ends, after a
// DESTROY request, or when a message's length is impossible (shorter than
// its header or longer than the Server's buffer): the stream is then out of
// step and the rest cannot be trusted. Serve waits for the session's
// requests to finish, destroys its Server, and, unless the stream closed,
// looks for a new session's Hello, since a relay on a virtio-serial port
// can end and a new one start on the same stream.
//
// Serve returns nil when the peer closed the stream between messages (or
// ctx ended), and an error saying what went wrong otherwise.
func Serve(ctx context.Context, conn io.ReadWriteCloser, newSession NewSession, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	maxInFlight := opts.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	c := &streamConn{rw: conn, buf: make([]byte, readBufferSize), log: log, maxInFlight: maxInFlight}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	for n := 1; ; n++ {
		h, err := ReadHello(c, helloSkipMax)
		if err != nil {
			if ctx.Err() != nil || (n > 1 || c.total == 0) && isClosed(err) {
				return nil
			}
			return fmt.Errorf("stream: waiting for the relay's hello: %w", err)
		}
		reply := Hello{Version: Version, FuseMajor: fuseproto.KernelVersion, FuseMinor: fuseproto.KernelMinorVersion}
		if !Compatible(h.Version) {
			reply.Status = StatusVersion
			log.Error("relay speaks another stream protocol version; refusing the session",
				"relay-version", VersionString(h.Version), "version", VersionString(Version))
			c.write(nil, func() error { return WriteHello(conn, reply) })
			return fmt.Errorf("stream: relay speaks protocol %s, the daemon %s", VersionString(h.Version), VersionString(Version))
		}
		sess, err := newSession()
		if err != nil {
			reply.Status = StatusBusy
			c.write(nil, func() error { return WriteHello(conn, reply) })
			return fmt.Errorf("stream: cannot start a session: %w", err)
		}
		if err := c.write(nil, func() error { return WriteHello(conn, reply) }); err != nil {
			sess.end()
			return fmt.Errorf("stream: answering the hello: %w", err)
		}
		log.Info("session started", "session", n, "relay-version", VersionString(h.Version))
		why, err := c.session(sess.Server)
		sess.end()
		switch {
		case ctx.Err() != nil:
			log.Info("session ended: the daemon is stopping", "session", n)
			return nil
		case err == nil:
			log.Info("session ended", "session", n, "why", why)
			if why == endClosed {
				return nil
			}
		default:
			log.Error("session ended", "session", n, "error", err)
			if why == endClosed {
				return err
			}
		}
	}
}

func (s *Session) end() {
	s.Server.Destroy()
	if s.Close != nil {
		s.Close()
	}
}

// readBufferSize is the stream reader's buffer: many small requests arrive
// in one read(2); a message longer than what is left is read straight into
// its own buffer.
const readBufferSize = 256 << 10

// Why a session ended.
const (
	endClosed  = "the stream closed"
	endDestroy = "DESTROY"
	endBroken  = "malformed message"
)

// streamConn is one stream: a buffered reader and a serialized writer.
type streamConn struct {
	rw          io.ReadWriteCloser
	log         hclog.Logger
	maxInFlight int

	buf   []byte
	r, w  int   // unread bytes are buf[r:w]
	total int64 // bytes read so far

	wmu sync.Mutex
}

// Read implements io.Reader for ReadHello, from the buffer first.
func (c *streamConn) Read(p []byte) (int, error) {
	if c.r == c.w {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

// fill reads more bytes into the buffer, moving what is unread to its
// start.
func (c *streamConn) fill() error {
	if c.r > 0 {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	n, err := c.rw.Read(c.buf[c.w:])
	c.w += n
	c.total += int64(n)
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// write runs send (or writes msg) with the stream to itself.
func (c *streamConn) write(msg []byte, send func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if send != nil {
		return send()
	}
	_, err := c.rw.Write(msg)
	return err
}

// isClosed reports whether err means the stream was closed.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}

// request is one request in flight and its Replier.
type request struct {
	c   *streamConn
	rs  fuseproto.RequestState
	msg []byte // the request, whole
	out []byte // a READ reply: 16 header bytes, then the data
	dst fuseproto.BytesDest
}

var _ fuseproto.Replier = (*request)(nil)

// DataDest implements fuseproto.Replier: the data goes right after room for
// the header, so that header and data leave in one write.
func (r *request) DataDest(max int) fuseproto.ReadDest {
	if cap(r.out) < fuseproto.OutHeaderSize+max {
		r.out = make([]byte, fuseproto.OutHeaderSize+max)
	}
	r.out = r.out[:cap(r.out)]
	r.dst.Reset(r.out[fuseproto.OutHeaderSize : fuseproto.OutHeaderSize+max])
	return &r.dst
}

// Reply implements fuseproto.Replier.
func (r *request) Reply(msg []byte, dataLen int) {
	if dataLen > 0 && len(msg) == fuseproto.OutHeaderSize {
		copy(r.out, msg)
		msg = r.out[:fuseproto.OutHeaderSize+dataLen]
	}
	if err := r.c.write(msg, nil); err != nil && !isClosed(err) {
		r.c.log.Error("writing a reply failed", "error", err, "len", len(msg))
	}
}

// session serves one session's requests until it ends, and waits for
// those in flight. err is nil when it ended as a stream may (closed
// between messages, or DESTROY).
func (c *streamConn) session(srv *fuseproto.Server) (why string, err error) {
	maxLen := srv.BufferSize()
	free := make(chan *request, c.maxInFlight)
	for range c.maxInFlight {
		free <- nil // made on first use
	}
	work := make(chan *request)
	var wg sync.WaitGroup
	worker := func(r *request) {
		defer wg.Done()
		for ; r != nil; r = <-work {
			srv.HandleWith(&r.rs, r.msg, nil, r)
			free <- r
		}
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	for {
		if err := c.need(4); err != nil {
			if isClosed(err) && c.r == c.w {
				return endClosed, nil
			}
			return endClosed, fmt.Errorf("reading a request: %w", err)
		}
		n := int(binary.LittleEndian.Uint32(c.buf[c.r:]))
		if n < fuseproto.InHeaderSize || n > maxLen {
			// Out of step: what follows cannot be parsed as
			// requests. Serve looks for the next Hello from the
			// byte after this one.
			c.r++
			return endBroken, fmt.Errorf("malformed stream: a request of %d bytes (want %d to %d)", n, fuseproto.InHeaderSize, maxLen)
		}
		r := <-free
		if r == nil {
			r = &request{c: c}
		}
		if cap(r.msg) < n {
			r.msg = make([]byte, n)
		}
		r.msg = r.msg[:n]
		if err := c.readFull(r.msg); err != nil {
			free <- r
			return endClosed, fmt.Errorf("reading a request of %d bytes: %w", n, err)
		}
		op := fuseproto.Opcode(binary.LittleEndian.Uint32(r.msg[4:]))
		if op == fuseproto.OpDestroy {
			// The relay's last word: finish what is in flight, then
			// answer it, so the reply is the session's last.
			close(work)
			wg.Wait()
			work = make(chan *request)
			srv.HandleWith(&r.rs, r.msg, nil, r)
			return endDestroy, nil
		}
		select {
		case work <- r:
		default:
			wg.Add(1)
			go worker(r)
		}
	}
}

// need makes at least n bytes unread in the buffer.
func (c *streamConn) need(n int) error {
	for c.w-c.r < n {
		if err := c.fill(); err != nil {
			if c.w-c.r > 0 && isClosed(err) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readFull fills p from the buffer and then straight from the stream.
func (c *streamConn) readFull(p []byte) error {
	k := copy(p, c.buf[c.r:c.w])
	c.r += k
	if k == len(p) {
		return nil
	}
	n, err := io.ReadFull(c.rw, p[k:])
	c.total += int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
