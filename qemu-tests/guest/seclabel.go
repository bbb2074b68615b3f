package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/seclabelcase"
	"golang.org/x/sys/unix"
)

// runSecLabel runs the security label case (../internal/seclabelcase) on
// mnt, a share served with --security-label, in a guest booted with
// lsm=selinux and no policy: SELinux labels what the checker creates, the
// kernel sends the label with the creating request, and, SELinux being
// uninitialized, getxattr and listxattr of the label go to the daemon. The
// case (gvt.seclabel= on the kernel command line) says which objects the
// host cannot label.
func runSecLabel(mnt string) {
	fmt.Printf("GUESTINFO guesttest -seclabel checks=%d\n", len(seclabelcase.Checks))
	failAll := func(err error) {
		for _, name := range seclabelcase.Checks {
			fmt.Printf("GUESTTEST %s FAIL %v\n", name, err)
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		failAll(err)
		return
	}
	c, err := seclabelcase.FromCmdline(string(cmdline))
	if err != nil {
		failAll(err)
		return
	}
	// For the log: the LSMs the guest kernel runs.
	if err := unix.Mount("securityfs", "/sys/kernel/security", "securityfs", 0, ""); err == nil {
		lsm, _ := os.ReadFile("/sys/kernel/security/lsm")
		fmt.Printf("GUESTINFO case %s, LSMs %q\n", c.Name, lsm)
	}
	if err := os.Mkdir(filepath.Join(mnt, seclabelcase.Dir), 0o755); err != nil {
		failAll(fmt.Errorf("mkdir %s: %v", seclabelcase.Dir, err))
		return
	}
	for _, o := range seclabelcase.Objects {
		runCheck(nil, check{o.Check, func(*env) error { return secLabelObject(mnt, c, o) }})
	}
}

// secLabelMakers make an object with the request seclabelcase.Object.Op
// names.
var secLabelMakers = map[string]func(p string) error{
	"CREATE": func(p string) error {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	},
	"MKDIR":   func(p string) error { return unix.Mkdir(p, 0o755) },
	"SYMLINK": func(p string) error { return unix.Symlink("file", p) },
	"MKNOD":   func(p string) error { return unix.Mknod(p, unix.S_IFIFO|0o644, 0) },
}

// secLabelObject makes o and checks its label: a non-empty
// security.selinux that listxattr names, the same from cold caches,
// reported on the console for the host. An object the case's host cannot
// label must fail with the case's errno and be gone.
func secLabelObject(mnt string, c seclabelcase.Case, o seclabelcase.Object) error {
	p := filepath.Join(mnt, o.Path)
	mk := secLabelMakers[o.Op]
	if mk == nil {
		return fmt.Errorf("the checker cannot make %s", o.Op)
	}
	err := mk(p)
	if want, refused := c.Refused[o.Path]; refused {
		if !errors.Is(err, want) {
			return fmt.Errorf("%s %s: %v, want %v (the host cannot store its label)", o.Op, o.Path, err, want)
		}
		for _, when := range []string{"", " with cold caches"} {
			if when != "" {
				if err := dropCaches(); err != nil {
					return err
				}
			}
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s after the refused %s%s: %v, want ENOENT", o.Path, o.Op, when, err)
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %v", o.Op, o.Path, err)
	}
	label, err := secLabel(p)
	if err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	again, err := secLabel(p)
	if err != nil {
		return fmt.Errorf("with cold caches: %v", err)
	}
	if !bytes.Equal(again, label) {
		return fmt.Errorf("%s: %s is %q, with cold caches %q", o.Path, seclabelcase.Name, label, again)
	}
	fmt.Printf("%s%s %s\n", seclabelcase.ReportPrefix, o.Path, hex.EncodeToString(label))
	return nil
}

// secLabel reads p's label (without following a symlink) and wants it
// non-empty and named by listxattr.
func secLabel(p string) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, seclabelcase.Name, buf)
	if err != nil {
		return nil, fmt.Errorf("lgetxattr %s %s: %v", p, seclabelcase.Name, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: %s is empty", p, seclabelcase.Name)
	}
	list := make([]byte, 4096)
	m, err := unix.Llistxattr(p, list)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %v", p, err)
	}
	names := strings.Split(strings.TrimRight(string(list[:m]), "\x00"), "\x00")
	if !slices.Contains(names, seclabelcase.Name) {
		return nil, fmt.Errorf("llistxattr %s: %q, no %s", p, names, seclabelcase.Name)
	}
	return buf[:n], nil
}
