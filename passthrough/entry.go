package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Lookup finds name in directory parent and counts one lookup of it. "." is
// the directory itself; ".." is its parent, and ".." of the root is the
// root, so a lookup can never climb out of the share. A symlink is returned
// as itself, never followed.
func (fs *FS) Lookup(ctx *fuseproto.Context, parent uint64, name string, out *fuseproto.EntryOut) fuseproto.Errno {
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(p)
	in, e := fs.lookupIn(p, name, out)
	if e != 0 {
		return e
	}
	fs.inodes.put(in)
	return 0
}

// lookupIn is Lookup in a directory the caller holds. It returns the inode
// with a reference the caller gives back with put.
func (fs *FS) lookupIn(p *inode, name string, out *fuseproto.EntryOut) (*inode, fuseproto.Errno) {
	if p.typ != unix.S_IFDIR {
		return nil, unix.ENOTDIR
	}
	switch name {
	case ".":
		return fs.selfEntry(p, out)
	case "..":
		if p.id == fuseproto.RootID {
			return fs.selfEntry(p, out)
		}
		// The parent of a directory inside the share is inside it too,
		// unless a host process moved the directory out; the sandbox
		// is the second wall against that.
		fd, err := unix.Openat(p.fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, hostfs.Errno(err)
		}
		return fs.newEntry(p, "", fd, out)
	}
	if e := hostfs.ValidName(name); e != 0 {
		return nil, e
	}
	if in, e, ok := fs.lookupKnown(p, name, out); ok {
		return in, e
	}
	fd, err := fs.beneath.OpenBeneath(p.fd, name, unix.O_PATH)
	if err != nil {
		return nil, hostfs.Errno(err)
	}
	return fs.newEntry(p, name, fd, out)
}

// lookupKnown answers a repeated LOOKUP with one statx: when the inode last
// looked up as name in p still holds its descriptor, and a statx of name
// (not following a symlink) shows that very host inode, that inode is the
// answer. Holding the descriptor across the statx means the inode number
// cannot have been reused meanwhile, so an equal (dev, ino, mount) is the
// same object. ok is false when the caller must look name up the long way
// (no such inode, or name now names another object).
func (fs *FS) lookupKnown(p *inode, name string, out *fuseproto.EntryOut) (in *inode, e fuseproto.Errno, ok bool) {
	in = fs.inodes.named(p.id, name)
	if in == nil {
		return nil, 0, false
	}
	var st unix.Statx_t
	err := hostfs.StatxAt(p.fd, name, &st)
	if err == nil && keyOf(&st) == in.key {
		fs.knownLookups.Add(1)
		fs.inodes.addLookup(in)
		fs.entry(in, &st, out)
		return in, 0, true
	}
	fs.inodes.put(in)
	if err == unix.ENOENT {
		return nil, unix.ENOENT, true
	}
	return nil, 0, false
}

// selfEntry counts one more lookup of p, which the caller holds, and fills
// out for it.
func (fs *FS) selfEntry(p *inode, out *fuseproto.EntryOut) (*inode, fuseproto.Errno) {
	var st unix.Statx_t
	if err := hostfs.Statx(p.fd, &st); err != nil {
		return nil, hostfs.Errno(err)
	}
	fs.inodes.ref(p)
	fs.inodes.addLookup(p)
	fs.entry(p, &st, out)
	return p, 0
}

// Forget drops nlookup lookups of node. When no lookup and no request is
// left the inode's descriptor is closed. Unknown nodes and the root are
// ignored.
func (fs *FS) Forget(node uint64, nlookup uint64) {
	fs.inodes.forget(node, nlookup)
}

// createIn runs mk, which creates name in directory parent with the
// caller's credentials, labels it (ctx.SecCtx, see setSecCtx) and then
// looks the new inode up. mk gets the umask to apply (see FS.umask). It is
// the shared path of Mknod, Mkdir and Symlink.
func (fs *FS) createIn(ctx *fuseproto.Context, parent uint64, name string, umask uint32, out *fuseproto.EntryOut, mk func(dirfd int, umask uint32) error) fuseproto.Errno {
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
	umask = fs.umask(p, umask) & 0o777
	if err := fs.asCaller(ctx, func() error { return mk(p.fd, umask) }); err != nil {
		return hostfs.Errno(err)
	}
	fd, err := fs.beneath.OpenBeneath(p.fd, name, unix.O_PATH)
	if err != nil {
		return hostfs.Errno(err)
	}
	if err := setSecCtx(ctx, fd); err != nil {
		hostfs.UnlinkIfSame(p.fd, name, fd)
		unix.Close(fd)
		return hostfs.Errno(err)
	}
	in, e := fs.newEntry(p, name, fd, out)
	if e != 0 {
		return e
	}
	fs.inodes.put(in)
	return 0
}

// umask returns the mask to apply to a new inode's mode in directory p. The
// kernel sends the mode and the caller's umask separately (FUSE_DONT_MASK);
// we apply the umask ourselves unless POSIX ACLs are in effect and the
// directory has a default ACL, which then replaces the umask on the host.
func (fs *FS) umask(p *inode, umask uint32) uint32 {
	if umask == 0 || !fs.has(fuseproto.InitPosixACL) {
		return umask
	}
	if _, err := hostfs.Getxattr(p.fd, "system.posix_acl_default", nil); err == nil {
		return 0
	}
	return umask
}

// Mknod creates a regular file, device node, fifo or socket owned by the
// caller, with mode less the umask.
func (fs *FS) Mknod(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MknodIn, out *fuseproto.EntryOut) fuseproto.Errno {
	switch in.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return unix.EINVAL
	}
	return fs.createIn(ctx, parent, name, in.Umask, out, func(dirfd int, umask uint32) error {
		mode := in.Mode & (unix.S_IFMT | 0o7777) &^ umask
		return unix.Mknodat(dirfd, name, mode, int(in.Rdev))
	})
}

// Mkdir creates a directory owned by the caller, with mode less the umask.
func (fs *FS) Mkdir(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MkdirIn, out *fuseproto.EntryOut) fuseproto.Errno {
	return fs.createIn(ctx, parent, name, in.Umask, out, func(dirfd int, umask uint32) error {
		mode := in.Mode & 0o7777 &^ umask
		return unix.Mkdirat(dirfd, name, mode)
	})
}

// Symlink creates name in parent pointing at target, owned by the caller.
// The target is stored as given; it is never resolved by the daemon.
func (fs *FS) Symlink(ctx *fuseproto.Context, parent uint64, name, target string, out *fuseproto.EntryOut) fuseproto.Errno {
	if target == "" || len(target) > fuseproto.MaxSymlinkTargetLen {
		return unix.EINVAL
	}
	return fs.createIn(ctx, parent, name, 0, out, func(dirfd int, _ uint32) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

// Link makes newParent/newName a hard link to node (any type but a
// directory) and counts one more lookup of node.
func (fs *FS) Link(ctx *fuseproto.Context, node uint64, newParent uint64, newName string, out *fuseproto.EntryOut) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	if e := hostfs.ValidName(newName); e != 0 {
		return e
	}
	in, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(in)
	np, e := fs.inodes.get(newParent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(np)
	if in.typ == unix.S_IFDIR {
		return unix.EPERM
	}
	err := unix.Linkat(in.fd, "", np.fd, newName, unix.AT_EMPTY_PATH)
	if err == unix.ENOENT {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc/self/fd
		// path reaches the same inode (and a symlink as itself).
		err = unix.Linkat(fs.procFd, itoa(in.fd), np.fd, newName, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		return hostfs.Errno(err)
	}
	_, e = fs.selfEntry(in, out)
	if e != 0 {
		return e
	}
	fs.inodes.put(in) // the reference selfEntry took
	return 0
}

// removeIn is Unlink and Rmdir.
func (fs *FS) removeIn(parent uint64, name string, flags int) fuseproto.Errno {
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
	return hostfs.Errno(unix.Unlinkat(p.fd, name, flags))
}

// Unlink removes a non-directory. Its inode stays in the table while the
// kernel still holds lookups of it.
func (fs *FS) Unlink(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return fs.removeIn(parent, name, 0)
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return fs.removeIn(parent, name, unix.AT_REMOVEDIR)
}

// Rename moves parent/name to newParent/newName with renameat2; flags may be
// RENAME_NOREPLACE, RENAME_EXCHANGE or RENAME_WHITEOUT, as the host
// filesystem supports them. Node IDs follow the inodes, not the names.
func (fs *FS) Rename(ctx *fuseproto.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) fuseproto.Errno {
	if fs.opts.ReadOnly {
		return unix.EROFS
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE|unix.RENAME_WHITEOUT) != 0 {
		return unix.EINVAL
	}
	if e := hostfs.ValidName(name); e != 0 {
		return e
	}
	if e := hostfs.ValidName(newName); e != 0 {
		return e
	}
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(p)
	np, e := fs.inodes.get(newParent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(np)
	return hostfs.Errno(unix.Renameat2(p.fd, name, np.fd, newName, uint(flags)))
}
