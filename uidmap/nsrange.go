package uidmap

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxNSRanges is the most lines a user namespace's uid_map or gid_map may
// hold (UID_GID_MAP_MAX_EXTENTS, Linux 4.15 and later).
const MaxNSRanges = 340

// NSRange is one line of a user namespace's uid_map or gid_map, given to
// virtiofsd as --uid-map/--gid-map: the Count ids from Outside on (host)
// appear in the namespace as the Count ids from Inside on. Unlike a Map, the
// kernel does this translation; govirtiofsd only hands the lines to
// newuidmap(1)/newgidmap(1) or writes them to /proc/PID/uid_map.
type NSRange struct{ Inside, Outside, Count uint32 }

// ParseNSRange parses one --uid-map or --gid-map value in virtiofsd's
// syntax, :INSIDE:OUTSIDE:COUNT: (src/idmap.rs). The last character is the
// delimiter; it may be any character but a letter or digit, and the value
// must also begin with it, so "/0/100000/65536/" is the same range. Exactly
// three numbers, each an optional '+' then ASCII digits in 0..4294967295.
// ParseNSRange checks only the syntax; CheckNSRanges checks the kernel's
// rules.
func ParseNSRange(spec string) (NSRange, error) {
	bad := func(why string) (NSRange, error) {
		return NSRange{}, fmt.Errorf("id map %q: %s (want :INSIDE:OUTSIDE:COUNT:)", spec, why)
	}
	if spec == "" {
		return bad("empty")
	}
	if !utf8.ValidString(spec) {
		return bad("not valid UTF-8")
	}
	delim, size := utf8.DecodeLastRuneInString(spec)
	if isAlnum(delim) {
		return bad("does not end with a delimiter such as ':'")
	}
	body, ok := strings.CutPrefix(spec[:len(spec)-size], string(delim))
	if !ok {
		return bad(fmt.Sprintf("does not begin with the delimiter %q it ends with", delim))
	}
	fields := strings.Split(body, string(delim))
	if len(fields) != 3 {
		return bad(fmt.Sprintf("%d fields", len(fields)))
	}
	var n [3]uint32
	for i, f := range fields {
		v, ok := parseID(f)
		if !ok {
			return bad(fmt.Sprintf("%q is not a number in 0..4294967295", f))
		}
		n[i] = v
	}
	return NSRange{Inside: n[0], Outside: n[1], Count: n[2]}, nil
}

// String returns r as virtiofsd writes it, ":INSIDE:OUTSIDE:COUNT:".
func (r NSRange) String() string {
	return fmt.Sprintf(":%d:%d:%d:", r.Inside, r.Outside, r.Count)
}

// Line returns r as a line of /proc/PID/uid_map wants it and as
// newuidmap(1) takes its argument triples: "INSIDE OUTSIDE COUNT", without
// a newline.
func (r NSRange) Line() string {
	return strconv.FormatUint(uint64(r.Inside), 10) + " " +
		strconv.FormatUint(uint64(r.Outside), 10) + " " +
		strconv.FormatUint(uint64(r.Count), 10)
}

// CheckNSRanges applies the rules the kernel enforces when a uid_map or
// gid_map is written (kernel/user_namespace.c, map_write), so that a bad
// --uid-map is refused at start with a clear message rather than by
// newuidmap: every Count is at least 1; Inside+Count and Outside+Count are at
// most 4294967295 (so neither range holds (uid_t)-1); no two Inside ranges
// overlap and no two Outside ranges overlap; at most MaxNSRanges lines. No
// ranges at all is accepted (the caller then maps its own id alone, as
// virtiofsd does).
func CheckNSRanges(rs []NSRange) error {
	if len(rs) > MaxNSRanges {
		return fmt.Errorf("%d id map ranges; the kernel takes at most %d", len(rs), MaxNSRanges)
	}
	for _, r := range rs {
		if r.Count == 0 {
			return fmt.Errorf("id map %s: count is 0", r)
		}
		if uint64(r.Inside)+uint64(r.Count) > math.MaxUint32 {
			return fmt.Errorf("id map %s: namespace range runs past 4294967294", r)
		}
		if uint64(r.Outside)+uint64(r.Count) > math.MaxUint32 {
			return fmt.Errorf("id map %s: host range runs past 4294967294", r)
		}
	}
	if err := nsOverlap(rs, "namespace", func(r NSRange) uint32 { return r.Inside }); err != nil {
		return err
	}
	return nsOverlap(rs, "host", func(r NSRange) uint32 { return r.Outside })
}

// nsOverlap refuses two ranges of rs whose side (start given by first)
// overlaps. The ranges have passed the count and end checks.
func nsOverlap(rs []NSRange, side string, first func(NSRange) uint32) error {
	idx := make([]int, len(rs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		fa, fb := first(rs[a]), first(rs[b])
		if fa != fb {
			if fa < fb {
				return -1
			}
			return 1
		}
		return a - b
	})
	for k := 1; k < len(idx); k++ {
		a, b := idx[k-1], idx[k]
		if first(rs[b]) < first(rs[a])+rs[a].Count {
			if a > b {
				a, b = b, a
			}
			return fmt.Errorf("id map %s overlaps %s in the %s ids", rs[b], rs[a], side)
		}
	}
	return nil
}

// InsideID returns the id a process in a user namespace with the map rs
// sees for the host id outside: the mapped id, or OverflowID when no range
// holds outside, as the kernel shows it (with the default overflowuid).
func InsideID(rs []NSRange, outside uint32) uint32 {
	for _, r := range rs {
		if outside >= r.Outside && outside-r.Outside < r.Count {
			return r.Inside + (outside - r.Outside)
		}
	}
	return OverflowID
}
