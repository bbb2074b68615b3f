package uidmap

import (
	"encoding/binary"
	"syscall"
)

// The extended attributes whose values are POSIX ACLs.
const (
	ACLAccessXattr  = "system.posix_acl_access"
	ACLDefaultXattr = "system.posix_acl_default"
)

// Errors of TranslateACL. They are errnos, so a FileSystem may answer them
// as they are; errors.Is tells them apart.
const (
	// ErrForbidden: an ACL_USER or ACL_GROUP entry names a guest id that a
	// forbid-guest rule refuses.
	ErrForbidden = syscall.EPERM
	// ErrMalformed: the value is not a version 2 POSIX ACL xattr (shorter
	// than its header, a length that is not the header plus whole 8-byte
	// entries, another version, or an entry tag Linux does not know). The
	// kernel answers EINVAL for these, except a wrong version, which it
	// answers with EOPNOTSUPP.
	ErrMalformed = syscall.EINVAL
)

// The layout of include/uapi/linux/posix_acl_xattr.h: a little-endian
// __le32 a_version, then entries {__le16 e_tag; __le16 e_perm; __le32 e_id}.
// Tags from include/uapi/linux/posix_acl.h.
const (
	aclVersion   = 2
	aclHeaderLen = 4
	aclEntryLen  = 8

	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// TranslateACL rewrites, in place, the ids in value, the value of a
// system.posix_acl_access or system.posix_acl_default xattr: ACL_USER
// entries through uids, ACL_GROUP entries through gids, guest to host when
// toHost (SETXATTR) and host to guest otherwise (GETXATTR). Other entries
// carry no id and are left alone; so are the permission bits. nil maps are
// the identity.
//
// A malformed value returns ErrMalformed, and a guest id a forbid-guest rule
// covers returns ErrForbidden (malformed wins when both apply); in either
// case value is left unchanged. An empty ACL (the header alone) is valid.
// TranslateACL allocates nothing.
func TranslateACL(value []byte, uids, gids *Map, toHost bool) error {
	if len(value) < aclHeaderLen || (len(value)-aclHeaderLen)%aclEntryLen != 0 {
		return ErrMalformed
	}
	if binary.LittleEndian.Uint32(value) != aclVersion {
		return ErrMalformed
	}
	// First pass: check everything, so that an error leaves value as it was.
	forbidden := false
	for off := aclHeaderLen; off < len(value); off += aclEntryLen {
		m, ok := aclMap(binary.LittleEndian.Uint16(value[off:]), uids, gids)
		if !ok {
			return ErrMalformed
		}
		if m != nil && toHost {
			if _, ok := m.ToHost(binary.LittleEndian.Uint32(value[off+4:])); !ok {
				forbidden = true
			}
		}
	}
	if forbidden {
		return ErrForbidden
	}
	for off := aclHeaderLen; off < len(value); off += aclEntryLen {
		m, _ := aclMap(binary.LittleEndian.Uint16(value[off:]), uids, gids)
		if m == nil || m.Identity() {
			continue
		}
		p := value[off+4:]
		id := binary.LittleEndian.Uint32(p)
		if toHost {
			id, _ = m.ToHost(id)
		} else {
			id = m.ToGuest(id)
		}
		binary.LittleEndian.PutUint32(p, id)
	}
	return nil
}

// aclMap returns the Map that translates the id of an entry with tag (nil
// for entries without an id) and whether tag is one Linux knows.
func aclMap(tag uint16, uids, gids *Map) (*Map, bool) {
	switch tag {
	case aclUser:
		return uids, true
	case aclGroup:
		return gids, true
	case aclUserObj, aclGroupObj, aclMask, aclOther:
		return nil, true
	}
	return nil, false
}
