package overlay

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestLookupThreeLowers checks the namespace of a read-only union of three
// lowers: the topmost non-directory wins, same-name directories merge,
// and a type conflict stops the merge at the topmost type.
func TestLookupThreeLowers(t *testing.T) {
	u := newUnion(t, "", 3, false)
	for i, data := range []string{"one", "two", "three"} {
		hostFile(t, u.L(i+1, "f"), data)
	}
	hostFile(t, u.L(3, "only3"), "three")
	hostFile(t, u.L(2, "f23"), "two")
	hostFile(t, u.L(3, "f23"), "three")
	hostFile(t, u.L(1, "d/a"), "1a")
	hostFile(t, u.L(2, "d/b"), "2b")
	hostFile(t, u.L(3, "d/c"), "3c")
	hostFile(t, u.L(1, "d/x"), "1x")
	hostFile(t, u.L(3, "d/x"), "3x")
	hostFile(t, u.L(2, "d/sub/s2"), "")
	hostFile(t, u.L(3, "d/sub/s3"), "")
	// A file over a directory, and a directory over a file.
	hostFile(t, u.L(1, "fileoverdir"), "file")
	hostFile(t, u.L(2, "fileoverdir/inner"), "hidden")
	hostFile(t, u.L(1, "diroverfile/inner"), "1")
	hostFile(t, u.L(2, "diroverfile"), "hidden")
	hostFile(t, u.L(3, "diroverfile/deep"), "hidden below the file")
	if err := unix.Symlink("f", u.L(2, "link")); err != nil {
		t.Fatal(err)
	}
	fs := u.mount()

	for path, want := range map[string]string{
		"f": "one", "only3": "three", "f23": "two",
		"d/a": "1a", "d/b": "2b", "d/c": "3c", "d/x": "1x",
		"fileoverdir": "file", "diroverfile/inner": "1",
	} {
		if got := u.read(path); got != want {
			t.Errorf("%s reads %q, want %q", path, got, want)
		}
	}
	if got, want := u.ls("/"), []string{"d", "diroverfile", "f", "f23", "fileoverdir", "link", "only3"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
	if got, want := u.ls("d"), []string{"a", "b", "c", "sub", "x"}; !slices.Equal(got, want) {
		t.Errorf("d lists %q, want %q", got, want)
	}
	if got, want := u.ls("d/sub"), []string{"s2", "s3"}; !slices.Equal(got, want) {
		t.Errorf("d/sub lists %q, want %q", got, want)
	}
	if got, want := u.ls("diroverfile"), []string{"inner"}; !slices.Equal(got, want) {
		t.Errorf("diroverfile lists %q, want %q (the lower file stops the merge)", got, want)
	}
	if _, e := u.walk("fileoverdir/inner"); e != unix.ENOTDIR {
		t.Errorf("fileoverdir/inner: %v, want ENOTDIR", e)
	}
	if _, e := u.walk("diroverfile/deep"); e != unix.ENOENT {
		t.Errorf("diroverfile/deep: %v, want ENOENT", e)
	}
	if _, e := u.walk("nothing"); e != unix.ENOENT {
		t.Errorf("nothing: %v, want ENOENT", e)
	}

	// Attributes and identity come from the topmost object.
	for path, layer := range map[string]int{"f": 1, "f23": 2, "only3": 3, "d/x": 1, "d/c": 3} {
		st, _ := hostStat(t, u.L(layer, path))
		a := u.entry(path).Attr
		if a.Ino != st.Ino || a.Size != uint64(st.Size) || a.Mode != st.Mode {
			t.Errorf("%s: ino %d size %d mode %#o, want lower %d's %d %d %#o", path, a.Ino, a.Size, a.Mode, layer, st.Ino, st.Size, st.Mode)
		}
	}
	var buf [64]byte
	n, e := fs.Readlink(rootCtx, u.node("link"), buf[:])
	if e != 0 || string(buf[:n]) != "f" {
		t.Errorf("Readlink: %q, %v", buf[:n], e)
	}
	// Two lookups of one name are one inode.
	if a, b := u.entry("d/b").NodeID, u.entry("d/b").NodeID; a != b {
		t.Errorf("two lookups of d/b gave nodes %d and %d", a, b)
	}
	// "." and "..".
	d := u.node("d")
	if e := u.mustLookup(d, "."); e.NodeID != d {
		t.Errorf(`d/. is node %d, want %d`, e.NodeID, d)
	}
	if e := u.mustLookup(d, ".."); e.NodeID != fuseproto.RootID {
		t.Errorf(`d/.. is node %d, want the root`, e.NodeID)
	}
	if _, e := u.lookup(u.node("f"), "x"); e != unix.ENOTDIR {
		t.Errorf("Lookup in a file: %v, want ENOTDIR", e)
	}
	for _, dir := range []string{"/", "d", "d/sub", "diroverfile"} {
		u.checkDino(dir)
	}
}

// TestWhiteouts checks each whiteout and opaque form: it hides what it
// should, nothing more, and is never listed or looked up.
func TestWhiteouts(t *testing.T) {
	const (
		opaque   = "trusted.overlay.opaque"
		whiteout = "trusted.overlay.whiteout"
	)
	tests := []struct {
		name  string
		build func(t *testing.T, u *union)
		dir   string   // the directory to list
		want  []string // its merged names
		gone  []string // paths that must not be found
		read  map[string]string
	}{
		{
			name: "char 0/0 in upper",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(1, "d/f"), "lower")
				hostFile(t, u.L(1, "d/keep"), "k")
				hostFile(t, u.L(2, "d/g"), "lower2")
				hostWhiteout(t, u.U("d/f"))
				hostWhiteout(t, u.U("d/g"))
			},
			dir: "d", want: []string{"keep"}, gone: []string{"d/f", "d/g"},
		},
		{
			name: "char 0/0 in a middle lower",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/f"), "bottom")
				hostWhiteout(t, u.L(2, "d/f"))
				hostFile(t, u.L(3, "d/sub/x"), "bottom")
				hostWhiteout(t, u.L(2, "d/sub"))
				hostFile(t, u.L(1, "d/top"), "t")
			},
			dir: "d", want: []string{"top"}, gone: []string{"d/f", "d/sub", "d/sub/x"},
		},
		{
			name: "char 0/0 in a middle lower under a file of the top lower",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/f"), "bottom")
				hostWhiteout(t, u.L(2, "d/f"))
				hostFile(t, u.L(1, "d/f"), "top")
			},
			dir: "d", want: []string{"f"}, read: map[string]string{"d/f": "top"},
		},
		{
			name: "xattr whiteout under opaque=x",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/f"), "bottom")
				hostFile(t, u.L(3, "d/g"), "bottom")
				hostFile(t, u.L(2, "d/f"), "")
				hostSetxattr(t, u.L(2, "d/f"), whiteout, "")
				hostFile(t, u.L(2, "d/empty"), "") // zero size, no xattr: a file
				hostFile(t, u.L(2, "d/big"), "data")
				hostSetxattr(t, u.L(2, "d/big"), whiteout, "") // not zero size: a file
				hostSetxattr(t, u.L(2, "d"), opaque, "x")
			},
			dir: "d", want: []string{"big", "empty", "g"}, gone: []string{"d/f"},
			read: map[string]string{"d/g": "bottom", "d/big": "data", "d/empty": ""},
		},
		{
			name: "xattr whiteout needs opaque=x on its directory",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/f"), "bottom")
				hostFile(t, u.L(2, "d/f"), "")
				hostSetxattr(t, u.L(2, "d/f"), whiteout, "")
			},
			dir: "d", want: []string{"f"}, read: map[string]string{"d/f": ""},
		},
		{
			name: "xattr opaque=x does not make a directory opaque",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/below"), "b")
				hostFile(t, u.L(2, "d/mine"), "m")
				hostSetxattr(t, u.L(2, "d"), opaque, "x")
			},
			dir: "d", want: []string{"below", "mine"},
		},
		{
			name: "OCI .wh.NAME",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/f"), "bottom")
				hostFile(t, u.L(3, "d/sub/x"), "bottom")
				hostFile(t, u.L(2, "d/.wh.f"), "")
				hostFile(t, u.L(2, "d/.wh.sub"), "")
				// A whiteout hides only the layers below its own.
				hostFile(t, u.L(2, "d/.wh.same"), "")
				hostFile(t, u.L(2, "d/same"), "same layer")
				hostFile(t, u.L(3, "d/kept"), "k")
				// The aufs meta prefix is skipped, not a whiteout.
				hostFile(t, u.L(2, "d/.wh..wh.plnk/x"), "")
				hostFile(t, u.L(3, "d/plnk"), "p")
			},
			dir: "d", want: []string{"kept", "plnk", "same"},
			gone: []string{"d/f", "d/sub", "d/sub/x", "d/.wh.f", "d/.wh.same", "d/.wh..wh.plnk"},
			read: map[string]string{"d/same": "same layer", "d/plnk": "p"},
		},
		{
			name: "OCI .wh..wh..opq",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/below"), "b")
				hostFile(t, u.L(3, "d/both"), "below")
				hostFile(t, u.L(2, "d/.wh..wh..opq"), "")
				hostFile(t, u.L(2, "d/both"), "mine")
				hostFile(t, u.L(2, "d/mine"), "m")
				hostFile(t, u.L(1, "d/top"), "t")
			},
			dir: "d", want: []string{"both", "mine", "top"}, gone: []string{"d/below", "d/.wh..wh..opq"},
			read: map[string]string{"d/both": "mine"},
		},
		{
			name: "OCI .wh..wh..opq in a subdirectory of an opaque one",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/e/below"), "b")
				hostFile(t, u.L(2, "d/.wh..wh..opq"), "")
				hostFile(t, u.L(2, "d/e/mine"), "m")
			},
			dir: "d/e", want: []string{"mine"}, gone: []string{"d/e/below"},
		},
		{
			name: "opaque=y in a middle lower",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(3, "d/below"), "b")
				hostFile(t, u.L(3, "d/deep/x"), "b")
				hostFile(t, u.L(2, "d/mine"), "m")
				hostSetxattr(t, u.L(2, "d"), opaque, "y")
				hostFile(t, u.L(1, "d/top"), "t")
			},
			dir: "d", want: []string{"mine", "top"}, gone: []string{"d/below", "d/deep", "d/deep/x"},
		},
		{
			name: "opaque=y in the upper",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(1, "d/below"), "b")
				hostFile(t, u.L(2, "d/sub/x"), "b")
				hostFile(t, u.U("d/mine"), "m")
				hostSetxattr(t, u.U("d"), opaque, "y")
			},
			dir: "d", want: []string{"mine"}, gone: []string{"d/below", "d/sub", "d/sub/x"},
		},
		{
			name: "whiteout of a directory in the upper",
			build: func(t *testing.T, u *union) {
				hostFile(t, u.L(1, "d/sub/x"), "b")
				hostFile(t, u.L(1, "d/other"), "o")
				hostWhiteout(t, u.U("d/sub"))
			},
			dir: "d", want: []string{"other"}, gone: []string{"d/sub", "d/sub/x"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnion(t, "", 3, true)
			tc.build(t, u)
			u.mount()
			got := u.ls(tc.dir)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s lists %q, want %q", tc.dir, got, tc.want)
			}
			for _, ents := range [][]dirent{u.list(u.node(tc.dir)), u.listPlus(u.node(tc.dir))} {
				for _, de := range ents {
					if de.typ == unix.DT_CHR || (len(de.name) > 4 && de.name[:4] == ".wh.") {
						t.Errorf("%s lists %q (type %d), a whiteout or marker", tc.dir, de.name, de.typ)
					}
				}
			}
			for _, p := range tc.gone {
				if _, e := u.walk(p); e != unix.ENOENT {
					t.Errorf("%s: %v, want ENOENT", p, e)
				}
			}
			for p, want := range tc.read {
				if got := u.read(p); got != want {
					t.Errorf("%s reads %q, want %q", p, got, want)
				}
			}
			u.checkDino(tc.dir)
		})
	}
}

// listPlus lists directory node with READDIRPLUS and forgets the lookups
// it counted.
func (u *union) listPlus(node uint64) []dirent {
	u.t.Helper()
	fh := u.opendir(node)
	defer u.releasedir(node, fh)
	ents := u.readdirAll(node, fh, 4096, true)
	for _, de := range ents {
		if de.node != 0 && de.name != "." && de.name != ".." {
			u.fs.Forget(de.node, 1)
		}
	}
	return ents
}

// TestOCIMarkerNameInUpper: the upper is never read as an OCI layer, so a
// guest may create a file named ".wh.x" there. It must not disturb the
// lowers' own OCI markers: Readdir and Lookup must agree that the lower x
// whited out in layer 1 stays hidden.
func TestOCIMarkerNameInUpper(t *testing.T) {
	u := newUnion(t, "", 2, true)
	hostFile(t, u.L(1, ".wh.x"), "")
	hostFile(t, u.L(2, "x"), "hidden")
	hostFile(t, u.L(2, "y"), "shown")
	u.mount()
	if _, e := u.create(".wh.x", unix.O_RDWR|unix.O_EXCL); e != 0 {
		t.Fatalf("Create .wh.x: %v", e)
	}
	if u.exists("x") {
		t.Error("x is found: the guest's .wh.x file changed the lower's whiteout")
	}
	if got, want := u.ls("/"), []string{".wh.x", "y"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
	u.checkDino("/")
}

// TestRedirectEscape gives crafted redirect xattrs (as a hostile layer
// could carry) that point out of the layers, through "..", and through a
// symlink in a lower: lookups must stay inside the layers, with openat2
// and with the openat fallback.
func TestRedirectEscape(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("openat fallback %v", fallback), func(t *testing.T) {
			u := newUnion(t, "", 2, true)
			secret := filepath.Join(u.base, "secret")
			hostFile(t, filepath.Join(secret, "passwd"), "SECRET")
			hostFile(t, u.L(1, "sub/f"), "f")
			hostFile(t, u.L(2, "sub/g"), "g")
			if err := unix.Symlink(secret, u.L(1, "lnk")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Symlink(secret, u.L(2, "lnk2")); err != nil {
				t.Fatal(err)
			}
			const redirect = "trusted.overlay.redirect"
			dirs := map[string]string{
				"e1": "/../secret",
				"e2": "..",
				"e3": "/sub/../../secret",
				"e4": "/lnk",
				"e5": "/../../../../../../../../" + strings.TrimPrefix(secret, "/"),
				"e6": "/sub/../../../secret",
				"e7": "/lnk2",
			}
			for name, r := range dirs {
				hostDir(t, u.U(name))
				hostSetxattr(t, u.U(name), redirect, r)
			}
			// A control: a redirect inside the layers is followed.
			hostDir(t, u.U("good"))
			hostSetxattr(t, u.U("good"), redirect, "/sub")
			// A lower directory with a redirect for the layers below.
			hostDir(t, u.L(1, "ld"))
			hostSetxattr(t, u.L(1, "ld"), redirect, "/../secret")
			// Metacopy files whose data is "elsewhere".
			files := map[string]string{"m1": "/../secret/passwd", "m2": "/lnk/passwd", "m3": "/lnk2/passwd", "m4": "../secret/passwd"}
			for name, r := range files {
				hostFile(t, u.U(name), "")
				if err := os.Truncate(u.U(name), 6); err != nil {
					t.Fatal(err)
				}
				hostSetxattr(t, u.U(name), "trusted.overlay.metacopy", "")
				hostSetxattr(t, u.U(name), redirect, r)
			}
			fs := u.mount()
			if fallback {
				fs.res.DisableOpenat2()
			}
			for name := range dirs {
				for _, n := range u.ls(name) {
					if n == "passwd" {
						t.Errorf("%s (redirect %q) lists the host's passwd", name, dirs[name])
					}
				}
				if e, errno := u.walk(name + "/passwd"); errno != unix.ENOENT {
					t.Errorf("%s/passwd: %v (size %d), want ENOENT", name, errno, e.Attr.Size)
				}
			}
			if got := u.ls("ld"); len(got) != 0 {
				t.Errorf("ld lists %q", got)
			}
			if got := u.ls("good"); !slices.Equal(got, []string{"f", "g"}) {
				t.Errorf("good (redirect /sub) lists %q, want [f g]", got)
			}
			for name := range files {
				e, errno := u.walk(name)
				if errno != 0 {
					continue // refusing the file is fine
				}
				fh, errno := u.open(e.NodeID, unix.O_RDONLY)
				if errno != 0 {
					continue
				}
				if got := u.readAt(e.NodeID, fh, 0, 100); strings.Contains(got, "SECRET") {
					t.Errorf("metacopy %s (redirect %q) reads the host file: %q", name, files[name], got)
				}
				u.release(e.NodeID, fh)
			}
		})
	}
}
