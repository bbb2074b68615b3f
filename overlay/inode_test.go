package overlay

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestHardLinksIndex writes through one name of a hard-linked lower file
// with index=on: every name shows the new data, one st_ino and the link
// count 2, through forgets and remounts, and the upper keeps one inode.
func TestHardLinksIndex(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	hostFile(t, u.L(1, "h1"), "old data")
	hostDir(t, u.L(1, "d"))
	if err := os.Link(u.L(1, "h1"), u.L(1, "d/h2")); err != nil {
		t.Fatal(err)
	}
	lst, _ := hostStat(t, u.L(1, "h1"))
	u.mount()

	e1, e2 := u.entry("h1"), u.entry("d/h2")
	if e1.NodeID != e2.NodeID || e1.Attr.Ino != lst.Ino || e2.Attr.Ino != lst.Ino || e1.Attr.Nlink != 2 {
		t.Fatalf("before: nodes %d/%d ino %d/%d nlink %d, want one node, ino %d, nlink 2", e1.NodeID, e2.NodeID, e1.Attr.Ino, e2.Attr.Ino, e1.Attr.Nlink, lst.Ino)
	}
	u.write(e1.NodeID, "NEW DATA")

	idx := hostNames(t, filepath.Join(u.work, "index"))
	if len(idx) != 1 {
		t.Fatalf("index holds %q, want one entry", idx)
	}
	ist, _ := hostStat(t, filepath.Join(u.work, "index", idx[0]))
	// One FUSE node stands for both names, so the copy is linked up at
	// one of them (the name the node was last found under), never both.
	st1, ok1 := hostStat(t, u.U("h1"))
	st2, ok2 := hostStat(t, u.U("d/h2"))
	switch {
	case ok1 == ok2:
		t.Errorf("upper h1 exists %v, upper d/h2 %v: want exactly one linked up", ok1, ok2)
	case ok1 && st1.Ino != ist.Ino, ok2 && st2.Ino != ist.Ino:
		t.Errorf("the upper name is not a link to the index entry (ino %d)", ist.Ino)
	}

	check := func(when string) {
		t.Helper()
		for _, p := range []string{"d/h2", "h1"} {
			e := u.entry(p)
			if e.Attr.Ino != lst.Ino || e.Attr.Nlink != 2 || e.Attr.Size != 8 {
				t.Errorf("%s: %s ino %d nlink %d size %d, want ino %d nlink 2 size 8", when, p, e.Attr.Ino, e.Attr.Nlink, e.Attr.Size, lst.Ino)
			}
			if got := u.read(p); got != "NEW DATA" {
				t.Errorf("%s: %s reads %q", when, p, got)
			}
		}
		if a, b := u.entry("h1").NodeID, u.entry("d/h2").NodeID; a != b {
			t.Errorf("%s: h1 and d/h2 are nodes %d and %d", when, a, b)
		}
		u.checkDino("/")
		u.checkDino("d")
	}
	check("same session")
	u.fs.Destroy()
	check("after forgetting every inode")
	u.remount()
	check("after remount")

	// Writing through each name (each the latest lookup) links both up
	// to the same inode.
	u.write(u.node("d/h2"), "THIRD ONE")
	u.write(u.node("h1"), "THIRD ONE")
	for _, p := range []string{"h1", "d/h2"} {
		if st, ok := hostStat(t, u.U(p)); !ok || st.Ino != ist.Ino {
			t.Errorf("upper %s (exists %v, ino %d) is not the index entry (ino %d)", p, ok, st.Ino, ist.Ino)
		}
	}
	if got := u.read("h1"); got != "THIRD ONE" {
		t.Errorf("h1 reads %q", got)
	}
	if a := u.entry("h1").Attr; a.Nlink != 2 {
		t.Errorf("nlink %d after linking up both names, want 2", a.Nlink)
	}
	// Removing one name leaves one link.
	if e := u.unlink("h1"); e != 0 {
		t.Fatal(e)
	}
	if a := u.entry("d/h2").Attr; a.Nlink != 1 || a.Ino != lst.Ino {
		t.Errorf("after unlinking h1: d/h2 nlink %d ino %d, want 1, %d", a.Nlink, a.Ino, lst.Ino)
	}
	u.remount()
	if a := u.entry("d/h2").Attr; a.Nlink != 1 || a.Ino != lst.Ino {
		t.Errorf("after remount: d/h2 nlink %d ino %d, want 1, %d", a.Nlink, a.Ino, lst.Ino)
	}
	if u.exists("h1") {
		t.Error("h1 is back after remount")
	}
}

// TestHardLinksNoIndex checks index=off: as with kernel overlayfs, the
// copy-up of one name breaks the link, and from then on the two names are
// two objects, whichever is looked up first. Kernel overlayfs does not
// hash such a broken hard link by its origin (ovl_hash_bylower) and shows
// the upper's own st_ino for it (ovl_getattr: the origin's st_ino only for
// lower nlink == 1 or indexed).
func TestHardLinksNoIndex(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	u.extra = "index=off"
	hostFile(t, u.L(1, "h1"), "old")
	if err := os.Link(u.L(1, "h1"), u.L(1, "h2")); err != nil {
		t.Fatal(err)
	}
	u.mount()
	u.write(u.node("h1"), "NEW")
	if ents, err := os.ReadDir(filepath.Join(u.work, "index")); err == nil && len(ents) != 0 {
		t.Errorf("index=off wrote index entries %v", ents)
	}
	for _, order := range [][]string{{"h2", "h1"}, {"h1", "h2"}} {
		u.fs.Destroy()
		for _, p := range order {
			want := map[string]string{"h1": "NEW", "h2": "old"}[p]
			if got := u.read(p); got != want {
				t.Errorf("looking up %s first: %s reads %q, want %q", order[0], p, got, want)
			}
		}
		e1, e2 := u.entry("h1"), u.entry("h2")
		if e1.NodeID == e2.NodeID || e1.Attr.Ino == e2.Attr.Ino {
			t.Errorf("looking up %s first: h1 and h2 are node %d/%d, st_ino %d/%d: want two objects", order[0], e1.NodeID, e2.NodeID, e1.Attr.Ino, e2.Attr.Ino)
		}
		if e2.Attr.Nlink != 2 || e1.Attr.Nlink != 1 {
			t.Errorf("looking up %s first: nlink h1 %d h2 %d, want 1 and the lower's 2", order[0], e1.Attr.Nlink, e2.Attr.Nlink)
		}
		u.checkDino("/")
	}
	// Writing through h2 copies it up on its own.
	u.write(u.node("h2"), "TWO")
	if u.read("h1") != "NEW" || u.read("h2") != "TWO" {
		t.Errorf("after writing h2: h1 %q h2 %q", u.read("h1"), u.read("h2"))
	}
}

// TestInoStable checks that st_ino of lower objects is the same after
// their copy-up and after a remount (origin handles decoded on tmpfs).
func TestInoStable(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 2, true)
	hostFile(t, u.L(2, "f"), "f")
	hostFile(t, u.L(1, "d/inner"), "i")
	hostFile(t, u.L(2, "d/deep"), "x")
	if err := unix.Symlink("f", u.L(2, "s")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(u.L(1, "p"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostFile(t, u.L(1, "meta"), "m")
	u.mount()
	paths := []string{"f", "d", "d/inner", "d/deep", "s", "p", "meta"}
	ino := map[string]uint64{}
	for _, p := range paths {
		ino[p] = u.entry(p).Attr.Ino
		st, _ := hostStat(t, u.L(1, p))
		if _, ok := hostStat(t, u.L(1, p)); !ok {
			st, _ = hostStat(t, u.L(2, p))
		}
		if ino[p] != st.Ino {
			t.Errorf("%s: st_ino %d, want the lower's %d", p, ino[p], st.Ino)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, p := range paths {
			if got := u.entry(p).Attr.Ino; got != ino[p] {
				t.Errorf("%s: %s st_ino %d, want %d", when, p, got, ino[p])
			}
		}
	}
	u.write(u.node("f"), "F")
	u.write(u.node("d/inner"), "I") // copies d up too
	u.mustSetattr(u.node("s"), fuseproto.SetattrIn{Valid: fuseproto.FattrUID, UID: 5})
	u.mustSetattr(u.node("p"), fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
	u.mustSetattr(u.node("meta"), fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
	for _, p := range paths[:len(paths)-1] {
		if p == "d/deep" {
			continue
		}
		if _, ok := hostStat(t, u.U(p)); !ok {
			t.Fatalf("%s was not copied up", p)
		}
	}
	check("after copy-up")
	u.fs.Destroy()
	check("after forgetting every inode")
	u.remount()
	check("after remount")
	u.checkDino("/")
	u.checkDino("d")
}

// TestInoUniqueAcrossLayers puts each lower on a filesystem of its own, so
// that objects of different layers have the same host inode numbers: the
// union must still show distinct, stable st_ino values.
func TestInoUniqueAcrossLayers(t *testing.T) {
	base := t.TempDir()
	u := newUnion(t, tmpfsDir(t), 0, true)
	for i := 1; i <= 3; i++ {
		p := filepath.Join(base, "l"+strconv.Itoa(i))
		hostMkdirAll(t, p)
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
		u.lower = append(u.lower, p)
		for j := 0; j < 10; j++ {
			hostFile(t, u.L(i, "f"+strconv.Itoa(i)+"-"+strconv.Itoa(j)), "x")
		}
		hostFile(t, u.L(i, "d/g"+strconv.Itoa(i)), "x")
	}
	u.mount()
	collect := func() map[uint64]string {
		seen := map[uint64]string{}
		for _, dir := range []string{"/", "d"} {
			node := u.node(dir)
			for _, de := range u.list(node) {
				if de.name == ".." || (dir == "d" && de.name == ".") {
					continue
				}
				a := u.mustLookup(node, de.name).Attr
				if de.ino != a.Ino {
					t.Errorf("%s/%s: d_ino %d, st_ino %d", dir, de.name, de.ino, a.Ino)
				}
				if other, dup := seen[a.Ino]; dup {
					t.Errorf("%s/%s and %s share st_ino %d", dir, de.name, other, a.Ino)
				}
				seen[a.Ino] = dir + "/" + de.name
			}
		}
		return seen
	}
	first := collect()
	if len(first) != 3*10+1+3+1 {
		t.Errorf("%d distinct inodes, want %d", len(first), 3*10+1+3+1)
	}
	u.write(u.node("f2-0"), "copied")
	u.remount()
	second := collect()
	for ino, p := range first {
		if second[ino] != p {
			t.Errorf("st_ino %d was %s, is %q after copy-up and remount", ino, p, second[ino])
		}
	}
}

// TestHardLinksIndexUnlink removes names of a three-way hard-linked lower
// file with index=on, without writing it first: the link count the union
// shows follows, and the data stays with the names left.
func TestHardLinksIndexUnlink(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	hostFile(t, u.L(1, "a"), "shared")
	for _, n := range []string{"b", "c"} {
		if err := os.Link(u.L(1, "a"), u.L(1, n)); err != nil {
			t.Fatal(err)
		}
	}
	lst, _ := hostStat(t, u.L(1, "a"))
	u.mount()
	if a := u.entry("a").Attr; a.Nlink != 3 {
		t.Fatalf("nlink %d, want 3", a.Nlink)
	}
	if e := u.unlink("a"); e != 0 {
		t.Fatal(e)
	}
	for i, when := range []string{"same session", "after remount"} {
		if i == 1 {
			u.remount()
		}
		for _, p := range []string{"b", "c"} {
			a := u.entry(p).Attr
			if a.Nlink != 2 || a.Ino != lst.Ino {
				t.Errorf("%s: %s nlink %d ino %d, want 2, %d", when, p, a.Nlink, a.Ino, lst.Ino)
			}
			if got := u.read(p); got != "shared" {
				t.Errorf("%s: %s reads %q", when, p, got)
			}
		}
		if u.exists("a") {
			t.Errorf("%s: a is back", when)
		}
	}
	if e := u.unlink("c"); e != 0 {
		t.Fatal(e)
	}
	u.remount()
	if a := u.entry("b").Attr; a.Nlink != 1 {
		t.Errorf("after removing two names: b nlink %d, want 1", a.Nlink)
	}
	u.write(u.node("b"), "SHARED")
	u.remount()
	if got := u.read("b"); got != "SHARED" {
		t.Errorf("b reads %q", got)
	}
	if got := u.ls("/"); len(got) != 1 || got[0] != "b" {
		t.Errorf("root lists %q", got)
	}
}
