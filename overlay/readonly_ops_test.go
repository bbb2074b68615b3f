package overlay

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// hostSnapshot describes every object under a host directory, the root
// included: type, mode, owner, size, link count, mtime and ctime to the
// nanosecond, contents or link target, and every xattr (trusted included).
// atime is left out: a read may move it.
func hostSnapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "mode=%#o uid=%d gid=%d size=%d nlink=%d rdev=%d mtime=%d.%09d ctime=%d.%09d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " data=%q", data)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " target=%q", target)
		}
		names := make([]byte, 64<<10)
		n, err := unix.Llistxattr(p, names)
		if err != nil && err != unix.ENOTSUP {
			return err
		}
		list := strings.Split(strings.TrimRight(string(names[:max(n, 0)]), "\x00"), "\x00")
		slices.Sort(list)
		for _, name := range list {
			if name == "" {
				continue
			}
			val := make([]byte, 64<<10)
			m, err := unix.Lgetxattr(p, name, val)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %s=%q", name, val[:m])
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = b.String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffSnapshots reports every path added, removed or changed.
func diffSnapshots(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s: %s was removed", what, p)
		case a != b:
			t.Errorf("%s: %s changed:\n  before %s\n  after  %s", what, p, b, a)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s was added: %s", what, p, a)
		}
	}
}

// Fallocate modes (linux/falloc.h).
const (
	fallocKeepSize      = 0x01
	fallocPunchHole     = 0x02
	fallocCollapseRange = 0x08
	fallocZeroRange     = 0x10
	fallocInsertRange   = 0x20
)

// iocFsSetXattr is FS_IOC_FSSETXATTR, which the overlay does not run.
const iocFsSetXattr = 0x401c5820

// bogusFh is a handle number never handed out.
const bogusFh = 1 << 40

// roFixture builds the layers of TestReadOnlyEveryOp. With an upper it
// first serves the union read-write to leave what a used upper holds: a
// copied-up file with an origin, an indexed hard link, a whiteout, a new
// file and directory; then, as an image tool would, a merged directory
// without an origin (which a writable union's lookup records) and a stale
// object in work/.
func roFixture(t *testing.T, mode string) *union {
	u := newUnion(t, "", 2, mode != "no upper")
	hostFile(t, u.L(1, "f"), "0123456789")
	hostSetxattr(t, u.L(1, "f"), "user.a", "v")
	hostFile(t, u.L(1, "d/x"), "x")
	hostFile(t, u.L(2, "d/y"), "y")
	hostFile(t, u.L(2, "g"), "gdata")
	hostFile(t, u.L(1, "h1"), "linked")
	if err := os.Link(u.L(1, "h1"), u.L(1, "h2")); err != nil {
		t.Fatal(err)
	}
	hostDir(t, u.L(1, "empty"))
	hostFile(t, u.L(1, "m/lx"), "lx")
	if err := os.Symlink("/", u.L(1, "s")); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "ReadOnly used upper":
		u.mount()
		u.write(u.node("h1"), "copied")
		fh := u.mustOpen(u.node("f"), unix.O_RDWR) // copy-up with an origin
		u.release(u.node("f"), fh)
		if e := u.unlink("d/y"); e != 0 {
			t.Fatalf("unlink d/y: %v", e)
		}
		if _, e := u.create("uf", unix.O_RDWR); e != 0 {
			t.Fatalf("create uf: %v", e)
		}
		if _, e := u.mkdir("ud"); e != 0 {
			t.Fatalf("mkdir ud: %v", e)
		}
		u.fs.Close()
		u.fs = nil
		hostDir(t, u.U("m"))
		hostFile(t, filepath.Join(u.work, "work", "stale"), "left by a crash")
	case "ReadOnly fresh upper":
		hostFile(t, u.U("uf"), "upper")
		hostDir(t, u.U("ud"))
		hostDir(t, u.U("m"))
	}
	u.opts.ReadOnly = mode != "no upper"
	return u
}

// roRow is one request to a read-only union and the errno it must get.
type roRow struct {
	name string
	want fuseproto.Errno
	op   func() fuseproto.Errno
}

// TestReadOnlyEveryOp sends every FileSystem request to a read-only union
// (Options.ReadOnly over an upper, fresh or used, and a union without an
// upper): each modifying one answers EROFS whatever its flags or handle,
// each reading one still works, and nothing under the layers, the work
// directory included, changed afterwards (New included).
func TestReadOnlyEveryOp(t *testing.T) {
	for _, mode := range []string{"no upper", "ReadOnly fresh upper", "ReadOnly used upper"} {
		t.Run(mode, func(t *testing.T) {
			u := roFixture(t, mode)
			before := hostSnapshot(t, u.base)
			fs := u.mount()
			fs.Init(&fuseproto.Config{Flags: fuseproto.InitPosixACL})
			rows := u.readOnlyRows(mode != "no upper")
			refused := 0
			for _, r := range rows {
				if got := r.op(); got != r.want {
					t.Errorf("%s: %v, want %v", r.name, got, r.want)
				}
				if r.want == unix.EROFS {
					refused++
				}
			}
			t.Logf("%d requests, %d of them refused", len(rows), refused)
			fs.Close()
			u.fs = nil
			diffSnapshots(t, "layers", before, hostSnapshot(t, u.base))
		})
	}
}

// readOnlyRows opens what the rows use and lists them. withUpper: the
// union has an upper holding uf (a file) and ud (a directory).
func (u *union) readOnlyRows(withUpper bool) []roRow {
	t := u.t
	fs := u.fs
	ctx := rootCtx
	root := uint64(fuseproto.RootID)
	f, d, s, h1, m := u.node("f"), u.node("d"), u.node("s"), u.node("h1"), u.node("m")
	uf, ud := f, d
	if withUpper {
		uf, ud = u.node("uf"), u.node("ud")
	}
	fh := u.mustOpen(f, unix.O_RDONLY)
	ufh := u.mustOpen(uf, unix.O_RDONLY)
	dh := u.opendir(d)
	t.Cleanup(func() {
		// The union may be closed by then; errors do not matter.
		if u.fs != nil {
			fs.Release(ctx, f, &fuseproto.ReleaseIn{Fh: fh})
			fs.Release(ctx, uf, &fuseproto.ReleaseIn{Fh: ufh})
			fs.Releasedir(ctx, d, &fuseproto.ReleaseIn{Fh: dh})
		}
	})

	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	var a fuseproto.AttrOut
	open := func(node uint64, flags uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			e := fs.Open(ctx, node, &fuseproto.OpenIn{Flags: flags}, &o)
			if e == 0 {
				fs.Release(ctx, node, &fuseproto.ReleaseIn{Fh: o.Fh})
			}
			return e
		}
	}
	create := func(parent uint64, name string, flags uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			return fs.Create(ctx, parent, name, &fuseproto.CreateIn{Flags: flags, Mode: 0o644}, &e, &o)
		}
	}
	setattr := func(node uint64, in fuseproto.SetattrIn) func() fuseproto.Errno {
		return func() fuseproto.Errno { return fs.Setattr(ctx, node, &in, &a) }
	}
	rename := func(p uint64, from string, q uint64, to string, flags uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno { return fs.Rename(ctx, p, from, q, to, flags) }
	}
	write := func(node, h uint64) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			var src fuseproto.BytesSource
			src.Reset([]byte("w"))
			_, e := fs.Write(ctx, node, &fuseproto.WriteIn{Fh: h, Offset: 1, Size: 1}, &src)
			return e
		}
	}
	fallocate := func(node, h uint64, mode uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			return fs.Fallocate(ctx, node, &fuseproto.FallocateIn{Fh: h, Length: 4096, Mode: mode})
		}
	}
	cfr := func(in, out uint64) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			_, e := fs.CopyFileRange(ctx, f, &fuseproto.CopyFileRangeIn{FhIn: in, FhOut: out, NodeIDOut: uf, OffOut: 2, Len: 3})
			return e
		}
	}
	ioctl := func(node, h uint64, flags, cmd, size uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			_, _, e := fs.Ioctl(ctx, node, &fuseproto.IoctlIn{Fh: h, Flags: flags, Cmd: cmd, InSize: size}, make([]byte, size), nil)
			return e
		}
	}
	lk := func(typ, flags uint32, wait bool) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			in := &fuseproto.LkIn{Fh: fh, Owner: 7, Lk: fuseproto.FileLock{Type: typ, End: 1<<63 - 1, PID: 1}, LkFlags: flags}
			return fs.Setlk(ctx, f, in, wait)
		}
	}
	rofs := fuseproto.Errno(unix.EROFS)
	var rows []roRow
	for _, node := range []struct {
		what string
		n    uint64
	}{{"lower", f}, {"upper", uf}, {"indexed", h1}} {
		for _, fl := range []uint32{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND, unix.O_RDONLY | unix.O_APPEND, unix.O_RDONLY | unix.O_CREAT} {
			rows = append(rows, roRow{fmt.Sprintf("OPEN %s %#o", node.what, fl), rofs, open(node.n, fl)})
		}
		for _, v := range []fuseproto.SetattrIn{
			{Valid: fuseproto.FattrMode, Mode: 0o4777},
			{Valid: fuseproto.FattrMode | fuseproto.FattrFh, Fh: ufh, Mode: 0o600},
			{Valid: fuseproto.FattrUID, UID: 1234},
			{Valid: fuseproto.FattrGID, GID: 1234},
			{Valid: fuseproto.FattrSize, Size: 1},
			{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: ufh},
			{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: bogusFh},
			{Valid: fuseproto.FattrAtime, Atime: 1},
			{Valid: fuseproto.FattrAtime | fuseproto.FattrAtimeNow},
			{Valid: fuseproto.FattrMtime, Mtime: 1},
			{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow},
			{Valid: fuseproto.FattrCtime, Ctime: 1},
			{Valid: fuseproto.FattrKillSUIDGID},
		} {
			rows = append(rows, roRow{fmt.Sprintf("SETATTR %s %#x", node.what, v.Valid), rofs, setattr(node.n, v)})
		}
		rows = append(rows,
			roRow{"SETXATTR " + node.what, rofs, func() fuseproto.Errno {
				return fs.Setxattr(ctx, node.n, "user.b", []byte("1"), &fuseproto.SetxattrIn{Size: 1})
			}},
			roRow{"REMOVEXATTR " + node.what, rofs, func() fuseproto.Errno { return fs.Removexattr(ctx, node.n, "user.a") }},
			roRow{"LINK " + node.what, rofs, func() fuseproto.Errno { return fs.Link(ctx, node.n, ud, "n", &e) }},
			roRow{"ACCESS W_OK " + node.what, rofs, func() fuseproto.Errno { return fs.Access(ctx, node.n, unix.W_OK) }},
			roRow{"IOCTL SETFLAGS " + node.what, rofs, ioctl(node.n, fh, 0, iocSetFlags, 8)},
			roRow{"IOCTL SETFLAGS32 " + node.what, rofs, ioctl(node.n, fh, 0, ioc32SetFlags, 4)},
		)
	}
	for _, dir := range []struct {
		what string
		n    uint64
	}{{"root", root}, {"merged", d}, {"origin-less merged", m}, {"upper", ud}} {
		rows = append(rows,
			roRow{"CREATE new in " + dir.what, rofs, create(dir.n, "n", unix.O_WRONLY|unix.O_CREAT)},
			roRow{"CREATE new O_RDONLY in " + dir.what, rofs, create(dir.n, "n", unix.O_RDONLY|unix.O_CREAT)},
			roRow{"TMPFILE in " + dir.what, rofs, func() fuseproto.Errno {
				return fs.Tmpfile(ctx, dir.n, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &e, &o)
			}},
			roRow{"MKNOD reg in " + dir.what, rofs, func() fuseproto.Errno {
				return fs.Mknod(ctx, dir.n, "n", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
			}},
			roRow{"MKNOD chr 0:0 in " + dir.what, rofs, func() fuseproto.Errno {
				return fs.Mknod(ctx, dir.n, "n", &fuseproto.MknodIn{Mode: unix.S_IFCHR | 0o644}, &e)
			}},
			roRow{"MKDIR in " + dir.what, rofs, func() fuseproto.Errno { return fs.Mkdir(ctx, dir.n, "n", &fuseproto.MkdirIn{Mode: 0o755}, &e) }},
			roRow{"SYMLINK in " + dir.what, rofs, func() fuseproto.Errno { return fs.Symlink(ctx, dir.n, "n", "/", &e) }},
			roRow{"SETATTR mode " + dir.what, rofs, setattr(dir.n, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o777})},
			roRow{"SETATTR mtime " + dir.what, rofs, setattr(dir.n, fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow})},
			roRow{"SETXATTR " + dir.what, rofs, func() fuseproto.Errno {
				return fs.Setxattr(ctx, dir.n, "trusted.overlay.opaque", []byte("y"), &fuseproto.SetxattrIn{Size: 1})
			}},
			roRow{"ACCESS W_OK " + dir.what, rofs, func() fuseproto.Errno { return fs.Access(ctx, dir.n, unix.W_OK|unix.X_OK) }},
		)
	}
	rows = append(rows, []roRow{
		{"CREATE existing lower", rofs, create(root, "f", unix.O_RDONLY|unix.O_CREAT)},
		{"CREATE existing upper O_TRUNC", rofs, create(root, "uf", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC)},
		{"CREATE over whiteout", rofs, create(d, "y", unix.O_WRONLY|unix.O_CREAT)},
		{"MKDIR over whiteout", rofs, func() fuseproto.Errno { return fs.Mkdir(ctx, d, "y", &fuseproto.MkdirIn{Mode: 0o755}, &e) }},
		{"UNLINK lower", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "f") }},
		{"UNLINK lower2", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "g") }},
		{"UNLINK upper", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "uf") }},
		{"UNLINK indexed", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "h2") }},
		{"UNLINK symlink", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "s") }},
		{"UNLINK in merged", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, d, "x") }},
		{"RMDIR lower", rofs, func() fuseproto.Errno { return fs.Rmdir(ctx, root, "empty") }},
		{"RMDIR upper", rofs, func() fuseproto.Errno { return fs.Rmdir(ctx, root, "ud") }},
		{"RMDIR merged", rofs, func() fuseproto.Errno { return fs.Rmdir(ctx, root, "m") }},
		{"RENAME lower", rofs, rename(root, "f", root, "f2", 0)},
		{"RENAME into merged", rofs, rename(root, "f", d, "f2", 0)},
		{"RENAME upper", rofs, rename(root, "uf", root, "uf2", 0)},
		{"RENAME dir", rofs, rename(root, "d", root, "d2", 0)},
		{"RENAME over", rofs, rename(root, "f", root, "g", 0)},
		{"RENAME2 NOREPLACE", rofs, rename(root, "f", root, "f2", unix.RENAME_NOREPLACE)},
		{"RENAME2 EXCHANGE", rofs, rename(root, "f", root, "g", unix.RENAME_EXCHANGE)},
		{"RENAME2 WHITEOUT", rofs, rename(root, "f", root, "f2", unix.RENAME_WHITEOUT)},
		{"SETATTR symlink owner", rofs, setattr(s, fuseproto.SetattrIn{Valid: fuseproto.FattrUID | fuseproto.FattrGID, UID: 1, GID: 1})},
		{"LINK symlink", rofs, func() fuseproto.Errno { return fs.Link(ctx, s, root, "n", &e) }},
		{"REMOVEXATTR missing", rofs, func() fuseproto.Errno { return fs.Removexattr(ctx, d, "user.none") }},
		{"WRITE lower handle", rofs, write(f, fh)},
		{"WRITE upper handle", rofs, write(uf, ufh)},
		{"WRITE dir handle", rofs, write(d, dh)},
		{"WRITE bogus fh", rofs, write(f, bogusFh)},
		{"FALLOCATE 0", rofs, fallocate(uf, ufh, 0)},
		{"FALLOCATE KEEP_SIZE", rofs, fallocate(uf, ufh, fallocKeepSize)},
		{"FALLOCATE PUNCH_HOLE", rofs, fallocate(uf, ufh, fallocPunchHole|fallocKeepSize)},
		{"FALLOCATE ZERO_RANGE", rofs, fallocate(uf, ufh, fallocZeroRange)},
		{"FALLOCATE COLLAPSE_RANGE", rofs, fallocate(uf, ufh, fallocCollapseRange)},
		{"FALLOCATE INSERT_RANGE", rofs, fallocate(uf, ufh, fallocInsertRange)},
		{"FALLOCATE lower handle", rofs, fallocate(f, fh, fallocPunchHole|fallocKeepSize)},
		{"FALLOCATE bogus fh", rofs, fallocate(f, bogusFh, 0)},
		{"COPY_FILE_RANGE to upper", rofs, cfr(fh, ufh)},
		{"COPY_FILE_RANGE to lower", rofs, cfr(ufh, fh)},
		{"COPY_FILE_RANGE bogus out", rofs, cfr(fh, bogusFh)},
		{"COPY_FILE_RANGE dir out", rofs, cfr(fh, dh)},
		{"IOCTL SETFLAGS dir", rofs, ioctl(d, dh, fuseproto.IoctlDir, iocSetFlags, 8)},
		{"IOCTL SETFLAGS bogus fh", rofs, ioctl(f, bogusFh, 0, iocSetFlags, 8)},
		// The overlay runs no FS_IOC_FSSETXATTR, writable or not.
		{"IOCTL FSSETXATTR", unix.ENOTTY, ioctl(uf, ufh, 0, iocFsSetXattr, 28)},
	}...)

	// What must keep working.
	var attr fuseproto.AttrOut
	var sx fuseproto.StatxOut
	var sf fuseproto.StatfsOut
	var lo fuseproto.LkOut
	var so fuseproto.LseekOut
	buf := make([]byte, 8192)
	read := func(node, h uint64, want string) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			var dst fuseproto.BytesDest
			dst.Reset(buf)
			if e := fs.Read(ctx, node, &fuseproto.ReadIn{Fh: h, Size: 100}, &dst); e != 0 {
				return e
			}
			if string(dst.Bytes()) != want {
				t.Logf("read %q, want %q", dst.Bytes(), want)
				return unix.EIO
			}
			return 0
		}
	}
	lookup := func(p uint64, name string) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			errno := fs.Lookup(ctx, p, name, &e)
			if errno == 0 {
				fs.Forget(e.NodeID, 1)
			}
			return errno
		}
	}
	readdir := func(node uint64, plus bool) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			var o fuseproto.OpenOut
			if e := fs.Opendir(ctx, node, &fuseproto.OpenIn{}, &o); e != 0 {
				return e
			}
			defer fs.Releasedir(ctx, node, &fuseproto.ReleaseIn{Fh: o.Fh})
			db := fuseproto.NewDirBuffer(buf, len(buf), plus)
			if e := fs.Readdir(ctx, node, &fuseproto.ReadIn{Fh: o.Fh, Size: uint32(len(buf))}, db); e != 0 {
				return e
			}
			if plus {
				for _, ent := range parseDir(db.Bytes(), true) {
					if ent.node != 0 {
						fs.Forget(ent.node, 1)
					}
				}
			}
			return 0
		}
	}
	rows = append(rows, []roRow{
		{"LOOKUP", 0, lookup(d, "x")},
		{"LOOKUP missing", unix.ENOENT, lookup(d, "zz")},
		{"LOOKUP origin-less merged", 0, lookup(root, "m")},
		{"LOOKUP indexed alias", 0, lookup(root, "h2")},
		{"GETATTR", 0, func() fuseproto.Errno { return fs.Getattr(ctx, f, &fuseproto.GetattrIn{}, &attr) }},
		{"GETATTR fh", 0, func() fuseproto.Errno {
			return fs.Getattr(ctx, f, &fuseproto.GetattrIn{GetattrFlags: fuseproto.GetattrFh, Fh: fh}, &attr)
		}},
		{"STATX", 0, func() fuseproto.Errno { return fs.Statx(ctx, h1, &fuseproto.StatxIn{}, &sx) }},
		{"READ", 0, read(f, fh, "0123456789")},
		{"READDIR root", 0, readdir(root, false)},
		{"READDIRPLUS root", 0, readdir(root, true)},
		{"READDIRPLUS merged", 0, readdir(d, true)},
		{"READDIRPLUS origin-less merged", 0, readdir(m, true)},
		{"READLINK", 0, func() fuseproto.Errno {
			n, e := fs.Readlink(ctx, s, buf)
			if e == 0 && string(buf[:n]) != "/" {
				return unix.EIO
			}
			return e
		}},
		{"GETXATTR", 0, func() fuseproto.Errno {
			n, e := fs.Getxattr(ctx, f, "user.a", buf)
			if e == 0 && string(buf[:n]) != "v" {
				return unix.EIO
			}
			return e
		}},
		{"LISTXATTR", 0, func() fuseproto.Errno { _, e := fs.Listxattr(ctx, d, buf); return e }},
		{"STATFS", 0, func() fuseproto.Errno { return fs.Statfs(ctx, f, &sf) }},
		{"OPEN O_RDONLY", 0, open(h1, unix.O_RDONLY)},
		{"LSEEK SEEK_DATA", 0, func() fuseproto.Errno {
			return fs.Lseek(ctx, f, &fuseproto.LseekIn{Fh: fh, Whence: unix.SEEK_DATA}, &so)
		}},
		{"FSYNC", 0, func() fuseproto.Errno { return fs.Fsync(ctx, uf, &fuseproto.FsyncIn{Fh: ufh}) }},
		{"FSYNCDIR", 0, func() fuseproto.Errno { return fs.Fsyncdir(ctx, d, &fuseproto.FsyncIn{Fh: dh}) }},
		{"SYNCFS", 0, func() fuseproto.Errno { return fs.Syncfs(ctx, f) }},
		{"FLUSH", 0, func() fuseproto.Errno { return fs.Flush(ctx, f, &fuseproto.FlushIn{Fh: fh, LockOwner: 9}) }},
		{"ACCESS R_OK", 0, func() fuseproto.Errno { return fs.Access(ctx, f, unix.R_OK) }},
		{"GETLK", 0, func() fuseproto.Errno {
			return fs.Getlk(ctx, f, &fuseproto.LkIn{Fh: fh, Owner: 8, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: 1<<63 - 1}}, &lo)
		}},
		{"SETLK F_RDLCK", 0, lk(unix.F_RDLCK, 0, false)},
		{"SETLK F_WRLCK", 0, lk(unix.F_WRLCK, 0, false)},
		{"SETLK F_UNLCK", 0, lk(unix.F_UNLCK, 0, false)},
		{"SETLKW F_RDLCK", 0, lk(unix.F_RDLCK, 0, true)},
		{"SETLK F_UNLCK again", 0, lk(unix.F_UNLCK, 0, false)},
		{"SETLK flock LOCK_EX", 0, lk(unix.F_WRLCK, fuseproto.LkFlock, false)},
		{"SETLK flock LOCK_UN", 0, lk(unix.F_UNLCK, fuseproto.LkFlock, false)},
	}...)
	return rows
}
