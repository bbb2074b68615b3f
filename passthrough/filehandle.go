package passthrough

import (
	"errors"
	"fmt"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// InodeFileHandles says when inodes are referenced by file handles
// (name_to_handle_at(2)) instead of a held O_PATH descriptor: virtiofsd's
// --inode-file-handles. With handles the daemon keeps no descriptor per
// inode the guest has looked up, only one per open file and one per host
// mount, which matters for large trees (RLIMIT_NOFILE) and for NFS, whose
// "silly rename" keeps a deleted file around while any descriptor of it is
// open. Opening a handle needs CAP_DAC_READ_SEARCH.
type InodeFileHandles int

const (
	// FileHandlesPrefer uses handles where the filesystem makes them and
	// falls back to a held descriptor, per inode, where it does not
	// (EOPNOTSUPP, EOVERFLOW). New turns handles off altogether when the
	// share root's handle cannot be made or opened (no
	// CAP_DAC_READ_SEARCH), and so does Init when it cannot be opened
	// any more (the daemon dropped the capability after New). It is the
	// default, as in virtiofsd.
	FileHandlesPrefer InodeFileHandles = iota
	// FileHandlesNever always holds an O_PATH descriptor per inode.
	FileHandlesNever
	// FileHandlesMandatory always uses handles: New fails when the share
	// root's handle cannot be made or opened, and a lookup of an inode
	// whose filesystem makes none fails with EOPNOTSUPP.
	FileHandlesMandatory
)

// String returns the mode's name as ParseInodeFileHandles accepts it.
func (m InodeFileHandles) String() string {
	switch m {
	case FileHandlesPrefer:
		return "prefer"
	case FileHandlesNever:
		return "never"
	case FileHandlesMandatory:
		return "mandatory"
	}
	return fmt.Sprintf("InodeFileHandles(%d)", int(m))
}

// ParseInodeFileHandles parses "never", "prefer", "mandatory" or
// "fallback", virtiofsd's deprecated alias of "prefer".
func ParseInodeFileHandles(s string) (InodeFileHandles, error) {
	switch s {
	case "never":
		return FileHandlesNever, nil
	case "prefer", "fallback":
		return FileHandlesPrefer, nil
	case "mandatory":
		return FileHandlesMandatory, nil
	}
	return 0, fmt.Errorf("passthrough: unknown inode file handles mode %q (want never, prefer or mandatory)", s)
}

// inodeHandle is how an inode without a held descriptor is opened: its
// handle and a descriptor of its mount (a reference on fs.mounts).
type inodeHandle struct {
	h     hostfs.FileHandle
	mount *hostfs.Mount
	key   handleKey
}

// open opens the inode with flags.
func (ih *inodeHandle) open(flags int) (int, error) {
	return hostfs.OpenHandle(ih.mount.Fd(), ih.h, flags)
}

// FileHandles returns the mode in effect: Options.InodeFileHandles, except
// that FileHandlesPrefer becomes FileHandlesNever when New found that
// handles do not work for the share.
func (fs *FS) FileHandles() InodeFileHandles { return InodeFileHandles(fs.fhMode.Load()) }

// setupFileHandles checks, as virtiofsd does at start, that the share
// root's handle can be made and opened, and gives the root its handle, so
// that lookups of the root by name ("..", ".") find the root inode. With
// FileHandlesPrefer a failure turns handles off; with FileHandlesMandatory
// it is New's error.
func (fs *FS) setupFileHandles(root *inode, st *unix.Statx_t) error {
	if fs.FileHandles() == FileHandlesNever {
		return nil
	}
	disable := func(what string, err error) error {
		if fs.FileHandles() == FileHandlesMandatory {
			return fmt.Errorf("passthrough: --inode-file-handles=mandatory: %s: %w", what, err)
		}
		fs.log.Warn("file handles do not work for the shared directory; using O_PATH descriptors", "problem", what, "error", err)
		fs.fhMode.Store(int32(FileHandlesNever))
		return nil
	}
	h, mnt, err := hostfs.HandleOf(root.fd)
	if err != nil {
		if errors.Is(err, hostfs.ErrNoHandles) {
			return disable("its filesystem makes no file handles", err)
		}
		return fmt.Errorf("passthrough: file handle of the shared directory: %w", err)
	}
	m, err := fs.mounts.Get(mnt, func() (int, error) { return fs.mountFd(root.fd, st) })
	if err != nil {
		return fmt.Errorf("passthrough: open the shared directory's mount for file handles: %w", err)
	}
	ih := &inodeHandle{h: h, mount: m, key: handleKey{mnt: mnt, fh: h.Key()}}
	fd, err := ih.open(unix.O_PATH)
	if err != nil {
		fs.mounts.Put(m)
		return disable("opening its file handle failed (is CAP_DAC_READ_SEARCH missing?)", err)
	}
	unix.Close(fd)
	root.fh = ih
	return nil
}

// recheckFileHandles opens the root's handle again at FUSE_INIT, by which
// time the daemon has dropped its capabilities (New ran before): if that
// fails now (CAP_DAC_READ_SEARCH was dropped), FileHandlesPrefer turns
// handles off, as virtiofsd decides at start with its final capabilities,
// provided no inode but the root exists yet; with FileHandlesMandatory it
// is logged, and requests will fail.
func (fs *FS) recheckFileHandles() {
	t := &fs.inodes
	t.mu.Lock()
	root := t.root
	if root == nil || root.fh == nil {
		t.mu.Unlock()
		return
	}
	ih := root.fh
	t.mu.Unlock()
	fd, err := ih.open(unix.O_PATH)
	if err == nil {
		unix.Close(fd)
		return
	}
	if fs.FileHandles() == FileHandlesMandatory {
		fs.log.Error("file handles are mandatory but cannot be opened (is CAP_DAC_READ_SEARCH missing?)", "error", err)
		return
	}
	t.mu.Lock()
	if len(t.byID) != 1 || root.fh != ih || fs.files.len()+fs.dirs.len() != 0 {
		t.mu.Unlock()
		fs.log.Error("file handles stopped working while in use", "error", err)
		return
	}
	delete(t.byHandle, ih.key)
	root.fh = nil
	fs.fhMode.Store(int32(FileHandlesNever))
	t.mu.Unlock()
	fs.mounts.Put(ih.mount)
	fs.log.Warn("file handles cannot be opened (is CAP_DAC_READ_SEARCH missing?); using O_PATH descriptors", "error", err)
}

// handleFor returns the handle by which to reference the inode open as fd
// (O_PATH) with statx result st, holding a reference on its mount; nil when
// handles are off or, with FileHandlesPrefer, when the inode's filesystem
// makes none or its mount cannot be opened (the inode then keeps fd).
func (fs *FS) handleFor(fd int, st *unix.Statx_t) (*inodeHandle, fuseproto.Errno) {
	if fs.FileHandles() == FileHandlesNever {
		return nil, 0
	}
	var probe hostfs.HandleProbe
	mnt, err := probe.Of(fd)
	return fs.handleFrom(&probe, mnt, err, fd, st)
}

// handleFrom is handleFor with the handle already made into probe (mnt and
// err are what probe.Of answered).
func (fs *FS) handleFrom(probe *hostfs.HandleProbe, mnt uint64, err error, fd int, st *unix.Statx_t) (*inodeHandle, fuseproto.Errno) {
	mode := fs.FileHandles()
	if err != nil {
		if !errors.Is(err, hostfs.ErrNoHandles) {
			return nil, hostfs.Errno(err)
		}
		fs.warnNoHandles(keyOf(st).mnt, "filesystem makes no file handles", err)
		if mode == FileHandlesMandatory {
			return nil, unix.EOPNOTSUPP
		}
		return nil, 0
	}
	m, err := fs.mounts.Get(mnt, func() (int, error) { return fs.mountFd(fd, st) })
	if err != nil {
		fs.warnNoHandles(mnt, "cannot open a descriptor of the mount for file handles", err)
		if mode == FileHandlesMandatory {
			return nil, unix.EIO
		}
		return nil, 0
	}
	h := probe.Handle()
	return &inodeHandle{h: h, mount: m, key: handleKey{mnt: mnt, fh: h.Key()}}, 0
}

// adoptEntry adopts fd as inodeTable.adopt does, making the inode's file
// handle first when handles are in use. An inode the table already knows
// by its handle (a LOOKUP of a known name) costs no allocation: its handle
// is looked up from a probe on the stack.
func (fs *FS) adoptEntry(fd int, st *unix.Statx_t, submount bool, parent uint64, name string) (*inode, fuseproto.Errno) {
	if fs.FileHandles() == FileHandlesNever {
		return fs.inodes.adopt(fd, st, nil, submount, parent, name), 0
	}
	var probe hostfs.HandleProbe
	mnt, err := probe.Of(fd)
	if err == nil {
		if in := fs.inodes.adoptKnown(handleKey{mnt: mnt, fh: probe.Key()}, fd, parent, name); in != nil {
			return in, 0
		}
	}
	fh, e := fs.handleFrom(&probe, mnt, err, fd, st)
	if e != 0 {
		unix.Close(fd)
		return nil, e
	}
	return fs.inodes.adopt(fd, st, fh, submount, parent, name), 0
}

// mountFd opens a descriptor for open_by_handle_at on the mount of the inode
// open as fd (O_PATH) with statx result st. It must not be O_PATH, so only a
// directory or a regular file is opened (read-only; a regular file without
// blocking on a lease); any other type, as virtiofsd refuses, is EIO. The
// inode is the first of its mount the daemon meets, which is the mount's
// root unless it is the share's own mount.
func (fs *FS) mountFd(fd int, st *unix.Statx_t) (int, error) {
	var flags int
	switch uint32(st.Mode) & unix.S_IFMT {
	case unix.S_IFDIR:
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	case unix.S_IFREG:
		flags = unix.O_RDONLY | unix.O_NONBLOCK
	default:
		return -1, unix.EIO
	}
	for {
		mfd, err := unix.Openat(fs.procFd, itoa(fd), flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return mfd, err
		}
	}
}

// warnNoHandles logs, once per mount, why inodes of that mount are not
// referenced by handles.
func (fs *FS) warnNoHandles(mnt uint64, what string, err error) {
	fs.noHandlesMu.Lock()
	seen := fs.noHandles[mnt]
	if fs.noHandles == nil {
		fs.noHandles = map[uint64]bool{}
	}
	fs.noHandles[mnt] = true
	fs.noHandlesMu.Unlock()
	if seen {
		return
	}
	if fs.FileHandles() == FileHandlesMandatory {
		fs.log.Error("file handles are mandatory but unavailable", "mount_id", mnt, "problem", what, "error", err)
		return
	}
	fs.log.Warn("using O_PATH descriptors for a filesystem", "mount_id", mnt, "problem", what, "error", err)
}
