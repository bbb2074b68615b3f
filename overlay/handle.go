package overlay

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// handle is an open file or directory of the union.
type handle struct {
	fd    int // the host descriptor: upper or lower file; a directory's upper, or -1
	ino   *inode
	flags int
	upper bool // fd is the upper object's (writes are possible)
	refs  atomic.Int64
	dir   *dirStream // directory handles only

	flockMu sync.Mutex
	flockFd int // the handle's own descriptor of the inode's lock file, or -1
}

// handleTable maps handle numbers to handles; numbers come from a counter
// shared by files and directories and are never reused.
type handleTable struct {
	mu     sync.RWMutex
	m      map[uint64]*handle
	next   *atomic.Uint64
	inodes *inodeTable
}

func (t *handleTable) init(inodes *inodeTable, next *atomic.Uint64) {
	t.m = map[uint64]*handle{}
	t.next = next
	t.inodes = inodes
}

// add registers a handle, taking a reference on its inode.
func (t *handleTable) add(h *handle) uint64 {
	t.inodes.ref(h.ino)
	h.refs.Store(1)
	h.flockFd = -1
	fh := t.next.Add(1)
	t.mu.Lock()
	t.m[fh] = h
	t.mu.Unlock()
	return fh
}

// get returns handle fh with a reference, or nil.
func (t *handleTable) get(fh uint64) *handle {
	t.mu.RLock()
	h := t.m[fh]
	if h != nil {
		h.refs.Add(1)
	}
	t.mu.RUnlock()
	return h
}

// put gives back a reference; the last closes the descriptors.
func (t *handleTable) put(h *handle) {
	if h.refs.Add(-1) == 0 {
		if h.fd >= 0 {
			unix.Close(h.fd)
		}
		if h.flockFd >= 0 {
			unix.Close(h.flockFd)
		}
		t.inodes.put(h.ino)
	}
}

// remove takes fh out of the table, returning it with the table's
// reference.
func (t *handleTable) remove(fh uint64) *handle {
	t.mu.Lock()
	h := t.m[fh]
	delete(t.m, fh)
	t.mu.Unlock()
	return h
}

// closeAll removes every handle.
func (t *handleTable) closeAll() {
	t.mu.Lock()
	hs := make([]*handle, 0, len(t.m))
	for fh, h := range t.m {
		hs = append(hs, h)
		delete(t.m, fh)
	}
	t.mu.Unlock()
	for _, h := range hs {
		t.put(h)
	}
}

// len returns the number of open handles.
func (t *handleTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}
