package passthrough

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// SaveState writes the filesystem's migration state to w (see the
// Migration section of state.go for the format and what it holds). It
// implements fuseproto.Migrator.
//
// Preconditions: no request is running or will run until SaveState returns
// (the transport has stopped its queues). Inodes SaveState cannot find are
// sent as lost, for the destination's MigrationOnError to decide; SaveState
// itself fails only when it cannot write or the filesystem is closed.
func (fs *FS) SaveState(w io.Writer) error {
	s, err := fs.collectState()
	if err != nil {
		return err
	}
	if _, err := w.Write(encodeState(s)); err != nil {
		return fmt.Errorf("passthrough: write migration state: %w", err)
	}
	return nil
}

// snapInode is one inode being saved.
type snapInode struct {
	in      *inode
	nlookup uint64
	parent  uint64
	name    string

	state   int      // findUnknown, ...
	path    []string // relative to the share, when found
	deleted bool     // its link count is 0: no path can be found
	handle  *savedHandleBytes
	mount   uint64 // handle's mount id
}

const (
	findUnknown = iota
	findBusy    // on the current chain (a cycle of parent records)
	findFound
	findFailed
)

// collectState snapshots the tables and finds a location for every inode.
func (fs *FS) collectState() (*savedState, error) {
	t := &fs.inodes
	t.mu.Lock()
	if t.root == nil {
		t.mu.Unlock()
		return nil, errors.New("passthrough: SaveState on a closed filesystem")
	}
	snaps := make([]*snapInode, 0, len(t.byID))
	for _, in := range t.byID {
		in.refs++ // keep it until we are done
		snaps = append(snaps, &snapInode{in: in, nlookup: in.nlookup, parent: in.parent, name: in.name})
	}
	nextNode := t.next
	t.mu.Unlock()
	defer func() {
		for _, sn := range snaps {
			t.unhold(sn.in)
		}
	}()

	s := &savedState{fileHandles: fs.opts.MigrationMode == MigrationFileHandles, nextNode: nextNode, nextFh: fs.nextFh.Load()}
	used := map[uint64]bool{}
	for _, tab := range []*handleTable{&fs.files, &fs.dirs} {
		tab.mu.RLock()
		for fh, h := range tab.m {
			s.handles = append(s.handles, savedHandle{fh: fh, node: h.ino.id, dir: h.dir != nil, flags: uint32(h.flags)})
			used[h.ino.id] = true
		}
		tab.mu.RUnlock()
	}
	slices.SortFunc(s.handles, func(a, b savedHandle) int { return cmpU64(a.fh, b.fh) })

	f := &finder{fs: fs, byID: make(map[uint64]*snapInode, len(snaps))}
	kept := snaps[:0:0]
	for _, sn := range snaps {
		if sn.in.id == fuseproto.RootID {
			f.root = sn
			sn.state, sn.path = findFound, []string{}
		} else if sn.nlookup == 0 && !used[sn.in.id] {
			continue // being dropped
		}
		f.byID[sn.in.id] = sn
		kept = append(kept, sn)
	}
	slices.SortFunc(kept, func(a, b *snapInode) int { return cmpU64(a.in.id, b.in.id) })
	f.all = kept
	defer f.close()

	if len(kept) > maxInodes || len(s.handles) > maxHandles {
		return nil, fmt.Errorf("passthrough: %d inodes and %d open handles are more than a migration carries (%d, %d)", len(kept), len(s.handles), maxInodes, maxHandles)
	}
	fileHandles := fs.opts.MigrationMode == MigrationFileHandles
	if fileHandles {
		f.handles()
	}
	for _, sn := range kept {
		f.resolve(sn)
	}
	f.search()
	if fs.opts.MigrationVerifyHandles {
		f.verifyHandles()
	}
	f.encode(s)
	return s, nil
}

// finder finds where each inode is.
type finder struct {
	fs   *FS
	root *snapInode
	all  []*snapInode
	byID map[uint64]*snapInode
	// rootPath is the share root's /proc/self/fd link (rootPathErr if
	// it cannot be read), read once.
	rootPath    string
	rootPathErr error
	rootRead    bool
	// dirFd is the root opened for reading, for the search.
	dirFd int
	stats findStats
}

func (f *finder) close() {
	if f.dirFd > 0 {
		unix.Close(f.dirFd)
	}
}

// resolve finds sn's path: from its parent record, else from /proc/self/fd.
func (f *finder) resolve(sn *snapInode) bool {
	switch sn.state {
	case findFound:
		return true
	case findFailed, findBusy:
		return false
	}
	sn.state = findBusy
	if sn.in.lost {
		sn.state = findFailed
		return false
	}
	if p := f.chain(sn); p != nil {
		sn.path, sn.state = p, findFound
		f.stats.chain++
		return true
	}
	if p := f.procPath(sn); p != nil {
		sn.path, sn.state = p, findFound
		f.stats.proc++
		return true
	}
	sn.state = findFailed
	return false
}

// chain returns the path of sn's parent plus its name, if its name there
// still leads to it.
func (f *finder) chain(sn *snapInode) []string {
	p := f.byID[sn.parent]
	if p == nil || sn.name == "" || p.in.typ != unix.S_IFDIR || !f.resolve(p) || len(p.path) >= maxPathComponents {
		return nil
	}
	if e := p.in.pin(); e != 0 {
		return nil
	}
	ok := f.fs.isAt(sn.in, p.in.fd, sn.name)
	p.in.unpin()
	if !ok {
		return nil
	}
	return append(slices.Clip(p.path), sn.name)
}

// procPath returns the path the kernel shows as sn's /proc/self/fd link,
// if walking it from the share root leads to sn. It notes a deleted inode.
func (f *finder) procPath(sn *snapInode) []string {
	in := sn.in
	if e := in.pin(); e != 0 {
		return nil
	}
	defer in.unpin()
	var st unix.Statx_t
	if err := hostfs.Statx(in.fd, &st); err == nil && st.Nlink == 0 {
		sn.deleted = true
		return nil
	}
	link, err := f.fs.fdLink(in.fd)
	if err != nil {
		return nil
	}
	root, err := f.rootLink()
	if err != nil {
		return nil
	}
	var rel string
	switch {
	case root == "/":
		rel = strings.TrimPrefix(link, "/")
	case strings.HasPrefix(link, root+"/"):
		rel = link[len(root)+1:]
	default:
		return nil // outside the share, or disconnected
	}
	if rel == "" {
		return nil
	}
	comps := strings.Split(rel, "/")
	if len(comps) > maxPathComponents {
		return nil
	}
	for _, c := range comps {
		if hostfs.ValidName(c) != 0 {
			return nil
		}
	}
	if !f.fs.walkIsAt(in, comps) {
		return nil
	}
	return comps
}

// rootLink reads the share root's /proc/self/fd link once.
func (f *finder) rootLink() (string, error) {
	if !f.rootRead {
		f.rootRead = true
		f.rootPath, f.rootPathErr = f.fs.fdLink(f.root.in.fd)
	}
	return f.rootPath, f.rootPathErr
}

// fdLink reads the /proc/self/fd link of fd.
func (fs *FS) fdLink(fd int) (string, error) {
	buf := make([]byte, unix.PathMax+64)
	n, err := unix.Readlinkat(fs.procFd, itoa(fd), buf)
	if err != nil {
		return "", err
	}
	if n >= len(buf) {
		return "", unix.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

// isAt reports whether name in directory dirfd is the host inode of in:
// the same st_dev, st_ino and mount, and for an inode referenced by its
// handle (whose st_ino a new inode may have taken) the same handle.
func (fs *FS) isAt(in *inode, dirfd int, name string) bool {
	var st unix.Statx_t
	if err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, hostfs.StatxMask, &st); err != nil {
		return false
	}
	if keyOf(&st) != in.key {
		return false
	}
	if in.fh != nil {
		h, _, err := hostfs.HandleAt(dirfd, name, 0)
		if err != nil || h.Key() != in.fh.h.Key() {
			return false
		}
	}
	return true
}

// walkIsAt reports whether path, walked from the share root one component
// at a time, leads to in.
func (fs *FS) walkIsAt(in *inode, path []string) bool {
	dirfd, err := fs.walkDir(fs.inodes.root.fd, path[:len(path)-1])
	if err != nil {
		return false
	}
	ok := fs.isAt(in, dirfd, path[len(path)-1])
	if dirfd != fs.inodes.root.fd {
		unix.Close(dirfd)
	}
	return ok
}

// walkDir opens the directory at path beneath dirfd, one component at a
// time, never following a symlink or leaving dirfd (hostfs.Resolver). It
// returns dirfd itself for an empty path, else an O_PATH descriptor the
// caller closes.
func (fs *FS) walkDir(dirfd int, path []string) (int, error) {
	fd := dirfd
	for _, c := range path {
		next, err := fs.beneath.OpenBeneath(fd, c, unix.O_PATH|unix.O_DIRECTORY)
		if fd != dirfd {
			unix.Close(fd)
		}
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// search walks the whole share for the inodes not found otherwise (and not
// deleted, and without a handle to travel by), comparing every entry's
// identity, as virtiofsd's find-paths fallback does. It stops once all are
// found.
func (f *finder) search() {
	want := map[inodeKey][]*snapInode{}
	left := 0
	for _, sn := range f.all {
		if sn.state != findFound && !sn.deleted && !sn.in.lost && sn.handle == nil {
			want[sn.in.key] = append(want[sn.in.key], sn)
			left++
		}
	}
	if left == 0 {
		return
	}
	fd, err := f.fs.reopen(f.root.in, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		f.fs.log.Warn("migration: cannot search the shared directory", "error", err)
		return
	}
	f.dirFd = fd
	seen := map[inodeKey]bool{f.root.in.key: true}
	f.walk(fd, nil, want, &left, seen)
	if left > 0 {
		f.fs.log.Warn("migration: inodes not found in the shared directory", "count", left)
	}
}

// walk searches directory fd (open for reading) at path.
func (f *finder) walk(fd int, path []string, want map[inodeKey][]*snapInode, left *int, seen map[inodeKey]bool) {
	names := readNames(fd)
	for _, name := range names {
		if *left == 0 {
			return
		}
		var st unix.Statx_t
		if err := unix.Statx(fd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, hostfs.StatxMask, &st); err != nil {
			continue
		}
		key := keyOf(&st)
		for _, sn := range want[key] {
			if sn.state != findFound && f.fs.isAt(sn.in, fd, name) {
				sn.path = append(slices.Clip(path), name)
				sn.state = findFound
				f.stats.search++
				*left--
			}
		}
		if uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR || seen[key] || len(path)+1 >= maxPathComponents {
			continue
		}
		seen[key] = true
		sub, err := f.fs.beneath.OpenBeneath(fd, name, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		f.walk(sub, append(slices.Clip(path), name), want, left, seen)
		unix.Close(sub)
	}
}

// readNames returns the names in directory fd but "." and "..".
func readNames(fd int) []string {
	var names []string
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return names
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// handles notes the file handle of every inode that has one
// (MigrationFileHandles). Inodes without one travel by path.
func (f *finder) handles() {
	for _, sn := range f.all {
		if sn == f.root || sn.in.lost {
			continue
		}
		h, mnt, err := f.fs.handleOf(sn.in)
		if err != nil {
			if !errors.Is(err, hostfs.ErrNoHandles) {
				f.fs.log.Warn("migration: no file handle", "node", sn.in.id, "error", err)
			}
			continue
		}
		sn.handle, sn.mount = &h, mnt
	}
}

// handleOf returns the saved form of in's file handle and its mount id.
func (fs *FS) handleOf(in *inode) (savedHandleBytes, uint64, error) {
	if in.fh != nil {
		return savedHandleBytes{typ: in.fh.h.Type(), bytes: in.fh.h.Bytes()}, in.fh.key.mnt, nil
	}
	if e := in.pin(); e != 0 {
		return savedHandleBytes{}, 0, e
	}
	defer in.unpin()
	h, mnt, err := hostfs.HandleOf(in.fd)
	if err != nil {
		return savedHandleBytes{}, 0, err
	}
	return savedHandleBytes{typ: h.Type(), bytes: h.Bytes()}, mnt, nil
}

// verifyHandles attaches every found inode's handle for the destination to
// compare (MigrationVerifyHandles). An inode whose filesystem makes no
// handles goes without; one whose handle cannot be made otherwise is sent as
// lost, as virtiofsd does.
func (f *finder) verifyHandles() {
	for _, sn := range f.all {
		if sn.state != findFound {
			continue
		}
		h, _, err := f.fs.handleOf(sn.in)
		switch {
		case err == nil:
			sn.handle = &h
		case errors.Is(err, hostfs.ErrNoHandles):
		default:
			f.fs.log.Warn("migration: no file handle to verify; sending the inode as lost", "node", sn.in.id, "error", err)
			sn.state = findFailed
		}
	}
}

// encode fills s.inodes and s.mounts: the root first, then inodes with a
// path by depth (so that a path can be relative to a directory sent before
// it), then the rest.
func (f *finder) encode(s *savedState) {
	fileHandles := s.fileHandles
	order := slices.Clone(f.all)
	depth := func(sn *snapInode) int {
		if sn == f.root {
			return -1
		}
		if sn.state == findFound {
			return len(sn.path)
		}
		return maxPathComponents + 1
	}
	slices.SortStableFunc(order, func(a, b *snapInode) int { return depth(a) - depth(b) })

	// Mounts of the handles sent: each as the path of one of its
	// directories (else regular files) that has a path.
	if fileHandles {
		mounts := map[uint64][]string{}
		for _, typ := range []uint32{unix.S_IFDIR, unix.S_IFREG} {
			for _, sn := range order {
				if sn.state == findFound && sn.in.typ == typ && sn.in.key.mnt != 0 {
					if _, ok := mounts[sn.in.key.mnt]; !ok {
						mounts[sn.in.key.mnt] = sn.path
					}
				}
			}
		}
		need := map[uint64]bool{}
		for _, sn := range order {
			if sn.handle != nil {
				if _, ok := mounts[sn.mount]; ok {
					need[sn.mount] = true
				} else {
					sn.handle = nil // no way to open it there
				}
			}
		}
		for id := range need {
			s.mounts = append(s.mounts, savedMount{id: id, path: mounts[id]})
		}
		slices.SortFunc(s.mounts, func(a, b savedMount) int { return cmpU64(a.id, b.id) })
	}

	// dirs maps the path of each directory sent to its node ID.
	dirs := map[string]uint64{}
	base := func(sn *snapInode) (uint64, []string) {
		for k := len(sn.path) - 1; k > 0; k-- {
			if id, ok := dirs[strings.Join(sn.path[:k], "/")]; ok {
				return id, sn.path[k:]
			}
		}
		return fuseproto.RootID, sn.path
	}
	lost := 0
	for _, sn := range order {
		si := savedInode{id: sn.in.id, nlookup: sn.nlookup, typ: sn.in.typ, submount: sn.in.submount}
		switch {
		case sn == f.root:
			si.loc, si.nlookup = locRoot, 1
		case fileHandles && sn.handle != nil:
			si.loc, si.mount, si.fh = locHandle, sn.mount, *sn.handle
			f.stats.handle++
			if sn.state == findFound {
				si.hasPath = true
				si.base, si.path = base(sn)
			}
		case sn.state == findFound:
			si.loc = locPath
			si.base, si.path = base(sn)
		default:
			si.loc = locLost
			lost++
		}
		if !fileHandles && sn.handle != nil && si.loc != locLost {
			si.verify = sn.handle
		}
		if sn.state == findFound && sn.in.typ == unix.S_IFDIR && sn != f.root {
			dirs[strings.Join(sn.path, "/")] = sn.in.id
		}
		s.inodes = append(s.inodes, si)
	}
	if lost > 0 {
		f.fs.log.Warn("migration: inodes the destination will not find (deleted, or outside the shared directory)", "count", lost)
	}
	f.stats.lost = lost
	s.found = f.stats
	f.fs.log.Info("migration state saved", "inodes", len(s.inodes), "handles", len(s.handles),
		"by_name", f.stats.chain, "by_proc_fd", f.stats.proc, "by_search", f.stats.search, "by_handle", f.stats.handle, "lost", lost)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
