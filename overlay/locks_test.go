package overlay

import (
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestLocksAcrossCopyUp takes locks through a handle on the lower file and
// then through one on its copy-up: they are locks on one union inode and
// conflict, as locks on a kernel overlayfs inode do.
func TestLocksAcrossCopyUp(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.L(1, "f"), "data")
	u.mount()
	n := u.node("f")
	ro := u.mustOpen(n, unix.O_RDONLY)
	lk := func(fh, owner uint64, typ uint32, flock bool) fuseproto.Errno {
		in := &fuseproto.LkIn{Fh: fh, Owner: owner, Lk: fuseproto.FileLock{Type: typ, End: 1<<63 - 1, PID: uint32(owner)}}
		if flock {
			in.LkFlags = fuseproto.LkFlock
		}
		return u.fs.Setlk(rootCtx, n, in, false)
	}
	if e := lk(ro, 1, unix.F_RDLCK, false); e != 0 {
		t.Fatalf("read lock through the lower handle: %v", e)
	}
	if e := lk(ro, 3, unix.F_RDLCK, true); e != 0 {
		t.Fatalf("flock through the lower handle: %v", e)
	}
	rw := u.mustOpen(n, unix.O_RDWR) // copies f up
	if _, ok := hostStat(t, u.U("f")); !ok {
		t.Fatal("not copied up")
	}
	if e := lk(rw, 2, unix.F_WRLCK, false); e != unix.EAGAIN {
		t.Errorf("write lock through the upper handle over a read lock taken on the lower: %v, want EAGAIN", e)
	}
	var out fuseproto.LkOut
	if e := u.fs.Getlk(rootCtx, n, &fuseproto.LkIn{Fh: rw, Owner: 2, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: 1<<63 - 1}}, &out); e != 0 || out.Lk.Type != unix.F_RDLCK || out.Lk.PID != 1 {
		t.Errorf("Getlk: %+v, %v, want the read lock of pid 1", out.Lk, e)
	}
	if e := lk(rw, 4, unix.F_WRLCK, true); e != unix.EAGAIN {
		t.Errorf("exclusive flock through the upper handle over a shared one on the lower: %v, want EAGAIN", e)
	}
	if e := u.fs.Release(rootCtx, n, &fuseproto.ReleaseIn{Fh: ro, LockOwner: 1}); e != 0 {
		t.Fatal(e)
	}
	if e := lk(rw, 2, unix.F_WRLCK, false); e != 0 {
		t.Errorf("write lock after the reader's release: %v", e)
	}
	if e := lk(rw, 4, unix.F_WRLCK, true); e != 0 {
		t.Errorf("exclusive flock after the release: %v", e)
	}
	u.release(n, rw)
}
