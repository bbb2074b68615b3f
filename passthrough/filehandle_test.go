package passthrough

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// suiteHandles is the InodeFileHandles mode newTestFS (and the escape
// tests) use; TestMain runs the package's tests once with each of
// FileHandlesPrefer (the default) and FileHandlesNever.
var suiteHandles = FileHandlesPrefer

// childEnv marks a re-executed test binary (see runUnprivileged).
const childEnv = "GOVIRTIOFS_PASSTHROUGH_CHILD"

func TestMain(m *testing.M) {
	flag.Parse()
	modes := []InodeFileHandles{FileHandlesPrefer, FileHandlesNever}
	if f := flag.Lookup("test.fuzz"); (f != nil && f.Value.String() != "") || os.Getenv(childEnv) != "" {
		modes = modes[:1] // fuzzing, or a child: once is enough
	}
	code := 0
	for _, mode := range modes {
		suiteHandles = mode
		if os.Getenv(childEnv) == "" {
			fmt.Printf("=== passthrough tests with InodeFileHandles=%v\n", mode)
		}
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	os.Exit(code)
}

// fdsPerInode is how many descriptors the filesystem keeps per looked-up
// inode of a filesystem that makes file handles.
func (fs *FS) fdsPerInode() int {
	if fs.FileHandles() == FileHandlesNever {
		return 1
	}
	return 0
}

// mountFS mounts a filesystem of type fstype on a new directory and
// unmounts it at the end of the test.
func mountFS(t *testing.T, fstype, dir string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("none", dir, fstype, 0, ""); err != nil {
		testenv.Missing(t, "mount %s: %v", fstype, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestParseInodeFileHandles(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want InodeFileHandles
		err  bool
	}{
		{"never", FileHandlesNever, false},
		{"prefer", FileHandlesPrefer, false},
		{"fallback", FileHandlesPrefer, false}, // virtiofsd's deprecated alias
		{"mandatory", FileHandlesMandatory, false},
		{"", 0, true},
		{"Prefer", 0, true},
		{"always", 0, true},
	} {
		got, err := ParseInodeFileHandles(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParseInodeFileHandles(%q) = %v, %v", tc.in, got, err)
		}
		if !tc.err && tc.in != "fallback" && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	if _, err := New(t.TempDir(), Options{InodeFileHandles: InodeFileHandles(9)}); err == nil {
		t.Error("New accepted an invalid mode")
	}
}

// TestFileHandleModes runs each mode over shares on filesystems with and
// without file handles (ramfs and procfs have no export operations; tmpfs
// and the ext4 of the test's /tmp have them), and over a share with a
// ramfs submount, where prefer falls back per filesystem and mandatory
// refuses the submount.
func TestFileHandleModes(t *testing.T) {
	needRoot(t)
	shares := map[string]func(t *testing.T) string{
		"tmpdir": func(t *testing.T) string { return t.TempDir() },
		"tmpfs":  func(t *testing.T) string { return mountFS(t, "tmpfs", "") },
		"ramfs":  func(t *testing.T) string { return mountFS(t, "ramfs", "") },
		"proc":   func(t *testing.T) string { return "/proc" },
		"tmpfs+ramfs-submount": func(t *testing.T) string {
			dir := mountFS(t, "tmpfs", "")
			mountFS(t, "ramfs", filepath.Join(dir, "sub"))
			return dir
		},
	}
	tests := []struct {
		share   string
		mode    InodeFileHandles
		newErr  bool
		want    InodeFileHandles // FileHandles() after New
		fds     int              // descriptors per looked-up inode at the share's top
		subErr  error            // lookup of "sub" (submount shares)
		subFds  int              // descriptors per inode inside sub
		lookups bool
	}{
		{share: "tmpdir", mode: FileHandlesPrefer, want: FileHandlesPrefer, fds: 0, lookups: true},
		{share: "tmpdir", mode: FileHandlesMandatory, want: FileHandlesMandatory, fds: 0, lookups: true},
		{share: "tmpdir", mode: FileHandlesNever, want: FileHandlesNever, fds: 1, lookups: true},
		{share: "tmpfs", mode: FileHandlesPrefer, want: FileHandlesPrefer, fds: 0, lookups: true},
		{share: "tmpfs", mode: FileHandlesMandatory, want: FileHandlesMandatory, fds: 0, lookups: true},
		{share: "ramfs", mode: FileHandlesPrefer, want: FileHandlesNever, fds: 1, lookups: true},
		{share: "ramfs", mode: FileHandlesMandatory, newErr: true},
		{share: "ramfs", mode: FileHandlesNever, want: FileHandlesNever, fds: 1, lookups: true},
		{share: "proc", mode: FileHandlesPrefer, want: FileHandlesNever},
		{share: "proc", mode: FileHandlesMandatory, newErr: true},
		{share: "tmpfs+ramfs-submount", mode: FileHandlesPrefer, want: FileHandlesPrefer, fds: 0, subFds: 1, lookups: true},
		{share: "tmpfs+ramfs-submount", mode: FileHandlesMandatory, want: FileHandlesMandatory, fds: 0, subErr: unix.EOPNOTSUPP, lookups: true},
		{share: "tmpfs+ramfs-submount", mode: FileHandlesNever, want: FileHandlesNever, fds: 1, subFds: 1, lookups: true},
	}
	for _, tc := range tests {
		t.Run(tc.share+"/"+tc.mode.String(), func(t *testing.T) {
			dir := shares[tc.share](t)
			fs, err := New(dir, Options{InodeFileHandles: tc.mode})
			if tc.newErr {
				if err == nil {
					fs.Close()
					t.Fatal("New succeeded")
				}
				t.Logf("New: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			if got := fs.FileHandles(); got != tc.want {
				t.Fatalf("FileHandles() = %v, want %v", got, tc.want)
			}
			if !tc.lookups {
				return
			}
			const n = 8
			before := countFds(t)
			for i := range n {
				writeFile(t, dir, fmt.Sprintf("f%d", i), "x")
				e := mustLookup(t, fs, fuseproto.RootID, fmt.Sprintf("f%d", i))
				var a fuseproto.AttrOut
				if errno := fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); errno != 0 || a.Attr.Size != 1 {
					t.Fatalf("Getattr: %v size %d", errno, a.Attr.Size)
				}
			}
			if got := countFds(t) - before; got != n*tc.fds {
				t.Errorf("%d lookups hold %d descriptors, want %d", n, got, n*tc.fds)
			}
			if !strings.Contains(tc.share, "submount") {
				return
			}
			var e fuseproto.EntryOut
			errno := fs.Lookup(rootCtx, fuseproto.RootID, "sub", &e)
			if tc.subErr != nil {
				if errno != tc.subErr {
					t.Errorf("Lookup(sub) = %v, want %v", errno, tc.subErr)
				}
				return
			}
			if errno != 0 {
				t.Fatalf("Lookup(sub): %v", errno)
			}
			before = countFds(t)
			for i := range n {
				writeFile(t, filepath.Join(dir, "sub"), fmt.Sprintf("g%d", i), "yy")
				g := mustLookup(t, fs, e.NodeID, fmt.Sprintf("g%d", i))
				if g.Attr.Size != 2 {
					t.Errorf("size %d", g.Attr.Size)
				}
			}
			if got := countFds(t) - before; got != n*tc.subFds {
				t.Errorf("%d lookups in the submount hold %d descriptors, want %d", n, got, n*tc.subFds)
			}
		})
	}
}

// TestFileHandlesNoPerInodeFds: with handles, lookups and the requests that
// follow leave no descriptor behind; only open files hold one.
func TestFileHandlesNoPerInodeFds(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	atStart := countFds(t)
	fs, err := New(dir, Options{InodeFileHandles: FileHandlesMandatory, Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		fs.Close()
		if got := countFds(t); got != atStart {
			t.Errorf("after Close: %d descriptors, want %d", got, atStart)
		}
	}()
	before := countFds(t)
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := mustLookup(t, fs, fuseproto.RootID, "d")
	var nodes []uint64
	for i := range 200 {
		writeFile(t, filepath.Join(dir, "d"), fmt.Sprintf("f%03d", i), "data")
		e := mustLookup(t, fs, d.NodeID, fmt.Sprintf("f%03d", i))
		nodes = append(nodes, e.NodeID)
		var a fuseproto.AttrOut
		if errno := fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); errno != 0 {
			t.Fatal(errno)
		}
		if _, errno := fs.Listxattr(rootCtx, e.NodeID, nil); errno != 0 {
			t.Fatal(errno)
		}
	}
	if got := countFds(t); got != before {
		t.Errorf("200 inodes looked up: %d descriptors, want %d (none per inode)", got, before)
	}
	fh := mustOpen(t, fs, nodes[0], unix.O_RDWR)
	if got := countFds(t); got != before+1 {
		t.Errorf("one open file: %d descriptors, want %d", got, before+1)
	}
	release(t, fs, nodes[0], fh)
	// READDIRPLUS looks entries up through the directory handle.
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, d.NodeID, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 64<<10)
	var db fuseproto.DirBuffer
	db.Reset(buf[:0], len(buf), true)
	if errno := fs.Readdir(rootCtx, d.NodeID, &fuseproto.ReadIn{Fh: o.Fh, Size: uint32(len(buf))}, &db); errno != 0 || db.Len() == 0 {
		t.Fatalf("Readdirplus: %v, %d bytes", errno, db.Len())
	}
	if errno := fs.Releasedir(rootCtx, d.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh}); errno != 0 {
		t.Fatal(errno)
	}
	if got := countFds(t); got != before {
		t.Errorf("after readdirplus: %d descriptors, want %d", got, before)
	}
	if n := fs.mounts.Len(); n != 1 {
		t.Errorf("%d mount descriptors, want 1", n)
	}
}

// TestFileHandleIdentity: node IDs follow host inodes under handles as with
// descriptors: two names of one inode are one node, a rename keeps the
// node, and a new inode under an old name (which, without a held
// descriptor, may reuse the old st_ino) is a new node.
func TestFileHandleIdentity(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "a", "1")
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	a := mustLookup(t, fs, fuseproto.RootID, "a")
	if b := mustLookup(t, fs, fuseproto.RootID, "b"); b.NodeID != a.NodeID {
		t.Errorf("hard links: nodes %d and %d", a.NodeID, b.NodeID)
	}
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "c")); err != nil {
		t.Fatal(err)
	}
	if c := mustLookup(t, fs, fuseproto.RootID, "c"); c.NodeID != a.NodeID {
		t.Errorf("renamed: node %d, want %d", c.NodeID, a.NodeID)
	}
	for _, n := range []string{"b", "c"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 { // give the inode number a chance to be reused
		writeFile(t, dir, "a", "new")
		e := mustLookup(t, fs, fuseproto.RootID, "a")
		if e.NodeID == a.NodeID {
			t.Fatalf("try %d: a new file under the old name got the old node %d (ino %d, was %d)", i, e.NodeID, e.Attr.Ino, a.Attr.Ino)
		}
		fs.Forget(e.NodeID, 1)
		os.Remove(filepath.Join(dir, "a"))
	}
	// ".." and "." of a directory lead back to the known inodes.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := mustLookup(t, fs, fuseproto.RootID, "d")
	if up := mustLookup(t, fs, d.NodeID, ".."); up.NodeID != fuseproto.RootID {
		t.Errorf("d/.. is node %d", up.NodeID)
	}
	if self := mustLookup(t, fs, d.NodeID, "."); self.NodeID != d.NodeID {
		t.Errorf("d/. is node %d", self.NodeID)
	}
}

// TestFileHandleOpenUnlinked: a file the guest has open stays usable by
// node after it is unlinked, because its handle's descriptor keeps the host
// inode (an inode only looked up is gone, ESTALE, as in virtiofsd).
func TestFileHandleOpenUnlinked(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	e := mustLookup(t, fs, fuseproto.RootID, "f")
	fh := mustOpen(t, fs, e.NodeID, unix.O_RDWR)
	if errno := fs.Unlink(rootCtx, fuseproto.RootID, "f"); errno != 0 {
		t.Fatal(errno)
	}
	var a fuseproto.AttrOut
	if errno := fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); errno != 0 || a.Attr.Nlink != 0 || a.Attr.Size != 4 {
		t.Errorf("Getattr of an open unlinked file: %v nlink %d size %d", errno, a.Attr.Nlink, a.Attr.Size)
	}
	var sa fuseproto.AttrOut
	if errno := fs.Setattr(rootCtx, e.NodeID, &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}, &sa); errno != 0 || sa.Attr.Mode&0o7777 != 0o600 {
		t.Errorf("Setattr of an open unlinked file: %v mode %#o", errno, sa.Attr.Mode)
	}
	release(t, fs, e.NodeID, fh)
}

// TestOpenHandleRefusesOPath documents the kernel rule Mounts relies on:
// open_by_handle_at refuses an O_PATH mount descriptor.
func TestOpenHandleRefusesOPath(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	writeFile(t, dir, "f", "x")
	h, _, err := hostfs.HandleAt(unix.AT_FDCWD, filepath.Join(dir, "f"), 0)
	if err != nil {
		t.Fatal(err)
	}
	opath, err := unix.Open(dir, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(opath)
	if fd, err := hostfs.OpenHandle(opath, h, unix.O_PATH); err == nil {
		unix.Close(fd)
		t.Log("open_by_handle_at accepted an O_PATH mount descriptor on this kernel")
	} else if !errors.Is(err, unix.EBADF) {
		t.Errorf("O_PATH mount descriptor: %v, want EBADF", err)
	}
	rd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rd)
	fd, err := hostfs.OpenHandle(rd, h, unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	n, _ := unix.Read(fd, b)
	unix.Close(fd)
	if string(b[:n]) != "x" {
		t.Errorf("read %q through the handle", b[:n])
	}
}

// TestFileHandlesUnprivileged runs New without CAP_DAC_READ_SEARCH (as
// uid 65534, in a child process): prefer falls back to descriptors,
// mandatory fails.
func TestFileHandlesUnprivileged(t *testing.T) {
	if os.Getenv(childEnv) == "unprivileged" {
		unprivilegedChild(t)
		return
	}
	needRoot(t)
	top, err := os.MkdirTemp("", "govirtiofs-fh-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	share := filepath.Join(top, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, share, "f", "data")
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary may sit in a directory only root can enter.
	exe := filepath.Join(top, "passthrough.test")
	if err := copyFile(os.Args[0], exe); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestFileHandlesUnprivileged$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=unprivileged", "GOVIRTIOFS_SHARE="+share)
	cmd.Dir = top
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "child checks done") {
		t.Fatal("the child did not run its checks")
	}
}

func unprivilegedChild(t *testing.T) {
	share := os.Getenv("GOVIRTIOFS_SHARE")
	fs, err := New(share, Options{InodeFileHandles: FileHandlesPrefer})
	if err != nil {
		t.Fatal(err)
	}
	if got := fs.FileHandles(); got != FileHandlesNever {
		t.Errorf("prefer without CAP_DAC_READ_SEARCH: FileHandles() = %v, want never", got)
	}
	e := mustLookup(t, fs, fuseproto.RootID, "f")
	if e.Attr.Size != 4 {
		t.Errorf("size %d", e.Attr.Size)
	}
	fs.Close()
	if fs, err := New(share, Options{InodeFileHandles: FileHandlesMandatory}); err == nil {
		fs.Close()
		t.Error("mandatory without CAP_DAC_READ_SEARCH: New succeeded")
	} else {
		t.Logf("mandatory: %v", err)
	}
	fmt.Println("child checks done")
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestFileHandlesRecheckAtInit: when handles stop working between New and
// FUSE_INIT (the daemon dropped CAP_DAC_READ_SEARCH), prefer falls back to
// descriptors; simulated by turning the mount descriptor into an O_PATH one,
// which open_by_handle_at refuses.
func TestFileHandlesRecheckAtInit(t *testing.T) {
	fs, dir := newTestFSMode(t, Options{InodeFileHandles: FileHandlesPrefer})
	writeFile(t, dir, "f", "x")
	root := fs.inodes.root
	if fs.FileHandles() != FileHandlesPrefer || root.fh == nil {
		t.Fatalf("mode %v, root handle %v", fs.FileHandles(), root.fh)
	}
	opath, err := unix.Open(dir, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup3(opath, root.fh.mount.Fd(), unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(opath)
	fs.Init(&fuseproto.Config{})
	if fs.FileHandles() != FileHandlesNever || root.fh != nil || fs.mounts.Len() != 0 {
		t.Fatalf("after Init: mode %v, root handle %v, %d mounts", fs.FileHandles(), root.fh, fs.mounts.Len())
	}
	before := countFds(t)
	e := mustLookup(t, fs, fuseproto.RootID, "f")
	if got := countFds(t); got != before+1 {
		t.Errorf("lookup holds %d descriptors, want 1", got-before)
	}
	if up := mustLookup(t, fs, fuseproto.RootID, ".."); up.NodeID != fuseproto.RootID {
		t.Errorf(".. of the root is node %d", up.NodeID)
	}
	fs.Forget(e.NodeID, 1)
}
