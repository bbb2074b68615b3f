// Package aclcase is the POSIX ACL case of the QEMU tests
// (TestQEMUPosixACL): a share served with --xattr --posix-acl, on which
// guest root sets access and default ACLs by writing the
// system.posix_acl_access and system.posix_acl_default xattrs in the
// kernel's binary format (Encode), and guest users 1000 and 1001 are granted
// or refused what the ACLs say. The host then reads the same xattrs from
// its files (Objects).
//
// The same table is read by the guest's checker (../../guest, mode -acl)
// and by the host test (../../acl_test.go).
//
// # What the guest makes
//
//	acl/              0755, guest root's
//	acl/file          0600 + access ACL user:1000:rw-  → mode 0660
//	acl/plain         0600, no ACL: the control user 1000 is refused
//	acl/removed       like acl/file, then its ACL removed again
//	acl/dir/          0755 + access ACL user:1000:rwx (→ mode 0775) and
//	                  the same as default ACL
//	acl/dir/inherited created by root with mode 0666: inherits the default
//	acl/dir/sub/      mkdir 0755: inherits it as access and default ACL
//	acl/dir/by1000    created by user 1000 (allowed only by the ACL), 0644
package aclcase

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// The users of the case.
const (
	Granted = 1000 // the user the ACLs name
	Other   = 1001 // a user they do not name
)

// Xattr names.
const (
	Access  = "system.posix_acl_access"
	Default = "system.posix_acl_default"
)

// Tags of ACL entries (linux/posix_acl_xattr.h).
const (
	UserObj  = 0x01
	User     = 0x02
	GroupObj = 0x04
	Group    = 0x08
	Mask     = 0x10
	OtherTag = 0x20
)

// undefinedID is the id of the entries that name no user or group.
const undefinedID = 0xffffffff

// xattrVersion is POSIX_ACL_XATTR_VERSION.
const xattrVersion = 2

// Entry is one ACL entry: a tag, rwx bits, and for User and Group entries
// the id.
type Entry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// ACL is a list of entries in the kernel's order: by tag, then by id.
type ACL []Entry

// Encode is the xattr value of a: a little-endian version word, then
// per entry tag (16 bits), perm (16 bits), id (32 bits).
func (a ACL) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, xattrVersion)
	for _, e := range a {
		id := e.ID
		if e.Tag != User && e.Tag != Group {
			id = undefinedID
		}
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}

// Decode parses an xattr value.
func Decode(b []byte) (ACL, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 {
		return nil, fmt.Errorf("ACL xattr of %d bytes", len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != xattrVersion {
		return nil, fmt.Errorf("ACL xattr version %d", v)
	}
	var a ACL
	for b = b[4:]; len(b) > 0; b = b[8:] {
		e := Entry{Tag: binary.LittleEndian.Uint16(b), Perm: binary.LittleEndian.Uint16(b[2:]), ID: binary.LittleEndian.Uint32(b[4:])}
		if e.Tag != User && e.Tag != Group {
			e.ID = 0
		}
		a = append(a, e)
	}
	return a, nil
}

// Equal reports whether a and b have the same entries.
func (a ACL) Equal(b ACL) bool { return slices.Equal(a, b) }

// String is a's short text form, as getfacl -c would print it on one line.
func (a ACL) String() string {
	if a == nil {
		return "(none)"
	}
	var parts []string
	for _, e := range a {
		perm := []byte("---")
		for i, c := range "rwx" {
			if e.Perm&(4>>i) != 0 {
				perm[i] = byte(c)
			}
		}
		var s string
		switch e.Tag {
		case UserObj:
			s = "user::"
		case User:
			s = fmt.Sprintf("user:%d:", e.ID)
		case GroupObj:
			s = "group::"
		case Group:
			s = fmt.Sprintf("group:%d:", e.ID)
		case Mask:
			s = "mask::"
		case OtherTag:
			s = "other::"
		default:
			s = fmt.Sprintf("tag%#x:%d:", e.Tag, e.ID)
		}
		parts = append(parts, s+string(perm))
	}
	return strings.Join(parts, ",")
}

// acl is the ACL user::u, user:Granted:named, group::g, mask::m, other::o.
func acl(u, named, g, m, o uint16) ACL {
	return ACL{{UserObj, u, 0}, {User, named, Granted}, {GroupObj, g, 0}, {Mask, m, 0}, {OtherTag, o, 0}}
}

// The ACLs guest root sets.
var (
	// FileACL goes on acl/file and acl/removed (mode 0600).
	FileACL = acl(6, 6, 0, 6, 0)
	// DirACL goes on acl/dir (mode 0755) as access and as default ACL.
	DirACL = acl(7, 7, 5, 7, 5)
)

// Object is what one path of the case must look like on the host (and in
// the guest) once the guest is done.
type Object struct {
	Path    string
	Mode    uint32 // permission bits
	UID     uint32
	Access  ACL // nil: no system.posix_acl_access
	Default ACL // nil: no system.posix_acl_default
}

// Objects are the case's paths, parents first.
var Objects = []Object{
	{Path: "acl", Mode: 0o755},
	{Path: "acl/file", Mode: 0o660, Access: FileACL},
	{Path: "acl/plain", Mode: 0o600},
	{Path: "acl/removed", Mode: 0o660},
	// The access ACL's mask (rwx) becomes the mode's group bits.
	{Path: "acl/dir", Mode: 0o775, Access: DirACL, Default: DirACL},
	// create(0666) under DirACL: user:: and other:: and the mask take
	// the mode's bits; the named entry keeps rwx, masked to rw-.
	{Path: "acl/dir/inherited", Mode: 0o664, Access: acl(6, 7, 5, 6, 4)},
	// mkdir(0755): the same masking, and DirACL as its own default.
	{Path: "acl/dir/sub", Mode: 0o755, Access: acl(7, 7, 5, 5, 5), Default: DirACL},
	// create(0644) by user 1000.
	{Path: "acl/dir/by1000", Mode: 0o644, UID: Granted, Access: acl(6, 7, 5, 4, 4)},
}

// Lookup returns the entry for path.
func Lookup(path string) Object {
	for _, o := range Objects {
		if o.Path == path {
			return o
		}
	}
	panic("aclcase: no object " + path)
}

// Checks are the guest's verdicts, in the order it runs them.
var Checks = []string{
	"acl_access",      // acl/file: getxattr, mode, user 1000 reads and writes, 1001 refused; acl/plain refuses 1000
	"acl_remove",      // acl/removed: ACL set, then removed: user 1000 refused again, ENODATA
	"acl_default",     // acl/dir: default ACL; what root creates in it inherits it
	"acl_user_create", // user 1000 creates in acl/dir (ACL grants it), 1001 refused
}

// Content is what acl/file holds before user 1000 appends AppendData.
const (
	Content    = "acl secret\n"
	AppendData = "appended by 1000\n"
)
