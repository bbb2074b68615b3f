package frontend

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// DefaultUserBase is added to a region's guest address to make up its
// front-end ("user") address when a Layout leaves UserAddr zero, so that a
// back-end that confuses the two is noticed.
const DefaultUserBase = 0x7f00_0000_0000

// Layout describes one region of guest memory.
type Layout struct {
	GuestAddr virtqueue.GuestAddress
	Size      uint64
	// UserAddr is the front-end address of the region; zero means
	// GuestAddr + DefaultUserBase.
	UserAddr uint64
	// MmapOffset is where the region starts in its memfd (a multiple of
	// the page size); the memfd is MmapOffset+Size bytes long.
	MmapOffset uint64
}

// Region is one memfd-backed region, mapped in this process.
type Region struct {
	// Spec is the region as SET_MEM_TABLE and ADD_MEM_REG describe it.
	Spec virtqueue.RegionSpec
	// FD is the memfd; the Memory closes it.
	FD int
	// Data is the region as the driver sees it.
	Data []byte
	file []byte // the whole mapping
}

// Memory is guest memory made of memfd regions, as a VMM has it. Its
// accessors check that addresses lie inside it.
type Memory struct {
	// Regions are the regions, in the order they were laid out.
	Regions []*Region
}

// NewMemory creates memfd regions as laid out. Close releases them.
func NewMemory(layout ...Layout) (*Memory, error) {
	m := &Memory{}
	for i, l := range layout {
		fd, err := unix.MemfdCreate(fmt.Sprintf("guest-mem-%d", i), unix.MFD_CLOEXEC)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("memfd_create: %w", err)
		}
		if err := unix.Ftruncate(fd, int64(l.MmapOffset+l.Size)); err != nil {
			unix.Close(fd)
			m.Close()
			return nil, fmt.Errorf("ftruncate: %w", err)
		}
		file, err := unix.Mmap(fd, 0, int(l.MmapOffset+l.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			unix.Close(fd)
			m.Close()
			return nil, fmt.Errorf("mmap: %w", err)
		}
		ua := l.UserAddr
		if ua == 0 {
			ua = uint64(l.GuestAddr) + DefaultUserBase
		}
		m.Regions = append(m.Regions, &Region{
			Spec: virtqueue.RegionSpec{GuestAddr: l.GuestAddr, Size: l.Size, UserAddr: ua, MmapOffset: l.MmapOffset},
			FD:   fd, Data: file[l.MmapOffset:], file: file,
		})
	}
	return m, nil
}

// Close unmaps and closes every region.
func (m *Memory) Close() {
	for _, r := range m.Regions {
		if r.file != nil {
			unix.Munmap(r.file)
			r.file, r.Data = nil, nil
		}
		if r.FD >= 0 {
			unix.Close(r.FD)
			r.FD = -1
		}
	}
}

// Specs returns the region descriptions.
func (m *Memory) Specs() []virtqueue.RegionSpec {
	out := make([]virtqueue.RegionSpec, len(m.Regions))
	for i, r := range m.Regions {
		out[i] = r.Spec
	}
	return out
}

// FDs returns the regions' memfds, in order.
func (m *Memory) FDs() []int {
	fds := make([]int, len(m.Regions))
	for i, r := range m.Regions {
		fds[i] = r.FD
	}
	return fds
}

func (m *Memory) find(a virtqueue.GuestAddress) (*Region, uint64) {
	for _, r := range m.Regions {
		if a >= r.Spec.GuestAddr && uint64(a-r.Spec.GuestAddr) < r.Spec.Size {
			return r, uint64(a - r.Spec.GuestAddr)
		}
	}
	return nil, 0
}

// UserAddr translates a guest address to the front-end's address.
func (m *Memory) UserAddr(a virtqueue.GuestAddress) (uint64, error) {
	r, off := m.find(a)
	if r == nil {
		return 0, fmt.Errorf("frontend: %#x is not in guest memory", uint64(a))
	}
	return r.Spec.UserAddr + off, nil
}

// Bytes returns the n bytes at a, which must lie in one region.
func (m *Memory) Bytes(a virtqueue.GuestAddress, n int) ([]byte, error) {
	r, off := m.find(a)
	if r == nil || n < 0 || off+uint64(n) > r.Spec.Size {
		return nil, fmt.Errorf("frontend: %#x+%d is not inside one region", uint64(a), n)
	}
	return r.Data[off : off+uint64(n)], nil
}

// Write copies p to a, across regions.
func (m *Memory) Write(a virtqueue.GuestAddress, p []byte) error {
	for len(p) > 0 {
		r, off := m.find(a)
		if r == nil {
			return fmt.Errorf("frontend: write to %#x outside guest memory", uint64(a))
		}
		k := copy(r.Data[off:], p)
		p, a = p[k:], a+virtqueue.GuestAddress(k)
	}
	return nil
}

// Read copies len(p) bytes at a into p, across regions.
func (m *Memory) Read(a virtqueue.GuestAddress, p []byte) error {
	for len(p) > 0 {
		r, off := m.find(a)
		if r == nil {
			return fmt.Errorf("frontend: read of %#x outside guest memory", uint64(a))
		}
		k := copy(p, r.Data[off:])
		p, a = p[k:], a+virtqueue.GuestAddress(k)
	}
	return nil
}

// word returns the aligned 32-bit word holding the 16-bit field at a, or
// nil when a is outside guest memory.
func (m *Memory) word(a virtqueue.GuestAddress) (*uint32, uint) {
	b, err := m.Bytes(a&^3, 4)
	if err != nil {
		return nil, 0
	}
	return (*uint32)(unsafe.Pointer(&b[0])), uint(a&3) * 8
}

// Load16 atomically loads the little-endian 16-bit field at a; outside
// guest memory it reads 0.
func (m *Memory) Load16(a virtqueue.GuestAddress) uint16 {
	p, shift := m.word(a)
	if p == nil {
		return 0
	}
	return uint16(atomic.LoadUint32(p) >> shift)
}

// Store16 atomically stores the 16-bit field at a; outside guest memory it
// does nothing.
func (m *Memory) Store16(a virtqueue.GuestAddress, v uint16) {
	p, shift := m.word(a)
	if p == nil {
		return
	}
	for {
		old := atomic.LoadUint32(p)
		if atomic.CompareAndSwapUint32(p, old, old&^(0xffff<<shift)|uint32(v)<<shift) {
			return
		}
	}
}

// PutDesc writes one descriptor at a.
func (m *Memory) PutDesc(a virtqueue.GuestAddress, d Desc) error {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(d.Addr))
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
	return m.Write(a, b[:])
}

// CopyFrom copies every region's bytes from src, which must have the same
// layout (a migration's RAM copy).
func (m *Memory) CopyFrom(src *Memory) {
	for i, r := range m.Regions {
		copy(r.Data, src.Regions[i].Data)
	}
}

// CopyPages copies the given 4 KiB guest-physical pages from src (the
// pages a dirty log reported); pages outside guest memory are skipped.
func (m *Memory) CopyPages(src *Memory, pages []uint64) {
	for _, p := range pages {
		for i, r := range m.Regions {
			start, end := p*virtqueue.LogPageSize, (p+1)*virtqueue.LogPageSize
			lo, hi := max(start, uint64(r.Spec.GuestAddr)), min(end, uint64(r.Spec.GuestAddr)+r.Spec.Size)
			if lo >= hi {
				continue
			}
			off := lo - uint64(r.Spec.GuestAddr)
			copy(r.Data[off:off+hi-lo], src.Regions[i].Data[off:off+hi-lo])
		}
	}
}

// DiffPages returns the 4 KiB guest-physical pages whose bytes differ
// between m and o, which must have the same layout.
func (m *Memory) DiffPages(o *Memory) []uint64 {
	var pages []uint64
	for i, r := range m.Regions {
		a, b := r.Data, o.Regions[i].Data
		base := uint64(r.Spec.GuestAddr)
		for off := uint64(0); off < r.Spec.Size; {
			page := (base + off) / virtqueue.LogPageSize
			end := min(r.Spec.Size, (page+1)*virtqueue.LogPageSize-base)
			if string(a[off:end]) != string(b[off:end]) {
				pages = append(pages, page)
			}
			off = end
		}
	}
	return pages
}
