package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultNofile is the open-file limit SetNofile aims for when
// --rlimit-nofile is not given, virtiofsd's: every inode the guest knows
// holds a descriptor.
const DefaultNofile = 1_000_000

// SetNofile sets RLIMIT_NOFILE as virtiofsd's --rlimit-nofile does. With
// explicit false (the option absent) it raises soft and hard limit to
// DefaultNofile, capped by /proc/sys/fs/nr_open, unless the soft limit is
// already higher; if that is not permitted it raises the soft limit to the
// hard one instead, and reports that in warn. With explicit true, n = 0
// leaves the limit alone and any other n sets both limits to n or fails.
// It returns the resulting soft limit.
func SetNofile(n uint64, explicit bool) (cur uint64, warn string, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, "", fmt.Errorf("getrlimit: %w", err)
	}
	if explicit && n == 0 {
		return lim.Cur, "", nil
	}
	max := nrOpen()
	target := n
	if !explicit {
		if lim.Cur >= DefaultNofile {
			return lim.Cur, "", nil
		}
		target = min(DefaultNofile, max)
	}
	if target > max {
		return lim.Cur, "", fmt.Errorf("--rlimit-nofile %d is above the kernel's limit (fs.nr_open = %d)", target, max)
	}
	err = unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: target, Max: target})
	if err == nil {
		return target, "", nil
	}
	if explicit {
		return lim.Cur, "", fmt.Errorf("--rlimit-nofile %d: %w", target, err)
	}
	warn = fmt.Sprintf("cannot raise the open-file limit to %d (%v); using the hard limit %d", target, err, lim.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim.Max, Max: lim.Max}); err != nil {
		return lim.Cur, "", fmt.Errorf("setrlimit to the hard limit %d: %w", lim.Max, err)
	}
	return lim.Max, warn, nil
}

// nrOpen returns fs.nr_open, the most descriptors a process may have.
func nrOpen() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return n
		}
	}
	return 1 << 20
}
