package fuseproto

import "syscall"

// Errno is the only error type on the data path: zero means success, any
// other value is the positive errno sent back to the kernel.
type Errno = syscall.Errno

// OK is the zero Errno.
const OK Errno = 0

// Context describes the caller of one request. It is owned by the Server and
// valid only for the duration of the call it is passed to.
type Context struct {
	Unique uint64
	NodeID uint64
	// UID, GID and PID are the caller's fsuid, fsgid and tgid as the kernel
	// saw them (after any idmap of the mount).
	UID uint32
	GID uint32
	PID uint32
	// SuppGroups holds the supplementary groups the kernel sent with a
	// creating request (FUSE_EXT_GROUPS, negotiated with
	// FUSE_CREATE_SUPP_GROUP); empty otherwise.
	SuppGroups []uint32
	// SecCtx holds the security contexts (LSM labels) the kernel sent with
	// a creating request — CREATE, MKNOD, MKDIR, SYMLINK, TMPFILE — when the
	// session has InitSecurityCtx (Options.Enable); empty otherwise, and
	// when the guest has no LSM that labels files. A FileSystem stores each
	// as the xattr Name of the object it creates, before answering, and
	// undoes the creation if it cannot. See SecCtx for lifetimes.
	SecCtx []SecCtx
	// Interrupted is closed when the kernel interrupts this request with
	// FUSE_INTERRUPT. It is non-nil only for requests that may block for an
	// unbounded time (SETLKW); a filesystem must return EINTR promptly once
	// it is closed.
	Interrupted <-chan struct{}
}

// Config is the session state negotiated by FUSE_INIT, handed to the
// filesystem before any other request of that session.
type Config struct {
	// Minor is the negotiated minor protocol version.
	Minor uint32
	// Flags are the INIT flags in effect (offered by the kernel and enabled
	// by us), flags2 shifted into the upper 32 bits.
	Flags uint64
	// MaxWrite is the largest WRITE payload the kernel will send.
	MaxWrite uint32
	// MaxReadahead is the kernel's readahead limit.
	MaxReadahead uint32
}

// Has reports whether all of the given INIT flags are in effect.
func (c *Config) Has(flags uint64) bool { return c.Flags&flags == flags }

// ReadDest is where a READ reply's data goes: the room right after the reply
// header, possibly scattered over several buffers (guest memory on the virtio
// transport). Data written through it is sent as the reply payload in order.
type ReadDest interface {
	// Room is the number of bytes that still fit.
	Room() int
	// Len is the number of bytes written so far.
	Len() int
	// ReadFromFD fills up to n bytes (at most Room) with preadv(fd, off)
	// straight into the destination buffers, returning the bytes read; a
	// short count means end of file.
	ReadFromFD(fd int, off int64, n int) (int, Errno)
	// Write appends p, copying it, for data produced in memory. It writes
	// at most Room bytes and returns io.ErrShortWrite past that.
	Write(p []byte) (int, error)
}

// WriteSource is the payload of a WRITE request, possibly scattered over
// several buffers (guest memory on the virtio transport).
type WriteSource interface {
	// Len is the number of payload bytes not yet consumed.
	Len() int
	// WriteToFD writes the remaining payload with pwritev(fd, off) straight
	// from the source buffers and returns the bytes written.
	WriteToFD(fd int, off int64) (int, Errno)
	// Read copies payload into p, for filesystems that need the bytes.
	Read(p []byte) (int, error)
}

// FileSystem is what a Server serves: one method per FUSE operation, each
// with the decoded request and a reply struct to fill. Methods are called
// concurrently from many goroutines. Names are single path components,
// already checked by the Server: never empty, never containing '/' or NUL,
// at most MaxNameLen bytes; "." and ".." reach only Lookup.
//
// A method returns OK and fills its out arguments, or returns an errno and
// leaves them alone. A successful reply that carries an EntryOut with a
// nonzero NodeID (Lookup, Mknod, Mkdir, Symlink, Link, Create, Tmpfile and
// each READDIRPLUS entry added with AddPlus) counts one lookup of that node,
// which the kernel gives back with Forget.
type FileSystem interface {
	// Init is called on FUSE_INIT, before any other request of the session.
	Init(cfg *Config)
	// Destroy ends the session (FUSE_DESTROY, or the transport went away):
	// every lookup count but the root's is dropped and every handle closed.
	Destroy()

	// Lookup finds name in directory parent. With export support the
	// kernel may look up "." and ".."; ".." of the root is the root.
	Lookup(ctx *Context, parent uint64, name string, out *EntryOut) Errno
	// Forget drops nlookup lookups of node; it has no reply.
	Forget(node uint64, nlookup uint64)
	// Getattr returns the attributes of node, or of open handle in.Fh when
	// in.GetattrFlags has GetattrFh.
	Getattr(ctx *Context, node uint64, in *GetattrIn, out *AttrOut) Errno
	// Setattr changes the attributes named by in.Valid.
	Setattr(ctx *Context, node uint64, in *SetattrIn, out *AttrOut) Errno
	// Readlink copies the symlink's target into buf and returns its length.
	Readlink(ctx *Context, node uint64, buf []byte) (int, Errno)
	// Symlink creates name in parent pointing at target.
	Symlink(ctx *Context, parent uint64, name, target string, out *EntryOut) Errno
	// Mknod creates a regular file, device node, fifo or socket.
	Mknod(ctx *Context, parent uint64, name string, in *MknodIn, out *EntryOut) Errno
	// Mkdir creates a directory.
	Mkdir(ctx *Context, parent uint64, name string, in *MkdirIn, out *EntryOut) Errno
	// Unlink removes a non-directory.
	Unlink(ctx *Context, parent uint64, name string) Errno
	// Rmdir removes an empty directory.
	Rmdir(ctx *Context, parent uint64, name string) Errno
	// Rename moves parent/name to newParent/newName; flags are
	// RENAME_NOREPLACE, RENAME_EXCHANGE or RENAME_WHITEOUT.
	Rename(ctx *Context, parent uint64, name string, newParent uint64, newName string, flags uint32) Errno
	// Link makes newParent/newName a hard link to node.
	Link(ctx *Context, node uint64, newParent uint64, newName string, out *EntryOut) Errno
	// Open opens a non-directory and returns a handle in out.Fh.
	Open(ctx *Context, node uint64, in *OpenIn, out *OpenOut) Errno
	// Create creates and opens a regular file.
	Create(ctx *Context, parent uint64, name string, in *CreateIn, entry *EntryOut, open *OpenOut) Errno
	// Tmpfile creates and opens an unnamed file in parent (O_TMPFILE).
	Tmpfile(ctx *Context, parent uint64, in *CreateIn, entry *EntryOut, open *OpenOut) Errno
	// Read reads at most in.Size bytes at in.Offset into dst.
	Read(ctx *Context, node uint64, in *ReadIn, dst ReadDest) Errno
	// Write writes src at in.Offset and returns the bytes written.
	Write(ctx *Context, node uint64, in *WriteIn, src WriteSource) (uint32, Errno)
	// Flush is called on each close(2) of a file descriptor; it releases
	// the POSIX locks of in.LockOwner.
	Flush(ctx *Context, node uint64, in *FlushIn) Errno
	// Release closes handle in.Fh; it is the last use of the handle.
	Release(ctx *Context, node uint64, in *ReleaseIn) Errno
	// Fsync flushes a file's data (and metadata unless FsyncFdatasync).
	Fsync(ctx *Context, node uint64, in *FsyncIn) Errno
	// Opendir opens a directory for Readdir.
	Opendir(ctx *Context, node uint64, in *OpenIn, out *OpenOut) Errno
	// Readdir lists the directory from cookie in.Offset into dst, which
	// also says whether this is READDIRPLUS. The offset stored with each
	// entry is the cookie of the entry after it; d_ino equals the st_ino
	// Lookup reports for that name.
	Readdir(ctx *Context, node uint64, in *ReadIn, dst *DirBuffer) Errno
	// Releasedir closes a directory handle.
	Releasedir(ctx *Context, node uint64, in *ReleaseIn) Errno
	// Fsyncdir syncs a directory.
	Fsyncdir(ctx *Context, node uint64, in *FsyncIn) Errno
	// Statfs reports the filesystem holding node.
	Statfs(ctx *Context, node uint64, out *StatfsOut) Errno
	// Setxattr sets an extended attribute.
	Setxattr(ctx *Context, node uint64, name string, value []byte, in *SetxattrIn) Errno
	// Getxattr copies the value of name into dst and returns its length;
	// with an empty dst it only returns the length. ERANGE when dst is too
	// small.
	Getxattr(ctx *Context, node uint64, name string, dst []byte) (int, Errno)
	// Listxattr copies the NUL-separated list of names into dst, like
	// Getxattr.
	Listxattr(ctx *Context, node uint64, dst []byte) (int, Errno)
	// Removexattr removes an extended attribute.
	Removexattr(ctx *Context, node uint64, name string) Errno
	// Access checks the caller's access to node (R_OK, W_OK, X_OK, F_OK).
	Access(ctx *Context, node uint64, mask uint32) Errno
	// Getlk tests for a lock conflicting with in.Lk.
	Getlk(ctx *Context, node uint64, in *LkIn, out *LkOut) Errno
	// Setlk takes or releases a POSIX lock (or a flock lock when
	// in.LkFlags has LkFlock); with wait it blocks until the lock is
	// granted or ctx.Interrupted is closed (EINTR).
	Setlk(ctx *Context, node uint64, in *LkIn, wait bool) Errno
	// Fallocate allocates or punches space.
	Fallocate(ctx *Context, node uint64, in *FallocateIn) Errno
	// Lseek finds data or holes (SEEK_DATA, SEEK_HOLE).
	Lseek(ctx *Context, node uint64, in *LseekIn, out *LseekOut) Errno
	// CopyFileRange copies between two open files and returns the bytes
	// copied.
	CopyFileRange(ctx *Context, node uint64, in *CopyFileRangeIn) (uint64, Errno)
	// Syncfs syncs the filesystem holding node.
	Syncfs(ctx *Context, node uint64) Errno
	// Ioctl runs a restricted ioctl: inData holds in.InSize bytes, the
	// result is written to outData (room for in.OutSize bytes); it returns
	// the ioctl's result and the bytes written to outData.
	Ioctl(ctx *Context, node uint64, in *IoctlIn, inData, outData []byte) (int32, int, Errno)
	// Poll reports the ready events of an open file.
	Poll(ctx *Context, node uint64, in *PollIn, out *PollOut) Errno
	// Bmap maps a file block to a device block (block-device FUSE only).
	Bmap(ctx *Context, node uint64, in *BmapIn, out *BmapOut) Errno
	// Statx returns extended attributes, birth time included.
	Statx(ctx *Context, node uint64, in *StatxIn, out *StatxOut) Errno
}
