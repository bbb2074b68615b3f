package passthrough

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// offsetMax is the End of a lock that runs to the end of file.
const offsetMax = hostfs.OffsetMax

// rootCtx is a request from guest root.
var rootCtx = &fuseproto.Context{}

// userCtx returns a request from uid/gid.
func userCtx(uid, gid uint32, groups ...uint32) *fuseproto.Context {
	return &fuseproto.Context{UID: uid, GID: gid, SuppGroups: groups}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("passthrough tests need root (credential switching, chown, mknod)")
	}
}

// newTestFS serves a fresh temporary directory (mode 0777 so that other
// uids can create in it) and closes the FS at the end of the test.
func newTestFS(t *testing.T, opts Options) (*FS, string) {
	t.Helper()
	if opts.InodeFileHandles == FileHandlesPrefer {
		opts.InodeFileHandles = suiteHandles // see TestMain
	}
	return newTestFSMode(t, opts)
}

// newTestFSMode is newTestFS with the InodeFileHandles mode opts names,
// whatever TestMain's pass.
func newTestFSMode(t *testing.T, opts Options) (*FS, string) {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	fs, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs, dir
}

// mustLookup looks name up in parent and fails the test on error.
func mustLookup(t *testing.T, fs *FS, parent uint64, name string) fuseproto.EntryOut {
	t.Helper()
	var e fuseproto.EntryOut
	if errno := fs.Lookup(rootCtx, parent, name, &e); errno != 0 {
		t.Fatalf("Lookup(%d, %q): %v", parent, name, errno)
	}
	return e
}

// mustOpen opens node with flags and returns the handle.
func mustOpen(t *testing.T, fs *FS, node uint64, flags uint32) uint64 {
	t.Helper()
	var out fuseproto.OpenOut
	if errno := fs.Open(rootCtx, node, &fuseproto.OpenIn{Flags: flags}, &out); errno != 0 {
		t.Fatalf("Open(%d, %#o): %v", node, flags, errno)
	}
	return out.Fh
}

func release(t *testing.T, fs *FS, node, fh uint64) {
	t.Helper()
	if errno := fs.Release(rootCtx, node, &fuseproto.ReleaseIn{Fh: fh}); errno != 0 {
		t.Fatalf("Release(%d): %v", fh, errno)
	}
}

// writeFile creates a file in the share's host directory.
func writeFile(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// countFds returns the number of open descriptors of the process.
func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// lstat stats a host path without following symlinks.
func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// nlookupOf returns the lookup count of node, or -1 if it is not in the table.
func (fs *FS) nlookupOf(node uint64) int {
	fs.inodes.mu.Lock()
	defer fs.inodes.mu.Unlock()
	in := fs.inodes.byID[node]
	if in == nil {
		return -1
	}
	return int(in.nlookup)
}
