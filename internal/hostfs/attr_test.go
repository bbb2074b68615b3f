package hostfs

import (
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

func TestKilledMode(t *testing.T) {
	for _, tc := range []struct{ mode, want uint32 }{
		{0o4755, 0o755},
		{0o2755, 0o755},  // group-executable: set-group-ID goes
		{0o2745, 0o2745}, // no group execute: mandatory-locking mark stays
		{0o6711, 0o711},
		{0o644, 0o644},
	} {
		if got := KilledMode(unix.S_IFREG | tc.mode); got != unix.S_IFREG|tc.want {
			t.Errorf("KilledMode(%#o) = %#o, want %#o", tc.mode, got&0o7777, tc.want)
		}
	}
}

func TestSetattrTimes(t *testing.T) {
	omit, now := int64(unix.UTIME_OMIT), int64(unix.UTIME_NOW)
	for _, tc := range []struct {
		name string
		in   fuseproto.SetattrIn
		want [2]unix.Timespec
	}{
		{"none", fuseproto.SetattrIn{}, [2]unix.Timespec{{Nsec: omit}, {Nsec: omit}}},
		{"atime", fuseproto.SetattrIn{Valid: fuseproto.FattrAtime, Atime: 5, Atimensec: 6},
			[2]unix.Timespec{{Sec: 5, Nsec: 6}, {Nsec: omit}}},
		{"mtime now wins", fuseproto.SetattrIn{Valid: fuseproto.FattrMtime | fuseproto.FattrMtimeNow, Mtime: 9},
			[2]unix.Timespec{{Nsec: omit}, {Nsec: now}}},
		{"both", fuseproto.SetattrIn{Valid: fuseproto.FattrAtimeNow | fuseproto.FattrMtime, Mtime: 7, Mtimensec: 8},
			[2]unix.Timespec{{Nsec: now}, {Sec: 7, Nsec: 8}}},
	} {
		if got := SetattrTimes(&tc.in); got != tc.want {
			t.Errorf("%s: SetattrTimes = %v, want %v", tc.name, got, tc.want)
		}
	}
}
