// Package frontend is a vhost-user front-end, the VMM's side of the
// protocol: the client end of the socket with fd passing and REPLY_ACK,
// guest memory in memfds (Memory), and driver-side split virtqueues
// (Driver) that build descriptor chains, kick, and read the used ring.
// Device puts them together the way QEMU starts a vhost-user-fs device, for
// load generators and tests that talk to any vhost-user back-end.
//
// The test helpers vhostuser/vutest and virtqueue/vqtest wrap this package.
package frontend

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
)

// Timeout bounds every wait for a back-end's reply.
const Timeout = 10 * time.Second

// ErrNack is a REPLY_ACK (or status reply) with a nonzero status.
var ErrNack = errors.New("frontend: back-end answered REPLY_ACK with failure")

// Client is the front-end end of a vhost-user socket.
type Client struct {
	// Conn is the socket.
	Conn *net.UnixConn
	// NeedReply sets NEED_REPLY on every message (Cloud Hypervisor does
	// once REPLY_ACK is negotiated) and checks each REPLY_ACK.
	NeedReply bool
	// Log records every request sent, in order.
	Log []vhostuser.Request
	// Protocol is the negotiated protocol feature set; it decides which
	// requests get a status reply.
	Protocol uint64
}

// Dial connects to the back-end listening on the unix socket path.
func Dial(path string) (*Client, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return &Client{Conn: c}, nil
}

// Close closes the socket.
func (c *Client) Close() error { return c.Conn.Close() }

// Send writes one message with fds; the flags get the version bits and,
// with NeedReply, NEED_REPLY.
func (c *Client) Send(req vhostuser.Request, flags uint32, payload []byte, fds ...int) error {
	c.Log = append(c.Log, req)
	flags |= vhostuser.FlagVersion
	if c.NeedReply {
		flags |= vhostuser.FlagNeedReply
	}
	b := vhostuser.Header{Request: req, Flags: flags, Size: uint32(len(payload))}.Encode(nil)
	b = append(b, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	n, _, err := c.Conn.WriteMsgUnix(b, oob, nil)
	if err == nil && n != len(b) {
		_, err = c.Conn.Write(b[n:])
	}
	return err
}

// SendRaw writes bytes as they are (for malformed messages).
func (c *Client) SendRaw(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(Timeout))
	_, _, err := c.Conn.WriteMsgUnix(b, oob, nil)
	return err
}

// Recv reads one reply.
func (c *Client) Recv() (vhostuser.Header, []byte, error) {
	c.Conn.SetReadDeadline(time.Now().Add(Timeout))
	var hb [vhostuser.HeaderSize]byte
	if _, err := io.ReadFull(c.Conn, hb[:]); err != nil {
		return vhostuser.Header{}, nil, err
	}
	h, err := vhostuser.DecodeHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	if h.Size > vhostuser.MaxPayload {
		return h, nil, fmt.Errorf("reply of %d bytes", h.Size)
	}
	p := make([]byte, h.Size)
	if _, err := io.ReadFull(c.Conn, p); err != nil {
		return h, nil, err
	}
	return h, p, nil
}

// hasReply lists the requests that always get an explicit reply.
func hasReply(req vhostuser.Request) bool {
	switch req {
	case vhostuser.GetFeatures, vhostuser.GetProtocolFeatures, vhostuser.GetVringBase,
		vhostuser.GetQueueNum, vhostuser.GetMaxMemSlots, vhostuser.GetConfig, vhostuser.GetStatus:
		return true
	}
	return false
}

// hasStatusReply reports whether req always gets an explicit u64 reply
// that says whether it succeeded: SET_DEVICE_STATE_FD (error in bits 0-7),
// CHECK_DEVICE_STATE, and SET_LOG_BASE once LOG_SHMFD is negotiated.
func (c *Client) hasStatusReply(req vhostuser.Request) bool {
	return req == vhostuser.SetDeviceStateFD || req == vhostuser.CheckDeviceState ||
		(req == vhostuser.SetLogBase && c.Protocol&vhostuser.ProtocolLogShmfd != 0)
}

// Do sends a request and reads its reply when there is one: the explicit
// reply of a GET (returned), the status reply of SET_LOG_BASE,
// SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE (returned; ErrNack when it
// reports failure), or the REPLY_ACK asked for with NeedReply (ErrNack
// when it reports failure).
func (c *Client) Do(req vhostuser.Request, payload []byte, fds ...int) ([]byte, error) {
	if err := c.Send(req, 0, payload, fds...); err != nil {
		return nil, err
	}
	status := c.hasStatusReply(req)
	if !hasReply(req) && !status && !c.NeedReply {
		return nil, nil
	}
	h, p, err := c.Recv()
	if err != nil {
		return nil, fmt.Errorf("reply to %v: %w", req, err)
	}
	if h.Request != req || h.Flags != vhostuser.FlagVersion|vhostuser.FlagReply {
		return nil, fmt.Errorf("reply to %v has header %+v", req, h)
	}
	if hasReply(req) {
		return p, nil
	}
	v, err := vhostuser.DecodeU64(p)
	if err != nil {
		return nil, fmt.Errorf("REPLY_ACK to %v: %w", req, err)
	}
	if req == vhostuser.SetDeviceStateFD {
		v &= 0xff
	}
	if v != 0 {
		return p, fmt.Errorf("%w: %v", ErrNack, req)
	}
	if status {
		return p, nil
	}
	return nil, nil
}

// GetU64 sends a GET whose reply is a u64.
func (c *Client) GetU64(req vhostuser.Request) (uint64, error) {
	p, err := c.Do(req, nil)
	if err != nil {
		return 0, err
	}
	v, err := vhostuser.DecodeU64(p)
	if err != nil {
		return 0, fmt.Errorf("%v: %w", req, err)
	}
	return v, nil
}
