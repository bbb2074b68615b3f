package overlay

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// roServer serves fs through a fuseproto.Server after a 7.45 INIT that
// offers everything, as a guest kernel mounting read-write would.
type roServer struct {
	t      *testing.T
	s      *fuseproto.Server
	unique uint64
}

func newROServer(t *testing.T, fsys fuseproto.FileSystem) *roServer {
	t.Helper()
	rs := &roServer{t: t, s: fuseproto.NewServer(fsys, fuseproto.Options{})}
	in := fuseproto.InitIn{Major: 7, Minor: 45, MaxReadahead: 1 << 17, Flags: 0xffffffff, Flags2: 1<<11 - 1}
	if e, _ := rs.call(fuseproto.OpInit, 0, &in); e != 0 {
		t.Fatalf("INIT: %v", e)
	}
	return rs
}

// replyRec records one reply.
type replyRec struct {
	msg  []byte
	data fuseproto.BytesDest
	buf  []byte
}

func (r *replyRec) DataDest(max int) fuseproto.ReadDest {
	r.buf = make([]byte, max)
	r.data.Reset(r.buf)
	return &r.data
}

func (r *replyRec) Reply(msg []byte, dataLen int) {
	r.msg = append(append([]byte(nil), msg...), r.data.Bytes()[:dataLen]...)
}

// call sends one request made of a header and parts (pointers to wire
// structs, []byte, or strings sent NUL-terminated) and returns the
// reply's errno and body.
func (rs *roServer) call(op fuseproto.Opcode, node uint64, parts ...any) (fuseproto.Errno, []byte) {
	rs.t.Helper()
	body := encodeParts(parts...)
	rs.unique++
	h := fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + len(body)), Opcode: op, Unique: rs.unique, NodeID: node}
	req := append(fuseproto.Encode(nil, &h), body...)
	var r replyRec
	rs.s.Handle(req, nil, &r)
	var oh fuseproto.OutHeader
	if !fuseproto.Decode(r.msg, &oh) {
		rs.t.Fatalf("opcode %d: no reply", op)
	}
	return fuseproto.Errno(-oh.Error), r.msg[fuseproto.OutHeaderSize:]
}

// encodeParts encodes a request body.
func encodeParts(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			b = append(b, v...)
		case string:
			b = append(append(b, v...), 0)
		case *fuseproto.InitIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.SetattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.MknodIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.MkdirIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.RenameIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.Rename2In:
			b = fuseproto.Encode(b, v)
		case *fuseproto.LinkIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.OpenIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.CreateIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.ReadIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.WriteIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.SetxattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.GetxattrIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.FallocateIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.CopyFileRangeIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.IoctlIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.AccessIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.ReleaseIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.FsyncIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.LkIn:
			b = fuseproto.Encode(b, v)
		case *fuseproto.GetattrIn:
			b = fuseproto.Encode(b, v)
		default:
			panic(fmt.Sprintf("encodeParts: %T", p))
		}
	}
	return b
}

// guestRow is one raw request of TestReadOnlyGuest.
type guestRow struct {
	name  string
	op    fuseproto.Opcode
	node  uint64
	parts []any
	want  fuseproto.Errno
}

// guestRows lists the modifying requests a guest that mounted the share
// read-write could send, as raw FUSE messages: node ids f (a file, open
// read-only as fh), d (a directory holding x) and s (a symlink).
func guestRows(f, d, s, fh uint64) []guestRow {
	rofs := fuseproto.Errno(unix.EROFS)
	root := uint64(fuseproto.RootID)
	ioctlArg := make([]byte, 8)
	binary.NativeEndian.PutUint32(ioctlArg, 0x10) // FS_IMMUTABLE_FL
	fsx := make([]byte, 28)
	var rows []guestRow
	for _, fl := range []uint32{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND, unix.O_RDONLY | unix.O_CREAT} {
		rows = append(rows,
			guestRow{fmt.Sprintf("OPEN %#o", fl), fuseproto.OpOpen, f, []any{&fuseproto.OpenIn{Flags: fl}}, rofs},
			guestRow{fmt.Sprintf("CREATE %#o", fl|unix.O_CREAT), fuseproto.OpCreate, root, []any{&fuseproto.CreateIn{Flags: fl | unix.O_CREAT, Mode: 0o644}, "n"}, rofs},
		)
	}
	for _, fl := range []uint32{0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE, unix.RENAME_WHITEOUT} {
		rows = append(rows, guestRow{fmt.Sprintf("RENAME2 %#x", fl), fuseproto.OpRename2, root, []any{&fuseproto.Rename2In{Newdir: d, Flags: fl}, "f", "x"}, rofs})
	}
	for _, v := range []fuseproto.SetattrIn{
		{Valid: fuseproto.FattrMode, Mode: 0o777},
		{Valid: fuseproto.FattrUID, UID: 99},
		{Valid: fuseproto.FattrGID, GID: 99},
		{Valid: fuseproto.FattrSize},
		{Valid: fuseproto.FattrSize | fuseproto.FattrFh, Fh: fh},
		{Valid: fuseproto.FattrAtime | fuseproto.FattrMtime},
		{Valid: fuseproto.FattrAtimeNow | fuseproto.FattrMtimeNow | fuseproto.FattrAtime | fuseproto.FattrMtime},
		{Valid: fuseproto.FattrCtime},
	} {
		rows = append(rows, guestRow{fmt.Sprintf("SETATTR %#x", v.Valid), fuseproto.OpSetattr, f, []any{&v}, rofs})
	}
	for _, mode := range []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocCollapseRange, fallocInsertRange} {
		rows = append(rows, guestRow{fmt.Sprintf("FALLOCATE %#x", mode), fuseproto.OpFallocate, f, []any{&fuseproto.FallocateIn{Fh: fh, Length: 4096, Mode: mode}}, rofs})
	}
	rows = append(rows, []guestRow{
		{"MKNOD", fuseproto.OpMknod, root, []any{&fuseproto.MknodIn{Mode: unix.S_IFREG | 0o644}, "n"}, rofs},
		{"MKDIR", fuseproto.OpMkdir, d, []any{&fuseproto.MkdirIn{Mode: 0o755}, "n"}, rofs},
		{"SYMLINK", fuseproto.OpSymlink, root, []any{"n", "/"}, rofs},
		{"LINK", fuseproto.OpLink, d, []any{&fuseproto.LinkIn{OldNodeID: f}, "n"}, rofs},
		{"LINK symlink", fuseproto.OpLink, d, []any{&fuseproto.LinkIn{OldNodeID: s}, "n"}, rofs},
		{"UNLINK", fuseproto.OpUnlink, d, []any{"x"}, rofs},
		{"RMDIR", fuseproto.OpRmdir, root, []any{"empty"}, rofs},
		{"RENAME", fuseproto.OpRename, root, []any{&fuseproto.RenameIn{Newdir: root}, "f", "g"}, rofs},
		{"TMPFILE", fuseproto.OpTmpfile, d, []any{&fuseproto.CreateIn{Flags: unix.O_RDWR, Mode: 0o600}, "/"}, rofs},
		{"SETXATTR", fuseproto.OpSetxattr, f, []any{&fuseproto.SetxattrIn{Size: 1}, "user.b", []byte("1")}, rofs},
		{"REMOVEXATTR", fuseproto.OpRemovexattr, f, []any{"user.a"}, rofs},
		{"WRITE", fuseproto.OpWrite, f, []any{&fuseproto.WriteIn{Fh: fh, Size: 1}, []byte("w")}, rofs},
		{"WRITE bogus fh", fuseproto.OpWrite, f, []any{&fuseproto.WriteIn{Fh: bogusFh, Size: 1}, []byte("w")}, rofs},
		{"COPY_FILE_RANGE", fuseproto.OpCopyFileRange, f, []any{&fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: fh, NodeIDOut: f, OffOut: 1, Len: 1}}, rofs},
		{"COPY_FILE_RANGE_64 bogus out", fuseproto.OpCopyFileRange64, f, []any{&fuseproto.CopyFileRangeIn{FhIn: fh, FhOut: bogusFh, NodeIDOut: f, OffOut: 1, Len: 1}}, rofs},
		{"IOCTL SETFLAGS", fuseproto.OpIoctl, f, []any{&fuseproto.IoctlIn{Fh: fh, Cmd: iocSetFlags, InSize: 8}, ioctlArg}, rofs},
		// The overlay runs no FS_IOC_FSSETXATTR, writable or not.
		{"IOCTL FSSETXATTR", fuseproto.OpIoctl, f, []any{&fuseproto.IoctlIn{Fh: fh, Cmd: iocFsSetXattr, InSize: 28}, fsx}, unix.ENOTTY},
		{"ACCESS W_OK", fuseproto.OpAccess, f, []any{&fuseproto.AccessIn{Mask: unix.W_OK}}, rofs},
		// Reads still work.
		{"GETATTR", fuseproto.OpGetattr, f, []any{&fuseproto.GetattrIn{}}, 0},
		{"READ", fuseproto.OpRead, f, []any{&fuseproto.ReadIn{Fh: fh, Size: 4}}, 0},
		{"GETXATTR", fuseproto.OpGetxattr, f, []any{&fuseproto.GetxattrIn{Size: 64}, "user.a"}, 0},
		{"LISTXATTR", fuseproto.OpListxattr, f, []any{&fuseproto.GetxattrIn{Size: 64}}, 0},
		{"READLINK", fuseproto.OpReadlink, s, nil, 0},
		{"STATFS", fuseproto.OpStatfs, root, nil, 0},
		{"FSYNC", fuseproto.OpFsync, f, []any{&fuseproto.FsyncIn{Fh: fh}}, 0},
		{"SETLK flock", fuseproto.OpSetlk, f, []any{&fuseproto.LkIn{Fh: fh, Owner: 3, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: 1<<63 - 1}, LkFlags: fuseproto.LkFlock}}, 0},
		{"SETLK flock unlock", fuseproto.OpSetlk, f, []any{&fuseproto.LkIn{Fh: fh, Owner: 3, Lk: fuseproto.FileLock{Type: unix.F_UNLCK, End: 1<<63 - 1}, LkFlags: fuseproto.LkFlock}}, 0},
	}...)
	return rows
}

// TestReadOnlyGuest is TestReadOnlyEveryOp seen from a guest that mounted
// the read-only union read-write: raw FUSE requests through a Server, for
// each kind of read-only union.
func TestReadOnlyGuest(t *testing.T) {
	for _, mode := range []string{"no upper", "ReadOnly fresh upper", "ReadOnly used upper"} {
		t.Run(mode, func(t *testing.T) {
			u := roFixture(t, mode)
			before := hostSnapshot(t, u.base)
			rs := newROServer(t, u.mount())
			node := func(parent uint64, name string) uint64 {
				e, b := rs.call(fuseproto.OpLookup, parent, name)
				var out fuseproto.EntryOut
				if e != 0 || !fuseproto.Decode(b, &out) {
					t.Fatalf("LOOKUP %s: %v", name, e)
				}
				return out.NodeID
			}
			f, d, s := node(fuseproto.RootID, "f"), node(fuseproto.RootID, "d"), node(fuseproto.RootID, "s")
			e, b := rs.call(fuseproto.OpOpen, f, &fuseproto.OpenIn{Flags: unix.O_RDONLY})
			var oo fuseproto.OpenOut
			if e != 0 || !fuseproto.Decode(b, &oo) {
				t.Fatalf("OPEN: %v", e)
			}
			for _, r := range guestRows(f, d, s, oo.Fh) {
				if got, _ := rs.call(r.op, r.node, r.parts...); got != r.want {
					t.Errorf("%s: %v, want %v", r.name, got, r.want)
				}
			}
			rs.call(fuseproto.OpRelease, f, &fuseproto.ReleaseIn{Fh: oo.Fh})
			rs.call(fuseproto.OpDestroy, 0)
			u.fs.Close()
			u.fs = nil
			diffSnapshots(t, "layers", before, hostSnapshot(t, u.base))
		})
	}
}
