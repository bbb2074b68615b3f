package ovlcase

import (
	"archive/tar"
	"bufio"
	"encoding/binary"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Paths inside the union (and the layers), slash-separated.
const (
	// TarPath is the tarball the guest untars into the union's root.
	TarPath = "data/src.tar"
	// ManifestDir holds the guest's manifest of the union; it and its
	// contents are left out of every comparison.
	ManifestDir = ".gvt"
	// ManifestPath is the guest's manifest of the union after the steps.
	ManifestPath = ManifestDir + "/manifest"
)

// FixtureTime is the mtime of every object BuildLowers makes; TarTime that
// of every entry of the tarball. Anything newer was changed by a step.
var (
	FixtureTime = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	TarTime     = time.Date(2022, 6, 7, 8, 9, 10, 0, time.UTC)
)

// l2Trees and l1Trees are the directories of Go's source (under
// GOROOT/src) copied into each layer, as src/<dir>.
var (
	l2Trees  = []string{"encoding", "archive", "compress", "text", "html", "sort", "strings", "fmt"}
	l1Trees  = []string{"encoding/json", "image", "crypto/sha256"}
	tarTrees = []string{"crypto", "go", "internal", "net"}
)

// tarMaxFile leaves the odd large binary of Go's tree out of the tarball.
const tarMaxFile = 1 << 20

// requiredSource are files of Go's source the steps change by name.
var requiredSource = []string{
	"encoding/json/encode.go", "text/template/exec.go", "html/template/escape.go",
	"image/png/paeth.go", "sort/sort.go", "fmt/print.go", "fmt/doc.go", "fmt/format.go",
	"strings/strings.go", "go/ast/ast.go", "net/http", "text/scanner",
	"encoding/base64/base64.go", "encoding/hex/hex.go", "encoding/csv/reader.go", "image/jpeg",
	"strings/reader.go", "text/scanner/scanner.go",
}

// FixtureStats says how big the layers came out.
type FixtureStats struct {
	L1, L2     int // objects in each layer
	TarEntries int
	TarBytes   int64
}

// BuildLowers fills the empty directories l1 (top) and l2 (bottom) with the
// lower layers, from Go's source tree at goroot/src. It runs as root on the
// host: it sets owners and trusted.overlay.opaque, and makes a whiteout.
func BuildLowers(l1, l2, goroot string) (FixtureStats, error) {
	var st FixtureStats
	src := filepath.Join(goroot, "src")
	for _, r := range requiredSource {
		if _, err := os.Stat(filepath.Join(src, r)); err != nil {
			return st, fmt.Errorf("the Go source tree lacks what the overlay case changes: %v", err)
		}
	}
	for _, d := range l2Trees {
		if err := copyTree(filepath.Join(src, d), filepath.Join(l2, "src", d)); err != nil {
			return st, err
		}
	}
	for _, d := range l1Trees {
		if err := copyTree(filepath.Join(src, d), filepath.Join(l1, "src", d)); err != nil {
			return st, err
		}
	}
	b := builder{}
	// L2's hand-made objects.
	b.file(l2, "src/encoding/json/LAYER", "L2\n", 0o644)
	b.file(l2, "misc/hello.txt", "hello from L2\n", 0o644)
	b.file(l2, "misc/owned.txt", "owned by 1234:5678\n", 0o640)
	b.chown(l2, "misc/owned.txt", 1234, 5678)
	b.file(l2, "misc/chown.txt", "chown me\n", 0o644)
	b.file(l2, "misc/setuid", "#!/bin/sh\necho setuid\n", 0o755)
	b.file(l2, "misc/times.txt", "times\n", 0o644)
	b.file(l2, "misc/meta-move.txt", "chmod, then moved: metadata copied up, data still in L2\n", 0o644)
	b.file(l2, "misc/xattr.txt", "xattrs\n", 0o644)
	b.xattr(l2, "misc/xattr.txt", "user.a", "1")
	b.xattr(l2, "misc/xattr.txt", "user.b", "two")
	b.file(l2, "misc/exec.sh", "#!/bin/sh\necho L2\n", 0o755)
	b.file(l2, "misc/link-a", "linked in L2\n", 0o644)
	b.link(l2, "misc/link-a", "misc/link-b")
	b.symlink(l2, "hello.txt", "misc/sym")
	b.symlink(l2, "nowhere", "misc/dangling")
	b.file(l2, "misc/shadowed.txt", "from L2\n", 0o644)
	b.file(l2, "misc/hidden.txt", "hidden by L1's whiteout\n", 0o644)
	b.file(l2, "misc/opaque/l2-only.txt", "hidden by L1's opaque directory\n", 0o644)
	b.file(l2, "misc/exch-a", "exchange a, from L2\n", 0o644)
	b.bytes(l2, "misc/big.bin", pseudoRandom(4<<20, 1), 0o644)
	b.sparse(l2, "misc/sparse.bin", 2<<20, "end of a sparse file\n")
	b.file(l2, "misc/deep/a/b/c/d/e/f.txt", "deep\n", 0o644)
	b.chown(l2, "misc/deep/a/b", 42, 43)
	b.xattr(l2, "misc/deep/a", "user.deep", "yes")
	b.chown(l2, "src/fmt/format.go", 100, 200)
	// L1's.
	b.file(l1, "src/encoding/json/LAYER", "L1\n", 0o644)
	b.file(l1, "misc/shadowed.txt", "from L1\n", 0o600)
	b.whiteout(l1, "misc/hidden.txt")
	b.file(l1, "misc/opaque/l1-only.txt", "in L1's opaque directory\n", 0o644)
	b.xattr(l1, "misc/opaque", "trusted.overlay.opaque", "y")
	b.file(l1, "misc/l1only/x/y.txt", "only in L1\n", 0o644)
	b.file(l1, "misc/l1-link-a", "linked in L1\n", 0o644)
	b.link(l1, "misc/l1-link-a", "misc/l1-link-b")
	b.file(l1, "misc/exch-b", "exchange b, from L1\n", 0o644)
	b.file(l1, "misc/dirx/inside.txt", "inside\n", 0o644)
	b.xattr(l1, "misc/dirx", "user.dir", "L1")
	b.chown(l1, "src/image", 1000, 1000)
	b.chmod(l1, "src/image/png", 0o750)
	if b.err != nil {
		return st, b.err
	}
	tarFile := filepath.Join(l2, TarPath)
	if err := os.MkdirAll(filepath.Dir(tarFile), 0o755); err != nil {
		return st, err
	}
	var err error
	if st.TarEntries, st.TarBytes, err = writeTarball(tarFile, src); err != nil {
		return st, err
	}
	for _, l := range []struct {
		dir string
		n   *int
	}{{l1, &st.L1}, {l2, &st.L2}} {
		if *l.n, err = fixTimes(l.dir); err != nil {
			return st, err
		}
	}
	return st, nil
}

// builder makes the hand-made objects of a layer, keeping the first error.
type builder struct{ err error }

func (b *builder) do(f func() error) {
	if b.err == nil {
		b.err = f()
	}
}

func (b *builder) bytes(layer, rel string, data []byte, mode os.FileMode) {
	b.do(func() error {
		p := filepath.Join(layer, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
		return os.Chmod(p, mode) // past the umask
	})
}

func (b *builder) file(layer, rel, data string, mode os.FileMode) {
	b.bytes(layer, rel, []byte(data), mode)
}

func (b *builder) sparse(layer, rel string, size int64, tail string) {
	b.do(func() error {
		f, err := os.OpenFile(filepath.Join(layer, rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte(tail), size-int64(len(tail))); err != nil {
			return err
		}
		return f.Close()
	})
}

func (b *builder) link(layer, old, new string) {
	b.do(func() error { return os.Link(filepath.Join(layer, old), filepath.Join(layer, new)) })
}

func (b *builder) symlink(layer, target, rel string) {
	b.do(func() error { return os.Symlink(target, filepath.Join(layer, rel)) })
}

func (b *builder) whiteout(layer, rel string) {
	b.do(func() error { return unix.Mknod(filepath.Join(layer, rel), unix.S_IFCHR|0o600, 0) })
}

func (b *builder) xattr(layer, rel, name, value string) {
	b.do(func() error { return unix.Lsetxattr(filepath.Join(layer, rel), name, []byte(value), 0) })
}

func (b *builder) chown(layer, rel string, uid, gid int) {
	b.do(func() error { return os.Lchown(filepath.Join(layer, rel), uid, gid) })
}

func (b *builder) chmod(layer, rel string, mode os.FileMode) {
	b.do(func() error { return os.Chmod(filepath.Join(layer, rel), mode) })
}

// pseudoRandom returns n bytes that depend only on seed.
func pseudoRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6f766c))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// copyTree copies the directories and regular files of src to dst (modes
// kept, owned by root).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			return os.Chmod(out, info.Mode().Perm())
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, data, 0o600); err != nil {
				return err
			}
			return os.Chmod(out, info.Mode().Perm())
		}
		return nil // Go's tree has no other kinds
	})
}

// fixTimes gives every object under dir (dir included) FixtureTime as
// atime and mtime, directories last, and returns how many there are.
func fixTimes(dir string) (int, error) {
	var dirs []string
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		return setTimes(p, FixtureTime, FixtureTime)
	})
	if err != nil {
		return n, err
	}
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := setTimes(d, FixtureTime, FixtureTime); err != nil {
			return n, err
		}
	}
	return n, nil
}

func setTimes(p string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// writeTarball writes src/<tarTrees> of Go's source to path as a tar
// archive (names "src/..."), with TarTime, varied owners, and every 40th
// file followed by a symlink (NAME.sym -> NAME) and a hard link (NAME.hl).
func writeTarball(path, goSrc string) (entries int, size int64, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	files := 0
	add := func(h *tar.Header, data []byte) error {
		h.ModTime = TarTime
		h.Format = tar.FormatPAX
		entries++
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, top := range tarTrees {
		err := filepath.WalkDir(filepath.Join(goSrc, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(goSrc, p)
			name := "src/" + filepath.ToSlash(rel)
			info, err := d.Info()
			if err != nil {
				return err
			}
			owner := entries % 3
			h := &tar.Header{Name: name, Mode: int64(info.Mode().Perm()), Uid: 1000 + owner, Gid: 100 + owner%2}
			switch {
			case d.IsDir():
				h.Typeflag, h.Name = tar.TypeDir, name+"/"
				return add(h, nil)
			case !d.Type().IsRegular() || info.Size() > tarMaxFile:
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
			if err := add(h, data); err != nil {
				return err
			}
			if files++; files%40 != 0 {
				return nil
			}
			base := name[strings.LastIndexByte(name, '/')+1:]
			if err := add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name + ".sym", Linkname: base, Mode: 0o777, Uid: h.Uid, Gid: h.Gid}, nil); err != nil {
				return err
			}
			return add(&tar.Header{Typeflag: tar.TypeLink, Name: name + ".hl", Linkname: name, Mode: h.Mode, Uid: h.Uid, Gid: h.Gid}, nil)
		})
		if err != nil {
			return entries, 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return entries, 0, err
	}
	if err := bw.Flush(); err != nil {
		return entries, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return entries, 0, err
	}
	return entries, fi.Size(), f.Close()
}
