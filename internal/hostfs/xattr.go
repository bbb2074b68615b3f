package hostfs

import (
	"runtime"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The xattr system calls have no form that takes an O_PATH descriptor (the
// *xattrat calls of Linux 6.13 refuse them too), yet symlinks and special
// files can only be held as O_PATH descriptors. So the functions below name
// a descriptor by its /proc/self/fd path, for the non-l system calls:
// following that magic link lands on the inode itself, a symlink or
// special file included, without opening it and without following a
// symlink's target.
//
// Where /proc is not reachable by path (the chroot sandbox), UseProcFd
// switches them to the way virtiofsd does it: the calling thread gets a
// working directory of its own (unshare(CLONE_FS)), changes it to a
// descriptor of /proc/self/fd opened before the chroot, and uses the
// descriptor's number as a relative path. Such a thread's working directory
// differs from the process's, so its goroutine stays locked to it for good
// and the runtime ends the thread when the goroutine exits.

// procFdDir is the /proc/self/fd descriptor of UseProcFd, or -1 while the
// /proc/self/fd paths work.
var procFdDir atomic.Int64

func init() { procFdDir.Store(-1) }

// UseProcFd makes the xattr functions reach descriptors through procFd, an
// open descriptor of /proc/self/fd, instead of /proc/self/fd paths; the
// chroot sandbox calls it before changing the root. procFd must stay open.
func UseProcFd(procFd int) { procFdDir.Store(int64(procFd)) }

// withFdPath calls fn with a path naming descriptor fd.
func withFdPath(fd int, fn func(path string) error) error {
	dir := int(procFdDir.Load())
	if dir < 0 {
		return fn("/proc/self/fd/" + strconv.Itoa(fd))
	}
	runtime.LockOSThread() // never unlocked: see above
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return err
	}
	if err := unix.Fchdir(dir); err != nil {
		return err
	}
	return fn(strconv.Itoa(fd))
}

// Getxattr reads the xattr name of the inode fd refers to (any descriptor,
// O_PATH included) into dst and returns its size; a nil dst asks only for
// the size.
func Getxattr(fd int, name string, dst []byte) (n int, err error) {
	err = withFdPath(fd, func(p string) error {
		n, err = unix.Getxattr(p, name, dst)
		return err
	})
	return n, err
}

// Listxattr lists the xattr names of the inode fd refers to into dst, as
// Getxattr.
func Listxattr(fd int, dst []byte) (n int, err error) {
	err = withFdPath(fd, func(p string) error {
		n, err = unix.Listxattr(p, dst)
		return err
	})
	return n, err
}

// Setxattr sets the xattr name of the inode fd refers to; flags are
// XATTR_CREATE or XATTR_REPLACE.
func Setxattr(fd int, name string, value []byte, flags int) error {
	return withFdPath(fd, func(p string) error { return unix.Setxattr(p, name, value, flags) })
}

// Removexattr removes the xattr name of the inode fd refers to.
func Removexattr(fd int, name string) error {
	return withFdPath(fd, func(p string) error { return unix.Removexattr(p, name) })
}
