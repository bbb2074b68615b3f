package fuseproto

import (
	"bytes"
	"encoding/binary"
	"strings"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/xattrmap"
)

var _ XattrMapper = (*xattrmap.Map)(nil)

func parseXattrMap(t testing.TB, rules string) *xattrmap.Map {
	t.Helper()
	m, err := xattrmap.Parse(rules)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// listFS is a fakeFS whose Listxattr behaves as listxattr(2): length only
// for an empty dst, ERANGE for a short one. It records the room it was
// given.
type listFS struct {
	*fakeFS
	list  []byte
	errno Errno
	room  int
}

func (f *listFS) Listxattr(ctx *Context, node uint64, dst []byte) (int, Errno) {
	f.room = len(dst)
	if f.errno != OK {
		return 0, f.errno
	}
	if len(dst) == 0 {
		return len(f.list), OK
	}
	if len(dst) < len(f.list) {
		return 0, syscall.ERANGE
	}
	return copy(dst, f.list), OK
}

func newListSession(t *testing.T, opts Options) (*Server, *listFS) {
	t.Helper()
	fs := &listFS{fakeFS: &fakeFS{}}
	s := NewServer(fs, opts)
	r := &recReplier{}
	s.Handle(msg(OpInit, 0, initIn(45)), nil, r)
	if oh := r.header(t); oh.Error != 0 {
		t.Fatalf("INIT failed: %d", oh.Error)
	}
	return s, fs
}

// TestXattrMapNames checks that GETXATTR, SETXATTR and REMOVEXATTR reach
// the FileSystem with the host name, and that refused names do not reach
// it at all.
func TestXattrMapNames(t *testing.T) {
	const rules = "/bad/all/security./security./ /unsupported/client/system.foo// /map/trusted./user.virtiofs./"
	long := "trusted." + strings.Repeat("x", MaxXattrNameLen-len("trusted."))
	value := []byte("v")
	tests := []struct {
		name     string
		req      []byte
		wantErr  syscall.Errno
		wantCall string // FileSystem method reached, with wantName
		wantName string
	}{
		{"getxattr prefixed", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "trusted.a"), 0, "Getxattr", "user.virtiofs.trusted.a"},
		{"getxattr passed", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "user.a"), 0, "Getxattr", "user.a"},
		{"getxattr size probe", msg(OpGetxattr, 2, &GetxattrIn{}, "trusted.a"), 0, "Getxattr", "user.virtiofs.trusted.a"},
		// A bad name does not exist for the guest: ENODATA, as virtiofsd.
		{"getxattr bad", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "user.virtiofs.a"), syscall.ENODATA, "", ""},
		{"getxattr bad all", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "security.selinux"), syscall.ENODATA, "", ""},
		{"getxattr unsupported", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "system.foo"), syscall.ENOTSUP, "", ""},
		{"getxattr too long mapped", msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, long), syscall.ERANGE, "", ""},
		{"setxattr prefixed", msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "trusted.a", value), 0, "Setxattr", "user.virtiofs.trusted.a"},
		{"setxattr passed", msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "user.a", value), 0, "Setxattr", "user.a"},
		{"setxattr bad", msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "user.virtiofs.a", value), syscall.EPERM, "", ""},
		{"setxattr unsupported", msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "system.foo", value), syscall.ENOTSUP, "", ""},
		// The request is checked before the name is mapped.
		{"setxattr bad size", msg(OpSetxattr, 2, &SetxattrIn{Size: 2}, "user.virtiofs.a", value), syscall.EINVAL, "", ""},
		{"removexattr prefixed", msg(OpRemovexattr, 2, "trusted.a"), 0, "Removexattr", "user.virtiofs.trusted.a"},
		{"removexattr bad", msg(OpRemovexattr, 2, "security.selinux"), syscall.EPERM, "", ""},
		{"removexattr unsupported", msg(OpRemovexattr, 2, "system.foo"), syscall.ENOTSUP, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fs := newSession(t, Options{XattrMap: parseXattrMap(t, rules)})
			fs.data = []byte("value")
			r := call(s, tt.req)
			if got := r.header(t).Error; got != -int32(tt.wantErr) {
				t.Fatalf("error %d, want %d (%v)", got, -int32(tt.wantErr), tt.wantErr)
			}
			if tt.wantCall == "" {
				if len(fs.calls) != 0 {
					t.Fatalf("refused name reached the FileSystem: %v %v", fs.calls, fs.names)
				}
				return
			}
			if fs.last() != tt.wantCall || len(fs.names) != 1 || fs.names[0] != tt.wantName {
				t.Fatalf("FileSystem saw %v %v, want %s %q", fs.calls, fs.names, tt.wantCall, tt.wantName)
			}
			if tt.wantCall == "Setxattr" && string(fs.written) != string(value) {
				t.Fatalf("Setxattr value %q", fs.written)
			}
		})
	}
}

// TestXattrMapList checks LISTXATTR through a map: the FileSystem is asked
// for the whole list whatever the size, a probe answers the mapped size,
// and ERANGE is judged against the mapped list.
func TestXattrMapList(t *testing.T) {
	host := "user.virtiofs.user.a\x00security.selinux\x00user.virtiofs.trusted.bb\x00user.c\x00"
	mapped := "user.a\x00trusted.bb\x00"
	m := parseXattrMap(t, ":map::user.virtiofs.:")
	tests := []struct {
		name    string
		size    uint32
		list    string
		fsErr   Errno
		wantErr syscall.Errno
		want    string // the list, or for size 0 what GetxattrOut.Size says
	}{
		{"probe", 0, host, 0, 0, mapped},
		{"exact", uint32(len(mapped)), host, 0, 0, mapped},
		{"larger", 4096, host, 0, 0, mapped},
		// Fits the mapped list though the host's would not.
		{"smaller than the host list", uint32(len(host) - 1), host, 0, 0, mapped},
		{"too small", uint32(len(mapped) - 1), host, 0, syscall.ERANGE, ""},
		{"all hidden", 64, "user.a\x00security.selinux\x00", 0, 0, ""},
		{"all hidden probe", 0, "user.a\x00", 0, 0, ""},
		{"empty", 64, "", 0, 0, ""},
		{"last name without NUL", 64, "user.virtiofs.x", 0, 0, "x\x00"},
		{"largest host list", 0, strings.Repeat("user.virtiofs.abcdefghijklmnopqrstuvwxyz\x00", MaxXattrSize/41) +
			strings.Repeat("x", MaxXattrSize%41), 0, 0, strings.Repeat("abcdefghijklmnopqrstuvwxyz\x00", MaxXattrSize/41)},
		{"filesystem error", 64, "", syscall.ENOSYS, syscall.ENOSYS, ""},
		{"list past XATTR_LIST_MAX", 64, "", syscall.ERANGE, syscall.E2BIG, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fs := newListSession(t, Options{XattrMap: m})
			fs.list, fs.errno = []byte(tt.list), tt.fsErr
			r := call(s, msg(OpListxattr, 2, &GetxattrIn{Size: tt.size}))
			if got := r.header(t).Error; got != -int32(tt.wantErr) {
				t.Fatalf("error %d, want %d (%v)", got, -int32(tt.wantErr), tt.wantErr)
			}
			if fs.room != MaxXattrSize {
				t.Errorf("FileSystem was given %d bytes, want the whole XATTR_LIST_MAX", fs.room)
			}
			if tt.wantErr != 0 {
				return
			}
			body := r.msg[OutHeaderSize:]
			if tt.size == 0 {
				var out GetxattrOut
				if !Decode(body, &out) || int(out.Size) != len(tt.want) {
					t.Fatalf("probe answered %+v (%d bytes), want size %d", out, len(body), len(tt.want))
				}
				return
			}
			if string(body) != tt.want {
				t.Fatalf("list %q, want %q", body, tt.want)
			}
		})
	}

	// Without a map the FileSystem gets the client's size, as before.
	s, fs := newListSession(t, Options{})
	fs.list = []byte(host)
	r := call(s, msg(OpListxattr, 2, &GetxattrIn{Size: 4096}))
	if r.header(t).Error != 0 || string(r.msg[OutHeaderSize:]) != host || fs.room != 4096 {
		t.Fatalf("no map: error %d, list %q, room %d", r.header(t).Error, r.msg[OutHeaderSize:], fs.room)
	}
}

// TestXattrMapACL checks that ACL ids are translated by the host name: an
// ACL the map moves elsewhere is stored as the guest wrote it, and a name
// the map turns into an ACL name is translated.
func TestXattrMapACL(t *testing.T) {
	acl := make([]byte, 12)
	binary.LittleEndian.PutUint32(acl[8:], 7)
	tests := []struct {
		name      string
		rules     string
		guestName string
		hostName  string
		hostID    uint32 // the id the FileSystem is given
	}{
		{"ACL passed", ":ok:all:::", "system.posix_acl_access", "system.posix_acl_access", 7 + shift},
		{"ACL moved", ":map::user.virtiofs.:", "system.posix_acl_default", "user.virtiofs.system.posix_acl_default", 7},
		{"moved to the ACL name", ":prefix:all:_access:system.posix_acl: :ok:all:::", "_access", "system.posix_acl_access", 7 + shift},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fs := newSession(t, Options{IDMap: shiftMap{}, XattrMap: parseXattrMap(t, tt.rules)})
			r := call(s, msg(OpSetxattr, 2, &SetxattrIn{Size: 12}, tt.guestName, acl))
			if r.header(t).Error != 0 {
				t.Fatalf("setxattr error %d", r.header(t).Error)
			}
			if len(fs.names) != 1 || fs.names[0] != tt.hostName {
				t.Fatalf("FileSystem saw %v, want %q", fs.names, tt.hostName)
			}
			if got := binary.LittleEndian.Uint32(fs.written[8:]); got != tt.hostID {
				t.Fatalf("FileSystem got ACL id %d, want %d", got, tt.hostID)
			}
			// Reading it back gives the guest what it wrote.
			fs.data = fs.written
			r = call(s, msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, tt.guestName))
			if r.header(t).Error != 0 || !bytes.Equal(r.msg[OutHeaderSize:], acl) {
				t.Fatalf("getxattr error %d, value %x, want %x", r.header(t).Error, r.msg[OutHeaderSize:], acl)
			}
			if fs.names[1] != tt.hostName {
				t.Fatalf("GETXATTR reached the FileSystem as %q", fs.names[1])
			}
		})
	}
}

// TestXattrMapListAllocs checks that a mapped LISTXATTR allocates nothing
// once the request state is warm.
func TestXattrMapListAllocs(t *testing.T) {
	s, fs := newListSession(t, Options{XattrMap: parseXattrMap(t, ":map:trusted.:user.virtiofs.:")})
	fs.list = []byte("user.virtiofs.trusted.a\x00trusted.b\x00user.c\x00security.selinux\x00")
	r := &recReplier{}
	for _, size := range []uint32{0, 4096} {
		req := msg(OpListxattr, 2, &GetxattrIn{Size: size})
		s.Handle(req, nil, r)
		if allocs := testing.AllocsPerRun(100, func() { s.Handle(req, nil, r) }); allocs > 0 {
			t.Errorf("LISTXATTR size %d: %.1f allocations per request", size, allocs)
		}
	}
	if got := string(r.msg[OutHeaderSize:]); got != "trusted.a\x00user.c\x00security.selinux\x00" {
		t.Fatalf("list %q", got)
	}
}

// FuzzXattrMapHandle feeds arbitrary requests to a Server with an xattr
// map and checks that it never panics, answers at most once with a well
// formed reply, lists what ListToGuest makes of the host list, and never
// lets a name the map refuses reach the FileSystem.
func FuzzXattrMapHandle(f *testing.F) {
	host := []byte("user.virtiofs.trusted.a\x00trusted.b\x00user.c\x00security.selinux\x00")
	for _, b := range [][]byte{
		msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "trusted.a"), msg(OpGetxattr, 2, &GetxattrIn{}, "security.x"),
		msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "user.virtiofs.a", []byte("v")),
		msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "trusted."+strings.Repeat("x", 240), []byte("v")),
		msg(OpRemovexattr, 2, "trusted.a"), msg(OpListxattr, 2, &GetxattrIn{}), msg(OpListxattr, 2, &GetxattrIn{Size: 19}),
		msg(OpListxattr, 2, &GetxattrIn{Size: 4096}),
	} {
		f.Add(b, host)
	}
	m := parseXattrMap(f, ":bad:all:security.:security.: :map:trusted.:user.virtiofs.:")
	f.Fuzz(func(t *testing.T, req, list []byte) {
		var log bytes.Buffer
		fs := &listFS{fakeFS: &fakeFS{data: []byte("value")}, list: list}
		s := NewServer(fs, Options{Logger: testLogger(&log), XattrMap: m})
		s.Handle(msg(OpInit, 0, initIn(45)), nil, &recReplier{})
		r := &recReplier{}
		s.Handle(req, nil, r)
		if strings.Contains(log.String(), "panic") {
			t.Fatalf("request panicked: %s", log.String())
		}
		for _, n := range fs.names {
			if !strings.HasPrefix(n, "user.virtiofs.trusted.") &&
				(strings.HasPrefix(n, "security.") || strings.HasPrefix(n, "user.virtiofs.")) {
				t.Fatalf("refused name reached the FileSystem as %q", n)
			}
		}
		if r.n > 1 {
			t.Fatalf("%d replies to one request", r.n)
		}
		if r.n == 0 {
			return
		}
		oh := r.header(t)
		if oh.Error > 0 || oh.Error <= -512 {
			t.Fatalf("reply error %d out of range", oh.Error)
		}
		var h InHeader
		var in GetxattrIn
		if !Decode(req, &h) || h.Opcode != OpListxattr || oh.Error != 0 || !Decode(req[InHeaderSize:], &in) {
			return
		}
		want := m.ListToGuest(nil, list)
		if in.Size == 0 {
			var out GetxattrOut
			if !Decode(r.msg[OutHeaderSize:], &out) || int(out.Size) != len(want) {
				t.Fatalf("probe of %q answered %x, want size %d", list, r.msg[OutHeaderSize:], len(want))
			}
		} else if !bytes.Equal(r.msg[OutHeaderSize:], want) {
			t.Fatalf("list %q answered %q, want %q", list, r.msg[OutHeaderSize:], want)
		}
	})
}
