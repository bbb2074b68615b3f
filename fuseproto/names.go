package fuseproto

import (
	"bytes"
	"syscall"
)

// nameUse says which operation a name comes from, because "." and ".." are
// refused with the errno Linux gives for that operation.
type nameUse int

const (
	nameLookup nameUse = iota // "." and ".." allowed (export support)
	nameCreate                // mkdir, mknod, create, symlink, link target: EEXIST
	nameUnlink                // unlink: EISDIR
	nameRmdir                 // rmdir: "." EINVAL, ".." ENOTEMPTY
	nameRename                // rename source or target: EBUSY
)

// CheckName validates a name received from the kernel as one path
// component: not empty, no '/', no NUL, at most MaxNameLen bytes. It is the
// guest-facing wall against path escapes; every name reaches a FileSystem
// through it.
func CheckName(name []byte) Errno {
	switch {
	case len(name) == 0:
		return syscall.EINVAL
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	case bytes.IndexByte(name, '/') >= 0, bytes.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	}
	return OK
}

// checkNameFor applies CheckName and the rule for "." and ".." of use.
func checkNameFor(name []byte, use nameUse) Errno {
	if e := CheckName(name); e != OK {
		return e
	}
	dot := len(name) == 1 && name[0] == '.'
	dotdot := len(name) == 2 && name[0] == '.' && name[1] == '.'
	if !dot && !dotdot {
		return OK
	}
	switch use {
	case nameLookup:
		return OK
	case nameCreate:
		return syscall.EEXIST
	case nameUnlink:
		return syscall.EISDIR
	case nameRmdir:
		if dot {
			return syscall.EINVAL
		}
		return syscall.ENOTEMPTY
	default:
		return syscall.EBUSY
	}
}

// cstring splits a NUL-terminated string off the front of b, returning the
// string's bytes (without the NUL) and the rest. ok is false when there is
// no NUL.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
