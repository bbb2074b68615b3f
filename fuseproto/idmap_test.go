package fuseproto

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
)

// shiftMap maps guest id g to host g+100000; guest 666 is forbidden; host
// ids below 100000 show as OverflowID. ACL values are shifted likewise.
type shiftMap struct{}

const shift = 100000

func (shiftMap) UIDToHost(id uint32) (uint32, bool) {
	if id == 666 {
		return OverflowID, false
	}
	return id + shift, true
}
func (m shiftMap) GIDToHost(id uint32) (uint32, bool) { return m.UIDToHost(id) }
func (shiftMap) UIDToGuest(id uint32) uint32 {
	if id < shift {
		return OverflowID
	}
	return id - shift
}
func (m shiftMap) GIDToGuest(id uint32) uint32 { return m.UIDToGuest(id) }
func (m shiftMap) ACLToHost(v []byte) error {
	if len(v) != 12 {
		return errors.New("malformed")
	}
	id := binary.LittleEndian.Uint32(v[8:])
	h, ok := m.UIDToHost(id)
	if !ok {
		return syscall.EPERM
	}
	binary.LittleEndian.PutUint32(v[8:], h)
	return nil
}
func (m shiftMap) ACLToGuest(v []byte) error {
	if len(v) != 12 {
		return errors.New("malformed")
	}
	binary.LittleEndian.PutUint32(v[8:], m.UIDToGuest(binary.LittleEndian.Uint32(v[8:])))
	return nil
}

// withCaller rewrites the uid and gid in a request's header.
func withCaller(req []byte, uid, gid uint32) []byte {
	var h InHeader
	decode(req, &h)
	h.UID, h.GID = uid, gid
	encode(req, &h)
	return req
}

func TestIDMapCallerAndReplies(t *testing.T) {
	s, fs := newSession(t, Options{IDMap: shiftMap{}})

	// The FileSystem sees the caller as the host id.
	r := call(s, msg(OpLookup, 1, "a")) // header uid 1000, gid 1001
	if r.header(t).Error != 0 {
		t.Fatalf("lookup error %d", r.header(t).Error)
	}
	if fs.ctx.UID != 1000+shift || fs.ctx.GID != 1001+shift {
		t.Fatalf("FileSystem saw caller %d:%d, want %d:%d", fs.ctx.UID, fs.ctx.GID, 1000+shift, 1001+shift)
	}
	// fill() answers owner 0:0 (host), which no guest id maps to.
	var e EntryOut
	decode(r.msg[OutHeaderSize:], &e)
	if e.Attr.UID != OverflowID || e.Attr.GID != OverflowID {
		t.Fatalf("LOOKUP reply owner %d:%d, want overflow", e.Attr.UID, e.Attr.GID)
	}

	// SETATTR: the new owner goes to the host mapped.
	in := &SetattrIn{Valid: FattrUID | FattrGID, UID: 5, GID: 6}
	if r := call(s, msg(OpSetattr, 2, in)); r.header(t).Error != 0 {
		t.Fatalf("setattr error %d", r.header(t).Error)
	}
	if fs.setattr.UID != 5+shift || fs.setattr.GID != 6+shift {
		t.Fatalf("SETATTR reached the FileSystem as %d:%d", fs.setattr.UID, fs.setattr.GID)
	}
	// ... and a forbidden one is refused before it.
	calls := len(fs.calls)
	in = &SetattrIn{Valid: FattrUID, UID: 666}
	if r := call(s, msg(OpSetattr, 2, in)); r.header(t).Error != -int32(syscall.EPERM) {
		t.Fatalf("SETATTR to a forbidden uid: error %d, want EPERM", r.header(t).Error)
	}
	if len(fs.calls) != calls {
		t.Fatalf("forbidden SETATTR reached the FileSystem: %v", fs.calls[calls:])
	}
}

func TestIDMapForbiddenCaller(t *testing.T) {
	tests := []struct {
		name    string
		req     []byte
		refused bool
	}{
		{"mkdir", msg(OpMkdir, 1, &MkdirIn{Mode: 0o755}, "d"), true},
		{"mknod", msg(OpMknod, 1, &MknodIn{Mode: 0o100644}, "n"), true},
		{"symlink", msg(OpSymlink, 1, "l", "target"), true},
		{"create", msg(OpCreate, 1, &CreateIn{Mode: 0o644}, "f"), true},
		{"link", msg(OpLink, 2, &LinkIn{OldNodeID: 3}, "h"), true},
		{"rename", msg(OpRename, 1, &RenameIn{Newdir: 1}, "a", "b"), true},
		{"setattr", msg(OpSetattr, 2, &SetattrIn{Valid: FattrMode, Mode: 0o600}), true},
		{"setxattr", msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "user.a", []byte("v")), true},
		{"removexattr", msg(OpRemovexattr, 2, "user.a"), true},
		{"lookup", msg(OpLookup, 1, "a"), false},
		{"getattr", msg(OpGetattr, 2, &GetattrIn{}), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, fs := newSession(t, Options{IDMap: shiftMap{}})
			r := call(s, withCaller(tc.req, 666, 1001))
			got := r.header(t).Error
			if tc.refused {
				if got != -int32(syscall.EPERM) || len(fs.calls) != 0 {
					t.Fatalf("forbidden caller: error %d, calls %v; want EPERM and no call", got, fs.calls)
				}
				return
			}
			if got != 0 || len(fs.calls) != 1 {
				t.Fatalf("forbidden caller reading: error %d, calls %v; want it served", got, fs.calls)
			}
		})
	}
	// A forbidden caller that is served runs as nobody, not as root.
	s, fs := newSession(t, Options{IDMap: shiftMap{}})
	call(s, withCaller(msg(OpLookup, 1, "a"), 666, 1001))
	if fs.ctx.UID != OverflowID || fs.ctx.GID != 1001+shift {
		t.Fatalf("forbidden caller ran as %d:%d", fs.ctx.UID, fs.ctx.GID)
	}
}

func TestIDMapReaddirplusAndACL(t *testing.T) {
	s, fs := newSession(t, Options{IDMap: shiftMap{}})
	fs.dirents = []string{"x", "y"}
	r := call(s, msg(OpReaddirplus, 1, &ReadIn{Size: 4096}))
	if r.header(t).Error != 0 {
		t.Fatalf("readdirplus error %d", r.header(t).Error)
	}
	body := r.msg[OutHeaderSize:]
	n := 0
	for len(body) >= DirentplusSize {
		var e EntryOut
		decode(body, &e)
		if e.Attr.UID != OverflowID || e.Attr.GID != OverflowID {
			t.Fatalf("entry %d owner %d:%d, want overflow", n, e.Attr.UID, e.Attr.GID)
		}
		var d Dirent
		decode(body[EntryOutSize:], &d)
		rec := (DirentplusSize + int(d.Namelen) + 7) &^ 7
		body = body[rec:]
		n++
	}
	if n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}

	// An ACL value is mapped on its way in (a copy: the request stays as
	// the client wrote it) and on its way out.
	acl := make([]byte, 12)
	binary.LittleEndian.PutUint32(acl[8:], 7)
	req := msg(OpSetxattr, 2, &SetxattrIn{Size: 12}, "system.posix_acl_access", acl)
	before := append([]byte(nil), req...)
	if r := call(s, req); r.header(t).Error != 0 {
		t.Fatalf("setxattr error %d", r.header(t).Error)
	}
	if string(req) != string(before) {
		t.Fatal("SETXATTR rewrote the request in place")
	}
	if got := binary.LittleEndian.Uint32(fs.written[8:]); got != 7+shift {
		t.Fatalf("FileSystem got ACL id %d, want %d", got, 7+shift)
	}
	fs.data = fs.written
	r = call(s, msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "system.posix_acl_access"))
	if r.header(t).Error != 0 || len(r.msg) != OutHeaderSize+12 {
		t.Fatalf("getxattr error %d len %d", r.header(t).Error, len(r.msg))
	}
	if got := binary.LittleEndian.Uint32(r.msg[OutHeaderSize+8:]); got != 7 {
		t.Fatalf("GETXATTR answered ACL id %d, want 7", got)
	}
	// A forbidden id in an ACL is refused; a malformed ACL is EINVAL.
	binary.LittleEndian.PutUint32(acl[8:], 666)
	if r := call(s, msg(OpSetxattr, 2, &SetxattrIn{Size: 12}, "system.posix_acl_access", acl)); r.header(t).Error != -int32(syscall.EPERM) {
		t.Fatalf("ACL with a forbidden id: error %d", r.header(t).Error)
	}
	if r := call(s, msg(OpSetxattr, 2, &SetxattrIn{Size: 3}, "system.posix_acl_default", []byte("abc"))); r.header(t).Error != -int32(syscall.EINVAL) {
		t.Fatalf("malformed ACL: error %d", r.header(t).Error)
	}
}
