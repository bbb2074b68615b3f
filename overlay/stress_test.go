package overlay

import (
	"sync"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// TestRenameRmdirConcurrent moves a directory in and out of A/C while
// another request tries to remove A/C (which stays non-empty): Rename
// checks the ancestry of A/C while holding A/C's mutex, Rmdir finds A/C
// while holding A's. Neither may wait for the other forever.
func TestRenameRmdirConcurrent(t *testing.T) {
	u := newUnion(t, "", 1, true)
	hostFile(t, u.U("A/C/keep"), "k")
	hostDir(t, u.U("x"))
	u.mount()
	a, c := u.node("A"), u.node("A/C")
	fs := u.fs
	const rounds = 2000
	var wg sync.WaitGroup
	errs := make(chan string, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			if e := fs.Rename(rootCtx, fuseproto.RootID, "x", c, "x", 0); e != 0 {
				errs <- "Rename x A/C/x: " + e.Error()
				return
			}
			if e := fs.Rename(rootCtx, c, "x", fuseproto.RootID, "x", 0); e != 0 {
				errs <- "Rename A/C/x x: " + e.Error()
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			if e := fs.Rmdir(rootCtx, a, "C"); e != unix.ENOTEMPTY {
				errs <- "Rmdir A/C: " + e.Error()
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			var e fuseproto.EntryOut
			if errno := fs.Lookup(rootCtx, a, "C", &e); errno != 0 {
				errs <- "Lookup A/C: " + errno.Error()
				return
			}
			fs.Forget(e.NodeID, 1)
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		u.fs = nil // the stuck requests hold the union's locks
		t.Fatal("Rename and Rmdir deadlocked")
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
