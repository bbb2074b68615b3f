package hostfs

import "golang.org/x/sys/unix"

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
