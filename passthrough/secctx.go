package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
)

// Security labels (--security-label, fuseproto.InitSecurityCtx): the guest
// kernel sends the label its LSM gives a new object with each creating
// request (fuseproto.Context.SecCtx), and we store it as that xattr of the
// host object right after creating it, before the reply makes the object
// visible to the guest. As in virtiofsd, the xattr is set with the
// daemon's credentials (the caller could not set security.* without
// CAP_SYS_ADMIN), with flags 0 (replacing a label the host's own LSM may
// have given), and when it cannot be set the new object is removed again
// and the creation fails with the setxattr error. On a host without an LSM
// that owns the name, setting security.* needs CAP_SYS_ADMIN; virtiofsd
// recommends mapping the name into trusted.* (--xattrmap), which needs it
// too.

// setSecCtx sets the security contexts of ctx on the object fd refers to
// (any descriptor, O_PATH included).
func setSecCtx(ctx *fuseproto.Context, fd int) error {
	for _, c := range ctx.SecCtx {
		if err := hostfs.Setxattr(fd, c.Name, c.Value, 0); err != nil {
			return err
		}
	}
	return nil
}
