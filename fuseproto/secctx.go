package fuseproto

import (
	"strings"
	"syscall"
)

// Security contexts (FUSE_SECURITY_CTX, protocol 7.36).
//
// When the session has InitSecurityCtx, the kernel asks its LSM for the
// label a new object would get (security_dentry_init_security) and sends it
// with every CREATE, MKNOD, MKDIR, SYMLINK and TMPFILE, so that the
// filesystem can store it as an xattr of the new object before the guest
// sees it. The block is
//
//	fuse_secctx_header {size, nr_secctx}
//	nr_secctx × { fuse_secctx {size, padding}, name "security.x\0", value (size bytes) }
//	zero padding to a multiple of 8
//
// where the header's size counts everything, header included. The kernel
// sends the header even without an LSM that labels (nr_secctx 0) and at
// most one context; it pads the context to 8 bytes, and we take each of
// several contexts to start 8-byte aligned after the previous one, as the
// kernel's size computation implies.
//
// Kernels before 7.38 append the block as one more argument, right after
// the name (SYMLINK: after the target), with total_extlen zero. From 7.38
// it is a request extension: the header doubles as a fuse_ext_header whose
// type is nr_secctx, which is why extension types 0..31 (MaxNrSecctx) are
// reserved for it.

// SecCtx is one security context sent with a creating request: the name of
// the xattr that holds it on the new object (the LSM's, "security.selinux"
// for SELinux) and its value, as the LSM produced it (SELinux counts the
// terminating NUL in the value).
type SecCtx struct {
	Name string
	// Value aliases the request buffer: it is valid only for the duration
	// of the call, like Setxattr's value.
	Value []byte
}

// secCtxPrefix is the xattr namespace of every LSM label. The kernel never
// sends another name; a name outside it is refused, so that a guest cannot
// use a security context to set an xattr that SETXATTR would check or
// translate (POSIX ACLs, trusted.*, user.*).
const secCtxPrefix = "security."

// secctxHeaderSize is sizeof(struct fuse_secctx_header), and of fuse_secctx.
const secctxHeaderSize = 8

// decodeSecCtx decodes the security context block b (starting with its
// fuse_secctx_header; bytes after header.size are ignored) and appends the
// contexts to dst. Anything malformed — a block shorter than its header
// says or not a multiple of 8, more than MaxNrSecctx contexts, a context
// whose size is zero or runs past the block, a name that is not
// NUL-terminated, empty, longer than XATTR_NAME_MAX or outside
// "security." — is EINVAL. Values alias b.
func decodeSecCtx(b []byte, dst []SecCtx) ([]SecCtx, Errno) {
	var h SecctxHeader
	if !Decode(b, &h) {
		return dst, syscall.EINVAL
	}
	if h.Size < secctxHeaderSize || h.Size%8 != 0 || uint64(h.Size) > uint64(len(b)) || h.NrSecctx > MaxNrSecctx {
		return dst, syscall.EINVAL
	}
	rec := b[secctxHeaderSize:h.Size]
	for range h.NrSecctx {
		var c Secctx
		if !Decode(rec, &c) {
			return dst, syscall.EINVAL
		}
		raw, rest, ok := cstring(rec[secctxHeaderSize:])
		if !ok || len(raw) > MaxXattrNameLen || len(raw) <= len(secCtxPrefix) {
			return dst, syscall.EINVAL
		}
		name := string(raw)
		if !strings.HasPrefix(name, secCtxPrefix) || c.Size == 0 || uint64(c.Size) > uint64(len(rest)) {
			return dst, syscall.EINVAL
		}
		dst = append(dst, SecCtx{Name: name, Value: rest[:c.Size:c.Size]})
		// The next context starts at the 8-byte boundary after this one.
		n := (uint64(secctxHeaderSize) + uint64(len(raw)) + 1 + uint64(c.Size) + 7) &^ 7
		rec = rec[min(n, uint64(len(rec))):]
	}
	return dst, OK
}
