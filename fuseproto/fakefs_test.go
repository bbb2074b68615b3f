package fuseproto

import (
	"sync"
	"syscall"
)

// fakeFS is a FileSystem that records each call and answers from fields, so
// that Server tests see exactly what was decoded and what was encoded.
type fakeFS struct {
	mu      sync.Mutex
	calls   []string
	names   []string
	errno   Errno
	panicOp string
	data    []byte // what Read, Readlink, Getxattr and Listxattr return
	written []byte
	dirents []string
	cfg     *Config
	forgets map[uint64]uint64
	ctx     Context
	setattr SetattrIn
	sxin    SetxattrIn
	block   bool     // SETLKW waits for its INTERRUPT
	secctx  []SecCtx // a copy of the last creating request's Context.SecCtx
}

// keepSecCtx copies ctx.SecCtx (whose values alias the request) into
// f.secctx.
func (f *fakeFS) keepSecCtx(ctx *Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secctx = nil
	for _, c := range ctx.SecCtx {
		f.secctx = append(f.secctx, SecCtx{Name: c.Name, Value: append([]byte(nil), c.Value...)})
	}
}

func (f *fakeFS) rec(op string, names ...string) Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
	f.names = append(f.names, names...)
	if f.panicOp == op {
		panic("fakeFS: " + op)
	}
	return f.errno
}

func (f *fakeFS) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func fill(e *EntryOut) {
	*e = EntryOut{NodeID: 42, EntryValid: 1, AttrValid: 1, Attr: Attr{Ino: 42, Mode: 0o100644}}
}

func (f *fakeFS) Init(cfg *Config) { f.mu.Lock(); f.cfg = cfg; f.mu.Unlock() }
func (f *fakeFS) Destroy()         { f.rec("Destroy") }
func (f *fakeFS) Lookup(ctx *Context, parent uint64, name string, out *EntryOut) Errno {
	f.mu.Lock()
	f.ctx = *ctx
	f.ctx.SuppGroups = append([]uint32(nil), ctx.SuppGroups...)
	f.mu.Unlock()
	fill(out)
	return f.rec("Lookup", name)
}
func (f *fakeFS) Forget(node, n uint64) {
	f.mu.Lock()
	if f.forgets == nil {
		f.forgets = map[uint64]uint64{}
	}
	f.forgets[node] += n
	f.mu.Unlock()
	f.rec("Forget")
}
func (f *fakeFS) Getattr(ctx *Context, node uint64, in *GetattrIn, out *AttrOut) Errno {
	out.Attr.Ino = node
	return f.rec("Getattr")
}
func (f *fakeFS) Setattr(ctx *Context, node uint64, in *SetattrIn, out *AttrOut) Errno {
	f.mu.Lock()
	f.setattr = *in
	f.mu.Unlock()
	return f.rec("Setattr")
}
func (f *fakeFS) Readlink(ctx *Context, node uint64, buf []byte) (int, Errno) {
	return copy(buf, f.data), f.rec("Readlink")
}
func (f *fakeFS) Symlink(ctx *Context, parent uint64, name, target string, out *EntryOut) Errno {
	fill(out)
	f.keepSecCtx(ctx)
	return f.rec("Symlink", name, target)
}
func (f *fakeFS) Mknod(ctx *Context, parent uint64, name string, in *MknodIn, out *EntryOut) Errno {
	fill(out)
	f.keepSecCtx(ctx)
	return f.rec("Mknod", name)
}
func (f *fakeFS) Mkdir(ctx *Context, parent uint64, name string, in *MkdirIn, out *EntryOut) Errno {
	fill(out)
	f.keepSecCtx(ctx)
	return f.rec("Mkdir", name)
}
func (f *fakeFS) Unlink(ctx *Context, parent uint64, name string) Errno { return f.rec("Unlink", name) }
func (f *fakeFS) Rmdir(ctx *Context, parent uint64, name string) Errno  { return f.rec("Rmdir", name) }
func (f *fakeFS) Rename(ctx *Context, parent uint64, name string, np uint64, nn string, flags uint32) Errno {
	return f.rec("Rename", name, nn)
}
func (f *fakeFS) Link(ctx *Context, node, np uint64, nn string, out *EntryOut) Errno {
	fill(out)
	return f.rec("Link", nn)
}
func (f *fakeFS) Open(ctx *Context, node uint64, in *OpenIn, out *OpenOut) Errno {
	out.Fh = 7
	return f.rec("Open")
}
func (f *fakeFS) Create(ctx *Context, parent uint64, name string, in *CreateIn, e *EntryOut, o *OpenOut) Errno {
	fill(e)
	o.Fh = 8
	f.keepSecCtx(ctx)
	return f.rec("Create", name)
}
func (f *fakeFS) Tmpfile(ctx *Context, parent uint64, in *CreateIn, e *EntryOut, o *OpenOut) Errno {
	fill(e)
	o.Fh = 9
	f.keepSecCtx(ctx)
	return f.rec("Tmpfile")
}
func (f *fakeFS) Read(ctx *Context, node uint64, in *ReadIn, dst ReadDest) Errno {
	if e := f.rec("Read"); e != OK {
		return e
	}
	n := min(int(in.Size), len(f.data))
	if _, err := dst.Write(f.data[:n]); err != nil {
		return syscall.EIO
	}
	return OK
}
func (f *fakeFS) Write(ctx *Context, node uint64, in *WriteIn, src WriteSource) (uint32, Errno) {
	buf := make([]byte, src.Len())
	n, _ := src.Read(buf)
	f.mu.Lock()
	f.written = buf[:n]
	f.mu.Unlock()
	return uint32(n), f.rec("Write")
}
func (f *fakeFS) Flush(ctx *Context, node uint64, in *FlushIn) Errno     { return f.rec("Flush") }
func (f *fakeFS) Release(ctx *Context, node uint64, in *ReleaseIn) Errno { return f.rec("Release") }
func (f *fakeFS) Fsync(ctx *Context, node uint64, in *FsyncIn) Errno     { return f.rec("Fsync") }
func (f *fakeFS) Opendir(ctx *Context, node uint64, in *OpenIn, out *OpenOut) Errno {
	return f.rec("Opendir")
}
func (f *fakeFS) Readdir(ctx *Context, node uint64, in *ReadIn, dst *DirBuffer) Errno {
	for i, n := range f.dirents {
		if uint64(i) < in.Offset {
			continue
		}
		e := EntryOut{NodeID: uint64(100 + i), Attr: Attr{Ino: uint64(100 + i), Mode: 0o100644}}
		if !dst.AddPlus(n, &e, uint64(i+1)) {
			break
		}
	}
	return f.rec("Readdir")
}
func (f *fakeFS) Releasedir(ctx *Context, node uint64, in *ReleaseIn) Errno {
	return f.rec("Releasedir")
}
func (f *fakeFS) Fsyncdir(ctx *Context, node uint64, in *FsyncIn) Errno { return f.rec("Fsyncdir") }
func (f *fakeFS) Statfs(ctx *Context, node uint64, out *StatfsOut) Errno {
	out.St.Namelen = 255
	return f.rec("Statfs")
}
func (f *fakeFS) Setxattr(ctx *Context, node uint64, name string, value []byte, in *SetxattrIn) Errno {
	f.mu.Lock()
	f.sxin = *in
	f.written = append([]byte(nil), value...)
	f.mu.Unlock()
	return f.rec("Setxattr", name)
}
func (f *fakeFS) Getxattr(ctx *Context, node uint64, name string, dst []byte) (int, Errno) {
	if len(dst) > 0 && len(dst) < len(f.data) {
		return 0, syscall.ERANGE
	}
	copy(dst, f.data)
	return len(f.data), f.rec("Getxattr", name)
}
func (f *fakeFS) Listxattr(ctx *Context, node uint64, dst []byte) (int, Errno) {
	copy(dst, f.data)
	return len(f.data), f.rec("Listxattr")
}
func (f *fakeFS) Removexattr(ctx *Context, node uint64, name string) Errno {
	return f.rec("Removexattr", name)
}
func (f *fakeFS) Access(ctx *Context, node uint64, mask uint32) Errno { return f.rec("Access") }
func (f *fakeFS) Getlk(ctx *Context, node uint64, in *LkIn, out *LkOut) Errno {
	out.Lk = in.Lk
	return f.rec("Getlk")
}
func (f *fakeFS) Setlk(ctx *Context, node uint64, in *LkIn, wait bool) Errno {
	if wait {
		f.rec("Setlkw")
		if !f.block {
			return syscall.EAGAIN
		}
		if ctx.Interrupted == nil {
			return syscall.EDEADLK
		}
		<-ctx.Interrupted
		return syscall.EINTR
	}
	return f.rec("Setlk")
}
func (f *fakeFS) Fallocate(ctx *Context, node uint64, in *FallocateIn) Errno {
	return f.rec("Fallocate")
}
func (f *fakeFS) Lseek(ctx *Context, node uint64, in *LseekIn, out *LseekOut) Errno {
	out.Offset = in.Offset + 1
	return f.rec("Lseek")
}
func (f *fakeFS) CopyFileRange(ctx *Context, node uint64, in *CopyFileRangeIn) (uint64, Errno) {
	return in.Len, f.rec("CopyFileRange")
}
func (f *fakeFS) Syncfs(ctx *Context, node uint64) Errno { return f.rec("Syncfs") }
func (f *fakeFS) Ioctl(ctx *Context, node uint64, in *IoctlIn, inData, outData []byte) (int32, int, Errno) {
	return 5, copy(outData, inData), f.rec("Ioctl")
}
func (f *fakeFS) Poll(ctx *Context, node uint64, in *PollIn, out *PollOut) Errno {
	out.Revents = in.Events
	return f.rec("Poll")
}
func (f *fakeFS) Bmap(ctx *Context, node uint64, in *BmapIn, out *BmapOut) Errno {
	return f.rec("Bmap")
}
func (f *fakeFS) Statx(ctx *Context, node uint64, in *StatxIn, out *StatxOut) Errno {
	out.Stat.Mask = in.SxMask
	return f.rec("Statx")
}

var _ FileSystem = (*fakeFS)(nil)
