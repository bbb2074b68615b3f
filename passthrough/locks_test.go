package passthrough

import (
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

func lkIn(fh, owner uint64, typ uint32, start, end uint64) *fuseproto.LkIn {
	return &fuseproto.LkIn{Fh: fh, Owner: owner, Lk: fuseproto.FileLock{Type: typ, Start: start, End: end, PID: 1}}
}

// TestPosixLocks checks that two lock owners on one open file conflict (OFD
// locks per owner), GETLK, unlock, and that Flush drops an owner's locks.
func TestPosixLocks(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_RDWR)
	defer release(t, fs, node, fh)
	const a, b = 100, 200

	if errno := fs.Setlk(rootCtx, node, lkIn(fh, a, unix.F_WRLCK, 0, 9), false); errno != 0 {
		t.Fatalf("owner a WRLCK: %v", errno)
	}
	// Same owner may relock/extend; another conflicts.
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, a, unix.F_WRLCK, 5, 19), false); errno != 0 {
		t.Errorf("owner a relock: %v", errno)
	}
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, b, unix.F_RDLCK, 15, 15), false); errno != unix.EAGAIN {
		t.Errorf("owner b conflicting RDLCK: %v, want EAGAIN", errno)
	}
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, b, unix.F_WRLCK, 20, offsetMax), false); errno != 0 {
		t.Errorf("owner b disjoint WRLCK: %v", errno)
	}
	var out fuseproto.LkOut
	if errno := fs.Getlk(rootCtx, node, lkIn(fh, b, unix.F_WRLCK, 0, offsetMax), &out); errno != 0 {
		t.Fatal(errno)
	}
	if out.Lk.Type != unix.F_WRLCK || out.Lk.Start != 0 || out.Lk.End != 19 {
		t.Errorf("GETLK for b: %+v, want WRLCK 0-19", out.Lk)
	}
	if errno := fs.Getlk(rootCtx, node, lkIn(fh, a, unix.F_WRLCK, 0, 10), &out); errno != 0 || out.Lk.Type != unix.F_UNLCK {
		t.Errorf("GETLK for a over its own lock: %+v, %v", out.Lk, errno)
	}
	if errno := fs.Getlk(rootCtx, node, lkIn(fh, a, unix.F_RDLCK, 25, 30), &out); errno != 0 || out.Lk.Type != unix.F_WRLCK || out.Lk.Start != 20 || out.Lk.End != offsetMax {
		t.Errorf("GETLK for a over b's: %+v, %v", out.Lk, errno)
	}
	// a unlocks part of its range; b can now take it.
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, a, unix.F_UNLCK, 10, 19), false); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, b, unix.F_RDLCK, 15, 15), false); errno != 0 {
		t.Errorf("owner b after partial unlock: %v", errno)
	}
	// A host process sees the locks too.
	hostFd, err := unix.Open(dir+"/f", unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hostFd)
	hl := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: 0, Len: 1}
	if err := unix.FcntlFlock(uintptr(hostFd), unix.F_OFD_SETLK, &hl); err != unix.EAGAIN {
		t.Errorf("host lock over a's: %v, want EAGAIN", err)
	}
	// Flush with a's lock owner releases a's locks only.
	if errno := fs.Flush(rootCtx, node, &fuseproto.FlushIn{Fh: fh, LockOwner: a}); errno != 0 {
		t.Fatal(errno)
	}
	if err := unix.FcntlFlock(uintptr(hostFd), unix.F_OFD_SETLK, &hl); err != nil {
		t.Errorf("host lock after a's flush: %v", err)
	}
	hl.Start = 20
	if err := unix.FcntlFlock(uintptr(hostFd), unix.F_OFD_SETLK, &hl); err != unix.EAGAIN {
		t.Errorf("b's lock gone after a's flush: %v", err)
	}
	// Release with b's lock owner drops b's.
	if errno := fs.Release(rootCtx, node, &fuseproto.ReleaseIn{Fh: mustOpen(t, fs, node, unix.O_RDONLY), LockOwner: b}); errno != 0 {
		t.Fatal(errno)
	}
	if err := unix.FcntlFlock(uintptr(hostFd), unix.F_OFD_SETLK, &hl); err != nil {
		t.Errorf("host lock after b's release: %v", err)
	}
	// Bad ranges and types.
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, a, unix.F_WRLCK, 10, 5), false); errno != unix.EINVAL {
		t.Errorf("end before start: %v", errno)
	}
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, a, 7, 0, 5), false); errno != unix.EINVAL {
		t.Errorf("bad type: %v", errno)
	}
	// Unlocking an owner that never locked is a no-op.
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, 999, unix.F_UNLCK, 0, offsetMax), false); errno != 0 {
		t.Errorf("unlock unknown owner: %v", errno)
	}
}

// TestSetlkw checks a waiting lock: granted when the holder unlocks, and
// cancelled with EINTR when the request is interrupted.
func TestSetlkw(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, node, unix.O_RDWR) // closed by Destroy below
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, 1, unix.F_WRLCK, 0, offsetMax), false); errno != 0 {
		t.Fatal(errno)
	}

	// Interrupted.
	intr := make(chan struct{})
	done := make(chan fuseproto.Errno)
	go func() {
		done <- fs.Setlk(&fuseproto.Context{Interrupted: intr}, node, lkIn(fh, 2, unix.F_WRLCK, 0, 0), true)
	}()
	select {
	case errno := <-done:
		t.Fatalf("SETLKW returned %v while the lock is held", errno)
	case <-time.After(100 * time.Millisecond):
	}
	close(intr)
	select {
	case errno := <-done:
		if errno != unix.EINTR {
			t.Errorf("interrupted SETLKW: %v, want EINTR", errno)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SETLKW not cancelled by Interrupted")
	}

	// Granted once the holder unlocks.
	go func() {
		done <- fs.Setlk(&fuseproto.Context{Interrupted: make(chan struct{})}, node, lkIn(fh, 2, unix.F_RDLCK, 0, 0), true)
	}()
	time.Sleep(20 * time.Millisecond)
	if errno := fs.Setlk(rootCtx, node, lkIn(fh, 1, unix.F_UNLCK, 0, offsetMax), false); errno != 0 {
		t.Fatal(errno)
	}
	select {
	case errno := <-done:
		if errno != 0 {
			t.Errorf("SETLKW after unlock: %v", errno)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SETLKW not granted after unlock")
	}

	// Destroy ends a wait that has no Interrupted channel.
	go func() {
		done <- fs.Setlk(rootCtx, node, lkIn(fh, 3, unix.F_WRLCK, 0, 0), true)
	}()
	time.Sleep(20 * time.Millisecond)
	fs.Destroy()
	select {
	case errno := <-done:
		if errno != unix.EINTR {
			t.Errorf("SETLKW at Destroy: %v, want EINTR", errno)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SETLKW not ended by Destroy")
	}
}

// TestFlock checks flock locks per open file, waiting and ReleaseFlockUnlock.
func TestFlock(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh1 := mustOpen(t, fs, node, unix.O_RDONLY)
	fh2 := mustOpen(t, fs, node, unix.O_RDONLY)
	defer release(t, fs, node, fh2)
	fl := func(fh uint64, typ uint32) *fuseproto.LkIn {
		in := lkIn(fh, fh, typ, 0, offsetMax)
		in.LkFlags = fuseproto.LkFlock
		return in
	}
	if errno := fs.Setlk(rootCtx, node, fl(fh1, unix.F_WRLCK), false); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fs.Setlk(rootCtx, node, fl(fh2, unix.F_RDLCK), false); errno != unix.EAGAIN {
		t.Errorf("flock SH over EX: %v, want EAGAIN", errno)
	}
	done := make(chan fuseproto.Errno)
	go func() {
		done <- fs.Setlk(&fuseproto.Context{Interrupted: make(chan struct{})}, node, fl(fh2, unix.F_WRLCK), true)
	}()
	time.Sleep(20 * time.Millisecond)
	// Release with ReleaseFlockUnlock drops fh1's lock and wakes fh2.
	if errno := fs.Release(rootCtx, node, &fuseproto.ReleaseIn{Fh: fh1, ReleaseFlags: fuseproto.ReleaseFlockUnlock, LockOwner: fh1}); errno != 0 {
		t.Fatal(errno)
	}
	select {
	case errno := <-done:
		if errno != 0 {
			t.Errorf("waiting flock: %v", errno)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting flock not granted")
	}
	hostFd, err := unix.Open(dir+"/f", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hostFd)
	if err := unix.Flock(hostFd, unix.LOCK_SH|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Errorf("host flock over fh2's: %v", err)
	}
	if errno := fs.Setlk(rootCtx, node, fl(fh2, unix.F_UNLCK), false); errno != 0 {
		t.Fatal(errno)
	}
	if err := unix.Flock(hostFd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Errorf("host flock after unlock: %v", err)
	}
}

// TestGetlkReportsHolderPID checks that a conflicting lock found by GETLK
// names the guest pid of the owner that took it (OFD locks have none on the
// host).
func TestGetlkReportsHolderPID(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh := mustOpen(t, fs, f, unix.O_RDWR)
	holder := fuseproto.LkIn{Fh: fh, Owner: 1, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, Start: 0, End: 9, PID: 4242}}
	if errno := fs.Setlk(rootCtx, f, &holder, false); errno != 0 {
		t.Fatal(errno)
	}
	var out fuseproto.LkOut
	ask := fuseproto.LkIn{Fh: fh, Owner: 2, Lk: fuseproto.FileLock{Type: unix.F_RDLCK, Start: 5, End: offsetMax, PID: 77}}
	if errno := fs.Getlk(rootCtx, f, &ask, &out); errno != 0 {
		t.Fatal(errno)
	}
	if out.Lk.Type != unix.F_WRLCK || out.Lk.Start != 0 || out.Lk.End != 9 || out.Lk.PID != 4242 {
		t.Fatalf("GETLK = %+v, want the write lock 0-9 of pid 4242", out.Lk)
	}
}

// TestReleaseDropsLocksTakenThroughHandle checks that locks whose owner is
// the open file itself (OFD locks in the guest: no FLUSH names that owner)
// go away when the handle is released.
func TestReleaseDropsLocksTakenThroughHandle(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "data")
	f := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	fh1 := mustOpen(t, fs, f, unix.O_RDWR)
	fh2 := mustOpen(t, fs, f, unix.O_RDWR)
	lock := func(fh, owner uint64) fuseproto.Errno {
		in := fuseproto.LkIn{Fh: fh, Owner: owner, Lk: fuseproto.FileLock{Type: unix.F_WRLCK, End: offsetMax, PID: 1}}
		return fs.Setlk(rootCtx, f, &in, false)
	}
	if errno := lock(fh2, 0xf2); errno != 0 {
		t.Fatal(errno)
	}
	if errno := lock(fh1, 0xf1); errno != unix.EAGAIN {
		t.Fatalf("conflicting lock: %v, want EAGAIN", errno)
	}
	// close(2) of the second file: FLUSH names the process, not the file.
	if errno := fs.Flush(rootCtx, f, &fuseproto.FlushIn{Fh: fh2, LockOwner: 0x99}); errno != 0 {
		t.Fatal(errno)
	}
	if errno := fs.Release(rootCtx, f, &fuseproto.ReleaseIn{Fh: fh2}); errno != 0 {
		t.Fatal(errno)
	}
	if errno := lock(fh1, 0xf1); errno != 0 {
		t.Fatalf("lock after the holder's file was released: %v", errno)
	}
}
