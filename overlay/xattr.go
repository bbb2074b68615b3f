package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Extended attributes through the union, as kernel overlayfs shows them:
// read from the topmost object; a change copies a lower object up (its
// metadata only, with metacopy=on) and is made on the upper. The overlay's
// private xattrs are never listed, and names in its namespace are escaped
// on the way down ("<prefix>overlay.X" is stored as
// "<prefix>overlay.overlay.X"), so the guest can neither read nor forge
// whiteouts, opaque marks or redirects, and an overlay nested in the guest
// still works.

// Setxattr sets an extended attribute on the object's upper.
func (fs *FS) Setxattr(ctx *fuseproto.Context, node uint64, name string, value []byte, in *fuseproto.SetxattrIn) fuseproto.Errno {
	if !fs.opts.Xattr {
		return unix.ENOSYS
	}
	if fs.readOnly() {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if fs.protected(ino) != 0 {
		return unix.EPERM
	}
	if e := fs.copyUp(ino, true); e != 0 {
		return e
	}
	ino.mu.Lock()
	defer ino.mu.Unlock()
	return errno(hostfs.Setxattr(ino.upper, fs.x.escape(name), value, int(in.Flags)))
}

// Getxattr reads an extended attribute of the topmost object.
func (fs *FS) Getxattr(ctx *fuseproto.Context, node uint64, name string, dst []byte) (int, fuseproto.Errno) {
	if !fs.opts.Xattr {
		return 0, unix.ENOSYS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	if len(dst) == 0 {
		dst = nil
	}
	ino.mu.Lock()
	n, err := hostfs.Getxattr(ino.top(), fs.x.escape(name), dst)
	ino.mu.Unlock()
	if err != nil {
		return 0, errno(err)
	}
	return n, 0
}

// Listxattr lists the extended attributes of the topmost object, without
// the private ones and with escaped names unescaped.
func (fs *FS) Listxattr(ctx *fuseproto.Context, node uint64, dst []byte) (int, fuseproto.Errno) {
	if !fs.opts.Xattr {
		return 0, unix.ENOSYS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, e
	}
	defer fs.inodes.put(ino)
	ino.mu.Lock()
	names, err := listx(ino.top())
	ino.mu.Unlock()
	if err != nil {
		return 0, errno(err)
	}
	n := 0
	for _, name := range names {
		shown, ok := fs.x.unescape(name)
		if !ok {
			continue
		}
		if len(dst) > 0 {
			if n+len(shown)+1 > len(dst) {
				return 0, unix.ERANGE
			}
			copy(dst[n:], shown)
			dst[n+len(shown)] = 0
		}
		n += len(shown) + 1
	}
	return n, 0
}

// Removexattr removes an extended attribute from the object's upper.
func (fs *FS) Removexattr(ctx *fuseproto.Context, node uint64, name string) fuseproto.Errno {
	if !fs.opts.Xattr {
		return unix.ENOSYS
	}
	if fs.readOnly() {
		return unix.EROFS
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	// Removing a name the object does not have changes nothing and
	// copies nothing up.
	ino.mu.Lock()
	_, err := hostfs.Getxattr(ino.top(), fs.x.escape(name), nil)
	ino.mu.Unlock()
	if err != nil {
		return errno(err)
	}
	if fs.protected(ino) != 0 {
		return unix.EPERM
	}
	if e := fs.copyUp(ino, true); e != 0 {
		return e
	}
	ino.mu.Lock()
	defer ino.mu.Unlock()
	return errno(hostfs.Removexattr(ino.upper, fs.x.escape(name)))
}
