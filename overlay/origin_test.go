package overlay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// cpuEndianFlag is OVL_FH_FLAG_BIG_ENDIAN on a big-endian host, else 0:
// the flags a handle made on this host carries.
var cpuEndianFlag = func() byte {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	if b[0] == 0 {
		return 1
	}
	return 0
}()

// testLayer opens dir as lower layer 1.
func testLayer(t testing.TB, dir string) *layer {
	t.Helper()
	l, err := openLayer(dir, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l
}

// pathFd opens p O_PATH|O_NOFOLLOW.
func pathFd(t testing.TB, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestEncodeParseFH(t *testing.T) {
	for _, fsName := range []string{"tempdir", "tmpfs"} {
		t.Run(fsName, func(t *testing.T) {
			dir := t.TempDir()
			if fsName == "tmpfs" {
				dir = tmpfsDir(t)
			}
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			l := testLayer(t, dir)
			fd := pathFd(t, p)
			fb := encodeFH(fd, l)
			if fb == nil {
				t.Skipf("%s makes no file handles", fsName)
			}
			h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(fb) != fbHeader+len(h.Bytes()) || fb[0] != 0 || fb[1] != fbMagic || int(fb[2]) != len(fb) || fb[3] != cpuEndianFlag {
				t.Errorf("header % x, want version 0, magic fb, length %d, flags %d", fb[:5], len(fb), cpuEndianFlag)
			}
			typ, uuid, fid, ok := parseFH(fb)
			if !ok {
				t.Fatalf("parseFH rejects encodeFH's handle % x", fb)
			}
			if typ != h.Type() || !bytes.Equal(fid, h.Bytes()) || uuid != l.uuid {
				t.Errorf("parseFH = type %d uuid %x fid % x, want type %d uuid %x fid % x", typ, uuid, fid, h.Type(), l.uuid, h.Bytes())
			}
			if got := indexName(fb); got != hex.EncodeToString(fb) || len(got) != 2*len(fb) {
				t.Errorf("indexName = %q", got)
			}
			// The handle names the file: opening it finds the same inode.
			ofd, err := unix.OpenByHandleAt(l.mountFd, unix.NewFileHandle(typ, fid), unix.O_PATH|unix.O_CLOEXEC)
			if err != nil {
				t.Fatalf("open_by_handle_at: %v", err)
			}
			defer unix.Close(ofd)
			var a, b unix.Stat_t
			if unix.Fstat(ofd, &a) != nil || unix.Lstat(p, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
				t.Errorf("the handle opens inode %d, want %d", a.Ino, b.Ino)
			}
		})
	}
}

// validFB returns a well-formed handle with an 8-byte fid.
func validFB() []byte {
	b := make([]byte, fbHeader+8)
	b[1] = fbMagic
	b[2] = byte(len(b))
	b[3] = cpuEndianFlag
	b[4] = 1
	for i := 5; i < len(b); i++ {
		b[i] = byte(i)
	}
	return b
}

func TestParseFHRejects(t *testing.T) {
	mod := func(f func(b []byte) []byte) []byte { return f(validFB()) }
	if _, _, _, ok := parseFH(validFB()); !ok {
		t.Fatal("parseFH rejects the well-formed handle")
	}
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"one byte", []byte{0}, false},
		{"header minus one", mod(func(b []byte) []byte { b = b[:fbHeader-1]; b[2] = byte(len(b)); return b }), false},
		{"header only", mod(func(b []byte) []byte { b = b[:fbHeader]; b[2] = byte(len(b)); return b }), true},
		{"version 1", mod(func(b []byte) []byte { b[0] = 1; return b }), false},
		{"version 255", mod(func(b []byte) []byte { b[0] = 255; return b }), false},
		{"bad magic", mod(func(b []byte) []byte { b[1] = 0xfa; return b }), false},
		{"length too short", mod(func(b []byte) []byte { b[2]--; return b }), false},
		{"length too long", mod(func(b []byte) []byte { b[2]++; return b }), false},
		{"length zero", mod(func(b []byte) []byte { b[2] = 0; return b }), false},
		{"trailing byte", mod(func(b []byte) []byte { return append(b, 0) }), false},
		{"unknown flag 8", mod(func(b []byte) []byte { b[3] |= 8; return b }), false},
		{"unknown flag 0x80", mod(func(b []byte) []byte { b[3] |= 0x80; return b }), false},
		{"any-endian flag", mod(func(b []byte) []byte { b[3] |= 2; return b }), true},
		{"other endian with any-endian", mod(func(b []byte) []byte { b[3] = (cpuEndianFlag ^ 1) | 2; return b }), true},
		// Kernel overlayfs (ovl_check_fb_len) treats a handle of the
		// other byte order without OVL_FH_FLAG_ANY_ENDIAN as "origin
		// unknown": its bytes cannot be decoded here.
		{"other endian", mod(func(b []byte) []byte { b[3] = cpuEndianFlag ^ 1; return b }), false},
		{"too long for a byte length", bytes.Repeat([]byte{0}, 300), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			typ, _, fid, ok := parseFH(tc.b)
			if ok != tc.ok {
				t.Fatalf("parseFH(% x) ok = %v, want %v", tc.b, ok, tc.ok)
			}
			if ok && (typ != int32(tc.b[4]) || !bytes.Equal(fid, tc.b[fbHeader:])) {
				t.Errorf("parseFH(% x) = type %d fid % x", tc.b, typ, fid)
			}
			if !ok && fid != nil {
				t.Errorf("parseFH rejected but returned fid % x", fid)
			}
		})
	}
}

// TestDecodeOrigin decodes the origin handle of a lower file back to its
// identity, and refuses handles of another filesystem or garbage.
func TestDecodeOrigin(t *testing.T) {
	u := newUnion(t, tmpfsDir(t), 2, true)
	hostFile(t, u.L(2, "f"), "lower")
	fs := u.mount()
	fd := pathFd(t, u.L(2, "f"))
	fb := encodeFH(fd, fs.lowers[1])
	if fb == nil {
		t.Fatal("tmpfs made no file handle")
	}
	var st unix.Statx_t
	if err := statx(fd, &st); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second time from the cache
		k, nlink, ok := fs.decodeOrigin(fb)
		if !ok || k != keyOf(&st) || nlink != st.Nlink {
			t.Errorf("decodeOrigin #%d = %+v, nlink %d, %v, want %+v, nlink %d", i, k, nlink, ok, keyOf(&st), st.Nlink)
		}
	}
	other := bytes.Clone(fb)
	for i := 5; i < 21; i++ {
		other[i] ^= 0xff
	}
	if k, _, ok := fs.decodeOrigin(other); ok {
		t.Errorf("decodeOrigin of a handle with another UUID = %+v", k)
	}
	bad := bytes.Clone(fb)
	for i := fbHeader; i < len(bad); i++ {
		bad[i] ^= 0x5a
	}
	if k, _, ok := fs.decodeOrigin(bad); ok {
		t.Errorf("decodeOrigin of a garbled handle = %+v", k)
	}
	if _, _, ok := fs.decodeOrigin(fb[:fbHeader-1]); ok {
		t.Error("decodeOrigin accepts a truncated handle")
	}
}

// FuzzParseFH fuzzes the decoder of the origin xattr, which is read from
// the layers: parseFH must never panic and must accept only handles whose
// parts add up, and decodeOrigin must survive whatever parseFH accepts.
func FuzzParseFH(f *testing.F) {
	f.Add([]byte{})
	f.Add(validFB())
	f.Add(validFB()[:fbHeader])
	f.Add([]byte{0, 0xfb, 21, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0xfb, 255})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	var fs *FS
	if os.Geteuid() == 0 {
		u := newUnion(f, "", 1, true)
		hostFile(f, u.L(1, "f"), "x")
		fs = u.mount()
		fd := pathFd(f, u.L(1, "f"))
		if fb := encodeFH(fd, fs.lowers[0]); fb != nil {
			f.Add(fb)
			g := bytes.Clone(fb)
			g[len(g)-1] ^= 1
			f.Add(g)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		typ, uuid, fid, ok := parseFH(b)
		if !bytes.Equal(in, b) {
			t.Fatal("parseFH changed its input")
		}
		if !ok {
			return
		}
		if len(b) < fbHeader || b[0] != 0 || b[1] != fbMagic || int(b[2]) != len(b) || b[3]&^7 != 0 {
			t.Fatalf("parseFH accepted a malformed handle % x", b)
		}
		if typ != int32(b[4]) || !bytes.Equal(uuid[:], b[5:21]) || !bytes.Equal(fid, b[fbHeader:]) {
			t.Fatalf("parseFH(% x) = %d %x % x", b, typ, uuid, fid)
		}
		if n, err := hex.DecodeString(indexName(b)); err != nil || !bytes.Equal(n, b) {
			t.Fatalf("indexName does not round-trip: %v", err)
		}
		if fs != nil {
			fs.decodeOrigin(b)
		}
	})
}
