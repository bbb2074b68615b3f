package fuseproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Migrator is implemented by a FileSystem whose state can move to another
// process: vhost-user device-state migration (VHOST_USER_SET_DEVICE_STATE_FD).
// SaveState runs on the source after the transport has stopped, LoadState
// on the destination before any request, on a FileSystem no guest has used.
// LoadState must treat its input as hostile: bounded sizes and counts,
// errors rather than panics, and on error leave nothing of the state behind.
type Migrator interface {
	SaveState(w io.Writer) error
	LoadState(r io.Reader) error
}

// The migration stream SaveState writes and LoadState reads: an envelope
// around the FileSystem's own section, so that a destination serves the
// guest's session without a new FUSE_INIT. All integers are little-endian.
//
//	magic   "govfsmig" (8 bytes)
//	version u32 = 1
//	records, each: tag (4 bytes), length u32, payload
//	  "SESS" (24 bytes): minor u32 (0: no session yet), flags u64,
//	         max_write u32, max_readahead u32, reserved u32 (0)
//	  "FSYS" the FileSystem's section (Migrator.SaveState), at most
//	         MaxStateSize bytes
//	  "END." (4 bytes): CRC-32C of every byte before this record
//
// SESS and FSYS appear exactly once, in that order, and END. last; records
// with other tags are skipped, so that a later version can add optional
// ones. Nothing is read after END.
//
// A binary envelope rather than JSON: the FileSystem's section is opaque
// bytes, and names and file handles inside it are arbitrary bytes too; a
// fixed layout is checked field by field with hard bounds and decodes with
// no allocation proportional to anything but the bytes actually received.
const (
	stateMagic   = "govfsmig"
	stateVersion = 1

	// MaxStateSize bounds the FileSystem's section LoadState accepts.
	MaxStateSize = 1 << 30
	// maxSkipped bounds the bytes of unknown records LoadState skips.
	maxSkipped = 1 << 20

	sessSize = 24
)

var (
	tagSession = [4]byte{'S', 'E', 'S', 'S'}
	tagFS      = [4]byte{'F', 'S', 'Y', 'S'}
	tagEnd     = [4]byte{'E', 'N', 'D', '.'}

	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// SaveState writes the session negotiated by INIT and the FileSystem's state
// (Migrator.SaveState) to w. It fails if the FileSystem is not a Migrator.
//
// Preconditions: no request is being handled and none will be until the
// migration ends (the transport has stopped its queues).
func (s *Server) SaveState(w io.Writer) error {
	m, ok := s.fs.(Migrator)
	if !ok {
		return fmt.Errorf("fuseproto: the filesystem (%T) does not support migration", s.fs)
	}
	var fsState bytes.Buffer
	if err := m.SaveState(&fsState); err != nil {
		return fmt.Errorf("fuseproto: save filesystem state: %w", err)
	}
	if fsState.Len() > MaxStateSize {
		return fmt.Errorf("fuseproto: filesystem state of %d bytes is larger than %d", fsState.Len(), MaxStateSize)
	}
	var cfg Config
	if c := s.cfg.Load(); c != nil {
		cfg = *c
	}
	var b bytes.Buffer
	b.Grow(len(stateMagic) + 4 + 3*8 + sessSize + 4 + fsState.Len())
	b.WriteString(stateMagic)
	b.Write(binary.LittleEndian.AppendUint32(nil, stateVersion))
	var sess [sessSize]byte
	binary.LittleEndian.PutUint32(sess[0:], cfg.Minor)
	binary.LittleEndian.PutUint64(sess[4:], cfg.Flags)
	binary.LittleEndian.PutUint32(sess[12:], cfg.MaxWrite)
	binary.LittleEndian.PutUint32(sess[16:], cfg.MaxReadahead)
	writeRecord(&b, tagSession, sess[:])
	writeRecord(&b, tagFS, fsState.Bytes())
	sum := crc32.Checksum(b.Bytes(), crcTable)
	writeRecord(&b, tagEnd, binary.LittleEndian.AppendUint32(nil, sum))
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("fuseproto: write migration state: %w", err)
	}
	return nil
}

func writeRecord(b *bytes.Buffer, tag [4]byte, payload []byte) {
	b.Write(tag[:])
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(payload))))
	b.Write(payload)
}

// LoadState reads a stream SaveState wrote on a migration source, restores
// the session (as if the guest had sent the same INIT: the FileSystem's Init
// is called with it) and hands the FileSystem's section to
// Migrator.LoadState. Requests are then served with no new INIT.
//
// The stream is untrusted: it is checked completely (sizes, order,
// checksum) before anything is applied, and refused if the session uses
// INIT flags this Server would not enable, a protocol minor it does not
// speak, or a max_write larger than its own. On error the Server has no
// session and the FileSystem has been told Destroy.
//
// Preconditions: the Server has no session (no INIT yet) and handles no
// request until LoadState returns.
func (s *Server) LoadState(r io.Reader) error {
	m, ok := s.fs.(Migrator)
	if !ok {
		return fmt.Errorf("fuseproto: the filesystem (%T) does not support migration", s.fs)
	}
	if s.cfg.Load() != nil {
		return errors.New("fuseproto: LoadState on a Server with a FUSE session")
	}
	cfg, fsState, err := s.decodeState(r)
	if err != nil {
		return err
	}
	if cfg != nil {
		s.fs.Init(cfg)
	}
	if err := m.LoadState(bytes.NewReader(fsState)); err != nil {
		s.fs.Destroy()
		return fmt.Errorf("fuseproto: load filesystem state: %w", err)
	}
	if cfg != nil {
		s.cfg.Store(cfg)
	}
	return nil
}

// decodeState reads and checks the envelope; cfg is nil when the source had
// no session.
func (s *Server) decodeState(r io.Reader) (cfg *Config, fsState []byte, err error) {
	sum := crc32.New(crcTable)
	in := io.TeeReader(r, sum)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("fuseproto: migration state: "+format, args...)
	}
	var hdr [len(stateMagic) + 4]byte
	if _, err := io.ReadFull(in, hdr[:]); err != nil {
		return nil, nil, bad("header: %v", err)
	}
	if string(hdr[:len(stateMagic)]) != stateMagic {
		return nil, nil, bad("bad magic")
	}
	if v := binary.LittleEndian.Uint32(hdr[len(stateMagic):]); v != stateVersion {
		return nil, nil, bad("version %d, want %d", v, stateVersion)
	}
	var sess []byte
	var haveFS bool
	skipped := 0
	for {
		before := sum.Sum32() // of every byte before this record
		var rh [8]byte
		if _, err := io.ReadFull(in, rh[:]); err != nil {
			return nil, nil, bad("record header: %v", err)
		}
		tag := [4]byte(rh[:4])
		n := binary.LittleEndian.Uint32(rh[4:])
		switch tag {
		case tagSession:
			if sess != nil || haveFS {
				return nil, nil, bad("session record out of order")
			}
			if n != sessSize {
				return nil, nil, bad("session record of %d bytes", n)
			}
			sess = make([]byte, sessSize)
			if _, err := io.ReadFull(in, sess); err != nil {
				return nil, nil, bad("session record: %v", err)
			}
		case tagFS:
			if sess == nil || haveFS {
				return nil, nil, bad("filesystem record out of order")
			}
			if n > MaxStateSize {
				return nil, nil, bad("filesystem record of %d bytes is larger than %d", n, MaxStateSize)
			}
			// Grows with the bytes that arrive, not with n.
			var buf bytes.Buffer
			if _, err := io.CopyN(&buf, in, int64(n)); err != nil {
				return nil, nil, bad("filesystem record: %v", err)
			}
			fsState, haveFS = buf.Bytes(), true
		case tagEnd:
			if n != 4 {
				return nil, nil, bad("end record of %d bytes", n)
			}
			var b [4]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return nil, nil, bad("end record: %v", err)
			}
			if got := binary.LittleEndian.Uint32(b[:]); got != before {
				return nil, nil, bad("checksum %#08x, want %#08x", got, before)
			}
			if !haveFS {
				return nil, nil, bad("no filesystem record")
			}
			cfg, err := s.checkSession(sess)
			if err != nil {
				return nil, nil, err
			}
			return cfg, fsState, nil
		default:
			skipped += int(n)
			if n > maxSkipped || skipped > maxSkipped {
				return nil, nil, bad("unknown records of more than %d bytes", maxSkipped)
			}
			if _, err := io.CopyN(io.Discard, in, int64(n)); err != nil {
				return nil, nil, bad("unknown record: %v", err)
			}
		}
	}
}

// checkSession decodes a session record and checks that this Server could
// have negotiated it: a minor it speaks, only INIT flags it would enable
// (DefaultInitFlags and Options.Enable, less Options.Disable: the rule of
// negotiate), and a max_write within its own. It returns nil for "no
// session".
func (s *Server) checkSession(b []byte) (*Config, error) {
	cfg := Config{
		Minor:        binary.LittleEndian.Uint32(b[0:]),
		Flags:        binary.LittleEndian.Uint64(b[4:]),
		MaxWrite:     binary.LittleEndian.Uint32(b[12:]),
		MaxReadahead: binary.LittleEndian.Uint32(b[16:]),
	}
	if binary.LittleEndian.Uint32(b[20:]) != 0 {
		return nil, errors.New("fuseproto: migration state: reserved session field set")
	}
	if cfg.Minor == 0 {
		if cfg.Flags != 0 || cfg.MaxWrite != 0 || cfg.MaxReadahead != 0 {
			return nil, errors.New("fuseproto: migration state: session fields without a session")
		}
		return nil, nil
	}
	if cfg.Minor < MinKernelMinor || cfg.Minor > KernelMinorVersion {
		return nil, fmt.Errorf("fuseproto: migration state: protocol 7.%d, this server speaks 7.%d to 7.%d", cfg.Minor, MinKernelMinor, KernelMinorVersion)
	}
	want := (DefaultInitFlags | s.opts.Enable&optionalInitFlags) &^ s.opts.Disable
	if extra := cfg.Flags &^ want; extra != 0 {
		return nil, fmt.Errorf("fuseproto: migration state: the source's session has INIT flags %#x this server does not enable (check --writeback, --posix-acl, --security-label, --killpriv-v2, --allow-mmap, --no-readdirplus and the like match)", extra)
	}
	if cfg.MaxWrite == 0 || cfg.MaxWrite > s.maxWrite {
		return nil, fmt.Errorf("fuseproto: migration state: max_write %d, this server takes at most %d", cfg.MaxWrite, s.maxWrite)
	}
	return &cfg, nil
}
