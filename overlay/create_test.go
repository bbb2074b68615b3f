package overlay

import (
	"slices"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestCreateOverWhiteout makes each kind of object where a whiteout hides
// a lower one: a new directory is opaque, and nothing of the lower shows.
func TestCreateOverWhiteout(t *testing.T) {
	u := newUnion(t, "", 1, true)
	for _, n := range []string{"d", "f", "s", "p"} {
		hostFile(t, u.L(1, n+"/x"), "lower "+n)
	}
	hostDir(t, u.U("plain"))
	u.mount()
	for _, n := range []string{"d", "f", "s", "p"} {
		if e := u.unlink(n + "/x"); e != 0 {
			t.Fatal(e)
		}
		if e := u.rmdir(n); e != 0 {
			t.Fatal(e)
		}
		if !isHostWhiteout(t, u.U(n)) {
			t.Fatalf("%s: no whiteout", n)
		}
	}
	var e fuseproto.EntryOut
	if _, errno := u.mkdir("d"); errno != 0 {
		t.Fatalf("Mkdir over a whiteout: %v", errno)
	}
	if _, errno := u.create("f", unix.O_RDWR|unix.O_EXCL); errno != 0 {
		t.Fatalf("Create over a whiteout: %v", errno)
	}
	if errno := u.fs.Symlink(rootCtx, fuseproto.RootID, "s", "target", &e); errno != 0 {
		t.Fatalf("Symlink over a whiteout: %v", errno)
	}
	if errno := u.fs.Mknod(rootCtx, fuseproto.RootID, "p", &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o640}, &e); errno != 0 {
		t.Fatalf("Mknod over a whiteout: %v", errno)
	}
	if v, ok := hostXattr(u.U("d"), "trusted.overlay.opaque"); v != "y" {
		t.Errorf("directory made over a whiteout: opaque = %q, %v, want y", v, ok)
	}
	if got := u.ls("d"); len(got) != 0 {
		t.Errorf("new d lists %q", got)
	}
	if u.exists("d/x") {
		t.Error("the lower d/x shows through the new directory")
	}
	for name, mode := range map[string]uint32{"d": unix.S_IFDIR, "f": unix.S_IFREG, "s": unix.S_IFLNK, "p": unix.S_IFIFO} {
		st, ok := hostStat(t, u.U(name))
		if !ok || st.Mode&unix.S_IFMT != mode {
			t.Errorf("upper %s: mode %#o, want type %#o", name, st.Mode, mode)
		}
		if a := u.entry(name).Attr; a.Mode&unix.S_IFMT != mode {
			t.Errorf("union %s: mode %#o", name, a.Mode)
		}
	}
	if st, _ := hostStat(t, u.U("p")); st.Mode&0o7777 != 0o640 {
		t.Errorf("fifo made over a whiteout has mode %#o, want 0640", st.Mode&0o7777)
	}
	if got := u.read("f"); got != "" {
		t.Errorf("new f reads %q", got)
	}
	// A directory made in a merged parent is opaque too (an
	// optimisation); one in a pure upper directory need not be.
	if _, errno := u.mkdir("fresh"); errno != 0 {
		t.Fatal(errno)
	}
	if v, _ := hostXattr(u.U("fresh"), "trusted.overlay.opaque"); v != "y" {
		t.Errorf("mkdir in a merged parent: opaque = %q, want y", v)
	}
	if _, errno := u.mkdir("plain/sub"); errno != 0 {
		t.Fatal(errno)
	}
	if v, ok := hostXattr(u.U("plain/sub"), "trusted.overlay.opaque"); ok {
		t.Errorf("mkdir in a pure upper parent: opaque = %q", v)
	}
	u.remount()
	if got := u.ls("d"); len(got) != 0 {
		t.Errorf("after remount d lists %q", got)
	}
}

// TestCreateExisting checks that every creating operation on a lower name
// answers EEXIST, and that Create without O_EXCL opens the lower file.
func TestCreateExisting(t *testing.T) {
	u := newUnion(t, "", 2, true)
	hostFile(t, u.L(2, "f"), "lower")
	hostDir(t, u.L(1, "d"))
	u.mount()
	if _, e := u.create("f", unix.O_RDWR|unix.O_EXCL); e != unix.EEXIST {
		t.Errorf("Create O_EXCL on a lower file: %v, want EEXIST", e)
	}
	if _, e := u.create("d", unix.O_RDWR|unix.O_EXCL); e != unix.EEXIST {
		t.Errorf("Create O_EXCL on a lower dir: %v, want EEXIST", e)
	}
	if _, e := u.mkdir("f"); e != unix.EEXIST {
		t.Errorf("Mkdir on a lower file: %v, want EEXIST", e)
	}
	if _, e := u.mkdir("d"); e != unix.EEXIST {
		t.Errorf("Mkdir on a lower dir: %v, want EEXIST", e)
	}
	var out fuseproto.EntryOut
	if e := u.fs.Symlink(rootCtx, fuseproto.RootID, "f", "x", &out); e != unix.EEXIST {
		t.Errorf("Symlink on a lower file: %v, want EEXIST", e)
	}
	if e := u.fs.Mknod(rootCtx, fuseproto.RootID, "f", &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o644}, &out); e != unix.EEXIST {
		t.Errorf("Mknod on a lower file: %v, want EEXIST", e)
	}
	if _, ok := hostStat(t, u.U("f")); ok {
		t.Error("a refused create copied f up")
	}
	// Kernel overlayfs never sees a link onto an existing name (the VFS
	// answers EEXIST first), so it never copies the source up for one.
	if e := u.fs.Link(rootCtx, u.node("f"), fuseproto.RootID, "d", &out); e != unix.EEXIST {
		t.Errorf("Link onto a lower dir: %v, want EEXIST", e)
	}
	if _, ok := hostStat(t, u.U("f")); ok {
		t.Error("a refused Link copied its source f up")
	}
	// Without O_EXCL: the existing file is opened (for writing: copied up),
	// not truncated.
	e, errno := u.create("f", unix.O_RDWR)
	if errno != 0 {
		t.Fatalf("Create of an existing lower file: %v", errno)
	}
	if e.Attr.Size != 5 {
		t.Errorf("Create of an existing file reports size %d, want 5", e.Attr.Size)
	}
	if got := u.read("f"); got != "lower" {
		t.Errorf("f reads %q after Create", got)
	}
	if _, ok := hostStat(t, u.U("f")); !ok {
		t.Error("Create for writing did not copy f up")
	}
}

// TestMknodWhiteoutRefused checks that no guest can forge a whiteout.
func TestMknodWhiteoutRefused(t *testing.T) {
	u := newUnion(t, "", 1, true)
	u.mount()
	var out fuseproto.EntryOut
	if e := u.fs.Mknod(rootCtx, fuseproto.RootID, "wh", &fuseproto.MknodIn{Mode: unix.S_IFCHR | 0o600, Rdev: 0}, &out); e != unix.EPERM {
		t.Errorf("Mknod S_IFCHR 0/0: %v, want EPERM", e)
	}
	if _, ok := hostStat(t, u.U("wh")); ok {
		t.Error("the refused whiteout exists in the upper")
	}
	if e := u.fs.Mknod(rootCtx, fuseproto.RootID, "null", &fuseproto.MknodIn{Mode: unix.S_IFCHR | 0o666, Rdev: uint32(unix.Mkdev(1, 3))}, &out); e != 0 {
		t.Errorf("Mknod S_IFCHR 1/3: %v", e)
	} else if out.Attr.Rdev != uint32(unix.Mkdev(1, 3)) || out.Attr.Mode != unix.S_IFCHR|0o666 {
		t.Errorf("Mknod S_IFCHR 1/3: rdev %#x mode %#o", out.Attr.Rdev, out.Attr.Mode)
	}
	if e := u.fs.Mknod(rootCtx, fuseproto.RootID, "dir", &fuseproto.MknodIn{Mode: unix.S_IFDIR | 0o755}, &out); e != unix.EINVAL {
		t.Errorf("Mknod S_IFDIR: %v, want EINVAL", e)
	}
	if got := u.ls("/"); !slices.Equal(got, []string{"null"}) {
		t.Errorf("root lists %q", got)
	}
}

// TestCreateOwner checks that new objects belong to the caller, made
// directly in the upper or over a whiteout.
func TestCreateOwner(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "pub/gone"), "x")
	if err := unix.Chmod(u.L(1, "pub"), 0o777); err != nil {
		t.Fatal(err)
	}
	u.mount()
	if e := u.unlink("pub/gone"); e != 0 {
		t.Fatal(e)
	}
	user := &fuseproto.Context{UID: 1000, GID: 1001}
	p := u.node("pub")
	for _, name := range []string{"new", "gone"} {
		var e fuseproto.EntryOut
		var o fuseproto.OpenOut
		if errno := u.fs.Create(user, p, name, &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: 0o644}, &e, &o); errno != 0 {
			t.Fatalf("Create %s as 1000: %v", name, errno)
		}
		u.release(e.NodeID, o.Fh)
		if e.Attr.UID != 1000 || e.Attr.GID != 1001 {
			t.Errorf("%s: owner %d:%d, want 1000:1001", name, e.Attr.UID, e.Attr.GID)
		}
		if st, _ := hostStat(t, u.U("pub/"+name)); st.Uid != 1000 || st.Gid != 1001 {
			t.Errorf("upper %s: owner %d:%d, want 1000:1001", name, st.Uid, st.Gid)
		}
	}
	// The caller's permissions apply: a user cannot create in the root.
	var e fuseproto.EntryOut
	if errno := u.fs.Mkdir(user, fuseproto.RootID, "nope", &fuseproto.MkdirIn{Mode: 0o755}, &e); errno != unix.EACCES {
		t.Errorf("Mkdir as 1000 in a root-owned 0755 dir: %v, want EACCES", errno)
	}
}

// TestLinkLowerFile links a lower file under two more names: all three are
// one inode with the data, in this session, after the guest forgot them
// (each name looked up first in turn) and after a remount. With
// metacopy=on the link copies up the metadata only, so the new names must
// still find the data in the lower (kernel overlayfs's ovl_link records an
// absolute redirect on a metacopy upper for this, ovl_set_link_redirect).
func TestLinkLowerFile(t *testing.T) {
	for _, extra := range []string{"", "metacopy=off"} {
		t.Run("opts="+extra, func(t *testing.T) {
			u := newUnion(t, tmpfsDir(t), 1, true)
			u.extra = extra
			hostFile(t, u.L(1, "f"), "lower data")
			hostDir(t, u.L(1, "d"))
			u.mount()
			ino := u.entry("f").Attr.Ino
			var out fuseproto.EntryOut
			if e := u.fs.Link(rootCtx, u.node("f"), u.node("d"), "g", &out); e != 0 {
				t.Fatalf("Link f d/g: %v", e)
			}
			if out.Attr.Nlink != 2 || out.Attr.Ino != ino {
				t.Errorf("Link reply: nlink %d ino %d, want 2 and %d", out.Attr.Nlink, out.Attr.Ino, ino)
			}
			if e := u.fs.Link(rootCtx, u.node("d/g"), fuseproto.RootID, "h", &out); e != 0 {
				t.Fatalf("Link d/g h: %v", e)
			}
			names := []string{"f", "d/g", "h"}
			check := func(when string) {
				t.Helper()
				for _, p := range names {
					if got := u.read(p); got != "lower data" {
						t.Errorf("%s: %s reads %q, want %q", when, p, got, "lower data")
					}
					if a := u.entry(p).Attr; a.Nlink != 3 || a.Ino != ino || a.Size != 10 {
						t.Errorf("%s: %s nlink %d ino %d size %d, want 3, %d, 10", when, p, a.Nlink, a.Ino, a.Size, ino)
					}
				}
			}
			check("same session")
			for i := range names {
				u.fs.Destroy()
				first := names[i]
				if got := u.read(first); got != "lower data" {
					t.Errorf("looked up first after a forget: %s reads %q", first, got)
				}
				check("after a forget, " + first + " first")
			}
			u.remount()
			check("after remount")
			// A write through one name shows through the others.
			u.write(u.node("h"), "LINKED")
			for _, p := range names {
				if got := u.read(p); got != "LINKEDdata" {
					t.Errorf("after writing h: %s reads %q", p, got)
				}
			}
		})
	}
}

// TestTmpfile makes an unnamed file in a lower directory (copied up for
// it), writes it, and names it with Link.
func TestTmpfile(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "d/old"), "o")
	u.mount()
	d := u.node("d")
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	if errno := u.fs.Tmpfile(rootCtx, d, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o640}, &e, &o); errno != 0 {
		t.Fatalf("Tmpfile: %v", errno)
	}
	u.writeAt(e.NodeID, o.Fh, 0, "temporary")
	if got := u.ls("d"); !slices.Equal(got, []string{"old"}) {
		t.Errorf("d lists %q with an unnamed file in it", got)
	}
	var le fuseproto.EntryOut
	if errno := u.fs.Link(rootCtx, e.NodeID, d, "named", &le); errno != 0 {
		t.Fatalf("Link of the tmpfile: %v", errno)
	}
	u.release(e.NodeID, o.Fh)
	if le.NodeID != e.NodeID || le.Attr.Nlink != 1 || le.Attr.Mode != unix.S_IFREG|0o640 {
		t.Errorf("Link reply: node %d (tmpfile %d) nlink %d mode %#o", le.NodeID, e.NodeID, le.Attr.Nlink, le.Attr.Mode)
	}
	if got := u.read("d/named"); got != "temporary" {
		t.Errorf("d/named reads %q", got)
	}
	u.remount()
	if got := u.read("d/named"); got != "temporary" {
		t.Errorf("after remount d/named reads %q", got)
	}
	if got := u.ls("d"); !slices.Equal(got, []string{"named", "old"}) {
		t.Errorf("d lists %q", got)
	}
}
