package overlaytest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An Entry is one object of a manifest: what lstat, readlink, the xattr
// calls and a read of the contents say about it, normalised so the two
// sides can be compared field by field.
type Entry struct {
	// Path is slash-separated and relative to the manifest's root ("."
	// for the root itself).
	Path string
	// Type is dir, file, symlink, fifo, socket, "chr M:N", "blk M:N", or
	// (upper manifests only) whiteout for a character device 0/0.
	Type string
	// Mode holds the permission bits with setuid, setgid and sticky.
	Mode     uint32
	UID, GID uint32
	Size     int64
	// Blocks is st_blocks, kept for regular files only (holes and
	// metacopy files show there).
	Blocks int64
	// Content is the data of a regular file (quoted when short and
	// printable, else a SHA-256 prefix) or the target of a symlink.
	Content string
	// Xattrs lists name=value, sorted; upper manifests normalise the
	// overlay's private xattrs (see UpperManifest).
	Xattrs []string
	Nlink  uint64
	// Mtime is "fixture" for FixtureTime, "recent" for a time since the
	// case started, else the time itself.
	Mtime string
	// Identity stands for st_ino, which differs between the sides by
	// nature: see the trackers in diff_test.go. Merged manifests label
	// every inode by where and when it was first seen; upper manifests
	// name the first path sharing the inode, for hard links only.
	Identity string
	// Checks lists the manifest's own consistency problems: d_type or
	// d_ino of the readdir entry not matching lstat, st_dev not the
	// root's, a name listed twice.
	Checks []string
	// Ino is the raw st_ino (never compared across sides).
	Ino uint64
}

// A Manifest is a tree's entries by path.
type Manifest struct {
	Entries map[string]*Entry
}

// Paths returns the manifest's paths, sorted.
func (m *Manifest) Paths() []string {
	ps := make([]string, 0, len(m.Entries))
	for p := range m.Entries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// String lists the manifest, one entry per line (for logs).
func (m *Manifest) String() string {
	var b strings.Builder
	for _, p := range m.Paths() {
		b.WriteString(p)
		for _, f := range m.Entries[p].fields() {
			if f.value != "" {
				fmt.Fprintf(&b, " %s=%s", f.name, f.value)
			}
		}
		if cs := m.Entries[p].Checks; len(cs) > 0 {
			fmt.Fprintf(&b, " checks=%s", strings.Join(cs, "; "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

type field struct{ name, value string }

// fields is what is compared of an entry, in the order diffs list it.
func (e *Entry) fields() []field {
	fs := []field{
		{"type", e.Type},
		{"mode", fmt.Sprintf("%#o", e.Mode)},
		{"owner", fmt.Sprintf("%d:%d", e.UID, e.GID)},
		{"size", strconv.FormatInt(e.Size, 10)},
	}
	if e.Type == "file" {
		fs = append(fs, field{"blocks", strconv.FormatInt(e.Blocks, 10)})
	}
	fs = append(fs,
		field{"content", e.Content},
		field{"xattrs", strings.Join(e.Xattrs, " ")},
		field{"nlink", strconv.FormatUint(e.Nlink, 10)},
		field{"mtime", e.Mtime},
		field{"st_ino", e.Identity},
	)
	return fs
}

// summary is a one-line description of an entry for "exists" diffs.
func (e *Entry) summary() string {
	s := fmt.Sprintf("%s %#o %d:%d size %d", e.Type, e.Mode, e.UID, e.GID, e.Size)
	if e.Content != "" {
		s += " content " + e.Content
	}
	return s
}

// A Diff is one difference between the kernel's side and ours.
type Diff struct {
	// Where names the step and the view: `step 3 "chmod a 0600": merged`.
	Where string
	// Path is the object ("" for a step's result).
	Path string
	// Field is what differs: result, exists, or an Entry field.
	Field        string
	Kernel, Ours string
}

// String formats the difference for a test log.
func (d Diff) String() string {
	p := d.Path
	if p == "" {
		p = "-"
	}
	return fmt.Sprintf("%s: %s: %s: kernel %s, ours %s", d.Where, p, d.Field, show(d.Kernel), show(d.Ours))
}

func show(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// CompareManifests lists the differences between the kernel's manifest k
// and ours o, by path and then field (Checks excepted: see
// CompareChecks).
func CompareManifests(where string, k, o *Manifest) []Diff {
	var diffs []Diff
	paths := map[string]bool{}
	for p := range k.Entries {
		paths[p] = true
	}
	for p := range o.Entries {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		ke, ko := k.Entries[p], o.Entries[p]
		switch {
		case ke == nil:
			diffs = append(diffs, Diff{where, p, "exists", "absent", ko.summary()})
			continue
		case ko == nil:
			diffs = append(diffs, Diff{where, p, "exists", ke.summary(), "absent"})
			continue
		}
		kf, of := ke.fields(), ko.fields()
		if len(kf) != len(of) { // one is a regular file, the other not
			diffs = append(diffs, Diff{where, p, "type", ke.Type, ko.Type})
			continue
		}
		for i := range kf {
			if kf[i].value != of[i].value {
				diffs = append(diffs, Diff{where, p, kf[i].name, kf[i].value, of[i].value})
			}
		}
	}
	return diffs
}

// CompareChecks lists the paths whose consistency checks in got are not
// empty and differ from those in ref. The checks are required of ours
// (d_ino equals st_ino, d_type matches, one st_dev, no name twice), but
// kernel overlayfs breaks some itself (the d_ino of a merged directory
// whose upper parent is not marked impure is the upper's inode number,
// while its st_ino is the origin's): where ref, the kernel, shows the same
// problem, it is not counted.
func CompareChecks(where string, ref, got *Manifest) []Diff {
	var diffs []Diff
	for _, p := range got.Paths() {
		g := got.Entries[p]
		if len(g.Checks) == 0 {
			continue
		}
		var r []string
		if e := ref.Entries[p]; e != nil {
			r = e.Checks
		}
		if strings.Join(r, "; ") != strings.Join(g.Checks, "; ") {
			diffs = append(diffs, Diff{where, p, "checks", strings.Join(r, "; "), strings.Join(g.Checks, "; ")})
		}
	}
	return diffs
}

// dirent is one linux_dirent64 record.
type dirent struct {
	ino  uint64
	typ  uint8
	name string
}

// readDir lists a directory with getdents64, keeping d_ino and d_type,
// "." and ".." included.
func readDir(dir string) ([]dirent, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	var out []dirent
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = parseDirents(buf[:n], out)
	}
}

// parseDirents decodes linux_dirent64 records: u64 d_ino, s64 d_off, u16
// d_reclen, u8 d_type, then the NUL-terminated name.
func parseDirents(b []byte, out []dirent) []dirent {
	for len(b) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{ino: binary.NativeEndian.Uint64(b[0:8]), typ: b[18], name: string(name)})
		b = b[reclen:]
	}
	return out
}

func dtypeName(t uint8) string {
	switch t {
	case unix.DT_DIR:
		return "dir"
	case unix.DT_REG:
		return "file"
	case unix.DT_LNK:
		return "symlink"
	case unix.DT_FIFO:
		return "fifo"
	case unix.DT_SOCK:
		return "socket"
	case unix.DT_CHR:
		return "chr"
	case unix.DT_BLK:
		return "blk"
	case unix.DT_UNKNOWN:
		return "unknown"
	}
	return fmt.Sprintf("d_type %d", t)
}

func modeDType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	}
	return "unknown"
}

// MergedManifest walks the merged view below root (a mount point), with
// readdir, lstat, listxattr and getxattr and a read of every regular file
// and symlink, as a user of the mount sees them. since is when the case
// started (for Mtime).
func MergedManifest(root string, since time.Time) (*Manifest, error) {
	return walk(root, since, false)
}

// UpperManifest walks an upper directory on the host (not through any
// overlay) and normalises what differs between two correct overlays by
// nature:
//
//   - a character device 0/0 is Type whiteout, with no nlink, identity or
//     mtime (the kernel links its whiteouts to one inode, and renaming
//     over a whiteout moves that whiteout to the source's name);
//   - trusted.overlay.opaque, .redirect, .nlink, .protattr and .whiteout
//     are compared by value (their meaning is their value);
//   - an absolute redirect on a non-directory (a hard-linked metacopy
//     file) by its form only: it names one of the lower inode's paths,
//     and FUSE's LINK does not say which name the link was made through;
//   - trusted.overlay.origin on non-directories, .metacopy and .upper by
//     presence only (they hold file handles of the fixture's layers or a
//     digest): origin is the copy-up record that keeps st_ino across a
//     later mount and that index=on hard links build on;
//   - left out: trusted.overlay.uuid (mount-time record of uuid=on),
//     origin on directories (the kernel also adds it lazily, at lookup, to
//     merged upper directories and to the upper root, with index=on) and
//     impure (a readdir hint derived from the children's origin and
//     redirect xattrs). What these serve, d_ino and st_ino under the
//     kernel, the round trip checks;
//   - anything else, escaped trusted.overlay.overlay.* included, by value.
//
// The work directory is never compared: its index names are file handles,
// and its work/ directory is the implementation's scratch space.
func UpperManifest(root string, since time.Time) (*Manifest, error) {
	return walk(root, since, true)
}

func walk(root string, since time.Time, upper bool) (*Manifest, error) {
	m := &Manifest{Entries: map[string]*Entry{}}
	var rst unix.Stat_t
	if err := unix.Lstat(root, &rst); err != nil {
		return nil, err
	}
	var visit func(rel, full string, st *unix.Stat_t, checks []string) error
	visit = func(rel, full string, st *unix.Stat_t, checks []string) error {
		e, err := newEntry(rel, full, st, since, upper)
		if err != nil {
			return err
		}
		e.Checks = checks
		if !upper && st.Dev != rst.Dev {
			e.Checks = append(e.Checks, "st_dev differs from the root's")
		}
		m.Entries[rel] = e
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		ents, err := readDir(full)
		if err != nil {
			return fmt.Errorf("readdir %s: %w", full, err)
		}
		count := map[string]int{}
		for _, d := range ents {
			count[d.name]++
		}
		for _, d := range ents {
			if d.name == "." && !upper && d.ino != st.Ino {
				e.Checks = append(e.Checks, "d_ino of . differs from st_ino")
			}
			if d.name == "." || d.name == ".." || count[d.name] == 0 {
				continue
			}
			var cs []string
			if count[d.name] > 1 {
				cs = append(cs, fmt.Sprintf("listed %d times", count[d.name]))
			}
			count[d.name] = 0
			cfull := filepath.Join(full, d.name)
			var cst unix.Stat_t
			if err := unix.Lstat(cfull, &cst); err != nil {
				cs = append(cs, fmt.Sprintf("listed but lstat fails: %v", err))
				m.Entries[path.Join(rel, d.name)] = &Entry{Path: path.Join(rel, d.name), Type: "?", Checks: cs}
				continue
			}
			if !upper {
				if d.typ != unix.DT_UNKNOWN && dtypeName(d.typ) != modeDType(cst.Mode) {
					cs = append(cs, fmt.Sprintf("d_type %s but lstat says %s", dtypeName(d.typ), modeDType(cst.Mode)))
				}
				if d.ino != cst.Ino {
					cs = append(cs, "d_ino differs from st_ino")
				}
			}
			if err := visit(path.Join(rel, d.name), cfull, &cst, cs); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(".", root, &rst, nil); err != nil {
		return nil, err
	}
	if upper {
		labelUpper(m)
	}
	return m, nil
}

// labelUpper names, for every non-whiteout inode with more than one path
// in the manifest, the first such path.
func labelUpper(m *Manifest) {
	first := map[uint64]string{}
	n := map[uint64]int{}
	for _, p := range m.Paths() {
		e := m.Entries[p]
		if e.Type == "whiteout" || e.Type == "dir" {
			continue
		}
		if _, ok := first[e.Ino]; !ok {
			first[e.Ino] = p
		}
		n[e.Ino]++
	}
	for _, e := range m.Entries {
		if n[e.Ino] > 1 && e.Type != "whiteout" && e.Type != "dir" {
			e.Identity = "same inode as " + first[e.Ino]
		}
	}
}

func newEntry(rel, full string, st *unix.Stat_t, since time.Time, upper bool) (*Entry, error) {
	e := &Entry{
		Path:  rel,
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		Size:  st.Size,
		Nlink: uint64(st.Nlink),
		Mtime: normTime(st.Mtim, since),
		Ino:   st.Ino,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Type = "dir"
	case unix.S_IFREG:
		e.Type = "file"
		e.Blocks = st.Blocks
		data, err := os.ReadFile(full)
		if err != nil {
			e.Content = fmt.Sprintf("(read: %v)", errnoOf(err))
		} else {
			e.Content = contentString(data)
		}
	case unix.S_IFLNK:
		e.Type = "symlink"
		t, err := os.Readlink(full)
		if err != nil {
			e.Content = fmt.Sprintf("(readlink: %v)", errnoOf(err))
		} else {
			e.Content = strconv.Quote(t)
		}
	case unix.S_IFIFO:
		e.Type = "fifo"
	case unix.S_IFSOCK:
		e.Type = "socket"
	case unix.S_IFCHR:
		e.Type = fmt.Sprintf("chr %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		if upper && st.Rdev == 0 {
			e.Type = "whiteout"
			e.Nlink = 0
			e.Ino = 0
			e.Mtime = ""
		}
	case unix.S_IFBLK:
		e.Type = fmt.Sprintf("blk %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	xs, err := xattrs(full)
	if err != nil {
		e.Xattrs = []string{fmt.Sprintf("(listxattr: %v)", errnoOf(err))}
		return e, nil
	}
	for _, x := range xs {
		name, value := x[0], x[1]
		if upper {
			var keep bool
			if value, keep = normUpperXattr(rel, name, value, e.Type == "dir"); !keep {
				continue
			}
		} else {
			value = xattrValue(value)
		}
		e.Xattrs = append(e.Xattrs, name+"="+value)
	}
	sort.Strings(e.Xattrs)
	return e, nil
}

// normUpperXattr is the normalisation UpperManifest documents.
func normUpperXattr(rel, name, value string, isDir bool) (string, bool) {
	if !strings.HasPrefix(name, xattrPrefix) || strings.HasPrefix(name, xattrPrefix+"overlay.") {
		return xattrValue(value), true
	}
	switch strings.TrimPrefix(name, xattrPrefix) {
	case "uuid", "impure":
		return "", false
	case "origin":
		if isDir {
			return "", false
		}
		return "(present)", true
	case "metacopy", "upper":
		return "(present)", true
	case "redirect":
		if !isDir && strings.HasPrefix(value, "/") {
			// An absolute redirect of a hard-linked metacopy file names
			// one of the lower inode's paths: which one depends on the
			// name the link was made through, which FUSE's LINK does
			// not carry (only the node). Any of them finds the data.
			return "(absolute)", true
		}
	}
	return xattrValue(value), true
}

func xattrValue(v string) string {
	if len(v) <= 64 && isPrintable(v) {
		return strconv.Quote(v)
	}
	sum := sha256.Sum256([]byte(v))
	return fmt.Sprintf("(%d bytes sha256:%s)", len(v), hex.EncodeToString(sum[:6]))
}

func contentString(data []byte) string {
	if len(data) <= 40 && isPrintable(string(data)) {
		return strconv.Quote(string(data))
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("(%d bytes sha256:%s)", len(data), hex.EncodeToString(sum[:6]))
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\n' || r >= 0x7f {
			return false
		}
	}
	return true
}

func normTime(ts unix.Timespec, since time.Time) string {
	t := time.Unix(ts.Sec, ts.Nsec)
	switch {
	case t.Equal(FixtureTime):
		return "fixture"
	case !t.Before(since.Add(-2*time.Second)) && t.Before(time.Now().Add(time.Minute)):
		return "recent"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// xattrs returns every extended attribute of path (not following a
// symlink) as name, value pairs.
func xattrs(path string) ([][2]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size+256)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v, err := getxattr(path, name)
		if err != nil {
			v = fmt.Sprintf("(getxattr: %v)", errnoOf(err))
		}
		out = append(out, [2]string{name, v})
	}
	return out, nil
}
