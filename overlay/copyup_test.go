package overlay

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

const xMetacopyName = "trusted.overlay.metacopy"

// TestCopyUpTriggers runs each operation on a lower file d/f and checks
// whether it copied d/f up, and how: metadata only (a metacopy upper) or
// with its data. Operations that change nothing copy nothing, not even
// the parent.
func TestCopyUpTriggers(t *testing.T) {
	const data = "lower data"
	type upState int
	const (
		none upState = iota // no upper d/f (and, for reads, no upper d)
		meta                // metacopy upper: size kept, no data, the xattr
		full                // a complete copy
	)
	tests := []struct {
		name     string
		extra    string // mount options
		op       func(t *testing.T, u *union, node uint64)
		want     upState
		noParent bool // not even d may be copied up
		content  string
	}{
		{"setattr mode", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
		}, meta, false, data},
		{"setattr owner", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrUID | fuseproto.FattrGID, UID: 42, GID: 43})
		}, meta, false, data},
		{"setattr times", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrAtime, Mtime: 1e9, Atime: 1e9})
		}, meta, false, data},
		{"setattr times now", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrMtimeNow | fuseproto.FattrAtimeNow})
		}, meta, false, data},
		{"setattr mode without metacopy", "metacopy=off", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
		}, full, false, data},
		{"setattr size", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrSize, Size: 5})
		}, full, false, data[:5]},
		{"open write-only", "", func(t *testing.T, u *union, n uint64) {
			u.release(n, u.mustOpen(n, unix.O_WRONLY))
		}, full, false, data},
		{"open read-write", "", func(t *testing.T, u *union, n uint64) {
			u.release(n, u.mustOpen(n, unix.O_RDWR))
		}, full, false, data},
		{"open O_TRUNC", "", func(t *testing.T, u *union, n uint64) {
			u.release(n, u.mustOpen(n, unix.O_WRONLY|unix.O_TRUNC))
		}, full, false, ""},
		{"setxattr", "", func(t *testing.T, u *union, n uint64) {
			if e := u.fs.Setxattr(rootCtx, n, "user.new", []byte("v"), &fuseproto.SetxattrIn{}); e != 0 {
				t.Fatalf("Setxattr: %v", e)
			}
		}, meta, false, data},
		{"removexattr", "", func(t *testing.T, u *union, n uint64) {
			if e := u.fs.Removexattr(rootCtx, n, "user.old"); e != 0 {
				t.Fatalf("Removexattr: %v", e)
			}
		}, meta, false, data},
		// Kernel overlayfs's ovl_link copies up with flags 0: metadata
		// only, with metacopy=on.
		{"link", "", func(t *testing.T, u *union, n uint64) {
			var e fuseproto.EntryOut
			if errno := u.fs.Link(rootCtx, n, u.node("d"), "g", &e); errno != 0 {
				t.Fatalf("Link: %v", errno)
			}
		}, meta, false, data},
		{"link without metacopy", "metacopy=off", func(t *testing.T, u *union, n uint64) {
			var e fuseproto.EntryOut
			if errno := u.fs.Link(rootCtx, n, u.node("d"), "g", &e); errno != 0 {
				t.Fatalf("Link: %v", errno)
			}
		}, full, false, data},

		// Nothing here changes d/f.
		{"open read-only and read", "", func(t *testing.T, u *union, n uint64) {
			fh := u.mustOpen(n, unix.O_RDONLY)
			if got := u.readAt(n, fh, 0, 100); got != data {
				t.Errorf("read %q", got)
			}
			var lo fuseproto.LseekOut
			u.fs.Lseek(rootCtx, n, &fuseproto.LseekIn{Fh: fh, Whence: unix.SEEK_END}, &lo)
			u.fs.Flush(rootCtx, n, &fuseproto.FlushIn{Fh: fh})
			u.fs.Fsync(rootCtx, n, &fuseproto.FsyncIn{Fh: fh})
			u.release(n, fh)
		}, none, true, data},
		{"getattr, statx, access", "", func(t *testing.T, u *union, n uint64) {
			u.attr(n)
			var sx fuseproto.StatxOut
			if e := u.fs.Statx(rootCtx, n, &fuseproto.StatxIn{}, &sx); e != 0 {
				t.Errorf("Statx: %v", e)
			}
			if e := u.fs.Access(rootCtx, n, unix.R_OK|unix.W_OK); e != 0 {
				t.Errorf("Access: %v", e)
			}
		}, none, true, data},
		{"readdir and readdirplus", "", func(t *testing.T, u *union, n uint64) {
			u.list(u.node("d"))
			u.listPlus(u.node("d"))
		}, none, true, data},
		{"xattr reads", "", func(t *testing.T, u *union, n uint64) {
			buf := make([]byte, 256)
			if _, e := u.fs.Getxattr(rootCtx, n, "user.old", buf); e != 0 {
				t.Errorf("Getxattr: %v", e)
			}
			if _, e := u.fs.Listxattr(rootCtx, n, buf); e != 0 {
				t.Errorf("Listxattr: %v", e)
			}
		}, none, true, data},
		{"removexattr of a missing name", "", func(t *testing.T, u *union, n uint64) {
			if e := u.fs.Removexattr(rootCtx, n, "user.missing"); e != unix.ENODATA {
				t.Errorf("Removexattr: %v, want ENODATA", e)
			}
		}, none, true, data},
		{"setattr of nothing", "", func(t *testing.T, u *union, n uint64) {
			u.mustSetattr(n, fuseproto.SetattrIn{})
		}, none, true, data},
		{"symlink to it", "", func(t *testing.T, u *union, n uint64) {
			var e fuseproto.EntryOut
			if errno := u.fs.Symlink(rootCtx, u.node("d"), "s", "f", &e); errno != 0 {
				t.Fatalf("Symlink: %v", errno)
			}
		}, none, false, data},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnion(t, "", 1, true)
			u.extra = tc.extra
			hostFile(t, u.L(1, "d/f"), data)
			hostSetxattr(t, u.L(1, "d/f"), "user.old", "o")
			u.mount()
			node := u.node("d/f")
			tc.op(t, u, node)

			_, dirUp := hostStat(t, u.U("d"))
			if tc.noParent && dirUp {
				t.Errorf("the parent d was copied up")
			}
			st, up := hostStat(t, u.U("d/f"))
			_, isMeta := hostXattr(u.U("d/f"), xMetacopyName)
			switch tc.want {
			case none:
				if up {
					t.Errorf("d/f was copied up")
				}
			case meta:
				if !up || !isMeta {
					t.Fatalf("upper d/f exists %v, metacopy %v; want a metacopy copy-up", up, isMeta)
				}
				if off, err := seek(u.U("d/f"), 0, unix.SEEK_DATA); st.Size != int64(len(data)) || err != unix.ENXIO {
					t.Errorf("metacopy upper: size %d, data at %d (%v), want size %d and no data", st.Size, off, err, len(data))
				}
			case full:
				if !up || isMeta {
					t.Fatalf("upper d/f exists %v, metacopy %v; want a full copy-up", up, isMeta)
				}
				if b, _ := os.ReadFile(u.U("d/f")); string(b) != tc.content {
					t.Errorf("upper d/f holds %q, want %q", b, tc.content)
				}
			}
			if got := u.read("d/f"); got != tc.content {
				t.Errorf("d/f reads %q through the union, want %q", got, tc.content)
			}
			if b, _ := os.ReadFile(u.L(1, "d/f")); string(b) != data {
				t.Errorf("the lower file changed: %q", b)
			}
			if ents := hostNames(t, filepath.Join(u.work, "work")); len(ents) != 0 {
				t.Errorf("work/ holds %q", ents)
			}
			// The state survives a remount.
			u.remount()
			if got := u.read("d/f"); got != tc.content {
				t.Errorf("after remount d/f reads %q, want %q", got, tc.content)
			}
		})
	}
}

// TestMetacopy follows a metacopy file from its metadata copy-up to its
// data copy-up.
func TestMetacopy(t *testing.T) {
	u := newUnion(t, "", 1, true)
	data := strings.Repeat("0123456789", 1000)
	hostFile(t, u.L(1, "f"), data)
	u.mount()
	n := u.node("f")
	lst, _ := hostStat(t, u.L(1, "f"))
	a := u.mustSetattr(n, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o640})
	if a.Mode != unix.S_IFREG|0o640 || a.Size != uint64(len(data)) || a.Blocks != uint64(lst.Blocks) {
		t.Errorf("after chmod: mode %#o size %d blocks %d, want 0640, %d, the lower's %d blocks", a.Mode, a.Size, a.Blocks, len(data), lst.Blocks)
	}
	if _, ok := hostXattr(u.U("f"), xMetacopyName); !ok {
		t.Fatal("chmod did not leave a metacopy upper")
	}
	// After a remount the metacopy file still finds its data below.
	u.remount()
	n = u.node("f")
	if a := u.attr(n); a.Mode != unix.S_IFREG|0o640 || a.Size != uint64(len(data)) {
		t.Errorf("after remount: mode %#o size %d", a.Mode, a.Size)
	}
	if got := u.read("f"); got != data {
		t.Errorf("metacopy file reads %d bytes, want the lower's %d", len(got), len(data))
	}
	// A handle opened before the data copy-up reads the upper from then
	// on, as on kernel overlayfs since 4.19 (ovl_real_fdget_meta reopens
	// the real file once the inode was copied up).
	fh := u.mustOpen(n, unix.O_RDONLY)
	if got := u.readAt(n, fh, 0, 3); got != "012" {
		t.Errorf("before the data copy-up a handle reads %q, want the lower data", got)
	}
	u.write(n, "ABC")
	if got := u.readAt(n, fh, 0, 3); got != "ABC" {
		t.Errorf("a handle opened before the data copy-up reads %q, want the new data ABC", got)
	}
	u.release(n, fh)
	if _, ok := hostXattr(u.U("f"), xMetacopyName); ok {
		t.Error("the metacopy mark stayed after the data copy-up")
	}
	want := "ABC" + data[3:]
	if b, _ := os.ReadFile(u.U("f")); string(b) != want {
		t.Errorf("upper holds %d bytes (%.10q...), want the lower data with ABC", len(b), b)
	}
	if got := u.read("f"); got != want {
		t.Errorf("union reads %.10q..., want %.10q...", got, want)
	}
	if st, _ := hostStat(t, u.U("f")); st.Mode&0o7777 != 0o640 {
		t.Errorf("upper mode %#o after the data copy-up, want 0640", st.Mode&0o7777)
	}
}

// TestCopyUpPreserves copies up one object of each type and checks that
// the upper object has the lower's type, mode (set-ID bits included),
// owner, times, xattrs (not the lower's private ones), symlink target and
// device number, and that the union shows the same attributes and st_ino
// before and after.
func TestCopyUpPreserves(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 1, true)
	u.extra = "metacopy=off"
	type obj struct {
		name string
		make func(p string) error
		mode uint32
		rdev uint64
	}
	objs := []obj{
		{"suid", func(p string) error { return os.WriteFile(p, []byte("set-ID data"), 0o600) }, unix.S_IFREG | 0o6755, 0},
		{"sgid", func(p string) error { return os.WriteFile(p, []byte("x"), 0o600) }, unix.S_IFREG | 0o2750, 0},
		{"dir", func(p string) error { return os.Mkdir(p, 0o700) }, unix.S_IFDIR | 0o3775, 0},
		{"link", func(p string) error { return os.Symlink("some/target/../path", p) }, unix.S_IFLNK | 0o777, 0},
		{"fifo", func(p string) error { return unix.Mknod(p, unix.S_IFIFO|0o600, 0) }, unix.S_IFIFO | 0o640, 0},
		{"null", func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) }, unix.S_IFCHR | 0o666, unix.Mkdev(1, 3)},
		{"blk", func(p string) error { return unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))) }, unix.S_IFBLK | 0o660, unix.Mkdev(7, 200)},
	}
	for _, o := range objs {
		p := u.L(1, o.name)
		if err := o.make(p); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lchown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if o.mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Chmod(p, o.mode&0o7777); err != nil {
				t.Fatal(err)
			}
			hostSetxattr(t, p, "trusted.kept", "t-"+o.name)
		}
		if o.mode&unix.S_IFMT == unix.S_IFREG || o.mode&unix.S_IFMT == unix.S_IFDIR {
			hostSetxattr(t, p, "user.kept", "u-"+o.name)
		}
		// The layer's own private xattr stays behind; an escaped one
		// is an ordinary xattr of the object and goes along.
		hostSetxattr(t, p, "trusted.overlay.impure", "y")
		hostSetxattr(t, p, "trusted.overlay.overlay.nested", "n")
		hostSetTimes(t, p)
	}
	fs := u.mount()
	rootBefore, _ := hostStat(t, u.upper)
	for _, o := range objs {
		t.Run(o.name, func(t *testing.T) {
			e := u.entry(o.name)
			before := u.attr(e.NodeID)
			if before.Mode != o.mode || before.UID != 1234 || before.GID != 5678 {
				t.Fatalf("lower %s: mode %#o owner %d:%d", o.name, before.Mode, before.UID, before.GID)
			}
			if o.mode&unix.S_IFMT == unix.S_IFREG {
				u.release(e.NodeID, u.mustOpen(e.NodeID, unix.O_WRONLY))
			} else if e := fs.Setxattr(rootCtx, e.NodeID, "trusted.added", []byte("a"), &fuseproto.SetxattrIn{}); e != 0 {
				t.Fatalf("Setxattr: %v", e)
			}
			// Before the host reads below change the upper's atime.
			after := u.attr(e.NodeID)
			p := u.U(o.name)
			st, ok := hostStat(t, p)
			if !ok {
				t.Fatal("not copied up")
			}
			if st.Mode != o.mode || st.Uid != 1234 || st.Gid != 5678 || st.Rdev != o.rdev {
				t.Errorf("upper: mode %#o owner %d:%d rdev %#x, want %#o 1234:5678 %#x", st.Mode, st.Uid, st.Gid, st.Rdev, o.mode, o.rdev)
			}
			if got := time.Unix(st.Mtim.Unix()); !got.Equal(fixtureTime) {
				t.Errorf("upper mtime %v, want %v", got, fixtureTime)
			}
			switch o.mode & unix.S_IFMT {
			case unix.S_IFREG:
				lb, _ := os.ReadFile(u.L(1, o.name))
				if b, _ := os.ReadFile(p); !bytes.Equal(b, lb) {
					t.Errorf("upper data %q, want %q", b, lb)
				}
			case unix.S_IFLNK:
				if target, err := os.Readlink(p); err != nil || target != "some/target/../path" {
					t.Errorf("upper symlink target %q, %v", target, err)
				}
			case unix.S_IFDIR:
				if ents := hostNames(t, p); len(ents) != 0 {
					t.Errorf("a directory copy-up copied children %q", ents)
				}
			}
			if o.mode&unix.S_IFMT != unix.S_IFLNK {
				if v, ok := hostXattr(p, "trusted.kept"); v != "t-"+o.name {
					t.Errorf("trusted.kept = %q, %v", v, ok)
				}
			}
			if o.mode&unix.S_IFMT == unix.S_IFREG || o.mode&unix.S_IFMT == unix.S_IFDIR {
				if v, ok := hostXattr(p, "user.kept"); v != "u-"+o.name {
					t.Errorf("user.kept = %q, %v", v, ok)
				}
			}
			if v, ok := hostXattr(p, "trusted.overlay.overlay.nested"); v != "n" {
				t.Errorf("escaped xattr = %q, %v", v, ok)
			}
			if v, ok := hostXattr(p, "trusted.overlay.impure"); ok {
				t.Errorf("the lower's private impure xattr was copied: %q", v)
			}
			if _, ok := hostXattr(p, "trusted.overlay.origin"); !ok {
				t.Error("no origin recorded on the copy")
			}
			before.Ctime, before.Ctimensec, after.Ctime, after.Ctimensec = 0, 0, 0, 0
			if o.mode&unix.S_IFMT == unix.S_IFDIR {
				before.Nlink, after.Nlink = 0, 0 // a lower dir and a merged one count links differently
				before.Size, after.Size = 0, 0
				before.Blocks, after.Blocks = 0, 0
			}
			if o.mode&unix.S_IFMT == unix.S_IFLNK {
				before.Blocks, after.Blocks = 0, 0
			}
			if after != before {
				t.Errorf("attributes through the union changed on copy-up:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
	// The root's upper keeps its times across the copy-ups in it.
	if rootAfter, _ := hostStat(t, u.upper); rootAfter.Mtim != rootBefore.Mtim {
		t.Errorf("upper root mtime %v, want it restored to %v", rootAfter.Mtim, rootBefore.Mtim)
	}
}

// TestCopyUpParentChain copies up a deep file: every ancestor comes up
// alone, with its metadata and times, before it.
func TestCopyUpParentChain(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "a/b/c/f"), "deep")
	hostFile(t, u.L(1, "a/b/sibling"), "s")
	hostFile(t, u.L(1, "a/other/x"), "x")
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		if err := os.Chmod(u.L(1, d), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(u.L(1, d), 7, 8); err != nil {
			t.Fatal(err)
		}
		hostSetTimes(t, u.L(1, d))
	}
	u.mount()
	u.write(u.node("a/b/c/f"), "DEEP")
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		st, ok := hostStat(t, u.U(d))
		if !ok {
			t.Fatalf("%s not copied up", d)
		}
		if st.Mode != unix.S_IFDIR|0o711 || st.Uid != 7 || st.Gid != 8 {
			t.Errorf("%s: mode %#o owner %d:%d, want 0711 7:8", d, st.Mode, st.Uid, st.Gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(fixtureTime) {
			t.Errorf("%s: mtime %v, want the lower's %v", d, got, fixtureTime)
		}
	}
	if got := hostNames(t, u.U("a")); len(got) != 1 || got[0] != "b" {
		t.Errorf("upper a holds %q, want only b", got)
	}
	if got := hostNames(t, u.U("a/b")); len(got) != 1 || got[0] != "c" {
		t.Errorf("upper a/b holds %q, want only c", got)
	}
	if got := u.read("a/b/sibling"); got != "s" {
		t.Errorf("a/b/sibling reads %q", got)
	}
	if got := u.read("a/b/c/f"); got != "DEEP" {
		t.Errorf("a/b/c/f reads %q", got)
	}
}

// TestCopyUpSparse checks that holes stay holes in the copy.
func TestCopyUpSparse(t *testing.T) {
	u := newUnion(t, "", 1, true)
	p := u.L(1, "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte("D"), 8192)
	if _, err := f.WriteAt(block, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(block, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if off, err := seek(p, 0, unix.SEEK_HOLE); err != nil || off != 0 {
		t.Skipf("the host filesystem does not report holes (SEEK_HOLE at 0 = %d, %v)", off, err)
	}
	lst, _ := hostStat(t, p)
	u.mount()
	n := u.node("sparse")
	fh := u.mustOpen(n, unix.O_RDWR)
	defer u.release(n, fh)
	up := u.U("sparse")
	st, ok := hostStat(t, up)
	if !ok {
		t.Fatal("not copied up")
	}
	if st.Size != 5<<20 {
		t.Errorf("upper size %d, want %d", st.Size, 5<<20)
	}
	if st.Blocks > lst.Blocks {
		t.Errorf("upper uses %d blocks, the lower %d: holes were filled", st.Blocks, lst.Blocks)
	}
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, unix.SEEK_HOLE, 0},
		{0, unix.SEEK_DATA, 1 << 20},
		{1 << 20, unix.SEEK_HOLE, 1<<20 + 8192},
		{1<<20 + 8192, unix.SEEK_DATA, 3 << 20},
		{3 << 20, unix.SEEK_HOLE, 3<<20 + 8192},
	} {
		if got, err := seek(up, c.off, c.whence); err != nil || got != c.want {
			t.Errorf("upper lseek(%d, %d) = %d, %v, want %d", c.off, c.whence, got, err, c.want)
		}
		var lo fuseproto.LseekOut
		if e := u.fs.Lseek(rootCtx, n, &fuseproto.LseekIn{Fh: fh, Offset: uint64(c.off), Whence: uint32(c.whence)}, &lo); e != 0 || int64(lo.Offset) != c.want {
			t.Errorf("Lseek(%d, %d) = %d, %v, want %d", c.off, c.whence, lo.Offset, e, c.want)
		}
	}
	b, _ := os.ReadFile(up)
	lb, _ := os.ReadFile(p)
	if !bytes.Equal(b, lb) {
		t.Error("upper data differs from the lower")
	}
}

// seek opens p and seeks.
func seek(p string, off int64, whence int) (int64, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.Seek(fd, off, whence)
}

// TestCopyUpConcurrent has 8 goroutines change the same lower file at once:
// it is copied up exactly once (each request succeeds; a second copy-up
// would find the name taken), and nothing is left in the work directory.
func TestCopyUpConcurrent(t *testing.T) {
	u := newUnion(t, "", 1, true)
	const files = 20
	for i := 0; i < files; i++ {
		hostFile(t, u.L(1, "d/f"+string(rune('a'+i))), strings.Repeat("x", 1000))
	}
	u.mount()
	began := time.Now().Add(-time.Second)
	for i := 0; i < files; i++ {
		name := "d/f" + string(rune('a'+i))
		n := u.node(name)
		var wg sync.WaitGroup
		errs := make([]fuseproto.Errno, 8)
		start := make(chan struct{})
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var in fuseproto.SetattrIn
				switch g % 4 {
				case 0:
					in = fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}
				case 1:
					in = fuseproto.SetattrIn{Valid: fuseproto.FattrSize, Size: 1000}
				case 2:
					in = fuseproto.SetattrIn{Valid: fuseproto.FattrMtime, Mtime: 1e9}
				case 3:
					in = fuseproto.SetattrIn{Valid: fuseproto.FattrUID, UID: 99}
				}
				var a fuseproto.AttrOut
				errs[g] = u.fs.Setattr(rootCtx, n, &in, &a)
			}()
		}
		close(start)
		wg.Wait()
		for g, e := range errs {
			if e != 0 {
				t.Errorf("%s: goroutine %d: Setattr: %v", name, g, e)
			}
		}
		// The truncate may run after the utimes and set mtime to now.
		st, ok := hostStat(t, u.U(name))
		if !ok || st.Mode != unix.S_IFREG|0o600 || st.Uid != 99 || (st.Mtim.Sec != 1e9 && st.Mtim.Sec < began.Unix()) || st.Size != 1000 {
			t.Errorf("%s: upper exists %v mode %#o uid %d mtime %d size %d", name, ok, st.Mode, st.Uid, st.Mtim.Sec, st.Size)
		}
		if _, meta := hostXattr(u.U(name), xMetacopyName); meta {
			t.Errorf("%s: a size change left the metacopy mark", name)
		}
		if got := u.read(name); got != strings.Repeat("x", 1000) {
			t.Errorf("%s reads %d bytes", name, len(got))
		}
	}
	if got := hostNames(t, u.U("d")); len(got) != files {
		t.Errorf("upper d holds %d entries, want %d", len(got), files)
	}
	if got := hostNames(t, filepath.Join(u.work, "work")); len(got) != 0 {
		t.Errorf("work/ holds %q after the copy-ups", got)
	}
}

// TestNewCleansWork checks crash recovery: whatever a previous run left in
// workdir/work (half-built copies, whiteouts, directories) is removed by
// New and never shows in the union.
func TestNewCleansWork(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "f"), "lower")
	work := filepath.Join(u.work, "work")
	hostFile(t, filepath.Join(work, "#1f.3"), "half a copy")
	hostFile(t, filepath.Join(work, "#1f.4/sub/deep"), "x")
	if err := os.Chmod(filepath.Join(work, "#1f.4/sub"), 0); err != nil {
		t.Fatal(err)
	}
	hostWhiteout(t, filepath.Join(work, "#1f.5"))
	if err := os.Symlink("/etc/passwd", filepath.Join(work, "#1f.6")); err != nil {
		t.Fatal(err)
	}
	hostFile(t, filepath.Join(u.work, "index", "keep"), "index entries are not work")
	u.mount()
	if got := hostNames(t, work); len(got) != 0 {
		t.Errorf("work/ holds %q after New", got)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("cleaning followed a symlink: %v", err)
	}
	if _, ok := hostStat(t, filepath.Join(u.work, "index", "keep")); !ok {
		t.Error("New removed an index entry")
	}
	if got := u.ls("/"); len(got) != 1 || got[0] != "f" {
		t.Errorf("root lists %q", got)
	}
}
