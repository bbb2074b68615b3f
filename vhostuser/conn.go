package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// errDrop ends a connection whose byte stream cannot be trusted any more.
var errDrop = errors.New("vhostuser: dropping the connection")

// message is one received front-end message. The handler takes the fds it
// keeps (setting their slots to -1); the rest are closed after it.
type message struct {
	hdr     Header
	payload []byte
	fds     []int
}

// takeFD removes and returns the message's only fd; ok is false unless
// exactly one was sent.
func (m *message) takeFD() (int, bool) {
	if len(m.fds) != 1 {
		return -1, false
	}
	fd := m.fds[0]
	m.fds[0] = -1
	return fd, true
}

// closeFDs closes the fds not taken.
func (m *message) closeFDs() {
	for i, fd := range m.fds {
		if fd >= 0 {
			unix.Close(fd)
			m.fds[i] = -1
		}
	}
}

// wire reads messages from and writes replies to a front-end socket.
type wire struct {
	c   *net.UnixConn
	buf []byte
	oob []byte
	fds []int
}

func newWire(c *net.UnixConn) *wire {
	return &wire{c: c, buf: make([]byte, HeaderSize+MaxPayload), oob: make([]byte, unix.CmsgSpace(4*MaxFDs))}
}

// fill reads exactly len(b) bytes, collecting any fds that come with them.
func (w *wire) fill(b []byte) error {
	for len(b) > 0 {
		n, oobn, flags, _, err := w.c.ReadMsgUnix(b, w.oob)
		if oobn > 0 {
			if perr := w.parseRights(w.oob[:oobn]); perr != nil && err == nil {
				err = perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 && err == nil {
			err = fmt.Errorf("%w: more than %d fds in one message", errDrop, MaxFDs)
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return io.EOF
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (w *wire) parseRights(oob []byte) error {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("%w: bad control message: %v", errDrop, err)
	}
	for _, cm := range cmsgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			return fmt.Errorf("%w: bad SCM_RIGHTS: %v", errDrop, err)
		}
		w.fds = append(w.fds, fds...)
	}
	if len(w.fds) > MaxFDs {
		return fmt.Errorf("%w: more than %d fds in one message", errDrop, MaxFDs)
	}
	return nil
}

// read returns the next message. io.EOF means the front-end closed the
// connection between messages; any other error means it must be dropped.
func (w *wire) read() (*message, error) {
	w.fds = w.fds[:0]
	m, err := w.readMsg()
	if err != nil {
		for _, fd := range w.fds {
			unix.Close(fd)
		}
		w.fds = w.fds[:0]
		return nil, err
	}
	return m, nil
}

func (w *wire) readMsg() (*message, error) {
	if err := w.fill(w.buf[:HeaderSize]); err != nil {
		if err == io.EOF && len(w.fds) == 0 {
			return nil, io.EOF
		}
		return nil, err
	}
	hdr, _ := DecodeHeader(w.buf)
	if hdr.Flags&FlagVersionMk != FlagVersion {
		return nil, fmt.Errorf("%w: %v with protocol version %d", errDrop, hdr.Request, hdr.Flags&FlagVersionMk)
	}
	if hdr.Size > MaxPayload {
		return nil, fmt.Errorf("%w: %v with a payload of %d bytes (at most %d)", errDrop, hdr.Request, hdr.Size, MaxPayload)
	}
	payload := w.buf[HeaderSize : HeaderSize+int(hdr.Size)]
	if err := w.fill(payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := &message{hdr: hdr, payload: payload}
	if len(w.fds) > 0 {
		m.fds = append([]int(nil), w.fds...)
	}
	return m, nil
}

// reply sends a reply to req with payload.
func (w *wire) reply(req Request, payload []byte) error {
	b := Header{Request: req, Flags: FlagVersion | FlagReply, Size: uint32(len(payload))}.Encode(make([]byte, 0, HeaderSize+len(payload)))
	_, err := w.c.Write(append(b, payload...))
	return err
}
