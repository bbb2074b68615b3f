package passthrough

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// handle is an open file or directory: a real descriptor reopened from the
// inode's O_PATH one. It holds a reference on its inode until it is closed.
type handle struct {
	fd    int
	ino   *inode
	flags int // the open(2) flags fd was opened with
	// refs counts the table's reference (until Release) plus one per
	// request using fd; the descriptor is closed when it reaches zero,
	// so a Release racing a Read never closes (and lets the kernel
	// reuse) a descriptor the Read is about to use.
	refs atomic.Int64
	dir  *dirStream // directory handles only
	// lost: a migration destination could not reopen it
	// (MigrationGuestError); fd is -1, get does not return it, and
	// requests naming it answer EIO (see missing).
	lost bool
}

// handleTable maps file handle numbers to handles. Numbers come from a
// counter shared by the file and directory tables and are never reused, so a
// stale number can never reach another file, and a number names at most one
// handle in either table.
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

// add registers a handle for fd on ino, taking a reference on ino, and
// returns its number.
func (t *handleTable) add(fd int, ino *inode, flags int, dir *dirStream) uint64 {
	t.inodes.hold(ino)
	h := &handle{fd: fd, ino: ino, flags: flags, dir: dir}
	h.refs.Store(1)
	fh := t.next.Add(1)
	t.mu.Lock()
	t.m[fh] = h
	t.mu.Unlock()
	return fh
}

// get returns handle fh with a reference the caller gives back with put, or
// nil if there is no such handle. It does not allocate.
func (t *handleTable) get(fh uint64) *handle {
	t.mu.RLock()
	h := t.m[fh]
	if h != nil {
		if h.lost {
			h = nil
		} else {
			h.refs.Add(1)
		}
	}
	t.mu.RUnlock()
	return h
}

// put gives back a reference from get or the table's own from remove.
func (t *handleTable) put(h *handle) {
	if h.refs.Add(-1) == 0 {
		if h.fd >= 0 {
			unix.Close(h.fd)
		}
		t.inodes.unhold(h.ino)
	}
}

// remove takes handle fh out of the table and returns it still holding the
// table's reference, which the caller gives back with put; nil if unknown.
func (t *handleTable) remove(fh uint64) *handle {
	t.mu.Lock()
	h := t.m[fh]
	delete(t.m, fh)
	t.mu.Unlock()
	return h
}

// closeAll removes every handle and gives back the table's references.
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
