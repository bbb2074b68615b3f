// Package devfuse is the /dev/fuse transport: it mounts a FUSE filesystem on
// the host with mount(2) and serves the kernel's requests with a
// fuseproto.Server.
//
// A Session, made by Mount, owns the session fd: the one passed to the
// kernel in the mount's "fd=" option. Serve reads requests through clones
// of it (FUSE_DEV_IOC_CLONE), one per reader goroutine. All clones take
// requests from the connection's one input queue, but each keeps its own
// list of requests in progress, so a reply must be written to the fd its
// request was read from.
//
// The session ends when the filesystem is unmounted: every read(2) then
// fails with ENODEV, and Serve returns. The connection itself lives until
// the last fd of it is closed, so a Session must be closed after Serve
// returns.
package devfuse

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// FSType is the filesystem type of our mounts as /proc/self/mountinfo shows
// it: the fuse filesystem with subtype govirtiofs.
const FSType = "fuse.govirtiofs"

// DefaultSource is the mount source (the "device" column of mount(8)) when
// MountOptions.Source is empty.
const DefaultSource = "govirtiofs"

// devFuse is the FUSE character device.
const devFuse = "/dev/fuse"

// fuseDevIocClone is FUSE_DEV_IOC_CLONE, _IOR(229, 0, uint32_t): it attaches
// a freshly opened /dev/fuse fd to the connection of the session fd whose
// number it is given.
const fuseDevIocClone = 0x8004e500

// MountOptions configure Mount.
type MountOptions struct {
	// Source is the mount source shown by mount(8) and in mountinfo; empty
	// means DefaultSource.
	Source string
	// ReadOnly mounts with MS_RDONLY.
	ReadOnly bool
	// AllowOther lets users other than the mounter (root) use the mount
	// ("allow_other"). A daemon sharing a directory wants it; the zero
	// value leaves it off, as mount(2) does.
	AllowOther bool
	// DefaultPermissions makes the kernel check file modes and ACLs
	// itself ("default_permissions"), as a virtio-fs guest always does,
	// instead of leaving every check to the filesystem. Without it the
	// kernel refuses a session whose INIT reply turns on FUSE_ALLOW_IDMAP
	// (every later request then fails with ECONNREFUSED), so only a Server
	// serving a mount with it may have fuseproto.InitAllowIdmap in
	// Options.Enable.
	DefaultPermissions bool
	// MaxRead caps the size of READ requests ("max_read="); zero leaves
	// the kernel's limit, which the INIT reply's max_pages sets.
	MaxRead uint32
	// Logger receives warnings and errors of the transport; nil discards
	// them.
	Logger hclog.Logger
	// OpenDevice, if not nil, opens /dev/fuse for the session's extra
	// readers (each is a clone of the session fd) where the path does not
	// reach it, as in a sandbox; it returns a new read-write descriptor.
	OpenDevice func() (int, error)
}

// Session is a mounted FUSE filesystem and its session fd, made by Mount.
type Session struct {
	path string // absolute, symlinks resolved
	fd   int    // session fd; -1 once closed
	log  hclog.Logger
	// openDev opens /dev/fuse for a reader.
	openDev func() (int, error)
	// attached: mounted by another process (Attach); Unmount and Close
	// leave the mount alone.
	attached bool
	// parent, if >= 0, is an O_PATH descriptor of the mount point's
	// directory (PinParent), through which unmounting names the mount
	// point when its path no longer leads there.
	parent int

	mu        sync.Mutex
	unmounted bool
	served    bool  // Serve was called
	running   bool  // Serve has not returned yet
	closed    bool  // Close was called; while running, the fd stays open
	pool      *pool // the last Serve's readers, for tests
}

// mountError is an error about the mount point, with the errno that caused
// it for errors.Is.
type mountError struct {
	msg string
	err error
}

func (e *mountError) Error() string { return e.msg }
func (e *mountError) Unwrap() error { return e.err }

// Mount opens /dev/fuse and mounts a FUSE filesystem of type FSType on
// mountpoint, owned by the calling process's effective user and group.
// Nothing is served until Serve is called: the kernel queues the INIT
// request, and any access to the mount point blocks until it is answered.
//
// The errors name the mount point: it does not exist, is not a directory,
// is busy (something is already mounted there, or a dead FUSE mount that
// needs unmounting), or mounting is not permitted.
func Mount(mountpoint string, opts MountOptions) (*Session, error) {
	path, err := checkMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(devFuse, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch err {
		case unix.ENOENT, unix.ENODEV, unix.ENXIO:
			return nil, fmt.Errorf("open %s: %w (is the fuse module loaded?)", devFuse, err)
		}
		return nil, fmt.Errorf("open %s: %w", devFuse, err)
	}
	source := opts.Source
	if source == "" {
		source = DefaultSource
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", fd, os.Geteuid(), os.Getegid())
	if opts.AllowOther {
		data += ",allow_other"
	}
	if opts.DefaultPermissions {
		data += ",default_permissions"
	}
	if opts.MaxRead != 0 {
		data += ",max_read=" + strconv.FormatUint(uint64(opts.MaxRead), 10)
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	for {
		err = unix.Mount(source, path, FSType, flags, data)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, mountErrno(mountpoint, err)
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Session{path: path, fd: fd, log: log, openDev: opener(opts), parent: -1}, nil
}

// PinParent makes Unmount and Close reach the mount point through a
// descriptor of its directory instead of its path, for a daemon about to
// chroot(2) away from it. Unmounting then changes the process's working
// directory to that directory.
func (s *Session) PinParent() error {
	fd, err := unix.Open(filepath.Dir(s.path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", s.path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parent = fd
	return nil
}

// Attach returns a Session for a FUSE mount another process made (a
// sandbox's parent, which mounts in the host's mount namespace): fd is the
// session fd it passed on, path the mount point as it sees it, for
// messages. Serve serves it as usual; Unmount and Close do not unmount (the
// mount may not even be visible here), they only close fd, which aborts
// the connection when no other process holds it.
func Attach(fd int, path string, opts MountOptions) *Session {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Session{path: path, fd: fd, log: log, openDev: opener(opts), attached: true, parent: -1}
}

// opener returns the function that opens /dev/fuse for a reader.
func opener(opts MountOptions) func() (int, error) {
	if opts.OpenDevice != nil {
		return opts.OpenDevice
	}
	return func() (int, error) { return unix.Open(devFuse, unix.O_RDWR|unix.O_CLOEXEC, 0) }
}

// SetDeviceOpener replaces the function that opens /dev/fuse for the
// session's extra readers (see MountOptions.OpenDevice); call it before
// Serve.
func (s *Session) SetDeviceOpener(open func() (int, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.openDev = open
}

// Fd returns the session fd, for handing it to a process that serves it
// (Attach); -1 once closed.
func (s *Session) Fd() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd
}

// checkMountpoint resolves mountpoint to an absolute path without symlinks
// and checks that a FUSE filesystem can be mounted there.
func checkMountpoint(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	path, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", mountErrno(mountpoint, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", mountErrno(mountpoint, err)
	}
	if !st.IsDir() {
		return "", &mountError{fmt.Sprintf("mount point %s is not a directory", mountpoint), unix.ENOTDIR}
	}
	// Stacking a second FUSE mount on a live one is always a mistake (a
	// daemon started twice); other filesystems may be mounted over.
	if mi, err := mountAt(path); err == nil && mi != nil && isFUSE(mi.fstype) {
		return "", &mountError{fmt.Sprintf("mount point %s is busy: %s is already mounted there", mountpoint, mi.fstype), unix.EBUSY}
	}
	return path, nil
}

// mountErrno turns an errno about the mount point into a clear error.
func mountErrno(mountpoint string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	var msg string
	switch errno {
	case unix.ENOENT:
		msg = "does not exist"
	case unix.ENOTDIR:
		msg = "is not a directory"
	case unix.EBUSY:
		msg = "is busy"
	case unix.ENOTCONN:
		msg = "is busy: a FUSE filesystem whose daemon has gone is mounted there (unmount it first)"
	case unix.EPERM:
		msg = "cannot be mounted on: " + errno.Error() + " (mounting needs CAP_SYS_ADMIN)"
	case unix.EACCES:
		msg = "is not accessible: " + errno.Error()
	case unix.ENODEV:
		msg = "cannot be mounted on: the kernel has no FUSE support"
	default:
		msg = "cannot be mounted on: " + errno.Error()
	}
	return &mountError{"mount point " + mountpoint + " " + msg, errno}
}

// Path returns the mount point: absolute, with symlinks resolved.
func (s *Session) Path() string { return s.path }

// Unmount unmounts the filesystem. If it is busy (files open on it, a
// process's working directory inside), it is detached instead
// (MNT_DETACH): it leaves the namespace at once and the session ends when
// the last user lets go of it. Either way a running Serve returns when the
// session ends. Unmounting a filesystem that is already gone is not an
// error.
func (s *Session) Unmount() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unmountLocked()
}

func (s *Session) unmountLocked() error {
	if s.unmounted || s.attached {
		return nil
	}
	err := s.umount(0)
	if err == unix.EBUSY {
		s.log.Warn("mount point is busy; detaching it", "mountpoint", s.path)
		err = s.umount(unix.MNT_DETACH)
	}
	switch err {
	case nil, unix.EINVAL:
		// EINVAL: not a mount point any more (unmounted from outside).
		s.unmounted = true
		return nil
	}
	return fmt.Errorf("unmount %s: %w", s.path, err)
}

// umount unmounts the session's mount point, through PinParent's
// descriptor if there is one.
func (s *Session) umount(flags int) error {
	if s.parent < 0 {
		return umount(s.path, flags)
	}
	if err := unix.Fchdir(s.parent); err != nil {
		return err
	}
	return umount(filepath.Base(s.path), flags)
}

func umount(path string, flags int) error {
	for {
		err := unix.Unmount(path, flags|unix.UMOUNT_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// detach lazily unmounts after a fatal transport error, so that the
// session ends and every reader stops.
func (s *Session) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.unmounted && !s.attached {
		if err := s.umount(unix.MNT_DETACH); err == nil || err == unix.EINVAL {
			s.unmounted = true
		}
	}
}

// Close unmounts the filesystem if Unmount has not been called (detaching
// it when busy) and closes the session fd; if Serve is still running, the
// fd is closed when it returns. Closing the last fd of the connection
// aborts any request still in flight.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.unmountLocked()
	if err != nil {
		if e := s.umount(unix.MNT_DETACH); e == nil || e == unix.EINVAL {
			s.unmounted, err = true, nil
		}
	}
	s.closed = true
	if !s.running {
		s.closeFdLocked()
	}
	return err
}

func (s *Session) closeFdLocked() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
	if s.parent >= 0 {
		unix.Close(s.parent)
		s.parent = -1
	}
}

// mountInfo is one line of /proc/self/mountinfo, the fields we use.
type mountInfo struct {
	mountpoint string
	fstype     string
	source     string
}

// mountAt returns the topmost mount whose mount point is path, or nil.
func mountAt(path string) (*mountInfo, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var found *mountInfo
	for line := range strings.Lines(string(b)) {
		mi, ok := parseMountInfo(strings.TrimSuffix(line, "\n"))
		if ok && mi.mountpoint == path {
			found = &mi
		}
	}
	return found, nil
}

// parseMountInfo parses one mountinfo line:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// The optional fields end with "-"; the mount point and source have space,
// tab, newline and backslash escaped as octal.
func parseMountInfo(line string) (mountInfo, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return mountInfo{}, false
	}
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(f) {
		return mountInfo{}, false
	}
	return mountInfo{mountpoint: unescapeMountInfo(f[4]), fstype: f[sep+1], source: unescapeMountInfo(f[sep+2])}, true
}

// unescapeMountInfo undoes the kernel's \ooo escapes.
func unescapeMountInfo(s string) string {
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

func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.") || strings.HasPrefix(fstype, "fuseblk.")
}
