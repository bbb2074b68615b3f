package sandbox

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cap is a Linux capability number (capabilities(7)).
type Cap uint

// capNames are the capabilities' names without the CAP_ prefix, by number.
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
	"SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// String returns the capability's name without the CAP_ prefix, in lower
// case as --modcaps spells it.
func (c Cap) String() string {
	if int(c) < len(capNames) {
		return strings.ToLower(capNames[c])
	}
	return "cap_" + strconv.Itoa(int(c))
}

// ParseCap parses a capability name, with or without the CAP_ prefix, in
// any case.
func ParseCap(s string) (Cap, error) {
	u := strings.TrimPrefix(strings.ToUpper(s), "CAP_")
	for i, n := range capNames {
		if n == u {
			return Cap(i), nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", s)
}

// DefaultCaps are the capabilities the daemon keeps, virtiofsd's set: it
// must create files for any owner, read and write whatever the guest's
// permissions allow, keep set-ID bits, switch its filesystem ids per
// request and make device nodes.
var DefaultCaps = []Cap{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
	unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_MKNOD, unix.CAP_SETFCAP,
}

// ModifyCaps applies a --modcaps value to the set caps: a colon-separated
// list of +name (keep) and -name (drop), virtiofsd's syntax, for example
// "+sys_admin:-mknod". It returns the new set, sorted, and the capabilities
// the value dropped explicitly (a caller that needs one of those for a
// feature it was asked for reports the conflict).
func ModifyCaps(caps []Cap, modcaps string) (keep, dropped []Cap, err error) {
	set := map[Cap]bool{}
	for _, c := range caps {
		set[c] = true
	}
	drop := map[Cap]bool{}
	if modcaps != "" {
		for _, m := range strings.Split(modcaps, ":") {
			if len(m) < 2 || (m[0] != '+' && m[0] != '-') {
				return nil, nil, fmt.Errorf("bad entry %q: want +capability or -capability, separated by ':'", m)
			}
			c, err := ParseCap(m[1:])
			if err != nil {
				return nil, nil, err
			}
			set[c], drop[c] = m[0] == '+', m[0] == '-'
		}
	}
	for c, ok := range set {
		if ok {
			keep = append(keep, c)
		}
	}
	for c, ok := range drop {
		if ok {
			dropped = append(dropped, c)
		}
	}
	sort.Slice(keep, func(i, j int) bool { return keep[i] < keep[j] })
	sort.Slice(dropped, func(i, j int) bool { return dropped[i] < dropped[j] })
	return keep, dropped, nil
}

// lastCap returns the highest capability number the kernel knows.
func lastCap() Cap {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			return Cap(n)
		}
	}
	return Cap(len(capNames) - 1)
}

// allCaps returns every capability of the calling thread's bounding set
// (the others cannot be raised), as SysProcAttr wants them.
func allCaps() []uintptr {
	var caps []uintptr
	for c := Cap(0); c <= lastCap(); c++ {
		if inBounding(c) {
			caps = append(caps, uintptr(c))
		}
	}
	return caps
}

// inBounding reports whether c is in the calling thread's bounding set.
func inBounding(c Cap) bool {
	r, _, e := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uintptr(c), 0)
	return e == 0 && r == 1
}

// errCgo explains AllThreadsSyscall's ENOTSUP.
const errCgo = "the daemon was built with cgo, which cannot change every thread's capabilities: build it with CGO_ENABLED=0"

// capHeader and capData are the kernel's __user_cap_header_struct and
// __user_cap_data_struct (version 3: two data structs for 64 bits).
type capHeader struct {
	version uint32
	pid     int32
}

type capData struct {
	effective, permitted, inheritable uint32
}

// DropCapabilities leaves every thread of the process with keep as its
// permitted and effective capabilities (those of keep it has: the others
// cannot be gained), no inheritable or ambient ones, and a bounding set of
// keep, so that nothing the daemon executes or becomes can regain the
// others. It returns the capabilities kept.
func DropCapabilities(keep []Cap) ([]Cap, error) {
	have, err := permitted()
	if err != nil {
		return nil, fmt.Errorf("sandbox: capget: %w", err)
	}
	want := map[Cap]bool{}
	var kept []Cap
	for _, c := range keep {
		if have&(1<<c) != 0 && !want[c] {
			want[c] = true
			kept = append(kept, c)
		}
	}
	// The bounding set first, while CAP_SETPCAP is still there.
	for c := Cap(0); c <= lastCap(); c++ {
		if want[c] {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 && e != unix.EINVAL {
			if e == unix.ENOTSUP {
				return nil, errors.New("sandbox: " + errCgo)
			}
			return nil, fmt.Errorf("sandbox: dropping %s from the bounding set: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != unix.EINVAL {
		return nil, fmt.Errorf("sandbox: clearing ambient capabilities: %w", e)
	}
	hdr := capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]capData
	for c := range want {
		data[c/32].effective |= 1 << (c % 32)
		data[c/32].permitted |= 1 << (c % 32)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return nil, fmt.Errorf("sandbox: setting capabilities: %w", e)
	}
	return kept, nil
}

// permitted returns the calling thread's permitted capabilities as a mask.
func permitted() (uint64, error) {
	hdr := capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(unix.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return 0, e
	}
	return uint64(data[0].permitted) | uint64(data[1].permitted)<<32, nil
}

// Effective returns the calling thread's effective capabilities.
func Effective() ([]Cap, error) {
	hdr := capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(unix.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return nil, e
	}
	var caps []Cap
	for c := Cap(0); c < 64; c++ {
		if data[c/32].effective&(1<<(c%32)) != 0 {
			caps = append(caps, c)
		}
	}
	return caps, nil
}
