// Package testenv holds the one rule every test that needs the machine
// follows: a missing prerequisite (root, /dev/fuse, QEMU) skips the test on a
// developer's machine but fails it under CI=true, where everything must be
// there and a skipped test would hide a gap.
package testenv

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// CI reports whether the tests run in CI (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// Missing reports a missing prerequisite: a failure under CI=true, a skip
// otherwise.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=true: a missing prerequisite is a failure)", msg)
	}
	t.Skip(msg)
}

// RequireFUSE makes sure the test can mount FUSE filesystems: it runs as
// root and can open /dev/fuse.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "mounting FUSE needs root")
		return
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		Missing(t, "cannot open /dev/fuse: %v", err)
		return
	}
	unix.Close(fd)
}
