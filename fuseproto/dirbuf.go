package fuseproto

// DirBuffer collects the entries of one READDIR or READDIRPLUS reply in the
// kernel's format: fuse_dirent (or fuse_direntplus) records, each name padded
// to 8 bytes. An entry that does not fit is not written, and the filesystem
// stops there; the kernel asks again from that entry's cookie.
type DirBuffer struct {
	buf  []byte
	max  int
	plus bool
	ids  IDMap // maps the owners of READDIRPLUS entries; nil: none
}

// NewDirBuffer returns a buffer for a reply of at most size bytes, reusing
// the storage of buf. It is exported for transports and tests; the Server
// makes its own.
func NewDirBuffer(buf []byte, size int, plus bool) *DirBuffer {
	d := &DirBuffer{}
	d.Reset(buf, size, plus)
	return d
}

// Reset empties the buffer for a new reply of at most size bytes.
func (d *DirBuffer) Reset(buf []byte, size int, plus bool) {
	d.buf = buf[:0]
	d.max = min(size, cap(buf))
	d.plus = plus
}

// Plus reports whether this is a READDIRPLUS reply, whose entries carry
// attributes and count a lookup each.
func (d *DirBuffer) Plus() bool { return d.plus }

// Bytes returns the encoded entries.
func (d *DirBuffer) Bytes() []byte { return d.buf }

// Len returns the number of encoded bytes.
func (d *DirBuffer) Len() int { return len(d.buf) }

func direntLen(plus bool, name string) int {
	n := DirentSize + len(name)
	n = (n + 7) &^ 7
	if plus {
		n += EntryOutSize
	}
	return n
}

// Fits reports whether an entry named name still fits. A filesystem filling
// a READDIRPLUS reply checks it before looking the entry up, so that it never
// counts a lookup for an entry the kernel will not receive.
func (d *DirBuffer) Fits(name string) bool {
	return len(d.buf)+direntLen(d.plus, name) <= d.max
}

// Add appends a READDIR entry: inode number ino (equal to the st_ino Lookup
// reports), d_type typ (DT_*), and off, the cookie that resumes the listing
// after this entry. It returns false, writing nothing, when the entry does not
// fit. On a READDIRPLUS buffer it writes an entry with a zero NodeID, which
// the kernel treats as a plain entry that counts no lookup.
func (d *DirBuffer) Add(name string, ino uint64, typ uint32, off uint64) bool {
	if d.plus {
		e := EntryOut{Attr: Attr{Ino: ino, Mode: typ << 12}}
		return d.AddPlus(name, &e, off)
	}
	return d.add(name, ino, typ, off)
}

// AddPlus appends a READDIRPLUS entry with the entry e as Lookup would return
// it; its type comes from e.Attr.Mode. A nonzero e.NodeID counts one lookup
// when this returns true. On a READDIR buffer only the name is written.
func (d *DirBuffer) AddPlus(name string, e *EntryOut, off uint64) bool {
	typ := (e.Attr.Mode & 0o170000) >> 12
	if !d.plus {
		return d.add(name, e.Attr.Ino, typ, off)
	}
	if !d.Fits(name) {
		return false
	}
	start := len(d.buf)
	d.buf = d.buf[:start+EntryOutSize]
	encode(d.buf[start:], e)
	if d.ids != nil {
		// Map the encoded copy; e stays the FileSystem's.
		var a Attr
		off := start + EntryOutSize - AttrSize
		decode(d.buf[off:], &a)
		a.UID, a.GID = d.ids.UIDToGuest(a.UID), d.ids.GIDToGuest(a.GID)
		encode(d.buf[off:], &a)
	}
	return d.add(name, e.Attr.Ino, typ, off)
}

func (d *DirBuffer) add(name string, ino uint64, typ uint32, off uint64) bool {
	n := direntLen(false, name)
	if len(d.buf)+n > d.max {
		return false
	}
	start := len(d.buf)
	d.buf = d.buf[:start+n]
	de := Dirent{Ino: ino, Off: off, Namelen: uint32(len(name)), Type: typ}
	encode(d.buf[start:], &de)
	copy(d.buf[start+DirentSize:], name)
	clear(d.buf[start+DirentSize+len(name) : start+n])
	return true
}
