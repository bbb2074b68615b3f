package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/vhostuser/frontend"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// forgetEvery is how many distinct inodes a worker looks up before it
// forgets them in one BATCH_FORGET (a dentry cache under pressure).
const forgetEvery = 1024

// session is a connection with the prepared tree looked up.
type session struct {
	c       *conn
	base    uint64
	dirs    []uint64
	big     uint64
	ls      uint64
	create  uint64
	pattern []byte
	patAddr virtqueue.GuestAddress
}

// patternBuf is the guest buffer holding the big file's n bytes at off.
func (s *session) patternBuf(off uint64, n uint32) frontend.Buf {
	return frontend.Buf{Addr: s.patAddr + virtqueue.GuestAddress(off%patternPeriod), Len: n}
}

// chunk is the request size of a 1 MiB mix: 1 MiB, or less when the
// daemon's max_write (WRITE) or max_pages (READ) is lower.
func (s *session) chunk(mix string) uint32 {
	if mix == "write-1m-seq" {
		return min(1<<20, s.c.maxWrite) &^ 4095
	}
	return min(1<<20, s.c.maxRead) &^ 4095
}

// openSession looks the prepared tree up (these lookups are kept for the
// whole session) and puts the file pattern in guest memory.
func openSession(c *conn) (*session, error) {
	s := &session{c: c, pattern: pattern()}
	a, err := c.dev.Data.Get(uint32(len(s.pattern)))
	if err != nil {
		return nil, err
	}
	s.patAddr = a
	if err := c.dev.Mem.Write(a, s.pattern); err != nil {
		return nil, err
	}
	ch := make(chan *slot, 1)
	sl, err := c.newSlot(4096, 4096, ch)
	if err != nil {
		return nil, err
	}
	defer c.freeSlot(sl)
	lookup := func(parent uint64, name string, mode uint32) (uint64, error) {
		if err := sl.request(c, fuseproto.OpLookup, parent, cname(nil, name), 0); err != nil {
			return 0, err
		}
		if err := c.call(sl, 4096); err != nil {
			return 0, err
		}
		body, err := sl.ok(fuseproto.EntryOutSize)
		if err != nil {
			return 0, fmt.Errorf("LOOKUP %s: %w", name, err)
		}
		e, err := entry(body, mode)
		if err != nil {
			return 0, fmt.Errorf("LOOKUP %s: %w", name, err)
		}
		return e.NodeID, nil
	}
	const dir = 0o040000
	if s.base, err = lookup(fuseproto.RootID, baseName, dir); err != nil {
		return nil, err
	}
	tree, err := lookup(s.base, "tree", dir)
	if err != nil {
		return nil, err
	}
	for i := range treeDirs {
		n, err := lookup(tree, dirName(i), dir)
		if err != nil {
			return nil, err
		}
		s.dirs = append(s.dirs, n)
	}
	if s.big, err = lookup(s.base, "big", 0o100000); err != nil {
		return nil, err
	}
	if s.ls, err = lookup(s.base, "ls", dir); err != nil {
		return nil, err
	}
	if s.create, err = lookup(s.base, "create", dir); err != nil {
		return nil, err
	}
	return s, nil
}

// worker is one load thread: depth slots in flight on one queue.
type worker struct {
	c       *conn
	sess    *session
	q       *rq
	id      int
	ch      chan *slot
	slots   []*slot
	rnd     *rand.Rand
	scratch []byte
	fh      uint64
	lat     []time.Duration
	ops     uint64
	forgets map[uint64]uint64
	gap     time.Duration
	err     error
}

// lookedUp counts one lookup of node, forgetting in a batch every
// forgetEvery distinct inodes.
func (w *worker) lookedUp(node uint64) {
	w.forgets[node]++
	if len(w.forgets) >= forgetEvery {
		w.flushForgets()
	}
}

func (w *worker) flushForgets() {
	if len(w.forgets) == 0 {
		return
	}
	fs := make([]fuseproto.ForgetOne, 0, len(w.forgets))
	for n, k := range w.forgets {
		fs = append(fs, fuseproto.ForgetOne{NodeID: n, Nlookup: k})
	}
	clear(w.forgets)
	if err := w.c.forget(fs); err != nil && w.err == nil {
		w.err = err
	}
}

// call sends one request from slot s on the worker's queue and waits.
func (w *worker) call(s *slot, repLen uint32) error {
	if err := w.c.submit(w.q, s, repLen); err != nil {
		return err
	}
	select {
	case <-w.ch:
		return nil
	case <-time.After(frontend.Timeout):
		return fmt.Errorf("op %d: no reply within %v", s.op, frontend.Timeout)
	}
}

// openBig opens the big file for the read and write mixes.
func (w *worker) openBig() error {
	s := w.slots[0]
	in := fuseproto.OpenIn{Flags: 2 /* O_RDWR */}
	if err := s.request(w.c, fuseproto.OpOpen, w.sess.big, fuseproto.Encode(nil, &in), 0); err != nil {
		return err
	}
	if err := w.call(s, 64); err != nil {
		return err
	}
	body, err := s.ok(16)
	if err != nil {
		return fmt.Errorf("OPEN big: %w", err)
	}
	var oo fuseproto.OpenOut
	fuseproto.Decode(body, &oo)
	w.fh = oo.Fh
	return nil
}

// releaseBig closes the handle openBig made.
func (w *worker) releaseBig() error {
	s := w.slots[0]
	in := fuseproto.ReleaseIn{Fh: w.fh, Flags: 2}
	if err := s.request(w.c, fuseproto.OpRelease, w.sess.big, fuseproto.Encode(nil, &in), 0); err != nil {
		return err
	}
	if err := w.call(s, 64); err != nil {
		return err
	}
	_, err := s.ok(0)
	return err
}

// Phases of a run.
const (
	phaseWarm = iota
	phaseMeasure
	phaseStop
)

// runOpts are the load parameters.
type runOpts struct {
	threads, depth int
	warmup, dur    time.Duration
	pid            int
	gap            time.Duration // think time before each next request of a slot
	corrupt        bool          // tests: expect wrong READ data
}

// result is one measured run of a mix.
type result struct {
	mix        string
	queues     int // request queues used
	offered    int // request queues the daemon offered
	ops        uint64
	secs       float64
	opsPerSec  float64
	p50, p99   time.Duration
	p999       time.Duration
	cpuPer1000 float64 // daemon CPU seconds per 1000 ops; -1 unknown
	rssAnonKB  uint64
	chunk      uint32 // request size of the 1 MiB mixes
	note       string
}

// run drives mix for opts.dur after opts.warmup.
func (sess *session) run(mix string, o runOpts) (result, error) {
	c := sess.c
	r := result{mix: mix, queues: len(c.queues), offered: c.dev.Offered, cpuPer1000: -1}
	repLen := uint32(16 + 4096)
	if mix == "read-1m-seq" || mix == "write-1m-seq" {
		r.chunk = sess.chunk(mix)
		if r.chunk < 1<<20 {
			r.note = fmt.Sprintf("%d KiB requests (daemon limit)", r.chunk>>10)
		}
		repLen = max(repLen, 16+r.chunk)
	}
	var phase atomic.Int32
	workers := make([]*worker, o.threads)
	nActors := o.threads * o.depth
	for i := range workers {
		w := &worker{c: c, sess: sess, q: c.queues[i%len(c.queues)], id: i, ch: make(chan *slot, o.depth),
			rnd: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))), scratch: make([]byte, 0, 4096),
			forgets: make(map[uint64]uint64), lat: make([]time.Duration, 0, 1<<16), gap: o.gap}
		for range o.depth {
			s, err := c.newSlot(4096, repLen, w.ch)
			if err != nil {
				return r, err
			}
			w.slots = append(w.slots, s)
		}
		for j, s := range w.slots {
			a, err := newActor(mix, w, j, nActors, o.corrupt)
			if err != nil {
				return r, err
			}
			s.actor = a
		}
		workers[i] = w
	}
	defer func() {
		for _, w := range workers {
			for _, s := range w.slots {
				c.freeSlot(s)
			}
		}
	}()
	var ready, done sync.WaitGroup
	ready.Add(len(workers))
	done.Add(len(workers))
	start := make(chan struct{})
	for _, w := range workers {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			rwMix := mix != "lookup-getattr" && mix != "create-cycle" && mix != "readdirplus"
			if rwMix {
				w.err = w.openBig()
			}
			ready.Done()
			<-start
			if w.err == nil {
				w.loop(&phase, &r)
			}
			w.flushForgets()
			if rwMix && w.err == nil {
				w.err = w.releaseBig()
			}
		}()
	}
	ready.Wait()
	close(start)
	// A worker's error ends the run by setting phaseStop.
	stopEarly := func() bool { return phase.Load() == phaseStop }
	sleep(o.warmup, stopEarly)
	cpu0, err0 := treeStats(o.pid)
	t0 := time.Now()
	phase.CompareAndSwap(phaseWarm, phaseMeasure)
	sleep(o.dur, stopEarly)
	cpu1, err1 := treeStats(o.pid)
	t1 := time.Now()
	phase.Store(phaseStop)
	done.Wait()
	var lat []time.Duration
	for _, w := range workers {
		if w.err != nil {
			return r, w.err
		}
		r.ops += w.ops
		lat = append(lat, w.lat...)
	}
	if err := c.drainHiprio(); err != nil {
		return r, err
	}
	if err := c.failed(); err != nil {
		return r, err
	}
	r.secs = t1.Sub(t0).Seconds()
	if r.ops == 0 {
		return r, errors.New("no operation completed")
	}
	r.opsPerSec = float64(r.ops) / r.secs
	slices.Sort(lat)
	r.p50, r.p99, r.p999 = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 0.999)
	if o.pid > 0 {
		if err0 != nil {
			return r, err0
		}
		if err1 != nil {
			return r, err1
		}
		r.cpuPer1000 = (cpu1.cpuSecs - cpu0.cpuSecs) / (float64(r.ops) / 1000)
		r.rssAnonKB = cpu1.rssAnonKB
	}
	return r, nil
}

// sleep waits d, or less when stop reports true.
func sleep(d time.Duration, stop func() bool) {
	end := time.Now().Add(d)
	for time.Now().Before(end) && !stop() {
		time.Sleep(min(10*time.Millisecond, time.Until(end)))
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// loop keeps the worker's slots busy until the phase is phaseStop and
// every actor is idle; an error stops the whole run.
func (w *worker) loop(phase *atomic.Int32, r *result) {
	inflight := 0
	send := func(s *slot) bool {
		n, err := s.actor.next(w, s)
		if err == nil {
			err = w.c.submit(w.q, s, n)
		}
		if err != nil {
			w.err = err
			phase.Store(phaseStop)
			return false
		}
		inflight++
		return true
	}
	for _, s := range w.slots {
		if !send(s) {
			break
		}
	}
	timer := time.NewTimer(frontend.Timeout)
	defer timer.Stop()
	for inflight > 0 {
		timer.Reset(frontend.Timeout)
		var s *slot
		select {
		case s = <-w.ch:
		case <-timer.C:
			if w.err == nil {
				w.err = fmt.Errorf("worker %d: %d requests unanswered for %v", w.id, inflight, frontend.Timeout)
			}
			phase.Store(phaseStop)
			return
		}
		inflight--
		p := phase.Load()
		if w.err != nil {
			continue // drain
		}
		if err := s.actor.check(w, s); err != nil {
			w.err = fmt.Errorf("worker %d: %w", w.id, err)
			phase.Store(phaseStop)
			continue
		}
		if p == phaseMeasure {
			w.ops++
			w.lat = append(w.lat, s.done.Sub(s.sent))
		}
		if w.err == nil && (p != phaseStop || !s.actor.idle()) {
			if w.gap > 0 {
				time.Sleep(w.gap) // a guest that thinks between requests
			}
			send(s)
		}
	}
}
