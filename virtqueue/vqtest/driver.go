package vqtest

import (
	"github.com/govirtiofs/govirtiofs/vhostuser/frontend"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// ErrFull is returned by AddChain when descriptors or buffer memory run
// out; it is worth retrying after used chains are popped.
var ErrFull = frontend.ErrFull

// Desc is one split-ring descriptor as the driver writes it.
type Desc = frontend.Desc

// Buf is a guest buffer: where it is and how long.
type Buf = frontend.Buf

// Alloc is a first-fit allocator of guest memory for buffers and indirect
// tables. It is safe for concurrent use.
type Alloc = frontend.Alloc

// Used is one element of the used ring, with the chain's writable buffers.
type Used = frontend.Used

// ChainOpts modify AddChain.
type ChainOpts = frontend.ChainOpts

// NewAlloc manages the n bytes at base.
func NewAlloc(base virtqueue.GuestAddress, n uint32) *Alloc { return frontend.NewAlloc(base, n) }

// RingBytes returns the guest memory a ring of size entries needs at a
// 16-aligned address (the used ring rounded up to a whole 32-bit word).
func RingBytes(size uint16) uint32 { return frontend.RingBytes(size) }

// Driver is the driver side of one split virtqueue in test guest memory.
// It is safe for concurrent use.
type Driver struct {
	*frontend.Driver
	// Mem is the test memory the ring lives in (SetMem changes both).
	Mem *Memory
}

// NewDriver lays out a ring of size entries at ring (16-aligned; RingBytes
// long, zeroed) and takes buffers from data. It panics on a ring outside
// mem.
func NewDriver(mem *Memory, size uint16, ring virtqueue.GuestAddress, data *Alloc) *Driver {
	d, err := frontend.NewDriver(mem.Memory, size, ring, data)
	must(err)
	return &Driver{Driver: d, Mem: mem}
}

// SetMem makes the driver use mem, which must hold the same ring.
func (d *Driver) SetMem(mem *Memory) {
	d.Mem = mem
	d.Driver.SetMem(mem.Memory)
}

// AllocRaw takes n bytes of guest memory that are never given back; it
// panics when there are none.
func (d *Driver) AllocRaw(n uint32) virtqueue.GuestAddress {
	a, err := d.Driver.AllocRaw(n)
	must(err)
	return a
}
