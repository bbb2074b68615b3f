package racetest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// oldTimes are the atime and mtime of every sentinel outside the share. The
// atime is older than the mtime, so that any read (relatime) or listing
// of it moves the atime: a daemon that reads outside the share shows.
var oldTimes = []unix.Timespec{
	unix.NsecToTimespec(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()),
	unix.NsecToTimespec(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()),
}

// snapshot describes every object under root, root included: type and mode,
// owner, size, link count, atime (but of symlinks, which the snapshot
// itself reads), mtime, ctime, contents or link target, and every xattr.
// It reads with O_NOATIME, so that taking it moves no atime.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "mode=%#o uid=%d gid=%d size=%d nlink=%d mtime=%d.%09d ctime=%d.%09d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			fmt.Fprintf(&b, " atime=%d.%09d", st.Atim.Sec, st.Atim.Nsec)
		}
		var names []string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW, 0)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			data := make([]byte, st.Size+1)
			n, _ := f.Read(data)
			f.Close()
			fmt.Fprintf(&b, " data=%q", data[:n])
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			fmt.Fprintf(&b, " target=%q", target)
		case unix.S_IFDIR:
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			names, err = f.Readdirnames(-1)
			f.Close()
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
		}
		buf := make([]byte, 64<<10)
		n, err := unix.Llistxattr(p, buf)
		if err != nil && err != unix.ENOTSUP {
			t.Fatalf("snapshot: listxattr %s: %v", p, err)
		}
		xs := strings.Split(strings.TrimRight(string(buf[:max(n, 0)]), "\x00"), "\x00")
		slices.Sort(xs)
		for _, x := range xs {
			if x == "" {
				continue
			}
			v := make([]byte, 64<<10)
			m, err := unix.Lgetxattr(p, x, v)
			if err != nil {
				t.Fatalf("snapshot: getxattr %s %s: %v", p, x, err)
			}
			fmt.Fprintf(&b, " %s=%q", x, v[:m])
		}
		out[rel] = b.String()
		for _, name := range names {
			walk(filepath.Join(rel, name))
		}
	}
	walk(".")
	return out
}

// compareSnapshots reports every object added, removed or changed.
func compareSnapshots(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(before)) {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s: %s was removed", what, p)
		case a != before[p]:
			t.Errorf("%s: %s changed:\n  before %s\n  after  %s", what, p, before[p], a)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s was added: %s", what, p, after[p])
		}
	}
}

// namesWith lists the entries of dir whose names contain token.
func namesWith(dir, token string) []string {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	var out []string
	for _, n := range names {
		if strings.Contains(n, token) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}
