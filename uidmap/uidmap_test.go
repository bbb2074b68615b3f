package uidmap

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

const top = math.MaxUint32

// probe is one lookup and its expected answer: ToHost when toHost, else
// ToGuest (which has no ok).
type probe struct {
	toHost bool
	in     uint32
	out    uint32
	ok     bool
}

func h(in, out uint32) probe { return probe{toHost: true, in: in, out: out, ok: true} }
func forbidden(in uint32) probe {
	return probe{toHost: true, in: in, out: OverflowID, ok: false}
}
func g(in, out uint32) probe { return probe{in: in, out: out, ok: true} }

func (p probe) String() string {
	if p.toHost {
		return fmt.Sprintf("ToHost(%d)", p.in)
	}
	return fmt.Sprintf("ToGuest(%d)", p.in)
}

func checkProbes(t *testing.T, m *Map, probes []probe) {
	t.Helper()
	for _, p := range probes {
		var out uint32
		ok := true
		if p.toHost {
			out, ok = m.ToHost(p.in)
		} else {
			out = m.ToGuest(p.in)
		}
		if out != p.out || ok != p.ok {
			t.Errorf("%v = %d, %v; want %d, %v", p, out, ok, p.out, p.ok)
		}
	}
}

var parseTests = []struct {
	name     string
	specs    []string
	identity bool
	str      string // want String(); "" means strings.Join(specs, " ")
	probes   []probe
}{
	{
		name: "none", identity: true,
		probes: []probe{h(0, 0), h(top, top), g(0, 0), g(1000, 1000), g(top, top)},
	},
	{
		name:  "guest one direction",
		specs: []string{"guest:1000:2000:10"},
		probes: []probe{
			h(999, 999), h(1000, 2000), h(1005, 2005), h(1009, 2009), h(1010, 1010),
			g(2000, 2000), g(1000, 1000), // no reverse
		},
	},
	{
		name:  "host one direction",
		specs: []string{"host:2000:1000:10"},
		probes: []probe{
			g(1999, 1999), g(2000, 1000), g(2009, 1009), g(2010, 2010),
			h(1000, 1000), h(2000, 2000), // no reverse
		},
	},
	{
		name:  "squash-guest whole space",
		specs: []string{"squash-guest:0:1001:4294967295"},
		probes: []probe{
			h(0, 1001), h(1000, 1001), h(top-1, 1001),
			h(top, top), // (uid_t)-1 is never in a range
			g(1001, 1001), g(0, 0),
		},
	},
	{
		name:  "squash-host",
		specs: []string{"squash-host:100:7:5"},
		probes: []probe{
			g(99, 99), g(100, 7), g(104, 7), g(105, 105),
			h(7, 7), h(100, 100),
		},
	},
	{
		name:  "forbid-guest",
		specs: []string{"forbid-guest:0:1"},
		probes: []probe{
			forbidden(0), h(1, 1), g(0, 0),
		},
	},
	{
		name:  "map both directions",
		specs: []string{"map:0:1000:10"},
		probes: []probe{
			h(0, 1000), h(9, 1009), h(10, 10), h(1000, 1000),
			g(1000, 0), g(1009, 9), g(1010, 1010), g(999, 999), g(0, 0),
		},
	},
	{
		name:  "virtiofsd README example",
		specs: []string{"squash-guest:0:1001:4294967295", "host:1001:1000:1"},
		probes: []probe{
			h(0, 1001), h(1000, 1001), h(1001, 1001),
			g(1001, 1000), g(0, 0), g(1000, 1000), g(1002, 1002),
		},
	},
	{
		name: "several guest rules",
		specs: []string{
			"guest:20:200:10", "forbid-guest:10:10", "guest:0:100:10", "squash-guest:30:5:1",
		},
		probes: []probe{
			h(0, 100), h(9, 109), forbidden(10), forbidden(19), h(20, 200), h(29, 209),
			h(30, 5), h(31, 31), g(100, 100), g(5, 5),
		},
	},
	{
		name:  "adjacent ranges",
		specs: []string{"guest:10:200:10", "guest:0:100:10"},
		probes: []probe{
			h(9, 109), h(10, 200), h(19, 209), h(20, 20),
		},
	},
	{
		name:  "directions may cover the same ids",
		specs: []string{"guest:0:100:10", "host:0:100:10", "map:1000:500:1", "guest:1:1000:0"},
		probes: []probe{
			h(0, 100), g(0, 100), h(1000, 500), g(500, 1000), g(100, 100), h(500, 500),
		},
	},
	{
		name:  "map host side and guest rule on its number",
		specs: []string{"map:0:1000:10", "guest:1000:0:1"},
		probes: []probe{
			h(1000, 0), g(1000, 0), h(0, 1000),
		},
	},
	{
		name:  "source range ends at 2^32-1",
		specs: []string{"guest:4294967285:0:10", "forbid-guest:4294967284:1"},
		probes: []probe{
			forbidden(top - 11), h(top-10, 0), h(top-1, 9), h(top, top),
		},
	},
	{
		name:  "target range ends at 2^32-1",
		specs: []string{"guest:0:4294967295:1", "host:5:4294967290:6", "squash-host:0:4294967295:1"},
		probes: []probe{
			h(0, top), h(1, 1), g(5, top-5), g(10, top), g(11, 11), g(0, top),
		},
	},
	{
		name:     "count 0 is a no-op",
		specs:    []string{"guest:5:6:0", "forbid-guest:4294967295:0", "guest:0:100:10", "guest:5:0:0"},
		identity: false,
		probes:   []probe{h(5, 105), h(top, top), h(10, 10)},
	},
	{
		name:     "only count 0",
		specs:    []string{"map:5:6:0"},
		identity: true,
		probes:   []probe{h(5, 5), g(6, 6)},
	},
	{
		name:     "rules that change nothing",
		specs:    []string{"map:5:5:10", "squash-host:100:100:1", "guest:200:200:3"},
		identity: true,
		probes:   []probe{h(5, 5), g(14, 14), g(100, 100), h(201, 201)},
	},
	{
		name:     "squash onto itself still squashes",
		specs:    []string{"squash-host:100:100:2"},
		identity: false,
		probes:   []probe{g(100, 100), g(101, 100)},
	},
	{
		name:  "type case and separators as virtiofsd",
		specs: []string{"GUEST/1/2/3", "Squash-Host,4,5,1", "map 10 20 1", "forbid-guest.30.1", "host:+40:+50:+001"},
		str:   "guest:1:2:3 squash-host:4:5:1 map:10:20:1 forbid-guest:30:1 host:40:50:1",
		probes: []probe{
			h(1, 2), h(3, 4), g(4, 5), h(10, 20), g(20, 10), forbidden(30), g(40, 50),
		},
	},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.specs)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.specs, err)
			}
			if got := m.Identity(); got != tt.identity {
				t.Errorf("Identity() = %v, want %v", got, tt.identity)
			}
			want := tt.str
			if want == "" {
				want = strings.Join(tt.specs, " ")
			}
			if got := m.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
			checkProbes(t, m, tt.probes)

			m2, err := Parse(strings.Fields(m.String()))
			if err != nil {
				t.Fatalf("reparsing %q: %v", m.String(), err)
			}
			if m2.String() != m.String() || m2.Identity() != m.Identity() {
				t.Errorf("reparsed %q as %q (identity %v)", m.String(), m2.String(), m2.Identity())
			}
			checkProbes(t, m2, tt.probes)
		})
	}
}

func TestNilMap(t *testing.T) {
	var m *Map
	if !m.Identity() || m.String() != "" {
		t.Errorf("nil Map: Identity %v String %q", m.Identity(), m.String())
	}
	checkProbes(t, m, []probe{h(0, 0), h(top, top), g(OverflowID, OverflowID)})
	checkProbes(t, &Map{}, []probe{h(7, 7), g(7, 7)})
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		specs []string
		want  string // substring of the error
	}{
		// Malformed.
		{"empty", []string{""}, `translation "": empty`},
		{"type only", []string{"guest"}, `"guest": no fields`},
		{"missing field", []string{"guest:1:2"}, `"guest:1:2": guest takes 3 numbers, got 2`},
		{"extra field", []string{"guest:1:2:3:4"}, "got 4"},
		{"trailing separator", []string{"guest:1:2:3:"}, "got 4"},
		{"forbid with 3", []string{"forbid-guest:1:2:3"}, "forbid-guest takes 2 numbers, got 3"},
		{"forbid with 1", []string{"forbid-guest:1"}, "got 1"},
		{"mixed separators", []string{"guest:1:2/3"}, "got 2"},
		{"not a number", []string{"guest:a:2:3"}, `"a" is not a number`},
		{"negative", []string{"guest:-1:2:3"}, `"-1" is not a number`},
		{"too big", []string{"guest:1:2:4294967296"}, `"4294967296" is not a number`},
		{"huge", []string{"guest:1:2:99999999999999999999999"}, "is not a number"},
		{"space", []string{"guest: 1:2:3"}, `" 1" is not a number`},
		{"suffix", []string{"guest:1:2:3x"}, `"3x"`},
		{"empty number", []string{"guest:1::3"}, `"" is not a number`},
		{"sign alone", []string{"guest:+:2:3"}, `"+" is not a number`},
		{"double sign", []string{"guest:++1:2:3"}, `"++1"`},
		{"hex", []string{"guest:0x10:2:3"}, `"0x10"`},
		{"unknown type", []string{"frob:1:2:3"}, `unknown type "frob"`},
		{"no type", []string{":1:2:3"}, `unknown type ""`},
		{"digit in type", []string{"guest1:1:2:3"}, `unknown type "guest1"`},
		{"letters are no separator", []string{"guesté1é2é3"}, `"guesté1é2é3": no fields`},
		{"underscore", []string{"squash_guest:1:2:3"}, `unknown type "squash_guest"`},
		{"bad UTF-8", []string{"guest:1:2:\xff"}, "not valid UTF-8"},
		{"malformed before range errors", []string{"guest:4294967295:0:1", "bad"}, `"bad": no fields`},

		// Ranges past 2^32-1.
		{"source past end", []string{"guest:4294967295:0:1"}, `"guest:4294967295:0:1": source range 4294967295+1 runs past 4294967295`},
		{"source past end by more", []string{"squash-guest:4294967290:0:6"}, "source range"},
		{"forbid past end", []string{"forbid-guest:4294967295:1"}, "source range"},
		{"forbid wraps", []string{"forbid-guest:4294967295:4294967295"}, "source range"},
		{"squash-host past end", []string{"squash-host:4294967295:0:1"}, "source range"},
		{"host past end", []string{"host:1:0:4294967295"}, "source range"},
		{"guest target past end", []string{"guest:0:4294967295:2"}, "target range 4294967295+2"},
		{"host target past end", []string{"host:0:4294967290:7"}, "target range"},
		{"map host side past end", []string{"map:0:4294967295:1"}, "host range"},
		{"map guest side past end", []string{"map:4294967295:0:1"}, "source range"},

		// Overlaps within one direction.
		{"guest ranges", []string{"guest:0:100:10", "guest:9:200:1"},
			`translation "guest:9:200:1" overlaps "guest:0:100:10": both translate guest ids 9..9`},
		{"later rule sorts first", []string{"guest:5:100:10", "guest:0:200:6"},
			`translation "guest:0:200:6" overlaps "guest:5:100:10": both translate guest ids 5..5`},
		{"identical twice", []string{"guest:0:100:10", "guest:0:100:10"}, "guest ids 0..9"},
		{"forbid in squash", []string{"squash-guest:0:1:10", "forbid-guest:5:1"}, "guest ids 5..5"},
		{"forbid in forbid", []string{"forbid-guest:0:10", "forbid-guest:3:2"}, "guest ids 3..4"},
		{"map guest side", []string{"map:0:1000:10", "guest:5:0:1"}, "guest ids 5..5"},
		{"map host side", []string{"map:0:1000:10", "host:1005:0:1"}, "host ids 1005..1005"},
		{"squash-host and host", []string{"squash-host:0:0:100", "host:99:0:2"}, "host ids 99..99"},
		{"two maps, host side", []string{"map:0:1000:10", "map:10:1005:10"}, "host ids 1005..1009"},
		{"two maps, guest side", []string{"map:0:1000:10", "map:9:2000:10"}, "guest ids 9..9"},
		{"at the top", []string{"squash-guest:0:1:4294967295", "forbid-guest:4294967294:1"}, "guest ids 4294967294..4294967294"},
		{"inside a large range", []string{"squash-host:0:0:4294967295", "host:70000:1:1"}, "host ids 70000..70000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.specs)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error containing %q", tt.specs, m.String(), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error %q, want it to contain %q", tt.specs, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

func TestLookupAllocs(t *testing.T) {
	m, err := Parse([]string{"guest:0:100:10", "host:100:0:10", "forbid-guest:20:1", "squash-host:200:7:100", "map:1000:2000:100"})
	if err != nil {
		t.Fatal(err)
	}
	var sink uint32
	n := testing.AllocsPerRun(100, func() {
		for id := uint32(0); id < 2200; id += 7 {
			v, _ := m.ToHost(id)
			sink += v + m.ToGuest(id)
		}
	})
	if n != 0 {
		t.Errorf("ToHost/ToGuest allocate %v times per run", n)
	}
	_ = sink
}

// manyRules returns n map: rules with gaps between them.
func manyRules(n int) []string {
	specs := make([]string, n)
	for i := range specs {
		specs[i] = fmt.Sprintf("map:%d:%d:100", i*1000, 1_000_000+i*1000)
	}
	return specs
}

func TestManyRules(t *testing.T) {
	m, err := Parse(manyRules(300))
	if err != nil {
		t.Fatal(err)
	}
	for i := uint32(0); i < 300; i++ {
		checkProbes(t, m, []probe{
			h(i*1000, 1_000_000+i*1000), h(i*1000+99, 1_000_000+i*1000+99), h(i*1000+100, i*1000+100),
			g(1_000_000+i*1000+50, i*1000+50), g(1_000_000+i*1000+100, 1_000_000+i*1000+100),
		})
	}
}

func benchmarkLookup(b *testing.B, specs []string, toHost bool) {
	m, err := Parse(specs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var sink uint32
	id := uint32(0)
	for b.Loop() {
		if toHost {
			v, _ := m.ToHost(id)
			sink += v
		} else {
			sink += m.ToGuest(id)
		}
		id = (id + 997) % 400_000
	}
	_ = sink
}

var benchMaps = []struct {
	name  string
	specs []string
}{
	{"identity", nil},
	{"1rule", []string{"map:0:1000:10"}},
	{"4rules", manyRules(4)},
	{"64rules", manyRules(64)},
}

func BenchmarkToHost(b *testing.B) {
	for _, bm := range benchMaps {
		b.Run(bm.name, func(b *testing.B) { benchmarkLookup(b, bm.specs, true) })
	}
}

func BenchmarkToGuest(b *testing.B) {
	for _, bm := range benchMaps {
		b.Run(bm.name, func(b *testing.B) { benchmarkLookup(b, bm.specs, false) })
	}
}
