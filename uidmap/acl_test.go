package uidmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"syscall"
	"testing"
)

// ace is one ACL entry.
type ace struct {
	tag, perm uint16
	id        uint32
}

func aclValue(version uint32, entries ...ace) []byte {
	b := binary.LittleEndian.AppendUint32(nil, version)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

const undefinedID = math.MaxUint32 // ACL_UNDEFINED_ID

// aclMaps: uids map:0:1000:10 and forbid guest uid 20; gids guest 0..9 to
// host 500..509, host 500..509 back, host 600..609 squashed to guest 7.
func aclMaps(t testing.TB) (uids, gids *Map) {
	uids, err := Parse([]string{"map:0:1000:10", "forbid-guest:20:1"})
	if err != nil {
		t.Fatal(err)
	}
	gids, err = Parse([]string{"guest:0:500:10", "host:500:0:10", "squash-host:600:7:10"})
	if err != nil {
		t.Fatal(err)
	}
	return uids, gids
}

func TestTranslateACL(t *testing.T) {
	uids, gids := aclMaps(t)
	tests := []struct {
		name   string
		toHost bool
		in     []ace
		want   []ace
	}{
		{
			name:   "to host",
			toHost: true,
			in: []ace{
				{aclUserObj, 6, undefinedID}, {aclUser, 4, 5}, {aclGroupObj, 5, undefinedID},
				{aclGroup, 7, 3}, {aclMask, 7, undefinedID}, {aclOther, 0, undefinedID},
			},
			want: []ace{
				{aclUserObj, 6, undefinedID}, {aclUser, 4, 1005}, {aclGroupObj, 5, undefinedID},
				{aclGroup, 7, 503}, {aclMask, 7, undefinedID}, {aclOther, 0, undefinedID},
			},
		},
		{
			name:   "to guest",
			toHost: false,
			in:     []ace{{aclUser, 7, 1005}, {aclUser, 7, 1010}, {aclGroup, 1, 605}, {aclGroup, 1, 509}, {aclGroup, 1, 3}},
			want:   []ace{{aclUser, 7, 5}, {aclUser, 7, 1010}, {aclGroup, 1, 7}, {aclGroup, 1, 9}, {aclGroup, 1, 3}},
		},
		{
			name:   "uids for users, gids for groups",
			toHost: true,
			in:     []ace{{aclUser, 1, 5}, {aclGroup, 1, 5}},
			want:   []ace{{aclUser, 1, 1005}, {aclGroup, 1, 505}},
		},
		{
			name:   "ids of other tags untouched",
			toHost: true,
			in:     []ace{{aclUserObj, 7, 5}, {aclGroupObj, 7, 5}, {aclMask, 7, 5}, {aclOther, 7, 5}},
			want:   []ace{{aclUserObj, 7, 5}, {aclGroupObj, 7, 5}, {aclMask, 7, 5}, {aclOther, 7, 5}},
		},
		{
			name:   "forbidden guest id is fine host to guest",
			toHost: false,
			in:     []ace{{aclUser, 7, 20}},
			want:   []ace{{aclUser, 7, 20}},
		},
		{name: "empty ACL", toHost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := aclValue(aclVersion, tt.in...)
			if err := TranslateACL(v, uids, gids, tt.toHost); err != nil {
				t.Fatalf("TranslateACL: %v", err)
			}
			if want := aclValue(aclVersion, tt.want...); !bytes.Equal(v, want) {
				t.Errorf("got  % x\nwant % x", v, want)
			}
		})
	}
}

func TestTranslateACLNilMaps(t *testing.T) {
	v := aclValue(aclVersion, ace{aclUser, 7, 5}, ace{aclGroup, 7, 6})
	orig := bytes.Clone(v)
	for _, toHost := range []bool{true, false} {
		if err := TranslateACL(v, nil, nil, toHost); err != nil || !bytes.Equal(v, orig) {
			t.Errorf("nil maps, toHost %v: %v, % x", toHost, err, v)
		}
	}
}

func TestTranslateACLErrors(t *testing.T) {
	uids, gids := aclMaps(t)
	valid := aclValue(aclVersion, ace{aclUser, 7, 5})
	tests := []struct {
		name   string
		value  []byte
		toHost bool
		want   error
	}{
		{"nil", nil, true, ErrMalformed},
		{"short header", []byte{2, 0, 0}, true, ErrMalformed},
		{"version 1", aclValue(1, ace{aclUser, 7, 5}), true, ErrMalformed},
		{"version 3 header only", aclValue(3), false, ErrMalformed},
		{"version big endian", append([]byte{0, 0, 0, 2}, valid[4:]...), true, ErrMalformed},
		{"partial entry", valid[:len(valid)-1], true, ErrMalformed},
		{"trailing bytes", append(bytes.Clone(valid), 0), false, ErrMalformed},
		{"entry plus half", append(bytes.Clone(valid), 1, 2, 3, 4), true, ErrMalformed},
		{"unknown tag", aclValue(aclVersion, ace{aclUser, 7, 5}, ace{0x40, 7, 5}), true, ErrMalformed},
		{"tag 0", aclValue(aclVersion, ace{0, 7, 5}), false, ErrMalformed},
		{"forbidden uid", aclValue(aclVersion, ace{aclUser, 7, 5}, ace{aclUser, 7, 20}), true, ErrForbidden},
		{"malformed wins over forbidden", aclValue(aclVersion, ace{aclUser, 7, 20}, ace{0x3, 7, 5}), true, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.value)
			err := TranslateACL(tt.value, uids, gids, tt.toHost)
			if !errors.Is(err, tt.want) {
				t.Fatalf("TranslateACL = %v, want %v", err, tt.want)
			}
			if !bytes.Equal(tt.value, orig) {
				t.Errorf("value changed on error:\n got % x\nwas % x", tt.value, orig)
			}
		})
	}
	if ErrForbidden != syscall.EPERM || ErrMalformed != syscall.EINVAL {
		t.Errorf("ErrForbidden = %v, ErrMalformed = %v; want EPERM, EINVAL", ErrForbidden, ErrMalformed)
	}
}

func TestTranslateACLAllocs(t *testing.T) {
	uids, gids := aclMaps(t)
	v := aclValue(aclVersion, ace{aclUserObj, 7, 0}, ace{aclUser, 7, 5}, ace{aclGroup, 7, 3}, ace{aclOther, 7, 0})
	bad := aclValue(aclVersion, ace{aclUser, 7, 20})
	n := testing.AllocsPerRun(100, func() {
		_ = TranslateACL(v, uids, gids, true)
		_ = TranslateACL(v, uids, gids, false)
		_ = TranslateACL(bad, uids, gids, true)
	})
	if n != 0 {
		t.Errorf("TranslateACL allocates %v times per run", n)
	}
}

func BenchmarkTranslateACL(b *testing.B) {
	uids, gids := aclMaps(b)
	v := aclValue(aclVersion, ace{aclUserObj, 7, 0}, ace{aclUser, 7, 5}, ace{aclUser, 7, 6},
		ace{aclGroupObj, 7, 0}, ace{aclGroup, 7, 3}, ace{aclMask, 7, 0}, ace{aclOther, 7, 0})
	b.ReportAllocs()
	for b.Loop() {
		_ = TranslateACL(v, uids, gids, true)
		_ = TranslateACL(v, uids, gids, false)
	}
}
