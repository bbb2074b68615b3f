package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/stream"
)

// streamClient speaks the stream transport as govirtiofs-guest does, for
// tests: the Hello, then FUSE requests one at a time.
type streamClient struct {
	t      *testing.T
	c      net.Conn
	unique uint64
}

func dialStream(t *testing.T, sock string) (*streamClient, stream.Hello) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := stream.WriteHello(c, stream.Hello{Version: stream.Version}); err != nil {
		t.Fatal(err)
	}
	h, err := stream.ReadHello(c, 0)
	if err != nil {
		t.Fatalf("the daemon's hello: %v", err)
	}
	return &streamClient{t: t, c: c}, h
}

// call sends one request and returns the reply's errno and body.
func (s *streamClient) call(op fuseproto.Opcode, node uint64, body []byte) (int32, []byte) {
	s.t.Helper()
	s.unique++
	msg := make([]byte, fuseproto.InHeaderSize+len(body))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[4:], uint32(op))
	binary.LittleEndian.PutUint64(msg[8:], s.unique)
	binary.LittleEndian.PutUint64(msg[16:], node)
	copy(msg[fuseproto.InHeaderSize:], body)
	if _, err := s.c.Write(msg); err != nil {
		s.t.Fatal(err)
	}
	var h [fuseproto.OutHeaderSize]byte
	if _, err := io.ReadFull(s.c, h[:]); err != nil {
		s.t.Fatalf("reply to opcode %d: %v", op, err)
	}
	rest := make([]byte, binary.LittleEndian.Uint32(h[0:])-fuseproto.OutHeaderSize)
	if _, err := io.ReadFull(s.c, rest); err != nil {
		s.t.Fatal(err)
	}
	if u := binary.LittleEndian.Uint64(h[8:]); u != s.unique {
		s.t.Fatalf("reply for unique %d, want %d", u, s.unique)
	}
	return int32(binary.LittleEndian.Uint32(h[4:])), rest
}

// readFile reads name in the share's root through the session: INIT,
// LOOKUP, OPEN, READ.
func (s *streamClient) readFile(name string) string {
	s.t.Helper()
	init := make([]byte, 16)
	binary.LittleEndian.PutUint32(init[0:], 7)
	binary.LittleEndian.PutUint32(init[4:], 31)
	if e, _ := s.call(fuseproto.OpInit, 0, init); e != 0 {
		s.t.Fatalf("INIT: errno %d", e)
	}
	e, entry := s.call(fuseproto.OpLookup, fuseproto.RootID, []byte(name+"\x00"))
	if e != 0 {
		s.t.Fatalf("LOOKUP %s: errno %d", name, e)
	}
	node := binary.LittleEndian.Uint64(entry)
	e, open := s.call(fuseproto.OpOpen, node, make([]byte, 8))
	if e != 0 {
		s.t.Fatalf("OPEN: errno %d", e)
	}
	read := make([]byte, 40)
	copy(read, open[:8]) // fh
	binary.LittleEndian.PutUint32(read[16:], 4096)
	e, data := s.call(fuseproto.OpRead, node, read)
	if e != 0 {
		s.t.Fatalf("READ: errno %d", e)
	}
	return string(data)
}

// TestDaemonStream runs the daemon on --listen unix:PATH (sandboxed and
// under seccomp, its defaults) and serves two connections at once, each
// its own session, then stops on SIGTERM and removes its socket. An
// overlay serves one session at a time and answers a second with busy.
func TestDaemonStream(t *testing.T) {
	bin := buildDaemon(t)
	for _, tc := range []struct {
		name    string
		args    func(dir string) []string
		twoOK   bool // a second session at once is served
		content string
	}{
		{name: "shared-dir", args: func(dir string) []string { return []string{"--shared-dir", dir} }, twoOK: true},
		{name: "shared-dir chroot", args: func(dir string) []string { return []string{"--shared-dir", dir, "--sandbox", "chroot"} }, twoOK: true},
		{name: "shared-dir no sandbox", args: func(dir string) []string {
			return []string{"--shared-dir", dir, "--sandbox", "none", "--seccomp", "none", "--inode-file-handles", "prefer"}
		}, twoOK: true},
		{name: "overlay", args: func(dir string) []string {
			up, work := t.TempDir(), t.TempDir()
			return []string{"--overlay", "lowerdir=" + dir + ",upperdir=" + up + ",workdir=" + work}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("over the stream"), 0o644); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(t.TempDir(), "g.sock")
			cmd := exec.Command(bin, append(tc.args(dir), "--listen", "unix:"+sock)...)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			for i := 0; ; i++ {
				if _, err := os.Stat(sock); err == nil {
					break
				}
				if i > 200 {
					t.Fatalf("no socket after 10 s; stderr %s", &stderr)
				}
				time.Sleep(50 * time.Millisecond)
			}
			a, h := dialStream(t, sock)
			if h.Status != stream.StatusOK || !stream.Compatible(h.Version) {
				t.Fatalf("first hello answer %+v", h)
			}
			if got := a.readFile("f"); got != "over the stream" {
				t.Errorf("first session read %q", got)
			}
			b, h := dialStream(t, sock)
			switch {
			case tc.twoOK && h.Status != stream.StatusOK:
				t.Fatalf("second session refused: %+v; stderr %s", h, &stderr)
			case tc.twoOK:
				if got := b.readFile("f"); got != "over the stream" {
					t.Errorf("second session read %q", got)
				}
				// The first session still works: its own node ids.
				if e, _ := a.call(fuseproto.OpGetattr, fuseproto.RootID, make([]byte, 16)); e != 0 {
					t.Errorf("first session after the second: errno %d", e)
				}
			case h.Status != stream.StatusBusy:
				t.Fatalf("second overlay session: %+v, want busy", h)
			}
			a.c.Close()
			if !tc.twoOK {
				// The overlay is free again once the first session ends.
				deadline := time.Now().Add(10 * time.Second)
				for {
					c, h := dialStream(t, sock)
					if h.Status == stream.StatusOK {
						if got := c.readFile("f"); got != "over the stream" {
							t.Errorf("overlay session after the first read %q", got)
						}
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("overlay still busy 10 s after its session ended")
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if code := waitExit(t, cmd); code != 0 {
				t.Errorf("exit status %d after SIGTERM; stderr %s", code, &stderr)
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Errorf("socket left behind: %v", err)
			}
			if !strings.Contains(stderr.String(), "session started") {
				t.Errorf("no session in the log: %s", &stderr)
			}
		})
	}
}

// TestDaemonVsockListen checks that --vsock-port listens (the host has no
// vsock loopback to connect through: a second daemon on the same port
// fails to bind) and that the daemon stops on SIGTERM.
func TestDaemonVsockListen(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	const port = "52071"
	cmd := exec.Command(bin, "--shared-dir", dir, "--vsock-port", port)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "waiting for govirtiofs-guest connections") {
		if time.Now().After(deadline) {
			t.Fatalf("not listening after 10 s: %s", &stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, _, errOut := runDaemon(t, bin, "--shared-dir", dir, "--vsock-port", port, "--sandbox", "none")
	if code != 1 || !strings.Contains(errOut, "bind: address already in use") {
		t.Errorf("second daemon on the port: exit %d, stderr %q; want 1 and EADDRINUSE", code, errOut)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd); code != 0 {
		t.Errorf("exit status %d after SIGTERM; stderr %s", code, &stderr)
	}
}

// lockedBuffer is a bytes.Buffer that a command writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
