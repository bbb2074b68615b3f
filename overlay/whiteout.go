package overlay

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Whiteouts and opaque directories, in the four forms real layers carry:
//
//   - a character device 0/0 (kernel overlayfs, in any layer);
//   - a zero-size regular file with the <prefix>overlay.whiteout xattr, in a
//     directory marked <prefix>overlay.opaque = "x" (kernel 6.7+ xattr
//     whiteouts; never written by overlayfs, made by layer tools);
//   - an OCI/AUFS ".wh.NAME" entry, which hides NAME in the layers below
//     its own (lower layers only);
//   - an OCI/AUFS ".wh..wh..opq" entry, which makes its directory opaque to
//     the layers below (lower layers only).
//
// A directory with <prefix>overlay.opaque = "y" is opaque. None of these is
// ever shown through the union; the upper layer is written only in the
// kernel's form (character device whiteouts and opaque = "y").

const (
	ociWhiteoutPrefix = ".wh."
	ociMetaPrefix     = ".wh..wh."
	ociOpaque         = ".wh..wh..opq"
)

// isCharWhiteout reports whether a statx result is a 0/0 character device.
func isCharWhiteout(st *unix.Statx_t) bool {
	return uint32(st.Mode)&unix.S_IFMT == unix.S_IFCHR && st.Rdev_major == 0 && st.Rdev_minor == 0
}

// isWhiteout reports whether the object open as fd (O_PATH) with
// attributes st is a whiteout, in a directory whose opaque xattr is "x"
// (xwh) or not.
func (fs *FS) isWhiteout(fd int, st *unix.Statx_t, xwh bool) bool {
	if isCharWhiteout(st) {
		return true
	}
	if xwh && uint32(st.Mode)&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
		_, ok := getx(fd, fs.x.whiteout)
		return ok
	}
	return false
}

// dirMarks are what a layer directory says about its entries and the
// layers below it.
type dirMarks struct {
	opaque bool // opaque = "y", or ".wh..wh..opq" in a lower layer
	xwh    bool // opaque = "x": zero-size files with the whiteout xattr are whiteouts
}

// marksOf reads the marks of the layer directory open as fd (O_PATH).
func (fs *FS) marksOf(fd int, l *layer) dirMarks {
	var m dirMarks
	if v, ok := getx(fd, fs.x.opaque); ok {
		switch v {
		case "y":
			m.opaque = true
		case "x":
			m.xwh = true
		}
	}
	if !l.upper && !m.opaque && fs.oci {
		var st unix.Stat_t
		if unix.Fstatat(fd, ociOpaque, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			m.opaque = true
		}
	}
	return m
}

// ociHidden reports whether name is an OCI/AUFS marker, never shown.
func ociHidden(name string) bool { return strings.HasPrefix(name, ociWhiteoutPrefix) }

// ociWhitedOut reports whether lower layer directory dirfd holds a
// ".wh.NAME" marker for name.
func ociWhitedOut(dirfd int, name string) bool {
	if len(name)+len(ociWhiteoutPrefix) > unix.NAME_MAX {
		return false
	}
	var st unix.Stat_t
	return unix.Fstatat(dirfd, ociWhiteoutPrefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}
