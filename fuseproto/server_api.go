package fuseproto

import "github.com/hashicorp/go-hclog"

// Replier is a transport's reply destination for one request.
//
// The Server calls at most one of Reply's forms per request: requests that
// take no reply (FORGET, BATCH_FORGET, a found INTERRUPT) never call it, and
// the transport then only recycles its buffers.
type Replier interface {
	// DataDest returns the destination for the payload of a READ reply,
	// which starts right after the 16-byte fuse_out_header; max is the
	// room the Server asks for. It is called at most once per request,
	// before Reply.
	DataDest(max int) ReadDest
	// Reply sends msg (the fuse_out_header, whose Len already counts
	// dataLen, then the rest of the reply) followed by the first dataLen
	// bytes written into DataDest. dataLen is nonzero only when msg is
	// exactly the 16-byte header.
	Reply(msg []byte, dataLen int)
}

// QueueReplier is a Replier that knows which queue its request came from
// (the virtio request queue); the debug log names it.
type QueueReplier interface {
	Replier
	// Queue is the queue's index.
	Queue() int
}

// Options configure a Server.
type Options struct {
	// MaxWrite is the largest WRITE (and READ) the kernel may send; it is
	// rounded down to whole pages. Zero means DefaultMaxWrite.
	MaxWrite uint32
	// Enable names optional INIT flags to turn on when the kernel offers
	// them, beyond the defaults (InitWritebackCache, InitPosixACL, ...).
	Enable uint64
	// Disable names default INIT flags to leave off (InitDoReaddirplus for
	// --no-readdirplus, InitSubmounts, ...).
	Disable uint64
	// MaxBackground and CongestionThreshold tune the kernel's queue of
	// background requests; zero leaves the kernel defaults.
	MaxBackground       uint16
	CongestionThreshold uint16
	// Logger receives debug lines per request and warnings; nil discards.
	Logger hclog.Logger
	// IDMap, if not nil, translates user and group ids between the client
	// and the host (see IDMap).
	IDMap IDMap
	// XattrMap, if not nil, translates extended attribute names between
	// the client and the host (see XattrMapper).
	XattrMap XattrMapper
}

// DefaultMaxWrite is the default largest WRITE: 1 MiB, 256 pages, the
// kernel's default fuse_max_pages_limit.
const DefaultMaxWrite = 1 << 20
