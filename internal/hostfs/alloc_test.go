package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHandleProbe checks that a HandleProbe makes the handle HandleOf
// makes, with the same key and mount, and allocates nothing doing so.
func TestHandleProbe(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(dir, "f"), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, mnt, err := HandleOf(fd)
	if errors.Is(err, ErrNoHandles) {
		t.Skipf("the temporary directory's filesystem makes no handles: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var p HandleProbe
	pmnt, err := p.Of(fd)
	if err != nil || pmnt != mnt || p.Key() != h.Key() {
		t.Fatalf("probe: mount %d key %x (%v); HandleOf: mount %d key %x", pmnt, p.Key(), err, mnt, h.Key())
	}
	if ph := p.Handle(); ph.Key() != h.Key() || ph.Type() != h.Type() {
		t.Fatalf("probe's handle %x, HandleOf's %x", ph.Key(), h.Key())
	}
	if a := testing.AllocsPerRun(100, func() { p.Of(fd) }); a != 0 {
		t.Errorf("%v allocations per HandleProbe.Of", a)
	}
	if a := testing.AllocsPerRun(100, func() { _ = p.Key() == h.Key() }); a != 0 {
		t.Errorf("%v allocations per HandleProbe.Key", a)
	}
}

// TestOpenBeneathAllocs checks that OpenBeneath allocates nothing for a
// name shorter than 256 bytes, that failing lookups do not either (Errno),
// and that names with a NUL are refused as unix.Openat2 refuses them.
func TestOpenBeneathAllocs(t *testing.T) {
	dir := t.TempDir()
	name := "a-file-with-a-longer-name"
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	var r Resolver
	open := func(n string) error {
		fd, err := r.OpenBeneath(dirfd, n, unix.O_PATH)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	if err := open(name); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() { open(name) }); a != 0 {
		t.Errorf("%v allocations per OpenBeneath", a)
	}
	if a := testing.AllocsPerRun(100, func() { Errno(open("missing")) }); a != 0 {
		t.Errorf("%v allocations per failing OpenBeneath and Errno", a)
	}
	if err := open("missing"); err != unix.ENOENT {
		t.Errorf("missing name: %v, want ENOENT", err)
	}
	if err := open("a\x00b"); err != unix.EINVAL {
		t.Errorf("name with NUL: %v, want EINVAL", err)
	}
	if err := open(strings.Repeat("x", 300)); err != unix.ENAMETOOLONG {
		t.Errorf("300-byte name: %v, want ENAMETOOLONG", err)
	}
}
