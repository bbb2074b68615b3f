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
// # Live migration
//
// The backend offers VHOST_F_LOG_ALL and LOG_SHMFD to every device.
// SET_LOG_BASE maps the front-end's log (answered with a u64 status, as the
// spec asks with LOG_SHMFD) and switches every running queue to it before
// the reply goes out; VHOST_F_LOG_ALL in SET_FEATURES logs what the device
// writes into descriptor buffers, VHOST_VRING_F_LOG in SET_VRING_ADDR (also
// on a started ring) logs the used ring at the vring's log address.
//
// A Device that implements StateTransferer (and says CanTransferState) gets
// DEVICE_STATE offered. SET_DEVICE_STATE_FD, accepted only while no vring
// is served, starts SaveState or LoadState on a goroutine over the
// front-end's pipe (the reply returns no fd of our own); vrings enabled
// during the transfer are served only after it; CHECK_DEVICE_STATE waits
// for it and answers its result. Both always answer with a u64, failures
// included, so they never drop the connection. A transfer still running
// when the connection ends or the device is reset is cancelled by closing
// its fd.
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
