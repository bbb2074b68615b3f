package qemutests

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/dropcase"
	"golang.org/x/sys/unix"
)

// dropinDefaultPairs are the pairs the drop-in case boots unless
// QEMUTEST_DROPIN_PAIRS names others: one guest per command line.
const dropinDefaultPairs = "6.12"

// sessionUser is the unprivileged user the libvirt session-mode line runs
// as; scripts/deps.sh creates it with subordinate ids 300000-365535.
const sessionUser = "govirtiofs-test"

// dropinEnv is what a command line is made from.
type dropinEnv struct {
	dir    string // the share
	socket string // the socket path (QEMU's side in every case)
	nofile int    // libvirt's <openfiles max=…>, as far as the machine lets it go
	// session: libvirt's --uid-map/--gid-map for the unprivileged user.
	uidMap, gidMap []string
}

// dropinCase is one orchestrator's virtiofsd command line.
type dropinCase struct {
	name   string
	source string // where the line comes from
	// fd is the number of the listening socket the daemon inherits, as
	// the orchestrator passes it (0: the daemon listens on the path
	// itself).
	fd int
	// session runs the daemon as sessionUser, as libvirt's session
	// daemon runs virtiofsd as the user, with the maps libvirt derives.
	session bool
	xattr   bool // the line enables xattrs
	// waitFor is a line the orchestrator waits for on the daemon's stderr
	// before it starts the VM ("" for none).
	waitFor string
	args    func(e dropinEnv) []string
}

// dropinCases are the command lines orchestrators generate for the Rust
// virtiofsd, each exactly as its source builds it (the order, '=' or a
// separate word, -o), with the options their defaults or a typical
// configuration give.
var dropinCases = []dropinCase{
	{
		// qemuVirtioFSBuildCommandLine with the vhost-user.json
		// "separate-options" feature, for <filesystem> with
		// <binary xattr='on'><cache mode='none'/><sandbox mode='chroot'/>
		// <thread_pool size='16'/><openfiles max='65536'/></binary>,
		// virtiofsd_debug=1 in qemu.conf. libvirt opens, binds and
		// listens on the socket itself and passes the descriptor.
		name:   "libvirt",
		source: "libvirt src/qemu/qemu_virtiofs.c (system daemon)",
		fd:     5,
		xattr:  true,
		args: func(e dropinEnv) []string {
			return []string{"--fd=5", "--shared-dir", e.dir, "--cache", "never", "--sandbox", "chroot", "--xattr",
				"--thread-pool-size=16", "--rlimit-nofile=" + strconv.Itoa(e.nofile), "--log-level", "debug"}
		},
	},
	{
		// The session daemon runs virtiofsd as the user; with no <idmap>
		// in the XML, qemuVirtioFSPrepareIdMap maps guest 0 to the user
		// and 1.. to the user's /etc/subuid range. An unprivileged user
		// can neither chroot nor raise the open-file limit, so that
		// domain has no <sandbox> and no <openfiles>.
		name:    "libvirt-session",
		source:  "libvirt src/qemu/qemu_virtiofs.c (session daemon, qemuVirtioFSPrepareIdMap)",
		fd:      5,
		session: true,
		xattr:   true,
		args: func(e dropinEnv) []string {
			args := []string{"--fd=5", "--shared-dir", e.dir, "--cache", "never", "--xattr",
				"--thread-pool-size=16", "--log-level", "debug"}
			for _, m := range e.uidMap {
				args = append(args, "--uid-map="+m)
			}
			for _, m := range e.gidMap {
				args = append(args, "--gid-map="+m)
			}
			return args
		},
	},
	{
		// The same <filesystem> with a virtiofsd that lacks the
		// separate-options feature: libvirt's older -o form.
		name:   "libvirt-legacy",
		source: "libvirt src/qemu/qemu_virtiofs.c (no separate-options)",
		fd:     5,
		xattr:  true,
		args: func(e dropinEnv) []string {
			return []string{"--fd=5", "-o", "source=" + e.dir + ",cache=none,sandbox=chroot,xattr", "--thread-pool-size=16", "-d"}
		},
	},
	{
		// virtiofsd.args() with virtio_fs_cache="auto",
		// virtio_fs_inode_file_handles="prefer" and the default
		// virtio_fs_extra_args; the runtime listens and passes fd 3.
		name:   "kata-go",
		source: "kata-containers src/runtime/virtcontainers/virtiofsd.go",
		fd:     3,
		args: func(e dropinEnv) []string {
			return []string{"--syslog", "--cache=auto", "--shared-dir=" + e.dir, "--fd=3",
				"--inode-file-handles=prefer", "--thread-pool-size=1", "--announce-submounts"}
		},
	},
	{
		// ShareVirtioFsStandalone::virtiofsd_args with cache "auto", the
		// default extra args ["--thread-pool-size=1", "-o",
		// "announce_submounts"] and SELinux in the guest not disabled
		// (--xattr). It starts the VM once the daemon's stderr says it
		// waits for the connection.
		name:    "kata-runtime-rs",
		source:  "kata-containers src/runtime-rs/crates/resource/src/share_fs/share_virtio_fs_standalone.rs",
		xattr:   true,
		waitFor: "Waiting for vhost-user socket connection",
		args: func(e dropinEnv) []string {
			return []string{"--socket-path", e.socket, "--shared-dir", e.dir, "--cache", "auto",
				"--sandbox", "none", "--seccomp", "none", "--thread-pool-size=1", "-o", "announce_submounts", "--xattr"}
		},
	},
	{
		name:   "cloud-hypervisor",
		source: "cloud-hypervisor docs/fs.md",
		args: func(e dropinEnv) []string {
			return []string{"--log-level", "debug", "--socket-path=" + e.socket, "--shared-dir=" + e.dir,
				"--cache=never", "--thread-pool-size=4"}
		},
	},
}

// TestQEMUDropIn checks that the daemon is a drop-in for the Rust
// virtiofsd: each command line an orchestrator generates for virtiofsd
// (dropinCases) starts the daemon unchanged, with the listening socket
// passed the way that orchestrator passes it, and serves a guest that runs
// internal/dropcase's short checks (TestQEMUDropIn/<case>/<check>); on the
// host, host_files checks what they left, with the owners the line's id
// mapping gives, and daemon_exit that the daemon exited with status 0 once
// QEMU was gone. One guest boots per line (the 6.12 pair unless
// QEMUTEST_DROPIN_PAIRS says otherwise; QEMUTEST_DROPIN_CASES, a regexp,
// chooses lines). QEMUTEST_DAEMON_ARGS does not apply: the lines are
// used as they are.
func TestQEMUDropIn(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.command == nil {
		t.Skipf("%s: a QEMUTEST_DAEMON_CMD daemon takes no other command lines", daemon.name)
	}
	if os.Geteuid() != 0 {
		prereq(t, "the drop-in case runs the daemons as root, as libvirt and Kata do: it needs root")
	}
	list := os.Getenv("QEMUTEST_DROPIN_PAIRS")
	if list == "" {
		list = dropinDefaultPairs
	}
	selected := selectPairs(t, list, nil)
	cases := dropinCases
	if r := os.Getenv("QEMUTEST_DROPIN_CASES"); r != "" {
		re, err := regexp.Compile(r)
		if err != nil {
			t.Fatalf("QEMUTEST_DROPIN_CASES: %v", err)
		}
		cases = slices.DeleteFunc(slices.Clone(cases), func(c dropinCase) bool { return !re.MatchString(c.name) })
	}
	plan := planModeGuest(t, "dropin", dropcase.Checks)
	logRoot := logRootDir(t)
	start := time.Now()
	var summary []string
	for _, p := range selected {
		for _, c := range cases {
			t.Run(c.name+"/"+p.short, func(t *testing.T) {
				summary = append(summary, runDropInCase(t, setup, daemon, p, c, plan, logRoot))
			})
		}
	}
	for _, s := range summary {
		t.Log(s)
	}
	t.Logf("%d command lines in %.1fs", len(summary), time.Since(start).Seconds())
}

// planModeGuest builds the checker and fills in guest.sh for a mode that
// runs the checker alone (guesttest -MODE).
func planModeGuest(t *testing.T, mode string, checks []string) *guestPlan {
	t.Helper()
	watchdog := envDuration(t, "QEMUTEST_WATCHDOG", defaultWatchdog)
	script := strings.NewReplacer(
		"@MODE@", mode,
		"@CHECKS@", "",
		"@POSIXRUN@", "",
		"@POSIXSKIP@", "",
		"@WATCHDOG@", strconv.Itoa(int(watchdog.Seconds())),
	).Replace(string(readFile(t, filepath.Join("guest", "guest.sh"))))
	guestBin := filepath.Join(t.TempDir(), "guesttest")
	buildGuest(t, guestBin)
	all := append([]string{"mount"}, checks...)
	return &guestPlan{
		files: []cpioFile{
			{name: "init", mode: 0o100755, data: readFile(t, filepath.Join("guest", "init.sh"))},
			{name: "guest.sh", mode: 0o100644, data: []byte(script)},
			{name: "bin/guesttest", mode: 0o100755, data: readFile(t, guestBin)},
		},
		checks: append(all, "umount"),
	}
}

// sessionIDs are the user a session-mode line runs as and the maps libvirt
// gives it.
type sessionIDs struct {
	uid, gid                 int
	uidMap, gidMap           []string
	hostUserUID, hostUserGID int // guest user 1000's files on the host
}

// lookupSession finds sessionUser and its subordinate ranges and builds
// the maps as qemuVirtioFSPrepareIdMap does: 0 → the user (count 1), 1.. →
// the first /etc/subuid (/etc/subgid) range naming the user or its id.
func lookupSession(t *testing.T) sessionIDs {
	t.Helper()
	u, err := user.Lookup(sessionUser)
	if err != nil {
		prereq(t, "user %s (scripts/deps.sh creates it): %v", sessionUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		prereq(t, "group %s of %s: %v", u.Gid, sessionUser, err)
	}
	subUID, nUID := subIDs(t, "/etc/subuid", u.Username, u.Uid)
	subGID, nGID := subIDs(t, "/etc/subgid", g.Name, u.Gid)
	return sessionIDs{
		uid:         uid,
		gid:         gid,
		uidMap:      []string{fmt.Sprintf(":0:%d:1:", uid), fmt.Sprintf(":1:%d:%d:", subUID, nUID)},
		gidMap:      []string{fmt.Sprintf(":0:%d:1:", gid), fmt.Sprintf(":1:%d:%d:", subGID, nGID)},
		hostUserUID: subUID + dropcase.GuestUser - 1,
		hostUserGID: subGID + dropcase.GuestUser - 1,
	}
}

// subIDs returns the first range of file (name:start:count lines) for
// name or id.
func subIDs(t *testing.T, file, name, id string) (start, count int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		prereq(t, "%v (scripts/deps.sh gives %s subordinate ids)", err, sessionUser)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || (fields[0] != name && fields[0] != id) {
			continue
		}
		s, err1 := strconv.Atoi(fields[1])
		n, err2 := strconv.Atoi(fields[2])
		if err1 == nil && err2 == nil && n >= dropcase.GuestUser {
			return s, n
		}
	}
	prereq(t, "%s has no range of at least %d ids for %s (scripts/deps.sh adds one)", file, dropcase.GuestUser, name)
	return 0, 0
}

// listenUnix makes a listening unix socket at path the way libvirt's
// qemuOpenChrChardevUNIXSocket and Kata's getSocketFD do: socket, bind,
// listen, a blocking descriptor the daemon inherits.
func listenUnix(path string) (*os.File, error) {
	os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %v", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %v", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// nofileLimit is what libvirt's --rlimit-nofile asks for here: 65536, or
// the hard limit if that is lower (a root without CAP_SYS_RESOURCE, as on
// the CI machines, cannot raise it, and virtiofsd then refuses to start).
func nofileLimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err == nil && r.Max < 65536 {
		return int(r.Max)
	}
	return 65536
}

func runDropInCase(t *testing.T, setup setupEnv, daemon daemonSpec, p pair, c dropinCase, plan *guestPlan, logRoot string) string {
	g := newGuestRun(t, setup, daemon, p)
	work, err := os.MkdirTemp("", "gvt-dropin-")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("QEMUTEST_KEEP") == "1"
	t.Cleanup(func() {
		if keep || t.Failed() {
			t.Logf("kept the share in %s", work)
			return
		}
		os.RemoveAll(work)
	})
	must(t, os.Chmod(work, 0o755)) // the session user walks through it
	g.share = filepath.Join(work, "share")
	g.socket = filepath.Join(work, "vhost.sock")
	must(t, os.Mkdir(g.share, 0o755))

	e := dropinEnv{dir: g.share, socket: g.socket, nofile: nofileLimit()}
	owner := [2]int{0, 0}                                       // guest root's files on the host
	userOwner := [2]int{dropcase.GuestUser, dropcase.GuestUser} // guest user 1000's
	if c.session {
		s := lookupSession(t)
		e.uidMap, e.gidMap = s.uidMap, s.gidMap
		owner = [2]int{s.uid, s.gid}
		userOwner = [2]int{s.hostUserUID, s.hostUserGID}
		g.daemonCred = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid), Groups: []uint32{}}
	}
	must(t, dropcase.Prepare(g.share, c.xattr, owner[0], owner[1]))
	if c.fd > 0 {
		g.inherit = func(t *testing.T) []*os.File {
			f, err := listenUnix(g.socket)
			if err != nil {
				t.Fatal(err)
			}
			files := make([]*os.File, c.fd-2)
			files[c.fd-3] = f
			return files
		}
	}

	g.logDir = filepath.Join(logRoot, "dropin-"+c.name+"-"+p.name)
	must(t, os.MkdirAll(g.logDir, 0o755))
	g.initrd = filepath.Join(work, "initrd.cpio")
	buildInitrd(t, setup.file(t, p.initrd), g.initrd, plan.files)
	g.daemonArgv = append(append([]string(nil), daemon.command...), c.args(e)...)
	t.Logf("%s (%s)", c.name, c.source)
	t.Logf("daemon: %s", shellJoin(g.daemonArgv))
	if c.fd > 0 {
		t.Logf("        with the listening socket %s as fd %d", g.socket, c.fd)
	}
	if g.daemonCred != nil {
		t.Logf("        as uid %d gid %d", g.daemonCred.Uid, g.daemonCred.Gid)
	}
	t.Logf("qemu:   %s", shellJoin(g.qemuArgv()))

	res := g.run(t)
	logRun(t, g, res)

	passed, failed := 0, 0
	sub := func(name string, f func(t *testing.T)) {
		if t.Run(name, f) {
			passed++
		} else {
			failed++
		}
	}
	reportVerdicts(sub, plan.checks, res, nil)
	sub("host_files", func(t *testing.T) { checkDropInFiles(t, g.share, c, owner, userOwner) })
	if c.waitFor != "" {
		sub("stderr_ready_line", func(t *testing.T) {
			log := string(readFile(t, filepath.Join(g.logDir, "daemon.log")))
			if !strings.Contains(log, c.waitFor) {
				t.Errorf("the daemon never printed %q, which %s waits for before starting the VM; log %s:\n%s",
					c.waitFor, c.name, filepath.Join(g.logDir, "daemon.log"), tail(filepath.Join(g.logDir, "daemon.log"), 10))
			}
		})
	}
	sub("daemon_exit", func(t *testing.T) { checkDaemonExit(t, g, res) })
	return fmt.Sprintf("%s on %s with %s: %d passed, %d failed; QEMU start to guest verdict %.1fs, QEMU exit %.1fs; daemon CPU %.2fs; logs in %s",
		c.name, p.name, daemon.name, passed, failed, res.verdict.Seconds(), res.qemuExit.Seconds(), res.daemonCPU.Seconds(), g.logDir)
}

// checkDropInFiles checks on the host what the guest's checks left:
// dropin/ with only renamed.txt (its content, mode and owner, and the xattr
// when the line enables them) and tmp/u1000 owned by what guest user 1000
// maps to.
func checkDropInFiles(t *testing.T, share string, c dropinCase, owner, userOwner [2]int) {
	wantNames(t, filepath.Join(share, dropcase.Dir), []string{filepath.Base(dropcase.Final)})
	final := filepath.Join(share, dropcase.Final)
	wantFile(t, final, dropcase.FinalData)
	var st unix.Stat_t
	if err := unix.Lstat(final, &st); err != nil {
		t.Fatalf("host: %v", err)
	}
	if st.Mode&0o7777 != dropcase.FinalMode || int(st.Uid) != owner[0] || int(st.Gid) != owner[1] {
		t.Errorf("host: %s has mode %o, owner %d:%d; want %o, %d:%d", dropcase.Final, st.Mode&0o7777, st.Uid, st.Gid, dropcase.FinalMode, owner[0], owner[1])
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(final, dropcase.XattrName, buf)
	switch {
	case c.xattr && (err != nil || string(buf[:n]) != dropcase.XattrValue):
		t.Errorf("host: %s of %s is %q, %v; want %q", dropcase.XattrName, dropcase.Final, buf[:max(n, 0)], err, dropcase.XattrValue)
	case !c.xattr && !errors.Is(err, unix.ENODATA):
		t.Errorf("host: %s of %s: %v; the line has no --xattr, want ENODATA", dropcase.XattrName, dropcase.Final, err)
	}
	u := filepath.Join(share, dropcase.UserFile)
	if err := unix.Lstat(u, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			t.Errorf("host: %s is missing", dropcase.UserFile)
			return
		}
		t.Fatalf("host: %v", err)
	}
	if int(st.Uid) != userOwner[0] || int(st.Gid) != userOwner[1] {
		t.Errorf("host: %s is owned by %d:%d; guest user %d maps to %d:%d", dropcase.UserFile, st.Uid, st.Gid, dropcase.GuestUser, userOwner[0], userOwner[1])
	}
}
