package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

// srvFS is a passthrough filesystem whose READLINK waits until release is
// closed, so that a test can hold one request while others go by.
type srvFS struct {
	*passthrough.FS
	release chan struct{}
	entered chan struct{}
}

func (f *srvFS) Readlink(ctx *fuseproto.Context, node uint64, buf []byte) (int, fuseproto.Errno) {
	f.entered <- struct{}{}
	<-f.release
	return f.FS.Readlink(ctx, node, buf)
}

// srvPeer is the relay's end of a stream to Serve, for tests.
type srvPeer struct {
	t    *testing.T
	conn net.Conn
	done chan error // Serve's result
	fs   *srvFS
}

// startServe runs Serve on one end of a unix socketpair over a passthrough
// share of a temporary directory and returns the other end.
func startServe(t *testing.T, opts Options) *srvPeer {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink("target", dir+"/link"); err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "stream")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	daemon, relay := mk(fds[0]), mk(fds[1])
	p := &srvPeer{t: t, conn: relay, done: make(chan error, 1),
		fs: &srvFS{release: make(chan struct{}), entered: make(chan struct{}, 16)}}
	newSession := func() (*Session, error) {
		pfs, err := passthrough.New(dir, passthrough.Options{})
		if err != nil {
			return nil, err
		}
		fs := &srvFS{FS: pfs, release: p.fs.release, entered: p.fs.entered}
		return &Session{Server: fuseproto.NewServer(fs, fuseproto.Options{}), Close: func() { pfs.Close() }}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { p.done <- Serve(ctx, daemon, newSession, opts) }()
	t.Cleanup(func() {
		cancel()
		relay.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after the stream closed")
		}
	})
	return p
}

func (p *srvPeer) hello(version uint32) Hello {
	p.t.Helper()
	if err := WriteHello(p.conn, Hello{Version: version}); err != nil {
		p.t.Fatal(err)
	}
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ReadHello(p.conn, 0)
	if err != nil {
		p.t.Fatalf("reading the daemon's hello: %v", err)
	}
	return h
}

// request encodes a FUSE request.
func fuseRequest(op fuseproto.Opcode, unique, node uint64, body []byte) []byte {
	b := make([]byte, fuseproto.InHeaderSize+len(body))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[4:], uint32(op))
	binary.LittleEndian.PutUint64(b[8:], unique)
	binary.LittleEndian.PutUint64(b[16:], node)
	copy(b[fuseproto.InHeaderSize:], body)
	return b
}

func initRequest(unique uint64) []byte {
	body := make([]byte, 16)
	binary.LittleEndian.PutUint32(body[0:], 7)
	binary.LittleEndian.PutUint32(body[4:], 31)
	binary.LittleEndian.PutUint32(body[8:], 128<<10)
	return fuseRequest(fuseproto.OpInit, unique, 0, body)
}

func getattrRequest(unique uint64) []byte {
	return fuseRequest(fuseproto.OpGetattr, unique, fuseproto.RootID, make([]byte, 16))
}

// reply is a decoded fuse_out_header and the rest.
type reply struct {
	unique uint64
	errno  int32
	body   []byte
}

func (p *srvPeer) send(msgs ...[]byte) {
	p.t.Helper()
	for _, m := range msgs {
		if _, err := p.conn.Write(m); err != nil {
			p.t.Fatal(err)
		}
	}
}

func (p *srvPeer) read() reply {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [fuseproto.OutHeaderSize]byte
	if _, err := io.ReadFull(p.conn, h[:]); err != nil {
		p.t.Fatalf("reading a reply: %v", err)
	}
	n := binary.LittleEndian.Uint32(h[0:])
	if n < fuseproto.OutHeaderSize || n > 1<<21 {
		p.t.Fatalf("reply length %d", n)
	}
	body := make([]byte, n-fuseproto.OutHeaderSize)
	if _, err := io.ReadFull(p.conn, body); err != nil {
		p.t.Fatalf("reading a reply body: %v", err)
	}
	return reply{unique: binary.LittleEndian.Uint64(h[8:]), errno: int32(binary.LittleEndian.Uint32(h[4:])), body: body}
}

// session starts a session: hello, INIT.
func (p *srvPeer) session() {
	p.t.Helper()
	if h := p.hello(Version); h.Status != StatusOK || !Compatible(h.Version) {
		p.t.Fatalf("daemon's hello %+v", h)
	}
	p.send(initRequest(1))
	if r := p.read(); r.unique != 1 || r.errno != 0 {
		p.t.Fatalf("INIT reply %+v", r)
	}
}

func (p *srvPeer) wait() error {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(10 * time.Second):
		p.t.Fatal("Serve did not return")
		return nil
	}
}

func TestServeRequests(t *testing.T) {
	p := startServe(t, Options{})
	p.session()
	// Several requests in one write: all answered.
	p.send(bytes.Join([][]byte{getattrRequest(2), getattrRequest(3), fuseRequest(fuseproto.OpLookup, 4, fuseproto.RootID, []byte("nope\x00"))}, nil))
	got := map[uint64]int32{}
	for range 3 {
		r := p.read()
		got[r.unique] = r.errno
	}
	if got[2] != 0 || got[3] != 0 || got[4] != -int32(unix.ENOENT) || len(got) != 3 {
		t.Errorf("replies %v, want 2 and 3 ok, 4 ENOENT", got)
	}
	// The peer closing between messages ends Serve without an error.
	p.conn.Close()
	if err := p.wait(); err != nil {
		t.Errorf("Serve after close: %v", err)
	}
}

func TestServeOutOfOrder(t *testing.T) {
	p := startServe(t, Options{})
	p.session()
	// Find the symlink's node, then hold a READLINK of it.
	p.send(fuseRequest(fuseproto.OpLookup, 2, fuseproto.RootID, []byte("link\x00")))
	r := p.read()
	if r.errno != 0 {
		t.Fatalf("LOOKUP link: errno %d", r.errno)
	}
	node := binary.LittleEndian.Uint64(r.body)
	p.send(fuseRequest(fuseproto.OpReadlink, 3, node, nil))
	<-p.fs.entered
	p.send(getattrRequest(4))
	if r := p.read(); r.unique != 4 {
		t.Fatalf("first reply is for %d, want the GETATTR (4) while the READLINK waits", r.unique)
	}
	close(p.fs.release)
	if r := p.read(); r.unique != 3 || string(r.body) != "target" {
		t.Fatalf("READLINK reply %+v, want unique 3 and \"target\"", r)
	}
}

func TestServeHello(t *testing.T) {
	for _, tc := range []struct {
		name    string
		send    []byte
		status  uint32 // the daemon's answer, if it answers
		wantErr string
	}{
		{name: "other major version", send: mustHello(Hello{Version: 2 << 16}), status: StatusVersion, wantErr: "protocol 2.0"},
		{name: "garbage", send: bytes.Repeat([]byte{0xff}, helloSkipMax+100), wantErr: "not a govirtiofs stream"},
		{name: "short", send: []byte(Magic[:5]), wantErr: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startServe(t, Options{})
			go func() {
				p.conn.Write(tc.send)
				if tc.status == 0 {
					p.conn.(*net.UnixConn).CloseWrite()
				}
			}()
			if tc.status != 0 {
				p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				h, err := ReadHello(p.conn, 0)
				if err != nil || h.Status != tc.status {
					t.Fatalf("daemon's answer %+v, %v; want status %d", h, err, tc.status)
				}
			}
			err := p.wait()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Serve = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func mustHello(h Hello) []byte {
	b, _ := h.MarshalBinary()
	return b
}

func TestServeNewSessions(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(p *srvPeer) // ends the first session
	}{
		{"destroy", func(p *srvPeer) {
			p.send(fuseRequest(fuseproto.OpDestroy, 9, 0, nil))
			if r := p.read(); r.unique != 9 || r.errno != 0 {
				t.Fatalf("DESTROY reply %+v", r)
			}
		}},
		{"bad length", func(p *srvPeer) {
			bad := getattrRequest(9)
			binary.LittleEndian.PutUint32(bad, 12) // shorter than a header
			// The tail of a dead relay's session, then a new one's hello.
			p.send(bad, bytes.Repeat([]byte{7}, 5000))
		}},
		{"too long", func(p *srvPeer) {
			bad := getattrRequest(9)
			binary.LittleEndian.PutUint32(bad, 1<<30)
			p.send(bad)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startServe(t, Options{Logger: hclog.NewNullLogger()})
			p.session()
			tc.end(p)
			// A new session on the same stream, with node ids of its own.
			p.session()
			p.send(getattrRequest(10))
			if r := p.read(); r.unique != 10 || r.errno != 0 {
				t.Fatalf("GETATTR in the second session: %+v", r)
			}
		})
	}
}

func TestServeContextCancel(t *testing.T) {
	dir := t.TempDir()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "d")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var closed sync.WaitGroup
	closed.Add(1)
	go func() {
		done <- Serve(ctx, f, func() (*Session, error) {
			pfs, err := passthrough.New(dir, passthrough.Options{})
			if err != nil {
				return nil, err
			}
			return &Session{Server: fuseproto.NewServer(pfs, fuseproto.Options{}), Close: func() { pfs.Close(); closed.Done() }}, nil
		}, Options{})
	}()
	relay := os.NewFile(uintptr(fds[1]), "r")
	defer relay.Close()
	WriteHello(relay, Hello{Version: Version})
	if _, err := ReadHello(relay, 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	closed.Wait() // the session was closed
}

func TestServeBusy(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, r := os.NewFile(uintptr(fds[0]), "d"), os.NewFile(uintptr(fds[1]), "r")
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), d, func() (*Session, error) { return nil, errors.New("no room") }, Options{})
	}()
	WriteHello(r, Hello{Version: Version})
	h, err := ReadHello(r, 0)
	if err != nil || h.Status != StatusBusy {
		t.Fatalf("answer %+v, %v; want busy", h, err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("Serve = %v", err)
	}
}

func TestReadHelloSkips(t *testing.T) {
	good := mustHello(Hello{Version: Version, Status: 3, FuseMajor: 7, FuseMinor: 45})
	for _, tc := range []struct {
		name    string
		in      []byte
		skip    int
		wantErr error
	}{
		{"exact", good, 0, nil},
		{"stale bytes", append([]byte("GVFxxGVFSTR"), good...), 100, nil},
		{"too many stale bytes", append(bytes.Repeat([]byte("x"), 101), good...), 100, ErrNotStream},
		{"none allowed", append([]byte("x"), good...), 0, ErrNotStream},
		{"empty", nil, 10, io.EOF},
		{"cut", good[:10], 10, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte per read, as a serial port may deliver them.
			h, err := ReadHello(&oneByteReader{r: bytes.NewReader(tc.in)}, tc.skip)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil && (h.Version != Version || h.Status != 3 || h.FuseMajor != 7 || h.FuseMinor != 45) {
				t.Errorf("hello %+v", h)
			}
		})
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// FuzzServe feeds a session arbitrary bytes after a valid hello and INIT:
// Serve must neither panic nor hang, whatever the stream holds.
func FuzzServe(f *testing.F) {
	f.Add(getattrRequest(2))
	f.Add(append(getattrRequest(2), fuseRequest(fuseproto.OpLookup, 3, 1, []byte("a\x00"))...))
	f.Add([]byte{0, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		d, r := os.NewFile(uintptr(fds[0]), "d"), os.NewFile(uintptr(fds[1]), "r")
		done := make(chan error, 1)
		go func() {
			done <- Serve(context.Background(), d, func() (*Session, error) {
				pfs, err := passthrough.New(dir, passthrough.Options{})
				if err != nil {
					return nil, err
				}
				return &Session{Server: fuseproto.NewServer(pfs, fuseproto.Options{}), Close: func() { pfs.Close() }}, nil
			}, Options{})
		}()
		// Drain replies so the daemon never blocks on a full socket.
		go io.Copy(io.Discard, r)
		r.Write(mustHello(Hello{Version: Version}))
		r.Write(initRequest(1))
		r.Write(data)
		unix.Shutdown(fds[1], unix.SHUT_WR)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Serve hung")
		}
		r.Close()
	})
}
