package hostfs

import (
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// OffsetMax is OFFSET_MAX, the End of a FUSE lock that runs to the end of
// file.
const OffsetMax = math.MaxInt64

// Backoff bounds of a waiting lock, which polls rather than blocking a
// worker in the host kernel.
const (
	lockWaitMin = time.Millisecond
	lockWaitMax = 50 * time.Millisecond
)

// lockOwner is the host descriptor that carries one guest lock owner's POSIX
// locks on one inode. The locks are open-file-description (OFD) locks, which
// belong to the descriptor, so each guest owner gets its own and two guest
// processes never share locks. Closing the descriptor releases them.
type lockOwner struct {
	fd       int
	writable bool
	refs     int    // guarded by Locks.mu: the owners map's plus users'
	pid      uint32 // guarded by Locks.mu: the guest pid of its last lock, for Getlk
}

// Locks are the POSIX record locks of one inode, kept as host OFD locks on
// one descriptor per guest lock owner, so that two guest processes sharing
// the inode never share locks. It also remembers which file handles each
// owner took locks through, because an OFD lock taken in the guest has the
// open file itself as owner, and no FLUSH ever names it: ReleaseHandle drops
// those.
//
// flock(2) locks are not kept here: they belong on the handle's own
// descriptor, and Getlk and Setlk refuse fuseproto.LkFlock requests with
// EINVAL.
//
// The zero value is ready; a Locks must not be copied after first use. Its
// methods are safe for concurrent use.
type Locks struct {
	mu sync.Mutex
	// owners maps a guest lock owner to its descriptor.
	owners map[uint64]*lockOwner
	// handles maps a file handle number to the owners that took locks
	// through it.
	handles map[uint64]map[uint64]struct{}
}

// OpenFunc opens a new descriptor of the locked file with the given open(2)
// flags. Locks passes O_RDWR|O_NONBLOCK or O_RDONLY|O_NONBLOCK (O_CLOEXEC is
// the function's to add) and owns the descriptor returned. It runs with the
// Locks' mutex held, so it must not call back into the same Locks. An error
// it returns is answered as Errno(err); a function refusing a kind of file
// that cannot carry locks returns EINVAL.
type OpenFunc func(flags int) (int, error)

// ValidLock returns EINVAL unless l is a lock Getlk and Setlk accept: type
// F_RDLCK, F_WRLCK or F_UNLCK, Start at most OffsetMax and End not before
// Start (End OffsetMax runs to the end of file). Callers may use it to
// refuse a bad lock before looking the inode up.
func ValidLock(l *fuseproto.FileLock) syscall.Errno {
	var lk unix.Flock_t
	return toFlock(l, &lk)
}

// toFlock converts a FUSE lock (inclusive end, OffsetMax for "to the end")
// into a struct flock for an OFD lock.
func toFlock(l *fuseproto.FileLock, lk *unix.Flock_t) syscall.Errno {
	switch l.Type {
	case unix.F_RDLCK, unix.F_WRLCK, unix.F_UNLCK:
	default:
		return unix.EINVAL
	}
	if l.Start > OffsetMax || l.End < l.Start {
		return unix.EINVAL
	}
	*lk = unix.Flock_t{Type: int16(l.Type), Whence: unix.SEEK_SET, Start: int64(l.Start)}
	if l.End < OffsetMax {
		lk.Len = int64(l.End - l.Start + 1)
	}
	return 0
}

// fromFlock converts a struct flock from F_OFD_GETLK back. The holder of an
// OFD lock has no pid; Getlk finds it among the owners.
func fromFlock(lk *unix.Flock_t, l *fuseproto.FileLock) {
	*l = fuseproto.FileLock{Type: uint32(lk.Type), Start: uint64(lk.Start), End: OffsetMax}
	if lk.Len > 0 {
		l.End = uint64(lk.Start + lk.Len - 1)
	}
}

// owner returns the descriptor of lock owner with a reference (given back
// with put), opening it with open if create is set. It is opened read-write
// unless readOnly or the host refuses, else read-only (which carries read
// locks only). A nil result with no error means the owner has none.
func (l *Locks) owner(open OpenFunc, readOnly bool, owner uint64, create bool) (*lockOwner, syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lo := l.owners[owner]; lo != nil {
		lo.refs++
		return lo, 0
	}
	if !create {
		return nil, 0
	}
	lo := &lockOwner{fd: -1, refs: 2}
	if !readOnly {
		if fd, err := open(unix.O_RDWR | unix.O_NONBLOCK); err == nil {
			lo.fd, lo.writable = fd, true
		}
	}
	if lo.fd < 0 {
		fd, err := open(unix.O_RDONLY | unix.O_NONBLOCK)
		if err != nil {
			return nil, Errno(err)
		}
		lo.fd = fd
	}
	if l.owners == nil {
		l.owners = map[uint64]*lockOwner{}
	}
	l.owners[owner] = lo
	return lo, 0
}

// put gives back a reference from owner.
func (l *Locks) put(lo *lockOwner) {
	l.mu.Lock()
	l.unrefLocked(lo)
	l.mu.Unlock()
}

// unrefLocked drops a reference to lo and closes its descriptor (releasing
// its locks) when it was the last. l.mu is held.
func (l *Locks) unrefLocked(lo *lockOwner) {
	lo.refs--
	if lo.refs == 0 {
		unix.Close(lo.fd)
	}
}

// dropLocked removes owner from the map, giving back the map's reference.
// l.mu is held.
func (l *Locks) dropLocked(owner uint64) {
	if lo := l.owners[owner]; lo != nil {
		delete(l.owners, owner)
		l.unrefLocked(lo)
	}
}

// Getlk tests for a POSIX lock that would conflict with in.Lk, held by
// another lock owner or a host process, through lock owner in.Owner's
// descriptor (opened with open if the owner has none yet: read-write first
// unless readOnly, else read-only). A conflict fills out.Lk with the lock
// found and the guest pid of the owner holding it (0 for a host process);
// none gives out.Lk = in.Lk with type F_UNLCK.
func (l *Locks) Getlk(open OpenFunc, readOnly bool, in *fuseproto.LkIn, out *fuseproto.LkOut) syscall.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return unix.EINVAL
	}
	var lk unix.Flock_t
	if e := toFlock(&in.Lk, &lk); e != 0 {
		return e
	}
	lo, e := l.owner(open, readOnly, in.Owner, true)
	if e != 0 {
		return e
	}
	defer l.put(lo)
	if err := unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_GETLK, &lk); err != nil {
		return Errno(err)
	}
	if lk.Type == unix.F_UNLCK {
		out.Lk = in.Lk
		out.Lk.Type = unix.F_UNLCK
		return 0
	}
	fromFlock(&lk, &out.Lk)
	out.Lk.PID = l.holderPID(in.Owner, &in.Lk, &lk)
	return 0
}

// holderPID returns the guest pid of the lock owner holding the conflicting
// lock found, which F_OFD_GETLK reported from requester's descriptor as
// found. An owner never sees its own locks, so the holder is the owner whose
// descriptor, asked the same question, does not report found. A lock held
// by a host process, or not found any more, gives 0.
func (l *Locks) holderPID(requester uint64, want *fuseproto.FileLock, found *unix.Flock_t) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var q unix.Flock_t
	if toFlock(want, &q) != 0 {
		return 0
	}
	for owner, lo := range l.owners {
		if owner == requester || lo.pid == 0 {
			continue
		}
		lk := q
		if unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_GETLK, &lk) != nil {
			continue
		}
		if lk.Type != found.Type || lk.Start != found.Start || lk.Len != found.Len {
			return lo.pid
		}
	}
	return 0
}

// Setlk takes or releases lock owner in.Owner's POSIX lock in.Lk on its own
// descriptor (opened with open if needed, as for Getlk; unlocking an owner
// that has none is a no-op). A write lock on a descriptor that could only be
// opened read-only answers EBADF. Unless fh is 0, it records that file
// handle fh used the owner, so that ReleaseHandle(fh) drops it. The lock is
// tried as RetryLock does with ctx, wait and session; a granted lock
// remembers in.Lk.PID for Getlk.
func (l *Locks) Setlk(ctx *fuseproto.Context, open OpenFunc, readOnly bool, fh uint64, in *fuseproto.LkIn, wait bool, session <-chan struct{}) syscall.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return unix.EINVAL
	}
	var lk unix.Flock_t
	if e := toFlock(&in.Lk, &lk); e != 0 {
		return e
	}
	lo, e := l.owner(open, readOnly, in.Owner, lk.Type != unix.F_UNLCK)
	if e != 0 || lo == nil {
		return e // unlocking an owner without locks is a no-op
	}
	defer l.put(lo)
	if lk.Type == unix.F_WRLCK && !lo.writable {
		return unix.EBADF
	}
	if fh != 0 {
		l.mu.Lock()
		if l.handles == nil {
			l.handles = map[uint64]map[uint64]struct{}{}
		}
		owners := l.handles[fh]
		if owners == nil {
			owners = map[uint64]struct{}{}
			l.handles[fh] = owners
		}
		owners[in.Owner] = struct{}{}
		l.mu.Unlock()
	}
	e = RetryLock(ctx, wait, session, func() error {
		try := lk
		return unix.FcntlFlock(uintptr(lo.fd), unix.F_OFD_SETLK, &try)
	})
	if e == 0 && lk.Type != unix.F_UNLCK {
		l.mu.Lock()
		lo.pid = in.Lk.PID
		l.mu.Unlock()
	}
	return e
}

// DropOwner closes lock owner's descriptor, releasing its POSIX locks, once
// no request still uses it. An unknown owner is ignored.
func (l *Locks) DropOwner(owner uint64) {
	l.mu.Lock()
	l.dropLocked(owner)
	l.mu.Unlock()
}

// ReleaseHandle drops every lock owner that took locks through file handle
// fh (see Setlk) and forgets fh. It is called when the handle is released:
// the guest's open file is gone, and so are the locks whose owner was that
// open file, which no FLUSH names.
func (l *Locks) ReleaseHandle(fh uint64) {
	l.mu.Lock()
	for owner := range l.handles[fh] {
		l.dropLocked(owner)
	}
	delete(l.handles, fh)
	l.mu.Unlock()
}

// Close drops every lock owner and forgets every handle, as when the inode
// goes away. Descriptors still used by a request are closed when it ends.
func (l *Locks) Close() {
	l.mu.Lock()
	for owner := range l.owners {
		l.dropLocked(owner)
	}
	l.handles = nil
	l.mu.Unlock()
}

// RetryLock runs try, a non-blocking lock attempt, once, or with wait until
// it stops reporting a conflict (EAGAIN or EACCES), ctx.Interrupted is
// closed or session is closed (both answer EINTR). The waits grow from 1 ms
// to 50 ms, so no worker ever blocks in the host kernel. An EINTR from try
// is retried at once; a conflict without wait answers EAGAIN; any other
// error is answered as Errno(err). ctx and session may be nil.
func RetryLock(ctx *fuseproto.Context, wait bool, session <-chan struct{}, try func() error) syscall.Errno {
	var timer *time.Timer
	delay := lockWaitMin
	var interrupted <-chan struct{}
	if ctx != nil {
		interrupted = ctx.Interrupted
	}
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
			return Errno(err)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-interrupted:
			return unix.EINTR
		case <-session:
			return unix.EINTR
		case <-timer.C:
		}
		delay = min(delay*2, lockWaitMax)
	}
}
