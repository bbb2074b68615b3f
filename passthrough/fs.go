package passthrough

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// FS is a host directory served as a fuseproto.FileSystem. Its methods are
// safe for concurrent use.
type FS struct {
	opts Options
	log  hclog.Logger

	procFd int // O_PATH descriptor of /proc/self/fd

	// creds runs the creating operations with the caller's ids.
	creds *hostfs.Switcher
	// beneath opens single names beneath a directory descriptor.
	beneath hostfs.Resolver

	timeout      uint64 // entry and attribute timeout, seconds
	openFlags    uint32 // FOPEN_* for Open and Create
	opendirFlags uint32 // FOPEN_* for Opendir

	initFlags atomic.Uint64 // negotiated INIT flags from Init
	// session is closed by Destroy (and replaced), ending lock waits.
	session atomic.Pointer[chan struct{}]

	inodes inodeTable
	// knownLookups counts LOOKUPs answered by lookupKnown (one statx).
	knownLookups atomic.Uint64
	files        handleTable
	dirs         handleTable
	nextFh       atomic.Uint64

	// fhMode is the InodeFileHandles mode in effect (see FileHandles).
	fhMode atomic.Int32
	// mounts holds a descriptor per host mount for opening file handles.
	mounts hostfs.Mounts
	// noHandles: mount ids whose lack of file handles has been logged
	// (a map under a mutex: a sync.Map would box the id, an allocation
	// per lookup on a filesystem without handles).
	noHandlesMu sync.Mutex
	noHandles   map[uint64]bool
}

var (
	_ fuseproto.FileSystem   = (*FS)(nil)
	_ fuseproto.BackingFiler = (*FS)(nil)
)

// New opens the directory root (following symlinks in the path the
// administrator gave) and returns a filesystem serving it.
//
// New sets the process umask to 0: the kernel sends each creating request's
// umask with it (FUSE_DONT_MASK), and the filesystem applies that one; a
// process umask would be applied on top and strip bits the guest asked for.
func New(root string, opts Options) (*FS, error) {
	switch opts.Cache {
	case CacheAuto, CacheNever, CacheMetadata, CacheAlways:
	default:
		return nil, fmt.Errorf("passthrough: invalid cache policy %d", int(opts.Cache))
	}
	switch opts.InodeFileHandles {
	case FileHandlesPrefer, FileHandlesNever, FileHandlesMandatory:
	default:
		return nil, fmt.Errorf("passthrough: invalid inode file handles mode %d", int(opts.InodeFileHandles))
	}
	if err := opts.checkMigration(); err != nil {
		return nil, err
	}
	unix.Umask(0)
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("passthrough: shared directory %q is not a directory", root)
		}
		return nil, fmt.Errorf("passthrough: open shared directory %q: %w", root, err)
	}
	procFd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFd)
		return nil, fmt.Errorf("passthrough: open /proc/self/fd (is /proc mounted?): %w", err)
	}
	return build(root, rootFd, procFd, opts, nil)
}

// Clone returns a filesystem over the same shared directory, with the same
// options and inode and handle tables of its own, for another FUSE
// session (the stream transport serves one per connection). It opens no
// path, so it works in the sandbox. The clone is closed on its own.
func (fs *FS) Clone() (*FS, error) {
	root := fs.inodes.rootInode()
	if root == nil {
		return nil, errors.New("passthrough: Clone of a closed filesystem")
	}
	rootFd, err := unix.FcntlInt(uintptr(root.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("passthrough: clone: dup of the shared directory: %w", err)
	}
	procFd, err := unix.FcntlInt(uintptr(fs.procFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFd)
		return nil, fmt.Errorf("passthrough: clone: dup of /proc/self/fd: %w", err)
	}
	opts := fs.opts
	opts.InodeFileHandles = fs.FileHandles()
	// The credential switcher is shared: it holds the daemon's own ids,
	// which the sandbox's seccomp filter no longer lets it ask for.
	return build("(clone)", rootFd, procFd, opts, fs.creds)
}

// build makes the filesystem over the shared directory rootFd (named root
// in errors), taking both descriptors, which it closes on failure; creds,
// if not nil, is the credential switcher to use.
func build(root string, rootFd, procFd int, opts Options, creds *hostfs.Switcher) (*FS, error) {
	var st unix.Statx_t
	if err := hostfs.Statx(rootFd, &st); err != nil {
		unix.Close(rootFd)
		unix.Close(procFd)
		return nil, fmt.Errorf("passthrough: stat shared directory %q: %w", root, err)
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var err error
	if creds == nil {
		creds, err = hostfs.NewSwitcher(log)
	}
	if err != nil {
		unix.Close(rootFd)
		unix.Close(procFd)
		return nil, fmt.Errorf("passthrough: %w", err)
	}
	fs := &FS{
		opts:         opts,
		log:          log,
		procFd:       procFd,
		creds:        creds,
		timeout:      opts.Cache.Timeout(),
		openFlags:    opts.Cache.OpenFlags(),
		opendirFlags: opts.Cache.OpendirFlags(),
	}
	if opts.Timeout != nil {
		fs.timeout = *opts.Timeout
	}
	sess := make(chan struct{})
	fs.session.Store(&sess)
	fs.fhMode.Store(int32(opts.InodeFileHandles))
	rootIn := &inode{
		id:      fuseproto.RootID,
		key:     keyOf(&st),
		fd:      rootFd,
		keep:    true,
		typ:     unix.S_IFDIR,
		nlookup: 1,
		refs:    1, // permanent, given back by Close
	}
	if err := fs.setupFileHandles(rootIn, &st); err != nil {
		unix.Close(rootFd)
		unix.Close(procFd)
		return nil, err
	}
	fs.inodes.init(rootIn, &fs.mounts)
	fs.files.init(&fs.inodes, &fs.nextFh)
	fs.dirs.init(&fs.inodes, &fs.nextFh)
	return fs, nil
}

// Close ends the session like Destroy and then closes the root and
// /proc/self/fd descriptors. Requests arriving afterwards answer EBADF. It
// always returns nil.
func (fs *FS) Close() error {
	fs.Destroy()
	fs.inodes.closeRoot()
	if fd := fs.procFd; fd >= 0 {
		fs.procFd = -1
		unix.Close(fd)
	}
	return nil
}

// Init records the flags negotiated by FUSE_INIT; the writeback cache
// changes how files are opened and POSIX ACL support how the umask applies.
func (fs *FS) Init(cfg *fuseproto.Config) {
	if cfg != nil {
		fs.initFlags.Store(cfg.Flags)
	}
	fs.recheckFileHandles()
}

// has reports whether all of the INIT flags are in effect.
func (fs *FS) has(flags uint64) bool { return fs.initFlags.Load()&flags == flags }

// Destroy drops every lookup of every inode but the root and closes every
// file and directory handle, as when the guest unmounts. Requests still
// running keep what they use until they finish.
func (fs *FS) Destroy() {
	next := make(chan struct{})
	close(*fs.session.Swap(&next))
	fs.files.closeAll()
	fs.dirs.closeAll()
	fs.inodes.forgetAll()
}

// reopen opens a new descriptor for the inode with flags, through its
// /proc/self/fd entry. The caller has checked that the inode is a regular
// file or a directory: nothing else is ever opened.
func (fs *FS) reopen(in *inode, flags int) (int, error) {
	for {
		fd, err := unix.Openat(fs.procFd, itoa(in.fd), flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// entry fills out for the inode in with attributes st, as a reply that
// counts one lookup (which the caller has recorded).
func (fs *FS) entry(in *inode, st *unix.Statx_t, out *fuseproto.EntryOut) {
	*out = fuseproto.EntryOut{
		NodeID:     in.id,
		EntryValid: fs.timeout,
		AttrValid:  fs.timeout,
	}
	fillAttr(&out.Attr, st, in.submount)
}

// newEntry adopts fd, the O_PATH descriptor of an inode just found or made as
// name in directory parent ("" when it has no name there, as for ".." or
// O_TMPFILE), counts one lookup of it and fills out. It returns the inode
// pinned with a reference the caller gives back with put. With file
// handles in use, the inode is identified by its handle and fd is closed
// when the caller puts it.
func (fs *FS) newEntry(parent *inode, name string, fd int, out *fuseproto.EntryOut) (*inode, fuseproto.Errno) {
	var st unix.Statx_t
	if err := hostfs.Statx(fd, &st); err != nil {
		unix.Close(fd)
		return nil, hostfs.Errno(err)
	}
	submount := false
	if fs.opts.AnnounceSubmounts && uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR &&
		st.Mask&unix.STATX_MNT_ID != 0 && st.Mnt_id != parent.key.mnt {
		submount = true
	}
	var pid uint64
	if name != "" {
		pid = parent.id
	}
	in, e := fs.adoptEntry(fd, &st, submount, pid, name)
	if e != 0 {
		return nil, e
	}
	fs.entry(in, &st, out)
	return in, 0
}

// openKindErr returns the errno for opening an inode of type typ, or 0 for a
// regular file.
func openKindErr(typ uint32) fuseproto.Errno {
	switch typ {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return unix.EISDIR
	case unix.S_IFLNK:
		return unix.ELOOP
	}
	// Device nodes, fifos and sockets: the guest kernel opens these
	// itself and never asks; a request to is hostile.
	return unix.ENXIO
}

// itoa formats a descriptor number for a /proc/self/fd lookup.
func itoa(fd int) string { return strconv.Itoa(fd) }
