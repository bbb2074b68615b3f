package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// The prepared tree, under <shared dir>/vufs-load.
const (
	baseName  = "vufs-load"
	treeDirs  = 20  // tree/d00..d19
	treeFiles = 500 // f000..f499 in each
	lsEntries = 10000
	bigSize   = 64 << 20
	// patternPeriod is the period of the big file's contents: the
	// 8-byte word at offset o holds patternWord(o mod patternPeriod).
	patternPeriod = 1 << 20
)

// mixNames are the workloads, in the order they run.
var mixNames = []string{"lookup-getattr", "read-4k-rand", "write-4k-rand", "read-1m-seq", "write-1m-seq", "create-cycle", "readdirplus"}

func patternWord(o uint64) uint64 { return 0x5a17_0000_0000_0000 ^ o }

// pattern returns two periods of the big file's contents, so that any
// chunk of at most one period starting in the first period is a slice.
func pattern() []byte {
	b := make([]byte, 2*patternPeriod)
	for o := 0; o < len(b); o += 8 {
		binary.LittleEndian.PutUint64(b[o:], patternWord(uint64(o%patternPeriod)))
	}
	return b
}

// prepareTree creates the tree the mixes use under dir, replacing any
// earlier one.
func prepareTree(dir string) error {
	base := filepath.Join(dir, baseName)
	if err := os.RemoveAll(base); err != nil {
		return err
	}
	mk := func(p string) error { return os.MkdirAll(p, 0o755) }
	touch := func(p string) error {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		return unix.Close(fd)
	}
	for _, d := range []string{"tree", "ls", "create"} {
		if err := mk(filepath.Join(base, d)); err != nil {
			return err
		}
	}
	for i := range treeDirs {
		d := filepath.Join(base, "tree", dirName(i))
		if err := mk(d); err != nil {
			return err
		}
		for j := range treeFiles {
			if err := touch(filepath.Join(d, fileName(j))); err != nil {
				return err
			}
		}
	}
	for i := range lsEntries {
		if err := touch(filepath.Join(base, "ls", "e"+strconv.Itoa(100000 + i)[1:])); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(base, "big"))
	if err != nil {
		return err
	}
	p := pattern()[:patternPeriod]
	for range bigSize / patternPeriod {
		if _, err := f.Write(p); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func dirName(i int) string  { return fmt.Sprintf("d%02d", i) }
func fileName(j int) string { return fmt.Sprintf("f%03d", j) }

// actor is one request stream: a slot's sequence of requests.
type actor interface {
	// next lays the next request out in s and returns the reply buffer
	// length to offer.
	next(w *worker, s *slot) (uint32, error)
	// check validates s's reply and moves on.
	check(w *worker, s *slot) error
	// idle reports whether the actor is between sequences (it may stop).
	idle() bool
}

// cname appends name and its NUL to b.
func cname(b []byte, name string) []byte { return append(append(b, name...), 0) }

// entry decodes and checks an EntryOut.
func entry(body []byte, wantMode uint32) (fuseproto.EntryOut, error) {
	var e fuseproto.EntryOut
	if !fuseproto.Decode(body, &e) {
		return e, fmt.Errorf("entry of %d bytes", len(body))
	}
	if e.NodeID == 0 || e.Attr.Ino == 0 || e.Attr.Mode&unix.S_IFMT != wantMode {
		return e, fmt.Errorf("entry node %d ino %d mode %#o", e.NodeID, e.Attr.Ino, e.Attr.Mode)
	}
	return e, nil
}

// lookupGetattr: LOOKUP a random file of the tree, then GETATTR it; the
// lookups are forgotten in batches, as the kernel's dentry cache would
// evict them.
type lookupGetattr struct {
	stage int
	node  uint64
	ino   uint64
	name  string
}

func (a *lookupGetattr) idle() bool { return a.stage == 0 }

func (a *lookupGetattr) next(w *worker, s *slot) (uint32, error) {
	if a.stage == 0 {
		d := w.rnd.IntN(treeDirs)
		a.name = fileName(w.rnd.IntN(treeFiles))
		return 16 + fuseproto.EntryOutSize, s.request(w.c, fuseproto.OpLookup, w.sess.dirs[d], cname(w.scratch[:0], a.name), 0)
	}
	in := fuseproto.GetattrIn{}
	return 16 + fuseproto.AttrOutSize, s.request(w.c, fuseproto.OpGetattr, a.node, fuseproto.Encode(w.scratch[:0], &in), 0)
}

func (a *lookupGetattr) check(w *worker, s *slot) error {
	if a.stage == 0 {
		body, err := s.ok(fuseproto.EntryOutSize)
		if err != nil {
			return fmt.Errorf("LOOKUP %s: %w", a.name, err)
		}
		e, err := entry(body, unix.S_IFREG)
		if err != nil {
			return fmt.Errorf("LOOKUP %s: %w", a.name, err)
		}
		if e.Attr.Size != 0 {
			return fmt.Errorf("LOOKUP %s: size %d", a.name, e.Attr.Size)
		}
		a.node, a.ino, a.stage = e.NodeID, e.Attr.Ino, 1
		return nil
	}
	body, err := s.ok(fuseproto.AttrOutSize)
	if err != nil {
		return fmt.Errorf("GETATTR: %w", err)
	}
	var ao fuseproto.AttrOut
	fuseproto.Decode(body, &ao)
	if ao.Attr.Ino != a.ino || ao.Attr.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("GETATTR: ino %d mode %#o, LOOKUP said ino %d", ao.Attr.Ino, ao.Attr.Mode, a.ino)
	}
	// Only now may the lookup be forgotten: the node is no longer in use.
	w.lookedUp(a.node)
	a.stage = 0
	return nil
}

// rw reads or writes chunks of the big file through the worker's handle:
// random 4 KiB-aligned offsets, or sequential from a per-actor start.
type rw struct {
	write   bool
	chunk   uint32
	random  bool
	off     uint64
	corrupt bool // tests: expect other data
}

func (a *rw) idle() bool { return true }

func (a *rw) next(w *worker, s *slot) (uint32, error) {
	if a.random {
		a.off = uint64(w.rnd.IntN(bigSize/4096)) * 4096
	} else if a.off+uint64(a.chunk) > bigSize {
		a.off = 0
	}
	if a.write {
		in := fuseproto.WriteIn{Fh: w.fh, Offset: a.off, Size: a.chunk}
		s.extra = w.sess.patternBuf(a.off, a.chunk)
		return 16 + 8, s.request(w.c, fuseproto.OpWrite, w.sess.big, fuseproto.Encode(w.scratch[:0], &in), a.chunk)
	}
	in := fuseproto.ReadIn{Fh: w.fh, Offset: a.off, Size: a.chunk}
	return 16 + a.chunk, s.request(w.c, fuseproto.OpRead, w.sess.big, fuseproto.Encode(w.scratch[:0], &in), 0)
}

func (a *rw) check(w *worker, s *slot) error {
	off := a.off
	if !a.random {
		a.off += uint64(a.chunk)
	}
	if a.write {
		body, err := s.ok(8)
		if err != nil {
			return fmt.Errorf("WRITE at %d: %w", off, err)
		}
		var wo fuseproto.WriteOut
		fuseproto.Decode(body, &wo)
		if wo.Size != a.chunk {
			return fmt.Errorf("WRITE at %d: wrote %d of %d bytes", off, wo.Size, a.chunk)
		}
		return nil
	}
	body, err := s.ok(int(a.chunk))
	if err != nil {
		return fmt.Errorf("READ at %d: %w", off, err)
	}
	p := off % patternPeriod
	want := w.sess.pattern[p : p+uint64(a.chunk)]
	if a.corrupt {
		want = w.sess.pattern[p+8 : p+8+uint64(a.chunk)]
	}
	if !bytes.Equal(body, want) {
		return fmt.Errorf("READ at %d: data differs from the file's", off)
	}
	return nil
}

// createCycle: CREATE, WRITE 4 KiB, RELEASE, UNLINK, FORGET.
type createCycle struct {
	stage int
	name  string
	node  uint64
	fh    uint64
	n     int
	id    string
}

func (a *createCycle) idle() bool { return a.stage == 0 }

func (a *createCycle) next(w *worker, s *slot) (uint32, error) {
	dir := w.sess.create
	switch a.stage {
	case 0:
		a.n++
		a.name = a.id + strconv.Itoa(a.n)
		in := fuseproto.CreateIn{Flags: unix.O_RDWR | unix.O_CREAT | unix.O_EXCL, Mode: unix.S_IFREG | 0o644, Umask: 0o022}
		b := fuseproto.Encode(w.scratch[:0], &in)
		return 16 + fuseproto.EntryOutSize + 16, s.request(w.c, fuseproto.OpCreate, dir, cname(b, a.name), 0)
	case 1:
		in := fuseproto.WriteIn{Fh: a.fh, Size: 4096}
		s.extra = w.sess.patternBuf(0, 4096)
		return 16 + 8, s.request(w.c, fuseproto.OpWrite, a.node, fuseproto.Encode(w.scratch[:0], &in), 4096)
	case 2:
		in := fuseproto.ReleaseIn{Fh: a.fh, Flags: unix.O_RDWR}
		return 16, s.request(w.c, fuseproto.OpRelease, a.node, fuseproto.Encode(w.scratch[:0], &in), 0)
	default:
		return 16, s.request(w.c, fuseproto.OpUnlink, dir, cname(w.scratch[:0], a.name), 0)
	}
}

func (a *createCycle) check(w *worker, s *slot) error {
	switch a.stage {
	case 0:
		body, err := s.ok(fuseproto.EntryOutSize + 16)
		if err != nil {
			return fmt.Errorf("CREATE %s: %w", a.name, err)
		}
		e, err := entry(body, unix.S_IFREG)
		if err != nil {
			return fmt.Errorf("CREATE %s: %w", a.name, err)
		}
		var oo fuseproto.OpenOut
		fuseproto.Decode(body[fuseproto.EntryOutSize:], &oo)
		a.node, a.fh = e.NodeID, oo.Fh
	case 1:
		body, err := s.ok(8)
		if err != nil {
			return fmt.Errorf("WRITE %s: %w", a.name, err)
		}
		if binary.LittleEndian.Uint32(body) != 4096 {
			return fmt.Errorf("WRITE %s: wrote %d bytes", a.name, binary.LittleEndian.Uint32(body))
		}
	case 2:
		if _, err := s.ok(0); err != nil {
			return fmt.Errorf("RELEASE %s: %w", a.name, err)
		}
	default:
		if _, err := s.ok(0); err != nil {
			return fmt.Errorf("UNLINK %s: %w", a.name, err)
		}
		a.stage = 0
		return w.c.forget([]fuseproto.ForgetOne{{NodeID: a.node, Nlookup: 1}})
	}
	a.stage++
	return nil
}

// readdirplus: OPENDIR, READDIRPLUS (4 KiB, as the kernel asks) to the
// end, RELEASEDIR, then BATCH_FORGET of every entry looked up.
type readdirplus struct {
	stage   int
	fh      uint64
	off     uint64
	entries int
	forgets map[uint64]uint64
}

func (a *readdirplus) idle() bool { return a.stage == 0 }

func (a *readdirplus) next(w *worker, s *slot) (uint32, error) {
	switch a.stage {
	case 0:
		in := fuseproto.OpenIn{Flags: unix.O_RDONLY | unix.O_DIRECTORY}
		return 16 + 16, s.request(w.c, fuseproto.OpOpendir, w.sess.ls, fuseproto.Encode(w.scratch[:0], &in), 0)
	case 1:
		in := fuseproto.ReadIn{Fh: a.fh, Offset: a.off, Size: 4096}
		return 16 + 4096, s.request(w.c, fuseproto.OpReaddirplus, w.sess.ls, fuseproto.Encode(w.scratch[:0], &in), 0)
	default:
		in := fuseproto.ReleaseIn{Fh: a.fh, Flags: unix.O_RDONLY | unix.O_DIRECTORY}
		return 16, s.request(w.c, fuseproto.OpReleasedir, w.sess.ls, fuseproto.Encode(w.scratch[:0], &in), 0)
	}
}

func (a *readdirplus) check(w *worker, s *slot) error {
	switch a.stage {
	case 0:
		body, err := s.ok(16)
		if err != nil {
			return fmt.Errorf("OPENDIR: %w", err)
		}
		var oo fuseproto.OpenOut
		fuseproto.Decode(body, &oo)
		a.fh, a.off, a.entries, a.stage = oo.Fh, 0, 0, 1
		if a.forgets == nil {
			a.forgets = make(map[uint64]uint64)
		}
	case 1:
		body, err := s.ok(-1)
		if err != nil {
			return fmt.Errorf("READDIRPLUS at %d: %w", a.off, err)
		}
		if len(body) == 0 {
			if a.entries != lsEntries {
				return fmt.Errorf("READDIRPLUS listed %d entries, want %d", a.entries, lsEntries)
			}
			a.stage = 2
			return nil
		}
		for len(body) > 0 {
			if len(body) < fuseproto.DirentplusSize {
				return fmt.Errorf("READDIRPLUS: %d bytes left over", len(body))
			}
			var e fuseproto.EntryOut
			var d fuseproto.Dirent
			fuseproto.Decode(body, &e)
			fuseproto.Decode(body[fuseproto.EntryOutSize:], &d)
			rec := (fuseproto.DirentplusSize + int(d.Namelen) + 7) &^ 7
			if d.Namelen == 0 || d.Namelen > 255 || rec > len(body) {
				return fmt.Errorf("READDIRPLUS: entry with name length %d in %d bytes", d.Namelen, len(body))
			}
			name := body[fuseproto.DirentplusSize : fuseproto.DirentplusSize+int(d.Namelen)]
			body = body[rec:]
			a.off = d.Off
			if string(name) == "." || string(name) == ".." {
				continue // the kernel neither links nor forgets these
			}
			a.entries++
			if e.NodeID != 0 {
				if e.Attr.Ino != d.Ino {
					return fmt.Errorf("READDIRPLUS %s: d_ino %d, st_ino %d", name, d.Ino, e.Attr.Ino)
				}
				a.forgets[e.NodeID]++
			}
		}
	default:
		if _, err := s.ok(0); err != nil {
			return fmt.Errorf("RELEASEDIR: %w", err)
		}
		a.stage = 0
		fs := make([]fuseproto.ForgetOne, 0, len(a.forgets))
		for n, k := range a.forgets {
			fs = append(fs, fuseproto.ForgetOne{NodeID: n, Nlookup: k})
		}
		clear(a.forgets)
		return w.c.forget(fs)
	}
	return nil
}

// newActor returns mix's actor for worker w's slot i.
func newActor(mix string, w *worker, i, nActors int, corrupt bool) (actor, error) {
	switch mix {
	case "lookup-getattr":
		return &lookupGetattr{}, nil
	case "read-4k-rand", "write-4k-rand":
		return &rw{write: mix == "write-4k-rand", chunk: 4096, random: true, corrupt: corrupt}, nil
	case "read-1m-seq", "write-1m-seq":
		chunk := w.sess.chunk(mix)
		k := w.id*len(w.slots) + i
		start := uint64(bigSize/nActors*k) / uint64(chunk) * uint64(chunk)
		return &rw{write: mix == "write-1m-seq", chunk: chunk, off: start, corrupt: corrupt}, nil
	case "create-cycle":
		return &createCycle{id: fmt.Sprintf("c%d-%d-", w.id, i)}, nil
	case "readdirplus":
		return &readdirplus{}, nil
	}
	return nil, fmt.Errorf("unknown mix %q", mix)
}
