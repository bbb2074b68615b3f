// Package virtqueue implements the device side of virtio split virtqueues
// over guest memory shared by a vhost-user frontend.
//
// # Guest memory
//
// The frontend hands over regions of guest RAM as file descriptors with a
// guest-physical address, a size, the frontend's own virtual address of the
// region ("user address") and an offset into the file. MapRegion maps one
// region MAP_SHARED; a Memory is an immutable, sorted table of regions; a
// GuestMemory holds the current Memory and replaces it atomically when
// regions are added or removed, so that queues keep running while the table
// changes. A Memory is reference-counted: every chain in flight holds the
// Memory it was translated in, and a region is unmapped only when no Memory
// that contains it is referenced any more. Translation is bounds-checked and
// overflow-safe; a buffer that spans two GPA-adjacent regions is split into
// one slice per region.
//
// # Split rings
//
// A Queue is one split virtqueue: descriptor table, available ring and used
// ring, located by guest-physical addresses and re-resolved whenever the
// memory table changes. Ring indexes written by the other side are read with
// atomic loads of the aligned 32-bit word that holds them (sync/atomic has
// no 16-bit operations; rings are at least 2-byte aligned, and the word is
// checked to lie inside the region), and our used index is published with an
// atomic store after the used element is written, so the guest never sees
// the index before the element. Go's atomics are sequentially consistent,
// which gives the full barrier VIRTIO_RING_F_EVENT_IDX needs between
// publishing the used index and reading used_event (and between writing
// avail_event and re-reading the available index). Ring contents are
// little-endian (VIRTIO_F_VERSION_1); the package supports only
// little-endian hosts.
//
// # Chains
//
// Pop walks one descriptor chain, following VIRTQ_DESC_F_NEXT and at most
// one level of VIRTQ_DESC_F_INDIRECT, and returns it as two lists of slices
// into guest memory: the device-readable buffers and, after them, the
// device-writable ones. The guest is not trusted: a chain that loops, is
// longer than the queue (or its indirect table), points outside guest
// memory, nests indirect tables, has an indirect table whose size is not a
// multiple of 16 or is larger than MaxIndirectDescs, puts a readable
// descriptor after a writable one, or whose lengths add up past 4 GiB is
// refused: Pop returns it to the used ring with length 0 and reports a
// *ChainError. An available index that jumps past the queue size or a head
// index outside the table breaks the queue (ErrBroken): it is not processed
// any more until it is set up again.
//
// Reader and Writer walk a chain's buffers as scatter-gather streams and
// move file data between guest memory and a file descriptor with preadv(2)
// and pwritev(2) on iovecs that point straight into the mapped regions.
//
// # Dirty page logging
//
// While a VMM migrates the guest it needs to know every page the device
// writes. MapDirtyLog maps the log the front-end shares (one bit per 4 KiB
// page of guest-physical address space, set with atomic ORs); Queue.SetLog
// says what a queue logs: the writable bytes of every chain it pushes (the
// first max(pushed length, Chain.NoteWritten) bytes, mapped back from the
// host slices to guest-physical addresses through the chain's Memory), and
// the used-ring element, index and avail_event it writes, at the vring's
// log address. Pages beyond the log are not logged and counted
// (DirtyLog.Dropped). Without a log, Push pays one predictable branch.
// Marks happen under Queue.mu, so once SetLog returns nothing is logged
// into the previous log any more.
//
// # Concurrency and lock order
//
// One goroutine pops from a Queue; any number of goroutines push completed
// chains. Queue.mu serialises the used ring, the call eventfd and the
// stopped flag; GuestMemory.mu serialises memory-table updates. The two are
// never held together. No slice into guest memory may be kept after the
// chain it came from is pushed or released.
//
// unsafe is used only to load and store ring words atomically, to set dirty
// log bits atomically, to map a slice of guest memory back to its address,
// and to pass iovecs to preadv/pwritev.
package virtqueue
