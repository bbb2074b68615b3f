package hostfs

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// StatxMask is what every attribute query asks for: the basic stats and the
// mount id that is part of an inode's host identity.
const StatxMask = unix.STATX_BASIC_STATS | unix.STATX_MNT_ID

// Statx stats the inode fd refers to with StatxMask. An O_PATH descriptor is
// fine, and a symlink is not followed. EINTR is retried, and nothing is
// allocated.
func Statx(fd int, st *unix.Statx_t) error {
	for {
		err := FdStatx(fd, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, StatxMask, st)
		if err != unix.EINTR {
			return err
		}
	}
}

// StatxAt stats name, a single component the caller has checked with
// ValidName, in directory dirfd with StatxMask, without following a
// symlink (a mount on name is crossed, as OpenBeneath crosses it). EINTR is
// retried; a name shorter than 256 bytes costs no allocation.
func StatxAt(dirfd int, name string, st *unix.Statx_t) error {
	var buf [256]byte
	if len(name) >= len(buf) {
		for {
			err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, StatxMask, st)
			if err != unix.EINTR {
				return err
			}
		}
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return unix.EINVAL // as unix.BytePtrFromString answers
		}
	}
	copy(buf[:], name)
	for {
		_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(&buf[0])),
			uintptr(unix.AT_SYMLINK_NOFOLLOW), uintptr(StatxMask), uintptr(unsafe.Pointer(st)), 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}
