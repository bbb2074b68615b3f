package overlay

import (
	"fmt"
	"strconv"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// statIn stats in's topmost object (or fd when >= 0, an open handle of it)
// and adjusts the result to the merged view: a metacopy file's blocks are
// its lower data's, a merged directory has one link (as kernel overlayfs
// reports, counting subdirectories across layers is not worth it), and an
// indexed hard link shows the union's link count.
func (fs *FS) statIn(in *inode, fd int, st *unix.Statx_t) fuseproto.Errno {
	in.mu.Lock()
	defer in.mu.Unlock()
	return fs.statLocked(in, fd, st)
}

func (fs *FS) statLocked(in *inode, fd int, st *unix.Statx_t) fuseproto.Errno {
	if fd < 0 {
		fd = in.top()
	}
	if err := statx(fd, st); err != nil {
		return errno(err)
	}
	if in.typ == unix.S_IFDIR && (len(in.lower) > 1 || (in.upper >= 0 && len(in.lower) > 0)) {
		st.Nlink = 1
	}
	if in.metacopy && len(in.lower) > 0 {
		var lst unix.Statx_t
		if statx(in.lower[0].fd, &lst) == nil {
			st.Blocks = lst.Blocks
		}
	}
	if in.indexed {
		st.Nlink = fs.unionNlink(in)
	}
	return 0
}

// unionNlink returns the link count of an indexed hard link as the union
// sees it, from the nlink xattr on its index entry ("U%+d": relative to the
// upper's count, or "L%+d": to the lower's), else the lower's count.
// Caller holds in.mu.
func (fs *FS) unionNlink(in *inode) uint32 {
	var ust, lst unix.Statx_t
	uok := in.upper >= 0 && statx(in.upper, &ust) == nil
	lok := len(in.lower) > 0 && statx(in.lower[0].fd, &lst) == nil
	if uok {
		if v, ok := getx(in.upper, fs.x.nlink); ok && len(v) >= 2 {
			if d, err := strconv.Atoi(v[1:]); err == nil {
				base := int64(-1)
				switch {
				case v[0] == 'U':
					base = int64(ust.Nlink)
				case v[0] == 'L' && lok:
					base = int64(lst.Nlink)
				}
				if n := base + int64(d); base >= 0 && n >= 0 {
					return uint32(n)
				}
			}
		}
	}
	if lok {
		return lst.Nlink
	}
	return ust.Nlink
}

// setUnionNlink records the union link count n of an indexed inode on its
// index entry, relative to the entry's own count. Caller holds in.mu.
func (fs *FS) setUnionNlink(in *inode, n uint32) {
	var ust unix.Statx_t
	if in.upper < 0 || statx(in.upper, &ust) != nil {
		return
	}
	if err := setx(in.upper, fs.x.nlink, fmt.Sprintf("U%+d", int64(n)-int64(ust.Nlink))); err != nil {
		fs.log.Warn("cannot record the link count of an indexed inode", "err", err)
	}
}

// fillAttr converts an adjusted statx result into a fuse_attr, with the
// inode's stable number.
func fillAttr(a *fuseproto.Attr, in *inode, st *unix.Statx_t) {
	*a = fuseproto.Attr{
		Ino:       in.ino.Load(),
		Size:      st.Size,
		Blocks:    st.Blocks,
		Atime:     uint64(st.Atime.Sec),
		Mtime:     uint64(st.Mtime.Sec),
		Ctime:     uint64(st.Ctime.Sec),
		Atimensec: st.Atime.Nsec,
		Mtimensec: st.Mtime.Nsec,
		Ctimensec: st.Ctime.Nsec,
		Mode:      uint32(st.Mode),
		Nlink:     st.Nlink,
		UID:       st.Uid,
		GID:       st.Gid,
		Rdev:      uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor)),
		Blksize:   st.Blksize,
	}
}

// entryOut fills an entry reply for in (whose lookup the caller counted).
func (fs *FS) entryOut(in *inode, out *fuseproto.EntryOut) fuseproto.Errno {
	var st unix.Statx_t
	if e := fs.statIn(in, -1, &st); e != 0 {
		return e
	}
	*out = fuseproto.EntryOut{NodeID: in.id, EntryValid: fs.timeout, AttrValid: fs.timeout}
	fillAttr(&out.Attr, in, &st)
	return 0
}

// Getattr returns the attributes of node as the union shows them.
func (fs *FS) Getattr(ctx *fuseproto.Context, node uint64, in *fuseproto.GetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	fd := -1
	if in != nil && in.GetattrFlags&fuseproto.GetattrFh != 0 {
		if h := fs.files.get(in.Fh); h != nil {
			defer fs.files.put(h)
			if h.upper {
				fd = h.fd
			}
		}
	}
	var st unix.Statx_t
	if e := fs.statIn(ino, fd, &st); e != 0 {
		return e
	}
	*out = fuseproto.AttrOut{AttrValid: fs.timeout}
	fillAttr(&out.Attr, ino, &st)
	return 0
}

// Setattr changes mode, owner, size and times. The first change to a lower
// object copies it up: only its metadata (metacopy=on) unless the size
// changes, which needs the data.
func (fs *FS) Setattr(ctx *fuseproto.Context, node uint64, in *fuseproto.SetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	v := in.Valid
	if p := fs.protected(ino); p != 0 {
		// Immutable: nothing changes. Append-only: only the times may
		// be set to now.
		const now = fuseproto.FattrAtimeNow | fuseproto.FattrMtimeNow | fuseproto.FattrAtime | fuseproto.FattrMtime
		const ignore = fuseproto.FattrFh | fuseproto.FattrLockOwner
		change := v &^ ignore
		if change != 0 && (p&flImmutable != 0 || change&^now != 0 ||
			(change&(fuseproto.FattrAtime|fuseproto.FattrMtime) != 0 && change&(fuseproto.FattrAtimeNow|fuseproto.FattrMtimeNow) == 0)) {
			return unix.EPERM
		}
	}
	const changes = fuseproto.FattrMode | fuseproto.FattrUID | fuseproto.FattrGID | fuseproto.FattrSize |
		fuseproto.FattrAtime | fuseproto.FattrMtime | fuseproto.FattrAtimeNow | fuseproto.FattrMtimeNow |
		fuseproto.FattrKillSUIDGID
	if v&changes != 0 {
		if e := fs.copyUp(ino, v&fuseproto.FattrSize == 0); e != 0 {
			return e
		}
	}
	var h *handle
	if v&fuseproto.FattrFh != 0 {
		if h = fs.files.get(in.Fh); h != nil {
			defer fs.files.put(h)
			if !h.upper || h.flags&unix.O_ACCMODE == unix.O_RDONLY {
				h = nil
			}
		}
	}
	ino.mu.Lock()
	defer ino.mu.Unlock()
	if ino.upper < 0 && v&changes != 0 {
		return unix.EIO
	}
	up := ino.upper
	if v&fuseproto.FattrMode != 0 {
		if ino.typ == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		if err := unix.Fchmodat(fs.procFd, itoa(up), in.Mode&0o7777, 0); err != nil {
			return errno(err)
		}
	}
	if v&(fuseproto.FattrUID|fuseproto.FattrGID) != 0 {
		uid, gid := -1, -1
		if v&fuseproto.FattrUID != 0 {
			uid = int(in.UID)
		}
		if v&fuseproto.FattrGID != 0 {
			gid = int(in.GID)
		}
		if err := unix.Fchownat(up, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	if v&fuseproto.FattrSize != 0 {
		if in.Size > 1<<63-1 {
			return unix.EFBIG
		}
		switch ino.typ {
		case unix.S_IFREG:
		case unix.S_IFDIR:
			return unix.EISDIR
		default:
			return unix.EINVAL
		}
		var err error
		if h != nil {
			err = unix.Ftruncate(h.fd, int64(in.Size))
		} else {
			var fd int
			if fd, err = fs.reopen(up, unix.O_WRONLY); err == nil {
				err = unix.Ftruncate(fd, int64(in.Size))
				unix.Close(fd)
			}
		}
		if err != nil {
			return errno(err)
		}
	}
	if v&(fuseproto.FattrAtime|fuseproto.FattrMtime|fuseproto.FattrAtimeNow|fuseproto.FattrMtimeNow) != 0 {
		ts := hostfs.SetattrTimes(in)
		if err := unix.UtimesNanoAt(up, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	if v&fuseproto.FattrKillSUIDGID != 0 && ino.typ == unix.S_IFREG {
		var st unix.Statx_t
		if err := statx(up, &st); err != nil {
			return errno(err)
		}
		if m := hostfs.KilledMode(uint32(st.Mode)); m != uint32(st.Mode) {
			if err := unix.Fchmodat(fs.procFd, itoa(up), m&0o7777, 0); err != nil {
				return errno(err)
			}
		}
	}
	var st unix.Statx_t
	if e := fs.statLocked(ino, -1, &st); e != 0 {
		return e
	}
	*out = fuseproto.AttrOut{AttrValid: fs.timeout}
	fillAttr(&out.Attr, ino, &st)
	return 0
}

// Readlink copies the symlink's target into buf.
func (fs *FS) Readlink(ctx *fuseproto.Context, node uint64, buf []byte) (int, fuseproto.Errno) {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFLNK {
		return 0, unix.EINVAL
	}
	ino.mu.Lock()
	fd := ino.top()
	n, err := unix.Readlinkat(fd, "", buf)
	ino.mu.Unlock()
	if err != nil {
		return 0, errno(err)
	}
	return n, 0
}

// Statfs reports the upper layer's filesystem, or the topmost lower's for a
// read-only union.
func (fs *FS) Statfs(ctx *fuseproto.Context, node uint64, out *fuseproto.StatfsOut) fuseproto.Errno {
	fd := fs.lowers[0].root
	if fs.upper != nil {
		fd = fs.upper.root
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return errno(err)
	}
	hostfs.StatfsOut(&st, out)
	return 0
}

// Access checks the caller's access to node against the union's view of
// its mode and owner (the layers below may be read-only or owned
// differently; a write to a lower object copies it up). Root passes every
// check but execute, which needs an execute bit on a non-directory.
func (fs *FS) Access(ctx *fuseproto.Context, node uint64, mask uint32) fuseproto.Errno {
	if mask&^uint32(unix.R_OK|unix.W_OK|unix.X_OK) != 0 {
		return unix.EINVAL
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if fs.readOnly() && mask&unix.W_OK != 0 {
		switch ino.typ {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
			return unix.EROFS
		}
	}
	var st unix.Statx_t
	if e := fs.statIn(ino, -1, &st); e != 0 {
		return e
	}
	return permits(hostfs.CredsOf(ctx), &st, mask)
}

// permits is the kernel's generic permission check on mode bits.
func permits(c hostfs.Creds, st *unix.Statx_t, mask uint32) fuseproto.Errno {
	mode := uint32(st.Mode)
	if c.UID == 0 {
		if mask&unix.X_OK != 0 && mode&unix.S_IFMT != unix.S_IFDIR && mode&0o111 == 0 {
			return unix.EACCES
		}
		return 0
	}
	var bitsOK uint32
	switch {
	case c.UID == st.Uid:
		bitsOK = (mode >> 6) & 7
	case c.GID == st.Gid || containsGID(c.Groups, st.Gid):
		bitsOK = (mode >> 3) & 7
	default:
		bitsOK = mode & 7
	}
	if mask&^bitsOK != 0 {
		return unix.EACCES
	}
	return 0
}

func containsGID(groups []uint32, gid uint32) bool {
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}

// statxResult is the part of the statx mask a fuse_statx carries.
const statxResult = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// Statx returns the attributes with the birth time where the host records
// it.
func (fs *FS) Statx(ctx *fuseproto.Context, node uint64, in *fuseproto.StatxIn, out *fuseproto.StatxOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	var st unix.Statx_t
	if e := fs.statIn(ino, -1, &st); e != 0 {
		return e
	}
	ino.mu.Lock()
	var bt unix.Statx_t
	btErr := hostfs.FdStatx(ino.top(), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &bt)
	ino.mu.Unlock()
	*out = fuseproto.StatxOut{AttrValid: fs.timeout}
	out.Stat = fuseproto.Statx{
		Mask:           st.Mask & statxResult,
		Blksize:        st.Blksize,
		Attributes:     st.Attributes,
		Nlink:          st.Nlink,
		UID:            st.Uid,
		GID:            st.Gid,
		Mode:           st.Mode,
		Ino:            ino.ino.Load(),
		Size:           st.Size,
		Blocks:         st.Blocks,
		AttributesMask: st.Attributes_mask,
		Atime:          sxTime(st.Atime),
		Ctime:          sxTime(st.Ctime),
		Mtime:          sxTime(st.Mtime),
		RdevMajor:      st.Rdev_major,
		RdevMinor:      st.Rdev_minor,
	}
	if btErr == nil && bt.Mask&unix.STATX_BTIME != 0 {
		out.Stat.Btime = sxTime(bt.Btime)
		out.Stat.Mask |= unix.STATX_BTIME
	}
	return 0
}

func sxTime(t unix.StatxTimestamp) fuseproto.SxTime {
	return fuseproto.SxTime{Sec: t.Sec, Nsec: t.Nsec}
}
