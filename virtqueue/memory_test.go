package virtqueue

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("memtest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestMapRegionValidation(t *testing.T) {
	fd := memfd(t, 1<<20)
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	tests := []struct {
		name string
		fd   int
		spec RegionSpec
		ok   bool
	}{
		{"whole file", fd, RegionSpec{GuestAddr: 0, Size: 1 << 20}, true},
		{"offset not page aligned", fd, RegionSpec{GuestAddr: 0x1000, Size: 0x1000, MmapOffset: 0x10}, true},
		{"zero size", fd, RegionSpec{Size: 0}, false},
		{"beyond the file", fd, RegionSpec{Size: 2 << 20}, false},
		{"offset beyond the file", fd, RegionSpec{Size: 4096, MmapOffset: 1 << 20}, false},
		{"guest address wraps", fd, RegionSpec{GuestAddr: ^GuestAddress(0) - 10, Size: 4096}, false},
		{"user address wraps", fd, RegionSpec{UserAddr: ^uint64(0) - 10, Size: 4096}, false},
		{"offset wraps", fd, RegionSpec{MmapOffset: ^uint64(0) - 10, Size: 4096}, false},
		{"too large", fd, RegionSpec{Size: MaxRegionSize + 1}, false},
		{"a directory", int(dir.Fd()), RegionSpec{Size: 4096}, false},
		{"a pipe", pipe[0], RegionSpec{Size: 4096}, false},
		{"a closed fd", 1 << 20, RegionSpec{Size: 4096}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := MapRegion(tt.fd, tt.spec)
			if (err == nil) != tt.ok {
				t.Fatalf("MapRegion: %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestMapRegionOffsetData(t *testing.T) {
	fd := memfd(t, 3*4096)
	if _, err := unix.Pwrite(fd, []byte("at 0x2010"), 0x2010); err != nil {
		t.Fatal(err)
	}
	r, err := MapRegion(fd, RegionSpec{GuestAddr: 0x10000, Size: 0x1000, MmapOffset: 0x2000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := string(r.data[0x10:0x19]); got != "at 0x2010" {
		t.Fatalf("data at offset: %q", got)
	}
}

func newTable(t *testing.T, specs ...RegionSpec) (*GuestMemory, []*Region) {
	t.Helper()
	g := NewGuestMemory()
	var regs []*Region
	for _, s := range specs {
		r, err := MapRegion(memfd(t, int64(s.MmapOffset+s.Size)), s)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	if err := g.SetTable(regs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Clear)
	return g, regs
}

func TestTranslate(t *testing.T) {
	g, _ := newTable(t,
		RegionSpec{GuestAddr: 0x10000, Size: 0x1000, UserAddr: 0x7000_0000},
		RegionSpec{GuestAddr: 0x11000, Size: 0x1000, UserAddr: 0x9000_0000}, // adjacent
		RegionSpec{GuestAddr: 0x20000, Size: 0x1000, UserAddr: 0x7000_1000},
	)
	m := g.Acquire()
	defer m.Release()
	tests := []struct {
		name   string
		addr   GuestAddress
		n      uint64
		slices int // 0: error
	}{
		{"inside one", 0x10010, 0x10, 1},
		{"whole region", 0x10000, 0x1000, 1},
		{"across adjacent regions", 0x10ff0, 0x20, 2},
		{"across both adjacent", 0x10000, 0x2000, 2},
		{"into the gap", 0x11ff0, 0x20, 0},
		{"before memory", 0xfff0, 0x20, 0},
		{"in the gap", 0x15000, 1, 0},
		{"last byte", 0x20fff, 1, 1},
		{"past the end", 0x20fff, 2, 0},
		{"wraps", ^GuestAddress(0), 2, 0},
		{"empty", 0x5, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := m.AppendSlices(nil, tt.addr, tt.n)
			switch {
			case tt.slices == -1:
				if err != nil || len(s) != 0 {
					t.Fatalf("got %d slices, %v", len(s), err)
				}
			case tt.slices == 0:
				if !errors.Is(err, ErrOutOfMemory) {
					t.Fatalf("got %d slices, %v; want ErrOutOfMemory", len(s), err)
				}
			default:
				total := 0
				for _, b := range s {
					total += len(b)
				}
				if err != nil || len(s) != tt.slices || uint64(total) != tt.n {
					t.Fatalf("got %d slices of %d bytes, %v", len(s), total, err)
				}
			}
		})
	}
	// Writes through slices are visible through ReadAt, across regions.
	if err := m.WriteAt([]byte("straddle"), 0x10ffc); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	if err := m.ReadAt(got, 0x10ffc); err != nil || string(got) != "straddle" {
		t.Fatalf("ReadAt = %q, %v", got, err)
	}
	if err := m.ReadAt(got, 0x11ffc); err == nil {
		t.Fatal("ReadAt into the gap succeeded")
	}
	// User addresses.
	for _, tc := range []struct {
		ua   uint64
		n    uint64
		want GuestAddress
		ok   bool
	}{
		{0x7000_0010, 16, 0x10010, true},
		{0x7000_1ff0, 16, 0x20ff0, true},
		{0x9000_0ff8, 16, 0, false}, // crosses the end of its region
		{0x8000_0000, 1, 0, false},
	} {
		got, err := m.UserToGuest(tc.ua, tc.n)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("UserToGuest(%#x, %d) = %#x, %v", tc.ua, tc.n, uint64(got), err)
		}
	}
}

func TestTableUpdates(t *testing.T) {
	g, regs := newTable(t, RegionSpec{GuestAddr: 0, Size: 0x1000}, RegionSpec{GuestAddr: 0x2000, Size: 0x1000})
	add := func(s RegionSpec) error {
		r, err := MapRegion(memfd(t, int64(s.Size)), s)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Add(r); err != nil {
			r.Close()
			return err
		}
		return nil
	}
	if err := add(RegionSpec{GuestAddr: 0x800, Size: 0x1000}); !errors.Is(err, ErrRegionOverlap) {
		t.Fatalf("overlapping Add: %v", err)
	}
	if err := add(RegionSpec{GuestAddr: 0x1fff, Size: 2}); !errors.Is(err, ErrRegionOverlap) {
		t.Fatalf("overlapping Add at the end: %v", err)
	}
	if err := add(RegionSpec{GuestAddr: 0x1000, Size: 0x1000}); err != nil {
		t.Fatalf("Add into the hole: %v", err)
	}
	if g.Len() != 3 {
		t.Fatalf("%d regions", g.Len())
	}
	if err := g.Remove(RegionSpec{GuestAddr: 0x1000, Size: 0x2000}); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("Remove of an unknown region: %v", err)
	}

	// A reader of the old table keeps region 0 mapped after its removal.
	m := g.Acquire()
	copy(regs[0].data, "still here")
	if err := g.Remove(regs[0].spec); err != nil {
		t.Fatal(err)
	}
	if regs[0].mapping == nil {
		t.Fatal("region unmapped while a reader holds the table")
	}
	b, err := m.Slice(0, 10)
	if err != nil || !bytes.Equal(b, []byte("still here")) {
		t.Fatalf("old table: %q, %v", b, err)
	}
	m.Release()
	if regs[0].mapping != nil {
		t.Fatal("region still mapped after its last reader left")
	}
	// Region 1 is in the current table and stays.
	if regs[1].mapping == nil {
		t.Fatal("region 1 unmapped")
	}
	cur := g.Acquire()
	if _, err := cur.Slice(0, 1); err == nil {
		t.Fatal("removed region still translates")
	}
	cur.Release()

	// SetTable refuses overlaps and leaves the table alone.
	r1, _ := MapRegion(memfd(t, 0x1000), RegionSpec{GuestAddr: 0x10000, Size: 0x1000})
	r2, _ := MapRegion(memfd(t, 0x1000), RegionSpec{GuestAddr: 0x10800, Size: 0x1000})
	if err := g.SetTable([]*Region{r1, r2}); !errors.Is(err, ErrRegionOverlap) {
		t.Fatalf("SetTable with overlap: %v", err)
	}
	r1.Close()
	r2.Close()
	if g.Len() != 2 {
		t.Fatalf("%d regions after a refused SetTable", g.Len())
	}
	g.Clear()
	if regs[1].mapping != nil || g.Len() != 0 {
		t.Fatal("Clear left regions mapped")
	}
}

func TestTooManyRegions(t *testing.T) {
	g := NewGuestMemory()
	defer g.Clear()
	fd := memfd(t, 4096)
	for i := range MaxRegions + 1 {
		r, err := MapRegion(fd, RegionSpec{GuestAddr: GuestAddress(i) * 0x1000, Size: 0x1000})
		if err != nil {
			t.Fatal(err)
		}
		err = g.Add(r)
		if i < MaxRegions && err != nil {
			t.Fatalf("Add %d: %v", i, err)
		}
		if i == MaxRegions {
			if !errors.Is(err, ErrTooManyRegion) {
				t.Fatalf("Add past the limit: %v", err)
			}
			r.Close()
		}
	}
}
