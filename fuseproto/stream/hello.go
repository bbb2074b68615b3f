// Package stream carries FUSE sessions over a byte stream: a vsock or unix
// socket connection, or a virtio-serial port. The daemon end (Serve) answers
// requests with a fuseproto.Server; the guest end (Relay) moves messages
// between the guest kernel's /dev/fuse and the stream.
//
// The wire format is the FUSE messages themselves, back to back: each
// request starts with its fuse_in_header and each reply or notification
// with its fuse_out_header, and both headers begin with the message's total
// length. Before the first message each end sends a Hello, which names the
// stream protocol's version, so that a mismatched pair fails at once with a
// clear message instead of misreading each other's bytes. Integers are
// little-endian, as FUSE's are on the hosts this runs on.
package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic starts every Hello.
const Magic = "GVFSTRM\x00"

// HelloSize is the encoded size of a Hello.
const HelloSize = 24

// Version is the stream protocol this package speaks: the major version in
// the high 16 bits, the minor in the low 16 (1.0). Ends with the same
// major version work together.
const Version = 1 << 16

// Hello statuses, the daemon's answer to the relay's Hello.
const (
	// StatusOK accepts the session.
	StatusOK = 0
	// StatusVersion refuses a relay whose major version differs.
	StatusVersion = 1
	// StatusBusy refuses a session the daemon cannot serve now (it is
	// shutting down, or cannot make the filesystem).
	StatusBusy = 2
)

// Hello is the first message on a stream in each direction: the relay sends
// one, the daemon answers with one.
type Hello struct {
	// Version is the sender's stream protocol version (Version).
	Version uint32
	// Status is the daemon's answer (StatusOK, ...); a relay sends 0.
	Status uint32
	// FuseMajor and FuseMinor are the FUSE protocol version the sender
	// supports at most, for the log.
	FuseMajor, FuseMinor uint32
}

// ErrNotStream is returned when a peer's first bytes are not a Hello.
var ErrNotStream = errors.New("not a govirtiofs stream (no hello)")

// MarshalBinary encodes h in HelloSize bytes.
func (h Hello) MarshalBinary() ([]byte, error) {
	b := make([]byte, HelloSize)
	h.put(b)
	return b, nil
}

func (h Hello) put(b []byte) {
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], h.Version)
	binary.LittleEndian.PutUint32(b[12:], h.Status)
	binary.LittleEndian.PutUint32(b[16:], h.FuseMajor)
	binary.LittleEndian.PutUint32(b[20:], h.FuseMinor)
}

// UnmarshalBinary decodes a Hello; it fails with ErrNotStream unless b is
// exactly HelloSize bytes starting with Magic.
func (h *Hello) UnmarshalBinary(b []byte) error {
	if len(b) != HelloSize || string(b[:8]) != Magic {
		return ErrNotStream
	}
	h.Version = binary.LittleEndian.Uint32(b[8:])
	h.Status = binary.LittleEndian.Uint32(b[12:])
	h.FuseMajor = binary.LittleEndian.Uint32(b[16:])
	h.FuseMinor = binary.LittleEndian.Uint32(b[20:])
	return nil
}

// Compatible reports whether a peer speaking version v can talk to us.
func Compatible(v uint32) bool { return v>>16 == Version>>16 }

// VersionString formats a stream protocol version as MAJOR.MINOR.
func VersionString(v uint32) string { return fmt.Sprintf("%d.%d", v>>16, v&0xffff) }

// WriteHello sends h on w.
func WriteHello(w io.Writer, h Hello) error {
	var b [HelloSize]byte
	h.put(b[:])
	_, err := w.Write(b[:])
	return err
}

// ReadHello reads the peer's Hello from r. Bytes before the Magic are
// skipped, up to skipMax of them: on a virtio-serial port, which outlives
// the programs at its ends, the tail of an earlier session may precede the
// Hello. With skipMax 0 the stream must start with the Hello. It returns
// ErrNotStream (wrapped, with what was seen) when no Hello comes within
// skipMax bytes; when the stream ends first, io.EOF if nothing came,
// io.ErrUnexpectedEOF if something did, or the read error. It reads at
// most up to the Hello's end, so a buffered reader should be given where
// many bytes may need skipping.
func ReadHello(r io.Reader, skipMax int) (Hello, error) {
	var b [HelloSize]byte
	have := 0
	skipped := 0
	for {
		n, err := r.Read(b[have:])
		have += n
		// Drop bytes that cannot start the Magic.
		for have > 0 {
			k := min(have, len(Magic))
			if bytes.Equal(b[:k], []byte(Magic[:k])) {
				break
			}
			if skipped >= skipMax {
				return Hello{}, fmt.Errorf("%w: first bytes %q", ErrNotStream, b[:have])
			}
			copy(b[:], b[1:have])
			have--
			skipped++
		}
		if have == HelloSize {
			var h Hello
			return h, h.UnmarshalBinary(b[:])
		}
		if err != nil {
			if err == io.EOF && (have > 0 || skipped > 0) {
				err = io.ErrUnexpectedEOF
			}
			return Hello{}, err
		}
	}
}
