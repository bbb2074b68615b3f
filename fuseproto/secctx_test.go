package fuseproto

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// secBlock encodes a security context block as the kernel does: the header,
// then per context fuse_secctx, the NUL-terminated name and the value,
// padded to 8 bytes.
func secBlock(ctxs ...SecCtx) []byte {
	b := make([]byte, secctxHeaderSize)
	for _, c := range ctxs {
		b = Encode(b, &Secctx{Size: uint32(len(c.Value))})
		b = append(append(append(b, c.Name...), 0), c.Value...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	encode(b, &SecctxHeader{Size: uint32(len(b)), NrSecctx: uint32(len(ctxs))})
	return b
}

// patch returns a copy of b with the little-endian uint32 at off set to v.
func patch(b []byte, off int, v uint32) []byte {
	b = slices.Clone(b)
	binary.LittleEndian.PutUint32(b[off:], v)
	return b
}

// withExt appends request extensions to req and fixes len and total_extlen.
func withExt(req []byte, ext ...[]byte) []byte {
	req = slices.Clone(req)
	for _, e := range ext {
		req = append(req, e...)
	}
	var h InHeader
	decode(req, &h)
	extLen := 0
	for _, e := range ext {
		extLen += len(e)
	}
	h.Len = uint32(len(req))
	h.TotalExtlen = uint16(extLen / 8)
	encode(req, &h)
	return req
}

var (
	selinux = SecCtx{Name: "security.selinux", Value: []byte("system_u:object_r:container_file_t:s0\x00")}
	smack   = SecCtx{Name: "security.SMACK64", Value: []byte("_")}
)

func TestDecodeSecCtx(t *testing.T) {
	good := secBlock(selinux)
	long := SecCtx{Name: "security." + strings.Repeat("n", MaxXattrNameLen-len("security.")), Value: []byte("v")}
	var many []SecCtx
	for i := range int(MaxNrSecctx) {
		many = append(many, SecCtx{Name: "security.l" + string(rune('a'+i)), Value: []byte{byte(i), 1, 2}})
	}
	tests := []struct {
		name    string
		b       []byte
		want    []SecCtx
		wantErr Errno
	}{
		{name: "one context", b: good, want: []SecCtx{selinux}},
		{name: "no LSM: nr 0", b: secBlock()},
		{name: "two contexts", b: secBlock(selinux, smack), want: []SecCtx{selinux, smack}},
		{name: "31 contexts", b: secBlock(many...), want: many},
		{name: "longest name", b: secBlock(long), want: []SecCtx{long}},
		{name: "bytes after the block ignored", b: append(slices.Clone(good), 1, 2, 3, 4, 5, 6, 7, 8), want: []SecCtx{selinux}},
		{name: "value padding may be nonzero", b: func() []byte { b := slices.Clone(good); b[len(b)-1] = 0xff; return b }(), want: []SecCtx{selinux}},

		{name: "empty", b: nil, wantErr: syscall.EINVAL},
		{name: "truncated header", b: good[:7], wantErr: syscall.EINVAL},
		{name: "truncated block", b: good[:len(good)-8], wantErr: syscall.EINVAL},
		{name: "size below header", b: patch(secBlock(), 0, 4), wantErr: syscall.EINVAL},
		{name: "size zero", b: patch(secBlock(), 0, 0), wantErr: syscall.EINVAL},
		{name: "size not a multiple of 8", b: patch(good, 0, uint32(len(good)-1)), wantErr: syscall.EINVAL},
		{name: "size lies long", b: patch(good, 0, uint32(len(good)+8)), wantErr: syscall.EINVAL},
		{name: "size huge", b: patch(good, 0, 0xfffffff8), wantErr: syscall.EINVAL},
		{name: "nr above FUSE_MAX_NR_SECCTX", b: patch(good, 4, MaxNrSecctx+1), wantErr: syscall.EINVAL},
		{name: "nr huge", b: patch(good, 4, 0xffffffff), wantErr: syscall.EINVAL},
		{name: "nr 1 without a context", b: patch(secBlock(), 4, 1), wantErr: syscall.EINVAL},
		{name: "nr says two, one there", b: patch(good, 4, 2), wantErr: syscall.EINVAL},
		{name: "context size zero", b: patch(good, 8, 0), wantErr: syscall.EINVAL},
		{name: "context size past the block", b: patch(good, 8, uint32(len(good))), wantErr: syscall.EINVAL},
		{name: "context size huge", b: patch(good, 8, 0xffffffff), wantErr: syscall.EINVAL},
		{name: "name not terminated", b: func() []byte {
			b := Encode(Encode(nil, &SecctxHeader{Size: 32, NrSecctx: 1}), &Secctx{Size: 1})
			return append(b, "security.abcdefg"...)
		}(), wantErr: syscall.EINVAL},
		{name: "empty name", b: secBlock(SecCtx{Name: "", Value: []byte("v")}), wantErr: syscall.EINVAL},
		{name: "bare prefix", b: secBlock(SecCtx{Name: "security.", Value: []byte("v")}), wantErr: syscall.EINVAL},
		{name: "name too long", b: secBlock(SecCtx{Name: long.Name + "n", Value: []byte("v")}), wantErr: syscall.EINVAL},
		{name: "user xattr", b: secBlock(SecCtx{Name: "user.x", Value: []byte("v")}), wantErr: syscall.EINVAL},
		{name: "trusted xattr", b: secBlock(SecCtx{Name: "trusted.overlay.opaque", Value: []byte("y")}), wantErr: syscall.EINVAL},
		{name: "POSIX ACL", b: secBlock(SecCtx{Name: "system.posix_acl_access", Value: []byte("v")}), wantErr: syscall.EINVAL},
		{name: "second context bad", b: secBlock(selinux, SecCtx{Name: "user.x", Value: []byte("v")}), wantErr: syscall.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, e := decodeSecCtx(tc.b, nil)
			if e != tc.wantErr {
				t.Fatalf("errno %v, want %v", e, tc.wantErr)
			}
			if e != OK {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d contexts, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i].Name != tc.want[i].Name || !bytes.Equal(got[i].Value, tc.want[i].Value) {
					t.Errorf("context %d = %q %q, want %q %q", i, got[i].Name, got[i].Value, tc.want[i].Name, tc.want[i].Value)
				}
				if cap(got[i].Value) != len(got[i].Value) {
					t.Errorf("context %d: value can be appended into the request", i)
				}
			}
		})
	}
}

// creatingRequests returns one request of each opcode that carries a
// security context, with the block after its names (suffix nil: none).
func creatingRequests(suffix []byte) map[string][]byte {
	return map[string][]byte{
		"Create":  msg(OpCreate, 1, &CreateIn{Mode: 0o100644}, "c", suffix),
		"Mkdir":   msg(OpMkdir, 1, &MkdirIn{Mode: 0o755}, "d", suffix),
		"Mknod":   msg(OpMknod, 1, &MknodIn{Mode: 0o10644}, "n", suffix),
		"Symlink": msg(OpSymlink, 1, "l", "target", suffix),
		"Tmpfile": msg(OpTmpfile, 1, &CreateIn{Mode: 0o100600}, "/", suffix),
	}
}

// sessionAt returns a Server over a fakeFS after an INIT of the given minor.
func sessionAt(t *testing.T, minor uint32, opts Options) (*Server, *fakeFS) {
	t.Helper()
	fs := &fakeFS{}
	s := NewServer(fs, opts)
	if oh := call(s, msg(OpInit, 0, initIn(minor))).header(t); oh.Error != 0 {
		t.Fatalf("INIT 7.%d failed: %d", minor, oh.Error)
	}
	return s, fs
}

func wantSecCtx(t *testing.T, op string, fs *fakeFS, want ...SecCtx) {
	t.Helper()
	if fs.last() != op {
		t.Fatalf("last call %q, want %s", fs.last(), op)
	}
	if len(fs.secctx) != len(want) {
		t.Fatalf("%s saw %d contexts, want %d", op, len(fs.secctx), len(want))
	}
	for i := range want {
		if fs.secctx[i].Name != want[i].Name || !bytes.Equal(fs.secctx[i].Value, want[i].Value) {
			t.Fatalf("%s saw %q=%q, want %q=%q", op, fs.secctx[i].Name, fs.secctx[i].Value, want[i].Name, want[i].Value)
		}
	}
}

// TestSecCtxExtension: a 7.38+ kernel sends the block as a request
// extension of type nr_secctx, possibly with the supplementary group
// extension after it.
func TestSecCtxExtension(t *testing.T) {
	s, fs := sessionAt(t, 45, Options{Enable: InitSecurityCtx})
	groups := append(Encode(nil, &ExtHeader{Size: 16, Type: ExtGroups}), 1, 0, 0, 0, 0xe8, 0x03, 0, 0)
	for op, req := range creatingRequests(nil) {
		for _, ext := range [][][]byte{{secBlock(selinux)}, {secBlock(selinux), groups}, {groups, secBlock(selinux)}} {
			if oh := call(s, withExt(req, ext...)).header(t); oh.Error != 0 {
				t.Fatalf("%s: error %d", op, oh.Error)
			}
			wantSecCtx(t, op, fs, selinux)
		}
		// No LSM in the guest: an empty block.
		if oh := call(s, withExt(req, secBlock())).header(t); oh.Error != 0 {
			t.Fatalf("%s with nr_secctx 0: error %d", op, oh.Error)
		}
		wantSecCtx(t, op, fs)
		// Bytes after the names are not a context from 7.38 on.
		if oh := call(s, creatingRequests(secBlock(smack))[op]).header(t); oh.Error != 0 {
			t.Fatalf("%s with trailing bytes: error %d", op, oh.Error)
		}
		wantSecCtx(t, op, fs)
	}
}

// TestSecCtxTrailing: 7.36 and 7.37 kernels append the block after the
// names, with total_extlen zero (then padding).
func TestSecCtxTrailing(t *testing.T) {
	for _, minor := range []uint32{36, 37} {
		s, fs := sessionAt(t, minor, Options{Enable: InitSecurityCtx})
		for op, req := range creatingRequests(secBlock(selinux)) {
			if op == "Tmpfile" && minor < 37 {
				continue
			}
			if oh := call(s, req).header(t); oh.Error != 0 {
				t.Fatalf("7.%d %s: error %d", minor, op, oh.Error)
			}
			wantSecCtx(t, op, fs, selinux)
			if op != "Tmpfile" && fs.names[len(fs.names)-1] == "" {
				t.Fatalf("7.%d %s: names %q", minor, op, fs.names)
			}
		}
		for op, req := range creatingRequests(secBlock()) {
			if oh := call(s, req).header(t); oh.Error != 0 {
				t.Fatalf("7.%d %s with nr_secctx 0: error %d", minor, op, oh.Error)
			}
			wantSecCtx(t, op, fs)
		}
	}
	s, fs := sessionAt(t, 37, Options{Enable: InitSecurityCtx})
	if oh := call(s, msg(OpSymlink, 1, "l", "t", secBlock(smack))).header(t); oh.Error != 0 || fs.names[len(fs.names)-1] != "t" {
		t.Fatalf("symlink target with a context: error %d names %q", oh.Error, fs.names)
	}
	wantSecCtx(t, "Symlink", fs, smack)
}

// TestSecCtxNotNegotiated: without InitSecurityCtx a block is neither
// decoded nor checked, in either form.
func TestSecCtxNotNegotiated(t *testing.T) {
	bad := patch(secBlock(selinux), 4, 7) // would be EINVAL
	for _, minor := range []uint32{37, 45} {
		s, fs := sessionAt(t, minor, Options{})
		for op, req := range creatingRequests(bad) {
			if minor >= 38 {
				req = withExt(creatingRequests(nil)[op], bad)
			}
			if oh := call(s, req).header(t); oh.Error != 0 {
				t.Fatalf("7.%d %s: error %d", minor, op, oh.Error)
			}
			wantSecCtx(t, op, fs)
		}
	}
}

// TestSecCtxMalformed: a malformed block is EINVAL and never reaches the
// FileSystem, in both forms; so is a second block.
func TestSecCtxMalformed(t *testing.T) {
	bad := [][]byte{
		patch(secBlock(selinux), 4, 2),
		patch(secBlock(selinux), 8, 0xffff),
		secBlock(SecCtx{Name: "user.x", Value: []byte("v")}),
	}
	for _, minor := range []uint32{37, 45} {
		s, fs := sessionAt(t, minor, Options{Enable: InitSecurityCtx})
		for i, b := range bad {
			for op := range creatingRequests(nil) {
				req := creatingRequests(b)[op]
				if minor >= 38 {
					req = withExt(creatingRequests(nil)[op], b)
				}
				before := len(fs.calls)
				if oh := call(s, req).header(t); oh.Error != -int32(syscall.EINVAL) {
					t.Errorf("7.%d %s block %d: error %d, want EINVAL", minor, op, i, oh.Error)
				}
				if len(fs.calls) != before {
					t.Errorf("7.%d %s block %d reached the FileSystem", minor, op, i)
				}
			}
		}
	}
	s, _ := sessionAt(t, 45, Options{Enable: InitSecurityCtx})
	req := withExt(msg(OpMkdir, 1, &MkdirIn{}, "d"), secBlock(selinux), secBlock())
	if oh := call(s, req).header(t); oh.Error != -int32(syscall.EINVAL) {
		t.Errorf("two blocks: error %d, want EINVAL", oh.Error)
	}
	// Both forms at once on a 7.37 session: also two blocks.
	s, _ = sessionAt(t, 37, Options{Enable: InitSecurityCtx})
	req = withExt(msg(OpMkdir, 1, &MkdirIn{}, "d", secBlock(selinux)), secBlock(smack))
	if oh := call(s, req).header(t); oh.Error != -int32(syscall.EINVAL) {
		t.Errorf("extension and trailing block: error %d, want EINVAL", oh.Error)
	}
}

// TestInitOptionalFlags: killpriv v2, DIRECT_IO_ALLOW_MMAP and
// SECURITY_CTX only on request; killpriv v1 never; SECURITY_CTX asked for
// but not offered fails INIT with EPROTO.
func TestInitOptionalFlags(t *testing.T) {
	without := func(minor uint32, flags uint64) *InitIn {
		in := initIn(minor)
		in.Flags &^= uint32(flags)
		in.Flags2 &^= uint32(flags >> 32)
		return in
	}
	tests := []struct {
		name    string
		in      *InitIn
		opts    Options
		wantErr Errno
		wantOn  uint64
		wantOff uint64
	}{
		{name: "defaults", in: initIn(45),
			wantOff: InitHandleKillpriv | InitHandleKillprivV2 | InitDirectIOAllowMmap | InitSecurityCtx},
		{name: "asked for", in: initIn(45), opts: Options{Enable: InitHandleKillprivV2 | InitDirectIOAllowMmap | InitSecurityCtx},
			wantOn: InitHandleKillprivV2 | InitDirectIOAllowMmap | InitSecurityCtx, wantOff: InitHandleKillpriv},
		{name: "killpriv v1 never", in: initIn(45), opts: Options{Enable: InitHandleKillpriv}, wantOff: InitHandleKillpriv},
		{name: "killpriv v2 not offered", in: without(45, InitHandleKillprivV2), opts: Options{Enable: InitHandleKillprivV2},
			wantOff: InitHandleKillprivV2},
		{name: "allow mmap not offered", in: without(45, InitDirectIOAllowMmap), opts: Options{Enable: InitDirectIOAllowMmap},
			wantOff: InitDirectIOAllowMmap},
		{name: "security label on 7.36", in: initIn(36), opts: Options{Enable: InitSecurityCtx}, wantOn: InitSecurityCtx},
		{name: "security label not offered", in: without(45, InitSecurityCtx), opts: Options{Enable: InitSecurityCtx},
			wantErr: syscall.EPROTO},
		{name: "security label on 7.35", in: initIn(35), opts: Options{Enable: InitSecurityCtx}, wantErr: syscall.EPROTO},
		{name: "security label without INIT_EXT", in: without(45, InitInitExt), opts: Options{Enable: InitSecurityCtx},
			wantErr: syscall.EPROTO},
		{name: "security label with INIT_EXT disabled", in: initIn(45), opts: Options{Enable: InitSecurityCtx, Disable: InitInitExt},
			wantErr: syscall.EPROTO},
		{name: "security label disabled", in: without(45, InitSecurityCtx), opts: Options{Enable: InitSecurityCtx, Disable: InitSecurityCtx},
			wantOff: InitSecurityCtx},
		{name: "INIT_EXT disabled drops flags2", in: initIn(45), opts: Options{Enable: InitDirectIOAllowMmap, Disable: InitInitExt},
			wantOff: InitDirectIOAllowMmap | InitInitExt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeFS{}
			s := NewServer(fs, tc.opts)
			r := call(s, msg(OpInit, 0, tc.in))
			oh := r.header(t)
			if Errno(-oh.Error) != tc.wantErr {
				t.Fatalf("error %d, want %d", -oh.Error, tc.wantErr)
			}
			if tc.wantErr != 0 {
				if fs.cfg != nil {
					t.Fatal("session started after a refused INIT")
				}
				return
			}
			var out InitOut
			copy(unsafeBytes(&out), r.msg[OutHeaderSize:])
			got := uint64(out.Flags) | uint64(out.Flags2)<<32
			if got&tc.wantOn != tc.wantOn {
				t.Errorf("flags %#x lack %#x", got, tc.wantOn&^got)
			}
			if got&tc.wantOff != 0 {
				t.Errorf("flags %#x have unwanted %#x", got, got&tc.wantOff)
			}
			if fs.cfg == nil || fs.cfg.Flags != got {
				t.Errorf("FileSystem saw config %+v, reply flags %#x", fs.cfg, got)
			}
		})
	}
}

// FuzzSecCtx checks the decoder on arbitrary blocks: it never panics, and
// what it accepts is well formed and lies inside the block.
func FuzzSecCtx(f *testing.F) {
	for _, b := range [][]byte{secBlock(), secBlock(selinux), secBlock(selinux, smack), patch(secBlock(selinux), 8, 0xffff)} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, e := decodeSecCtx(b, nil)
		if e != OK {
			if e != syscall.EINVAL {
				t.Fatalf("errno %v", e)
			}
			return
		}
		if len(got) > int(MaxNrSecctx) {
			t.Fatalf("%d contexts", len(got))
		}
		for _, c := range got {
			if !strings.HasPrefix(c.Name, secCtxPrefix) || len(c.Name) > MaxXattrNameLen || strings.IndexByte(c.Name, 0) >= 0 || len(c.Value) == 0 {
				t.Fatalf("accepted %q=%q", c.Name, c.Value)
			}
		}
		// The same block after names on a 7.37 session and as an
		// extension on a 7.45 one: no panic, a well-formed reply.
		var log bytes.Buffer
		for _, minor := range []uint32{37, 45} {
			fs := &fakeFS{}
			s := NewServer(fs, Options{Enable: InitSecurityCtx, Logger: testLogger(&log)})
			s.Handle(msg(OpInit, 0, initIn(minor)), nil, &recReplier{})
			req := msg(OpMkdir, 1, &MkdirIn{}, "d", b)
			if minor >= 38 && len(b)%8 == 0 {
				req = withExt(msg(OpMkdir, 1, &MkdirIn{}, "d"), b)
			}
			r := &recReplier{}
			s.Handle(req, nil, r)
			if r.n != 1 {
				t.Fatalf("7.%d: %d replies", minor, r.n)
			}
		}
		if strings.Contains(log.String(), "panic") {
			t.Fatalf("request panicked: %s", log.String())
		}
	})
}

// secMap is an XattrMapper that moves security.selinux under
// trusted.virtiofs. and refuses other names with EPERM.
type secMap struct{}

func (secMap) ToHost(name string) (string, syscall.Errno) {
	if name == "security.selinux" {
		return "trusted.virtiofs." + name, OK
	}
	return "", syscall.EPERM
}

func (secMap) ListToGuest(dst, list []byte) []byte { return append(dst, list...) }

// TestSecCtxXattrMap: security context names go through Options.XattrMap
// like SETXATTR names; a refused one fails the request before the
// FileSystem sees it.
func TestSecCtxXattrMap(t *testing.T) {
	for _, minor := range []uint32{37, 45} {
		s, fs := sessionAt(t, minor, Options{Enable: InitSecurityCtx, XattrMap: secMap{}})
		req := func(b []byte) []byte {
			if minor >= 38 {
				return withExt(msg(OpMkdir, 1, &MkdirIn{}, "d"), b)
			}
			return msg(OpMkdir, 1, &MkdirIn{}, "d", b)
		}
		if oh := call(s, req(secBlock(selinux))).header(t); oh.Error != 0 {
			t.Fatalf("7.%d: error %d", minor, oh.Error)
		}
		wantSecCtx(t, "Mkdir", fs, SecCtx{Name: "trusted.virtiofs.security.selinux", Value: selinux.Value})
		before := len(fs.calls)
		if oh := call(s, req(secBlock(smack))).header(t); oh.Error != -int32(syscall.EPERM) {
			t.Fatalf("7.%d refused name: error %d, want EPERM", minor, oh.Error)
		}
		if len(fs.calls) != before {
			t.Fatalf("7.%d: a refused name reached the FileSystem", minor)
		}
	}
}
