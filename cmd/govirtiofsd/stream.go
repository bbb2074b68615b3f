package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/fuseproto/stream"
	"github.com/govirtiofs/govirtiofs/passthrough"
)

// streamAddr is where the stream transport listens: --listen unix:PATH or
// vsock:PORT, or --vsock-port PORT.
type streamAddr struct {
	network string // "unix", "vsock" or "" (not set)
	path    string // unix
	cid     uint32 // vsock: the local context id to bind, VMADDR_CID_ANY by default
	port    uint32 // vsock
}

func (a streamAddr) String() string {
	switch a.network {
	case "unix":
		return "unix:" + a.path
	case "vsock":
		if a.cid != unix.VMADDR_CID_ANY {
			return fmt.Sprintf("vsock:%d:%d", a.cid, a.port)
		}
		return fmt.Sprintf("vsock:%d", a.port)
	}
	return ""
}

// parseStreamAddr parses unix:PATH, vsock:PORT or vsock:CID:PORT.
func parseStreamAddr(s string) (streamAddr, error) {
	network, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && network == "unix" && rest != "":
		return streamAddr{network: "unix", path: rest}, nil
	case ok && network == "vsock":
		cid := uint32(unix.VMADDR_CID_ANY)
		port := rest
		if c, p, two := strings.Cut(rest, ":"); two {
			n, err := strconv.ParseUint(c, 10, 32)
			if err != nil {
				return streamAddr{}, fmt.Errorf("bad vsock context id %q in %q", c, s)
			}
			cid, port = uint32(n), p
		}
		n, err := strconv.ParseUint(port, 10, 32)
		if err != nil || n == unix.VMADDR_PORT_ANY {
			return streamAddr{}, fmt.Errorf("bad vsock port %q in %q: want 0 to %d", port, s, uint32(unix.VMADDR_PORT_ANY-1))
		}
		return streamAddr{network: "vsock", cid: cid, port: uint32(n)}, nil
	}
	return streamAddr{}, fmt.Errorf("bad address %q: want unix:PATH or vsock:PORT", s)
}

// streamListener is the stream transport's listening socket.
type streamListener struct {
	net.Listener
	network string
	// file returns a new file of the socket, for the sandboxed child.
	file    func() (*os.File, error)
	cleanup func()
}

// listenStream makes the stream transport's listening socket.
func listenStream(cfg *config) (*streamListener, error) {
	a := cfg.listen
	if a.network == "unix" {
		l, cleanup, err := listenUnix(a.path, cfg.socketGroup, "--listen")
		if err != nil {
			return nil, err
		}
		return &streamListener{Listener: l, network: "unix", file: l.File, cleanup: cleanup}, nil
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: vsock socket: %w (are the vsock modules loaded?)", a, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: a.cid, Port: a.port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("--listen %s: bind: %w", a, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("--listen %s: listen: %w", a, err)
	}
	// vsock.Listener does not give its descriptor back: keep one.
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("--listen %s: dup: %w", a, err)
	}
	l, err := fileListener(os.NewFile(uintptr(fd), "vsock"), "vsock")
	if err != nil {
		unix.Close(keep)
		return nil, err
	}
	return &streamListener{Listener: l, network: "vsock",
		file:    func() (*os.File, error) { return dupFile(keep, "vsock") },
		cleanup: func() { l.Close(); unix.Close(keep) }}, nil
}

// inheritedStream takes the listening socket the sandbox parent passed.
func inheritedStream(f *os.File, network string) (*streamListener, error) {
	l, err := fileListener(f, network)
	if err != nil {
		return nil, err
	}
	return &streamListener{Listener: l, network: network, cleanup: func() { l.Close() }}, nil
}

// fileListener makes a listener of a listening socket's file, which it
// takes.
func fileListener(f *os.File, network string) (net.Listener, error) {
	defer f.Close()
	if network == "vsock" {
		l, err := vsock.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("the vsock listening socket: %w", err)
		}
		return l, nil
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the listening socket: %w", err)
	}
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // the parent owns the path
	}
	return l, nil
}

// streamSessions makes the sessions of the stream transport. Every
// session of a passthrough share gets a clone of the filesystem (its own
// inode and handle tables over the same directory, opened before the
// sandbox); an overlay serves one session at a time, since two unions
// over one upper layer would each copy up behind the other's back.
type streamSessions struct {
	cfg  *config
	log  hclog.Logger
	fs   fileSystem
	busy atomic.Bool // overlay: a session is running
}

// newSession implements stream.NewSession.
func (s *streamSessions) newSession() (*stream.Session, error) {
	opts := serverOptions(s.cfg, s.log)
	if pfs, ok := s.fs.(*passthrough.FS); ok {
		clone, err := pfs.Clone()
		if err != nil {
			return nil, err
		}
		return &stream.Session{Server: fuseproto.NewServer(clone, opts), Close: func() { clone.Close() }}, nil
	}
	if !s.busy.CompareAndSwap(false, true) {
		return nil, errors.New("an overlay serves one session at a time, and one is running")
	}
	return &stream.Session{Server: fuseproto.NewServer(s.fs, opts), Close: func() { s.busy.Store(false) }}, nil
}

// serveStream accepts connections on l and serves each as a stream of
// FUSE sessions until a signal. It returns the exit status.
func serveStream(cfg *config, l net.Listener, fs fileSystem, log hclog.Logger, sigs <-chan os.Signal, fail func(error) int, ready func(error)) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, v := cfg.what()
	log.Info("waiting for govirtiofs-guest connections", "listen", cfg.listen.String(), k, v,
		"cache", cfg.cache.String(), "sandbox", cfg.sandbox.String(), "seccomp", cfg.seccomp.String())
	sessions := &streamSessions{cfg: cfg, log: log, fs: fs}
	var wg sync.WaitGroup
	accepted := make(chan error, 1)
	go func() {
		for n := 1; ; n++ {
			conn, err := l.Accept()
			if err != nil {
				accepted <- err
				return
			}
			clog := log.Named("stream").With("connection", n)
			clog.Info("connected", "peer", conn.RemoteAddr().String())
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := stream.Serve(ctx, conn, sessions.newSession, stream.Options{Logger: clog})
				if err != nil {
					clog.Error("connection ended", "error", err)
				} else {
					clog.Info("connection ended")
				}
			}()
		}
	}()
	if ready != nil {
		ready(nil)
	}
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			cancel()
			wg.Wait()
			return fail(fmt.Errorf("accepting connections on %s: %w", cfg.listen, err))
		}
	}
	cancel()
	l.Close()
	wg.Wait()
	return 0
}

// listenUnix listens on a unix socket at path, owner-only (or the group's
// too with socketGroup), locked by a PATH.pid file; what names the option
// in errors.
func listenUnix(path, socketGroup, what string) (*net.UnixListener, func(), error) {
	gid := -1
	if socketGroup != "" {
		g, err := user.LookupGroup(socketGroup)
		if err != nil {
			return nil, nil, fmt.Errorf("--socket-group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, nil, fmt.Errorf("--socket-group %s: gid %q", socketGroup, g.Gid)
		}
	}
	// The socket and its pid file are removed through a descriptor of
	// their directory: in the chroot sandbox their paths lead nowhere.
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	pidFile, err := lockPIDFile(path + ".pid")
	if err != nil {
		unix.Close(dir)
		return nil, nil, err
	}
	pidFile.dir = dir
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			pidFile.release()
			return nil, nil, fmt.Errorf("%s %s exists and is not a socket", what, path)
		}
		os.Remove(path)
	}
	// The socket is the owner's (and with --socket-group the group's)
	// alone from the start.
	mask := 0o077
	if gid >= 0 {
		mask = 0o007
	}
	old := unix.Umask(mask)
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		pidFile.release()
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul.SetUnlinkOnClose(false)
	base := filepath.Base(path)
	cleanup := func() {
		ul.Close()
		unix.Unlinkat(dir, base, 0)
		pidFile.release()
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("--socket-group: %w", err)
		}
	}
	return ul, cleanup, nil
}
