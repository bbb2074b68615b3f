package devfuse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/passthrough"
)

// TestPassthrough mounts a host directory through package passthrough,
// writes and reads a file through the mount, and unmounts.
func TestPassthrough(t *testing.T) {
	testenv.RequireFUSE(t)
	shared := t.TempDir()
	fs, err := passthrough.New(shared, passthrough.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	sv := serveTest(t, fs, 2)

	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: several WRITEs
	path := filepath.Join(sv.mnt, "file")
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); {
		n, err := unix.Write(fd, data[off:])
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		off += n
	}
	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(shared, "file")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("shared dir holds %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	if got, err := readFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	if err := os.Mkdir(filepath.Join(sv.mnt, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(shared, "dir")); err != nil || !st.IsDir() {
		t.Fatalf("mkdir through the mount: %v, %v", st, err)
	}

	if err := sv.s.Unmount(); err != nil {
		t.Fatal(err)
	}
	if err := sv.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if isMounted(t, sv.mnt) {
		t.Fatal("still mounted")
	}
}
