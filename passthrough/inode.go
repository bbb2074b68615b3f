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

// inode is one host inode the guest knows (or a request is using). Its fd is
// an O_PATH|O_NOFOLLOW descriptor, which keeps the host inode (and so its
// st_ino) alive and lets every operation address it without a path.
type inode struct {
	id  uint64 // our node ID, never reused
	key inodeKey
	fd  int    // O_PATH; valid until the inode is dropped
	typ uint32 // S_IFMT bits; an inode never changes type
	// submount is whether the inode was announced as a submount.
	submount bool

	// nlookup and refs are guarded by inodeTable.mu. nlookup counts the
	// kernel's references (entry replies minus Forget); refs counts our
	// own, held while a request or an open handle uses the inode. The
	// inode is dropped when both are zero.
	nlookup uint64
	refs    uint64

	// locks are the POSIX locks of the inode, one host descriptor per
	// guest lock owner.
	locks hostfs.Locks
}

// inodeTable maps node IDs and host identities to inodes.
type inodeTable struct {
	mu    sync.Mutex
	byID  map[uint64]*inode
	byKey map[inodeKey]*inode
	next  uint64
	root  *inode
}

func (t *inodeTable) init(root *inode) {
	t.byID = map[uint64]*inode{fuseproto.RootID: root}
	t.byKey = map[inodeKey]*inode{root.key: root}
	t.next = fuseproto.RootID + 1
	t.root = root
}

// get returns node id with one more reference, which the caller gives back
// with put; EBADF for a node that is unknown or already forgotten (even if
// a request still running keeps it in the table).
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
	return in, 0
}

// ref adds a reference to an inode the caller already holds one on.
func (t *inodeTable) ref(in *inode) {
	t.mu.Lock()
	in.refs++
	t.mu.Unlock()
}

// put gives back a reference taken by get, ref or adopt.
func (t *inodeTable) put(in *inode) {
	t.mu.Lock()
	in.refs--
	drop := t.unlinkLocked(in)
	t.mu.Unlock()
	if drop {
		in.close()
	}
}

// adopt records one lookup of the host inode open as fd with statx result
// st and returns it with a reference; submount says whether a new inode is
// announced as a submount. It takes ownership of fd: a known inode keeps its
// own descriptor and fd is closed.
func (t *inodeTable) adopt(fd int, st *unix.Statx_t, submount bool) *inode {
	key := keyOf(st)
	t.mu.Lock()
	in := t.byKey[key]
	if in != nil {
		in.nlookup++
		in.refs++
		t.mu.Unlock()
		unix.Close(fd)
		return in
	}
	in = &inode{
		id:       t.next,
		key:      key,
		fd:       fd,
		typ:      uint32(st.Mode) & unix.S_IFMT,
		submount: submount,
		nlookup:  1,
		refs:     1,
	}
	t.next++
	t.byID[in.id] = in
	t.byKey[key] = in
	t.mu.Unlock()
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
		in.close()
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
		in.close()
	}
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
	root.nlookup = 0
	root.refs-- // the table's permanent reference
	drop := root.refs == 0
	t.mu.Unlock()
	if drop {
		root.close()
	}
}

// len returns the number of inodes in the table.
func (t *inodeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// close releases the descriptors of an inode nobody references any more.
func (in *inode) close() {
	in.locks.Close()
	unix.Close(in.fd)
	in.fd = -1
}
