package passthrough

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

func TestXattr(t *testing.T) {
	fs, dir := newTestFS(t, Options{Xattr: true})
	writeFile(t, dir, "f", "")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	set := func(name, value string, flags uint32) fuseproto.Errno {
		return fs.Setxattr(rootCtx, node, name, []byte(value), &fuseproto.SetxattrIn{Size: uint32(len(value)), Flags: flags})
	}
	if errno := set("user.greeting", "hello", 0); errno != 0 {
		t.Fatalf("Setxattr: %v", errno)
	}
	if errno := set("user.greeting", "again", unix.XATTR_CREATE); errno != unix.EEXIST {
		t.Errorf("XATTR_CREATE existing: %v", errno)
	}
	if errno := set("user.missing", "x", unix.XATTR_REPLACE); errno != unix.ENODATA {
		t.Errorf("XATTR_REPLACE missing: %v", errno)
	}
	set("user.other", "", 0)
	if v, err := unix.Getxattr(filepath.Join(dir, "f"), "user.greeting", make([]byte, 16)); err != nil || v != 5 {
		t.Errorf("host getxattr: %d, %v", v, err)
	}

	// Size query, ERANGE, value.
	if n, errno := fs.Getxattr(rootCtx, node, "user.greeting", nil); errno != 0 || n != 5 {
		t.Errorf("size query: %d, %v", n, errno)
	}
	if _, errno := fs.Getxattr(rootCtx, node, "user.greeting", make([]byte, 4)); errno != unix.ERANGE {
		t.Errorf("small buffer: %v, want ERANGE", errno)
	}
	buf := make([]byte, 64)
	if n, errno := fs.Getxattr(rootCtx, node, "user.greeting", buf); errno != 0 || string(buf[:n]) != "hello" {
		t.Errorf("Getxattr: %q, %v", buf[:n], errno)
	}
	if _, errno := fs.Getxattr(rootCtx, node, "user.nope", buf); errno != unix.ENODATA {
		t.Errorf("missing: %v", errno)
	}
	want := "user.greeting\x00user.other\x00"
	if n, errno := fs.Listxattr(rootCtx, node, nil); errno != 0 || n != len(want) {
		t.Errorf("list size: %d, %v", n, errno)
	}
	if _, errno := fs.Listxattr(rootCtx, node, make([]byte, 3)); errno != unix.ERANGE {
		t.Errorf("list small buffer: %v", errno)
	}
	if n, errno := fs.Listxattr(rootCtx, node, buf); errno != 0 || (string(buf[:n]) != want && string(buf[:n]) != "user.other\x00user.greeting\x00") {
		t.Errorf("Listxattr: %q, %v", buf[:n], errno)
	}
	if errno := fs.Removexattr(rootCtx, node, "user.greeting"); errno != 0 {
		t.Errorf("Removexattr: %v", errno)
	}
	if errno := fs.Removexattr(rootCtx, node, "user.greeting"); errno != unix.ENODATA {
		t.Errorf("Removexattr again: %v", errno)
	}

	// Xattrs of a fifo, which must not be opened to reach them.
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := mustLookup(t, fs, fuseproto.RootID, "fifo").NodeID
	if errno := fs.Setxattr(rootCtx, fifo, "trusted.x", []byte("1"), &fuseproto.SetxattrIn{Size: 1}); errno != 0 {
		t.Errorf("Setxattr on fifo: %v", errno)
	}
	if n, errno := fs.Getxattr(rootCtx, fifo, "trusted.x", buf); errno != 0 || string(buf[:n]) != "1" {
		t.Errorf("Getxattr on fifo: %q, %v", buf[:n], errno)
	}
}

// TestXattrACLKillSGID sets an access ACL with SetxattrACLKillSGID as a
// caller outside the file's group.
func TestXattrACLKillSGID(t *testing.T) {
	fs, dir := newTestFS(t, Options{Xattr: true})
	path := filepath.Join(dir, "f")
	writeFile(t, dir, "f", "")
	if err := os.Chown(path, 1000, 3000); err != nil {
		t.Fatal(err)
	}
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	// A minimal ACL equivalent to mode 0775: user::rwx group::rwx other::r-x
	acl := []byte{
		2, 0, 0, 0, // version
		1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, // ACL_USER_OBJ rwx
		4, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, // ACL_GROUP_OBJ rwx
		0x20, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, // ACL_OTHER r-x
	}
	for _, tc := range []struct {
		ctx   *fuseproto.Context
		flags uint32
		want  uint32
	}{
		{userCtx(1000, 1000), fuseproto.SetxattrACLKillSGID, 0o775},        // not in group 3000: cleared
		{userCtx(1000, 1000, 3000), fuseproto.SetxattrACLKillSGID, 0o2775}, // in group: kept
		{userCtx(1000, 1000), 0, 0o2775},                                   // flag not set: kept
		{rootCtx, fuseproto.SetxattrACLKillSGID, 0o2775},                   // root: kept
	} {
		if err := unix.Chmod(path, 0o2775); err != nil {
			t.Fatal(err)
		}
		if errno := fs.Setxattr(tc.ctx, node, posixACLAccess, acl, &fuseproto.SetxattrIn{Size: uint32(len(acl)), SetxattrFlags: tc.flags}); errno != 0 {
			t.Fatalf("set ACL: %v", errno)
		}
		if got := lstat(t, path).Mode & 0o7777; got != tc.want {
			t.Errorf("caller %d groups %v flags %d: mode %#o, want %#o", tc.ctx.UID, tc.ctx.SuppGroups, tc.flags, got, tc.want)
		}
	}
}

func TestXattrDisabled(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	writeFile(t, dir, "f", "")
	node := mustLookup(t, fs, fuseproto.RootID, "f").NodeID
	checks := map[string]fuseproto.Errno{
		"Setxattr":    fs.Setxattr(rootCtx, node, "user.x", []byte("1"), &fuseproto.SetxattrIn{Size: 1}),
		"Removexattr": fs.Removexattr(rootCtx, node, "user.x"),
	}
	_, checks["Getxattr"] = fs.Getxattr(rootCtx, node, "user.x", nil)
	_, checks["Listxattr"] = fs.Listxattr(rootCtx, node, nil)
	for op, errno := range checks {
		if errno != unix.ENOSYS {
			t.Errorf("%s with xattrs off: %v, want ENOSYS", op, errno)
		}
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "f"), "user.x", nil); err != unix.ENODATA {
		t.Errorf("xattr reached the host: %v", err)
	}
}
