package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// lockFile is a file to lock and an OpenFunc for it that records the flags
// it was called with.
type lockFile struct {
	path string

	mu     sync.Mutex
	opened []int
	// refuse makes open fail with this errno for these access modes.
	refuse map[int]syscall.Errno
}

func newLockFile(t *testing.T) *lockFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &lockFile{path: p}
}

func (f *lockFile) open(flags int) (int, error) {
	f.mu.Lock()
	f.opened = append(f.opened, flags)
	e := f.refuse[flags&unix.O_ACCMODE]
	f.mu.Unlock()
	if e != 0 {
		return -1, e
	}
	return unix.Open(f.path, flags|unix.O_CLOEXEC, 0)
}

// hostLock tries a non-blocking OFD lock from a descriptor of its own, as a
// host process would, and drops it again.
func (f *lockFile) hostLock(t *testing.T, typ int16, start, length int64) error {
	t.Helper()
	fd, err := unix.Open(f.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: start, Len: length}
	return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
}

// fdCount returns the number of open descriptors of the process.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func lk(owner uint64, typ uint32, start, end uint64, pid uint32) *fuseproto.LkIn {
	return &fuseproto.LkIn{Owner: owner, Lk: fuseproto.FileLock{Type: typ, Start: start, End: end, PID: pid}}
}

func TestValidLock(t *testing.T) {
	tests := []struct {
		name string
		l    fuseproto.FileLock
		want syscall.Errno
	}{
		{"read", fuseproto.FileLock{Type: unix.F_RDLCK, End: 9}, 0},
		{"write to end", fuseproto.FileLock{Type: unix.F_WRLCK, Start: 5, End: OffsetMax}, 0},
		{"unlock", fuseproto.FileLock{Type: unix.F_UNLCK, Start: 3, End: 3}, 0},
		{"last byte", fuseproto.FileLock{Type: unix.F_WRLCK, Start: OffsetMax, End: OffsetMax}, 0},
		{"bad type", fuseproto.FileLock{Type: 7, End: 1}, unix.EINVAL},
		{"end before start", fuseproto.FileLock{Type: unix.F_RDLCK, Start: 10, End: 5}, unix.EINVAL},
		{"start past OFFSET_MAX", fuseproto.FileLock{Type: unix.F_RDLCK, Start: OffsetMax + 1, End: OffsetMax + 1}, unix.EINVAL},
	}
	for _, tc := range tests {
		if got := ValidLock(&tc.l); got != tc.want {
			t.Errorf("%s: ValidLock = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLocksSequence runs lock steps of two owners on one Locks and checks
// each answer and what Getlk reports.
func TestLocksSequence(t *testing.T) {
	f := newLockFile(t)
	var l Locks
	defer l.Close()
	const a, b = 100, 200
	type step struct {
		name string
		get  bool // Getlk rather than Setlk
		in   *fuseproto.LkIn
		want syscall.Errno
		// out is Getlk's answer.
		out fuseproto.FileLock
	}
	steps := []step{
		{name: "a write-locks 0-9", in: lk(a, unix.F_WRLCK, 0, 9, 11)},
		{name: "a extends to 19", in: lk(a, unix.F_WRLCK, 5, 19, 11)},
		{name: "b read over a's", in: lk(b, unix.F_RDLCK, 15, 15, 22), want: unix.EAGAIN},
		{name: "b write-locks 20-end", in: lk(b, unix.F_WRLCK, 20, OffsetMax, 22)},
		{name: "b asks over all", get: true, in: lk(b, unix.F_WRLCK, 0, OffsetMax, 22),
			out: fuseproto.FileLock{Type: unix.F_WRLCK, Start: 0, End: 19, PID: 11}},
		{name: "a asks over its own", get: true, in: lk(a, unix.F_WRLCK, 0, 10, 11),
			out: fuseproto.FileLock{Type: unix.F_UNLCK, Start: 0, End: 10, PID: 11}},
		{name: "a asks over b's", get: true, in: lk(a, unix.F_RDLCK, 25, 30, 11),
			out: fuseproto.FileLock{Type: unix.F_WRLCK, Start: 20, End: OffsetMax, PID: 22}},
		{name: "a unlocks 10-19", in: lk(a, unix.F_UNLCK, 10, 19, 11)},
		{name: "b reads 15", in: lk(b, unix.F_RDLCK, 15, 15, 22)},
		{name: "unknown owner unlocks", in: lk(999, unix.F_UNLCK, 0, OffsetMax, 1)},
		{name: "bad range", in: lk(a, unix.F_WRLCK, 10, 5, 11), want: unix.EINVAL},
		{name: "bad type", in: lk(a, 7, 0, 5, 11), want: unix.EINVAL},
		{name: "flock refused by Setlk", in: &fuseproto.LkIn{Owner: a, LkFlags: fuseproto.LkFlock, Lk: fuseproto.FileLock{Type: unix.F_WRLCK}}, want: unix.EINVAL},
		{name: "flock refused by Getlk", get: true, in: &fuseproto.LkIn{Owner: a, LkFlags: fuseproto.LkFlock, Lk: fuseproto.FileLock{Type: unix.F_WRLCK}}, want: unix.EINVAL},
	}
	for _, s := range steps {
		var got syscall.Errno
		var out fuseproto.LkOut
		if s.get {
			got = l.Getlk(f.open, false, s.in, &out)
		} else {
			got = l.Setlk(nil, f.open, false, 0, s.in, false, nil)
		}
		if got != s.want {
			t.Errorf("%s: %v, want %v", s.name, got, s.want)
		}
		if s.get && got == 0 && out.Lk != s.out {
			t.Errorf("%s: Getlk = %+v, want %+v", s.name, out.Lk, s.out)
		}
	}
	// A host process sees the owners' locks.
	if err := f.hostLock(t, unix.F_WRLCK, 0, 1); err != unix.EAGAIN {
		t.Errorf("host lock over a's: %v, want EAGAIN", err)
	}
	if err := f.hostLock(t, unix.F_RDLCK, 12, 1); err != nil {
		t.Errorf("host read lock where nobody locks: %v", err)
	}
	// A lock held by a host process has no guest pid. (Owner b's write
	// lock runs to the end of file: a asks before it, over 12, where b's
	// read lock on 15 is not; the host takes 12.)
	hostFd, err := unix.Open(f.path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hostFd)
	hl := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: 12, Len: 1}
	if err := unix.FcntlFlock(uintptr(hostFd), unix.F_OFD_SETLK, &hl); err != nil {
		t.Fatal(err)
	}
	var out fuseproto.LkOut
	if e := l.Getlk(f.open, false, lk(a, unix.F_RDLCK, 12, 12, 11), &out); e != 0 || out.Lk != (fuseproto.FileLock{Type: unix.F_WRLCK, Start: 12, End: 12}) {
		t.Errorf("Getlk over the host's lock: %+v, %v; want a write lock 12-12 of pid 0", out.Lk, e)
	}
	// The owners' descriptors were opened read-write, non-blocking.
	for _, fl := range f.opened {
		if fl != unix.O_RDWR|unix.O_NONBLOCK {
			t.Errorf("owner opened with %#o", fl)
		}
	}
	if len(f.opened) != 2 {
		t.Errorf("%d owner descriptors opened, want 2 (a's and b's; unlocking an unknown owner opens none)", len(f.opened))
	}
}

// TestLocksOpenModes checks how owner descriptors are opened: read-write
// first, read-only when readOnly or when read-write is refused, and that a
// read-only owner refuses write locks.
func TestLocksOpenModes(t *testing.T) {
	rdwr, rdonly := unix.O_RDWR|unix.O_NONBLOCK, unix.O_RDONLY|unix.O_NONBLOCK
	tests := []struct {
		name       string
		readOnly   bool
		refuse     map[int]syscall.Errno
		wantOpened []int // the flags of every open, in turn
		wantRead   syscall.Errno
		wantWrite  syscall.Errno
	}{
		{"writable", false, nil, []int{rdwr}, 0, 0},
		{"read-only", true, nil, []int{rdonly}, 0, unix.EBADF},
		{"read-write refused", false, map[int]syscall.Errno{unix.O_RDWR: unix.EACCES}, []int{rdwr, rdonly}, 0, unix.EBADF},
		// Each lock tries again, as no descriptor was kept.
		{"not lockable", false, map[int]syscall.Errno{unix.O_RDWR: unix.EINVAL, unix.O_RDONLY: unix.EINVAL}, []int{rdwr, rdonly, rdwr, rdonly}, unix.EINVAL, unix.EINVAL},
	}
	for _, tc := range tests {
		f := newLockFile(t)
		f.refuse = tc.refuse
		var l Locks
		if got := l.Setlk(nil, f.open, tc.readOnly, 0, lk(1, unix.F_RDLCK, 0, 0, 1), false, nil); got != tc.wantRead {
			t.Errorf("%s: read lock %v, want %v", tc.name, got, tc.wantRead)
		}
		if got := l.Setlk(nil, f.open, tc.readOnly, 0, lk(1, unix.F_WRLCK, 0, 0, 1), false, nil); got != tc.wantWrite {
			t.Errorf("%s: write lock %v, want %v", tc.name, got, tc.wantWrite)
		}
		// Unlocking an owner without a descriptor opens nothing.
		if got := l.Setlk(nil, f.open, tc.readOnly, 0, lk(2, unix.F_UNLCK, 0, 0, 1), false, nil); got != 0 {
			t.Errorf("%s: unlock of an unknown owner: %v", tc.name, got)
		}
		if !slices.Equal(f.opened, tc.wantOpened) {
			t.Errorf("%s: opened with %#o, want %#o", tc.name, f.opened, tc.wantOpened)
		}
		l.Close()
	}
}

// TestLocksDrop checks DropOwner, ReleaseHandle (fh 0 records nothing) and
// Close, by what a host process can lock afterwards, and that every owner
// descriptor is closed in the end.
func TestLocksDrop(t *testing.T) {
	f := newLockFile(t)
	before := fdCount(t)
	var l Locks
	// Owner i locks byte i through handle fhs[i].
	fhs := []uint64{0: 0, 1: 7, 2: 7, 3: 8, 4: 0}
	for i, fh := range fhs {
		if e := l.Setlk(nil, f.open, false, fh, lk(uint64(i), unix.F_WRLCK, uint64(i), uint64(i), 1), false, nil); e != 0 {
			t.Fatalf("owner %d: %v", i, e)
		}
	}
	held := func(want ...bool) {
		t.Helper()
		for i, w := range want {
			err := f.hostLock(t, unix.F_WRLCK, int64(i), 1)
			if (err == unix.EAGAIN) != w {
				t.Errorf("byte %d: host lock %v, want held %v", i, err, w)
			}
		}
	}
	held(true, true, true, true, true)
	l.DropOwner(3)
	l.DropOwner(99) // unknown: ignored
	held(true, true, true, false, true)
	l.ReleaseHandle(7)
	held(true, false, false, false, true)
	l.ReleaseHandle(0) // fh 0 recorded nothing
	l.ReleaseHandle(8) // its owner is already gone
	held(true, false, false, false, true)
	// Owner 1 locks again, through handle 9; handle 7 is forgotten.
	if e := l.Setlk(nil, f.open, false, 9, lk(1, unix.F_WRLCK, 1, 1, 1), false, nil); e != 0 {
		t.Fatal(e)
	}
	l.ReleaseHandle(7)
	held(true, true, false, false, true)
	l.Close()
	held(false, false, false, false, false)
	if n := fdCount(t); n != before {
		t.Errorf("%d descriptors open after Close, %d before", n, before)
	}
}

// TestLocksWait checks a waiting Setlk: granted when the holder unlocks,
// ended with EINTR by an interrupt or the end of the session, and that an
// owner dropped while a request uses it is closed only when the request
// ends.
func TestLocksWait(t *testing.T) {
	f := newLockFile(t)
	var l Locks
	defer l.Close()
	if e := l.Setlk(nil, f.open, false, 0, lk(1, unix.F_WRLCK, 0, OffsetMax, 1), false, nil); e != 0 {
		t.Fatal(e)
	}
	intr, session := make(chan struct{}), make(chan struct{})
	tests := []struct {
		name    string
		ctx     *fuseproto.Context
		session chan struct{}
		end     func()
		want    syscall.Errno
		owner   uint64
	}{
		{"interrupted", &fuseproto.Context{Interrupted: intr}, make(chan struct{}), func() { close(intr) }, unix.EINTR, 2},
		{"session ends", nil, session, func() { close(session) }, unix.EINTR, 3},
		{"holder unlocks", &fuseproto.Context{Interrupted: make(chan struct{})}, nil, func() {
			if e := l.Setlk(nil, f.open, false, 0, lk(1, unix.F_UNLCK, 0, OffsetMax, 1), false, nil); e != 0 {
				t.Error(e)
			}
		}, 0, 4},
	}
	for _, tc := range tests {
		done := make(chan syscall.Errno)
		go func() {
			done <- l.Setlk(tc.ctx, f.open, false, 0, lk(tc.owner, unix.F_RDLCK, 0, 0, 1), true, tc.session)
		}()
		select {
		case e := <-done:
			t.Fatalf("%s: waiting Setlk returned %v while the lock is held", tc.name, e)
		case <-time.After(50 * time.Millisecond):
		}
		tc.end()
		select {
		case e := <-done:
			if e != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, e, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: waiting Setlk did not end", tc.name)
		}
	}

	// An owner dropped during its wait keeps its descriptor until the
	// wait ends.
	l.DropOwner(4)
	if e := l.Setlk(nil, f.open, false, 0, lk(1, unix.F_WRLCK, 0, OffsetMax, 1), false, nil); e != 0 {
		t.Fatal(e)
	}
	before := fdCount(t)
	intr = make(chan struct{})
	done := make(chan syscall.Errno)
	go func() {
		done <- l.Setlk(&fuseproto.Context{Interrupted: intr}, f.open, false, 0, lk(5, unix.F_RDLCK, 0, 0, 1), true, nil)
	}()
	// Wait for the owner's descriptor to be open.
	for deadline := time.Now().Add(5 * time.Second); fdCount(t) != before+1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors while owner 5 waits, want %d", fdCount(t), before+1)
		}
		time.Sleep(time.Millisecond)
	}
	l.DropOwner(5)
	if n := fdCount(t); n != before+1 {
		t.Errorf("%d descriptors while the dropped owner waits, want %d", n, before+1)
	}
	close(intr)
	if e := <-done; e != unix.EINTR {
		t.Errorf("dropped owner's wait: %v, want EINTR", e)
	}
	if n := fdCount(t); n != before {
		t.Errorf("%d descriptors after the dropped owner's wait, want %d", n, before)
	}
}

// TestLocksConcurrent runs every operation from many goroutines (for the
// race detector) and checks that Close leaves no descriptor open.
func TestLocksConcurrent(t *testing.T) {
	f := newLockFile(t)
	before := fdCount(t)
	var l Locks
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				owner := uint64(g*4 + i%4)
				in := lk(owner, unix.F_WRLCK, uint64(i%16), uint64(i%16+3), uint32(owner))
				switch i % 5 {
				case 0, 1:
					l.Setlk(nil, f.open, false, uint64(1+i%3), in, false, nil)
				case 2:
					var out fuseproto.LkOut
					l.Getlk(f.open, false, in, &out)
				case 3:
					l.DropOwner(owner)
				default:
					l.ReleaseHandle(uint64(1 + i%3))
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	if n := fdCount(t); n != before {
		t.Errorf("%d descriptors open after Close, %d before", n, before)
	}
}

func TestRetryLock(t *testing.T) {
	errOther := errors.New("not an errno")
	closed := make(chan struct{})
	close(closed)
	tests := []struct {
		name      string
		results   []error // what try returns, in turn; the last repeats
		wait      bool
		ctx       *fuseproto.Context
		session   <-chan struct{}
		want      syscall.Errno
		wantCalls int
	}{
		{"granted", []error{nil}, false, nil, nil, 0, 1},
		{"EINTR retried", []error{unix.EINTR, unix.EINTR, nil}, false, nil, nil, 0, 3},
		{"conflict without wait", []error{unix.EAGAIN}, false, nil, nil, unix.EAGAIN, 1},
		{"EACCES conflict without wait", []error{unix.EACCES}, false, nil, nil, unix.EAGAIN, 1},
		{"other errno", []error{unix.EBADF}, true, nil, nil, unix.EBADF, 1},
		{"other error", []error{errOther}, true, nil, nil, unix.EIO, 1},
		{"wait until granted", []error{unix.EAGAIN, unix.EACCES, unix.EAGAIN, nil}, true, nil, nil, 0, 4},
		{"wait interrupted", []error{unix.EAGAIN}, true, &fuseproto.Context{Interrupted: closed}, nil, unix.EINTR, 1},
		{"wait, session ended", []error{unix.EAGAIN}, true, &fuseproto.Context{}, closed, unix.EINTR, 1},
	}
	for _, tc := range tests {
		calls := 0
		got := RetryLock(tc.ctx, tc.wait, tc.session, func() error {
			r := tc.results[min(calls, len(tc.results)-1)]
			calls++
			return r
		})
		if got != tc.want || calls != tc.wantCalls {
			t.Errorf("%s: %v after %d tries, want %v after %d", tc.name, got, calls, tc.want, tc.wantCalls)
		}
	}
}
