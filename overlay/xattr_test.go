package overlay

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// listxattr lists node's xattr names through the union, checking the
// size query against the list.
func (u *union) listxattr(node uint64) []string {
	u.t.Helper()
	n, e := u.fs.Listxattr(rootCtx, node, nil)
	if e != 0 {
		u.t.Fatalf("Listxattr size: %v", e)
	}
	buf := make([]byte, n)
	m, e := u.fs.Listxattr(rootCtx, node, buf)
	if e != 0 || m != n {
		u.t.Fatalf("Listxattr: %d, %v; the size query said %d", m, e, n)
	}
	if n > 0 {
		if _, e := u.fs.Listxattr(rootCtx, node, make([]byte, n-1)); e != unix.ERANGE {
			u.t.Errorf("Listxattr into %d bytes of %d: %v, want ERANGE", n-1, n, e)
		}
	}
	out := splitNul(buf)
	slices.Sort(out)
	return out
}

func (u *union) getxattr(node uint64, name string) (string, fuseproto.Errno) {
	buf := make([]byte, 256)
	n, e := u.fs.Getxattr(rootCtx, node, name, buf)
	return string(buf[:n]), e
}

// TestXattrPrivateNames checks that the overlay's own xattrs never show
// through the union and cannot be set from it: names in the namespace are
// escaped on the layer, as nested kernel overlays do.
func TestXattrPrivateNames(t *testing.T) {
	for _, user := range []bool{false, true} {
		prefix := "trusted.overlay."
		if user {
			prefix = "user.overlay."
		}
		t.Run(prefix, func(t *testing.T) {
			u := newUnion(t, "", 1, true)
			if user {
				u.extra = "userxattr"
			}
			hostFile(t, u.L(1, "d/f"), "x")
			for _, p := range []string{u.L(1, "d"), u.L(1, "d/f")} {
				hostSetxattr(t, p, prefix+"origin", "garbage")
				hostSetxattr(t, p, prefix+"impure", "y")
				hostSetxattr(t, p, prefix+"overlay.nested", "esc")
				hostSetxattr(t, p, "user.plain", "p")
				hostSetxattr(t, p, "trusted.plain", "t")
			}
			hostSetxattr(t, u.L(1, "d"), prefix+"redirect", "/nowhere")
			u.mount()
			wantList := []string{prefix + "nested", "trusted.plain", "user.plain"}
			slices.Sort(wantList)
			for _, p := range []string{"d", "d/f"} {
				n := u.node(p)
				if got := u.listxattr(n); !slices.Equal(got, wantList) {
					t.Errorf("%s lists %q, want %q", p, got, wantList)
				}
				for _, name := range []string{prefix + "origin", prefix + "impure", prefix + "redirect", prefix + "opaque"} {
					if v, e := u.getxattr(n, name); e != unix.ENODATA {
						t.Errorf("%s: Getxattr %s = %q, %v, want ENODATA", p, name, v, e)
					}
				}
				if v, e := u.getxattr(n, prefix+"nested"); e != 0 || v != "esc" {
					t.Errorf("%s: Getxattr %snested = %q, %v, want esc", p, prefix, v, e)
				}
			}
			// A redirect on the only lower's directory leads nowhere.
			if got := u.ls("d"); !slices.Equal(got, []string{"f"}) {
				t.Errorf("d lists %q", got)
			}

			// Setting a name in the namespace stores the escaped name on
			// the upper and never touches the private one.
			f := u.node("d/f")
			for _, name := range []string{prefix + "foo", prefix + "opaque", prefix + "whiteout", prefix + "metacopy"} {
				if e := u.fs.Setxattr(rootCtx, f, name, []byte("guest"), &fuseproto.SetxattrIn{}); e != 0 {
					t.Fatalf("Setxattr %s: %v", name, e)
				}
				stored := prefix + "overlay." + strings.TrimPrefix(name, prefix)
				if v, ok := hostXattr(u.U("d/f"), stored); !ok || v != "guest" {
					t.Errorf("Setxattr %s: upper %s = %q, %v", name, stored, v, ok)
				}
				if v, e := u.getxattr(f, name); e != 0 || v != "guest" {
					t.Errorf("Getxattr %s after setting it = %q, %v", name, v, e)
				}
			}
			if _, ok := hostXattr(u.U("d/f"), prefix+"whiteout"); ok {
				t.Error("the guest set the real whiteout xattr")
			}
			if _, ok := hostXattr(u.U("d/f"), prefix+"opaque"); ok {
				t.Error("the guest set the real opaque xattr")
			}
			// Copied up (metadata only or whole), it still reads its data.
			if got := u.read("d/f"); got != "x" {
				t.Errorf("d/f reads %q", got)
			}
			want := append(slices.Clone(wantList), prefix+"foo", prefix+"metacopy", prefix+"opaque", prefix+"whiteout")
			slices.Sort(want)
			if got := u.listxattr(f); !slices.Equal(got, want) {
				t.Errorf("after Setxattr d/f lists %q, want %q", got, want)
			}
			if e := u.fs.Removexattr(rootCtx, f, prefix+"foo"); e != 0 {
				t.Errorf("Removexattr %sfoo: %v", prefix, e)
			}
			if _, ok := hostXattr(u.U("d/f"), prefix+"overlay.foo"); ok {
				t.Error("Removexattr left the escaped name")
			}
			if e := u.fs.Removexattr(rootCtx, f, prefix+"origin"); e != unix.ENODATA {
				t.Errorf("Removexattr %sorigin: %v, want ENODATA", prefix, e)
			}
			if _, ok := hostXattr(u.U("d/f"), prefix+"origin"); !ok {
				t.Error("Removexattr removed the copy's real origin")
			}
			// Across a remount nothing of it became a whiteout or opaque.
			u.remount()
			if got := u.read("d/f"); got != "x" {
				t.Errorf("after remount d/f reads %q", got)
			}
			if got := u.ls("d"); !slices.Equal(got, []string{"f"}) {
				t.Errorf("after remount d lists %q", got)
			}
		})
	}
}

// TestXattrOps runs Setxattr flags, Getxattr size queries and ERANGE, and
// the disabled case.
func TestXattrOps(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "f"), "x")
	hostSetxattr(t, u.L(1, "f"), "user.a", "lower")
	u.mount()
	f := u.node("f")
	if n, e := u.fs.Getxattr(rootCtx, f, "user.a", nil); e != 0 || n != 5 {
		t.Errorf("Getxattr size query: %d, %v", n, e)
	}
	if _, e := u.fs.Getxattr(rootCtx, f, "user.a", make([]byte, 2)); e != unix.ERANGE {
		t.Errorf("Getxattr into 2 bytes: %v, want ERANGE", e)
	}
	if e := u.fs.Setxattr(rootCtx, f, "user.a", []byte("x"), &fuseproto.SetxattrIn{Flags: unix.XATTR_CREATE}); e != unix.EEXIST {
		t.Errorf("XATTR_CREATE on an existing name: %v, want EEXIST", e)
	}
	if e := u.fs.Setxattr(rootCtx, f, "user.b", []byte("x"), &fuseproto.SetxattrIn{Flags: unix.XATTR_REPLACE}); e != unix.ENODATA {
		t.Errorf("XATTR_REPLACE on a missing name: %v, want ENODATA", e)
	}
	if e := u.fs.Setxattr(rootCtx, f, "user.a", []byte("upper"), &fuseproto.SetxattrIn{Flags: unix.XATTR_REPLACE}); e != 0 {
		t.Errorf("XATTR_REPLACE: %v", e)
	}
	if v, _ := u.getxattr(f, "user.a"); v != "upper" {
		t.Errorf("user.a = %q after replacing", v)
	}
	if v, _ := hostXattr(u.L(1, "f"), "user.a"); v != "lower" {
		t.Errorf("the lower's user.a changed to %q", v)
	}
	if e := u.fs.Removexattr(rootCtx, f, "user.a"); e != 0 {
		t.Errorf("Removexattr: %v", e)
	}
	if _, e := u.getxattr(f, "user.a"); e != unix.ENODATA {
		t.Errorf("user.a after Removexattr: %v", e)
	}
	if got := u.listxattr(f); len(got) != 0 {
		t.Errorf("lists %q after removing everything", got)
	}
	if !bytes.Equal([]byte(u.read("f")), []byte("x")) {
		t.Error("data changed")
	}

	// Xattr off: every xattr operation answers ENOSYS.
	u.opts.Xattr = false
	u.remount()
	f = u.node("f")
	if e := u.fs.Setxattr(rootCtx, f, "user.x", nil, &fuseproto.SetxattrIn{}); e != unix.ENOSYS {
		t.Errorf("Setxattr with Xattr off: %v", e)
	}
	if _, e := u.fs.Getxattr(rootCtx, f, "user.x", nil); e != unix.ENOSYS {
		t.Errorf("Getxattr with Xattr off: %v", e)
	}
	if _, e := u.fs.Listxattr(rootCtx, f, nil); e != unix.ENOSYS {
		t.Errorf("Listxattr with Xattr off: %v", e)
	}
	if e := u.fs.Removexattr(rootCtx, f, "user.x"); e != unix.ENOSYS {
		t.Errorf("Removexattr with Xattr off: %v", e)
	}
}
