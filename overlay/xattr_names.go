package overlay

import (
	"strings"

	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// The overlay's private xattrs, after the prefix ("trusted.overlay." or,
// with userxattr, "user.overlay."). Their meanings are kernel overlayfs's.
const (
	xOpaque   = "opaque"   // "y": lower directories are not merged; "x": holds xattr whiteouts
	xRedirect = "redirect" // a moved directory's path in the lowers
	xOrigin   = "origin"   // the lower object a copy-up came from (struct ovl_fb)
	xImpure   = "impure"   // "y": holds copied-up or moved entries
	xNlink    = "nlink"    // overlay link count of an indexed inode, "U%+d"
	xMetacopy = "metacopy" // data is still in the lower
	xWhiteout = "whiteout" // on a zero-size file: a whiteout
)

// names holds the full private xattr names for one prefix.
type names struct {
	prefix                                                                string // "trusted.overlay." or "user.overlay."
	opaque, redirect, origin, impure, nlink, metacopy, whiteout, protattr string
}

func newNames(user bool) names {
	p := "trusted.overlay."
	if user {
		p = "user.overlay."
	}
	return names{
		prefix:   p,
		opaque:   p + xOpaque,
		redirect: p + xRedirect,
		origin:   p + xOrigin,
		impure:   p + xImpure,
		nlink:    p + xNlink,
		metacopy: p + xMetacopy,
		whiteout: p + xWhiteout,
		protattr: p + xProtattr,
	}
}

// isOwn reports whether an xattr name is in the overlay's own namespace.
func (n *names) isOwn(name string) bool { return strings.HasPrefix(name, n.prefix) }

// isPrivate reports whether a name found on a layer is one of the overlay's
// private xattrs: in its namespace and not escaped ("<prefix>overlay.*" is
// an escaped name, shown through the union with one "overlay." removed).
func (n *names) isPrivate(name string) bool {
	return n.isOwn(name) && !strings.HasPrefix(name[len(n.prefix):], "overlay.")
}

// escape maps a name the guest uses to the name stored on the layer: names
// in the overlay's namespace gain one "overlay." so that they never collide
// with the private ones, as the kernel nests overlays.
func (n *names) escape(name string) string {
	if n.isOwn(name) {
		return n.prefix + "overlay." + name[len(n.prefix):]
	}
	return name
}

// unescape maps a name listed on a layer to the name the guest sees, and
// reports false for private names, which are hidden.
func (n *names) unescape(name string) (string, bool) {
	if !n.isOwn(name) {
		return name, true
	}
	rest := name[len(n.prefix):]
	if !strings.HasPrefix(rest, "overlay.") {
		return "", false
	}
	return n.prefix + rest[len("overlay."):], true
}

// getx reads a private xattr of the inode open as fd (O_PATH is fine)
// into a small string; "" with ok false when it is absent or unreadable.
func getx(fd int, name string) (string, bool) {
	var buf [512]byte
	n, err := hostfs.Getxattr(fd, name, buf[:])
	if err == unix.ERANGE {
		big := make([]byte, 64<<10)
		n, err = hostfs.Getxattr(fd, name, big)
		if err != nil {
			return "", false
		}
		return string(big[:n]), true
	}
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

// setx sets a private xattr on the inode open as fd.
func setx(fd int, name, value string) error {
	return hostfs.Setxattr(fd, name, []byte(value), 0)
}

// removex removes a private xattr, ignoring its absence.
func removex(fd int, name string) error {
	err := hostfs.Removexattr(fd, name)
	if err == unix.ENODATA {
		return nil
	}
	return err
}
