package hostfs

import (
	"errors"
	"syscall"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// Errno converts an error from x/sys/unix into the errno sent to the kernel:
// 0 for nil, the errno itself for a syscall.Errno (wrapped or not), and EIO
// for any other error.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e // the common case, without errors.As's allocation
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// ValidName returns EINVAL unless name is a single path component: not "",
// "." or "..", without '/' or NUL, and at most fuseproto.MaxNameLen bytes.
// The fuseproto.Server already refuses such names; this is the second wall
// for the operations that create, remove or open by name.
func ValidName(name string) syscall.Errno {
	if name == "" || name == "." || name == ".." || len(name) > fuseproto.MaxNameLen {
		return unix.EINVAL
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return unix.EINVAL
		}
	}
	return 0
}
