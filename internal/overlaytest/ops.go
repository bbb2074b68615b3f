package overlaytest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// An Op is an operation on the merged view whose root is root. It returns
// what it observed (compared between the sides like its error) and an
// error, of which the errno is compared.
type Op func(root string) (string, error)

// A Step is one operation of a case.
type Step struct {
	// Name is how diffs name the step.
	Name string
	// Op runs the operation; nil for a remount.
	Op Op
	// Remount unmounts both sides and mounts them again on the same
	// layers instead of running an Op.
	Remount bool
}

// Result is what one side's step gave.
type Result struct {
	Errno string // "OK" or the errno's name
	Out   string
}

// String gives the errno and, if any, what the step observed.
func (r Result) String() string {
	if r.Out == "" {
		return r.Errno
	}
	return r.Errno + " " + r.Out
}

// Run runs the step's Op on root.
func (s Step) Run(root string) Result {
	out, err := s.Op(root)
	if err == nil {
		return Result{Errno: "OK", Out: out}
	}
	return Result{Errno: errnoOf(err), Out: out}
}

// errnoOf names the errno inside err (ENOENT), or gives err's text.
func errnoOf(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return e.Error()
	}
	return err.Error()
}

// at joins root and a slash path without cleaning it, so "d/." and "d/.."
// reach the system call as written.
func at(root, p string) string { return root + "/" + p }

func step(name string, op Op) Step { return Step{Name: name, Op: op} }

// remount is a step that unmounts and mounts both sides again.
func remount() Step { return Step{Name: "remount", Remount: true} }

func openClose(p string, flags int, mode uint32) Op {
	return func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), flags|unix.O_CLOEXEC, mode)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	}
}

func create(p string, mode uint32) Step {
	return step(fmt.Sprintf("create %s %#o", p, mode), openClose(p, unix.O_CREAT|unix.O_WRONLY, mode))
}

func createExcl(p string) Step {
	return step("create O_EXCL "+p, openClose(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644))
}

func openOnly(p string, flags int, flagName string) Step {
	return step(fmt.Sprintf("open %s %s", flagName, p), openClose(p, flags, 0))
}

func read(p string) Step {
	return step("read "+p, func(root string) (string, error) {
		b, err := os.ReadFile(at(root, p))
		if err != nil {
			return "", err
		}
		return contentString(b), nil
	})
}

func writeAt(p string, off int64, data string) Step {
	return step(fmt.Sprintf("write %s at %d", p, off), func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		n, err := unix.Pwrite(fd, []byte(data), off)
		return fmt.Sprintf("%d bytes", n), err
	})
}

func appendTo(p, data string) Step {
	return step("append "+p, func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		n, err := unix.Write(fd, []byte(data))
		return fmt.Sprintf("%d bytes", n), err
	})
}

func truncate(p string, size int64) Step {
	return step(fmt.Sprintf("truncate %s %d", p, size), func(root string) (string, error) {
		return "", unix.Truncate(at(root, p), size)
	})
}

func chmod(p string, mode uint32) Step {
	return step(fmt.Sprintf("chmod %s %#o", p, mode), func(root string) (string, error) {
		return "", unix.Chmod(at(root, p), mode)
	})
}

func chown(p string, uid, gid int) Step {
	return step(fmt.Sprintf("lchown %s %d:%d", p, uid, gid), func(root string) (string, error) {
		return "", unix.Lchown(at(root, p), uid, gid)
	})
}

func utimes(p string, sec int64) Step {
	return step(fmt.Sprintf("utimes %s %d", p, sec), func(root string) (string, error) {
		ts := []unix.Timespec{{Sec: sec, Nsec: 5}, {Sec: sec, Nsec: 7}}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, at(root, p), ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func setx(p, name, value string) Step {
	return step(fmt.Sprintf("setxattr %s %s=%q", p, name, value), func(root string) (string, error) {
		return "", unix.Lsetxattr(at(root, p), name, []byte(value), 0)
	})
}

func removex(p, name string) Step {
	return step(fmt.Sprintf("removexattr %s %s", p, name), func(root string) (string, error) {
		return "", unix.Lremovexattr(at(root, p), name)
	})
}

func getx(p, name string) Step {
	return step(fmt.Sprintf("getxattr %s %s", p, name), func(root string) (string, error) {
		v, err := getxattr(at(root, p), name)
		if err != nil {
			return "", err
		}
		return xattrValue(v), nil
	})
}

func listx(p string) Step {
	return step("listxattr "+p, func(root string) (string, error) {
		xs, err := xattrs(at(root, p))
		var names []string
		for _, x := range xs {
			names = append(names, x[0])
		}
		sort.Strings(names)
		return strings.Join(names, " "), err
	})
}

func mknod(p string, typ, mode, major, minor uint32) Step {
	return step(fmt.Sprintf("mknod %s %#o %d:%d", p, typ|mode, major, minor), func(root string) (string, error) {
		return "", unix.Mknod(at(root, p), typ|mode, int(unix.Mkdev(major, minor)))
	})
}

func mkdir(p string, mode uint32) Step {
	return step(fmt.Sprintf("mkdir %s %#o", p, mode), func(root string) (string, error) {
		return "", unix.Mkdir(at(root, p), mode)
	})
}

func symlink(target, p string) Step {
	return step(fmt.Sprintf("symlink %s -> %s", p, target), func(root string) (string, error) {
		return "", unix.Symlink(target, at(root, p))
	})
}

func link(oldp, newp string) Step {
	return step(fmt.Sprintf("link %s %s", oldp, newp), func(root string) (string, error) {
		return "", unix.Link(at(root, oldp), at(root, newp))
	})
}

func unlink(p string) Step {
	return step("unlink "+p, func(root string) (string, error) {
		return "", unix.Unlink(at(root, p))
	})
}

func rmdir(p string) Step {
	return step("rmdir "+p, func(root string) (string, error) {
		return "", unix.Rmdir(at(root, p))
	})
}

func removeAll(p string) Step {
	return step("rm -rf "+p, func(root string) (string, error) {
		return "", os.RemoveAll(at(root, p))
	})
}

func renameFlags(oldp, newp string, flags uint) Step {
	var names []string
	for _, f := range []struct {
		bit  uint
		name string
	}{{unix.RENAME_NOREPLACE, "NOREPLACE"}, {unix.RENAME_EXCHANGE, "EXCHANGE"}, {unix.RENAME_WHITEOUT, "WHITEOUT"}} {
		if flags&f.bit != 0 {
			names = append(names, f.name)
		}
	}
	name := fmt.Sprintf("rename %s %s", oldp, newp)
	if len(names) > 0 {
		name += " " + strings.Join(names, "|")
	}
	return step(name, func(root string) (string, error) {
		return "", unix.Renameat2(unix.AT_FDCWD, at(root, oldp), unix.AT_FDCWD, at(root, newp), flags)
	})
}

func rename(oldp, newp string) Step { return renameFlags(oldp, newp, 0) }

func readlink(p string) Step {
	return step("readlink "+p, func(root string) (string, error) {
		t, err := os.Readlink(at(root, p))
		return t, err
	})
}

// stat follows symlinks (lstat is what every manifest does).
func stat(p string) Step {
	return step("stat "+p, func(root string) (string, error) {
		var st unix.Stat_t
		if err := unix.Stat(at(root, p), &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %#o size %d", modeDType(st.Mode), st.Mode&0o7777, st.Size), nil
	})
}

func statfs() Step {
	return step("statfs", func(root string) (string, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("bsize %d blocks %d files %d namelen %d", st.Bsize, st.Blocks, st.Files, st.Namelen), nil
	})
}

func fallocate(p string, mode uint32, off, n int64) Step {
	return step(fmt.Sprintf("fallocate %s mode %#x %d+%d", p, mode, off, n), func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "open", err
		}
		defer unix.Close(fd)
		return "", unix.Fallocate(fd, mode, off, n)
	})
}

// tmpfile writes data to an O_TMPFILE in dir and, unless linkTo is "",
// gives it that name with linkat through /proc/self/fd.
func tmpfile(dir, data, linkTo string) Step {
	name := "O_TMPFILE in " + dir
	if linkTo != "" {
		name += " linked as " + linkTo
	}
	return step(name, func(root string) (string, error) {
		fd, err := unix.Open(at(root, dir), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
		if err != nil {
			return "open", err
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte(data)); err != nil {
			return "write", err
		}
		if linkTo == "" {
			return "", nil
		}
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, at(root, linkTo), unix.AT_SYMLINK_FOLLOW)
		if err != nil {
			return "linkat", err
		}
		return "", nil
	})
}

// staleFD opens p read-only, then rewrites it through a second open (a
// copy-up for a lower file), and reports what the first descriptor and a
// new one read: kernel overlayfs leaves the first on the lower file.
func staleFD(p, data string) Step {
	return step("read through an fd opened before copy-up of "+p, func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "open for read", err
		}
		defer unix.Close(fd)
		if err := os.WriteFile(at(root, p), []byte(data), 0); err != nil {
			return "write", err
		}
		buf := make([]byte, 256)
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return "pread", err
		}
		now, err := os.ReadFile(at(root, p))
		if err != nil {
			return "reopen", err
		}
		return fmt.Sprintf("old fd reads %q, a new open reads %q", buf[:n], now), nil
	})
}

// getflags reports the FS_IOC_GETFLAGS flags of p that overlayfs keeps:
// append-only, immutable, sync, noatime.
func getflags(p string) Step {
	return step("getflags "+p, func(root string) (string, error) {
		fd, err := unix.Open(at(root, p), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return "open", err
		}
		defer unix.Close(fd)
		f, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
		if err != nil {
			return "ioctl", err
		}
		var names []string
		for _, x := range []struct {
			bit  int
			name string
		}{{fsAppendFL, "append"}, {fsImmutableFL, "immutable"}, {fsSyncFL, "sync"}, {fsNoatimeFL, "noatime"}} {
			if f&x.bit != 0 {
				names = append(names, x.name)
			}
		}
		return strings.Join(names, ","), nil
	})
}

// readdir lists a directory: names with d_type, sorted, and any entry
// whose d_ino is not lstat's st_ino or that is listed twice.
func readdir(p string) Step {
	return step("readdir "+p, func(root string) (string, error) {
		dir := at(root, p)
		ents, err := readDir(dir)
		if err != nil {
			return "", err
		}
		var names, bad []string
		seen := map[string]bool{}
		for _, d := range ents {
			if seen[d.name] {
				bad = append(bad, d.name+" listed twice")
			}
			seen[d.name] = true
			names = append(names, d.name+":"+dtypeName(d.typ))
			if d.name == ".." {
				continue
			}
			var st unix.Stat_t
			var err error
			if d.name == "." {
				err = unix.Stat(dir, &st)
			} else {
				err = unix.Lstat(filepath.Join(dir, d.name), &st)
			}
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: lstat %s", d.name, errnoOf(err)))
			} else if st.Ino != d.ino {
				bad = append(bad, d.name+": d_ino is not st_ino")
			}
		}
		sort.Strings(names)
		sort.Strings(bad)
		out := strings.Join(names, " ")
		if len(bad) > 0 {
			out += " | " + strings.Join(bad, ", ")
		}
		return out, nil
	})
}

// readdirCount lists a big directory: the number of entries, duplicates,
// and d_ino against st_ino for every 4999th entry (a lookup in a huge directory can be slow).
func readdirCount(p string) Step {
	return step("readdir (count) "+p, func(root string) (string, error) {
		dir := at(root, p)
		ents, err := readDir(dir)
		if err != nil {
			return "", err
		}
		seen := make(map[string]bool, len(ents))
		var dups []string
		badIno := 0
		for i, d := range ents {
			if seen[d.name] {
				dups = append(dups, d.name)
			}
			seen[d.name] = true
			if i%4999 == 0 && d.name != ".." {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, d.name), &st); err != nil || st.Ino != d.ino {
					badIno++
				}
			}
		}
		if len(dups) > 5 {
			dups = dups[:5]
		}
		return fmt.Sprintf("%d entries, %d distinct, duplicates %q, d_ino mismatches %d", len(ents), len(seen), dups, badIno), nil
	})
}

// readdirStream reads a directory a few entries at a time, creates name in
// it half way, finishes the read, then rewinds and reads it again: kernel
// overlayfs caches a merged directory's listing per open file, so the new
// name shows only after the rewind.
func readdirStream(p, name string) Step {
	return step(fmt.Sprintf("readdir %s while creating %s, then rewind", p, name), func(root string) (string, error) {
		dir := at(root, p)
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "open", err
		}
		defer unix.Close(fd)
		buf := make([]byte, 96)
		readAll := func(first bool) ([]dirent, error) {
			var out []dirent
			for {
				n, err := unix.Getdents(fd, buf)
				if err != nil || n == 0 {
					return out, err
				}
				out = parseDirents(buf[:n], out)
				if first {
					return out, nil
				}
			}
		}
		before, err := readAll(true)
		if err != nil {
			return "getdents", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			return "create", err
		}
		rest, err := readAll(false)
		if err != nil {
			return "getdents", err
		}
		before = append(before, rest...)
		if _, err := unix.Seek(fd, 0, 0); err != nil {
			return "rewind", err
		}
		after, err := readAll(false)
		if err != nil {
			return "getdents after rewind", err
		}
		summary := func(ents []dirent) string {
			seen := map[string]int{}
			for _, d := range ents {
				seen[d.name]++
			}
			dups := 0
			for _, n := range seen {
				if n > 1 {
					dups++
				}
			}
			return fmt.Sprintf("%d entries, %d names listed twice, new name listed %d times", len(ents), dups, seen[name])
		}
		return fmt.Sprintf("before rewind: %s; after rewind: %s", summary(before), summary(after)), nil
	})
}
