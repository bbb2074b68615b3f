package overlay

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// layer is one directory tree of the union: the upper or one lower.
type layer struct {
	// idx is the layer's position: 0 is the upper (when there is one),
	// then the lowers from the topmost down.
	idx  int
	path string
	root int // O_PATH descriptor of the layer's root directory
	// mountFd is the root opened for reading: open_by_handle_at wants a
	// real descriptor of the filesystem to decode a handle on.
	mountFd int
	dev     uint64
	upper   bool
	// uuid is the host filesystem's UUID (FS_IOC_GETFSUUID), recorded in
	// origin file handles; zero when the filesystem has none.
	uuid [16]byte
}

// objKey identifies a host object: st_dev and st_ino.
type objKey struct{ dev, ino uint64 }

// keyOf returns the host identity of a statx result.
func keyOf(st *unix.Statx_t) objKey {
	return objKey{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}
}

// openLayer opens a layer root given by the administrator (following
// symlinks in that path).
func openLayer(path string, idx int, upper bool) (*layer, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("overlay: layer %q is not a directory", path)
		}
		return nil, fmt.Errorf("overlay: open layer %q: %w", path, err)
	}
	var st unix.Statx_t
	if err := statx(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("overlay: stat layer %q: %w", path, err)
	}
	mfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("overlay: open layer %q: %w", path, err)
	}
	l := &layer{idx: idx, path: path, root: fd, mountFd: mfd, dev: keyOf(&st).dev, upper: upper}
	l.uuid = fsUUID(mfd)
	return l, nil
}

// fsuuid2 is struct fsuuid2 of FS_IOC_GETFSUUID.
type fsuuid2 struct {
	len  uint8
	uuid [16]byte
}

// iocGetFSUUID is FS_IOC_GETFSUUID, _IOR(0x15, 0, struct fsuuid2).
const iocGetFSUUID = 0x80111500

// fsUUID returns the UUID of the filesystem holding the directory open as
// fd, or zeros when it has none or the kernel cannot say.
func fsUUID(fd int) [16]byte {
	var u fsuuid2
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocGetFSUUID, uintptr(unsafe.Pointer(&u)))
	if e != 0 || u.len != 16 {
		return [16]byte{}
	}
	return u.uuid
}

// close releases the layer's descriptors.
func (l *layer) close() {
	unix.Close(l.root)
	unix.Close(l.mountFd)
}
