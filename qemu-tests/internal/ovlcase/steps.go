package ovlcase

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Env is where the steps run: the root of a union.
type Env struct {
	Root string
	// Tick, if not nil, is called for every object untarred or listed, so
	// a long step can show it is alive.
	Tick func()
}

// A Step is one group of changes to the union. Steps run in the order of
// Steps; a step that fails stops at its first failing operation, and the
// next steps still run (they touch other paths, but for those that reuse
// deleted or renamed names).
type Step struct {
	Name string
	Run  func(s *run)
}

// Steps are the changes made to the union, in order.
var Steps = []Step{
	{"prepare", stepPrepare},
	{"untar", stepUntar},
	{"append", stepAppend},
	{"truncate", stepTruncate},
	{"chmod_chown", stepChmodChown},
	{"xattr", stepXattr},
	{"utimes", stepUtimes},
	{"rm_rf", stepRmRf},
	{"rename_dirs", stepRenameDirs},
	{"rename_files", stepRenameFiles},
	{"hardlinks", stepHardlinks},
	{"recreate", stepRecreate},
	{"delete_tar", stepDeleteTar},
}

// RunStep runs one step on e and returns its first failure, naming the
// operation, the paths and the errno.
func RunStep(e *Env, st Step) (err error) {
	r := &run{Env: e}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	st.Run(r)
	return r.err
}

// run carries a step's first error; every operation is skipped after it.
type run struct {
	*Env
	err error
}

func (r *run) p(rel string) string { return filepath.Join(r.Root, rel) }

// check records err (if any) as the failure of op on paths.
func (r *run) check(op string, err error, paths ...string) bool {
	if r.err != nil {
		return false
	}
	if err != nil {
		r.err = fmt.Errorf("%s %s: %s", op, strings.Join(paths, " -> "), ErrText(err))
	}
	return r.err == nil
}

// failf records a failed expectation.
func (r *run) failf(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

// ErrText names an errno (EXDEV (invalid cross-device link)) or returns
// the error's text.
func ErrText(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return fmt.Sprintf("%s (%v)", unix.ErrnoName(en), en)
	}
	return err.Error()
}

// --- operations ---

func (r *run) mkdir(rel string, mode uint32) {
	if r.err == nil {
		r.check("mkdir", unix.Mkdir(r.p(rel), mode), rel)
	}
}

func (r *run) writeNew(rel, data string, mode uint32) {
	if r.err != nil {
		return
	}
	fd, err := unix.Open(r.p(rel), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, mode)
	if !r.check("open O_CREAT|O_EXCL", err, rel) {
		return
	}
	r.writeAll(fd, rel, data)
}

// writeAll writes data to fd and closes it.
func (r *run) writeAll(fd int, rel, data string) {
	f := os.NewFile(uintptr(fd), rel)
	_, err := f.WriteString(data)
	r.check("write", err, rel)
	r.check("close", f.Close(), rel)
}

func (r *run) appendFile(rel, data string) {
	if r.err != nil {
		return
	}
	fd, err := unix.Open(r.p(rel), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if r.check("open O_APPEND", err, rel) {
		r.writeAll(fd, rel, data)
	}
}

func (r *run) writeTrunc(rel, data string) {
	if r.err != nil {
		return
	}
	fd, err := unix.Open(r.p(rel), unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if r.check("open O_TRUNC", err, rel) {
		r.writeAll(fd, rel, data)
	}
}

func (r *run) truncate(rel string, size int64) {
	if r.err == nil {
		r.check(fmt.Sprintf("truncate to %d", size), unix.Truncate(r.p(rel), size), rel)
	}
}

func (r *run) chmod(rel string, mode uint32) {
	if r.err == nil {
		r.check(fmt.Sprintf("chmod %#o", mode), unix.Chmod(r.p(rel), mode), rel)
	}
}

func (r *run) lchown(rel string, uid, gid int) {
	if r.err == nil {
		r.check(fmt.Sprintf("lchown %d:%d", uid, gid), unix.Lchown(r.p(rel), uid, gid), rel)
	}
}

func (r *run) setxattr(rel, name, value string, flags int) {
	if r.err == nil {
		r.check("lsetxattr "+name, unix.Lsetxattr(r.p(rel), name, []byte(value), flags), rel)
	}
}

func (r *run) removexattr(rel, name string) {
	if r.err == nil {
		r.check("lremovexattr "+name, unix.Lremovexattr(r.p(rel), name), rel)
	}
}

func (r *run) utimes(rel string, atime, mtime time.Time) {
	if r.err != nil {
		return
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	r.check("utimensat", unix.UtimesNanoAt(unix.AT_FDCWD, r.p(rel), ts, unix.AT_SYMLINK_NOFOLLOW), rel)
}

// removeAll is rm -rf: os.RemoveAll unlinks and rmdirs bottom up.
func (r *run) removeAll(rel string) {
	if r.err == nil {
		r.check("rm -rf", os.RemoveAll(r.p(rel)), rel)
		r.wantGone(rel)
	}
}

func (r *run) unlink(rel string) {
	if r.err == nil {
		r.check("unlink", unix.Unlink(r.p(rel)), rel)
	}
}

func (r *run) rmdir(rel string) {
	if r.err == nil {
		r.check("rmdir", unix.Rmdir(r.p(rel)), rel)
	}
}

// rename is rename(2) itself (never a copy and delete, as mv does on EXDEV).
func (r *run) rename(old, new string) {
	if r.err == nil {
		r.check("rename", unix.Rename(r.p(old), r.p(new)), old, new)
	}
}

func (r *run) renameat2(old, new string, flags uint) error {
	return unix.Renameat2(unix.AT_FDCWD, r.p(old), unix.AT_FDCWD, r.p(new), flags)
}

func (r *run) link(old, new string) {
	if r.err == nil {
		r.check("link", unix.Link(r.p(old), r.p(new)), old, new)
	}
}

func (r *run) symlink(target, rel string) {
	if r.err == nil {
		r.check("symlink "+target, unix.Symlink(target, r.p(rel)), rel)
	}
}

func (r *run) mkfifo(rel string, mode uint32) {
	if r.err == nil {
		r.check("mkfifo", unix.Mkfifo(r.p(rel), mode), rel)
	}
}

// --- expectations ---

func (r *run) lstat(rel string) (unix.Stat_t, bool) {
	var st unix.Stat_t
	if r.err != nil {
		return st, false
	}
	return st, r.check("lstat", unix.Lstat(r.p(rel), &st), rel)
}

func (r *run) wantContent(rel, want string) {
	if r.err != nil {
		return
	}
	got, err := os.ReadFile(r.p(rel))
	if r.check("read", err, rel) && string(got) != want {
		r.failf("%s holds %q, want %q", rel, clip(got), want)
	}
}

func (r *run) wantSuffix(rel, suffix string) {
	if r.err != nil {
		return
	}
	got, err := os.ReadFile(r.p(rel))
	if r.check("read", err, rel) && !bytes.HasSuffix(got, []byte(suffix)) {
		r.failf("%s (%d bytes) ends in %q, want %q", rel, len(got), clip(got[max(0, len(got)-len(suffix)):]), suffix)
	}
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func (r *run) wantSize(rel string, size int64) {
	if st, ok := r.lstat(rel); ok && st.Size != size {
		r.failf("%s has size %d, want %d", rel, st.Size, size)
	}
}

func (r *run) wantMode(rel string, mode uint32, uid, gid uint32) {
	if st, ok := r.lstat(rel); ok && (st.Mode&0o7777 != mode || st.Uid != uid || st.Gid != gid) {
		r.failf("%s has mode %#o owner %d:%d, want %#o %d:%d", rel, st.Mode&0o7777, st.Uid, st.Gid, mode, uid, gid)
	}
}

func (r *run) wantMtime(rel string, mtime time.Time) {
	if st, ok := r.lstat(rel); ok && st.Mtim.Nano() != mtime.UnixNano() {
		r.failf("%s has mtime %v, want %v", rel, time.Unix(0, st.Mtim.Nano()).UTC(), mtime)
	}
}

func (r *run) wantGone(rel string) {
	if r.err != nil {
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(r.p(rel), &st); !errors.Is(err, unix.ENOENT) {
		r.failf("lstat %s after removing it: %v, want ENOENT", rel, errOrNil(err))
		return
	}
	parent, base := path.Split(rel)
	if names, ok := r.names(path.Clean(parent)); ok && slices.Contains(names, base) {
		r.failf("readdir %s still lists %s after it was removed", path.Clean(parent), base)
	}
}

func errOrNil(err error) string {
	if err == nil {
		return "success"
	}
	return ErrText(err)
}

func (r *run) names(dir string) ([]string, bool) {
	if r.err != nil {
		return nil, false
	}
	ents, err := os.ReadDir(r.p(dir))
	if !r.check("readdir", err, dir) {
		return nil, false
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, true
}

// wantNames wants dir to list exactly names.
func (r *run) wantNames(dir string, names ...string) {
	got, ok := r.names(dir)
	if !ok {
		return
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		r.failf("readdir %s lists %q, want %q", dir, clipList(got), names)
	}
}

func clipList(l []string) []string {
	if len(l) > 12 {
		return append(l[:12:12], fmt.Sprintf("... (%d in all)", len(l)))
	}
	return l
}

func (r *run) wantErrno(op string, err error, want syscall.Errno, paths ...string) {
	if r.err == nil && !errors.Is(err, want) {
		r.failf("%s %s: got %s, want %s", op, strings.Join(paths, " -> "), errOrNil(err), unix.ErrnoName(want))
	}
}

// wantLinks wants the paths to be one inode with nlink links.
func (r *run) wantLinks(nlink uint64, paths ...string) {
	var first unix.Stat_t
	for i, p := range paths {
		st, ok := r.lstat(p)
		if !ok {
			return
		}
		if i == 0 {
			first = st
		}
		if st.Ino != first.Ino || st.Nlink != nlink {
			r.failf("%s is inode %d with %d links, %s inode %d; want one inode with %d links", p, st.Ino, st.Nlink, paths[0], first.Ino, nlink)
			return
		}
	}
}

// --- the steps ---

const appended = "\n// appended in the guest\n"

func stepPrepare(r *run) { r.mkdir(ManifestDir, 0o755) }

func stepUntar(r *run) {
	if r.err != nil {
		return
	}
	dirs, err := untar(r.Env, TarPath)
	if err != nil {
		r.err = err
		return
	}
	// Every directory of the tarball lists exactly its entries (those of
	// src/crypto/sha256 replaced L1's files of the same names).
	for _, d := range slices.Sorted(mapKeys(dirs)) {
		r.wantNames(d, dirs[d]...)
	}
}

func mapKeys(m map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// untar extracts the tarball at rel (inside the union) into the union's
// root as GNU tar does as root: an existing file is unlinked first, an
// existing directory kept (its mode and owner set), owners and mtimes
// restored, directories' mtimes last. It returns each directory of the
// archive with the names in it.
func untar(e *Env, rel string) (map[string][]string, error) {
	f, err := os.Open(filepath.Join(e.Root, rel))
	if err != nil {
		return nil, fmt.Errorf("open %s: %s", rel, ErrText(err))
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	type dirMeta struct {
		name  string
		mtime time.Time
	}
	var dirTimes []dirMeta
	dirs := map[string][]string{}   // the archive's directories
	listed := map[string][]string{} // names in each directory
	fail := func(op, name string, err error) error {
		return fmt.Errorf("untar: %s %s: %s", op, name, ErrText(err))
	}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("untar: reading %s after %d entries: %v", rel, n, err)
		}
		if e.Tick != nil {
			e.Tick()
		}
		name := path.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return nil, fmt.Errorf("untar: entry %q leaves the root", h.Name)
		}
		if parent, base := path.Split(name); parent != "" {
			listed[path.Clean(parent)] = append(listed[path.Clean(parent)], base)
		}
		p := filepath.Join(e.Root, name)
		mode := uint32(h.Mode) & 0o7777
		ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
		switch h.Typeflag {
		case tar.TypeDir:
			dirs[name] = nil
			err := unix.Mkdir(p, mode)
			if errors.Is(err, unix.EEXIST) {
				err = unix.Chmod(p, mode)
			}
			if err != nil {
				return nil, fail("mkdir", name, err)
			}
			if err := unix.Lchown(p, h.Uid, h.Gid); err != nil {
				return nil, fail("lchown", name, err)
			}
			dirTimes = append(dirTimes, dirMeta{name, h.ModTime})
			continue
		case tar.TypeReg:
			if err := unlinkExisting(p); err != nil {
				return nil, fail("unlink", name, err)
			}
			fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, mode)
			if err != nil {
				return nil, fail("open O_CREAT|O_EXCL", name, err)
			}
			out := os.NewFile(uintptr(fd), name)
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return nil, fail("write", name, err)
			}
			if err := out.Chown(h.Uid, h.Gid); err != nil {
				out.Close()
				return nil, fail("fchown", name, err)
			}
			if err := out.Close(); err != nil {
				return nil, fail("close", name, err)
			}
		case tar.TypeSymlink:
			if err := unlinkExisting(p); err != nil {
				return nil, fail("unlink", name, err)
			}
			if err := unix.Symlink(h.Linkname, p); err != nil {
				return nil, fail("symlink", name, err)
			}
			if err := unix.Lchown(p, h.Uid, h.Gid); err != nil {
				return nil, fail("lchown", name, err)
			}
		case tar.TypeLink:
			if err := unlinkExisting(p); err != nil {
				return nil, fail("unlink", name, err)
			}
			if err := unix.Link(filepath.Join(e.Root, path.Clean(h.Linkname)), p); err != nil {
				return nil, fail("link to "+h.Linkname, name, err)
			}
			continue // a hard link has its target's times
		default:
			return nil, fmt.Errorf("untar: %s: unexpected type %q", name, h.Typeflag)
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fail("utimensat", name, err)
		}
	}
	for _, d := range slices.Backward(dirTimes) {
		ts := []unix.Timespec{unix.NsecToTimespec(d.mtime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(e.Root, d.name), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fail("utimensat", d.name, err)
		}
	}
	for d := range dirs {
		dirs[d] = listed[d]
	}
	return dirs, nil
}

func unlinkExisting(p string) error {
	if err := unix.Unlink(p); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// Files of both layers, one of L2's, a hard link of L2's: copy-up with data.
func stepAppend(r *run) {
	r.appendFile("misc/hello.txt", "appended in the guest\n")
	r.wantContent("misc/hello.txt", "hello from L2\nappended in the guest\n")
	r.appendFile("src/encoding/json/encode.go", appended)
	r.wantSuffix("src/encoding/json/encode.go", appended)
	r.appendFile("src/text/template/exec.go", appended)
	r.wantSuffix("src/text/template/exec.go", appended)
	// index=on keeps lower hard links together across copy-up.
	r.appendFile("misc/link-a", "appended via link-a\n")
	r.wantContent("misc/link-b", "linked in L2\nappended via link-a\n")
	r.wantLinks(2, "misc/link-a", "misc/link-b")
}

func stepTruncate(r *run) {
	r.truncate("misc/big.bin", 1<<20)
	r.wantSize("misc/big.bin", 1<<20)
	r.writeTrunc("src/html/template/escape.go", "package template // truncated in the guest\n")
	r.wantContent("src/html/template/escape.go", "package template // truncated in the guest\n")
	r.truncate("misc/sparse.bin", 8<<20)
	r.wantSize("misc/sparse.bin", 8<<20)
	r.truncate("src/image/png/paeth.go", 100)
	r.wantSize("src/image/png/paeth.go", 100)
}

// Metadata only: with metacopy=on the data stays in the lower layer.
func stepChmodChown(r *run) {
	r.chmod("misc/owned.txt", 0o600)
	r.wantMode("misc/owned.txt", 0o600, 1234, 5678)
	r.lchown("misc/chown.txt", 4321, 8765)
	r.wantMode("misc/chown.txt", 0o644, 4321, 8765)
	r.chmod("misc/setuid", 0o4755)
	r.wantMode("misc/setuid", 0o4755, 0, 0)
	r.chmod("src/sort", 0o700)
	r.wantMode("src/sort", 0o700, 0, 0)
	r.lchown("src/strings", 1000, 1000)
	r.wantMode("src/strings", 0o755, 1000, 1000)
	r.lchown("misc/sym", 77, 88)
	r.wantMode("misc/sym", 0o777, 77, 88)
	r.chmod("misc/meta-move.txt", 0o600)
	r.wantMode("misc/meta-move.txt", 0o600, 0, 0)
}

func stepXattr(r *run) {
	r.setxattr("misc/xattr.txt", "user.new", "guest", unix.XATTR_CREATE)
	r.removexattr("misc/xattr.txt", "user.a")
	r.setxattr("misc/xattr.txt", "user.b", "replaced", unix.XATTR_REPLACE)
	if r.err == nil {
		xs, err := Xattrs(r.p("misc/xattr.txt"))
		if r.check("xattrs", err, "misc/xattr.txt") && !slices.Equal(xs, []string{`user.b="replaced"`, `user.new="guest"`}) {
			r.failf("misc/xattr.txt has xattrs %q, want user.b=replaced and user.new=guest", xs)
		}
	}
	r.setxattr("src/fmt", "user.dir", "guest", 0)
	r.setxattr("misc/dirx", "user.dir", "guest", unix.XATTR_REPLACE)
	r.setxattr("src/strings/reader.go", "user.file", "in a directory renamed later", 0)
}

var (
	atimeSet = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	mtimeSet = time.Date(2020, 2, 2, 2, 2, 2, 222222222, time.UTC)
)

func stepUtimes(r *run) {
	r.utimes("misc/times.txt", atimeSet, mtimeSet)
	r.wantMtime("misc/times.txt", mtimeSet)
	r.utimes("src/text/scanner", atimeSet, mtimeSet)
	r.wantMtime("src/text/scanner", mtimeSet)
}

func stepRmRf(r *run) {
	r.removeAll("src/archive")       // L2's
	r.removeAll("src/compress")      // L2's, made again by recreate
	r.removeAll("misc/l1only")       // L1's
	r.removeAll("misc/deep")         // L2's, deep
	r.removeAll("src/image/jpeg")    // L1's
	r.removeAll("misc/opaque")       // L1's opaque directory over L2's
	r.removeAll("src/crypto/sha256") // L1's files replaced by the tarball's
	r.unlink("misc/shadowed.txt")    // in both layers
	r.wantGone("misc/shadowed.txt")
	r.unlink("misc/dangling")
	r.wantGone("misc/dangling")
}

// Renames of lower directories must work (redirect_dir=on), never EXDEV.
func stepRenameDirs(r *run) {
	// Merged (both layers), with a copied-up child, into another lower directory.
	r.rename("src/encoding/json", "src/text/json")
	r.wantContent("src/text/json/LAYER", "L1\n")
	r.wantGone("src/encoding/json")
	// Within its parent, with a truncated child.
	r.rename("src/html/template", "src/html/tmpl")
	r.wantContent("src/html/tmpl/escape.go", "package template // truncated in the guest\n")
	r.wantGone("src/html/template")
	// A directory whose owner changed, into a hand-made one.
	r.rename("src/strings", "misc/strings2")
	r.wantMode("misc/strings2", 0o755, 1000, 1000)
	// A renamed directory, renamed again.
	r.rename("src/text/json", "misc/json-again")
	r.wantContent("misc/json-again/LAYER", "L1\n")
	r.wantSuffix("misc/json-again/encode.go", appended)
	r.wantGone("src/text/json")
	r.rename("src/text/template", "src/tpl")
	r.wantSuffix("src/tpl/exec.go", appended)
	// The tarball's (upper only).
	r.rename("src/net/http", "src/go/http")
	r.wantGone("src/net/http")
	if r.err == nil {
		r.wantErrno("rename RENAME_NOREPLACE", r.renameat2("src/encoding/base64", "src/encoding/hex", unix.RENAME_NOREPLACE), unix.EEXIST, "src/encoding/base64", "src/encoding/hex")
		r.check("rename RENAME_EXCHANGE", r.renameat2("src/encoding/base64", "src/encoding/hex", unix.RENAME_EXCHANGE), "src/encoding/base64", "src/encoding/hex")
	}
	r.wantFile("src/encoding/base64/hex.go")
	r.wantFile("src/encoding/hex/base64.go")
	// Over an empty directory.
	r.mkdir("src/empty-target", 0o755)
	r.rename("src/encoding/csv", "src/empty-target")
	r.wantGone("src/encoding/csv")
	r.wantFile("src/empty-target/reader.go")
	r.wantUnlisted("src/text", "json", "template")
	r.wantUnlisted("src/encoding", "json", "csv")
}

// wantFile wants rel to be a regular file.
func (r *run) wantFile(rel string) {
	if st, ok := r.lstat(rel); ok && st.Mode&unix.S_IFMT != unix.S_IFREG {
		r.failf("%s has mode %#o, want a regular file", rel, st.Mode)
	}
}

// wantUnlisted wants dir not to list any of names.
func (r *run) wantUnlisted(dir string, names ...string) {
	got, ok := r.names(dir)
	for _, n := range names {
		if ok && slices.Contains(got, n) {
			r.failf("readdir %s lists %s", dir, n)
			return
		}
	}
}

func stepRenameFiles(r *run) {
	// Metadata copied up (chmod), data still in L2: moved into a lower directory.
	r.rename("misc/meta-move.txt", "src/fmt/meta-moved.txt")
	r.wantContent("src/fmt/meta-moved.txt", "chmod, then moved: metadata copied up, data still in L2\n")
	r.wantMode("src/fmt/meta-moved.txt", 0o600, 0, 0)
	r.rename("misc/times.txt", "src/times.txt")
	r.wantMtime("src/times.txt", mtimeSet)
	// A lower file within its (chmodded) directory.
	r.rename("src/sort/sort.go", "src/sort/sort.go.orig")
	r.wantGone("src/sort/sort.go")
	// A new file over a lower one.
	r.writeNew("misc/new.tmp", "replacement\n", 0o644)
	r.rename("misc/new.tmp", "src/fmt/print.go")
	r.wantContent("src/fmt/print.go", "replacement\n")
	// L2's file and L1's exchanged.
	if r.err == nil {
		r.check("rename RENAME_EXCHANGE", r.renameat2("misc/exch-a", "misc/exch-b", unix.RENAME_EXCHANGE), "misc/exch-a", "misc/exch-b")
	}
	r.wantContent("misc/exch-a", "exchange b, from L1\n")
	r.wantContent("misc/exch-b", "exchange a, from L2\n")
}

func stepHardlinks(r *run) {
	r.link("misc/hello.txt", "misc/hello-link") // copied up already
	r.wantLinks(2, "misc/hello.txt", "misc/hello-link")
	r.link("src/fmt/doc.go", "misc/fmt-doc-link") // still lower
	r.wantLinks(2, "src/fmt/doc.go", "misc/fmt-doc-link")
	r.link("misc/l1-link-a", "misc/l1-link-c") // one of L1's two links
	r.wantLinks(3, "misc/l1-link-a", "misc/l1-link-b", "misc/l1-link-c")
	r.link("src/go/ast/ast.go", "src/ast.go.hl") // the tarball's
	r.wantLinks(2, "src/go/ast/ast.go", "src/ast.go.hl")
	r.link("misc/strings2/strings.go", "misc/strings-link") // in a renamed lower directory
	r.wantLinks(2, "misc/strings2/strings.go", "misc/strings-link")
	r.wantContent("misc/hello-link", "hello from L2\nappended in the guest\n")
}

// New objects over deleted and renamed names.
func stepRecreate(r *run) {
	r.writeNew("misc/shadowed.txt", "recreated in the guest\n", 0o644)
	r.wantContent("misc/shadowed.txt", "recreated in the guest\n")
	r.mkdir("src/archive", 0o755)
	r.writeNew("src/archive/new.txt", "new\n", 0o644)
	r.wantNames("src/archive", "new.txt")
	r.mkdir("src/encoding/json", 0o755)
	r.writeNew("src/encoding/json/new.go", "package json\n", 0o644)
	r.wantNames("src/encoding/json", "new.go")
	r.unlink("misc/exec.sh")
	r.writeNew("misc/exec.sh", "#!/bin/sh\necho guest\n", 0o755)
	r.wantContent("misc/exec.sh", "#!/bin/sh\necho guest\n")
	r.symlink("hello-link", "misc/dangling")
	r.wantContent("misc/dangling", "hello from L2\nappended in the guest\n")
	r.mkfifo("misc/opaque", 0o644)
	r.mkdir("src/compress", 0o755)
	r.mkdir("src/compress/gzip", 0o750)
	r.writeNew("src/compress/gzip/new.go", "package gzip\n", 0o644)
	r.wantNames("src/compress", "gzip")
	r.wantNames("src/compress/gzip", "new.go")
	r.writeNew("src/crypto/sha256", "a file where a directory was\n", 0o644)
	r.wantContent("src/crypto/sha256", "a file where a directory was\n")
}

func stepDeleteTar(r *run) {
	r.unlink(TarPath)
	r.rmdir(path.Dir(TarPath))
	r.wantGone(path.Dir(TarPath))
}
