package posixtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockTimeout bounds how long a lock that should be granted may take.
const lockTimeout = 10 * time.Second

// blockedFor is how long a blocking lock must stay blocked to count as
// waiting.
const blockedFor = 300 * time.Millisecond

// testFlock checks flock(2) between two open file descriptions of one file:
// LOCK_EX|LOCK_NB conflicts give EWOULDBLOCK, shared locks coexist, a dup'd
// descriptor shares its description's lock, and close releases it.
func testFlock(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, []byte("lock me"), 0o644)
	f1 := openFile(t, p, os.O_RDWR, 0)
	f2 := openFile(t, p, os.O_RDWR, 0)
	fd1, fd2 := fdOf(f1), fdOf(f2)

	check(t, unix.Flock(fd1, unix.LOCK_EX|unix.LOCK_NB), "LOCK_EX on the first description")
	wantErrno(t, unix.Flock(fd2, unix.LOCK_EX|unix.LOCK_NB), "LOCK_EX|LOCK_NB against an exclusive lock", unix.EWOULDBLOCK)
	wantErrno(t, unix.Flock(fd2, unix.LOCK_SH|unix.LOCK_NB), "LOCK_SH|LOCK_NB against an exclusive lock", unix.EWOULDBLOCK)

	// A dup shares the open file description and so the lock: converting
	// through it does not conflict.
	dup, err := unix.Dup(fd1)
	check(t, err, "dup")
	check(t, unix.Flock(dup, unix.LOCK_SH|unix.LOCK_NB), "LOCK_SH through a dup of the holder")
	check(t, unix.Flock(fd2, unix.LOCK_SH|unix.LOCK_NB), "second shared lock")
	wantErrno(t, unix.Flock(fd1, unix.LOCK_EX|unix.LOCK_NB), "upgrade to LOCK_EX while another shared lock exists", unix.EWOULDBLOCK)
	check(t, unix.Flock(dup, unix.LOCK_UN), "LOCK_UN through the dup")
	check(t, unix.Flock(fd2, unix.LOCK_EX|unix.LOCK_NB), "upgrade of the only shared lock to LOCK_EX")
	wantErrno(t, unix.Flock(fd1, unix.LOCK_SH|unix.LOCK_NB), "LOCK_SH against the upgraded lock", unix.EWOULDBLOCK)
	check(t, unix.Close(dup), "close dup")

	// Closing the last descriptor of a description releases its lock.
	check(t, f2.Close(), "close the holder")
	afterClose(t, "LOCK_EX after the holder closed", func() error { return unix.Flock(fd1, unix.LOCK_EX|unix.LOCK_NB) })

	// A third description, and a separate file, are independent.
	f3 := openFile(t, p, os.O_RDONLY, 0)
	wantErrno(t, unix.Flock(fdOf(f3), unix.LOCK_SH|unix.LOCK_NB), "LOCK_SH from a read-only description", unix.EWOULDBLOCK)
	q := filepath.Join(dir, "other")
	writeFile(t, q, nil, 0o644)
	g := openFile(t, q, os.O_RDWR, 0)
	check(t, unix.Flock(fdOf(g), unix.LOCK_EX|unix.LOCK_NB), "LOCK_EX on another file")
	check(t, f1.Close(), "close")
	check(t, f3.Close(), "close")
	check(t, g.Close(), "close")
	remove(t, p)
	remove(t, q)
}

// testFlockBlocking checks that a blocking LOCK_EX waits for the holder's
// LOCK_UN and is then granted.
func testFlockBlocking(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, nil, 0o644)
	f1 := openFile(t, p, os.O_RDWR, 0)
	f2 := openFile(t, p, os.O_RDWR, 0)
	check(t, unix.Flock(fdOf(f1), unix.LOCK_EX), "LOCK_EX")
	fd2 := fdOf(f2)
	done := make(chan error, 1)
	go func() { done <- unix.Flock(fd2, unix.LOCK_EX) }()
	if err, ok := waitDone(done, blockedFor); ok {
		t.Fatalf("blocking LOCK_EX against a held lock returned at once: %v", err)
	}
	check(t, unix.Flock(fdOf(f1), unix.LOCK_UN), "LOCK_UN")
	err, ok := waitDone(done, lockTimeout)
	if !ok {
		f1.Close()
		f2.Close()
		<-done
		t.Fatalf("blocking LOCK_EX not granted %v after the holder unlocked", lockTimeout)
	}
	check(t, err, "blocking LOCK_EX")
	wantErrno(t, unix.Flock(fdOf(f1), unix.LOCK_EX|unix.LOCK_NB), "LOCK_EX|LOCK_NB after the waiter got the lock", unix.EWOULDBLOCK)
	check(t, f1.Close(), "close")
	check(t, f2.Close(), "close")
	remove(t, p)
}

// afterClose runs try, a lock attempt that the release of a lock by
// close(2) should have made possible, until it succeeds or five seconds
// have passed. On a local filesystem it succeeds at once; FUSE sends the
// RELEASE of a closed file asynchronously, so there the lock may go a
// moment after close returns. It fails t if the lock never becomes free.
func afterClose(t *testing.T, what string, try func() error) {
	t.Helper()
	start := time.Now()
	for tries := 1; ; tries++ {
		err := try()
		if err == nil {
			if tries > 1 {
				t.Logf("%s: granted after %v", what, time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s: %v (still, five seconds after the close)", what, err)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func setlk(fd int, cmd int, typ int16, start, length int64) error {
	fl := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	return unix.FcntlFlock(uintptr(fd), cmd, &fl)
}

func getlk(t *testing.T, fd int, cmd int, typ int16, start, length int64) unix.Flock_t {
	t.Helper()
	fl := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	check(t, unix.FcntlFlock(uintptr(fd), cmd, &fl), "F_GETLK")
	return fl
}

// testPosixLockCrossProcess checks fcntl record locks between this process
// and a helper process: conflicts give EAGAIN (or EACCES), F_GETLK reports
// the holder's range and pid in both directions, a process never sees its
// own locks with F_GETLK, non-overlapping ranges and shared locks coexist.
func testPosixLockCrossProcess(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, make([]byte, 400), 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	fd := fdOf(f)

	h, pid := startLocker(t, p, lockSpec{Cmd: unix.F_SETLK, Type: unix.F_WRLCK, Start: 0, Len: 100})
	wantErrno(t, setlk(fd, unix.F_SETLK, unix.F_WRLCK, 0, 100), "F_SETLK F_WRLCK over the helper's write lock", unix.EAGAIN, unix.EACCES)
	wantErrno(t, setlk(fd, unix.F_SETLK, unix.F_RDLCK, 50, 10), "F_SETLK F_RDLCK inside the helper's write lock", unix.EAGAIN, unix.EACCES)
	wantErrno(t, setlk(fd, unix.F_SETLK, unix.F_WRLCK, 99, 0), "F_SETLK to end of file overlapping the helper's lock", unix.EAGAIN, unix.EACCES)
	check(t, setlk(fd, unix.F_SETLK, unix.F_WRLCK, 100, 100), "F_SETLK of the adjacent range")

	fl := getlk(t, fd, unix.F_GETLK, unix.F_WRLCK, 0, 10)
	if fl.Type != unix.F_WRLCK || fl.Start != 0 || fl.Len != 100 || fl.Pid != int32(pid) || fl.Whence != 0 {
		t.Errorf("F_GETLK over the helper's lock: type %d start %d len %d pid %d whence %d; want F_WRLCK 0 100 %d SEEK_SET",
			fl.Type, fl.Start, fl.Len, fl.Pid, fl.Whence, pid)
	}
	fl = getlk(t, fd, unix.F_GETLK, unix.F_RDLCK, 90, 0)
	if fl.Type != unix.F_WRLCK || fl.Pid != int32(pid) {
		t.Errorf("F_GETLK F_RDLCK from 90 to end of file: type %d pid %d, want F_WRLCK by %d", fl.Type, fl.Pid, pid)
	}
	// Our own lock is not a conflict for us.
	if fl := getlk(t, fd, unix.F_GETLK, unix.F_WRLCK, 150, 10); fl.Type != unix.F_UNLCK {
		t.Errorf("F_GETLK over our own lock: type %d pid %d, want F_UNLCK", fl.Type, fl.Pid)
	}
	if fl := getlk(t, fd, unix.F_GETLK, unix.F_WRLCK, 300, 50); fl.Type != unix.F_UNLCK {
		t.Errorf("F_GETLK over an unlocked range: type %d pid %d, want F_UNLCK", fl.Type, fl.Pid)
	}

	// The other direction: a second helper sees our lock and our pid.
	res := runOps(t, -1, -1,
		helperOp{Op: "getlk", Path: p, Lock: lockSpec{Cmd: unix.F_GETLK, Type: unix.F_RDLCK, Start: 120, Len: 1}},
		helperOp{Op: "setlk", Path: p, Lock: lockSpec{Cmd: unix.F_SETLK, Type: unix.F_RDLCK, Start: 150, Len: 10}},
		helperOp{Op: "setlk", Path: p, Lock: lockSpec{Cmd: unix.F_SETLK, Type: unix.F_WRLCK, Start: 200, Len: 100}},
	)
	if r := res[0]; r.Errno != 0 || r.Lock.Type != unix.F_WRLCK || r.Lock.Pid != int32(os.Getpid()) || r.Lock.Start != 100 || r.Lock.Len != 100 {
		t.Errorf("helper's F_GETLK over our lock: errno %d type %d start %d len %d pid %d; want F_WRLCK 100 100 %d",
			r.Errno, r.Lock.Type, r.Lock.Start, r.Lock.Len, r.Lock.Pid, os.Getpid())
	}
	wantErrno(t, res[1].err(), "helper's F_SETLK F_RDLCK over our write lock", unix.EAGAIN, unix.EACCES)
	if res[2].Errno != 0 {
		t.Errorf("helper's F_SETLK of a free range: %v", res[2].err())
	}

	// Shared locks coexist across processes.
	check(t, setlk(fd, unix.F_SETLK, unix.F_RDLCK, 100, 100), "downgrade to F_RDLCK")
	res = runOps(t, -1, -1, helperOp{Op: "setlk", Path: p, Lock: lockSpec{Cmd: unix.F_SETLK, Type: unix.F_RDLCK, Start: 120, Len: 10}})
	if res[0].Errno != 0 {
		t.Errorf("helper's F_RDLCK over our F_RDLCK: %v", res[0].err())
	}
	check(t, setlk(fd, unix.F_SETLK, unix.F_UNLCK, 0, 0), "F_UNLCK of everything")

	h.send(t, "unlock")
	if line := h.next(t, lockTimeout); line != "unlocked" {
		t.Fatalf("helper answered %q to unlock", line)
	}
	check(t, setlk(fd, unix.F_SETLK, unix.F_WRLCK, 0, 100), "F_SETLK after the helper unlocked")
	h.send(t, "exit")
	h.wait(t)
	check(t, f.Close(), "close")
	remove(t, p)
}

// testPosixLockWait checks that F_SETLKW blocks while another process holds
// a conflicting lock and is granted once it unlocks.
func testPosixLockWait(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, make([]byte, 100), 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	fd := fdOf(f)
	h, pid := startLocker(t, p, lockSpec{Cmd: unix.F_SETLK, Type: unix.F_WRLCK, Start: 0, Len: 0})

	done := make(chan error, 1)
	go func() { done <- setlk(fd, unix.F_SETLKW, unix.F_WRLCK, 10, 20) }()
	if err, ok := waitDone(done, blockedFor); ok {
		t.Fatalf("F_SETLKW against the helper's lock returned at once: %v", err)
	}
	h.send(t, "unlock")
	if line := h.next(t, lockTimeout); line != "unlocked" {
		t.Fatalf("helper answered %q to unlock", line)
	}
	err, ok := waitDone(done, lockTimeout)
	if !ok {
		h.kill()
		if _, ok := waitDone(done, lockTimeout); !ok {
			t.Fatalf("F_SETLKW still blocked after the holder unlocked and exited")
		}
		t.Fatalf("F_SETLKW not granted after the holder (pid %d) unlocked; only its exit released it", pid)
	}
	check(t, err, "F_SETLKW")
	res := runOps(t, -1, -1, helperOp{Op: "getlk", Path: p, Lock: lockSpec{Cmd: unix.F_GETLK, Type: unix.F_WRLCK, Start: 0, Len: 0}})
	if r := res[0]; r.Errno != 0 || r.Lock.Type != unix.F_WRLCK || r.Lock.Start != 10 || r.Lock.Len != 20 || r.Lock.Pid != int32(os.Getpid()) {
		t.Errorf("F_GETLK after F_SETLKW was granted: errno %d type %d start %d len %d pid %d; want F_WRLCK 10 20 %d",
			r.Errno, r.Lock.Type, r.Lock.Start, r.Lock.Len, r.Lock.Pid, os.Getpid())
	}
	h.send(t, "exit")
	h.wait(t)
	check(t, f.Close(), "close")
	remove(t, p)
}

// testPosixLockCloseReleases checks the POSIX rule that closing any
// descriptor of a file releases all of the process's locks on it.
func testPosixLockCloseReleases(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, make([]byte, 100), 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	check(t, setlk(fdOf(f), unix.F_SETLK, unix.F_WRLCK, 0, 0), "F_SETLK")
	probe := helperOp{Op: "setlk", Path: p, Lock: lockSpec{Cmd: unix.F_SETLK, Type: unix.F_WRLCK, Start: 0, Len: 0}}
	res := runOps(t, -1, -1, probe)
	wantErrno(t, res[0].err(), "helper's F_SETLK while we hold the lock", unix.EAGAIN, unix.EACCES)

	other := openFile(t, p, os.O_RDONLY, 0)
	check(t, other.Close(), "close of a second descriptor")
	res = runOps(t, -1, -1, probe)
	if res[0].Errno != 0 {
		t.Errorf("helper's F_SETLK after we closed another descriptor of the file: %v; the close should have released our lock", res[0].err())
	}
	check(t, f.Close(), "close")
	remove(t, p)
}

// testPosixLockExitReleases checks that a process's locks go away when it is
// killed.
func testPosixLockExitReleases(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, make([]byte, 100), 0o644)
	f := openFile(t, p, os.O_RDWR, 0)
	h, _ := startLocker(t, p, lockSpec{Cmd: unix.F_SETLK, Type: unix.F_WRLCK, Start: 0, Len: 0})
	wantErrno(t, setlk(fdOf(f), unix.F_SETLK, unix.F_WRLCK, 0, 0), "F_SETLK against the helper's lock", unix.EAGAIN, unix.EACCES)
	h.kill()
	deadline := time.Now().Add(lockTimeout)
	for {
		err := setlk(fdOf(f), unix.F_SETLK, unix.F_WRLCK, 0, 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock still held %v after its holder was killed: %v", lockTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	check(t, f.Close(), "close")
	remove(t, p)
}

// testOFDLock checks open file description locks (F_OFD_*) between two
// descriptions in one process: they conflict with each other and with
// classic POSIX locks of the same process, F_OFD_GETLK reports pid -1,
// closing another descriptor does not release them, F_OFD_SETLKW waits.
func testOFDLock(t *testing.T, dir string) {
	p := filepath.Join(dir, "file")
	writeFile(t, p, make([]byte, 200), 0o644)
	f1 := openFile(t, p, os.O_RDWR, 0)
	f2 := openFile(t, p, os.O_RDWR, 0)
	fd1, fd2 := fdOf(f1), fdOf(f2)

	check(t, setlk(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 100), "F_OFD_SETLK on the first description")
	wantErrno(t, setlk(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 50, 100), "F_OFD_SETLK from the second description", unix.EAGAIN, unix.EACCES)
	wantErrno(t, setlk(fd2, unix.F_OFD_SETLK, unix.F_RDLCK, 0, 1), "F_OFD_SETLK F_RDLCK from the second description", unix.EAGAIN, unix.EACCES)
	fl := getlk(t, fd2, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 10)
	if fl.Type != unix.F_WRLCK || fl.Start != 0 || fl.Len != 100 || fl.Pid != -1 {
		t.Errorf("F_OFD_GETLK: type %d start %d len %d pid %d; want F_WRLCK 0 100 -1", fl.Type, fl.Start, fl.Len, fl.Pid)
	}
	if fl := getlk(t, fd1, unix.F_OFD_GETLK, unix.F_WRLCK, 0, 10); fl.Type != unix.F_UNLCK {
		t.Errorf("F_OFD_GETLK over the description's own lock: type %d, want F_UNLCK", fl.Type)
	}
	// Classic POSIX locks of this very process conflict with OFD locks.
	wantErrno(t, setlk(fd2, unix.F_SETLK, unix.F_WRLCK, 0, 10), "F_SETLK against an OFD lock of the same process", unix.EAGAIN, unix.EACCES)
	check(t, setlk(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 100, 100), "F_OFD_SETLK of the adjacent range")

	// Closing an unrelated descriptor of the file keeps OFD locks.
	f3 := openFile(t, p, os.O_RDONLY, 0)
	check(t, f3.Close(), "close of a third descriptor")
	wantErrno(t, setlk(fd2, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 10), "F_OFD_SETLK after closing another descriptor", unix.EAGAIN, unix.EACCES)

	// Another process sees the OFD lock as a conflict.
	res := runOps(t, -1, -1, helperOp{Op: "setlk", Path: p, Lock: lockSpec{Cmd: unix.F_SETLK, Type: unix.F_RDLCK, Start: 10, Len: 1}})
	wantErrno(t, res[0].err(), "helper's F_SETLK against our OFD lock", unix.EAGAIN, unix.EACCES)

	// F_OFD_SETLKW waits for the other description's unlock.
	done := make(chan error, 1)
	go func() { done <- setlk(fd2, unix.F_OFD_SETLKW, unix.F_WRLCK, 0, 50) }()
	if err, ok := waitDone(done, blockedFor); ok {
		t.Fatalf("F_OFD_SETLKW against a held lock returned at once: %v", err)
	}
	check(t, setlk(fd1, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 100), "F_OFD_SETLK F_UNLCK")
	err, ok := waitDone(done, lockTimeout)
	if !ok {
		f1.Close()
		f2.Close()
		<-done
		t.Fatalf("F_OFD_SETLKW not granted after the holder unlocked")
	}
	check(t, err, "F_OFD_SETLKW")
	wantErrno(t, setlk(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 1), "F_OFD_SETLK against the waiter's new lock", unix.EAGAIN, unix.EACCES)

	// Closing the description releases its locks.
	check(t, f2.Close(), "close")
	afterClose(t, "F_OFD_SETLK of the whole file after the holder closed", func() error {
		return setlk(fd1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0)
	})
	check(t, f1.Close(), "close")
	remove(t, p)
}
