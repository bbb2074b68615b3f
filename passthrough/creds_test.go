package passthrough

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestCreateOwnedByCaller creates every kind of inode as uid 1000 and
// checks the host owner, and that root's creations stay root's.
func TestCreateOwnedByCaller(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	creators := []struct {
		name   string
		create func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno)
	}{
		{"create", func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno) {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			errno := fs.Create(ctx, fuseproto.RootID, name, &fuseproto.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT, Mode: unix.S_IFREG | 0o644}, &e, &o)
			if errno == 0 {
				fs.Release(ctx, e.NodeID, &fuseproto.ReleaseIn{Fh: o.Fh})
			}
			return e, errno
		}},
		{"mkdir", func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno) {
			var e fuseproto.EntryOut
			return e, fs.Mkdir(ctx, fuseproto.RootID, name, &fuseproto.MkdirIn{Mode: 0o755}, &e)
		}},
		{"mknod-reg", func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno) {
			var e fuseproto.EntryOut
			return e, fs.Mknod(ctx, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o600}, &e)
		}},
		{"mknod-fifo", func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno) {
			var e fuseproto.EntryOut
			return e, fs.Mknod(ctx, fuseproto.RootID, name, &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o600}, &e)
		}},
		{"symlink", func(ctx *fuseproto.Context, name string) (fuseproto.EntryOut, fuseproto.Errno) {
			var e fuseproto.EntryOut
			return e, fs.Symlink(ctx, fuseproto.RootID, name, "target", &e)
		}},
	}
	for _, c := range creators {
		for _, who := range []struct {
			uid, gid uint32
		}{{1000, 1000}, {1234, 4321}, {0, 0}} {
			name := c.name + "-" + itoa(int(who.uid))
			e, errno := c.create(userCtx(who.uid, who.gid), name)
			if errno != 0 {
				t.Fatalf("%s as %d: %v", c.name, who.uid, errno)
			}
			st := lstat(t, filepath.Join(dir, name))
			if st.Uid != who.uid || st.Gid != who.gid {
				t.Errorf("%s as %d:%d: host owner %d:%d", c.name, who.uid, who.gid, st.Uid, st.Gid)
			}
			if e.Attr.UID != who.uid || e.Attr.GID != who.gid {
				t.Errorf("%s as %d:%d: entry owner %d:%d", c.name, who.uid, who.gid, e.Attr.UID, e.Attr.GID)
			}
		}
	}

	// Tmpfile, linked in afterwards.
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	if errno := fs.Tmpfile(userCtx(1000, 1000), fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: unix.S_IFREG | 0o600}, &e, &o); errno != 0 {
		t.Fatalf("Tmpfile: %v", errno)
	}
	if e.Attr.UID != 1000 || e.Attr.GID != 1000 || e.Attr.Nlink != 0 {
		t.Errorf("Tmpfile entry owner %d:%d nlink %d, want 1000:1000 nlink 0", e.Attr.UID, e.Attr.GID, e.Attr.Nlink)
	}
	var le fuseproto.EntryOut
	if errno := fs.Link(rootCtx, e.NodeID, fuseproto.RootID, "tmp-linked", &le); errno != 0 {
		t.Fatalf("Link tmpfile: %v", errno)
	}
	if st := lstat(t, filepath.Join(dir, "tmp-linked")); st.Uid != 1000 {
		t.Errorf("linked tmpfile owner %d, want 1000", st.Uid)
	}
	release(t, fs, e.NodeID, o.Fh)
}

// TestCallerPermissions checks that the host enforces the caller's
// permissions (fsuid drops CAP_DAC_OVERRIDE) and supplementary groups.
func TestCallerPermissions(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	if err := os.Mkdir(filepath.Join(dir, "rootonly"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "group"), 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "group"), 0, 2000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "group"), 0o770); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "secret", "x")
	if err := os.Chmod(filepath.Join(dir, "secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootonly := mustLookup(t, fs, fuseproto.RootID, "rootonly").NodeID
	group := mustLookup(t, fs, fuseproto.RootID, "group").NodeID
	secret := mustLookup(t, fs, fuseproto.RootID, "secret").NodeID

	mkdir := func(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
		var e fuseproto.EntryOut
		return fs.Mkdir(ctx, parent, name, &fuseproto.MkdirIn{Mode: 0o755}, &e)
	}
	tests := []struct {
		name string
		got  fuseproto.Errno
		want fuseproto.Errno
	}{
		{"mkdir in root-owned 0755 as 1000", mkdir(userCtx(1000, 1000), rootonly, "a"), unix.EACCES},
		{"mkdir in root-owned 0755 as root", mkdir(rootCtx, rootonly, "a"), 0},
		{"mkdir in group dir without groups", mkdir(userCtx(1000, 1000), group, "b"), unix.EACCES},
		{"mkdir in group dir with group 2000", mkdir(userCtx(1000, 1000, 2000), group, "c"), 0},
		{"mkdir in group dir with fsgid 2000", mkdir(userCtx(1000, 2000), group, "d"), 0},
		{"access R_OK 0600 root file as 1000", fs.Access(userCtx(1000, 1000), secret, unix.R_OK), unix.EACCES},
		{"access R_OK 0600 root file as root", fs.Access(rootCtx, secret, unix.R_OK), 0},
		{"access F_OK as 1000", fs.Access(userCtx(1000, 1000), secret, 0), 0},
		{"access W_OK dir as 1000", fs.Access(userCtx(1000, 1000), rootonly, unix.W_OK), unix.EACCES},
		{"access X_OK dir as 1000", fs.Access(userCtx(1000, 1000), rootonly, unix.X_OK), 0},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestCreateModeIgnoresProcessUmask checks that the mode a creating request
// asks for, less the request's own umask, is what the host file gets, even
// when the process had a umask before New.
func TestCreateModeIgnoresProcessUmask(t *testing.T) {
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	fs, dir := newTestFS(t, Options{})
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	in := fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: unix.S_IFREG | 0o4777, Umask: 0o002}
	if errno := fs.Create(rootCtx, fuseproto.RootID, "suid", &in, &e, &o); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fs.Mkdir(rootCtx, fuseproto.RootID, "d", &fuseproto.MkdirIn{Mode: 0o1777}, &e); errno != 0 {
		t.Fatal(errno)
	}
	for name, want := range map[string]uint32{"suid": 0o4775, "d": 0o1777} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != want {
			t.Errorf("%s: mode %o, want %o", name, st.Mode&0o7777, want)
		}
	}
}
