package hostfs

// This file holds the few raw system calls that golang.org/x/sys/unix does
// not wrap, or wraps with an allocation the hot path cannot afford. It is the
// only file of the package that imports unsafe, and the filesystems built on
// this package import unsafe nowhere.

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSetgroups sets the calling OS thread's supplementary groups. The raw
// system call changes only this thread, unlike syscall.Setgroups, which Go
// applies to every thread of the process. gid_t is 32 bits on the 64-bit
// hosts this package supports.
func rawSetgroups(groups []uint32) unix.Errno {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0)
	return e
}

// rawGetgroups returns the calling OS thread's supplementary groups.
func rawGetgroups() ([]uint32, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, 0, 0, 0)
	if e != 0 {
		return nil, e
	}
	groups := make([]uint32, n)
	if n == 0 {
		return groups, 0
	}
	m, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, n, uintptr(unsafe.Pointer(&groups[0])), 0)
	if e != 0 {
		return nil, e
	}
	return groups[:m], 0
}

// rawSetfsuid sets the calling thread's filesystem uid and reports whether it
// now has that value. setfsuid(2) returns the previous value rather than an
// error, so the result is checked by a second call with an invalid id, which
// changes nothing and returns the current one.
func rawSetfsuid(uid uint32) bool {
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	cur, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(^uint32(0)), 0, 0)
	return uint32(cur) == uid
}

// rawSetfsgid is rawSetfsuid for the filesystem gid.
func rawSetfsgid(gid uint32) bool {
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	cur, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(^uint32(0)), 0, 0)
	return uint32(cur) == gid
}

// Fsxattr is struct fsxattr of FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR, in
// host byte order: fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid,
// fsx_cowextsize and 8 padding bytes.
type Fsxattr [7]uint32

// FsxattrSize is the size in bytes of struct fsxattr (28).
const FsxattrSize = int(unsafe.Sizeof(Fsxattr{}))

// The ioctl numbers of FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR.
const (
	iocFsGetXattr = 0x801c581f
	iocFsSetXattr = 0x401c5820
)

// GetFsxattr runs FS_IOC_FSGETXATTR on fd, an open file or directory.
func GetFsxattr(fd int, x *Fsxattr) syscall.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsGetXattr, uintptr(unsafe.Pointer(x)))
	return e
}

// SetFsxattr runs FS_IOC_FSSETXATTR on fd, an open file or directory.
func SetFsxattr(fd int, x *Fsxattr) syscall.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsSetXattr, uintptr(unsafe.Pointer(x)))
	return e
}

// emptyPath is the NUL-terminated "" that FdStatx passes with AT_EMPTY_PATH.
var emptyPath = [1]byte{0}

// FdStatx is statx(fd, "", flags, mask, st) without unix.Statx's copy of the
// path into a new C string: it runs on every GETATTR and LOOKUP, and
// allocates nothing. flags must include AT_EMPTY_PATH. EINTR is returned,
// not retried (Statx retries it).
func FdStatx(fd int, flags, mask int, st *unix.Statx_t) error {
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(fd), uintptr(unsafe.Pointer(&emptyPath[0])),
		uintptr(flags), uintptr(mask), uintptr(unsafe.Pointer(st)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// rawOpenat2 is unix.Openat2 without its copy of path into a new C string
// when path is short: the name is copied, NUL-terminated, into a buffer on
// the stack. OpenBeneath runs it on every LOOKUP.
func rawOpenat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	var buf [256]byte
	if len(path) >= len(buf) {
		return unix.Openat2(dirfd, path, how)
	}
	for i := 0; i < len(path); i++ {
		if path[i] == 0 {
			return -1, unix.EINVAL // as unix.BytePtrFromString answers
		}
	}
	copy(buf[:], path)
	fd, _, e := unix.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(&buf[0])),
		uintptr(unsafe.Pointer(how)), unsafe.Sizeof(*how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// fileHandleBuf is struct file_handle with room for the largest handle.
type fileHandleBuf struct {
	bytes uint32
	typ   int32
	f     [MaxHandleSize]byte
}

// rawHandleOf is name_to_handle_at(fd, "", h, mnt, AT_EMPTY_PATH) into h,
// allocating nothing (unix.NameToHandleAt allocates the handle it returns).
func rawHandleOf(fd int, h *fileHandleBuf, mnt *int32) unix.Errno {
	h.bytes = MaxHandleSize
	_, _, e := unix.Syscall6(unix.SYS_NAME_TO_HANDLE_AT, uintptr(fd), uintptr(unsafe.Pointer(&emptyPath[0])),
		uintptr(unsafe.Pointer(h)), uintptr(unsafe.Pointer(mnt)), unix.AT_EMPTY_PATH, 0)
	return e
}

// aliasString returns the bytes of b as a string without copying them; the
// caller must not change b while the string is in use.
func aliasString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
