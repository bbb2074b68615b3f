// Package dropcase is the small filesystem check of the drop-in case of the
// QEMU tests (TestQEMUDropIn): each orchestrator's exact virtiofsd command
// line boots one guest, which runs these checks on the mount; the host then
// checks what they left.
//
// The same names are read by the guest's checker (../../guest, mode
// -dropin) and by the host test (../../dropin_test.go).
//
// # The share
//
//	in/host.txt    HostData, made by the host
//	in/case        "xattr=1" or "xattr=0": whether the command line enables
//	               extended attributes, so the guest knows what setxattr
//	               must give
//	tmp/           01777, where guest user GuestUser creates UserFile
//
// # What the guest leaves
//
//	dropin/renamed.txt   FinalData, mode 0640, made by guest root through a
//	                     create, a write, an append and a rename
//	tmp/u1000            empty, made by guest user 1000
package dropcase

import (
	"os"
	"path/filepath"
)

// Checks are the guest's verdicts, in the order it runs them.
var Checks = []string{
	"dropin_files", // guest root: create, write, read, append, rename, unlink, readdir, stat
	"dropin_user",  // guest user 1000 creates tmp/u1000
	"dropin_xattr", // setxattr works with --xattr, EOPNOTSUPP without
}

// The paths and contents of the case.
const (
	HostFile  = "in/host.txt"
	HostData  = "hello from the host\n"
	CaseFile  = "in/case"
	Dir       = "dropin"
	Final     = "dropin/renamed.txt"
	FinalData = "written by the guest\nand appended\n"
	FinalMode = 0o640
	UserDir   = "tmp"
	UserFile  = "tmp/u1000"
	GuestUser = 1000
	// XattrName and XattrValue are what dropin_xattr sets on Final.
	XattrName  = "user.dropin"
	XattrValue = "drop-in"
)

// Prepare fills share with what the guest reads; uid and gid own all of
// it (the share's owner: root, or the unprivileged user a session-mode
// daemon runs as).
func Prepare(share string, xattr bool, uid, gid int) error {
	in := filepath.Join(share, "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(share, HostFile), []byte(HostData), 0o644); err != nil {
		return err
	}
	c := "xattr=0\n"
	if xattr {
		c = "xattr=1\n"
	}
	if err := os.WriteFile(filepath.Join(share, CaseFile), []byte(c), 0o644); err != nil {
		return err
	}
	tmp := filepath.Join(share, UserDir)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		return err
	}
	for _, p := range []string{share, in, filepath.Join(share, HostFile), filepath.Join(share, CaseFile), tmp} {
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}
