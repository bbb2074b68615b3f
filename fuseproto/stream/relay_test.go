package stream

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

// The tests reach the mount only through raw system calls (and os calls
// that open no regular file): os.Open registers every fd with the
// runtime's netpoller, and epoll_ctl on a FUSE file sends FUSE_POLL, which
// this very process must answer; see fuseproto/devfuse/devfuse_test.go.

// relayFS is a passthrough filesystem with hooks for the relay tests:
// LOOKUPs of names starting with "slow" take 100 ms, and count how many
// run at once; a LOOKUP of "stall" waits until release is closed.
type relayFS struct {
	fuseproto.FileSystem
	cur, peak atomic.Int32
	entered   chan struct{} // a "stall" LOOKUP arrived
	release   chan struct{}
	destroyed atomic.Bool
}

func (f *relayFS) Lookup(ctx *fuseproto.Context, parent uint64, name string, out *fuseproto.EntryOut) fuseproto.Errno {
	switch {
	case strings.HasPrefix(name, "slow"):
		n := f.cur.Add(1)
		for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		f.cur.Add(-1)
	case name == "stall":
		f.entered <- struct{}{}
		<-f.release
	}
	return f.FileSystem.Lookup(ctx, parent, name, out)
}

func (f *relayFS) Destroy() {
	f.destroyed.Store(true)
	f.FileSystem.Destroy()
}

// relayed is a FUSE mount relayed over a unix socket pair: to Serve over
// a passthrough share of dir, or to the test itself (raw).
type relayed struct {
	t       *testing.T
	dir     string // the shared directory
	mnt     string // the mount point
	sess    *devfuse.Session
	fs      *relayFS
	stats   *RelayStats
	relayFd int      // the relay's end of the stream
	daemon  net.Conn // the daemon's end, served by Serve; nil when raw
	rawFd   int      // the daemon's end when raw
	relay   chan error
	serve   chan error
}

// relayConfig says how to start a relayed mount.
type relayConfig struct {
	raw bool // no daemon: the test plays it on rawFd
	// callerAborts leaves RelayOptions.ConnID unset: Relay does not
	// abort the connection when the stream fails. Otherwise it is set
	// when fusectl is there (and must be, with needAbort), so that a
	// failing test does not hang on its mount.
	callerAborts bool
	needAbort    bool
	maxWrite     uint32
	opts         RelayOptions
}

// testLog is a logger into the test's log that stops at the test's end.
func testLog(t *testing.T) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug})
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

// startRelay mounts a FUSE filesystem on a temporary directory and starts
// Relay on it; cleanup unmounts and stops everything.
func startRelay(t *testing.T, cfg relayConfig) *relayed {
	t.Helper()
	testenv.RequireFUSE(t)
	rl := &relayed{t: t, dir: t.TempDir(), stats: new(RelayStats), rawFd: -1,
		relay: make(chan error, 1), serve: make(chan error, 1)}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	rl.relayFd = fds[0]
	t.Cleanup(func() { unix.Close(fds[0]) })
	if cfg.raw {
		rl.rawFd = fds[1]
		t.Cleanup(func() { unix.Close(fds[1]) })
	} else {
		pfs, err := passthrough.New(rl.dir, passthrough.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pfs.Close() })
		rl.fs = &relayFS{FileSystem: pfs, entered: make(chan struct{}, 1), release: make(chan struct{})}
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(rl.fs.release) }) })
		f := os.NewFile(uintptr(fds[1]), "daemon")
		rl.daemon, err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		log := testLog(t).Named("daemon")
		newSession := func() (*Session, error) {
			return &Session{Server: fuseproto.NewServer(rl.fs, fuseproto.Options{Logger: log, MaxWrite: cfg.maxWrite})}, nil
		}
		go func() { rl.serve <- Serve(context.Background(), rl.daemon, newSession, Options{Logger: log}) }()
		t.Cleanup(func() {
			rl.daemon.Close()
			releaseOnce.Do(func() { close(rl.fs.release) })
			select {
			case <-rl.serve:
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return after the stream closed")
			}
		})
		h, err := Handshake(rl.relayFd, 5*time.Second)
		if err != nil {
			t.Fatalf("Handshake: %v", err)
		}
		if h.Version != Version || h.Status != StatusOK {
			t.Fatalf("Handshake: %+v", h)
		}
	}

	rl.mnt = t.TempDir()
	rl.sess, err = devfuse.Mount(rl.mnt, devfuse.MountOptions{Source: "stream-test", DefaultPermissions: true})
	if err != nil {
		t.Fatal(err)
	}
	rl.mnt = rl.sess.Path()
	opts := cfg.opts
	opts.Stats = rl.stats
	opts.Logger = testLog(t).Named("relay")
	if !cfg.callerAborts {
		id, err := ConnectionID(rl.mnt)
		if err != nil {
			rl.sess.Close()
			t.Fatalf("ConnectionID: %v", err)
		}
		if _, err := os.Stat(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", id)); err == nil {
			opts.ConnID = id
		} else if cfg.needAbort {
			rl.sess.Close()
			testenv.Missing(t, "fusectl is not mounted: %v", err)
		}
	}
	go func() { rl.relay <- Relay(rl.sess.Fd(), rl.relayFd, opts) }()
	t.Cleanup(func() {
		// Unmounting ends a Relay still running; then close.
		if err := rl.sess.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		select {
		case err := <-rl.relay:
			rl.relay <- err
		case <-time.After(10 * time.Second):
			t.Errorf("Relay did not return after the unmount")
		}
		rl.sess.Close()
	})
	return rl
}

// wait returns Relay's result, failing if it takes longer than d.
func (rl *relayed) wait(d time.Duration) error {
	rl.t.Helper()
	select {
	case err := <-rl.relay:
		rl.relay <- err
		return err
	case <-time.After(d):
		rl.t.Fatalf("Relay did not return within %v", d)
		return nil
	}
}

// writeFileRaw creates path with data, with open(2) and write(2).
func writeFileRaw(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		b = b[n:]
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// readFileRaw reads path whole with open(2) and read(2) of chunk bytes at
// a time; flags are added to O_RDONLY.
func readFileRaw(path string, flags int, chunk int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	// Page-aligned, for O_DIRECT.
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	var out []byte
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// TestRelayFiles works on files through a relayed mount: a 4 MiB file
// (WRITE and READ requests as big as max_write), directories, renames,
// removals; with splice, the big messages are spliced, and without,
// nothing is.
func TestRelayFiles(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxWrite  uint32 // the daemon's; 0: 1 MiB
		noSplice  bool
		replyPipe int // testReplyPipeSize
	}{
		{name: "splice 1 MiB"},
		// A pipe of 1 MiB, the most without CAP_SYS_RESOURCE, holds
		// requests of 512 KiB.
		{name: "splice 512 KiB", maxWrite: 512 << 10},
		// Big replies do not fit a pipe of 16 pages and are copied.
		{name: "reply pipe full", maxWrite: 512 << 10, replyPipe: 64 << 10},
		{name: "copy", noSplice: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			maxMsg := 0
			if tc.maxWrite != 0 {
				maxMsg = int(tc.maxWrite) + 64<<10
			}
			// Where no pipe can hold a whole request (a 1 MiB WRITE
			// needs more than the 1 MiB pipe-max-size allows without
			// CAP_SYS_RESOURCE), the relay must copy requests instead,
			// and the data must come through all the same.
			smallPipes := false
			if !tc.noSplice {
				need := pipeNeed(cmp.Or(maxMsg, DefaultMaxMessage))
				p := newPipe(need)
				if p[0] < 0 {
					smallPipes = true
					t.Logf("no pipe of %d bytes here (pipe-max-size %s, no CAP_SYS_RESOURCE): requests must be copied", need, readSysctl("fs/pipe-max-size"))
				}
				closePipe(&p)
			}
			if tc.replyPipe != 0 {
				testReplyPipeSize = tc.replyPipe
				defer func() { testReplyPipeSize = 0 }()
			}
			rl := startRelay(t, relayConfig{maxWrite: tc.maxWrite, opts: RelayOptions{NoSplice: tc.noSplice, MaxMessage: maxMsg}})
			data := make([]byte, 4<<20)
			rnd := rand.New(rand.NewPCG(1, 2))
			for i := range data {
				data[i] = byte(rnd.Uint32())
			}
			big := filepath.Join(rl.mnt, "big")
			if err := writeFileRaw(big, data); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(rl.dir, "big")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the shared directory holds %d bytes (%v), want the %d written", len(got), err, len(data))
			}
			// O_DIRECT, so that each read(2) is one READ of
			// max_write.
			got, err := readFileRaw(big, unix.O_DIRECT, 1<<20)
			if errors.Is(err, unix.EINVAL) {
				got, err = readFileRaw(big, 0, 1<<20)
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
			}

			d := filepath.Join(rl.mnt, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(rl.dir, "d")); err != nil || !st.IsDir() {
				t.Fatalf("mkdir through the mount: %v, %v", st, err)
			}
			for _, name := range []string{"a", "b"} {
				if err := writeFileRaw(filepath.Join(d, name), []byte("file "+name)); err != nil {
					t.Fatal(err)
				}
			}
			if names := readDirNames(t, d); !slices.Equal(names, []string{"a", "b"}) {
				t.Fatalf("readdir: %q, want [a b]", names)
			}
			if err := os.Rename(filepath.Join(d, "a"), filepath.Join(d, "c")); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(rl.dir, "d", "c")); err != nil || string(got) != "file a" {
				t.Fatalf("after rename the share holds %q, %v", got, err)
			}
			if _, err := os.Lstat(filepath.Join(rl.dir, "d", "a")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after rename the old name: %v", err)
			}
			if err := os.Remove(filepath.Join(d, "b")); err != nil {
				t.Fatal(err)
			}
			if names := readDirNames(t, filepath.Join(rl.dir, "d")); !slices.Equal(names, []string{"c"}) {
				t.Fatalf("after unlink the share holds %q, want [c]", names)
			}
			if err := os.Remove(filepath.Join(d, "c")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(d); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(rl.dir, "d")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after rmdir: %v", err)
			}

			// The counters are final once Relay has returned.
			if err := rl.sess.Unmount(); err != nil {
				t.Fatal(err)
			}
			if err := rl.wait(10 * time.Second); err != nil {
				t.Fatalf("Relay: %v", err)
			}
			s := rl.stats
			t.Logf("requests %d (%d bytes, %d spliced), replies %d (%d bytes, %d spliced, %d copied after all), dropped %d",
				s.Requests.Load(), s.RequestBytes.Load(), s.SplicedRequests.Load(),
				s.Replies.Load(), s.ReplyBytes.Load(), s.SplicedReplies.Load(), s.SpliceFallbacks.Load(), s.DroppedReplies.Load())
			if s.RequestBytes.Load() < uint64(len(data)) || s.ReplyBytes.Load() < uint64(len(data)) {
				t.Errorf("the 4 MiB written and read did not go through the relay")
			}
			switch {
			case tc.noSplice:
				if s.SplicedRequests.Load() != 0 || s.SplicedReplies.Load() != 0 {
					t.Errorf("NoSplice spliced")
				}
			case smallPipes:
				if s.SplicedRequests.Load() != 0 {
					t.Errorf("%d requests spliced through a pipe too small to hold one", s.SplicedRequests.Load())
				}
			case tc.replyPipe != 0:
				if s.SplicedReplies.Load() != 0 || s.SpliceFallbacks.Load() < 4 {
					t.Errorf("%d replies spliced, %d copied after all; want 0 and the big READs' (4 at least)", s.SplicedReplies.Load(), s.SpliceFallbacks.Load())
				}
			default:
				// Every request is spliced; replies above 64 KiB are.
				if s.SplicedRequests.Load() != s.Requests.Load() {
					t.Errorf("%d of %d requests spliced", s.SplicedRequests.Load(), s.Requests.Load())
				}
				if s.SplicedReplies.Load() < 4 || s.SpliceFallbacks.Load() != 0 {
					t.Errorf("%d replies spliced, %d copied after all; want the big READs' (4 at least), and 0", s.SplicedReplies.Load(), s.SpliceFallbacks.Load())
				}
			}
		})
	}
}

// readSysctl returns the value of /proc/sys/name, for messages.
func readSysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// readDirNames lists a directory (os.ReadDir opens it, which is safe: a
// FUSE directory has no poll).
func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestRelayParallel runs 16 readers at once; each LOOKUP of theirs takes
// 100 ms in the daemon, so they overlap there only if the relay passes a
// request on without waiting for the replies before it.
func TestRelayParallel(t *testing.T) {
	rl := startRelay(t, relayConfig{})
	const n = 16
	for i := range n {
		if err := os.WriteFile(filepath.Join(rl.dir, fmt.Sprintf("slow%d", i)), bytes.Repeat([]byte{byte(i)}, 100_000+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		go func() {
			path := filepath.Join(rl.mnt, fmt.Sprintf("slow%d", i))
			var st unix.Stat_t
			if err := unix.Stat(path, &st); err != nil {
				errs <- fmt.Errorf("stat %s: %w", path, err)
				return
			}
			if st.Size != int64(100_000+i) {
				errs <- fmt.Errorf("stat %s: size %d, want %d", path, st.Size, 100_000+i)
				return
			}
			got, err := readFileRaw(path, 0, 64<<10)
			if err == nil && !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 100_000+i)) {
				err = fmt.Errorf("read %s: wrong data", path)
			}
			errs <- err
		}()
	}
	timeout := time.After(30 * time.Second)
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-timeout:
			t.Fatal("the readers did not finish within 30 s")
		}
	}
	peak := rl.fs.peak.Load()
	t.Logf("%d readers took %v; at most %d LOOKUPs at once in the daemon", n, time.Since(start), peak)
	if peak < 2 {
		t.Errorf("at most %d LOOKUP at once in the daemon: the relay waits for replies", peak)
	}
}

// TestRelayUnmount unmounts a relayed mount: Relay sends DESTROY, which
// the daemon answers, and returns nil; Serve returns when the stream
// closes.
func TestRelayUnmount(t *testing.T) {
	rl := startRelay(t, relayConfig{})
	if err := writeFileRaw(filepath.Join(rl.mnt, "f"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := rl.sess.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := rl.wait(10 * time.Second); err != nil {
		t.Fatalf("Relay after the unmount: %v", err)
	}
	if d := time.Since(start); d > destroyWait {
		t.Errorf("Relay took %v to return: it waited for DESTROY's reply in vain", d)
	}
	if !rl.stats.DestroySent.Load() || !rl.stats.DestroyReplied.Load() {
		t.Errorf("DESTROY sent %v, answered %v", rl.stats.DestroySent.Load(), rl.stats.DestroyReplied.Load())
	}
	if !rl.fs.destroyed.Load() {
		t.Errorf("the daemon's filesystem was not destroyed")
	}
	unix.Close(rl.relayFd)
	select {
	case err := <-rl.serve:
		rl.serve <- err
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the relay closed the stream")
	}
}

// TestRelayStop stops a Relay through RelayOptions.Stop.
func TestRelayStop(t *testing.T) {
	stop := make(chan struct{})
	rl := startRelay(t, relayConfig{opts: RelayOptions{Stop: stop}})
	if err := writeFileRaw(filepath.Join(rl.mnt, "f"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := rl.wait(5 * time.Second); !errors.Is(err, ErrStopped) {
		t.Fatalf("Relay = %v, want ErrStopped", err)
	}
}

// fdReader reads a descriptor with read(2).
type fdReader int

func (fd fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), b)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		default:
			return n, nil
		}
	}
}

// statAsync stats path in a goroutine and sends the result.
func statAsync(path string) <-chan error {
	c := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		c <- unix.Stat(path, &st)
	}()
	return c
}

// TestRelayDaemonGone closes the daemon's end of the stream while a
// request is in flight: Relay returns an error at once, and the request
// fails once the connection is aborted, by Relay (through fusectl) or by
// the caller closing /dev/fuse.
func TestRelayDaemonGone(t *testing.T) {
	for _, tc := range []struct {
		name         string
		abortByRelay bool
	}{
		{"relay aborts", true},
		{"caller aborts", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl := startRelay(t, relayConfig{needAbort: tc.abortByRelay, callerAborts: !tc.abortByRelay})
			stalled := statAsync(filepath.Join(rl.mnt, "stall"))
			select {
			case <-rl.fs.entered:
			case err := <-stalled:
				t.Fatalf("stat of the stalled name returned %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the stalled LOOKUP did not reach the daemon")
			}
			start := time.Now()
			rl.daemon.Close()
			err := rl.wait(5 * time.Second)
			t.Logf("Relay returned after %v: %v", time.Since(start), err)
			if !errors.Is(err, ErrStreamClosed) || !strings.Contains(err.Error(), "connection to the daemon closed") {
				t.Fatalf("Relay = %v, want ErrStreamClosed", err)
			}
			if !tc.abortByRelay {
				select {
				case err := <-stalled:
					t.Fatalf("the stalled stat returned %v before the abort", err)
				case <-time.After(200 * time.Millisecond):
				}
				// Closing the session fd, the connection's last,
				// aborts it (Close detaches the busy mount first).
				if err := rl.sess.Close(); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-stalled:
				t.Logf("the stalled stat returned %v", err)
				if err != unix.ECONNABORTED && err != unix.ENOTCONN {
					t.Fatalf("the stalled stat returned %v, want ECONNABORTED or ENOTCONN", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the stalled stat still hangs after the abort")
			}
			if tc.abortByRelay {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(rl.mnt, "other"), &st); err != unix.ENOTCONN {
					t.Fatalf("stat on the aborted mount: %v, want ENOTCONN", err)
				}
			}
		})
	}
}

// TestRelayGarbage has the daemon's end answer INIT with bytes that are
// not a FUSE message: Relay returns a "malformed" error.
func TestRelayGarbage(t *testing.T) {
	random := make([]byte, 64)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	if n := binary.LittleEndian.Uint32(random); n >= 16 && n <= DefaultMaxMessage {
		t.Fatalf("the random bytes start with a plausible length %d", n)
	}
	short := make([]byte, 16)
	binary.LittleEndian.PutUint32(short, 3)
	long := make([]byte, 16)
	binary.LittleEndian.PutUint32(long, DefaultMaxMessage+1)
	for _, tc := range []struct {
		name    string
		garbage []byte
		wantN   uint32
	}{
		{"short length", short, 3},
		{"long length", long, DefaultMaxMessage + 1},
		{"random bytes", random, binary.LittleEndian.Uint32(random)},
		{"text", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), binary.LittleEndian.Uint32([]byte("HTTP"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl := startRelay(t, relayConfig{raw: true})
			// The kernel's first request is INIT.
			var buf [4096]byte
			n, err := unix.Read(rl.rawFd, buf[:])
			if err != nil || n < fuseproto.InHeaderSize {
				t.Fatalf("reading INIT from the relay: %d bytes, %v", n, err)
			}
			if op := fuseproto.Opcode(binary.LittleEndian.Uint32(buf[4:])); op != fuseproto.OpInit || int(binary.LittleEndian.Uint32(buf[:])) != n {
				t.Fatalf("first request: opcode %v, %d bytes", op, n)
			}
			if _, err := unix.Write(rl.rawFd, tc.garbage); err != nil {
				t.Fatal(err)
			}
			err = rl.wait(5 * time.Second)
			want := fmt.Sprintf("malformed stream: a reply of %d bytes", tc.wantN)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Relay = %v, want %q", err, want)
			}
		})
	}
}

// TestReplyFraming runs the stream→kernel direction over hand-made
// streams (FuzzReplyFraming checks the same on arbitrary bytes).
func TestReplyFraming(t *testing.T) {
	const max = 200
	for _, tc := range []struct {
		name string
		data []byte
		buf  int // read buffer; 0: max
	}{
		{"empty", nil, 0},
		{"one", outMsg(16, 2, 0), 0},
		{"several", joinMsgs(outMsg(16, 2, 0), outMsg(200, 4, 1), outMsg(17, 0, 2)), 0},
		{"straddling", joinMsgs(outMsg(150, 2, 0), outMsg(150, 4, 1), outMsg(150, 6, 2), outMsg(16, 8, 3)), 0},
		{"bigger buffer", joinMsgs(outMsg(150, 2, 0), outMsg(150, 4, 1), outMsg(150, 6, 2)), 3*max + 7},
		{"header cut", joinMsgs(outMsg(16, 2, 0), outMsg(16, 4, 1)[:9]), 0},
		{"body cut", joinMsgs(outMsg(16, 2, 0), outMsg(100, 4, 1)[:50]), 0},
		{"too long", joinMsgs(outMsg(16, 2, 0), outMsg(201, 4, 1)), 0},
		{"too short", joinMsgs(outMsg(16, 2, 0), outMsg(15, 4, 1), outMsg(16, 6, 2)), 0},
		{"zero", make([]byte, 64), 0},
		{"destroy unique not sent", joinMsgs(outMsg(16, DestroyUnique, 0), outMsg(16, 2, 0)), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := tc.buf
			if buf == 0 {
				buf = max
			}
			msgs, _, _, err := frame(t, tc.data, max, buf, false)
			checkFrames(t, tc.data, max, msgs, err)
		})
	}
}

// TestReplyFramingAllocs checks that passing replies on allocates nothing
// per message.
func TestReplyFramingAllocs(t *testing.T) {
	const count = 10_000
	var data []byte
	for i := range count {
		data = append(data, outMsg(16+i%300, uint64(2*i+2), byte(i))...)
	}
	_, n, mallocs, err := frame(t, data, 1024, 1024+64, true)
	if n != count || !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("%d messages passed on, want %d; ended with %v", n, count, err)
	}
	t.Logf("%d mallocs for %d messages", mallocs, count)
	if mallocs > 100 {
		t.Errorf("%d mallocs for %d messages: the relay allocates per message", mallocs, count)
	}
}

// TestHandshake plays the daemon's side of the hello in every way it can
// go.
func TestHandshake(t *testing.T) {
	helloBytes := func(h Hello) []byte {
		b, _ := h.MarshalBinary()
		return b
	}
	ok := Hello{Version: Version, FuseMajor: 7, FuseMinor: 45}
	// answer reads the relay's hello and writes b.
	answer := func(b []byte) func(t *testing.T, fd int) {
		return func(t *testing.T, fd int) {
			h, err := ReadHello(fdReader(fd), 0)
			if err != nil || h.Version != Version || h.Status != 0 || h.FuseMajor != fuseproto.KernelVersion {
				t.Errorf("the relay's hello: %+v, %v", h, err)
			}
			for len(b) > 0 {
				n, err := unix.Write(fd, b)
				if err != nil {
					return
				}
				b = b[n:]
			}
		}
	}
	// silent answers b, then says nothing until the relay's end closes.
	silent := func(b []byte) func(t *testing.T, fd int) {
		return func(t *testing.T, fd int) {
			answer(b)(t, fd)
			io.Copy(io.Discard, fdReader(fd))
		}
	}
	stale := bytes.Repeat(outMsg(4096, 2, 7), 25) // a session's leftover replies
	for _, tc := range []struct {
		name    string
		peer    func(t *testing.T, fd int)
		timeout time.Duration
		wantErr error  // errors.Is
		wantMsg string // in the error
		after   string // what Handshake must leave unread
	}{
		{name: "ok", peer: answer(append(helloBytes(ok), "after"...)), after: "after"},
		{name: "newer minor", peer: answer(helloBytes(Hello{Version: Version + 7}))},
		{name: "stale bytes first", peer: answer(append(stale, helloBytes(ok)...))},
		{name: "version refused", peer: answer(helloBytes(Hello{Version: 2 << 16, Status: StatusVersion})),
			wantErr: ErrVersion, wantMsg: "daemon speaks stream protocol 2.0, this relay 1.0"},
		{name: "version incompatible", peer: answer(helloBytes(Hello{Version: 3<<16 | 1})),
			wantErr: ErrVersion, wantMsg: "daemon speaks stream protocol 3.1, this relay 1.0"},
		{name: "busy", peer: answer(helloBytes(Hello{Version: Version, Status: StatusBusy})), wantErr: ErrBusy},
		{name: "unknown status", peer: answer(helloBytes(Hello{Version: Version, Status: 9})), wantMsg: "status 9"},
		{name: "not a stream", peer: answer([]byte("SSH-2.0-OpenSSH_9.2\r\n")), wantErr: ErrNotStream, wantMsg: "not a govirtiofs daemon"},
		{name: "not a stream, endless", peer: func(t *testing.T, fd int) {
			answer(nil)(t, fd)
			junk := bytes.Repeat([]byte("x"), 1<<20)
			for range 17 {
				if _, err := unix.Write(fd, junk); err != nil {
					return
				}
			}
		}, wantErr: ErrNotStream, wantMsg: "not a govirtiofs daemon"},
		{name: "closed", peer: answer(nil), wantErr: io.EOF, wantMsg: "closed the connection"},
		{name: "closed mid-hello", peer: answer(helloBytes(ok)[:10]), wantErr: ErrNotStream, wantMsg: "closed the connection"},
		{name: "timeout", peer: silent(nil), timeout: 300 * time.Millisecond,
			wantErr: os.ErrDeadlineExceeded, wantMsg: "no answer from the daemon within 300ms"},
		{name: "timeout after junk", peer: silent([]byte("junk")), timeout: 300 * time.Millisecond,
			wantErr: os.ErrDeadlineExceeded, wantMsg: "only 4 other bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fds[0])
			peerDone := make(chan struct{})
			go func() {
				defer close(peerDone)
				defer unix.Close(fds[1])
				tc.peer(t, fds[1])
			}()
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			start := time.Now()
			h, err := Handshake(fds[0], timeout)
			elapsed := time.Since(start)
			switch {
			case tc.wantErr == nil && tc.wantMsg == "":
				if err != nil {
					t.Fatalf("Handshake: %v", err)
				}
				if !Compatible(h.Version) || h.Status != StatusOK {
					t.Fatalf("Handshake = %+v", h)
				}
			case err == nil:
				t.Fatalf("Handshake = %+v, want an error", h)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Handshake: %v, want %v", err, tc.wantErr)
			case !strings.Contains(err.Error(), tc.wantMsg):
				t.Fatalf("Handshake: %v, want %q in it", err, tc.wantMsg)
			}
			if tc.timeout > 0 && (elapsed < tc.timeout || elapsed > tc.timeout+3*time.Second) {
				t.Errorf("Handshake took %v with a timeout of %v", elapsed, tc.timeout)
			}
			if tc.after != "" {
				<-peerDone
				b := make([]byte, 64)
				n, _ := unix.Read(fds[0], b)
				if string(b[:n]) != tc.after {
					t.Errorf("after the hello the stream holds %q, want %q", b[:n], tc.after)
				}
			}
			unix.Shutdown(fds[0], unix.SHUT_RDWR)
			<-peerDone
		})
	}
}
