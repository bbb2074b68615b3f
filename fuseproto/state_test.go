package fuseproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"syscall"
	"testing"
)

// migFS is a fakeFS that migrates a blob.
type migFS struct {
	*fakeFS
	state   []byte // what SaveState writes
	loaded  []byte // what LoadState read
	loadErr error
	inits   int
}

func (m *migFS) SaveState(w io.Writer) error { _, err := w.Write(m.state); return err }
func (m *migFS) LoadState(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.loaded = b
	return m.loadErr
}
func (m *migFS) Init(cfg *Config) { m.inits++; m.fakeFS.Init(cfg) }

var _ Migrator = (*migFS)(nil)

// migSession returns a Server over a migFS after a 7.45 INIT (or none).
func migSession(t testing.TB, opts Options, initMinor uint32) (*Server, *migFS) {
	t.Helper()
	fs := &migFS{fakeFS: &fakeFS{}, state: []byte("filesystem state \x00\xff")}
	s := NewServer(fs, opts)
	if initMinor != 0 {
		var oh OutHeader
		if r := call(s, msg(OpInit, 0, initIn(initMinor))); !Decode(r.msg, &oh) || oh.Error != 0 {
			t.Fatalf("INIT failed: %d", oh.Error)
		}
	}
	return s, fs
}

func saved(t *testing.T, s *Server) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := s.SaveState(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestStateRoundTrip: a destination Server serves the source's session
// without an INIT, with the same negotiated flags, and hands the
// FileSystem its section.
func TestStateRoundTrip(t *testing.T) {
	for _, minor := range []uint32{45, 31, 0} {
		src, srcFS := migSession(t, Options{Enable: InitWritebackCache}, minor)
		b := saved(t, src)

		dst, dstFS := migSession(t, Options{Enable: InitWritebackCache}, 0)
		if err := dst.LoadState(bytes.NewReader(b)); err != nil {
			t.Fatalf("minor %d: %v", minor, err)
		}
		if !bytes.Equal(dstFS.loaded, srcFS.state) {
			t.Errorf("minor %d: filesystem got %q, want %q", minor, dstFS.loaded, srcFS.state)
		}
		r := call(dst, msg(OpGetattr, 1, &GetattrIn{}))
		if minor == 0 {
			if dst.cfg.Load() != nil || dstFS.inits != 0 {
				t.Errorf("no session on the source, yet one on the destination")
			}
			if oh := r.header(t); oh.Error != -int32(syscall.EIO) {
				t.Errorf("GETATTR without a session: %d", oh.Error)
			}
			continue
		}
		if oh := r.header(t); oh.Error != 0 {
			t.Errorf("minor %d: GETATTR after LoadState: %d", minor, oh.Error)
		}
		want, got := src.cfg.Load(), dst.cfg.Load()
		if got == nil || *got != *want || dstFS.inits != 1 || dstFS.cfg == nil || *dstFS.cfg != *want {
			t.Errorf("minor %d: session %+v (Init called %d times with %+v), want %+v", minor, got, dstFS.inits, dstFS.cfg, want)
		}
		if !got.Has(InitWritebackCache) {
			t.Errorf("writeback cache lost")
		}
		// A second load is refused: the session exists.
		if err := dst.LoadState(bytes.NewReader(b)); err == nil {
			t.Error("LoadState over a session succeeded")
		}
	}
}

func TestStateNotMigrator(t *testing.T) {
	s, _ := newSession(t, Options{})
	if err := s.SaveState(io.Discard); err == nil || !strings.Contains(err.Error(), "does not support migration") {
		t.Errorf("SaveState with a plain FileSystem: %v", err)
	}
	s2 := NewServer(&fakeFS{}, Options{})
	if err := s2.LoadState(bytes.NewReader(nil)); err == nil {
		t.Error("LoadState with a plain FileSystem succeeded")
	}
}

// TestStateRefused: sessions the destination could not have negotiated,
// and a filesystem that refuses its section, leave no session.
func TestStateRefused(t *testing.T) {
	src, _ := migSession(t, Options{Enable: InitWritebackCache | InitPosixACL, MaxWrite: 1 << 20}, 45)
	b := saved(t, src)
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"writeback off", Options{Enable: InitPosixACL}, "INIT flags"},
		{"readdirplus disabled", Options{Enable: InitWritebackCache | InitPosixACL, Disable: InitDoReaddirplus}, "INIT flags"},
		{"smaller max_write", Options{Enable: InitWritebackCache | InitPosixACL, MaxWrite: 1 << 16}, "max_write"},
	} {
		dst, fs := migSession(t, tc.opts, 0)
		err := dst.LoadState(bytes.NewReader(b))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
		if dst.cfg.Load() != nil || fs.loaded != nil {
			t.Errorf("%s: state applied", tc.name)
		}
	}
	dst, fs := migSession(t, Options{Enable: InitWritebackCache | InitPosixACL}, 0)
	fs.loadErr = errors.New("no")
	if err := dst.LoadState(bytes.NewReader(b)); err == nil {
		t.Error("a failing filesystem LoadState succeeded")
	}
	if dst.cfg.Load() != nil || fs.last() != "Destroy" {
		t.Errorf("after a failed load: session %v, last call %q", dst.cfg.Load(), fs.last())
	}
}

// TestStateCorrupt: every truncation and every single-byte change of a good
// stream is refused (the checksum covers what the checks do not).
func TestStateCorrupt(t *testing.T) {
	src, _ := migSession(t, Options{}, 45)
	b := saved(t, src)
	for n := range len(b) {
		dst, fs := migSession(t, Options{}, 0)
		if err := dst.LoadState(bytes.NewReader(b[:n])); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
		if fs.loaded != nil {
			t.Fatalf("truncated to %d bytes: filesystem state applied", n)
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		dst, _ := migSession(t, Options{}, 0)
		if err := dst.LoadState(bytes.NewReader(c)); err == nil {
			t.Fatalf("byte %d changed: accepted", i)
		}
	}
}

// TestStateUnknownRecord: a record a later version adds is skipped, within
// bounds.
func TestStateUnknownRecord(t *testing.T) {
	src, _ := migSession(t, Options{}, 45)
	b := saved(t, src)
	// Insert an unknown record after the session record and fix the sum.
	at := len(stateMagic) + 4 + 8 + sessSize
	rec := append([]byte("XTRA\x03\x00\x00\x00"), "abc"...)
	c := append(append(append([]byte(nil), b[:at]...), rec...), b[at:len(b)-12]...)
	c = binary.LittleEndian.AppendUint32(append(c, "END."...), 4)
	c = binary.LittleEndian.AppendUint32(c, crc32.Checksum(c[:len(c)-8], crcTable))
	dst, _ := migSession(t, Options{}, 0)
	if err := dst.LoadState(bytes.NewReader(c)); err != nil {
		t.Fatalf("unknown record: %v", err)
	}
	huge := append(append([]byte(nil), b[:at]...), "XTRA\xff\xff\xff\x7f"...)
	dst, _ = migSession(t, Options{}, 0)
	if err := dst.LoadState(bytes.NewReader(huge)); err == nil {
		t.Fatal("a 2 GiB unknown record was accepted")
	}
}

// FuzzLoadState: no input panics LoadState or makes it allocate beyond what
// it read; whatever it accepts, the filesystem got intact.
func FuzzLoadState(f *testing.F) {
	for _, minor := range []uint32{45, 0} {
		s, _ := migSession(f, Options{}, minor)
		var b bytes.Buffer
		if err := s.SaveState(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte(stateMagic + "\x01\x00\x00\x00FSYS\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs := &migFS{fakeFS: &fakeFS{}}
		s := NewServer(fs, Options{})
		if err := s.LoadState(bytes.NewReader(b)); err != nil {
			if s.cfg.Load() != nil {
				t.Fatal("failed load left a session")
			}
			return
		}
		if len(fs.loaded) > len(b) {
			t.Fatalf("filesystem got %d bytes of a %d-byte stream", len(fs.loaded), len(b))
		}
	})
}
