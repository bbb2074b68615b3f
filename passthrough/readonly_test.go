package passthrough

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestReadOnly runs every modifying request against a read-only share.
func TestReadOnly(t *testing.T) {
	fs, dir := newTestFS(t, Options{ReadOnly: true, Xattr: true})
	writeFile(t, dir, "f", "data")
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, f, unix.O_RDONLY)
	defer release(t, fs, f, fh)
	ctx := rootCtx
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	var a fuseproto.AttrOut
	var src fuseproto.BytesSource
	src.Reset([]byte("x"))
	rows := map[string]func() fuseproto.Errno{
		"open O_WRONLY": func() fuseproto.Errno { return fs.Open(ctx, f, &fuseproto.OpenIn{Flags: unix.O_WRONLY}, &o) },
		"open O_RDWR":   func() fuseproto.Errno { return fs.Open(ctx, f, &fuseproto.OpenIn{Flags: unix.O_RDWR}, &o) },
		"open O_TRUNC": func() fuseproto.Errno {
			return fs.Open(ctx, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY | unix.O_TRUNC}, &o)
		},
		"open O_APPEND": func() fuseproto.Errno {
			return fs.Open(ctx, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY | unix.O_APPEND}, &o)
		},
		"open O_CREAT": func() fuseproto.Errno {
			return fs.Open(ctx, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY | unix.O_CREAT}, &o)
		},
		"create": func() fuseproto.Errno {
			return fs.Create(ctx, fuseproto.RootID, "n", &fuseproto.CreateIn{Flags: unix.O_RDONLY | unix.O_CREAT, Mode: 0o644}, &e, &o)
		},
		"tmpfile": func() fuseproto.Errno {
			return fs.Tmpfile(ctx, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o644}, &e, &o)
		},
		"mknod": func() fuseproto.Errno {
			return fs.Mknod(ctx, fuseproto.RootID, "n", &fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, &e)
		},
		"mkdir": func() fuseproto.Errno {
			return fs.Mkdir(ctx, fuseproto.RootID, "n", &fuseproto.MkdirIn{Mode: 0o755}, &e)
		},
		"symlink": func() fuseproto.Errno { return fs.Symlink(ctx, fuseproto.RootID, "n", "f", &e) },
		"link":    func() fuseproto.Errno { return fs.Link(ctx, f, fuseproto.RootID, "n", &e) },
		"unlink":  func() fuseproto.Errno { return fs.Unlink(ctx, fuseproto.RootID, "f") },
		"rmdir":   func() fuseproto.Errno { return fs.Rmdir(ctx, fuseproto.RootID, "d") },
		"rename":  func() fuseproto.Errno { return fs.Rename(ctx, fuseproto.RootID, "f", fuseproto.RootID, "g", 0) },
		"setattr mode": func() fuseproto.Errno {
			return fs.Setattr(ctx, f, &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}, &a)
		},
		"setattr size": func() fuseproto.Errno {
			return fs.Setattr(ctx, f, &fuseproto.SetattrIn{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: fh}, &a)
		},
		"setattr times": func() fuseproto.Errno {
			return fs.Setattr(ctx, f, &fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow}, &a)
		},
		"write": func() fuseproto.Errno {
			_, errno := fs.Write(ctx, f, &fuseproto.WriteIn{Fh: fh, Size: 1}, &src)
			return errno
		},
		"fallocate": func() fuseproto.Errno { return fs.Fallocate(ctx, f, &fuseproto.FallocateIn{Fh: fh, Length: 10}) },
		"copy_file_range": func() fuseproto.Errno {
			_, errno := fs.CopyFileRange(ctx, f, &fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: fh, OffOut: 10, Len: 1})
			return errno
		},
		"setxattr": func() fuseproto.Errno {
			return fs.Setxattr(ctx, f, "user.x", []byte("1"), &fuseproto.SetxattrIn{Size: 1})
		},
		"removexattr": func() fuseproto.Errno { return fs.Removexattr(ctx, f, "user.x") },
		"access W_OK": func() fuseproto.Errno { return fs.Access(ctx, f, unix.W_OK) },
		"ioctl SETFLAGS": func() fuseproto.Errno {
			_, _, errno := fs.Ioctl(ctx, f, &fuseproto.IoctlIn{Fh: fh, Cmd: iocSetFlags, InSize: 8}, make([]byte, 8), nil)
			return errno
		},
		"ioctl FSSETXATTR": func() fuseproto.Errno {
			_, _, errno := fs.Ioctl(ctx, f, &fuseproto.IoctlIn{Fh: fh, Cmd: iocFsSetXattr, InSize: 28}, make([]byte, 28), nil)
			return errno
		},
	}
	for name, op := range rows {
		if errno := op(); errno != unix.EROFS {
			t.Errorf("%s: %v, want EROFS", name, errno)
		}
	}
	// Reading still works, and nothing changed.
	var d fuseproto.BytesDest
	d.Reset(make([]byte, 8))
	if errno := fs.Read(ctx, f, &fuseproto.ReadIn{Fh: fh, Size: 8}, &d); errno != 0 || string(d.Bytes()) != "data" {
		t.Errorf("Read: %q, %v", d.Bytes(), errno)
	}
	if errno := fs.Access(ctx, f, unix.R_OK); errno != 0 {
		t.Errorf("Access R_OK: %v", errno)
	}
	// Shared read locks still work; write locks need a writable open.
	if errno := fs.Setlk(ctx, f, lkIn(fh, 1, unix.F_RDLCK, 0, offsetMax), false); errno != 0 {
		t.Errorf("read lock: %v", errno)
	}
	if errno := fs.Setlk(ctx, f, lkIn(fh, 1, unix.F_WRLCK, 0, offsetMax), false); errno != unix.EBADF {
		t.Errorf("write lock: %v, want EBADF", errno)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("share has %d entries, want 2", len(ents))
	}
	if st := lstat(t, filepath.Join(dir, "f")); st.Size != 4 || st.Mode&0o777 != 0o644 {
		t.Errorf("f changed: size %d mode %#o", st.Size, st.Mode&0o777)
	}
}

// TestSubmounts mounts a tmpfs inside the share and checks that with
// AnnounceSubmounts its root is flagged and gets its own inode identity.
func TestSubmounts(t *testing.T) {
	for _, announce := range []bool{false, true} {
		fs, dir := newTestFS(t, Options{AnnounceSubmounts: announce})
		mnt := filepath.Join(dir, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "plain"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
			t.Skipf("cannot mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
		writeFile(t, mnt, "inner", "")

		e := mustLookup(t, fs, fuseproto.RootID, "mnt")
		want := uint32(0)
		if announce {
			want = fuseproto.AttrSubmount
		}
		if e.Attr.Flags != want {
			t.Errorf("announce=%v: mount root flags %#x, want %#x", announce, e.Attr.Flags, want)
		}
		var a fuseproto.AttrOut
		if fs.Getattr(rootCtx, e.NodeID, &fuseproto.GetattrIn{}, &a); a.Attr.Flags != want {
			t.Errorf("announce=%v: getattr flags %#x", announce, a.Attr.Flags)
		}
		if p := mustLookup(t, fs, fuseproto.RootID, "plain"); p.Attr.Flags != 0 {
			t.Errorf("plain dir flags %#x", p.Attr.Flags)
		}
		if in := mustLookup(t, fs, e.NodeID, "inner"); in.Attr.Flags != 0 {
			t.Errorf("file in submount flags %#x", in.Attr.Flags)
		}
		// ".." of the mount root is the share root.
		if up := mustLookup(t, fs, e.NodeID, ".."); up.NodeID != fuseproto.RootID {
			t.Errorf(".. of mount root: node %d", up.NodeID)
		}
	}
}
