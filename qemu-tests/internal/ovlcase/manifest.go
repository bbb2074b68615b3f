package ovlcase

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// An Entry is one object of a manifest.
type Entry struct {
	Path string `json:"path"` // slash-separated, relative to the root ("." for it)
	// Type is dir, file, symlink, fifo, socket, "chr M:N" or "blk M:N".
	Type     string `json:"type"`
	Mode     uint32 `json:"mode"` // permission bits with setuid, setgid, sticky
	UID, GID uint32
	Size     int64 `json:"size,omitempty"` // but for directories (unless raw)
	// Content is "sha256:HEX" of a regular file's data, or a symlink's
	// target.
	Content string   `json:"content,omitempty"`
	Xattrs  []string `json:"xattrs,omitempty"` // name="value", sorted
	Nlink   uint64   `json:"nlink,omitempty"`  // but for directories (unless raw)
	Mtime   int64    `json:"mtime"`            // ns since the epoch
	// Raw manifests only.
	Ctime int64  `json:"ctime,omitempty"`
	Ino   uint64 `json:"ino,omitempty"`
}

// Whiteout reports whether e is an overlay whiteout (a character device
// 0/0), as a raw manifest of a layer shows it.
func (e *Entry) Whiteout() bool { return e.Type == "chr 0:0" }

// A Field is one compared property of an entry.
type Field struct{ Name, Value string }

// Fields lists what is compared of e. An mtime at or after recent (ns; 0
// for never) reads "recent": two runs of the same steps agree on which
// objects they changed, not on when.
func (e *Entry) Fields(recent int64) []Field {
	mtime := time.Unix(0, e.Mtime).UTC().Format(time.RFC3339Nano)
	if recent != 0 && e.Mtime >= recent {
		mtime = "recent"
	}
	fs := []Field{
		{"type", e.Type},
		{"mode", fmt.Sprintf("%#o", e.Mode)},
		{"owner", fmt.Sprintf("%d:%d", e.UID, e.GID)},
		{"size", strconv.FormatInt(e.Size, 10)},
		{"content", e.Content},
		{"xattrs", strings.Join(e.Xattrs, " ")},
		{"nlink", strconv.FormatUint(e.Nlink, 10)},
		{"mtime", mtime},
	}
	if e.Ctime != 0 || e.Ino != 0 {
		fs = append(fs,
			Field{"ctime", time.Unix(0, e.Ctime).UTC().Format(time.RFC3339Nano)},
			Field{"ino", strconv.FormatUint(e.Ino, 10)})
	}
	return fs
}

// Summary describes e on one line.
func (e *Entry) Summary() string {
	var b strings.Builder
	for _, f := range e.Fields(0) {
		if f.Value != "" && f.Value != "0" {
			fmt.Fprintf(&b, "%s=%s ", f.Name, f.Value)
		}
	}
	return strings.TrimSpace(b.String())
}

// A Manifest is a tree's entries by path.
type Manifest map[string]*Entry

// Paths returns the manifest's paths, sorted.
func (m Manifest) Paths() []string {
	ps := make([]string, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Encode writes m as JSON lines sorted by path.
func (m Manifest) Encode(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, p := range m.Paths() {
		if err := enc.Encode(m[p]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Decode reads a manifest Encode wrote.
func Decode(r io.Reader) (Manifest, error) {
	m := Manifest{}
	dec := json.NewDecoder(r)
	for {
		var e Entry
		if err := dec.Decode(&e); err == io.EOF {
			return m, nil
		} else if err != nil {
			return m, fmt.Errorf("manifest entry %d: %v", len(m)+1, err)
		}
		if _, dup := m[e.Path]; dup {
			return m, fmt.Errorf("manifest lists %s twice", e.Path)
		}
		m[e.Path] = &e
	}
}

// A Diff is one difference between two manifests.
type Diff struct {
	Path, Field string
	A, B        string
}

func (d Diff) String() string {
	show := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	return fmt.Sprintf("%s: %s: %s vs %s", d.Path, d.Field, show(d.A), show(d.B))
}

// Compare lists the differences between a and b by path, then field;
// recentA and recentB are the Fields thresholds of each side.
func Compare(a, b Manifest, recentA, recentB int64) []Diff {
	var diffs []Diff
	paths := slices.Compact(slices.Sorted(func(yield func(string) bool) {
		for p := range a {
			if !yield(p) {
				return
			}
		}
		for p := range b {
			if !yield(p) {
				return
			}
		}
	}))
	for _, p := range paths {
		ea, eb := a[p], b[p]
		switch {
		case ea == nil:
			diffs = append(diffs, Diff{p, "exists", "absent", eb.Summary()})
			continue
		case eb == nil:
			diffs = append(diffs, Diff{p, "exists", ea.Summary(), "absent"})
			continue
		}
		fa, fb := ea.Fields(recentA), eb.Fields(recentB)
		for i := range min(len(fa), len(fb)) {
			if fa[i] != fb[i] {
				diffs = append(diffs, Diff{p, fa[i].Name, fa[i].Value, fb[i].Value})
			}
		}
	}
	return diffs
}

// WalkOptions tune Walk.
type WalkOptions struct {
	// Raw also records ctime, inode numbers, and directories' size and
	// nlink: for a layer read directly, which must not change at all.
	Raw bool
	// Skip leaves out a path and, for a directory, everything below it.
	Skip func(rel string) bool
	// Workers is how many directories are read at once (default 1).
	Workers int
	// Tick, if not nil, is called for every object listed.
	Tick func()
}

// Walk makes a manifest of the tree at root (root included, as ".").
func Walk(root string, o WalkOptions) (Manifest, error) {
	m := Manifest{}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, max(o.Workers, 1))
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	buf := sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
	var visit func(rel string)
	visit = func(rel string) {
		defer wg.Done()
		sem <- struct{}{}
		var subdirs []string
		ents, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			fail(fmt.Errorf("readdir %s: %s", rel, ErrText(err)))
		}
		for _, de := range ents {
			crel := path.Join(rel, de.Name())
			if o.Skip != nil && o.Skip(crel) {
				continue
			}
			b := buf.Get().(*[]byte)
			e, err := entry(root, crel, o.Raw, *b)
			buf.Put(b)
			if err != nil {
				fail(err)
				continue
			}
			mu.Lock()
			m[crel] = e
			mu.Unlock()
			if o.Tick != nil {
				o.Tick()
			}
			if e.Type == "dir" {
				subdirs = append(subdirs, crel)
			}
		}
		<-sem
		for _, d := range subdirs {
			wg.Add(1)
			go visit(d)
		}
	}
	e, err := entry(root, ".", o.Raw, make([]byte, 1<<20))
	if err != nil {
		return nil, err
	}
	m["."] = e
	wg.Add(1)
	visit(".")
	wg.Wait()
	return m, errors.Join(errs...)
}

// entry describes the object at root/rel.
func entry(root, rel string, raw bool, buf []byte) (*Entry, error) {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("lstat %s: %s", rel, ErrText(err))
	}
	e := &Entry{Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano(),
		Size: st.Size, Nlink: st.Nlink}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = "dir"
		if !raw {
			e.Size, e.Nlink = 0, 0 // an overlay's are its own business
		}
	case unix.S_IFREG:
		e.Type = "file"
		sum, n, err := hashFile(p, buf)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %s", rel, ErrText(err))
		}
		e.Content = "sha256:" + sum
		if n != st.Size {
			e.Content += fmt.Sprintf(" (%d bytes read, lstat says %d)", n, st.Size)
		}
	case unix.S_IFLNK:
		e.Type = "symlink"
		target, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("readlink %s: %s", rel, ErrText(err))
		}
		e.Content = target
	case unix.S_IFIFO:
		e.Type = "fifo"
	case unix.S_IFSOCK:
		e.Type = "socket"
	case unix.S_IFCHR:
		e.Type = fmt.Sprintf("chr %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		e.Type = fmt.Sprintf("blk %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	default:
		e.Type = fmt.Sprintf("mode %#o", st.Mode)
	}
	xs, err := Xattrs(p)
	if err != nil {
		return nil, fmt.Errorf("xattrs of %s: %v", rel, err)
	}
	e.Xattrs = xs
	if raw {
		e.Ctime, e.Ino = st.Ctim.Nano(), st.Ino
	}
	return e, nil
}

func hashFile(p string, buf []byte) (string, int64, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, err
	}
	defer unix.Close(fd)
	h := sha256.New()
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", total, err
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		total += int64(n)
	}
	return hex.EncodeToString(h.Sum(nil)), total, nil
}

// Xattrs lists the extended attributes of p (not following a symlink) as
// name="value", sorted.
func Xattrs(p string) ([]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("llistxattr: %s", ErrText(err))
	}
	if size == 0 {
		return nil, nil
	}
	list := make([]byte, size)
	n, err := unix.Llistxattr(p, list)
	if err != nil {
		return nil, fmt.Errorf("llistxattr: %s", ErrText(err))
	}
	var out []string
	for name := range strings.SplitSeq(string(list[:n]), "\x00") {
		if name == "" {
			continue // the end; or overlayfs's size query counted names it then hides
		}
		vsize, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s: %s", name, ErrText(err))
		}
		v := make([]byte, vsize)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s: %s", name, ErrText(err))
		}
		out = append(out, name+"="+strconv.Quote(string(v[:vn])))
	}
	slices.Sort(out)
	return out, nil
}

// AuditUpper checks that an upper layer (its raw manifest) holds the
// changes between two views of the union (before and after the steps) and
// nothing else: every object in it is a whiteout of a path the union no
// longer shows, an object the union shows new or changed, or a directory
// with a change below it. A copy-up without a change (of a file only read,
// a directory only listed) is a problem, as is anything the union does not
// show.
func AuditUpper(upper, before, after Manifest) []string {
	// Paths that changed, and the directories above them.
	changed := map[string]bool{}
	below := map[string]bool{}
	for _, m := range []Manifest{before, after} {
		for p := range m {
			b, a := before[p], after[p]
			if b != nil && a != nil && slices.Equal(b.Fields(0), a.Fields(0)) {
				continue
			}
			changed[p] = true
			for q := path.Dir(p); q != "."; q = path.Dir(q) {
				below[q] = true
			}
		}
	}
	var problems []string
	for _, p := range upper.Paths() {
		if p == "." {
			continue
		}
		u, b, a := upper[p], before[p], after[p]
		var why string
		switch {
		case u.Whiteout() && b == nil:
			why = "a whiteout of a path no lower layer shows"
		case u.Whiteout() && a != nil:
			why = "a whiteout of a path the union still shows"
		case u.Whiteout():
			continue // of a deleted path
		case a == nil:
			why = "an object the union does not show"
		case changed[p] || (u.Type == "dir" && below[p]):
			continue
		case u.Type == "dir":
			why = "a directory the union shows unchanged, with nothing changed below it"
		default:
			why = "an object the union shows unchanged (a copy-up without a change)"
		}
		problems = append(problems, fmt.Sprintf("upper holds %s (%s): %s", p, u.Type, why))
	}
	return problems
}
