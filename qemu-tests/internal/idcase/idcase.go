// Package idcase is the id-mapping case of the QEMU tests: a share served
// with --translate-uid and --translate-gid (DaemonArgs), the objects the host
// puts in it (Prepare), the objects guest users make in it, and the owner
// each must have, in the guest and on the host (Objects).
//
// The same table is read in two places: by the guest's checker (../../guest,
// mode -idmap), which makes the objects as root, as user 1000 and as the
// forbidden user 666 and compares what stat shows, and by the host test
// (../../idmap_test.go), which compares the owners on the host after the
// guest has powered off.
//
// # The rules
//
//	uid: map:0:200000:1  map:1000:201000:1  forbid-guest:666:1
//	gid: map:0:200000:1  map:1000:201000:1
//
// So guest root creates as host 200000:200000 and guest user 1000 as host
// 201000:201000, and those host ids show as 0 and 1000 in the guest. A host
// id no rule covers (4242) passes through unchanged both ways, as in
// virtiofsd. Guest uid 666 may neither create anything nor change
// attributes, and nobody may chown a file to it. The expected values are
// exact: without translation the host would show 0 and 1000.
//
// # The share
//
//	.             host 200000:200000 0755 (guest root's own)
//	host/         made by the host: files owned by host ids with and
//	              without a rule, two files mode 0666 that users 666 and
//	              1000 try to change (and hard-link into tmp/)
//	tmp/          01777: where users 1000 and 666 create
//	byroot/       made by guest root, with what guest root makes in it
package idcase

import (
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The ids of the case.
const (
	// HostRoot and HostUser are what guest 0 and guest 1000 map to.
	HostRoot = 200000
	HostUser = 201000
	// GuestUser is the unprivileged guest user that creates in tmp/.
	GuestUser = 1000
	// Forbidden is the guest uid forbid-guest names.
	Forbidden = 666
	// Unmapped is a host uid, and UnmappedGID a host gid, no rule covers.
	Unmapped    = 4242
	UnmappedGID = 4243
)

// DaemonArgs are the daemon's translation options, in virtiofsd's syntax.
var DaemonArgs = []string{
	"--translate-uid", "map:0:200000:1",
	"--translate-uid", "map:1000:201000:1",
	"--translate-uid", "forbid-guest:666:1",
	"--translate-gid", "map:0:200000:1",
	"--translate-gid", "map:1000:201000:1",
}

// Checks are the guest's verdicts, in the order it runs them.
var Checks = []string{
	"idmap_root_create",      // guest root makes byroot/ and what is in it
	"idmap_user_create",      // user 1000 makes tmp/u1000-*
	"idmap_host_owned",       // host-made objects show their mapped owners
	"idmap_chown",            // root chowns byroot/chowned to 1000:1000
	"idmap_chown_forbidden",  // root's chown of byroot/chown666 to 666: EPERM
	"idmap_forbidden_create", // user 666 creating in tmp/: EPERM each time
	"idmap_user_change",      // user 1000 changes host/w1000 (the control for the next)
	"idmap_forbidden_change", // user 666 changing host/w666: EPERM each time
	"idmap_cold_lookup",      // caches dropped, every object looked up again
	"idmap_readdirplus",      // caches dropped, each directory listed, entries stat'ed
}

// Types of objects, as the S_IFMT bits of st_mode.
const (
	File    = unix.S_IFREG
	Dir     = unix.S_IFDIR
	Symlink = unix.S_IFLNK
	Fifo    = unix.S_IFIFO
)

// Object is one object of the share when the guest is done.
type Object struct {
	Path               string // relative to the share's root; "." is the root
	Type               uint32 // File, Dir, Symlink or Fifo
	GuestUID, GuestGID uint32 // what stat shows in the guest
	HostUID, HostGID   uint32 // what lstat shows on the host
	// By is the guest check that made the object or last changed its
	// owner; "" for objects the host made and nobody may change.
	By string
}

// Objects are every object of the share once the guest is done: nothing
// else may be in it.
var Objects = []Object{
	{".", Dir, 0, 0, HostRoot, HostRoot, ""},
	{"host", Dir, 0, 0, HostRoot, HostRoot, ""},
	{"host/h201000", File, GuestUser, GuestUser, HostUser, HostUser, ""},
	{"host/h4242", File, Unmapped, UnmappedGID, Unmapped, UnmappedGID, ""},
	{"host/hmixed", File, GuestUser, Unmapped, HostUser, Unmapped, ""},
	{"host/w666", File, 0, 0, HostRoot, HostRoot, ""},
	{"host/w1000", File, 0, 0, HostRoot, HostRoot, ""},
	{"tmp", Dir, 0, 0, HostRoot, HostRoot, ""},
	{"byroot", Dir, 0, 0, HostRoot, HostRoot, "idmap_root_create"},
	{"byroot/file", File, 0, 0, HostRoot, HostRoot, "idmap_root_create"},
	{"byroot/dir", Dir, 0, 0, HostRoot, HostRoot, "idmap_root_create"},
	{"byroot/sym", Symlink, 0, 0, HostRoot, HostRoot, "idmap_root_create"},
	{"byroot/chowned", File, GuestUser, GuestUser, HostUser, HostUser, "idmap_chown"},
	{"byroot/chown666", File, 0, 0, HostRoot, HostRoot, "idmap_chown_forbidden"},
	{"tmp/u1000-file", File, GuestUser, GuestUser, HostUser, HostUser, "idmap_user_create"},
	{"tmp/u1000-dir", Dir, GuestUser, GuestUser, HostUser, HostUser, "idmap_user_create"},
	{"tmp/u1000-sym", Symlink, GuestUser, GuestUser, HostUser, HostUser, "idmap_user_create"},
	{"tmp/u1000-fifo", Fifo, GuestUser, GuestUser, HostUser, HostUser, "idmap_user_create"},
	// A hard link of host/w1000: its owner.
	{"tmp/u1000-link", File, 0, 0, HostRoot, HostRoot, "idmap_user_change"},
}

// Absent are the objects user 666 tries to make (idmap_forbidden_create,
// and the hard link of idmap_forbidden_change): none may exist, in the guest
// or on the host.
var Absent = []string{"tmp/u666-file", "tmp/u666-dir", "tmp/u666-sym", "tmp/u666-fifo", "tmp/u666-link"}

// Symlink targets.
const (
	RootSymTarget = "file"
	UserSymTarget = "u1000-file"
)

// The files users 1000 and 666 try to change (idmap_user_change,
// idmap_forbidden_change): both start with WritableData, mtime
// WritableTime and KeptXattr = XattrValue; w666 must end so, w1000 empty,
// with a fresh mtime, XattrName = XattrValue, no KeptXattr and a second
// name, tmp/u1000-link.
const (
	WritableData = "written by the host\n"
	XattrName    = "user.gvt"
	KeptXattr    = "user.keep"
	XattrValue   = "set by the guest"
)

// WritableTime is host/w666's and host/w1000's mtime and atime as the host
// makes them.
var WritableTime = time.Unix(1000000000, 0)

// Find returns the object at path.
func Find(path string) (Object, bool) {
	for _, o := range Objects {
		if o.Path == path {
			return o, true
		}
	}
	return Object{}, false
}

// TypeName names a type for messages.
func TypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case Fifo:
		return "fifo"
	}
	return "other"
}

// Prepare fills an empty share directory with the host's part: the objects
// By "" (it needs root, to chown them).
func Prepare(share string) error {
	var err error
	do := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	p := func(rel string) string { return filepath.Join(share, rel) }
	do(func() error { return os.Mkdir(p("host"), 0o755) })
	do(func() error { return os.Mkdir(p("tmp"), 0o755) })
	do(func() error { return os.Chmod(p("tmp"), 0o1777) })
	do(func() error { return os.Chmod(share, 0o755) })
	for _, name := range []string{"host/h201000", "host/h4242", "host/hmixed"} {
		do(func() error { return os.WriteFile(p(name), []byte(name+"\n"), 0o644) })
	}
	for _, name := range []string{"host/w666", "host/w1000"} {
		do(func() error { return os.WriteFile(p(name), []byte(WritableData), 0o644) })
		do(func() error { return os.Chmod(p(name), 0o666) })
		do(func() error { return os.Chtimes(p(name), WritableTime, WritableTime) })
		do(func() error { return unix.Lsetxattr(p(name), KeptXattr, []byte(XattrValue), 0) })
	}
	for _, o := range Objects {
		if o.By == "" {
			do(func() error { return os.Lchown(p(o.Path), int(o.HostUID), int(o.HostGID)) })
		}
	}
	return err
}
