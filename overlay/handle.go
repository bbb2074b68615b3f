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

	// swapMu guards fd, gen and stale of a read-only handle, whose
	// descriptor moves to the upper after a copy-up (as kernel
	// overlayfs's files do since 4.19).
	swapMu sync.Mutex
	gen    uint64
	stale  []int // descriptors replaced, closed with the handle
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

// readFd returns the descriptor to read h's data through: for a handle
// opened before a copy-up, the upper file, reopened with the handle's flags
// on first use after it.
func (fs *FS) readFd(h *handle) int {
	if h.upper {
		return h.fd
	}
	g := h.ino.dataGen.Load()
	h.swapMu.Lock()
	defer h.swapMu.Unlock()
	if h.gen != g {
		h.ino.mu.Lock()
		src, up := h.ino.dataFd(), h.ino.upper
		h.ino.mu.Unlock()
		if src == up && up >= 0 {
			if nfd, err := fs.reopen(src, h.flags&^unix.O_TRUNC); err == nil {
				h.stale = append(h.stale, h.fd)
				h.fd = nfd
			}
		}
		h.gen = g
	}
	return h.fd
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
		for _, fd := range h.stale {
			unix.Close(fd)
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
