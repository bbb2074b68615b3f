package passthrough

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// withLabels returns ctx with security contexts name=value, ... added.
func withLabels(ctx *fuseproto.Context, nv ...string) *fuseproto.Context {
	c := *ctx
	c.SecCtx = nil
	for i := 0; i+1 < len(nv); i += 2 {
		c.SecCtx = append(c.SecCtx, fuseproto.SecCtx{Name: nv[i], Value: []byte(nv[i+1])})
	}
	return &c
}

// hostLabel reads xattr name of a host path (not following a symlink).
func hostLabel(t *testing.T, p, name string) (string, bool) {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err == unix.ENODATA {
		return "", false
	}
	if err != nil {
		t.Fatalf("lgetxattr %s %s: %v", p, name, err)
	}
	return string(buf[:n]), true
}

// creators runs each creating operation for name in the root with ctx.
var creators = map[string]func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno{
	"Create": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		var o fuseproto.OpenOut
		errno := fs.Create(ctx, fuseproto.RootID, name, &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: 0o644}, &e, &o)
		if errno == 0 {
			fs.Release(ctx, e.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh})
		}
		return errno
	},
	"Mkdir": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		return fs.Mkdir(ctx, fuseproto.RootID, name, &fuseproto.MkdirIn{Mode: 0o755}, &e)
	},
	"Mknod fifo": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		return fs.Mknod(ctx, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o644}, &e)
	},
	"Mknod chardev": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		// Only root may make a device node.
		root := *ctx
		root.UID, root.GID, root.SuppGroups = 0, 0, nil
		var e fuseproto.EntryOut
		return fs.Mknod(&root, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: unix.S_IFCHR | 0o600, Rdev: uint32(unix.Mkdev(1, 3))}, &e)
	},
	"Mknod regular": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		return fs.Mknod(ctx, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
	},
	"Symlink": func(fs *FS, ctx *fuseproto.Context, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		return fs.Symlink(ctx, fuseproto.RootID, name, "target", &e)
	},
}

// TestSecCtx checks that every creating operation stores the request's
// security contexts as xattrs of the new host object (the caller being an
// unprivileged user, who could not set security.* itself), and that an
// object that cannot be labelled is removed again.
func TestSecCtx(t *testing.T) {
	fs, dir := newTestFS(t, Options{Xattr: true})
	const label = "unconfined_u:object_r:user_home_t:s0\x00"
	user := userCtx(1000, 1000)
	ctx := withLabels(user, "security.selinux", label, "security.SMACK64", "_")
	for op, mk := range creators {
		name := strings.ReplaceAll(op, " ", "-")
		if e := mk(fs, ctx, name); e != 0 {
			t.Fatalf("%s: %v", op, e)
		}
		p := filepath.Join(dir, name)
		if v, ok := hostLabel(t, p, "security.selinux"); v != label {
			t.Errorf("%s: security.selinux = %q, %v, want %q", op, v, ok, label)
		}
		if v, _ := hostLabel(t, p, "security.SMACK64"); v != "_" {
			t.Errorf("%s: security.SMACK64 = %q", op, v)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || (st.Uid != 1000 && op != "Mknod chardev") {
			t.Errorf("%s: owner %d, %v; want the caller", op, st.Uid, err)
		}
		// Without contexts, nothing is set.
		if e := mk(fs, user, name+"-plain"); e != 0 {
			t.Fatalf("%s without labels: %v", op, e)
		}
		if v, ok := hostLabel(t, filepath.Join(dir, name+"-plain"), "security.selinux"); ok {
			t.Errorf("%s without labels: security.selinux = %q", op, v)
		}
	}

	// TMPFILE: the unnamed file carries the label, and keeps it when
	// linked in.
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	if errno := fs.Tmpfile(ctx, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &e, &o); errno != 0 {
		t.Fatalf("Tmpfile: %v", errno)
	}
	var le fuseproto.EntryOut
	if errno := fs.Link(rootCtx, e.NodeID, fuseproto.RootID, "tmp", &le); errno != 0 {
		t.Fatalf("Link of the tmpfile: %v", errno)
	}
	if v, _ := hostLabel(t, filepath.Join(dir, "tmp"), "security.selinux"); v != label {
		t.Errorf("Tmpfile: security.selinux = %q", v)
	}
	fs.Release(rootCtx, e.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh})

	// Create of an existing name (no O_EXCL) opens it and leaves its
	// label alone.
	if errno := fs.Create(withLabels(rootCtx, "security.selinux", "other"), fuseproto.RootID, "Create", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: 0o644}, &e, &o); errno != 0 {
		t.Fatalf("Create of an existing file: %v", errno)
	}
	fs.Release(rootCtx, e.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh})
	if v, _ := hostLabel(t, filepath.Join(dir, "Create"), "security.selinux"); v != label {
		t.Errorf("existing file relabelled: %q", v)
	}

	// A label the host refuses (larger than XATTR_SIZE_MAX) fails the
	// creation with its errno and leaves nothing behind.
	bad := withLabels(user, "security.selinux", strings.Repeat("x", fuseproto.MaxXattrSize+1))
	for op, mk := range creators {
		name := "bad-" + strings.ReplaceAll(op, " ", "-")
		if e := mk(fs, bad, name); e != unix.E2BIG {
			t.Errorf("%s with an oversized label: %v, want E2BIG", op, e)
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s with an oversized label left %s behind (%v)", op, name, err)
		}
	}
	if errno := fs.Tmpfile(bad, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, &e, &o); errno != unix.E2BIG {
		t.Errorf("Tmpfile with an oversized label: %v, want E2BIG", errno)
	}
}

// TestPreserveNoatime checks that O_NOATIME is dropped from the guest's
// opens unless Options.PreserveNoatime: a caller who does not own the file
// may not use it (open(2) answers EPERM), which matters where we open as
// the caller (Create of an existing name).
func TestPreserveNoatime(t *testing.T) {
	for _, preserve := range []bool{false, true} {
		fs, dir := newTestFS(t, Options{PreserveNoatime: preserve})
		writeFile(t, dir, "f", "data")
		os.Chmod(filepath.Join(dir, "f"), 0o666)
		node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
		fh := mustOpen(t, fs, node, unix.O_RDONLY|unix.O_NOATIME)
		h := fs.files.get(fh)
		fl, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
		fs.files.put(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := fl&unix.O_NOATIME != 0; got != preserve {
			t.Errorf("preserve=%v: Open keeps O_NOATIME %v", preserve, got)
		}
		release(t, fs, node, fh)

		var e fuseproto.EntryOut
		var o fuseproto.OpenOut
		errno := fs.Create(userCtx(1000, 1000), fuseproto.RootID, "f", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_NOATIME, Mode: 0o644}, &e, &o)
		if preserve {
			if errno != unix.EPERM {
				t.Errorf("preserve=true: Create of another's file with O_NOATIME: %v, want EPERM", errno)
			}
		} else if errno != 0 {
			t.Errorf("preserve=false: Create of another's file with O_NOATIME: %v", errno)
		} else {
			fs.Release(rootCtx, e.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh})
		}
	}
}
