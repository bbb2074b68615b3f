package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Removal, as kernel overlayfs does it: an object only in the upper is
// removed; one whose name a lower still holds is replaced by a whiteout in
// one step (a whiteout made in the work directory is exchanged with it, and
// what comes back is removed there, with any whiteouts a directory held);
// a lower-only name gets a whiteout. A directory must be empty in the
// merged view (whiteouts do not count).

// Unlink removes a non-directory from the merged view.
func (fs *FS) Unlink(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return fs.remove(parent, name, false)
}

// Rmdir removes a directory that is empty in the merged view.
func (fs *FS) Rmdir(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return fs.remove(parent, name, true)
}

func (fs *FS) remove(parent uint64, name string, dir bool) fuseproto.Errno {
	if fs.readOnly() {
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
	if fs.protected(p) != 0 {
		return unix.EPERM // nothing leaves an append-only or immutable directory
	}
	if e := fs.copyUp(p, true); e != 0 {
		return e
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f, e := fs.lookupWith(p.dirStateLocked(), name)
	if e != 0 {
		return e
	}
	switch {
	case dir && f.typ != unix.S_IFDIR:
		f.close()
		return unix.ENOTDIR
	case !dir && f.typ == unix.S_IFDIR:
		f.close()
		return unix.EISDIR
	}
	child := fs.adopt(p, name, &f)
	fs.inodes.dropLookup(child)
	defer fs.inodes.put(child)
	if dir {
		ents, e := fs.mergedList(child, false)
		if e != 0 {
			return e
		}
		if len(ents) > 0 {
			return unix.ENOTEMPTY
		}
	}
	child.mu.Lock()
	defer child.mu.Unlock()
	if fs.protFlags(child) != 0 {
		return unix.EPERM
	}
	return fs.removeLocked(p, child, name)
}

// removeLocked removes child, p's entry name, from the merged view. Caller
// holds p.mu and child.mu and has checked the type and emptiness.
func (fs *FS) removeLocked(p, child *inode, name string) fuseproto.Errno {
	if child.typ != unix.S_IFDIR && child.upper < 0 && fs.indexFd >= 0 && len(child.lower) > 0 {
		// A hard-linked lower file is copied up to the index first, so
		// that the union's link count has somewhere to live.
		var st unix.Statx_t
		if statx(child.lower[0].fd, &st) == nil && st.Nlink > 1 {
			if e := fs.copyUpLocked(child, p, true); e != 0 {
				return e
			}
		}
	}
	var n uint32
	if child.indexed {
		n = fs.unionNlink(child)
	}
	atName := child.upper >= 0 && (!child.indexed || child.linkedUp)
	lowerHas := fs.lowerHolds(p.dirStateLocked(), name)
	var err error
	switch {
	case atName && lowerHas:
		err = fs.whiteoutOver(p.upper, name)
	case atName && child.typ == unix.S_IFDIR:
		err = unix.Unlinkat(p.upper, name, unix.AT_REMOVEDIR)
		if err == unix.ENOTEMPTY || err == unix.EEXIST {
			// Only whiteouts are left in it: take it away whole.
			tmp := fs.tmpName()
			if err = unix.Renameat2(p.upper, name, fs.workFd, tmp, unix.RENAME_NOREPLACE); err == nil {
				fs.removeAllAt(fs.workFd, tmp)
			}
		}
	case atName:
		err = unix.Unlinkat(p.upper, name, 0)
	default:
		err = unix.Mknodat(p.upper, name, unix.S_IFCHR, 0)
	}
	if err != nil {
		return errno(err)
	}
	if child.indexed && n > 0 {
		fs.setUnionNlink(child, n-1)
	}
	child.deleted = true
	child.linkedUp = false
	return 0
}

// whiteoutOver replaces name in upper directory dirfd by a whiteout in one
// step and removes what was there.
func (fs *FS) whiteoutOver(dirfd int, name string) error {
	tmp := fs.tmpName()
	if err := unix.Mknodat(fs.workFd, tmp, unix.S_IFCHR, 0); err != nil {
		return err
	}
	if err := unix.Renameat2(fs.workFd, tmp, dirfd, name, unix.RENAME_EXCHANGE); err != nil {
		unix.Unlinkat(fs.workFd, tmp, 0)
		return err
	}
	return fs.removeAllAt(fs.workFd, tmp)
}

// lowerHolds reports whether a lower layer of the directory with state d
// shows something (not a whiteout) under name: removing or moving the
// upper entry then needs a whiteout.
func (fs *FS) lowerHolds(d dirState, name string) bool {
	if len(d.lower) == 0 {
		return false
	}
	ld := d
	ld.upper = -1
	f, e := fs.lookupWith(ld, name)
	if e != 0 {
		return false
	}
	f.close()
	return true
}
