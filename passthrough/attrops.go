package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// anyHandle returns the open file or directory handle fh with a reference
// and the table it came from, or nil.
func (fs *FS) anyHandle(fh uint64) (*handle, *handleTable) {
	if h := fs.files.get(fh); h != nil {
		return h, &fs.files
	}
	if h := fs.dirs.get(fh); h != nil {
		return h, &fs.dirs
	}
	return nil, nil
}

// Getattr returns the attributes of node, or of the open file in.Fh when
// in.GetattrFlags has GetattrFh.
//
// An open handle of node itself (the guest's fstat) is used without
// pinning the inode, which for an inode referenced by its file handle
// saves opening and closing a descriptor.
func (fs *FS) Getattr(ctx *fuseproto.Context, node uint64, in *fuseproto.GetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	var h *handle
	if in != nil && in.GetattrFlags&fuseproto.GetattrFh != 0 {
		var t *handleTable
		if h, t = fs.anyHandle(in.Fh); h != nil {
			defer t.put(h)
			if h.ino.id == node && !h.ino.lost {
				return fs.statOut(h.ino, h.fd, out)
			}
		}
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	fd := ino.fd
	if h != nil {
		fd = h.fd
	}
	return fs.statOut(ino, fd, out)
}

// statOut fills out with the attributes of inode in, open as fd.
func (fs *FS) statOut(in *inode, fd int, out *fuseproto.AttrOut) fuseproto.Errno {
	var st unix.Statx_t
	if err := hostfs.Statx(fd, &st); err != nil {
		return hostfs.Errno(err)
	}
	fs.attrOut(in, &st, out)
	return 0
}

// Setattr changes mode, owner, size and times in that order, as in.Valid
// names them. Size changes use the open handle when FattrFh names one and
// otherwise open the (regular) file for writing. ctime cannot be set and is
// ignored. FattrKillSUIDGID clears the set-user-ID bit and, for
// group-executable files, the set-group-ID bit, as the kernel would for an
// unprivileged caller.
func (fs *FS) Setattr(ctx *fuseproto.Context, node uint64, in *fuseproto.SetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	v := in.Valid
	var h *handle
	if v&fuseproto.FattrFh != 0 {
		if h = fs.files.get(in.Fh); h != nil {
			defer fs.files.put(h)
		}
	}

	if v&fuseproto.FattrMode != 0 {
		if ino.typ == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		mode := in.Mode & 0o7777
		var err error
		if h != nil {
			err = unix.Fchmod(h.fd, mode)
		} else {
			err = fs.chmod(ino, mode)
		}
		if err != nil {
			return hostfs.Errno(err)
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
		if err := unix.Fchownat(ino.fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return hostfs.Errno(err)
		}
	}

	if v&fuseproto.FattrSize != 0 {
		if in.Size > 1<<63-1 {
			return unix.EFBIG
		}
		if h != nil {
			if err := unix.Ftruncate(h.fd, int64(in.Size)); err != nil {
				return hostfs.Errno(err)
			}
		} else {
			switch ino.typ {
			case unix.S_IFREG:
			case unix.S_IFDIR:
				return unix.EISDIR
			default:
				return unix.EINVAL
			}
			fd, err := fs.reopen(ino, unix.O_WRONLY)
			if err != nil {
				return hostfs.Errno(err)
			}
			err = unix.Ftruncate(fd, int64(in.Size))
			unix.Close(fd)
			if err != nil {
				return hostfs.Errno(err)
			}
		}
	}

	if v&(fuseproto.FattrAtime|fuseproto.FattrMtime|fuseproto.FattrAtimeNow|fuseproto.FattrMtimeNow) != 0 {
		ts := hostfs.SetattrTimes(in)
		if err := unix.UtimesNanoAt(ino.fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return hostfs.Errno(err)
		}
	}

	if v&fuseproto.FattrKillSUIDGID != 0 {
		if err := fs.killSUIDGID(ino); err != nil {
			return hostfs.Errno(err)
		}
	}

	fd := ino.fd
	if h != nil {
		fd = h.fd
	}
	var st unix.Statx_t
	if err := hostfs.Statx(fd, &st); err != nil {
		return hostfs.Errno(err)
	}
	fs.attrOut(ino, &st, out)
	return 0
}

// Readlink copies the symlink's target into buf and returns its length.
func (fs *FS) Readlink(ctx *fuseproto.Context, node uint64, buf []byte) (int, fuseproto.Errno) {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFLNK {
		return 0, unix.EINVAL
	}
	n, err := unix.Readlinkat(ino.fd, "", buf)
	if err != nil {
		return 0, hostfs.Errno(err)
	}
	return n, 0
}

// Statfs reports the host filesystem holding node.
func (fs *FS) Statfs(ctx *fuseproto.Context, node uint64, out *fuseproto.StatfsOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	var st unix.Statfs_t
	if err := unix.Fstatfs(ino.fd, &st); err != nil {
		return hostfs.Errno(err)
	}
	hostfs.StatfsOut(&st, out)
	return 0
}

// Access checks the caller's access to node with faccessat2 under the
// caller's credentials. Write access answers EROFS on a read-only share,
// except for device nodes, fifos and sockets, as on a read-only mount.
func (fs *FS) Access(ctx *fuseproto.Context, node uint64, mask uint32) fuseproto.Errno {
	if mask&^uint32(unix.R_OK|unix.W_OK|unix.X_OK) != 0 {
		return unix.EINVAL
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if fs.opts.ReadOnly && mask&unix.W_OK != 0 {
		switch ino.typ {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
			return unix.EROFS
		}
	}
	return hostfs.Errno(fs.asCaller(ctx, func() error {
		return unix.Faccessat2(ino.fd, "", mask, unix.AT_EMPTY_PATH|unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// statxResult is the part of the statx mask a fuse_statx carries.
const statxResult = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// Statx returns extended attributes, birth time included where the host
// filesystem records it, of node or of the open file in.Fh.
func (fs *FS) Statx(ctx *fuseproto.Context, node uint64, in *fuseproto.StatxIn, out *fuseproto.StatxOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	fd := ino.fd
	if in.GetattrFlags&fuseproto.GetattrFh != 0 {
		if h, t := fs.anyHandle(in.Fh); h != nil {
			defer t.put(h)
			fd = h.fd
		}
	}
	flags := unix.AT_EMPTY_PATH | unix.AT_SYMLINK_NOFOLLOW | int(in.SxFlags&atStatxSyncType)
	mask := int(in.SxMask&statxResult) | unix.STATX_BASIC_STATS | unix.STATX_BTIME
	var st unix.Statx_t
	for {
		err := hostfs.FdStatx(fd, flags, mask, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return hostfs.Errno(err)
		}
		break
	}
	*out = fuseproto.StatxOut{AttrValid: fs.timeout}
	if ino.submount {
		out.Flags = fuseproto.AttrSubmount
	}
	out.Stat = fuseproto.Statx{
		Mask:           st.Mask & statxResult,
		Blksize:        st.Blksize,
		Attributes:     st.Attributes,
		Nlink:          st.Nlink,
		UID:            st.Uid,
		GID:            st.Gid,
		Mode:           st.Mode,
		Ino:            st.Ino,
		Size:           st.Size,
		Blocks:         st.Blocks,
		AttributesMask: st.Attributes_mask,
		Atime:          sxTime(st.Atime),
		Btime:          sxTime(st.Btime),
		Ctime:          sxTime(st.Ctime),
		Mtime:          sxTime(st.Mtime),
		RdevMajor:      st.Rdev_major,
		RdevMinor:      st.Rdev_minor,
		DevMajor:       st.Dev_major,
		DevMinor:       st.Dev_minor,
	}
	return 0
}

func sxTime(t unix.StatxTimestamp) fuseproto.SxTime {
	return fuseproto.SxTime{Sec: t.Sec, Nsec: t.Nsec}
}

// atStatxSyncType is AT_STATX_SYNC_TYPE, the statx flags a caller may pass
// through (AT_STATX_FORCE_SYNC, AT_STATX_DONT_SYNC).
const atStatxSyncType = 0x6000
