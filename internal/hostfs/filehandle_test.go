package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestHandleOf(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(f, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, mnt, err := HandleOf(fd)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statx_t
	if err := Statx(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mask&unix.STATX_MNT_ID != 0 && mnt != st.Mnt_id {
		t.Errorf("mount id %d, statx says %d", mnt, st.Mnt_id)
	}
	h2, _, err := HandleAt(unix.AT_FDCWD, f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Valid() || h.Key() != h2.Key() || len(h.Bytes()) == 0 {
		t.Errorf("two handles of one file differ: %x %x", h.Key(), h2.Key())
	}
	n, ok := NewFileHandle(h.Type(), h.Bytes())
	if !ok || n.Key() != h.Key() {
		t.Error("NewFileHandle does not round-trip")
	}
	for _, b := range [][]byte{nil, make([]byte, MaxHandleSize+1)} {
		if _, ok := NewFileHandle(1, b); ok {
			t.Errorf("NewFileHandle accepted %d bytes", len(b))
		}
	}
	if _, err := OpenHandle(fd, FileHandle{}, unix.O_PATH); err != unix.EINVAL {
		t.Errorf("OpenHandle of the zero handle: %v", err)
	}
}

func TestHandleOfUnsupported(t *testing.T) {
	fd, err := unix.Open("/proc/self", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		testenv.Missing(t, "no /proc: %v", err)
	}
	defer unix.Close(fd)
	_, _, err = HandleOf(fd)
	if !errors.Is(err, ErrNoHandles) || !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("procfs: %v, want ErrNoHandles wrapping EOPNOTSUPP", err)
	}
}

func TestMounts(t *testing.T) {
	var ms Mounts
	opens := 0
	open := func() (int, error) {
		opens++
		return unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	m1, err := ms.Get(7, open)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := ms.Get(7, open)
	if err != nil {
		t.Fatal(err)
	}
	ms.Ref(m2)
	if m1 != m2 || opens != 1 || ms.Len() != 1 || m1.ID() != 7 {
		t.Fatalf("two Gets: %p %p, %d opens, %d entries", m1, m2, opens, ms.Len())
	}
	fd := m1.Fd()
	ms.Put(m1)
	ms.Put(m2)
	if err := unix.Fstat(fd, &unix.Stat_t{}); err != nil {
		t.Fatal("descriptor closed while referenced")
	}
	ms.Put(m2)
	if ms.Len() != 0 {
		t.Errorf("%d entries after the last Put", ms.Len())
	}
	if _, err := ms.Get(8, func() (int, error) { return -1, unix.EACCES }); err != unix.EACCES {
		t.Errorf("failing open: %v", err)
	}
}
