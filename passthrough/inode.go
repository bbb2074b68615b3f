package passthrough

import (
	"sync"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// inodeKey identifies a host inode: st_dev and st_ino, plus the mount id so
// that one directory bind-mounted twice inside the share is two inodes (the
// guest must see two submounts).
type inodeKey struct {
	dev, ino, mnt uint64
}

// handleKey identifies a host inode referenced by its file handle: the
// mount id (as in inodeKey) and the handle (hostfs.FileHandle.Key). Unlike
// st_ino, a handle is never reused for another inode, so it stays an exact
// identity when no descriptor keeps the inode alive.
type handleKey struct {
	mnt uint64
	fh  string
}

// inode is one host inode the guest knows (or a request is using). It is
// addressed through an O_PATH|O_NOFOLLOW descriptor: either one held for the
// inode's whole life (keep), which also keeps the host inode and its st_ino
// alive, or, for an inode referenced by its file handle, one opened with
// open_by_handle_at while some request uses the inode (pin) and closed after
// the last one.
type inode struct {
	id  uint64 // our node ID, never reused
	key inodeKey
	typ uint32 // S_IFMT bits; an inode never changes type
	// submount is whether the inode was announced as a submount.
	submount bool
	// fh is the inode's file handle and mount, or nil when the inode is
	// not referenced by a handle (handles are off, or its filesystem
	// makes none).
	fh *inodeHandle
	// keep: fd is held from adoption until the inode is dropped. Set for
	// inodes without fh and for the root.
	keep bool
	// lost: a migration destination could not find the inode again
	// (Options.MigrationOnError guest-error); every request on it
	// answers EIO.
	lost bool

	// fd is the O_PATH descriptor. When keep is false it is guarded by
	// fdMu and valid only while pins > 0: a request pins the inode
	// (inodeTable.get, ref, adopt) and reads fd without the mutex until
	// it unpins (put).
	fdMu sync.Mutex
	fd   int
	pins int

	// nlookup and refs are guarded by inodeTable.mu. nlookup counts the
	// kernel's references (entry replies minus Forget); refs counts our
	// own, held while a request or an open handle uses the inode. The
	// inode is dropped when both are zero.
	nlookup uint64
	refs    uint64
	// parent and name (guarded by inodeTable.mu) are the directory and
	// the name of the inode's latest lookup by name, a hint for
	// migration (see SaveState); parent 0 when unknown.
	parent uint64
	name   string

	// locks are the POSIX locks of the inode, one host descriptor per
	// guest lock owner.
	locks hostfs.Locks
}

// inodeTable maps node IDs and host identities to inodes.
type inodeTable struct {
	mu sync.Mutex
	// byID holds every inode. byKey holds those addressed by a held
	// descriptor, byHandle those with a file handle (the root may be
	// in both); a migration destination may put an inode in byID only.
	byID     map[uint64]*inode
	byKey    map[inodeKey]*inode
	byHandle map[handleKey]*inode
	// byName finds an inode that holds its descriptor (keep) by the
	// directory and name of its latest lookup, so that a repeated LOOKUP
	// costs one statx instead of openat2, statx and close (lookupKnown).
	// It is a hint: the statx must show the same host inode.
	byName map[nameKey]*inode
	next   uint64
	root   *inode
	// mounts gives back the mount references of dropped inodes.
	mounts *hostfs.Mounts
}

func (t *inodeTable) init(root *inode, mounts *hostfs.Mounts) {
	t.byID = map[uint64]*inode{fuseproto.RootID: root}
	t.byKey = map[inodeKey]*inode{root.key: root}
	t.byHandle = map[handleKey]*inode{}
	t.byName = map[nameKey]*inode{}
	if root.fh != nil {
		t.byHandle[root.fh.key] = root
	}
	t.next = fuseproto.RootID + 1
	t.root = root
	t.mounts = mounts
}

// get returns node id pinned and with one more reference, which the caller
// gives back with put; EBADF for a node that is unknown or already
// forgotten (even if a request still running keeps it in the table), EIO
// for one lost in a migration, and the error of opening its handle.
func (t *inodeTable) get(id uint64) (*inode, fuseproto.Errno) {
	t.mu.Lock()
	in := t.byID[id]
	if in != nil && in.nlookup == 0 && in != t.root {
		in = nil
	}
	if in != nil {
		in.refs++
	}
	t.mu.Unlock()
	if in == nil {
		return nil, unix.EBADF
	}
	if in.lost {
		t.unhold(in)
		return nil, unix.EIO
	}
	if e := in.pin(); e != 0 {
		t.unhold(in)
		return nil, e
	}
	return in, 0
}

// ref adds a pinned reference to an inode the caller already holds a
// pinned one on.
func (t *inodeTable) ref(in *inode) {
	t.mu.Lock()
	in.refs++
	t.mu.Unlock()
	in.pinAgain()
}

// put gives back a pinned reference taken by get, ref or adopt.
func (t *inodeTable) put(in *inode) {
	in.unpin()
	t.unhold(in)
}

// hold adds a reference that does not pin the inode (an open handle's: it
// has a descriptor of its own) to an inode the caller holds.
func (t *inodeTable) hold(in *inode) {
	t.mu.Lock()
	in.refs++
	t.mu.Unlock()
}

// unhold gives back a reference taken by hold, or the reference part of a
// pinned one whose pin the caller has given back.
func (t *inodeTable) unhold(in *inode) {
	t.mu.Lock()
	in.refs--
	drop := t.unlinkLocked(in)
	t.mu.Unlock()
	if drop {
		in.close(t.mounts)
	}
}

// adopt records one lookup of the host inode open as fd (O_PATH) with
// statx result st and file handle fh (nil when the inode is not to be
// referenced by one), as found under name in directory parent (0 and ""
// when not found by name), and returns it pinned with a reference;
// submount says whether a new inode is announced as a submount. It takes
// ownership of fd and of fh's mount reference: a known inode keeps its own
// and they are given back.
func (t *inodeTable) adopt(fd int, st *unix.Statx_t, fh *inodeHandle, submount bool, parent uint64, name string) *inode {
	key := keyOf(st)
	t.mu.Lock()
	var in *inode
	if fh != nil {
		in = t.byHandle[fh.key]
	}
	if in == nil {
		// An inode with a held descriptor: its st_ino cannot have
		// been reused.
		in = t.byKey[key]
	}
	if in != nil {
		in.nlookup++
		in.refs++
		if parent != 0 {
			t.setNameLocked(in, parent, name)
		}
		t.mu.Unlock()
		if fh != nil {
			t.mounts.Put(fh.mount)
		}
		in.pinWith(fd)
		return in
	}
	in = &inode{
		id:       t.next,
		key:      key,
		typ:      uint32(st.Mode) & unix.S_IFMT,
		submount: submount,
		fh:       fh,
		keep:     fh == nil,
		fd:       fd,
		pins:     1,
		nlookup:  1,
		refs:     1,
	}
	t.next++
	t.byID[in.id] = in
	if fh != nil {
		t.byHandle[fh.key] = in
	} else {
		t.byKey[key] = in
	}
	if parent != 0 {
		t.setNameLocked(in, parent, name)
	}
	t.mu.Unlock()
	return in
}

// adoptKnown is adopt for an inode the table knows by its handle key: it
// records one lookup of it, as found under name in directory parent, and
// returns it pinned with a reference, taking ownership of fd (the inode
// keeps it while pinned, else it is closed). It returns nil, leaving fd to
// the caller, when no inode has that handle. It allocates nothing; key may
// alias a buffer (it is not stored).
func (t *inodeTable) adoptKnown(key handleKey, fd int, parent uint64, name string) *inode {
	t.mu.Lock()
	in := t.byHandle[key]
	if in == nil {
		t.mu.Unlock()
		return nil
	}
	in.nlookup++
	in.refs++
	if parent != 0 {
		t.setNameLocked(in, parent, name)
	}
	t.mu.Unlock()
	in.pinWith(fd)
	return in
}

// nameKey is a directory's node ID and a name in it.
type nameKey struct {
	parent uint64
	name   string
}

// setNameLocked records parent and name as in's latest lookup, and indexes
// in by them when it holds its descriptor. t.mu is held.
func (t *inodeTable) setNameLocked(in *inode, parent uint64, name string) {
	if in.parent == parent && in.name == name {
		return
	}
	t.unnameLocked(in)
	in.parent, in.name = parent, name
	if in.keep && parent != 0 {
		t.byName[nameKey{parent, name}] = in
	}
}

// unnameLocked removes in from byName. t.mu is held.
func (t *inodeTable) unnameLocked(in *inode) {
	if in.parent != 0 {
		if k := (nameKey{in.parent, in.name}); t.byName[k] == in {
			delete(t.byName, k)
		}
	}
}

// named returns the inode last looked up as name in directory parent, if
// it holds its descriptor and is known to the kernel, with a pinned
// reference the caller gives back with put; or nil.
func (t *inodeTable) named(parent uint64, name string) *inode {
	t.mu.Lock()
	in := t.byName[nameKey{parent, name}]
	if in == nil || in.nlookup == 0 || in.lost || !in.keep {
		t.mu.Unlock()
		return nil
	}
	in.refs++
	t.mu.Unlock()
	if in.pin() != 0 { // cannot fail for an inode that keeps its descriptor
		t.unhold(in)
		return nil
	}
	return in
}

// addLookup records one more lookup of an inode the caller holds.
func (t *inodeTable) addLookup(in *inode) {
	t.mu.Lock()
	in.nlookup++
	t.mu.Unlock()
}

// forget drops n lookups of node id. Unknown nodes are ignored, and the root
// is never dropped.
func (t *inodeTable) forget(id, n uint64) {
	t.mu.Lock()
	in := t.byID[id]
	if in == nil {
		t.mu.Unlock()
		return
	}
	if n > in.nlookup {
		n = in.nlookup
	}
	in.nlookup -= n
	drop := t.unlinkLocked(in)
	t.mu.Unlock()
	if drop {
		in.close(t.mounts)
	}
}

// unlinkLocked removes in from the table if nobody references it any more
// and reports whether the caller must close it (after unlocking t.mu).
func (t *inodeTable) unlinkLocked(in *inode) bool {
	if in.nlookup != 0 || in.refs != 0 || in == t.root {
		return false
	}
	if t.byID[in.id] == in {
		delete(t.byID, in.id)
	}
	if t.byKey[in.key] == in {
		delete(t.byKey, in.key)
	}
	if in.fh != nil && t.byHandle[in.fh.key] == in {
		delete(t.byHandle, in.fh.key)
	}
	t.unnameLocked(in)
	return true
}

// forgetAll drops every lookup of every inode but the root; inodes still in
// use are dropped by their last put.
func (t *inodeTable) forgetAll() {
	var drop []*inode
	t.mu.Lock()
	for _, in := range t.byID {
		if in == t.root {
			continue
		}
		in.nlookup = 0
		if t.unlinkLocked(in) {
			drop = append(drop, in)
		}
	}
	t.mu.Unlock()
	for _, in := range drop {
		in.close(t.mounts)
	}
}

// rootInode returns the root inode, or nil once closed.
func (t *inodeTable) rootInode() *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.root
}

// closeRoot removes the root, so that later requests get EBADF, and closes
// it once no request uses it.
func (t *inodeTable) closeRoot() {
	t.mu.Lock()
	root := t.root
	if root == nil {
		t.mu.Unlock()
		return
	}
	t.root = nil
	delete(t.byID, root.id)
	delete(t.byKey, root.key)
	if root.fh != nil {
		delete(t.byHandle, root.fh.key)
	}
	root.nlookup = 0
	root.refs-- // the table's permanent reference
	drop := root.refs == 0
	t.mu.Unlock()
	if drop {
		root.close(t.mounts)
	}
}

// len returns the number of inodes in the table.
func (t *inodeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// pin makes in.fd valid until the matching unpin: a no-op for an inode
// that keeps its descriptor, else the first pin opens the handle. It
// allocates nothing.
func (in *inode) pin() fuseproto.Errno {
	if in.keep {
		return 0
	}
	in.fdMu.Lock()
	defer in.fdMu.Unlock()
	if in.pins == 0 {
		fd, err := hostfs.OpenHandle(in.fh.mount.Fd(), in.fh.h, unix.O_PATH)
		if err != nil {
			return hostfs.Errno(err)
		}
		in.fd = fd
	}
	in.pins++
	return 0
}

// pinAgain adds a pin to an inode the caller has pinned; it cannot fail.
func (in *inode) pinAgain() {
	if in.keep {
		return
	}
	in.fdMu.Lock()
	in.pins++
	in.fdMu.Unlock()
}

// pinWith pins in using fd, an O_PATH descriptor of the same host inode
// that the caller gives up: it becomes in.fd if none is open, else it is
// closed.
func (in *inode) pinWith(fd int) {
	if in.keep {
		unix.Close(fd)
		return
	}
	in.fdMu.Lock()
	if in.pins == 0 {
		in.fd, fd = fd, -1
	}
	in.pins++
	in.fdMu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// unpin gives back a pin; the last one closes the descriptor opened by
// handle.
func (in *inode) unpin() {
	if in.keep {
		return
	}
	in.fdMu.Lock()
	in.pins--
	if in.pins == 0 && in.fd >= 0 {
		unix.Close(in.fd)
		in.fd = -1
	}
	in.fdMu.Unlock()
}

// close releases the descriptors of an inode nobody references any more.
func (in *inode) close(mounts *hostfs.Mounts) {
	in.locks.Close()
	if in.keep && in.fd >= 0 {
		unix.Close(in.fd)
	}
	in.fd = -1
	if in.fh != nil {
		mounts.Put(in.fh.mount)
	}
}
