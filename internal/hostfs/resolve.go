package hostfs

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// openat2Retries bounds how often OpenBeneath retries an openat2 that a
// concurrent rename made fail with EAGAIN (or a signal with EINTR).
const openat2Retries = 16

// Resolver opens single names beneath a directory descriptor without ever
// following a symlink or leaving the directory. It remembers whether the
// host kernel has openat2. Its zero value is ready, and it is safe for
// concurrent use; it must not be copied after first use.
type Resolver struct {
	noOpenat2 atomic.Bool // openat2 answered ENOSYS once
}

// OpenBeneath opens name, a single component, in directory dirfd with flags
// (typically O_PATH), adding O_NOFOLLOW and O_CLOEXEC. It uses openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, retrying EAGAIN
// and EINTR a bounded number of times (EAGAIN after that). A name shorter
// than 256 bytes costs no allocation. Once openat2 has
// answered ENOSYS it uses openat with O_NOFOLLOW instead, which is safe only
// for a single component: any name ValidName refuses then gets EXDEV.
func (r *Resolver) OpenBeneath(dirfd int, name string, flags int) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if !r.noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for range openat2Retries {
			fd, err := rawOpenat2(dirfd, name, &how)
			switch err {
			case unix.EAGAIN, unix.EINTR:
				continue // a concurrent rename; try again
			case unix.ENOSYS:
				r.noOpenat2.Store(true)
			default:
				return fd, err
			}
			break
		}
		if !r.noOpenat2.Load() {
			return -1, unix.EAGAIN
		}
	}
	if ValidName(name) != 0 {
		// Without RESOLVE_BENEATH only a single component is safe.
		return -1, unix.EXDEV
	}
	return unix.Openat(dirfd, name, flags, 0)
}

// DisableOpenat2 makes r use the openat fallback from now on, as on a kernel
// without openat2. Tests use it to exercise the fallback.
func (r *Resolver) DisableOpenat2() { r.noOpenat2.Store(true) }
