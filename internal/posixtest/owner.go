package posixtest

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The unprivileged user and group the ownership tests act as.
const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// needRoot skips t when the suite does not run as root; the tests that act
// as another user need to become that user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("acting as another user needs root")
	}
}

// sharedDir makes a world-writable directory (mode 0777 regardless of the
// umask) inside dir.
func sharedDir(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	check(t, unix.Mkdir(p, 0o777), "mkdir %s", name)
	check(t, unix.Chmod(p, 0o777), "chmod %s", name)
	return p
}

// wantHelperOK fails t for every op of res that failed.
func wantHelperOK(t *testing.T, ops []helperOp, res []helperResult) {
	t.Helper()
	for i, r := range res {
		if r.Errno != 0 {
			t.Errorf("helper %s %s: %v", ops[i].Op, filepath.Base(ops[i].Path), r.err())
		}
	}
}

// testNonRootCreate has a helper running as 65534:65534 create a file, a
// directory, a symlink, a fifo and a mknod'd file in a 0777 directory, and
// checks that each is owned by that user and group, with the mode asked
// for less the umask.
func testNonRootCreate(t *testing.T, dir string) {
	needRoot(t)
	sh := sharedDir(t, dir, "shared")
	ops := []helperOp{
		{Op: "create", Path: filepath.Join(sh, "file"), Mode: 0o640},
		{Op: "mkdir", Path: filepath.Join(sh, "dir"), Mode: 0o750},
		{Op: "symlink", Path: filepath.Join(sh, "symlink"), Target: "file"},
		{Op: "mkfifo", Path: filepath.Join(sh, "fifo"), Mode: 0o620},
		{Op: "mknod", Path: filepath.Join(sh, "node"), Mode: unix.S_IFREG | 0o604},
		{Op: "write", Path: filepath.Join(sh, "file"), Data: []byte("written by nobody")},
	}
	res := runOps(t, nobodyUID, nobodyGID, ops...)
	wantHelperOK(t, ops, res)
	want := map[string]struct {
		typ  uint32
		perm uint32
	}{
		"file":    {unix.S_IFREG, 0o640},
		"dir":     {unix.S_IFDIR, 0o750},
		"symlink": {unix.S_IFLNK, 0o777},
		"fifo":    {unix.S_IFIFO, 0o620},
		"node":    {unix.S_IFREG, 0o604},
	}
	for name, w := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(sh, name), &st); err != nil {
			t.Errorf("lstat %s: %v", name, err)
			continue
		}
		if st.Uid != nobodyUID || st.Gid != nobodyGID {
			t.Errorf("%s created by %d:%d is owned by %d:%d", name, nobodyUID, nobodyGID, st.Uid, st.Gid)
		}
		wantType(t, name, &st, w.typ)
		perm := w.perm
		if w.typ != unix.S_IFLNK {
			perm &^= umask()
		}
		if st.Mode&0o7777 != perm {
			t.Errorf("%s has mode %#o, want %#o", name, st.Mode&0o7777, perm)
		}
	}
	wantContent(t, filepath.Join(sh, "file"), []byte("written by nobody"))
	check(t, os.RemoveAll(sh), "remove")
}

// testNonRootSetgidDir checks setgid directory inheritance for a creator who
// is not in the directory's group: new entries get the directory's group,
// new subdirectories also get the setgid bit.
func testNonRootSetgidDir(t *testing.T, dir string) {
	needRoot(t)
	const group = 4242
	sg := sharedDir(t, dir, "setgid")
	check(t, unix.Chown(sg, 0, group), "chown")
	check(t, unix.Chmod(sg, 0o2777), "chmod 02777")
	ops := []helperOp{
		{Op: "create", Path: filepath.Join(sg, "file"), Mode: 0o644},
		{Op: "mkdir", Path: filepath.Join(sg, "sub"), Mode: 0o755},
		{Op: "symlink", Path: filepath.Join(sg, "symlink"), Target: "file"},
	}
	res := runOps(t, nobodyUID, nobodyGID, ops...)
	wantHelperOK(t, ops, res)
	for _, name := range []string{"file", "sub", "symlink"} {
		st := lstat(t, filepath.Join(sg, name))
		if st.Uid != nobodyUID || st.Gid != group {
			t.Errorf("%s created in a setgid directory of group %d is owned by %d:%d, want %d:%d", name, group, st.Uid, st.Gid, nobodyUID, group)
		}
	}
	if st := lstat(t, filepath.Join(sg, "sub")); st.Mode&unix.S_ISGID == 0 {
		t.Errorf("subdirectory of a setgid directory has mode %#o, want the setgid bit", st.Mode&0o7777)
	}
	// A file created with the setgid bit by a non-member loses it.
	ops = []helperOp{{Op: "create", Path: filepath.Join(sg, "sgidfile"), Mode: 0o2755}}
	res = runOps(t, nobodyUID, nobodyGID, ops...)
	wantHelperOK(t, ops, res)
	if st := lstat(t, filepath.Join(sg, "sgidfile")); st.Mode&unix.S_ISGID != 0 {
		t.Errorf("file created with mode 02755 by a non-member of the group has mode %#o, want the setgid bit cleared", st.Mode&0o7777)
	}
	check(t, os.RemoveAll(sg), "remove")
}

// testNonRootPermissions checks that permission bits bind an unprivileged
// process: no creating in a 0755 root directory, no reading a 0600 root
// file, no chown to others, no chmod of others' files; reading a 0644 file
// works.
func testNonRootPermissions(t *testing.T, dir string) {
	needRoot(t)
	priv := filepath.Join(dir, "private")
	check(t, unix.Mkdir(priv, 0o755), "mkdir")
	check(t, unix.Chmod(priv, 0o755), "chmod")
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, []byte("secret"), 0o600)
	public := filepath.Join(dir, "public")
	writeFile(t, public, []byte("public"), 0o644)
	check(t, unix.Chmod(public, 0o644), "chmod")
	sh := sharedDir(t, dir, "shared")
	own := filepath.Join(sh, "own")

	ops := []helperOp{
		{Op: "create", Path: filepath.Join(priv, "x"), Mode: 0o644},
		{Op: "mkdir", Path: filepath.Join(priv, "d"), Mode: 0o755},
		{Op: "read", Path: secret},
		{Op: "read", Path: public},
		{Op: "write", Path: public, Data: []byte("x")},
		{Op: "chmod", Path: public, Mode: 0o666},
		{Op: "create", Path: own, Mode: 0o644},
		{Op: "chown", Path: own, UID: 0, GID: 0},
		{Op: "chown", Path: own, UID: nobodyUID, GID: 0},
		{Op: "chmod", Path: own, Mode: 0o600},
	}
	res := runOps(t, nobodyUID, nobodyGID, ops...)
	wantErrno(t, res[0].err(), "unprivileged create in a 0755 root directory", unix.EACCES)
	wantErrno(t, res[1].err(), "unprivileged mkdir in a 0755 root directory", unix.EACCES)
	wantErrno(t, res[2].err(), "unprivileged read of a 0600 root file", unix.EACCES)
	if res[3].Errno != 0 || string(res[3].Data) != "public" {
		t.Errorf("unprivileged read of a 0644 file: %q, %v", res[3].Data, res[3].err())
	}
	wantErrno(t, res[4].err(), "unprivileged write to a 0644 root file", unix.EACCES)
	wantErrno(t, res[5].err(), "unprivileged chmod of a root file", unix.EPERM)
	if res[6].Errno != 0 {
		t.Fatalf("unprivileged create in a 0777 directory: %v", res[6].err())
	}
	wantErrno(t, res[7].err(), "unprivileged chown to root", unix.EPERM)
	wantErrno(t, res[8].err(), "unprivileged chgrp to a group the user is not in", unix.EPERM)
	if res[9].Errno != 0 {
		t.Errorf("unprivileged chmod of its own file: %v", res[9].err())
	}
	wantGone(t, filepath.Join(priv, "x"))
	wantContent(t, public, []byte("public"))
	if st := lstat(t, public); st.Mode&0o7777 != 0o644 {
		t.Errorf("public file mode changed to %#o", st.Mode&0o7777)
	}
	if st := lstat(t, own); st.Uid != nobodyUID || st.Mode&0o7777 != 0o600 {
		t.Errorf("helper's own file: owner %d mode %#o, want %d and 0600", st.Uid, st.Mode&0o7777, nobodyUID)
	}
	check(t, os.RemoveAll(sh), "remove")
	remove(t, priv)
	remove(t, secret)
	remove(t, public)
}

// testSetuidClearedOnWrite checks that a write or truncate by a user other
// than root clears the setuid bit, and the setgid bit when group execute is
// set, while a write by root (who has CAP_FSETID) keeps them.
func testSetuidClearedOnWrite(t *testing.T, dir string) {
	needRoot(t)
	p := filepath.Join(dir, "suid")
	writeFile(t, p, []byte("#!/bin/true\n"), 0o644)
	check(t, unix.Chmod(p, 0o6777), "chmod 06777")

	ops := []helperOp{{Op: "write", Path: p, Data: []byte("#")}}
	wantHelperOK(t, ops, runOps(t, nobodyUID, nobodyGID, ops...))
	if got := lstat(t, p).Mode & 0o7777; got != 0o777 {
		t.Errorf("after a write by uid %d, mode is %#o, want 0777 (setuid and setgid cleared)", nobodyUID, got)
	}
	wantContent(t, p, []byte("#!/bin/true\n"))

	check(t, unix.Chmod(p, 0o6777), "chmod 06777")
	ops = []helperOp{{Op: "truncate", Path: p, Mode: 5}}
	wantHelperOK(t, ops, runOps(t, nobodyUID, nobodyGID, ops...))
	if got := lstat(t, p).Mode & 0o7777; got != 0o777 {
		t.Errorf("after truncate by uid %d, mode is %#o, want 0777", nobodyUID, got)
	}

	// Setgid without group execute: Linux 6.2 and later drop it too when
	// the writer is not in the file's group; older kernels keep it.
	check(t, unix.Chmod(p, 0o6766), "chmod 06766")
	ops = []helperOp{{Op: "write", Path: p, Data: []byte("x")}}
	wantHelperOK(t, ops, runOps(t, nobodyUID, nobodyGID, ops...))
	if got := lstat(t, p).Mode & 0o7777; got != 0o766 && got != 0o2766 {
		t.Errorf("after a write by uid %d to a 06766 file, mode is %#o, want 0766 (or 02766 before Linux 6.2)", nobodyUID, got)
	}

	// Root keeps the bits.
	check(t, unix.Chmod(p, 0o6777), "chmod 06777")
	f := openFile(t, p, os.O_WRONLY|os.O_APPEND, 0)
	_, err := f.Write([]byte("root"))
	check(t, err, "write by root")
	check(t, f.Close(), "close")
	if got := lstat(t, p).Mode & 0o7777; got != 0o6777 {
		t.Errorf("after a write by root, mode is %#o, want 06777", got)
	}
	remove(t, p)
}

// testSetuidClearedOTrunc checks that an O_TRUNC open by a user other
// than root clears the setuid and setgid bits even when nothing is
// written. Over FUSE that needs the daemon's help (FUSE_HANDLE_KILLPRIV_V2):
// without it the kernel truncates with the open (FUSE_ATOMIC_O_TRUNC) and
// sends no SETATTR for the mode, so the bits stay, with virtiofsd as with
// govirtiofsd; such transports skip this test.
func testSetuidClearedOTrunc(t *testing.T, dir string) {
	needRoot(t)
	p := filepath.Join(dir, "suid")
	writeFile(t, p, []byte("#!/bin/true\n"), 0o644)
	check(t, unix.Chmod(p, 0o6777), "chmod 06777")
	ops := []helperOp{{Op: "create", Path: p, Flags: unix.O_TRUNC}}
	wantHelperOK(t, ops, runOps(t, nobodyUID, nobodyGID, ops...))
	if got := lstat(t, p).Mode & 0o7777; got != 0o777 {
		t.Errorf("after an O_TRUNC open (no write) by uid %d, mode is %#o, want 0777", nobodyUID, got)
	}
	wantContent(t, p, nil)
	remove(t, p)
}
