package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// redirectMax bounds an absolute redirect, as kernel overlayfs's
// redirect_max default: a longer one answers EXDEV so that the caller
// falls back to copying.
const redirectMax = 256

// Rename moves parent/name to newParent/newName in the merged view. Files
// are copied up and moved; a directory that lives in a lower layer or is
// merged is copied up alone and moved with a redirect xattr naming where
// its lower part is (relative within one parent, else absolute), as kernel
// overlayfs does with redirect_dir=on, so no rename answers EXDEV (unless
// redirect_dir is off or the redirect would be too long). A pure upper
// directory moved into a merged parent is made opaque. The source name gets
// a whiteout when a lower layer still holds it. RENAME_NOREPLACE and
// RENAME_EXCHANGE work as on any filesystem; RENAME_WHITEOUT answers
// EINVAL, as on kernel overlayfs (and, like every flag, EROFS on a
// read-only union).
func (fs *FS) Rename(ctx *fuseproto.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) fuseproto.Errno {
	if fs.readOnly() {
		return unix.EROFS // RENAME_WHITEOUT too, as on a read-only mount
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 ||
		flags == unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE {
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
	q, e := fs.inodes.get(newParent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(q)
	if p.typ != unix.S_IFDIR || q.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	if fs.protected(p) != 0 || fs.protected(q)&flImmutable != 0 {
		return unix.EPERM
	}
	if e := fs.copyUp(p, true); e != 0 {
		return e
	}
	if e := fs.copyUp(q, true); e != 0 {
		return e
	}

	fs.renameMu.Lock()
	defer fs.renameMu.Unlock()
	// The entries are looked up before the parents are locked: the
	// source may be the destination's parent or one of its ancestors,
	// whose mutex must not be taken (by adopt) while a descendant's is
	// held. Renames are serialized, and the guest kernel holds both
	// directories while it renames, so the names do not change meanwhile.
	sf, e := fs.lookupLayers(p, name)
	if e != 0 {
		return e
	}
	src := fs.adopt(p, name, &sf)
	fs.inodes.dropLookup(src)
	defer fs.inodes.put(src)
	var dst *inode
	df, e := fs.lookupLayers(q, newName)
	switch {
	case e == unix.ENOENT:
	case e != 0:
		return e
	default:
		dst = fs.adopt(q, newName, &df)
		fs.inodes.dropLookup(dst)
		defer fs.inodes.put(dst)
	}
	if src.typ == unix.S_IFDIR && (q == src || fs.isAncestor(src, q)) {
		return unix.EINVAL
	}
	if dst != nil && dst.typ == unix.S_IFDIR && (p == dst || fs.isAncestor(dst, p)) {
		// The target is an ancestor of the source: not empty, or for
		// an exchange a directory into itself, as Linux answers.
		if flags&unix.RENAME_EXCHANGE != 0 {
			return unix.EINVAL
		}
		return unix.ENOTEMPTY
	}

	first, second := p, q
	if p != q && fs.isAncestor(q, p) {
		first, second = q, p
	}
	first.mu.Lock()
	defer first.mu.Unlock()
	if second != first {
		second.mu.Lock()
		defer second.mu.Unlock()
	}
	if p.deleted || q.deleted {
		return unix.ENOENT
	}
	if src == dst {
		return 0 // two names of one inode: nothing to do
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	switch {
	case dst == nil && exchange:
		return unix.ENOENT
	case dst != nil && flags&unix.RENAME_NOREPLACE != 0:
		return unix.EEXIST
	}
	if dst != nil && !exchange {
		switch {
		case src.typ == unix.S_IFDIR && dst.typ != unix.S_IFDIR:
			return unix.ENOTDIR
		case src.typ != unix.S_IFDIR && dst.typ == unix.S_IFDIR:
			return unix.EISDIR
		case dst.typ == unix.S_IFDIR:
			ents, e := fs.mergedList(dst, false)
			if e != 0 {
				return e
			}
			if len(ents) > 0 {
				return unix.ENOTEMPTY
			}
		}
	}
	if !fs.cfg.RedirectDir && (fs.needsRedirect(src) || (exchange && fs.needsRedirect(dst))) {
		return unix.EXDEV
	}

	src.mu.Lock()
	defer src.mu.Unlock()
	if dst != nil {
		dst.mu.Lock()
		defer dst.mu.Unlock()
	}
	if fs.protFlags(src) != 0 || (dst != nil && (fs.protFlags(dst) != 0 || fs.protFlags(q) != 0)) {
		return unix.EPERM
	}
	// A metacopy file moves as it is, with a redirect to its data.
	if e := fs.copyUpLocked(src, p, true); e != 0 {
		return e
	}
	if exchange {
		if e := fs.copyUpLocked(dst, q, true); e != 0 {
			return e
		}
	}
	samedir := p == q
	if e := fs.prepareMove(src, q, name, samedir); e != 0 {
		return e
	}
	if exchange {
		if e := fs.prepareMove(dst, p, newName, samedir); e != 0 {
			return e
		}
	}

	var dstN uint32
	dstAtName := false
	if dst != nil {
		dstAtName = dst.upper >= 0 && (!dst.indexed || dst.linkedUp)
		if dst.indexed {
			dstN = fs.unionNlink(dst)
		}
	}
	srcWhiteout := !exchange && fs.lowerHolds(p.dirStateLocked(), name)
	var err error
	switch {
	case exchange:
		err = unix.Renameat2(p.upper, name, q.upper, newName, unix.RENAME_EXCHANGE)
	case dstAtName:
		if dst.typ == unix.S_IFDIR {
			// Empty in the merged view: only whiteouts are left.
			if err = fs.emptyDir(dst.upper); err != nil {
				break
			}
		}
		err = fs.moveOver(p.upper, name, q.upper, newName, srcWhiteout, src.typ == unix.S_IFDIR)
	default:
		err = fs.moveOver(p.upper, name, q.upper, newName, srcWhiteout, src.typ == unix.S_IFDIR)
	}
	if err != nil {
		return errno(err)
	}

	fs.markImpure(q, src)
	if exchange {
		fs.markImpure(p, dst)
	}
	fs.moveAlias(src, q, newName)
	if dst != nil {
		if exchange {
			fs.moveAlias(dst, p, name)
		} else {
			dst.deleted, dst.linkedUp = true, false
			if dst.indexed && dstN > 0 {
				fs.setUnionNlink(dst, dstN-1)
			}
		}
	}
	return 0
}

// moveOver renames from/name to to/newName, replacing a non-directory or
// an emptied directory there, or a whiteout; with whiteout a whiteout is
// left at the old name in the same step.
func (fs *FS) moveOver(from int, name string, to int, newName string, whiteout, isDir bool) error {
	var flags uint = 0
	if whiteout {
		flags = unix.RENAME_WHITEOUT
	}
	var st unix.Statx_t
	if isDir {
		if fd, err := fs.res.OpenBeneath(to, newName, unix.O_PATH); err == nil {
			wh := statx(fd, &st) == nil && isCharWhiteout(&st)
			unix.Close(fd)
			if wh {
				// A directory cannot replace a whiteout: exchange
				// them, and keep or drop the whiteout at the old name.
				if err := unix.Renameat2(from, name, to, newName, unix.RENAME_EXCHANGE); err != nil {
					return err
				}
				if !whiteout {
					unix.Unlinkat(from, name, 0)
				}
				return nil
			}
		}
	}
	return unix.Renameat2(from, name, to, newName, flags)
}

// needsRedirect reports whether moving in needs a redirect: a directory
// with a lower part.
func (fs *FS) needsRedirect(in *inode) bool {
	if in == nil || in.typ != unix.S_IFDIR {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.lower) > 0
}

// prepareMove readies in (copied up, locked with both parents) to move
// from its name in one parent into newParent: a directory with a lower part
// gets its redirect; a pure upper directory entering a merged parent is
// made opaque.
func (fs *FS) prepareMove(in, newParent *inode, oldName string, samedir bool) fuseproto.Errno {
	if in.typ != unix.S_IFDIR {
		if in.metacopy {
			return fs.setRedirect(in, oldName, samedir)
		}
		return 0
	}
	if len(in.lower) > 0 {
		return fs.setRedirect(in, oldName, samedir)
	}
	if !in.opaque && len(newParent.lower) > 0 {
		if setx(in.upper, fs.x.opaque, "y") != nil {
			return unix.EXDEV
		}
		in.opaque, in.marks.opaque = true, true
	}
	return 0
}

// setRedirect records where in's lower part is before it moves from
// oldName: the old name for a move within one directory, else the absolute
// path in the lowers. An existing redirect that stays valid is kept. A
// redirect that is too long or cannot be set answers EXDEV, so that the
// caller falls back to copying. Caller holds in.mu.
func (fs *FS) setRedirect(in *inode, oldName string, samedir bool) fuseproto.Errno {
	if in.redirect != "" && (samedir || in.redirect[0] == '/') {
		return 0
	}
	r := oldName
	if !samedir {
		r = in.lowerPath
		if len(r) > redirectMax {
			return unix.EXDEV
		}
	}
	if setx(in.upper, fs.x.redirect, r) != nil {
		return unix.EXDEV
	}
	in.redirect = r
	return 0
}

// markImpure marks directory p's upper impure when moved now holds an
// entry whose st_ino comes from elsewhere. Caller holds p.mu and moved.mu.
func (fs *FS) markImpure(p, moved *inode) {
	if p.impure || (moved.origin == nil && len(moved.lower) == 0) {
		return
	}
	if setx(p.upper, fs.x.impure, "y") == nil {
		p.impure = true
	}
}

// moveAlias records in's new alias. Caller holds in.mu and a reference on
// both parents.
func (fs *FS) moveAlias(in, parent *inode, name string) {
	if in.parent != parent {
		fs.inodes.ref(parent)
		old := in.parent
		in.parent = parent
		if old != nil {
			fs.inodes.put(old) // never the last reference: the caller holds one
		}
	}
	in.name = name
}

// isAncestor reports whether a is a proper ancestor of b. Caller holds
// renameMu, which keeps directories from moving, and the mutexes of the
// inodes in held.
func (fs *FS) isAncestor(a, b *inode, held ...*inode) bool {
	for x := b; ; {
		locked := false
		for _, h := range held {
			locked = locked || h == x
		}
		if !locked {
			x.mu.Lock()
		}
		next := x.parent
		if !locked {
			x.mu.Unlock()
		}
		if next == nil {
			return false
		}
		if next == a {
			return true
		}
		x = next
	}
}
