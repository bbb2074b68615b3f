package uidmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// modelToHost and modelToGuest translate by scanning the rules in order, the
// plain reading of the rule table that the sorted, pruned tables must match.
func modelToHost(rules []rule, id uint32) (uint32, bool) {
	for _, r := range rules {
		if id < r.from || id-r.from >= r.count {
			continue
		}
		switch r.kind {
		case kindGuest, kindMap:
			return r.to + (id - r.from), true
		case kindSquashGuest:
			return r.to, true
		case kindForbidGuest:
			return OverflowID, false
		}
	}
	return id, true
}

func modelToGuest(rules []rule, id uint32) uint32 {
	for _, r := range rules {
		switch r.kind {
		case kindHost:
			if id >= r.from && id-r.from < r.count {
				return r.to + (id - r.from)
			}
		case kindSquashHost:
			if id >= r.from && id-r.from < r.count {
				return r.to
			}
		case kindMap:
			if id >= r.to && id-r.to < r.count {
				return r.from + (id - r.to)
			}
		}
	}
	return id
}

// sampleIDs returns the ids worth probing for rules: the ends of every range
// and their neighbours (arithmetic wraps on purpose), plus fixed ones.
func sampleIDs(rules []rule) []uint32 {
	ids := []uint32{0, 1, OverflowID, math.MaxUint32 - 1, math.MaxUint32}
	if len(rules) > 64 {
		rules = rules[:64]
	}
	for _, r := range rules {
		for _, base := range []uint32{r.from, r.to} {
			ids = append(ids, base-1, base, base+r.count/2, base+r.count-1, base+r.count)
		}
	}
	return ids
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(strings.Join(tt.specs, "\n"))
	}
	for _, s := range []string{
		"", "guest", "guest:1:2", "guest:1:2:3:4", "frob:1:2:3", "guest:-1:2:3",
		"guest:4294967295:0:1", "guest:0:4294967295:2", "map:0:4294967295:1",
		"guest:0:100:10\nguest:9:200:1", "map:0:1000:10\nhost:1005:0:1",
		"forbid-guest:4294967295:1", "squash-guest:0:1:4294967295\nforbid-guest:4294967294:1",
		"map:0:100:50\nmap:50:0:50", "map:1:2:3\nhost:0:1:1\nguest:7:0:1\nsquash-host:5:0:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		specs := strings.Split(s, "\n")
		m, err := Parse(specs)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is more than one line", err)
			}
			return
		}
		if len(m.rules) != len(specs) {
			t.Fatalf("%d specs gave %d rules", len(specs), len(m.rules))
		}
		m2, err := Parse(strings.Fields(m.String()))
		if err != nil {
			t.Fatalf("String() %q does not parse: %v", m.String(), err)
		}
		if m2.String() != m.String() || m2.Identity() != m.Identity() {
			t.Fatalf("round trip %q → %q, identity %v → %v", m.String(), m2.String(), m.Identity(), m2.Identity())
		}
		for _, id := range sampleIDs(m.rules) {
			wh, wok := modelToHost(m.rules, id)
			wg := modelToGuest(m.rules, id)
			for _, mm := range []*Map{m, m2} {
				if h, ok := mm.ToHost(id); h != wh || ok != wok {
					t.Fatalf("%q: ToHost(%d) = %d, %v; the rules say %d, %v", m.String(), id, h, ok, wh, wok)
				}
				if g := mm.ToGuest(id); g != wg {
					t.Fatalf("%q: ToGuest(%d) = %d; the rules say %d", m.String(), id, g, wg)
				}
			}
			if m.Identity() && (wh != id || !wok || wg != id) {
				t.Fatalf("%q: Identity() but %d → host %d (%v), guest %d", m.String(), id, wh, wok, wg)
			}
		}
		// A map: rule is a bijection between its two ranges whatever else is
		// given, since nothing may overlap either side.
		for _, r := range m.rules {
			if r.kind != kindMap || r.count == 0 {
				continue
			}
			for _, k := range []uint32{0, r.count / 2, r.count - 1} {
				h, ok := m.ToHost(r.from + k)
				if h != r.to+k || !ok || m.ToGuest(h) != r.from+k {
					t.Fatalf("%q: %v: guest %d → host %d (%v) → guest %d", m.String(), r, r.from+k, h, ok, m.ToGuest(h))
				}
			}
		}
	})
}

var plainNSRange = regexp.MustCompile(`^:(\+?[0-9]{1,10}):(\+?[0-9]{1,10}):(\+?[0-9]{1,10}):$`)

func FuzzParseNSRange(f *testing.F) {
	for _, s := range []string{
		":0:100000:65536:", ":0:1000:1:", "/0/1/2/", "-1-2-3-", ":+1:2:3:", "", ":", "::",
		"0:1:2", ":0:1:", ":0:1:2:3:", ":a:1:2:", ":0:1:4294967296:", "é0é1é2é", "\xff",
		":4294967295:4294967295:4294967295:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseNSRange(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is more than one line", err)
			}
			if sm := plainNSRange.FindStringSubmatch(s); sm != nil {
				fits := true
				for _, f := range sm[1:] {
					if _, err := strconv.ParseUint(strings.TrimPrefix(f, "+"), 10, 32); err != nil {
						fits = false
					}
				}
				if fits {
					t.Fatalf("ParseNSRange(%q) refused a plain range: %v", s, err)
				}
			}
			return
		}
		r2, err := ParseNSRange(r.String())
		if err != nil || r2 != r {
			t.Fatalf("%q → %v → %q → %v, %v", s, r, r.String(), r2, err)
		}
		f := strings.Fields(r.Line())
		if len(f) != 3 || f[0] != strconv.FormatUint(uint64(r.Inside), 10) ||
			f[1] != strconv.FormatUint(uint64(r.Outside), 10) || f[2] != strconv.FormatUint(uint64(r.Count), 10) {
			t.Fatalf("Line() = %q for %v", r.Line(), r)
		}
		// A lone range is what the kernel takes exactly when its count is
		// positive and neither side reaches 4294967295.
		kernelOK := r.Count > 0 &&
			uint64(r.Inside)+uint64(r.Count) <= math.MaxUint32 && uint64(r.Outside)+uint64(r.Count) <= math.MaxUint32
		if err := CheckNSRanges([]NSRange{r}); (err == nil) != kernelOK {
			t.Fatalf("CheckNSRanges(%v) = %v, kernel would accept: %v", r, err, kernelOK)
		}
	})
}

func FuzzTranslateACL(f *testing.F) {
	f.Add(aclValue(aclVersion), true)
	f.Add(aclValue(aclVersion, ace{aclUserObj, 6, 0}, ace{aclUser, 4, 5}, ace{aclGroupObj, 4, 0},
		ace{aclGroup, 4, 3}, ace{aclMask, 7, 0}, ace{aclOther, 0, 0}), true)
	f.Add(aclValue(aclVersion, ace{aclUser, 7, 1005}, ace{aclGroup, 7, 605}), false)
	f.Add(aclValue(aclVersion, ace{aclUser, 7, 20}), true)
	f.Add(aclValue(1, ace{aclUser, 7, 5}), true)
	f.Add(aclValue(aclVersion, ace{0x40, 7, 5}), false)
	f.Add([]byte{2, 0, 0}, true)
	f.Add(append(aclValue(aclVersion, ace{aclUser, 7, 5}), 0), true)
	f.Fuzz(func(t *testing.T, value []byte, toHost bool) {
		uids, gids := aclMaps(t)
		orig := bytes.Clone(value)

		// What the value is, judged independently of TranslateACL.
		valid := len(orig) >= 4 && (len(orig)-4)%8 == 0 && binary.LittleEndian.Uint32(orig) == 2
		forbid := false
		for off := 4; valid && off < len(orig); off += 8 {
			tag, id := binary.LittleEndian.Uint16(orig[off:]), binary.LittleEndian.Uint32(orig[off+4:])
			switch tag {
			case 0x01, 0x04, 0x10, 0x20:
			case 0x02:
				forbid = forbid || toHost && id == 20
			case 0x08:
			default:
				valid = false
			}
		}

		err := TranslateACL(value, uids, gids, toHost)
		switch {
		case !valid:
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("malformed % x: err %v", orig, err)
			}
		case forbid:
			if !errors.Is(err, ErrForbidden) {
				t.Fatalf("forbidden id in % x: err %v", orig, err)
			}
		case err != nil:
			t.Fatalf("valid % x: %v", orig, err)
		}
		if err != nil {
			if !bytes.Equal(value, orig) {
				t.Fatalf("value changed on error %v: % x → % x", err, orig, value)
			}
			return
		}
		if len(value) != len(orig) || !bytes.Equal(value[:4], orig[:4]) {
			t.Fatalf("header or length changed: % x → % x", orig, value)
		}
		for off := 4; off < len(orig); off += 8 {
			if !bytes.Equal(value[off:off+4], orig[off:off+4]) {
				t.Fatalf("tag or perm changed at %d: % x → % x", off, orig, value)
			}
			tag, id := binary.LittleEndian.Uint16(orig[off:]), binary.LittleEndian.Uint32(orig[off+4:])
			want := id
			var m *Map
			switch tag {
			case 0x02:
				m = uids
			case 0x08:
				m = gids
			}
			if m != nil && toHost {
				want, _ = m.ToHost(id)
			} else if m != nil {
				want = m.ToGuest(id)
			}
			if got := binary.LittleEndian.Uint32(value[off+4:]); got != want {
				t.Fatalf("entry at %d (tag %#x): id %d → %d, want %d", off, tag, id, got, want)
			}
		}
	})
}
