package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/dropcase"
	"golang.org/x/sys/unix"
)

// runDropIn runs the drop-in case's checks (../internal/dropcase) on mnt:
// a short round of everyday operations, enough to tell that a daemon
// started with some orchestrator's command line serves the share.
func runDropIn(mnt string) {
	fns := map[string]func(string) error{
		"dropin_files": dropinFiles,
		"dropin_user":  dropinUser,
		"dropin_xattr": dropinXattr,
	}
	fmt.Printf("GUESTINFO guesttest -dropin checks=%d\n", len(dropcase.Checks))
	for _, name := range dropcase.Checks {
		fn := fns[name]
		if fn == nil {
			fmt.Printf("GUESTTEST %s FAIL the checker has no such check\n", name)
			continue
		}
		runCheck(nil, check{name, func(*env) error { return fn(mnt) }})
	}
}

// dropinFiles: guest root reads the host's file, then creates, writes,
// reads, appends, renames, unlinks, lists and stats in dropin/, with the
// caches dropped before the last look so the daemon answers it.
func dropinFiles(mnt string) error {
	if err := wantContent(filepath.Join(mnt, dropcase.HostFile), dropcase.HostData); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, dropcase.HostFile), &st); err != nil {
		return err
	}
	if st.Uid != 0 || st.Gid != 0 {
		return fmt.Errorf("%s shows owner %d:%d, want the share owner as 0:0", dropcase.HostFile, st.Uid, st.Gid)
	}
	d := filepath.Join(mnt, dropcase.Dir)
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	p := filepath.Join(d, "new.txt")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, dropcase.FinalMode)
	if err != nil {
		return fmt.Errorf("create: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("written by the guest\n")); err != nil {
		return fmt.Errorf("write: %v", err)
	}
	buf := make([]byte, 128)
	if n, err := unix.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "written by the guest\n" {
		return fmt.Errorf("pread: %q, %v", buf[:max(n, 0)], err)
	}
	a, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = a.WriteString("and appended\n")
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append: %v", err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync: %v", err)
	}
	final := filepath.Join(mnt, dropcase.Final)
	if err := os.Rename(p, final); err != nil {
		return fmt.Errorf("rename: %v", err)
	}
	gone := filepath.Join(d, "gone.txt")
	if err := os.WriteFile(gone, []byte("short-lived"), 0o644); err != nil {
		return err
	}
	if err := os.Remove(gone); err != nil {
		return fmt.Errorf("unlink: %v", err)
	}
	if err := dropCaches(); err != nil {
		return err
	}
	ents, err := os.ReadDir(d)
	if err != nil {
		return fmt.Errorf("readdir: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(dropcase.Final)}; !slices.Equal(names, want) {
		return fmt.Errorf("%s lists %q, want %q", dropcase.Dir, names, want)
	}
	if err := unix.Stat(final, &st); err != nil {
		return fmt.Errorf("stat: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o7777 != dropcase.FinalMode || st.Size != int64(len(dropcase.FinalData)) || st.Nlink != 1 || st.Uid != 0 {
		return fmt.Errorf("stat %s: mode %o size %d nlink %d uid %d; want a regular file %o of %d bytes, 1 link, uid 0",
			dropcase.Final, st.Mode, st.Size, st.Nlink, st.Uid, dropcase.FinalMode, len(dropcase.FinalData))
	}
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil || fst.Ino != st.Ino {
		return fmt.Errorf("fstat of the open file: ino %d, %v; the renamed name has %d", fst.Ino, err, st.Ino)
	}
	got, err := os.ReadFile(final)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, []byte(dropcase.FinalData)) {
		return fmt.Errorf("%s holds %q, want %q", dropcase.Final, got, dropcase.FinalData)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Type != 0x65735546 {
		return fmt.Errorf("statfs: type %#x, %v; want FUSE", sfs.Type, err)
	}
	return nil
}

// dropinUser: guest user 1000 creates tmp/u1000 and sees it as its own.
func dropinUser(mnt string) error {
	p := filepath.Join(mnt, dropcase.UserFile)
	if err := asUser(dropcase.GuestUser, dropcase.GuestUser, "create", p); err != nil {
		return fmt.Errorf("create as user %d: %v", dropcase.GuestUser, err)
	}
	return wantOwner(mnt, dropcase.UserFile, unix.S_IFREG, dropcase.GuestUser, dropcase.GuestUser)
}

// dropinXattr: with xattrs on (in/case says), a user xattr can be set and
// read back; with them off, setxattr gives EOPNOTSUPP.
func dropinXattr(mnt string) error {
	c, err := os.ReadFile(filepath.Join(mnt, dropcase.CaseFile))
	if err != nil {
		return err
	}
	on := bytes.Contains(c, []byte("xattr=1"))
	p := filepath.Join(mnt, dropcase.Final)
	err = unix.Setxattr(p, dropcase.XattrName, []byte(dropcase.XattrValue), 0)
	if !on {
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("setxattr without --xattr: %v, want EOPNOTSUPP", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("setxattr: %v", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, dropcase.XattrName, buf)
	if err != nil || string(buf[:n]) != dropcase.XattrValue {
		return fmt.Errorf("getxattr: %q, %v", buf[:max(n, 0)], err)
	}
	return nil
}
