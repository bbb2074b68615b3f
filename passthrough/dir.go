package passthrough

import (
	"encoding/binary"
	"sync"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// dirBufSize is the size of each directory handle's getdents64 buffer.
const dirBufSize = 8192

// dirStream is the listing state of a directory handle: the host
// descriptor's getdents64 position and the entries read but not yet sent.
type dirStream struct {
	mu sync.Mutex
	// buf[start:end] holds linux_dirent64 records read from the host and
	// not yet sent to the kernel.
	buf        []byte
	start, end int
	// pos is the cookie of the next unsent entry: the d_off of the last
	// entry sent, 0 at the start. A Readdir at another offset seeks.
	pos uint64
}

// Opendir opens a directory for Readdir. With CacheAlways the kernel may keep
// its cached listing across opens.
func (fs *FS) Opendir(ctx *fuseproto.Context, node uint64, in *fuseproto.OpenIn, out *fuseproto.OpenOut) fuseproto.Errno {
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFDIR {
		return unix.ENOTDIR
	}
	fd, err := fs.reopen(ino, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return hostfs.Errno(err)
	}
	d := &dirStream{buf: make([]byte, dirBufSize)}
	*out = fuseproto.OpenOut{Fh: fs.dirs.add(fd, ino, unix.O_RDONLY|unix.O_DIRECTORY, d), OpenFlags: fs.opendirFlags}
	return 0
}

// Readdir lists the directory from cookie in.Offset into dst. Cookies are the
// host's d_off values, so a listing resumes exactly where the kernel asks,
// and "." and ".." are listed as the host lists them. d_ino is the host
// st_ino, which is what Lookup reports except for a mount point, whose
// READDIR d_ino is the covered directory's (READDIRPLUS entries carry the
// looked-up attributes and so agree with Lookup).
//
// For READDIRPLUS each entry but "." and ".." is looked up, counting one
// lookup, only after dst.Fits says it will be sent; "." and ".." are sent
// as plain entries that count none.
func (fs *FS) Readdir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReadIn, dst *fuseproto.DirBuffer) fuseproto.Errno {
	h := fs.dirs.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.dirs.put(h)
	d := h.dir
	d.mu.Lock()
	defer d.mu.Unlock()

	if in.Offset != d.pos {
		if in.Offset > 1<<63-1 {
			return unix.EINVAL
		}
		if _, err := unix.Seek(h.fd, int64(in.Offset), unix.SEEK_SET); err != nil {
			return hostfs.Errno(err)
		}
		d.start, d.end = 0, 0
		d.pos = in.Offset
	}
	plus := dst.Plus()
	if plus {
		// lookupIn addresses the directory through its inode's O_PATH
		// descriptor, which a handle does not pin.
		if e := h.ino.pin(); e != 0 {
			return e
		}
		defer h.ino.unpin()
	}
	for {
		if d.start >= d.end {
			n, err := unix.Getdents(h.fd, d.buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if dst.Len() > 0 {
					return 0
				}
				return hostfs.Errno(err)
			}
			if n <= 0 {
				return 0 // end of directory
			}
			d.start, d.end = 0, n
		}
		rec := d.buf[d.start:d.end]
		// struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16,
		// d_type u8, d_name NUL-terminated, padded.
		if len(rec) < 19 {
			return unix.EIO
		}
		ino := binary.NativeEndian.Uint64(rec[0:])
		off := binary.NativeEndian.Uint64(rec[8:])
		reclen := int(binary.NativeEndian.Uint16(rec[16:]))
		typ := uint32(rec[18])
		if reclen < 19 || reclen > len(rec) {
			return unix.EIO
		}
		nameBytes := rec[19:reclen]
		for i, c := range nameBytes {
			if c == 0 {
				nameBytes = nameBytes[:i]
				break
			}
		}
		name := string(nameBytes)

		if plus && name != "." && name != ".." {
			if !dst.Fits(name) {
				return 0
			}
			var e fuseproto.EntryOut
			child, le := fs.lookupIn(h.ino, name, &e)
			switch {
			case le == unix.ENOENT:
				// Removed since getdents read it: skip it.
			case le != 0:
				if dst.Len() > 0 {
					return 0
				}
				return le
			default:
				fs.inodes.put(child)
				if !dst.AddPlus(name, &e, off) {
					fs.inodes.forget(e.NodeID, 1)
					return 0
				}
			}
		} else if !dst.Add(name, ino, typ, off) {
			return 0
		}
		d.start += reclen
		d.pos = off
	}
}

// Releasedir closes a directory handle once no request still uses it.
func (fs *FS) Releasedir(ctx *fuseproto.Context, node uint64, in *fuseproto.ReleaseIn) fuseproto.Errno {
	h := fs.dirs.remove(in.Fh)
	if h == nil {
		return unix.EBADF
	}
	fs.dirs.put(h)
	return 0
}

// Fsyncdir syncs a directory, or only its data with FsyncFdatasync.
func (fs *FS) Fsyncdir(ctx *fuseproto.Context, node uint64, in *fuseproto.FsyncIn) fuseproto.Errno {
	h := fs.dirs.get(in.Fh)
	if h == nil {
		return fs.missing(in.Fh)
	}
	defer fs.dirs.put(h)
	if in.FsyncFlags&fuseproto.FsyncFdatasync != 0 {
		return hostfs.Errno(unix.Fdatasync(h.fd))
	}
	return hostfs.Errno(unix.Fsync(h.fd))
}
