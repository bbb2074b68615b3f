package virtqueue

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirty page logging (vhost-user.rst "Migration"). While a VMM migrates a
// guest it must learn of every page the device writes; the front-end hands
// over a shared bitmap with one bit per 4 KiB page of guest-physical
// address space, bit p%8 of byte p/8 for page p, which the device sets with
// atomic ORs and the front-end reads and clears concurrently.

// Dirty log constants.
const (
	// LogPageSize is VHOST_LOG_PAGE: one log bit covers this many bytes
	// of guest-physical address space.
	LogPageSize = 0x1000
	// MaxLogSize bounds a dirty log (bytes): enough for MaxRegionSize of
	// guest-physical address space.
	MaxLogSize = MaxRegionSize / LogPageSize / 8
	// FeatureLogAll is VHOST_F_LOG_ALL (virtio feature bit 26): the
	// front-end asks that every write to guest memory be logged.
	FeatureLogAll = 1 << 26
)

// ErrBadLog reports a dirty log that cannot be mapped.
var ErrBadLog = errors.New("virtqueue: invalid dirty log")

// DirtyLog is a mapped dirty page log. Mark may be called from any
// goroutine; Close must not race with Mark (see Queue.SetLog for how the
// queues guarantee that).
type DirtyLog struct {
	mapping []byte // the whole mmap, from the offset rounded down to a page
	base    uint64 // offset of the log's first byte in mapping
	size    uint64 // bytes of log
	dropped atomic.Uint64
}

// MapDirtyLog maps size bytes of log at offset in fd, MAP_SHARED and
// read-write. fd must be a regular file (the front-end's memfd) at least
// offset+size bytes long; size must be 1 to MaxLogSize. MapDirtyLog does
// not close fd.
func MapDirtyLog(fd int, size, offset uint64) (*DirtyLog, error) {
	if size == 0 || size > MaxLogSize {
		return nil, fmt.Errorf("%w: size %#x (1 to %#x bytes)", ErrBadLog, size, uint64(MaxLogSize))
	}
	if offset > math.MaxInt64-size {
		return nil, fmt.Errorf("%w: offset %#x + size %#x wraps around", ErrBadLog, offset, size)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: fstat: %v", ErrBadLog, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: fd is not a regular file (mode %#o)", ErrBadLog, st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) < offset+size {
		return nil, fmt.Errorf("%w: file has %d bytes, log needs %d", ErrBadLog, st.Size, offset+size)
	}
	page := uint64(unix.Getpagesize())
	pageOff := offset % page
	// Whole pages, so that the aligned 32-bit word holding the last byte
	// is mapped too (it lies in the same page as that byte, which the
	// file covers).
	length := (pageOff + size + page - 1) &^ (page - 1)
	if length > math.MaxInt {
		return nil, fmt.Errorf("%w: too large to map", ErrBadLog)
	}
	m, err := unix.Mmap(fd, int64(offset-pageOff), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%w: mmap: %v", ErrBadLog, err)
	}
	return &DirtyLog{mapping: m, base: pageOff, size: size}, nil
}

// Size returns the log's size in bytes; it covers guest-physical addresses
// below Size*8*LogPageSize.
func (l *DirtyLog) Size() uint64 { return l.size }

// Dropped returns how many Mark calls touched pages beyond the log (those
// pages could not be logged).
func (l *DirtyLog) Dropped() uint64 { return l.dropped.Load() }

// Close unmaps the log. No Mark may run or follow.
func (l *DirtyLog) Close() error {
	m := l.mapping
	l.mapping = nil
	if m == nil {
		return nil
	}
	return unix.Munmap(m)
}

// Mark sets the bits of every page that the n bytes at guest-physical
// address a touch. It reports false, and sets nothing, when a page lies
// beyond the log (or the range wraps around).
func (l *DirtyLog) Mark(a GuestAddress, n uint64) bool {
	if n == 0 {
		return true
	}
	end := uint64(a) + n - 1
	if end < uint64(a) {
		l.dropped.Add(1)
		return false
	}
	first, last := uint64(a)/LogPageSize, end/LogPageSize
	if last/8 >= l.size {
		l.dropped.Add(1)
		return false
	}
	// Bit p of the log is bit (base*8+p)%32 of 32-bit word (base*8+p)/32
	// of the mapping: the log is little-endian, and the mapping starts
	// page-aligned.
	lo, hi := l.base*8+first, l.base*8+last
	for w := lo / 32; w <= hi/32; w++ {
		mask := ^uint32(0)
		if w == lo/32 {
			mask &= ^uint32(0) << (lo % 32)
		}
		if w == hi/32 {
			mask &= ^uint32(0) >> (31 - hi%32)
		}
		word := (*uint32)(unsafe.Pointer(&l.mapping[4*w : 4*w+4][0]))
		atomic.OrUint32(word, mask)
	}
	return true
}

// LogConfig says what a Queue logs, and where.
type LogConfig struct {
	// Log is the dirty log; nil logs nothing.
	Log *DirtyLog
	// Buffers logs what the device writes into the writable buffers of
	// the chains it pushes (VHOST_F_LOG_ALL negotiated).
	Buffers bool
	// Used logs writes to the used ring (VHOST_VRING_F_LOG set in the
	// vring's address flags) at UsedAddr, the vring's log_guest_addr:
	// byte x of the used ring is logged as guest-physical UsedAddr+x.
	Used     bool
	UsedAddr GuestAddress
}

// hostIndex orders a table's regions by host address, for mapping a slice
// of guest memory back to its guest-physical address.
type hostIndex []*Region

func (m *Memory) hostIndex() hostIndex {
	if idx := m.byHost.Load(); idx != nil {
		return *idx
	}
	idx := slices.Clone(hostIndex(m.regions))
	slices.SortFunc(idx, func(a, b *Region) int {
		pa, pb := uintptr(unsafe.Pointer(unsafe.SliceData(a.data))), uintptr(unsafe.Pointer(unsafe.SliceData(b.data)))
		switch {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return 0
	})
	m.byHost.Store(&idx)
	return idx
}

// guestAddrOf returns the guest-physical address of b[0], where b is a
// non-empty slice of one region of m (as chains hold them).
func (m *Memory) guestAddrOf(b []byte) (GuestAddress, bool) {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	idx := m.hostIndex()
	lo, hi := 0, len(idx)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		r := idx[mid]
		start := uintptr(unsafe.Pointer(unsafe.SliceData(r.data)))
		switch {
		case p < start:
			hi = mid
		case p-start >= uintptr(len(r.data)):
			lo = mid + 1
		default:
			if uint64(p-start)+uint64(len(b)) > r.spec.Size {
				return 0, false
			}
			return r.spec.GuestAddr + GuestAddress(p-start), true
		}
	}
	return 0, false
}

// SetLog makes cfg the queue's logging. When it returns, no push or
// notification-suppression write of the queue logs into a previously set
// DirtyLog any more, so the caller may close that log once every queue
// that had it has been switched (or stopped).
func (q *Queue) SetLog(cfg LogConfig) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.logBuf, q.logUsed, q.logUsedAddr = nil, nil, cfg.UsedAddr
	if cfg.Log != nil && cfg.Buffers {
		q.logBuf = cfg.Log
	}
	if cfg.Log != nil && cfg.Used {
		q.logUsed = cfg.Log
	}
	q.logging = q.logBuf != nil || q.logUsed != nil
	q.loggingUsed.Store(q.logUsed != nil)
}

// logPush logs a push of c whose used element went to field offset slot
// of the used ring. q.mu is held.
func (q *Queue) logPush(c *Chain, n uint32, slot int) {
	if l := q.logBuf; l != nil {
		left := uint64(max(n, c.written))
		for _, b := range c.wr {
			if left == 0 {
				break
			}
			k := min(left, uint64(len(b)))
			left -= k
			if k == 0 {
				continue
			}
			if a, ok := c.mem.guestAddrOf(b); ok {
				l.Mark(a, k)
			}
		}
	}
	if l := q.logUsed; l != nil {
		l.Mark(q.logUsedAddr+GuestAddress(slot), usedElemSize)
		l.Mark(q.logUsedAddr, 4) // used->flags and used->idx
	}
}

// logAvailEvent logs the write of avail_event. It takes q.mu.
func (q *Queue) logAvailEvent() {
	q.mu.Lock()
	if l := q.logUsed; l != nil && !q.stopped {
		l.Mark(q.logUsedAddr+GuestAddress(usedRingOff+usedElemSize*int(q.size)), 2)
	}
	q.mu.Unlock()
}

// NoteWritten records that the device may have written into the first n
// bytes of the chain's writable buffers, even if it pushes the chain with
// a shorter length (a READ whose data was placed before its reply turned
// into an error, a reply that did not fit): a dirty log must still cover
// those bytes.
func (c *Chain) NoteWritten(n int) {
	if n > 0 {
		c.written = max(c.written, uint32(min(n, int(c.wlen))))
	}
}
