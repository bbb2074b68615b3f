//go:build posixtestdir

package posixtest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/posixtest"
)

// TestMountedDir runs the suite on the directory named by POSIXTEST_DIR,
// which must exist and be empty; it is how a QEMU guest (or a person) runs
// the suite on a filesystem mounted by other means, e.g.
//
//	POSIXTEST_DIR=/mnt/share ./posixtest.test -test.run='^TestMountedDir$' -test.v
//
// POSIXTEST_SKIP may name tests to leave out, separated by commas. It is
// built only with the posixtestdir tag (go test -c -tags posixtestdir), so
// ordinary runs carry no test that depends on the environment.
func TestMountedDir(t *testing.T) {
	dir := os.Getenv("POSIXTEST_DIR")
	if dir == "" {
		t.Fatal("POSIXTEST_DIR is not set")
	}
	opts := posixtest.Options{Skip: map[string]string{}}
	for name := range strings.SplitSeq(os.Getenv("POSIXTEST_SKIP"), ",") {
		if name != "" {
			opts.Skip[name] = "named in POSIXTEST_SKIP"
		}
	}
	posixtest.RunWith(t, dir, opts)
}
