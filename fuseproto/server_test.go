package fuseproto

import (
	"bytes"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recReplier records the reply a Server sends.
type recReplier struct {
	mu   sync.Mutex
	msg  []byte
	data BytesDest
	buf  []byte
	n    int // replies sent
}

func (r *recReplier) DataDest(max int) ReadDest {
	if cap(r.buf) < max {
		r.buf = make([]byte, max)
	}
	r.data.Reset(r.buf[:max])
	return &r.data
}

func (r *recReplier) Reply(msg []byte, dataLen int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msg = append(append(r.msg[:0], msg...), r.data.Bytes()[:dataLen]...)
	r.n++
}

func (r *recReplier) header(t *testing.T) OutHeader {
	t.Helper()
	var oh OutHeader
	if !Decode(r.msg, &oh) {
		t.Fatalf("reply of %d bytes has no header", len(r.msg))
	}
	if int(oh.Len) != len(r.msg) {
		t.Fatalf("reply header says %d bytes, %d sent", oh.Len, len(r.msg))
	}
	return oh
}

// msg builds a request: header, then each part (structs or raw bytes).
func msg(op Opcode, node uint64, parts ...any) []byte {
	var body []byte
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			body = append(body, v...)
		case string: // a NUL-terminated name
			body = append(append(body, v...), 0)
		case *GetattrIn:
			body = Encode(body, v)
		case *SetattrIn:
			body = Encode(body, v)
		case *MknodIn:
			body = Encode(body, v)
		case *MkdirIn:
			body = Encode(body, v)
		case *Rename2In:
			body = Encode(body, v)
		case *RenameIn:
			body = Encode(body, v)
		case *LinkIn:
			body = Encode(body, v)
		case *OpenIn:
			body = Encode(body, v)
		case *CreateIn:
			body = Encode(body, v)
		case *ReadIn:
			body = Encode(body, v)
		case *WriteIn:
			body = Encode(body, v)
		case *ReleaseIn:
			body = Encode(body, v)
		case *FlushIn:
			body = Encode(body, v)
		case *FsyncIn:
			body = Encode(body, v)
		case *SetxattrIn:
			body = Encode(body, v)
		case *GetxattrIn:
			body = Encode(body, v)
		case *LkIn:
			body = Encode(body, v)
		case *AccessIn:
			body = Encode(body, v)
		case *InitIn:
			body = Encode(body, v)
		case *InterruptIn:
			body = Encode(body, v)
		case *BmapIn:
			body = Encode(body, v)
		case *IoctlIn:
			body = Encode(body, v)
		case *PollIn:
			body = Encode(body, v)
		case *FallocateIn:
			body = Encode(body, v)
		case *LseekIn:
			body = Encode(body, v)
		case *CopyFileRangeIn:
			body = Encode(body, v)
		case *SyncfsIn:
			body = Encode(body, v)
		case *StatxIn:
			body = Encode(body, v)
		case *ForgetIn:
			body = Encode(body, v)
		case *BatchForgetIn:
			body = Encode(body, v)
		case *ForgetOne:
			body = Encode(body, v)
		default:
			panic("msg: unknown part")
		}
	}
	h := InHeader{Len: uint32(InHeaderSize + len(body)), Opcode: op, Unique: 100 + uint64(op), NodeID: node, UID: 1000, GID: 1001, PID: 77}
	return append(Encode(nil, &h), body...)
}

const allKernelFlags = uint64(1<<43 - 1)

func initIn(minor uint32) *InitIn {
	return &InitIn{Major: 7, Minor: minor, MaxReadahead: 1 << 17, Flags: uint32(allKernelFlags & 0xffffffff), Flags2: uint32(allKernelFlags >> 32)}
}

// newSession returns a Server over a fakeFS after a 7.45 INIT.
func newSession(t *testing.T, opts Options) (*Server, *fakeFS) {
	t.Helper()
	fs := &fakeFS{}
	s := NewServer(fs, opts)
	r := &recReplier{}
	s.Handle(msg(OpInit, 0, initIn(45)), nil, r)
	if oh := r.header(t); oh.Error != 0 {
		t.Fatalf("INIT failed: %d", oh.Error)
	}
	return s, fs
}

func call(s *Server, req []byte) *recReplier {
	r := &recReplier{}
	s.Handle(req, nil, r)
	return r
}

func TestInitNegotiation(t *testing.T) {
	tests := []struct {
		name      string
		in        *InitIn
		opts      Options
		wantErr   Errno
		wantMajor uint32
		wantMinor uint32
		wantSize  int
		wantOn    uint64
		wantOff   uint64
	}{
		{name: "7.45 kernel", in: initIn(45), wantMajor: 7, wantMinor: 45, wantSize: 64,
			wantOn: InitAsyncRead | InitPosixLocks | InitFlockLocks | InitDoReaddirplus | InitReaddirplusAuto | InitCreateSuppGroup | InitMaxPages | InitSetxattrExt,
			wantOff: InitWritebackCache | InitPosixACL | InitAllowIdmap | InitPassthrough | InitOverIoUring | InitSecurityCtx |
				InitHandleKillpriv | InitHandleKillprivV2 | InitDirectIOAllowMmap},
		{name: "newer minor speaks ours", in: initIn(50), wantMajor: 7, wantMinor: 45, wantSize: 64},
		{name: "7.31 kernel gets 7.31", in: initIn(31), wantMajor: 7, wantMinor: 31, wantSize: 64},
		{name: "7.19 kernel gets short reply", in: initIn(19), wantMajor: 7, wantMinor: 19, wantSize: 24},
		{name: "writeback when asked", in: initIn(45), opts: Options{Enable: InitWritebackCache | InitPosixACL | InitAllowIdmap},
			wantMajor: 7, wantMinor: 45, wantSize: 64, wantOn: InitWritebackCache | InitPosixACL | InitAllowIdmap},
		{name: "passthrough when asked", in: initIn(45), opts: Options{Enable: InitPassthrough},
			wantMajor: 7, wantMinor: 45, wantSize: 64, wantOn: InitPassthrough},
		{name: "no passthrough with writeback", in: initIn(45), opts: Options{Enable: InitPassthrough | InitWritebackCache},
			wantMajor: 7, wantMinor: 45, wantSize: 64, wantOn: InitWritebackCache, wantOff: InitPassthrough},
		{name: "no readdirplus", in: initIn(45), opts: Options{Disable: InitDoReaddirplus | InitReaddirplusAuto},
			wantMajor: 7, wantMinor: 45, wantSize: 64, wantOff: InitDoReaddirplus | InitReaddirplusAuto},
		{name: "flags not offered stay off", in: &InitIn{Major: 7, Minor: 45, Flags: uint32(InitAsyncRead)},
			opts: Options{Enable: InitWritebackCache}, wantMajor: 7, wantMinor: 45, wantSize: 64,
			wantOn: InitAsyncRead, wantOff: InitWritebackCache | InitPosixLocks},
		{name: "newer major asks again", in: &InitIn{Major: 8, Minor: 1}, wantMajor: 7, wantMinor: 45, wantSize: 64},
		{name: "older major refused", in: &InitIn{Major: 6, Minor: 40}, wantErr: syscall.EPROTO},
		{name: "ancient minor refused", in: initIn(12), wantErr: syscall.EPROTO},
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
				return
			}
			body := r.msg[OutHeaderSize:]
			if len(body) != tc.wantSize {
				t.Fatalf("reply body %d bytes, want %d", len(body), tc.wantSize)
			}
			var out InitOut
			copy(unsafeBytes(&out), body)
			if out.Major != tc.wantMajor || out.Minor != tc.wantMinor {
				t.Fatalf("version %d.%d, want %d.%d", out.Major, out.Minor, tc.wantMajor, tc.wantMinor)
			}
			if tc.in.Major != 7 {
				if fs.cfg != nil {
					t.Fatal("session started on a version mismatch")
				}
				return
			}
			got := uint64(out.Flags) | uint64(out.Flags2)<<32
			if got&tc.wantOn != tc.wantOn {
				t.Errorf("flags %#x lack %#x", got, tc.wantOn&^got)
			}
			if got&tc.wantOff != 0 {
				t.Errorf("flags %#x have unwanted %#x", got, got&tc.wantOff)
			}
			if fs.cfg == nil || fs.cfg.Flags != got || fs.cfg.Minor != tc.wantMinor {
				t.Errorf("FileSystem saw config %+v, reply flags %#x", fs.cfg, got)
			}
			if (got&InitPassthrough != 0) != (out.MaxStackDepth == passthroughStackDepth) {
				t.Errorf("passthrough %v with max_stack_depth %d", got&InitPassthrough != 0, out.MaxStackDepth)
			}
			if tc.wantSize == 64 && (out.MaxWrite != DefaultMaxWrite || (got&InitMaxPages != 0) != (out.MaxPages == 256) || out.TimeGran != 1) {
				t.Errorf("max_write %d max_pages %d time_gran %d", out.MaxWrite, out.MaxPages, out.TimeGran)
			}
		})
	}
}

func TestRequestBeforeInit(t *testing.T) {
	fs := &fakeFS{}
	s := NewServer(fs, Options{})
	r := call(s, msg(OpLookup, 1, "a"))
	if oh := r.header(t); oh.Error != -int32(syscall.EIO) {
		t.Fatalf("LOOKUP before INIT: error %d, want EIO", oh.Error)
	}
	if r := call(s, msg(OpForget, 5, &ForgetIn{Nlookup: 1})); r.n != 0 {
		t.Fatal("FORGET before INIT was answered")
	}
	if len(fs.calls) != 0 {
		t.Fatalf("FileSystem called before INIT: %v", fs.calls)
	}
}

func withLen(b []byte, n uint32) []byte {
	b = append([]byte(nil), b...)
	h := InHeader{}
	decode(b, &h)
	h.Len = n
	encode(b, &h)
	return b
}

func TestMalformedRequests(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		req  []byte
		want Errno
	}{
		{"short header", make([]byte, 20), syscall.EIO},
		{"length too long", withLen(msg(OpLookup, 1, "a"), 200), syscall.EIO},
		{"length too short", withLen(msg(OpLookup, 1, "a"), 40), syscall.EIO},
		{"unterminated name", msg(OpLookup, 1, []byte("abc")), syscall.EINVAL},
		{"empty name", msg(OpLookup, 1, ""), syscall.EINVAL},
		{"slash in name", msg(OpLookup, 1, "a/b"), syscall.EINVAL},
		{"dotdot path", msg(OpLookup, 1, "../etc"), syscall.EINVAL},
		{"NUL inside name", msg(OpMkdir, 1, &MkdirIn{Mode: 0o755}, []byte("a\x00b\x00")), OK},
		{"name too long", msg(OpLookup, 1, long), syscall.ENAMETOOLONG},
		{"mkdir dot", msg(OpMkdir, 1, &MkdirIn{}, "."), syscall.EEXIST},
		{"create dotdot", msg(OpCreate, 1, &CreateIn{}, ".."), syscall.EEXIST},
		{"unlink dotdot", msg(OpUnlink, 1, ".."), syscall.EISDIR},
		{"rmdir dot", msg(OpRmdir, 1, "."), syscall.EINVAL},
		{"rmdir dotdot", msg(OpRmdir, 1, ".."), syscall.ENOTEMPTY},
		{"rename to dotdot", msg(OpRename2, 1, &Rename2In{Newdir: 1}, "a", ".."), syscall.EBUSY},
		{"rename missing new name", msg(OpRename, 1, &RenameIn{Newdir: 1}, "a"), syscall.EINVAL},
		{"link slash", msg(OpLink, 1, &LinkIn{OldNodeID: 2}, "x/y"), syscall.EINVAL},
		{"symlink empty target", msg(OpSymlink, 1, "l", ""), syscall.ENOENT},
		{"symlink huge target", msg(OpSymlink, 1, "l", strings.Repeat("a", 5000)), syscall.ENAMETOOLONG},
		{"short getattr", msg(OpGetattr, 1, []byte{1, 2, 3}), syscall.EINVAL},
		{"short setattr", msg(OpSetattr, 1, make([]byte, 40)), syscall.EINVAL},
		{"short read", msg(OpRead, 1, make([]byte, 39)), syscall.EINVAL},
		{"write size lies", msg(OpWrite, 1, &WriteIn{Size: 10}, []byte("abc")), syscall.EINVAL},
		{"write beyond max_write", msg(OpWrite, 1, &WriteIn{Size: DefaultMaxWrite + 4096}, make([]byte, DefaultMaxWrite+4096)), syscall.EINVAL},
		{"setxattr value size lies", msg(OpSetxattr, 1, &SetxattrIn{Size: 9}, "user.a", []byte("v")), syscall.EINVAL},
		{"setxattr value too big", msg(OpSetxattr, 1, &SetxattrIn{Size: MaxXattrSize + 1}, "user.a"), syscall.E2BIG},
		{"xattr name too long", msg(OpGetxattr, 1, &GetxattrIn{Size: 10}, "user."+long), syscall.ERANGE},
		{"xattr name empty", msg(OpRemovexattr, 1, ""), syscall.EINVAL},
		{"ioctl unrestricted", msg(OpIoctl, 1, &IoctlIn{Flags: IoctlUnrestricted}), syscall.ENOSYS},
		{"ioctl in size lies", msg(OpIoctl, 1, &IoctlIn{InSize: 8}), syscall.EINVAL},
		{"unknown opcode", msg(Opcode(999), 1), syscall.ENOSYS},
		{"setupmapping (DAX)", msg(OpSetupMapping, 1, make([]byte, 40)), syscall.ENOSYS},
		{"second INIT-less opcode 0", msg(Opcode(0), 1), syscall.ENOSYS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, fs := newSession(t, Options{})
			before := len(fs.calls)
			r := call(s, tc.req)
			oh := r.header(t)
			if Errno(-oh.Error) != tc.want {
				t.Fatalf("error %d (%v), want %d (%v)", -oh.Error, Errno(-oh.Error), int(tc.want), tc.want)
			}
			if tc.want != OK && len(fs.calls) != before {
				t.Fatalf("bad request reached the FileSystem: %v", fs.calls[before:])
			}
		})
	}
}

// TestDispatch sends one valid request of every opcode and checks which
// FileSystem method ran and the exact size of the reply.
func TestDispatch(t *testing.T) {
	tests := []struct {
		req      []byte
		op       string
		replyLen int // -1: no reply
	}{
		{msg(OpLookup, 1, "a"), "Lookup", 16 + 128},
		{msg(OpGetattr, 2, &GetattrIn{}), "Getattr", 16 + 104},
		{msg(OpSetattr, 2, &SetattrIn{Valid: FattrMode, Mode: 0o600}), "Setattr", 16 + 104},
		{msg(OpReadlink, 2), "Readlink", 16 + 6},
		{msg(OpSymlink, 1, "l", "target"), "Symlink", 16 + 128},
		{msg(OpMknod, 1, &MknodIn{Mode: 0o10644}, "fifo"), "Mknod", 16 + 128},
		{msg(OpMkdir, 1, &MkdirIn{Mode: 0o755}, "d"), "Mkdir", 16 + 128},
		{msg(OpUnlink, 1, "f"), "Unlink", 16},
		{msg(OpRmdir, 1, "d"), "Rmdir", 16},
		{msg(OpRename, 1, &RenameIn{Newdir: 1}, "a", "b"), "Rename", 16},
		{msg(OpRename2, 1, &Rename2In{Newdir: 1, Flags: 2}, "a", "b"), "Rename", 16},
		{msg(OpLink, 1, &LinkIn{OldNodeID: 2}, "h"), "Link", 16 + 128},
		{msg(OpOpen, 2, &OpenIn{}), "Open", 16 + 16},
		{msg(OpCreate, 1, &CreateIn{Mode: 0o644}, "c"), "Create", 16 + 128 + 16},
		{msg(OpTmpfile, 1, &CreateIn{Mode: 0o644}, "/"), "Tmpfile", 16 + 128 + 16},
		{msg(OpRead, 2, &ReadIn{Size: 4}), "Read", 16 + 4},
		{msg(OpWrite, 2, &WriteIn{Size: 3}, []byte("abc")), "Write", 16 + 8},
		{msg(OpStatfs, 1), "Statfs", 16 + 80},
		{msg(OpRelease, 2, &ReleaseIn{}), "Release", 16},
		{msg(OpFsync, 2, &FsyncIn{}), "Fsync", 16},
		{msg(OpSetxattr, 2, &SetxattrIn{Size: 2}, "user.x", []byte("vv")), "Setxattr", 16},
		{msg(OpGetxattr, 2, &GetxattrIn{Size: 0}, "user.x"), "Getxattr", 16 + 8},
		{msg(OpGetxattr, 2, &GetxattrIn{Size: 100}, "user.x"), "Getxattr", 16 + 6},
		{msg(OpListxattr, 2, &GetxattrIn{Size: 100}), "Listxattr", 16 + 6},
		{msg(OpRemovexattr, 2, "user.x"), "Removexattr", 16},
		{msg(OpFlush, 2, &FlushIn{}), "Flush", 16},
		{msg(OpOpendir, 1, &OpenIn{}), "Opendir", 16 + 16},
		{msg(OpReaddir, 1, &ReadIn{Size: 4096}), "Readdir", 16 + 32 + 32},
		{msg(OpReaddirplus, 1, &ReadIn{Size: 4096}), "Readdir", 16 + 2*(128+32)},
		{msg(OpReleasedir, 1, &ReleaseIn{}), "Releasedir", 16},
		{msg(OpFsyncdir, 1, &FsyncIn{}), "Fsyncdir", 16},
		{msg(OpGetlk, 2, &LkIn{}), "Getlk", 16 + 24},
		{msg(OpSetlk, 2, &LkIn{}), "Setlk", 16},
		{msg(OpAccess, 2, &AccessIn{Mask: 4}), "Access", 16},
		{msg(OpBmap, 2, &BmapIn{}), "Bmap", 16 + 8},
		{msg(OpIoctl, 2, &IoctlIn{InSize: 4, OutSize: 8}, []byte("abcd")), "Ioctl", 16 + 16 + 4},
		{msg(OpPoll, 2, &PollIn{Events: 1}), "Poll", 16 + 8},
		{msg(OpFallocate, 2, &FallocateIn{Length: 10}), "Fallocate", 16},
		{msg(OpLseek, 2, &LseekIn{Whence: 3}), "Lseek", 16 + 8},
		{msg(OpCopyFileRange, 2, &CopyFileRangeIn{Len: 10}), "CopyFileRange", 16 + 8},
		{msg(OpCopyFileRange64, 2, &CopyFileRangeIn{Len: 10}), "CopyFileRange", 16 + 8},
		{msg(OpSyncfs, 1, &SyncfsIn{}), "Syncfs", 16},
		{msg(OpStatx, 2, &StatxIn{SxMask: 0xfff}), "Statx", 16 + 288},
		{msg(OpForget, 2, &ForgetIn{Nlookup: 3}), "Forget", -1},
		{msg(OpBatchForget, 0, &BatchForgetIn{Count: 1}, &ForgetOne{NodeID: 5, Nlookup: 2}), "Forget", -1},
		{msg(OpDestroy, 0), "Destroy", 16},
	}
	for _, tc := range tests {
		t.Run(opName(Opcode(tc.req[4])), func(t *testing.T) {
			s, fs := newSession(t, Options{})
			fs.data = []byte("target")
			fs.dirents = []string{"a", "bb"}
			r := call(s, tc.req)
			if got := fs.last(); got != tc.op {
				t.Fatalf("FileSystem call %q, want %q", got, tc.op)
			}
			if tc.replyLen < 0 {
				if r.n != 0 {
					t.Fatalf("reply sent to a request that takes none")
				}
				return
			}
			oh := r.header(t)
			if oh.Error != 0 || len(r.msg) != tc.replyLen {
				t.Fatalf("reply error %d, %d bytes; want 0, %d bytes", oh.Error, len(r.msg), tc.replyLen)
			}
			var in InHeader
			decode(tc.req, &in)
			if oh.Unique != in.Unique {
				t.Fatalf("reply unique %d, request %d", oh.Unique, in.Unique)
			}
		})
	}
}

func TestReplyContents(t *testing.T) {
	s, fs := newSession(t, Options{})
	fs.data = []byte("hello world")

	r := call(s, msg(OpRead, 2, &ReadIn{Size: 5}))
	if got := string(r.msg[OutHeaderSize:]); got != "hello" {
		t.Errorf("READ data %q", got)
	}
	// WRITE with the payload left in place by the transport.
	var src BytesSource
	src.Reset([]byte("payload"))
	req := msg(OpWrite, 2, &WriteIn{Size: 7})
	req = withLen(req, uint32(len(req)+7))
	r = &recReplier{}
	s.Handle(req, &src, r)
	var wo WriteOut
	Decode(r.msg[OutHeaderSize:], &wo)
	if r.header(t).Error != 0 || wo.Size != 7 || string(fs.written) != "payload" {
		t.Errorf("WRITE with payload: error %d size %d data %q", r.header(t).Error, wo.Size, fs.written)
	}
	// Getxattr: size query, then too small a buffer.
	r = call(s, msg(OpGetxattr, 2, &GetxattrIn{Size: 0}, "user.x"))
	var gx GetxattrOut
	Decode(r.msg[OutHeaderSize:], &gx)
	if gx.Size != 11 {
		t.Errorf("GETXATTR size query: %d, want 11", gx.Size)
	}
	r = call(s, msg(OpGetxattr, 2, &GetxattrIn{Size: 3}, "user.x"))
	if r.header(t).Error != -int32(syscall.ERANGE) {
		t.Errorf("GETXATTR into 3 bytes: error %d, want ERANGE", r.header(t).Error)
	}
	// SETXATTR with the extended struct (SETXATTR_EXT negotiated).
	r = call(s, msg(OpSetxattr, 2, &SetxattrIn{Size: 3, Flags: 1, SetxattrFlags: SetxattrACLKillSGID}, "user.y", []byte("abc")))
	if r.header(t).Error != 0 || fs.sxin.SetxattrFlags != SetxattrACLKillSGID || string(fs.written) != "abc" {
		t.Errorf("SETXATTR ext: error %d flags %d value %q", r.header(t).Error, fs.sxin.SetxattrFlags, fs.written)
	}
	// Names reach the FileSystem exactly.
	call(s, msg(OpRename2, 1, &Rename2In{Newdir: 3}, "old name", "new\tname"))
	if got := fs.names[len(fs.names)-2:]; got[0] != "old name" || got[1] != "new\tname" {
		t.Errorf("rename names %q", got)
	}
	// Legacy COPY_FILE_RANGE caps the count to 32 bits.
	r = call(s, msg(OpCopyFileRange, 2, &CopyFileRangeIn{Len: 1 << 40}))
	Decode(r.msg[OutHeaderSize:], &wo)
	if wo.Size != 0xfffff000 {
		t.Errorf("legacy copy_file_range reply %#x, want 0xfffff000", wo.Size)
	}
	r = call(s, msg(OpCopyFileRange64, 2, &CopyFileRangeIn{Len: 1 << 40}))
	var co CopyFileRangeOut
	Decode(r.msg[OutHeaderSize:], &co)
	if co.BytesCopied != 1<<40 {
		t.Errorf("copy_file_range_64 reply %d", co.BytesCopied)
	}
	// An errno from the FileSystem is sent as is.
	fs.errno = syscall.ENOENT
	r = call(s, msg(OpLookup, 1, "missing"))
	if r.header(t).Error != -int32(syscall.ENOENT) || len(r.msg) != OutHeaderSize {
		t.Errorf("LOOKUP ENOENT reply: error %d, %d bytes", r.header(t).Error, len(r.msg))
	}
}

func TestReaddirEncoding(t *testing.T) {
	s, fs := newSession(t, Options{})
	fs.dirents = []string{"a", "abcdefgh", "z"}
	for _, plus := range []bool{false, true} {
		op := OpReaddir
		if plus {
			op = OpReaddirplus
		}
		r := call(s, msg(op, 1, &ReadIn{Size: 4096}))
		b := r.msg[OutHeaderSize:]
		var names []string
		for len(b) > 0 {
			if plus {
				var e EntryOut
				Decode(b, &e)
				if e.NodeID == 0 {
					t.Fatal("READDIRPLUS entry without node ID")
				}
				b = b[EntryOutSize:]
			}
			var d Dirent
			if !Decode(b, &d) {
				t.Fatalf("truncated dirent")
			}
			names = append(names, string(b[DirentSize:DirentSize+int(d.Namelen)]))
			rec := (DirentSize + int(d.Namelen) + 7) &^ 7
			if d.Type != syscall.DT_REG || d.Off != uint64(len(names)) {
				t.Errorf("entry %q: type %d off %d", names[len(names)-1], d.Type, d.Off)
			}
			b = b[rec:]
		}
		if strings.Join(names, ",") != "a,abcdefgh,z" {
			t.Errorf("plus=%v: names %v", plus, names)
		}
	}
	// A buffer too small for the second entry stops the listing there.
	r := call(s, msg(OpReaddir, 1, &ReadIn{Size: 40}))
	if len(r.msg) != OutHeaderSize+32 {
		t.Errorf("40-byte READDIR returned %d bytes", len(r.msg)-OutHeaderSize)
	}
}

func TestForgetAndBatchForget(t *testing.T) {
	s, fs := newSession(t, Options{})
	call(s, msg(OpForget, 9, &ForgetIn{Nlookup: 4}))
	// count claims 3 entries but only 2 are present: only 2 are applied.
	r := call(s, msg(OpBatchForget, 0, &BatchForgetIn{Count: 3}, &ForgetOne{NodeID: 9, Nlookup: 1}, &ForgetOne{NodeID: 10, Nlookup: 2}))
	if r.n != 0 {
		t.Fatal("BATCH_FORGET answered")
	}
	if fs.forgets[9] != 5 || fs.forgets[10] != 2 || len(fs.forgets) != 2 {
		t.Fatalf("forgets %v", fs.forgets)
	}
}

func TestInterruptCancelsSetlkw(t *testing.T) {
	for _, early := range []bool{false, true} {
		s, fs := newSession(t, Options{})
		fs.block = true
		req := msg(OpSetlkw, 2, &LkIn{})
		var unique uint64 = 100 + uint64(OpSetlkw)
		if early {
			call(s, msg(OpInterrupt, 0, &InterruptIn{Unique: unique}))
		}
		done := make(chan *recReplier)
		go func() { done <- call(s, req) }()
		if !early {
			for fs.last() != "Setlkw" {
				time.Sleep(time.Millisecond)
			}
			if r := call(s, msg(OpInterrupt, 0, &InterruptIn{Unique: unique})); r.n != 0 {
				t.Fatal("INTERRUPT answered")
			}
		}
		select {
		case r := <-done:
			if r.header(t).Error != -int32(syscall.EINTR) {
				t.Fatalf("early=%v: SETLKW error %d, want EINTR", early, r.header(t).Error)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("early=%v: SETLKW not interrupted", early)
		}
	}
}

func TestPanicAnswersEIO(t *testing.T) {
	var logBuf bytes.Buffer
	s, fs := newSession(t, Options{Logger: testLogger(&logBuf)})
	fs.panicOp = "Mkdir"
	r := call(s, msg(OpMkdir, 1, &MkdirIn{}, "d"))
	if r.header(t).Error != -int32(syscall.EIO) {
		t.Fatalf("panic reply error %d, want EIO", r.header(t).Error)
	}
	if !strings.Contains(logBuf.String(), "panic") {
		t.Fatalf("panic not logged: %q", logBuf.String())
	}
	// The server keeps serving.
	fs.panicOp = ""
	if r := call(s, msg(OpMkdir, 1, &MkdirIn{}, "d")); r.header(t).Error != 0 {
		t.Fatal("server broken after a panic")
	}
}

func TestSuppGroupsExtension(t *testing.T) {
	s, fs := newSession(t, Options{})
	req := msg(OpLookup, 1, "a")
	ext := Encode(nil, &ExtHeader{Size: 16, Type: ExtGroups})
	ext = append(ext, 1, 0, 0, 0, 0xe8, 0x03, 0, 0) // nr_groups 1, group 1000
	req = append(req, ext...)
	var h InHeader
	decode(req, &h)
	h.Len = uint32(len(req))
	h.TotalExtlen = 2
	encode(req, &h)
	r := call(s, req)
	if r.header(t).Error != 0 {
		t.Fatalf("error %d", r.header(t).Error)
	}
	if len(fs.ctx.SuppGroups) != 1 || fs.ctx.SuppGroups[0] != 1000 || fs.names[len(fs.names)-1] != "a" {
		t.Fatalf("groups %v name %q", fs.ctx.SuppGroups, fs.names)
	}
	if fs.ctx.UID != 1000 || fs.ctx.GID != 1001 || fs.ctx.PID != 77 {
		t.Fatalf("context %+v", fs.ctx)
	}
	// An extension claiming more than is there is refused.
	h.TotalExtlen = 200
	encode(req, &h)
	if r := call(s, req); r.header(t).Error != -int32(syscall.EIO) {
		t.Fatalf("lying total_extlen: error %d", r.header(t).Error)
	}
}

func TestDestroyEndsSession(t *testing.T) {
	s, fs := newSession(t, Options{})
	call(s, msg(OpDestroy, 0))
	if fs.last() != "Destroy" {
		t.Fatal("Destroy not called")
	}
	if r := call(s, msg(OpGetattr, 1, &GetattrIn{})); r.header(t).Error != -int32(syscall.EIO) {
		t.Fatal("request after DESTROY served")
	}
}

// TestHotPathAllocs checks that READ, WRITE and GETATTR allocate nothing per
// request once the pools are warm.
func TestHotPathAllocs(t *testing.T) {
	s, fs := newSession(t, Options{})
	fs.data = make([]byte, 4096)
	r := &recReplier{}
	read := msg(OpRead, 2, &ReadIn{Size: 4096})
	getattr := msg(OpGetattr, 2, &GetattrIn{})
	for name, req := range map[string][]byte{"READ": read, "GETATTR": getattr} {
		s.Handle(req, nil, r)
		fs.calls = fs.calls[:0]
		allocs := testing.AllocsPerRun(200, func() {
			fs.calls = fs.calls[:0]
			s.Handle(req, nil, r)
		})
		if allocs > 0 {
			t.Errorf("%s: %.1f allocations per request", name, allocs)
		}
	}
}
