package uidmap

import (
	"strings"
	"testing"
)

func TestParseNSRange(t *testing.T) {
	good := []struct {
		spec string
		want NSRange
	}{
		{":0:100000:65536:", NSRange{0, 100000, 65536}},
		{":0:1000:1:", NSRange{0, 1000, 1}},
		{"/0/1/2/", NSRange{0, 1, 2}},
		{"-1-2-3-", NSRange{1, 2, 3}},
		{"§1§2§3§", NSRange{1, 2, 3}},
		{":+1:+02:3:", NSRange{1, 2, 3}},
		{":4294967295:4294967295:4294967295:", NSRange{top, top, top}},
		{":0:0:0:", NSRange{}}, // syntax only; CheckNSRanges refuses it
	}
	for _, tt := range good {
		got, err := ParseNSRange(tt.spec)
		if err != nil || got != tt.want {
			t.Errorf("ParseNSRange(%q) = %v, %v; want %v", tt.spec, got, err, tt.want)
		}
	}

	bad := []struct{ spec, want string }{
		{"", "empty"},
		{"\xff:1:2:", "UTF-8"},
		{":", "does not begin with the delimiter"},
		{"::", "1 fields"},
		{"0:1:2", "does not end with a delimiter"},
		{":0:1:2", "does not end with a delimiter"},
		{":0:1:2a", "does not end with a delimiter"},
		{"0:1:2:", "does not begin with the delimiter"},
		{":0:1:2/", "does not begin with the delimiter"},
		{"/0:1:2/", "1 fields"},
		{":0:1:", "2 fields"},
		{":0:1:2:3:", "4 fields"},
		{"::0:1:2:", "4 fields"},
		{"::1:2:", `"" is not a number`},
		{":a:1:2:", `"a" is not a number`},
		{":-1:1:2:", `"-1" is not a number`},
		{":0:1:4294967296:", `"4294967296" is not a number`},
		{": 0:1:2:", `" 0" is not a number`},
		{"é0é1é2é", "does not end with a delimiter"},
	}
	for _, tt := range bad {
		r, err := ParseNSRange(tt.spec)
		if err == nil {
			t.Errorf("ParseNSRange(%q) = %v, want error containing %q", tt.spec, r, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "(want :INSIDE:OUTSIDE:COUNT:)") {
			t.Errorf("ParseNSRange(%q) error %q, want it to contain %q", tt.spec, err, tt.want)
		}
	}
}

func TestNSRangeFormat(t *testing.T) {
	r := NSRange{Inside: 0, Outside: 100000, Count: 65536}
	if got := r.Line(); got != "0 100000 65536" {
		t.Errorf("Line() = %q", got)
	}
	if got := r.String(); got != ":0:100000:65536:" {
		t.Errorf("String() = %q", got)
	}
	if got := (NSRange{top, 1, 2}).Line(); got != "4294967295 1 2" {
		t.Errorf("Line() = %q", got)
	}
}

func TestCheckNSRanges(t *testing.T) {
	many := func(n int) []NSRange {
		rs := make([]NSRange, n)
		for i := range rs {
			rs[i] = NSRange{uint32(i), uint32(100000 + i), 1}
		}
		return rs
	}
	tests := []struct {
		name string
		rs   []NSRange
		want string // "" means accepted
	}{
		{"none", nil, ""},
		{"one", []NSRange{{0, 100000, 65536}}, ""},
		{"own id and subids", []NSRange{{0, 1000, 1}, {1, 100000, 65536}}, ""},
		{"adjacent both sides", []NSRange{{10, 1010, 10}, {0, 1000, 10}}, ""},
		{"last valid id", []NSRange{{4294967294, 4294967294, 1}}, ""},
		{"up to the top", []NSRange{{0, 1, 4294967294}}, ""},
		{"max ranges", many(MaxNSRanges), ""},

		{"count 0", []NSRange{{0, 1000, 0}}, "id map :0:1000:0:: count is 0"},
		{"inside past end", []NSRange{{4294967295, 0, 1}}, "namespace range runs past"},
		{"inside wraps", []NSRange{{1, 0, 4294967295}}, "namespace range runs past"},
		{"outside past end", []NSRange{{0, 4294967290, 6}}, "host range runs past"},
		{"inside overlap", []NSRange{{0, 1000, 10}, {5, 2000, 1}},
			"id map :5:2000:1: overlaps :0:1000:10: in the namespace ids"},
		{"inside overlap, later first", []NSRange{{5, 2000, 10}, {0, 1000, 6}},
			"id map :0:1000:6: overlaps :5:2000:10: in the namespace ids"},
		{"outside overlap", []NSRange{{0, 1000, 10}, {100, 1009, 1}}, "in the host ids"},
		{"duplicate", []NSRange{{0, 1000, 1}, {0, 1000, 1}}, "in the namespace ids"},
		{"too many", many(MaxNSRanges + 1), "341 id map ranges; the kernel takes at most 340"},
	}
	for _, tt := range tests {
		err := CheckNSRanges(tt.rs)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: CheckNSRanges: %v", tt.name, err)
		case tt.want != "" && err == nil:
			t.Errorf("%s: CheckNSRanges accepted %v, want error %q", tt.name, tt.rs, tt.want)
		case tt.want != "" && !strings.Contains(err.Error(), tt.want):
			t.Errorf("%s: CheckNSRanges error %q, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

func TestInsideID(t *testing.T) {
	rs := []NSRange{{0, 1000, 1}, {1, 100000, 65536}}
	for _, tt := range []struct{ outside, want uint32 }{
		{1000, 0}, {100000, 1}, {165535, 65536}, {165536, OverflowID},
		{99999, OverflowID}, {0, OverflowID}, {999, OverflowID}, {1001, OverflowID},
	} {
		if got := InsideID(rs, tt.outside); got != tt.want {
			t.Errorf("InsideID(%d) = %d, want %d", tt.outside, got, tt.want)
		}
	}
	if got := InsideID(nil, 0); got != OverflowID {
		t.Errorf("InsideID(nil, 0) = %d", got)
	}
}
