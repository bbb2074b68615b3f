package main

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// xattrNames lists the xattr names of path, probing the size first as
// getfattr does; the probe must give the size of the list itself.
func xattrNames(t *testing.T, path string) []string {
	t.Helper()
	n, err := unix.Listxattr(path, nil)
	if err != nil {
		t.Fatalf("listxattr %s size: %v", path, err)
	}
	buf := make([]byte, n)
	m, err := unix.Listxattr(path, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	if m != n {
		t.Errorf("listxattr %s: size probe said %d bytes, the list has %d", path, n, m)
	}
	names := strings.Split(string(buf[:m]), "\x00")
	return slices.DeleteFunc(names, func(s string) bool { return s == "" })
}

// xattrValue reads name of path; "" and the errno when it cannot.
func xattrValue(path, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestDaemonXattrMap serves a share with --xattrmap over /dev/fuse and
// checks through the mount that host xattrs are renamed or hidden, that
// a name the map refuses is refused, and that xattrs set through the mount
// land on the host under the mapped name.
func TestDaemonXattrMap(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	type xattr struct{ name, value string }
	for _, tc := range []struct {
		name     string
		rules    string
		host     []xattr  // set on the host file before the guest looks
		listed   []string // what the mount lists, sorted
		read     []xattr  // read through the mount
		absent   []string // ENODATA through the mount
		set      xattr    // set through the mount ...
		setHost  string   // ... landing on the host as this name
		refused  string   // setxattr through the mount answers EPERM
		removed  string   // removed through the mount ...
		goneHost string   // ... removing this host name
	}{
		{
			name:  "everything under a prefix",
			rules: ":map::user.virtiofs.:",
			host: []xattr{
				{"user.virtiofs.user.shown", "renamed"},
				{"user.virtiofs.trusted.t", "trusted in the guest"},
				{"user.hidden", "host only"},
				{"trusted.hidden", "host only"},
			},
			listed:   []string{"trusted.t", "user.shown"},
			read:     []xattr{{"user.shown", "renamed"}, {"trusted.t", "trusted in the guest"}},
			absent:   []string{"user.hidden", "trusted.hidden", "user.virtiofs.user.shown"},
			set:      xattr{"user.new", "from the guest"},
			setHost:  "user.virtiofs.user.new",
			removed:  "user.shown",
			goneHost: "user.virtiofs.user.shown",
		},
		{
			// The daemon lacks CAP_SYS_ADMIN, so it could not use
			// trusted.* on the host itself: the guest's trusted.*
			// live under user.virtiofs. (and the host's own
			// trusted.hidden would not be listed anyway).
			name:  "one namespace under a prefix",
			rules: "/map/trusted./user.virtiofs./",
			host: []xattr{
				{"user.virtiofs.trusted.t", "renamed"},
				{"trusted.hidden", "host only"},
				{"user.plain", "unchanged"},
			},
			listed:   []string{"trusted.t", "user.plain"},
			read:     []xattr{{"trusted.t", "renamed"}, {"user.plain", "unchanged"}},
			absent:   []string{"trusted.hidden", "user.virtiofs.trusted.t"},
			set:      xattr{"trusted.new", "from the guest"},
			setHost:  "user.virtiofs.trusted.new",
			refused:  "user.virtiofs.direct",
			removed:  "trusted.t",
			goneHost: "user.virtiofs.trusted.t",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, shared, mnt := startDaemon(t, bin, "--xattrmap", tc.rules)
			hostFile, guestFile := filepath.Join(shared, "f"), filepath.Join(mnt, "f")
			if err := unix.Mknod(hostFile, unix.S_IFREG|0o644, 0); err != nil {
				t.Fatal(err)
			}
			for _, x := range tc.host {
				if err := unix.Setxattr(hostFile, x.name, []byte(x.value), 0); err != nil {
					t.Fatalf("host setxattr %s: %v", x.name, err)
				}
			}

			names := xattrNames(t, guestFile)
			slices.Sort(names)
			if !slices.Equal(names, tc.listed) {
				t.Errorf("listed through the mount: %q, want %q", names, tc.listed)
			}
			for _, x := range tc.read {
				if v, err := xattrValue(guestFile, x.name); err != nil || v != x.value {
					t.Errorf("getxattr %s through the mount: %q, %v; want %q", x.name, v, err, x.value)
				}
			}
			for _, n := range tc.absent {
				if v, err := xattrValue(guestFile, n); err != unix.ENODATA {
					t.Errorf("getxattr %s through the mount: %q, %v; want ENODATA", n, v, err)
				}
			}

			if err := unix.Setxattr(guestFile, tc.set.name, []byte(tc.set.value), 0); err != nil {
				t.Fatalf("setxattr %s through the mount: %v", tc.set.name, err)
			}
			if v, err := xattrValue(hostFile, tc.setHost); err != nil || v != tc.set.value {
				t.Errorf("on the host %s: %q, %v; want %q", tc.setHost, v, err, tc.set.value)
			}
			if tc.setHost != tc.set.name {
				if _, err := xattrValue(hostFile, tc.set.name); err != unix.ENODATA {
					t.Errorf("on the host %s: %v, want ENODATA (only the mapped name is set)", tc.set.name, err)
				}
			}
			if v, err := xattrValue(guestFile, tc.set.name); err != nil || v != tc.set.value {
				t.Errorf("getxattr %s through the mount after setting it: %q, %v", tc.set.name, v, err)
			}
			if tc.refused != "" {
				if err := unix.Setxattr(guestFile, tc.refused, []byte("x"), 0); err != unix.EPERM {
					t.Errorf("setxattr %s through the mount: %v, want EPERM", tc.refused, err)
				}
				if _, err := xattrValue(hostFile, tc.refused); err != unix.ENODATA {
					t.Errorf("on the host %s: %v, want ENODATA", tc.refused, err)
				}
			}

			if err := unix.Removexattr(guestFile, tc.removed); err != nil {
				t.Fatalf("removexattr %s through the mount: %v", tc.removed, err)
			}
			if _, err := xattrValue(hostFile, tc.goneHost); err != unix.ENODATA {
				t.Errorf("on the host %s after removing %s through the mount: %v, want ENODATA", tc.goneHost, tc.removed, err)
			}
			for _, x := range tc.host {
				if x.name == tc.goneHost {
					continue
				}
				if v, err := xattrValue(hostFile, x.name); err != nil || v != x.value {
					t.Errorf("on the host %s changed: %q, %v", x.name, v, err)
				}
			}

			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := d.wait(t); code != 0 {
				t.Fatalf("exit status %d\n%s", code, d.stderr)
			}
		})
	}
}
