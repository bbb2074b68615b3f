// Package uidmap translates user and group ids between the guest and the
// host, as virtiofsd's --translate-uid/--translate-gid options define it,
// describes the user-namespace maps of --uid-map/--gid-map, and rewrites the
// ids inside POSIX ACL extended attribute values.
//
// # Translation tables (--translate-uid, --translate-gid)
//
// A Map holds the rules of one option (uids or gids), each given as
// TYPE:A:B:COUNT (forbid-guest:A:COUNT), with every number a decimal in
// 0..4294967295:
//
//	guest:G:H:N         guest G..G+N-1 → host H..H+N-1 (guest to host only)
//	host:H:G:N          host H..H+N-1 → guest G..G+N-1 (host to guest only)
//	squash-guest:G:H:N  guest G..G+N-1 → the one host id H
//	squash-host:H:G:N   host H..H+N-1 → the one guest id G
//	forbid-guest:G:N    guest G..G+N-1 may not be used: ToHost says !ok and
//	                    the caller answers EPERM (creating a file as that
//	                    id, chown to it, an ACL naming it)
//	map:G:H:N           both guest:G:H:N and host:H:G:N
//
// The two directions are independent tables: a guest, squash-guest or
// forbid-guest rule says nothing about how host ids look in the guest.
// An id no rule of a direction covers passes through that direction
// unchanged, with or without other rules. This is virtiofsd's behaviour
// (src/soft_idmap/mod.rs: unmapped ranges are identity-mapped; its README's
// example squash-guest:0:1001:4294967295 plus host:1001:1000:1 relies on
// "all other UIDs and GIDs visible unchanged in the guest"), so a drop-in
// replacement must not show unmapped host ids as the overflow id. The
// overflow id does appear under --uid-map: there the host kernel itself
// reports host ids outside the namespace's map as /proc/sys/kernel/overflowuid
// (65534 by default); see InsideID.
//
// Parsing follows virtiofsd (src/soft_idmap/cmdline.rs): the type is
// matched without regard to case; the separator is the first character that
// is not a letter, digit, '-' or '_', and every field must use it (so
// "guest/0/1000/1" equals "guest:0:1000:1"); a number is optional '+' then
// ASCII digits, as Rust's u32 parser takes it (no '-', no spaces, no
// trailing separator). Then, as virtiofsd does:
//
//   - The source range of a rule must end at or below 4294967295: A+N ≤
//     2^32-1, so id 4294967295 ((uid_t)-1) is never translated.
//   - Source ranges within one direction must not overlap, whatever the
//     rule types (an identical rule given twice overlaps itself). The guest
//     direction holds guest, squash-guest, forbid-guest and the guest side of
//     map; the host direction holds host, squash-host and the host side of
//     map. Rules of different directions may cover the same numbers.
//   - COUNT 0 is accepted and changes nothing.
//
// Two cases virtiofsd lets wrap silently in its release build are refused
// here: a forbid-guest range past 4294967295 (virtiofsd adds without a
// check and ends up forbidding nothing) and a guest or host rule whose target
// range runs past 4294967295 (virtiofsd would map the last ids to 0, root).
// A target range may end at 4294967295 itself, as in virtiofsd.
//
// virtiofsd refuses --translate-uid/-gid together with --posix-acl because it
// does not translate ACLs; TranslateACL is here so that govirtiofsd can.
//
// A Map is immutable once built and safe for concurrent use. Lookups are a
// binary search over sorted ranges and allocate nothing; a Map without
// rules, or whose rules change nothing, answers at the cost of a length test.
package uidmap

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// OverflowID is the id Linux shows for an id it cannot represent: the
// default of /proc/sys/kernel/overflowuid and overflowgid ("nobody").
const OverflowID = 65534

// Map translates one id space (uids or gids) between guest and host. The
// zero value and a nil *Map translate every id to itself in both directions.
type Map struct {
	rules   []rule  // as given, for String
	toHost  []entry // guest → host, sorted by first, disjoint
	toGuest []entry // host → guest, sorted by first, disjoint
}

// ruleKind is the TYPE of one rule.
type ruleKind uint8

const (
	kindGuest ruleKind = iota
	kindHost
	kindSquashGuest
	kindSquashHost
	kindForbidGuest
	kindMap
)

var kindNames = [...]string{
	kindGuest:       "guest",
	kindHost:        "host",
	kindSquashGuest: "squash-guest",
	kindSquashHost:  "squash-host",
	kindForbidGuest: "forbid-guest",
	kindMap:         "map",
}

// rule is one parsed TYPE:FROM:TO:COUNT (to is unused for forbid-guest).
type rule struct {
	kind            ruleKind
	from, to, count uint32
}

func (r rule) String() string {
	if r.kind == kindForbidGuest {
		return fmt.Sprintf("%s:%d:%d", kindNames[r.kind], r.from, r.count)
	}
	return fmt.Sprintf("%s:%d:%d:%d", kindNames[r.kind], r.from, r.to, r.count)
}

// op is what an entry does to the ids it covers.
type op uint8

const (
	opRange  op = iota // first+k → to+k
	opSquash           // any → to
	opForbid           // refused
)

// entry covers the source ids [first, end) of one direction. end ≤
// math.MaxUint32 always, so the range never wraps.
type entry struct {
	first, end uint32
	to         uint32
	op         op
}

// identity reports whether e maps every id it covers to itself.
func (e entry) identity() bool {
	switch e.op {
	case opRange:
		return e.to == e.first
	case opSquash:
		return e.end-e.first == 1 && e.to == e.first
	}
	return false
}

// lookup returns the entry of es covering id, or nil.
func lookup(es []entry, id uint32) *entry {
	lo, hi := 0, len(es)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if es[mid].end <= id {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(es) && es[lo].first <= id {
		return &es[lo]
	}
	return nil
}

// apply translates id, which e covers.
func (e *entry) apply(id uint32) (uint32, bool) {
	switch e.op {
	case opRange:
		return e.to + (id - e.first), true
	case opSquash:
		return e.to, true
	}
	return OverflowID, false
}

// ToHost returns the host id that stands for guest. ok is false when a
// forbid-guest rule covers guest; the caller then answers EPERM, and host is
// OverflowID so that a caller that forgets to check does not act as root.
func (m *Map) ToHost(guest uint32) (host uint32, ok bool) {
	if m == nil || len(m.toHost) == 0 {
		return guest, true
	}
	if e := lookup(m.toHost, guest); e != nil {
		return e.apply(guest)
	}
	return guest, true
}

// ToGuest returns the id the guest sees for the host id host. A host id no
// rule covers is shown unchanged, as virtiofsd does (see the package
// comment); no host id is ever refused.
func (m *Map) ToGuest(host uint32) uint32 {
	if m == nil || len(m.toGuest) == 0 {
		return host
	}
	if e := lookup(m.toGuest, host); e != nil {
		g, _ := e.apply(host)
		return g
	}
	return host
}

// Identity reports whether m maps every id to itself in both directions, so
// that callers may skip translating. Rules such as map:5:5:10 or COUNT 0
// leave a Map the identity; a forbid-guest rule never does.
func (m *Map) Identity() bool {
	return m == nil || len(m.toHost) == 0 && len(m.toGuest) == 0
}

// String returns the rules of m in canonical form (lower-case type, ':'
// separators), separated by single spaces, in the order given; "" for a Map
// without rules. Parse(strings.Fields(m.String())) builds an equal Map.
func (m *Map) String() string {
	if m == nil {
		return ""
	}
	var b strings.Builder
	for i, r := range m.rules {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Parse builds a Map from the values of a repeated --translate-uid (or
// --translate-gid) option, in the order given. An error is one line naming
// the first bad spec and saying why; the caller adds the option's name. No
// specs give the identity Map.
func Parse(specs []string) (*Map, error) {
	m := &Map{rules: make([]rule, 0, len(specs))}
	for _, s := range specs {
		r, err := parseRule(s)
		if err != nil {
			return nil, err
		}
		m.rules = append(m.rules, r)
	}
	// As virtiofsd, report every malformed spec before range problems.
	var g2h, h2g []source
	for i, r := range m.rules {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("translation %q: %s", r.String(), err)
		}
		ge, he, hasG, hasH := r.entries()
		if hasG {
			g2h = append(g2h, source{ge, i})
		}
		if hasH {
			h2g = append(h2g, source{he, i})
		}
	}
	var err error
	if m.toHost, err = m.table(g2h, "guest"); err != nil {
		return nil, err
	}
	if m.toGuest, err = m.table(h2g, "host"); err != nil {
		return nil, err
	}
	return m, nil
}

// source is a table entry with the index of the rule it came from.
type source struct {
	entry
	rule int
}

// table sorts the entries of one direction, refuses overlaps, and returns
// the entries that change something.
func (m *Map) table(src []source, side string) ([]entry, error) {
	slices.SortFunc(src, func(a, b source) int {
		if a.first != b.first {
			if a.first < b.first {
				return -1
			}
			return 1
		}
		return a.rule - b.rule
	})
	var out []entry
	for i, s := range src {
		if i > 0 && s.first < src[i-1].end {
			a, b := src[i-1], s
			if a.rule > b.rule {
				a, b = b, a
			}
			lo, hi := max(a.first, b.first), min(a.end, b.end)-1
			return nil, fmt.Errorf("translation %q overlaps %q: both translate %s ids %d..%d",
				m.rules[b.rule].String(), m.rules[a.rule].String(), side, lo, hi)
		}
		if !s.identity() {
			out = append(out, s.entry)
		}
	}
	return out, nil
}

// check refuses ranges that run past 4294967295.
func (r rule) check() error {
	const top = math.MaxUint32
	if uint64(r.from)+uint64(r.count) > top {
		return fmt.Errorf("source range %d+%d runs past %d", r.from, r.count, uint32(top))
	}
	switch r.kind {
	case kindGuest, kindHost:
		if r.count > 0 && uint64(r.to)+uint64(r.count)-1 > top {
			return fmt.Errorf("target range %d+%d runs past %d", r.to, r.count, uint32(top))
		}
	case kindMap:
		// Both ranges are source ranges (virtiofsd adds host:TO:FROM:COUNT).
		if uint64(r.to)+uint64(r.count) > top {
			return fmt.Errorf("host range %d+%d runs past %d", r.to, r.count, uint32(top))
		}
	}
	return nil
}

// entries returns r's guest-to-host and host-to-guest entries; a COUNT 0
// rule has none. r has passed check.
func (r rule) entries() (g2h, h2g entry, hasG, hasH bool) {
	if r.count == 0 {
		return
	}
	span := func(first uint32) entry { return entry{first: first, end: first + r.count} }
	switch r.kind {
	case kindGuest:
		g2h, hasG = span(r.from), true
		g2h.to, g2h.op = r.to, opRange
	case kindHost:
		h2g, hasH = span(r.from), true
		h2g.to, h2g.op = r.to, opRange
	case kindSquashGuest:
		g2h, hasG = span(r.from), true
		g2h.to, g2h.op = r.to, opSquash
	case kindSquashHost:
		h2g, hasH = span(r.from), true
		h2g.to, h2g.op = r.to, opSquash
	case kindForbidGuest:
		g2h, hasG = span(r.from), true
		g2h.op = opForbid
	case kindMap:
		g2h, hasG = span(r.from), true
		g2h.to, g2h.op = r.to, opRange
		h2g, hasH = span(r.to), true
		h2g.to, h2g.op = r.from, opRange
	}
	return
}

// parseRule parses one TYPE:A:B:COUNT spec.
func parseRule(s string) (rule, error) {
	bad := func(format string, args ...any) (rule, error) {
		return rule{}, fmt.Errorf("translation %q: %s", s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty; want TYPE:SOURCE:TARGET:COUNT")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	i := 0
	for i < len(s) {
		c, size := utf8.DecodeRuneInString(s[i:])
		if !isTypeRune(c) {
			break
		}
		i += size
	}
	if i == len(s) {
		return bad("no fields; want TYPE:SOURCE:TARGET:COUNT")
	}
	typ := strings.ToLower(s[:i])
	sep, size := utf8.DecodeRuneInString(s[i:])
	fields := strings.Split(s[i+size:], string(sep))

	kind := -1
	for k, name := range kindNames {
		if typ == name {
			kind = k
		}
	}
	if kind < 0 {
		return bad("unknown type %q; want guest, host, squash-guest, squash-host, forbid-guest or map", s[:i])
	}
	want := 3
	if ruleKind(kind) == kindForbidGuest {
		want = 2
	}
	if len(fields) != want {
		return bad("%s takes %d numbers, got %d", kindNames[kind], want, len(fields))
	}
	var n [3]uint32
	for j, f := range fields {
		v, ok := parseID(f)
		if !ok {
			return bad("%q is not a number in 0..4294967295", f)
		}
		n[j] = v
	}
	r := rule{kind: ruleKind(kind), from: n[0], to: n[1], count: n[2]}
	if r.kind == kindForbidGuest {
		r.to, r.count = 0, n[1]
	}
	return r, nil
}

// isTypeRune reports whether c may be part of a TYPE; the first other
// character is the separator. Like Rust's char::is_alphanumeric plus '-'
// and '_', so a spec virtiofsd refuses is refused here too.
func isTypeRune(c rune) bool {
	return c == '-' || c == '_' || isAlnum(c)
}

// isAlnum is Rust's char::is_alphanumeric: Unicode Alphabetic or Numeric.
func isAlnum(c rune) bool {
	return unicode.IsLetter(c) || unicode.IsNumber(c) || unicode.Is(unicode.Other_Alphabetic, c)
}

// parseID parses a decimal uint32 the way Rust's u32::from_str does: an
// optional '+', then one or more ASCII digits.
func parseID(s string) (uint32, bool) {
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
		if v > math.MaxUint32 {
			return 0, false
		}
	}
	return uint32(v), true
}
