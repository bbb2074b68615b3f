package passthrough

import (
	"encoding/binary"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
	"golang.org/x/sys/unix"
)

// The ioctls we run, by the command numbers the guest sends. The flag ioctls
// are declared with a long argument but pass an int; 32-bit guests send the
// FS_IOC32 numbers.
const (
	iocGetFlags   = 0x80086601 // FS_IOC_GETFLAGS
	iocSetFlags   = 0x40086602 // FS_IOC_SETFLAGS
	ioc32GetFlags = 0x80046601 // FS_IOC32_GETFLAGS
	ioc32SetFlags = 0x40046602 // FS_IOC32_SETFLAGS
	iocFsGetXattr = 0x801c581f // FS_IOC_FSGETXATTR
	iocFsSetXattr = 0x401c5820 // FS_IOC_FSSETXATTR
)

// Ioctl runs FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR and
// FS_IOC_FSSETXATTR on the open file or directory (IoctlDir) in.Fh; any
// other command answers ENOTTY. The setting ioctls run with the caller's
// credentials, so the host checks ownership and CAP_LINUX_IMMUTABLE for the
// caller rather than the daemon.
func (fs *FS) Ioctl(ctx *fuseproto.Context, node uint64, in *fuseproto.IoctlIn, inData, outData []byte) (int32, int, fuseproto.Errno) {
	switch in.Cmd {
	case iocGetFlags, ioc32GetFlags, iocFsGetXattr:
	case iocSetFlags, ioc32SetFlags, iocFsSetXattr:
		if fs.opts.ReadOnly {
			return 0, 0, unix.EROFS
		}
	default:
		return 0, 0, unix.ENOTTY
	}
	t := &fs.files
	if in.Flags&fuseproto.IoctlDir != 0 {
		t = &fs.dirs
	}
	h := t.get(in.Fh)
	if h == nil {
		return 0, 0, fs.missing(in.Fh)
	}
	defer t.put(h)

	switch in.Cmd {
	case iocGetFlags, ioc32GetFlags:
		if len(outData) < 4 {
			return 0, 0, unix.EINVAL
		}
		v, err := unix.IoctlGetUint32(h.fd, iocGetFlags)
		if err != nil {
			return 0, 0, hostfs.Errno(err)
		}
		binary.NativeEndian.PutUint32(outData, v)
		return 0, 4, 0
	case iocSetFlags, ioc32SetFlags:
		if len(inData) < 4 {
			return 0, 0, unix.EINVAL
		}
		v := int32(binary.NativeEndian.Uint32(inData))
		err := fs.asCaller(ctx, func() error { return unix.IoctlSetPointerInt(h.fd, iocSetFlags, int(v)) })
		return 0, 0, hostfs.Errno(err)
	case iocFsGetXattr:
		if len(outData) < hostfs.FsxattrSize {
			return 0, 0, unix.EINVAL
		}
		var x hostfs.Fsxattr
		if e := hostfs.GetFsxattr(h.fd, &x); e != 0 {
			return 0, 0, e
		}
		for i, v := range x {
			binary.NativeEndian.PutUint32(outData[4*i:], v)
		}
		return 0, hostfs.FsxattrSize, 0
	default: // iocFsSetXattr
		if len(inData) < hostfs.FsxattrSize {
			return 0, 0, unix.EINVAL
		}
		var x hostfs.Fsxattr
		for i := range x {
			x[i] = binary.NativeEndian.Uint32(inData[4*i:])
		}
		err := fs.asCaller(ctx, func() error {
			if e := hostfs.SetFsxattr(h.fd, &x); e != 0 {
				return e
			}
			return nil
		})
		return 0, 0, hostfs.Errno(err)
	}
}
