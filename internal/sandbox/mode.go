package sandbox

import (
	"errors"
	"fmt"
)

// Mode is a sandbox mechanism, as --sandbox names it.
type Mode int

const (
	// Namespace runs the daemon in new mount, PID, network and IPC
	// namespaces with an empty root; the default.
	Namespace Mode = iota
	// Chroot changes the root directory to the shared directory.
	Chroot
	// None does not confine the daemon.
	None
)

// ParseMode parses a --sandbox value: namespace, chroot or none.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "namespace":
		return Namespace, nil
	case "chroot":
		return Chroot, nil
	case "none":
		return None, nil
	}
	return 0, errors.New("want namespace, chroot or none")
}

// String returns the mode's --sandbox name.
func (m Mode) String() string {
	switch m {
	case Namespace:
		return "namespace"
	case Chroot:
		return "chroot"
	case None:
		return "none"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
