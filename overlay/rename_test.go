package overlay

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

const xRedirectName = "trusted.overlay.redirect"

// TestRenameFile moves files of each kind; the old name gets a whiteout
// exactly when a lower still holds it, and the moved file keeps its data
// and st_ino.
func TestRenameFile(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	hostFile(t, u.L(1, "a"), "A")
	hostFile(t, u.L(1, "d/c"), "C")
	hostDir(t, u.L(1, "e"))
	hostFile(t, u.L(1, "x"), "X")
	hostFile(t, u.L(1, "y"), "Y")
	hostFile(t, u.U("pure"), "P")
	hostFile(t, u.L(1, "p"), "P-lower")
	hostFile(t, u.L(1, "q"), "Q-lower")
	hostDir(t, u.L(1, "dir"))
	hostFile(t, u.L(1, "file"), "F")
	u.mount()
	ino := map[string]uint64{}
	for _, p := range []string{"a", "d/c", "x", "pure", "p", "q"} {
		ino[p] = u.entry(p).Attr.Ino
	}

	moves := []struct {
		from, to   string
		whiteout   bool // at from
		data, ino0 string
	}{
		{"a", "b", true, "A", "a"},
		{"d/c", "e/c2", true, "C", "d/c"},
		{"x", "y", true, "X", "x"},
		{"pure", "pure2", false, "P", "pure"},
	}
	for _, m := range moves {
		if e := u.rename(m.from, m.to, 0); e != 0 {
			t.Errorf("Rename %s %s: %v", m.from, m.to, e)
			continue
		}
		if got := isHostWhiteout(t, u.U(m.from)); got != m.whiteout {
			t.Errorf("%s -> %s: whiteout at the old name %v, want %v", m.from, m.to, got, m.whiteout)
		}
		if u.exists(m.from) {
			t.Errorf("%s still found after moving it", m.from)
		}
		if got := u.read(m.to); got != m.data {
			t.Errorf("%s reads %q, want %q", m.to, got, m.data)
		}
		if got := u.entry(m.to).Attr.Ino; got != ino[m.ino0] {
			t.Errorf("%s has st_ino %d, want %s's %d", m.to, got, m.ino0, ino[m.ino0])
		}
	}

	if e := u.rename("p", "q", unix.RENAME_NOREPLACE); e != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE onto a lower file: %v, want EEXIST", e)
	}
	if e := u.rename("p", "b", unix.RENAME_NOREPLACE); e != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE onto an upper file: %v, want EEXIST", e)
	}
	if _, ok := hostStat(t, u.U("p")); ok {
		t.Error("a refused rename copied p up")
	}
	if e := u.rename("p", "q", unix.RENAME_EXCHANGE); e != 0 {
		t.Fatalf("RENAME_EXCHANGE: %v", e)
	}
	if u.read("p") != "Q-lower" || u.read("q") != "P-lower" {
		t.Errorf("after exchange p reads %q and q %q", u.read("p"), u.read("q"))
	}
	if u.entry("p").Attr.Ino != ino["q"] || u.entry("q").Attr.Ino != ino["p"] {
		t.Error("RENAME_EXCHANGE did not exchange the inodes")
	}
	if isHostWhiteout(t, u.U("p")) || isHostWhiteout(t, u.U("q")) {
		t.Error("RENAME_EXCHANGE left a whiteout")
	}
	if e := u.rename("p", "nothing", unix.RENAME_EXCHANGE); e != unix.ENOENT {
		t.Errorf("RENAME_EXCHANGE with a missing target: %v, want ENOENT", e)
	}
	if e := u.rename("p", "z", unix.RENAME_WHITEOUT); e != unix.EINVAL {
		t.Errorf("RENAME_WHITEOUT: %v, want EINVAL", e)
	}
	if e := u.rename("p", "q", unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE); e != unix.EINVAL {
		t.Errorf("RENAME_NOREPLACE|RENAME_EXCHANGE: %v, want EINVAL", e)
	}
	if e := u.rename("file", "dir", 0); e != unix.EISDIR {
		t.Errorf("file over a directory: %v, want EISDIR", e)
	}
	if e := u.rename("dir", "file", 0); e != unix.ENOTDIR {
		t.Errorf("directory over a file: %v, want ENOTDIR", e)
	}
	if e := u.rename("missing", "m2", 0); e != unix.ENOENT {
		t.Errorf("rename of nothing: %v, want ENOENT", e)
	}
	if e := u.rename("b", "b", 0); e != 0 || u.read("b") != "A" {
		t.Errorf("rename onto itself: %v", e)
	}
	if got, want := u.ls("/"), []string{"b", "d", "dir", "e", "file", "p", "pure2", "q", "y"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
	u.remount()
	if got, want := u.ls("/"), []string{"b", "d", "dir", "e", "file", "p", "pure2", "q", "y"}; !slices.Equal(got, want) {
		t.Errorf("after remount root lists %q, want %q", got, want)
	}
	for p, want := range map[string]string{"b": "A", "e/c2": "C", "y": "X", "p": "Q-lower", "q": "P-lower"} {
		if got := u.read(p); got != want {
			t.Errorf("after remount %s reads %q, want %q", p, got, want)
		}
	}
	if got := u.ls("d"); len(got) != 0 {
		t.Errorf("after remount d lists %q", got)
	}
}

// TestRenameDir moves lower and merged directories with redirect_dir=on:
// the redirect is relative within one parent and absolute otherwise, the
// moved directory shows its lower contents, keeps its st_ino, and all of
// it survives a remount.
func TestRenameDir(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 2, true)
	hostFile(t, u.L(1, "a/x"), "ax")
	hostFile(t, u.L(2, "a/sub/y"), "ay")
	hostFile(t, u.L(2, "m/n/z"), "z")
	hostDir(t, u.L(1, "o"))
	hostFile(t, u.L(1, "g/lower"), "gl")
	hostFile(t, u.U("g/upper"), "gu")
	hostFile(t, u.L(1, "full/f"), "f")
	hostFile(t, u.U("plain/pu/k"), "k")
	u.mount()
	ino := map[string]uint64{}
	for _, p := range []string{"a", "m/n", "g"} {
		ino[p] = u.entry(p).Attr.Ino
	}

	check := func(when string) {
		t.Helper()
		want := map[string][]string{
			"b": {"sub", "x"}, "b/sub": {"y"}, "o/n2": {"z"}, "h": {"lower", "upper"},
			"m": {}, "/": {"b", "full", "h", "m", "o", "plain", "pu2"},
		}
		for d, names := range want {
			if got := u.ls(d); !slices.Equal(got, names) {
				t.Errorf("%s: %s lists %q, want %q", when, d, got, names)
			}
		}
		for p, data := range map[string]string{"b/x": "ax", "b/sub/y": "ay", "o/n2/z": "z", "h/lower": "gl", "h/upper": "gu"} {
			if got := u.read(p); got != data {
				t.Errorf("%s: %s reads %q, want %q", when, p, got, data)
			}
		}
		for p, old := range map[string]string{"b": "a", "o/n2": "m/n", "h": "g"} {
			if got := u.entry(p).Attr.Ino; got != ino[old] {
				t.Errorf("%s: %s has st_ino %d, want %s's %d", when, p, got, old, ino[old])
			}
		}
		for _, p := range []string{"a", "a/x", "m/n", "g"} {
			if u.exists(p) {
				t.Errorf("%s: %s still found", when, p)
			}
		}
	}

	if e := u.rename("a", "b", 0); e != 0 {
		t.Fatalf("rename lower dir a b: %v", e)
	}
	if v, _ := hostXattr(u.U("b"), xRedirectName); v != "a" {
		t.Errorf("same-parent redirect %q, want a", v)
	}
	if e := u.rename("m/n", "o/n2", 0); e != 0 {
		t.Fatalf("rename lower dir m/n o/n2: %v", e)
	}
	if v, _ := hostXattr(u.U("o/n2"), xRedirectName); v != "/m/n" {
		t.Errorf("cross-parent redirect %q, want /m/n", v)
	}
	if e := u.rename("g", "h", 0); e != 0 {
		t.Fatalf("rename merged dir g h: %v", e)
	}
	if v, _ := hostXattr(u.U("h"), xRedirectName); v != "g" {
		t.Errorf("merged dir redirect %q, want g", v)
	}
	for _, p := range []string{"a", "m/n", "g"} {
		if !isHostWhiteout(t, u.U(p)) {
			t.Errorf("no whiteout at the old name %s", p)
		}
	}
	// A pure upper directory moving into a merged parent becomes opaque.
	if e := u.rename("plain/pu", "pu2", 0); e != 0 {
		t.Fatalf("rename plain/pu pu2: %v", e)
	}
	if v, _ := hostXattr(u.U("pu2"), "trusted.overlay.opaque"); v != "y" {
		t.Errorf("pure upper dir moved into a merged parent: opaque %q, want y", v)
	}
	if _, ok := hostXattr(u.U("pu2"), xRedirectName); ok {
		t.Error("a pure upper directory got a redirect")
	}
	check("after the renames")

	// Errors.
	if e := u.rename("b", "b/sub/in", 0); e != unix.EINVAL {
		t.Errorf("a directory into its own subdirectory: %v, want EINVAL", e)
	}
	if e := u.rename("h", "full", 0); e != unix.ENOTEMPTY {
		t.Errorf("onto a non-empty lower directory: %v, want ENOTEMPTY", e)
	}
	if e := u.rename("h", "o", 0); e != unix.ENOTEMPTY {
		t.Errorf("onto a non-empty merged directory: %v, want ENOTEMPTY", e)
	}
	if e := u.rename("h", "o", unix.RENAME_NOREPLACE); e != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE onto a directory: %v, want EEXIST", e)
	}
	check("after the refused renames")

	u.remount()
	check("after remount")

	// Moving an already redirected directory to another parent records
	// an absolute redirect to where its lower part really is.
	if e := u.rename("b", "o/b3", 0); e != 0 {
		t.Fatalf("rename b o/b3: %v", e)
	}
	if v, _ := hostXattr(u.U("o/b3"), xRedirectName); v != "/a" {
		t.Errorf("redirect after the second move %q, want /a", v)
	}
	if got := u.ls("o/b3"); !slices.Equal(got, []string{"sub", "x"}) {
		t.Errorf("o/b3 lists %q", got)
	}
	u.remount()
	if got := u.ls("o/b3"); !slices.Equal(got, []string{"sub", "x"}) {
		t.Errorf("after remount o/b3 lists %q", got)
	}
	if got := u.read("o/b3/sub/y"); got != "ay" {
		t.Errorf("o/b3/sub/y reads %q", got)
	}
	if got := u.entry("o/b3").Attr.Ino; got != ino["a"] {
		t.Errorf("o/b3 has st_ino %d, want a's %d", got, ino["a"])
	}
	if u.exists("b") {
		t.Error("b still found")
	}
}

// TestRenameDirExchange exchanges two lower directories: each name then
// shows the other's contents, also after a remount.
func TestRenameDirExchange(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "x/fx"), "x")
	hostFile(t, u.L(1, "y/fy"), "y")
	u.mount()
	if e := u.rename("x", "y", unix.RENAME_EXCHANGE); e != 0 {
		t.Fatalf("RENAME_EXCHANGE of two lower dirs: %v", e)
	}
	for i := 0; i < 2; i++ {
		if got := u.ls("x"); !slices.Equal(got, []string{"fy"}) {
			t.Errorf("pass %d: x lists %q, want [fy]", i, got)
		}
		if got := u.ls("y"); !slices.Equal(got, []string{"fx"}) {
			t.Errorf("pass %d: y lists %q, want [fx]", i, got)
		}
		u.remount()
	}
}

// TestRenameNoRedirect checks redirect_dir=off: lower and merged
// directories cannot move (EXDEV, so that mv copies), pure upper ones can.
func TestRenameNoRedirect(t *testing.T) {
	u := newUnion(t, "", 1, true)
	u.extra = "redirect_dir=off,metacopy=off"
	hostFile(t, u.L(1, "low/f"), "f")
	hostFile(t, u.L(1, "merged/f"), "f")
	hostDir(t, u.U("merged"))
	hostFile(t, u.L(1, "file"), "x")
	u.mount()
	if e := u.rename("low", "low2", 0); e != unix.EXDEV {
		t.Errorf("rename of a lower dir: %v, want EXDEV", e)
	}
	if e := u.rename("merged", "m2", 0); e != unix.EXDEV {
		t.Errorf("rename of a merged dir: %v, want EXDEV", e)
	}
	if _, e := u.mkdir("new"); e != 0 {
		t.Fatal(e)
	}
	if e := u.rename("new", "new2", 0); e != 0 {
		t.Errorf("rename of a pure upper dir: %v", e)
	}
	if e := u.rename("file", "file2", 0); e != 0 {
		t.Errorf("rename of a lower file: %v", e)
	}
	if got, want := u.ls("/"), []string{"file2", "low", "merged", "new2"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
}

// TestRenameOntoOwnAncestor sends the renames a guest kernel's VFS refuses
// before asking (lock_rename's trap), which a hostile or confused guest can
// still send: a directory into itself (EINVAL) and an entry over its own
// parent (ENOTEMPTY, as the VFS answers). The daemon must answer, not
// deadlock on the directory's mutex it already holds as a parent.
func TestRenameOntoOwnAncestor(t *testing.T) {
	tests := []struct {
		name        string
		from, toDir string // toDir: the new parent ("" the root)
		newName     string
		flags       uint32
		want        []fuseproto.Errno
	}{
		{"lower dir into itself", "a", "a", "in", 0, []fuseproto.Errno{unix.EINVAL}},
		{"upper dir into itself", "up", "up", "in", 0, []fuseproto.Errno{unix.EINVAL}},
		{"exchange a dir with an entry inside it", "a", "a", "x", unix.RENAME_EXCHANGE, []fuseproto.Errno{unix.EINVAL}},
		{"entry over its own parent", "a/x", "", "a", 0, []fuseproto.Errno{unix.ENOTEMPTY, unix.EINVAL}},
		{"upper entry over its own parent", "up/sub", "", "up", 0, []fuseproto.Errno{unix.ENOTEMPTY, unix.EINVAL}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := newUnion(t, "", 1, true)
			hostFile(t, u.L(1, "a/x/f"), "f")
			hostDir(t, u.U("up/sub"))
			u.mount()
			p, name := u.dirOf(tc.from)
			q := uint64(fuseproto.RootID)
			if tc.toDir != "" {
				q = u.node(tc.toDir)
			}
			done := make(chan fuseproto.Errno, 1)
			fs := u.fs
			go func() { done <- fs.Rename(rootCtx, p, name, q, tc.newName, tc.flags) }()
			select {
			case e := <-done:
				if !slices.Contains(tc.want, e) {
					t.Errorf("Rename: %v, want %v", e, tc.want[0])
				}
			case <-time.After(2 * time.Second):
				// The stuck request holds the union's locks: leave
				// this FS behind rather than hang in Close.
				u.fs = nil
				t.Fatalf("Rename(%s -> %s/%s) deadlocked", tc.from, tc.toDir, tc.newName)
			}
			if got := u.ls("a"); !slices.Equal(got, []string{"x"}) {
				t.Errorf("a lists %q after the refused rename", got)
			}
			if got := u.ls("up"); !slices.Equal(got, []string{"sub"}) {
				t.Errorf("up lists %q after the refused rename", got)
			}
		})
	}
}

// TestRenameDirChain moves a lower directory several times (within its
// parent, to other parents, back to its first name) and removes a moved
// one; the redirect always names where the lower part is.
func TestRenameDirChain(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "a/x"), "x")
	hostDir(t, u.L(1, "d1"))
	hostDir(t, u.L(1, "d2"))
	hostFile(t, u.L(1, "r/y"), "y")
	u.mount()
	steps := []struct{ from, to, redirect string }{
		{"a", "b", "a"},
		{"b", "c", "a"},
		{"c", "d1/e", "/a"},
		{"d1/e", "d2/f", "/a"},
		{"d2/f", "d2/g", "/a"},
	}
	for _, s := range steps {
		if e := u.rename(s.from, s.to, 0); e != 0 {
			t.Fatalf("rename %s %s: %v", s.from, s.to, e)
		}
		if v, _ := hostXattr(u.U(s.to), xRedirectName); v != s.redirect {
			t.Errorf("after %s -> %s: redirect %q, want %q", s.from, s.to, v, s.redirect)
		}
		for i := 0; i < 2; i++ {
			if got := u.ls(s.to); !slices.Equal(got, []string{"x"}) {
				t.Errorf("after %s -> %s (pass %d): %s lists %q", s.from, s.to, i, s.to, got)
			}
			if u.exists(s.from) {
				t.Errorf("after %s -> %s (pass %d): %s still found", s.from, s.to, i, s.from)
			}
			u.remount()
		}
	}
	// Back to where it came from, over the whiteout there.
	if e := u.rename("d2/g", "a", 0); e != 0 {
		t.Fatalf("rename d2/g a: %v", e)
	}
	for i := 0; i < 2; i++ {
		if got := u.ls("a"); !slices.Equal(got, []string{"x"}) {
			t.Errorf("pass %d: a lists %q", i, got)
		}
		if got := u.ls("/"); !slices.Equal(got, []string{"a", "d1", "d2", "r"}) {
			t.Errorf("pass %d: root lists %q", i, got)
		}
		u.remount()
	}
	// A moved directory, emptied and removed, stays removed, and so does
	// its old name.
	if e := u.rename("r", "d1/r2", 0); e != 0 {
		t.Fatal(e)
	}
	if e := u.unlink("d1/r2/y"); e != 0 {
		t.Fatal(e)
	}
	if e := u.rmdir("d1/r2"); e != 0 {
		t.Fatalf("rmdir of a moved directory: %v", e)
	}
	for i := 0; i < 2; i++ {
		if u.exists("r") || u.exists("d1/r2") || u.exists("r/y") {
			t.Errorf("pass %d: the removed directory shows again", i)
		}
		u.remount()
	}
}

// TestRenameRedirectMax checks that an absolute redirect longer than
// kernel overlayfs's redirect_max (256) is not written: EXDEV, so that the
// caller copies instead.
func TestRenameRedirectMax(t *testing.T) {
	u := newUnion(t, "", 1, true)
	long := ""
	for i := 0; i < 5; i++ {
		long += "/" + strings.Repeat(string(rune('a'+i)), 60)
	}
	hostFile(t, u.L(1, long+"/f"), "f")
	hostFile(t, u.L(1, "short/g"), "g")
	u.mount()
	if e := u.rename(long[1:], "moved", 0); e != unix.EXDEV {
		t.Errorf("a move needing a %d-byte redirect: %v, want EXDEV", len(long), e)
	}
	if got := u.ls(long[1:]); !slices.Equal(got, []string{"f"}) {
		t.Errorf("the refused move changed %s: %q", long, got)
	}
	if e := u.rename("short", long[1:62]+"/short", 0); e != 0 {
		t.Errorf("a move needing a short redirect: %v", e)
	}
}
