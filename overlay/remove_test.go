package overlay

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnlink removes each kind of file: a whiteout is left exactly where a
// lower still holds the name.
func TestUnlink(t *testing.T) {
	u := newUnion(t, "", 2, true)
	hostFile(t, u.L(1, "lower"), "l")
	hostFile(t, u.L(2, "lower2"), "l2")
	hostFile(t, u.U("pure"), "p")
	hostFile(t, u.L(1, "copied"), "c")
	hostFile(t, u.L(1, "over"), "lower")
	hostFile(t, u.U("over"), "upper")
	hostFile(t, u.L(2, "d/f"), "deep")
	hostFile(t, u.L(2, "d/g"), "stays")
	hostFile(t, u.L(1, "op/x"), "hidden")
	hostFile(t, u.U("op/x"), "mine")
	hostSetxattr(t, u.U("op"), "trusted.overlay.opaque", "y")
	if err := unix.Symlink("lower", u.L(1, "sym")); err != nil {
		t.Fatal(err)
	}
	u.mount()
	u.write(u.node("copied"), "C")
	if _, ok := hostStat(t, u.U("copied")); !ok {
		t.Fatal("copied was not copied up")
	}

	tests := []struct {
		path     string
		whiteout bool
	}{
		{"lower", true},
		{"lower2", true},
		{"pure", false},
		{"copied", true},
		{"over", true},
		{"d/f", true},
		{"op/x", false}, // the opaque directory hides the lower x
		{"sym", true},
	}
	for _, tc := range tests {
		if e := u.unlink(tc.path); e != 0 {
			t.Errorf("Unlink %s: %v", tc.path, e)
			continue
		}
		if got := isHostWhiteout(t, u.U(tc.path)); got != tc.whiteout {
			_, exists := hostStat(t, u.U(tc.path))
			t.Errorf("%s: upper whiteout %v (upper entry exists %v), want %v", tc.path, got, exists, tc.whiteout)
		}
		if u.exists(tc.path) {
			t.Errorf("%s still found after Unlink", tc.path)
		}
		if e := u.unlink(tc.path); e != unix.ENOENT {
			t.Errorf("second Unlink %s: %v, want ENOENT", tc.path, e)
		}
	}
	if got := u.ls("/"); !slices.Equal(got, []string{"d", "op"}) {
		t.Errorf("root lists %q", got)
	}
	if got := u.ls("d"); !slices.Equal(got, []string{"g"}) {
		t.Errorf("d lists %q", got)
	}
	if got := u.ls("op"); len(got) != 0 {
		t.Errorf("op lists %q", got)
	}
	if e := u.unlink("d"); e != unix.EISDIR {
		t.Errorf("Unlink of a directory: %v, want EISDIR", e)
	}
	// Remount: the whiteouts still hide the lowers.
	u.remount()
	for _, tc := range tests {
		if u.exists(tc.path) {
			t.Errorf("%s is back after remount", tc.path)
		}
	}
}

// TestUnlinkOpenFile unlinks a lower file that is open: the handle keeps
// reading it, and a later change through the node still works.
func TestUnlinkOpenFile(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "f"), "lower data")
	u.mount()
	n := u.node("f")
	fh := u.mustOpen(n, unix.O_RDONLY)
	if e := u.unlink("f"); e != 0 {
		t.Fatal(e)
	}
	if got := u.readAt(n, fh, 0, 100); got != "lower data" {
		t.Errorf("open handle reads %q after unlink", got)
	}
	u.release(n, fh)
	if a := u.attr(n); a.Size != 10 {
		t.Errorf("Getattr of the unlinked node: size %d", a.Size)
	}
	if !isHostWhiteout(t, u.U("f")) {
		t.Error("no whiteout for the unlinked lower file")
	}
}

// TestRmdir checks that emptiness is judged on the merged view, and where
// whiteouts are left.
func TestRmdir(t *testing.T) {
	u := newUnion(t, "", 2, true)
	hostDir(t, u.U("merged"))
	hostFile(t, u.L(1, "merged/f"), "x")
	hostDir(t, u.L(2, "empty"))
	hostFile(t, u.L(2, "whited/x"), "x")
	hostWhiteout(t, u.L(1, "whited/x"))
	hostFile(t, u.L(1, "opq/x"), "x")
	hostDir(t, u.U("opq"))
	hostSetxattr(t, u.U("opq"), "trusted.overlay.opaque", "y")
	hostFile(t, u.L(2, "deep/a/b"), "x")
	hostFile(t, u.L(1, "file"), "x")
	u.mount()

	if e := u.rmdir("merged"); e != unix.ENOTEMPTY {
		t.Errorf("Rmdir of a merged dir with a lower entry: %v, want ENOTEMPTY", e)
	}
	if e := u.rmdir("deep"); e != unix.ENOTEMPTY {
		t.Errorf("Rmdir of a lower dir with a subdirectory: %v, want ENOTEMPTY", e)
	}
	if e := u.rmdir("file"); e != unix.ENOTDIR {
		t.Errorf("Rmdir of a file: %v, want ENOTDIR", e)
	}
	if e := u.rmdir("missing"); e != unix.ENOENT {
		t.Errorf("Rmdir of nothing: %v, want ENOENT", e)
	}
	if e := u.unlink("merged/f"); e != 0 {
		t.Fatal(e)
	}
	// Now only a whiteout is in the upper merged/: empty.
	for _, d := range []string{"merged", "empty", "whited", "opq"} {
		if e := u.rmdir(d); e != 0 {
			t.Errorf("Rmdir %s: %v", d, e)
			continue
		}
		if !isHostWhiteout(t, u.U(d)) {
			t.Errorf("%s: no whiteout left in the upper", d)
		}
		if u.exists(d) {
			t.Errorf("%s still found", d)
		}
	}
	// A new directory (opaque in the merged root) holding only a
	// whiteout goes without one.
	if _, e := u.mkdir("new"); e != 0 {
		t.Fatal(e)
	}
	if _, e := u.create("new/f", unix.O_RDWR); e != 0 {
		t.Fatal(e)
	}
	if e := u.unlink("new/f"); e != 0 {
		t.Fatal(e)
	}
	if e := u.rmdir("new"); e != 0 {
		t.Errorf("Rmdir new: %v", e)
	}
	if _, ok := hostStat(t, u.U("new")); ok {
		t.Error("a pure upper directory left something behind")
	}
	// Deep: remove bottom-up through the union.
	if e := u.unlink("deep/a/b"); e != 0 {
		t.Fatal(e)
	}
	if e := u.rmdir("deep/a"); e != 0 {
		t.Fatalf("Rmdir deep/a: %v", e)
	}
	if e := u.rmdir("deep"); e != 0 {
		t.Fatalf("Rmdir deep: %v", e)
	}
	if got := u.ls("/"); !slices.Equal(got, []string{"file"}) {
		t.Errorf("root lists %q", got)
	}
	if got := hostNames(t, u.work+"/work"); len(got) != 0 {
		t.Errorf("work/ holds %q", got)
	}
	u.remount()
	if got := u.ls("/"); !slices.Equal(got, []string{"file"}) {
		t.Errorf("after remount root lists %q", got)
	}
}
