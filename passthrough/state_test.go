package passthrough

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// guest drives a fuseproto.Server with raw requests, as a guest kernel
// does: the migration tests send the same node IDs and handle numbers to
// the source's Server and to the destination's.
type guest struct {
	t      *testing.T
	s      *fuseproto.Server
	unique uint64
}

type guestReply struct {
	d   fuseproto.BytesDest
	msg []byte
}

func (r *guestReply) DataDest(max int) fuseproto.ReadDest {
	r.d.Reset(make([]byte, max))
	return &r.d
}

func (r *guestReply) Reply(msg []byte, n int) {
	r.msg = append(append([]byte(nil), msg...), r.d.Bytes()[:n]...)
}

// do sends one request and returns the errno and the reply's body.
func (g *guest) do(op fuseproto.Opcode, node uint64, body []byte) (fuseproto.Errno, []byte) {
	g.t.Helper()
	g.unique++
	h := fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + len(body)), Opcode: op, Unique: g.unique, NodeID: node}
	r := &guestReply{}
	g.s.Handle(append(fuseproto.Encode(nil, &h), body...), nil, r)
	if r.msg == nil {
		return 0, nil // no reply (FORGET)
	}
	var oh fuseproto.OutHeader
	if !fuseproto.Decode(r.msg, &oh) || int(oh.Len) != len(r.msg) || oh.Unique != g.unique {
		g.t.Fatalf("op %d: bad reply %x", op, r.msg)
	}
	return fuseproto.Errno(-oh.Error), r.msg[fuseproto.OutHeaderSize:]
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func (g *guest) init() {
	g.t.Helper()
	in := fuseproto.InitIn{Major: 7, Minor: 45, MaxReadahead: 1 << 17, Flags: 0xffffffff, Flags2: 1<<11 - 1}
	if e, _ := g.do(fuseproto.OpInit, 0, fuseproto.Encode(nil, &in)); e != 0 {
		g.t.Fatalf("INIT: %v", e)
	}
}

func (g *guest) lookup(parent uint64, name string) (fuseproto.EntryOut, fuseproto.Errno) {
	g.t.Helper()
	var out fuseproto.EntryOut
	e, b := g.do(fuseproto.OpLookup, parent, cstr(name))
	if e == 0 {
		fuseproto.Decode(b, &out)
	}
	return out, e
}

func (g *guest) mustLookup(parent uint64, name string) uint64 {
	g.t.Helper()
	out, e := g.lookup(parent, name)
	if e != 0 {
		g.t.Fatalf("LOOKUP %d/%s: %v", parent, name, e)
	}
	return out.NodeID
}

func (g *guest) getattr(node uint64) (fuseproto.Attr, fuseproto.Errno) {
	g.t.Helper()
	e, b := g.do(fuseproto.OpGetattr, node, fuseproto.Encode(nil, &fuseproto.GetattrIn{}))
	var out fuseproto.AttrOut
	if e == 0 {
		fuseproto.Decode(b, &out)
	}
	return out.Attr, e
}

func (g *guest) open(op fuseproto.Opcode, node uint64, flags uint32) uint64 {
	g.t.Helper()
	e, b := g.do(op, node, fuseproto.Encode(nil, &fuseproto.OpenIn{Flags: flags}))
	if e != 0 {
		g.t.Fatalf("OPEN(DIR) %d: %v", node, e)
	}
	var out fuseproto.OpenOut
	fuseproto.Decode(b, &out)
	return out.Fh
}

func (g *guest) read(node, fh, off uint64, size uint32) ([]byte, fuseproto.Errno) {
	g.t.Helper()
	e, b := g.do(fuseproto.OpRead, node, fuseproto.Encode(nil, &fuseproto.ReadIn{Fh: fh, Offset: off, Size: size}))
	return b, e
}

func (g *guest) write(node, fh, off uint64, data string) fuseproto.Errno {
	g.t.Helper()
	body := append(fuseproto.Encode(nil, &fuseproto.WriteIn{Fh: fh, Offset: off, Size: uint32(len(data))}), data...)
	e, _ := g.do(fuseproto.OpWrite, node, body)
	return e
}

// readdir returns the names of one READDIR reply and the offset of the last.
func (g *guest) readdir(node, fh, off uint64, size uint32) ([]string, uint64, fuseproto.Errno) {
	g.t.Helper()
	e, b := g.do(fuseproto.OpReaddir, node, fuseproto.Encode(nil, &fuseproto.ReadIn{Fh: fh, Offset: off, Size: size}))
	var names []string
	for len(b) >= 24 {
		var d fuseproto.Dirent
		fuseproto.Decode(b, &d)
		names = append(names, string(b[24:24+d.Namelen]))
		off = d.Off
		b = b[(24+int(d.Namelen)+7)&^7:]
	}
	return names, off, e
}

func (g *guest) release(op fuseproto.Opcode, node, fh uint64) fuseproto.Errno {
	e, _ := g.do(op, node, fuseproto.Encode(nil, &fuseproto.ReleaseIn{Fh: fh}))
	return e
}

func (g *guest) rename(parent uint64, name string, newParent uint64, newName string) {
	g.t.Helper()
	body := append(append(fuseproto.Encode(nil, &fuseproto.RenameIn{Newdir: newParent}), cstr(name)...), cstr(newName)...)
	if e, _ := g.do(fuseproto.OpRename, parent, body); e != 0 {
		g.t.Fatalf("RENAME: %v", e)
	}
}

// migrationTree makes the share's files.
func migrationTree(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"d", "a", "a/b", "a/b/c", "e"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		writeFile(t, dir, filepath.Join("d", "f"+string(rune('a'+i))), "dir entry")
	}
	for name, data := range map[string]string{"app": "0123", "ren": "renamed by the guest", "host": "renamed by the host", "del": "deleted but open", "a/b/c/deep": "deep", "plain": "plain"} {
		writeFile(t, dir, name, data)
	}
	if err := os.Symlink("a/b/c/deep", filepath.Join(dir, "sl")); err != nil {
		t.Fatal(err)
	}
}

// migrationCase is what a source guest did before the migration.
type migrationCase struct {
	nodes  map[string]uint64 // by path at lookup time
	attrs  map[uint64]fuseproto.Attr
	app    uint64 // O_APPEND|O_RDWR handle of "app"
	delFh  uint64 // handle of "del", unlinked since
	dirFh  uint64 // handle of "d", two entries read
	dirOff uint64
	seen   []string
}

// prepareSource looks things up, opens handles and changes names on the
// source as a guest would.
func prepareSource(t *testing.T, g *guest, dir string) *migrationCase {
	t.Helper()
	c := &migrationCase{nodes: map[string]uint64{}, attrs: map[uint64]fuseproto.Attr{}}
	lk := func(parent uint64, path, name string) uint64 {
		n := g.mustLookup(parent, name)
		c.nodes[path] = n
		return n
	}
	root := uint64(fuseproto.RootID)
	d := lk(root, "d", "d")
	a := lk(root, "a", "a")
	b := lk(a, "a/b", "b")
	cc := lk(b, "a/b/c", "c")
	lk(cc, "a/b/c/deep", "deep")
	e := lk(root, "e", "e")
	for _, n := range []string{"app", "ren", "host", "del", "sl", "plain"} {
		lk(root, n, n)
	}
	lk(d, "d/fa", "fa")
	for _, n := range c.nodes {
		at, errno := g.getattr(n)
		if errno != 0 {
			t.Fatal(errno)
		}
		c.attrs[n] = at
	}
	c.app = g.open(fuseproto.OpOpen, c.nodes["app"], unix.O_RDWR|unix.O_APPEND)
	c.delFh = g.open(fuseproto.OpOpen, c.nodes["del"], unix.O_RDONLY)
	c.dirFh = g.open(fuseproto.OpOpendir, d, unix.O_RDONLY)
	// A small READDIR: "." and ".." and a few entries.
	names, off, errno := g.readdir(d, c.dirFh, 0, 120)
	if errno != 0 || len(names) < 2 || len(names) > 6 {
		t.Fatalf("first READDIR: %q, %v", names, errno)
	}
	c.seen, c.dirOff = names, off
	// The guest renames one file into another directory; a host process
	// moves another behind the daemon's back; "del" goes away.
	g.rename(root, "ren", e, "ren2")
	if err := os.Rename(filepath.Join(dir, "host"), filepath.Join(dir, "a", "b", "host-moved")); err != nil {
		t.Fatal(err)
	}
	if errno, _ := g.do(fuseproto.OpUnlink, root, cstr("del")); errno != 0 {
		t.Fatal(errno)
	}
	return c
}

// checkDestination runs the guest's requests against the destination.
func checkDestination(t *testing.T, g *guest, dir string, c *migrationCase, srcNext uint64) {
	t.Helper()
	for path, n := range c.nodes {
		at, errno := g.getattr(n)
		if path == "del" {
			if errno != unix.EIO {
				t.Errorf("GETATTR of the deleted file's node: %v, want EIO", errno)
			}
			continue
		}
		want := c.attrs[n]
		if errno != 0 || at.Ino != want.Ino || at.Mode != want.Mode || at.Size != want.Size {
			t.Errorf("GETATTR %s (node %d): ino %d mode %#o size %d, %v; want ino %d mode %#o size %d", path, n, at.Ino, at.Mode, at.Size, errno, want.Ino, want.Mode, want.Size)
		}
	}
	// The O_APPEND|O_RDWR handle still appends, whatever the offset.
	if errno := g.write(c.nodes["app"], c.app, 0, "XY"); errno != 0 {
		t.Errorf("WRITE on the migrated handle: %v", errno)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app")); string(b) != "0123XY" {
		t.Errorf("app holds %q, want 0123XY (O_APPEND kept)", b)
	}
	if b, errno := g.read(c.nodes["app"], c.app, 1, 100); errno != 0 || string(b) != "123XY" {
		t.Errorf("READ on the migrated handle: %q, %v", b, errno)
	}
	// The handle of the deleted file is lost.
	if _, errno := g.read(c.nodes["del"], c.delFh, 0, 10); errno != unix.EIO {
		t.Errorf("READ on the deleted file's handle: %v, want EIO", errno)
	}
	// The directory listing continues where the source stopped.
	all := slices.Clone(c.seen)
	off := c.dirOff
	for {
		names, next, errno := g.readdir(c.nodes["d"], c.dirFh, off, 4096)
		if errno != 0 {
			t.Fatalf("READDIR after migration: %v", errno)
		}
		if len(names) == 0 {
			break
		}
		all = append(all, names...)
		off = next
	}
	slices.Sort(all)
	want := []string{".", ".."}
	for i := range 12 {
		want = append(want, "f"+string(rune('a'+i)))
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("listing across the migration: %q, want %q", all, want)
	}
	// Names resolve to the migrated nodes, renamed ones under the new name.
	for _, tc := range []struct{ parent, name, path string }{
		{"e", "ren2", "ren"},
		{"a/b", "host-moved", "host"},
		{"a/b/c", "deep", "a/b/c/deep"},
		{"", "plain", "plain"},
	} {
		p := uint64(fuseproto.RootID)
		if tc.parent != "" {
			p = c.nodes[tc.parent]
		}
		if got := g.mustLookup(p, tc.name); got != c.nodes[tc.path] {
			t.Errorf("LOOKUP %s/%s: node %d, want %d", tc.parent, tc.name, got, c.nodes[tc.path])
		}
	}
	if e, b := g.do(fuseproto.OpReadlink, c.nodes["sl"], nil); e != 0 || string(b) != "a/b/c/deep" {
		t.Errorf("READLINK: %q, %v", b, e)
	}
	// New nodes and handles do not collide with the migrated ones.
	writeFile(t, dir, "new", "n")
	if n := g.mustLookup(fuseproto.RootID, "new"); n < srcNext {
		t.Errorf("new node %d, the source's counter was at %d", n, srcNext)
	}
	fh := g.open(fuseproto.OpOpen, c.nodes["plain"], unix.O_RDONLY)
	if fh == c.app || fh == c.dirFh || fh == c.delFh {
		t.Errorf("new handle %d reuses a migrated one", fh)
	}
	for _, h := range []struct {
		op       fuseproto.Opcode
		node, fh uint64
	}{{fuseproto.OpRelease, c.nodes["app"], c.app}, {fuseproto.OpRelease, c.nodes["del"], c.delFh}, {fuseproto.OpReleasedir, c.nodes["d"], c.dirFh}, {fuseproto.OpRelease, c.nodes["plain"], fh}} {
		if errno := g.release(h.op, h.node, h.fh); errno != 0 {
			t.Errorf("RELEASE %d: %v", h.fh, errno)
		}
	}
}

// TestMigration moves a guest's session from one Server over a share to a
// second Server over the same share, in each migration mode and with file
// handles on and off on either side, then checks the destination answers
// the same node IDs and handles as the source did.
func TestMigration(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name     string
		mode     MigrationMode
		verify   bool
		src, dst InodeFileHandles
	}{
		{"find-paths", MigrationFindPaths, false, suiteHandles, suiteHandles},
		{"find-paths/verify", MigrationFindPaths, true, suiteHandles, suiteHandles},
		{"find-paths/never-to-mandatory", MigrationFindPaths, false, FileHandlesNever, FileHandlesMandatory},
		{"find-paths/mandatory-to-never", MigrationFindPaths, true, FileHandlesMandatory, FileHandlesNever},
		{"file-handles", MigrationFileHandles, false, suiteHandles, suiteHandles},
		{"file-handles/never-to-prefer", MigrationFileHandles, false, FileHandlesNever, FileHandlesPrefer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			migrationTree(t, dir)
			src, err := New(dir, Options{InodeFileHandles: tc.src, MigrationMode: tc.mode, MigrationVerifyHandles: tc.verify})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			gs := &guest{t: t, s: fuseproto.NewServer(src, fuseproto.Options{})}
			gs.init()
			c := prepareSource(t, gs, dir)
			var state bytes.Buffer
			if err := gs.s.SaveState(&state); err != nil {
				t.Fatal(err)
			}
			srcNext := src.inodes.next
			saved := state.Bytes()

			// With MigrationAbort the deleted file fails the load.
			dst, err := New(dir, Options{InodeFileHandles: tc.dst})
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			ds := fuseproto.NewServer(dst, fuseproto.Options{})
			if err := ds.LoadState(bytes.NewReader(saved)); err == nil || !strings.Contains(err.Error(), "inode") {
				t.Fatalf("LoadState with MigrationAbort and a deleted file: %v", err)
			}
			if n := dst.inodes.len(); n != 1 || dst.files.len() != 0 || dst.dirs.len() != 0 {
				t.Errorf("after a failed load: %d inodes, %d+%d handles", n, dst.files.len(), dst.dirs.len())
			}

			dst2, err := New(dir, Options{InodeFileHandles: tc.dst, MigrationOnError: MigrationGuestError})
			if err != nil {
				t.Fatal(err)
			}
			defer dst2.Close()
			gd := &guest{t: t, s: fuseproto.NewServer(dst2, fuseproto.Options{}), unique: 1000}
			if err := gd.s.LoadState(bytes.NewReader(saved)); err != nil {
				t.Fatal(err)
			}
			checkDestination(t, gd, dir, c, srcNext)
		})
	}
}

// TestMigrationVerifyHandles: a file replaced under its name between save
// and load is caught by MigrationVerifyHandles, and not without it.
func TestMigrationVerifyHandles(t *testing.T) {
	needRoot(t)
	for _, verify := range []bool{false, true} {
		dir := t.TempDir()
		writeFile(t, dir, "f", "old")
		src, err := New(dir, Options{MigrationVerifyHandles: verify, InodeFileHandles: suiteHandles})
		if err != nil {
			t.Fatal(err)
		}
		n := mustLookup(t, src, fuseproto.RootID, "f").NodeID
		var b bytes.Buffer
		if err := src.SaveState(&b); err != nil {
			t.Fatal(err)
		}
		src.Close()
		// Replace it (a new inode; keep the old one alive so that its
		// number is not reused).
		keep, _ := os.Open(filepath.Join(dir, "f"))
		os.Remove(filepath.Join(dir, "f"))
		writeFile(t, dir, "f", "new")
		keep.Close()
		dst, err := New(dir, Options{InodeFileHandles: suiteHandles})
		if err != nil {
			t.Fatal(err)
		}
		err = dst.LoadState(&b)
		if verify && (err == nil || !strings.Contains(err.Error(), "not the source's inode")) {
			t.Errorf("verify: LoadState of a replaced file: %v", err)
		}
		if !verify {
			if err != nil {
				t.Errorf("no verify: %v", err)
			} else if a, e := getattr(dst, n); e != 0 || a.Size != 3 {
				t.Errorf("no verify: node %d: %v", n, e)
			}
		}
		dst.Close()
	}
}

func getattr(fs *FS, node uint64) (fuseproto.Attr, fuseproto.Errno) {
	var out fuseproto.AttrOut
	e := fs.Getattr(rootCtx, node, &fuseproto.GetattrIn{}, &out)
	return out.Attr, e
}

// TestMigrationHostileHandles: a stream naming, by file handle, a file or
// directory outside the share is refused (the inode is lost, or the load
// fails), and never opened for the guest.
func TestMigrationHostileHandles(t *testing.T) {
	needRoot(t)
	top := t.TempDir()
	dir := filepath.Join(top, "share")
	for _, d := range []string{dir, filepath.Join(dir, "in"), filepath.Join(top, "outdir")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, top, "secret", "secret")
	writeFile(t, dir, "f", "inside")
	src, err := New(dir, Options{MigrationMode: MigrationFileHandles, InodeFileHandles: suiteHandles})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fNode := mustLookup(t, src, fuseproto.RootID, "f").NodeID
	inNode := mustLookup(t, src, fuseproto.RootID, "in").NodeID
	var b bytes.Buffer
	if err := src.SaveState(&b); err != nil {
		t.Fatal(err)
	}
	s, err := decodeState(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	handleOf := func(path string) savedHandleBytes {
		h, _, err := hostfs.HandleAt(unix.AT_FDCWD, path, 0)
		if err != nil {
			t.Fatal(err)
		}
		return savedHandleBytes{typ: h.Type(), bytes: slices.Clone(h.Bytes())}
	}
	for i := range s.inodes {
		si := &s.inodes[i]
		switch si.id {
		case fNode: // the secret, with no path to prove it inside
			if si.loc != locHandle {
				t.Fatalf("f travels as %d, want a handle", si.loc)
			}
			si.fh, si.hasPath, si.path = handleOf(filepath.Join(top, "secret")), false, nil
		case inNode: // a directory outside
			si.fh, si.hasPath, si.path = handleOf(filepath.Join(top, "outdir")), false, nil
		}
	}
	bad := encodeState(s)
	for _, onErr := range []MigrationOnError{MigrationAbort, MigrationGuestError} {
		dst, err := New(dir, Options{MigrationOnError: onErr, InodeFileHandles: suiteHandles})
		if err != nil {
			t.Fatal(err)
		}
		err = dst.LoadState(bytes.NewReader(bad))
		if onErr == MigrationAbort {
			if err == nil || !strings.Contains(err.Error(), "inside the shared directory") {
				t.Errorf("abort: %v", err)
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []uint64{fNode, inNode} {
				if _, e := getattr(dst, n); e != unix.EIO {
					t.Errorf("node %d with an outside handle: %v, want EIO", n, e)
				}
			}
		}
		dst.Close()
	}
	// The unmodified stream loads.
	dst, err := New(dir, Options{InodeFileHandles: suiteHandles})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.LoadState(&b); err != nil {
		t.Fatal(err)
	}
	if a, e := getattr(dst, fNode); e != 0 || a.Size != 6 {
		t.Errorf("f after migration: size %d, %v", a.Size, e)
	}
}

// TestMigrationRefusesUsedFS: LoadState wants a filesystem no guest used.
func TestMigrationRefusesUsedFS(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "x")
	var b bytes.Buffer
	if err := fs.SaveState(&b); err != nil {
		t.Fatal(err)
	}
	mustLookup(t, fs, fuseproto.RootID, "f")
	if err := fs.LoadState(bytes.NewReader(b.Bytes())); err == nil {
		t.Error("LoadState into a used filesystem succeeded")
	}
}

// TestStateDecodeRejects: hand-made streams with bad references.
func TestStateDecodeRejects(t *testing.T) {
	good := &savedState{nextNode: 10, nextFh: 3, inodes: []savedInode{
		{id: 1, nlookup: 1, typ: unix.S_IFDIR, loc: locRoot},
		{id: 2, nlookup: 1, typ: unix.S_IFDIR, loc: locPath, base: 1, path: []string{"d"}},
		{id: 3, nlookup: 2, typ: unix.S_IFREG, loc: locPath, base: 2, path: []string{"x", "f"}},
	}, handles: []savedHandle{{fh: 1, node: 3, flags: unix.O_RDWR}, {fh: 2, node: 2, dir: true}}}
	if _, err := decodeState(encodeState(good)); err != nil {
		t.Fatalf("good state: %v", err)
	}
	for name, mutate := range map[string]func(s *savedState){
		"no root":      func(s *savedState) { s.inodes = s.inodes[1:] },
		"root twice":   func(s *savedState) { s.inodes[1].id = 1 },
		"forward base": func(s *savedState) { s.inodes[1].base = 2 },
		"file base": func(s *savedState) {
			s.inodes = append(s.inodes, savedInode{id: 4, nlookup: 1, typ: unix.S_IFREG, loc: locPath, base: 3, path: []string{"z"}})
		},
		"dotdot":             func(s *savedState) { s.inodes[2].path = []string{".."} },
		"slash":              func(s *savedState) { s.inodes[2].path = []string{"a/b"} },
		"empty path":         func(s *savedState) { s.inodes[2].path = nil },
		"dup node":           func(s *savedState) { s.inodes[2].id = 2 },
		"handle of nothing":  func(s *savedState) { s.handles[0].node = 9 },
		"dir handle on file": func(s *savedState) { s.handles[0].dir = true },
		"dup fh":             func(s *savedState) { s.handles[1].fh = 1 },
		"unknown mount": func(s *savedState) {
			s.inodes[2].loc, s.inodes[2].mount, s.inodes[2].fh = locHandle, 7, savedHandleBytes{1, []byte{1}}
		},
		"unused inode": func(s *savedState) { s.inodes[2].nlookup, s.handles = 0, s.handles[1:] },
		"huge counter": func(s *savedState) { s.nextNode = 1 << 63 },
		"bad type":     func(s *savedState) { s.inodes[2].typ = 0o030000 },
	} {
		s := *good
		s.inodes = slices.Clone(good.inodes)
		s.handles = slices.Clone(good.handles)
		mutate(&s)
		if _, err := decodeState(encodeState(&s)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Counts that promise more records than bytes are refused before
	// allocating.
	b := encodeState(good)
	off := len(stateMagic) + 4 + 16 + 4 // the inode count
	binary.LittleEndian.PutUint32(b[off:], 1<<31)
	if _, err := decodeState(b); err == nil {
		t.Error("a huge inode count was accepted")
	}
}

// FuzzDecodeState: the decoder never panics, and whatever it accepts
// encodes back to the same bytes (the format has one encoding).
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(&savedState{nextNode: 2, inodes: []savedInode{{id: 1, nlookup: 1, typ: unix.S_IFDIR, loc: locRoot}}}))
	f.Add(encodeState(&savedState{fileHandles: true, nextNode: 9, nextFh: 4,
		mounts: []savedMount{{id: 30, path: nil}, {id: 31, path: []string{"m"}}},
		inodes: []savedInode{
			{id: 1, nlookup: 1, typ: unix.S_IFDIR, loc: locRoot, verify: &savedHandleBytes{1, []byte{1, 2}}},
			{id: 2, nlookup: 3, typ: unix.S_IFDIR, loc: locHandle, mount: 31, fh: savedHandleBytes{-1, []byte{9}}, hasPath: true, base: 1, path: []string{"m"}},
			{id: 3, nlookup: 1, typ: unix.S_IFREG, submount: false, loc: locPath, base: 2, path: []string{"x", "y"}},
			{id: 4, nlookup: 0, typ: unix.S_IFREG, loc: locLost},
		},
		handles: []savedHandle{{fh: 4, node: 4, flags: unix.O_RDWR | unix.O_APPEND}, {fh: 3, node: 2, dir: true}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			return
		}
		if again := encodeState(s); !bytes.Equal(again, b) {
			t.Fatalf("decoded state encodes to other bytes:\n%x\n%x", b, again)
		}
	})
}

// FuzzLoadState feeds streams to a real filesystem's LoadState: it must
// fail cleanly (nothing left behind) or restore only what lies in the
// share.
func FuzzLoadState(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	dir := f.TempDir()
	for _, d := range []string{"d", "d/e"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "d", "f"), []byte("x"), 0o644)
	src, err := New(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	d := lookupFS(src, fuseproto.RootID, "d")
	lookupFS(src, d, "f")
	lookupFS(src, d, "e")
	var fh fuseproto.OpenOut
	src.Opendir(rootCtx, d, &fuseproto.OpenIn{}, &fh)
	var b bytes.Buffer
	if err := src.SaveState(&b); err != nil {
		f.Fatal(err)
	}
	src.Close()
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := New(dir, Options{MigrationOnError: MigrationGuestError})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		if err := fs.LoadState(bytes.NewReader(b)); err != nil {
			if n := fs.inodes.len(); n != 1 || fs.files.len()+fs.dirs.len() != 0 {
				t.Fatalf("failed load left %d inodes, %d handles", n, fs.files.len()+fs.dirs.len())
			}
		}
	})
}

func lookupFS(fs *FS, parent uint64, name string) uint64 {
	var e fuseproto.EntryOut
	fs.Lookup(rootCtx, parent, name, &e)
	return e.NodeID
}

// fullPath rebuilds the path an inode travels as.
func fullPath(s *savedState, id uint64) (string, byte) {
	for _, si := range s.inodes {
		if si.id != id {
			continue
		}
		if si.loc != locPath && !(si.loc == locHandle && si.hasPath) {
			return "", si.loc
		}
		p := strings.Join(si.path, "/")
		if si.base != fuseproto.RootID {
			bp, _ := fullPath(s, si.base)
			p = bp + "/" + p
		}
		return p, si.loc
	}
	return "", 255
}

// TestSaveFinds checks where SaveState finds inodes after the guest and
// the host moved things: by the name of the latest lookup, by
// /proc/self/fd, by searching the share, or not at all.
func TestSaveFinds(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	for _, d := range []string{"d", "d/sub", "x"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"plain", "guestmv", "hostmv", "d/sub/f", "hl", "gone", "gone-open"} {
		writeFile(t, dir, f, f)
	}
	root := uint64(fuseproto.RootID)
	n := map[string]uint64{}
	for _, f := range []string{"plain", "guestmv", "hostmv", "hl", "gone", "gone-open", "d", "x"} {
		n[f] = mustLookup(t, fs, root, f).NodeID
	}
	n["d/sub"] = mustLookup(t, fs, n["d"], "sub").NodeID
	n["d/sub/f"] = mustLookup(t, fs, n["d/sub"], "f").NodeID
	fh := mustOpen(t, fs, n["gone-open"], unix.O_RDONLY)
	defer release(t, fs, n["gone-open"], fh)

	if errno := fs.Rename(rootCtx, root, "guestmv", n["x"], "moved", 0); errno != 0 {
		t.Fatal(errno)
	}
	mv := func(from, to string) {
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	mv("hostmv", "x/hostmv2")
	mv("d", "d2") // the parent of a known file
	if err := os.Link(filepath.Join(dir, "hl"), filepath.Join(dir, "x", "hl2")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"hl", "gone", "gone-open"} {
		os.Remove(filepath.Join(dir, f))
	}

	s, err := fs.collectState()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"plain": "plain", "guestmv": "x/moved", "hostmv": "x/hostmv2", "d": "d2",
		"d/sub": "d2/sub", "d/sub/f": "d2/sub/f", "hl": "x/hl2", "x": "x",
	} {
		if got, loc := fullPath(s, n[name]); got != want {
			t.Errorf("%s travels as %q (location %d), want %q", name, got, loc, want)
		}
	}
	for _, name := range []string{"gone", "gone-open"} {
		if _, loc := fullPath(s, n[name]); loc != locLost {
			t.Errorf("%s: location %d, want lost", name, loc)
		}
	}
	t.Logf("found: %+v", s.found)
	if s.found.chain < 3 || s.found.proc < 3 || s.found.lost != 2 {
		t.Errorf("found %+v: want at least 3 by name (plain, x, d2/sub...), 3 by /proc/self/fd, 2 lost", s.found)
	}
	if fs.FileHandles() == FileHandlesNever && s.found.search != 1 {
		t.Errorf("found %+v: want the hard link found by searching (its fd's name is deleted)", s.found)
	}
}
