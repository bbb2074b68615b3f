package overlay

import (
	"encoding/binary"
	"strconv"

	"golang.org/x/sys/unix"
)

// readNames lists the directory open as pathFd (O_PATH): each entry but "."
// and ".." with its d_ino and d_type, in the host's order.
func (fs *FS) readNames(pathFd int, fn func(name string, ino uint64, typ uint8) error) error {
	fd, err := unix.Openat(fs.procFd, itoa(pathFd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		for rec := buf[:n]; len(rec) >= 19; {
			ino := binary.NativeEndian.Uint64(rec[0:])
			reclen := int(binary.NativeEndian.Uint16(rec[16:]))
			typ := rec[18]
			if reclen < 19 || reclen > len(rec) {
				return unix.EIO
			}
			name := rec[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				if err := fn(s, ino, typ); err != nil {
					return err
				}
			}
			rec = rec[reclen:]
		}
	}
}

// emptyDir removes everything inside the directory open as pathFd.
func (fs *FS) emptyDir(pathFd int) error {
	var names []string
	if err := fs.readNames(pathFd, func(name string, _ uint64, _ uint8) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return err
	}
	for _, n := range names {
		if err := fs.removeAllAt(pathFd, n); err != nil {
			return err
		}
	}
	return nil
}

// removeAllAt removes name in directory dirfd and, for a directory,
// everything in it, never following a symlink.
func (fs *FS) removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, oerr := fs.res.OpenBeneath(dirfd, name, unix.O_PATH|unix.O_DIRECTORY)
	if oerr != nil {
		return err
	}
	eerr := fs.emptyDir(fd)
	unix.Close(fd)
	if eerr != nil {
		return eerr
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// itoa formats a descriptor number for a /proc/self/fd lookup.
func itoa(fd int) string { return strconv.Itoa(fd) }
