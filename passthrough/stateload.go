package passthrough

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// LoadState restores the state a migration source's SaveState wrote: every
// inode under its node ID with its lookup count, every open file and
// directory under its handle number. It implements fuseproto.Migrator.
//
// Preconditions: the filesystem is fresh (the guest has looked nothing up
// and opened nothing) and no request runs until LoadState returns. The
// stream is untrusted (see the Migration section of state.go). On error
// nothing of the state is left: the filesystem is as after Destroy.
func (fs *FS) LoadState(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, maxStateSize+1))
	if err != nil {
		return fmt.Errorf("passthrough: read migration state: %w", err)
	}
	if len(b) > maxStateSize {
		return fmt.Errorf("passthrough: migration state larger than %d bytes", maxStateSize)
	}
	s, err := decodeState(b)
	if err != nil {
		return err
	}
	if err := fs.checkFresh(); err != nil {
		return err
	}
	l := &loader{fs: fs, mounts: map[uint64]*hostfs.Mount{}, inodes: map[uint64]*inode{}}
	err = l.apply(s)
	l.close()
	if err != nil {
		fs.Destroy()
		return err
	}
	return nil
}

// checkFresh refuses to load into a filesystem the guest already uses.
func (fs *FS) checkFresh() error {
	t := &fs.inodes
	t.mu.Lock()
	n, closed := len(t.byID), t.root == nil
	t.mu.Unlock()
	if closed {
		return errors.New("passthrough: LoadState on a closed filesystem")
	}
	if n != 1 || fs.files.len() != 0 || fs.dirs.len() != 0 {
		return errors.New("passthrough: LoadState needs a filesystem no guest has used")
	}
	return nil
}

// loader restores one state.
type loader struct {
	fs *FS
	// mounts maps the source's mount ids to ours, each with a reference
	// that close gives back.
	mounts map[uint64]*hostfs.Mount
	// inodes are the restored inodes by node ID (lost ones included).
	inodes map[uint64]*inode
}

func (l *loader) close() {
	for _, m := range l.mounts {
		l.fs.mounts.Put(m)
	}
}

// apply restores s: mounts, inodes in stream order (each base before the
// inodes relative to it), handles, counters.
func (l *loader) apply(s *savedState) error {
	fs := l.fs
	root := fs.inodes.root
	l.inodes[fuseproto.RootID] = root
	for _, m := range s.mounts {
		if err := l.openMount(m); err != nil {
			// The inodes on it fail, and say why.
			fs.log.Warn("migration: cannot open a mount of the source", "mount_id", m.id, "error", err)
		}
	}
	var maxNode, maxFh uint64
	lost := 0
	for i := range s.inodes {
		si := &s.inodes[i]
		maxNode = max(maxNode, si.id)
		if si.loc == locRoot {
			if si.verify != nil {
				if err := checkHandle(root.fd, si.verify); err != nil {
					return fmt.Errorf("passthrough: migration: the shared directory is not the source's: %w", err)
				}
			}
			continue
		}
		in, err := l.find(si)
		if err != nil {
			err = fmt.Errorf("inode %d: %w", si.id, err)
			if fs.opts.MigrationOnError == MigrationAbort {
				return fmt.Errorf("passthrough: migration: %w", err)
			}
			fs.log.Warn("migration: inode lost; the guest gets EIO for it", "error", err)
			in = &inode{id: si.id, typ: si.typ, keep: true, fd: -1, lost: true}
			lost++
		}
		in.nlookup = si.nlookup
		l.fs.inodes.insertRestored(in)
		l.inodes[si.id] = in
	}
	for _, sh := range s.handles {
		maxFh = max(maxFh, sh.fh)
		in := l.inodes[sh.node]
		fd, err := l.reopen(in, sh)
		h := &handle{fd: fd, ino: in, flags: int(sh.flags), lost: err != nil}
		if err != nil {
			err = fmt.Errorf("handle %d of inode %d: %w", sh.fh, sh.node, err)
			if fs.opts.MigrationOnError == MigrationAbort {
				return fmt.Errorf("passthrough: migration: %w", err)
			}
			fs.log.Warn("migration: handle lost; the guest gets EIO for it", "error", err)
			h.fd = -1
			lost++
		}
		tab := &fs.files
		if sh.dir {
			tab = &fs.dirs
			h.dir = &dirStream{buf: make([]byte, dirBufSize)}
		}
		tab.restore(sh.fh, h)
	}
	fs.inodes.mu.Lock()
	fs.inodes.next = max(fs.inodes.next, s.nextNode, maxNode+1)
	fs.inodes.mu.Unlock()
	for {
		cur := fs.nextFh.Load()
		if n := max(cur, s.nextFh, maxFh); n == cur || fs.nextFh.CompareAndSwap(cur, n) {
			break
		}
	}
	fs.log.Info("migration state loaded", "inodes", len(s.inodes), "handles", len(s.handles), "lost", lost)
	return nil
}

// openMount opens a descriptor of the mount m names: the object at m's path
// in our share, which must be a directory or a regular file.
func (l *loader) openMount(m savedMount) error {
	fd, err := l.walk(fuseproto.RootID, m.path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := hostfs.Statx(fd, &st); err != nil {
		return err
	}
	mnt, err := l.fs.mounts.Get(keyOf(&st).mnt, func() (int, error) { return l.fs.mountFd(fd, &st) })
	if err != nil {
		return err
	}
	l.mounts[m.id] = mnt
	return nil
}

// find opens the host inode si describes and makes an inode of it.
func (l *loader) find(si *savedInode) (*inode, error) {
	var fd int
	var err error
	switch si.loc {
	case locLost:
		return nil, errors.New("the source could not find it (deleted, or moved out of the shared directory)")
	case locPath:
		fd, err = l.walk(si.base, si.path)
	case locHandle:
		fd, err = l.openHandle(si)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Statx_t
	if err := hostfs.Statx(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if typ := uint32(st.Mode) & unix.S_IFMT; typ != si.typ {
		unix.Close(fd)
		return nil, fmt.Errorf("found a file of type %#o, want %#o", typ, si.typ)
	}
	if si.verify != nil {
		if err := checkHandle(fd, si.verify); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	fh, e := l.fs.handleFor(fd, &st)
	if e != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("file handle: %w", e)
	}
	in := &inode{id: si.id, key: keyOf(&st), typ: si.typ, submount: si.submount, fh: fh, keep: fh == nil, fd: fd}
	if fh != nil {
		unix.Close(fd)
		in.fd = -1
	}
	if si.loc == locPath && len(si.path) == 1 {
		in.parent, in.name = si.base, si.path[0]
	}
	return in, nil
}

// walk opens path beneath the directory inode base, one component at a
// time (see walkDir), and returns an O_PATH descriptor of its last
// component, or of base itself for an empty path.
func (l *loader) walk(base uint64, path []string) (int, error) {
	b := l.inodes[base]
	if b == nil || b.lost {
		return -1, fmt.Errorf("the directory it is relative to (inode %d) was not restored", base)
	}
	if e := b.pin(); e != 0 {
		return -1, e
	}
	defer b.unpin()
	if len(path) == 0 {
		return unix.Openat(l.fs.procFd, itoa(b.fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	}
	dirfd, err := l.fs.walkDir(b.fd, path[:len(path)-1])
	if err != nil {
		return -1, err
	}
	fd, err := l.fs.beneath.OpenBeneath(dirfd, path[len(path)-1], unix.O_PATH)
	if dirfd != b.fd {
		unix.Close(dirfd)
	}
	return fd, err
}

// openHandle opens si's file handle on its mount and checks that the inode
// is inside the share: the path sent with it leads to it, or, for a
// directory, its ".." chain reaches the share root. A handle could name any
// inode of the filesystem, and the stream is not trusted.
func (l *loader) openHandle(si *savedInode) (int, error) {
	m := l.mounts[si.mount]
	if m == nil {
		return -1, fmt.Errorf("its mount (source mount id %d) could not be opened", si.mount)
	}
	h, ok := hostfs.NewFileHandle(si.fh.typ, si.fh.bytes)
	if !ok {
		return -1, unix.EINVAL
	}
	fd, err := hostfs.OpenHandle(m.Fd(), h, unix.O_PATH)
	if err != nil {
		return -1, fmt.Errorf("open by file handle: %w", err)
	}
	if si.hasPath {
		if pfd, err := l.walk(si.base, si.path); err == nil {
			same := sameInode(fd, pfd)
			unix.Close(pfd)
			if same {
				return fd, nil
			}
		}
	}
	if si.typ == unix.S_IFDIR && l.dirInside(fd) {
		return fd, nil
	}
	unix.Close(fd)
	return -1, errors.New("the inode its file handle names cannot be shown to be inside the shared directory")
}

// dirInside reports whether walking ".." up from directory fd reaches the
// share root.
func (l *loader) dirInside(fd int) bool {
	root := l.fs.inodes.root.key
	cur := fd
	defer func() {
		if cur != fd {
			unix.Close(cur)
		}
	}()
	var st unix.Statx_t
	if hostfs.Statx(cur, &st) != nil {
		return false
	}
	for range 2 * maxPathComponents {
		k := keyOf(&st)
		if k.dev == root.dev && k.ino == root.ino {
			return true
		}
		up, err := unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		if cur != fd {
			unix.Close(cur)
		}
		cur = up
		if hostfs.Statx(cur, &st) != nil {
			return false
		}
		if nk := keyOf(&st); nk == k {
			return false // the top of the mount tree
		}
	}
	return false
}

// sameInode reports whether descriptors a and b refer to one host inode.
func sameInode(a, b int) bool {
	var sa, sb unix.Statx_t
	if hostfs.Statx(a, &sa) != nil || hostfs.Statx(b, &sb) != nil {
		return false
	}
	ka, kb := keyOf(&sa), keyOf(&sb)
	return ka.dev == kb.dev && ka.ino == kb.ino
}

// checkHandle compares the file handle of fd with want, mount ids aside (a
// destination's differ).
func checkHandle(fd int, want *savedHandleBytes) error {
	h, _, err := hostfs.HandleOf(fd)
	if err != nil {
		return fmt.Errorf("file handle to verify: %w", err)
	}
	if h.Type() != want.typ || !bytes.Equal(h.Bytes(), want.bytes) {
		return fmt.Errorf("not the source's inode: file handle %#x:%x, want %#x:%x", h.Type(), h.Bytes(), want.typ, want.bytes)
	}
	return nil
}

// reopen opens the descriptor of handle sh on inode in, with its flags less
// those that act only when a file is first opened (O_CREAT, O_EXCL,
// O_TRUNC), as virtiofsd does.
func (l *loader) reopen(in *inode, sh savedHandle) (int, error) {
	if in == nil || in.lost {
		return -1, errors.New("its inode was not restored")
	}
	flags := unix.O_RDONLY | unix.O_DIRECTORY
	if !sh.dir {
		if e := openKindErr(in.typ); e != 0 {
			return -1, e
		}
		flags = int(sh.flags) & openPassFlags &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
		if l.fs.opts.ReadOnly && writeIntent(flags) {
			return -1, unix.EROFS
		}
	}
	if e := in.pin(); e != 0 {
		return -1, e
	}
	defer in.unpin()
	return l.fs.reopen(in, flags)
}

// insertRestored adds an inode a migration destination restored. Its
// identity maps keep an inode already there (two node IDs the source had
// for one host inode, or that host changes merged).
func (t *inodeTable) insertRestored(in *inode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[in.id] = in
	if in.lost {
		return
	}
	if in.fh != nil {
		if t.byHandle[in.fh.key] == nil {
			t.byHandle[in.fh.key] = in
		}
	} else if t.byKey[in.key] == nil {
		t.byKey[in.key] = in
	}
}

// restore adds handle h under number fh, with the table's reference and a
// reference on its inode.
func (t *handleTable) restore(fh uint64, h *handle) {
	t.inodes.hold(h.ino)
	h.refs.Store(1)
	t.mu.Lock()
	t.m[fh] = h
	t.mu.Unlock()
}

// missing returns the errno for handle number fh that handleTable.get did
// not return: EIO for a handle lost in a migration (as virtiofsd answers),
// EBADF for an unknown one. Numbers are unique across both tables.
func (fs *FS) missing(fh uint64) fuseproto.Errno {
	for _, t := range []*handleTable{&fs.files, &fs.dirs} {
		t.mu.RLock()
		h := t.m[fh]
		t.mu.RUnlock()
		if h != nil && h.lost {
			return unix.EIO
		}
	}
	return unix.EBADF
}
