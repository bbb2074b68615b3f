package passthrough

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

func TestNewErrors(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	writeFile(t, dir, "file", "x")
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{filepath.Join(dir, "missing"), filepath.Join(dir, "file"), filepath.Join(dir, "link")} {
		if fs, err := New(root, Options{}); err == nil {
			fs.Close()
			t.Errorf("New(%q) succeeded", root)
		} else {
			t.Logf("New(%q): %v", root, err)
		}
	}
	if _, err := New(dir, Options{Cache: CachePolicy(42)}); err == nil {
		t.Error("New with an invalid cache policy succeeded")
	}
}

// TestLookupForget checks lookup counting, node ID stability, stable inode
// numbers and that the last Forget closes the inode's descriptor.
func TestLookupForget(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	before := countFds(t)

	e1 := mustLookup(t, fs, fuseproto.RootID, "f")
	per := fs.fdsPerInode()
	if got := countFds(t); got != before+per {
		t.Errorf("after first lookup: %d fds, want %d", got, before+per)
	}
	e2 := mustLookup(t, fs, fuseproto.RootID, "f")
	if e1.NodeID != e2.NodeID {
		t.Errorf("two lookups gave node IDs %d and %d", e1.NodeID, e2.NodeID)
	}
	if e1.NodeID == fuseproto.RootID || e1.Generation != 0 {
		t.Errorf("entry %d gen %d", e1.NodeID, e1.Generation)
	}
	if got := countFds(t); got != before+per {
		t.Errorf("after second lookup: %d fds, want %d (one per inode)", got, before+per)
	}
	st := lstat(t, filepath.Join(dir, "f"))
	if e1.Attr.Ino != st.Ino || e1.Attr.Size != 4 || e1.Attr.Blksize != uint32(st.Blksize) {
		t.Errorf("attr ino %d size %d blksize %d, want %d 4 %d", e1.Attr.Ino, e1.Attr.Size, e1.Attr.Blksize, st.Ino, st.Blksize)
	}
	if n := fs.nlookupOf(e1.NodeID); n != 2 {
		t.Errorf("nlookup %d, want 2", n)
	}
	fs.Forget(e1.NodeID, 1)
	if got := countFds(t); got != before+per {
		t.Errorf("after one forget: %d fds, want %d", got, before+per)
	}
	fs.Forget(e1.NodeID, 1)
	if got := countFds(t); got != before {
		t.Errorf("after last forget: %d fds, want %d", got, before)
	}
	var out fuseproto.AttrOut
	if errno := fs.Getattr(rootCtx, e1.NodeID, &fuseproto.GetattrIn{}, &out); errno != unix.EBADF {
		t.Errorf("Getattr of forgotten node: %v, want EBADF", errno)
	}
	// A new lookup gets a new node ID.
	e3 := mustLookup(t, fs, fuseproto.RootID, "f")
	if e3.NodeID == e1.NodeID {
		t.Errorf("node ID %d reused", e3.NodeID)
	}
	// Over-forgetting, forgetting unknown nodes and the root are harmless.
	fs.Forget(e3.NodeID, 100)
	fs.Forget(12345, 1)
	fs.Forget(fuseproto.RootID, 1000)
	if errno := fs.Getattr(rootCtx, fuseproto.RootID, &fuseproto.GetattrIn{}, &out); errno != 0 {
		t.Errorf("Getattr root after forgetting it: %v", errno)
	}
	if got := countFds(t); got != before {
		t.Errorf("at end: %d fds, want %d", got, before)
	}
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("%d inodes left, want only the root", n)
	}
}

// TestOpenHandleKeepsInode checks that an open handle keeps its inode (and
// fd) after the kernel forgets it, and that Release then closes both.
func TestOpenHandleKeepsInode(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	before := countFds(t)
	e := mustLookup(t, fs, fuseproto.RootID, "f")
	fh := mustOpen(t, fs, e.NodeID, unix.O_RDONLY)
	fs.Forget(e.NodeID, 1)
	if got := countFds(t); got != before+1+fs.fdsPerInode() {
		t.Errorf("open handle after forget: %d fds, want %d", got, before+1+fs.fdsPerInode())
	}
	var d fuseproto.BytesDest
	buf := make([]byte, 16)
	d.Reset(buf)
	if errno := fs.Read(rootCtx, e.NodeID, &fuseproto.ReadIn{Fh: fh, Size: 16}, &d); errno != 0 || string(d.Bytes()) != "data" {
		t.Errorf("Read after forget: %q, %v", d.Bytes(), errno)
	}
	release(t, fs, e.NodeID, fh)
	if got := countFds(t); got != before {
		t.Errorf("after release: %d fds, want %d", got, before)
	}
	if errno := fs.Release(rootCtx, e.NodeID, &fuseproto.ReleaseIn{Fh: fh}); errno != unix.EBADF {
		t.Errorf("second Release: %v, want EBADF", errno)
	}
}

// TestUnknownIDs sends every kind of request to unknown nodes and handles.
func TestUnknownIDs(t *testing.T) {
	fs, _ := newTestFS(t, Options{Xattr: true})
	const bad = 987654
	ctx := rootCtx
	var e fuseproto.EntryOut
	var a fuseproto.AttrOut
	var o fuseproto.OpenOut
	var d fuseproto.BytesDest
	d.Reset(make([]byte, 8))
	var src fuseproto.BytesSource
	src.Reset([]byte("x"))
	db := fuseproto.NewDirBuffer(make([]byte, 4096), 4096, true)
	checks := map[string]fuseproto.Errno{
		"Lookup":      fs.Lookup(ctx, bad, "x", &e),
		"Getattr":     fs.Getattr(ctx, bad, &fuseproto.GetattrIn{}, &a),
		"Setattr":     fs.Setattr(ctx, bad, &fuseproto.SetattrIn{Valid: fuseproto.FattrMode}, &a),
		"Mkdir":       fs.Mkdir(ctx, bad, "x", &fuseproto.MkdirIn{Mode: 0o755}, &e),
		"Unlink":      fs.Unlink(ctx, bad, "x"),
		"Rename":      fs.Rename(ctx, bad, "x", fuseproto.RootID, "y", 0),
		"Link":        fs.Link(ctx, bad, fuseproto.RootID, "y", &e),
		"Open":        fs.Open(ctx, bad, &fuseproto.OpenIn{}, &o),
		"Opendir":     fs.Opendir(ctx, bad, &fuseproto.OpenIn{}, &o),
		"Read":        fs.Read(ctx, fuseproto.RootID, &fuseproto.ReadIn{Fh: bad, Size: 8}, &d),
		"Readdir":     fs.Readdir(ctx, fuseproto.RootID, &fuseproto.ReadIn{Fh: bad, Size: 4096}, db),
		"Flush":       fs.Flush(ctx, fuseproto.RootID, &fuseproto.FlushIn{Fh: bad}),
		"Release":     fs.Release(ctx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: bad}),
		"Releasedir":  fs.Releasedir(ctx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: bad}),
		"Fsync":       fs.Fsync(ctx, fuseproto.RootID, &fuseproto.FsyncIn{Fh: bad}),
		"Fsyncdir":    fs.Fsyncdir(ctx, fuseproto.RootID, &fuseproto.FsyncIn{Fh: bad}),
		"Statfs":      fs.Statfs(ctx, bad, &fuseproto.StatfsOut{}),
		"Access":      fs.Access(ctx, bad, unix.R_OK),
		"Fallocate":   fs.Fallocate(ctx, fuseproto.RootID, &fuseproto.FallocateIn{Fh: bad, Length: 1}),
		"Lseek":       fs.Lseek(ctx, fuseproto.RootID, &fuseproto.LseekIn{Fh: bad}, &fuseproto.LseekOut{}),
		"Syncfs":      fs.Syncfs(ctx, bad),
		"Setlk":       fs.Setlk(ctx, bad, &fuseproto.LkIn{Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: offsetMax}}, false),
		"Getlk":       fs.Getlk(ctx, bad, &fuseproto.LkIn{Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: offsetMax}}, &fuseproto.LkOut{}),
		"Statx":       fs.Statx(ctx, bad, &fuseproto.StatxIn{}, &fuseproto.StatxOut{}),
		"Setxattr":    fs.Setxattr(ctx, bad, "user.x", nil, &fuseproto.SetxattrIn{}),
		"Removexattr": fs.Removexattr(ctx, bad, "user.x"),
	}
	_, checks["Write"] = fs.Write(ctx, fuseproto.RootID, &fuseproto.WriteIn{Fh: bad, Size: 1}, &src)
	_, checks["Readlink"] = fs.Readlink(ctx, bad, make([]byte, 10))
	_, checks["Getxattr"] = fs.Getxattr(ctx, bad, "user.x", nil)
	_, checks["Listxattr"] = fs.Listxattr(ctx, bad, nil)
	_, checks["CopyFileRange"] = fs.CopyFileRange(ctx, fuseproto.RootID, &fuseproto.CopyFileRangeIn{FhIn: bad, FhOut: bad})
	_, _, checks["Ioctl"] = fs.Ioctl(ctx, fuseproto.RootID, &fuseproto.IoctlIn{Fh: bad, Cmd: iocGetFlags, OutSize: 8}, nil, make([]byte, 8))
	for op, errno := range checks {
		if errno != unix.EBADF {
			t.Errorf("%s on unknown ID: %v, want EBADF", op, errno)
		}
	}
}

// TestForgetRace runs requests on a node while other goroutines look it up
// and forget it; no request may see a closed (or reused) descriptor. Run
// with -race.
func TestForgetRace(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "hello")
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := countFds(t)
	fe := mustLookup(t, fs, fuseproto.RootID, "f")
	node, fileIno := fe.NodeID, fe.Attr.Ino
	dnode := mustLookup(t, fs, fuseproto.RootID, "d").NodeID

	const workers, rounds = 4, 300
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	report := func(s string) {
		select {
		case errs <- s:
		default:
		}
	}
	// Lookup/Forget churn keeps the counts moving, including to zero.
	for range 2 {
		wg.Go(func() {
			for range rounds {
				var e fuseproto.EntryOut
				if errno := fs.Lookup(rootCtx, fuseproto.RootID, "f", &e); errno != 0 {
					report("lookup: " + errno.Error())
					continue
				}
				fs.Forget(e.NodeID, 1)
				if errno := fs.Lookup(rootCtx, fuseproto.RootID, "d", &e); errno == 0 {
					fs.Forget(e.NodeID, 1)
				}
			}
		})
	}
	// A hostile guest forgets the original nodes while using them.
	wg.Go(func() {
		for range rounds / 10 {
			fs.Forget(node, 1)
			fs.Forget(dnode, 1)
		}
	})
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 16)
			db := fuseproto.NewDirBuffer(make([]byte, 4096), 4096, true)
			for range rounds {
				var a fuseproto.AttrOut
				if errno := fs.Getattr(rootCtx, node, &fuseproto.GetattrIn{}, &a); errno != 0 && errno != unix.EBADF {
					report("getattr: " + errno.Error())
				} else if errno == 0 && a.Attr.Ino != fileIno {
					report("getattr saw another inode (a reused descriptor)")
				}
				var o fuseproto.OpenOut
				if errno := fs.Open(rootCtx, node, &fuseproto.OpenIn{Flags: unix.O_RDONLY}, &o); errno == 0 {
					var d fuseproto.BytesDest
					d.Reset(buf)
					// Release races the Read from another goroutine.
					var rw sync.WaitGroup
					rw.Go(func() {
						if errno := fs.Read(rootCtx, node, &fuseproto.ReadIn{Fh: o.Fh, Size: 16}, &d); errno != 0 && errno != unix.EBADF {
							report("read: " + errno.Error())
						} else if errno == 0 && d.Len() != 0 && string(d.Bytes()) != "hello" {
							report("read wrong data: " + string(d.Bytes()))
						}
					})
					fs.Release(rootCtx, node, &fuseproto.ReleaseIn{Fh: o.Fh})
					rw.Wait()
				} else if errno != unix.EBADF {
					report("open: " + errno.Error())
				}
				if errno := fs.Opendir(rootCtx, dnode, &fuseproto.OpenIn{}, &o); errno == 0 {
					db.Reset(make([]byte, 0, 4096), 4096, true)
					if errno := fs.Readdir(rootCtx, dnode, &fuseproto.ReadIn{Fh: o.Fh, Size: 4096}, db); errno != 0 {
						report("readdir: " + errno.Error())
					}
					fs.Releasedir(rootCtx, dnode, &fuseproto.ReleaseIn{Fh: o.Fh})
				} else if errno != unix.EBADF {
					report("opendir: " + errno.Error())
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}
	fs.Forget(node, 1<<20)
	fs.Forget(dnode, 1<<20)
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("%d inodes left, want only the root", n)
	}
	if got := countFds(t); got != before {
		t.Errorf("fds: %d, want %d", got, before)
	}
}

// TestDestroy checks that Destroy drops every inode but the root and closes
// every handle.
func TestDestroy(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := countFds(t)
	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	d := mustLookup(t, fs, fuseproto.RootID, "d").NodeID
	fh := mustOpen(t, fs, f, unix.O_RDWR)
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, d, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fs.Setlk(rootCtx, f, &fuseproto.LkIn{Fh: fh, Owner: 7, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: offsetMax}}, false); errno != 0 {
		t.Fatal(errno)
	}
	if want := before + 3 + 2*fs.fdsPerInode(); countFds(t) != want {
		t.Errorf("before Destroy: %d fds, want %d", countFds(t), want)
	}
	fs.Destroy()
	if got := countFds(t); got != before {
		t.Errorf("after Destroy: %d fds, want %d", got, before)
	}
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("%d inodes after Destroy, want 1", n)
	}
	if nf, nd := fs.files.len(), fs.dirs.len(); nf != 0 || nd != 0 {
		t.Errorf("%d file and %d dir handles after Destroy, want none", nf, nd)
	}
	if errno := fs.Release(rootCtx, f, &fuseproto.ReleaseIn{Fh: fh}); errno != unix.EBADF {
		t.Errorf("Release after Destroy: %v", errno)
	}
	// The root still serves a new session.
	fs.Init(&fuseproto.Config{})
	mustLookup(t, fs, fuseproto.RootID, "f")
}

// fdIno returns the inode number fd refers to, or 0 if fd is closed.
func fdIno(fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return st.Ino
}

// TestForgetDuringRequest is the deterministic form of TestForgetRace: a
// request holding an inode (or a handle) keeps its descriptor open through a
// Forget (or Release) until it finishes.
func TestForgetDuringRequest(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	e := mustLookup(t, fs, fuseproto.RootID, "f")

	// A request is using the inode (what every method does first).
	in, errno := fs.inodes.get(e.NodeID)
	if errno != 0 {
		t.Fatal(errno)
	}
	fd := in.fd
	fs.Forget(e.NodeID, 1)
	if got := fdIno(fd); got != e.Attr.Ino {
		t.Fatalf("inode fd closed by Forget while a request holds it (ino %d)", got)
	}
	var a fuseproto.AttrOut
	if errno := fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); errno != unix.EBADF {
		t.Errorf("new request on the forgotten node: %v, want EBADF", errno)
	}
	// A concurrent lookup while the old request runs reuses the inode.
	e2 := mustLookup(t, fs, fuseproto.RootID, "f")
	if e2.NodeID != e.NodeID {
		t.Errorf("lookup during request: node %d, want %d", e2.NodeID, e.NodeID)
	}
	fs.Forget(e2.NodeID, 1)
	if got := fdIno(fd); got != e.Attr.Ino {
		t.Fatal("inode fd closed while a request holds it")
	}
	fs.inodes.put(in)
	if got := fdIno(fd); got == e.Attr.Ino {
		t.Error("inode fd still open after the request finished")
	}
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("%d inodes, want 1", n)
	}

	// Same for a handle: Release during a Read.
	e = mustLookup(t, fs, fuseproto.RootID, "f")
	fh := mustOpen(t, fs, e.NodeID, unix.O_RDONLY)
	h := fs.files.get(fh)
	hfd := h.fd
	release(t, fs, e.NodeID, fh)
	fs.Forget(e.NodeID, 1)
	if got := fdIno(hfd); got != e.Attr.Ino {
		t.Fatal("handle fd closed by Release while a Read holds it")
	}
	buf := make([]byte, 8)
	if n, err := unix.Pread(hfd, buf, 0); err != nil || string(buf[:n]) != "data" {
		t.Errorf("pread on held handle: %q, %v", buf[:n], err)
	}
	fs.files.put(h)
	if got := fdIno(hfd); got == e.Attr.Ino {
		t.Error("handle fd still open after the Read finished")
	}
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("%d inodes after the handle closed, want 1", n)
	}
}

// TestLookupKnown checks the one-statx path of a repeated LOOKUP
// (lookupKnown) against what the host does to the name in between: the
// same object again, an object renamed over it, a symlink swapped in, a
// file deleted, a directory replaced by a file, and a name the inode was
// renamed away from.
func TestLookupKnown(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(t *testing.T, dir string) // between the two lookups
		fast     bool                           // the second lookup takes the short path
		same     bool                           // and returns the first node
		wantErr  unix.Errno
		wantMode uint32 // S_IFMT of the second answer
	}{
		{"unchanged", func(*testing.T, string) {}, true, true, 0, unix.S_IFREG},
		{"written", func(t *testing.T, dir string) { writeFile(t, dir, "n", "longer data") }, true, true, 0, unix.S_IFREG},
		{"renamed over", func(t *testing.T, dir string) {
			writeFile(t, dir, "other", "x")
			must(t, os.Rename(filepath.Join(dir, "other"), filepath.Join(dir, "n")))
		}, false, false, 0, unix.S_IFREG},
		{"symlink swapped in", func(t *testing.T, dir string) {
			must(t, os.Symlink("/etc", filepath.Join(dir, "l")))
			must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, "l"), unix.AT_FDCWD, filepath.Join(dir, "n"), unix.RENAME_EXCHANGE))
		}, false, false, 0, unix.S_IFLNK},
		{"deleted", func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "n"))) }, false, false, unix.ENOENT, 0},
		{"directory now", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "n")))
			must(t, os.Mkdir(filepath.Join(dir, "n"), 0o755))
		}, false, false, 0, unix.S_IFDIR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, dir := newTestFSMode(t, Options{InodeFileHandles: FileHandlesNever})
			writeFile(t, dir, "n", "data")
			e1 := mustLookup(t, fs, fuseproto.RootID, "n")
			tc.change(t, dir)
			before := fs.knownLookups.Load()
			var e2 fuseproto.EntryOut
			errno := fs.Lookup(rootCtx, fuseproto.RootID, "n", &e2)
			if errno != tc.wantErr {
				t.Fatalf("second lookup: %v, want %v", errno, tc.wantErr)
			}
			if fast := fs.knownLookups.Load() > before; fast != tc.fast {
				t.Errorf("short path taken: %v, want %v", fast, tc.fast)
			}
			if errno != 0 {
				return
			}
			if same := e2.NodeID == e1.NodeID; same != tc.same {
				t.Errorf("same node: %v (%d, %d), want %v", same, e1.NodeID, e2.NodeID, tc.same)
			}
			st := lstat(t, filepath.Join(dir, "n"))
			if e2.Attr.Ino != st.Ino || e2.Attr.Mode&unix.S_IFMT != tc.wantMode || e2.Attr.Size != uint64(st.Size) {
				t.Errorf("attr ino %d mode %o size %d; host ino %d size %d, want type %o", e2.Attr.Ino, e2.Attr.Mode, e2.Attr.Size, st.Ino, st.Size, tc.wantMode)
			}
		})
	}
	// An inode renamed by the guest is found under its new name the long
	// way, and the old name is gone.
	fs, dir := newTestFSMode(t, Options{InodeFileHandles: FileHandlesNever})
	writeFile(t, dir, "a", "data")
	ea := mustLookup(t, fs, fuseproto.RootID, "a")
	if errno := fs.Rename(rootCtx, fuseproto.RootID, "a", fuseproto.RootID, "b", 0); errno != 0 {
		t.Fatal(errno)
	}
	var out fuseproto.EntryOut
	if errno := fs.Lookup(rootCtx, fuseproto.RootID, "a", &out); errno != unix.ENOENT {
		t.Errorf("lookup of the old name: %v, want ENOENT", errno)
	}
	if eb := mustLookup(t, fs, fuseproto.RootID, "b"); eb.NodeID != ea.NodeID {
		t.Errorf("renamed inode: node %d, want %d", eb.NodeID, ea.NodeID)
	}
	before := fs.knownLookups.Load()
	if eb := mustLookup(t, fs, fuseproto.RootID, "b"); eb.NodeID != ea.NodeID || fs.knownLookups.Load() != before+1 {
		t.Errorf("repeated lookup of the new name: node %d (want %d), short path %v", eb.NodeID, ea.NodeID, fs.knownLookups.Load() > before)
	}
	// Forgotten inodes leave no entry behind.
	fs.Forget(ea.NodeID, 3)
	fs.inodes.mu.Lock()
	n := len(fs.inodes.byName)
	fs.inodes.mu.Unlock()
	if n != 0 {
		t.Errorf("%d name entries left after the last forget", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
