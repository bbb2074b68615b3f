package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/migcase"
	"golang.org/x/sys/unix"
)

// migrateWait is how long the guest waits for the host's marker.
const migrateWait = 5 * time.Minute

// migration is what the guest holds open across the migration.
type migration struct {
	mnt        string
	read       int      // in/read.bin, ReadBefore bytes read
	append     int      // out/append.txt, O_APPEND
	dir        int      // in/dir, partly listed
	out        int      // out/, for openat
	firstNames []string // what the first getdents gave
}

// runMigrate runs the migration case (../internal/migcase) on mnt: it
// opens what it holds, reports migrate_ready, waits for the host's marker
// and then uses what it holds on the destination.
func runMigrate(mnt string) {
	fmt.Printf("GUESTINFO guesttest -migrate checks=%d\n", len(migcase.Checks))
	m := &migration{mnt: mnt}
	if err := m.open(); err != nil {
		for _, name := range migcase.Checks {
			fmt.Printf("GUESTTEST %s FAIL before the migration: %s\n", name, err)
		}
		return
	}
	fmt.Println("GUESTTEST migrate_ready PASS")
	start := time.Now()
	if err := m.waitMarker(); err != nil {
		for _, name := range migcase.Checks[1:] {
			fmt.Printf("GUESTTEST %s FAIL %s\n", name, err)
		}
		return
	}
	fmt.Printf("GUESTTEST migrate_resumed PASS waited %.1fs\n", time.Since(start).Seconds())
	// What the guest cached came from the source; from now on the
	// destination's daemon answers.
	if err := dropCaches(); err != nil {
		fmt.Printf("GUESTINFO %v\n", err)
	}
	fns := map[string]func() error{
		"migrate_read":    m.checkRead,
		"migrate_append":  m.checkAppend,
		"migrate_readdir": m.checkReaddir,
		"migrate_fstat":   m.checkFstat,
		"migrate_lookup":  m.checkLookup,
		"migrate_create":  m.checkCreate,
		"migrate_dirfd":   m.checkDirfd,
	}
	for _, name := range migcase.Checks[2:] {
		fn := fns[name]
		if fn == nil {
			fmt.Printf("GUESTTEST %s FAIL the checker has no such check\n", name)
			continue
		}
		runCheck(nil, check{name, func(*env) error { return fn() }})
	}
}

func (m *migration) path(rel string) string { return filepath.Join(m.mnt, rel) }

// open opens and half-uses what the guest holds across the migration.
func (m *migration) open() error {
	var err error
	if m.read, err = unix.Open(m.path(migcase.ReadFile), unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open %s: %v", migcase.ReadFile, err)
	}
	buf := make([]byte, migcase.ReadBefore)
	if err := readFull(m.read, buf); err != nil {
		return fmt.Errorf("read %s: %v", migcase.ReadFile, err)
	}
	if err := wantPattern(buf, 0); err != nil {
		return err
	}
	if m.append, err = unix.Open(m.path(migcase.Append), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_APPEND|unix.O_CLOEXEC, 0o644); err != nil {
		return fmt.Errorf("create %s: %v", migcase.Append, err)
	}
	if _, err := unix.Write(m.append, []byte(migcase.AppendBefore)); err != nil {
		return fmt.Errorf("append: %v", err)
	}
	if m.dir, err = unix.Open(m.path(migcase.Dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open %s: %v", migcase.Dir, err)
	}
	// A small buffer: the listing stops after a few entries, at an offset
	// the destination must continue from.
	if m.firstNames, err = getdents(m.dir, 512); err != nil {
		return err
	}
	if len(m.firstNames) == 0 || len(m.firstNames) >= migcase.DirCount {
		return fmt.Errorf("the first getdents of %s gave %d entries; want some, not all", migcase.Dir, len(m.firstNames))
	}
	if m.out, err = unix.Open(m.path("out"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open out: %v", err)
	}
	fmt.Printf("GUESTINFO holding %s at %d, %s, %s after %d entries, out/\n",
		migcase.ReadFile, migcase.ReadBefore, migcase.Append, migcase.Dir, len(m.firstNames))
	return nil
}

// waitMarker polls for the host's marker, printing a line now and then so
// guest.sh's watchdog sees the guest is alive.
func (m *migration) waitMarker() error {
	start := time.Now()
	last := start
	for {
		if _, err := os.Stat(m.path(migcase.Marker)); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat %s: %v", migcase.Marker, err)
		}
		if time.Since(start) > migrateWait {
			return fmt.Errorf("no %s from the host after %v", migcase.Marker, migrateWait)
		}
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			fmt.Printf("GUESTINFO waiting for the migration (%.0fs)\n", time.Since(start).Seconds())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readFull fills buf from fd's file offset.
func readFull(fd int, buf []byte) error {
	for off := 0; off < len(buf); {
		n, err := unix.Read(fd, buf[off:])
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("EOF after %d of %d bytes", off, len(buf))
		}
		off += n
	}
	return nil
}

// wantPattern compares b, read at offset off of in/read.bin, with the case's
// pattern.
func wantPattern(b []byte, off int) error {
	for i := range b {
		if b[i] != migcase.Pattern(off+i) {
			return fmt.Errorf("%s differs from the host's at offset %d", migcase.ReadFile, off+i)
		}
	}
	return nil
}

// getdents reads one batch of names from fd with a buffer of size bytes.
func getdents(fd, size int) ([]string, error) {
	buf := make([]byte, size)
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("getdents: %v", err)
	}
	_, _, names := unix.ParseDirent(buf[:n], -1, nil)
	return names, nil
}

func (m *migration) checkRead() error {
	rest := make([]byte, migcase.ReadSize-migcase.ReadBefore)
	if err := readFull(m.read, rest); err != nil {
		return fmt.Errorf("read on: %v", err)
	}
	if err := wantPattern(rest, migcase.ReadBefore); err != nil {
		return err
	}
	if n, err := unix.Read(m.read, make([]byte, 16)); err != nil || n != 0 {
		return fmt.Errorf("read at EOF: %d, %v", n, err)
	}
	b := make([]byte, 4096)
	n, err := unix.Pread(m.read, b, 12345)
	if err != nil || n != len(b) {
		return fmt.Errorf("pread: %d, %v", n, err)
	}
	return wantPattern(b, 12345)
}

func (m *migration) checkAppend() error {
	if _, err := unix.Write(m.append, []byte(migcase.AppendAfter)); err != nil {
		return fmt.Errorf("append: %v", err)
	}
	if err := unix.Fsync(m.append); err != nil {
		return fmt.Errorf("fsync: %v", err)
	}
	return wantContent(m.path(migcase.Append), migcase.AppendBefore+migcase.AppendAfter)
}

func (m *migration) checkReaddir() error {
	names := slices.Clone(m.firstNames)
	for {
		batch, err := getdents(m.dir, 4096)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		names = append(names, batch...)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return fmt.Errorf("%s lists %s twice (%d before the migration, %d in all)", migcase.Dir, n, len(m.firstNames), len(names))
		}
		seen[n] = true
	}
	for i := range migcase.DirCount {
		if !seen[migcase.DirName(i)] {
			return fmt.Errorf("%s never lists %s (%d before the migration, %d in all)", migcase.Dir, migcase.DirName(i), len(m.firstNames), len(names))
		}
	}
	if len(names) != migcase.DirCount {
		return fmt.Errorf("%s lists %d entries, want %d", migcase.Dir, len(names), migcase.DirCount)
	}
	return nil
}

func (m *migration) checkFstat() error {
	for _, f := range []struct {
		name string
		fd   int
		typ  uint32
		size int64 // -1: any
	}{
		{migcase.ReadFile, m.read, unix.S_IFREG, migcase.ReadSize},
		{migcase.Append, m.append, unix.S_IFREG, int64(len(migcase.AppendBefore + migcase.AppendAfter))},
		{migcase.Dir, m.dir, unix.S_IFDIR, -1},
		{"out", m.out, unix.S_IFDIR, -1},
	} {
		var st unix.Stat_t
		if err := unix.Fstat(f.fd, &st); err != nil {
			return fmt.Errorf("fstat of %s: %v", f.name, err)
		}
		if st.Mode&unix.S_IFMT != f.typ || (f.size >= 0 && st.Size != f.size) {
			return fmt.Errorf("fstat of %s: mode %o size %d", f.name, st.Mode, st.Size)
		}
		var byPath unix.Stat_t
		if err := unix.Stat(m.path(f.name), &byPath); err != nil || byPath.Ino != st.Ino {
			return fmt.Errorf("%s: the held descriptor has inode %d, the path %d (%v)", f.name, st.Ino, byPath.Ino, err)
		}
	}
	return nil
}

func (m *migration) checkLookup() error {
	return wantContent(m.path(migcase.Unseen), migcase.UnseenData)
}

func (m *migration) checkCreate() error {
	if err := os.WriteFile(m.path(migcase.Created), []byte(migcase.CreatedData), 0o644); err != nil {
		return err
	}
	return wantContent(m.path(migcase.Created), migcase.CreatedData)
}

func (m *migration) checkDirfd() error {
	fd, err := unix.Openat(m.out, filepath.Base(migcase.ViaDirfd), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("openat on the held out/: %v", err)
	}
	_, err = unix.Write(fd, []byte(migcase.DirfdData))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return wantContent(m.path(migcase.ViaDirfd), migcase.DirfdData)
}
