package vhostuser_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// ringPages are the pages of vring vq's used ring (with avail_event).
func ringPages(vq *vutest.VQ) []uint64 {
	d := vq.Driver
	return vutest.PagesOf([2]uint64{uint64(d.Used), 6 + 8*uint64(d.Size)})
}

// echoLogged echoes msg on vq and returns the pages the reply's data went
// to (the first Len bytes of the writable buffers).
func echoLogged(t *testing.T, vq *vutest.VQ, msg []byte, in []uint32, o vqtest.ChainOpts) []uint64 {
	t.Helper()
	head := vq.Add([][]byte{msg}, in, o)
	u, err := vq.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if u.Head != head || !bytes.Equal(u.Data, msg[:min(len(msg), int(u.Len))]) {
		t.Fatalf("vring %d: used %d (%d bytes), want %d", vq.Index, u.Head, u.Len, head)
	}
	var ranges [][2]uint64
	left := uint64(u.Len)
	for _, b := range u.In {
		k := min(left, uint64(b.Len))
		ranges = append(ranges, [2]uint64{uint64(b.Addr), k})
		left -= k
	}
	return vutest.PagesOf(ranges...)
}

func union(sets ...[]uint64) []uint64 {
	var out []uint64
	for _, s := range sets {
		out = append(out, s...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestDirtyLogging follows QEMU's logging on a running device: nothing is
// logged before, the reply data and used ring exactly while
// VHOST_F_LOG_ALL and VHOST_VRING_F_LOG are on, the used ring only with
// the vring flag alone, and nothing after logging stops. A new log from
// SET_LOG_BASE takes over at once.
func TestDirtyLogging(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	if feat := fe.GetU64(vhostuser.GetFeatures); feat&virtqueue.FeatureLogAll == 0 {
		t.Fatalf("features %#x: no VHOST_F_LOG_ALL", feat)
	}
	fe.QEMUStart(2, 64, allFeatures)
	if fe.Protocol&vhostuser.ProtocolLogShmfd == 0 {
		t.Fatalf("protocol features %#x: no LOG_SHMFD", fe.Protocol)
	}
	rq := fe.Queues[1]
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB

	// A log, but neither LOG_ALL nor the vring flag: nothing is logged.
	l := vutest.NewDirtyLog(t, fe.LogSize())
	if err := fe.SetLogBase(l); err != nil {
		t.Fatal(err)
	}
	echoLogged(t, rq, big, []uint32{uint32(len(big))}, vqtest.ChainOpts{Split: 4096})
	if p := l.TakePages(); p != nil {
		t.Fatalf("pages %v logged without LOG_ALL", p)
	}

	// QEMU's start of logging: a new log, LOG_ALL, the vring flags.
	l = fe.QEMUStartLogging()
	for _, o := range []vqtest.ChainOpts{{}, {Split: 4096}, {Indirect: true, Split: 1000}} {
		want := echoLogged(t, rq, big[:100000], []uint32{50000, 70000}, o)
		if got, want := l.TakePages(), union(want, ringPages(rq)); !slices.Equal(got, want) {
			t.Fatalf("%+v: pages %v, want %v", o, got, want)
		}
	}
	// A reply shorter than its buffers: only what was written.
	want := echoLogged(t, fe.Queues[0], []byte("short"), []uint32{3 << 20}, vqtest.ChainOpts{})
	if got, want := l.TakePages(), union(want, ringPages(fe.Queues[0])); !slices.Equal(got, want) {
		t.Fatalf("short reply: pages %v, want %v", got, want)
	}

	// The log is resized: the new one gets everything, the old nothing.
	l2 := vutest.NewDirtyLog(t, fe.LogSize()+4096)
	if err := fe.SetLogBase(l2); err != nil {
		t.Fatal(err)
	}
	l.TakePages() // a queue may have rewritten avail_event before the switch
	want = echoLogged(t, rq, big, []uint32{uint32(len(big))}, vqtest.ChainOpts{})
	if got, want := l2.TakePages(), union(want, ringPages(rq)); !slices.Equal(got, want) {
		t.Fatalf("after SET_LOG_BASE: pages %v, want %v", got, want)
	}
	if p := l.TakePages(); p != nil {
		t.Fatalf("pages %v logged into the replaced log", p)
	}

	// The vring flag without LOG_ALL: the used ring only.
	fe.Features &^= virtqueue.FeatureLogAll
	fe.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(fe.Features))
	echoLogged(t, rq, big, []uint32{uint32(len(big))}, vqtest.ChainOpts{})
	if got, want := l2.TakePages(), ringPages(rq); !slices.Equal(got, want) {
		t.Fatalf("vring flag only: pages %v, want %v", got, want)
	}

	// Logging stops.
	fe.QEMUStopLogging()
	l2.TakePages()
	echoLogged(t, rq, big, []uint32{uint32(len(big))}, vqtest.ChainOpts{})
	if p := l2.TakePages(); p != nil {
		t.Fatalf("pages %v logged after logging stopped", p)
	}

	// A ring (re)started while logging logs from its first chain.
	fe.QEMUStartLogging()
	l3 := vutest.NewDirtyLog(t, fe.LogSize())
	if err := fe.SetLogBase(l3); err != nil {
		t.Fatal(err)
	}
	rq.SetupVring(rq.GetBase())
	rq.Enable(true)
	want = echoLogged(t, rq, big, []uint32{uint32(len(big))}, vqtest.ChainOpts{})
	if got, want := l3.TakePages(), union(want, ringPages(rq)); !slices.Equal(got, want) {
		t.Fatalf("restarted ring: pages %v, want %v", got, want)
	}
}

// TestLogSizes checks SET_LOG_BASE's checks and that a log too small for
// the writes costs those writes' bits, nothing else.
func TestLogSizes(t *testing.T) {
	h := start(t, newEchoDev(2, nil), nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	file := vutest.NewDirtyLog(t, 8192)
	for _, tt := range []struct {
		name string
		ld   vhostuser.LogDescription
		ok   bool
	}{
		{"size 0", vhostuser.LogDescription{}, false},
		{"larger than the file", vhostuser.LogDescription{Size: 8200}, false},
		{"offset beyond the file", vhostuser.LogDescription{Size: 8, Offset: 8192}, false},
		{"offset and size beyond the file", vhostuser.LogDescription{Size: 4096, Offset: 4100}, false},
		{"offset plus size wrapping", vhostuser.LogDescription{Size: 4096, Offset: ^uint64(0) - 10}, false},
		{"size beyond the maximum", vhostuser.LogDescription{Size: virtqueue.MaxLogSize + 8}, false},
		{"an odd offset", vhostuser.LogDescription{Size: 100, Offset: 4097}, true},
		{"the whole file", vhostuser.LogDescription{Size: 8192}, true},
	} {
		_, err := fe.Do(vhostuser.SetLogBase, tt.ld.Encode(), file.FD)
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
		if err != nil && !errors.Is(err, vutest.ErrNack) {
			t.Fatalf("%s: %v, want a failure reply", tt.name, err)
		}
	}
	// 8 bytes cover 64 pages (256 KiB): rings at 0x10000 and 0x20000 are
	// logged, buffers at 2 MiB and up are not, and the session goes on.
	if _, err := fe.Do(vhostuser.SetLogBase, vhostuser.LogDescription{Size: 8}.Encode(), file.FD); err != nil {
		t.Fatal(err)
	}
	fe.Logging = true
	fe.Features |= virtqueue.FeatureLogAll
	fe.Must(vhostuser.SetFeatures, vhostuser.EncodeU64(fe.Features))
	fe.Queues[1].SendAddr()
	echoLogged(t, fe.Queues[1], []byte("beyond the log"), []uint32{64}, vqtest.ChainOpts{})
	if got, want := file.TakePages(), ringPages(fe.Queues[1]); !slices.Equal(got, want) {
		t.Fatalf("pages %v, want %v", got, want)
	}
}

// TestMigration moves a running guest from one back-end to another as QEMU
// does: logging on, a bulk copy of guest memory, chains served while
// logging (their pages copied from the log), the switch-over (vrings
// stopped, the last log pages copied, the device state saved), then on the
// destination the state loaded and the vrings started at the source's
// bases. The destination's memory must equal the source's: every write the
// source device made was logged.
func TestMigration(t *testing.T) {
	srcDev, dstDev := newEchoDev(2, nil), newEchoDev(2, nil)
	srcDev.state = []byte(strings.Repeat("session state ", 10000)) // beyond a pipe's buffer
	src := start(t, srcDev, nil)
	dst := start(t, dstDev, nil)
	sfe, dfe := src.fe, dst.fe
	sfe.QEMUStart(2, 64, allFeatures)
	hi, rq := sfe.Queues[0], sfe.Queues[1]
	echo(t, rq, "before migration", vqtest.ChainOpts{})
	dfe.QEMUInit(2)

	// Chains wait in vring 1 (disabled), written by the guest before the
	// bulk copy; the device serves them only once logging is on.
	rq.Enable(false)
	var heads []uint16
	for i := range 20 {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		heads = append(heads, rq.Add([][]byte{msg}, []uint32{uint32(len(msg)), 4096}, vqtest.ChainOpts{Indirect: true, Split: uint32(512 * (i%3 + 1))}))
	}
	l := sfe.QEMUStartLogging()
	dfe.Mem.CopyFrom(sfe.Mem)
	if p := l.TakePages(); p != nil {
		t.Fatalf("pages %v logged before anything was served", p)
	}
	rq.Enable(true)
	for _, head := range heads {
		u, err := rq.Wait()
		if err != nil || u.Head != head {
			t.Fatalf("used %+v, %v, want head %d", u, err, head)
		}
	}
	dfe.Mem.CopyPages(sfe.Mem, l.TakePages())
	// More traffic on both vrings between the log syncs.
	for i := range 10 {
		echo(t, hi, strings.Repeat("hiprio ", i+1), vqtest.ChainOpts{Indirect: i%2 == 0})
	}

	// Switch-over.
	bases := sfe.QEMUStop()
	if bases[1] != 21 || bases[0] != 10 {
		t.Fatalf("bases %v", bases)
	}
	dfe.Mem.CopyPages(sfe.Mem, l.TakePages())
	if diff := dfe.Mem.DiffPages(sfe.Mem); diff != nil {
		t.Fatalf("pages %v differ after the last log sync: written by the device but not logged", diff)
	}
	state, err := sfe.SaveState()
	if err != nil {
		t.Fatalf("saving: %v", err)
	}
	if !bytes.Equal(state, srcDev.State()) {
		t.Fatalf("saved %d bytes, want the device's %d", len(state), len(srcDev.State()))
	}

	// The destination.
	dfe.AdoptGuest(sfe)
	dfe.Must(vhostuser.ResetDevice, nil) // QEMU resets the device before it loads
	if err := dfe.LoadState(state); err != nil {
		t.Fatalf("loading: %v", err)
	}
	if !bytes.Equal(dstDev.State(), state) {
		t.Fatal("the destination device did not get the state")
	}
	dfe.QEMUResume(bases)
	echo(t, dfe.Queues[1], "after migration", vqtest.ChainOpts{})
	echo(t, dfe.Queues[0], "hiprio after migration", vqtest.ChainOpts{})
	if b := dfe.Queues[1].GetBase(); b != 22 {
		t.Fatalf("destination base %d, want 22", b)
	}
	if err := src.end(t); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceStateFailures checks that CHECK_DEVICE_STATE reports what went
// wrong, and that the session goes on.
func TestDeviceStateFailures(t *testing.T) {
	dev := newEchoDev(2, nil)
	h := start(t, dev, nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	bases := fe.QEMUStop()

	dev.set(func(d *echoDev) { d.state, d.saveErr = []byte("partial"), errors.New("cannot save") })
	if _, err := fe.SaveState(); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("save with a failing device: %v", err)
	}
	dev.set(func(d *echoDev) { d.saveErr = nil })
	if st, err := fe.SaveState(); err != nil || string(st) != "partial" {
		t.Fatalf("save: %q, %v", st, err)
	}

	dev.set(func(d *echoDev) { d.loadErr = errors.New("cannot load") })
	if err := fe.LoadState([]byte("x")); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("load with a failing device: %v", err)
	}
	dev.set(func(d *echoDev) { d.loadErr, d.loadLen = nil, 4 })
	if err := fe.LoadState([]byte("12345")); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("load with data after the state: %v", err)
	}
	if err := fe.LoadState([]byte("123")); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("load of a truncated state: %v", err)
	}
	if err := fe.LoadState([]byte("1234")); err != nil || string(dev.State()) != "1234" {
		t.Fatalf("load: %v, state %q", err, dev.State())
	}
	if _, err := fe.Do(vhostuser.CheckDeviceState, nil); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("CHECK_DEVICE_STATE without a transfer: %v", err)
	}

	// A transfer while a vring runs is refused; the vring keeps serving.
	for i := range 2 {
		fe.Queues[i].SetupVring(bases[i])
		fe.Queues[i].Enable(true)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	save := vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferSave}.Encode()
	reply, err := fe.Do(vhostuser.SetDeviceStateFD, save, int(w.Fd()))
	if !errors.Is(err, vutest.ErrNack) || len(reply) != 8 || reply[1] != 1 {
		t.Fatalf("SET_DEVICE_STATE_FD with a running vring: %x, %v (want an error and the no-fd bit)", reply, err)
	}
	echo(t, fe.Queues[1], "still serving", vqtest.ChainOpts{})

	// A second transfer while one runs is refused; the first completes.
	fe.QEMUStop()
	dev.set(func(d *echoDev) { d.state = bytes.Repeat([]byte("y"), 1<<20) }) // blocks on the pipe until read
	if _, err := fe.Do(vhostuser.SetDeviceStateFD, save, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	if _, err := fe.Do(vhostuser.SetDeviceStateFD, save, int(w.Fd())); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("a second transfer: %v", err)
	}
	w.Close()
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	select {
	case b := <-done:
		if len(b) != 1<<20 {
			t.Fatalf("read %d bytes of state", len(b))
		}
	case <-time.After(vutest.Timeout):
		t.Fatal("state not written")
	}
	fe.Must(vhostuser.CheckDeviceState, nil)
}

// TestNoDeviceState: a device that cannot transfer its state does not get
// DEVICE_STATE offered, and SET_DEVICE_STATE_FD fails.
func TestNoDeviceState(t *testing.T) {
	dev := newEchoDev(2, nil)
	dev.noState = true
	h := start(t, dev, nil)
	fe := h.fe
	fe.QEMUStart(2, 64, allFeatures)
	if fe.Protocol&vhostuser.ProtocolDeviceState != 0 {
		t.Fatal("DEVICE_STATE offered")
	}
	if _, err := fe.SaveState(); !errors.Is(err, vutest.ErrNack) {
		t.Fatalf("save: %v", err)
	}
}

// TestTransferHoldsRings: vrings started during a transfer are served only
// once it is over: at CHECK_DEVICE_STATE, or at the next message when the
// front-end does not check.
func TestTransferHoldsRings(t *testing.T) {
	dev := newEchoDev(2, nil)
	h := start(t, dev, nil)
	fe := h.fe
	fe.QEMUInit(2)
	load := func() *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		fe.Must(vhostuser.SetDeviceStateFD, vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferLoad}.Encode(), int(r.Fd()))
		r.Close()
		return w
	}
	w := load()
	fe.SetFeatures(allFeatures)
	fe.AddMemRegs(fe.Mem)
	for i := range 2 {
		fe.NewVQ(i, 64).SetupVring(0)
		fe.Queues[i].Enable(true)
	}
	rq := fe.Queues[1]
	head := rq.Add([][]byte{[]byte("early")}, []uint32{5}, vqtest.ChainOpts{})
	time.Sleep(50 * time.Millisecond)
	if _, ok := rq.Driver.PopUsed(); ok {
		t.Fatal("a vring was served during the transfer")
	}
	if ev := dev.Events(); !slices.Equal(ev, []string{"load"}) {
		t.Fatalf("device events %v", ev)
	}
	w.Write([]byte("state"))
	w.Close()
	fe.Must(vhostuser.CheckDeviceState, nil)
	if u, err := rq.Wait(); err != nil || u.Head != head || string(u.Data) != "early" {
		t.Fatalf("after the transfer: %+v, %v", u, err)
	}
	if ev := dev.Events(); !slices.Equal(ev, []string{"start 0", "start 1"}) {
		t.Fatalf("device events %v", ev)
	}

	// Without CHECK_DEVICE_STATE: the next message after the end.
	fe.QEMUStop()
	w = load()
	for i := range 2 {
		fe.Queues[i].SetupVring(fe.Queues[i].Driver.AvailIdx())
		fe.Queues[i].Enable(true)
	}
	dev.Events()
	w.Close()
	// Any message after the transfer's end releases the vrings.
	deadline := time.Now().Add(vutest.Timeout)
	for !slices.Contains(dev.Events(), "start 1") {
		if time.Now().After(deadline) {
			t.Fatal("vrings not served after the transfer ended")
		}
		time.Sleep(time.Millisecond)
		fe.Sync()
	}
	echo(t, rq, "unchecked", vqtest.ChainOpts{})
}
