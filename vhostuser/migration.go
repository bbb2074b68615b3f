package vhostuser

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// Live migration: dirty page logging (SET_LOG_BASE, VHOST_F_LOG_ALL,
// VHOST_VRING_F_LOG) and the device state transfer (SET_DEVICE_STATE_FD,
// CHECK_DEVICE_STATE). docs/virtio.md has the message order QEMU uses.

// setLogBase maps the dirty log sent with SET_LOG_BASE and switches every
// running ring to it. The previous log is unmapped: once the reply goes out
// the front-end may free it, so nothing is logged into it any more.
func (s *session) setLogBase(m *message) ([]byte, error) {
	if s.ackedProto&ProtocolLogShmfd == 0 {
		// Without LOG_SHMFD the log would be in the front-end's own
		// address space; the front-end gets no reply to wait for.
		return nil, fmt.Errorf("%w: SET_LOG_BASE without the LOG_SHMFD protocol feature", errUnknown)
	}
	ld, err := DecodeLogDescription(m.payload)
	if err != nil {
		return nil, err
	}
	fd, ok := m.takeFD()
	if !ok {
		return nil, fmt.Errorf("SET_LOG_BASE with %d fds", len(m.fds))
	}
	defer unix.Close(fd)
	l, err := virtqueue.MapDirtyLog(fd, ld.Size, ld.Offset)
	if err != nil {
		return nil, err
	}
	old := s.dirty
	s.dirty = l
	s.applyLogs()
	closeLog(s, old)
	return EncodeU64(0), nil
}

// applyLog gives vring i's queue, if it has one, the logging the front-end
// asked for: its descriptor buffers with VHOST_F_LOG_ALL, its used ring
// with VHOST_VRING_F_LOG, both into the current log.
func (s *session) applyLog(i int) {
	v := &s.vrings[i]
	if v.q == nil {
		return
	}
	v.q.SetLog(virtqueue.LogConfig{
		Log:      s.dirty,
		Buffers:  s.acked&virtqueue.FeatureLogAll != 0,
		Used:     v.addrFlags&VringFLog != 0,
		UsedAddr: virtqueue.GuestAddress(v.log),
	})
}

func (s *session) applyLogs() {
	for i := range s.vrings {
		s.applyLog(i)
	}
}

// closeDirtyLog unmaps the log; every queue is stopped or switched away.
func (s *session) closeDirtyLog() {
	closeLog(s, s.dirty)
	s.dirty = nil
}

func closeLog(s *session, l *virtqueue.DirtyLog) {
	if l == nil {
		return
	}
	if n := l.Dropped(); n > 0 {
		s.log.Warn("writes beyond the dirty log were not logged", "count", n, "log bytes", l.Size())
	}
	l.Close()
}

// transfer is one device state transfer started by SET_DEVICE_STATE_FD.
type transfer struct {
	dir  uint32
	f    *os.File
	done chan struct{}
	err  error // set before done is closed
}

// setDeviceStateFD starts a transfer of the device state over the fd sent
// with the message, on a goroutine of its own. The back-end uses the
// front-end's channel, so the reply carries no fd.
func (s *session) setDeviceStateFD(m *message) ([]byte, error) {
	if s.st == nil || s.ackedProto&ProtocolDeviceState == 0 {
		return nil, errors.New("SET_DEVICE_STATE_FD without the DEVICE_STATE protocol feature")
	}
	p, err := DecodeDeviceStateTransfer(m.payload)
	if err != nil {
		return nil, err
	}
	if p.Direction != TransferSave && p.Direction != TransferLoad {
		return nil, fmt.Errorf("device state transfer direction %d", p.Direction)
	}
	if p.Phase != PhaseStopped {
		return nil, fmt.Errorf("device state transfer in phase %d (only 0, stopped, is defined)", p.Phase)
	}
	if len(m.fds) != 1 {
		return nil, fmt.Errorf("SET_DEVICE_STATE_FD with %d fds", len(m.fds))
	}
	if t := s.xfer; t != nil {
		select {
		case <-t.done:
			// Never checked; a new transfer replaces it.
			s.xfer = nil
		default:
			return nil, errors.New("a device state transfer is still running")
		}
	}
	for i := range s.vrings {
		if s.vrings[i].running {
			return nil, fmt.Errorf("vring %d is running; the device state moves only while the device is stopped", i)
		}
	}
	fd, _ := m.takeFD()
	// Non-blocking, so that the file goes through the poller and Close
	// wakes a transfer blocked on a front-end that stopped reading or
	// writing. The flag is on the pipe end the front-end passed us.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("device state fd: %w", err)
	}
	t := &transfer{dir: p.Direction, f: os.NewFile(uintptr(fd), "device-state"), done: make(chan struct{})}
	s.xfer = t
	go t.run(s.st)
	return EncodeU64(VringNoFD), nil
}

// stateBufSize is the buffer between the device's encoder or decoder and
// the pipe.
const stateBufSize = 64 << 10

// run saves or loads the state and closes the fd: the end of the data when
// saving, and when loading a sign to a writer that still writes that
// nothing more is read.
func (t *transfer) run(st StateTransferer) {
	defer close(t.done)
	defer func() {
		if p := recover(); p != nil {
			t.f.Close()
			t.err = fmt.Errorf("device state transfer panicked: %v", p)
		}
	}()
	if t.dir == TransferSave {
		w := bufio.NewWriterSize(t.f, stateBufSize)
		err := st.SaveState(w)
		if err == nil {
			err = w.Flush()
		}
		if cerr := t.f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			t.err = fmt.Errorf("saving the device state: %w", err)
		}
		return
	}
	r := bufio.NewReaderSize(t.f, stateBufSize)
	err := st.LoadState(r)
	if err == nil {
		// The state must end where the front-end's data ends.
		if _, rerr := r.ReadByte(); rerr == nil {
			err = errors.New("data follows the end of the state")
		} else if rerr != io.EOF {
			err = rerr
		}
	}
	t.f.Close()
	if err != nil {
		t.err = fmt.Errorf("loading the device state: %w", err)
	}
}

// transferring reports whether a device state transfer runs. While one
// does, no vring is served: the device's state must not change under a
// save, and a destination must serve nothing against a half-loaded state.
func (s *session) transferring() bool {
	if s.xfer == nil {
		return false
	}
	select {
	case <-s.xfer.done:
		return false
	default:
		return true
	}
}

// releaseRings starts the vrings that were started and enabled while a
// transfer ran: at CHECK_DEVICE_STATE, or at the first message after the
// transfer ended for a front-end that does not check.
func (s *session) releaseRings() {
	s.held = false
	for i := range s.vrings {
		if err := s.apply(i); err != nil {
			s.log.Error("vring not served after the device state transfer", "vring", i, "error", err)
		}
	}
}

// checkDeviceState waits for the transfer to end and returns its result
// (CHECK_DEVICE_STATE). It gives up, cancelling the transfer, when the
// session's context ends.
func (s *session) checkDeviceState() ([]byte, error) {
	t := s.xfer
	if t == nil {
		return nil, errors.New("CHECK_DEVICE_STATE without a device state transfer")
	}
	select {
	case <-t.done:
	case <-s.ctx.Done():
		t.f.Close()
		<-t.done
	}
	s.xfer = nil
	if s.held {
		s.releaseRings()
	}
	if t.err != nil {
		return nil, t.err
	}
	return EncodeU64(0), nil
}

// cancelTransfer ends a transfer in progress (the front-end went away or
// reset the device): closing the fd fails its reads and writes. The
// callers reset every vring next.
func (s *session) cancelTransfer() {
	t := s.xfer
	if t == nil {
		return
	}
	s.xfer = nil
	t.f.Close()
	<-t.done
	if t.err != nil {
		s.log.Debug("device state transfer ended unchecked", "error", t.err)
	}
	s.held = false // the callers reset the vrings
}
