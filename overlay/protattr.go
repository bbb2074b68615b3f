package overlay

import (
	"encoding/binary"
	"strings"
	"unsafe"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// File attribute flags, as kernel overlayfs carries them: copy-up copies
// the sync and noatime flags to the upper; append-only and immutable are
// not set on the upper (which would stop the overlay itself) but recorded
// in the protattr xattr ("a", "i") and enforced by the overlay. Over FUSE
// the guest kernel does not know these flags, so the checks are here:
// an immutable object refuses every change, an append-only file every
// change but appending.

const (
	flSync      = 0x00000008 // FS_SYNC_FL
	flImmutable = 0x00000010 // FS_IMMUTABLE_FL
	flAppend    = 0x00000020 // FS_APPEND_FL
	flNoatime   = 0x00000080 // FS_NOATIME_FL

	flCopied    = flSync | flNoatime
	flProtected = flAppend | flImmutable

	iocGetFlags   = 0x80086601 // FS_IOC_GETFLAGS
	iocSetFlags   = 0x40086602 // FS_IOC_SETFLAGS
	ioc32GetFlags = 0x80046601 // FS_IOC32_GETFLAGS
	ioc32SetFlags = 0x40046602 // FS_IOC32_SETFLAGS

	xProtattr = "protattr"
)

// getFlags reads the attribute flags of the regular file or directory open
// as pathFd (O_PATH).
func (fs *FS) getFlags(pathFd int) (uint32, error) {
	fd, err := fs.reopen(pathFd, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var v int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocGetFlags, uintptr(unsafe.Pointer(&v))); e != 0 {
		return 0, e
	}
	return uint32(v), nil
}

// setFlags sets the attribute flags of the regular file or directory open
// as pathFd.
func (fs *FS) setFlags(pathFd int, flags uint32) error {
	fd, err := fs.reopen(pathFd, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v := int32(flags)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocSetFlags, uintptr(unsafe.Pointer(&v))); e != 0 {
		return e
	}
	return nil
}

// protattrValue formats protected flags as the protattr xattr.
func protattrValue(flags uint32) string {
	var b strings.Builder
	if flags&flAppend != 0 {
		b.WriteByte('a')
	}
	if flags&flImmutable != 0 {
		b.WriteByte('i')
	}
	return b.String()
}

// parseProtattr reads a protattr xattr value.
func parseProtattr(v string) uint32 {
	var f uint32
	for _, c := range v {
		switch c {
		case 'a':
			f |= flAppend
		case 'i':
			f |= flImmutable
		}
	}
	return f
}

// protFlags returns in's append-only and immutable flags: from its upper's
// protattr xattr, or from its lower object before copy-up. Caller holds
// in.mu.
func (fs *FS) protFlags(in *inode) uint32 {
	if in.typ != unix.S_IFREG && in.typ != unix.S_IFDIR {
		return 0
	}
	if !in.flagsKnown {
		var f uint32
		if in.upper >= 0 {
			if v, ok := getx(in.upper, fs.x.protattr); ok {
				f = parseProtattr(v)
			}
		} else if len(in.lower) > 0 {
			if lf, err := fs.getFlags(in.lower[0].fd); err == nil {
				f = lf & flProtected
			}
		}
		in.prot, in.flagsKnown = f, true
	}
	return in.prot
}

// protected returns in's protected flags, taking in.mu.
func (fs *FS) protected(in *inode) uint32 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return fs.protFlags(in)
}

// copyFlags gives a copy-up's temporary object tmp the flags of lower
// object src that travel: sync and noatime on the object, append-only and
// immutable as protattr.
func (fs *FS) copyFlags(src, tmp int, typ uint32) error {
	if typ != unix.S_IFREG && typ != unix.S_IFDIR {
		return nil
	}
	lf, err := fs.getFlags(src)
	if err != nil {
		return nil // the lower filesystem has no flags
	}
	if p := lf & flProtected; p != 0 {
		if err := setx(tmp, fs.x.protattr, protattrValue(p)); err != nil {
			return err
		}
	}
	if c := lf & flCopied; c != 0 {
		if uf, err := fs.getFlags(tmp); err == nil {
			fs.setFlags(tmp, uf|c) // best effort, as the kernel's
		}
	}
	return nil
}

// Ioctl runs FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (and their 32-bit forms)
// on the union's view of the flags; any other command answers ENOTTY.
// Setting copies the object up; append-only and immutable then go to the
// protattr xattr, and only root (CAP_LINUX_IMMUTABLE) may change them.
func (fs *FS) Ioctl(ctx *fuseproto.Context, node uint64, in *fuseproto.IoctlIn, inData, outData []byte) (int32, int, fuseproto.Errno) {
	set := false
	switch in.Cmd {
	case iocGetFlags, ioc32GetFlags:
	case iocSetFlags, ioc32SetFlags:
		set = true
	default:
		return 0, 0, unix.ENOTTY
	}
	ino, e := fs.inodes.get(node)
	if e != 0 {
		return 0, 0, e
	}
	defer fs.inodes.put(ino)
	if ino.typ != unix.S_IFREG && ino.typ != unix.S_IFDIR {
		return 0, 0, unix.ENOTTY
	}
	if !set {
		if len(outData) < 4 {
			return 0, 0, unix.EINVAL
		}
		ino.mu.Lock()
		f, err := fs.getFlags(ino.top())
		if err == nil {
			f = f&^flProtected | fs.protFlags(ino)
		}
		ino.mu.Unlock()
		if err != nil {
			return 0, 0, errno(err)
		}
		binary.NativeEndian.PutUint32(outData, f)
		return 0, 4, 0
	}
	if fs.readOnly() {
		return 0, 0, unix.EROFS
	}
	if len(inData) < 4 {
		return 0, 0, unix.EINVAL
	}
	want := binary.NativeEndian.Uint32(inData)
	var st unix.Statx_t
	if e := fs.statIn(ino, -1, &st); e != 0 {
		return 0, 0, e
	}
	if ctx != nil && ctx.UID != 0 && ctx.UID != st.Uid {
		return 0, 0, unix.EPERM
	}
	if old := fs.protected(ino); (old^want)&flProtected != 0 && ctx != nil && ctx.UID != 0 {
		return 0, 0, unix.EPERM
	}
	if e := fs.copyUp(ino, true); e != 0 {
		return 0, 0, e
	}
	ino.mu.Lock()
	defer ino.mu.Unlock()
	if err := fs.setFlags(ino.upper, want&^flProtected); err != nil {
		return 0, 0, errno(err)
	}
	var err error
	if p := want & flProtected; p != 0 {
		err = setx(ino.upper, fs.x.protattr, protattrValue(p))
	} else {
		err = removex(ino.upper, fs.x.protattr)
	}
	if err != nil {
		return 0, 0, errno(err)
	}
	ino.prot, ino.flagsKnown = want&flProtected, true
	return 0, 0, 0
}
