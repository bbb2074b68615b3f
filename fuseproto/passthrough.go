package fuseproto

import (
	"sync"
	"sync/atomic"
	"syscall"
)

// FUSE passthrough (Linux 6.9+, FUSE_PASSTHROUGH): the kernel reads and
// writes an open file (read_iter, write_iter, splice, mmap) directly on a
// host file the server named, and no READ or WRITE reaches the server for
// it. The kernel's rules (Documentation/filesystems/fuse-passthrough.rst,
// fs/fuse/backing.c, fs/fuse/iomode.c):
//
//   - INIT negotiates FUSE_PASSTHROUGH with a max_stack_depth; the kernel
//     drops it with the writeback cache.
//   - FUSE_DEV_IOC_BACKING_OPEN registers a host descriptor on the session
//     and returns a backing id; it needs CAP_SYS_ADMIN in the initial user
//     namespace (EPERM otherwise) and a regular file on a filesystem
//     stacked less deep than max_stack_depth (ELOOP otherwise). The kernel
//     keeps the file's path and the registering thread's credentials.
//   - An OPEN or CREATE reply with FOPEN_PASSTHROUGH and backing_id makes
//     the opener look the id up when it processes the reply (not when the
//     server writes it), open its own backing file on that path with the
//     opener's open flags (access mode, O_DIRECT, O_APPEND...) and hold
//     it until the file is closed. So the id must stay registered until
//     RELEASE of the handle; FUSE_DEV_IOC_BACKING_CLOSE then drops it.
//   - With FOPEN_PASSTHROUGH the other open flags may only be DIRECT_IO,
//     PARALLEL_DIRECT_WRITES and NOFLUSH (EIO on open otherwise);
//     KEEP_CACHE is meaningless (the page cache is the host file's) and is
//     cleared.
//   - All opens of one inode at a time are either passthrough with the
//     same backing file, or none is: a passthrough open of an inode open
//     in caching mode, or a caching open of an inode open in passthrough
//     mode, or a second backing file, fails the open(2) with EIO.
//
// The Server keeps that last rule with backingTable: per node, the number
// of opens answered each way and, while passthrough opens are out, the one
// backing id they share. The first open of a node decides its mode; later
// ones follow it until every handle of the node is released. A
// FileSystem's answers are trusted only as far as the host descriptor
// goes: a FileSystem must map one node to one host inode for as long as a
// handle of it is open (package overlay, whose copy-up moves a node to
// another host file, is not a BackingFiler).

// BackingFiler is implemented by a FileSystem whose open regular files are
// host files, so that a transport that can (/dev/fuse) has the kernel do
// their I/O (FUSE passthrough).
type BackingFiler interface {
	// BackingFile returns the host descriptor of open handle fh, just
	// made by Open, Create or Tmpfile, or false when the kernel should
	// send READ and WRITE for it (not a regular file, or the filesystem
	// must see the I/O). The descriptor must stay open until Release of
	// fh. The Server calls it between Open returning and the reply.
	BackingFile(fh uint64) (fd int, ok bool)
}

// BackingReplier is a Replier whose transport can register host files with
// the kernel for FUSE passthrough (/dev/fuse; not virtio-fs, where the
// files live on another kernel).
type BackingReplier interface {
	Replier
	// OpenBacking registers host descriptor fd (FUSE_DEV_IOC_BACKING_OPEN)
	// and returns its backing id, or the ioctl's errno.
	OpenBacking(fd int) (int32, error)
	// CloseBacking drops backing id (FUSE_DEV_IOC_BACKING_CLOSE).
	CloseBacking(id int32) error
}

// passthroughOpenFlags are the FOPEN_* flags the kernel accepts with
// FOPEN_PASSTHROUGH (FOPEN_PASSTHROUGH_MASK) less DIRECT_IO: a FileSystem
// that asks the guest to bypass caching (cache=never) gets no passthrough.
const passthroughOpenFlags = FopenPassthrough | FopenParallelDirectWrites | FopenNoflush

// PassthroughStats counts a Server's FUSE passthrough backing files.
type PassthroughStats struct {
	// Opened and Closed count backing ids registered and dropped; their
	// difference is the ids held now.
	Opened, Closed uint64
	// Passthrough counts opens answered with FOPEN_PASSTHROUGH, Served
	// the opens tracked without it (their nodes were open in caching
	// mode, or BackingFile or BACKING_OPEN said no).
	Passthrough, Served uint64
	// Refused is set once the kernel refused passthrough for the whole
	// session (EPERM: no CAP_SYS_ADMIN in the initial user namespace);
	// the Server tries no more.
	Refused bool
}

// PassthroughStats returns the passthrough counters.
func (s *Server) PassthroughStats() PassthroughStats {
	t := &s.backing
	return PassthroughStats{
		Opened: t.opened.Load(), Closed: t.closed.Load(),
		Passthrough: t.passthrough.Load(), Served: t.served.Load(),
		Refused: t.refused.Load(),
	}
}

// backingTable is the Server's passthrough state; see the comment at the
// top of this file. mu is a leaf: BACKING_OPEN and BACKING_CLOSE ioctls run
// under it (so two first opens of one node cannot register two ids), the
// FileSystem is never called under it.
type backingTable struct {
	refused atomic.Bool

	mu    sync.Mutex
	nodes map[uint64]*backingNode
	files map[uint64]backingFile // by fh: the opens counted in nodes

	opened, closed, passthrough, served atomic.Uint64
}

// backingNode is the open mode of one node.
type backingNode struct {
	id          int32 // the backing id of the passthrough opens, while there are some
	passthrough int   // opens answered with FOPEN_PASSTHROUGH not yet released
	cached      int   // opens answered without it not yet released
}

// backingFile is one open counted in backingTable.nodes.
type backingFile struct {
	node        uint64
	passthrough bool
}

// reset forgets every node and handle: the session ended, and its backing
// ids with it.
func (t *backingTable) reset() {
	t.mu.Lock()
	t.nodes, t.files = nil, nil
	t.mu.Unlock()
}

// openBacking is called after Open, Create or Tmpfile of node succeeded
// with out, before the reply: it turns the reply into a passthrough one
// when the session, the FileSystem, the transport and the node's other
// opens allow it.
func (s *Server) openBacking(st *request, cfg *Config, node uint64, out *OpenOut) {
	if s.bfs == nil || !cfg.Has(InitPassthrough) || s.backing.refused.Load() {
		return
	}
	br, ok := st.r.(BackingReplier)
	if !ok {
		return
	}
	// A node already open in passthrough mode keeps its backing id for
	// every open the flags allow: the kernel fails any other answer.
	flagsOK := out.OpenFlags&^(passthroughOpenFlags|FopenKeepCache) == 0
	fd, hasFile := -1, false
	if flagsOK {
		fd, hasFile = s.bfs.BackingFile(out.Fh)
	}
	t := &s.backing
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nodes == nil {
		t.nodes, t.files = map[uint64]*backingNode{}, map[uint64]backingFile{}
	}
	n := t.nodes[node]
	if n == nil {
		n = &backingNode{}
		t.nodes[node] = n
	}
	use := flagsOK && n.cached == 0 && n.passthrough > 0
	if flagsOK && hasFile && n.cached == 0 && n.passthrough == 0 {
		id, err := br.OpenBacking(fd)
		switch {
		case err == nil:
			n.id, use = id, true
			t.opened.Add(1)
		case err == syscall.EPERM || err == syscall.ENOTTY:
			// The whole session: no CAP_SYS_ADMIN in the initial
			// user namespace, or a kernel without the ioctl.
			if !t.refused.Swap(true) {
				s.log.Info("the kernel refused FUSE passthrough (it needs CAP_SYS_ADMIN in the initial user namespace); the daemon serves READ and WRITE itself", "error", err)
			}
		default:
			// This file: on a stacked filesystem (ELOOP), not
			// readable and writable by the kernel (EOPNOTSUPP), ...
			s.log.Debug("no FUSE passthrough for this file", "nodeid", node, "error", err)
		}
	}
	if !use {
		n.cached++
		t.files[out.Fh] = backingFile{node: node}
		t.served.Add(1)
		return
	}
	n.passthrough++
	t.files[out.Fh] = backingFile{node: node, passthrough: true}
	t.passthrough.Add(1)
	out.OpenFlags = out.OpenFlags&^FopenKeepCache | FopenPassthrough
	out.BackingID = n.id
}

// releaseBacking is called on RELEASE of handle fh: the last passthrough
// handle of a node drops the node's backing id.
func (s *Server) releaseBacking(st *request, fh uint64) {
	if s.bfs == nil {
		return
	}
	t := &s.backing
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.files[fh]
	if !ok {
		return
	}
	delete(t.files, fh)
	n := t.nodes[f.node]
	if !f.passthrough {
		n.cached--
	} else if n.passthrough--; n.passthrough == 0 {
		if br, ok := st.r.(BackingReplier); !ok {
			s.log.Error("RELEASE of a passthrough handle came through a transport without backing files", "nodeid", f.node)
		} else if err := br.CloseBacking(n.id); err != nil {
			s.log.Error("closing a FUSE passthrough backing id failed", "nodeid", f.node, "backing_id", n.id, "error", err)
		} else {
			t.closed.Add(1)
		}
		n.id = 0
	}
	if n.cached == 0 && n.passthrough == 0 {
		delete(t.nodes, f.node)
	}
}
