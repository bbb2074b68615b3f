package posixtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// testConcurrentIO has several goroutines each write their own file with
// pwrite in a scattered order while reading back another goroutine's file,
// and checks every file's contents at the end.
func testConcurrentIO(t *testing.T, dir string) {
	const workers, chunk, chunks = 8, 64 << 10, 32
	data := make([][]byte, workers)
	for w := range workers {
		data[w] = pattern(chunk*chunks, uint64(100+w))
	}
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := filepath.Join(dir, fmt.Sprintf("file%d", w))
			fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
			if err != nil {
				errs <- fmt.Errorf("worker %d: create: %w", w, err)
				return
			}
			defer unix.Close(fd)
			for i := range chunks {
				c := (i*7 + w) % chunks // every chunk once, in a scattered order
				off := c * chunk
				if n, err := unix.Pwrite(fd, data[w][off:off+chunk], int64(off)); err != nil || n != chunk {
					errs <- fmt.Errorf("worker %d: pwrite of chunk %d: %d, %v", w, c, n, err)
					return
				}
				buf := make([]byte, chunk)
				if n, err := unix.Pread(fd, buf, int64(off)); err != nil || !bytes.Equal(buf[:n], data[w][off:off+chunk]) {
					errs <- fmt.Errorf("worker %d: chunk %d reads back wrong (%d bytes, %v)", w, c, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range workers {
		p := filepath.Join(dir, fmt.Sprintf("file%d", w))
		wantContent(t, p, data[w])
		remove(t, p)
	}
}

// testConcurrentNamespace races creates, renames, links, unlinks and stats
// of a small set of names from several goroutines. Each call may fail only
// in the ways the races allow (ENOENT, EEXIST); anything else (ESTALE, EIO,
// a wrong file type) is a bug in how the filesystem tracks its inodes.
func testConcurrentNamespace(t *testing.T, dir string) {
	const workers, iterations, names = 6, 300, 8
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("n%d", i%names)) }
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			allowed := func(op string, err error) bool {
				if err == nil || err == unix.ENOENT || err == unix.EEXIST {
					return true
				}
				errs <- fmt.Errorf("worker %d: %s: %v", w, op, err)
				return false
			}
			for i := range iterations {
				a, b := name(i*(w+1)), name(i*(w+3)+1)
				var st unix.Stat_t
				var err error
				switch (i + w) % 6 {
				case 0:
					var fd int
					fd, err = unix.Open(a, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
					if err == nil {
						_, err = unix.Write(fd, []byte("x"))
						unix.Close(fd)
					}
					if err == unix.EISDIR {
						err = nil // a directory of that name exists now
					}
				case 1:
					err = unix.Rename(a, b)
					if err == unix.ENOTDIR || err == unix.EISDIR || err == unix.ENOTEMPTY {
						err = nil // a file and a directory met
					}
				case 2:
					err = unix.Link(a, b)
					if err == unix.EPERM {
						err = nil // a is a directory now
					}
				case 3:
					err = unix.Unlink(a)
					if err == unix.EISDIR {
						err = unix.Rmdir(a)
						if err == unix.ENOTEMPTY || err == unix.ENOTDIR {
							err = nil // not empty, or a file again
						}
					}
				case 4:
					err = unix.Lstat(a, &st)
					if err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG && st.Mode&unix.S_IFMT != unix.S_IFDIR {
						errs <- fmt.Errorf("worker %d: %s has type %s", w, filepath.Base(a), fileType(st.Mode))
						return
					}
				case 5:
					err = unix.Mkdir(a, 0o755)
				}
				if !allowed(fmt.Sprintf("op %d on %s", (i+w)%6, filepath.Base(a)), err) {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Whatever is left must be consistent between readdir and lstat.
	for _, e := range readDir(t, dir, 4096) {
		if e.name == "." || e.name == ".." {
			continue
		}
		st := lstat(t, filepath.Join(dir, e.name))
		if st.Ino != e.ino || dtype(st.Mode) != e.typ {
			t.Errorf("%s: readdir says ino %d type %d, lstat ino %d type %d", e.name, e.ino, e.typ, st.Ino, dtype(st.Mode))
		}
	}
	check(t, removeContents(dir), "removing what the workers left")
}

// removeContents removes everything inside dir.
func removeContents(dir string) error {
	names, err := dirNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}
