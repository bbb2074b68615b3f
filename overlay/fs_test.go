package overlay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestNewErrors checks the layer checks of New, and that a failing New
// leaves no descriptor open.
func TestNewErrors(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	for _, d := range []string{"l", "u", "w"} {
		hostMkdirAll(t, filepath.Join(dir, d))
	}
	hostFile(t, filepath.Join(dir, "file"), "x")
	other := tmpfsDir(t)
	l, u, w := filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no lower", Config{}, "lower"},
		{"upper without work", Config{Lower: []string{l}, Upper: u}, "go together"},
		{"work without upper", Config{Lower: []string{l}, Work: w}, "go together"},
		{"missing lower", Config{Lower: []string{l, filepath.Join(dir, "missing")}}, "missing"},
		{"lower is a file", Config{Lower: []string{filepath.Join(dir, "file")}}, "not a directory"},
		{"missing upper", Config{Lower: []string{l}, Upper: filepath.Join(dir, "nu"), Work: w}, "nu"},
		{"upper is a file", Config{Lower: []string{l}, Upper: filepath.Join(dir, "file"), Work: w}, "not a directory"},
		{"missing work", Config{Lower: []string{l}, Upper: u, Work: filepath.Join(dir, "nw")}, "nw"},
		{"work on another filesystem", Config{Lower: []string{l}, Upper: u, Work: other}, "same filesystem"},
	}
	before := countFds(t)
	for _, tc := range tests {
		fs, err := New(tc.cfg, Options{})
		if err == nil {
			fs.Close()
			t.Errorf("%s: New succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if after := countFds(t); after != before {
		t.Errorf("failed News leaked %d descriptors", after-before)
	}
}

// TestNewRefusesNestedLayers checks the layer layouts kernel overlayfs
// refuses: a work directory equal to, inside or around the upper ("workdir
// and upperdir must be separate subtrees", EINVAL) and layers inside one
// another (ovl_check_overlapping_layers, ELOOP). Accepting them shows the
// work directory in the union, and New empties <workdir>/work: with
// workdir=upperdir that is the guest's own /work.
func TestNewRefusesNestedLayers(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	p := func(rel string) string { return filepath.Join(dir, rel) }
	for _, d := range []string{"l", "u", "u/w", "w", "w/u", "l/u", "u/l", "u2", "w2"} {
		hostMkdirAll(t, p(d))
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"workdir is upperdir", Config{Lower: []string{p("l")}, Upper: p("u"), Work: p("u")}},
		{"workdir inside upperdir", Config{Lower: []string{p("l")}, Upper: p("u"), Work: p("u/w")}},
		{"upperdir inside workdir", Config{Lower: []string{p("l")}, Upper: p("w/u"), Work: p("w")}},
		{"upperdir inside a lower", Config{Lower: []string{p("l")}, Upper: p("l/u"), Work: p("w2")}},
		{"a lower inside upperdir", Config{Lower: []string{p("u/l")}, Upper: p("u"), Work: p("w2")}},
		{"workdir inside a lower", Config{Lower: []string{p("u2")}, Upper: p("u"), Work: p("u2")}},
	}
	for _, tc := range tests {
		hostFile(t, p("u/work/precious"), "guest data")
		fs, err := New(tc.cfg, Options{})
		if err == nil {
			fs.Close()
			t.Errorf("%s: New accepted %s", tc.name, tc.cfg)
		}
		if b, err := os.ReadFile(p("u/work/precious")); err != nil || string(b) != "guest data" {
			t.Errorf("%s: New removed the upper's work/precious (%v)", tc.name, err)
		}
	}
}

// TestDestroyAndClose exercises every kind of state (lookups through three
// lowers, copy-ups, an indexed hard link, a moved directory, whiteouts,
// open files and directories, READDIRPLUS lookups, locks, a tmpfile) and
// checks that Destroy empties the inode and handle tables, that the union
// still serves a new session, and that Close gives back every descriptor.
func TestDestroyAndClose(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 3, true)
	hostFile(t, u.L(1, "a/f"), "1")
	hostFile(t, u.L(2, "a/g"), "2")
	hostFile(t, u.L(3, "a/h"), "3")
	hostFile(t, u.L(3, "a/sub/deep"), "d")
	hostFile(t, u.L(2, "hl"), "h")
	if err := os.Link(u.L(2, "hl"), u.L(2, "a/hl2")); err != nil {
		t.Fatal(err)
	}
	hostFile(t, u.L(1, "mv/x"), "x")
	hostFile(t, u.L(1, "gone"), "g")
	before := countFds(t)
	fs := u.mount()

	u.write(u.node("a/f"), "F")
	u.mustSetattr(u.node("a/g"), fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
	u.write(u.node("hl"), "H")
	u.read("a/hl2")
	if e := u.rename("mv", "moved", 0); e != 0 {
		t.Fatal(e)
	}
	if e := u.unlink("gone"); e != 0 {
		t.Fatal(e)
	}
	if _, e := u.mkdir("new"); e != 0 {
		t.Fatal(e)
	}
	u.listPlus(u.node("a"))
	fnode := u.node("a/h")
	fh := u.mustOpen(fnode, unix.O_RDONLY)
	u.mustOpen(u.node("a/f"), unix.O_RDWR)
	if e := fs.Setlk(rootCtx, fnode, &fuseproto.LkIn{Fh: fh, Owner: 7, Lk: fuseproto.FileLock{Type: unix.F_RDLCK, End: 1<<63 - 1}}, false); e != 0 {
		t.Errorf("Setlk: %v", e)
	}
	if e := fs.Setlk(rootCtx, fnode, &fuseproto.LkIn{Fh: fh, Owner: 8, Lk: fuseproto.FileLock{Type: unix.F_WRLCK}, LkFlags: fuseproto.LkFlock}, false); e != 0 {
		t.Errorf("flock: %v", e)
	}
	dh := u.opendir(u.node("a/sub"))
	u.readdirAt(u.node("a/sub"), dh, 0, 4096, true)
	var te fuseproto.EntryOut
	var to fuseproto.OpenOut
	if e := fs.Tmpfile(rootCtx, u.node("new"), &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &te, &to); e != 0 {
		t.Errorf("Tmpfile: %v", e)
	}
	if fs.inodes.len() < 10 || fs.files.len() != 3 || fs.dirs.len() != 1 {
		t.Errorf("before Destroy: %d inodes, %d files, %d dirs", fs.inodes.len(), fs.files.len(), fs.dirs.len())
	}

	fs.Destroy()
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("after Destroy the inode table holds %d inodes, want only the root", n)
	}
	if nf, nd := fs.files.len(), fs.dirs.len(); nf != 0 || nd != 0 {
		t.Errorf("after Destroy %d file and %d directory handles are open", nf, nd)
	}
	if e := fs.Release(rootCtx, fnode, &fuseproto.ReleaseIn{Fh: fh}); e != unix.EBADF {
		t.Errorf("Release of a handle Destroy closed: %v, want EBADF", e)
	}
	if _, e := u.lookup(fnode, "x"); e != unix.EBADF {
		t.Errorf("Lookup in a node Destroy forgot: %v, want EBADF", e)
	}

	// A new session on the same FS sees the same union.
	fs.Init(&fuseproto.Config{})
	if got := u.read("a/f"); got != "F" {
		t.Errorf("new session: a/f reads %q", got)
	}
	if got := u.read("moved/x"); got != "x" {
		t.Errorf("new session: moved/x reads %q", got)
	}
	fs.Destroy()

	u.fs.Close()
	u.fs = nil
	if after := countFds(t); after != before {
		t.Errorf("descriptors: %d before New, %d after Close", before, after)
	}
}

// TestStatfs reports the upper's filesystem.
func TestStatfs(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	u.mount()
	var out fuseproto.StatfsOut
	if e := u.fs.Statfs(rootCtx, fuseproto.RootID, &out); e != 0 {
		t.Fatal(e)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(u.upper, &st); err != nil {
		t.Fatal(err)
	}
	if out.St.Blocks != st.Blocks || out.St.Bsize != uint32(st.Bsize) || out.St.Namelen != uint32(st.Namelen) {
		t.Errorf("Statfs %+v, want the upper's %+v", out.St, st)
	}
}
