package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

// beneathTree makes top/share with a file, a directory and symlinks that
// point out of it, and top/victim outside; it returns an O_PATH descriptor
// of the share.
func beneathTree(t *testing.T) int {
	t.Helper()
	top := t.TempDir()
	share := filepath.Join(top, "share")
	for _, d := range []string{share, filepath.Join(share, "dir")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(top, "victim"), filepath.Join(share, "file"), filepath.Join(share, "dir", "inner")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"up": "/", "etc": "/etc", "victimlink": "../victim"} {
		if err := os.Symlink(target, filepath.Join(share, name)); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(share, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestOpenBeneath(t *testing.T) {
	tests := []struct {
		name  string
		flags int
		// typ is the file type opened, or 0 when the open must fail
		// with err (openat2) or fallbackErr (openat).
		typ              uint32
		err, fallbackErr error
	}{
		{"file", unix.O_PATH, unix.S_IFREG, nil, nil},
		{"file", unix.O_RDONLY, unix.S_IFREG, nil, nil},
		{"dir", unix.O_PATH, unix.S_IFDIR, nil, nil},
		{"up", unix.O_PATH, unix.S_IFLNK, nil, nil},              // the symlink itself
		{"victimlink", unix.O_RDONLY, 0, unix.ELOOP, unix.ELOOP}, // never followed
		{"missing", unix.O_PATH, 0, unix.ENOENT, unix.ENOENT},
		{"..", unix.O_PATH, 0, unix.EXDEV, unix.EXDEV}, // RESOLVE_BENEATH / not a name
		{"../victim", unix.O_PATH, 0, unix.EXDEV, unix.EXDEV},
		{"/etc/passwd", unix.O_PATH, 0, unix.EXDEV, unix.EXDEV},
		{"etc/passwd", unix.O_PATH, 0, unix.ELOOP, unix.EXDEV}, // RESOLVE_NO_SYMLINKS / not a name
		{"up/etc/passwd", unix.O_PATH, 0, unix.ELOOP, unix.EXDEV},
		{"dir/../../victim", unix.O_PATH, 0, unix.EXDEV, unix.EXDEV},
		{"", unix.O_PATH, 0, unix.ENOENT, unix.EXDEV},
	}
	for _, mode := range []string{"openat2", "openat fallback"} {
		t.Run(mode, func(t *testing.T) {
			dirfd := beneathTree(t)
			var r Resolver
			fallback := mode != "openat2"
			if fallback {
				r.DisableOpenat2()
			}
			for _, tc := range tests {
				fd, err := r.OpenBeneath(dirfd, tc.name, tc.flags)
				if !fallback && r.noOpenat2.Load() {
					testenv.Missing(t, "the kernel has no openat2")
				}
				want := tc.err
				if fallback {
					want = tc.fallbackErr
				}
				if tc.typ == 0 {
					if err != want {
						t.Errorf("OpenBeneath(%q, %#o) = %d, %v; want %v", tc.name, tc.flags, fd, err, want)
					}
					if err == nil {
						unix.Close(fd)
					}
					continue
				}
				if err != nil {
					t.Errorf("OpenBeneath(%q, %#o): %v", tc.name, tc.flags, err)
					continue
				}
				var st unix.Statx_t
				if err := Statx(fd, &st); err != nil || uint32(st.Mode)&unix.S_IFMT != tc.typ {
					t.Errorf("OpenBeneath(%q, %#o) opened mode %#o (%v), want type %#o", tc.name, tc.flags, st.Mode, err, tc.typ)
				}
				if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
					t.Errorf("OpenBeneath(%q): descriptor flags %#x (%v), want FD_CLOEXEC", tc.name, fl, err)
				}
				unix.Close(fd)
			}
		})
	}
}
