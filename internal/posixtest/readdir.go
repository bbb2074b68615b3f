package posixtest

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readdirName is the name of entry i in the large directory tests: varied
// lengths (7 to 246 bytes) so records straddle buffer boundaries.
func readdirName(i int) string {
	return fmt.Sprintf("n%05d-%s", i, strings.Repeat(string(rune('a'+i%26)), i%240))
}

// testReaddir10000 fills a directory with 10,000 entries of varied name
// lengths and kinds and checks that readdir, with large and tiny buffers,
// returns each exactly once with the right d_type, plus "." and "..".
func testReaddir10000(t *testing.T, dir string) {
	const n = 10000
	want := map[string]uint8{}
	for i := range n {
		name := readdirName(i)
		p := filepath.Join(dir, name)
		var err error
		switch i % 100 {
		case 0:
			err, want[name] = unix.Mkdir(p, 0o755), unix.DT_DIR
		case 1:
			err, want[name] = unix.Symlink("target", p), unix.DT_LNK
		default:
			err, want[name] = unix.Mknod(p, unix.S_IFREG|0o644, 0), unix.DT_REG
		}
		check(t, err, "creating entry %d", i)
	}
	for _, bufSize := range []int{64 << 10, 4096, 512} {
		ents := readDir(t, dir, bufSize)
		checkListing(t, fmt.Sprintf("%d-byte buffer", bufSize), ents, want)
	}
	for i := range n {
		name := readdirName(i)
		var err error
		if want[name] == unix.DT_DIR {
			err = unix.Rmdir(filepath.Join(dir, name))
		} else {
			err = unix.Unlink(filepath.Join(dir, name))
		}
		check(t, err, "removing entry %d", i)
	}
	ents := readDir(t, dir, 4096)
	checkListing(t, "after removing everything", ents, map[string]uint8{})
}

// checkListing fails t unless ents is exactly ".", ".." and the names of
// want, each once, with the d_type want gives.
func checkListing(t *testing.T, what string, ents []dirent, want map[string]uint8) {
	t.Helper()
	seen := make(map[string]int, len(ents))
	bad := 0
	for _, e := range ents {
		seen[e.name]++
		if seen[e.name] == 2 && bad < 10 {
			t.Errorf("%s: %q listed more than once", what, e.name)
			bad++
		}
		if e.name == "." || e.name == ".." {
			if e.typ != unix.DT_DIR && e.typ != unix.DT_UNKNOWN {
				t.Errorf("%s: %q has d_type %d", what, e.name, e.typ)
			}
			continue
		}
		typ, ok := want[e.name]
		if !ok {
			if bad < 10 {
				t.Errorf("%s: unexpected entry %q", what, e.name)
			}
			bad++
			continue
		}
		if e.typ != typ && bad < 10 {
			t.Errorf("%s: %q has d_type %d, want %d", what, e.name, e.typ, typ)
			bad++
		}
	}
	missing := 0
	for name := range want {
		if seen[name] == 0 {
			if missing < 10 {
				t.Errorf("%s: %q not listed", what, name)
			}
			missing++
		}
	}
	for _, n := range []string{".", ".."} {
		if seen[n] != 1 {
			t.Errorf("%s: %q listed %d times, want once", what, n, seen[n])
		}
	}
	if missing > 0 || bad > 0 || len(ents) != len(want)+2 {
		t.Errorf("%s: %d entries listed, want %d; %d missing, %d wrong", what, len(ents), len(want)+2, missing, bad)
	}
}

// testReaddirSeek checks telldir/seekdir: the d_off of an entry, given to
// lseek on the directory, resumes the listing right after that entry, and
// lseek to 0 restarts it.
func testReaddirSeek(t *testing.T, dir string) {
	const n = 500
	for i := range n {
		check(t, unix.Mknod(filepath.Join(dir, readdirName(i)), unix.S_IFREG|0o644, 0), "mknod")
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	check(t, err, "opendir")
	defer unix.Close(fd)
	all, err := readDirFD(fd, 4096)
	check(t, err, "getdents")
	if len(all) != n+2 {
		t.Fatalf("listed %d entries, want %d", len(all), n+2)
	}
	for _, k := range []int{0, 1, 2, 17, 250, n} {
		off := all[k].off
		pos, err := unix.Seek(fd, off, 0)
		if err != nil || pos != off {
			t.Errorf("lseek to d_off %d of entry %d: %d, %v", off, k, pos, err)
			continue
		}
		rest, err := readDirFD(fd, 1024)
		check(t, err, "getdents after lseek")
		var got, want []string
		for _, e := range rest {
			got = append(got, e.name)
		}
		for _, e := range all[k+1:] {
			want = append(want, e.name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("after seeking to the d_off of entry %d (%q): %d entries starting %q, want %d starting %q",
				k, all[k].name, len(got), first(got), len(want), first(want))
		}
	}
	_, err = unix.Seek(fd, 0, 0)
	check(t, err, "rewind")
	again, err := readDirFD(fd, 8192)
	check(t, err, "getdents after rewind")
	if len(again) != len(all) {
		t.Errorf("after rewinding: %d entries, want %d", len(again), len(all))
	}
	for i := range min(len(again), len(all)) {
		if again[i].name != all[i].name || again[i].ino != all[i].ino {
			t.Errorf("after rewinding, entry %d is %q ino %d, was %q ino %d", i, again[i].name, again[i].ino, all[i].name, all[i].ino)
			break
		}
	}
	check(t, unix.Close(fd), "close")
	for i := range n {
		remove(t, filepath.Join(dir, readdirName(i)))
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// testReaddirConcurrent reads a directory in small batches while another
// goroutine adds entries, and then while it removes them. Whatever is added
// or removed meanwhile may or may not be listed, but the readdir must not
// fail, list any name twice, or miss a name that existed throughout.
func testReaddirConcurrent(t *testing.T, dir string) {
	const pre, churn = 2000, 2000
	stable := map[string]bool{}
	for i := range pre {
		name := fmt.Sprintf("pre-%04d-%s", i, strings.Repeat("p", i%50))
		stable[name] = true
		check(t, unix.Mknod(filepath.Join(dir, name), unix.S_IFREG|0o644, 0), "mknod")
	}
	churnName := func(i int) string { return fmt.Sprintf("new-%04d-%s", i, strings.Repeat("n", i%60)) }

	for _, phase := range []string{"create", "remove"} {
		var churnErr error
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			for i := range churn {
				p := filepath.Join(dir, churnName(i))
				var err error
				if phase == "create" {
					err = unix.Mknod(p, unix.S_IFREG|0o644, 0)
				} else {
					err = unix.Unlink(p)
				}
				if err != nil {
					churnErr = fmt.Errorf("%s %s: %w", phase, p, err)
					return
				}
			}
		}()
		deadline := time.Now().Add(30 * time.Second)
		rounds := 0
	listing:
		for {
			rounds++
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				<-finished
				t.Fatalf("%s phase: opendir: %v", phase, err)
			}
			ents, err := readDirFD(fd, 1024)
			unix.Close(fd)
			if err != nil {
				<-finished
				t.Fatalf("%s phase, round %d: getdents: %v", phase, rounds, err)
			}
			seen := map[string]bool{}
			for _, e := range ents {
				if seen[e.name] {
					t.Errorf("%s phase, round %d: %q listed twice", phase, rounds, e.name)
				}
				seen[e.name] = true
				if !stable[e.name] && !strings.HasPrefix(e.name, "new-") && e.name != "." && e.name != ".." {
					t.Errorf("%s phase, round %d: unexpected entry %q", phase, rounds, e.name)
				}
			}
			missing := 0
			for name := range stable {
				if !seen[name] {
					missing++
				}
			}
			if missing > 0 {
				t.Errorf("%s phase, round %d: %d entries that existed throughout were not listed", phase, rounds, missing)
			}
			if t.Failed() {
				break
			}
			select {
			case <-finished:
				if rounds >= 2 {
					break listing
				}
			default:
				if time.Now().After(deadline) {
					break listing
				}
			}
		}
		<-finished
		if churnErr != nil {
			t.Fatalf("%v", churnErr)
		}
		t.Logf("%s phase: %d concurrent listings", phase, rounds)

		want := map[string]uint8{}
		for name := range stable {
			want[name] = unix.DT_REG
		}
		if phase == "create" {
			for i := range churn {
				want[churnName(i)] = unix.DT_REG
			}
		}
		checkListing(t, phase+" phase, final listing", readDir(t, dir, 32<<10), want)
		if t.Failed() {
			return
		}
	}
	for name := range stable {
		remove(t, filepath.Join(dir, name))
	}
}
