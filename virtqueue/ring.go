package virtqueue

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Split-ring layout (virtio 1.x, 2.7).
const (
	descSize = 16 // struct virtq_desc: addr u64, len u32, flags u16, next u16

	// Descriptor flags.
	DescFNext     = 1 // VIRTQ_DESC_F_NEXT: the chain continues at Next
	DescFWrite    = 2 // VIRTQ_DESC_F_WRITE: the buffer is device-writable
	DescFIndirect = 4 // VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors

	// AvailFNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks not
	// to be notified (ignored with EVENT_IDX).
	AvailFNoInterrupt = 1

	availRingOff = 4 // avail: flags u16, idx u16, ring[size] u16, used_event u16
	usedRingOff  = 4 // used: flags u16, idx u16, ring[size] {id u32, len u32}, avail_event u16
	usedElemSize = 8
)

// Virtio feature bits the ring code understands.
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatureEventIdx     = 1 << 29 // VIRTIO_RING_F_EVENT_IDX
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
)

// descTableLen, availLen and usedLen are the byte sizes of the three parts
// of a split ring of size entries (the avail and used rings include the
// event-index fields, which a driver always allocates).
func descTableLen(size uint16) uint64 { return descSize * uint64(size) }
func availLen(size uint16) uint64     { return availRingOff + 2*uint64(size) + 2 }
func usedLen(size uint16) uint64      { return usedRingOff + usedElemSize*uint64(size) + 2 }

// ringMem is a ring's bytes in guest memory, widened so that every aligned
// 32-bit word holding one of its 16-bit fields lies inside b: field offset x
// of the ring is b[base+x], and b[0] is 4-byte aligned in host memory.
type ringMem struct {
	b    []byte
	base int
}

// resolveRing maps the n bytes of a ring at guest address a, which must lie
// inside one region and be align-aligned in host memory.
func resolveRing(m *Memory, a GuestAddress, n uint64, align uintptr) (ringMem, error) {
	r := m.find(uint64(a))
	if r == nil {
		return ringMem{}, fmt.Errorf("%w: ring at %#x", ErrOutOfMemory, uint64(a))
	}
	off := uint64(a) - uint64(r.spec.GuestAddr)
	if n > r.spec.Size-off {
		return ringMem{}, fmt.Errorf("%w: ring at %#x+%#x crosses the end of its region", ErrOutOfMemory, uint64(a), n)
	}
	host := uintptr(unsafe.Pointer(&r.data[off]))
	if host&(align-1) != 0 {
		return ringMem{}, fmt.Errorf("virtqueue: ring at %#x is not %d-byte aligned in host memory", uint64(a), align)
	}
	lead := uint64(host & 3)
	tail := (4 - (uint64(host)+n)&3) & 3
	if lead > off || tail > r.spec.Size-off-n {
		return ringMem{}, fmt.Errorf("%w: ring at %#x touches the edge of its region", ErrOutOfMemory, uint64(a))
	}
	return ringMem{b: r.data[off-lead : off+n+tail : off+n+tail], base: int(lead)}, nil
}

// word returns the aligned 32-bit word holding the byte at field offset x.
func (r ringMem) word(x int) *uint32 {
	i := (r.base + x) &^ 3
	_ = r.b[i+3] // bounds check of the whole word
	return (*uint32)(unsafe.Pointer(&r.b[i]))
}

// load16 atomically loads the 16-bit field at offset x (x even).
func (r ringMem) load16(x int) uint16 {
	w := atomic.LoadUint32(r.word(x))
	return uint16(w >> (((r.base + x) & 3) * 8))
}

// store16 atomically stores the 16-bit field at offset x, leaving the other
// half of its word as it is (it may belong to the guest).
func (r ringMem) store16(x int, v uint16) {
	p := r.word(x)
	shift := ((r.base + x) & 3) * 8
	for {
		old := atomic.LoadUint32(p)
		nw := old&^(0xffff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(p, old, nw) {
			return
		}
	}
}

// store32 atomically stores the 32-bit field at offset x (4-aligned).
func (r ringMem) store32(x int, v uint32) {
	atomic.StoreUint32(r.word(x), v)
}

// le16 and le32 are plain little-endian reads; putLE32 a plain write.
func (r ringMem) le16(x int) uint16 { return binary.LittleEndian.Uint16(r.b[r.base+x:]) }

func (r ringMem) putLE32(x int, v uint32) { binary.LittleEndian.PutUint32(r.b[r.base+x:], v) }

// rings is the host view of a queue's three rings in one memory table. It
// may be used only while a reference on mem is held.
type rings struct {
	mem   *Memory
	desc  []byte
	avail ringMem
	used  ringMem
}

func (q *Queue) resolve(m *Memory) (rings, error) {
	desc, err := m.Slice(q.desc, descTableLen(q.size))
	if err != nil {
		return rings{}, fmt.Errorf("descriptor table: %w", err)
	}
	avail, err := resolveRing(m, q.avail, availLen(q.size), 2)
	if err != nil {
		return rings{}, fmt.Errorf("available ring: %w", err)
	}
	used, err := resolveRing(m, q.used, usedLen(q.size), 4)
	if err != nil {
		return rings{}, fmt.Errorf("used ring: %w", err)
	}
	return rings{mem: m, desc: desc, avail: avail, used: used}, nil
}

func init() {
	// Ring words are interpreted in host order; see the package comment.
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 || unsafe.Sizeof(uintptr(0)) != 8 {
		panic("virtqueue: only 64-bit little-endian hosts are supported")
	}
}
