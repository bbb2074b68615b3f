package passthrough

import (
	"math"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// openPassFlags are the open(2) flags a guest may ask for on a reopen; the
// rest (O_CREAT, O_EXCL, O_NOCTTY, O_PATH, O_TMPFILE, O_DIRECTORY, ...) are
// dropped or handled by the operation itself.
const openPassFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_DIRECT |
	unix.O_DSYNC | unix.O_SYNC | unix.O_NOATIME | unix.O_NONBLOCK | unix.O_LARGEFILE

// writeIntent reports whether open flags would modify the file.
func writeIntent(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&(unix.O_TRUNC|unix.O_APPEND|unix.O_CREAT) != 0
}

// hostOpenFlags turns the guest's open flags into the ones we open with. With
// the writeback cache the kernel may read a file opened write-only (to fill
// partial pages) and sends appends at explicit offsets, so O_WRONLY becomes
// O_RDWR and O_APPEND is dropped, as virtiofsd does. O_DIRECT is kept only
// with Options.AllowDirectIO, O_NOATIME only with Options.PreserveNoatime.
func (fs *FS) hostOpenFlags(flags uint32) int {
	f := int(flags) & openPassFlags
	if !fs.opts.AllowDirectIO {
		f &^= unix.O_DIRECT
	}
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

// Open opens a regular file for I/O by reopening its O_PATH descriptor
// through /proc/self/fd. Directories, symlinks, device nodes, fifos and
// sockets are refused (EISDIR, ELOOP, ENXIO): the guest kernel never asks to
// open those, and a hostile guest must not make the daemon open a host
// device. O_TRUNC is honoured (FUSE_ATOMIC_O_TRUNC); with OpenKillSUIDGID a
// truncating open clears the set-ID bits.
func (fs *FS) Open(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	if fs.opts.ReadOnly && writeIntent(int(in.Flags)) {
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
	flags := fs.hostOpenFlags(in.Flags)
	fd, err := fs.reopen(ino, flags)
	if err != nil {
		return hostfs.Errno(err)
	}
	if in.OpenFlags&fuseproto.OpenKillSUIDGID != 0 && flags&unix.O_TRUNC != 0 {
		if err := hostfs.KillSUIDGIDFd(fd); err != nil {
			unix.Close(fd)
			return hostfs.Errno(err)
		}
	}
	*out = fuseproto.OpenOut{Fh: fs.files.add(fd, ino, flags, nil), OpenFlags: fs.openFlags}
	return 0
}

// Create creates and opens a regular file owned by the caller, with mode less
// the umask, labelled with ctx.SecCtx (see setSecCtx); O_EXCL is honoured
// as requested. An existing name is opened like Open would (never through a
// symlink, never a special file), and keeps its label.
func (fs *FS) Create(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	if e := hostfs.ValidName(name); e != 0 {
		return e
	}
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(p)
	if p.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	flags := fs.hostOpenFlags(in.Flags)
	mode := in.Mode & 0o7777 &^ (fs.umask(p, in.Umask) & 0o777)
	var fd int
	err := fs.asCaller(ctx, func() error {
		var err error
		// Always O_EXCL: without it, an existing device node or fifo
		// would be opened here, and a symlink would fail with ELOOP.
		fd, err = unix.Openat(p.fd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		return err
	})
	var pathFd int
	switch {
	case err == unix.EEXIST && in.Flags&unix.O_EXCL == 0:
		// The name exists and the caller did not ask for O_EXCL: open
		// it as Open would.
		pathFd, err = fs.beneath.OpenBeneath(p.fd, name, unix.O_PATH)
		if err != nil {
			return hostfs.Errno(err)
		}
		var st unix.Statx_t
		if err := hostfs.Statx(pathFd, &st); err != nil {
			unix.Close(pathFd)
			return hostfs.Errno(err)
		}
		if e := openKindErr(uint32(st.Mode) & unix.S_IFMT); e != 0 {
			unix.Close(pathFd)
			return e
		}
		// Opened with the caller's credentials: the guest kernel saw
		// a negative entry and checked no permission on this file.
		err = fs.asCaller(ctx, func() error {
			var err error
			fd, err = unix.Openat(fs.procFd, itoa(pathFd), flags|unix.O_CLOEXEC, 0)
			return err
		})
		if err != nil {
			unix.Close(pathFd)
			return hostfs.Errno(err)
		}
		if in.OpenFlags&fuseproto.OpenKillSUIDGID != 0 && flags&unix.O_TRUNC != 0 {
			if err := hostfs.KillSUIDGIDFd(fd); err != nil {
				unix.Close(fd)
				unix.Close(pathFd)
				return hostfs.Errno(err)
			}
		}
	case err != nil:
		return hostfs.Errno(err)
	default:
		if pathFd, err = fs.pathOf(fd); err != nil {
			unix.Close(fd)
			return hostfs.Errno(err)
		}
		if err := setSecCtx(ctx, pathFd); err != nil {
			hostfs.UnlinkIfSame(p.fd, name, pathFd)
			unix.Close(pathFd)
			unix.Close(fd)
			return hostfs.Errno(err)
		}
	}
	ino, e := fs.newEntry(p, name, pathFd, entry)
	if e != 0 {
		unix.Close(fd)
		return e
	}
	defer fs.inodes.put(ino)
	*open = fuseproto.OpenOut{Fh: fs.files.add(fd, ino, flags, nil), OpenFlags: fs.openFlags}
	return 0
}

// pathOf returns an O_PATH descriptor for the file open as fd.
func (fs *FS) pathOf(fd int) (int, error) {
	return unix.Openat(fs.procFd, itoa(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
}

// Tmpfile creates and opens an unnamed regular file in directory parent
// (O_TMPFILE), owned by the caller. Unless opened with O_EXCL it can be given
// a name with Link.
func (fs *FS) Tmpfile(ctx *fuseproto.Context, parent uint64, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(p)
	if p.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	flags := fs.hostOpenFlags(in.Flags) &^ (unix.O_TRUNC | unix.O_APPEND)
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		flags |= unix.O_RDWR // O_TMPFILE needs write access
	}
	if in.Flags&unix.O_EXCL != 0 {
		flags |= unix.O_EXCL
	}
	mode := in.Mode & 0o7777 &^ (fs.umask(p, in.Umask) & 0o777)
	var fd int
	err := fs.asCaller(ctx, func() error {
		var err error
		fd, err = unix.Openat(p.fd, ".", flags|unix.O_TMPFILE|unix.O_CLOEXEC, mode)
		return err
	})
	if err != nil {
		return hostfs.Errno(err)
	}
	pathFd, err := fs.pathOf(fd)
	if err != nil {
		unix.Close(fd)
		return hostfs.Errno(err)
	}
	if err := setSecCtx(ctx, pathFd); err != nil {
		// Unnamed: closing it is the undo.
		unix.Close(pathFd)
		unix.Close(fd)
		return hostfs.Errno(err)
	}
	ino, e := fs.newEntry(p, "", pathFd, entry)
	if e != 0 {
		unix.Close(fd)
		return e
	}
	defer fs.inodes.put(ino)
	*open = fuseproto.OpenOut{Fh: fs.files.add(fd, ino, flags&^unix.O_EXCL, nil), OpenFlags: fs.openFlags}
	return 0
}

// Read reads at most in.Size bytes at in.Offset straight into dst with
// preadv. It allocates nothing.
func (fs *FS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	if in.Offset > math.MaxInt64 {
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	_, e := dst.ReadFromFD(h.fd, int64(in.Offset), int(in.Size))
	fs.files.put(h)
	return e
}

// Write writes src at in.Offset straight from its buffers with pwritev and
// returns the bytes written. With WriteKillSUIDGID it first clears the
// set-ID bits, as the kernel does when an unprivileged user writes. It
// allocates nothing.
func (fs *FS) Write(ctx *fuseproto.Context, node uint64, in *fuseproto.WriteIn, src fuseproto.WriteSource) (uint32, fuseproto.Errno) {
	if fs.opts.ReadOnly {
		return 0, unix.EROFS
	}
	if in.Offset > math.MaxInt64 {
		return 0, unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return 0, fs.missing(in.Fh)
	}
	defer fs.files.put(h)
	if in.WriteFlags&fuseproto.WriteKillSUIDGID != 0 {
		if err := hostfs.KillSUIDGIDFd(h.fd); err != nil {
			return 0, hostfs.Errno(err)
		}
	}
	n, e := src.WriteToFD(h.fd, int64(in.Offset))
	if e != 0 {
		return 0, e
	}
	return uint32(n), 0
}

// BackingFile implements fuseproto.BackingFiler: the descriptor of open
// handle fh, which the /dev/fuse transport registers with the kernel for
// FUSE passthrough, so that the kernel reads and writes the host file
// itself and no READ or WRITE of fh reaches us. Every handle of an inode is
// a descriptor of the same host inode, as the kernel requires of the opens
// sharing a backing file. The descriptor stays open until Release.
//
// Set-user-ID and set-group-ID files are not passed through: the kernel
// writes a backing file with the credentials of the daemon, whose
// CAP_FSETID keeps those bits where a write by an unprivileged caller
// must clear them, and answering READ and WRITE ourselves has the guest
// kernel clear them (SETATTR) as it should. A file that becomes set-ID
// while it is open passed through keeps that mode until its last handle
// is released.
func (fs *FS) BackingFile(fh uint64) (int, bool) {
	h := fs.files.get(fh)
	if h == nil {
		return -1, false
	}
	defer fs.files.put(h)
	if h.ino.typ != unix.S_IFREG {
		return -1, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(h.fd, &st); err != nil || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return -1, false
	}
	return h.fd, true
}

// Flush is called on each close(2) in the guest: it releases the POSIX
// locks of in.LockOwner on the file, and reports delayed write errors of
// the host filesystem (such as NFS's) by closing a duplicate descriptor.
func (fs *FS) Flush(ctx *fuseproto.Context, node uint64, in *fuseproto.FlushIn) fuseproto.Errno {
	h := fs.files.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.files.put(h)
	h.ino.locks.DropOwner(in.LockOwner)
	dup, err := unix.Dup(h.fd)
	if err != nil {
		return hostfs.Errno(err)
	}
	return hostfs.Errno(unix.Close(dup))
}

// Release closes handle in.Fh: with ReleaseFlockUnlock it first drops the
// handle's flock lock, and it releases the POSIX locks of in.LockOwner. The
// descriptor is closed once no request still uses it.
func (fs *FS) Release(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	h := fs.files.remove(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	if in.ReleaseFlags&fuseproto.ReleaseFlockUnlock != 0 {
		unix.Flock(h.fd, unix.LOCK_UN)
	}
	if in.LockOwner != 0 {
		h.ino.locks.DropOwner(in.LockOwner)
	}
	// The guest's open file is gone: so are the locks taken through it,
	// OFD locks included (their owner is the open file, which no FLUSH
	// names).
	h.ino.locks.ReleaseHandle(in.Fh)
	fs.files.put(h)
	return 0
}

// Fsync flushes a file's data, and its metadata unless FsyncFdatasync.
func (fs *FS) Fsync(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	h := fs.files.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.files.put(h)
	if in.FsyncFlags&fuseproto.FsyncFdatasync != 0 {
		return hostfs.Errno(unix.Fdatasync(h.fd))
	}
	return hostfs.Errno(unix.Fsync(h.fd))
}

// Fallocate allocates, punches or zeroes space with fallocate(2).
func (fs *FS) Fallocate(ctx *fuseproto.Context, node uint64, in *fuseproto.FallocateIn) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	if in.Offset > math.MaxInt64 || in.Length > math.MaxInt64 {
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.files.put(h)
	return hostfs.Errno(unix.Fallocate(h.fd, in.Mode, int64(in.Offset), int64(in.Length)))
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the host file, and SEEK_SET,
// SEEK_CUR and SEEK_END as lseek(2) on the handle would (the handle's own
// position is unused: all I/O is positional).
func (fs *FS) Lseek(ctx *fuseproto.Context, node uint64, in *fuseproto.LseekIn, out *fuseproto.LseekOut) fuseproto.Errno {
	switch in.Whence {
	case unix.SEEK_SET, unix.SEEK_CUR, unix.SEEK_END, unix.SEEK_DATA, unix.SEEK_HOLE:
	default:
		return unix.EINVAL
	}
	h := fs.files.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.files.put(h)
	off, err := unix.Seek(h.fd, int64(in.Offset), int(in.Whence))
	if err != nil {
		return hostfs.Errno(err)
	}
	out.Offset = uint64(off)
	return 0
}

// CopyFileRange copies in.Len bytes from handle in.FhIn at in.OffIn to
// handle in.FhOut (of node in.NodeIDOut) at in.OffOut inside the host kernel
// and returns the bytes copied.
func (fs *FS) CopyFileRange(ctx *fuseproto.Context, node uint64, in *fuseproto.CopyFileRangeIn) (uint64, fuseproto.Errno) {
	if fs.opts.ReadOnly {
		return 0, unix.EROFS
	}
	if in.OffIn > math.MaxInt64 || in.OffOut > math.MaxInt64 || in.Flags > math.MaxInt32 {
		return 0, unix.EINVAL
	}
	src := fs.files.get(in.FhIn)
	if src == nil {
		return 0, fs.missing(in.FhIn)
	}
	defer fs.files.put(src)
	dst := fs.files.get(in.FhOut)
	if dst == nil {
		return 0, fs.missing(in.FhOut)
	}
	defer fs.files.put(dst)
	n := in.Len
	if n > math.MaxInt32 {
		n = math.MaxInt32 // a short copy; the caller asks again
	}
	offIn, offOut := int64(in.OffIn), int64(in.OffOut)
	got, err := unix.CopyFileRange(src.fd, &offIn, dst.fd, &offOut, int(n), int(in.Flags))
	if err != nil {
		return 0, hostfs.Errno(err)
	}
	return uint64(got), 0
}

// Syncfs syncs the host filesystem holding node (the share's for inodes we
// never open).
func (fs *FS) Syncfs(ctx *fuseproto.Context, node uint64) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	target := ino
	if ino.typ != unix.S_IFREG && ino.typ != unix.S_IFDIR {
		root, e := fs.inodes.get(fuseproto.RootID)
		if e != 0 {
			return e
		}
		defer fs.inodes.put(root)
		target = root
	}
	fd, err := fs.reopen(target, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return hostfs.Errno(err)
	}
	defer unix.Close(fd)
	return hostfs.Errno(unix.Syncfs(fd))
}

// Poll answers ENOSYS, after which the kernel treats our files as always
// ready; regular files and directories, the only kinds we open, are.
func (fs *FS) Poll(ctx *fuseproto.Context, node uint64, in *fuseproto.PollIn, out *fuseproto.PollOut) fuseproto.Errno {
	return unix.ENOSYS
}

// Bmap answers ENOSYS: it is meaningful only for block-device FUSE.
func (fs *FS) Bmap(ctx *fuseproto.Context, node uint64, in *fuseproto.BmapIn, out *fuseproto.BmapOut) fuseproto.Errno {
	return unix.ENOSYS
}
