// Command guesttest runs inside the QEMU test guest, on the virtiofs mount
// the guest's /init made, and checks the filesystem with plain system calls.
// It is built static (CGO_ENABLED=0) by the host test and put in the guest's
// initramfs; busybox alone cannot do xattrs, mmap or fsync checks.
//
// Usage: guesttest [-run REGEXP] MOUNTPOINT
//
//	guesttest -overlay MOUNTPOINT
//	guesttest -idmap MOUNTPOINT
//	guesttest -dropin MOUNTPOINT
//	guesttest -acl MOUNTPOINT
//	guesttest -migrate MOUNTPOINT
//	guesttest -seclabel MOUNTPOINT
//
// -run limits the checks to those whose names match (all when empty).
//
// -overlay runs the overlay case instead (see ../internal/ovlcase and
// overlay.go): MOUNTPOINT is the union `govirtiofsd --overlay` serves, and
// the checks are the case's steps (overlay_<step>) and overlay_manifest.
//
// -idmap runs the id-mapping case instead (see ../internal/idcase and
// idmap.go): MOUNTPOINT is a share served with --translate-uid and
// --translate-gid, the checks are idcase.Checks. For them the checker runs
// itself as other users with -idmap-op.
//
// -dropin, -acl and -migrate run the drop-in case (dropin.go,
// ../internal/dropcase), the POSIX ACL case (acl.go, ../internal/aclcase;
// its users act through -idmap-op too) and the migration case (migrate.go,
// ../internal/migcase) instead.
//
// -seclabel runs the security label case (seclabel.go,
// ../internal/seclabelcase) instead: MOUNTPOINT is a share served with
// --security-label in a guest booted with lsm=selinux.
//
// The host prepares MOUNTPOINT/in (see prepareShare in ../qemu_test.go) and
// an absent MOUNTPOINT/out. Every check prints one line on the console,
//
//	GUESTTEST <name> PASS <seconds>s
//	GUESTTEST <name> FAIL <reason>
//
// and the 256 MiB file the guest writes is announced as
//
//	GUESTSUM out/big-guest.bin <sha256 hex>
//
// so the host can compare it with the file in the share. The files the
// checks leave under out/ are what the host verifies afterwards
// (hostVerify in ../qemu_test.go); the two lists must stay in step.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bigSize is the size of the large files written each way.
const bigSize = 256 << 20

// readdirCount is the number of entries in the large directories.
const readdirCount = 5000

type env struct {
	mnt string // the virtiofs mount point
	in  string // host-made inputs (read only by convention)
	out string // what the guest leaves for the host to verify
}

type check struct {
	name string
	fn   func(e *env) error
}

// checks run in this order; later ones do not depend on earlier ones.
var checks = []check{
	{"statfs", checkStatfs},
	{"create_read_write_append", checkCreateReadWriteAppend},
	{"setattr", checkSetattr},
	{"rename", checkRename},
	{"rename_flags", checkRenameFlags},
	{"hardlink", checkHardlink},
	{"symlink", checkSymlink},
	{"mkdir_rmdir", checkMkdirRmdir},
	{"xattr", checkXattr},
	{"readdir_host_5000", checkReaddirHost},
	{"readdir_guest_5000", checkReaddirGuest},
	{"mmap_read", checkMmapRead},
	{"mmap_write", checkMmapWrite},
	{"fsync", checkFsync},
	{"unlink_open", checkUnlinkOpen},
	{"parallel", checkParallel},
	{"big_write_256m", checkBigWrite},
	{"big_read_256m", checkBigRead},
}

func main() {
	run := flag.String("run", "", "run only the checks whose names match this regexp")
	overlay := flag.Bool("overlay", false, "run the overlay case on MOUNTPOINT, a union served by govirtiofsd --overlay")
	idmap := flag.Bool("idmap", false, "run the id-mapping case on MOUNTPOINT, a share served with --translate-uid/--translate-gid")
	idmapOp := flag.String("idmap-op", "", "(the id-mapping case's child) do `op` to the path argument and print OK or ERRNO n")
	dropin := flag.Bool("dropin", false, "run the drop-in case on MOUNTPOINT, a share served with an orchestrator's command line")
	acl := flag.Bool("acl", false, "run the POSIX ACL case on MOUNTPOINT, a share served with --xattr --posix-acl")
	migrate := flag.Bool("migrate", false, "run the migration case on MOUNTPOINT: hold files open while the host migrates the guest")
	seclabel := flag.Bool("seclabel", false, "run the security label case on MOUNTPOINT, a share served with --security-label")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: guesttest [-run REGEXP] MOUNTPOINT\n       guesttest -overlay|-idmap|-dropin|-acl|-migrate|-seclabel MOUNTPOINT")
		os.Exit(2)
	}
	if *overlay {
		runOverlay(flag.Arg(0))
		return
	}
	if *idmapOp != "" {
		os.Exit(runIDMapOp(*idmapOp, flag.Arg(0)))
	}
	if *idmap {
		runIDMap(flag.Arg(0))
		return
	}
	if *dropin {
		runDropIn(flag.Arg(0))
		return
	}
	if *acl {
		runACL(flag.Arg(0))
		return
	}
	if *migrate {
		runMigrate(flag.Arg(0))
		return
	}
	if *seclabel {
		runSecLabel(flag.Arg(0))
		return
	}
	re, err := regexp.Compile(*run)
	if err != nil {
		fmt.Fprintln(os.Stderr, "guesttest:", err)
		os.Exit(2)
	}
	mnt := flag.Arg(0)
	e := &env{mnt: mnt, in: filepath.Join(mnt, "in"), out: filepath.Join(mnt, "out")}
	fmt.Printf("GUESTINFO guesttest cpus=%d checks=%d\n", runtime.NumCPU(), len(checks))
	if err := os.Mkdir(e.out, 0o755); err != nil {
		for _, c := range checks {
			fmt.Printf("GUESTTEST %s FAIL cannot create %s: %v\n", c.name, e.out, err)
		}
		return
	}
	for _, c := range checks {
		if re.MatchString(c.name) {
			runCheck(e, c)
		}
	}
}

// runCheck runs one check, turning a panic into a failure so the rest
// still run.
func runCheck(e *env, c check) {
	start := time.Now()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return c.fn(e)
	}()
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " | ")
		fmt.Printf("GUESTTEST %s FAIL %s\n", c.name, msg)
		return
	}
	fmt.Printf("GUESTTEST %s PASS %.2fs\n", c.name, time.Since(start).Seconds())
}

// dir makes out/NAME for a check and returns its path.
func (e *env) dir(name string) (string, error) {
	d := filepath.Join(e.out, name)
	return d, os.Mkdir(d, 0o755)
}

func wantErrno(err error, want syscall.Errno, what string) error {
	if !errors.Is(err, want) {
		return fmt.Errorf("%s: got %v, want %v", what, err, want)
	}
	return nil
}

func wantContent(path, want string) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("%s holds %q, want %q", path, got, want)
	}
	return nil
}

func checkStatfs(e *env) error {
	var st unix.Statfs_t
	if err := unix.Statfs(e.mnt, &st); err != nil {
		return fmt.Errorf("statfs: %v", err)
	}
	const fuseSuperMagic = 0x65735546
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("statfs type %#x, want FUSE %#x", st.Type, fuseSuperMagic)
	}
	if st.Bsize <= 0 || st.Blocks == 0 {
		return fmt.Errorf("statfs reports bsize %d, %d blocks", st.Bsize, st.Blocks)
	}
	return nil
}

// Leaves out/create/file.txt = "HELLO world\nappended 1\nappended 2\n".
func checkCreateReadWriteAppend(e *env) error {
	d, err := e.dir("create")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "file.txt")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644); !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("second O_EXCL create: got %v, want EEXIST", err)
	}
	if n, err := unix.Write(fd, []byte("hello world\n")); err != nil || n != 12 {
		return fmt.Errorf("write: %d, %v", n, err)
	}
	if _, err := unix.Pwrite(fd, []byte("HELLO"), 0); err != nil {
		return fmt.Errorf("pwrite: %v", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil || string(buf[:n]) != "HELLO world\n" {
		return fmt.Errorf("pread: %q, %v", buf[:n], err)
	}
	n, err = unix.Pread(fd, buf, 6)
	if err != nil || string(buf[:n]) != "world\n" {
		return fmt.Errorf("pread at 6: %q, %v", buf[:n], err)
	}
	if n, err = unix.Pread(fd, buf, 1000); err != nil || n != 0 {
		return fmt.Errorf("pread past EOF: %d, %v", n, err)
	}
	for i := 1; i <= 2; i++ {
		afd, err := unix.Open(p, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open O_APPEND: %v", err)
		}
		// An O_APPEND write ignores the offset it is given.
		_, err = unix.Pwrite(afd, []byte(fmt.Sprintf("appended %d\n", i)), 0)
		unix.Close(afd)
		if err != nil {
			return fmt.Errorf("append %d: %v", i, err)
		}
	}
	const want = "HELLO world\nappended 1\nappended 2\n"
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != int64(len(want)) {
		return fmt.Errorf("fstat size %d, %v; want %d", st.Size, err, len(want))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o777 != 0o644 {
		return fmt.Errorf("mode %o, want regular 0644", st.Mode)
	}
	return wantContent(p, want)
}

// chmod, truncate (shrink and grow), utimensat.
func checkSetattr(e *env) error {
	d, err := e.dir("setattr")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
		return err
	}
	if err := unix.Chmod(p, 0o751); err != nil {
		return fmt.Errorf("chmod: %v", err)
	}
	if err := unix.Truncate(p, 4); err != nil {
		return fmt.Errorf("truncate: %v", err)
	}
	if err := wantContent(p, "0123"); err != nil {
		return err
	}
	if err := unix.Truncate(p, 8); err != nil {
		return fmt.Errorf("truncate up: %v", err)
	}
	if err := wantContent(p, "0123\x00\x00\x00\x00"); err != nil {
		return err
	}
	ts := []unix.Timespec{{Sec: 1000000000, Nsec: 123}, {Sec: 1234567890, Nsec: 456}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, 0); err != nil {
		return fmt.Errorf("utimensat: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return err
	}
	if st.Mode&0o7777 != 0o751 {
		return fmt.Errorf("mode %o after chmod 0751", st.Mode&0o7777)
	}
	if st.Mtim != ts[1] || st.Atim != ts[0] {
		return fmt.Errorf("times atime %v mtime %v, want %v %v", st.Atim, st.Mtim, ts[0], ts[1])
	}
	return nil
}

// Leaves out/rename/final.txt = "A", out/rename/dir2/inner.txt = "inner";
// a.txt, b.txt and dir1 gone.
func checkRename(e *env) error {
	d, err := e.dir("rename")
	if err != nil {
		return err
	}
	a, b, final := filepath.Join(d, "a.txt"), filepath.Join(d, "b.txt"), filepath.Join(d, "final.txt")
	if err := os.WriteFile(a, []byte("A"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(final, []byte("old final"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		return fmt.Errorf("rename a->b: %v", err)
	}
	if _, err := os.Lstat(a); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("a.txt after rename: %v", err)
	}
	// Keep the old target open: it must still read its own data.
	old, err := os.Open(final)
	if err != nil {
		return err
	}
	defer old.Close()
	if err := os.Rename(b, final); err != nil {
		return fmt.Errorf("rename b over final: %v", err)
	}
	if _, err := os.Lstat(b); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("b.txt after rename over: %v", err)
	}
	if err := wantContent(final, "A"); err != nil {
		return err
	}
	if got, err := io.ReadAll(old); err != nil || string(got) != "old final" {
		return fmt.Errorf("replaced file, still open, reads %q, %v", got, err)
	}
	d1, d2 := filepath.Join(d, "dir1"), filepath.Join(d, "dir2")
	if err := os.Mkdir(d1, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d1, "inner.txt"), []byte("inner"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(d1, d2); err != nil {
		return fmt.Errorf("rename dir: %v", err)
	}
	if err := wantContent(filepath.Join(d2, "inner.txt"), "inner"); err != nil {
		return err
	}
	// A directory cannot replace a non-empty directory.
	d3 := filepath.Join(d, "dir3")
	if err := os.Mkdir(d3, 0o755); err != nil {
		return err
	}
	if err := os.Rename(d3, d2); !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rename of a dir over a non-empty dir: got %v, want ENOTEMPTY or EEXIST", err)
	}
	return os.Remove(d3)
}

// renameat2 with RENAME_NOREPLACE and RENAME_EXCHANGE.
func checkRenameFlags(e *env) error {
	d, err := e.dir("rename_flags")
	if err != nil {
		return err
	}
	x, y := filepath.Join(d, "x"), filepath.Join(d, "y")
	if err := os.WriteFile(x, []byte("X"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(y, []byte("Y"), 0o644); err != nil {
		return err
	}
	err = unix.Renameat2(unix.AT_FDCWD, x, unix.AT_FDCWD, y, unix.RENAME_NOREPLACE)
	if err := wantErrno(err, unix.EEXIST, "RENAME_NOREPLACE onto an existing name"); err != nil {
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, x, unix.AT_FDCWD, y, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("RENAME_EXCHANGE: %v", err)
	}
	if err := wantContent(x, "Y"); err != nil {
		return err
	}
	if err := wantContent(y, "X"); err != nil {
		return err
	}
	z := filepath.Join(d, "z")
	if err := unix.Renameat2(unix.AT_FDCWD, x, unix.AT_FDCWD, z, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("RENAME_NOREPLACE onto a free name: %v", err)
	}
	return wantContent(z, "Y")
}

// Leaves out/hardlink/one and out/hardlink/two, one inode with 2 links,
// holding "linked\nvia two\n".
func checkHardlink(e *env) error {
	d, err := e.dir("hardlink")
	if err != nil {
		return err
	}
	one, two, three := filepath.Join(d, "one"), filepath.Join(d, "two"), filepath.Join(d, "three")
	if err := os.WriteFile(one, []byte("linked\n"), 0o644); err != nil {
		return err
	}
	if err := os.Link(one, two); err != nil {
		return fmt.Errorf("link: %v", err)
	}
	if err := os.Link(one, three); err != nil {
		return fmt.Errorf("second link: %v", err)
	}
	var s1, s2 unix.Stat_t
	if err := unix.Stat(one, &s1); err != nil {
		return err
	}
	if err := unix.Stat(two, &s2); err != nil {
		return err
	}
	if s1.Ino != s2.Ino || s1.Nlink != 3 || s2.Nlink != 3 {
		return fmt.Errorf("after two links: ino %d/%d nlink %d/%d, want one inode with 3", s1.Ino, s2.Ino, s1.Nlink, s2.Nlink)
	}
	f, err := os.OpenFile(two, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("via two\n")
	f.Close()
	if err != nil {
		return err
	}
	if err := wantContent(one, "linked\nvia two\n"); err != nil {
		return err
	}
	if err := os.Remove(three); err != nil {
		return err
	}
	if err := unix.Stat(one, &s1); err != nil || s1.Nlink != 2 {
		return fmt.Errorf("nlink after unlinking one name: %d, %v; want 2", s1.Nlink, err)
	}
	if err := wantErrno(os.Link(one, two), unix.EEXIST, "link onto an existing name"); err != nil {
		return err
	}
	return wantErrno(os.Link(d, filepath.Join(d, "dirlink")), unix.EPERM, "hard link to a directory")
}

// Leaves out/symlink/sym -> "target.txt" (holding "target") and
// out/symlink/dangling -> "nowhere". Also reads in/hostlink -> hello.txt.
func checkSymlink(e *env) error {
	d, err := e.dir("symlink")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(d, "target.txt"), []byte("target"), 0o644); err != nil {
		return err
	}
	sym := filepath.Join(d, "sym")
	if err := os.Symlink("target.txt", sym); err != nil {
		return fmt.Errorf("symlink: %v", err)
	}
	if got, err := os.Readlink(sym); err != nil || got != "target.txt" {
		return fmt.Errorf("readlink: %q, %v", got, err)
	}
	fi, err := os.Lstat(sym)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("lstat: %v, %v; want a symlink", fi, err)
	}
	if err := wantContent(sym, "target"); err != nil {
		return fmt.Errorf("through the symlink: %v", err)
	}
	dangling := filepath.Join(d, "dangling")
	if err := os.Symlink("nowhere", dangling); err != nil {
		return err
	}
	if _, err := os.Stat(dangling); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat of a dangling symlink: %v, want ENOENT", err)
	}
	if err := wantErrno(os.Symlink("x", sym), unix.EEXIST, "symlink onto an existing name"); err != nil {
		return err
	}
	// O_NOFOLLOW refuses the last component being a symlink.
	_, err = unix.Open(sym, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err := wantErrno(err, unix.ELOOP, "open O_NOFOLLOW of a symlink"); err != nil {
		return err
	}
	hl := filepath.Join(e.in, "hostlink")
	if got, err := os.Readlink(hl); err != nil || got != "hello.txt" {
		return fmt.Errorf("readlink of the host-made symlink: %q, %v", got, err)
	}
	return wantContent(hl, "hello from the host\n")
}

func checkMkdirRmdir(e *env) error {
	d, err := e.dir("mkdir")
	if err != nil {
		return err
	}
	sub := filepath.Join(d, "a", "b", "c")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return err
	}
	if err := wantErrno(os.Mkdir(sub, 0o755), unix.EEXIST, "mkdir of an existing dir"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sub, "f"), nil, 0o644); err != nil {
		return err
	}
	if err := wantErrno(unix.Rmdir(sub), unix.ENOTEMPTY, "rmdir of a non-empty dir"); err != nil {
		return err
	}
	if err := wantErrno(unix.Rmdir(filepath.Join(sub, "f")), unix.ENOTDIR, "rmdir of a file"); err != nil {
		return err
	}
	if err := wantErrno(unix.Unlink(filepath.Join(d, "a")), unix.EISDIR, "unlink of a dir"); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(d, "a", "b"), &st); err != nil || st.Nlink < 2 {
		return fmt.Errorf("dir nlink %d, %v", st.Nlink, err)
	}
	if err := os.RemoveAll(filepath.Join(d, "a")); err != nil {
		return err
	}
	ents, err := os.ReadDir(d)
	if err != nil || len(ents) != 0 {
		return fmt.Errorf("after RemoveAll the dir lists %d entries, %v", len(ents), err)
	}
	return nil
}

// Leaves out/xattr/file with user.guest = "from-guest"; reads in/xattr.txt's
// host-set user.host = "from-host".
func checkXattr(e *env) error {
	d, err := e.dir("xattr")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "file")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		return err
	}
	buf := make([]byte, 256)
	n, err := unix.Getxattr(filepath.Join(e.in, "xattr.txt"), "user.host", buf)
	if err != nil || string(buf[:n]) != "from-host" {
		return fmt.Errorf("getxattr of the host-set user.host: %q, %v", buf[:max(n, 0)], err)
	}
	if err := unix.Setxattr(p, "user.gvt", []byte("value one"), 0); err != nil {
		return fmt.Errorf("setxattr: %v", err)
	}
	// A zero-size getxattr asks for the value's length.
	if n, err := unix.Getxattr(p, "user.gvt", nil); err != nil || n != len("value one") {
		return fmt.Errorf("getxattr size query: %d, %v", n, err)
	}
	if n, err := unix.Getxattr(p, "user.gvt", buf); err != nil || string(buf[:n]) != "value one" {
		return fmt.Errorf("getxattr: %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := unix.Getxattr(p, "user.gvt", make([]byte, 2)); !errors.Is(err, unix.ERANGE) {
		return fmt.Errorf("getxattr into a short buffer: %v, want ERANGE", err)
	}
	err = unix.Setxattr(p, "user.gvt", []byte("v"), unix.XATTR_CREATE)
	if err := wantErrno(err, unix.EEXIST, "setxattr XATTR_CREATE of an existing name"); err != nil {
		return err
	}
	err = unix.Setxattr(p, "user.missing", []byte("v"), unix.XATTR_REPLACE)
	if err := wantErrno(err, unix.ENODATA, "setxattr XATTR_REPLACE of a missing name"); err != nil {
		return err
	}
	if err := unix.Setxattr(p, "user.gvt", []byte("value two"), unix.XATTR_REPLACE); err != nil {
		return fmt.Errorf("setxattr XATTR_REPLACE: %v", err)
	}
	if err := unix.Setxattr(p, "user.guest", []byte("from-guest"), unix.XATTR_CREATE); err != nil {
		return fmt.Errorf("setxattr user.guest: %v", err)
	}
	n, err = unix.Listxattr(p, buf)
	if err != nil {
		return fmt.Errorf("listxattr: %v", err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	if !slices.Contains(names, "user.gvt") || !slices.Contains(names, "user.guest") {
		return fmt.Errorf("listxattr gives %q", names)
	}
	if err := unix.Removexattr(p, "user.gvt"); err != nil {
		return fmt.Errorf("removexattr: %v", err)
	}
	_, err = unix.Getxattr(p, "user.gvt", buf)
	if err := wantErrno(err, unix.ENODATA, "getxattr after removexattr"); err != nil {
		return err
	}
	// Directories carry xattrs too.
	if err := unix.Setxattr(d, "user.dir", []byte("d"), 0); err != nil {
		return fmt.Errorf("setxattr on a directory: %v", err)
	}
	return unix.Removexattr(d, "user.dir")
}

// Reads in/dir5000, made by the host: h00000 … h04999.
func checkReaddirHost(e *env) error {
	ents, err := os.ReadDir(filepath.Join(e.in, "dir5000"))
	if err != nil {
		return err
	}
	return wantNames(ents, "h")
}

// Leaves out/readdir/g00000 … g04999 (empty files). They are made with
// mknod, one FUSE MKNOD each; open+close would cost four requests per file,
// which under TCG is most of this check's time.
func checkReaddirGuest(e *env) error {
	d, err := e.dir("readdir")
	if err != nil {
		return err
	}
	for i := range readdirCount {
		if err := unix.Mknod(filepath.Join(d, fmt.Sprintf("g%05d", i)), unix.S_IFREG|0o644, 0); err != nil {
			return fmt.Errorf("mknod of entry %d: %v", i, err)
		}
	}
	ents, err := os.ReadDir(d)
	if err != nil {
		return err
	}
	return wantNames(ents, "g")
}

func wantNames(ents []os.DirEntry, prefix string) error {
	if len(ents) != readdirCount {
		return fmt.Errorf("readdir gives %d entries, want %d", len(ents), readdirCount)
	}
	seen := make(map[string]bool, len(ents))
	for _, de := range ents {
		if seen[de.Name()] {
			return fmt.Errorf("readdir gives %q twice", de.Name())
		}
		seen[de.Name()] = true
		if !de.Type().IsRegular() {
			return fmt.Errorf("%s has type %v, want a regular file", de.Name(), de.Type())
		}
	}
	for i := range readdirCount {
		if n := fmt.Sprintf("%s%05d", prefix, i); !seen[n] {
			return fmt.Errorf("readdir misses %s", n)
		}
	}
	return nil
}

// Maps the first 8 MiB of in/big-host.bin and compares it with pread.
func checkMmapRead(e *env) error {
	const size = 8 << 20
	f, err := os.Open(filepath.Join(e.in, "big-host.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %v", err)
	}
	defer unix.Munmap(m)
	want := make([]byte, size)
	if _, err := io.ReadFull(f, want); err != nil {
		return err
	}
	if !bytes.Equal(m, want) {
		return fmt.Errorf("mapped bytes differ from read bytes at %d", firstDiff(m, want))
	}
	return nil
}

// mmapPattern is the byte at offset i of out/mmap/mapped.bin.
func mmapPattern(i int) byte { return byte(i*7 + 3) }

// Leaves out/mmap/mapped.bin, 1 MiB of mmapPattern written through a shared
// mapping; a private mapping's writes must not reach the file.
func checkMmapWrite(e *env) error {
	const size = 1 << 20
	d, err := e.dir("mmap")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "mapped.bin")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap shared rw: %v", err)
	}
	for i := range m {
		m[i] = mmapPattern(i)
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		unix.Munmap(m)
		return fmt.Errorf("msync: %v", err)
	}
	if err := unix.Munmap(m); err != nil {
		return err
	}
	got, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	for i := range got {
		if got[i] != mmapPattern(i) {
			return fmt.Errorf("read after msync differs at %d", i)
		}
	}
	pm, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mmap private: %v", err)
	}
	pm[0] = ^mmapPattern(0)
	unix.Munmap(pm)
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, 0); err != nil || b[0] != mmapPattern(0) {
		return fmt.Errorf("a MAP_PRIVATE write reached the file (%v, %v)", b, err)
	}
	return f.Sync()
}

// Leaves out/fsync/synced.bin = "synced data\n" (written, fsynced, fdatasynced,
// and its directory fsynced).
func checkFsync(e *env) error {
	d, err := e.dir("fsync")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "synced.bin")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("synced data\n")); err != nil {
		return err
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("fsync: %v", err)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("fdatasync: %v", err)
	}
	dfd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Fsync(dfd); err != nil {
		return fmt.Errorf("fsync of a directory: %v", err)
	}
	unix.Sync()
	if err := unix.Syncfs(fd); err != nil && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("syncfs: %v", err)
	}
	return nil
}

// Leaves out/unlink empty: a file unlinked while open stays usable
// through its descriptor and vanishes from the directory.
func checkUnlinkOpen(e *env) error {
	d, err := e.dir("unlink")
	if err != nil {
		return err
	}
	p := filepath.Join(d, "doomed")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("still here")); err != nil {
		return err
	}
	if err := unix.Unlink(p); err != nil {
		return fmt.Errorf("unlink: %v", err)
	}
	var st unix.Stat_t
	if err := wantErrno(unix.Stat(p, &st), unix.ENOENT, "stat after unlink"); err != nil {
		return err
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 {
		return fmt.Errorf("fstat of the unlinked file: nlink %d, %v; want 0", st.Nlink, err)
	}
	if _, err := unix.Pwrite(fd, []byte(" and more"), 10); err != nil {
		return fmt.Errorf("write to the unlinked file: %v", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil || string(buf[:n]) != "still here and more" {
		return fmt.Errorf("read of the unlinked file: %q, %v", buf[:max(n, 0)], err)
	}
	if err := unix.Ftruncate(fd, 5); err != nil {
		return fmt.Errorf("ftruncate of the unlinked file: %v", err)
	}
	ents, err := os.ReadDir(d)
	if err != nil || len(ents) != 0 {
		return fmt.Errorf("directory of the unlinked file lists %d entries, %v", len(ents), err)
	}
	// The name is free again.
	if err := os.WriteFile(p, []byte("new"), 0o644); err != nil {
		return err
	}
	if n, err := unix.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "still" {
		return fmt.Errorf("unlinked file after reuse of its name: %q, %v", buf[:max(n, 0)], err)
	}
	return os.Remove(p)
}

// parallelWorkers × parallelFiles files of parallelSize bytes, written and
// read back concurrently, so a guest with several CPUs and request queues
// spreads requests over them. Leaves out/parallel/wW-fF, each holding
// parallelByte(W, F, i) at offset i.
const (
	parallelWorkers = 8
	parallelFiles   = 32
	parallelSize    = 64 << 10
)

func parallelByte(w, f, i int) byte { return byte(w*31 + f*17 + i) }

func checkParallel(e *env) error {
	d, err := e.dir("parallel")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, parallelWorkers)
	for w := range parallelWorkers {
		wg.Go(func() {
			buf := make([]byte, parallelSize)
			for f := range parallelFiles {
				for i := range buf {
					buf[i] = parallelByte(w, f, i)
				}
				p := filepath.Join(d, fmt.Sprintf("w%d-f%d", w, f))
				if err := os.WriteFile(p, buf, 0o644); err != nil {
					errs[w] = err
					return
				}
				got, err := os.ReadFile(p)
				if err != nil {
					errs[w] = err
					return
				}
				if !bytes.Equal(got, buf) {
					errs[w] = fmt.Errorf("%s reads back different data at %d", p, firstDiff(got, buf))
					return
				}
				var st unix.Stat_t
				if err := unix.Stat(p, &st); err != nil || st.Size != parallelSize {
					errs[w] = fmt.Errorf("stat %s: size %d, %v", p, st.Size, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bigBlock fills buf (1 MiB) for block index i of a big file: a random
// block made once, with the block index stamped in its first 8 bytes so no
// two blocks are alike.
func bigBlock(base, buf []byte, i int) {
	copy(buf, base)
	binary.LittleEndian.PutUint64(buf, uint64(i))
}

// Leaves out/big-guest.bin (bigSize bytes) and prints its sha256.
func checkBigWrite(e *env) error {
	const block = 1 << 20
	base := make([]byte, block)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	for i := 0; i < block; i += 8 {
		binary.LittleEndian.PutUint64(base[i:], r.Uint64())
	}
	p := filepath.Join(e.out, "big-guest.bin")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, block)
	for i := range bigSize / block {
		bigBlock(base, buf, i)
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("write at %d MiB: %v", i, err)
		}
		h.Write(buf)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != bigSize {
		return fmt.Errorf("size after writing: %v, %v", fi, err)
	}
	fmt.Printf("GUESTSUM out/big-guest.bin %s\n", hex.EncodeToString(h.Sum(nil)))
	return nil
}

// Reads in/big-host.bin and compares its sha256 with in/big-host.sha256.
func checkBigRead(e *env) error {
	wantHex, err := os.ReadFile(filepath.Join(e.in, "big-host.sha256"))
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(e.in, "big-host.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("read: %v after %d bytes", err, n)
	}
	if n != bigSize {
		return fmt.Errorf("read %d bytes, want %d", n, bigSize)
	}
	got := hex.EncodeToString(h.Sum(nil))
	fmt.Printf("GUESTSUM in/big-host.bin %s\n", got)
	if want := strings.TrimSpace(string(wantHex)); got != want {
		return fmt.Errorf("sha256 %s, host made %s", got, want)
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
