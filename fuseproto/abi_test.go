package fuseproto

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/govirtiofs/govirtiofs/internal/cfuse"
)

// cName turns a Go field name into the kernel's: LockOwner -> lock_owner.
func cName(goName string) string {
	special := map[string]string{
		"UID": "uid", "GID": "gid", "PID": "pid", "NodeID": "nodeid", "OldNodeID": "oldnodeid",
		"NodeIDOut": "nodeid_out", "FhIn": "fh_in", "FhOut": "fh_out", "OffIn": "off_in", "OffOut": "off_out",
		"Atimensec": "atimensec", "Mtimensec": "mtimensec", "Ctimensec": "ctimensec",
		"Namelen": "namelen", "Nlookup": "nlookup", "Newdir": "newdir", "Unused4": "unused4", "Unused5": "unused5",
		"Flags2": "flags2", "Lk": "lk", "St": "st", "TotalExtlen": "total_extlen",
	}
	if c, ok := special[goName]; ok {
		return c
	}
	var b strings.Builder
	for i, r := range goName {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestABIAgainstCHeader checks every wire struct's size and field offsets
// against the C compiler's layout of the system's <linux/fuse.h>.
func TestABIAgainstCHeader(t *testing.T) {
	c := cfuse.Layouts()
	structs := map[string]any{
		"fuse_in_header": InHeader{}, "fuse_out_header": OutHeader{}, "fuse_attr": Attr{},
		"fuse_kstatfs": Kstatfs{}, "fuse_file_lock": FileLock{}, "fuse_entry_out": EntryOut{},
		"fuse_forget_in": ForgetIn{}, "fuse_forget_one": ForgetOne{}, "fuse_batch_forget_in": BatchForgetIn{},
		"fuse_getattr_in": GetattrIn{}, "fuse_attr_out": AttrOut{}, "fuse_mknod_in": MknodIn{},
		"fuse_mkdir_in": MkdirIn{}, "fuse_rename_in": RenameIn{}, "fuse_rename2_in": Rename2In{},
		"fuse_link_in": LinkIn{}, "fuse_setattr_in": SetattrIn{}, "fuse_open_in": OpenIn{},
		"fuse_create_in": CreateIn{}, "fuse_open_out": OpenOut{}, "fuse_release_in": ReleaseIn{},
		"fuse_flush_in": FlushIn{}, "fuse_read_in": ReadIn{}, "fuse_write_in": WriteIn{},
		"fuse_write_out": WriteOut{}, "fuse_statfs_out": StatfsOut{}, "fuse_fsync_in": FsyncIn{},
		"fuse_setxattr_in": SetxattrIn{}, "fuse_getxattr_in": GetxattrIn{}, "fuse_getxattr_out": GetxattrOut{},
		"fuse_lk_in": LkIn{}, "fuse_lk_out": LkOut{}, "fuse_access_in": AccessIn{}, "fuse_init_in": InitIn{},
		"fuse_init_out": InitOut{}, "fuse_interrupt_in": InterruptIn{}, "fuse_bmap_in": BmapIn{},
		"fuse_bmap_out": BmapOut{}, "fuse_ioctl_in": IoctlIn{}, "fuse_ioctl_out": IoctlOut{},
		"fuse_poll_in": PollIn{}, "fuse_poll_out": PollOut{}, "fuse_fallocate_in": FallocateIn{},
		"fuse_dirent": Dirent{}, "fuse_lseek_in": LseekIn{}, "fuse_lseek_out": LseekOut{},
		"fuse_copy_file_range_in": CopyFileRangeIn{}, "fuse_syncfs_in": SyncfsIn{}, "fuse_ext_header": ExtHeader{},
		"fuse_secctx_header": SecctxHeader{}, "fuse_secctx": Secctx{},
	}
	checked := 0
	for cs, v := range structs {
		typ := reflect.TypeOf(v)
		size, ok := c[cs]
		if !ok {
			t.Errorf("%s: not in the C layout table", cs)
			continue
		}
		if int(typ.Size()) != size {
			t.Errorf("%s: Go %s is %d bytes, C is %d", cs, typ.Name(), typ.Size(), size)
		}
		checked++
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := cs + "." + cName(f.Name)
			if off, ok := c[key]; ok {
				checked++
				if int(f.Offset) != off {
					t.Errorf("%s: Go offset %d, C offset %d", key, f.Offset, off)
				}
			}
		}
	}
	// fuse_dirent ends in a flexible name; fuse_direntplus is entry_out + dirent.
	if c["fuse_dirent.name"] != DirentSize || c["fuse_direntplus.dirent"] != EntryOutSize {
		t.Errorf("dirent layout: name at %d, direntplus.dirent at %d", c["fuse_dirent.name"], c["fuse_direntplus.dirent"])
	}
	if checked < 100 {
		t.Errorf("only %d sizes and offsets checked; the C table lost entries", checked)
	}
	t.Logf("checked %d sizes and offsets against <linux/fuse.h> 7.%d", checked, cfuse.HeaderMinor())
}

// TestABINewerThanHeader checks, by number, the structs and fields added
// after the system header's protocol version (7.39 to 7.45).
func TestABINewerThanHeader(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"fuse_sx_time", reflect.TypeOf(SxTime{}).Size(), 16},
		{"fuse_statx", reflect.TypeOf(Statx{}).Size(), 256},
		{"fuse_statx.mode", reflect.TypeOf(Statx{}).Field(6).Offset, 28},
		{"fuse_statx.ino", reflect.TypeOf(Statx{}).Field(8).Offset, 32},
		{"fuse_statx.atime", reflect.TypeOf(Statx{}).Field(12).Offset, 64},
		{"fuse_statx.btime", reflect.TypeOf(Statx{}).Field(13).Offset, 80},
		{"fuse_statx.rdev_major", reflect.TypeOf(Statx{}).Field(16).Offset, 128},
		{"fuse_statx_in", reflect.TypeOf(StatxIn{}).Size(), 24},
		{"fuse_statx_out", reflect.TypeOf(StatxOut{}).Size(), 288},
		{"fuse_statx_out.stat", reflect.TypeOf(StatxOut{}).Field(4).Offset, 32},
		{"fuse_copy_file_range_out", reflect.TypeOf(CopyFileRangeOut{}).Size(), 8},
		{"fuse_init_out.max_stack_depth", reflect.TypeOf(InitOut{}).Field(11).Offset, 36},
		{"fuse_init_out.request_timeout", reflect.TypeOf(InitOut{}).Field(12).Offset, 40},
		{"fuse_open_out.backing_id", reflect.TypeOf(OpenOut{}).Field(2).Offset, 12},
		{"EntryOutSize", reflect.TypeOf(EntryOut{}).Size(), EntryOutSize},
		{"AttrOutSize", reflect.TypeOf(AttrOut{}).Size(), AttrOutSize},
		{"InHeaderSize", reflect.TypeOf(InHeader{}).Size(), InHeaderSize},
		{"OutHeaderSize", reflect.TypeOf(OutHeader{}).Size(), OutHeaderSize},
		{"DirentSize", reflect.TypeOf(Dirent{}).Size(), DirentSize},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// TestEncodeDecodeRoundTrip checks that every wire struct survives
// Encode/Decode and that Decode refuses short input.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	rt := func(name string, in, out any, enc func() []byte, dec func(b []byte) bool) {
		b := enc()
		if !dec(b) {
			t.Errorf("%s: Decode of %d bytes failed", name, len(b))
		}
		if !reflect.DeepEqual(in, reflect.ValueOf(out).Elem().Interface()) {
			t.Errorf("%s: round trip changed %+v to %+v", name, in, out)
		}
		if dec(b[:len(b)-1]) {
			t.Errorf("%s: Decode accepted a short buffer", name)
		}
	}
	h := InHeader{Len: 1, Opcode: OpLookup, Unique: 2, NodeID: 3, UID: 4, GID: 5, PID: 6, TotalExtlen: 7}
	var h2 InHeader
	rt("InHeader", h, &h2, func() []byte { return Encode(nil, &h) }, func(b []byte) bool { return Decode(b, &h2) })
	e := EntryOut{NodeID: 9, Generation: 1, EntryValid: 2, AttrValid: 3, EntryValidNsec: 4, AttrValidNsec: 5,
		Attr: Attr{Ino: 6, Size: 7, Mode: 0o100644, Flags: AttrSubmount}}
	var e2 EntryOut
	rt("EntryOut", e, &e2, func() []byte { return Encode(nil, &e) }, func(b []byte) bool { return Decode(b, &e2) })
	sx := StatxOut{AttrValid: 1, Stat: Statx{Mask: 0xfff, Mode: 0o40755, Btime: SxTime{Sec: -5, Nsec: 7}, DevMinor: 3}}
	var sx2 StatxOut
	rt("StatxOut", sx, &sx2, func() []byte { return Encode(nil, &sx) }, func(b []byte) bool { return Decode(b, &sx2) })
	sa := SetattrIn{Valid: FattrMode | FattrMtimeNow, Fh: 1, Size: 2, LockOwner: 3, Atime: 4, Mtime: 5, Ctime: 6,
		Atimensec: 7, Mtimensec: 8, Ctimensec: 9, Mode: 10, UID: 11, GID: 12}
	var sa2 SetattrIn
	rt("SetattrIn", sa, &sa2, func() []byte { return Encode(nil, &sa) }, func(b []byte) bool { return Decode(b, &sa2) })
	io := InitOut{Major: 7, Minor: 45, Flags: 3, MaxWrite: 1 << 20, MaxPages: 256, Flags2: 9, RequestTimeout: 4}
	var io2 InitOut
	rt("InitOut", io, &io2, func() []byte { return Encode(nil, &io) }, func(b []byte) bool { return Decode(b, &io2) })
}
