package vhostuser_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// echoDev is a fake device: each queue copies every chain's readable bytes
// into its writable buffers. It records StartQueue, StopQueue and Reset.
// Its migratable state is a byte string (unless noState).
type echoDev struct {
	nq      int
	config  []byte
	noState bool

	mu      sync.Mutex
	events  []string
	run     map[int]*echoRunner
	state   []byte
	saveErr error // SaveState fails with it after writing the state
	loadErr error // LoadState fails with it after reading the state
	loadLen int   // LoadState reads this many bytes, not up to EOF
}

// maxEchoState bounds what LoadState accepts.
const maxEchoState = 4 << 20

func (d *echoDev) CanTransferState() bool { return !d.noState }

func (d *echoDev) SaveState(w io.Writer) error {
	d.mu.Lock()
	st, err := d.state, d.saveErr
	d.mu.Unlock()
	d.event("save")
	if _, werr := w.Write(st); werr != nil {
		return werr
	}
	return err
}

func (d *echoDev) LoadState(r io.Reader) error {
	d.event("load")
	d.mu.Lock()
	n, lerr := d.loadLen, d.loadErr
	d.mu.Unlock()
	var b []byte
	var err error
	if n > 0 {
		b = make([]byte, n)
		_, err = io.ReadFull(r, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(r, maxEchoState+1))
		if err == nil && len(b) > maxEchoState {
			err = errors.New("state too large")
		}
	}
	if err != nil {
		return err
	}
	if lerr != nil {
		return lerr
	}
	d.mu.Lock()
	d.state = b
	d.mu.Unlock()
	return nil
}

// set changes the device's state fields under its lock.
func (d *echoDev) set(f func(d *echoDev)) {
	d.mu.Lock()
	f(d)
	d.mu.Unlock()
}

func (d *echoDev) State() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

func newEchoDev(nq int, config []byte) *echoDev {
	return &echoDev{nq: nq, config: config, run: make(map[int]*echoRunner)}
}

func (d *echoDev) Features() uint64 {
	return virtqueue.FeatureVersion1 | virtqueue.FeatureEventIdx | virtqueue.FeatureIndirectDesc
}
func (d *echoDev) NumQueues() int    { return d.nq }
func (d *echoDev) MaxQueueSize() int { return 1024 }
func (d *echoDev) Config() []byte    { return d.config }
func (d *echoDev) SetConfig(off uint32, data []byte, flags uint32) error {
	return errors.New("read-only config space")
}

func (d *echoDev) event(s string) {
	d.mu.Lock()
	d.events = append(d.events, s)
	d.mu.Unlock()
}

// Events returns and clears the recorded events.
func (d *echoDev) Events() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.events
	d.events = nil
	return e
}

func (d *echoDev) StartQueue(i int, q *virtqueue.Queue, kick int) error {
	d.event(fmt.Sprintf("start %d", i))
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return err
	}
	r := &echoRunner{q: q, kick: kick, stop: stop, done: make(chan struct{})}
	d.mu.Lock()
	d.run[i] = r
	d.mu.Unlock()
	go r.loop()
	return nil
}

func (d *echoDev) StopQueue(i int) {
	d.event(fmt.Sprintf("stop %d", i))
	d.mu.Lock()
	r := d.run[i]
	delete(d.run, i)
	d.mu.Unlock()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	unix.Write(r.stop, b[:])
	<-r.done
	unix.Close(r.stop)
}

func (d *echoDev) Reset() { d.event("reset") }

type echoRunner struct {
	q          *virtqueue.Queue
	kick, stop int
	done       chan struct{}
}

func (r *echoRunner) loop() {
	defer close(r.done)
	var c virtqueue.Chain
	buf := make([]byte, 4<<20)
	for {
		for {
			err := r.q.Pop(&c)
			if errors.Is(err, virtqueue.ErrEmpty) {
				more, _ := r.q.EnableNotify()
				if more {
					continue
				}
				break
			}
			if err != nil {
				var ce *virtqueue.ChainError
				if errors.As(err, &ce) {
					continue
				}
				return
			}
			var rd virtqueue.Reader
			rd.Reset(c.Readable())
			n, _ := rd.Read(buf)
			var w virtqueue.Writer
			w.Reset(c.Writable())
			k, _ := w.Write(buf[:n])
			r.q.Push(&c, uint32(k))
		}
		fds := []unix.PollFd{{Fd: int32(r.stop), Events: unix.POLLIN}}
		if r.kick >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(r.kick), Events: unix.POLLIN})
		}
		timeout := -1
		if r.kick < 0 {
			timeout = 10
		}
		if _, err := unix.Poll(fds, timeout); err != nil && err != unix.EINTR {
			return
		}
		if fds[0].Revents != 0 {
			return
		}
		if len(fds) > 1 && fds[1].Revents != 0 {
			var b [8]byte
			unix.Read(r.kick, b[:])
		}
	}
}
