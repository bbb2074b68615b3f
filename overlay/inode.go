package overlay

import (
	"sync"
	"sync/atomic"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// layerObj is one object of the union's view in one layer.
type layerObj struct {
	l     *layer
	fd    int      // O_PATH|O_NOFOLLOW
	marks dirMarks // directories: what the layer directory says
}

// inode is one object of the merged view the guest knows.
//
// Its identity (key) is the host object it originates from: the lower
// object a copy-up came from (recorded in the upper's origin xattr), else
// the upper object, else the topmost lower one. st_ino is derived from the
// key, so it is the same before and after copy-up and across remounts, and
// two names of one lower inode are one inode.
type inode struct {
	id  uint64
	key objKey
	ino atomic.Uint64 // st_ino shown to the guest; changes only when a broken hard link is re-keyed
	typ uint32        // S_IFMT; an inode never changes type

	// mu guards every field below it and serializes changes to the
	// inode's layers (copy-up) and, for a directory, to its entries.
	mu sync.Mutex
	// parent and name are the alias copy-up and whiteouts use: the last
	// name the object was looked up, created or moved under. parent
	// holds a reference on the parent inode. nil for the root.
	parent *inode
	name   string
	// deleted is set once the alias was unlinked, removed or replaced.
	deleted bool

	upper    int        // O_PATH descriptor of the upper object, or -1
	lower    []layerObj // directories: every merged lower dir, topmost first; others: the topmost lower object
	metacopy bool       // the upper holds metadata only; data is in lower[0]
	// dataGen counts the changes of where the data is (copy-ups), so
	// that handles opened before one move to the upper.
	dataGen atomic.Uint64
	// indexed is set for a hard-linked lower file copied up through the
	// index: upper is the index entry, linked under aliases as they are
	// changed. linkedUp tells whether the alias has its upper link.
	indexed  bool
	linkedUp bool
	origin   []byte // the origin file handle (struct ovl_fb), or nil
	// Directories: lowerPath is where the directory is found in the
	// lowers (what an absolute redirect records); redirect is the
	// upper's redirect xattr; opaque its opaque = "y".
	lowerPath string
	redirect  string
	opaque    bool
	impure    bool
	marks     dirMarks // the upper directory's marks
	// prot holds the append-only and immutable flags once flagsKnown.
	prot       uint32
	flagsKnown bool

	// nlookup and refs are guarded by inodeTable.mu, as in passthrough.
	nlookup uint64
	refs    uint64
	// aliasKey is a second identity (guarded by inodeTable.mu).
	aliasKey objKey
	hasAlias bool

	locks  hostfs.Locks
	lockMu sync.Mutex // guards lockFd
	lockFd int        // memfd standing for the inode in POSIX and flock locks, or -1
}

// top returns the descriptor to read attributes from: the upper object if
// any, else the topmost lower one. Caller holds in.mu.
func (in *inode) top() int {
	if in.upper >= 0 {
		return in.upper
	}
	return in.lower[0].fd
}

// dataFd returns the descriptor holding the file data. Caller holds in.mu.
func (in *inode) dataFd() int {
	if in.upper >= 0 && !in.metacopy {
		return in.upper
	}
	if len(in.lower) > 0 {
		return in.lower[0].fd
	}
	return in.upper
}

// close releases the descriptors of an inode nobody references.
func (in *inode) close() {
	in.locks.Close()
	if in.upper >= 0 {
		unix.Close(in.upper)
		in.upper = -1
	}
	for _, lo := range in.lower {
		unix.Close(lo.fd)
	}
	in.lower = nil
	if in.lockFd >= 0 {
		unix.Close(in.lockFd)
		in.lockFd = -1
	}
}

// inodeTable maps node IDs and identities to inodes.
type inodeTable struct {
	mu    sync.Mutex
	byID  map[uint64]*inode
	byKey map[objKey]*inode
	next  uint64
	root  *inode
}

func (t *inodeTable) init(root *inode) {
	t.byID = map[uint64]*inode{fuseproto.RootID: root}
	t.byKey = map[objKey]*inode{root.key: root}
	t.next = fuseproto.RootID + 1
	t.root = root
}

// get returns node id with a reference; EBADF for unknown or forgotten
// nodes.
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

// ref adds a reference to an inode the caller holds one on.
func (t *inodeTable) ref(in *inode) {
	t.mu.Lock()
	in.refs++
	t.mu.Unlock()
}

// put gives back a reference. The last one of a forgotten inode closes it
// and gives back its reference on its parent.
func (t *inodeTable) put(in *inode) {
	for in != nil {
		t.mu.Lock()
		in.refs--
		drop := t.unlinkLocked(in)
		t.mu.Unlock()
		if !drop {
			return
		}
		in.mu.Lock()
		parent := in.parent
		in.parent = nil
		in.close()
		in.mu.Unlock()
		in = parent
	}
}

// addLookup counts one more lookup of an inode the caller holds.
func (t *inodeTable) addLookup(in *inode) {
	t.mu.Lock()
	in.nlookup++
	t.mu.Unlock()
}

// find returns the inode with identity key with a reference and one more
// lookup, or nil.
func (t *inodeTable) find(key objKey) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.byKey[key]
	if in == nil {
		return nil
	}
	in.refs++
	in.nlookup++
	return in
}

// insert adds a new inode with one lookup and one reference, unless one
// with the same key got there first, which is returned instead (with a
// lookup and a reference) and n is not used.
func (t *inodeTable) insert(n *inode) (*inode, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.byKey[n.key]; in != nil {
		in.refs++
		in.nlookup++
		return in, false
	}
	n.id = t.next
	t.next++
	n.nlookup, n.refs = 1, 1
	t.byID[n.id] = n
	t.byKey[n.key] = n
	return n, true
}

// alias makes key a second identity of in (its upper object after a
// copy-up), so that a lookup that cannot decode the origin still finds it.
func (t *inodeTable) alias(in *inode, key objKey) {
	t.mu.Lock()
	if t.byKey[key] == nil && t.byID[in.id] == in && !in.hasAlias {
		t.byKey[key] = in
		in.aliasKey, in.hasAlias = key, true
	}
	t.mu.Unlock()
}

// forget drops n lookups of node id.
func (t *inodeTable) forget(id, n uint64) {
	t.mu.Lock()
	in := t.byID[id]
	if in == nil {
		t.mu.Unlock()
		return
	}
	in.nlookup -= min(n, in.nlookup)
	in.refs++ // put below does the dropping
	t.mu.Unlock()
	t.put(in)
}

// unlinkLocked removes in from the table once nobody references it and
// reports whether the caller must close it.
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
	if in.hasAlias && t.byKey[in.aliasKey] == in {
		delete(t.byKey, in.aliasKey)
	}
	return true
}

// forgetAll drops every lookup of every inode but the root.
func (t *inodeTable) forgetAll() {
	t.mu.Lock()
	var all []*inode
	for _, in := range t.byID {
		if in != t.root {
			in.nlookup = 0
			in.refs++
			all = append(all, in)
		}
	}
	t.mu.Unlock()
	for _, in := range all {
		t.put(in)
	}
}

// len returns the number of inodes in the table.
func (t *inodeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// rekey gives in a new identity: a hard-linked lower file copied up
// without the index is an inode of its own from then on (the link breaks,
// as on kernel overlayfs with index=off), and the other names of the lower
// inode become another inode on their next lookup.
func (t *inodeTable) rekey(in *inode, key objKey) {
	t.mu.Lock()
	if t.byKey[in.key] == in {
		delete(t.byKey, in.key)
	}
	if in.hasAlias && t.byKey[in.aliasKey] == in {
		delete(t.byKey, in.aliasKey)
	}
	in.hasAlias = false
	in.key = key
	if t.byKey[key] == nil {
		t.byKey[key] = in
	}
	t.mu.Unlock()
}

// dropLookup takes back one lookup counted by adopt from an inode the
// caller holds a reference on (an internal use that is no reply).
func (t *inodeTable) dropLookup(in *inode) {
	t.mu.Lock()
	if in.nlookup > 0 {
		in.nlookup--
	}
	t.mu.Unlock()
}
