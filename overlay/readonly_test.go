package overlay

import (
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestReadOnly checks that a union without an upper (and one served with
// Options.ReadOnly) answers EROFS to every change and still serves reads.
func TestReadOnly(t *testing.T) {
	for _, mode := range []string{"no upper", "Options.ReadOnly"} {
		t.Run(mode, func(t *testing.T) {
			u := newUnion(t, "", 2, mode != "no upper")
			u.opts.ReadOnly = mode != "no upper"
			hostFile(t, u.L(1, "f"), "data")
			hostFile(t, u.L(2, "g"), "gdata")
			hostFile(t, u.L(2, "d/x"), "x")
			hostDir(t, u.L(1, "empty"))
			hostSetxattr(t, u.L(1, "f"), "user.a", "v")
			fs := u.mount()
			f, d := u.node("f"), u.node("d")
			fh := u.mustOpen(f, unix.O_RDONLY)
			defer u.release(f, fh)
			var e fuseproto.EntryOut
			var o fuseproto.OpenOut
			var a fuseproto.AttrOut
			ops := map[string]func() fuseproto.Errno{
				"Setattr mode": func() fuseproto.Errno {
					return fs.Setattr(rootCtx, f, &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}, &a)
				},
				"Setattr size": func() fuseproto.Errno {
					return fs.Setattr(rootCtx, f, &fuseproto.SetattrIn{Valid: fuseproto.FattrSize}, &a)
				},
				"Setattr times": func() fuseproto.Errno {
					return fs.Setattr(rootCtx, d, &fuseproto.SetattrIn{Valid: fuseproto.FattrMtimeNow}, &a)
				},
				"Open O_WRONLY": func() fuseproto.Errno { return fs.Open(rootCtx, f, &fuseproto.OpenIn{Flags: unix.O_WRONLY}, &o) },
				"Open O_RDWR":   func() fuseproto.Errno { return fs.Open(rootCtx, f, &fuseproto.OpenIn{Flags: unix.O_RDWR}, &o) },
				"Open O_TRUNC": func() fuseproto.Errno {
					return fs.Open(rootCtx, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY | unix.O_TRUNC}, &o)
				},
				"Write": func() fuseproto.Errno {
					var s fuseproto.BytesSource
					s.Reset([]byte("x"))
					_, e := fs.Write(rootCtx, f, &fuseproto.WriteIn{Fh: fh, Size: 1}, &s)
					return e
				},
				"Fallocate": func() fuseproto.Errno {
					return fs.Fallocate(rootCtx, f, &fuseproto.FallocateIn{Fh: fh, Length: 4096})
				},
				"CopyFileRange": func() fuseproto.Errno {
					_, e := fs.CopyFileRange(rootCtx, f, &fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: fh, Len: 1, OffOut: 10})
					return e
				},
				"Create": func() fuseproto.Errno {
					return fs.Create(rootCtx, fuseproto.RootID, "new", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: 0o644}, &e, &o)
				},
				"Create existing": func() fuseproto.Errno {
					return fs.Create(rootCtx, fuseproto.RootID, "f", &fuseproto.CreateIn{Flags: unix.O_RDONLY | unix.O_CREAT, Mode: 0o644}, &e, &o)
				},
				"Tmpfile": func() fuseproto.Errno {
					return fs.Tmpfile(rootCtx, fuseproto.RootID, &fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o644}, &e, &o)
				},
				"Mknod": func() fuseproto.Errno {
					return fs.Mknod(rootCtx, fuseproto.RootID, "p", &fuseproto.MknodIn{Mode: unix.S_IFIFO | 0o644}, &e)
				},
				"Mkdir":   func() fuseproto.Errno { return fs.Mkdir(rootCtx, d, "sub", &fuseproto.MkdirIn{Mode: 0o755}, &e) },
				"Symlink": func() fuseproto.Errno { return fs.Symlink(rootCtx, fuseproto.RootID, "s", "f", &e) },
				"Link":    func() fuseproto.Errno { return fs.Link(rootCtx, f, d, "f2", &e) },
				"Unlink":  func() fuseproto.Errno { return fs.Unlink(rootCtx, fuseproto.RootID, "f") },
				"Unlink lower2": func() fuseproto.Errno {
					return fs.Unlink(rootCtx, d, "x")
				},
				"Rmdir":        func() fuseproto.Errno { return fs.Rmdir(rootCtx, fuseproto.RootID, "empty") },
				"Rename":       func() fuseproto.Errno { return fs.Rename(rootCtx, fuseproto.RootID, "f", fuseproto.RootID, "f3", 0) },
				"Rename dir":   func() fuseproto.Errno { return fs.Rename(rootCtx, fuseproto.RootID, "d", fuseproto.RootID, "d2", 0) },
				"Setxattr":     func() fuseproto.Errno { return fs.Setxattr(rootCtx, f, "user.b", []byte("x"), &fuseproto.SetxattrIn{}) },
				"Removexattr":  func() fuseproto.Errno { return fs.Removexattr(rootCtx, f, "user.a") },
				"Access W_OK":  func() fuseproto.Errno { return fs.Access(rootCtx, f, unix.W_OK) },
				"Access dir W": func() fuseproto.Errno { return fs.Access(rootCtx, d, unix.W_OK) },
			}
			for name, op := range ops {
				if got := op(); got != unix.EROFS {
					t.Errorf("%s: %v, want EROFS", name, got)
				}
			}
			// Reads work.
			if got := u.readAt(f, fh, 0, 100); got != "data" {
				t.Errorf("Read: %q", got)
			}
			if got := u.read("d/x"); got != "x" {
				t.Errorf("d/x reads %q", got)
			}
			if got := u.ls("/"); len(got) != 4 {
				t.Errorf("root lists %q", got)
			}
			if v, e := u.getxattr(f, "user.a"); e != 0 || v != "v" {
				t.Errorf("Getxattr: %q, %v", v, e)
			}
			if e := fs.Access(rootCtx, f, unix.R_OK); e != 0 {
				t.Errorf("Access R_OK: %v", e)
			}
			var sf fuseproto.StatfsOut
			if e := fs.Statfs(rootCtx, fuseproto.RootID, &sf); e != 0 || sf.St.Blocks == 0 {
				t.Errorf("Statfs: %+v, %v", sf, e)
			}
			if u.upper != "" {
				if got := hostNames(t, u.upper); len(got) != 0 {
					t.Errorf("the upper of a read-only union holds %q", got)
				}
			}
		})
	}
}
