package overlay

import (
	"strings"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// found is what a lookup through the layers found for one name.
type found struct {
	typ       uint32
	upper     int // O_PATH, or -1
	ust       unix.Statx_t
	lower     []layerObj
	lst       unix.Statx_t // of lower[0]
	opaque    bool
	marks     dirMarks
	redirect  string
	metacopy  bool
	impure    bool
	origin    []byte
	lowerPath string
	// indexed: upper is the index entry of a hard-linked lower file;
	// atName: the upper object is linked at the looked-up name.
	indexed bool
	atName  bool
}

func (f *found) close() {
	if f.upper >= 0 {
		unix.Close(f.upper)
		f.upper = -1
	}
	for _, lo := range f.lower {
		unix.Close(lo.fd)
	}
	f.lower = nil
}

// dirState is a copy of the parts of a directory inode a lookup in it
// needs, taken under its mutex. The descriptors stay valid while the caller
// holds a reference on the inode.
type dirState struct {
	upper     int
	lower     []layerObj
	marks     dirMarks
	lowerPath string
}

func (in *inode) dirState() dirState {
	in.mu.Lock()
	defer in.mu.Unlock()
	return dirState{upper: in.upper, lower: in.lower, marks: in.marks, lowerPath: in.lowerPath}
}

// lookupLayers looks name up in directory p through every layer: the upper
// first, then p's merged lower directories. The topmost non-directory hides
// everything below it, same-name directories merge, whiteouts and opaque
// directories stop the search, and redirects are followed.
func (fs *FS) lookupLayers(p *inode, name string) (found, fuseproto.Errno) {
	return fs.lookupWith(p.dirState(), name)
}

// lookupWith is lookupLayers in the directory whose state is d.
func (fs *FS) lookupWith(d dirState, name string) (found, fuseproto.Errno) {
	f := found{upper: -1}
	if d.upper >= 0 {
		fd, err := fs.res.OpenBeneath(d.upper, name, unix.O_PATH)
		switch {
		case err == unix.ENOENT:
		case err != nil:
			return f, errno(err)
		default:
			if err := statx(fd, &f.ust); err != nil {
				unix.Close(fd)
				return f, errno(err)
			}
			if fs.isWhiteout(fd, &f.ust, d.marks.xwh) {
				unix.Close(fd)
				return f, unix.ENOENT
			}
			f.upper, f.atName = fd, true
			f.typ = uint32(f.ust.Mode) & unix.S_IFMT
			if v, ok := getx(fd, fs.x.origin); ok {
				f.origin = []byte(v)
			}
			if f.typ == unix.S_IFDIR {
				f.marks = fs.marksOf(fd, fs.upper)
				f.opaque = f.marks.opaque
				f.redirect, _ = getx(fd, fs.x.redirect)
				_, f.impure = getx(fd, fs.x.impure)
				if f.opaque {
					return f, 0
				}
			} else {
				_, f.metacopy = getx(fd, fs.x.metacopy)
				if f.origin != nil && fs.indexFd >= 0 && f.ust.Nlink > 1 {
					f.indexed = fs.isIndexEntryOf(f.origin, &f.ust)
				}
				if f.metacopy {
					// A moved or linked metacopy file names where
					// its data is.
					f.redirect, _ = getx(fd, fs.x.redirect)
				} else {
					return f, 0
				}
			}
		}
	}
	stack := d.lower
	comps := []string{name}
	f.lowerPath = d.lowerPath + "/" + name
	if r := f.redirect; r != "" {
		// A redirect names where the directory's lower part is, even
		// when it now lives in a directory without one.
		if abs, ok := redirectPath(r); ok {
			stack, comps, f.lowerPath = fs.lowerRoots(0), abs, r
		} else if fuseproto.CheckName([]byte(r)) == 0 {
			comps, f.lowerPath = []string{r}, d.lowerPath+"/"+r
		}
	} else if fs.oci && ociHidden(name) {
		stack = nil // OCI markers in the lowers are never names
	}
	if len(stack) == 0 {
		if f.typ == 0 {
			return f, unix.ENOENT
		}
		return f, 0
	}
	for i := 0; i < len(stack); i++ {
		obj, st, res := fs.lookupInLayer(stack[i], comps)
		if res == layerMissing {
			continue
		}
		if res == layerStop {
			break
		}
		typ := uint32(st.Mode) & unix.S_IFMT
		switch {
		case f.typ == 0:
			f.typ = typ
		case f.typ == unix.S_IFDIR && typ == unix.S_IFDIR:
		case f.typ != unix.S_IFDIR && len(f.lower) == 0 && typ == f.typ:
			// The data of a metacopy upper file.
		default:
			unix.Close(obj.fd)
			res = layerStop
		}
		if res == layerStop {
			break
		}
		if len(f.lower) == 0 {
			f.lst = st
		}
		f.lower = append(f.lower, obj)
		if typ != unix.S_IFDIR || obj.marks.opaque || res == layerLast {
			break
		}
		if r, ok := getx(obj.fd, fs.x.redirect); ok {
			if abs, ok := redirectPath(r); ok {
				stack, comps, i = fs.lowerRoots(obj.l.idx), abs, -1
			} else if fuseproto.CheckName([]byte(r)) == 0 {
				comps = append(comps[:len(comps)-1:len(comps)-1], r)
			}
		}
	}
	if f.typ == 0 {
		return f, unix.ENOENT
	}
	if f.upper < 0 && f.typ != unix.S_IFDIR && fs.indexFd >= 0 && f.lst.Nlink > 1 {
		fs.findIndex(&f)
	}
	if f.upper >= 0 && f.typ == unix.S_IFDIR && f.origin == nil && len(f.lower) > 0 && fs.indexFd >= 0 && !fs.opts.ReadOnly {
		// A merged directory an image tool left without an origin: record
		// it, and mark the parent impure, as kernel overlayfs does with
		// index=on, so that both agree on its st_ino from now on.
		if fb := encodeFH(f.lower[0].fd, f.lower[0].l); fb != nil && setx(f.upper, fs.x.origin, string(fb)) == nil {
			f.origin = fb
			if d.upper >= 0 {
				setx(d.upper, fs.x.impure, "y")
			}
		}
	}
	return f, 0
}

// Results of looking a path up in one layer.
const (
	layerFound   = iota
	layerMissing // nothing here: go on to the next layer
	layerStop    // a whiteout or a non-directory in the way: stop
	layerLast    // found, under an opaque directory: stop after it
)

// lookupInLayer walks comps from the lower directory d within its layer.
func (fs *FS) lookupInLayer(d layerObj, comps []string) (layerObj, unix.Statx_t, int) {
	var st unix.Statx_t
	dir, marks := d.fd, d.marks
	res := layerFound
	for i, c := range comps {
		last := i == len(comps)-1
		fd, err := fs.res.OpenBeneath(dir, c, unix.O_PATH)
		if err != nil {
			stop := fs.oci && ociWhitedOut(dir, c)
			if dir != d.fd {
				unix.Close(dir)
			}
			if stop {
				return layerObj{}, st, layerStop
			}
			return layerObj{}, st, layerMissing
		}
		if dir != d.fd {
			unix.Close(dir)
		}
		if err := statx(fd, &st); err != nil || fs.isWhiteout(fd, &st, marks.xwh) {
			unix.Close(fd)
			return layerObj{}, st, layerStop
		}
		isDir := uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR
		var m dirMarks
		if isDir {
			m = fs.marksOf(fd, d.l)
		}
		if last {
			return layerObj{l: d.l, fd: fd, marks: m}, st, res
		}
		if !isDir {
			unix.Close(fd)
			return layerObj{}, st, layerStop
		}
		if m.opaque {
			res = layerLast
		}
		dir, marks = fd, m
	}
	return layerObj{}, st, layerMissing
}

// redirectPath splits an absolute redirect into components, each checked to
// be a single name; false for a relative or malformed one.
func redirectPath(r string) ([]string, bool) {
	if !strings.HasPrefix(r, "/") {
		return nil, false
	}
	comps := strings.Split(r[1:], "/")
	for _, c := range comps {
		if fuseproto.CheckName([]byte(c)) != 0 {
			return nil, false
		}
	}
	return comps, len(comps) > 0
}

// lowerRoots returns the root directories of the lower layers below layer
// index idx (all of them for 0), as a lookup stack.
func (fs *FS) lowerRoots(idx int) []layerObj {
	root := fs.inodes.root
	var out []layerObj
	for _, lo := range root.lower {
		if lo.l.idx > idx {
			out = append(out, lo)
		}
	}
	return out
}

// findIndex checks, for a hard-linked lower file, whether the index holds
// its copy-up, which then stands for it under every name.
func (fs *FS) findIndex(f *found) {
	fb := encodeFH(f.lower[0].fd, f.lower[0].l)
	if fb == nil {
		return
	}
	fd, err := fs.res.OpenBeneath(fs.indexFd, indexName(fb), unix.O_PATH)
	if err != nil {
		return
	}
	var st unix.Statx_t
	if err := statx(fd, &st); err != nil || uint32(st.Mode)&unix.S_IFMT != f.typ {
		unix.Close(fd)
		return
	}
	f.upper, f.ust, f.indexed, f.origin = fd, st, true, fb
	_, f.metacopy = getx(fd, fs.x.metacopy)
}

// isIndexEntryOf reports whether the index entry for origin is the upper
// object st (an alias linked up from the index).
func (fs *FS) isIndexEntryOf(origin []byte, st *unix.Statx_t) bool {
	var ist unix.Stat_t
	if unix.Fstatat(fs.indexFd, indexName(origin), &ist, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	return ist.Ino == st.Ino && ist.Dev == keyOf(st).dev
}

// adopt makes the inode for what lookupLayers found as name in p, or finds
// the one the guest already knows, and counts one lookup of it. It takes
// ownership of f's descriptors and returns the inode with a reference.
func (fs *FS) adopt(p *inode, name string, f *found) *inode {
	key, hasKey := fs.foundKey(f)
	if in := fs.inodes.find(key); in != nil {
		fs.realias(in, p, name, f.atName)
		f.close()
		return in
	}
	in := &inode{
		key:       key,
		typ:       f.typ,
		parent:    p,
		name:      name,
		upper:     f.upper,
		lower:     f.lower,
		metacopy:  f.metacopy,
		indexed:   f.indexed,
		linkedUp:  f.atName,
		origin:    f.origin,
		lowerPath: f.lowerPath,
		redirect:  f.redirect,
		opaque:    f.opaque,
		impure:    f.impure,
		marks:     f.marks,
		lockFd:    -1,
	}
	in.ino.Store(fs.xino(key))
	fs.inodes.ref(p)
	got, isNew := fs.inodes.insert(in)
	if !isNew {
		fs.inodes.put(p)
		fs.realias(got, p, name, f.atName)
		f.close()
		return got
	}
	if f.upper >= 0 && hasKey {
		fs.inodes.alias(got, keyOf(&f.ust))
	}
	return got
}

// foundKey returns the identity of what a lookup found, and whether it
// came from a decoded origin.
func (fs *FS) foundKey(f *found) (objKey, bool) {
	var key objKey
	hasKey := false
	if f.upper >= 0 && f.origin != nil {
		var nlink uint32
		key, nlink, hasKey = fs.decodeOrigin(f.origin)
		if hasKey && f.typ != unix.S_IFDIR && fs.indexFd < 0 && nlink > 1 {
			// A hard link broken by a copy-up without the index: the
			// lower inode's other names are other inodes.
			hasKey = false
		}
	}
	if !hasKey {
		if f.upper >= 0 && (!f.indexed || len(f.lower) == 0) {
			key = keyOf(&f.ust)
		} else {
			key = keyOf(&f.lst)
		}
	}
	return key, hasKey
}

// realias records p/name as in's alias, for a lookup that found it there.
func (fs *FS) realias(in *inode, p *inode, name string, atName bool) {
	if in == fs.inodes.root || p == in {
		return
	}
	in.mu.Lock()
	old := in.parent
	if old != p {
		fs.inodes.ref(p)
		in.parent = p
	}
	in.name, in.deleted = name, false
	if in.indexed {
		in.linkedUp = atName
	}
	in.mu.Unlock()
	if old != p && old != nil {
		fs.inodes.put(old)
	}
}

// lookupIn is Lookup in a directory the caller holds; it returns the inode
// with a reference and one lookup counted.
func (fs *FS) lookupIn(p *inode, name string) (*inode, fuseproto.Errno) {
	if p.typ != unix.S_IFDIR {
		return nil, unix.ENOTDIR
	}
	switch name {
	case ".":
		fs.inodes.ref(p)
		fs.inodes.addLookup(p)
		return p, 0
	case "..":
		p.mu.Lock()
		pp := p.parent
		p.mu.Unlock()
		if pp == nil {
			pp = p
		}
		fs.inodes.ref(pp)
		fs.inodes.addLookup(pp)
		return pp, 0
	}
	f, e := fs.lookupLayers(p, name)
	if e != 0 {
		return nil, e
	}
	return fs.adopt(p, name, &f), 0
}

// Lookup finds name in directory parent through the layers and counts one
// lookup of it.
func (fs *FS) Lookup(ctx *fuseproto.Context, parent uint64, name string, out *fuseproto.EntryOut) fuseproto.Errno {
	p, e := fs.inodes.get(parent)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(p)
	in, e := fs.lookupIn(p, name)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(in)
	if e := fs.entryOut(in, out); e != 0 {
		fs.inodes.forget(in.id, 1)
		return e
	}
	return 0
}

// Forget drops nlookup lookups of node.
func (fs *FS) Forget(node uint64, nlookup uint64) { fs.inodes.forget(node, nlookup) }
