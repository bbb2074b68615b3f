package passthrough

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// hostSnapshot describes every object under a host directory, the root
// included, as a read-only share must leave it: type, mode, owner, size,
// link count, mtime and ctime to the nanosecond, contents or link target,
// and every xattr (trusted and security included). atime is left out: a
// read may move it, as on any read-only mount without noatime.
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

// roRow is one request to a read-only filesystem and the errno it must get.
type roRow struct {
	name string
	want fuseproto.Errno
	op   func() fuseproto.Errno
}

// Fallocate modes (linux/falloc.h).
const (
	fallocKeepSize      = 0x01
	fallocPunchHole     = 0x02
	fallocCollapseRange = 0x08
	fallocZeroRange     = 0x10
	fallocInsertRange   = 0x20
	fallocUnshareRange  = 0x40
)

// bogusFh is a handle number never handed out.
const bogusFh = 1 << 40

// TestReadOnlyEveryOp sends every FileSystem request to a read-only share:
// each modifying one answers EROFS whatever its flags or handle (a bogus
// or read-only one included), each reading one still works, and the
// host tree is unchanged down to ctimes and xattrs afterwards.
func TestReadOnlyEveryOp(t *testing.T) {
	fs, dir := newTestFS(t, Options{ReadOnly: true, Xattr: true})
	writeFile(t, dir, "f", "0123456789")
	for _, d := range []string{"d", "empty"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "d/x", "x")
	if err := os.Symlink("f", filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "p"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "f"), "user.a", []byte("v"), 0); err != nil {
		t.Skipf("host filesystem takes no user xattrs: %v", err)
	}
	fs.Init(&fuseproto.Config{Flags: fuseproto.InitPosixACL})

	before := hostSnapshot(t, dir)

	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	d := mustLookup(t, fs, fuseproto.RootID, "d").NodeID
	s := mustLookup(t, fs, fuseproto.RootID, "s").NodeID
	p := mustLookup(t, fs, fuseproto.RootID, "p").NodeID
	fh := mustOpen(t, fs, f, unix.O_RDONLY)
	defer release(t, fs, f, fh)
	var oo fuseproto.OpenOut
	if e := fs.Opendir(rootCtx, d, &fuseproto.OpenIn{Flags: unix.O_RDONLY}, &oo); e != 0 {
		t.Fatalf("Opendir: %v", e)
	}
	dh := oo.Fh
	defer fs.Releasedir(rootCtx, d, &fuseproto.ReleaseIn{Fh: dh})

	rows := readOnlyRows(fs, f, d, s, p, fh, dh)
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
	diffSnapshots(t, "share", before, hostSnapshot(t, dir))
}

// readOnlyRows lists the requests of TestReadOnlyEveryOp: f a regular file
// open read-only as fh, d a directory open as dh (holding x), s a symlink,
// p a fifo; the root also holds "empty", an empty directory.
func readOnlyRows(fs *FS, f, d, s, p, fh, dh uint64) []roRow {
	ctx := rootCtx
	root := uint64(fuseproto.RootID)
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
	create := func(name string, flags uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			return fs.Create(ctx, root, name, &fuseproto.CreateIn{Flags: flags, Mode: 0o644}, &e, &o)
		}
	}
	setattr := func(node uint64, in fuseproto.SetattrIn) func() fuseproto.Errno {
		return func() fuseproto.Errno { return fs.Setattr(ctx, node, &in, &a) }
	}
	rename := func(from, to string, flags uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno { return fs.Rename(ctx, root, from, root, to, flags) }
	}
	write := func(h uint64) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			var src fuseproto.BytesSource
			src.Reset([]byte("w"))
			_, e := fs.Write(ctx, f, &fuseproto.WriteIn{Fh: h, Offset: 1, Size: 1}, &src)
			return e
		}
	}
	fallocate := func(h uint64, mode uint32) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			return fs.Fallocate(ctx, f, &fuseproto.FallocateIn{Fh: h, Offset: 0, Length: 4096, Mode: mode})
		}
	}
	cfr := func(in, out uint64) func() fuseproto.Errno {
		return func() fuseproto.Errno {
			_, e := fs.CopyFileRange(ctx, f, &fuseproto.CopyFileRangeIn{FhIn: in, FhOut: out, NodeIDOut: f, OffOut: 2, Len: 3})
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
			in := lkIn(fh, 7, typ, 0, offsetMax)
			in.LkFlags = flags
			return fs.Setlk(ctx, f, in, wait)
		}
	}
	rofs := fuseproto.Errno(unix.EROFS)
	rows := []roRow{
		{"OPEN O_WRONLY", rofs, open(f, unix.O_WRONLY)},
		{"OPEN O_RDWR", rofs, open(f, unix.O_RDWR)},
		{"OPEN O_RDONLY|O_TRUNC", rofs, open(f, unix.O_RDONLY|unix.O_TRUNC)},
		{"OPEN O_WRONLY|O_TRUNC", rofs, open(f, unix.O_WRONLY|unix.O_TRUNC)},
		{"OPEN O_WRONLY|O_APPEND", rofs, open(f, unix.O_WRONLY|unix.O_APPEND)},
		{"OPEN O_RDONLY|O_APPEND", rofs, open(f, unix.O_RDONLY|unix.O_APPEND)},
		{"OPEN O_RDONLY|O_CREAT", rofs, open(f, unix.O_RDONLY|unix.O_CREAT)},
		{"OPEN O_RDWR dir", rofs, open(d, unix.O_RDWR)},
		{"CREATE new O_WRONLY", rofs, create("n", unix.O_WRONLY|unix.O_CREAT)},
		{"CREATE new O_RDONLY", rofs, create("n", unix.O_RDONLY|unix.O_CREAT)},
		{"CREATE existing O_RDONLY", rofs, create("f", unix.O_RDONLY|unix.O_CREAT)},
		{"CREATE existing O_TRUNC", rofs, create("f", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC)},
		{"CREATE existing O_EXCL", rofs, create("f", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)},
		{"TMPFILE", rofs, func() fuseproto.Errno {
			return fs.Tmpfile(ctx, root, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &e, &o)
		}},
		{"TMPFILE O_EXCL", rofs, func() fuseproto.Errno {
			return fs.Tmpfile(ctx, d, &fuseproto.CreateIn{Flags: unix.O_WRONLY | unix.O_EXCL, Mode: 0o600}, &e, &o)
		}},
		{"MKNOD reg", rofs, func() fuseproto.Errno {
			return fs.Mknod(ctx, root, "n", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
		}},
		{"MKNOD fifo", rofs, func() fuseproto.Errno {
			return fs.Mknod(ctx, root, "n", &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o644}, &e)
		}},
		{"MKNOD chr 1:3", rofs, func() fuseproto.Errno {
			return fs.Mknod(ctx, root, "n", &fuseproto.MknodIn{Mode: unix.S_IFCHR | 0o666, Rdev: uint32(unix.Mkdev(1, 3))}, &e)
		}},
		{"MKNOD existing", rofs, func() fuseproto.Errno {
			return fs.Mknod(ctx, root, "f", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
		}},
		{"MKDIR", rofs, func() fuseproto.Errno { return fs.Mkdir(ctx, d, "n", &fuseproto.MkdirIn{Mode: 0o755}, &e) }},
		{"MKDIR existing", rofs, func() fuseproto.Errno { return fs.Mkdir(ctx, root, "d", &fuseproto.MkdirIn{Mode: 0o755}, &e) }},
		{"SYMLINK", rofs, func() fuseproto.Errno { return fs.Symlink(ctx, root, "n", "/etc/passwd", &e) }},
		{"LINK file", rofs, func() fuseproto.Errno { return fs.Link(ctx, f, d, "n", &e) }},
		{"LINK symlink", rofs, func() fuseproto.Errno { return fs.Link(ctx, s, root, "n", &e) }},
		{"LINK fifo", rofs, func() fuseproto.Errno { return fs.Link(ctx, p, root, "n", &e) }},
		{"UNLINK file", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "f") }},
		{"UNLINK symlink", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, root, "s") }},
		{"UNLINK in dir", rofs, func() fuseproto.Errno { return fs.Unlink(ctx, d, "x") }},
		{"RMDIR empty", rofs, func() fuseproto.Errno { return fs.Rmdir(ctx, root, "empty") }},
		{"RMDIR non-empty", rofs, func() fuseproto.Errno { return fs.Rmdir(ctx, root, "d") }},
		{"RENAME", rofs, rename("f", "g", 0)},
		{"RENAME over", rofs, rename("f", "s", 0)},
		{"RENAME dir", rofs, rename("empty", "e2", 0)},
		{"RENAME2 NOREPLACE", rofs, rename("f", "g", unix.RENAME_NOREPLACE)},
		{"RENAME2 EXCHANGE", rofs, rename("f", "s", unix.RENAME_EXCHANGE)},
		{"RENAME2 WHITEOUT", rofs, rename("f", "g", unix.RENAME_WHITEOUT)},
		{"RENAME2 WHITEOUT|NOREPLACE", rofs, rename("f", "g", unix.RENAME_WHITEOUT|unix.RENAME_NOREPLACE)},
		{"SETATTR mode", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o4777})},
		{"SETATTR mode dir", rofs, setattr(d, fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o777})},
		{"SETATTR mode fh", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrMode | fuseproto.FattrFh, Fh: fh, Mode: 0o600})},
		{"SETATTR uid", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrUID, UID: 1234})},
		{"SETATTR gid", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrGID, GID: 1234})},
		{"SETATTR uid symlink", rofs, setattr(s, fuseproto.SetattrIn{Valid: fuseproto.FattrUID | fuseproto.FattrGID, UID: 1, GID: 1})},
		{"SETATTR size", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrSize, Size: 1})},
		{"SETATTR size fh", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: fh})},
		{"SETATTR size bogus fh", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: bogusFh})},
		{"SETATTR atime", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrAtime, Atime: 1})},
		{"SETATTR atime now", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrAtime | fuseproto.FattrAtimeNow})},
		{"SETATTR mtime", rofs, setattr(d, fuseproto.SetattrIn{Valid: fuseproto.FattrMtime, Mtime: 1})},
		{"SETATTR mtime now", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow})},
		{"SETATTR ctime", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrCtime, Ctime: 1})},
		{"SETATTR kill suid", rofs, setattr(f, fuseproto.SetattrIn{Valid: fuseproto.FattrKillSUIDGID})},
		{"SETXATTR new", rofs, func() fuseproto.Errno {
			return fs.Setxattr(ctx, f, "user.b", []byte("1"), &fuseproto.SetxattrIn{Size: 1})
		}},
		{"SETXATTR replace", rofs, func() fuseproto.Errno {
			return fs.Setxattr(ctx, f, "user.a", []byte("2"), &fuseproto.SetxattrIn{Size: 1, Flags: unix.XATTR_REPLACE})
		}},
		{"SETXATTR trusted dir", rofs, func() fuseproto.Errno {
			return fs.Setxattr(ctx, d, "trusted.x", []byte("1"), &fuseproto.SetxattrIn{Size: 1})
		}},
		{"SETXATTR acl", rofs, func() fuseproto.Errno {
			return fs.Setxattr(ctx, f, "system.posix_acl_access", nil, &fuseproto.SetxattrIn{SetxattrFlags: fuseproto.SetxattrACLKillSGID})
		}},
		{"REMOVEXATTR", rofs, func() fuseproto.Errno { return fs.Removexattr(ctx, f, "user.a") }},
		{"REMOVEXATTR missing", rofs, func() fuseproto.Errno { return fs.Removexattr(ctx, d, "user.none") }},
		{"WRITE", rofs, write(fh)},
		{"WRITE dir handle", rofs, write(dh)},
		{"WRITE bogus fh", rofs, write(bogusFh)},
		{"FALLOCATE 0", rofs, fallocate(fh, 0)},
		{"FALLOCATE KEEP_SIZE", rofs, fallocate(fh, fallocKeepSize)},
		{"FALLOCATE PUNCH_HOLE", rofs, fallocate(fh, fallocPunchHole|fallocKeepSize)},
		{"FALLOCATE ZERO_RANGE", rofs, fallocate(fh, fallocZeroRange)},
		{"FALLOCATE COLLAPSE_RANGE", rofs, fallocate(fh, fallocCollapseRange)},
		{"FALLOCATE INSERT_RANGE", rofs, fallocate(fh, fallocInsertRange)},
		{"FALLOCATE UNSHARE_RANGE", rofs, fallocate(fh, fallocUnshareRange)},
		{"FALLOCATE bogus fh", rofs, fallocate(bogusFh, fallocPunchHole|fallocKeepSize)},
		{"COPY_FILE_RANGE same", rofs, cfr(fh, fh)},
		{"COPY_FILE_RANGE bogus out", rofs, cfr(fh, bogusFh)},
		{"COPY_FILE_RANGE bogus in", rofs, cfr(bogusFh, fh)},
		{"COPY_FILE_RANGE dir out", rofs, cfr(fh, dh)},
		{"IOCTL SETFLAGS", rofs, ioctl(f, fh, 0, iocSetFlags, 8)},
		{"IOCTL SETFLAGS32", rofs, ioctl(f, fh, 0, ioc32SetFlags, 4)},
		{"IOCTL SETFLAGS dir", rofs, ioctl(d, dh, fuseproto.IoctlDir, iocSetFlags, 8)},
		{"IOCTL FSSETXATTR", rofs, ioctl(f, fh, 0, iocFsSetXattr, 28)},
		{"IOCTL FSSETXATTR dir", rofs, ioctl(d, dh, fuseproto.IoctlDir, iocFsSetXattr, 28)},
		{"IOCTL SETFLAGS bogus fh", rofs, ioctl(f, bogusFh, 0, iocSetFlags, 8)},
		{"ACCESS W_OK", rofs, func() fuseproto.Errno { return fs.Access(ctx, f, unix.W_OK) }},
		{"ACCESS W_OK dir", rofs, func() fuseproto.Errno { return fs.Access(ctx, d, unix.W_OK|unix.X_OK) }},
		{"ACCESS W_OK symlink", rofs, func() fuseproto.Errno { return fs.Access(ctx, s, unix.W_OK) }},
	}

	// What must keep working.
	var attr fuseproto.AttrOut
	var sx fuseproto.StatxOut
	var sf fuseproto.StatfsOut
	var lo fuseproto.LkOut
	var so fuseproto.LseekOut
	buf := make([]byte, 4096)
	rows = append(rows, []roRow{
		{"LOOKUP", 0, func() fuseproto.Errno {
			errno := fs.Lookup(ctx, d, "x", &e)
			if errno == 0 {
				fs.Forget(e.NodeID, 1)
			}
			return errno
		}},
		{"GETATTR", 0, func() fuseproto.Errno { return fs.Getattr(ctx, f, &fuseproto.GetattrIn{}, &attr) }},
		{"GETATTR fh", 0, func() fuseproto.Errno {
			return fs.Getattr(ctx, f, &fuseproto.GetattrIn{GetattrFlags: fuseproto.GetattrFh, Fh: fh}, &attr)
		}},
		{"STATX", 0, func() fuseproto.Errno { return fs.Statx(ctx, f, &fuseproto.StatxIn{}, &sx) }},
		{"READ", 0, func() fuseproto.Errno {
			var dst fuseproto.BytesDest
			dst.Reset(buf)
			if e := fs.Read(ctx, f, &fuseproto.ReadIn{Fh: fh, Size: 100}, &dst); e != 0 {
				return e
			}
			if string(dst.Bytes()) != "0123456789" {
				return unix.EIO
			}
			return 0
		}},
		{"READDIR", 0, func() fuseproto.Errno {
			return fs.Readdir(ctx, d, &fuseproto.ReadIn{Fh: dh, Size: 4096}, fuseproto.NewDirBuffer(buf, 4096, false))
		}},
		{"READDIRPLUS", 0, func() fuseproto.Errno {
			return fs.Readdir(ctx, d, &fuseproto.ReadIn{Fh: dh, Size: 4096}, fuseproto.NewDirBuffer(buf, 4096, true))
		}},
		{"READLINK", 0, func() fuseproto.Errno {
			n, e := fs.Readlink(ctx, s, buf)
			if e == 0 && string(buf[:n]) != "f" {
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
		{"LISTXATTR", 0, func() fuseproto.Errno { _, e := fs.Listxattr(ctx, f, buf); return e }},
		{"STATFS", 0, func() fuseproto.Errno { return fs.Statfs(ctx, f, &sf) }},
		{"OPEN O_RDONLY", 0, open(f, unix.O_RDONLY)},
		{"OPEN O_RDONLY|O_NOATIME", 0, open(f, unix.O_RDONLY|unix.O_NOATIME)},
		{"OPENDIR", 0, func() fuseproto.Errno {
			var o fuseproto.OpenOut
			e := fs.Opendir(ctx, root, &fuseproto.OpenIn{}, &o)
			if e == 0 {
				fs.Releasedir(ctx, root, &fuseproto.ReleaseIn{Fh: o.Fh})
			}
			return e
		}},
		{"LSEEK SEEK_DATA", 0, func() fuseproto.Errno {
			return fs.Lseek(ctx, f, &fuseproto.LseekIn{Fh: fh, Whence: unix.SEEK_DATA}, &so)
		}},
		{"FSYNC", 0, func() fuseproto.Errno { return fs.Fsync(ctx, f, &fuseproto.FsyncIn{Fh: fh}) }},
		{"FDATASYNC", 0, func() fuseproto.Errno {
			return fs.Fsync(ctx, f, &fuseproto.FsyncIn{Fh: fh, FsyncFlags: fuseproto.FsyncFdatasync})
		}},
		{"FSYNCDIR", 0, func() fuseproto.Errno { return fs.Fsyncdir(ctx, d, &fuseproto.FsyncIn{Fh: dh}) }},
		{"SYNCFS", 0, func() fuseproto.Errno { return fs.Syncfs(ctx, f) }},
		{"FLUSH", 0, func() fuseproto.Errno { return fs.Flush(ctx, f, &fuseproto.FlushIn{Fh: fh, LockOwner: 9}) }},
		{"ACCESS R_OK", 0, func() fuseproto.Errno { return fs.Access(ctx, f, unix.R_OK) }},
		{"ACCESS W_OK fifo", 0, func() fuseproto.Errno { return fs.Access(ctx, p, unix.W_OK) }},
		{"GETLK", 0, func() fuseproto.Errno { return fs.Getlk(ctx, f, lkIn(fh, 8, unix.F_WRLCK, 0, offsetMax), &lo) }},
		{"SETLK F_RDLCK", 0, lk(unix.F_RDLCK, 0, false)},
		{"SETLK F_UNLCK", 0, lk(unix.F_UNLCK, 0, false)},
		{"SETLKW F_RDLCK", 0, lk(unix.F_RDLCK, 0, true)},
		{"SETLK F_UNLCK again", 0, lk(unix.F_UNLCK, 0, false)},
		{"SETLK flock LOCK_EX", 0, lk(unix.F_WRLCK, fuseproto.LkFlock, false)},
		{"SETLK flock LOCK_UN", 0, lk(unix.F_UNLCK, fuseproto.LkFlock, false)},
		{"IOCTL FSGETXATTR", 0, func() fuseproto.Errno {
			_, _, e := fs.Ioctl(ctx, f, &fuseproto.IoctlIn{Fh: fh, Cmd: iocFsGetXattr, OutSize: 28}, nil, buf[:28])
			return e
		}},
	}...)
	return rows
}

// roServer serves fs through a fuseproto.Server after a 7.45 INIT that
// offers everything, as a guest kernel mounting read-write would.
type roServer struct {
	t      *testing.T
	s      *fuseproto.Server
	unique uint64
}

func newROServer(t *testing.T, fsys fuseproto.FileSystem) *roServer {
	t.Helper()
	rs := &roServer{t: t, s: fuseproto.NewServer(fsys, fuseproto.Options{})}
	in := fuseproto.InitIn{Major: 7, Minor: 45, MaxReadahead: 1 << 17, Flags: 0xffffffff, Flags2: 1<<11 - 1}
	if e, _ := rs.call(fuseproto.OpInit, 0, &in); e != 0 {
		t.Fatalf("INIT: %v", e)
	}
	return rs
}

// replyRec records one reply.
type replyRec struct {
	msg  []byte
	data fuseproto.BytesDest
	buf  []byte
}

func (r *replyRec) DataDest(max int) fuseproto.ReadDest {
	r.buf = make([]byte, max)
	r.data.Reset(r.buf)
	return &r.data
}

func (r *replyRec) Reply(msg []byte, dataLen int) {
	r.msg = append(append([]byte(nil), msg...), r.data.Bytes()[:dataLen]...)
}

// call sends one request made of a header and parts (pointers to wire
// structs, []byte, or strings sent NUL-terminated) and returns the
// reply's errno and body.
func (rs *roServer) call(op fuseproto.Opcode, node uint64, parts ...any) (fuseproto.Errno, []byte) {
	rs.t.Helper()
	body := encodeParts(parts...)
	rs.unique++
	h := fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + len(body)), Opcode: op, Unique: rs.unique, NodeID: node}
	req := append(fuseproto.Encode(nil, &h), body...)
	var r replyRec
	rs.s.Handle(req, nil, &r)
	var oh fuseproto.OutHeader
	if !fuseproto.Decode(r.msg, &oh) {
		rs.t.Fatalf("opcode %d: no reply", op)
	}
	return fuseproto.Errno(-oh.Error), r.msg[fuseproto.OutHeaderSize:]
}

// encodeParts encodes a request body.
func encodeParts(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			b = append(b, v...)
		case string:
			b = append(append(b, v...), 0)
		case *fuseproto.InitIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.SetattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.MknodIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.MkdirIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.RenameIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.Rename2In:
			b = fuseproto.Encode(b, v)
		case *fuseproto.LinkIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.OpenIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.CreateIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.ReadIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.WriteIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.SetxattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.GetxattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.FallocateIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.CopyFileRangeIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.IoctlIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.AccessIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.ReleaseIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.FsyncIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.LkIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.GetattrIn:
			b = fuseproto.Encode(b, v)
		default:
			panic(fmt.Sprintf("encodeParts: %T", p))
		}
	}
	return b
}

// guestRow is one raw request of TestReadOnlyGuest.
type guestRow struct {
	name  string
	op    fuseproto.Opcode
	node  uint64
	parts []any
	want  fuseproto.Errno
}

// guestRows lists the modifying requests a guest that mounted the share
// read-write could send, as raw FUSE messages: node ids f (a file, open
// read-only as fh), d (a directory holding x) and s (a symlink).
func guestRows(f, d, s, fh uint64) []guestRow {
	rofs := fuseproto.Errno(unix.EROFS)
	root := uint64(fuseproto.RootID)
	ioctlArg := make([]byte, 8)
	binary.NativeEndian.PutUint32(ioctlArg, 0x10) // FS_IMMUTABLE_FL
	fsx := make([]byte, 28)
	var rows []guestRow
	for _, fl := range []uint32{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND, unix.O_RDONLY | unix.O_CREAT} {
		rows = append(rows,
			guestRow{fmt.Sprintf("OPEN %#o", fl), fuseproto.OpOpen, f, []any{&fuseproto.OpenIn{Flags: fl}}, rofs},
			guestRow{fmt.Sprintf("CREATE %#o", fl|unix.O_CREAT), fuseproto.OpCreate, root, []any{&fuseproto.CreateIn{Flags: fl | unix.O_CREAT, Mode: 0o644}, "n"}, rofs},
		)
	}
	for _, fl := range []uint32{0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE, unix.RENAME_WHITEOUT} {
		rows = append(rows, guestRow{fmt.Sprintf("RENAME2 %#x", fl), fuseproto.OpRename2, root, []any{&fuseproto.Rename2In{Newdir: d, Flags: fl}, "f", "x"}, rofs})
	}
	for _, v := range []fuseproto.SetattrIn{
		{Valid: fuseproto.FattrMode, Mode: 0o777},
		{Valid: fuseproto.FattrUID, UID: 99},
		{Valid: fuseproto.FattrGID, GID: 99},
		{Valid: fuseproto.FattrSize},
		{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: fh},
		{Valid: fuseproto.FattrAtime | fuseproto.FattrMtime},
		{Valid: fuseproto.FattrAtimeNow | fuseproto.FattrMtimeNow | fuseproto.FattrAtime | fuseproto.FattrMtime},
		{Valid: fuseproto.FattrCtime},
	} {
		rows = append(rows, guestRow{fmt.Sprintf("SETATTR %#x", v.Valid), fuseproto.OpSetattr, f, []any{&v}, rofs})
	}
	for _, mode := range []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange} {
		rows = append(rows, guestRow{fmt.Sprintf("FALLOCATE %#x", mode), fuseproto.OpFallocate, f, []any{&fuseproto.FallocateIn{Fh: fh, Length: 4096, Mode: mode}}, rofs})
	}
	rows = append(rows, []guestRow{
		{"MKNOD", fuseproto.OpMknod, root, []any{&fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, "n"}, rofs},
		{"MKDIR", fuseproto.OpMkdir, d, []any{&fuseproto.MkdirIn{Mode: 0o755}, "n"}, rofs},
		{"SYMLINK", fuseproto.OpSymlink, root, []any{"n", "/"}, rofs},
		{"LINK", fuseproto.OpLink, d, []any{&fuseproto.LinkIn{OldNodeID: f}, "n"}, rofs},
		{"LINK symlink", fuseproto.OpLink, d, []any{&fuseproto.LinkIn{OldNodeID: s}, "n"}, rofs},
		{"UNLINK", fuseproto.OpUnlink, d, []any{"x"}, rofs},
		{"RMDIR", fuseproto.OpRmdir, root, []any{"empty"}, rofs},
		{"RENAME", fuseproto.OpRename, root, []any{&fuseproto.RenameIn{Newdir: root}, "f", "g"}, rofs},
		{"TMPFILE", fuseproto.OpTmpfile, d, []any{&fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, "/"}, rofs},
		{"SETXATTR", fuseproto.OpSetxattr, f, []any{&fuseproto.SetxattrIn{Size: 1}, "user.b", []byte("1")}, rofs},
		{"REMOVEXATTR", fuseproto.OpRemovexattr, f, []any{"user.a"}, rofs},
		{"WRITE", fuseproto.OpWrite, f, []any{&fuseproto.WriteIn{Fh: fh, Size: 1}, []byte("w")}, rofs},
		{"WRITE bogus fh", fuseproto.OpWrite, f, []any{&fuseproto.WriteIn{Fh: bogusFh, Size: 1}, []byte("w")}, rofs},
		{"COPY_FILE_RANGE", fuseproto.OpCopyFileRange, f, []any{&fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: fh, NodeIDOut: f, OffOut: 1, Len: 1}}, rofs},
		{"COPY_FILE_RANGE_64 bogus out", fuseproto.OpCopyFileRange64, f, []any{&fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: bogusFh, NodeIDOut: f, OffOut: 1, Len: 1}}, rofs},
		{"IOCTL SETFLAGS", fuseproto.OpIoctl, f, []any{&fuseproto.IoctlIn{Fh: fh, Cmd: iocSetFlags, InSize: 8}, ioctlArg}, rofs},
		{"IOCTL FSSETXATTR", fuseproto.OpIoctl, f, []any{&fuseproto.IoctlIn{Fh: fh, Cmd: iocFsSetXattr, InSize: 28}, fsx}, rofs},
		{"ACCESS W_OK", fuseproto.OpAccess, f, []any{&fuseproto.AccessIn{Mask: unix.W_OK}}, rofs},
		// Reads still work.
		{"GETATTR", fuseproto.OpGetattr, f, []any{&fuseproto.GetattrIn{}}, 0},
		{"READ", fuseproto.OpRead, f, []any{&fuseproto.ReadIn{Fh: fh, Size: 4}}, 0},
		{"GETXATTR", fuseproto.OpGetxattr, f, []any{&fuseproto.GetxattrIn{Size: 64}, "user.a"}, 0},
		{"LISTXATTR", fuseproto.OpListxattr, f, []any{&fuseproto.GetxattrIn{Size: 64}}, 0},
		{"READLINK", fuseproto.OpReadlink, s, nil, 0},
		{"STATFS", fuseproto.OpStatfs, root, nil, 0},
		{"FSYNC", fuseproto.OpFsync, f, []any{&fuseproto.FsyncIn{Fh: fh}}, 0},
		{"SETLK flock", fuseproto.OpSetlk, f, []any{&fuseproto.LkIn{Fh: fh, Owner: 3, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: offsetMax}, LkFlags: fuseproto.LkFlock}}, 0},
		{"SETLK flock unlock", fuseproto.OpSetlk, f, []any{&fuseproto.LkIn{Fh: fh, Owner: 3, Lk: fuseproto.FileLock{Type: unix.F_UNLCK, End: offsetMax}, LkFlags: fuseproto.LkFlock}}, 0},
	}...)
	return rows
}

// TestReadOnlyGuest is TestReadOnlyEveryOp seen from a guest that mounted
// the read-only share read-write: raw FUSE requests through a Server.
func TestReadOnlyGuest(t *testing.T) {
	fsys, dir := newTestFS(t, Options{ReadOnly: true, Xattr: true})
	writeFile(t, dir, "f", "data")
	for _, d := range []string{"d", "empty"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dir, "d/x", "x")
	if err := os.Symlink("/", filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "f"), "user.a", []byte("v"), 0); err != nil {
		t.Skipf("host filesystem takes no user xattrs: %v", err)
	}
	before := hostSnapshot(t, dir)
	rs := newROServer(t, fsys)
	node := func(parent uint64, name string) uint64 {
		e, b := rs.call(fuseproto.OpLookup, parent, name)
		var out fuseproto.EntryOut
		if e != 0 || !fuseproto.Decode(b, &out) {
			t.Fatalf("LOOKUP %s: %v", name, e)
		}
		return out.NodeID
	}
	f, d, s := node(fuseproto.RootID, "f"), node(fuseproto.RootID, "d"), node(fuseproto.RootID, "s")
	e, b := rs.call(fuseproto.OpOpen, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY})
	var oo fuseproto.OpenOut
	if e != 0 || !fuseproto.Decode(b, &oo) {
		t.Fatalf("OPEN: %v", e)
	}
	for _, r := range guestRows(f, d, s, oo.Fh) {
		if got, _ := rs.call(r.op, r.node, r.parts...); got != r.want {
			t.Errorf("%s: %v, want %v", r.name, got, r.want)
		}
	}
	rs.call(fuseproto.OpRelease, f, &fuseproto.ReleaseIn{Fh: oo.Fh})
	diffSnapshots(t, "share", before, hostSnapshot(t, dir))
}
