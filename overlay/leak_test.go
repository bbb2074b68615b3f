package overlay

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// TestDestroyLeavesNothing serves a small union, touches every kind of
// state (lookups, a copy-up, open files and directories) and checks that
// Destroy empties the inode and handle tables and Close gives back every
// descriptor.
func TestDestroyLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "overlay tests need root (trusted xattrs, whiteouts)")
	}
	dir := t.TempDir()
	for _, d := range []string{"l1/d", "l2/d", "u", "w"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "l2/d/f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := countFds(t)
	cfg, err := ParseConfig("lowerdir=" + dir + "/l1:" + dir + "/l2,upperdir=" + dir + "/u,workdir=" + dir + "/w")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := New(cfg, Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := &fuseproto.Context{}
	var d, f fuseproto.EntryOut
	if e := fs.Lookup(ctx, fuseproto.RootID, "d", &d); e != 0 {
		t.Fatalf("Lookup d: %v", e)
	}
	if e := fs.Lookup(ctx, d.NodeID, "f", &f); e != 0 {
		t.Fatalf("Lookup f: %v", e)
	}
	var fo, do fuseproto.OpenOut
	if e := fs.Open(ctx, f.NodeID, &fuseproto.OpenIn{Flags: uint32(os.O_RDWR)}, &fo); e != 0 {
		t.Fatalf("Open f for writing: %v", e)
	}
	if e := fs.Opendir(ctx, d.NodeID, &fuseproto.OpenIn{}, &do); e != 0 {
		t.Fatalf("Opendir d: %v", e)
	}
	if _, err := os.Stat(filepath.Join(dir, "u/d/f")); err != nil {
		t.Errorf("opening a lower file for writing did not copy it up: %v", err)
	}
	if n := fs.inodes.len(); n != 3 {
		t.Errorf("inode table holds %d inodes, want 3 (root, d, f)", n)
	}
	fs.Destroy()
	if n := fs.inodes.len(); n != 1 {
		t.Errorf("after Destroy the inode table holds %d inodes, want only the root", n)
	}
	if n := fs.files.len() + fs.dirs.len(); n != 0 {
		t.Errorf("after Destroy %d handles are open", n)
	}
	fs.Close()
	if after := countFds(t); after != before {
		t.Errorf("descriptors: %d before New, %d after Close", before, after)
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
