package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// keyOf returns the host identity of a statx result.
func keyOf(st *unix.Statx_t) inodeKey {
	k := inodeKey{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}
	if st.Mask&unix.STATX_MNT_ID != 0 {
		k.mnt = st.Mnt_id
	}
	return k
}

// fillAttr converts a statx result into the kernel's fuse_attr. Ino is the
// host st_ino, the number directory listings show as d_ino. Rdev uses the
// kernel's new_encode_dev layout, which the guest decodes.
func fillAttr(a *fuseproto.Attr, st *unix.Statx_t, submount bool) {
	*a = fuseproto.Attr{
		Ino:       st.Ino,
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
	if submount {
		a.Flags |= fuseproto.AttrSubmount
	}
}

// attrOut fills a fuse_attr_out.
func (fs *FS) attrOut(in *inode, st *unix.Statx_t, out *fuseproto.AttrOut) {
	*out = fuseproto.AttrOut{AttrValid: fs.timeout}
	fillAttr(&out.Attr, st, in.submount)
}

// killSUIDGID clears the set-ID bits of a regular-file inode through its
// /proc/self/fd entry (chmod does not open the file).
func (fs *FS) killSUIDGID(in *inode) error {
	if in.typ != unix.S_IFREG {
		return nil
	}
	var st unix.Statx_t
	if err := hostfs.Statx(in.fd, &st); err != nil {
		return err
	}
	mode := uint32(st.Mode)
	if m := hostfs.KilledMode(mode); m != mode {
		return fs.chmod(in, m&07777)
	}
	return nil
}

// chmod changes the mode of a non-symlink inode without opening it.
func (fs *FS) chmod(in *inode, mode uint32) error {
	return unix.Fchmodat(fs.procFd, itoa(in.fd), mode, 0)
}
