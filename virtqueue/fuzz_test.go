package virtqueue_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

const (
	fuzzSize    = 16
	fuzzScratch = virtqueue.GuestAddress(0x40000) // indirect tables
	fuzzSlots   = 32
)

// fuzzAddr maps a fuzzed address mostly into the three test regions (and
// the gap after B), keeping raw values when the top bit is set.
func fuzzAddr(raw uint64) virtqueue.GuestAddress {
	if raw>>63 != 0 {
		return virtqueue.GuestAddress(raw << 1)
	}
	switch raw % 3 {
	case 0:
		return virtqueue.GuestAddress(raw % (2 * mib)) // A and B
	case 1:
		return fuzzScratch + virtqueue.GuestAddress(raw%(16*fuzzSlots))
	}
	return regC + virtqueue.GuestAddress(raw%(mib+4096)) // C and past its end
}

func fuzzLen(raw uint32) uint32 {
	if raw>>31 != 0 {
		return raw
	}
	return raw % 0x3000
}

// fuzzDescs decodes 16-byte records into descriptors.
func fuzzDescs(b []byte, n int) []vqtest.Desc {
	out := make([]vqtest.Desc, n)
	for i := range n {
		if len(b) < 16 {
			break
		}
		out[i] = vqtest.Desc{
			Addr:  fuzzAddr(binary.LittleEndian.Uint64(b)),
			Len:   fuzzLen(binary.LittleEndian.Uint32(b[8:])),
			Flags: binary.LittleEndian.Uint16(b[12:]) & 7,
			Next:  binary.LittleEndian.Uint16(b[14:]) % (fuzzSlots + 2),
		}
		b = b[16:]
	}
	return out
}

func seedDesc(addr uint64, n uint32, flags, next uint16) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	return b
}

// FuzzPop feeds arbitrary descriptor tables, indirect tables and heads to
// Pop: it must never panic, every chain it accepts must lie in guest memory
// with consistent lengths, and every head it consumes must reach the used
// ring exactly once. Pushes are dirty-logged into a log covering guest
// memory: no page of an accepted chain may fall outside it.
func FuzzPop(f *testing.F) {
	table := make([]byte, 16*fuzzSize)
	// 0 → 1: readable then writable, in A; 2: indirect table of 2 at the
	// scratch area; 3: loop onto itself.
	copy(table[0:], seedDesc(0x90000*3, 64, virtqueue.DescFNext, 1))
	copy(table[16:], seedDesc(0x90000*3, 64, virtqueue.DescFWrite, 0))
	copy(table[32:], seedDesc(1, 32, virtqueue.DescFIndirect, 0))
	copy(table[48:], seedDesc(0x1000*3, 8, virtqueue.DescFNext, 3))
	scratch := make([]byte, 16*fuzzSlots)
	copy(scratch[0:], seedDesc(0x1000*3, 64, virtqueue.DescFNext, 1))
	copy(scratch[16:], seedDesc(2+0x1000*3, 64, virtqueue.DescFWrite, 0))
	f.Add(append(append(table, scratch...), 0, 2, 3, 0, 17))

	mem := vqtest.NewMemory(f, testLayout...)
	gm := mem.Map(f)
	logSize := (regC + mib) / 4096 / 8
	lf := newLogFile(f, logSize)
	dl, err := virtqueue.MapDirtyLog(lf.fd, uint64(logSize), 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dl.Close() })
	ring := make([]byte, vqtest.RingBytes(fuzzSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem.Write(ringAt, ring)
		drv := vqtest.NewDriver(mem, fuzzSize, ringAt, vqtest.NewAlloc(0x80000, 0x1000))
		q, err := virtqueue.NewQueue(gm, drv.Config())
		if err != nil {
			t.Fatal(err)
		}
		q.SetLog(virtqueue.LogConfig{Log: dl, Buffers: true, Used: true, UsedAddr: drv.Used})
		dropped := dl.Dropped()
		for i, d := range fuzzDescs(data, fuzzSize) {
			drv.WriteDesc(uint16(i), d)
		}
		data = data[min(len(data), 16*fuzzSize):]
		for i, d := range fuzzDescs(data, fuzzSlots) {
			mem.PutDesc(fuzzScratch+virtqueue.GuestAddress(16*i), d)
		}
		data = data[min(len(data), 16*fuzzSlots):]
		consumed := 0
		var c virtqueue.Chain
		for i, h := range data {
			if i >= 3*fuzzSize {
				break
			}
			drv.PublishRaw(uint16(h) % (fuzzSize + 2))
			for {
				err := q.Pop(&c)
				if errors.Is(err, virtqueue.ErrEmpty) || errors.Is(err, virtqueue.ErrBroken) {
					break
				}
				consumed++
				var ce *virtqueue.ChainError
				if errors.As(err, &ce) {
					continue
				}
				if err != nil {
					t.Fatalf("Pop: %v", err)
				}
				check := func(bufs [][]byte, want int) {
					total := 0
					for _, b := range bufs {
						total += len(b)
						if len(b) > 0 {
							_ = b[0] + b[len(b)-1] // must be mapped
						}
					}
					if total != want {
						t.Fatalf("buffers hold %d bytes, length says %d", total, want)
					}
				}
				check(c.Readable(), c.ReadableLen())
				check(c.Writable(), c.WritableLen())
				c.NoteWritten(int(h) << 8)
				if err := q.Push(&c, uint32(c.WritableLen())/2); err != nil {
					t.Fatalf("Push: %v", err)
				}
			}
			if _, err := q.EnableNotify(); errors.Is(err, virtqueue.ErrBroken) {
				break
			}
		}
		if got := int(drv.UsedIdx()); got != consumed {
			t.Fatalf("used index %d after %d chains", got, consumed)
		}
		if n := dl.Dropped() - dropped; n != 0 {
			t.Fatalf("%d pushes logged pages outside guest memory", n)
		}
	})
}
