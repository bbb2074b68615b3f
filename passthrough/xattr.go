package passthrough

import (
	"slices"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// The xattr operations reach the inode through its /proc/self/fd path with
// the following (non-l) system calls: following that magic link lands on the
// inode itself, a symlink or special file included, without opening it and
// without ever following a symlink's target.

// posixACLAccess is the xattr holding a POSIX access ACL.
const posixACLAccess = "system.posix_acl_access"

// Setxattr sets an extended attribute; in.Flags are XATTR_CREATE or
// XATTR_REPLACE. With SetxattrACLKillSGID, setting the access ACL clears
// the set-group-ID bit when the caller is neither in the file's group nor
// root, as the kernel does for a local caller without CAP_FSETID.
func (fs *FS) Setxattr(ctx *fuseproto.Context, node uint64, name string, value []byte, in *fuseproto.SetxattrIn) fuseproto.Errno {
	if !fs.opts.Xattr {
		return unix.ENOSYS
	}
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if err := hostfs.Setxattr(ino.fd, name, value, int(in.Flags)); err != nil {
		return hostfs.Errno(err)
	}
	if in.SetxattrFlags&fuseproto.SetxattrACLKillSGID != 0 && name == posixACLAccess && ino.typ != unix.S_IFLNK {
		c := hostfs.CredsOf(ctx)
		var st unix.Statx_t
		if err := hostfs.Statx(ino.fd, &st); err != nil {
			return hostfs.Errno(err)
		}
		mode := uint32(st.Mode)
		if mode&unix.S_ISGID != 0 && c.UID != 0 && st.Gid != c.GID && !slices.Contains(c.Groups, st.Gid) {
			if err := fs.chmod(ino, mode&0o7777&^unix.S_ISGID); err != nil {
				return hostfs.Errno(err)
			}
		}
	}
	return 0
}

// Getxattr copies the value of name into dst and returns its length; with an
// empty dst it returns only the length. ERANGE when dst is too small.
func (fs *FS) Getxattr(ctx *fuseproto.Context, node uint64, name string, dst []byte) (int, fuseproto.Errno) {
	if !fs.opts.Xattr {
		return 0, unix.ENOSYS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	if len(dst) == 0 {
		dst = nil
	}
	n, err := hostfs.Getxattr(ino.fd, name, dst)
	if err != nil {
		return 0, hostfs.Errno(err)
	}
	return n, 0
}

// Listxattr copies the NUL-separated attribute names into dst, like
// Getxattr.
func (fs *FS) Listxattr(ctx *fuseproto.Context, node uint64, dst []byte) (int, fuseproto.Errno) {
	if !fs.opts.Xattr {
		return 0, unix.ENOSYS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	if len(dst) == 0 {
		dst = nil
	}
	n, err := hostfs.Listxattr(ino.fd, dst)
	if err != nil {
		return 0, hostfs.Errno(err)
	}
	return n, 0
}

// Removexattr removes an extended attribute.
func (fs *FS) Removexattr(ctx *fuseproto.Context, node uint64, name string) fuseproto.Errno {
	if !fs.opts.Xattr {
		return unix.ENOSYS
	}
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	return hostfs.Errno(hostfs.Removexattr(ino.fd, name))
}
