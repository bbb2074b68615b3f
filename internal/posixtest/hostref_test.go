package posixtest_test

import (
	"os"
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
