package fuseproto

import "syscall"

// XattrMapper translates extended attribute names between the FUSE client
// (the guest) and the host, for Options.XattrMap; *xattrmap.Map, the rules
// of virtiofsd's --xattrmap, implements it. The Server applies it at its
// edge, so that every FileSystem sees only host names:
//
//   - the name of GETXATTR, SETXATTR and REMOVEXATTR goes through ToHost; a
//     refusal is the reply, except that GETXATTR answers ENODATA where
//     ToHost says EPERM (as virtiofsd does: the attribute does not exist
//     for the guest);
//   - the list LISTXATTR returns goes through ListToGuest. The Server asks
//     the FileSystem for the whole list whatever size the client gave, so
//     that a size probe (size 0) learns the size of the mapped list and
//     ERANGE means the mapped list does not fit (virtiofsd answers a probe
//     with the host's unmapped size);
//   - ACL ids (Options.IDMap) are translated when the host name is
//     system.posix_acl_access or system.posix_acl_default: an ACL the map
//     moves under another name is stored as the guest wrote it, and the
//     FileSystem's own ACL handling (SetxattrACLKillSGID) keys on the host
//     name too.
//
// Implementations must be safe for concurrent use.
type XattrMapper interface {
	// ToHost maps a client name to the host's, or returns the errno to
	// refuse the request with.
	ToHost(name string) (string, syscall.Errno)
	// ListToGuest appends to dst the client's view of list, a host
	// listxattr result (NUL-ended names): names renamed or left out, each
	// ended by a NUL. It must not allocate when dst has room for
	// len(list)+1 bytes, and must allow dst to be list[:0].
	ListToGuest(dst, list []byte) []byte
}

// xattrNameToHost maps a client's xattr name through Options.XattrMap, if
// any.
func (s *Server) xattrNameToHost(name string) (string, Errno) {
	if s.opts.XattrMap == nil {
		return name, OK
	}
	return s.opts.XattrMap.ToHost(name)
}

// xattrToHost maps the xattr name of the request in st to the host; when the
// map refuses it, it answers the request and returns ok false.
func (s *Server) xattrToHost(st *request, name string) (string, bool) {
	h, errno := s.xattrNameToHost(name)
	if errno != OK {
		if errno == syscall.EPERM && st.hdr.Opcode == OpGetxattr {
			errno = syscall.ENODATA
		}
		s.replyErr(st, errno)
		return "", false
	}
	return h, true
}

// listxattrToGuest serves LISTXATTR through Options.XattrMap: it reads the
// whole host list (at most XATTR_LIST_MAX, the size Linux caps lists at),
// maps it in place and answers the mapped size (size 0), the mapped list,
// or ERANGE when it is longer than size.
func (s *Server) listxattrToGuest(st *request, ctx *Context, node uint64, size uint32) {
	const listMax = MaxXattrSize // XATTR_LIST_MAX
	// One spare byte: a last name without its NUL gains one.
	buf := st.bigBuf(listMax + 1)
	list := buf[OutHeaderSize : OutHeaderSize+listMax]
	n, errno := s.fs.Listxattr(ctx, node, list)
	if errno == syscall.ERANGE || errno == OK && (n < 0 || n > len(list)) {
		// The list does not fit in XATTR_LIST_MAX: what listxattr(2)
		// answers then.
		errno = syscall.E2BIG
	}
	if errno != OK {
		s.replyErr(st, errno)
		return
	}
	out := s.opts.XattrMap.ListToGuest(list[:0], list[:n])
	if len(out) > len(buf)-OutHeaderSize {
		s.replyErr(st, syscall.E2BIG)
		return
	}
	g := copy(buf[OutHeaderSize:], out) // in place already, unless a mapper reallocated
	if size == 0 {
		replyStruct(s, st, set(&st.a.GetxattrOut, GetxattrOut{Size: uint32(g)}))
		return
	}
	if g > int(size) {
		s.replyErr(st, syscall.ERANGE)
		return
	}
	s.replyBuf(st, buf[:OutHeaderSize+g], 0)
}
