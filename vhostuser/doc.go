// Package vhostuser is the back-end side of the vhost-user protocol
// (QEMU docs/interop/vhost-user.rst) over a unix socket, serving one
// virtio Device.
//
// A Backend accepts one front-end (QEMU, Cloud Hypervisor, ...) at a time
// and runs its session on one goroutine: the message codec (12-byte header,
// payloads of at most MaxPayload bytes, at most MaxFDs file descriptors per
// message through SCM_RIGHTS), feature and protocol-feature negotiation,
// the guest memory table (SET_MEM_TABLE, or GET_MAX_MEM_SLOTS with
// ADD_MEM_REG and REM_MEM_REG under CONFIGURE_MEM_SLOTS), vring setup and
// the kick, call and error eventfds, config space, device status, and
// REPLY_ACK for every message sent with NEED_REPLY.
//
// # Ring states
//
// Every ring starts stopped and disabled. SET_VRING_KICK starts a ring
// (creating its virtqueue.Queue at the base set by SET_VRING_BASE);
// GET_VRING_BASE stops it and reports the next available index;
// SET_VRING_ENABLE enables and disables it, and SET_FEATURES without
// VHOST_USER_F_PROTOCOL_FEATURES enables every ring. The Device serves a
// ring exactly while it is started and enabled (StartQueue / StopQueue). A
// new call eventfd is installed in the running queue before the old one is
// closed and before the reply goes out, so no interrupt is lost.
//
// # Errors
//
// A request that fails, including one whose payload is not the size its
// type has (a request the spec gives no payload must carry none), is
// answered with a nonzero REPLY_ACK when the front-end asked for one, or
// logged. The connection is dropped, never the daemon, when the stream
// cannot be trusted or the front-end could not otherwise learn of the
// failure: a payload over MaxPayload, a wrong protocol version, too many
// fds, an unknown request or a vring index beyond the device's queues sent
// without NEED_REPLY, or a failed request that expects an explicit reply (GET_*; GET_CONFIG answers with an empty
// payload instead, as the spec says). When the connection ends every ring
// stops, the Device is reset, the memory table is dropped (regions are
// unmapped once no chain in flight uses them) and every fd received is
// closed, each exactly once.
package vhostuser
