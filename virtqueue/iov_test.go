package virtqueue_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// segments cuts data into pieces of the given sizes (cycling), with empty
// pieces in between.
func segments(data []byte, sizes ...int) [][]byte {
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		out = append(out, data[:n:n], nil)
		data = data[n:]
	}
	return out
}

func TestReaderWriter(t *testing.T) {
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var r virtqueue.Reader
	r.Reset(segments(data, 1, 7, 300, 4096))
	if r.Len() != len(data) {
		t.Fatalf("Len %d", r.Len())
	}
	head := make([]byte, 40)
	if n, err := io.ReadFull(&r, head); n != 40 || err != nil || !bytes.Equal(head, data[:40]) {
		t.Fatalf("ReadFull: %d, %v", n, err)
	}
	if n := r.Skip(60); n != 60 || r.Len() != len(data)-100 {
		t.Fatalf("Skip: %d, Len %d", n, r.Len())
	}
	rest, err := io.ReadAll(&r)
	if err != nil || !bytes.Equal(rest, data[100:]) {
		t.Fatalf("ReadAll: %d bytes, %v", len(rest), err)
	}

	out := make([]byte, 5000)
	var w virtqueue.Writer
	w.Reset(segments(out, 3, 1000, 16))
	w.Skip(16)
	w.Limit(100)
	if n, err := w.Write(data[:150]); n != 100 || err != io.ErrShortWrite {
		t.Fatalf("Write past the limit: %d, %v", n, err)
	}
	if w.Written() != 116 || w.Room() != 0 {
		t.Fatalf("Written %d Room %d", w.Written(), w.Room())
	}
	if !bytes.Equal(out[16:116], data[:100]) || out[116] != 0 {
		t.Fatal("written bytes misplaced")
	}
}

func TestFileIOManySegments(t *testing.T) {
	// More segments than IOV_MAX: the syscalls go in several rounds.
	data := make([]byte, 3000*3)
	for i := range data {
		data[i] = byte(i % 251)
	}
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r virtqueue.Reader
	r.Reset(segments(data, 3))
	if n, errno := r.WriteToFD(int(f.Fd()), 100); n != len(data) || errno != 0 {
		t.Fatalf("WriteToFD: %d, %v", n, errno)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got[100:], data) {
		t.Fatal("file content differs")
	}

	back := make([]byte, len(data)+50)
	var w virtqueue.Writer
	w.Reset(segments(back, 2, 5))
	w.Skip(10)
	n, errno := w.ReadFromFD(int(f.Fd()), 100, len(data)+1000)
	if n != len(data) || errno != 0 {
		t.Fatalf("ReadFromFD to EOF: %d, %v", n, errno)
	}
	if !bytes.Equal(back[10:10+len(data)], data) {
		t.Fatal("read-back differs")
	}
	// Errors come back as errnos.
	w.Reset(segments(back, 100))
	if _, errno := w.ReadFromFD(-1, 0, 10); errno == 0 {
		t.Fatal("ReadFromFD on a bad fd succeeded")
	}
}

func TestConcurrentPushers(t *testing.T) {
	f := newFixture(t, 256, true)
	const chains = 2000
	work := make(chan *virtqueue.Chain, 64)
	var workers sync.WaitGroup
	for range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for c := range work {
				var r virtqueue.Reader
				r.Reset(c.Readable())
				buf := make([]byte, r.Len())
				r.Read(buf)
				var w virtqueue.Writer
				w.Reset(c.Writable())
				w.Write(buf)
				f.q.Push(c, uint32(len(buf)))
			}
		}()
	}
	stop := make(chan struct{})
	popped := make(chan struct{})
	go func() { // the queue goroutine
		defer close(popped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := new(virtqueue.Chain)
			if err := f.q.Pop(c); err != nil {
				time.Sleep(20 * time.Microsecond)
				continue
			}
			work <- c
		}
	}()
	collected := make(chan error)
	go func() { // the driver's interrupt handler
		for seen := 0; seen < chains; seen++ {
			u, err := f.drv.WaitUsed(10 * time.Second)
			if err != nil {
				collected <- err
				return
			}
			if len(u.Data) != 8 || u.Data[1] != 1 || u.Data[7] != 7 {
				collected <- fmt.Errorf("used element %d: data %v", u.Head, u.Data)
				return
			}
		}
		collected <- nil
	}()
	for sent := 0; sent < chains; {
		if f.drv.InFlight() >= 200 {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		msg := []byte{byte(sent), 1, 2, 3, 4, 5, 6, 7}
		_, err := f.drv.AddChain([][]byte{msg}, []uint32{8}, vqtest.ChainOpts{Indirect: sent%2 == 0})
		if errors.Is(err, vqtest.ErrFull) {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		if err != nil {
			t.Error(err)
			break
		}
		sent++
	}
	if err := <-collected; err != nil {
		t.Error(err)
	}
	close(stop)
	<-popped
	close(work)
	workers.Wait()
	if t.Failed() {
		return
	}
	if pushed, _ := f.q.Stats(); pushed != chains {
		t.Fatalf("pushed %d", pushed)
	}
}

func TestPopPushAllocs(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		f := newFixture(t, 64, eventIdx)
		f.q.SetCall(eventfd(t))
		// One hand-made chain, published again and again.
		f.mem.Write(0x90000, []byte("request"))
		f.drv.WriteDesc(0, vqtest.Desc{Addr: 0x90000, Len: 7, Flags: virtqueue.DescFNext, Next: 1})
		f.drv.WriteDesc(1, vqtest.Desc{Addr: 0xa0000, Len: 64, Flags: virtqueue.DescFWrite})
		var c virtqueue.Chain
		var w virtqueue.Writer
		var r virtqueue.Reader
		buf := make([]byte, 16)
		step := func() {
			f.drv.PublishRaw(0)
			if err := f.q.Pop(&c); err != nil {
				t.Fatal(err)
			}
			r.Reset(c.Readable())
			r.Read(buf)
			w.Reset(c.Writable())
			w.Write(buf[:7])
			f.q.Push(&c, 7)
			f.q.EnableNotify()
		}
		step() // warm up the slices
		if n := testing.AllocsPerRun(100, step); n != 0 {
			t.Fatalf("event idx %v: %v allocations per Pop+Push", eventIdx, n)
		}
	}
}
