package passthrough

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

type dirent struct {
	name string
	ino  uint64
	off  uint64
	typ  uint32
	node uint64 // READDIRPLUS only
}

// parseDir decodes a READDIR or READDIRPLUS reply.
func parseDir(t *testing.T, b []byte, plus bool) []dirent {
	t.Helper()
	var out []dirent
	for len(b) > 0 {
		var node uint64
		if plus {
			node = binary.NativeEndian.Uint64(b[0:])
			b = b[fuseproto.EntryOutSize:]
		}
		ino := binary.NativeEndian.Uint64(b[0:])
		off := binary.NativeEndian.Uint64(b[8:])
		n := int(binary.NativeEndian.Uint32(b[16:]))
		typ := binary.NativeEndian.Uint32(b[20:])
		out = append(out, dirent{name: string(b[24 : 24+n]), ino: ino, off: off, typ: typ, node: node})
		b = b[(24+n+7)&^7:]
	}
	return out
}

// readdir reads one reply of at most size bytes from cookie off.
func readdir(t *testing.T, fs *FS, fh, off uint64, size int, plus bool) []dirent {
	t.Helper()
	d := fuseproto.NewDirBuffer(make([]byte, 0, size), size, plus)
	if errno := fs.Readdir(rootCtx, fuseproto.RootID, &fuseproto.ReadIn{Fh: fh, Offset: off, Size: uint32(size)}, d); errno != 0 {
		t.Fatalf("Readdir(%d): %v", off, errno)
	}
	return parseDir(t, d.Bytes(), plus)
}

// readAll lists the whole directory in replies of size bytes.
func readAll(t *testing.T, fs *FS, fh uint64, size int, plus bool) []dirent {
	t.Helper()
	var all []dirent
	var off uint64
	for {
		ents := readdir(t, fs, fh, off, size, plus)
		if len(ents) == 0 {
			return all
		}
		all = append(all, ents...)
		off = ents[len(ents)-1].off
	}
}

func TestReaddir(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	const n = 200
	for i := range n {
		writeFile(t, dir, fmt.Sprintf("file-with-a-long-name-%03d", i), "")
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	fh := o.Fh
	defer fs.Releasedir(rootCtx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: fh})

	all := readAll(t, fs, fh, 4096, false)
	if len(all) != n+3 {
		t.Fatalf("listed %d entries, want %d", len(all), n+3)
	}
	names := map[string]dirent{}
	for _, e := range all {
		names[e.name] = e
	}
	if _, ok := names["."]; !ok {
		t.Error("no . entry")
	}
	if _, ok := names[".."]; !ok {
		t.Error("no .. entry")
	}
	// d_ino equals Lookup's st_ino, d_type is right.
	for _, name := range []string{"sub", "file-with-a-long-name-007"} {
		e := mustLookup(t, fs, fuseproto.RootID, name)
		if names[name].ino != e.Attr.Ino || names[name].typ != e.Attr.Mode>>12 {
			t.Errorf("%s: d_ino %d type %d, lookup ino %d type %d", name, names[name].ino, names[name].typ, e.Attr.Ino, e.Attr.Mode>>12)
		}
		fs.Forget(e.NodeID, 1)
	}

	// Resume from a cookie in the middle, on this handle and on a new one.
	mid := all[len(all)/2]
	rest := all[len(all)/2+1:]
	var got []dirent
	for off := mid.off; ; {
		ents := readdir(t, fs, fh, off, 512, false)
		if len(ents) == 0 {
			break
		}
		got = append(got, ents...)
		off = ents[len(ents)-1].off
	}
	if !slices.Equal(got, rest) {
		t.Errorf("resuming at cookie %d: %d entries, want %d", mid.off, len(got), len(rest))
	}
	// Rewind to 0 gives the same listing again.
	if again := readAll(t, fs, fh, 8192, false); !slices.Equal(again, all) {
		t.Error("listing after rewind differs")
	}
	// A reply too small for one entry is empty, not an error.
	if ents := readdir(t, fs, fh, 0, 16, false); len(ents) != 0 {
		t.Errorf("tiny reply held %d entries", len(ents))
	}
	if ents := readdir(t, fs, fh, 0, 4096, false); len(ents) == 0 {
		t.Error("nothing after a tiny reply")
	}
}

func TestReaddirplus(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	const n = 50
	for i := range n {
		writeFile(t, dir, fmt.Sprintf("f%02d", i), "")
	}
	before := countFds(t)
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	fh := o.Fh
	all := readAll(t, fs, fh, 700, true) // a few entries per reply
	if len(all) != n+2 {
		t.Fatalf("listed %d, want %d", len(all), n+2)
	}
	for _, e := range all {
		switch e.name {
		case ".", "..":
			if e.node != 0 {
				t.Errorf("%s has node %d; it must count no lookup", e.name, e.node)
			}
		default:
			if e.node == 0 {
				t.Errorf("%s has no node", e.name)
				continue
			}
			// Exactly one lookup per entry sent, even though many
			// entries did not fit in the reply that first read them.
			if got := fs.nlookupOf(e.node); got != 1 {
				t.Errorf("%s: nlookup %d, want 1", e.name, got)
			}
			st := lstat(t, filepath.Join(dir, e.name))
			if e.ino != st.Ino {
				t.Errorf("%s: ino %d, want %d", e.name, e.ino, st.Ino)
			}
		}
	}
	if got := fs.inodes.len(); got != n+1 {
		t.Errorf("%d inodes, want %d", got, n+1)
	}
	// No lookup was made (and undone) for an entry that did not fit: the
	// node IDs handed out are exactly the n sent.
	if next := fs.inodes.next; next != fuseproto.RootID+1+n {
		t.Errorf("%d node IDs used for %d entries: lookups made for entries not sent", next-fuseproto.RootID-1, n)
	}
	for _, e := range all {
		if e.node != 0 {
			fs.Forget(e.node, 1)
		}
	}
	if errno := fs.Releasedir(rootCtx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: fh}); errno != 0 {
		t.Fatal(errno)
	}
	if got := fs.inodes.len(); got != 1 {
		t.Errorf("%d inodes after forgetting all, want 1", got)
	}
	if got := countFds(t); got != before {
		t.Errorf("%d fds, want %d", got, before)
	}
	if errno := fs.Fsyncdir(rootCtx, fuseproto.RootID, &fuseproto.FsyncIn{Fh: fh}); errno != unix.EBADF {
		t.Errorf("Fsyncdir after Releasedir: %v", errno)
	}
}

func TestDirMisc(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "")
	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	var o fuseproto.OpenOut
	if errno := fs.Opendir(rootCtx, f, &fuseproto.OpenIn{}, &o); errno != unix.ENOTDIR {
		t.Errorf("Opendir of a file: %v", errno)
	}
	if errno := fs.Open(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != unix.EISDIR {
		t.Errorf("Open of a dir: %v", errno)
	}
	var e fuseproto.EntryOut
	if errno := fs.Lookup(rootCtx, f, "x", &e); errno != unix.ENOTDIR {
		t.Errorf("Lookup in a file: %v", errno)
	}
	if errno := fs.Lookup(rootCtx, fuseproto.RootID, "missing", &e); errno != unix.ENOENT {
		t.Errorf("Lookup missing: %v", errno)
	}
	if errno := fs.Opendir(rootCtx, fuseproto.RootID, &fuseproto.OpenIn{}, &o); errno != 0 {
		t.Fatal(errno)
	}
	for _, flags := range []uint32{0, fuseproto.FsyncFdatasync} {
		if errno := fs.Fsyncdir(rootCtx, fuseproto.RootID, &fuseproto.FsyncIn{Fh: o.Fh, FsyncFlags: flags}); errno != 0 {
			t.Errorf("Fsyncdir: %v", errno)
		}
	}
	// A file handle is not a directory handle and vice versa.
	if errno := fs.Release(rootCtx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: o.Fh}); errno != unix.EBADF {
		t.Errorf("Release of a dir handle: %v", errno)
	}
	if errno := fs.Releasedir(rootCtx, fuseproto.RootID, &fuseproto.ReleaseIn{Fh: o.Fh}); errno != 0 {
		t.Error(errno)
	}
}
