package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

// FuzzReadHello checks ReadHello against a plain description of what it
// does: it finds the first Magic in the input if it starts within skipMax
// bytes and a whole Hello follows, whatever sizes the reads come in, and
// otherwise fails with ErrNotStream or an EOF.
func FuzzReadHello(f *testing.F) {
	ok, _ := Hello{Version: Version, FuseMajor: 7, FuseMinor: 45}.MarshalBinary()
	f.Add(ok, uint16(0))
	f.Add(append([]byte("junk"), ok...), uint16(4))
	f.Add(append([]byte("junk"), ok...), uint16(3))
	f.Add(append([]byte("GVFGVFSTRM"), ok...), uint16(100))
	f.Add(append([]byte("GVFSTRM\x01"), ok...), uint16(8))
	f.Add(ok[:20], uint16(0))
	f.Add([]byte("SSH-2.0-OpenSSH_9.2\r\n"), uint16(1000))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, skipMax uint16) {
		skip := int(skipMax)
		h, err := ReadHello(bytes.NewReader(data), skip)
		h1, err1 := ReadHello(iotest.OneByteReader(bytes.NewReader(data)), skip)
		h2, err2 := ReadHello(iotest.DataErrReader(bytes.NewReader(data)), skip)
		if (err == nil) != (err1 == nil) || (err == nil) != (err2 == nil) || h != h1 || h != h2 {
			t.Fatalf("results depend on the read sizes: %v %v / %v %v / %v %v", h, err, h1, err1, h2, err2)
		}
		i := bytes.Index(data, []byte(Magic))
		found := i >= 0 && i <= skip && i+HelloSize <= len(data)
		if found != (err == nil) {
			t.Fatalf("Magic at %d of %d bytes, skipMax %d: ReadHello = %v, %v", i, len(data), skip, h, err)
		}
		if found {
			var want Hello
			if err := want.UnmarshalBinary(data[i : i+HelloSize]); err != nil || h != want {
				t.Fatalf("ReadHello = %+v, want %+v (%v)", h, want, err)
			}
			return
		}
		if !errors.Is(err, ErrNotStream) && err != io.EOF && err != io.ErrUnexpectedEOF {
			t.Fatalf("ReadHello failed with %v, want ErrNotStream or an EOF", err)
		}
	})
}

// wantFrames is what the relay should pass to the kernel from a stream
// holding data, and whether it should then find the stream malformed
// (rather than closed): whole messages of 16 to max bytes, each starting
// with its length, until one is impossible or the data ends.
func wantFrames(data []byte, max int) (msgs [][]byte, malformed bool) {
	for {
		if len(data) < 16 {
			return msgs, false
		}
		n := int(binary.LittleEndian.Uint32(data))
		if n < 16 || n > max {
			return msgs, true
		}
		if n > len(data) {
			return msgs, false
		}
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
}

// frame runs the relay's stream→kernel direction on a stream holding
// data, with a SOCK_SEQPACKET socket pair standing for /dev/fuse (one
// write, one message), a message limit of max and a read buffer of bufSize
// bytes (at least max), and returns the messages the kernel would have
// been given and how the direction ended. With count, the messages are
// only counted (nmsgs), not kept, and mallocs is the number of heap
// allocations of the whole process while the direction ran.
func frame(t testing.TB, data []byte, max, bufSize int, count bool) (msgs [][]byte, nmsgs int, mallocs uint64, err error) {
	t.Helper()
	st, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dv[1])
	r, err := newRelay(dv[0], st[0], RelayOptions{NoSplice: true})
	if err != nil {
		t.Fatal(err)
	}
	r.max = max
	r.sbuf = make([]byte, bufSize)

	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for b := data; len(b) > 0; {
			n, err := unix.Write(st[1], b)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				break // the relay stopped reading
			}
			b = b[n:]
		}
		unix.Close(st[1])
	}()
	got := make(chan struct{})
	buf := make([]byte, max+1)
	go func() {
		defer close(got)
		for {
			n, err := unix.Read(dv[1], buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				break
			}
			nmsgs++
			if !count {
				msgs = append(msgs, bytes.Clone(buf[:n]))
			}
		}
	}()

	var before, after runtime.MemStats
	if count {
		runtime.ReadMemStats(&before)
	}
	err = r.streamToKernel()
	if count {
		runtime.ReadMemStats(&after)
		mallocs = after.Mallocs - before.Mallocs
	}
	r.close()
	unix.Close(st[0]) // unblocks the writer if the relay stopped early
	unix.Close(dv[0]) // ends the reader
	<-wrote
	<-got
	return msgs, nmsgs, mallocs, err
}

// checkFrames compares what frame did with wantFrames.
func checkFrames(t *testing.T, data []byte, max int, msgs [][]byte, err error) {
	t.Helper()
	want, malformed := wantFrames(data, max)
	if len(msgs) != len(want) {
		t.Fatalf("%d messages passed on, want %d", len(msgs), len(want))
	}
	for i := range want {
		if !bytes.Equal(msgs[i], want[i]) {
			t.Fatalf("message %d is %x, want %x", i, msgs[i], want[i])
		}
	}
	switch {
	case malformed && !errors.Is(err, ErrMalformed):
		t.Fatalf("ended with %v, want ErrMalformed", err)
	case !malformed && !errors.Is(err, ErrStreamClosed):
		t.Fatalf("ended with %v, want ErrStreamClosed", err)
	}
}

// outMsg builds a message of n bytes: a fuse_out_header and a filler.
func outMsg(n int, unique uint64, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	binary.LittleEndian.PutUint32(b, uint32(n))
	binary.LittleEndian.PutUint32(b[4:], 0)
	if n >= 16 {
		binary.LittleEndian.PutUint64(b[8:], unique)
	}
	return b
}

func joinMsgs(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FuzzReplyFraming feeds arbitrary bytes to the relay's stream→kernel
// direction, with small buffers so that messages straddle reads and the
// buffer is compacted, and checks that exactly the whole well-formed
// messages reach the kernel, each in one write, before it stops.
func FuzzReplyFraming(f *testing.F) {
	f.Add(joinMsgs(outMsg(16, 2, 0), outMsg(100, 4, 1), outMsg(16, 0, 2)), uint16(200), uint8(0))
	f.Add(joinMsgs(outMsg(60, 2, 0), outMsg(60, 4, 1), outMsg(60, 6, 2)), uint16(60), uint8(7))
	f.Add(joinMsgs(outMsg(16, 2, 0), outMsg(17, 4, 1)[:10]), uint16(100), uint8(1))
	f.Add(joinMsgs(outMsg(16, 2, 0), []byte{3, 0, 0, 0}, make([]byte, 12)), uint16(100), uint8(0))
	f.Add(joinMsgs(outMsg(16, 2, 0), outMsg(101, 4, 1)), uint16(100), uint8(3))
	f.Add(joinMsgs(outMsg(16, DestroyUnique, 0), outMsg(16, 2, 0)), uint16(16), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint16, extra uint8) {
		m := 16 + int(max)%4096
		msgs, _, _, err := frame(t, data, m, m+int(extra)%64, false)
		checkFrames(t, data, m, msgs, err)
	})
}
