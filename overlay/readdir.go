package overlay

import (
	"sync"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// dirEntry is one name of a merged directory listing.
type dirEntry struct {
	name string
	ino  uint64
	typ  uint8 // DT_*
}

// dirStream is a directory handle's listing: built on the first READDIR
// (and again on a READDIR from offset 0, a rewinddir), the upper's entries
// first, then each lower's not yet seen, without whiteouts and the names
// they hide. Offsets are positions in that list, so no entry is repeated or
// skipped while the directory changes; changes show after a rewind.
type dirStream struct {
	mu      sync.Mutex
	entries []dirEntry
	built   bool
}

// Opendir opens a directory of the union.
func (fs *FS) Opendir(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	*out = fuseproto.OpenOut{Fh: fs.dirs.add(&handle{fd: -1, ino: ino, flags: unix.O_RDONLY | unix.O_DIRECTORY, dir: &dirStream{}}), OpenFlags: fs.opendirFlags}
	return 0
}

// Readdir lists the merged directory from position in.Offset. d_ino is the
// st_ino a lookup of the name reports. For READDIRPLUS each entry but "."
// and ".." is looked up (counting one lookup) once it is known to fit.
func (fs *FS) Readdir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst *fuseproto.DirBuffer) fuseproto.Errno {
	h := fs.dirs.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.dirs.put(h)
	d := h.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.built || in.Offset == 0 {
		entries, e := fs.mergedList(h.ino, true)
		if e != 0 {
			return e
		}
		d.entries, d.built = entries, true
	}
	plus := dst.Plus()
	for i := in.Offset; i < uint64(len(d.entries)); i++ {
		ent := &d.entries[i]
		if plus && ent.name != "." && ent.name != ".." {
			if !dst.Fits(ent.name) {
				return 0
			}
			child, e := fs.lookupIn(h.ino, ent.name)
			if e == unix.ENOENT {
				continue // gone since the listing was made
			}
			if e != 0 {
				if dst.Len() > 0 {
					return 0
				}
				return e
			}
			var out fuseproto.EntryOut
			e = fs.entryOut(child, &out)
			fs.inodes.put(child)
			if e != 0 {
				fs.inodes.forget(child.id, 1)
				if dst.Len() > 0 {
					return 0
				}
				return e
			}
			if !dst.AddPlus(ent.name, &out, i+1) {
				fs.inodes.forget(child.id, 1)
				return 0
			}
			continue
		}
		if !dst.Add(ent.name, ent.ino, uint32(ent.typ), i+1) {
			return 0
		}
	}
	return 0
}

// mergedList builds the merged listing of directory in; with dots it
// starts with "." and "..".
func (fs *FS) mergedList(in *inode, dots bool) ([]dirEntry, fuseproto.Errno) {
	in.mu.Lock()
	upper, lower, marks, impure, lowerPath := in.upper, in.lower, in.marks, in.impure, in.lowerPath
	parent := in.parent
	in.mu.Unlock()

	var entries []dirEntry
	if dots {
		pino := in.ino.Load()
		if parent != nil {
			pino = parent.ino.Load()
		}
		entries = append(entries, dirEntry{".", in.ino.Load(), unix.DT_DIR}, dirEntry{"..", pino, unix.DT_DIR})
	}
	seen := map[string]struct{}{}
	// One pass per layer; names a layer whites out are hidden from the
	// layers below only, so they join seen after the layer's pass.
	var hidden []string
	layerPass := func(dirFd int, l *layer, m dirMarks, isUpper bool) (bool, error) {
		opaque := m.opaque
		hidden = hidden[:0]
		err := fs.readNames(dirFd, func(name string, dino uint64, typ uint8) error {
			if !isUpper && fs.oci && ociHidden(name) {
				switch {
				case name == ociOpaque:
					opaque = true
				case len(name) > len(ociMetaPrefix) && name[:len(ociMetaPrefix)] == ociMetaPrefix:
				default:
					hidden = append(hidden, name[len(ociWhiteoutPrefix):])
				}
				return nil
			}
			if _, ok := seen[name]; ok {
				return nil
			}
			if typ == unix.DT_CHR || typ == unix.DT_UNKNOWN || (m.xwh && typ == unix.DT_REG) {
				wh, t, ok := fs.classify(dirFd, name, m.xwh)
				if !ok {
					return nil // gone meanwhile
				}
				if wh {
					hidden = append(hidden, name)
					return nil
				}
				typ = t
			}
			seen[name] = struct{}{}
			ino := fs.xino(objKey{dev: l.dev, ino: dino})
			if isUpper && (impure || typ == unix.DT_DIR) {
				ino = fs.entryIno(dirFd, name, ino, typ)
				if typ == unix.DT_DIR && len(lower) > 0 && fs.indexFd >= 0 {
					ino = fs.mergedDirIno(dirState{upper: upper, lower: lower, marks: marks, lowerPath: lowerPath}, name, ino)
				}
			}
			entries = append(entries, dirEntry{name: name, ino: ino, typ: typ})
			return nil
		})
		for _, n := range hidden {
			seen[n] = struct{}{}
		}
		return opaque, err
	}
	if upper >= 0 {
		if _, err := layerPass(upper, fs.upper, marks, true); err != nil {
			return nil, errno(err)
		}
	}
	for _, lo := range lower {
		opaque, err := layerPass(lo.fd, lo.l, lo.marks, false)
		if err != nil {
			return nil, errno(err)
		}
		if opaque {
			break
		}
	}
	return entries, 0
}

// classify stats name in a layer directory to tell a whiteout from a real
// entry and returns the real entry's d_type.
func (fs *FS) classify(dirFd int, name string, xwh bool) (whiteout bool, typ uint8, ok bool) {
	fd, err := fs.res.OpenBeneath(dirFd, name, unix.O_PATH)
	if err != nil {
		return false, 0, false
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if statx(fd, &st) != nil {
		return false, 0, false
	}
	if fs.isWhiteout(fd, &st, xwh) {
		return true, 0, true
	}
	return false, dtype(uint32(st.Mode)), true
}

// entryIno returns the st_ino of an upper entry whose number may come
// from its origin (copied-up objects and directories), as lookup reports
// it; def is the number of the upper object itself.
func (fs *FS) entryIno(dirFd int, name string, def uint64, typ uint8) uint64 {
	fd, err := fs.res.OpenBeneath(dirFd, name, unix.O_PATH)
	if err != nil {
		return def
	}
	defer unix.Close(fd)
	v, ok := getx(fd, fs.x.origin)
	if !ok {
		return def
	}
	if k, nlink, ok := fs.decodeOrigin([]byte(v)); ok && (typ == unix.DT_DIR || fs.indexFd >= 0 || nlink <= 1) {
		return fs.xino(k)
	}
	return def
}

// mergedDirIno returns the st_ino of upper subdirectory name as a lookup
// reports it, for a subdirectory without an origin in a merged directory
// with state d: a lookup finds its lower part, records the origin (as
// kernel overlayfs does with index=on), and the number comes from there.
func (fs *FS) mergedDirIno(d dirState, name string, def uint64) uint64 {
	fd, err := fs.res.OpenBeneath(d.upper, name, unix.O_PATH)
	if err != nil {
		return def
	}
	_, hasOrigin := getx(fd, fs.x.origin)
	m := fs.marksOf(fd, fs.upper)
	unix.Close(fd)
	if hasOrigin || m.opaque {
		return def
	}
	f, e := fs.lookupWith(d, name)
	if e != 0 {
		return def
	}
	key, _ := fs.foundKey(&f)
	f.close()
	return fs.xino(key)
}

// dtype converts S_IFMT bits to a d_type.
func dtype(mode uint32) uint8 {
	return uint8((mode & unix.S_IFMT) >> 12)
}

// Releasedir closes a directory handle.
func (fs *FS) Releasedir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	h := fs.dirs.remove(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	h.ino.locks.ReleaseHandle(in.Fh)
	fs.dirs.put(h)
	return 0
}

// Fsyncdir syncs the directory's upper, if it has one.
func (fs *FS) Fsyncdir(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	h := fs.dirs.get(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	defer fs.dirs.put(h)
	h.ino.mu.Lock()
	up := h.ino.upper
	var fd int
	var err error
	if up >= 0 {
		fd, err = fs.reopen(up, unix.O_RDONLY|unix.O_DIRECTORY)
	}
	h.ino.mu.Unlock()
	if up < 0 {
		return 0
	}
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	if in.FsyncFlags&fuseproto.FsyncFdatasync != 0 {
		return errno(unix.Fdatasync(fd))
	}
	return errno(unix.Fsync(fd))
}
