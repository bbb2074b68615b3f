package devfuse

import (
	"sync/atomic"
	"syscall"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
)

// testFS is a tiny read-only filesystem for the transport's own tests,
// which must not depend on package passthrough: the root directory holds one
// file, helloName, whose reads always reach the daemon (FOPEN_DIRECT_IO);
// lookups of names starting with "block" wait until release is closed and
// then fail with ENOENT.
type testFS struct {
	enosysFS
	release  chan struct{}
	blocked  atomic.Int32 // lookups waiting on release
	destroys atomic.Int32
}

const (
	helloName = "hello"
	helloNode = 2
)

// helloData is the content of the file: more than one READ's worth at the
// kernel's default 128 KiB readahead.
var helloData = func() []byte {
	b := make([]byte, 300_000)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

var _ fuseproto.FileSystem = (*testFS)(nil)

func newTestFS() *testFS { return &testFS{release: make(chan struct{})} }

func (f *testFS) Init(cfg *fuseproto.Config)  {}
func (f *testFS) Destroy()                    { f.destroys.Add(1) }
func (f *testFS) Forget(node, nlookup uint64) {}

func (f *testFS) attr(node uint64, a *fuseproto.Attr) bool {
	now := uint64(time.Now().Unix())
	switch node {
	case fuseproto.RootID:
		*a = fuseproto.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}
	case helloNode:
		*a = fuseproto.Attr{Ino: helloNode, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(len(helloData))}
	default:
		return false
	}
	a.Atime, a.Mtime, a.Ctime, a.Blksize = now, now, now, 4096
	return true
}

func (f *testFS) Lookup(ctx *fuseproto.Context, parent uint64, name string, out *fuseproto.EntryOut) fuseproto.Errno {
	if parent != fuseproto.RootID {
		return syscall.ENOENT
	}
	if name == helloName {
		*out = fuseproto.EntryOut{NodeID: helloNode, EntryValid: 1, AttrValid: 1}
		f.attr(helloNode, &out.Attr)
		return fuseproto.OK
	}
	if len(name) >= 5 && name[:5] == "block" {
		f.blocked.Add(1)
		<-f.release
		f.blocked.Add(-1)
	}
	return syscall.ENOENT
}

func (f *testFS) Getattr(ctx *fuseproto.Context, node uint64, in *fuseproto.GetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	if !f.attr(node, &out.Attr) {
		return syscall.ENOENT
	}
	out.AttrValid = 1
	return fuseproto.OK
}

func (f *testFS) Open(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	if node != helloNode {
		return syscall.EISDIR
	}
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return syscall.EROFS
	}
	out.OpenFlags = fuseproto.FopenDirectIO
	return fuseproto.OK
}

func (f *testFS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	if in.Offset >= uint64(len(helloData)) {
		return fuseproto.OK
	}
	end := min(in.Offset+uint64(in.Size), uint64(len(helloData)))
	dst.Write(helloData[in.Offset:end])
	return fuseproto.OK
}

func (f *testFS) Flush(ctx *fuseproto.Context, node uint64, in *fuseproto.FlushIn) fuseproto.Errno {
	return fuseproto.OK
}

func (f *testFS) Release(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	return fuseproto.OK
}

func (f *testFS) Opendir(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	if node != fuseproto.RootID {
		return syscall.ENOTDIR
	}
	return fuseproto.OK
}

func (f *testFS) Readdir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst *fuseproto.DirBuffer) fuseproto.Errno {
	return fuseproto.OK
}

func (f *testFS) Releasedir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	return fuseproto.OK
}

func (f *testFS) Statfs(ctx *fuseproto.Context, node uint64, out *fuseproto.StatfsOut) fuseproto.Errno {
	out.St = fuseproto.Kstatfs{Bsize: 4096, Frsize: 4096, Namelen: 255}
	return fuseproto.OK
}

// enosysFS answers every operation with ENOSYS.
type enosysFS struct{}

func (enosysFS) Lookup(ctx *fuseproto.Context, parent uint64, name string, out *fuseproto.EntryOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Getattr(ctx *fuseproto.Context, node uint64, in *fuseproto.GetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Setattr(ctx *fuseproto.Context, node uint64, in *fuseproto.SetattrIn, out *fuseproto.AttrOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Readlink(ctx *fuseproto.Context, node uint64, buf []byte) (int, fuseproto.Errno) {
	return 0, syscall.ENOSYS
}
func (enosysFS) Symlink(ctx *fuseproto.Context, parent uint64, name, target string, out *fuseproto.EntryOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Mknod(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MknodIn, out *fuseproto.EntryOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Mkdir(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.MkdirIn, out *fuseproto.EntryOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Unlink(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Rmdir(ctx *fuseproto.Context, parent uint64, name string) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Rename(ctx *fuseproto.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Link(ctx *fuseproto.Context, node uint64, newParent uint64, newName string, out *fuseproto.EntryOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Open(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Create(ctx *fuseproto.Context, parent uint64, name string, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Tmpfile(ctx *fuseproto.Context, parent uint64, in *fuseproto.CreateIn, entry *fuseproto.EntryOut, open *fuseproto.OpenOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Read(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst fuseproto.ReadDest) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Write(ctx *fuseproto.Context, node uint64, in *fuseproto.WriteIn, src fuseproto.WriteSource) (uint32, fuseproto.Errno) {
	return 0, syscall.ENOSYS
}
func (enosysFS) Flush(ctx *fuseproto.Context, node uint64, in *fuseproto.FlushIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Release(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Fsync(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Opendir(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Readdir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst *fuseproto.DirBuffer) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Releasedir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Fsyncdir(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Statfs(ctx *fuseproto.Context, node uint64, out *fuseproto.StatfsOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Setxattr(ctx *fuseproto.Context, node uint64, name string, value []byte, in *fuseproto.SetxattrIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Getxattr(ctx *fuseproto.Context, node uint64, name string, dst []byte) (int, fuseproto.Errno) {
	return 0, syscall.ENOSYS
}
func (enosysFS) Listxattr(ctx *fuseproto.Context, node uint64, dst []byte) (int, fuseproto.Errno) {
	return 0, syscall.ENOSYS
}
func (enosysFS) Removexattr(ctx *fuseproto.Context, node uint64, name string) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Access(ctx *fuseproto.Context, node uint64, mask uint32) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Getlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, out *fuseproto.LkOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Setlk(ctx *fuseproto.Context, node uint64, in *fuseproto.LkIn, wait bool) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Fallocate(ctx *fuseproto.Context, node uint64, in *fuseproto.FallocateIn) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Lseek(ctx *fuseproto.Context, node uint64, in *fuseproto.LseekIn, out *fuseproto.LseekOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) CopyFileRange(ctx *fuseproto.Context, node uint64, in *fuseproto.CopyFileRangeIn) (uint64, fuseproto.Errno) {
	return 0, syscall.ENOSYS
}
func (enosysFS) Syncfs(ctx *fuseproto.Context, node uint64) fuseproto.Errno { return syscall.ENOSYS }
func (enosysFS) Ioctl(ctx *fuseproto.Context, node uint64, in *fuseproto.IoctlIn, inData, outData []byte) (int32, int, fuseproto.Errno) {
	return 0, 0, syscall.ENOSYS
}
func (enosysFS) Poll(ctx *fuseproto.Context, node uint64, in *fuseproto.PollIn, out *fuseproto.PollOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Bmap(ctx *fuseproto.Context, node uint64, in *fuseproto.BmapIn, out *fuseproto.BmapOut) fuseproto.Errno {
	return syscall.ENOSYS
}
func (enosysFS) Statx(ctx *fuseproto.Context, node uint64, in *fuseproto.StatxIn, out *fuseproto.StatxOut) fuseproto.Errno {
	return syscall.ENOSYS
}
