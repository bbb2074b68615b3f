package overlay

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// FS is a union of a writable upper directory over read-only lower ones,
// served as a fuseproto.FileSystem. Its methods are safe for concurrent use.
type FS struct {
	cfg  Config
	opts Options
	log  hclog.Logger
	x    names
	oci  bool // read OCI/AUFS whiteouts in the lowers

	upper  *layer // nil for a read-only union
	lowers []*layer
	workFd int // O_PATH of <workdir>/work, or -1
	// indexFd is O_PATH of <workdir>/index, or -1 without index=on.
	indexFd int
	tmpSeq  atomic.Uint64 // names of temporary objects in the work dir

	res    hostfs.Resolver
	creds  *hostfs.Switcher
	procFd int

	timeout      uint64
	openFlags    uint32
	opendirFlags uint32
	initFlags    atomic.Uint64
	session      atomic.Pointer[chan struct{}]

	// renameMu serializes renames, so that the two parents' mutexes can
	// be taken in a fixed order and no directory moves under a rename
	// checking ancestry.
	renameMu sync.Mutex

	devMu sync.Mutex
	devs  map[uint64]int

	originMu    sync.Mutex
	originCache map[string]originInfo

	inodes inodeTable
	files  handleTable
	dirs   handleTable
	nextFh atomic.Uint64
}

var _ fuseproto.FileSystem = (*FS)(nil)

// New opens the layers of cfg and returns the union. The work directory
// gets kernel overlayfs's layout (work/ for temporary objects, emptied
// here, and index/ with index=on), except with Options.ReadOnly, which
// leaves it untouched. New sets the process umask to 0, as
// passthrough.New does: the filesystem applies each request's umask itself.
func New(cfg Config, opts Options) (*FS, error) {
	if len(cfg.Lower) == 0 {
		return nil, errors.New("overlay: at least one lower layer is needed")
	}
	if (cfg.Upper == "") != (cfg.Work == "") {
		return nil, errors.New("overlay: upperdir and workdir go together")
	}
	unix.Umask(0)
	fs := &FS{
		cfg:          cfg,
		opts:         opts,
		log:          opts.Logger,
		x:            newNames(cfg.UserXattr),
		oci:          true,
		workFd:       -1,
		indexFd:      -1,
		procFd:       -1,
		timeout:      opts.Cache.Timeout(),
		openFlags:    opts.Cache.OpenFlags(),
		opendirFlags: opts.Cache.OpendirFlags(),
		devs:         map[uint64]int{},
		originCache:  map[string]originInfo{},
	}
	if fs.log == nil {
		fs.log = hclog.NewNullLogger()
	}
	ok := false
	defer func() {
		if !ok {
			fs.closeLayers()
		}
	}()
	procFd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("overlay: open /proc/self/fd (is /proc mounted?): %w", err)
	}
	fs.procFd = procFd
	if cfg.Upper != "" {
		l, err := openLayer(cfg.Upper, 0, true)
		if err != nil {
			return nil, err
		}
		fs.upper = l
		fs.fsIndex(l.dev)
	}
	for i, p := range cfg.Lower {
		l, err := openLayer(p, i+1, false)
		if err != nil {
			return nil, err
		}
		fs.lowers = append(fs.lowers, l)
		fs.fsIndex(l.dev)
	}
	if err := fs.checkNesting(cfg); err != nil {
		return nil, err
	}
	if fs.upper != nil {
		if err := fs.setupWork(cfg.Work); err != nil {
			return nil, err
		}
	}
	if fs.creds, err = hostfs.NewSwitcher(fs.log); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	root, err := fs.newRoot()
	if err != nil {
		return nil, err
	}
	sess := make(chan struct{})
	fs.session.Store(&sess)
	fs.inodes.init(root)
	fs.files.init(&fs.inodes, &fs.nextFh)
	fs.dirs.init(&fs.inodes, &fs.nextFh)
	ok = true
	return fs, nil
}

// setupWork opens the work directory, checks that it shares the upper's
// filesystem (renames between them must work), and prepares work/ (emptied
// of what a previous run left) and, with index=on, index/; with
// Options.ReadOnly it only opens index/, if there is one.
func (fs *FS) setupWork(path string) error {
	wd, err := openLayer(path, -1, true)
	if err != nil {
		return fmt.Errorf("overlay: workdir: %w", err)
	}
	defer wd.close()
	if wd.dev != fs.upper.dev {
		return fmt.Errorf("overlay: workdir %q and upperdir %q must be on the same filesystem", path, fs.upper.path)
	}
	if fs.opts.ReadOnly {
		// Nothing changes, in the work directory either: work/ is not
		// made or emptied, and index/ (the copied-up hard links) is
		// only read, when an earlier writable run made it.
		if fs.cfg.Index {
			fd, err := fs.res.OpenBeneath(wd.root, "index", unix.O_PATH|unix.O_DIRECTORY)
			switch {
			case err == nil:
				fs.indexFd = fd
			case err != unix.ENOENT:
				return fmt.Errorf("overlay: open %s/index: %w", path, err)
			}
		}
		return nil
	}
	open := func(name string) (int, error) {
		if err := unix.Mkdirat(wd.root, name, 0); err != nil && err != unix.EEXIST {
			return -1, fmt.Errorf("overlay: create %s/%s: %w", path, name, err)
		}
		fd, err := fs.res.OpenBeneath(wd.root, name, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return -1, fmt.Errorf("overlay: open %s/%s: %w", path, name, err)
		}
		return fd, nil
	}
	if fs.workFd, err = open("work"); err != nil {
		return err
	}
	if err := fs.emptyDir(fs.workFd); err != nil {
		return fmt.Errorf("overlay: clean %s/work: %w", path, err)
	}
	// RENAME_WHITEOUT and trusted (or user) xattrs are what the upper
	// needs; probe both once so a bad upper fails here, not mid-request.
	if err := fs.probeUpper(); err != nil {
		return err
	}
	if fs.cfg.Index {
		if fs.indexFd, err = open("index"); err != nil {
			return err
		}
	}
	return nil
}

// probeUpper checks that the work directory's filesystem takes the
// overlay's xattrs and whiteouts.
func (fs *FS) probeUpper() error {
	name := fs.tmpName()
	if err := unix.Mkdirat(fs.workFd, name, 0); err != nil {
		return fmt.Errorf("overlay: workdir not writable: %w", err)
	}
	defer fs.removeAllAt(fs.workFd, name)
	fd, err := fs.res.OpenBeneath(fs.workFd, name, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("overlay: workdir: %w", err)
	}
	defer unix.Close(fd)
	if err := setx(fd, fs.x.opaque, "y"); err != nil {
		return fmt.Errorf("overlay: upper filesystem does not take %s xattrs (%w); try userxattr", fs.x.prefix, err)
	}
	if err := unix.Mknodat(fd, "w", unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("overlay: cannot create whiteouts on the upper filesystem: %w", err)
	}
	return nil
}

// newRoot builds the root inode: the upper root over every lower root.
func (fs *FS) newRoot() (*inode, error) {
	root := &inode{id: fuseproto.RootID, typ: unix.S_IFDIR, upper: -1, lockFd: -1, nlookup: 1, refs: 1}
	for _, l := range fs.lowers {
		fd, err := unix.Openat(l.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			root.close()
			return nil, fmt.Errorf("overlay: %w", err)
		}
		root.lower = append(root.lower, layerObj{l: l, fd: fd, marks: fs.marksOf(fd, l)})
		if root.lower[len(root.lower)-1].marks.opaque {
			break
		}
	}
	top := root.lower[0].fd
	if fs.upper != nil {
		fd, err := unix.Openat(fs.upper.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			root.close()
			return nil, fmt.Errorf("overlay: %w", err)
		}
		root.upper = fd
		root.marks = fs.marksOf(fd, fs.upper)
		root.marks.opaque = false // the root is always merged
		_, root.impure = getx(fd, fs.x.impure)
		top = fd
	}
	var st unix.Statx_t
	if err := statx(top, &st); err != nil {
		root.close()
		return nil, fmt.Errorf("overlay: %w", err)
	}
	root.key = keyOf(&st)
	root.ino.Store(fs.xino(root.key))
	return root, nil
}

// closeLayers closes the layer descriptors (New failing, or Close).
func (fs *FS) closeLayers() {
	if fs.upper != nil {
		fs.upper.close()
	}
	for _, l := range fs.lowers {
		l.close()
	}
	for _, fd := range []int{fs.workFd, fs.indexFd, fs.procFd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	fs.workFd, fs.indexFd, fs.procFd = -1, -1, -1
}

// Close ends the session and closes every layer descriptor. It always
// returns nil.
func (fs *FS) Close() error {
	fs.Destroy()
	fs.inodes.mu.Lock()
	root := fs.inodes.root
	fs.inodes.mu.Unlock()
	if root != nil {
		root.mu.Lock()
		root.close()
		root.mu.Unlock()
	}
	fs.closeLayers()
	return nil
}

// Init records the flags negotiated by FUSE_INIT.
func (fs *FS) Init(cfg *fuseproto.Config) {
	if cfg != nil {
		fs.initFlags.Store(cfg.Flags)
	}
}

func (fs *FS) has(flags uint64) bool { return fs.initFlags.Load()&flags == flags }

// Destroy drops every lookup but the root's and closes every handle.
func (fs *FS) Destroy() {
	next := make(chan struct{})
	close(*fs.session.Swap(&next))
	fs.files.closeAll()
	fs.dirs.closeAll()
	fs.inodes.forgetAll()
}

// readOnly reports whether changes are refused (no upper, or ReadOnly).
func (fs *FS) readOnly() bool { return fs.upper == nil || fs.opts.ReadOnly }

// tmpName returns a fresh name for a temporary object in the work dir.
func (fs *FS) tmpName() string {
	return "#" + strconv.FormatUint(uint64(os.Getpid()), 16) + "." + strconv.FormatUint(fs.tmpSeq.Add(1), 16)
}

// statx stats the object open as fd (O_PATH is fine), never following a
// symlink.
func statx(fd int, st *unix.Statx_t) error { return hostfs.Statx(fd, st) }

// errno converts a host error into the errno for the kernel.
func errno(err error) fuseproto.Errno { return hostfs.Errno(err) }

// checkNesting refuses layers that contain one another where kernel
// overlayfs does: the work directory and the upper must be separate
// subtrees (emptying work/ must never touch the upper), and neither may
// overlap a lower.
func (fs *FS) checkNesting(cfg Config) error {
	if fs.upper == nil {
		return nil
	}
	up, err := ancestry(cfg.Upper)
	if err != nil {
		return fmt.Errorf("overlay: upperdir %q: %w", cfg.Upper, err)
	}
	wk, err := ancestry(cfg.Work)
	if err != nil {
		return fmt.Errorf("overlay: workdir %q: %w", cfg.Work, err)
	}
	overlap := func(a, b []objKey) bool { // a inside b, or b inside a
		return slices.Contains(a, b[0]) || slices.Contains(b, a[0])
	}
	if overlap(up, wk) {
		return fmt.Errorf("overlay: workdir %q and upperdir %q must be separate subtrees", cfg.Work, cfg.Upper)
	}
	for _, l := range cfg.Lower {
		lo, err := ancestry(l)
		if err != nil {
			return fmt.Errorf("overlay: lowerdir %q: %w", l, err)
		}
		if overlap(up, lo) {
			return fmt.Errorf("overlay: upperdir %q and lowerdir %q overlap", cfg.Upper, l)
		}
		if overlap(wk, lo) {
			return fmt.Errorf("overlay: workdir %q and lowerdir %q overlap", cfg.Work, l)
		}
	}
	return nil
}

// ancestry returns the identities of directory path and each of its
// ancestors up to the root, the directory first.
func ancestry(path string) ([]objKey, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var out []objKey
	for range 4096 {
		var st unix.Statx_t
		if err := statx(fd, &st); err != nil {
			unix.Close(fd)
			return nil, err
		}
		k := keyOf(&st)
		if len(out) > 0 && out[len(out)-1] == k {
			break // the root is its own parent
		}
		out = append(out, k)
		up, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
		fd = up
	}
	unix.Close(fd)
	return out, nil
}
