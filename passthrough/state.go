package passthrough

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// # Migration
//
// SaveState (on the source, after the transport has stopped) writes every
// inode the guest knows and every open handle; LoadState (on the
// destination, before requests flow) finds each inode again in its own
// share and reopens each handle, keeping node IDs and handle numbers, which
// the guest kernel goes on using. These are virtiofsd's semantics:
//
//   - MigrationFindPaths: each inode travels as a path relative to the
//     share (relative to an inode sent before it, to keep the stream
//     linear in the number of inodes). The source finds the path from the
//     name of the inode's latest lookup, checking each step with fstatat
//     against the inode's (st_dev, st_ino, mount id) and, for an inode
//     referenced by its file handle, its handle; when that fails (the
//     guest or a host process renamed something) from the inode's
//     /proc/self/fd link, checked the same way; when that fails too, by
//     searching the whole share. A deleted inode cannot be found and is
//     sent as lost.
//   - MigrationFileHandles: each inode travels as its file handle (on
//     filesystems that make handles; others by path), plus its path when
//     found as above, and each mount of the share as the path of one of
//     its directories. Source and destination must serve the same
//     filesystem (e.g. a network filesystem mounted on both hosts), and
//     the destination needs CAP_DAC_READ_SEARCH.
//   - MigrationVerifyHandles (find-paths only): the source sends each
//     inode's file handle too, and the destination checks that the inode
//     it found has the same handle (mount ids excepted), which catches an
//     inode replaced under the same name.
//   - MigrationConfirmPaths (find-paths only): in virtiofsd it re-checks at
//     switch-over the paths collected while the guest still ran. SaveState
//     runs only at switch-over, so every path is confirmed then whether or
//     not it is set; it is accepted for virtiofsd's command line.
//   - MigrationOnError (destination): with MigrationAbort an inode or
//     handle that cannot be found or reopened fails LoadState (and the
//     migration); with MigrationGuestError it is restored as lost, and
//     every request on it answers EIO, as virtiofsd answers.
//
// The stream is untrusted: LoadState checks every count against the bytes
// left and every name with hostfs.ValidName, resolves paths one component
// at a time beneath inodes already restored (openat2 RESOLVE_BENEATH, no
// symlinks), and accepts an inode opened by file handle only if it is
// shown to lie inside the share: a directory by walking ".." up to the
// share root, anything else by the path sent with it, which must lead to
// the same inode. (A handle from a hostile source could otherwise name
// any inode of the filesystem; virtiofsd trusts the source here.)
//
// Not migrated: POSIX and flock locks (the source's lock descriptors close
// with it; SaveState logs how many inodes held any), and the position and
// buffered entries of directory streams, which the next READDIR restores
// by seeking to the kernel's cookie.

// MigrationMode says how SaveState describes inodes to a destination:
// virtiofsd's --migration-mode. The destination accepts both.
type MigrationMode int

const (
	// MigrationFindPaths sends paths relative to the share. It is the
	// default.
	MigrationFindPaths MigrationMode = iota
	// MigrationFileHandles sends file handles; the destination must
	// serve the same filesystem and have CAP_DAC_READ_SEARCH.
	MigrationFileHandles
)

// String returns the mode's name as ParseMigrationMode accepts it.
func (m MigrationMode) String() string {
	switch m {
	case MigrationFindPaths:
		return "find-paths"
	case MigrationFileHandles:
		return "file-handles"
	}
	return fmt.Sprintf("MigrationMode(%d)", int(m))
}

// ParseMigrationMode parses "find-paths" or "file-handles".
func ParseMigrationMode(s string) (MigrationMode, error) {
	switch s {
	case "find-paths":
		return MigrationFindPaths, nil
	case "file-handles":
		return MigrationFileHandles, nil
	}
	return 0, fmt.Errorf("passthrough: unknown migration mode %q (want find-paths or file-handles)", s)
}

// MigrationOnError says what LoadState does with an inode or handle it
// cannot restore: virtiofsd's --migration-on-error.
type MigrationOnError int

const (
	// MigrationAbort fails LoadState, and with it the migration. It is
	// the default.
	MigrationAbort MigrationOnError = iota
	// MigrationGuestError completes the migration; requests on such an
	// inode or handle answer EIO.
	MigrationGuestError
)

// String returns the policy's name as ParseMigrationOnError accepts it.
func (m MigrationOnError) String() string {
	switch m {
	case MigrationAbort:
		return "abort"
	case MigrationGuestError:
		return "guest-error"
	}
	return fmt.Sprintf("MigrationOnError(%d)", int(m))
}

// ParseMigrationOnError parses "abort" or "guest-error".
func ParseMigrationOnError(s string) (MigrationOnError, error) {
	switch s {
	case "abort":
		return MigrationAbort, nil
	case "guest-error":
		return MigrationGuestError, nil
	}
	return 0, fmt.Errorf("passthrough: unknown migration error policy %q (want abort or guest-error)", s)
}

// checkMigration refuses invalid migration options, and, as virtiofsd does,
// verify-handles or confirm-paths with file-handles (where they make no
// sense).
func (o *Options) checkMigration() error {
	switch o.MigrationMode {
	case MigrationFindPaths, MigrationFileHandles:
	default:
		return fmt.Errorf("passthrough: invalid migration mode %d", int(o.MigrationMode))
	}
	switch o.MigrationOnError {
	case MigrationAbort, MigrationGuestError:
	default:
		return fmt.Errorf("passthrough: invalid migration error policy %d", int(o.MigrationOnError))
	}
	if o.MigrationMode == MigrationFileHandles && o.MigrationVerifyHandles {
		return errors.New("passthrough: migration-verify-handles cannot be used with migration-mode file-handles (because it is unnecessary)")
	}
	if o.MigrationMode == MigrationFileHandles && o.MigrationConfirmPaths {
		return errors.New("passthrough: migration-confirm-paths cannot be used with migration-mode file-handles (because it is unnecessary)")
	}
	return nil
}

// The filesystem's section of the migration stream (fuseproto.Server puts
// it in its own envelope, with the session and a checksum). All integers
// are little-endian.
//
//	magic    "PTFS"
//	version  u16 = 1
//	flags    u16: bit 0 the source used MigrationFileHandles (informative)
//	nextNode u64   the next node ID the source would have given
//	nextFh   u64   the last handle number the source gave
//	mounts   u32 count, then per mount (MigrationFileHandles):
//	    id u64 (the source's mount id), path
//	inodes   u32 count, then per inode, the root first and every inode
//	         after the one its path is relative to:
//	    id u64, nlookup u64, type u8 (S_IFMT >> 12),
//	    flags u8 (bit 0: announced as a submount), location u8:
//	      0 root
//	      1 path:   base u64 (node ID of a directory sent before), path
//	      2 handle: mount u64 (a mount above), handle,
//	                has-path u8, if 1: base u64, path
//	      3 lost:   the source could not find it
//	    has-verify u8, if 1: handle (MigrationVerifyHandles)
//	handles  u32 count, then per open file or directory:
//	    fh u64, node u64, kind u8 (0 file, 1 directory), flags u32 (open(2))
//	path   = u16 count (1..maxPathComponents; 0 only for a mount's path),
//	         then per component: u8 length (1..255), bytes (hostfs.ValidName)
//	handle = type i32, u8 length (1..128), bytes
//
// Unknown flag bits, trailing bytes and out-of-range values are errors; a
// later incompatible change bumps the version.
const (
	stateMagic   = "PTFS"
	stateVersion = 1

	// maxStateSize bounds the section LoadState reads.
	maxStateSize = 1 << 30
	// maxPathComponents bounds a path: PATH_MAX is 4096 bytes, and each
	// component takes at least two.
	maxPathComponents = 2048
	// maxMounts, maxInodes and maxHandles bound the tables, so that a
	// hostile stream cannot make the decoded state (some ten times larger
	// than its minimal encoding) exhaust memory. A source holding more
	// fails the migration; the guest's kernel rarely caches millions of
	// inodes, and open files are bounded by the source's RLIMIT_NOFILE.
	maxMounts  = 1 << 16
	maxInodes  = 1 << 23
	maxHandles = 1 << 22
	// maxID bounds node IDs and handle numbers, far above what counters
	// reach, so that the next ones cannot overflow.
	maxID = 1 << 62

	locRoot   = 0
	locPath   = 1
	locHandle = 2
	locLost   = 3

	stateFlagFileHandles = 1 << 0
	inodeFlagSubmount    = 1 << 0

	// Smallest encodings, to check counts against the bytes left before
	// allocating anything.
	minInodeSize  = 8 + 8 + 1 + 1 + 1 + 1
	minHandleSize = 8 + 8 + 1 + 4
	minMountSize  = 8 + 2
)

// savedState is the decoded section.
type savedState struct {
	fileHandles bool
	nextNode    uint64
	nextFh      uint64
	mounts      []savedMount
	inodes      []savedInode
	handles     []savedHandle

	// found counts how SaveState found inodes (not in the stream).
	found findStats
}

// findStats counts the inodes SaveState found by each means.
type findStats struct {
	chain, proc, search, handle, lost int
}

type savedMount struct {
	id   uint64
	path []string
}

type savedHandleBytes struct {
	typ   int32
	bytes []byte
}

type savedInode struct {
	id, nlookup uint64
	typ         uint32 // S_IFMT bits
	submount    bool
	loc         byte
	// base and path: locPath, and locHandle when hasPath.
	base    uint64
	path    []string
	hasPath bool
	// mount and fh: locHandle.
	mount uint64
	fh    savedHandleBytes
	// verify is the handle to compare (MigrationVerifyHandles), if any.
	verify *savedHandleBytes
}

type savedHandle struct {
	fh, node uint64
	dir      bool
	flags    uint32
}

// fileTypes are the S_IFMT values an inode may have.
var fileTypes = map[uint32]bool{
	unix.S_IFREG: true, unix.S_IFDIR: true, unix.S_IFLNK: true, unix.S_IFCHR: true,
	unix.S_IFBLK: true, unix.S_IFIFO: true, unix.S_IFSOCK: true,
}

// stateWriter appends little-endian values.
type stateWriter struct{ b []byte }

func (w *stateWriter) u8(v byte)    { w.b = append(w.b, v) }
func (w *stateWriter) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *stateWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *stateWriter) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }

func (w *stateWriter) path(p []string) {
	w.u16(uint16(len(p)))
	for _, c := range p {
		w.u8(byte(len(c)))
		w.b = append(w.b, c...)
	}
}

func (w *stateWriter) handle(h savedHandleBytes) {
	w.u32(uint32(h.typ))
	w.u8(byte(len(h.bytes)))
	w.b = append(w.b, h.bytes...)
}

// encodeState returns the section for s, which must be valid (paths of
// valid names, handles of 1..128 bytes).
func encodeState(s *savedState) []byte {
	w := &stateWriter{b: make([]byte, 0, 64+len(s.inodes)*48+len(s.handles)*minHandleSize)}
	w.b = append(w.b, stateMagic...)
	w.u16(stateVersion)
	var flags uint16
	if s.fileHandles {
		flags |= stateFlagFileHandles
	}
	w.u16(flags)
	w.u64(s.nextNode)
	w.u64(s.nextFh)
	w.u32(uint32(len(s.mounts)))
	for _, m := range s.mounts {
		w.u64(m.id)
		w.path(m.path)
	}
	w.u32(uint32(len(s.inodes)))
	for i := range s.inodes {
		si := &s.inodes[i]
		w.u64(si.id)
		w.u64(si.nlookup)
		w.u8(byte(si.typ >> 12))
		if si.submount {
			w.u8(inodeFlagSubmount)
		} else {
			w.u8(0)
		}
		w.u8(si.loc)
		switch si.loc {
		case locPath:
			w.u64(si.base)
			w.path(si.path)
		case locHandle:
			w.u64(si.mount)
			w.handle(si.fh)
			if si.hasPath {
				w.u8(1)
				w.u64(si.base)
				w.path(si.path)
			} else {
				w.u8(0)
			}
		}
		if si.verify != nil {
			w.u8(1)
			w.handle(*si.verify)
		} else {
			w.u8(0)
		}
	}
	w.u32(uint32(len(s.handles)))
	for _, h := range s.handles {
		w.u64(h.fh)
		w.u64(h.node)
		if h.dir {
			w.u8(1)
		} else {
			w.u8(0)
		}
		w.u32(h.flags)
	}
	return w.b
}

// stateReader reads little-endian values from untrusted bytes. The first
// short read or bad value sets err; later reads return zero values, so a
// decoder checks err once per record.
type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("passthrough: migration state: "+format, args...)
	}
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("truncated")
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *stateReader) u8() byte {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *stateReader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *stateReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// count reads a u32 count of records of at least min bytes each, at most
// limit of them, checked against the bytes left.
func (r *stateReader) count(what string, min, limit int) int {
	n := r.u32()
	if r.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) || uint64(n)*uint64(min) > uint64(len(r.b)) {
		r.fail("%d %s do not fit", n, what)
		return 0
	}
	return int(n)
}

// path reads a path; empty only if allowEmpty.
func (r *stateReader) path(allowEmpty bool) []string {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	if n > maxPathComponents || n*2 > len(r.b) || (n == 0 && !allowEmpty) {
		r.fail("bad path length %d", n)
		return nil
	}
	p := make([]string, n)
	for i := range p {
		c := string(r.take(int(r.u8())))
		if r.err != nil {
			return nil
		}
		if hostfs.ValidName(c) != 0 {
			r.fail("bad path component %q", c)
			return nil
		}
		p[i] = c
	}
	return p
}

func (r *stateReader) handle() savedHandleBytes {
	typ := int32(r.u32())
	n := int(r.u8())
	if r.err == nil && (n == 0 || n > hostfs.MaxHandleSize) {
		r.fail("bad file handle length %d", n)
	}
	b := r.take(n)
	if r.err != nil {
		return savedHandleBytes{}
	}
	return savedHandleBytes{typ: typ, bytes: append([]byte(nil), b...)}
}

// decodeState decodes and checks a section: every reference points at a
// record sent before it, node IDs and handle numbers are unique, the root
// comes first and only once, a path's base is a directory, a handle's kind
// matches its inode's type, and nothing follows the last record.
func decodeState(b []byte) (*savedState, error) {
	r := &stateReader{b: b}
	if string(r.take(len(stateMagic))) != stateMagic {
		r.fail("bad magic")
		return nil, r.err
	}
	if v := r.u16(); r.err == nil && v != stateVersion {
		r.fail("version %d, want %d", v, stateVersion)
	}
	flags := r.u16()
	if r.err == nil && flags&^stateFlagFileHandles != 0 {
		r.fail("unknown flags %#x", flags)
	}
	s := &savedState{fileHandles: flags&stateFlagFileHandles != 0}
	s.nextNode = r.u64()
	s.nextFh = r.u64()
	if r.err == nil && (s.nextNode > maxID || s.nextFh > maxID) {
		r.fail("counters out of range")
	}

	nm := r.count("mounts", minMountSize, maxMounts)
	mounts := make(map[uint64]bool, nm)
	s.mounts = make([]savedMount, 0, nm)
	for range nm {
		m := savedMount{id: r.u64(), path: r.path(true)}
		if r.err != nil {
			return nil, r.err
		}
		if mounts[m.id] {
			r.fail("mount %d twice", m.id)
			return nil, r.err
		}
		mounts[m.id] = true
		s.mounts = append(s.mounts, m)
	}

	ni := r.count("inodes", minInodeSize, maxInodes)
	types := make(map[uint64]uint32, ni)
	s.inodes = make([]savedInode, 0, ni)
	for range ni {
		si := savedInode{id: r.u64(), nlookup: r.u64(), typ: uint32(r.u8()) << 12}
		iflags := r.u8()
		si.submount = iflags&inodeFlagSubmount != 0
		si.loc = r.u8()
		if r.err != nil {
			return nil, r.err
		}
		if iflags&^inodeFlagSubmount != 0 {
			r.fail("inode %d: unknown flags %#x", si.id, iflags)
			return nil, r.err
		}
		if !fileTypes[si.typ] {
			r.fail("inode %d: bad type %#o", si.id, si.typ)
			return nil, r.err
		}
		if _, dup := types[si.id]; dup || si.id == 0 || si.id > maxID {
			r.fail("inode %d twice or out of range", si.id)
			return nil, r.err
		}
		first := len(s.inodes) == 0
		if (si.loc == locRoot) != (si.id == fuseproto.RootID) || (si.loc == locRoot) != first {
			r.fail("inode %d: the root must come first, once, with node ID %d", si.id, fuseproto.RootID)
			return nil, r.err
		}
		if si.loc == locRoot && si.typ != unix.S_IFDIR {
			r.fail("the root is not a directory")
			return nil, r.err
		}
		base := func() {
			si.base = r.u64()
			si.path = r.path(false)
			if r.err == nil && types[si.base] != unix.S_IFDIR {
				r.fail("inode %d: base %d is not a directory sent before it", si.id, si.base)
			}
		}
		switch si.loc {
		case locRoot, locLost:
		case locPath:
			base()
		case locHandle:
			si.mount = r.u64()
			si.fh = r.handle()
			if r.err == nil && !mounts[si.mount] {
				r.fail("inode %d: unknown mount %d", si.id, si.mount)
			}
			switch r.u8() {
			case 0:
			case 1:
				si.hasPath = true
				base()
			default:
				r.fail("inode %d: bad has-path flag", si.id)
			}
		default:
			r.fail("inode %d: bad location %d", si.id, si.loc)
		}
		switch r.u8() {
		case 0:
		case 1:
			v := r.handle()
			si.verify = &v
		default:
			r.fail("inode %d: bad has-verify flag", si.id)
		}
		if r.err != nil {
			return nil, r.err
		}
		types[si.id] = si.typ
		s.inodes = append(s.inodes, si)
	}
	if r.err == nil && len(s.inodes) == 0 {
		r.fail("no root")
	}

	nh := r.count("handles", minHandleSize, maxHandles)
	fhs := make(map[uint64]bool, nh)
	used := make(map[uint64]bool, nh)
	s.handles = make([]savedHandle, 0, nh)
	for range nh {
		h := savedHandle{fh: r.u64(), node: r.u64()}
		switch r.u8() {
		case 0:
		case 1:
			h.dir = true
		default:
			r.fail("handle %d: bad kind", h.fh)
		}
		h.flags = r.u32()
		if r.err != nil {
			return nil, r.err
		}
		if h.fh == 0 || h.fh > maxID || fhs[h.fh] {
			r.fail("handle %d twice or out of range", h.fh)
			return nil, r.err
		}
		want := uint32(unix.S_IFREG)
		if h.dir {
			want = unix.S_IFDIR
		}
		if types[h.node] != want {
			r.fail("handle %d: node %d is not a %s sent before", h.fh, h.node, map[bool]string{false: "regular file", true: "directory"}[h.dir])
			return nil, r.err
		}
		fhs[h.fh] = true
		used[h.node] = true
		s.handles = append(s.handles, h)
	}
	if r.err != nil {
		return nil, r.err
	}
	for i := range s.inodes {
		if si := &s.inodes[i]; si.nlookup == 0 && si.loc != locRoot && !used[si.id] {
			r.fail("inode %d: neither looked up nor open", si.id)
			return nil, r.err
		}
	}
	if len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
		return nil, r.err
	}
	return s, nil
}
