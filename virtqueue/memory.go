package virtqueue

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// GuestAddress is a guest-physical address.
type GuestAddress uint64

// Limits on the memory table. A region may be at most MaxRegionSize bytes
// (256 TiB, beyond any guest); a table holds at most MaxRegions regions.
const (
	MaxRegionSize = 1 << 48
	MaxRegions    = 512
)

// Errors of the memory table.
var (
	ErrBadRegion     = errors.New("virtqueue: invalid memory region")
	ErrRegionOverlap = errors.New("virtqueue: memory region overlaps another")
	ErrTooManyRegion = errors.New("virtqueue: too many memory regions")
	ErrNoRegion      = errors.New("virtqueue: no such memory region")
	ErrOutOfMemory   = errors.New("virtqueue: address outside guest memory")
)

// RegionSpec describes one region of guest memory as the frontend sends it
// (the vhost-user memory region description).
type RegionSpec struct {
	// GuestAddr is the guest-physical address of the region's first byte.
	GuestAddr GuestAddress
	// Size is the region's length in bytes.
	Size uint64
	// UserAddr is the address of the region in the frontend's own address
	// space; vring addresses are sent as such addresses.
	UserAddr uint64
	// MmapOffset is where the region starts in the file descriptor.
	MmapOffset uint64
}

// check validates the arithmetic of s: a nonempty region whose every end
// address fits in 64 bits.
func (s RegionSpec) check() error {
	if s.Size == 0 || s.Size > MaxRegionSize {
		return fmt.Errorf("%w: size %#x", ErrBadRegion, s.Size)
	}
	if uint64(s.GuestAddr) > math.MaxUint64-s.Size+1 || s.UserAddr > math.MaxUint64-s.Size+1 ||
		s.MmapOffset > math.MaxInt64-s.Size {
		return fmt.Errorf("%w: %+v wraps around", ErrBadRegion, s)
	}
	return nil
}

// guestEnd is the last guest-physical address of the region.
func (s RegionSpec) guestEnd() uint64 { return uint64(s.GuestAddr) + s.Size - 1 }

// Region is one mapped region of guest memory. It is unmapped when the last
// Memory that contains it is released.
type Region struct {
	spec    RegionSpec
	mapping []byte // the whole mmap, from MmapOffset rounded down to a page
	data    []byte // the region itself, len Size
	refs    atomic.Int64
}

// MapRegion maps spec from fd, MAP_SHARED and read-write. fd must be a
// regular file (memfd, tmpfs, hugetlbfs) at least MmapOffset+Size bytes
// long, so that no access within the region can fault. MapRegion does not
// close fd; the mapping stays valid after the caller closes it.
func MapRegion(fd int, spec RegionSpec) (*Region, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: fstat: %v", ErrBadRegion, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: fd is not a regular file (mode %#o)", ErrBadRegion, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < spec.MmapOffset+spec.Size {
		return nil, fmt.Errorf("%w: file has %d bytes, region needs %d", ErrBadRegion, st.Size, spec.MmapOffset+spec.Size)
	}
	page := uint64(unix.Getpagesize())
	pageOff := spec.MmapOffset % page
	length := spec.Size + pageOff
	if length > math.MaxInt {
		return nil, fmt.Errorf("%w: too large to map", ErrBadRegion)
	}
	m, err := unix.Mmap(fd, int64(spec.MmapOffset-pageOff), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %v", ErrBadRegion, err)
	}
	return &Region{spec: spec, mapping: m, data: m[pageOff:]}, nil
}

// Spec returns the region's description.
func (r *Region) Spec() RegionSpec { return r.spec }

// Close unmaps a region that was never put into a memory table (for error
// paths); regions in a table are unmapped by the table.
func (r *Region) Close() error {
	if r.refs.Load() != 0 {
		return errors.New("virtqueue: Close of a region in use")
	}
	return r.unmap()
}

func (r *Region) unmap() error {
	m := r.mapping
	r.mapping, r.data = nil, nil
	if m == nil {
		return nil
	}
	return unix.Munmap(m)
}

func (r *Region) acquire() { r.refs.Add(1) }

func (r *Region) release() {
	if n := r.refs.Add(-1); n == 0 {
		r.unmap()
	} else if n < 0 {
		panic("virtqueue: region released too often")
	}
}

// Memory is an immutable table of guest memory regions, sorted by guest
// address and not overlapping. A Memory obtained from GuestMemory.Acquire
// stays mapped until Release.
type Memory struct {
	regions []*Region
	refs    atomic.Int64
	byHost  atomic.Pointer[hostIndex] // built on first use by the dirty log
}

// newMemory builds a table over regions (sorted, checked) holding a
// reference on each and one reference on itself for the caller.
func newMemory(regions []*Region) *Memory {
	m := &Memory{regions: regions}
	for _, r := range regions {
		r.acquire()
	}
	m.refs.Store(1)
	return m
}

// tryAcquire takes a reference unless the table is already dead.
func (m *Memory) tryAcquire() bool {
	for {
		n := m.refs.Load()
		if n <= 0 {
			return false
		}
		if m.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Acquire takes another reference on m, which the caller must already hold.
func (m *Memory) Acquire() *Memory {
	if m.refs.Add(1) <= 1 {
		panic("virtqueue: Acquire of a released Memory")
	}
	return m
}

// Release drops a reference; the last one releases the regions.
func (m *Memory) Release() {
	n := m.refs.Add(-1)
	if n < 0 {
		panic("virtqueue: Memory released too often")
	}
	if n == 0 {
		for _, r := range m.regions {
			r.release()
		}
	}
}

// Regions returns the descriptions of the regions, sorted by guest address.
func (m *Memory) Regions() []RegionSpec {
	out := make([]RegionSpec, len(m.regions))
	for i, r := range m.regions {
		out[i] = r.spec
	}
	return out
}

// find returns the region holding guest address a, or nil.
func (m *Memory) find(a uint64) *Region {
	lo, hi := 0, len(m.regions)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		r := m.regions[mid]
		switch {
		case a < uint64(r.spec.GuestAddr):
			hi = mid
		case a > r.spec.guestEnd():
			lo = mid + 1
		default:
			return r
		}
	}
	return nil
}

// Slice returns the n bytes at guest address a when they lie inside one
// region. n may be 0 (then a must still be inside a region).
func (m *Memory) Slice(a GuestAddress, n uint64) ([]byte, error) {
	r := m.find(uint64(a))
	if r == nil {
		return nil, fmt.Errorf("%w: %#x", ErrOutOfMemory, uint64(a))
	}
	off := uint64(a) - uint64(r.spec.GuestAddr)
	if n > r.spec.Size-off {
		return nil, fmt.Errorf("%w: %#x+%#x crosses the end of its region", ErrOutOfMemory, uint64(a), n)
	}
	return r.data[off : off+n : off+n], nil
}

// AppendSlices appends to dst the slices that make up the n bytes at guest
// address a, one per region crossed (regions must be adjacent in guest
// address). It appends nothing for n == 0.
func (m *Memory) AppendSlices(dst [][]byte, a GuestAddress, n uint64) ([][]byte, error) {
	if n == 0 {
		return dst, nil
	}
	addr := uint64(a)
	if addr > math.MaxUint64-n+1 {
		return dst, fmt.Errorf("%w: %#x+%#x wraps around", ErrOutOfMemory, addr, n)
	}
	for n > 0 {
		r := m.find(addr)
		if r == nil {
			return dst, fmt.Errorf("%w: %#x", ErrOutOfMemory, addr)
		}
		off := addr - uint64(r.spec.GuestAddr)
		k := min(n, r.spec.Size-off)
		dst = append(dst, r.data[off:off+k:off+k])
		addr += k
		n -= k
	}
	return dst, nil
}

// UserToGuest translates an address of the frontend's address space to a
// guest-physical one, checking that the n bytes there lie in one region.
func (m *Memory) UserToGuest(ua uint64, n uint64) (GuestAddress, error) {
	for _, r := range m.regions {
		s := r.spec
		if ua >= s.UserAddr && ua-s.UserAddr < s.Size {
			off := ua - s.UserAddr
			if n > s.Size-off {
				return 0, fmt.Errorf("%w: user address %#x+%#x crosses the end of its region", ErrOutOfMemory, ua, n)
			}
			return s.GuestAddr + GuestAddress(off), nil
		}
	}
	return 0, fmt.Errorf("%w: user address %#x", ErrOutOfMemory, ua)
}

// ReadAt copies len(p) bytes from guest address a into p, across regions.
func (m *Memory) ReadAt(p []byte, a GuestAddress) error {
	for len(p) > 0 {
		r := m.find(uint64(a))
		if r == nil {
			return fmt.Errorf("%w: %#x", ErrOutOfMemory, uint64(a))
		}
		off := uint64(a) - uint64(r.spec.GuestAddr)
		k := copy(p, r.data[off:])
		p = p[k:]
		a += GuestAddress(k)
	}
	return nil
}

// WriteAt copies p to guest address a, across regions.
func (m *Memory) WriteAt(p []byte, a GuestAddress) error {
	for len(p) > 0 {
		r := m.find(uint64(a))
		if r == nil {
			return fmt.Errorf("%w: %#x", ErrOutOfMemory, uint64(a))
		}
		off := uint64(a) - uint64(r.spec.GuestAddr)
		k := copy(r.data[off:], p)
		p = p[k:]
		a += GuestAddress(k)
	}
	return nil
}

// GuestMemory holds the current memory table of a device. Readers take the
// current table with Acquire; updates build a new table and swap it in, and
// the old one goes away when its last reader releases it.
type GuestMemory struct {
	mu  sync.Mutex // serialises updates
	cur atomic.Pointer[Memory]
}

// NewGuestMemory returns an empty memory table.
func NewGuestMemory() *GuestMemory {
	g := &GuestMemory{}
	g.cur.Store(newMemory(nil))
	return g
}

// Acquire returns the current table with a reference the caller must
// Release.
func (g *GuestMemory) Acquire() *Memory {
	for {
		m := g.cur.Load()
		if m.tryAcquire() {
			return m
		}
		// m was replaced and released between the load and the
		// increment; the new table is already stored.
	}
}

// swap installs regions as the new table and drops the old one.
func (g *GuestMemory) swap(regions []*Region) {
	old := g.cur.Swap(newMemory(regions))
	old.Release()
}

// checkTable sorts regions by guest address and checks that they do not
// overlap.
func checkTable(regions []*Region) error {
	if len(regions) > MaxRegions {
		return ErrTooManyRegion
	}
	slices.SortFunc(regions, func(a, b *Region) int {
		switch {
		case a.spec.GuestAddr < b.spec.GuestAddr:
			return -1
		case a.spec.GuestAddr > b.spec.GuestAddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(regions); i++ {
		if uint64(regions[i].spec.GuestAddr) <= regions[i-1].spec.guestEnd() {
			return fmt.Errorf("%w: %+v and %+v", ErrRegionOverlap, regions[i-1].spec, regions[i].spec)
		}
	}
	return nil
}

// SetTable replaces the whole table with regions (SET_MEM_TABLE). On
// success the table owns the regions; on error the caller still does.
func (g *GuestMemory) SetTable(regions []*Region) error {
	regions = slices.Clone(regions)
	if err := checkTable(regions); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.swap(regions)
	return nil
}

// Add adds one region (ADD_MEM_REG). On success the table owns r; on error
// (overlap, too many regions) the caller still does.
func (g *GuestMemory) Add(r *Region) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	regions := append(slices.Clone(g.cur.Load().regions), r)
	if err := checkTable(regions); err != nil {
		return err
	}
	g.swap(regions)
	return nil
}

// Remove removes the region with the guest address, user address and size
// of spec (REM_MEM_REG; the mmap offset is ignored). Its mapping goes away
// when no chain uses it any more.
func (g *GuestMemory) Remove(spec RegionSpec) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.cur.Load().regions
	i := slices.IndexFunc(cur, func(r *Region) bool {
		return r.spec.GuestAddr == spec.GuestAddr && r.spec.UserAddr == spec.UserAddr && r.spec.Size == spec.Size
	})
	if i < 0 {
		return fmt.Errorf("%w: %+v", ErrNoRegion, spec)
	}
	g.swap(slices.Delete(slices.Clone(cur), i, i+1))
	return nil
}

// Len returns the number of regions in the current table.
func (g *GuestMemory) Len() int { return len(g.cur.Load().regions) }

// Clear empties the table (the frontend went away).
func (g *GuestMemory) Clear() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.swap(nil)
}
