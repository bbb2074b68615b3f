package hostfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStatx(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("12345"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		flag int
		typ  uint32
		size uint64
	}{
		{"file", unix.O_RDONLY, unix.S_IFREG, 5},
		{"file", unix.O_PATH, unix.S_IFREG, 5},
		{"link", unix.O_PATH | unix.O_NOFOLLOW, unix.S_IFLNK, 4},
		{".", unix.O_PATH, unix.S_IFDIR, 0},
	}
	for _, tc := range tests {
		fd, err := unix.Open(filepath.Join(dir, tc.name), tc.flag|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Statx_t
		if err := Statx(fd, &st); err != nil {
			t.Fatalf("Statx(%s): %v", tc.name, err)
		}
		if uint32(st.Mode)&unix.S_IFMT != tc.typ {
			t.Errorf("Statx(%s): mode %#o, want type %#o", tc.name, st.Mode, tc.typ)
		}
		if tc.typ != unix.S_IFDIR && st.Size != tc.size {
			t.Errorf("Statx(%s): size %d, want %d", tc.name, st.Size, tc.size)
		}
		if st.Mask&unix.STATX_BASIC_STATS != unix.STATX_BASIC_STATS || st.Mask&unix.STATX_MNT_ID == 0 {
			t.Errorf("Statx(%s): mask %#x lacks basic stats or the mount id", tc.name, st.Mask)
		}
		if n := testing.AllocsPerRun(100, func() { Statx(fd, &st) }); n != 0 {
			t.Errorf("Statx(%s) allocates %v times", tc.name, n)
		}
		unix.Close(fd)
	}
	var st unix.Statx_t
	if err := Statx(-1, &st); err != unix.EBADF {
		t.Errorf("Statx(-1) = %v, want EBADF", err)
	}
}

func TestFdStatx(t *testing.T) {
	fd, err := unix.Open(t.TempDir(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := FdStatx(fd, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_INO, &st); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		t.Fatal(err)
	}
	if st.Ino != want.Ino || uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("FdStatx: ino %d mode %#o, want ino %d and a directory", st.Ino, st.Mode, want.Ino)
	}
	// Without AT_EMPTY_PATH the empty path is refused.
	if err := FdStatx(fd, 0, unix.STATX_TYPE, &st); err != unix.ENOENT {
		t.Errorf("FdStatx without AT_EMPTY_PATH = %v, want ENOENT", err)
	}
}
