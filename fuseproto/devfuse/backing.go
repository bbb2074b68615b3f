package devfuse

// This is the only file of the package that imports unsafe: the argument
// of FUSE_DEV_IOC_BACKING_OPEN is a struct, which x/sys/unix has no ioctl
// helper for.

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// FUSE passthrough ioctls on a /dev/fuse descriptor of the session (any
// clone): _IOW(229, 1, struct fuse_backing_map) and _IOW(229, 2, uint32_t).
const (
	fuseDevIocBackingOpen  = 0x4010e501
	fuseDevIocBackingClose = 0x4004e502
)

// backingMap is struct fuse_backing_map.
type backingMap struct {
	fd      int32
	flags   uint32 // must be zero
	padding uint64
}

var _ fuseproto.BackingReplier = (*reader)(nil)

// OpenBacking implements fuseproto.BackingReplier with
// FUSE_DEV_IOC_BACKING_OPEN, which returns the backing id. The kernel keeps
// the calling thread's credentials for the I/O it does on the file: the
// reader's goroutine runs with the daemon's, never a caller's.
func (r *reader) OpenBacking(fd int) (int32, error) {
	m := backingMap{fd: int32(fd)}
	id, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(r.fd), fuseDevIocBackingOpen, uintptr(unsafe.Pointer(&m)))
	if e != 0 {
		return 0, e
	}
	return int32(id), nil
}

// CloseBacking implements fuseproto.BackingReplier with
// FUSE_DEV_IOC_BACKING_CLOSE.
func (r *reader) CloseBacking(id int32) error {
	return unix.IoctlSetPointerInt(r.fd, fuseDevIocBackingClose, int(id))
}
