package fuseproto

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// backingFS is a fakeFS whose opens get handles of their own, with host
// descriptor 1000+fh, and answer with openFlags.
type backingFS struct {
	*fakeFS
	next      atomic.Uint64
	openFlags uint32
	noFile    bool // BackingFile says no
}

func (f *backingFS) Open(ctx *Context, node uint64, in *OpenIn, out *OpenOut) Errno {
	*out = OpenOut{Fh: f.next.Add(1), OpenFlags: f.openFlags}
	return OK
}

func (f *backingFS) BackingFile(fh uint64) (int, bool) { return int(1000 + fh), !f.noFile }

// backingReplier is a recReplier with the passthrough ioctls of a fake
// kernel.
type backingReplier struct {
	recReplier
	k *fakeKernel
}

// fakeKernel hands out backing ids and records the ioctls.
type fakeKernel struct {
	mu     sync.Mutex
	err    error // what BACKING_OPEN answers, if not nil
	opens  []int // descriptors registered
	ids    map[int32]bool
	next   int32
	closes []int32
}

func (r *backingReplier) OpenBacking(fd int) (int32, error) {
	k := r.k
	k.mu.Lock()
	defer k.mu.Unlock()
	k.opens = append(k.opens, fd)
	if k.err != nil {
		return 0, k.err
	}
	k.next++
	k.ids[k.next] = true
	return k.next, nil
}

func (r *backingReplier) CloseBacking(id int32) error {
	k := r.k
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closes = append(k.closes, id)
	if !k.ids[id] {
		return syscall.ENOENT
	}
	delete(k.ids, id)
	return nil
}

// open sends OPEN of node through a replier of k (a plain one if k is nil)
// and returns the reply.
func openThrough(t *testing.T, s *Server, k *fakeKernel, node uint64) OpenOut {
	t.Helper()
	var r *recReplier
	if k != nil {
		br := &backingReplier{k: k}
		s.Handle(msg(OpOpen, node, &OpenIn{Flags: syscall.O_RDWR}), nil, br)
		r = &br.recReplier
	} else {
		r = call(s, msg(OpOpen, node, &OpenIn{Flags: syscall.O_RDWR}))
	}
	if oh := r.header(t); oh.Error != 0 {
		t.Fatalf("OPEN: error %d", oh.Error)
	}
	var out OpenOut
	if !Decode(r.msg[OutHeaderSize:], &out) {
		t.Fatal("OPEN reply too short")
	}
	return out
}

func releaseThrough(t *testing.T, s *Server, k *fakeKernel, node, fh uint64) {
	t.Helper()
	br := &backingReplier{k: k}
	s.Handle(msg(OpRelease, node, &ReleaseIn{Fh: fh}), nil, br)
	if oh := br.header(t); oh.Error != 0 {
		t.Fatalf("RELEASE: error %d", oh.Error)
	}
}

func newBackingSession(t *testing.T, fs *backingFS, enable uint64) *Server {
	t.Helper()
	s := NewServer(fs, Options{Enable: enable})
	r := call(s, msg(OpInit, 0, initIn(45)))
	if oh := r.header(t); oh.Error != 0 {
		t.Fatalf("INIT failed: %d", oh.Error)
	}
	var out InitOut
	copy(unsafeBytes(&out), r.msg[OutHeaderSize:])
	on := (uint64(out.Flags2)<<32)&InitPassthrough != 0
	if on != (enable&InitPassthrough != 0) || (out.MaxStackDepth == 1) != on {
		t.Fatalf("INIT reply: passthrough %v, max_stack_depth %d", on, out.MaxStackDepth)
	}
	return s
}

// TestPassthroughOpens checks the Server's side of FUSE passthrough
// against the kernel's rules: one backing id per node shared by its
// concurrent opens and dropped on the last RELEASE, no passthrough for
// FOPEN_DIRECT_IO or on a node open without it, KEEP_CACHE cleared, and
// a session-wide EPERM ends the attempts.
func TestPassthroughOpens(t *testing.T) {
	t.Run("shared id", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}, openFlags: FopenKeepCache}
		s := newBackingSession(t, fs, InitPassthrough)
		k := &fakeKernel{ids: map[int32]bool{}}
		a := openThrough(t, s, k, 5)
		b := openThrough(t, s, k, 5)
		c := openThrough(t, s, k, 6)
		for _, o := range []OpenOut{a, b, c} {
			if o.OpenFlags != FopenPassthrough || o.BackingID == 0 {
				t.Fatalf("open reply %+v, want FOPEN_PASSTHROUGH alone with an id", o)
			}
		}
		if a.BackingID != b.BackingID || a.BackingID == c.BackingID {
			t.Fatalf("backing ids %d %d (node 5), %d (node 6)", a.BackingID, b.BackingID, c.BackingID)
		}
		if len(k.opens) != 2 || k.opens[0] != int(1000+a.Fh) {
			t.Fatalf("BACKING_OPEN of %v, want of fds %d and %d", k.opens, 1000+a.Fh, 1000+c.Fh)
		}
		releaseThrough(t, s, k, 5, a.Fh)
		if len(k.closes) != 0 {
			t.Fatalf("BACKING_CLOSE %v while node 5 is still open", k.closes)
		}
		releaseThrough(t, s, k, 5, b.Fh)
		releaseThrough(t, s, k, 6, c.Fh)
		releaseThrough(t, s, k, 6, c.Fh) // a second RELEASE of a handle is not counted again
		if len(k.ids) != 0 || len(k.closes) != 2 {
			t.Fatalf("ids left %v, BACKING_CLOSE of %v", k.ids, k.closes)
		}
		// The node's next open registers anew.
		if d := openThrough(t, s, k, 5); d.OpenFlags != FopenPassthrough || len(k.opens) != 3 {
			t.Fatalf("reopen: %+v, %d BACKING_OPENs", d, len(k.opens))
		}
		st := s.PassthroughStats()
		if st.Opened != 3 || st.Closed != 2 || st.Passthrough != 4 || st.Served != 0 || st.Refused {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("not negotiated", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}}
		s := newBackingSession(t, fs, 0)
		k := &fakeKernel{ids: map[int32]bool{}}
		if o := openThrough(t, s, k, 5); o.OpenFlags != 0 || o.BackingID != 0 || len(k.opens) != 0 {
			t.Fatalf("open reply %+v, %d BACKING_OPENs", o, len(k.opens))
		}
	})
	t.Run("virtio transport", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}}
		s := newBackingSession(t, fs, InitPassthrough)
		if o := openThrough(t, s, nil, 5); o.OpenFlags != 0 || o.BackingID != 0 {
			t.Fatalf("open reply %+v through a Replier without backing files", o)
		}
	})
	t.Run("direct io", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}, openFlags: FopenDirectIO}
		s := newBackingSession(t, fs, InitPassthrough)
		k := &fakeKernel{ids: map[int32]bool{}}
		a := openThrough(t, s, k, 5)
		if a.OpenFlags != FopenDirectIO || len(k.opens) != 0 {
			t.Fatalf("open reply %+v, %d BACKING_OPENs", a, len(k.opens))
		}
		// Node 5 is open without passthrough: the kernel would fail a
		// passthrough open of it.
		fs.openFlags = 0
		if b := openThrough(t, s, k, 5); b.OpenFlags != 0 || len(k.opens) != 0 {
			t.Fatalf("second open %+v, %d BACKING_OPENs", b, len(k.opens))
		}
		if c := openThrough(t, s, k, 6); c.OpenFlags != FopenPassthrough {
			t.Fatalf("open of another node %+v", c)
		}
		if st := s.PassthroughStats(); st.Served != 2 || st.Passthrough != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("no backing file", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}, noFile: true}
		s := newBackingSession(t, fs, InitPassthrough)
		k := &fakeKernel{ids: map[int32]bool{}}
		if o := openThrough(t, s, k, 5); o.OpenFlags != 0 || len(k.opens) != 0 {
			t.Fatalf("open reply %+v, %d BACKING_OPENs", o, len(k.opens))
		}
	})
	t.Run("refused", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}}
		s := newBackingSession(t, fs, InitPassthrough)
		k := &fakeKernel{ids: map[int32]bool{}, err: syscall.EPERM}
		for node := uint64(5); node < 8; node++ {
			if o := openThrough(t, s, k, node); o.OpenFlags != 0 || o.BackingID != 0 {
				t.Fatalf("open reply %+v after EPERM", o)
			}
		}
		if len(k.opens) != 1 {
			t.Fatalf("%d BACKING_OPENs, want 1: EPERM holds for the session", len(k.opens))
		}
		if st := s.PassthroughStats(); !st.Refused || st.Opened != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("one file refused", func(t *testing.T) {
		fs := &backingFS{fakeFS: &fakeFS{}}
		s := newBackingSession(t, fs, InitPassthrough)
		k := &fakeKernel{ids: map[int32]bool{}, err: syscall.ELOOP}
		if o := openThrough(t, s, k, 5); o.OpenFlags != 0 {
			t.Fatalf("open reply %+v after ELOOP", o)
		}
		k.err = nil
		if o := openThrough(t, s, k, 6); o.OpenFlags != FopenPassthrough {
			t.Fatalf("open of another file %+v", o)
		}
		if st := s.PassthroughStats(); st.Refused || st.Opened != 1 || st.Served != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}
