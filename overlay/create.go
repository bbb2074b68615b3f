package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// New objects are made in the upper directory of their (copied-up) parent
// with the caller's credentials, so that ownership, set-group-ID
// inheritance and default ACLs come from the host as for any file. Over a
// whiteout, where the name is taken, the object is made in the work
// directory (as the daemon, then given the caller's ownership) and renamed
// over the whiteout (exchanged with it, for a directory) in one step. A new
// directory is opaque when it replaces a whiteout or its parent is merged,
// so that nothing below shows through it, as kernel overlayfs marks it.

// dirStateLocked is dirState for a caller holding in.mu.
func (in *inode) dirStateLocked() dirState {
	return dirState{upper: in.upper, lower: in.lower, marks: in.marks, lowerPath: in.lowerPath}
}

// makeFunc creates name in directory dirfd with mode (umask applied) and
// returns an open descriptor for a regular file made by Create (else -1).
type makeFunc func(dirfd int, name string, mode uint32) (int, error)

// createIn makes a new object name in directory parent and returns its
// inode with one lookup counted, and the descriptor mk returned.
func (fs *FS) createIn(ctx *fuseproto.Context, parent uint64, name string, typ, mode, umask uint32, mk makeFunc) (*inode, int, fuseproto.Errno) {
	if fs.readOnly() {
		return nil, -1, unix.EROFS
	}
	if e := hostfs.ValidName(name); e != 0 {
		return nil, -1, e
	}
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return nil, -1, e
	}
	defer fs.inodes.put(p)
	if p.typ != unix.S_IFDIR {
		return nil, -1, unix.ENOTDIR
	}
	if fs.protected(p)&flImmutable != 0 {
		return nil, -1, unix.EPERM
	}
	if e := fs.copyUp(p, true); e != 0 {
		return nil, -1, e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return nil, -1, unix.ENOENT
	}
	f, e := fs.lookupWith(p.dirStateLocked(), name)
	if e == 0 {
		f.close()
		return nil, -1, unix.EEXIST
	}
	if e != unix.ENOENT {
		return nil, -1, e
	}
	var st unix.Stat_t
	overWhiteout := unix.Fstatat(p.upper, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	// Kernel overlayfs marks a directory made in a merged parent opaque
	// only when redirects are on.
	opaque := typ == unix.S_IFDIR && (overWhiteout || (len(p.lower) > 0 && fs.cfg.RedirectDir))
	mode = mode &^ (fs.umask(p, umask) & 0o777)
	var fd int
	var err error
	if !overWhiteout {
		err = fs.creds.AsCaller(hostfs.CredsOf(ctx), func() error {
			var err error
			fd, err = mk(p.upper, name, mode)
			return err
		})
		if err != nil {
			return nil, -1, errno(err)
		}
		if err := fs.labelNew(ctx, p.upper, name); err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			return nil, -1, errno(err)
		}
		if opaque {
			// An optimisation, as in the kernel: allowed to fail.
			if dfd, err := fs.res.OpenBeneath(p.upper, name, unix.O_PATH|unix.O_DIRECTORY); err == nil {
				if setx(dfd, fs.x.opaque, "y") != nil {
					opaque = false
				}
				unix.Close(dfd)
			}
		}
	} else {
		fd, err = fs.createOverWhiteout(ctx, p, name, typ, mode, opaque, mk)
		if err != nil {
			return nil, -1, errno(err)
		}
	}
	pfd, err := fs.res.OpenBeneath(p.upper, name, unix.O_PATH)
	if err == nil {
		var nf found
		nf.upper, nf.atName = pfd, true
		if err = statx(pfd, &nf.ust); err == nil {
			nf.typ = uint32(nf.ust.Mode) & unix.S_IFMT
			nf.opaque = opaque
			nf.marks.opaque = opaque
			return fs.adopt(p, name, &nf), fd, 0
		}
		unix.Close(pfd)
	}
	if fd >= 0 {
		unix.Close(fd)
	}
	return nil, -1, errno(err)
}

// createOverWhiteout makes name in the work directory and renames it over
// the whiteout in p's upper. Caller holds p.mu.
func (fs *FS) createOverWhiteout(ctx *fuseproto.Context, p *inode, name string, typ, mode uint32, opaque bool, mk makeFunc) (int, error) {
	c := hostfs.CredsOf(ctx)
	uid, gid := c.UID, c.GID
	var pst unix.Statx_t
	if err := statx(p.upper, &pst); err != nil {
		return -1, err
	}
	if uint32(pst.Mode)&unix.S_ISGID != 0 {
		gid = pst.Gid
		if typ == unix.S_IFDIR {
			mode |= unix.S_ISGID
		}
	}
	tmp := fs.tmpName()
	fd, err := mk(fs.workFd, tmp, mode)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		if fd >= 0 {
			unix.Close(fd)
		}
		fs.removeAllAt(fs.workFd, tmp)
		return -1, err
	}
	tfd, err := fs.res.OpenBeneath(fs.workFd, tmp, unix.O_PATH)
	if err != nil {
		return fail(err)
	}
	err = unix.Fchownat(tfd, "", int(uid), int(gid), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && typ != unix.S_IFLNK {
		// chown dropped set-ID bits the mode asked for.
		err = unix.Fchmodat(fs.procFd, itoa(tfd), mode&0o7777, 0)
	}
	if err == nil && opaque {
		err = setx(tfd, fs.x.opaque, "y")
	}
	if err == nil {
		err = fs.setSecCtx(ctx, tfd)
	}
	unix.Close(tfd)
	if err != nil {
		return fail(err)
	}
	if typ == unix.S_IFDIR {
		err = unix.Renameat2(fs.workFd, tmp, p.upper, name, unix.RENAME_EXCHANGE)
		if err == nil {
			unix.Unlinkat(fs.workFd, tmp, 0) // the whiteout
		}
	} else {
		err = unix.Renameat2(fs.workFd, tmp, p.upper, name, 0)
	}
	if err != nil {
		return fail(err)
	}
	return fd, nil
}

// umask returns the mask for a new object in p: the caller's, unless POSIX
// ACLs are in effect and p's upper has a default ACL, which then applies
// instead.
func (fs *FS) umask(p *inode, umask uint32) uint32 {
	if umask == 0 || !fs.has(fuseproto.InitPosixACL) {
		return umask
	}
	if _, err := hostfs.Getxattr(p.upper, "system.posix_acl_default", nil); err == nil {
		return 0
	}
	return umask
}

// newEntry fills an entry reply for a created inode and gives back the
// reference createIn returned with it.
func (fs *FS) newEntry(in *inode, out *fuseproto.EntryOut) fuseproto.Errno {
	defer fs.inodes.put(in)
	if e := fs.entryOut(in, out); e != 0 {
		fs.inodes.forget(in.id, 1)
		return e
	}
	return 0
}

// Mknod creates a regular file, device node, fifo or socket. A character
// device 0/0 is a whiteout and is refused with EPERM, as kernel overlayfs
// refuses it, so that no guest can forge one; a read-only union answers
// EROFS first, as a read-only mount does.
func (fs *FS) Mknod(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MknodIn, out *fuseproto.EntryOut) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS
	}
	typ := in.Mode & unix.S_IFMT
	switch typ {
	case unix.S_IFREG, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	case unix.S_IFCHR:
		if in.Rdev == 0 {
			return unix.EPERM
		}
	default:
		return unix.EINVAL
	}
	ino, _, e := fs.createIn(ctx, parent, name, typ, in.Mode&0o7777, in.Umask, func(dirfd int, name string, mode uint32) (int, error) {
		return -1, unix.Mknodat(dirfd, name, typ|mode, int(in.Rdev))
	})
	if e != 0 {
		return e
	}
	return fs.newEntry(ino, out)
}

// Mkdir creates a directory.
func (fs *FS) Mkdir(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MkdirIn, out *fuseproto.EntryOut) fuseproto.Errno {
	ino, _, e := fs.createIn(ctx, parent, name, unix.S_IFDIR, in.Mode&0o7777, in.Umask, func(dirfd int, name string, mode uint32) (int, error) {
		return -1, unix.Mkdirat(dirfd, name, mode)
	})
	if e != 0 {
		return e
	}
	return fs.newEntry(ino, out)
}

// Symlink creates a symlink; creating one copies nothing up.
func (fs *FS) Symlink(ctx *fuseproto.Context, parent uint64, name, target string, out *fuseproto.EntryOut) fuseproto.Errno {
	if target == "" || len(target) > fuseproto.MaxSymlinkTargetLen {
		return unix.EINVAL
	}
	ino, _, e := fs.createIn(ctx, parent, name, unix.S_IFLNK, 0o777, 0, func(dirfd int, name string, _ uint32) (int, error) {
		return -1, unix.Symlinkat(target, dirfd, name)
	})
	if e != 0 {
		return e
	}
	return fs.newEntry(ino, out)
}

// Create creates and opens a regular file; an existing name is opened as
// Open would (copying a lower file up for writing), unless O_EXCL.
func (fs *FS) Create(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS
	}
	flags := fs.hostOpenFlags(in.Flags)
	ino, fd, e := fs.createIn(ctx, parent, name, unix.S_IFREG, in.Mode&0o7777, in.Umask, func(dirfd int, name string, mode uint32) (int, error) {
		f := flags &^ unix.O_TRUNC
		if f&unix.O_ACCMODE == unix.O_RDONLY {
			f = f&^unix.O_ACCMODE | unix.O_RDWR // made in the work dir and renamed: we may need to write
		}
		return unix.Openat(dirfd, name, f|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	})
	if e == unix.EEXIST && in.Flags&unix.O_EXCL == 0 {
		return fs.createExisting(ctx, parent, name, in, entry, open)
	}
	if e != 0 {
		return e
	}
	if e := fs.newEntry(ino, entry); e != 0 {
		unix.Close(fd)
		return e
	}
	*open = fuseproto.OpenOut{Fh: fs.files.add(&handle{fd: fd, ino: ino, flags: flags, upper: true}), OpenFlags: fs.openFlags}
	return 0
}

// createExisting is Create of a name that exists: a lookup and an Open.
func (fs *FS) createExisting(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	if e := fs.Lookup(ctx, parent, name, entry); e != 0 {
		return e
	}
	oin := fuseproto.OpenIn{Flags: in.Flags, OpenFlags: in.OpenFlags}
	if e := fs.Open(ctx, entry.NodeID, &oin, open); e != 0 {
		fs.inodes.forget(entry.NodeID, 1)
		return e
	}
	return 0
}

// Tmpfile creates and opens an unnamed file in the upper of directory
// parent, which Link can later name.
func (fs *FS) Tmpfile(ctx *fuseproto.Context, parent uint64, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	if fs.readOnly() {
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
	if fs.protected(p)&flImmutable != 0 {
		return unix.EPERM
	}
	if e := fs.copyUp(p, true); e != 0 {
		return e
	}
	flags := fs.hostOpenFlags(in.Flags) &^ (unix.O_TRUNC | unix.O_APPEND)
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		flags |= unix.O_RDWR
	}
	if in.Flags&unix.O_EXCL != 0 {
		flags |= unix.O_EXCL
	}
	p.mu.Lock()
	mode := in.Mode & 0o7777 &^ (fs.umask(p, in.Umask) & 0o777)
	up := p.upper
	var fd int
	err := fs.creds.AsCaller(hostfs.CredsOf(ctx), func() error {
		var err error
		fd, err = unix.Openat(up, ".", flags|unix.O_TMPFILE|unix.O_CLOEXEC, mode)
		return err
	})
	p.mu.Unlock()
	if err != nil {
		return errno(err)
	}
	pfd, err := fs.reopen(fd, unix.O_PATH)
	if err != nil {
		unix.Close(fd)
		return errno(err)
	}
	if err := fs.setSecCtx(ctx, pfd); err != nil {
		unix.Close(pfd)
		unix.Close(fd)
		return errno(err)
	}
	nf := found{upper: pfd, atName: true}
	if err := statx(pfd, &nf.ust); err != nil {
		unix.Close(pfd)
		unix.Close(fd)
		return errno(err)
	}
	nf.typ = unix.S_IFREG
	ino := fs.adopt(p, "", &nf)
	ino.mu.Lock()
	ino.deleted = true
	ino.mu.Unlock()
	if e := fs.newEntry(ino, entry); e != 0 {
		unix.Close(fd)
		return e
	}
	*open = fuseproto.OpenOut{Fh: fs.files.add(&handle{fd: fd, ino: ino, flags: flags &^ unix.O_EXCL, upper: true}), OpenFlags: fs.openFlags}
	return 0
}

// Link makes newParent/newName a hard link to node, copying node up first
// (a link is a change of the object), and counts one more lookup of node.
func (fs *FS) Link(ctx *fuseproto.Context, node uint64, newParent uint64, newName string, out *fuseproto.EntryOut) fuseproto.Errno {
	if fs.readOnly() {
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
	q, e := fs.inodes.get(newParent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(q)
	if in.typ == unix.S_IFDIR {
		return unix.EPERM
	}
	if q.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	if fs.protected(in) != 0 || fs.protected(q)&flImmutable != 0 {
		return unix.EPERM
	}
	// A name that exists is refused before anything is copied up.
	if f, e := fs.lookupLayers(q, newName); e == 0 {
		f.close()
		return unix.EEXIST
	} else if e != unix.ENOENT {
		return e
	}
	if e := fs.copyUp(in, true); e != 0 {
		return e
	}
	if e := fs.copyUp(q, true); e != 0 {
		return e
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return unix.ENOENT
	}
	f, e := fs.lookupWith(q.dirStateLocked(), newName)
	if e == 0 {
		f.close()
		return unix.EEXIST
	}
	if e != unix.ENOENT {
		return e
	}
	in.mu.Lock()
	if in.metacopy {
		// Another name for a metacopy file: lookups through it find
		// the data by the absolute redirect.
		if e := fs.setRedirect(in, in.name, false); e != 0 {
			in.mu.Unlock()
			return e
		}
	}
	var n uint32
	if in.indexed {
		n = fs.unionNlink(in)
	}
	err := fs.linkAt(in.upper, q.upper, newName)
	if err == nil && in.indexed {
		fs.setUnionNlink(in, n+1)
	}
	if err == nil {
		fs.markImpure(q, in)
	}
	in.mu.Unlock()
	if err != nil {
		return errno(err)
	}
	fs.realias(in, q, newName, true)
	fs.inodes.addLookup(in)
	if e := fs.entryOut(in, out); e != 0 {
		fs.inodes.forget(in.id, 1)
		return e
	}
	return 0
}
