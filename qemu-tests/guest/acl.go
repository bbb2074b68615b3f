package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/aclcase"
	"golang.org/x/sys/unix"
)

// The ACL case's users act through -idmap-op (asUser) with these ops too.
func init() {
	idmapOps["read"] = func(p string) error {
		b, err := os.ReadFile(p)
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("read nothing from %s", p)
		}
		return err
	}
	idmapOps["rdwr"] = func(p string) error {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Close(fd)
		}
		return err
	}
	idmapOps["append"] = func(p string) error {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(aclcase.AppendData))
		return err
	}
}

// runACL runs the POSIX ACL case (../internal/aclcase) on mnt, a share
// served with --xattr --posix-acl. Guest root sets the ACLs through the
// system.posix_acl_* xattrs (the initramfs has no setfacl); users 1000 and
// 1001 try what the ACLs allow and refuse.
func runACL(mnt string) {
	fns := map[string]func(string) error{
		"acl_access":      aclAccess,
		"acl_remove":      aclRemove,
		"acl_default":     aclDefault,
		"acl_user_create": aclUserCreate,
	}
	fmt.Printf("GUESTINFO guesttest -acl checks=%d\n", len(aclcase.Checks))
	if err := os.Mkdir(filepath.Join(mnt, "acl"), 0o755); err != nil {
		for _, name := range aclcase.Checks {
			fmt.Printf("GUESTTEST %s FAIL mkdir acl: %v\n", name, err)
		}
		return
	}
	for _, name := range aclcase.Checks {
		fn := fns[name]
		if fn == nil {
			fmt.Printf("GUESTTEST %s FAIL the checker has no such check\n", name)
			continue
		}
		runCheck(nil, check{name, func(*env) error { return fn(mnt) }})
	}
}

// getACL reads the ACL xattr name of p (nil, nil: there is none).
func getACL(p, name string) (aclcase.ACL, error) {
	buf := make([]byte, 1024)
	n, err := unix.Getxattr(p, name, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getxattr %s: %v", name, err)
	}
	return aclcase.Decode(buf[:n])
}

// wantACLObject compares the mode and ACLs of the object rel with the
// case's table; the caller chooses whether the caches are cold.
func wantACLObject(mnt, rel string) error {
	o := aclcase.Lookup(rel)
	p := filepath.Join(mnt, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	if st.Mode&0o7777 != o.Mode || st.Uid != o.UID {
		return fmt.Errorf("%s: mode %o uid %d, want %o uid %d", rel, st.Mode&0o7777, st.Uid, o.Mode, o.UID)
	}
	for _, x := range []struct {
		name string
		want aclcase.ACL
	}{{aclcase.Access, o.Access}, {aclcase.Default, o.Default}} {
		if x.name == aclcase.Default && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		got, err := getACL(p, x.name)
		if err != nil {
			return fmt.Errorf("%s: %v", rel, err)
		}
		if !got.Equal(x.want) {
			return fmt.Errorf("%s: %s is %s, want %s", rel, x.name, got, x.want)
		}
	}
	return nil
}

// wantRefused wants op on p as uid (gid = uid) to fail with EACCES.
func wantRefused(uid uint32, op, p string) error {
	err := asUser(uid, uid, op, p)
	if !errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s %s as %d: %v, want EACCES", op, p, uid, err)
	}
	return nil
}

// wantAllowed wants op on p as uid (gid = uid) to succeed.
func wantAllowed(uid uint32, op, p string) error {
	if err := asUser(uid, uid, op, p); err != nil {
		return fmt.Errorf("%s %s as %d: %v", op, p, uid, err)
	}
	return nil
}

// createRoot makes a 0600 file holding aclcase.Content.
func createRoot(p string) error {
	return os.WriteFile(p, []byte(aclcase.Content), 0o600)
}

// acl/file: a 0600 root file whose access ACL grants user 1000 rw-.
func aclAccess(mnt string) error {
	file, plain := filepath.Join(mnt, "acl/file"), filepath.Join(mnt, "acl/plain")
	for _, p := range []string{file, plain} {
		if err := createRoot(p); err != nil {
			return err
		}
	}
	if err := wantRefused(aclcase.Granted, "read", file); err != nil {
		return fmt.Errorf("before the ACL: %v", err)
	}
	if err := unix.Setxattr(file, aclcase.Access, aclcase.FileACL.Encode(), 0); err != nil {
		return fmt.Errorf("setxattr %s: %v", aclcase.Access, err)
	}
	if err := wantACLObject(mnt, "acl/file"); err != nil {
		return err
	}
	for _, step := range []error{
		wantAllowed(aclcase.Granted, "read", file),
		wantAllowed(aclcase.Granted, "append", file),
		wantRefused(aclcase.Other, "read", file),
		wantRefused(aclcase.Other, "rdwr", file),
		wantRefused(aclcase.Granted, "read", plain),
	} {
		if step != nil {
			return step
		}
	}
	if err := wantContent(file, aclcase.Content+aclcase.AppendData); err != nil {
		return err
	}
	// The same from cold caches: the ACL comes from the daemon again.
	if err := dropCaches(); err != nil {
		return err
	}
	if err := wantAllowed(aclcase.Granted, "rdwr", file); err != nil {
		return fmt.Errorf("after dropping caches: %v", err)
	}
	if err := wantRefused(aclcase.Other, "read", file); err != nil {
		return fmt.Errorf("after dropping caches: %v", err)
	}
	return wantACLObject(mnt, "acl/file")
}

// acl/removed: the ACL of acl/file, then removexattr: user 1000 is refused
// again and getxattr gives ENODATA.
func aclRemove(mnt string) error {
	p := filepath.Join(mnt, "acl/removed")
	if err := createRoot(p); err != nil {
		return err
	}
	if err := unix.Setxattr(p, aclcase.Access, aclcase.FileACL.Encode(), 0); err != nil {
		return fmt.Errorf("setxattr %s: %v", aclcase.Access, err)
	}
	if err := wantAllowed(aclcase.Granted, "read", p); err != nil {
		return err
	}
	if err := unix.Removexattr(p, aclcase.Access); err != nil {
		return fmt.Errorf("removexattr %s: %v", aclcase.Access, err)
	}
	if err := wantRefused(aclcase.Granted, "read", p); err != nil {
		return fmt.Errorf("after removexattr: %v", err)
	}
	return wantACLObject(mnt, "acl/removed")
}

// acl/dir: an access and a default ACL; a file and a directory root makes
// in it inherit the default, masked by their create modes.
func aclDefault(mnt string) error {
	d := filepath.Join(mnt, "acl/dir")
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	if err := unix.Setxattr(d, aclcase.Default, aclcase.DirACL.Encode(), 0); err != nil {
		return fmt.Errorf("setxattr %s: %v", aclcase.Default, err)
	}
	if err := unix.Setxattr(d, aclcase.Access, aclcase.DirACL.Encode(), 0); err != nil {
		return fmt.Errorf("setxattr %s: %v", aclcase.Access, err)
	}
	if err := wantACLObject(mnt, "acl/dir"); err != nil {
		return err
	}
	inh := filepath.Join(d, "inherited")
	fd, err := unix.Open(inh, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o666)
	if err != nil {
		return fmt.Errorf("create: %v", err)
	}
	_, err = unix.Write(fd, []byte(aclcase.Content))
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		return fmt.Errorf("mkdir: %v", err)
	}
	for _, rel := range []string{"acl/dir/inherited", "acl/dir/sub"} {
		if err := wantACLObject(mnt, rel); err != nil {
			return err
		}
	}
	if err := dropCaches(); err != nil {
		return err
	}
	for _, step := range []error{
		wantACLObject(mnt, "acl/dir/inherited"),
		wantACLObject(mnt, "acl/dir/sub"),
		wantAllowed(aclcase.Granted, "rdwr", inh),
		wantRefused(aclcase.Other, "rdwr", inh),
		wantAllowed(aclcase.Other, "read", inh),
	} {
		if step != nil {
			return step
		}
	}
	return nil
}

// User 1000 may create in the root-owned 0755 acl/dir (its access ACL
// says so); user 1001 may not.
func aclUserCreate(mnt string) error {
	d := filepath.Join(mnt, "acl/dir")
	if err := wantAllowed(aclcase.Granted, "create", filepath.Join(d, "by1000")); err != nil {
		return err
	}
	if err := wantRefused(aclcase.Other, "create", filepath.Join(d, "by1001")); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(d, "by1001")); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("acl/dir/by1001 after the refused create: %v, want ENOENT", err)
	}
	return wantACLObject(mnt, "acl/dir/by1000")
}
