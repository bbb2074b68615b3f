package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

func TestCredsOf(t *testing.T) {
	tests := []struct {
		name   string
		ctx    *fuseproto.Context
		want   Creds
		isRoot bool
	}{
		{"nil context", nil, Creds{}, true},
		{"root", &fuseproto.Context{}, Creds{}, true},
		{"user", &fuseproto.Context{UID: 1000, GID: 1001, PID: 7}, Creds{UID: 1000, GID: 1001}, false},
		{"user with groups", &fuseproto.Context{UID: 1000, GID: 1001, SuppGroups: []uint32{5, 6}}, Creds{UID: 1000, GID: 1001, Groups: []uint32{5, 6}}, false},
		{"root uid, other gid", &fuseproto.Context{GID: 1}, Creds{GID: 1}, false},
		{"other uid, root gid", &fuseproto.Context{UID: 1}, Creds{UID: 1}, false},
		{"root with groups", &fuseproto.Context{SuppGroups: []uint32{0}}, Creds{Groups: []uint32{0}}, false},
	}
	for _, tc := range tests {
		got := CredsOf(tc.ctx)
		if got.UID != tc.want.UID || got.GID != tc.want.GID || !slices.Equal(got.Groups, tc.want.Groups) {
			t.Errorf("%s: CredsOf = %+v, want %+v", tc.name, got, tc.want)
		}
		if got.IsRoot() != tc.isRoot {
			t.Errorf("%s: IsRoot = %v, want %v", tc.name, got.IsRoot(), tc.isRoot)
		}
	}
}

// statusField returns the fields of a "Name:" line of a /proc status file.
func statusField(t *testing.T, status, name string) []string {
	t.Helper()
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no %s line in status", name)
	return nil
}

// groupsString formats groups as /proc's Groups line lists them.
func groupsString(g []uint32) string {
	s := make([]string, len(g))
	for i, v := range g {
		s[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(s, ",")
}

func newSwitcher(t *testing.T) *Switcher {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "switching credentials needs root")
	}
	s, err := NewSwitcher(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAsCaller checks the thread's ids inside AsCaller, that fn's error is
// returned, and that no thread of the process keeps the ids afterwards.
func TestAsCaller(t *testing.T) {
	s := newSwitcher(t)
	tests := []struct {
		name string
		c    Creds
		// wantFsuid, wantFsgid and wantGroups are the /proc/thread-self
		// status fields inside fn.
		wantFsuid, wantFsgid, wantGroups string
	}{
		{"user with groups", Creds{UID: 1000, GID: 1001, Groups: []uint32{2000, 2001}}, "1000", "1001", "2000,2001"},
		{"user without groups runs with none", Creds{UID: 1000, GID: 1000}, "1000", "1000", ""},
		{"gid only", Creds{GID: 4321}, "0", "4321", ""},
		{"uid only", Creds{UID: 1234}, "1234", "0", ""},
		{"root keeps the daemon's ids", Creds{}, "0", "0", groupsString(s.groups)},
	}
	for _, tc := range tests {
		var status []byte
		err := s.AsCaller(tc.c, func() error {
			var err error
			status, err = os.ReadFile("/proc/thread-self/status")
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		st := string(status)
		// Uid and Gid: real effective saved fs.
		if got := statusField(t, st, "Uid"); got[0] != "0" || got[1] != "0" || got[3] != tc.wantFsuid {
			t.Errorf("%s: Uid %v, want real and effective 0, fsuid %s", tc.name, got, tc.wantFsuid)
		}
		if got := statusField(t, st, "Gid"); got[0] != "0" || got[3] != tc.wantFsgid {
			t.Errorf("%s: Gid %v, want real 0, fsgid %s", tc.name, got, tc.wantFsgid)
		}
		if got := strings.Join(statusField(t, st, "Groups"), ","); got != tc.wantGroups {
			t.Errorf("%s: Groups %q, want %q", tc.name, got, tc.wantGroups)
		}
	}

	errFn := errors.New("from fn")
	for _, c := range []Creds{{}, {UID: 1000, GID: 1000}} {
		if err := s.AsCaller(c, func() error { return errFn }); err != errFn {
			t.Errorf("AsCaller(%+v) = %v, want fn's error", c, err)
		}
	}

	// Run many switches concurrently, then check every thread.
	done := make(chan error)
	for i := range 32 {
		go func() {
			done <- s.AsCaller(Creds{UID: uint32(1000 + i), GID: uint32(1000 + i), Groups: []uint32{uint32(i)}}, func() error { return nil })
		}()
	}
	for range 32 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // thread exited
		}
		if got := statusField(t, string(b), "Uid"); got[3] != "0" {
			t.Errorf("%s: fsuid %s after AsCaller", task, got[3])
		}
		if got := statusField(t, string(b), "Gid"); got[3] != "0" {
			t.Errorf("%s: fsgid %s after AsCaller", task, got[3])
		}
		if got := strings.Join(statusField(t, string(b), "Groups"), ","); got != groupsString(s.groups) {
			t.Errorf("%s: groups %q after AsCaller, want %q", task, got, groupsString(s.groups))
		}
	}
}

// TestAsCallerPermissions checks that the host enforces the caller's
// permissions: a nonzero fsuid drops CAP_DAC_OVERRIDE, and supplementary
// groups count.
func TestAsCallerPermissions(t *testing.T) {
	s := newSwitcher(t)
	dir := t.TempDir()
	// The test's temporary directories are 0700; the users need search.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	group := filepath.Join(dir, "group")
	if err := os.WriteFile(group, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(group, 0, 2000); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    Creds
		path string
		ok   bool
	}{
		{"root reads 0600", Creds{}, secret, true},
		{"user reads root's 0600", Creds{UID: 1000, GID: 1000}, secret, false},
		{"user without the group", Creds{UID: 1000, GID: 1000}, group, false},
		{"user with the group as fsgid", Creds{UID: 1000, GID: 2000}, group, true},
		{"user with the group as supplementary", Creds{UID: 1000, GID: 1000, Groups: []uint32{2000}}, group, true},
	}
	for _, tc := range tests {
		err := s.AsCaller(tc.c, func() error {
			_, err := os.ReadFile(tc.path)
			return err
		})
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want success %v", tc.name, err, tc.ok)
		}
	}
}
