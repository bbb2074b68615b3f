package overlay

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestReaddirIno checks that d_ino equals the st_ino Lookup reports, and
// d_type the type, for entries of every origin: upper, merged, lower,
// copied up, renamed, linked, in impure and plain directories.
func TestReaddirIno(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 2, true)
	hostFile(t, u.U("upper"), "u")
	hostDir(t, u.U("merged"))
	hostFile(t, u.U("merged/up"), "u")
	hostFile(t, u.L(1, "merged/low"), "l")
	hostFile(t, u.L(2, "merged/low2"), "l")
	hostDir(t, u.L(2, "merged/sub"))
	hostFile(t, u.L(1, "lower"), "l")
	hostFile(t, u.L(2, "lowdir/f"), "f")
	hostDir(t, u.L(2, "lowdir/sub"))
	hostFile(t, u.L(1, "cu/f"), "f")
	hostFile(t, u.L(1, "cu/g"), "g")
	hostFile(t, u.L(1, "mv/f"), "f")
	hostFile(t, u.L(1, "src"), "s")
	hostFile(t, u.L(1, "hl1"), "h")
	if err := os.Link(u.L(1, "hl1"), u.L(1, "hl2")); err != nil {
		t.Fatal(err)
	}
	hostFile(t, u.L(1, "ha/x"), "h")
	hostDir(t, u.L(1, "hb"))
	if err := os.Link(u.L(1, "ha/x"), u.L(1, "hb/y")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(u.L(2, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Symlink("x", u.L(2, "sym")); err != nil {
		t.Fatal(err)
	}
	u.mount()
	dirs := []string{"/", "merged", "merged/sub", "lowdir", "lowdir/sub", "cu", "mv"}
	for _, d := range dirs {
		u.checkDino(d)
	}
	// Copy-ups (which make cu/ impure), a rename into a pure upper
	// directory, and a hard link of a copied-up file into another.
	u.write(u.node("cu/f"), "F")
	u.mustSetattr(u.node("cu/g"), fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600})
	if _, e := u.mkdir("newdir"); e != 0 {
		t.Fatal(e)
	}
	if e := u.rename("mv/f", "newdir/moved", 0); e != 0 {
		t.Fatal(e)
	}
	if _, e := u.mkdir("linkdir"); e != 0 {
		t.Fatal(e)
	}
	var out fuseproto.EntryOut
	if e := u.fs.Link(rootCtx, u.node("src"), u.node("linkdir"), "linked", &out); e != 0 {
		t.Fatalf("Link: %v", e)
	}
	u.write(u.node("hl1"), "H")
	// An indexed hard link copied up under one name, then linked up
	// under its other name in another directory.
	u.write(u.node("ha/x"), "HX")
	u.write(u.node("hb/y"), "HY")
	if _, ok := hostStat(t, u.U("hb/y")); !ok {
		t.Fatal("hb/y was not linked up")
	}
	if e := u.unlink("lowdir/f"); e != 0 {
		t.Fatal(e)
	}
	dirs = append(dirs, "newdir", "linkdir", "ha", "hb")
	for _, when := range []string{"after the changes", "after forgetting", "after remount"} {
		switch when {
		case "after forgetting":
			u.fs.Destroy()
		case "after remount":
			u.remount()
		}
		for _, d := range dirs {
			u.checkDino(d)
		}
		// READDIRPLUS entries carry the attributes Lookup gives.
		for _, d := range dirs {
			node := u.node(d)
			for _, de := range u.listPlus(node) {
				if de.name == "." || de.name == ".." {
					continue
				}
				e := u.mustLookup(node, de.name)
				if de.ino != e.Attr.Ino || de.node != e.NodeID {
					t.Errorf("%s: READDIRPLUS %s/%s: ino %d node %d, Lookup %d node %d", when, d, de.name, de.ino, de.node, e.Attr.Ino, e.NodeID)
				}
			}
		}
	}
}

// TestReaddirOffsets reads a merged directory a few entries at a time
// while entries are created and removed: no entry is repeated or skipped,
// the listing is the one made at the first read, and a read from offset 0
// (rewinddir) makes a fresh one.
func TestReaddirOffsets(t *testing.T) {
	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprintf("plus=%v", plus), func(t *testing.T) {
			u := newUnion(t, "", 2, true)
			var want []string
			for i := 0; i < 40; i++ {
				name := fmt.Sprintf("f%02d", i)
				switch i % 3 {
				case 0:
					hostFile(t, u.U("d/"+name), "u")
				case 1:
					hostFile(t, u.L(1, "d/"+name), "l1")
				case 2:
					hostFile(t, u.L(2, "d/"+name), "l2")
				}
				want = append(want, name)
			}
			hostFile(t, u.L(2, "d/f00"), "hidden duplicate")
			hostFile(t, u.L(1, "d/f01"), "hidden duplicate")
			u.mount()
			d := u.node("d")
			fh := u.opendir(d)
			var got []string
			var off uint64
			size := 80
			if plus {
				size = 2 * (fuseproto.EntryOutSize + 32)
			}
			rounds := 0
			for round := 0; ; round++ {
				ents := u.readdirAt(d, fh, off, size, plus)
				if len(ents) == 0 {
					break
				}
				if len(ents) > 3 {
					t.Fatalf("a %d-byte reply held %d entries", size, len(ents))
				}
				for _, de := range ents {
					got = append(got, de.name)
					if plus && de.node != 0 && de.name != "." && de.name != ".." {
						u.fs.Forget(de.node, 1)
					}
				}
				off = ents[len(ents)-1].off
				rounds++
				// Change the directory between the replies.
				if _, e := u.create(fmt.Sprintf("d/new%02d", round), unix.O_RDWR); e != 0 {
					t.Fatal(e)
				}
				if round == 3 {
					// Remove a name not yet listed: the listing
					// made at the first read still holds it (as
					// the kernel's cached one does) or skips it.
					if e := u.unlink("d/f39"); e != 0 {
						t.Fatal(e)
					}
				}
			}
			got = slices.DeleteFunc(got, func(s string) bool { return s == "." || s == ".." })
			sorted := slices.Sorted(slices.Values(got))
			if n := len(slices.Compact(slices.Clone(sorted))); n != len(sorted) {
				t.Errorf("%d names listed twice: %q", len(sorted)-n, got)
			}
			// READDIRPLUS looks each entry up, so the removed f39 may be
			// left out; plain READDIR lists what the first read saw.
			without39 := slices.DeleteFunc(slices.Clone(want), func(s string) bool { return s == "f39" })
			if !slices.Equal(sorted, want) && !(plus && slices.Equal(sorted, without39)) {
				t.Errorf("listing in small replies:\n got %q\nwant %q", sorted, want)
			}
			// Rewind: the new entries show, the removed one does not.
			all := entNames(u.readdirAll(d, fh, 4096, false))
			var news []string
			for _, n := range all {
				if len(n) > 3 && n[:3] == "new" {
					news = append(news, n)
				}
			}
			if len(news) != rounds {
				t.Errorf("after rewind %d new entries listed, want the %d made", len(news), rounds)
			}
			if wantAll := slices.Sorted(slices.Values(append(slices.Clone(without39), news...))); !slices.Equal(all, wantAll) {
				t.Errorf("after rewind:\n got %q\nwant %q", all, wantAll)
			}
			u.releasedir(d, fh)
		})
	}
}

// makeMerged100k fills dir d of a two-layer union on tmpfs with 100,000
// names: 60,000 in the upper, 60,000 in the lower, 20,000 of them in both.
func makeMerged100k(tb testing.TB) *union {
	u := newUnion(tb, tmpfsDir(tb), 1, true)
	hostMkdirAll(tb, u.U("d"))
	hostMkdirAll(tb, u.L(1, "d"))
	for i := 0; i < 100000; i++ {
		name := "entry-" + strconv.Itoa(i)
		if i < 60000 {
			if err := unix.Mknod(u.U("d/"+name), unix.S_IFREG|0o644, 0); err != nil {
				tb.Fatal(err)
			}
		}
		if i >= 40000 {
			if err := unix.Mknod(u.L(1, "d/"+name), unix.S_IFREG|0o644, 0); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return u
}

// TestMergedReaddir100k lists a merged directory of 100,000 names.
func TestMergedReaddir100k(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	u := makeMerged100k(t)
	u.mount()
	d := u.node("d")
	fh := u.opendir(d)
	ents := u.readdirAll(d, fh, 128<<10, false)
	u.releasedir(d, fh)
	seen := make(map[string]bool, len(ents))
	for _, de := range ents {
		if seen[de.name] {
			t.Fatalf("%q listed twice", de.name)
		}
		seen[de.name] = true
	}
	if len(ents) != 100000+2 {
		t.Errorf("%d entries, want 100000 and . and ..", len(ents))
	}
	for _, i := range []int{0, 39999, 40000, 59999, 60000, 99999} {
		if !seen["entry-"+strconv.Itoa(i)] {
			t.Errorf("entry-%d missing", i)
		}
	}
}

// BenchmarkMergedReaddir100k measures listing a merged directory of
// 100,000 names from open to release.
func BenchmarkMergedReaddir100k(b *testing.B) {
	u := makeMerged100k(b)
	u.mount()
	d := u.node("d")
	buf := make([]byte, 0, 128<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var o fuseproto.OpenOut
		if e := u.fs.Opendir(rootCtx, d, &fuseproto.OpenIn{}, &o); e != 0 {
			b.Fatal(e)
		}
		var off uint64
		n := 0
		for {
			db := fuseproto.NewDirBuffer(buf, cap(buf), false)
			if e := u.fs.Readdir(rootCtx, d, &fuseproto.ReadIn{Fh: o.Fh, Offset: off, Size: uint32(cap(buf))}, db); e != 0 {
				b.Fatal(e)
			}
			// Walk the records without decoding names (no allocation
			// of the benchmark's own).
			b := db.Bytes()
			if len(b) == 0 {
				break
			}
			for len(b) > 0 {
				off = binary.NativeEndian.Uint64(b[8:])
				b = b[(fuseproto.DirentSize+int(binary.NativeEndian.Uint32(b[16:]))+7)&^7:]
				n++
			}
		}
		if n != 100002 {
			b.Fatalf("%d entries", n)
		}
		u.fs.Releasedir(rootCtx, d, &fuseproto.ReleaseIn{Fh: o.Fh})
	}
}
