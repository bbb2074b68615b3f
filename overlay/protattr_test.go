package overlay

import (
	"encoding/binary"
	"slices"
	"testing"
	"unsafe"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// hostChattr sets the attribute flags of host path p (chattr).
func hostChattr(t testing.TB, p string, flags uint32) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	v := int32(flags)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocSetFlags, uintptr(unsafe.Pointer(&v))); e != 0 {
		testenv.Missing(t, "chattr %#x on %s: %v", flags, p, e)
	}
}

// protUnion builds a union on tmpfs whose lower holds an immutable file
// imm, an append-only file app, and directories idir (immutable) and adir
// (append-only) with a file f each.
func protUnion(t *testing.T) *union {
	u := newUnion(t, tmpfsDir(t), 1, true)
	hostFile(t, u.L(1, "imm"), "immutable")
	hostFile(t, u.L(1, "app"), "log:")
	hostFile(t, u.L(1, "idir/f"), "f")
	hostFile(t, u.L(1, "adir/f"), "f")
	hostChattr(t, u.L(1, "imm"), flImmutable)
	hostChattr(t, u.L(1, "app"), flAppend)
	hostChattr(t, u.L(1, "idir"), flImmutable)
	hostChattr(t, u.L(1, "adir"), flAppend)
	u.mount()
	return u
}

// TestProtattrRefuses checks that append-only and immutable lower objects
// refuse through the union what Linux refuses for such inodes
// (notify_change, may_open, may_delete, may_create, xattr_permission), and
// copy nothing up for it.
func TestProtattrRefuses(t *testing.T) {
	var a fuseproto.AttrOut
	var e fuseproto.EntryOut
	var o fuseproto.OpenOut
	tests := []struct {
		name string
		op   func(u *union) fuseproto.Errno
	}{
		{"open imm for appending", func(u *union) fuseproto.Errno {
			return u.fs.Open(rootCtx, u.node("imm"), &fuseproto.OpenIn{Flags: unix.O_WRONLY | unix.O_APPEND}, &o)
		}},
		{"chmod imm", func(u *union) fuseproto.Errno {
			return u.fs.Setattr(rootCtx, u.node("imm"), &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}, &a)
		}},
		{"truncate imm", func(u *union) fuseproto.Errno {
			return u.fs.Setattr(rootCtx, u.node("imm"), &fuseproto.SetattrIn{Valid: fuseproto.FattrSize}, &a)
		}},
		{"touch imm", func(u *union) fuseproto.Errno {
			return u.fs.Setattr(rootCtx, u.node("imm"), &fuseproto.SetattrIn{Valid: fuseproto.FattrMtimeNow}, &a)
		}},
		{"unlink imm", func(u *union) fuseproto.Errno { return u.fs.Unlink(rootCtx, fuseproto.RootID, "imm") }},
		{"rename imm", func(u *union) fuseproto.Errno {
			return u.fs.Rename(rootCtx, fuseproto.RootID, "imm", fuseproto.RootID, "imm2", 0)
		}},
		{"link imm", func(u *union) fuseproto.Errno { return u.fs.Link(rootCtx, u.node("imm"), fuseproto.RootID, "imm3", &e) }},
		{"setxattr imm", func(u *union) fuseproto.Errno {
			return u.fs.Setxattr(rootCtx, u.node("imm"), "user.x", []byte("x"), &fuseproto.SetxattrIn{})
		}},
		{"open app O_WRONLY", func(u *union) fuseproto.Errno {
			return u.fs.Open(rootCtx, u.node("app"), &fuseproto.OpenIn{Flags: unix.O_WRONLY}, &o)
		}},
		{"open app O_TRUNC", func(u *union) fuseproto.Errno {
			return u.fs.Open(rootCtx, u.node("app"), &fuseproto.OpenIn{Flags: unix.O_WRONLY | unix.O_APPEND | unix.O_TRUNC}, &o)
		}},
		{"truncate app", func(u *union) fuseproto.Errno {
			return u.fs.Setattr(rootCtx, u.node("app"), &fuseproto.SetattrIn{Valid: fuseproto.FattrSize, Size: 1}, &a)
		}},
		{"chmod app", func(u *union) fuseproto.Errno {
			return u.fs.Setattr(rootCtx, u.node("app"), &fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o600}, &a)
		}},
		{"unlink app", func(u *union) fuseproto.Errno { return u.fs.Unlink(rootCtx, fuseproto.RootID, "app") }},
		{"setxattr app", func(u *union) fuseproto.Errno {
			return u.fs.Setxattr(rootCtx, u.node("app"), "user.x", []byte("x"), &fuseproto.SetxattrIn{})
		}},
		// Directories: nothing is created in or removed from an
		// immutable one (may_create and may_delete need MAY_WRITE on it,
		// which IS_IMMUTABLE refuses), nothing removed from an
		// append-only one (may_delete: IS_APPEND(dir)).
		{"create in idir", func(u *union) fuseproto.Errno {
			return u.fs.Create(rootCtx, u.node("idir"), "new", &fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT, Mode: 0o644}, &e, &o)
		}},
		{"mkdir in idir", func(u *union) fuseproto.Errno {
			return u.fs.Mkdir(rootCtx, u.node("idir"), "new", &fuseproto.MkdirIn{Mode: 0o755}, &e)
		}},
		{"unlink in idir", func(u *union) fuseproto.Errno { return u.fs.Unlink(rootCtx, u.node("idir"), "f") }},
		{"rename out of idir", func(u *union) fuseproto.Errno {
			return u.fs.Rename(rootCtx, u.node("idir"), "f", fuseproto.RootID, "moved", 0)
		}},
		{"rename into idir", func(u *union) fuseproto.Errno {
			return u.fs.Rename(rootCtx, u.node("adir"), "f", u.node("idir"), "g", 0)
		}},
		{"unlink in adir", func(u *union) fuseproto.Errno { return u.fs.Unlink(rootCtx, u.node("adir"), "f") }},
		{"rename out of adir", func(u *union) fuseproto.Errno {
			return u.fs.Rename(rootCtx, u.node("adir"), "f", fuseproto.RootID, "moved", 0)
		}},
		{"rmdir idir", func(u *union) fuseproto.Errno { return u.fs.Rmdir(rootCtx, fuseproto.RootID, "idir") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := protUnion(t)
			if got := tc.op(u); got != unix.EPERM && !(tc.name == "rmdir idir" && got == unix.ENOTEMPTY) {
				t.Errorf("%v, want EPERM", got)
			}
			for _, p := range []string{"imm", "app", "idir/f", "adir/f", "idir/new", "moved", "idir/g"} {
				if _, ok := hostStat(t, u.U(p)); ok {
					t.Errorf("upper %s exists after the refused change", p)
				}
			}
			if got := u.ls("idir"); !slices.Equal(got, []string{"f"}) {
				t.Errorf("idir lists %q", got)
			}
			if got := u.ls("adir"); !slices.Equal(got, []string{"f"}) {
				t.Errorf("adir lists %q", got)
			}
		})
	}
}

// TestProtattrAllows checks what append-only objects allow, that
// FS_IOC_GETFLAGS shows the flags, that root lifts them with
// FS_IOC_SETFLAGS (a user may not), and that they live on as protattr on
// the upper.
func TestProtattrAllows(t *testing.T) {
	u := protUnion(t)
	fs := u.fs
	imm, app := u.node("imm"), u.node("app")
	if got := u.read("imm"); got != "immutable" {
		t.Errorf("imm reads %q", got)
	}
	fh := u.mustOpen(app, unix.O_WRONLY|unix.O_APPEND)
	u.writeAt(app, fh, 0, "entry")
	u.release(app, fh)
	if got := u.read("app"); got != "log:entry" {
		t.Errorf("app reads %q after an append", got)
	}
	if v, ok := hostXattr(u.U("app"), "trusted.overlay.protattr"); v != "a" {
		t.Errorf("copied-up app: protattr %q, %v, want a", v, ok)
	}
	if _, errno := u.create("adir/new", unix.O_RDWR); errno != 0 {
		t.Errorf("create in an append-only dir: %v", errno)
	}
	out := make([]byte, 4)
	if _, n, errno := fs.Ioctl(rootCtx, imm, &fuseproto.IoctlIn{Cmd: iocGetFlags, OutSize: 4}, nil, out); errno != 0 || n != 4 || binary.NativeEndian.Uint32(out)&flImmutable == 0 {
		t.Errorf("GETFLAGS imm: %#x, %d, %v", out, n, errno)
	}
	user := &fuseproto.Context{UID: 1000, GID: 1000}
	in := make([]byte, 4)
	if _, _, errno := fs.Ioctl(user, app, &fuseproto.IoctlIn{Cmd: iocSetFlags, InSize: 4}, in, nil); errno != unix.EPERM {
		t.Errorf("SETFLAGS by a user: %v, want EPERM", errno)
	}
	if _, _, errno := fs.Ioctl(rootCtx, imm, &fuseproto.IoctlIn{Cmd: iocSetFlags, InSize: 4}, in, nil); errno != 0 {
		t.Fatalf("SETFLAGS 0 on imm: %v", errno)
	}
	if _, ok := hostXattr(u.U("imm"), "trusted.overlay.protattr"); ok {
		t.Error("protattr left after clearing the flags")
	}
	u.write(imm, "IMMUTABLE")
	if e := u.unlink("imm"); e != 0 {
		t.Errorf("unlink after clearing the flags: %v", e)
	}
	u.remount()
	if got := u.read("app"); got != "log:entry" {
		t.Errorf("after remount app reads %q", got)
	}
	var o fuseproto.OpenOut
	if errno := u.fs.Open(rootCtx, u.node("app"), &fuseproto.OpenIn{Flags: unix.O_WRONLY}, &o); errno != unix.EPERM {
		t.Errorf("after remount: open app O_WRONLY: %v, want EPERM (protattr on the upper)", errno)
	}
	if u.exists("imm") {
		t.Error("imm is back after remount")
	}
}
