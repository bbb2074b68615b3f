package vutest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// DirtyLog is the front-end's side of a dirty page log: a memfd the
// back-end maps with SET_LOG_BASE, read and cleared as QEMU does.
type DirtyLog struct {
	FD   int
	Size uint64 // bytes
	data []byte
}

// NewDirtyLog creates a log of size bytes (a multiple of 8) in a memfd,
// freed when the test ends.
func NewDirtyLog(tb testing.TB, size uint64) *DirtyLog {
	tb.Helper()
	if size == 0 || size%8 != 0 {
		tb.Fatalf("dirty log of %d bytes", size)
	}
	fd, err := unix.MemfdCreate("vhost-log", unix.MFD_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	l := &DirtyLog{FD: fd, Size: size, data: data}
	tb.Cleanup(func() {
		unix.Munmap(l.data)
		unix.Close(l.FD)
	})
	return l
}

// LogSize returns the log size QEMU would use for the front-end's memory:
// whole 64-page chunks up to the end of the highest region
// (vhost_get_log_size).
func (f *Frontend) LogSize() uint64 {
	var end uint64
	for _, r := range f.Mem.Regions {
		end = max(end, uint64(r.Spec.GuestAddr)+r.Spec.Size)
	}
	chunk := uint64(64 * virtqueue.LogPageSize)
	return (end + chunk - 1) / chunk * 8
}

// TakePages returns the pages whose bits are set, in order, and clears
// them with atomic exchanges of 64-bit words, as QEMU's log sync does.
func (l *DirtyLog) TakePages() []uint64 {
	var pages []uint64
	for w := uint64(0); w < l.Size/8; w++ {
		p := (*uint64)(unsafe.Pointer(&l.data[8*w]))
		if atomic.LoadUint64(p) == 0 {
			continue
		}
		v := atomic.SwapUint64(p, 0)
		for b := range uint64(64) {
			if v&(1<<b) != 0 {
				pages = append(pages, 64*w+b)
			}
		}
	}
	return pages
}

// Pages returns the pages whose bits are set, without clearing them.
func (l *DirtyLog) Pages() []uint64 {
	var pages []uint64
	for i, b := range l.data {
		for k := range 8 {
			if b&(1<<k) != 0 {
				pages = append(pages, uint64(8*i+k))
			}
		}
	}
	return pages
}

// PagesOf returns the pages, in order and once each, that the n bytes at
// each address touch: what a log must hold after such writes.
func PagesOf(ranges ...[2]uint64) []uint64 {
	set := map[uint64]bool{}
	for _, r := range ranges {
		if r[1] == 0 {
			continue
		}
		for p := r[0] / virtqueue.LogPageSize; p <= (r[0]+r[1]-1)/virtqueue.LogPageSize; p++ {
			set[p] = true
		}
	}
	out := make([]uint64, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// SetLogBase sends SET_LOG_BASE with l (with LOG_SHMFD the back-end
// answers it).
func (f *Frontend) SetLogBase(l *DirtyLog) error {
	_, err := f.Do(vhostuser.SetLogBase, vhostuser.LogDescription{Size: l.Size}.Encode(), l.FD)
	return err
}

// QEMUStartLogging replays QEMU's start of dirty logging on a running
// device (vhost_migration_log): SET_LOG_BASE with a log sized for guest
// memory, SET_FEATURES with VHOST_F_LOG_ALL, and SET_VRING_ADDR with
// VHOST_VRING_F_LOG for every vring. It returns the log.
func (f *Frontend) QEMUStartLogging() *DirtyLog {
	f.tb.Helper()
	l := NewDirtyLog(f.tb, f.LogSize())
	if err := f.SetLogBase(l); err != nil {
		f.tb.Fatalf("SET_LOG_BASE: %v", err)
	}
	f.Features |= virtqueue.FeatureLogAll
	f.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(f.Features))
	f.Logging = true
	for _, i := range f.queueIndexes() {
		f.Queues[i].SendAddr()
	}
	return l
}

// QEMUStopLogging replays the end of logging (a cancelled migration):
// SET_FEATURES without VHOST_F_LOG_ALL and SET_VRING_ADDR without
// VHOST_VRING_F_LOG. QEMU sends nothing about the log itself.
func (f *Frontend) QEMUStopLogging() {
	f.tb.Helper()
	f.Features &^= virtqueue.FeatureLogAll
	f.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(f.Features))
	f.Logging = false
	for _, i := range f.queueIndexes() {
		f.Queues[i].SendAddr()
	}
}

func (f *Frontend) queueIndexes() []int {
	var idx []int
	for i := range f.Queues {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

// QEMUStop replays vhost_dev_stop when the VM stops (the switch-over of a
// migration), as QEMU 10.0 sends it: SET_VRING_ENABLE(0) for every vring,
// then GET_VRING_BASE for every vring. It returns the bases.
func (f *Frontend) QEMUStop() map[int]uint16 {
	f.tb.Helper()
	for _, i := range f.queueIndexes() {
		f.Queues[i].Enable(false)
	}
	bases := make(map[int]uint16)
	for _, i := range f.queueIndexes() {
		bases[i] = f.Queues[i].GetBase()
	}
	return bases
}

// SaveState replays vhost_save_backend_state: a pipe, SET_DEVICE_STATE_FD
// (save, stopped) with its write end, everything read from the read end
// until EOF, then CHECK_DEVICE_STATE. It returns the state.
func (f *Frontend) SaveState() ([]byte, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	_, err = f.Do(vhostuser.SetDeviceStateFD,
		vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferSave, Phase: vhostuser.PhaseStopped}.Encode(), int(w.Fd()))
	w.Close() // the back-end has its own copy
	if err != nil {
		return nil, err
	}
	state, rerr := io.ReadAll(r)
	r.Close()
	_, cerr := f.Do(vhostuser.CheckDeviceState, nil)
	if err := errors.Join(rerr, cerr); err != nil {
		return nil, err
	}
	return state, nil
}

// LoadState replays vhost_load_backend_state: a pipe, SET_DEVICE_STATE_FD
// (load, stopped) with its read end, state written into the write end,
// which is then closed, then CHECK_DEVICE_STATE.
func (f *Frontend) LoadState(state []byte) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = f.Do(vhostuser.SetDeviceStateFD,
		vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferLoad, Phase: vhostuser.PhaseStopped}.Encode(), int(r.Fd()))
	r.Close()
	if err != nil {
		return err
	}
	_, werr := w.Write(state)
	w.Close()
	_, cerr := f.Do(vhostuser.CheckDeviceState, nil)
	if werr != nil && cerr == nil {
		return fmt.Errorf("writing the state: %w", werr)
	}
	return cerr
}

// AdoptGuest makes the front-end the migration destination of src: src's
// vrings, with their driver state, move over with eventfds of their own,
// and the drivers now use f's memory, which must hold what src's does (a
// RAM migration: Mem.CopyFrom, or Mem.CopyPages of a dirty log's pages).
// src must not be used for them any more.
func (f *Frontend) AdoptGuest(src *Frontend) {
	f.tb.Helper()
	for _, i := range src.queueIndexes() {
		old := src.Queues[i]
		old.Driver.SetMem(f.Mem)
		f.Queues[i] = &VQ{Index: i, Driver: old.Driver, Kick: newEventfd(f.tb), Call: newEventfd(f.tb), f: f}
	}
	f.Features = src.Features &^ virtqueue.FeatureLogAll
}

// QEMUResume replays vhost_dev_start on the destination once the device
// state is loaded, in QEMU 10.0's order: SET_FEATURES, ADD_MEM_REG per
// region, per vring SET_VRING_NUM, SET_VRING_BASE (from the source's
// GET_VRING_BASE), SET_VRING_ADDR and SET_VRING_KICK, SET_VRING_ENABLE for
// each, then SET_VRING_CALL for each (the guest notifiers unmasked).
func (f *Frontend) QEMUResume(bases map[int]uint16) {
	f.tb.Helper()
	f.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(f.Features))
	f.AddMemRegs(f.Mem)
	for _, i := range f.queueIndexes() {
		vq := f.Queues[i]
		vq.SendNum()
		vq.SendBase(bases[i])
		vq.SendAddr()
		vq.SendKick()
	}
	for _, i := range f.queueIndexes() {
		f.Queues[i].Enable(true)
	}
	for _, i := range f.queueIndexes() {
		f.Queues[i].SendCall()
	}
}
