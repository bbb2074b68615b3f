package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// lockOpen returns the hostfs.OpenFunc that opens lock-owner descriptors of
// inode in, and whether they must be read-only: only regular files are
// opened for writing (and none on a read-only share), directories read-only,
// and no other kind at all (EINVAL).
func (fs *FS) lockOpen(in *inode) (hostfs.OpenFunc, bool) {
	open := func(flags int) (int, error) {
		if in.typ != unix.S_IFREG && in.typ != unix.S_IFDIR {
			return -1, unix.EINVAL
		}
		return fs.reopen(in, flags)
	}
	return open, fs.opts.ReadOnly || in.typ != unix.S_IFREG
}

// Getlk tests for a POSIX lock that would conflict with in.Lk, held by
// another guest lock owner (or a host process).
func (fs *FS) Getlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, out *fuseproto.LkOut) fuseproto.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return unix.EINVAL
	}
	if e := hostfs.ValidLock(&in.Lk); e != 0 {
		return e
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	open, readOnly := fs.lockOpen(ino)
	return ino.locks.Getlk(open, readOnly, in, out)
}

// Setlk takes or releases a POSIX lock of lock owner in.Owner, or with
// LkFlock a flock(2) lock of handle in.Fh. With wait it retries a
// conflicting lock with a backoff from 1 ms to 50 ms until it is granted or
// ctx.Interrupted is closed (EINTR); it never blocks in the host kernel.
func (fs *FS) Setlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return fs.flock(ctx, in, wait)
	}
	if e := hostfs.ValidLock(&in.Lk); e != 0 {
		return e
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	// Only an open file handle records its lock owners, so that Release
	// drops them.
	fh := in.Fh
	if h := fs.files.get(fh); h != nil {
		fs.files.put(h)
	} else {
		fh = 0
	}
	open, readOnly := fs.lockOpen(ino)
	return ino.locks.Setlk(ctx, open, readOnly, fh, in, wait, *fs.session.Load())
}

// flock takes or drops a flock(2) lock on the handle's descriptor, which
// stands for the guest's open file.
func (fs *FS) flock(ctx *fuseproto.Context, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
	var how int
	switch in.Lk.Type {
	case unix.F_RDLCK:
		how = unix.LOCK_SH
	case unix.F_WRLCK:
		how = unix.LOCK_EX
	case unix.F_UNLCK:
		how = unix.LOCK_UN
	default:
		return unix.EINVAL
	}
	h, t := fs.anyHandle(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer t.put(h)
	return hostfs.RetryLock(ctx, wait, *fs.session.Load(), func() error {
		return unix.Flock(h.fd, how|unix.LOCK_NB)
	})
}
