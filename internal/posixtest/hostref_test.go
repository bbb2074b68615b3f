package posixtest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/posixtest"
)

// TestPosixHelperProcess is the entry point of the suite's helper processes.
func TestPosixHelperProcess(t *testing.T) { posixtest.HelperProcess() }

// worldDir makes a fresh directory under the system temporary directory
// that every user can search, as the tests acting as an unprivileged user
// need (t.TempDir is mode 0700).
func worldDir(t *testing.T, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestHostReference runs the suite on the host's own filesystem under the
// temporary directory, so the suite's expectations are checked against a
// real Linux filesystem. The 1 GiB test is left to the transports.
func TestHostReference(t *testing.T) {
	posixtest.RunWith(t, worldDir(t, "posixtest-host-"), posixtest.Options{
		Skip: map[string]string{"LargeFile1GiB": "the host reference run checks the suite, not the disk"},
	})
}

// TestMountedDir runs the suite on the directory named by POSIXTEST_DIR,
// which must exist and be empty; it is how a QEMU guest (or a person) runs
// the suite on a filesystem mounted by other means, e.g.
//
//	POSIXTEST_DIR=/mnt/share ./posixtest.test -test.run='^TestMountedDir$' -test.v
//
// POSIXTEST_SKIP may name tests to skip, separated by commas.
func TestMountedDir(t *testing.T) {
	dir := os.Getenv("POSIXTEST_DIR")
	if dir == "" {
		t.Skip("POSIXTEST_DIR is not set")
	}
	opts := posixtest.Options{Skip: map[string]string{}}
	for name := range strings.SplitSeq(os.Getenv("POSIXTEST_SKIP"), ",") {
		if name != "" {
			opts.Skip[name] = "named in POSIXTEST_SKIP"
		}
	}
	posixtest.RunWith(t, dir, opts)
}
