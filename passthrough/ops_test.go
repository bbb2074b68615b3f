package passthrough

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

func TestCachePolicy(t *testing.T) {
	tests := []struct {
		in                      string
		want                    CachePolicy
		timeout                 uint64
		openFlags, opendirFlags uint32
	}{
		{"never", CacheNever, 0, fuseproto.FopenDirectIO, 0},
		{"metadata", CacheMetadata, 86400, fuseproto.FopenDirectIO, 0},
		{"auto", CacheAuto, 1, 0, 0},
		{"always", CacheAlways, 86400, fuseproto.FopenKeepCache, fuseproto.FopenKeepCache | fuseproto.FopenCacheDir},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParseCachePolicy(tc.in)
			if err != nil || p != tc.want || p.String() != tc.in {
				t.Fatalf("ParseCachePolicy(%q) = %v, %v", tc.in, p, err)
			}
			fs, dir := newTestFS(t, Options{Cache: p})
			writeFile(t, dir, "f", "x")
			e := mustLookup(t, fs, fuseproto.RootID, "f")
			if e.EntryValid != tc.timeout || e.AttrValid != tc.timeout {
				t.Errorf("entry timeouts %d/%d, want %d", e.EntryValid, e.AttrValid, tc.timeout)
			}
			var a fuseproto.AttrOut
			if fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); a.AttrValid != tc.timeout {
				t.Errorf("getattr timeout %d, want %d", a.AttrValid, tc.timeout)
			}
			var o fuseproto.OpenOut
			if errno := fs.Open(rootCtx, e.NodeID, &fuseproto.OpenIn{}, &o); errno != 0 || o.OpenFlags != tc.openFlags {
				t.Errorf("open flags %#x (%v), want %#x", o.OpenFlags, errno, tc.openFlags)
			}
			if errno := fs.Opendir(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != 0 || o.OpenFlags != tc.opendirFlags {
				t.Errorf("opendir flags %#x (%v), want %#x", o.OpenFlags, errno, tc.opendirFlags)
			}
		})
	}
	if _, err := ParseCachePolicy("sometimes"); err == nil {
		t.Error("ParseCachePolicy accepted a bad name")
	}
	if (Options{}).Cache != CacheAuto {
		t.Error("default policy is not auto")
	}
}

// TestFileOps runs the file operations end to end.
func TestFileOps(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	fs.Init(&fuseproto.Config{Flags: fuseproto.InitDontMask})

	// Create with the umask applied.
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	if errno := fs.Create(rootCtx, fuseproto.RootID, "f", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: unix.S_IFREG | 0o666, Umask: 0o027}, &e, &o); errno != 0 {
		t.Fatalf("Create: %v", errno)
	}
	if got := lstat(t, filepath.Join(dir, "f")).Mode & 0o7777; got != 0o640 {
		t.Errorf("created mode %#o, want 0640", got)
	}
	if e.Attr.Mode != unix.S_IFREG|0o640 || n1(fs, e.NodeID) != 1 {
		t.Errorf("create entry mode %#o nlookup %d", e.Attr.Mode, n1(fs, e.NodeID))
	}
	node, fh := e.NodeID, o.Fh

	// Write and read back.
	var src fuseproto.BytesSource
	src.Reset([]byte("hello, world"))
	if n, errno := fs.Write(rootCtx, node, &fuseproto.WriteIn{Fh: fh, Offset: 0, Size: 12}, &src); errno != 0 || n != 12 {
		t.Fatalf("Write: %d, %v", n, errno)
	}
	var d fuseproto.BytesDest
	buf := make([]byte, 64)
	d.Reset(buf)
	if errno := fs.Read(rootCtx, node, &fuseproto.ReadIn{Fh: fh, Offset: 7, Size: 64}, &d); errno != 0 || string(d.Bytes()) != "world" {
		t.Errorf("Read: %q, %v", d.Bytes(), errno)
	}
	if errno := fs.Fsync(rootCtx, node, &fuseproto.FsyncIn{Fh: fh}); errno != 0 {
		t.Errorf("Fsync: %v", errno)
	}
	if errno := fs.Fsync(rootCtx, node, &fuseproto.FsyncIn{Fh: fh, FsyncFlags: fuseproto.FsyncFdatasync}); errno != 0 {
		t.Errorf("Fdatasync: %v", errno)
	}
	if errno := fs.Flush(rootCtx, node, &fuseproto.FlushIn{Fh: fh, LockOwner: 1}); errno != 0 {
		t.Errorf("Flush: %v", errno)
	}

	// Getattr by node and by handle.
	var a fuseproto.AttrOut
	if errno := fs.Getattr(rootCtx, node, &fuseproto.GetattrIn{GetattrFlags: fuseproto.GetattrFh, Fh: fh}, &a); errno != 0 || a.Attr.Size != 12 {
		t.Errorf("Getattr fh: size %d, %v", a.Attr.Size, errno)
	}

	// Fallocate, punch a hole, SEEK_DATA / SEEK_HOLE.
	if errno := fs.Fallocate(rootCtx, node, &fuseproto.FallocateIn{Fh: fh, Offset: 0, Length: 1 << 20}); errno != 0 {
		t.Fatalf("Fallocate: %v", errno)
	}
	if errno := fs.Fallocate(rootCtx, node, &fuseproto.FallocateIn{Fh: fh, Offset: 0, Length: 1 << 20, Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}); errno != 0 {
		t.Fatalf("Fallocate punch: %v", errno)
	}
	src.Reset(make([]byte, 4096))
	if _, errno := fs.Write(rootCtx, node, &fuseproto.WriteIn{Fh: fh, Offset: 1 << 16, Size: 4096}, &src); errno != 0 {
		t.Fatal(errno)
	}
	var lo fuseproto.LseekOut
	if errno := fs.Lseek(rootCtx, node, &fuseproto.LseekIn{Fh: fh, Offset: 0, Whence: unix.SEEK_DATA}, &lo); errno != 0 || lo.Offset != 1<<16 {
		t.Errorf("SEEK_DATA: %d, %v, want 65536", lo.Offset, errno)
	}
	if errno := fs.Lseek(rootCtx, node, &fuseproto.LseekIn{Fh: fh, Offset: 1 << 16, Whence: unix.SEEK_HOLE}, &lo); errno != 0 || lo.Offset != 1<<16+4096 {
		t.Errorf("SEEK_HOLE: %d, %v, want 69632", lo.Offset, errno)
	}
	if errno := fs.Lseek(rootCtx, node, &fuseproto.LseekIn{Fh: fh, Offset: 5, Whence: unix.SEEK_END}, &lo); errno != 0 || lo.Offset != 1<<20+5 {
		t.Errorf("SEEK_END: %d, %v", lo.Offset, errno)
	}
	if errno := fs.Lseek(rootCtx, node, &fuseproto.LseekIn{Fh: fh, Whence: 99}, &lo); errno != unix.EINVAL {
		t.Errorf("bad whence: %v", errno)
	}

	// Setattr: size by handle and by path, mode, owner, times, kill suid.
	sa := func(in fuseproto.SetattrIn) fuseproto.AttrOut {
		t.Helper()
		var a fuseproto.AttrOut
		if errno := fs.Setattr(rootCtx, node, &in, &a); errno != 0 {
			t.Fatalf("Setattr(%#x): %v", in.Valid, errno)
		}
		return a
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: fh, Size: 5}); a.Attr.Size != 5 {
		t.Errorf("truncate by fh: %d", a.Attr.Size)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrSize, Size: 3}); a.Attr.Size != 3 {
		t.Errorf("truncate by path: %d", a.Attr.Size)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o6755}); a.Attr.Mode != unix.S_IFREG|0o6755 {
		t.Errorf("chmod: %#o", a.Attr.Mode)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrKillSUIDGID}); a.Attr.Mode != unix.S_IFREG|0o755 {
		t.Errorf("kill suid/sgid on group-exec file: %#o, want 0755", a.Attr.Mode)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o6744}); a.Attr.Mode&0o7777 != 0o6744 {
		t.Errorf("chmod: %#o", a.Attr.Mode)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrKillSUIDGID}); a.Attr.Mode&0o7777 != 0o2744 {
		t.Errorf("kill suid on non-group-exec file: %#o, want 02744 (sgid stays)", a.Attr.Mode)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrUID | fuseproto.FattrGID, UID: 1000, GID: 2000}); a.Attr.UID != 1000 || a.Attr.GID != 2000 {
		t.Errorf("chown: %d:%d", a.Attr.UID, a.Attr.GID)
	}
	if a := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrGID, GID: 3000}); a.Attr.UID != 1000 || a.Attr.GID != 3000 {
		t.Errorf("chgrp only: %d:%d", a.Attr.UID, a.Attr.GID)
	}
	a1 := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrAtime | fuseproto.FattrMtime, Atime: 1000, Atimensec: 5, Mtime: 2000, Mtimensec: 7})
	if a1.Attr.Atime != 1000 || a1.Attr.Atimensec != 5 || a1.Attr.Mtime != 2000 || a1.Attr.Mtimensec != 7 {
		t.Errorf("utimes: %+v", a1.Attr)
	}
	a2 := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow})
	if a2.Attr.Atime != 1000 || a2.Attr.Atimensec != 5 || a2.Attr.Mtime < uint64(time.Now().Unix()-60) {
		t.Errorf("mtime now, atime omitted: %+v", a2.Attr)
	}
	a3 := sa(fuseproto.SetattrIn{Valid: fuseproto.FattrAtime | fuseproto.FattrAtimeNow | fuseproto.FattrCtime, Ctime: 1})
	if a3.Attr.Atime < uint64(time.Now().Unix()-60) || a3.Attr.Mtime != a2.Attr.Mtime || a3.Attr.Ctime == 1 {
		t.Errorf("atime now, ctime ignored: %+v", a3.Attr)
	}

	// Write with WriteKillSUIDGID clears set-ID bits first.
	sa(fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o6775})
	src.Reset([]byte("x"))
	if _, errno := fs.Write(rootCtx, node, &fuseproto.WriteIn{Fh: fh, Size: 1, WriteFlags: fuseproto.WriteKillSUIDGID}, &src); errno != 0 {
		t.Fatal(errno)
	}
	if got := lstat(t, filepath.Join(dir, "f")).Mode & 0o7777; got != 0o775 {
		t.Errorf("after kill-priv write: %#o, want 0775", got)
	}

	// Open with O_TRUNC and OpenKillSUIDGID.
	sa(fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o4755})
	if errno := fs.Open(rootCtx, node, &fuseproto.OpenIn{Flags: unix.O_WRONLY | unix.O_TRUNC, OpenFlags: fuseproto.OpenKillSUIDGID}, &o); errno != 0 {
		t.Fatal(errno)
	}
	st := lstat(t, filepath.Join(dir, "f"))
	if st.Size != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("O_TRUNC kill-priv open: size %d mode %#o", st.Size, st.Mode&0o7777)
	}
	release(t, fs, node, o.Fh)

	// CopyFileRange into a second file.
	src.Reset([]byte("0123456789"))
	fs.Write(rootCtx, node, &fuseproto.WriteIn{Fh: fh, Size: 10}, &src)
	var e2 fuseproto.EntryOut
	var o2 fuseproto.OpenOut
	if errno := fs.Create(rootCtx, fuseproto.RootID, "g", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: 0o644}, &e2, &o2); errno != 0 {
		t.Fatal(errno)
	}
	if n, errno := fs.CopyFileRange(rootCtx, node, &fuseproto.CopyFileRangeIn{FhIn: fh, OffIn: 2, NodeIDOut: e2.NodeID, FhOut: o2.Fh, OffOut: 1, Len: 5}); errno != 0 || n != 5 {
		t.Errorf("CopyFileRange: %d, %v", n, errno)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "g")); string(b) != "\x0023456" {
		t.Errorf("copied %q", b)
	}
	// Create without O_EXCL of an existing file opens it (and truncates).
	var e3 fuseproto.EntryOut
	var o3 fuseproto.OpenOut
	if errno := fs.Create(rootCtx, fuseproto.RootID, "g", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_TRUNC, Mode: 0o600}, &e3, &o3); errno != 0 || e3.NodeID != e2.NodeID {
		t.Errorf("Create existing: node %d (want %d), %v", e3.NodeID, e2.NodeID, errno)
	}
	if st := lstat(t, filepath.Join(dir, "g")); st.Size != 0 || st.Mode&0o777 != 0o644 {
		t.Errorf("create existing with O_TRUNC: size %d mode %#o", st.Size, st.Mode&0o777)
	}
	if errno := fs.Create(rootCtx, fuseproto.RootID, "g", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: 0o600}, &e3, &o3); errno != unix.EEXIST {
		t.Errorf("Create O_EXCL existing: %v", errno)
	}

	// Syncfs, Statfs, Poll, Bmap.
	if errno := fs.Syncfs(rootCtx, node); errno != 0 {
		t.Errorf("Syncfs: %v", errno)
	}
	var sf fuseproto.StatfsOut
	if errno := fs.Statfs(rootCtx, node, &sf); errno != 0 || sf.St.Bsize == 0 || sf.St.Blocks == 0 || sf.St.Namelen != 255 {
		t.Errorf("Statfs: %+v, %v", sf.St, errno)
	}
	if errno := fs.Poll(rootCtx, node, &fuseproto.PollIn{Fh: fh}, &fuseproto.PollOut{}); errno != unix.ENOSYS {
		t.Errorf("Poll: %v", errno)
	}
	if errno := fs.Bmap(rootCtx, node, &fuseproto.BmapIn{}, &fuseproto.BmapOut{}); errno != unix.ENOSYS {
		t.Errorf("Bmap: %v", errno)
	}

	release(t, fs, node, fh)
	release(t, fs, e2.NodeID, o2.Fh)
	release(t, fs, e3.NodeID, o3.Fh)
}

func n1(fs *FS, node uint64) int { return fs.nlookupOf(node) }

// TestWritebackOpen checks that with the writeback cache a write-only open
// is read-write and O_APPEND is dropped.
func TestWritebackOpen(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	fs.Init(&fuseproto.Config{Flags: fuseproto.InitWritebackCache})
	writeFile(t, dir, "f", "abc")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_WRONLY|unix.O_APPEND)
	h := fs.files.get(fh)
	flags, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
	fs.files.put(h)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_ACCMODE != unix.O_RDWR || flags&unix.O_APPEND != 0 {
		t.Errorf("host flags %#o, want O_RDWR without O_APPEND", flags)
	}
	var d fuseproto.BytesDest
	d.Reset(make([]byte, 8))
	if errno := fs.Read(rootCtx, node, &fuseproto.ReadIn{Fh: fh, Size: 8}, &d); errno != 0 || string(d.Bytes()) != "abc" {
		t.Errorf("read through write-only open: %q, %v", d.Bytes(), errno)
	}
	release(t, fs, node, fh)
}

// TestNamespaceOps covers Mknod, Mkdir, Symlink, Readlink, Link, Unlink,
// Rmdir and Rename with its flags.
func TestNamespaceOps(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	var e fuseproto.EntryOut
	mk := func(name string, mode uint32, rdev uint32) fuseproto.EntryOut {
		t.Helper()
		var e fuseproto.EntryOut
		if errno := fs.Mknod(rootCtx, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: mode, Rdev: rdev, Umask: 0o022}, &e); errno != 0 {
			t.Fatalf("Mknod %s: %v", name, errno)
		}
		return e
	}
	for _, tc := range []struct {
		name string
		mode uint32
		rdev uint32
	}{
		{"reg", unix.S_IFREG | 0o666, 0},
		{"fifo", unix.S_IFIFO | 0o666, 0},
		{"sock", unix.S_IFSOCK | 0o666, 0},
		{"chr", unix.S_IFCHR | 0o666, uint32(unix.Mkdev(1, 5))},
		{"blk", unix.S_IFBLK | 0o666, uint32(unix.Mkdev(7, 200))},
	} {
		e := mk(tc.name, tc.mode, tc.rdev)
		st := lstat(t, filepath.Join(dir, tc.name))
		if st.Mode != tc.mode&^0o022 || uint32(st.Rdev) != tc.rdev {
			t.Errorf("%s: host mode %#o rdev %#x, want %#o %#x", tc.name, st.Mode, st.Rdev, tc.mode&^0o022, tc.rdev)
		}
		if e.Attr.Mode != tc.mode&^0o022 || e.Attr.Rdev != tc.rdev || e.Attr.Ino != st.Ino {
			t.Errorf("%s: entry mode %#o rdev %#x ino %d", tc.name, e.Attr.Mode, e.Attr.Rdev, e.Attr.Ino)
		}
	}
	if errno := fs.Mknod(rootCtx, fuseproto.RootID, "dir", &fuseproto.MknodIn{Mode: unix.S_IFDIR | 0o755}, &e); errno != unix.EINVAL {
		t.Errorf("Mknod S_IFDIR: %v", errno)
	}
	if errno := fs.Mknod(rootCtx, fuseproto.RootID, "reg", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e); errno != unix.EEXIST {
		t.Errorf("Mknod existing: %v", errno)
	}

	if errno := fs.Mkdir(rootCtx, fuseproto.RootID, "d", &fuseproto.MkdirIn{Mode: 0o1777, Umask: 0o022}, &e); errno != 0 {
		t.Fatal(errno)
	}
	if st := lstat(t, filepath.Join(dir, "d")); st.Mode != unix.S_IFDIR|0o1755 {
		t.Errorf("mkdir mode %#o", st.Mode)
	}
	d := e.NodeID
	if errno := fs.Symlink(rootCtx, d, "s", "../reg", &e); errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 100)
	if n, errno := fs.Readlink(rootCtx, e.NodeID, buf); errno != 0 || string(buf[:n]) != "../reg" {
		t.Errorf("Readlink: %q, %v", buf[:n], errno)
	}
	if _, errno := fs.Readlink(rootCtx, d, buf); errno != unix.EINVAL {
		t.Errorf("Readlink of a dir: %v", errno)
	}

	reg := mustLookup(t, fs, fuseproto.RootID, "reg")
	if errno := fs.Link(rootCtx, reg.NodeID, d, "hard", &e); errno != 0 || e.NodeID != reg.NodeID || e.Attr.Nlink != 2 {
		t.Errorf("Link: node %d nlink %d, %v", e.NodeID, e.Attr.Nlink, errno)
	}
	if errno := fs.Link(rootCtx, d, fuseproto.RootID, "dirlink", &e); errno != unix.EPERM {
		t.Errorf("Link of a directory: %v", errno)
	}
	// Link a symlink: the link itself, not its target.
	sl := mustLookup(t, fs, d, "s")
	if errno := fs.Link(rootCtx, sl.NodeID, fuseproto.RootID, "s2", &e); errno != 0 || e.NodeID != sl.NodeID {
		t.Errorf("Link symlink: %v", errno)
	}

	// Rename plain, NOREPLACE, EXCHANGE, WHITEOUT.
	writeFile(t, dir, "a", "A")
	writeFile(t, dir, "b", "B")
	renames := []struct {
		from, to string
		flags    uint32
		want     fuseproto.Errno
	}{
		{"a", "a2", 0, 0},
		{"a2", "b", unix.RENAME_NOREPLACE, unix.EEXIST},
		{"a2", "b", unix.RENAME_EXCHANGE, 0},
		{"a2", "c", unix.RENAME_WHITEOUT, 0},
		{"b", "c", unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE, unix.EINVAL},
		{"b", "c", 1 << 10, unix.EINVAL},
		{"missing", "x", 0, unix.ENOENT},
	}
	for _, r := range renames {
		if got := fs.Rename(rootCtx, fuseproto.RootID, r.from, fuseproto.RootID, r.to, r.flags); got != r.want {
			t.Errorf("Rename %s->%s flags %#x: %v, want %v", r.from, r.to, r.flags, got, r.want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b")); string(b) != "A" {
		t.Errorf("after exchange b = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "c")); string(b) != "B" {
		t.Errorf("after whiteout rename c = %q", b)
	}
	if st := lstat(t, filepath.Join(dir, "a2")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %#o rdev %d", st.Mode, st.Rdev)
	}
	// Rename into another directory keeps the node.
	if errno := fs.Rename(rootCtx, fuseproto.RootID, "reg", d, "moved", 0); errno != 0 {
		t.Fatal(errno)
	}
	if got := mustLookup(t, fs, d, "moved"); got.NodeID != reg.NodeID {
		t.Errorf("moved node %d, want %d", got.NodeID, reg.NodeID)
	}

	if errno := fs.Rmdir(rootCtx, fuseproto.RootID, "d"); errno != unix.ENOTEMPTY {
		t.Errorf("Rmdir non-empty: %v", errno)
	}
	for _, n := range []string{"s", "hard", "moved"} {
		if errno := fs.Unlink(rootCtx, d, n); errno != 0 {
			t.Errorf("Unlink %s: %v", n, errno)
		}
	}
	if errno := fs.Unlink(rootCtx, fuseproto.RootID, "d"); errno != unix.EISDIR {
		t.Errorf("Unlink of a dir: %v", errno)
	}
	if errno := fs.Rmdir(rootCtx, fuseproto.RootID, "d"); errno != 0 {
		t.Errorf("Rmdir: %v", errno)
	}
	// The unlinked file's node still answers while the kernel holds it.
	var a fuseproto.AttrOut
	// Referenced by a file handle, nothing keeps the host inode: it is
	// gone (ESTALE), as in virtiofsd.
	errno := fs.Getattr(rootCtx, reg.NodeID, &fuseproto.GetattrIn{}, &a)
	if fs.FileHandles() != FileHandlesNever {
		if errno != unix.ESTALE {
			t.Errorf("Getattr of unlinked with file handles: %v, want ESTALE", errno)
		}
	} else if errno != 0 || a.Attr.Nlink != 0 {
		t.Errorf("Getattr of unlinked: nlink %d, %v", a.Attr.Nlink, errno)
	}
}

// TestStatx checks Statx by node and handle, with birth time.
func TestStatx(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	start := time.Now().Unix()
	writeFile(t, dir, "f", "12345")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	var want unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, filepath.Join(dir, "f"), 0, unix.STATX_ALL, &want); err != nil {
		t.Fatal(err)
	}
	fh := mustOpen(t, fs, node, unix.O_RDONLY)
	defer release(t, fs, node, fh)
	for _, in := range []fuseproto.StatxIn{
		{SxMask: unix.STATX_BASIC_STATS | unix.STATX_BTIME},
		{GetattrFlags: fuseproto.GetattrFh, Fh: fh, SxMask: unix.STATX_BTIME},
	} {
		var out fuseproto.StatxOut
		if errno := fs.Statx(rootCtx, node, &in, &out); errno != 0 {
			t.Fatalf("Statx: %v", errno)
		}
		s := out.Stat
		if s.Mask&unix.STATX_BTIME == 0 || s.Btime.Sec < start-5 || s.Btime != sxTime(want.Btime) {
			t.Errorf("btime %+v mask %#x, want %+v", s.Btime, s.Mask, want.Btime)
		}
		if s.Ino != want.Ino || s.Size != 5 || s.Mode != want.Mode || s.Nlink != 1 || s.Blksize != want.Blksize {
			t.Errorf("statx %+v", s)
		}
		if s.Mask&unix.STATX_MNT_ID != 0 {
			t.Errorf("mask %#x carries STATX_MNT_ID", s.Mask)
		}
	}
}

// TestIoctl runs the supported inode flag ioctls and an unsupported one.
func TestIoctl(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "x")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_RDONLY)
	defer release(t, fs, node, fh)
	out := make([]byte, 8)
	_, n, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocGetFlags, OutSize: 8}, nil, out)
	if errno != 0 || n != 4 {
		t.Fatalf("GETFLAGS: %d, %v", n, errno)
	}
	flags := uint32(out[0]) | uint32(out[1])<<8 | uint32(out[2])<<16 | uint32(out[3])<<24
	const noatime = 0x80 // FS_NOATIME_FL
	in := []byte{byte(flags | noatime), byte((flags | noatime) >> 8), byte((flags | noatime) >> 16), byte((flags | noatime) >> 24), 0, 0, 0, 0}
	// As another user the host refuses (not the owner).
	if _, _, errno := fs.Ioctl(userCtx(1000, 1000), node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocSetFlags, InSize: 8}, in, nil); errno != unix.EPERM {
		t.Errorf("SETFLAGS as non-owner: %v, want EPERM", errno)
	}
	if _, _, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocSetFlags, InSize: 8}, in, nil); errno != 0 {
		t.Fatalf("SETFLAGS: %v", errno)
	}
	if _, _, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: ioc32GetFlags, OutSize: 4}, nil, out); errno != 0 || out[0]&noatime == 0 {
		t.Errorf("GETFLAGS after set: %#x, %v", out[:4], errno)
	}
	x := make([]byte, hostfs.FsxattrSize)
	if _, n, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocFsGetXattr, OutSize: uint32(hostfs.FsxattrSize)}, nil, x); errno != 0 || n != hostfs.FsxattrSize {
		t.Errorf("FSGETXATTR: %d, %v", n, errno)
	}
	if _, _, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocFsSetXattr, InSize: uint32(hostfs.FsxattrSize)}, x, nil); errno != 0 {
		t.Errorf("FSSETXATTR: %v", errno)
	}
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	if _, n, errno := fs.Ioctl(rootCtx, fuseproto.RootID, &fuseproto.IoctlIn{Fh: o.Fh, Flags: fuseproto.IoctlDir, Cmd: iocGetFlags, OutSize: 8}, nil, out); errno != 0 || n != 4 {
		t.Errorf("GETFLAGS on a directory: %v", errno)
	}
	fs.Releasedir(rootCtx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: o.Fh})
	if _, _, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: unix.TCGETS}, nil, out); errno != unix.ENOTTY {
		t.Errorf("TCGETS: %v, want ENOTTY", errno)
	}
	if _, _, errno := fs.Ioctl(rootCtx, node, &fuseproto.IoctlIn{Fh: fh, Cmd: iocFsGetXattr}, nil, out); errno != unix.EINVAL {
		t.Errorf("FSGETXATTR with short buffer: %v, want EINVAL", errno)
	}
}

// TestReadWriteAllocs checks that READ and WRITE allocate nothing.
func TestReadWriteAllocs(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", string(bytes.Repeat([]byte("x"), 8192)))
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_RDWR)
	defer release(t, fs, node, fh)
	buf := make([]byte, 4096)
	var d fuseproto.BytesDest
	var src fuseproto.BytesSource
	rin := &fuseproto.ReadIn{Fh: fh, Offset: 100, Size: 4096}
	win := &fuseproto.WriteIn{Fh: fh, Offset: 10, Size: 4096}
	if n := testing.AllocsPerRun(200, func() {
		d.Reset(buf)
		if errno := fs.Read(rootCtx, node, rin, &d); errno != 0 || d.Len() != 4096 {
			t.Fatalf("Read: %d, %v", d.Len(), errno)
		}
	}); n != 0 {
		t.Errorf("Read allocates %v per call", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		src.Reset(buf)
		if n, errno := fs.Write(rootCtx, node, win, &src); errno != 0 || n != 4096 {
			t.Fatalf("Write: %d, %v", n, errno)
		}
	}); n != 0 {
		t.Errorf("Write allocates %v per call", n)
	}
}

// TestGetattrAllocs checks that GETATTR, the most frequent metadata request,
// allocates nothing, by node and by handle.
func TestGetattrAllocs(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_RDONLY)
	defer release(t, fs, node, fh)
	var out fuseproto.AttrOut
	for _, in := range []*fuseproto.GetattrIn{{}, {GetattrFlags: fuseproto.GetattrFh, Fh: fh}} {
		if n := testing.AllocsPerRun(200, func() {
			if errno := fs.Getattr(rootCtx, node, in, &out); errno != 0 || out.Attr.Size != 4 {
				t.Fatalf("Getattr: size %d, %v", out.Attr.Size, errno)
			}
		}); n != 0 {
			t.Errorf("Getattr(flags %d) allocates %v per call", in.GetattrFlags, n)
		}
	}
}
