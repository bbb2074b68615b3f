package overlay

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// labelCtx is a request from guest root carrying an SELinux label.
func labelCtx(value string) *fuseproto.Context {
	return &fuseproto.Context{SecCtx: []fuseproto.SecCtx{{Name: "security.selinux", Value: []byte(value)}}}
}

// makeEach creates a directory, a regular file, a symlink and a fifo named
// prefix+"d", "f", "s" and "p" in the root with ctx and returns the errnos.
func makeEach(u *union, ctx *fuseproto.Context, prefix string) map[string]fuseproto.Errno {
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	got := map[string]fuseproto.Errno{}
	got[prefix+"d"] = u.fs.Mkdir(ctx, fuseproto.RootID, prefix+"d", &fuseproto.MkdirIn{Mode: 0o755}, &e)
	got[prefix+"f"] = u.fs.Create(ctx, fuseproto.RootID, prefix+"f", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: unix.S_IFREG | 0o644}, &e, &o)
	if got[prefix+"f"] == 0 {
		u.release(e.NodeID, o.Fh)
	}
	got[prefix+"s"] = u.fs.Symlink(ctx, fuseproto.RootID, prefix+"s", "target", &e)
	got[prefix+"p"] = u.fs.Mknod(ctx, fuseproto.RootID, prefix+"p", &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o644}, &e)
	return got
}

// TestSecCtx checks that a new upper object carries the security context
// the request brought, whether made in place or in the work directory over
// a whiteout, and that one that cannot be labelled is not left behind (nor
// is the whiteout it was to replace).
func TestSecCtx(t *testing.T) {
	u := newUnion(t, "", 1, true)
	for _, n := range []string{"wd", "wf", "ws", "wp", "xd", "xf", "xs", "xp"} {
		hostFile(t, u.L(1, n), "lower")
	}
	u.mount()
	for _, n := range []string{"wd", "wf", "ws", "wp", "xd", "xf", "xs", "xp"} {
		if e := u.unlink(n); e != 0 {
			t.Fatal(e)
		}
	}
	const label = "system_u:object_r:container_file_t:s0\x00"
	ctx := labelCtx(label)
	for _, prefix := range []string{"", "w"} {
		for name, e := range makeEach(u, ctx, prefix) {
			if e != 0 {
				t.Fatalf("%s: %v", name, e)
			}
			if v, ok := hostXattr(u.U(name), "security.selinux"); v != label {
				t.Errorf("upper %s: security.selinux = %q, %v, want %q", name, v, ok, label)
			}
		}
	}
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	if errno := u.fs.Tmpfile(ctx, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: unix.S_IFREG | 0o600}, &e, &o); errno != 0 {
		t.Fatalf("Tmpfile: %v", errno)
	}
	buf := make([]byte, 256)
	if n, errno := u.fs.Getxattr(rootCtx, e.NodeID, "security.selinux", buf); errno != 0 || string(buf[:n]) != label {
		t.Errorf("Tmpfile: security.selinux = %q, %v", buf[:n], errno)
	}
	u.release(e.NodeID, o.Fh)

	// Without contexts, nothing is set.
	if errno := u.fs.Mkdir(rootCtx, fuseproto.RootID, "plain", &fuseproto.MkdirIn{Mode: 0o755}, &e); errno != 0 {
		t.Fatal(errno)
	}
	if v, ok := hostXattr(u.U("plain"), "security.selinux"); ok {
		t.Errorf("unlabelled mkdir: security.selinux = %q", v)
	}

	// A value the host refuses (larger than XATTR_SIZE_MAX) fails the
	// creation and leaves nothing behind.
	bad := labelCtx(strings.Repeat("x", fuseproto.MaxXattrSize+1))
	for _, prefix := range []string{"n", "x"} {
		for name, e := range makeEach(u, bad, prefix) {
			if e != unix.E2BIG {
				t.Errorf("%s with an oversized label: %v, want E2BIG", name, e)
			}
			if u.exists(name) {
				t.Errorf("%s exists after a failed label", name)
			}
			if prefix == "n" {
				if _, ok := hostStat(t, u.U(name)); ok {
					t.Errorf("upper %s left behind", name)
				}
			} else if !isHostWhiteout(t, u.U(name)) {
				t.Errorf("whiteout %s not kept", name)
			}
		}
	}
	if errno := u.fs.Tmpfile(bad, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: unix.S_IFREG | 0o600}, &e, &o); errno != unix.E2BIG {
		t.Errorf("Tmpfile with an oversized label: %v, want E2BIG", errno)
	}
	if got := hostNames(t, filepath.Join(u.work, "work")); len(got) != 0 {
		t.Errorf("work directory holds %q", got)
	}
}

// TestPreserveNoatime checks that O_NOATIME is dropped from opens unless
// Options.PreserveNoatime.
func TestPreserveNoatime(t *testing.T) {
	for _, preserve := range []bool{false, true} {
		u := newUnion(t, "", 1, true)
		hostFile(t, u.L(1, "f"), "lower")
		u.opts.PreserveNoatime = preserve
		u.mount()
		node := u.entry("f").NodeID
		for _, flags := range []uint32{unix.O_RDONLY | unix.O_NOATIME, unix.O_RDWR | unix.O_NOATIME} {
			var o fuseproto.OpenOut
			if errno := u.fs.Open(rootCtx, node, &fuseproto.OpenIn{Flags: flags}, &o); errno != 0 {
				t.Fatalf("preserve=%v Open(%#o): %v", preserve, flags, errno)
			}
			h := u.fs.files.get(o.Fh)
			fl, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
			u.fs.files.put(h)
			if err != nil {
				t.Fatal(err)
			}
			if got := fl&unix.O_NOATIME != 0; got != preserve {
				t.Errorf("preserve=%v Open(%#o): host O_NOATIME %v", preserve, flags, got)
			}
			u.release(node, o.Fh)
		}
	}
}
