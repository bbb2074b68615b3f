package hostfs

import "golang.org/x/sys/unix"

// UnlinkIfSame removes dirfd/name (rmdir for a directory) if that name still
// refers to the inode fd refers to, and reports whether it did. It undoes a
// creation that a later step failed, without removing what a concurrent
// rename on the host may have put in its place. A name swapped between the
// check and the unlink can still be removed; callers use it only for
// objects they have just created.
func UnlinkIfSame(dirfd int, name string, fd int) bool {
	var want, got unix.Statx_t
	if Statx(fd, &want) != nil {
		return false
	}
	if unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_INO, &got) != nil ||
		got.Ino != want.Ino || got.Dev_major != want.Dev_major || got.Dev_minor != want.Dev_minor {
		return false
	}
	flags := 0
	if uint32(want.Mode)&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(dirfd, name, flags) == nil
}
