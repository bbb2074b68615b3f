package overlay

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// Security labels (fuseproto.Context.SecCtx) are stored on the new upper
// object like any xattr the guest sets (names in the overlay's namespace
// escaped), with the daemon's credentials, as passthrough stores them.
// Over a whiteout the object is labelled in the work directory before it
// is renamed into place, so it never appears unlabelled; elsewhere it is
// labelled right after creation and removed again if that fails.

// setSecCtx sets the security contexts of ctx on the upper object fd.
func (fs *FS) setSecCtx(ctx *fuseproto.Context, fd int) error {
	for _, c := range ctx.SecCtx {
		if err := hostfs.Setxattr(fd, fs.x.escape(c.Name), c.Value, 0); err != nil {
			return err
		}
	}
	return nil
}

// labelNew labels dirfd/name, just made by the caller's request, and
// removes it if that fails.
func (fs *FS) labelNew(ctx *fuseproto.Context, dirfd int, name string) error {
	if len(ctx.SecCtx) == 0 {
		return nil
	}
	fd, err := fs.res.OpenBeneath(dirfd, name, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := fs.setSecCtx(ctx, fd); err != nil {
		hostfs.UnlinkIfSame(dirfd, name, fd)
		return err
	}
	return nil
}
