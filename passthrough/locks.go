package passthrough

import (
	"math"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// lockOwner is the host descriptor that carries one guest lock owner's POSIX
// locks on one inode. The locks are open-file-description (OFD) locks, which
// belong to the descriptor, so each guest owner gets its own and two guest
// processes never share locks. Closing the descriptor releases them.
type lockOwner struct {
	fd       int
	writable bool
	refs     int    // guarded by inode.lockMu: the owners map's plus users'
	pid      uint32 // guarded by inode.lockMu: the guest pid of its last lock, for GETLK
}

// Backoff bounds of a waiting SETLKW, which polls rather than blocking a
// worker in the host kernel.
const (
	lockWaitMin = time.Millisecond
	lockWaitMax = 50 * time.Millisecond
)

// offsetMax is OFFSET_MAX, the end of a lock that runs to the end of file.
const offsetMax = math.MaxInt64

// owner returns the descriptor of lock owner on the inode with a reference
// (given back with putOwner), opening it if create is set. It is opened
// read-write where the host allows, else read-only (which carries read locks
// only). A nil result with no error means the owner has none.
func (fs *FS) owner(in *inode, owner uint64, create bool) (*lockOwner, fuseproto.Errno) {
	in.lockMu.Lock()
	defer in.lockMu.Unlock()
	if lo := in.owners[owner]; lo != nil {
		lo.refs++
		return lo, 0
	}
	if !create {
		return nil, 0
	}
	if in.typ != unix.S_IFREG && in.typ != unix.S_IFDIR {
		return nil, unix.EINVAL
	}
	lo := &lockOwner{fd: -1, refs: 2}
	if !fs.opts.ReadOnly && in.typ == unix.S_IFREG {
		if fd, err := fs.reopen(in, unix.O_RDWR|unix.O_NONBLOCK); err == nil {
			lo.fd, lo.writable = fd, true
		}
	}
	if lo.fd < 0 {
		fd, err := fs.reopen(in, unix.O_RDONLY|unix.O_NONBLOCK)
		if err != nil {
			return nil, errno(err)
		}
		lo.fd = fd
	}
	if in.owners == nil {
		in.owners = map[uint64]*lockOwner{}
	}
	in.owners[owner] = lo
	return lo, 0
}

// putOwner gives back a reference from owner.
func (in *inode) putOwner(lo *lockOwner) {
	in.lockMu.Lock()
	lo.refs--
	if lo.refs == 0 {
		unix.Close(lo.fd)
	}
	in.lockMu.Unlock()
}

// dropOwner closes lock owner's descriptor, releasing its POSIX locks on the
// inode (once no request still uses it).
func (in *inode) dropOwner(owner uint64) {
	in.lockMu.Lock()
	lo := in.owners[owner]
	if lo != nil {
		delete(in.owners, owner)
		lo.refs--
		if lo.refs == 0 {
			unix.Close(lo.fd)
		}
	}
	in.lockMu.Unlock()
}

// closeOwners closes every lock owner descriptor of an inode being dropped.
func (in *inode) closeOwners() {
	in.lockMu.Lock()
	for owner, lo := range in.owners {
		delete(in.owners, owner)
		lo.refs--
		if lo.refs == 0 {
			unix.Close(lo.fd)
		}
	}
	in.lockMu.Unlock()
}

// toFlock converts a FUSE lock (inclusive end, OFFSET_MAX for "to the end")
// into a struct flock for an OFD lock.
func toFlock(l *fuseproto.FileLock, lk *unix.Flock_t) fuseproto.Errno {
	switch l.Type {
	case unix.F_RDLCK, unix.F_WRLCK, unix.F_UNLCK:
	default:
		return unix.EINVAL
	}
	if l.Start > offsetMax || l.End < l.Start {
		return unix.EINVAL
	}
	*lk = unix.Flock_t{Type: int16(l.Type), Whence: unix.SEEK_SET, Start: int64(l.Start)}
	if l.End < offsetMax {
		lk.Len = int64(l.End - l.Start + 1)
	}
	return 0
}

// fromFlock converts a struct flock from F_OFD_GETLK back. The holder of an
// OFD lock has no pid; Getlk finds it among the inode's owners.
func fromFlock(lk *unix.Flock_t, l *fuseproto.FileLock) {
	*l = fuseproto.FileLock{Type: uint32(lk.Type), Start: uint64(lk.Start), End: offsetMax}
	if lk.Len > 0 {
		l.End = uint64(lk.Start + lk.Len - 1)
	}
}

// Getlk tests for a POSIX lock that would conflict with in.Lk, held by
// another guest lock owner (or a host process).
func (fs *FS) Getlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, out *fuseproto.LkOut) fuseproto.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return unix.EINVAL
	}
	var lk unix.Flock_t
	if e := toFlock(&in.Lk, &lk); e != 0 {
		return e
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	lo, e := fs.owner(ino, in.Owner, true)
	if e != 0 {
		return e
	}
	defer ino.putOwner(lo)
	if err := unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_GETLK, &lk); err != nil {
		return errno(err)
	}
	if lk.Type == unix.F_UNLCK {
		out.Lk = in.Lk
		out.Lk.Type = unix.F_UNLCK
		return 0
	}
	fromFlock(&lk, &out.Lk)
	out.Lk.PID = ino.holderPID(in.Owner, &in.Lk, &lk)
	return 0
}

// holderPID returns the guest pid of the lock owner holding the conflicting
// lock found, which F_OFD_GETLK reported from requester's descriptor as
// found. An owner never sees its own locks, so the holder is the owner whose
// descriptor, asked the same question, does not report found. A lock held
// by a host process, or not found any more, gives 0.
func (in *inode) holderPID(requester uint64, want *fuseproto.FileLock, found *unix.Flock_t) uint32 {
	in.lockMu.Lock()
	defer in.lockMu.Unlock()
	var q unix.Flock_t
	if toFlock(want, &q) != 0 {
		return 0
	}
	for owner, lo := range in.owners {
		if owner == requester || lo.pid == 0 {
			continue
		}
		l := q
		if unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_GETLK, &l) != nil {
			continue
		}
		if l.Type != found.Type || l.Start != found.Start || l.Len != found.Len {
			return lo.pid
		}
	}
	return 0
}

// Setlk takes or releases a POSIX lock of lock owner in.Owner, or with
// LkFlock a flock(2) lock of handle in.Fh. With wait it retries a
// conflicting lock with a backoff from 1 ms to 50 ms until it is granted or
// ctx.Interrupted is closed (EINTR); it never blocks in the host kernel.
func (fs *FS) Setlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return fs.flock(ctx, in, wait)
	}
	var lk unix.Flock_t
	if e := toFlock(&in.Lk, &lk); e != 0 {
		return e
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	lo, e := fs.owner(ino, in.Owner, lk.Type != unix.F_UNLCK)
	if e != 0 || lo == nil {
		return e // unlocking an owner without locks is a no-op
	}
	defer ino.putOwner(lo)
	if lk.Type == unix.F_WRLCK && !lo.writable {
		return unix.EBADF
	}
	if h := fs.files.get(in.Fh); h != nil {
		ino.lockMu.Lock()
		if h.lockOwners == nil {
			h.lockOwners = map[uint64]struct{}{}
		}
		h.lockOwners[in.Owner] = struct{}{}
		ino.lockMu.Unlock()
		fs.files.put(h)
	}
	e = fs.retryLock(ctx, wait, func() error {
		l := lk
		return unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_SETLK, &l)
	})
	if e == 0 && lk.Type != unix.F_UNLCK {
		ino.lockMu.Lock()
		lo.pid = in.Lk.PID
		ino.lockMu.Unlock()
	}
	return e
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
		return unix.EBADF
	}
	defer t.put(h)
	return fs.retryLock(ctx, wait, func() error {
		return unix.Flock(h.fd, how|unix.LOCK_NB)
	})
}

// retryLock runs try, a non-blocking lock attempt, once, or with wait until
// it stops reporting a conflict, ctx is interrupted or the session is
// destroyed (EINTR). A conflict without wait answers EAGAIN.
func (fs *FS) retryLock(ctx *fuseproto.Context, wait bool, try func() error) fuseproto.Errno {
	var timer *time.Timer
	delay := lockWaitMin
	for {
		err := try()
		switch err {
		case nil:
			return 0
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EACCES:
			if !wait {
				return unix.EAGAIN
			}
		default:
			return errno(err)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		var interrupted <-chan struct{}
		if ctx != nil {
			interrupted = ctx.Interrupted
		}
		select {
		case <-interrupted:
			return unix.EINTR
		case <-*fs.session.Load():
			return unix.EINTR
		case <-timer.C:
		}
		delay = min(delay*2, lockWaitMax)
	}
}
