package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Copy-up, as kernel overlayfs does it: the parent chain first (each
// directory alone, with its metadata), then the object, built in the work
// directory (data with holes kept, reflinked or copied in the host kernel;
// xattrs but the overlay's private ones; owner, then mode with its set-ID
// bits; timestamps; the origin handle) and renamed into place, so that a
// crash leaves either nothing or a complete object in the upper. A
// hard-linked lower file goes to the index first and is linked from there,
// so that all its names stay one inode. With metacopy=on a metadata-only
// change copies up an empty file of the right size marked metacopy; its
// data is copied in place on the first change to it, and the mark removed
// last. The inode's mutex makes concurrent requests wait for one copy-up.

// copyUp gives in an upper object (meta: a metacopy one is enough) and
// links it at its alias when it is an indexed hard link. It takes no lock
// on entry and leaves none.
func (fs *FS) copyUp(in *inode, meta bool) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS
	}
	meta = meta && fs.cfg.Metacopy
	for {
		in.mu.Lock()
		if fs.isUp(in, meta) {
			in.mu.Unlock()
			return 0
		}
		parent := in.parent
		in.mu.Unlock()
		if parent == nil {
			return unix.EIO // the root of a writable union always has its upper
		}
		if e := fs.copyUp(parent, true); e != 0 {
			return e
		}
		parent.mu.Lock()
		in.mu.Lock()
		if in.parent != parent {
			in.mu.Unlock()
			parent.mu.Unlock()
			continue // moved meanwhile: start over from the new parent
		}
		e := fs.copyUpLocked(in, parent, meta)
		in.mu.Unlock()
		parent.mu.Unlock()
		return e
	}
}

// isUp reports whether in needs no copy-up. Caller holds in.mu.
func (fs *FS) isUp(in *inode, meta bool) bool {
	if in.upper < 0 {
		return false
	}
	if in.metacopy && !meta {
		return false
	}
	return !in.indexed || in.linkedUp || in.deleted
}

// copyUpLocked is copyUp with parent (already copied up) and in locked.
func (fs *FS) copyUpLocked(in, parent *inode, meta bool) fuseproto.Errno {
	meta = meta && fs.cfg.Metacopy
	if fs.isUp(in, meta) {
		return 0
	}
	if parent.upper < 0 {
		return unix.EIO
	}
	if in.upper >= 0 {
		if in.indexed && !in.linkedUp && !in.deleted {
			if e := fs.linkUp(in, parent); e != 0 {
				return e
			}
		}
		if in.metacopy && !meta {
			return fs.copyDataUp(in)
		}
		return 0
	}
	if len(in.lower) == 0 {
		return unix.EIO
	}
	if in.deleted && in.typ == unix.S_IFDIR {
		return unix.ENOENT
	}
	src := in.lower[0]
	var st unix.Statx_t
	if err := statx(src.fd, &st); err != nil {
		return errno(err)
	}
	hardlinked := in.typ != unix.S_IFDIR && fs.indexFd >= 0 && st.Nlink > 1 && !in.deleted
	if in.typ != unix.S_IFREG {
		meta = false
	}
	fb := encodeFH(src.fd, src.l)
	if in.typ != unix.S_IFDIR && fs.indexFd < 0 && st.Nlink > 1 {
		// Without the index the copy-up breaks the hard link; like the
		// kernel, record no origin the other names would share.
		fb = nil
	}
	if hardlinked && fb == nil {
		hardlinked = false // no handle, no index: the link breaks, as with index=off
	}
	var pst unix.Statx_t
	havePst := statx(parent.upper, &pst) == nil

	tmp := fs.tmpName()
	fd, e := fs.buildCopy(in, src, &st, fb, tmp, meta)
	if e != 0 {
		fs.removeAllAt(fs.workFd, tmp)
		return e
	}
	if fb != nil && !parent.impure {
		// The parent now holds an entry whose st_ino comes from its
		// origin: readdir must look such entries up.
		if setx(parent.upper, fs.x.impure, "y") == nil {
			parent.impure = true
		}
	}
	switch {
	case hardlinked:
		iname := indexName(fb)
		err := unix.Renameat2(fs.workFd, tmp, fs.indexFd, iname, unix.RENAME_NOREPLACE)
		if err == unix.EEXIST {
			// Another name's copy-up won: use its entry.
			unix.Close(fd)
			fs.removeAllAt(fs.workFd, tmp)
			fd, err = fs.res.OpenBeneath(fs.indexFd, iname, unix.O_PATH)
		}
		if err != nil {
			unix.Close(fd)
			fs.removeAllAt(fs.workFd, tmp)
			return errno(err)
		}
		in.upper, in.indexed, in.linkedUp, in.origin = fd, true, false, fb
		if e := fs.linkUp(in, parent); e != 0 {
			return e
		}
	case in.deleted:
		// Changed after its last name went: an orphan the descriptor keeps.
		unix.Unlinkat(fs.workFd, tmp, 0)
		in.upper = fd
	default:
		if err := unix.Renameat2(fs.workFd, tmp, parent.upper, in.name, unix.RENAME_NOREPLACE); err != nil {
			unix.Close(fd)
			fs.removeAllAt(fs.workFd, tmp)
			return errno(err)
		}
		in.upper = fd
	}
	in.metacopy = meta
	in.origin = fb
	in.dataGen.Add(1)
	if in.typ == unix.S_IFDIR {
		in.marks = dirMarks{}
	}
	if havePst {
		restoreTimes(parent.upper, &pst)
	}
	var ust unix.Statx_t
	if statx(in.upper, &ust) == nil {
		if in.typ != unix.S_IFDIR && fs.indexFd < 0 && st.Nlink > 1 {
			fs.inodes.rekey(in, keyOf(&ust))
			in.ino.Store(fs.xino(keyOf(&ust)))
		} else {
			fs.inodes.alias(in, keyOf(&ust))
		}
	}
	return 0
}

// buildCopy makes the copy of lower object src (attributes st) in the work
// directory as tmp and returns its O_PATH descriptor.
func (fs *FS) buildCopy(in *inode, src layerObj, st *unix.Statx_t, fb []byte, tmp string, meta bool) (int, fuseproto.Errno) {
	mode := uint32(st.Mode)
	var err error
	switch in.typ {
	case unix.S_IFDIR:
		err = unix.Mkdirat(fs.workFd, tmp, 0o700)
	case unix.S_IFREG:
		var wfd int
		wfd, err = unix.Openat(fs.workFd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			break
		}
		if meta {
			err = unix.Ftruncate(wfd, int64(st.Size))
		} else {
			err = fs.copyData(src.fd, wfd, int64(st.Size))
		}
		if cerr := unix.Close(wfd); err == nil {
			err = cerr
		}
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		var n int
		if n, err = unix.Readlinkat(src.fd, "", buf); err == nil {
			err = unix.Symlinkat(string(buf[:n]), fs.workFd, tmp)
		}
	default:
		err = unix.Mknodat(fs.workFd, tmp, mode&(unix.S_IFMT|0o7777), int(unix.Mkdev(st.Rdev_major, st.Rdev_minor)))
	}
	if err != nil {
		return -1, errno(err)
	}
	fd, err := fs.res.OpenBeneath(fs.workFd, tmp, unix.O_PATH)
	if err != nil {
		return -1, errno(err)
	}
	fail := func(err error) (int, fuseproto.Errno) {
		unix.Close(fd)
		return -1, errno(err)
	}
	if err := fs.copyXattrs(src.fd, fd, in.typ); err != nil {
		return fail(err)
	}
	if meta {
		if err := setx(fd, fs.x.metacopy, ""); err != nil {
			return fail(err)
		}
	}
	if err := fs.copyFlags(src.fd, fd, in.typ); err != nil {
		return fail(err)
	}
	if fb != nil {
		if err := setx(fd, fs.x.origin, string(fb)); err != nil {
			fs.log.Debug("cannot record a copy-up's origin", "err", err)
		}
	}
	if err := unix.Fchownat(fd, "", int(st.Uid), int(st.Gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(err)
	}
	if in.typ != unix.S_IFLNK {
		if err := unix.Fchmodat(fs.procFd, itoa(fd), mode&0o7777, 0); err != nil {
			return fail(err)
		}
	}
	restoreTimes(fd, st)
	return fd, 0
}

// restoreTimes sets the atime and mtime of the object open as fd to st's.
func restoreTimes(fd int, st *unix.Statx_t) {
	ts := []unix.Timespec{
		{Sec: st.Atime.Sec, Nsec: int64(st.Atime.Nsec)},
		{Sec: st.Mtime.Sec, Nsec: int64(st.Mtime.Nsec)},
	}
	unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// linkUp links an indexed inode's index entry at its alias in parent's
// upper directory (replacing a whiteout there if any). Caller holds
// parent.mu and in.mu.
func (fs *FS) linkUp(in, parent *inode) fuseproto.Errno {
	n := fs.unionNlink(in)
	var pst unix.Statx_t
	havePst := statx(parent.upper, &pst) == nil
	if err := fs.linkAt(in.upper, parent.upper, in.name); err != nil {
		return errno(err)
	}
	if havePst {
		restoreTimes(parent.upper, &pst)
	}
	in.linkedUp = true
	fs.setUnionNlink(in, n)
	fs.markImpure(parent, in)
	return 0
}

// linkAt makes a new hard link to the object open as fd (O_PATH) as name in
// directory dirfd; an existing whiteout there is replaced atomically.
func (fs *FS) linkAt(fd, dirfd int, name string) error {
	err := unix.Linkat(fs.procFd, itoa(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	if err != unix.EEXIST {
		return err
	}
	var st unix.Statx_t
	wfd, oerr := fs.res.OpenBeneath(dirfd, name, unix.O_PATH)
	if oerr != nil {
		return err
	}
	isWh := statx(wfd, &st) == nil && isCharWhiteout(&st)
	unix.Close(wfd)
	if !isWh {
		return err
	}
	tmp := fs.tmpName()
	if err := unix.Linkat(fs.procFd, itoa(fd), fs.workFd, tmp, unix.AT_SYMLINK_FOLLOW); err != nil {
		return err
	}
	if err := unix.Renameat2(fs.workFd, tmp, dirfd, name, 0); err != nil {
		unix.Unlinkat(fs.workFd, tmp, 0)
		return err
	}
	return nil
}

// copyDataUp copies a metacopy file's data from its lower into its upper
// and then drops the metacopy mark. Caller holds in.mu.
func (fs *FS) copyDataUp(in *inode) fuseproto.Errno {
	if len(in.lower) == 0 {
		// A metacopy upper whose lower data was not found (a lower
		// changed under us): kernel overlayfs answers EIO too.
		return unix.EIO
	}
	var st unix.Statx_t
	if err := statx(in.lower[0].fd, &st); err != nil {
		return errno(err)
	}
	var ust unix.Statx_t
	if err := statx(in.upper, &ust); err != nil {
		return errno(err)
	}
	wfd, err := fs.reopen(in.upper, unix.O_WRONLY)
	if err != nil {
		return errno(err)
	}
	err = fs.copyData(in.lower[0].fd, wfd, int64(st.Size))
	if err == nil {
		err = unix.Ftruncate(wfd, int64(ust.Size))
	}
	if err == nil {
		err = unix.Fsync(wfd)
	}
	unix.Close(wfd)
	if err != nil {
		return errno(err)
	}
	if err := removex(in.upper, fs.x.metacopy); err != nil {
		return errno(err)
	}
	restoreTimes(in.upper, &ust)
	in.metacopy = false
	in.dataGen.Add(1)
	return 0
}

// ficlone is FICLONE, _IOW(0x94, 9, int).
const ficlone = 0x40049409

// copyData copies size bytes of the file open as srcPath (O_PATH) into dst:
// a reflink where the host filesystem can share extents, else each data
// extent (holes are skipped and stay holes) with copy_file_range, falling
// back to read and write across filesystems that cannot.
func (fs *FS) copyData(srcPath, dst int, size int64) error {
	src, err := fs.reopen(srcPath, unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(dst), ficlone, uintptr(src)); e == 0 {
		return nil
	}
	var buf []byte
	for off := int64(0); off < size; {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // a hole to the end
		}
		if err != nil {
			data = off // no SEEK_DATA: copy everything
		}
		end, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil || end > size {
			end = size
		}
		for pos := data; pos < end; {
			in, out := pos, pos
			n, err := unix.CopyFileRange(src, &in, dst, &out, int(min(end-pos, 1<<30)), 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				if buf == nil {
					buf = make([]byte, 1<<20)
				}
				m, rerr := unix.Pread(src, buf[:min(int64(len(buf)), end-pos)], pos)
				if rerr != nil {
					return rerr
				}
				if m == 0 {
					return unix.EIO // the lower file shrank under us
				}
				if _, werr := unix.Pwrite(dst, buf[:m], pos); werr != nil {
					return werr
				}
				n = m
			}
			pos += int64(n)
		}
		off = end
	}
	return unix.Ftruncate(dst, size)
}

// copyXattrs copies every xattr of src to dst but the overlay's private
// ones. Attributes dst's filesystem does not support are skipped.
func (fs *FS) copyXattrs(src, dst int, typ uint32) error {
	list, err := listx(src)
	if err != nil {
		if err == unix.EOPNOTSUPP || err == unix.ENOTSUP {
			return nil
		}
		return err
	}
	for _, name := range list {
		if fs.x.isPrivate(name) {
			continue
		}
		val, err := getxBytes(src, name)
		if err != nil {
			if err == unix.ENODATA {
				continue
			}
			return err
		}
		if err := hostfs.Setxattr(dst, name, val, 0); err != nil {
			if err == unix.EOPNOTSUPP || (err == unix.EPERM && typ == unix.S_IFLNK) {
				fs.log.Debug("copy-up skips an xattr the upper does not take", "name", name, "err", err)
				continue
			}
			return err
		}
	}
	return nil
}

// listx lists the xattr names of the inode open as fd.
func listx(fd int) ([]string, error) {
	for {
		n, err := hostfs.Listxattr(fd, nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = hostfs.Listxattr(fd, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return splitNul(buf[:n]), nil
	}
}

// getxBytes reads an xattr value of any size.
func getxBytes(fd int, name string) ([]byte, error) {
	for {
		n, err := hostfs.Getxattr(fd, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = hostfs.Getxattr(fd, name, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// splitNul splits a NUL-separated name list.
func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, string(b[start:]))
	}
	return out
}

// reopen opens a new descriptor for the object open as pathFd (a regular
// file or directory) through /proc/self/fd.
func (fs *FS) reopen(pathFd int, flags int) (int, error) {
	for {
		fd, err := unix.Openat(fs.procFd, itoa(pathFd), flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
