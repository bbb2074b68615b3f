package hostfs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

func TestErrno(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"errno", unix.ENOENT, unix.ENOENT},
		{"wrapped errno", fmt.Errorf("open: %w", unix.EACCES), unix.EACCES},
		{"path error", &os.PathError{Op: "open", Path: "x", Err: unix.ENOTDIR}, unix.ENOTDIR},
		{"not an errno", errors.New("boom"), unix.EIO},
	}
	for _, tc := range tests {
		if got := Errno(tc.err); got != tc.want {
			t.Errorf("%s: Errno(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		want syscall.Errno
	}{
		{"file", 0},
		{"...", 0},
		{".hidden", 0},
		{"a b", 0},
		{strings.Repeat("n", fuseproto.MaxNameLen), 0},
		{"", unix.EINVAL},
		{".", unix.EINVAL},
		{"..", unix.EINVAL},
		{"a/b", unix.EINVAL},
		{"/", unix.EINVAL},
		{"../x", unix.EINVAL},
		{"a\x00b", unix.EINVAL},
		{strings.Repeat("n", fuseproto.MaxNameLen+1), unix.EINVAL},
	}
	for _, tc := range tests {
		if got := ValidName(tc.name); got != tc.want {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
