package frontend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// ErrFull is returned by AddChain when descriptors or buffer memory run
// out; it is worth retrying after used chains are popped.
var ErrFull = errors.New("frontend: ring or buffer memory full")

// Desc is one split-ring descriptor as the driver writes it.
type Desc struct {
	Addr  virtqueue.GuestAddress
	Len   uint32
	Flags uint16
	Next  uint16
}

// Buf is a guest buffer: where it is and how long.
type Buf struct {
	Addr virtqueue.GuestAddress
	Len  uint32
}

// Alloc is a first-fit allocator of guest memory for buffers and indirect
// tables. It is safe for concurrent use.
type Alloc struct {
	mu   sync.Mutex
	free []Buf // sorted by address, coalesced
}

// NewAlloc manages the n bytes at base.
func NewAlloc(base virtqueue.GuestAddress, n uint32) *Alloc {
	return &Alloc{free: []Buf{{base, n}}}
}

// Get returns n bytes aligned to 16 (n may be 0: one byte is reserved so the
// address is unique).
func (a *Alloc) Get(n uint32) (virtqueue.GuestAddress, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n = max(16, (n+15)&^15)
	for i, f := range a.free {
		skip := uint32((16 - uint64(f.Addr)%16) % 16)
		if f.Len < skip+n {
			continue
		}
		addr := f.Addr + virtqueue.GuestAddress(skip)
		a.free = slices.Delete(a.free, i, i+1)
		if skip > 0 {
			a.put(Buf{f.Addr, skip})
		}
		if rest := f.Len - skip - n; rest > 0 {
			a.put(Buf{addr + virtqueue.GuestAddress(n), rest})
		}
		return addr, nil
	}
	return 0, fmt.Errorf("%w: no guest memory for %d bytes", ErrFull, n)
}

// Put gives back a block from Get.
func (a *Alloc) Put(addr virtqueue.GuestAddress, n uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.put(Buf{addr, max(16, (n+15)&^15)})
}

func (a *Alloc) put(b Buf) {
	i, _ := slices.BinarySearchFunc(a.free, b.Addr, func(f Buf, x virtqueue.GuestAddress) int {
		switch {
		case f.Addr < x:
			return -1
		case f.Addr > x:
			return 1
		}
		return 0
	})
	a.free = slices.Insert(a.free, i, b)
	// Coalesce with the neighbours.
	if i+1 < len(a.free) && a.free[i].Addr+virtqueue.GuestAddress(a.free[i].Len) == a.free[i+1].Addr {
		a.free[i].Len += a.free[i+1].Len
		a.free = slices.Delete(a.free, i+1, i+2)
	}
	if i > 0 && a.free[i-1].Addr+virtqueue.GuestAddress(a.free[i-1].Len) == a.free[i].Addr {
		a.free[i-1].Len += a.free[i].Len
		a.free = slices.Delete(a.free, i, i+1)
	}
}

// Used is one element of the used ring, with the chain's writable buffers.
type Used struct {
	Head uint16
	Len  uint32
	// In are the chain's writable buffers, in order.
	In []Buf
	// Data is the first Len bytes written into In.
	Data []byte
}

// inflight is one published chain.
type inflight struct {
	descs  []uint16
	allocs []Buf
	in     []Buf
}

// Driver is the driver side of one split virtqueue in guest memory. It is
// safe for concurrent use.
type Driver struct {
	// Mem is the guest memory the ring and buffers live in.
	Mem *Memory
	// Size is the number of entries.
	Size uint16
	// Desc, Avail and Used are the guest addresses of the three parts.
	Desc  virtqueue.GuestAddress
	Avail virtqueue.GuestAddress
	Used  virtqueue.GuestAddress
	// EventIdx is VIRTIO_RING_F_EVENT_IDX: NeedKick reads avail_event.
	EventIdx bool

	mu       sync.Mutex
	alloc    *Alloc
	free     []uint16
	chains   map[uint16]*inflight
	availIdx uint16
	lastUsed uint16
}

// RingBytes returns the guest memory a ring of size entries needs at a
// 16-aligned address (the used ring rounded up to a whole 32-bit word).
func RingBytes(size uint16) uint32 {
	return uint32(16*int(size)) + (6+2*uint32(size)+3)&^3 + 8 + 8*uint32(size)
}

// NewDriver lays out a ring of size entries (a power of two) at ring
// (16-aligned, RingBytes long inside one region; zeroed) and takes buffers
// from data (nil: only AddBufs may be used).
func NewDriver(mem *Memory, size uint16, ring virtqueue.GuestAddress, data *Alloc) (*Driver, error) {
	if size == 0 || size&(size-1) != 0 || ring%16 != 0 {
		return nil, fmt.Errorf("frontend: ring of %d entries at %#x", size, uint64(ring))
	}
	if _, err := mem.Bytes(ring, int(RingBytes(size))); err != nil {
		return nil, err
	}
	d := &Driver{
		Mem: mem, Size: size, Desc: ring,
		Avail:  ring + virtqueue.GuestAddress(16*int(size)),
		alloc:  data,
		chains: make(map[uint16]*inflight),
	}
	d.Used = d.Avail + virtqueue.GuestAddress((6+2*uint32(size)+3)&^3)
	if err := mem.Write(ring, make([]byte, RingBytes(size))); err != nil {
		return nil, err
	}
	for i := range size {
		d.free = append(d.free, i)
	}
	return d, nil
}

// SetMem makes the driver use mem, which must hold the same ring (a
// migration destination's copy of guest memory).
func (d *Driver) SetMem(mem *Memory) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Mem = mem
}

// Config returns the virtqueue configuration for the backend.
func (d *Driver) Config() virtqueue.Config {
	return virtqueue.Config{Size: d.Size, Desc: d.Desc, Avail: d.Avail, Used: d.Used, EventIdx: d.EventIdx}
}

// ChainOpts modify AddChain.
type ChainOpts struct {
	// Indirect puts the chain in an indirect table.
	Indirect bool
	// Split cuts every buffer into pieces of at most Split bytes (0: no
	// split), making longer chains.
	Split uint32
}

// AddChain builds a chain of readable buffers holding out and writable
// buffers of the lengths in, publishes it and returns its head.
func (d *Driver) AddChain(out [][]byte, in []uint32, o ChainOpts) (uint16, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.alloc == nil {
		return 0, errors.New("frontend: driver has no allocator")
	}
	fl := &inflight{}
	var descs []Desc
	undo := func() {
		for _, b := range fl.allocs {
			d.alloc.Put(b.Addr, b.Len)
		}
	}
	piece := func(n uint32) uint32 {
		if o.Split > 0 {
			return min(n, o.Split)
		}
		return n
	}
	for _, b := range out {
		addr, err := d.alloc.Get(uint32(len(b)))
		if err != nil {
			undo()
			return 0, err
		}
		fl.allocs = append(fl.allocs, Buf{addr, uint32(len(b))})
		if err := d.Mem.Write(addr, b); err != nil {
			undo()
			return 0, err
		}
		for off := uint32(0); off < uint32(len(b)) || len(b) == 0; {
			k := piece(uint32(len(b)) - off)
			descs = append(descs, Desc{Addr: addr + virtqueue.GuestAddress(off), Len: k})
			off += k
			if len(b) == 0 {
				break
			}
		}
	}
	for _, n := range in {
		addr, err := d.alloc.Get(n)
		if err != nil {
			undo()
			return 0, err
		}
		fl.allocs = append(fl.allocs, Buf{addr, n})
		fl.in = append(fl.in, Buf{addr, n})
		for off := uint32(0); off < n || n == 0; {
			k := piece(n - off)
			descs = append(descs, Desc{Addr: addr + virtqueue.GuestAddress(off), Len: k, Flags: virtqueue.DescFWrite})
			off += k
			if n == 0 {
				break
			}
		}
	}
	if len(descs) == 0 {
		undo()
		return 0, errors.New("frontend: empty chain")
	}
	if o.Indirect {
		tbl, err := d.alloc.Get(uint32(16 * len(descs)))
		if err != nil {
			undo()
			return 0, err
		}
		fl.allocs = append(fl.allocs, Buf{tbl, uint32(16 * len(descs))})
		for i, ds := range descs {
			if i+1 < len(descs) {
				ds.Flags |= virtqueue.DescFNext
				ds.Next = uint16(i + 1)
			}
			if err := d.Mem.PutDesc(tbl+virtqueue.GuestAddress(16*i), ds); err != nil {
				undo()
				return 0, err
			}
		}
		descs = []Desc{{Addr: tbl, Len: uint32(16 * len(descs)), Flags: virtqueue.DescFIndirect}}
	}
	if len(descs) > len(d.free) {
		undo()
		return 0, fmt.Errorf("%w: %d descriptors needed, %d free", ErrFull, len(descs), len(d.free))
	}
	fl.descs = slices.Clone(d.free[:len(descs)])
	d.free = d.free[len(descs):]
	for i, ds := range descs {
		if i+1 < len(descs) {
			ds.Flags |= virtqueue.DescFNext
			ds.Next = fl.descs[i+1]
		}
		_ = d.Mem.PutDesc(d.Desc+virtqueue.GuestAddress(16*int(fl.descs[i])), ds) // inside the ring
	}
	head := fl.descs[0]
	d.chains[head] = fl
	d.publish(head)
	return head, nil
}

// publish puts head in the available ring and moves the index on. d.mu is
// held.
func (d *Driver) publish(head uint16) {
	slot := d.Avail + 4 + virtqueue.GuestAddress(2*int(d.availIdx&(d.Size-1)))
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], head)
	_ = d.Mem.Write(slot, b[:]) // inside the ring NewDriver checked
	d.availIdx++
	d.Mem.Store16(d.Avail+2, d.availIdx) // atomic: publishes the entry
}

// WriteDesc writes descriptor i of the table by hand (for hostile chains).
func (d *Driver) WriteDesc(i uint16, ds Desc) {
	// The table was checked to lie in guest memory by NewDriver.
	_ = d.Mem.PutDesc(d.Desc+virtqueue.GuestAddress(16*int(i%d.Size)), ds)
}

// PublishRaw publishes head without any bookkeeping (for hostile chains:
// the used element for it is reported with no buffers).
func (d *Driver) PublishRaw(head uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.publish(head)
}

// SetAvailIdx stores a raw available index (for hostile tests).
func (d *Driver) SetAvailIdx(v uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.availIdx = v
	d.Mem.Store16(d.Avail+2, v)
}

// AvailIdx returns the driver's available index.
func (d *Driver) AvailIdx() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.availIdx
}

// AllocRaw takes n bytes of guest memory that are never given back.
func (d *Driver) AllocRaw(n uint32) (virtqueue.GuestAddress, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.alloc == nil {
		return 0, errors.New("frontend: driver has no allocator")
	}
	return d.alloc.Get(n)
}

// SetAvailFlags stores the available ring's flags (AvailFNoInterrupt).
func (d *Driver) SetAvailFlags(f uint16) { d.Mem.Store16(d.Avail, f) }

// SetUsedEvent stores used_event (EVENT_IDX): notify me when the used
// index passes v.
func (d *Driver) SetUsedEvent(v uint16) {
	d.Mem.Store16(d.Avail+4+virtqueue.GuestAddress(2*int(d.Size)), v)
}

// AvailEvent loads avail_event (EVENT_IDX): the device wants a kick when
// the available index passes it.
func (d *Driver) AvailEvent() uint16 {
	return d.Mem.Load16(d.Used + 4 + virtqueue.GuestAddress(8*int(d.Size)))
}

// UsedIdx loads the used index.
func (d *Driver) UsedIdx() uint16 { return d.Mem.Load16(d.Used + 2) }

// NeedKick reports, with EVENT_IDX, whether moving the available index from
// old to the current one requires a kick (vring_need_event); without
// EVENT_IDX it is always true.
func (d *Driver) NeedKick(old uint16) bool {
	if !d.EventIdx {
		return true
	}
	nw := d.AvailIdx()
	ev := d.AvailEvent()
	return nw-ev-1 < nw-old
}

// PopUsed takes the next used element, if any, and frees its chain.
func (d *Driver) PopUsed() (Used, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.UsedIdx() == d.lastUsed {
		return Used{}, false
	}
	slot := d.Used + 4 + virtqueue.GuestAddress(8*int(d.lastUsed&(d.Size-1)))
	var b [8]byte
	_ = d.Mem.Read(slot, b[:]) // inside the ring
	d.lastUsed++
	u := Used{Head: uint16(binary.LittleEndian.Uint32(b[0:])), Len: binary.LittleEndian.Uint32(b[4:])}
	fl := d.chains[u.Head]
	if fl == nil {
		return u, true
	}
	delete(d.chains, u.Head)
	u.In = fl.in
	left := u.Len
	for _, in := range fl.in {
		k := min(left, in.Len)
		buf := make([]byte, k)
		_ = d.Mem.Read(in.Addr, buf) // allocated from guest memory
		u.Data = append(u.Data, buf...)
		left -= k
	}
	for _, a := range fl.allocs {
		d.alloc.Put(a.Addr, a.Len)
	}
	d.free = append(d.free, fl.descs...)
	return u, true
}

// AddBufs publishes a chain of caller-owned buffers, out (device-readable)
// then in (device-writable), and returns its head. The driver neither
// copies nor frees the buffers; PopUsedHead reports the chain back. It
// returns an error wrapping ErrFull when too few descriptors are free.
func (d *Driver) AddBufs(out, in []Buf) (uint16, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(out) + len(in)
	if n == 0 {
		return 0, errors.New("frontend: empty chain")
	}
	if n > len(d.free) {
		return 0, fmt.Errorf("%w: %d descriptors needed, %d free", ErrFull, n, len(d.free))
	}
	fl := &inflight{descs: slices.Clone(d.free[:n])}
	d.free = d.free[n:]
	for i := range n {
		var ds Desc
		if i < len(out) {
			ds = Desc{Addr: out[i].Addr, Len: out[i].Len}
		} else {
			ds = Desc{Addr: in[i-len(out)].Addr, Len: in[i-len(out)].Len, Flags: virtqueue.DescFWrite}
		}
		if i+1 < n {
			ds.Flags |= virtqueue.DescFNext
			ds.Next = fl.descs[i+1]
		}
		_ = d.Mem.PutDesc(d.Desc+virtqueue.GuestAddress(16*int(fl.descs[i])), ds) // inside the ring
	}
	head := fl.descs[0]
	d.chains[head] = fl
	d.publish(head)
	return head, nil
}

// PopUsedHead takes the next used element, if any, and frees its
// descriptors, without reading the buffers or freeing their memory: for
// chains from AddBufs. It also returns the used index seen.
func (d *Driver) PopUsedHead() (head uint16, n uint32, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.UsedIdx() == d.lastUsed {
		return 0, 0, false
	}
	slot := d.Used + 4 + virtqueue.GuestAddress(8*int(d.lastUsed&(d.Size-1)))
	var b [8]byte
	_ = d.Mem.Read(slot, b[:]) // inside the ring
	d.lastUsed++
	head, n = uint16(binary.LittleEndian.Uint32(b[0:])), binary.LittleEndian.Uint32(b[4:])
	if fl := d.chains[head]; fl != nil {
		delete(d.chains, head)
		d.free = append(d.free, fl.descs...)
		for _, a := range fl.allocs {
			d.alloc.Put(a.Addr, a.Len)
		}
	}
	return head, n, true
}

// LastUsed returns the index of the next used element the driver will
// take; with EVENT_IDX, SetUsedEvent(LastUsed()) asks for a call when it
// is written.
func (d *Driver) LastUsed() uint16 { return d.lastUsedIdx() }

// WaitUsed polls for the next used element for up to timeout.
func (d *Driver) WaitUsed(timeout time.Duration) (Used, error) {
	deadline := time.Now().Add(timeout)
	for {
		if u, ok := d.PopUsed(); ok {
			return u, nil
		}
		if time.Now().After(deadline) {
			return Used{}, fmt.Errorf("frontend: no used element within %v (used idx %d, last %d)", timeout, d.UsedIdx(), d.lastUsedIdx())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (d *Driver) lastUsedIdx() uint16 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastUsed
}

// InFlight returns the number of published chains not yet used.
func (d *Driver) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.chains)
}

// ReuseDescs marks descriptors used by hand-made chains as taken, so
// AddChain does not overwrite them; it returns false if one is not free.
func (d *Driver) ReuseDescs(idx ...uint16) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, i := range idx {
		j := slices.Index(d.free, i)
		if j < 0 {
			return false
		}
		d.free = slices.Delete(d.free, j, j+1)
	}
	return true
}
