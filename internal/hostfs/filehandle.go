package hostfs

import (
	"encoding/binary"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// File handles (name_to_handle_at(2), open_by_handle_at(2)) name an inode of
// one filesystem without holding it open: the handle's bytes are the
// filesystem's own (typically inode number and generation), so a handle of
// a deleted inode whose number was reused does not open the new inode.
// Opening one needs CAP_DAC_READ_SEARCH and a descriptor on a mount of the
// filesystem that is not O_PATH (the kernel's fdget refuses O_PATH files
// there). With that capability the kernel checks neither the mount's
// subtree nor the directory permissions on the way to the inode, so a
// handle must come only from an inode the caller found by itself beneath
// the directory it serves: a handle read from elsewhere can name any inode
// of the filesystem.

// MaxHandleSize is the kernel's MAX_HANDLE_SZ: no handle is longer.
const MaxHandleSize = 128

// FileHandle is a file handle: its type and opaque bytes. It does not say
// which mount (or filesystem) it belongs to; that is the caller's to keep.
type FileHandle struct {
	h   unix.FileHandle
	key string // type (4 bytes, little-endian) then the bytes
}

// NewFileHandle returns the handle of type typ with bytes b (copied), or
// false when b is empty or longer than MaxHandleSize.
func NewFileHandle(typ int32, b []byte) (FileHandle, bool) {
	if len(b) == 0 || len(b) > MaxHandleSize {
		return FileHandle{}, false
	}
	return wrapHandle(unix.NewFileHandle(typ, b)), true
}

func wrapHandle(h unix.FileHandle) FileHandle {
	k := make([]byte, 4+h.Size())
	binary.LittleEndian.PutUint32(k, uint32(h.Type()))
	copy(k[4:], h.Bytes())
	return FileHandle{h: h, key: string(k)}
}

// Type returns the handle's type.
func (h FileHandle) Type() int32 { return h.h.Type() }

// Bytes returns the handle's bytes; the caller must not change them.
func (h FileHandle) Bytes() []byte { return h.h.Bytes() }

// Key returns the handle as a string (type and bytes) that compares equal
// exactly for equal handles, for use as a map key.
func (h FileHandle) Key() string { return h.key }

// Valid reports whether h holds a handle (the zero FileHandle does not).
func (h FileHandle) Valid() bool { return h.key != "" }

// ErrNoHandles reports that a filesystem cannot make a file handle for an
// inode (EOPNOTSUPP), or only one longer than MaxHandleSize (EOVERFLOW).
// Both are permanent for that inode, so callers fall back to holding a
// descriptor; any other error is the inode's (ENOENT, ENOMEM, ...).
var ErrNoHandles = errors.New("filesystem does not support file handles")

// HandleOf returns the file handle of the inode fd refers to (any
// descriptor, O_PATH included; a symlink is not followed) and the id of the
// mount fd is on, the id statx reports as STATX_MNT_ID. It returns an error
// wrapping ErrNoHandles and the errno when the filesystem cannot make one.
func HandleOf(fd int) (FileHandle, uint64, error) {
	return HandleAt(fd, "", unix.AT_EMPTY_PATH)
}

// HandleAt is HandleOf for name in directory dirfd (flags: AT_EMPTY_PATH
// with an empty name, else 0, which does not follow a final symlink; name
// must be a single component the caller has checked).
func HandleAt(dirfd int, name string, flags int) (FileHandle, uint64, error) {
	for {
		h, mnt, err := unix.NameToHandleAt(dirfd, name, flags)
		switch err {
		case nil:
			if h.Size() == 0 || h.Size() > MaxHandleSize {
				return FileHandle{}, 0, noHandles(unix.EOVERFLOW)
			}
			return wrapHandle(h), uint64(uint32(mnt)), nil
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP, unix.EOVERFLOW:
			return FileHandle{}, 0, noHandles(err.(unix.Errno))
		}
		return FileHandle{}, 0, err
	}
}

// HandleProbe makes file handles without allocating, for looking inodes
// up by handle: HandleOf allocates the handle it returns, which a lookup of
// an inode already known by its handle does not need. Its zero value is
// ready; it is not safe for concurrent use.
type HandleProbe struct {
	fh  fileHandleBuf
	key [4 + MaxHandleSize]byte
	n   int // bytes of key in use; 0: no handle
}

// Of makes the file handle of the inode fd refers to, as HandleOf does
// (same errors), and returns the id of fd's mount.
func (p *HandleProbe) Of(fd int) (uint64, error) {
	p.n = 0
	var mnt int32
	for {
		switch e := rawHandleOf(fd, &p.fh, &mnt); e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP, unix.EOVERFLOW:
			return 0, noHandles(e)
		default:
			return 0, e
		}
		break
	}
	if p.fh.bytes == 0 || p.fh.bytes > MaxHandleSize {
		return 0, noHandles(unix.EOVERFLOW)
	}
	binary.LittleEndian.PutUint32(p.key[:], uint32(p.fh.typ))
	p.n = 4 + copy(p.key[4:], p.fh.f[:p.fh.bytes])
	return uint64(uint32(mnt)), nil
}

// Key returns the handle as FileHandle.Key would, without copying: the
// string is valid only until p is used again, so it serves for map
// lookups, never as a key to store.
func (p *HandleProbe) Key() string { return aliasString(p.key[:p.n]) }

// Handle returns the handle as a FileHandle of its own (allocating).
func (p *HandleProbe) Handle() FileHandle {
	h, _ := NewFileHandle(p.fh.typ, p.fh.f[:p.fh.bytes])
	return h
}

// noHandlesError is ErrNoHandles with the errno the kernel gave.
type noHandlesError struct{ errno unix.Errno }

func noHandles(e unix.Errno) error {
	switch e {
	case unix.EOPNOTSUPP:
		return errNoHandlesOpnotsupp
	case unix.EOVERFLOW:
		return errNoHandlesOverflow
	}
	return &noHandlesError{e}
}

// The two noHandlesErrors there are, made once: a filesystem without
// handles would otherwise cost an allocation per lookup.
var (
	errNoHandlesOpnotsupp error = &noHandlesError{unix.EOPNOTSUPP}
	errNoHandlesOverflow  error = &noHandlesError{unix.EOVERFLOW}
)

func (e *noHandlesError) Error() string { return ErrNoHandles.Error() + ": " + e.errno.Error() }

// Is makes errors.Is(err, ErrNoHandles) true; errors.As still finds the
// errno.
func (e *noHandlesError) Is(target error) bool { return target == ErrNoHandles }

// Unwrap returns the errno.
func (e *noHandlesError) Unwrap() error { return e.errno }

// OpenHandle opens h on the filesystem of mountFd (a descriptor on one of
// its mounts, not O_PATH) with flags, adding O_CLOEXEC and retrying EINTR.
// It allocates nothing. The descriptor is on mountFd's mount.
func OpenHandle(mountFd int, h FileHandle, flags int) (int, error) {
	if !h.Valid() {
		return -1, unix.EINVAL
	}
	for {
		fd, err := unix.OpenByHandleAt(mountFd, h.h, flags|unix.O_CLOEXEC)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// Mounts keeps one descriptor per mount for OpenHandle, counted by its
// users: an entry is made by the first Get of its mount id and closed by the
// last Put. Its zero value is ready; it is safe for concurrent use. Its
// mutex is a leaf: Get calls open (which may make system calls) without
// holding it.
type Mounts struct {
	mu sync.Mutex
	m  map[uint64]*Mount
}

// Mount is a descriptor on one mount, for OpenHandle.
type Mount struct {
	id   uint64
	fd   int
	refs int // guarded by Mounts.mu
}

// ID returns the mount's id.
func (m *Mount) ID() uint64 { return m.id }

// Fd returns the descriptor; it stays open until the last Put.
func (m *Mount) Fd() int { return m.fd }

// Get returns the entry of mount id with one more reference, calling open
// to make its descriptor when there is none; open returns a descriptor
// (not O_PATH) on that mount, which Mounts then owns. When two callers race
// to make the same entry, one descriptor is closed.
func (ms *Mounts) Get(id uint64, open func() (int, error)) (*Mount, error) {
	if m := ms.lookup(id); m != nil {
		return m, nil
	}
	fd, err := open()
	if err != nil {
		return nil, err
	}
	ms.mu.Lock()
	if ms.m == nil {
		ms.m = map[uint64]*Mount{}
	}
	m := ms.m[id]
	if m == nil {
		m = &Mount{id: id, fd: fd}
		ms.m[id] = m
		fd = -1
	}
	m.refs++
	ms.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
	return m, nil
}

// lookup returns the entry of mount id with one more reference, or nil.
func (ms *Mounts) lookup(id uint64) *Mount {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m := ms.m[id]
	if m != nil {
		m.refs++
	}
	return m
}

// Ref adds a reference to m, which the caller holds one on.
func (ms *Mounts) Ref(m *Mount) {
	ms.mu.Lock()
	m.refs++
	ms.mu.Unlock()
}

// Put gives back a reference from Get or Ref, closing the descriptor with
// the last one.
func (ms *Mounts) Put(m *Mount) {
	ms.mu.Lock()
	m.refs--
	last := m.refs == 0
	if last && ms.m[m.id] == m {
		delete(ms.m, m.id)
	}
	ms.mu.Unlock()
	if last {
		unix.Close(m.fd)
	}
}

// Len returns the number of mounts with a descriptor.
func (ms *Mounts) Len() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.m)
}
