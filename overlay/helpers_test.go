package overlay

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// rootCtx is a request from guest root.
var rootCtx = &fuseproto.Context{}

// fixtureTime is the mtime and atime of every object a test builds in a
// layer, so that a copy-up that loses them shows.
var fixtureTime = time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)

// needRoot skips (or, under CI=true, fails) a test that is not root: the
// overlay needs trusted xattrs, whiteouts (mknod), chown and file handles.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "overlay tests need root (trusted xattrs, whiteouts, chown)")
	}
}

// tmpfsDir returns a fresh directory with a tmpfs mounted on it, unmounted
// at the end of the test. tmpfs has file handles, a UUID and stable inode
// numbers, which st_ino tests across copy-up and remount need.
func tmpfsDir(t testing.TB) string {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		testenv.Missing(t, "mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// union is the host side of a test union: lowers l1..ln (l1 the
// topmost), upper u and work w below one base directory.
type union struct {
	t     testing.TB
	base  string
	lower []string
	upper string
	work  string
	fs    *FS
	opts  Options
	extra string // further mount options
}

// newUnion creates the layer directories of a union with n lowers and,
// with upper, an upper and a work directory, in base (a t.TempDir() when
// empty).
func newUnion(t testing.TB, base string, n int, upper bool) *union {
	t.Helper()
	needRoot(t)
	if base == "" {
		base = t.TempDir()
	}
	u := &union{t: t, base: base, opts: Options{Xattr: true}}
	for i := 1; i <= n; i++ {
		p := filepath.Join(base, "l"+strconv.Itoa(i))
		hostMkdirAll(t, p)
		u.lower = append(u.lower, p)
	}
	if upper {
		u.upper = filepath.Join(base, "u")
		u.work = filepath.Join(base, "w")
		hostMkdirAll(t, u.upper)
		hostMkdirAll(t, u.work)
	}
	return u
}

// L returns the host path of rel in lower i (1 is the topmost).
func (u *union) L(i int, rel string) string { return filepath.Join(u.lower[i-1], rel) }

// U returns the host path of rel in the upper.
func (u *union) U(rel string) string { return filepath.Join(u.upper, rel) }

// optEscape escapes a path for a mount option value.
var optEscape = strings.NewReplacer(`\`, `\\`, ",", `\,`, ":", `\:`).Replace

// options returns the mount options of the union.
func (u *union) options() string {
	var ls []string
	for _, l := range u.lower {
		ls = append(ls, optEscape(l))
	}
	s := "lowerdir=" + strings.Join(ls, ":")
	if u.upper != "" {
		s += ",upperdir=" + optEscape(u.upper) + ",workdir=" + optEscape(u.work)
	}
	if u.extra != "" {
		s += "," + u.extra
	}
	return s
}

// mount serves the union (closing a previous FS first) and closes it at the
// end of the test.
func (u *union) mount() *FS {
	u.t.Helper()
	if u.fs != nil {
		u.fs.Close()
		u.fs = nil
	}
	cfg, err := ParseConfig(u.options())
	if err != nil {
		u.t.Fatalf("ParseConfig(%q): %v", u.options(), err)
	}
	fs, err := New(cfg, u.opts)
	if err != nil {
		u.t.Fatalf("New(%q): %v", u.options(), err)
	}
	fs.Init(&fuseproto.Config{})
	if u.fs == nil {
		u.t.Cleanup(func() {
			if u.fs != nil {
				u.fs.Close()
				u.fs = nil
			}
		})
	}
	u.fs = fs
	return fs
}

// remount is a guest unmount and a fresh daemon on the same layers.
func (u *union) remount() *FS {
	u.t.Helper()
	u.fs.Destroy()
	return u.mount()
}

// Host-side fixture builders. Each sets fixtureTime on what it makes.

func hostMkdirAll(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func hostSetTimes(t testing.TB, p string) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(fixtureTime.UnixNano()), unix.NsecToTimespec(fixtureTime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// hostFile writes a regular file (and its parents) with mode 0644.
func hostFile(t testing.TB, p, data string) {
	t.Helper()
	hostMkdirAll(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	hostSetTimes(t, p)
}

// hostDir makes a directory (and its parents).
func hostDir(t testing.TB, p string) {
	t.Helper()
	hostMkdirAll(t, p)
	hostSetTimes(t, p)
}

// hostWhiteout makes a 0/0 character device, kernel overlayfs's whiteout.
func hostWhiteout(t testing.TB, p string) {
	t.Helper()
	hostMkdirAll(t, filepath.Dir(p))
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, 0); err != nil {
		t.Fatal(err)
	}
}

// hostSetxattr sets an xattr on a host path (not following a symlink).
func hostSetxattr(t testing.TB, p, name, value string) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
		t.Fatalf("lsetxattr %s %s: %v", p, name, err)
	}
}

// hostXattr reads an xattr of a host path.
func hostXattr(p, name string) (string, bool) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

// hostStat lstats a host path; ok false when it does not exist.
func hostStat(t testing.TB, p string) (unix.Stat_t, bool) {
	t.Helper()
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	if err == unix.ENOENT {
		return st, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return st, true
}

// isHostWhiteout reports whether p is a 0/0 character device.
func isHostWhiteout(t testing.TB, p string) bool {
	t.Helper()
	st, ok := hostStat(t, p)
	return ok && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// hostNames lists a host directory, sorted.
func hostNames(t testing.TB, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Operations on the union's FS, as the kernel would send them, as guest
// root. Helpers that fail the test must run on the test's goroutine.

func (u *union) lookup(parent uint64, name string) (fuseproto.EntryOut, fuseproto.Errno) {
	var e fuseproto.EntryOut
	errno := u.fs.Lookup(rootCtx, parent, name, &e)
	return e, errno
}

func (u *union) mustLookup(parent uint64, name string) fuseproto.EntryOut {
	u.t.Helper()
	e, errno := u.lookup(parent, name)
	if errno != 0 {
		u.t.Fatalf("Lookup(%d, %q): %v", parent, name, errno)
	}
	return e
}

// walk looks up a slash-separated path from the root.
func (u *union) walk(path string) (fuseproto.EntryOut, fuseproto.Errno) {
	e := fuseproto.EntryOut{NodeID: fuseproto.RootID}
	for _, c := range strings.Split(path, "/") {
		if c == "" {
			continue
		}
		var errno fuseproto.Errno
		if e, errno = u.lookup(e.NodeID, c); errno != 0 {
			return e, errno
		}
	}
	return e, 0
}

func (u *union) node(path string) uint64 {
	u.t.Helper()
	e, errno := u.walk(path)
	if errno != 0 {
		u.t.Fatalf("walk %q: %v", path, errno)
	}
	return e.NodeID
}

func (u *union) entry(path string) fuseproto.EntryOut {
	u.t.Helper()
	e, errno := u.walk(path)
	if errno != 0 {
		u.t.Fatalf("walk %q: %v", path, errno)
	}
	return e
}

// exists reports whether path is in the merged view; errors but ENOENT
// fail the test.
func (u *union) exists(path string) bool {
	u.t.Helper()
	_, errno := u.walk(path)
	if errno != 0 && errno != unix.ENOENT {
		u.t.Fatalf("walk %q: %v", path, errno)
	}
	return errno == 0
}

// dirOf walks the parent of path and returns its node and the last name.
func (u *union) dirOf(path string) (uint64, string) {
	u.t.Helper()
	dir, name := filepath.Split(path)
	if dir == "" {
		return fuseproto.RootID, name
	}
	return u.node(dir), name
}

func (u *union) attr(node uint64) fuseproto.Attr {
	u.t.Helper()
	var a fuseproto.AttrOut
	if errno := u.fs.Getattr(rootCtx, node, &fuseproto.GetattrIn{}, &a); errno != 0 {
		u.t.Fatalf("Getattr(%d): %v", node, errno)
	}
	return a.Attr
}

func (u *union) setattr(node uint64, in fuseproto.SetattrIn) (fuseproto.Attr, fuseproto.Errno) {
	var a fuseproto.AttrOut
	errno := u.fs.Setattr(rootCtx, node, &in, &a)
	return a.Attr, errno
}

func (u *union) mustSetattr(node uint64, in fuseproto.SetattrIn) fuseproto.Attr {
	u.t.Helper()
	a, errno := u.setattr(node, in)
	if errno != 0 {
		u.t.Fatalf("Setattr(%d, valid %#x): %v", node, in.Valid, errno)
	}
	return a
}

func (u *union) open(node uint64, flags int) (uint64, fuseproto.Errno) {
	var o fuseproto.OpenOut
	errno := u.fs.Open(rootCtx, node, &fuseproto.OpenIn{Flags: uint32(flags)}, &o)
	return o.Fh, errno
}

func (u *union) mustOpen(node uint64, flags int) uint64 {
	u.t.Helper()
	fh, errno := u.open(node, flags)
	if errno != 0 {
		u.t.Fatalf("Open(%d, %#o): %v", node, flags, errno)
	}
	return fh
}

func (u *union) release(node, fh uint64) {
	u.t.Helper()
	if errno := u.fs.Release(rootCtx, node, &fuseproto.ReleaseIn{Fh: fh}); errno != 0 {
		u.t.Fatalf("Release(%d): %v", fh, errno)
	}
}

func (u *union) readAt(node, fh uint64, off int64, n int) string {
	u.t.Helper()
	var d fuseproto.BytesDest
	d.Reset(make([]byte, n))
	if errno := u.fs.Read(rootCtx, node, &fuseproto.ReadIn{Fh: fh, Offset: uint64(off), Size: uint32(n)}, &d); errno != 0 {
		u.t.Fatalf("Read(%d): %v", node, errno)
	}
	return string(d.Bytes())
}

func (u *union) writeAt(node, fh uint64, off int64, data string) {
	u.t.Helper()
	var s fuseproto.BytesSource
	s.Reset([]byte(data))
	n, errno := u.fs.Write(rootCtx, node, &fuseproto.WriteIn{Fh: fh, Offset: uint64(off), Size: uint32(len(data))}, &s)
	if errno != 0 || int(n) != len(data) {
		u.t.Fatalf("Write(%d): %d, %v", node, n, errno)
	}
}

// read reads a whole (small) file of the union through a read-only
// handle.
func (u *union) read(path string) string {
	u.t.Helper()
	node := u.node(path)
	fh := u.mustOpen(node, unix.O_RDONLY)
	defer u.release(node, fh)
	return u.readAt(node, fh, 0, 1<<16)
}

// write opens a file of the union for writing, writes data at 0 and closes
// it.
func (u *union) write(node uint64, data string) {
	u.t.Helper()
	fh := u.mustOpen(node, unix.O_WRONLY)
	u.writeAt(node, fh, 0, data)
	u.release(node, fh)
}

func (u *union) mkdir(path string) (fuseproto.EntryOut, fuseproto.Errno) {
	u.t.Helper()
	p, name := u.dirOf(path)
	var e fuseproto.EntryOut
	errno := u.fs.Mkdir(rootCtx, p, name, &fuseproto.MkdirIn{Mode: 0o755}, &e)
	return e, errno
}

// create creates path with flags (O_CREAT added) and closes the handle.
func (u *union) create(path string, flags int) (fuseproto.EntryOut, fuseproto.Errno) {
	u.t.Helper()
	p, name := u.dirOf(path)
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	errno := u.fs.Create(rootCtx, p, name, &fuseproto.CreateIn{Flags: uint32(flags | unix.O_CREAT), Mode: unix.S_IFREG | 0o644}, &e, &o)
	if errno == 0 {
		u.release(e.NodeID, o.Fh)
	}
	return e, errno
}

func (u *union) unlink(path string) fuseproto.Errno {
	u.t.Helper()
	p, name := u.dirOf(path)
	return u.fs.Unlink(rootCtx, p, name)
}

func (u *union) rmdir(path string) fuseproto.Errno {
	u.t.Helper()
	p, name := u.dirOf(path)
	return u.fs.Rmdir(rootCtx, p, name)
}

func (u *union) rename(from, to string, flags uint32) fuseproto.Errno {
	u.t.Helper()
	p, name := u.dirOf(from)
	q, newName := u.dirOf(to)
	return u.fs.Rename(rootCtx, p, name, q, newName, flags)
}

// dirent is one decoded READDIR(PLUS) entry.
type dirent struct {
	name string
	ino  uint64
	off  uint64
	typ  uint32
	node uint64 // READDIRPLUS only
}

// parseDir decodes a READDIR or READDIRPLUS reply.
func parseDir(b []byte, plus bool) []dirent {
	var out []dirent
	for len(b) > 0 {
		var node uint64
		if plus {
			node = binary.NativeEndian.Uint64(b[0:])
			b = b[fuseproto.EntryOutSize:]
		}
		ino := binary.NativeEndian.Uint64(b[0:])
		off := binary.NativeEndian.Uint64(b[8:])
		n := int(binary.NativeEndian.Uint32(b[16:]))
		typ := binary.NativeEndian.Uint32(b[20:])
		out = append(out, dirent{name: string(b[24 : 24+n]), ino: ino, off: off, typ: typ, node: node})
		b = b[(24+n+7)&^7:]
	}
	return out
}

func (u *union) opendir(node uint64) uint64 {
	u.t.Helper()
	var o fuseproto.OpenOut
	if errno := u.fs.Opendir(rootCtx, node, &fuseproto.OpenIn{}, &o); errno != 0 {
		u.t.Fatalf("Opendir(%d): %v", node, errno)
	}
	return o.Fh
}

func (u *union) releasedir(node, fh uint64) {
	u.t.Helper()
	if errno := u.fs.Releasedir(rootCtx, node, &fuseproto.ReleaseIn{Fh: fh}); errno != 0 {
		u.t.Fatalf("Releasedir(%d): %v", fh, errno)
	}
}

// readdirAt reads one reply of at most size bytes from cookie off.
func (u *union) readdirAt(node, fh, off uint64, size int, plus bool) []dirent {
	u.t.Helper()
	d := fuseproto.NewDirBuffer(make([]byte, 0, size), size, plus)
	if errno := u.fs.Readdir(rootCtx, node, &fuseproto.ReadIn{Fh: fh, Offset: off, Size: uint32(size)}, d); errno != 0 {
		u.t.Fatalf("Readdir(%d, off %d): %v", node, off, errno)
	}
	return parseDir(d.Bytes(), plus)
}

// readdirAll lists an open directory from the start in replies of size
// bytes.
func (u *union) readdirAll(node, fh uint64, size int, plus bool) []dirent {
	u.t.Helper()
	var all []dirent
	var off uint64
	for {
		ents := u.readdirAt(node, fh, off, size, plus)
		if len(ents) == 0 {
			return all
		}
		all = append(all, ents...)
		off = ents[len(ents)-1].off
	}
}

// list opens, reads and closes a directory of the union.
func (u *union) list(node uint64) []dirent {
	u.t.Helper()
	fh := u.opendir(node)
	defer u.releasedir(node, fh)
	return u.readdirAll(node, fh, 4096, false)
}

// ls returns the sorted names (without "." and "..") of the directory at
// path in the union.
func (u *union) ls(path string) []string {
	u.t.Helper()
	return entNames(u.list(u.node(path)))
}

// entNames returns the sorted names of ents without "." and "..".
func entNames(ents []dirent) []string {
	out := []string{}
	for _, e := range ents {
		if e.name != "." && e.name != ".." {
			out = append(out, e.name)
		}
	}
	slices.Sort(out)
	return out
}

// checkDino checks that every entry of directory path (but "..") has the
// d_ino Lookup reports as st_ino, and d_type its file type.
func (u *union) checkDino(path string) {
	u.t.Helper()
	node := u.node(path)
	for _, de := range u.list(node) {
		if de.name == ".." {
			continue
		}
		e, errno := u.lookup(node, de.name)
		if errno != 0 {
			u.t.Errorf("%s: %q listed but Lookup fails: %v", path, de.name, errno)
			continue
		}
		if de.ino != e.Attr.Ino {
			u.t.Errorf("%s: %q has d_ino %d but Lookup st_ino %d", path, de.name, de.ino, e.Attr.Ino)
		}
		if de.typ != e.Attr.Mode>>12 {
			u.t.Errorf("%s: %q has d_type %d but mode %#o", path, de.name, de.typ, e.Attr.Mode)
		}
	}
}
