package overlay

import (
	"math"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// openPassFlags are the open(2) flags passed through to the host.
const openPassFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_DSYNC |
	unix.O_SYNC | unix.O_NOATIME | unix.O_NONBLOCK | unix.O_LARGEFILE

// writeIntent reports whether open flags would modify the file.
func writeIntent(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&(unix.O_TRUNC|unix.O_APPEND) != 0
}

// hostOpenFlags turns the guest's open flags into ours; with the writeback
// cache O_WRONLY becomes O_RDWR and O_APPEND is dropped, and O_NOATIME is
// dropped unless Options.PreserveNoatime, as in passthrough.
func (fs *FS) hostOpenFlags(flags uint32) int {
	f := int(flags) & openPassFlags
	if !fs.opts.PreserveNoatime {
		f &^= unix.O_NOATIME
	}
	if fs.has(fuseproto.InitWritebackCache) {
		if f&unix.O_ACCMODE == unix.O_WRONLY {
			f = f&^unix.O_ACCMODE | unix.O_RDWR
		}
		f &^= unix.O_APPEND
	}
	return f
}

// openKindErr returns the errno for opening an object of type typ, or 0 for
// a regular file.
func openKindErr(typ uint32) fuseproto.Errno {
	switch typ {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return unix.EISDIR
	case unix.S_IFLNK:
		return unix.ELOOP
	}
	return unix.ENXIO
}

// Open opens a regular file. Opening a lower file for writing (even if
// nothing is then written) or with O_TRUNC copies it up first; a read-only
// open reads the topmost data, and keeps reading it after a later copy-up,
// as on kernel overlayfs. A read-only union refuses O_CREAT too, as
// passthrough does: the kernel never sends it, a hostile guest may.
func (fs *FS) Open(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	write := writeIntent(int(in.Flags))
	if (write || in.Flags&unix.O_CREAT != 0) && fs.readOnly() {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if e := openKindErr(ino.typ); e != 0 {
		return e
	}
	if write {
		if p := fs.protected(ino); p&flImmutable != 0 ||
			(p&flAppend != 0 && (in.Flags&unix.O_TRUNC != 0 || in.Flags&unix.O_APPEND == 0)) {
			return unix.EPERM
		}
		if e := fs.copyUp(ino, false); e != 0 {
			return e
		}
	}
	flags := fs.hostOpenFlags(in.Flags)
	ino.mu.Lock()
	src := ino.dataFd()
	upper := src == ino.upper
	gen := ino.dataGen.Load()
	fd, err := fs.reopen(src, flags)
	ino.mu.Unlock()
	if err != nil {
		return errno(err)
	}
	if in.OpenFlags&fuseproto.OpenKillSUIDGID != 0 && flags&unix.O_TRUNC != 0 && upper {
		if err := hostfs.KillSUIDGIDFd(fd); err != nil {
			unix.Close(fd)
			return errno(err)
		}
	}
	h := &handle{fd: fd, ino: ino, flags: flags, upper: upper, gen: gen}
	*out = fuseproto.OpenOut{Fh: fs.files.add(h), OpenFlags: fs.openFlags}
	return 0
}

// Read reads straight into dst from the handle's file.
func (fs *FS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	if in.Offset > math.MaxInt64 {
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	_, e := dst.ReadFromFD(fs.readFd(h), int64(in.Offset), int(in.Size))
	fs.files.put(h)
	return e
}

// Write writes straight from src into the handle's (upper) file.
func (fs *FS) Write(ctx *fuseproto.Context, node uint64, in *fuseproto.WriteIn, src fuseproto.WriteSource) (uint32, fuseproto.Errno) {
	if fs.readOnly() {
		return 0, unix.EROFS
	}
	if in.Offset > math.MaxInt64 {
		return 0, unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return 0, unix.EBADF
	}
	defer fs.files.put(h)
	if !h.upper {
		return 0, unix.EBADF
	}
	if in.WriteFlags&fuseproto.WriteKillSUIDGID != 0 {
		if err := hostfs.KillSUIDGIDFd(h.fd); err != nil {
			return 0, errno(err)
		}
	}
	n, e := src.WriteToFD(h.fd, int64(in.Offset))
	if e != 0 {
		return 0, e
	}
	return uint32(n), 0
}

// Flush releases the POSIX locks of in.LockOwner and reports delayed write
// errors by closing a duplicate descriptor.
func (fs *FS) Flush(ctx *fuseproto.Context, node uint64, in *fuseproto.FlushIn) fuseproto.Errno {
	h := fs.files.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.files.put(h)
	h.ino.locks.DropOwner(in.LockOwner)
	dup, err := unix.Dup(fs.readFd(h))
	if err != nil {
		return errno(err)
	}
	return errno(unix.Close(dup))
}

// Release closes a file handle, dropping its flock lock and the POSIX
// locks taken through it.
func (fs *FS) Release(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	h := fs.files.remove(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	if in.LockOwner != 0 {
		h.ino.locks.DropOwner(in.LockOwner)
	}
	h.ino.locks.ReleaseHandle(in.Fh)
	fs.files.put(h)
	return 0
}

// Fsync flushes a file's data, and metadata unless FsyncFdatasync.
func (fs *FS) Fsync(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	h := fs.files.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.files.put(h)
	if !h.upper {
		return 0 // nothing of ours to sync in a read-only lower
	}
	if in.FsyncFlags&fuseproto.FsyncFdatasync != 0 {
		return errno(unix.Fdatasync(h.fd))
	}
	return errno(unix.Fsync(h.fd))
}

// Fallocate allocates, punches or zeroes space in the (upper) file.
func (fs *FS) Fallocate(ctx *fuseproto.Context, node uint64, in *fuseproto.FallocateIn) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS
	}
	if in.Offset > math.MaxInt64 || in.Length > math.MaxInt64 {
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.files.put(h)
	if !h.upper {
		return unix.EBADF
	}
	return errno(unix.Fallocate(h.fd, in.Mode, int64(in.Offset), int64(in.Length)))
}

// Lseek answers SEEK_DATA and SEEK_HOLE (and the plain whences) from the
// handle's file.
func (fs *FS) Lseek(ctx *fuseproto.Context, node uint64, in *fuseproto.LseekIn, out *fuseproto.LseekOut) fuseproto.Errno {
	switch in.Whence {
	case unix.SEEK_SET, unix.SEEK_CUR, unix.SEEK_END, unix.SEEK_DATA, unix.SEEK_HOLE:
	default:
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.files.put(h)
	off, err := unix.Seek(fs.readFd(h), int64(in.Offset), int(in.Whence))
	if err != nil {
		return errno(err)
	}
	out.Offset = uint64(off)
	return 0
}

// CopyFileRange copies between two open files in the host kernel.
func (fs *FS) CopyFileRange(ctx *fuseproto.Context, node uint64, in *fuseproto.CopyFileRangeIn) (uint64, fuseproto.Errno) {
	if fs.readOnly() {
		return 0, unix.EROFS
	}
	if in.OffIn > math.MaxInt64 || in.OffOut > math.MaxInt64 || in.Flags > math.MaxInt32 {
		return 0, unix.EINVAL
	}
	src := fs.files.get(in.FhIn)
	if src == nil {
		return 0, unix.EBADF
	}
	defer fs.files.put(src)
	dst := fs.files.get(in.FhOut)
	if dst == nil {
		return 0, unix.EBADF
	}
	defer fs.files.put(dst)
	if !dst.upper {
		return 0, unix.EBADF
	}
	n := min(in.Len, math.MaxInt32)
	offIn, offOut := int64(in.OffIn), int64(in.OffOut)
	got, err := unix.CopyFileRange(fs.readFd(src), &offIn, dst.fd, &offOut, int(n), int(in.Flags))
	if err != nil {
		return 0, errno(err)
	}
	return uint64(got), 0
}

// Syncfs syncs the upper filesystem.
func (fs *FS) Syncfs(ctx *fuseproto.Context, node uint64) fuseproto.Errno {
	if fs.upper == nil {
		return 0
	}
	fd, err := fs.reopen(fs.upper.root, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	return errno(unix.Syncfs(fd))
}

// Poll answers ENOSYS: regular files and directories are always ready.
func (fs *FS) Poll(ctx *fuseproto.Context, node uint64, in *fuseproto.PollIn, out *fuseproto.PollOut) fuseproto.Errno {
	return unix.ENOSYS
}

// Bmap answers ENOSYS: it is meaningful only for block-device FUSE.
func (fs *FS) Bmap(ctx *fuseproto.Context, node uint64, in *fuseproto.BmapIn, out *fuseproto.BmapOut) fuseproto.Errno {
	return unix.ENOSYS
}

// lockOpener returns the opener of in's lock file: a memfd that stands for
// the union inode, so that locks hold across copy-up and between handles
// on different layers, as locks on a kernel overlayfs inode do.
func (fs *FS) lockOpener(in *inode) hostfs.OpenFunc {
	return func(flags int) (int, error) {
		in.lockMu.Lock()
		if in.lockFd < 0 {
			fd, err := unix.MemfdCreate("govirtiofs-lock", unix.MFD_CLOEXEC)
			if err != nil {
				in.lockMu.Unlock()
				return -1, err
			}
			in.lockFd = fd
		}
		lfd := in.lockFd
		in.lockMu.Unlock()
		return fs.reopen(lfd, flags)
	}
}

// Getlk tests for a POSIX lock conflicting with in.Lk.
func (fs *FS) Getlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, out *fuseproto.LkOut) fuseproto.Errno {
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return unix.EINVAL
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFREG && ino.typ != unix.S_IFDIR {
		return unix.EINVAL
	}
	return ino.locks.Getlk(fs.lockOpener(ino), false, in, out)
}

// Setlk takes or releases a POSIX lock, or with LkFlock a flock lock.
func (fs *FS) Setlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFREG && ino.typ != unix.S_IFDIR {
		return unix.EINVAL
	}
	if in.LkFlags&fuseproto.LkFlock != 0 {
		return fs.flock(ctx, ino, in, wait)
	}
	return ino.locks.Setlk(ctx, fs.lockOpener(ino), false, in.Fh, in, wait, *fs.session.Load())
}

// flock takes or drops a flock lock on the handle's own descriptor of the
// inode's lock file, which stands for the guest's open file.
func (fs *FS) flock(ctx *fuseproto.Context, ino *inode, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
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
	h, t := fs.files.get(in.Fh), &fs.files
	if h == nil {
		h, t = fs.dirs.get(in.Fh), &fs.dirs
	}
	if h == nil {
		return unix.EBADF
	}
	defer t.put(h)
	h.flockMu.Lock()
	if h.flockFd < 0 {
		fd, err := fs.lockOpener(ino)(unix.O_RDONLY)
		if err != nil {
			h.flockMu.Unlock()
			return errno(err)
		}
		h.flockFd = fd
	}
	fd := h.flockFd
	h.flockMu.Unlock()
	return hostfs.RetryLock(ctx, wait, *fs.session.Load(), func() error {
		return unix.Flock(fd, how|unix.LOCK_NB)
	})
}
