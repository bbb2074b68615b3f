package overlaytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Impl names an overlay implementation a side of the comparison runs.
type Impl string

// The implementations. Kernel is the reference; Govirtiofsd is what is
// tested; FuseOverlayfs is a stand-in for "ours" used to check the harness
// itself (OVERLAYTEST_OURS=fuse-overlayfs), as is Kernel against itself
// (OVERLAYTEST_OURS=kernel).
const (
	Kernel        Impl = "kernel"
	Govirtiofsd   Impl = "govirtiofsd"
	FuseOverlayfs Impl = "fuse-overlayfs"
)

// Layers are the directories of one overlay.
type Layers struct {
	// Lower are the lower layers, topmost first.
	Lower []string
	// Upper and Work are both empty for a read-only union.
	Upper, Work string
}

// options formats the layers (and extra, comma-separated options) as
// overlayfs mount options.
func (l Layers) options(extra string) string {
	o := "lowerdir=" + strings.Join(l.Lower, ":")
	if l.Upper != "" {
		o += ",upperdir=" + l.Upper + ",workdir=" + l.Work
	}
	if extra != "" {
		o += "," + extra
	}
	return o
}

// A Mount is one mounted overlay.
type Mount struct {
	Impl Impl
	// Dir is the mount point.
	Dir string

	daemon *exec.Cmd
	done   chan error
	output *syncBuffer
	exited bool
}

// MountOptions are what a case passes: overlayfs options besides the
// layers (redirect_dir, index, metacopy, ...).
type MountOptions struct {
	// Extra are comma-separated overlayfs options (redirect_dir=on,...).
	Extra string
	// Bin is the govirtiofsd binary (Govirtiofsd only).
	Bin string
}

// MountKernel mounts kernel overlayfs on dir with xino=auto and the given
// options.
func MountKernel(l Layers, opts MountOptions, dir string) (*Mount, error) {
	extra := opts.Extra
	if extra != "" {
		extra += ","
	}
	extra += "xino=auto"
	data := l.options(extra)
	if err := unix.Mount("overlay", dir, "overlay", 0, data); err != nil {
		return nil, fmt.Errorf("mount -t overlay -o %s %s: %w", data, dir, err)
	}
	return &Mount{Impl: Kernel, Dir: dir}, nil
}

// MountFUSE starts a FUSE overlay daemon in a child process, in the
// foreground, and waits until dir is a FUSE mount: govirtiofsd with
// --overlay, --cache never (entry and attribute timeouts 0) and --xattr, or
// fuse-overlayfs with timeout=0 (which takes no redirect, index or
// metacopy options).
func MountFUSE(impl Impl, l Layers, opts MountOptions, dir string) (*Mount, error) {
	var cmd *exec.Cmd
	switch impl {
	case Govirtiofsd:
		cmd = exec.Command(opts.Bin, "--overlay", l.options(opts.Extra), "--mountpoint", dir,
			"--cache", "never", "--xattr", "--log-level", "warn")
	case FuseOverlayfs:
		cmd = exec.Command("fuse-overlayfs", "-f", "-o", l.options("timeout=0"), dir)
	default:
		return nil, fmt.Errorf("MountFUSE: %s is not a FUSE implementation", impl)
	}
	m := &Mount{Impl: impl, Dir: dir, daemon: cmd, done: make(chan error, 1), output: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = m.output, m.output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", impl, err)
	}
	go func() { m.done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := isFUSEMount(dir)
		if err != nil {
			m.kill()
			return nil, err
		}
		if ok {
			return m, nil
		}
		select {
		case err := <-m.done:
			m.exited = true
			return nil, fmt.Errorf("%s exited before mounting (%v): %s", strings.Join(cmd.Args, " "), err, m.output.String())
		default:
		}
		if time.Now().After(deadline) {
			m.kill()
			return nil, fmt.Errorf("%s not mounted 20s after starting %s: %s", dir, impl, m.output.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MountImpl mounts the given implementation on dir.
func MountImpl(impl Impl, l Layers, opts MountOptions, dir string) (*Mount, error) {
	if impl == Kernel {
		return MountKernel(l, opts, dir)
	}
	return MountFUSE(impl, l, opts, dir)
}

func (m *Mount) kill() {
	if m.daemon != nil && !m.exited {
		m.daemon.Process.Kill()
		<-m.done
		m.exited = true
	}
	unix.Unmount(m.Dir, unix.MNT_DETACH)
}

// Unmount unmounts with umount(2) and, for a FUSE daemon, waits for it to
// exit with status 0 (both daemons end their session when the mount
// goes). A daemon that does not exit within 10 s gets SIGTERM, then
// SIGKILL, and Unmount fails.
func (m *Mount) Unmount() error {
	var errs []error
	for i := 0; ; i++ {
		err := unix.Unmount(m.Dir, 0)
		if err == nil {
			break
		}
		if err == unix.EBUSY && i < 50 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		errs = append(errs, fmt.Errorf("umount %s: %w", m.Dir, err))
		unix.Unmount(m.Dir, unix.MNT_DETACH)
		break
	}
	if m.daemon == nil || m.exited {
		return errors.Join(errs...)
	}
	select {
	case err := <-m.done:
		m.exited = true
		if err != nil {
			errs = append(errs, fmt.Errorf("%s exited with %v after umount, want status 0: %s", m.Impl, err, m.output.String()))
		}
	case <-time.After(10 * time.Second):
		m.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			m.daemon.Process.Kill()
			<-m.done
		}
		m.exited = true
		errs = append(errs, fmt.Errorf("%s did not exit within 10s of umount", m.Impl))
	}
	return errors.Join(errs...)
}

// Close unmounts whatever is left, without checks (for cleanups).
func (m *Mount) Close() {
	if m == nil {
		return
	}
	if m.daemon != nil && !m.exited {
		m.kill()
		return
	}
	unix.Unmount(m.Dir, unix.MNT_DETACH)
}

// Output is what the daemon wrote to stdout and stderr so far.
func (m *Mount) Output() string {
	if m.output == nil {
		return ""
	}
	return m.output.String()
}

// mountInfo returns the filesystem type mounted on dir ("" if none), from
// /proc/self/mountinfo (the last mount on dir wins).
func mountInfo(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	fstype := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
			}
		}
	}
	return fstype, sc.Err()
}

func isFUSEMount(dir string) (bool, error) {
	t, err := mountInfo(dir)
	return t == "fuse" || strings.HasPrefix(t, "fuse."), err
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountTmpfs mounts a fresh tmpfs on dir (which must exist). tmpfs has
// trusted xattrs, RENAME_WHITEOUT, O_TMPFILE and file handles, which is
// everything kernel overlayfs wants of an upper, and every fresh tmpfs
// numbers its inodes from the same start.
func MountTmpfs(dir string) error {
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount -t tmpfs %s: %w", dir, err)
	}
	return nil
}

// syncBuffer is a bytes.Buffer for a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
