package passthrough

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// escapeTree is the share every escape row runs against:
//
//	file          regular file
//	dir/          directory
//	up   -> /     symlink to the host root
//	etc  -> /etc  symlink to a host directory
//	dotdot -> ..  symlink climbing out
//	passwd -> /etc/passwd
//	null          character device 1:3 (a host device node)
//	fifo          fifo
//
// and outside the share a sibling "victim" file.
func escapeTree(t *testing.T) (*FS, string, string) {
	t.Helper()
	needRoot(t)
	top := t.TempDir()
	dir := filepath.Join(top, "share")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	writeFile(t, top, "victim", "outside")
	writeFile(t, dir, "file", "inside")
	if err := os.Mkdir(filepath.Join(dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"up": "/", "etc": "/etc", "dotdot": "..", "passwd": "/etc/passwd", "victimlink": "../victim"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	fs, err := New(dir, Options{Xattr: true, InodeFileHandles: suiteHandles})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs, dir, top
}

func TestEscapes(t *testing.T) {
	t.Run("openat2", func(t *testing.T) { testEscapes(t, false) })
	t.Run("openat fallback", func(t *testing.T) { testEscapes(t, true) })
}

func testEscapes(t *testing.T, noOpenat2 bool) {
	fs, dir, top := escapeTree(t)
	if noOpenat2 {
		fs.beneath.DisableOpenat2()
	}
	rootSt := lstat(t, dir)
	node := func(name string) uint64 { return mustLookup(t, fs, fuseproto.RootID, name).NodeID }

	tests := []struct {
		name    string
		op      func() fuseproto.Errno
		wantErr fuseproto.Errno
	}{
		{"lookup .. of root is root", func() fuseproto.Errno {
			e := mustLookup(t, fs, fuseproto.RootID, "..")
			if e.NodeID != fuseproto.RootID || e.Attr.Ino != rootSt.Ino {
				t.Errorf(".. of root: node %d ino %d", e.NodeID, e.Attr.Ino)
			}
			return 0
		}, 0},
		{"lookup . of root is root", func() fuseproto.Errno {
			if e := mustLookup(t, fs, fuseproto.RootID, "."); e.NodeID != fuseproto.RootID {
				t.Errorf(". of root: node %d", e.NodeID)
			}
			return 0
		}, 0},
		{"lookup .. of dir is root", func() fuseproto.Errno {
			if e := mustLookup(t, fs, node("dir"), ".."); e.NodeID != fuseproto.RootID {
				t.Errorf(".. of dir: node %d", e.NodeID)
			}
			return 0
		}, 0},
		{"lookup symlink to / is the symlink", func() fuseproto.Errno {
			e := mustLookup(t, fs, fuseproto.RootID, "up")
			if e.Attr.Mode&unix.S_IFMT != unix.S_IFLNK {
				t.Errorf("lookup up: mode %#o, want a symlink", e.Attr.Mode)
			}
			return 0
		}, 0},
		{"lookup through symlink to /", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Lookup(rootCtx, node("up"), "etc", &e)
		}, unix.ENOTDIR},
		{"lookup through symlink to /etc", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Lookup(rootCtx, node("etc"), "passwd", &e)
		}, unix.ENOTDIR},
		{"lookup through symlink to ..", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Lookup(rootCtx, node("dotdot"), "victim", &e)
		}, unix.ENOTDIR},
		{"lookup name with slash", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Lookup(rootCtx, fuseproto.RootID, "../victim", &e)
		}, unix.EINVAL},
		{"open symlink to /etc/passwd", func() fuseproto.Errno {
			var o fuseproto.OpenOut
			return fs.Open(rootCtx, node("passwd"), &fuseproto.OpenIn{Flags: unix.O_RDONLY}, &o)
		}, unix.ELOOP},
		{"open symlink for writing", func() fuseproto.Errno {
			var o fuseproto.OpenOut
			return fs.Open(rootCtx, node("victimlink"), &fuseproto.OpenIn{Flags: unix.O_WRONLY | unix.O_TRUNC}, &o)
		}, unix.ELOOP},
		{"open device node", func() fuseproto.Errno {
			var o fuseproto.OpenOut
			return fs.Open(rootCtx, node("null"), &fuseproto.OpenIn{Flags: unix.O_RDWR}, &o)
		}, unix.ENXIO},
		{"open fifo", func() fuseproto.Errno {
			var o fuseproto.OpenOut
			return fs.Open(rootCtx, node("fifo"), &fuseproto.OpenIn{Flags: unix.O_RDONLY}, &o)
		}, unix.ENXIO},
		{"opendir symlink to /", func() fuseproto.Errno {
			var o fuseproto.OpenOut
			return fs.Opendir(rootCtx, node("up"), &fuseproto.OpenIn{}, &o)
		}, unix.ENOTDIR},
		{"create over symlink", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			return fs.Create(rootCtx, fuseproto.RootID, "victimlink", &fuseproto.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC, Mode: 0o644}, &e, &o)
		}, unix.ELOOP},
		{"create O_EXCL over symlink", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			return fs.Create(rootCtx, fuseproto.RootID, "victimlink", &fuseproto.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL, Mode: 0o644}, &e, &o)
		}, unix.EEXIST},
		{"create over device node", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			return fs.Create(rootCtx, fuseproto.RootID, "null", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: 0o644}, &e, &o)
		}, unix.ENXIO},
		{"create over fifo", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			return fs.Create(rootCtx, fuseproto.RootID, "fifo", &fuseproto.CreateIn{Flags: unix.O_RDONLY | unix.O_CREAT, Mode: 0o644}, &e, &o)
		}, unix.ENXIO},
		{"create inside symlink to /etc", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			return fs.Create(rootCtx, node("etc"), "evil", &fuseproto.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT, Mode: 0o644}, &e, &o)
		}, unix.ENOTDIR},
		{"mkdir inside symlink to /", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Mkdir(rootCtx, node("up"), "evil", &fuseproto.MkdirIn{Mode: 0o755}, &e)
		}, unix.ENOTDIR},
		{"mkdir with .. name", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Mkdir(rootCtx, fuseproto.RootID, "..", &fuseproto.MkdirIn{Mode: 0o755}, &e)
		}, unix.EINVAL},
		{"mknod with slash", func() fuseproto.Errno {
			var e fuseproto.EntryOut
			return fs.Mknod(rootCtx, fuseproto.RootID, "../evil", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
		}, unix.EINVAL},
		{"unlink through ..", func() fuseproto.Errno {
			return fs.Unlink(rootCtx, fuseproto.RootID, "../victim")
		}, unix.EINVAL},
		{"rename out of the share", func() fuseproto.Errno {
			return fs.Rename(rootCtx, fuseproto.RootID, "file", fuseproto.RootID, "../moved", 0)
		}, unix.EINVAL},
		{"setattr size through symlink", func() fuseproto.Errno {
			var a fuseproto.AttrOut
			return fs.Setattr(rootCtx, node("victimlink"), &fuseproto.SetattrIn{Valid: fuseproto.FattrSize}, &a)
		}, unix.EINVAL},
		{"setattr mode of symlink", func() fuseproto.Errno {
			var a fuseproto.AttrOut
			return fs.Setattr(rootCtx, node("passwd"), &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o777}, &a)
		}, unix.EOPNOTSUPP},
		{"setxattr on symlink hits the link", func() fuseproto.Errno {
			return fs.Setxattr(rootCtx, node("victimlink"), "trusted.t", []byte("v"), &fuseproto.SetxattrIn{})
		}, 0},
		{"readlink gives the target unresolved", func() fuseproto.Errno {
			buf := make([]byte, 64)
			n, errno := fs.Readlink(rootCtx, node("up"), buf)
			if errno == 0 && string(buf[:n]) != "/" {
				t.Errorf("readlink up = %q", buf[:n])
			}
			return errno
		}, 0},
		{"chown symlink changes the link only", func() fuseproto.Errno {
			var a fuseproto.AttrOut
			errno := fs.Setattr(rootCtx, node("passwd"), &fuseproto.SetattrIn{Valid: fuseproto.FattrUID, UID: 4242}, &a)
			if errno == 0 && a.Attr.UID != 4242 {
				t.Errorf("chown symlink: uid %d", a.Attr.UID)
			}
			return errno
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.op(); got != tc.wantErr {
				t.Errorf("got %v, want %v", got, tc.wantErr)
			}
		})
	}

	// Nothing outside the share changed.
	if b, err := os.ReadFile(filepath.Join(top, "victim")); err != nil || string(b) != "outside" {
		t.Errorf("victim: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(top, "moved")); err == nil {
		t.Error("rename escaped the share")
	}
	if st := lstat(t, "/etc/passwd"); st.Uid != 0 {
		t.Errorf("/etc/passwd owner changed to %d", st.Uid)
	}
	if _, err := os.Lstat("/etc/evil"); err == nil {
		t.Error("/etc/evil was created")
	}
	if _, err := unix.Getxattr(filepath.Join(top, "victim"), "trusted.t", nil); err == nil {
		t.Error("xattr landed on the symlink target")
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "victimlink"), "trusted.t", nil); err != nil {
		t.Errorf("xattr not on the symlink itself: %v", err)
	}
}
