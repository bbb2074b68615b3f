package overlaytest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FixtureTime is the access and modification time every object of a
// freshly built layer carries, so a manifest can tell an object that kept
// its layer's times (copied up with them, or never touched) from one the
// overlay changed.
var FixtureTime = time.Date(2001, 2, 3, 4, 5, 6, 789000000, time.UTC)

// Xattr names of kernel overlayfs with trusted xattrs (the prefix every
// case here uses; tests run as root).
const (
	xattrOpaque   = "trusted.overlay.opaque"
	xattrWhiteout = "trusted.overlay.whiteout"
	xattrPrefix   = "trusted.overlay."
)

// OCI image layer whiteout markers (opencontainers/image-spec layer.md).
const (
	ociWhiteoutPrefix = ".wh."
	ociMetaPrefix     = ".wh..wh."
	ociOpaque         = ".wh..wh..opq"
)

// An Applier makes one change to a layer directory, in the style of
// containerd continuity's fs/fstest: a layer is the list of its appliers.
type Applier interface {
	// Apply makes the change below root, the layer directory.
	Apply(root string) error
}

// A Layer is a declarative layer: its appliers, applied in order to an
// empty directory.
type Layer []Applier

type applyFunc struct {
	desc string
	fn   func(root string) error
}

func (a applyFunc) Apply(root string) error {
	if err := a.fn(root); err != nil {
		return fmt.Errorf("%s: %w", a.desc, err)
	}
	return nil
}

func applier(desc string, fn func(root string) error) Applier {
	return applyFunc{desc: desc, fn: fn}
}

// join resolves a layer-relative slash path below root, creating the
// missing parent directories with mode 0755.
func join(root, path string, mkParents bool) (string, error) {
	p := filepath.Join(root, filepath.FromSlash(path))
	if mkParents {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
	}
	return p, nil
}

// File makes a regular file with the given content and permission bits
// (setuid, setgid and sticky included: mode is applied with chmod, so the
// umask does not matter).
func File(path, content string, mode uint32) Applier {
	return applier(fmt.Sprintf("file %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return err
		}
		return unix.Chmod(p, mode)
	})
}

// Dir makes a directory (and its missing parents) with the given mode.
func Dir(path string, mode uint32) Applier {
	return applier(fmt.Sprintf("dir %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return unix.Chmod(p, mode)
	})
}

// Symlink makes a symbolic link at path pointing at target.
func Symlink(path, target string) Applier {
	return applier(fmt.Sprintf("symlink %s -> %s", path, target), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		return os.Symlink(target, p)
	})
}

// Hardlink makes newpath a second name of the existing oldpath.
func Hardlink(oldpath, newpath string) Applier {
	return applier(fmt.Sprintf("hardlink %s -> %s", newpath, oldpath), func(root string) error {
		o, _ := join(root, oldpath, false)
		n, err := join(root, newpath, true)
		if err != nil {
			return err
		}
		return os.Link(o, n)
	})
}

// Whiteout makes the kernel's classic whiteout: a character device 0/0.
func Whiteout(path string) Applier {
	return applier(fmt.Sprintf("whiteout (char 0/0) %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		return unix.Mknod(p, unix.S_IFCHR, 0)
	})
}

// XattrWhiteout makes the newer whiteout form overlayfs only reads: a
// zero-size regular file carrying trusted.overlay.whiteout, in a parent
// marked trusted.overlay.opaque=x (unless it is already opaque=y).
func XattrWhiteout(path string) Applier {
	return applier(fmt.Sprintf("xattr whiteout %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
		if err := unix.Chmod(p, 0o644); err != nil {
			return err
		}
		if err := unix.Lsetxattr(p, xattrWhiteout, nil, 0); err != nil {
			return err
		}
		dir := filepath.Dir(p)
		if v, err := getxattr(dir, xattrOpaque); err == nil && v == "y" {
			return nil
		}
		return unix.Lsetxattr(dir, xattrOpaque, []byte("x"), 0)
	})
}

// OCIWhiteout makes an OCI image-layer whiteout: an empty file named
// .wh.<base> next to where path would be.
func OCIWhiteout(path string) Applier {
	return applier(fmt.Sprintf("OCI whiteout %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		marker := filepath.Join(filepath.Dir(p), ociWhiteoutPrefix+filepath.Base(p))
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
		return unix.Chmod(marker, 0o644)
	})
}

// OCIOpaque marks dir opaque the OCI way: an empty file .wh..wh..opq in it.
func OCIOpaque(dir string) Applier {
	return applier(fmt.Sprintf("OCI opaque %s", dir), func(root string) error {
		p, err := join(root, dir, true)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(p, ociOpaque), nil, 0o644)
	})
}

// Opaque marks the directory dir (made if missing) opaque the kernel way:
// trusted.overlay.opaque=y.
func Opaque(dir string) Applier {
	return applier(fmt.Sprintf("opaque %s", dir), func(root string) error {
		p, err := join(root, dir, true)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return unix.Lsetxattr(p, xattrOpaque, []byte("y"), 0)
	})
}

// Setxattr sets an extended attribute (any namespace; trusted.overlay.*
// names are how a layer says things to overlayfs).
func Setxattr(path, name, value string) Applier {
	return applier(fmt.Sprintf("setxattr %s %s", path, name), func(root string) error {
		p, _ := join(root, path, false)
		return unix.Lsetxattr(p, name, []byte(value), 0)
	})
}

// Chown sets the owner of path (not following a symlink).
func Chown(path string, uid, gid int) Applier {
	return applier(fmt.Sprintf("chown %s %d:%d", path, uid, gid), func(root string) error {
		p, _ := join(root, path, false)
		return os.Lchown(p, uid, gid)
	})
}

// Chmod sets the permission bits of path, setuid, setgid and sticky
// included.
func Chmod(path string, mode uint32) Applier {
	return applier(fmt.Sprintf("chmod %s %#o", path, mode), func(root string) error {
		p, _ := join(root, path, false)
		return unix.Chmod(p, mode)
	})
}

// Sparse makes a sparse file of the given size with data written only at
// the given offsets; everything else is a hole.
func Sparse(path string, size int64, data map[int64]string) Applier {
	return applier(fmt.Sprintf("sparse file %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			return err
		}
		for off, s := range data {
			if _, err := f.WriteAt([]byte(s), off); err != nil {
				return err
			}
		}
		return f.Chmod(0o644)
	})
}

// Fifo makes a named pipe.
func Fifo(path string, mode uint32) Applier {
	return applier(fmt.Sprintf("fifo %s", path), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		if err := unix.Mkfifo(p, mode); err != nil {
			return err
		}
		return unix.Chmod(p, mode)
	})
}

// Device makes a device node; typ is unix.S_IFCHR or unix.S_IFBLK.
func Device(path string, typ, mode uint32, major, minor uint32) Applier {
	return applier(fmt.Sprintf("device %s %d:%d", path, major, minor), func(root string) error {
		p, err := join(root, path, true)
		if err != nil {
			return err
		}
		if err := unix.Mknod(p, typ|mode, int(unix.Mkdev(major, minor))); err != nil {
			return err
		}
		return unix.Chmod(p, mode)
	})
}

// Inode flags of FS_IOC_GETFLAGS/SETFLAGS (linux/fs.h) that overlayfs
// copies up.
const (
	fsSyncFL      = 0x8
	fsImmutableFL = 0x10
	fsAppendFL    = 0x20
	fsNoatimeFL   = 0x80
)

// Flags sets inode flags (FS_APPEND_FL 0x20, FS_IMMUTABLE_FL 0x10, ...)
// on a regular file or directory with FS_IOC_SETFLAGS; apply it last, an
// immutable file takes no other change.
func Flags(path string, flags int) Applier {
	return applier(fmt.Sprintf("flags %s %#x", path, flags), func(root string) error {
		p, _ := join(root, path, false)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// Stamp the time first: utimes is refused once the flag is set.
		ts := []unix.Timespec{unix.NsecToTimespec(FixtureTime.UnixNano()), unix.NsecToTimespec(FixtureTime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0); err != nil {
			return err
		}
		return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags)
	})
}

// ManyFiles makes empty files dir/fmt.Sprintf(format, i) for i in
// [from, to).
func ManyFiles(dir, format string, from, to int) Applier {
	return applier(fmt.Sprintf("files %s/%s [%d,%d)", dir, format, from, to), func(root string) error {
		d, err := join(root, dir, true)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := from; i < to; i++ {
			fd, err := unix.Open(filepath.Join(d, fmt.Sprintf(format, i)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
		return nil
	})
}

// Build applies the layer to root (created if missing), then gives every
// object in it FixtureTime as access and modification time.
func (l Layer) Build(root string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, a := range l {
		if err := a.Apply(root); err != nil {
			return err
		}
	}
	return StampTimes(root)
}

// StampTimes sets the access and modification times of root and
// everything below it (symlinks themselves, not their targets) to
// FixtureTime.
func StampTimes(root string) error {
	ts := []unix.Timespec{unix.NsecToTimespec(FixtureTime.UnixNano()), unix.NsecToTimespec(FixtureTime.UnixNano())}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EPERM && hasProtFlags(p) {
			return nil // stamped by Flags already
		}
		return err
	})
}

// ConvertForKernel rewrites the OCI whiteout markers of a built layer the
// way containerd's OverlayConvertWhiteout does when it unpacks a layer for
// kernel overlayfs: .wh..wh..opq becomes trusted.overlay.opaque=y on its
// directory, .wh.NAME becomes a character device 0/0 named NAME with the
// marker's owner, and other .wh..wh.* (aufs metadata) are dropped. Every
// object gets FixtureTime again afterwards.
func ConvertForKernel(root string) error {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p == root || !strings.HasPrefix(name, ociWhiteoutPrefix) {
			return nil
		}
		dir := filepath.Dir(p)
		switch {
		case name == ociOpaque:
			if err := os.Remove(p); err != nil {
				return err
			}
			return unix.Lsetxattr(dir, xattrOpaque, []byte("y"), 0)
		case strings.HasPrefix(name, ociMetaPrefix):
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		target := filepath.Join(dir, strings.TrimPrefix(name, ociWhiteoutPrefix))
		if err := unix.Mknod(target, unix.S_IFCHR, 0); err != nil {
			return err
		}
		return unix.Lchown(target, int(st.Uid), int(st.Gid))
	})
	if err != nil {
		return fmt.Errorf("converting OCI whiteouts in %s: %w", root, err)
	}
	// The directories changed and the whiteouts made get FixtureTime.
	return StampTimes(root)
}

// HasOCIMarkers reports whether a layer's appliers include OCI markers.
func (l Layer) HasOCIMarkers() bool {
	for _, a := range l {
		if f, ok := a.(applyFunc); ok && strings.HasPrefix(f.desc, "OCI ") {
			return true
		}
	}
	return false
}

// hasProtFlags reports whether path is append-only or immutable.
func hasProtFlags(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	f, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	return err == nil && f&(fsAppendFL|fsImmutableFL) != 0
}

func getxattr(path, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if err == unix.ERANGE {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
