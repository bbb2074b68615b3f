package fuseproto

import (
	"syscall"
)

// IDMap translates user and group ids between the FUSE client (the guest)
// and the host, for Options.IDMap. The Server applies it at its edge, so
// that a FileSystem sees only host ids:
//
//   - the caller's uid, gid and supplementary groups of every request are
//     mapped to the host before the FileSystem sees them; a request whose
//     uid or gid the map forbids runs as OverflowID, and if it creates
//     something (CREATE, MKNOD, MKDIR, SYMLINK, LINK, TMPFILE, RENAME) or
//     changes attributes (SETATTR, SETXATTR, REMOVEXATTR) it is answered
//     EPERM without reaching the FileSystem; forbidden supplementary
//     groups are left out;
//   - SETATTR's new owner and group are mapped to the host (forbidden:
//     EPERM);
//   - the owner and group of every attribute reply (LOOKUP, GETATTR,
//     SETATTR, the creating requests, READDIRPLUS, STATX) are mapped back;
//   - the ids inside POSIX ACL xattrs are mapped both ways.
//
// Implementations must be safe for concurrent use and should not allocate.
type IDMap interface {
	// UIDToHost and GIDToHost map a guest id to the host; ok false when
	// the guest may not use it.
	UIDToHost(uid uint32) (host uint32, ok bool)
	GIDToHost(gid uint32) (host uint32, ok bool)
	// UIDToGuest and GIDToGuest map a host id to the guest.
	UIDToGuest(uid uint32) uint32
	GIDToGuest(gid uint32) uint32
	// ACLToHost and ACLToGuest rewrite the ids in a POSIX ACL xattr value
	// in place; an error means the value is malformed (EINVAL) or, for
	// ACLToHost, names a forbidden id (EPERM: return syscall.EPERM).
	ACLToHost(value []byte) error
	ACLToGuest(value []byte) error
}

// InvalidUIDGID is FUSE_INVALID_UIDGID, the uid and gid of a request
// that names no caller.
const InvalidUIDGID = ^uint32(0)

// OverflowID is the id a forbidden caller runs as: the kernel's overflowuid
// and overflowgid, "nobody".
const OverflowID = 65534

// mapCaller maps the request's caller to the host; it records in
// st.forbidden whether the map refused its uid or gid.
func (s *Server) mapCaller(st *request) {
	m := s.opts.IDMap
	c := &st.ctx
	okU, okG := true, true
	// FUSE_INVALID_UIDGID: the kernel names no caller (a request that
	// creates nothing, under FUSE_ALLOW_IDMAP); there is nothing to map.
	if c.UID != InvalidUIDGID {
		c.UID, okU = m.UIDToHost(c.UID)
	}
	if c.GID != InvalidUIDGID {
		c.GID, okG = m.GIDToHost(c.GID)
	}
	st.forbidden = !okU || !okG
	if st.forbidden {
		if !okU {
			c.UID = OverflowID
		}
		if !okG {
			c.GID = OverflowID
		}
	}
	if len(c.SuppGroups) > 0 {
		kept := c.SuppGroups[:0]
		for _, g := range c.SuppGroups {
			if h, ok := m.GIDToHost(g); ok {
				kept = append(kept, h)
			}
		}
		c.SuppGroups = kept
	}
}

// refuseForbidden answers EPERM and returns true when the map forbids the
// caller of a request that creates or changes something.
func (s *Server) refuseForbidden(st *request) bool {
	if !st.forbidden {
		return false
	}
	switch st.hdr.Opcode {
	case OpCreate, OpMknod, OpMkdir, OpSymlink, OpLink, OpTmpfile, OpRename, OpRename2,
		OpSetattr, OpSetxattr, OpRemovexattr:
		s.replyErr(st, syscall.EPERM)
		return true
	}
	return false
}

// attrToGuest maps the owner and group of an attribute reply to the guest.
func (s *Server) attrToGuest(a *Attr) {
	if m := s.opts.IDMap; m != nil {
		a.UID = m.UIDToGuest(a.UID)
		a.GID = m.GIDToGuest(a.GID)
	}
}

// statxToGuest maps the owner and group of a STATX reply to the guest.
func (s *Server) statxToGuest(x *Statx) {
	if m := s.opts.IDMap; m != nil {
		x.UID = m.UIDToGuest(x.UID)
		x.GID = m.GIDToGuest(x.GID)
	}
}

// setattrToHost maps SETATTR's new owner and group to the host; false when
// the map forbids one of them.
func (s *Server) setattrToHost(in *SetattrIn) bool {
	m := s.opts.IDMap
	if m == nil {
		return true
	}
	ok := true
	if in.Valid&FattrUID != 0 {
		var k bool
		in.UID, k = m.UIDToHost(in.UID)
		ok = ok && k
	}
	if in.Valid&FattrGID != 0 {
		var k bool
		in.GID, k = m.GIDToHost(in.GID)
		ok = ok && k
	}
	return ok
}

// isACL reports whether name is a POSIX ACL xattr, whose value holds ids.
func isACL(name string) bool {
	return name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// aclErrno is the errno for an ACL the map cannot translate.
func aclErrno(err error) Errno {
	if err == syscall.EPERM {
		return syscall.EPERM
	}
	return syscall.EINVAL
}
