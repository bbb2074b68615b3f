package fuseproto

import (
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// Server decodes FUSE requests, dispatches them to a FileSystem and encodes
// the replies. It is transport-neutral: the /dev/fuse, virtio-fs and stream
// transports each hand it one request at a time, from as many goroutines as
// they like, with a Replier for the answer.
//
// Every request is checked against the opcode table before its payload is
// touched: the header's length must match what the transport received, the
// fixed argument struct must be complete, names must be NUL-terminated
// single components. A request that fails a check is answered with an
// errno; a panic in a FileSystem is recovered, logged and answered with EIO.
type Server struct {
	fs       FileSystem
	bfs      BackingFiler // fs, if it is one
	opts     Options
	log      hclog.Logger
	debug    bool
	maxWrite uint32

	// cfg is the session negotiated by the last INIT; nil before INIT and
	// after DESTROY.
	cfg atomic.Pointer[Config]

	states sync.Pool // *RequestState, for Handle

	intrMu sync.Mutex
	// intr maps the unique of each interruptible request in flight to the
	// channel closed by its INTERRUPT.
	intr map[uint64]chan struct{}
	// early remembers INTERRUPTs that arrived before their request was
	// registered (a ring of the last few uniques).
	early    [64]uint64
	earlyPos int

	// backing is the FUSE passthrough state (passthrough.go).
	backing backingTable
}

// NewServer returns a Server for fs.
func NewServer(fs FileSystem, opts Options) *Server {
	s := &Server{fs: fs, opts: opts, intr: make(map[uint64]chan struct{})}
	s.bfs, _ = fs.(BackingFiler)
	s.log = opts.Logger
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	s.debug = s.log.IsDebug()
	mw := opts.MaxWrite
	if mw == 0 {
		mw = DefaultMaxWrite
	}
	mw &^= pageSize - 1
	if mw < pageSize {
		mw = pageSize
	}
	s.maxWrite = mw
	s.states.New = func() any { return new(RequestState) }
	return s
}

// MaxWrite returns the largest READ or WRITE payload the Server accepts.
func (s *Server) MaxWrite() uint32 { return s.maxWrite }

// BufferSize returns the size of a buffer that holds any request the kernel
// may send: a WRITE of MaxWrite bytes with its headers, or a SETXATTR with
// the largest value, plus room for names.
func (s *Server) BufferSize() int {
	return max(int(s.maxWrite), MaxXattrSize) + 2*pageSize
}

// Destroy ends the session when the transport goes away without a
// FUSE_DESTROY: the FileSystem drops every inode and handle.
func (s *Server) Destroy() {
	if s.cfg.Swap(nil) != nil {
		s.backing.reset()
		s.fs.Destroy()
	}
}

// args holds the decoded argument and reply structs of a request, so that
// passing them by pointer through the FileSystem interface does not move
// them to the heap.
type args struct {
	AccessIn         AccessIn
	AttrOut          AttrOut
	BatchForgetIn    BatchForgetIn
	BmapIn           BmapIn
	BmapOut          BmapOut
	CopyFileRangeIn  CopyFileRangeIn
	CopyFileRangeOut CopyFileRangeOut
	CreateIn         CreateIn
	EntryOut         EntryOut
	Errno            Errno
	FallocateIn      FallocateIn
	FlushIn          FlushIn
	ForgetIn         ForgetIn
	ForgetOne        ForgetOne
	FsyncIn          FsyncIn
	GetattrIn        GetattrIn
	GetxattrIn       GetxattrIn
	GetxattrOut      GetxattrOut
	InterruptIn      InterruptIn
	IoctlIn          IoctlIn
	IoctlOut         IoctlOut
	LinkIn           LinkIn
	LkIn             LkIn
	LkOut            LkOut
	LseekIn          LseekIn
	LseekOut         LseekOut
	MkdirIn          MkdirIn
	MknodIn          MknodIn
	OpenIn           OpenIn
	OpenOut          OpenOut
	PollIn           PollIn
	PollOut          PollOut
	ReadIn           ReadIn
	ReleaseIn        ReleaseIn
	Rename2In        Rename2In
	RenameIn         RenameIn
	SetattrIn        SetattrIn
	SetxattrIn       SetxattrIn
	StatfsOut        StatfsOut
	StatxIn          StatxIn
	StatxOut         StatxOut
	WriteIn          WriteIn
	WriteOut         WriteOut
}

// zero clears *p and returns p.
func zero[T any](p *T) *T {
	var z T
	*p = z
	return p
}

// set stores v in *p and returns p.
func set[T any](p *T, v T) *T {
	*p = v
	return p
}

// request is the per-request state, pooled so the hot path allocates
// nothing.
type request struct {
	ctx    Context
	hdr    InHeader
	out    [512]byte // fixed-size replies
	big    []byte    // variable replies: readdir, xattrs, readlink, ioctl
	dir    DirBuffer
	src    BytesSource
	groups [32]uint32
	a      args
	r      Replier
	sent   bool
	errno  Errno // the error replied, for the debug line
	// forbidden: Options.IDMap refused the caller's uid or gid.
	forbidden bool
	// secctx backs ctx.SecCtx; secSeen: the request carried a security
	// context block.
	secctx  []SecCtx
	secSeen bool
	// names hands out the strings of names seen lately.
	names nameCache
}

// RequestState is the reusable state of one request in progress: the
// decoded arguments, the reply buffers and recently seen names. A
// transport that serves requests one at a time from long-lived goroutines
// (a virtio worker) keeps one per goroutine and passes it to HandleWith;
// Handle takes one from a pool. Its zero value is ready to use.
type RequestState struct {
	req request
}

// bigBuf returns the variable-reply buffer with room for n bytes after the
// out header.
func (st *request) bigBuf(n int) []byte {
	if cap(st.big) < OutHeaderSize+n {
		st.big = make([]byte, OutHeaderSize+n)
	}
	return st.big[:OutHeaderSize+n]
}

// Handle serves one request. req holds the whole message as the transport
// received it, except that a transport may leave the data of a WRITE in
// place and pass it as payload (then req ends after the fuse_write_in).
// The reply, if the opcode has one, goes to r before Handle returns.
func (s *Server) Handle(req []byte, payload WriteSource, r Replier) {
	rs := s.states.Get().(*RequestState)
	s.HandleWith(rs, req, payload, r)
	s.states.Put(rs)
}

// HandleWith is Handle with state rs, which the caller must not use for
// another request until HandleWith returns. It allocates nothing for the
// common requests (GETATTR, LOOKUP of a name rs has seen lately, READ,
// WRITE, ...), even under the race detector, where the pool behind Handle
// drops states at random.
func (s *Server) HandleWith(rs *RequestState, req []byte, payload WriteSource, r Replier) {
	st := &rs.req
	st.r = r
	st.sent = false
	st.errno = OK
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving request", "opcode", opName(st.hdr.Opcode),
				"unique", st.hdr.Unique, "nodeid", st.hdr.NodeID, "panic", fmt.Sprint(p),
				"stack", string(debug.Stack()))
			if !st.sent {
				s.replyErr(st, syscall.EIO)
			}
		}
		if s.debug {
			s.logRequest(st)
		}
		st.r = nil
		st.ctx = Context{}
	}()
	s.handle(st, req, payload)
}

func (s *Server) handle(st *request, req []byte, payload WriteSource) {
	if len(req) < InHeaderSize {
		// Too short to carry a unique: answer unique 0 so that a virtio
		// chain is still returned; the kernel never sends this.
		st.hdr = InHeader{}
		s.replyErr(st, syscall.EIO)
		return
	}
	decode(req, &st.hdr)
	h := &st.hdr
	total := len(req)
	if payload != nil {
		total += payload.Len()
	}
	if int(h.Len) != total {
		s.replyErr(st, syscall.EIO)
		return
	}
	body := req[InHeaderSize:]
	ext := int(h.TotalExtlen) * 8
	if ext > len(body) {
		s.replyErr(st, syscall.EIO)
		return
	}
	body, extArea := body[:len(body)-ext], body[len(body)-ext:]

	st.ctx = Context{Unique: h.Unique, NodeID: h.NodeID, UID: h.UID, GID: h.GID, PID: h.PID}
	st.secSeen = false
	cfg := s.cfg.Load()
	if ext > 0 {
		if e := s.parseExtensions(st, cfg, extArea); e != OK {
			s.replyErr(st, e)
			return
		}
	}
	st.forbidden = false
	if s.opts.IDMap != nil {
		s.mapCaller(st)
	}

	if h.Opcode == OpInit {
		s.doInit(st, body)
		return
	}
	if cfg == nil {
		// No session: only INIT is valid. FORGETs have no reply.
		switch h.Opcode {
		case OpForget, OpBatchForget, OpInterrupt, OpNotifyReply:
			return
		}
		s.replyErr(st, syscall.EIO)
		return
	}
	if s.refuseForbidden(st) {
		return
	}
	s.dispatch(st, cfg, body, payload)
}

// parseExtensions reads the request extensions (fuse_ext_header records) at
// the end of a request: FUSE_EXT_GROUPS, and the security contexts (types
// 0..MaxNrSecctx) when the session has InitSecurityCtx (cfg is nil before
// INIT); others are skipped.
func (s *Server) parseExtensions(st *request, cfg *Config, b []byte) Errno {
	for len(b) > 0 {
		var eh ExtHeader
		if !Decode(b, &eh) || eh.Size < 8 || eh.Size%8 != 0 || int(eh.Size) > len(b) {
			return syscall.EINVAL
		}
		rec := b[8:eh.Size]
		if eh.Type <= MaxNrSecctx && cfg != nil && cfg.Has(InitSecurityCtx) {
			if e := s.secCtx(st, b[:eh.Size]); e != OK {
				return e
			}
		} else if eh.Type == ExtGroups {
			if len(rec) < 4 {
				return syscall.EINVAL
			}
			var n uint32
			decode(rec, &n)
			rec = rec[4:]
			if uint64(n)*4 > uint64(len(rec)) || int(n) > len(st.groups) {
				return syscall.EINVAL
			}
			for i := range int(n) {
				decode(rec[i*4:], &st.groups[i])
			}
			st.ctx.SuppGroups = st.groups[:n]
		}
		b = b[eh.Size:]
	}
	return OK
}

// secCtx decodes a security context block into st.ctx.SecCtx, with the
// names mapped through Options.XattrMap as SETXATTR's are (a refusal is
// the request's answer, before anything is created); a second block in
// one request is EINVAL.
func (s *Server) secCtx(st *request, b []byte) Errno {
	if st.secSeen {
		return syscall.EINVAL
	}
	st.secSeen = true
	var e Errno
	if st.secctx, e = decodeSecCtx(b, st.secctx[:0]); e != OK {
		return e
	}
	for i := range st.secctx {
		if st.secctx[i].Name, e = s.xattrNameToHost(st.secctx[i].Name); e != OK {
			return e
		}
	}
	st.ctx.SecCtx = st.secctx
	return OK
}

// trailingSecCtx decodes the security context block that kernels before
// 7.38 append after the names of a creating request (rest), if the session
// has InitSecurityCtx. It answers the request and returns false if the
// block is malformed.
func (s *Server) trailingSecCtx(st *request, cfg *Config, rest []byte) bool {
	if cfg.Minor >= 38 || len(rest) == 0 || !cfg.Has(InitSecurityCtx) {
		return true
	}
	if e := s.secCtx(st, rest); e != OK {
		s.replyErr(st, e)
		return false
	}
	return true
}

func (s *Server) doInit(st *request, body []byte) {
	var in InitIn
	if len(body) < InitInCompatSize {
		s.replyErr(st, syscall.EINVAL)
		return
	}
	copy(unsafeBytes(&in), body) // shorter bodies leave the tail zero
	out, size, cfg, errno := s.negotiate(&in)
	if errno != OK {
		s.log.Error("refusing FUSE session", "major", in.Major, "minor", in.Minor, "errno", int(errno))
		s.replyErr(st, errno)
		return
	}
	if cfg.Minor != 0 {
		if s.cfg.Swap(&cfg) != nil {
			// A new INIT starts a new session (virtio-fs: guest driver
			// reloaded).
			s.backing.reset()
			s.fs.Destroy()
		}
		s.fs.Init(&cfg)
		s.log.Debug("FUSE session initialised", "minor", cfg.Minor, "flags", fmt.Sprintf("%#x", cfg.Flags), "max_write", cfg.MaxWrite)
	}
	b := st.out[OutHeaderSize:]
	encode(b, &out)
	s.replyOK(st, OutHeaderSize+size)
}

// replyErr sends an error reply.
func (s *Server) replyErr(st *request, errno Errno) {
	if errno <= 0 || errno >= 512 {
		errno = syscall.EIO
	}
	oh := OutHeader{Len: OutHeaderSize, Error: -int32(errno), Unique: st.hdr.Unique}
	encode(st.out[:], &oh)
	st.errno = errno
	st.sent = true
	st.r.Reply(st.out[:OutHeaderSize], 0)
}

// logRequest writes the debug line of one served request: what an
// operator greps for (queue, opcode, nodeid, errno), one line per request,
// replied or not (FORGET).
func (s *Server) logRequest(st *request) {
	queue := -1
	if q, ok := st.r.(QueueReplier); ok {
		queue = q.Queue()
	}
	s.log.Debug("request", "queue", queue, "opcode", opName(st.hdr.Opcode), "unique", st.hdr.Unique,
		"nodeid", st.hdr.NodeID, "errno", int(st.errno), "replied", st.sent)
}

// replyOK sends st.out[:n], whose body has been encoded after the header.
func (s *Server) replyOK(st *request, n int) {
	s.replyBuf(st, st.out[:n], 0)
}

// replyBuf sends msg (header space included) followed by dataLen bytes of
// the ReadDest.
func (s *Server) replyBuf(st *request, msg []byte, dataLen int) {
	oh := OutHeader{Len: uint32(len(msg) + dataLen), Unique: st.hdr.Unique}
	encode(msg, &oh)
	st.sent = true
	st.r.Reply(msg, dataLen)
}

// replyStruct sends one fixed reply struct.
func replyStruct[T any](s *Server, st *request, v *T) {
	n := encode(st.out[OutHeaderSize:], v)
	s.replyOK(st, OutHeaderSize+n)
}

// result sends errno, or runs ok to send the success reply.
func (s *Server) result(st *request, errno Errno, ok func()) {
	if errno != OK {
		s.replyErr(st, errno)
		return
	}
	ok()
}

// arg decodes the fixed argument struct T from the front of body and returns
// the rest, or answers EINVAL and returns ok false when body is short.
func arg[T any](s *Server, st *request, body []byte, v *T) ([]byte, bool) {
	n := sizeOf[T]()
	if len(body) < n {
		s.replyErr(st, syscall.EINVAL)
		return nil, false
	}
	decode(body, v)
	return body[n:], true
}

// name takes one NUL-terminated name from the front of body and checks it
// for use, answering with an errno and returning ok false when it is bad.
func (s *Server) name(st *request, body []byte, use nameUse) (string, []byte, bool) {
	n, rest, ok := cstring(body)
	if !ok {
		s.replyErr(st, syscall.EINVAL)
		return "", nil, false
	}
	if e := checkNameFor(n, use); e != OK {
		s.replyErr(st, e)
		return "", nil, false
	}
	return st.names.get(n), rest, true
}

func (s *Server) entryReply(st *request, errno Errno, e *EntryOut) {
	s.result(st, errno, func() {
		s.attrToGuest(&e.Attr)
		replyStruct(s, st, e)
	})
}

func (s *Server) dispatch(st *request, cfg *Config, body []byte, payload WriteSource) {
	ctx := &st.ctx
	node := st.hdr.NodeID
	fs := s.fs
	switch st.hdr.Opcode {
	case OpLookup:
		name, _, ok := s.name(st, body, nameLookup)
		if !ok {
			return
		}
		e := zero(&st.a.EntryOut)
		s.entryReply(st, fs.Lookup(ctx, node, name, e), e)

	case OpForget:
		in := zero(&st.a.ForgetIn)
		if Decode(body, in) {
			fs.Forget(node, in.Nlookup)
		}

	case OpBatchForget:
		in := zero(&st.a.BatchForgetIn)
		if !Decode(body, in) {
			return
		}
		rest := body[sizeOf[BatchForgetIn]():]
		n := min(int(in.Count), len(rest)/sizeOf[ForgetOne]())
		for i := range n {
			one := zero(&st.a.ForgetOne)
			decode(rest[i*sizeOf[ForgetOne]():], one)
			fs.Forget(one.NodeID, one.Nlookup)
		}

	case OpGetattr:
		in := zero(&st.a.GetattrIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.AttrOut)
		s.result(st, fs.Getattr(ctx, node, in, out), func() {
			s.attrToGuest(&out.Attr)
			replyStruct(s, st, out)
		})

	case OpSetattr:
		in := zero(&st.a.SetattrIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		if !s.setattrToHost(in) {
			s.replyErr(st, syscall.EPERM)
			return
		}
		out := zero(&st.a.AttrOut)
		s.result(st, fs.Setattr(ctx, node, in, out), func() {
			s.attrToGuest(&out.Attr)
			replyStruct(s, st, out)
		})

	case OpReadlink:
		buf := st.bigBuf(MaxSymlinkTargetLen + 1)
		n, errno := fs.Readlink(ctx, node, buf[OutHeaderSize:])
		s.result(st, errno, func() { s.replyBuf(st, buf[:OutHeaderSize+n], 0) })

	case OpSymlink:
		name, rest, ok := s.name(st, body, nameCreate)
		if !ok {
			return
		}
		target, rest, ok := cstring(rest)
		if !ok || len(target) == 0 {
			s.replyErr(st, syscall.ENOENT)
			return
		}
		if len(target) > MaxSymlinkTargetLen {
			s.replyErr(st, syscall.ENAMETOOLONG)
			return
		}
		if !s.trailingSecCtx(st, cfg, rest) {
			return
		}
		e := zero(&st.a.EntryOut)
		s.entryReply(st, fs.Symlink(ctx, node, name, string(target), e), e)

	case OpMknod:
		in := zero(&st.a.MknodIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		name, rest, ok := s.name(st, rest, nameCreate)
		if !ok || !s.trailingSecCtx(st, cfg, rest) {
			return
		}
		e := zero(&st.a.EntryOut)
		s.entryReply(st, fs.Mknod(ctx, node, name, in, e), e)

	case OpMkdir:
		in := zero(&st.a.MkdirIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		name, rest, ok := s.name(st, rest, nameCreate)
		if !ok || !s.trailingSecCtx(st, cfg, rest) {
			return
		}
		e := zero(&st.a.EntryOut)
		s.entryReply(st, fs.Mkdir(ctx, node, name, in, e), e)

	case OpUnlink:
		name, _, ok := s.name(st, body, nameUnlink)
		if ok {
			s.simple(st, fs.Unlink(ctx, node, name))
		}

	case OpRmdir:
		name, _, ok := s.name(st, body, nameRmdir)
		if ok {
			s.simple(st, fs.Rmdir(ctx, node, name))
		}

	case OpRename, OpRename2:
		var newDir uint64
		var flags uint32
		rest := body
		if st.hdr.Opcode == OpRename {
			in := zero(&st.a.RenameIn)
			var ok bool
			if rest, ok = arg(s, st, body, in); !ok {
				return
			}
			newDir = in.Newdir
		} else {
			in := zero(&st.a.Rename2In)
			var ok bool
			if rest, ok = arg(s, st, body, in); !ok {
				return
			}
			newDir, flags = in.Newdir, in.Flags
		}
		oldName, rest, ok := s.name(st, rest, nameRename)
		if !ok {
			return
		}
		newName, _, ok := s.name(st, rest, nameRename)
		if !ok {
			return
		}
		s.simple(st, fs.Rename(ctx, node, oldName, newDir, newName, flags))

	case OpLink:
		in := zero(&st.a.LinkIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		name, _, ok := s.name(st, rest, nameCreate)
		if !ok {
			return
		}
		e := zero(&st.a.EntryOut)
		s.entryReply(st, fs.Link(ctx, in.OldNodeID, node, name, e), e)

	case OpOpen, OpOpendir:
		in := zero(&st.a.OpenIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.OpenOut)
		var errno Errno
		if st.hdr.Opcode == OpOpen {
			if errno = fs.Open(ctx, node, in, out); errno == OK {
				s.openBacking(st, cfg, node, out)
			}
		} else {
			errno = fs.Opendir(ctx, node, in, out)
		}
		s.result(st, errno, func() { replyStruct(s, st, out) })

	case OpCreate, OpTmpfile:
		in := zero(&st.a.CreateIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		e := zero(&st.a.EntryOut)
		o := zero(&st.a.OpenOut)
		var errno Errno
		if st.hdr.Opcode == OpCreate {
			name, rest, ok := s.name(st, rest, nameCreate)
			if !ok || !s.trailingSecCtx(st, cfg, rest) {
				return
			}
			errno = fs.Create(ctx, node, name, in, e, o)
		} else {
			// TMPFILE carries the placeholder name "/" of the
			// unnamed dentry; it is not a path component, but
			// a security context may follow it.
			if _, rest, ok := cstring(rest); ok && !s.trailingSecCtx(st, cfg, rest) {
				return
			}
			errno = fs.Tmpfile(ctx, node, in, e, o)
		}
		if errno == OK && e.NodeID != 0 {
			s.openBacking(st, cfg, e.NodeID, o)
		}
		s.result(st, errno, func() {
			s.attrToGuest(&e.Attr)
			n := encode(st.out[OutHeaderSize:], e)
			n += encode(st.out[OutHeaderSize+n:], o)
			s.replyOK(st, OutHeaderSize+n)
		})

	case OpRead:
		in := zero(&st.a.ReadIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		size := min(in.Size, s.maxWrite)
		dst := st.r.DataDest(int(size))
		errno := fs.Read(ctx, node, in, dst)
		s.result(st, errno, func() { s.replyBuf(st, st.out[:OutHeaderSize], dst.Len()) })

	case OpWrite:
		in := zero(&st.a.WriteIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		src := payload
		if src == nil {
			st.src.Reset(rest)
			src = &st.src
		} else if len(rest) != 0 {
			s.replyErr(st, syscall.EINVAL)
			return
		}
		if in.Size > s.maxWrite || src.Len() != int(in.Size) {
			s.replyErr(st, syscall.EINVAL)
			return
		}
		n, errno := fs.Write(ctx, node, in, src)
		s.result(st, errno, func() { replyStruct(s, st, set(&st.a.WriteOut, WriteOut{Size: n})) })

	case OpStatfs:
		out := zero(&st.a.StatfsOut)
		s.result(st, fs.Statfs(ctx, node, out), func() { replyStruct(s, st, out) })

	case OpRelease, OpReleasedir:
		in := zero(&st.a.ReleaseIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		if st.hdr.Opcode == OpRelease {
			errno := fs.Release(ctx, node, in)
			s.releaseBacking(st, in.Fh)
			s.simple(st, errno)
		} else {
			s.simple(st, fs.Releasedir(ctx, node, in))
		}

	case OpFsync, OpFsyncdir:
		in := zero(&st.a.FsyncIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		if st.hdr.Opcode == OpFsync {
			s.simple(st, fs.Fsync(ctx, node, in))
		} else {
			s.simple(st, fs.Fsyncdir(ctx, node, in))
		}

	case OpSetxattr:
		in := zero(&st.a.SetxattrIn)
		n := SetxattrInCompatSize
		if cfg.Has(InitSetxattrExt) {
			n = sizeOf[SetxattrIn]()
		}
		if len(body) < n {
			s.replyErr(st, syscall.EINVAL)
			return
		}
		copy(unsafeBytes(in)[:n], body)
		name, rest, ok := s.xattrName(st, body[n:])
		if !ok {
			return
		}
		if in.Size > MaxXattrSize {
			s.replyErr(st, syscall.E2BIG)
			return
		}
		if int(in.Size) != len(rest) {
			s.replyErr(st, syscall.EINVAL)
			return
		}
		if name, ok = s.xattrToHost(st, name); !ok {
			return
		}
		if s.opts.IDMap != nil && isACL(name) {
			// The value may lie in the client's memory (virtio-fs):
			// translate a copy.
			v := append([]byte(nil), rest...)
			if err := s.opts.IDMap.ACLToHost(v); err != nil {
				s.replyErr(st, aclErrno(err))
				return
			}
			rest = v
		}
		s.simple(st, fs.Setxattr(ctx, node, name, rest, in))

	case OpGetxattr, OpListxattr:
		in := zero(&st.a.GetxattrIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		var name string
		if st.hdr.Opcode == OpGetxattr {
			if name, _, ok = s.xattrName(st, rest); !ok {
				return
			}
			if name, ok = s.xattrToHost(st, name); !ok {
				return
			}
		} else if s.opts.XattrMap != nil {
			s.listxattrToGuest(st, ctx, node, in.Size)
			return
		}
		size := min(int(in.Size), MaxXattrSize)
		buf := st.bigBuf(size)
		var n int
		var errno Errno
		if st.hdr.Opcode == OpGetxattr {
			n, errno = fs.Getxattr(ctx, node, name, buf[OutHeaderSize:OutHeaderSize+size])
		} else {
			n, errno = fs.Listxattr(ctx, node, buf[OutHeaderSize:OutHeaderSize+size])
		}
		s.result(st, errno, func() {
			if in.Size == 0 {
				replyStruct(s, st, set(&st.a.GetxattrOut, GetxattrOut{Size: uint32(n)}))
				return
			}
			if n > size {
				s.replyErr(st, syscall.ERANGE)
				return
			}
			if s.opts.IDMap != nil && st.hdr.Opcode == OpGetxattr && isACL(name) {
				if err := s.opts.IDMap.ACLToGuest(buf[OutHeaderSize : OutHeaderSize+n]); err != nil {
					s.replyErr(st, syscall.EIO)
					return
				}
			}
			s.replyBuf(st, buf[:OutHeaderSize+n], 0)
		})

	case OpRemovexattr:
		name, _, ok := s.xattrName(st, body)
		if ok {
			name, ok = s.xattrToHost(st, name)
		}
		if ok {
			s.simple(st, fs.Removexattr(ctx, node, name))
		}

	case OpFlush:
		in := zero(&st.a.FlushIn)
		if _, ok := arg(s, st, body, in); ok {
			s.simple(st, fs.Flush(ctx, node, in))
		}

	case OpReaddir, OpReaddirplus:
		in := zero(&st.a.ReadIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		size := int(min(in.Size, s.maxWrite))
		buf := st.bigBuf(size)
		st.dir.Reset(buf[OutHeaderSize:], size, st.hdr.Opcode == OpReaddirplus)
		st.dir.ids = s.opts.IDMap
		errno := fs.Readdir(ctx, node, in, &st.dir)
		s.result(st, errno, func() { s.replyBuf(st, buf[:OutHeaderSize+st.dir.Len()], 0) })

	case OpGetlk:
		in := zero(&st.a.LkIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.LkOut)
		s.result(st, fs.Getlk(ctx, node, in, out), func() { replyStruct(s, st, out) })

	case OpSetlk, OpSetlkw:
		in := zero(&st.a.LkIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		wait := st.hdr.Opcode == OpSetlkw
		if wait {
			ch := s.registerInterrupt(st.hdr.Unique)
			defer s.unregisterInterrupt(st.hdr.Unique)
			ctx.Interrupted = ch
		}
		s.simple(st, fs.Setlk(ctx, node, in, wait))

	case OpAccess:
		in := zero(&st.a.AccessIn)
		if _, ok := arg(s, st, body, in); ok {
			s.simple(st, fs.Access(ctx, node, in.Mask))
		}

	case OpInterrupt:
		in := zero(&st.a.InterruptIn)
		if Decode(body, in) {
			s.interrupt(in.Unique)
		}

	case OpBmap:
		in := zero(&st.a.BmapIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.BmapOut)
		s.result(st, fs.Bmap(ctx, node, in, out), func() { replyStruct(s, st, out) })

	case OpDestroy:
		if s.cfg.Swap(nil) != nil {
			s.backing.reset()
			s.fs.Destroy()
		}
		s.replyOK(st, OutHeaderSize)

	case OpIoctl:
		in := zero(&st.a.IoctlIn)
		rest, ok := arg(s, st, body, in)
		if !ok {
			return
		}
		if in.Flags&IoctlUnrestricted != 0 {
			// Unrestricted ioctls are for CUSE.
			s.replyErr(st, syscall.ENOSYS)
			return
		}
		if int(in.InSize) != len(rest) || in.OutSize > MaxXattrSize {
			s.replyErr(st, syscall.EINVAL)
			return
		}
		hdrLen := OutHeaderSize + sizeOf[IoctlOut]()
		buf := st.bigBuf(sizeOf[IoctlOut]() + int(in.OutSize))
		res, n, errno := fs.Ioctl(ctx, node, in, rest, buf[hdrLen:hdrLen+int(in.OutSize)])
		s.result(st, errno, func() {
			n = min(max(n, 0), int(in.OutSize))
			encode(buf[OutHeaderSize:], set(&st.a.IoctlOut, IoctlOut{Result: res}))
			s.replyBuf(st, buf[:hdrLen+n], 0)
		})

	case OpPoll:
		in := zero(&st.a.PollIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.PollOut)
		s.result(st, fs.Poll(ctx, node, in, out), func() { replyStruct(s, st, out) })

	case OpFallocate:
		in := zero(&st.a.FallocateIn)
		if _, ok := arg(s, st, body, in); ok {
			s.simple(st, fs.Fallocate(ctx, node, in))
		}

	case OpLseek:
		in := zero(&st.a.LseekIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.LseekOut)
		s.result(st, fs.Lseek(ctx, node, in, out), func() { replyStruct(s, st, out) })

	case OpCopyFileRange, OpCopyFileRange64:
		in := zero(&st.a.CopyFileRangeIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		legacy := st.hdr.Opcode == OpCopyFileRange
		if legacy {
			// The legacy reply holds a 32-bit count.
			in.Len = min(in.Len, math.MaxUint32&^(pageSize-1))
		}
		n, errno := fs.CopyFileRange(ctx, node, in)
		s.result(st, errno, func() {
			if legacy {
				replyStruct(s, st, set(&st.a.WriteOut, WriteOut{Size: uint32(min(n, math.MaxUint32))}))
			} else {
				replyStruct(s, st, set(&st.a.CopyFileRangeOut, CopyFileRangeOut{BytesCopied: n}))
			}
		})

	case OpSyncfs:
		s.simple(st, fs.Syncfs(ctx, node))

	case OpStatx:
		in := zero(&st.a.StatxIn)
		if _, ok := arg(s, st, body, in); !ok {
			return
		}
		out := zero(&st.a.StatxOut)
		s.result(st, fs.Statx(ctx, node, in, out), func() {
			s.statxToGuest(&out.Stat)
			replyStruct(s, st, out)
		})

	case OpNotifyReply:
		// Replies to notifications we never send: nothing to do.

	default:
		// SETUPMAPPING/REMOVEMAPPING (DAX) and opcodes we do not know.
		s.replyErr(st, syscall.ENOSYS)
	}
}

// simple sends an empty success reply or the errno.
func (s *Server) simple(st *request, errno Errno) {
	s.result(st, errno, func() { s.replyOK(st, OutHeaderSize) })
}

// xattrName takes an extended attribute name: NUL-terminated, not empty,
// at most XATTR_NAME_MAX bytes (ERANGE past that, as Linux answers).
func (s *Server) xattrName(st *request, body []byte) (string, []byte, bool) {
	n, rest, ok := cstring(body)
	if !ok || len(n) == 0 {
		s.replyErr(st, syscall.EINVAL)
		return "", nil, false
	}
	if len(n) > MaxXattrNameLen {
		s.replyErr(st, syscall.ERANGE)
		return "", nil, false
	}
	return st.names.get(n), rest, true
}

// registerInterrupt makes unique interruptible and returns the channel its
// INTERRUPT closes; an INTERRUPT that came first closes it at once.
func (s *Server) registerInterrupt(unique uint64) chan struct{} {
	ch := make(chan struct{})
	s.intrMu.Lock()
	defer s.intrMu.Unlock()
	for i, u := range s.early {
		if u == unique && u != 0 {
			s.early[i] = 0
			close(ch)
			return ch
		}
	}
	s.intr[unique] = ch
	return ch
}

func (s *Server) unregisterInterrupt(unique uint64) {
	s.intrMu.Lock()
	delete(s.intr, unique)
	s.intrMu.Unlock()
}

// interrupt handles FUSE_INTERRUPT for request unique. Requests that are not
// interruptible complete on their own; the INTERRUPT needs no reply. One for
// a request not registered yet is remembered, so a SETLKW that starts after
// its INTERRUPT arrived is still cancelled.
func (s *Server) interrupt(unique uint64) {
	s.intrMu.Lock()
	defer s.intrMu.Unlock()
	if ch, ok := s.intr[unique]; ok {
		delete(s.intr, unique)
		close(ch)
		return
	}
	s.early[s.earlyPos] = unique
	s.earlyPos = (s.earlyPos + 1) % len(s.early)
}

// nameCache is a small direct-mapped table of the Go strings of names (and
// xattr names) seen lately on one RequestState, so that a request naming
// what an earlier one did (a LOOKUP revalidating a known entry, GETXATTR of
// security.capability) allocates nothing. Strings are immutable: a
// FileSystem may keep the ones it is given. A name not in the table costs
// the one allocation converting it always cost.
type nameCache struct {
	s [64]string
}

// get returns b as a string, from the table when it is there.
func (c *nameCache) get(b []byte) string {
	// FNV-1a; names are at most 255 bytes.
	h := uint32(2166136261)
	for _, x := range b {
		h = (h ^ uint32(x)) * 16777619
	}
	e := &c.s[h%uint32(len(c.s))]
	if *e != string(b) {
		*e = string(b)
	}
	return *e
}
