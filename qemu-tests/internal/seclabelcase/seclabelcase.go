// Package seclabelcase is the security label case of the QEMU tests
// (TestQEMUSecurityLabel): a share served with --security-label, so that
// the session has FUSE_SECURITY_CTX and the guest kernel sends the label
// its LSM gives each new object with CREATE, MKDIR, SYMLINK and MKNOD; the
// daemon stores it as a host xattr of the new object before replying.
//
// The guest boots with lsm=selinux (Case.KernelArgs) and no policy loaded:
// SELinux then labels every new object "unlabeled" (the value
// "unlabeled\x00", NUL included), and, not being initialized, leaves
// getxattr and listxattr of security.selinux to the filesystem, so the
// guest reads back what the daemon stored.
//
// The same tables are read by the guest's checker (../../guest, mode
// -seclabel) and by the host test (../../seclabel_test.go).
//
// # What the guest makes
//
//	seclabel/          0755, the case's directory (labelled too, unchecked)
//	seclabel/file      open(O_CREAT|O_EXCL, 0644)          CREATE
//	seclabel/dir/      mkdir 0755                          MKDIR
//	seclabel/symlink   symlink to "file"                   SYMLINK
//	seclabel/fifo      mknod S_IFIFO 0644                  MKNOD
//
// For each object it made, the guest prints
//
//	GUESTINFO seclabel <path> <hex of the security.selinux value>
//
// (ReportPrefix) and the host requires exactly that value under the case's
// HostName.
package seclabelcase

import (
	"fmt"
	"strings"
	"syscall"
)

// Name is the xattr the guest's LSM labels with.
const Name = "security.selinux"

// CmdlineKey names the case on the guest's kernel command line:
// gvt.seclabel=<Case.Name>.
const CmdlineKey = "gvt.seclabel="

// KernelArgs go on the guest's kernel command line: SELinux instead of
// AppArmor (Debian's kernels build both in and default to AppArmor), and
// the case's name for the guest's checker.
func (c Case) KernelArgs() string { return "lsm=selinux " + CmdlineKey + c.Name }

// ReportPrefix starts the console line on which the guest reports an
// object's label.
const ReportPrefix = "GUESTINFO seclabel "

// Dir is the case's directory in the share.
const Dir = "seclabel"

// Object is one object the guest makes, with the check that makes it.
type Object struct {
	Path  string // relative to the mount / share
	Check string // the guest's verdict
	Op    string // the FUSE request that makes it
}

// Objects are the case's objects, in the order the guest makes them.
var Objects = []Object{
	{Path: Dir + "/file", Check: "seclabel_create", Op: "CREATE"},
	{Path: Dir + "/dir", Check: "seclabel_mkdir", Op: "MKDIR"},
	{Path: Dir + "/symlink", Check: "seclabel_symlink", Op: "SYMLINK"},
	{Path: Dir + "/fifo", Check: "seclabel_mknod", Op: "MKNOD"},
}

// Checks are the guest's verdicts, in the order it runs them.
var Checks = func() []string {
	var c []string
	for _, o := range Objects {
		c = append(c, o.Check)
	}
	return c
}()

// Case is one daemon configuration the test boots a guest for.
type Case struct {
	Name string
	// Args are appended to the daemon's command line.
	Args []string
	// HostName is the host xattr that must hold the label.
	HostName string
	// Refused are the objects whose creation the host cannot label: the
	// daemon removes the new object again and the guest's request fails
	// with this errno.
	Refused map[string]syscall.Errno
}

// Cases are the configurations, one guest each.
var Cases = []Case{
	{
		// security.* as it is. Without an LSM that owns the name the
		// host's capability module wants CAP_SYS_ADMIN for setxattr,
		// which the daemon drops by default. (Some host kernels let the
		// owner set security.selinux without it, as the test machine's
		// does, but not security.* in general.)
		Name:     "security",
		Args:     []string{"--security-label", "--modcaps=+sys_admin"},
		HostName: Name,
	},
	{
		// virtiofsd's documented way around CAP_SYS_ADMIN: a prefix rule
		// keeps the key, so security.selinux is stored as
		// user.virtiofs.security.selinux and the server rule strips the
		// prefix again for LISTXATTR.
		Name:     "user_xattrmap",
		Args:     []string{"--security-label", "--xattrmap", ":prefix:all:security.:user.virtiofs.::ok:all:::"},
		HostName: "user.virtiofs." + Name,
		// The host allows user.* xattrs only on regular files and
		// directories (xattr_permission: EPERM for others).
		Refused: map[string]syscall.Errno{
			Dir + "/symlink": syscall.EPERM,
			Dir + "/fifo":    syscall.EPERM,
		},
	},
}

// Lookup returns the case named name.
func Lookup(name string) (Case, error) {
	for _, c := range Cases {
		if c.Name == name {
			return c, nil
		}
	}
	return Case{}, fmt.Errorf("seclabelcase: no case %q", name)
}

// FromCmdline finds the case a kernel command line names.
func FromCmdline(cmdline string) (Case, error) {
	for _, f := range strings.Fields(cmdline) {
		if name, ok := strings.CutPrefix(f, CmdlineKey); ok {
			return Lookup(name)
		}
	}
	return Case{}, fmt.Errorf("seclabelcase: no %s on the kernel command line %q", CmdlineKey, cmdline)
}
