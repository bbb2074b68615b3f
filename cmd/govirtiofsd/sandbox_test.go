package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// sandboxChild returns the process that serves mnt: the namespace sandbox's
// child, or the daemon itself in the other modes.
func sandboxChild(t *testing.T, mnt string) int {
	t.Helper()
	all := daemonProcs(t, mnt)
	for _, pid := range all {
		if slices.Contains(all, parentPID(pid)) {
			return pid
		}
	}
	if len(all) != 1 {
		t.Fatalf("daemons serving %s: %v", mnt, all)
	}
	return all[0]
}

// procStatus returns the value of a field of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// capMask is the /proc/PID/status form of a set of capabilities.
func capMask(caps ...int) string {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return fmt.Sprintf("%016x", m)
}

// TestSandboxModes serves a share over /dev/fuse under each --sandbox mode
// and checks what the serving process can see and do: its root directory,
// its namespaces, its capabilities, no_new_privs and the seccomp filter;
// and that the share still works, xattrs included (in the chroot the
// daemon reaches /proc only through a descriptor).
func TestSandboxModes(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	// virtiofsd's set and LINUX_IMMUTABLE; DAC_READ_SEARCH too for the
	// file handles of --inode-file-handles=prefer (not the default).
	plain := capMask(unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
		unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MKNOD, unix.CAP_SETFCAP)
	want := capMask(unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
		unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MKNOD, unix.CAP_SETFCAP, unix.CAP_DAC_READ_SEARCH)
	withAdmin := capMask(unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
		unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MKNOD, unix.CAP_SETFCAP, unix.CAP_DAC_READ_SEARCH, unix.CAP_SYS_ADMIN)
	// FUSE passthrough (the default on /dev/fuse as root) keeps
	// CAP_SYS_ADMIN in the namespace sandbox too.
	plainAdmin := capMask(unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
		unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MKNOD, unix.CAP_SETFCAP, unix.CAP_SYS_ADMIN)
	for _, tc := range []struct {
		sandbox, seccomp string
		handles          string
		caps             string
		seccompMode      string
		extra            []string
	}{
		{"namespace", "kill", "prefer", withAdmin, "2", nil},
		{"namespace", "kill", "never", plainAdmin, "2", nil},
		{"namespace", "kill", "never", plain, "2", []string{"--no-fuse-passthrough"}},
		{"namespace", "kill", "prefer", want, "2", []string{"--no-fuse-passthrough"}},
		{"chroot", "kill", "prefer", withAdmin, "2", nil},
		{"none", "none", "prefer", withAdmin, "0", nil},
		{"namespace", "log", "prefer", withAdmin, "2", nil},
	} {
		t.Run(strings.Join(append([]string{tc.sandbox, tc.seccomp, tc.handles}, tc.extra...), "-"), func(t *testing.T) {
			d, shared, mnt := startDaemon(t, bin, append([]string{"--sandbox", tc.sandbox, "--seccomp", tc.seccomp, "--xattr", "--inode-file-handles=" + tc.handles}, tc.extra...)...)
			if err := os.WriteFile(filepath.Join(shared, "host-file"), []byte("from the host"), 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(mnt, "host-file"))
			if err != nil || string(b) != "from the host" {
				t.Fatalf("read through the mount: %q, %v", b, err)
			}
			if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"host-file", "dir"} {
				if err := unix.Setxattr(filepath.Join(mnt, p), "user.k", []byte("v-"+p), 0); err != nil {
					t.Fatalf("setxattr %s: %v", p, err)
				}
				buf := make([]byte, 64)
				n, err := unix.Getxattr(filepath.Join(shared, p), "user.k", buf)
				if err != nil || string(buf[:n]) != "v-"+p {
					t.Fatalf("xattr on the host %s: %q, %v", p, buf[:max(n, 0)], err)
				}
			}
			if err := os.Symlink("host-file", filepath.Join(mnt, "link")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lsetxattr(filepath.Join(mnt, "link"), "trusted.k", []byte("v"), 0); err != unix.EPERM && err != nil {
				t.Fatalf("lsetxattr trusted.* on a symlink: %v", err)
			}

			pid := sandboxChild(t, mnt)
			root, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "root"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range root {
				names = append(names, e.Name())
			}
			switch tc.sandbox {
			case "namespace":
				if strings.Join(names, " ") != "proc self thread-self" {
					t.Errorf("root directory of the sandbox: %v, want proc self thread-self", names)
				}
				for _, ns := range []string{"mnt", "pid", "net", "ipc"} {
					mine, _ := os.Readlink("/proc/self/ns/" + ns)
					its, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", ns))
					if err != nil || its == mine {
						t.Errorf("%s namespace %s, ours %s (%v)", ns, its, mine, err)
					}
				}
			case "chroot":
				if !slices.Contains(names, "host-file") || slices.Contains(names, "proc") {
					t.Errorf("root directory in the chroot: %v, want the share's", names)
				}
			}
			if got := procStatus(t, pid, "CapEff"); got != tc.caps {
				t.Errorf("CapEff %s, want %s", got, tc.caps)
			}
			if got := procStatus(t, pid, "CapBnd"); tc.sandbox != "none" && got != tc.caps {
				t.Errorf("CapBnd %s, want %s", got, tc.caps)
			}
			if got := procStatus(t, pid, "Seccomp"); got != tc.seccompMode {
				t.Errorf("Seccomp %s, want %s", got, tc.seccompMode)
			}
			if tc.seccompMode == "2" && procStatus(t, pid, "NoNewPrivs") != "1" {
				t.Error("NoNewPrivs not set with a seccomp filter")
			}

			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := d.wait(t); code != 0 {
				t.Fatalf("exit status %d after SIGTERM\n%s", code, d.stderr)
			}
			waitGone(t, mnt)
			if mountedFS(t, mnt) != "" {
				t.Fatal("still mounted after SIGTERM")
			}
		})
	}
}

// TestSandboxUIDMap runs the namespace sandbox in a user namespace with
// --uid-map and --gid-map (written directly: the test runs as root): what
// the mount's root creates belongs to the mapped host ids, and a host file
// whose owner the map lacks shows as the overflow id.
func TestSandboxUIDMap(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	shared, mnt := t.TempDir(), t.TempDir()
	// The sandbox's root is host uid 300000: it must reach the share.
	if err := os.Chmod(filepath.Dir(shared), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(shared, 300000, 300000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "host-root"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startMounting(t, bin, mnt, "--shared-dir", shared, "--mountpoint", mnt,
		"--uid-map=:0:300000:65536:", "--gid-map=:0:300000:65536:")
	if err := os.WriteFile(filepath.Join(mnt, "made-by-root"), []byte("x"), 0o644); err != nil {
		t.Fatalf("create through the mount: %v\n%s", err, d.stderr)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(shared, "made-by-root"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 300000 || st.Gid != 300000 {
		t.Errorf("host owner of a file root created: %d:%d, want 300000:300000", st.Uid, st.Gid)
	}
	if err := unix.Stat(filepath.Join(mnt, "host-root"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("a root-owned host file shows as %d:%d through the mount, want the overflow id 65534", st.Uid, st.Gid)
	}
	pid := sandboxChild(t, mnt)
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "uid_map"))
	if err != nil || strings.Join(strings.Fields(string(b)), " ") != "0 300000 65536" {
		t.Errorf("uid_map of the sandbox %q, %v", b, err)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d\n%s", code, d.stderr)
	}
	waitGone(t, mnt)
}

// TestSandboxUnprivileged runs the daemon as a user without privileges, as
// a session's VMM would: the namespace sandbox puts it in a user namespace
// of its own, where it is root, and it serves vhost-user on its socket.
func TestSandboxUnprivileged(t *testing.T) {
	bin := buildDaemon(t)
	const uid = 4321
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, share, filepath.Dir(bin), bin} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(filepath.Dir(bin), 0o755)
	sock := filepath.Join(dir, "vfs.sock")
	cmd := exec.Command(bin, "--shared-dir", share, "--socket-path", sock, "--log-level", "debug")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	var err error
	for i := 0; ; i++ {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if i > 200 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("connect: %v\n%s", err, stderr)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if f := getFeatures(t, c); f&(1<<32) == 0 {
		t.Errorf("features %#x lack VERSION_1", f)
	}
	c.Close()
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit status %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "sandbox=namespace") {
		t.Errorf("not sandboxed:\n%s", stderr)
	}
}

// TestSandboxNewuidmap runs the daemon unprivileged with --uid-map and
// --gid-map ranges beyond the user's own id, which only the setuid
// newuidmap and newgidmap may write: the sandbox's maps are the ranges
// given and it serves vhost-user. scripts/deps.sh creates the user
// govirtiofs-test with subordinate ids 300000-365535.
func TestSandboxNewuidmap(t *testing.T) {
	u, err := user.Lookup("govirtiofs-test")
	if err != nil {
		testenv.Missing(t, "user govirtiofs-test (scripts/deps.sh creates it): %v", err)
	}
	if _, err := exec.LookPath("newuidmap"); err != nil {
		testenv.Missing(t, "newuidmap (Debian package uidmap)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	bin := buildDaemon(t)
	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, share, filepath.Dir(bin), bin} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(bin)), 0o755)
	sock := filepath.Join(dir, "vfs.sock")
	cmd := exec.Command(bin, "--shared-dir", share, "--socket-path", sock,
		fmt.Sprintf("--uid-map=:0:%d:1:", uid), "--uid-map=:1:300000:65535:",
		fmt.Sprintf("--gid-map=:0:%d:1:", gid), "--gid-map=:1:300000:65535:")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	for i := 0; ; i++ {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if i > 200 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("connect: %v\n%s", err, stderr)
		}
		time.Sleep(25 * time.Millisecond)
	}
	defer c.Close()
	getFeatures(t, c)
	var child int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && parentPID(pid) == cmd.Process.Pid {
			child = pid
		}
	}
	if child == 0 {
		t.Fatal("no sandboxed child")
	}
	for _, m := range []struct{ file, want string }{
		{"uid_map", fmt.Sprintf("0 %d 1 1 300000 65535", uid)},
		{"gid_map", fmt.Sprintf("0 %d 1 1 300000 65535", gid)},
	} {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(child), m.file))
		if got := strings.Join(strings.Fields(string(b)), " "); err != nil || got != m.want {
			t.Errorf("%s %q, want %q (%v)", m.file, got, m.want, err)
		}
	}
	c.Close()
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit status %d\n%s", code, stderr)
	}
}
