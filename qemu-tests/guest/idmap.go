package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/idcase"
	"golang.org/x/sys/unix"
)

// runIDMap runs the id-mapping case on mnt, a share the daemon serves with
// idcase.DaemonArgs (see ../internal/idcase): every check of idcase.Checks
// as one verdict. The checks that act as another user run this program
// again with that user's credentials (guesttest -idmap-op).
func runIDMap(mnt string) {
	fns := map[string]func(string) error{
		"idmap_root_create":      idmapRootCreate,
		"idmap_user_create":      idmapUserCreate,
		"idmap_host_owned":       idmapHostOwned,
		"idmap_chown":            idmapChown,
		"idmap_chown_forbidden":  idmapChownForbidden,
		"idmap_forbidden_create": idmapForbiddenCreate,
		"idmap_user_change":      idmapUserChange,
		"idmap_forbidden_change": idmapForbiddenChange,
		"idmap_cold_lookup":      idmapColdLookup,
		"idmap_readdirplus":      idmapReaddirplus,
	}
	fmt.Printf("GUESTINFO guesttest -idmap checks=%d\n", len(idcase.Checks))
	for _, name := range idcase.Checks {
		fn := fns[name]
		if fn == nil {
			fmt.Printf("GUESTTEST %s FAIL the checker has no such check\n", name)
			continue
		}
		runCheck(nil, check{name, func(*env) error { return fn(mnt) }})
	}
}

// idmapOps are what -idmap-op does to its path, as the user it runs as.
var idmapOps = map[string]func(p string) error{
	"create": func(p string) error {
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err == nil {
			err = unix.Close(fd)
		}
		return err
	},
	"mkdir":   func(p string) error { return unix.Mkdir(p, 0o755) },
	"symlink": func(p string) error { return unix.Symlink(idcase.UserSymTarget, p) },
	"fifo":    func(p string) error { return unix.Mknod(p, unix.S_IFIFO|0o644, 0) },
	// SETATTR with FATTR_ATIME_NOW|FATTR_MTIME_NOW: write permission is
	// enough.
	"touch":       func(p string) error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, nil, 0) },
	"truncate":    func(p string) error { return unix.Truncate(p, 0) },
	"setxattr":    func(p string) error { return unix.Setxattr(p, idcase.XattrName, []byte(idcase.XattrValue), 0) },
	"removexattr": func(p string) error { return unix.Removexattr(p, idcase.KeptXattr) },
	// A hard link of p (MOUNT/host/NAME) as MOUNT/tmp/u<uid>-link.
	"link": func(p string) error {
		return unix.Link(p, filepath.Join(filepath.Dir(filepath.Dir(p)), "tmp", fmt.Sprintf("u%d-link", os.Getuid())))
	},
}

// runIDMapOp is -idmap-op: it does op to p and prints "OK" or "ERRNO <n>"
// for the parent (asUser); the exit status is 0 unless the op is unknown.
func runIDMapOp(op, p string) int {
	fn := idmapOps[op]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "guesttest: unknown -idmap-op %q\n", op)
		return 2
	}
	err := fn(p)
	var errno syscall.Errno
	switch {
	case err == nil:
		fmt.Println("OK")
	case errors.As(err, &errno):
		fmt.Printf("ERRNO %d\n", int(errno))
	default:
		fmt.Fprintf(os.Stderr, "guesttest: %s %s: %v\n", op, p, err)
		return 1
	}
	return 0
}

// asUser runs op on p in a child process with uid and gid (and no
// supplementary groups: exec clears them when Credential lists none) and
// returns the errno it ended with (nil: success).
func asUser(uid, gid uint32, op, p string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-idmap-op", op, p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("running %s as %d:%d: %v (%s)", op, uid, gid, err, strings.TrimSpace(stderr.String()))
	}
	res := strings.TrimSpace(string(out))
	if res == "OK" {
		return nil
	}
	if n, ok := strings.CutPrefix(res, "ERRNO "); ok {
		if e, err := strconv.Atoi(n); err == nil {
			return syscall.Errno(e)
		}
	}
	return fmt.Errorf("%s as %d:%d printed %q", op, uid, gid, res)
}

// wantOwner lstats mnt/rel and wants type typ owned by uid:gid.
func wantOwner(mnt, rel string, typ, uid, gid uint32) error {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, rel), &st); err != nil {
		return fmt.Errorf("lstat %s: %v", rel, err)
	}
	return ownerErr(rel, &st, typ, uid, gid)
}

func ownerErr(rel string, st *unix.Stat_t, typ, uid, gid uint32) error {
	if st.Mode&unix.S_IFMT != typ || st.Uid != uid || st.Gid != gid {
		return fmt.Errorf("%s is a %s owned by %d:%d, want a %s owned by %d:%d",
			rel, idcase.TypeName(st.Mode), st.Uid, st.Gid, idcase.TypeName(typ), uid, gid)
	}
	return nil
}

// wantObjects checks the guest's owners of the table's objects at paths.
func wantObjects(mnt string, paths ...string) error {
	var errs []error
	for _, p := range paths {
		o, ok := idcase.Find(p)
		if !ok {
			errs = append(errs, fmt.Errorf("%s is not in idcase.Objects", p))
			continue
		}
		errs = append(errs, wantOwner(mnt, p, o.Type, o.GuestUID, o.GuestGID))
	}
	return errors.Join(errs...)
}

// madeBy lists the paths of the objects check made.
func madeBy(check string) []string {
	var paths []string
	for _, o := range idcase.Objects {
		if o.By == check {
			paths = append(paths, o.Path)
		}
	}
	return paths
}

func createFile(p string) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %v", p, err)
	}
	return unix.Close(fd)
}

// Guest root makes byroot/ with a file, a directory and a symlink in it,
// and the two files idmap_chown and idmap_chown_forbidden chown: all 0:0
// in the guest, 200000:200000 on the host.
func idmapRootCreate(mnt string) error {
	d := filepath.Join(mnt, "byroot")
	if err := unix.Mkdir(d, 0o755); err != nil {
		return fmt.Errorf("mkdir byroot: %v", err)
	}
	for _, name := range []string{"file", "chowned", "chown666"} {
		if err := createFile(filepath.Join(d, name)); err != nil {
			return err
		}
	}
	if err := unix.Mkdir(filepath.Join(d, "dir"), 0o755); err != nil {
		return fmt.Errorf("mkdir byroot/dir: %v", err)
	}
	if err := unix.Symlink(idcase.RootSymTarget, filepath.Join(d, "sym")); err != nil {
		return fmt.Errorf("symlink byroot/sym: %v", err)
	}
	return errors.Join(
		wantObjects(mnt, madeBy("idmap_root_create")...),
		// Changed later: 0:0 for now.
		wantOwner(mnt, "byroot/chowned", idcase.File, 0, 0),
		wantOwner(mnt, "byroot/chown666", idcase.File, 0, 0),
	)
}

// User 1000 (gid 1000) makes a file, a directory, a symlink and a fifo in
// tmp/: 1000:1000 in the guest, 201000:201000 on the host.
func idmapUserCreate(mnt string) error {
	for _, c := range []struct{ op, rel string }{
		{"create", "tmp/u1000-file"},
		{"mkdir", "tmp/u1000-dir"},
		{"symlink", "tmp/u1000-sym"},
		{"fifo", "tmp/u1000-fifo"},
	} {
		if err := asUser(idcase.GuestUser, idcase.GuestUser, c.op, filepath.Join(mnt, c.rel)); err != nil {
			return fmt.Errorf("%s %s as 1000:1000: %v", c.op, c.rel, err)
		}
	}
	if got, err := os.Readlink(filepath.Join(mnt, "tmp/u1000-sym")); err != nil || got != idcase.UserSymTarget {
		return fmt.Errorf("readlink tmp/u1000-sym: %q, %v; want %q", got, err, idcase.UserSymTarget)
	}
	return wantObjects(mnt, madeBy("idmap_user_create")...)
}

// The host's objects show their owners mapped back: host 201000 as 1000,
// host 200000 as 0, host 4242 (no rule) as 4242.
func idmapHostOwned(mnt string) error {
	var paths []string
	for _, o := range idcase.Objects {
		if o.By == "" {
			paths = append(paths, o.Path)
		}
	}
	return wantObjects(mnt, paths...)
}

// Guest root chowns byroot/chowned to 1000:1000: the SETATTR reply, and
// the host, show the mapped owner.
func idmapChown(mnt string) error {
	if err := os.Lchown(filepath.Join(mnt, "byroot/chowned"), idcase.GuestUser, idcase.GuestUser); err != nil {
		return fmt.Errorf("chown byroot/chowned to 1000:1000: %v", err)
	}
	return wantObjects(mnt, "byroot/chowned")
}

// Guest root's chown of byroot/chown666 to uid 666 is refused (EPERM) and
// changes nothing.
func idmapChownForbidden(mnt string) error {
	p := filepath.Join(mnt, "byroot/chown666")
	if err := wantErrno(os.Lchown(p, idcase.Forbidden, -1), unix.EPERM, "chown to 666"); err != nil {
		return err
	}
	if err := wantErrno(os.Lchown(p, idcase.Forbidden, idcase.GuestUser), unix.EPERM, "chown to 666:1000"); err != nil {
		return err
	}
	return wantObjects(mnt, "byroot/chown666")
}

// User 666 may create nothing: a file, a directory, a symlink and a fifo
// in tmp/ (where 1000 could) each fail with EPERM, and none exists.
func idmapForbiddenCreate(mnt string) error {
	var errs []error
	for _, c := range []struct{ op, rel string }{
		{"create", "tmp/u666-file"},
		{"mkdir", "tmp/u666-dir"},
		{"symlink", "tmp/u666-sym"},
		{"fifo", "tmp/u666-fifo"},
	} {
		op, rel := c.op, c.rel
		p := filepath.Join(mnt, rel)
		errs = append(errs, wantErrno(asUser(idcase.Forbidden, idcase.Forbidden, op, p), unix.EPERM, op+" "+rel+" as 666:666"))
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("lstat %s after the refused %s: %v, want ENOENT", rel, op, err))
		}
	}
	return errors.Join(errs...)
}

// changeOps are what users 1000 and 666 try on a file of mode 0666 they
// do not own: SETATTR (times, size), SETXATTR, REMOVEXATTR, LINK.
var changeOps = []string{"touch", "truncate", "setxattr", "removexattr", "link"}

// User 1000 may change host/w1000 (mode 0666, owned by guest root): touch,
// truncate, setxattr and removexattr it and hard-link it as
// tmp/u1000-link. This is the control for idmap_forbidden_change: the guest
// kernel lets each operation through to the daemon.
func idmapUserChange(mnt string) error {
	w1000 := filepath.Join(mnt, "host/w1000")
	var errs []error
	for _, op := range changeOps {
		if err := asUser(idcase.GuestUser, idcase.GuestUser, op, w1000); err != nil {
			errs = append(errs, fmt.Errorf("%s host/w1000 as 1000:1000: %v", op, err))
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(w1000, &st); err != nil {
		errs = append(errs, err)
	} else if st.Size != 0 || st.Mtim.Sec == idcase.WritableTime.Unix() || st.Nlink != 2 {
		errs = append(errs, fmt.Errorf("host/w1000 has size %d, mtime %d, %d links after 1000's changes; want 0, a new mtime, 2", st.Size, st.Mtim.Sec, st.Nlink))
	}
	errs = append(errs, wantXattrs(w1000, "host/w1000", map[string]string{idcase.KeptXattr: "", idcase.XattrName: idcase.XattrValue}))
	errs = append(errs, wantObjects(mnt, "host/w1000", "tmp/u1000-link"))
	return errors.Join(errs...)
}

// User 666 may change nothing: the same operations on host/w666 each fail
// with EPERM and change nothing. A link that should not have been made is
// removed again, so that the later checks and the host's see the share the
// table describes.
func idmapForbiddenChange(mnt string) error {
	w666 := filepath.Join(mnt, "host/w666")
	var errs []error
	for _, op := range changeOps {
		err := asUser(idcase.Forbidden, idcase.Forbidden, op, w666)
		errs = append(errs, wantErrno(err, unix.EPERM, op+" host/w666 as 666:666"))
		if op == "link" && err == nil {
			errs = append(errs, unix.Unlink(filepath.Join(mnt, "tmp/u666-link")))
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(w666, &st); err != nil {
		errs = append(errs, err)
	} else if st.Size != int64(len(idcase.WritableData)) || st.Mtim.Sec != idcase.WritableTime.Unix() || st.Nlink != 1 {
		errs = append(errs, fmt.Errorf("host/w666 has size %d, mtime %d, %d links after 666's refused changes; want %d, %d, 1",
			st.Size, st.Mtim.Sec, st.Nlink, len(idcase.WritableData), idcase.WritableTime.Unix()))
	}
	errs = append(errs, wantXattrs(w666, "host/w666", map[string]string{idcase.KeptXattr: idcase.XattrValue, idcase.XattrName: ""}))
	errs = append(errs, wantObjects(mnt, "host/w666"))
	return errors.Join(errs...)
}

// wantXattrs wants the xattrs of p to have the values want gives ("": the
// xattr must be absent).
func wantXattrs(p, rel string, want map[string]string) error {
	var errs []error
	for name, value := range want {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(p, name, buf)
		switch {
		case value == "" && !errors.Is(err, unix.ENODATA):
			errs = append(errs, fmt.Errorf("getxattr %s of %s: %q, %v; want ENODATA", name, rel, buf[:max(n, 0)], err))
		case value != "" && (err != nil || string(buf[:n]) != value):
			errs = append(errs, fmt.Errorf("getxattr %s of %s: %q, %v; want %q", name, rel, buf[:max(n, 0)], err, value))
		}
	}
	return errors.Join(errs...)
}

// dropCaches writes back and evicts the guest's dentries, inodes and
// pages: what is looked up next comes from the daemon again.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop_caches: %v", err)
	}
	return nil
}

// With cold caches, every object is looked up again (LOOKUP replies): each
// shows its owner, and user 666's objects do not exist.
func idmapColdLookup(mnt string) error {
	if err := dropCaches(); err != nil {
		return err
	}
	var paths []string
	for _, o := range idcase.Objects {
		paths = append(paths, o.Path)
	}
	errs := []error{wantObjects(mnt, paths...)}
	for _, rel := range idcase.Absent {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, rel), &st); !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("lstat %s: %v, want ENOENT", rel, err))
		}
	}
	return errors.Join(errs...)
}

// With cold caches, each directory is listed first (the kernel asks with
// READDIRPLUS for a directory's first listing, and keeps the attributes)
// and its entries are lstat'ed then, as `ls -ln` does: the names must be
// the table's and the owners mapped.
func idmapReaddirplus(mnt string) error {
	if err := dropCaches(); err != nil {
		return err
	}
	var errs []error
	for _, d := range idcase.Objects {
		if d.Type != idcase.Dir {
			continue
		}
		var want []string
		for _, o := range idcase.Objects {
			if o.Path != "." && path.Dir(o.Path) == d.Path {
				want = append(want, path.Base(o.Path))
			}
		}
		dir := filepath.Join(mnt, d.Path)
		f, err := os.Open(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names, err := f.Readdirnames(-1)
		if err != nil {
			f.Close()
			errs = append(errs, fmt.Errorf("listing %s: %v", d.Path, err))
			continue
		}
		slices.Sort(names)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			errs = append(errs, fmt.Errorf("%s lists %q, want %q", d.Path, names, want))
		}
		for _, n := range names {
			rel := path.Join(d.Path, n)
			o, ok := idcase.Find(rel)
			if !ok {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				errs = append(errs, fmt.Errorf("lstat %s: %v", rel, err))
				continue
			}
			errs = append(errs, ownerErr(rel, &st, o.Type, o.GuestUID, o.GuestGID))
		}
		f.Close()
	}
	return errors.Join(errs...)
}
