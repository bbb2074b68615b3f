package overlay

import (
	"encoding/hex"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Origin file handles are kernel overlayfs's struct ovl_fb, stored as the
// origin xattr of a copied-up object and hex-encoded as the names of index
// entries: version 0, magic 0xfb, the total length, flags (0 on a
// little-endian host), the file handle type, the filesystem UUID (16 bytes)
// and the handle itself.
const (
	fbHeader = 21
	fbMagic  = 0xfb

	fbBigEndian = 1 << 0 // OVL_FH_FLAG_BIG_ENDIAN
	fbAnyEndian = 1 << 1 // OVL_FH_FLAG_ANY_ENDIAN
	fbPathUpper = 1 << 2 // OVL_FH_FLAG_PATH_UPPER
	fbFlagsAll  = fbBigEndian | fbAnyEndian | fbPathUpper
	fbCPUEndian = 0 // the hosts we build for are little-endian
)

// encodeFH returns the origin handle of the object open as fd on layer l,
// or nil when its filesystem cannot make file handles.
func encodeFH(fd int, l *layer) []byte {
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil
	}
	fid := h.Bytes()
	if fbHeader+len(fid) > 255 {
		return nil
	}
	b := make([]byte, fbHeader+len(fid))
	b[1] = fbMagic
	b[2] = byte(len(b))
	b[4] = byte(h.Type())
	copy(b[5:21], l.uuid[:])
	copy(b[fbHeader:], fid)
	return b
}

// parseFH checks an origin handle read from a layer and returns its type,
// UUID and handle bytes.
func parseFH(b []byte) (typ int32, uuid [16]byte, fid []byte, ok bool) {
	if len(b) < fbHeader || b[0] != 0 || b[1] != fbMagic || int(b[2]) != len(b) || b[3]&^fbFlagsAll != 0 {
		return 0, uuid, nil, false
	}
	if b[3]&fbAnyEndian == 0 && b[3]&fbBigEndian != fbCPUEndian {
		return 0, uuid, nil, false // made on a host of the other byte order
	}
	copy(uuid[:], b[5:21])
	return int32(b[4]), uuid, b[fbHeader:], true
}

// indexName is the name of the index entry of a lower object's handle.
func indexName(fb []byte) string { return hex.EncodeToString(fb) }

// decodeOrigin returns the host identity (and link count) of the lower object an origin
// handle names, opening it by handle on the lower filesystem with the same
// UUID. It needs CAP_DAC_READ_SEARCH; without it (or for a handle no lower
// holds) it reports false and the caller falls back to the upper object's
// own identity. Only the identity is used: data is never read through a
// decoded handle.
func (fs *FS) decodeOrigin(fb []byte) (objKey, uint32, bool) {
	typ, uuid, fid, ok := parseFH(fb)
	if !ok {
		return objKey{}, 0, false
	}
	s := string(fb)
	fs.originMu.Lock()
	o, hit := fs.originCache[s]
	fs.originMu.Unlock()
	if hit {
		return o.key, o.nlink, true
	}
	tried := map[uint64]bool{}
	for _, l := range fs.lowers {
		if l.uuid != uuid || tried[l.dev] {
			continue
		}
		tried[l.dev] = true
		fd, err := unix.OpenByHandleAt(l.mountFd, unix.NewFileHandle(typ, fid), unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			continue
		}
		var st unix.Statx_t
		err = statx(fd, &st)
		unix.Close(fd)
		if err != nil {
			continue
		}
		o = originInfo{key: keyOf(&st), nlink: st.Nlink}
		fs.originMu.Lock()
		if len(fs.originCache) > 1<<20 {
			clear(fs.originCache)
		}
		fs.originCache[s] = o
		fs.originMu.Unlock()
		return o.key, o.nlink, true
	}
	return objKey{}, 0, false
}

// originInfo is what a decoded origin handle names: the lower object's
// identity and its link count.
type originInfo struct {
	key   objKey
	nlink uint32
}

// xinoShift leaves the top 8 bits of an inode number for the filesystem
// index, as kernel overlayfs's xino does.
const xinoShift = 56

// xino returns the st_ino shown for host object k: its own inode number
// when it is on the first layer filesystem (the upper's, else the topmost
// lower's), else the number with the filesystem's index in the top bits,
// so that objects of two filesystems never share a number. An inode number
// already using the top bits is mixed instead (numbers that large are rare;
// collisions between them are then possible).
func (fs *FS) xino(k objKey) uint64 {
	idx := fs.fsIndex(k.dev)
	if idx == 0 {
		return k.ino
	}
	ino := k.ino
	if ino>>xinoShift != 0 {
		ino = bits.RotateLeft64(ino*0x9e3779b97f4a7c15, 17) >> 8
	}
	return ino | uint64(idx)<<xinoShift
}

// fsIndex returns the index of host filesystem dev among the layers',
// numbering filesystems met later (mounts inside a layer) as they come.
func (fs *FS) fsIndex(dev uint64) int {
	fs.devMu.Lock()
	defer fs.devMu.Unlock()
	if i, ok := fs.devs[dev]; ok {
		return i
	}
	i := len(fs.devs)
	if i > 255 {
		i = 1 + i%255 // past 255 filesystems numbers may collide
	}
	fs.devs[dev] = i
	return i
}
