package main

import (
	"encoding/binary"
	"errors"
	"github.com/govirtiofs/govirtiofs/internal/testenv"
	"golang.org/x/sys/unix"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// getFeatures sends VHOST_USER_GET_FEATURES on c and returns the feature
// bits of the reply.
func getFeatures(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 12)
	binary.LittleEndian.PutUint32(hdr[0:], 1) // GET_FEATURES
	binary.LittleEndian.PutUint32(hdr[4:], 1) // version 1
	if _, err := c.Write(hdr); err != nil {
		t.Fatalf("send GET_FEATURES: %v", err)
	}
	reply := make([]byte, 20)
	if _, err := readFull(c, reply); err != nil {
		t.Fatalf("read GET_FEATURES reply: %v", err)
	}
	if req, flags, size := binary.LittleEndian.Uint32(reply[0:]), binary.LittleEndian.Uint32(reply[4:]), binary.LittleEndian.Uint32(reply[8:]); req != 1 || flags&4 == 0 || size != 8 {
		t.Fatalf("reply header: request %d flags %#x size %d", req, flags, size)
	}
	return binary.LittleEndian.Uint64(reply[12:])
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// waitExit waits for cmd and returns its exit status.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the daemon did not exit after the front-end disconnected")
		return -1
	}
}

// TestDaemonVhostUserSocket runs the daemon as a vhost-user backend on
// --socket-path (replacing a stale socket file) and on --fd (a listening
// socket passed as libvirt does), sharing a directory and an overlay,
// speaks the first message of the protocol to it, and checks that it exits
// 0 when the front-end disconnects and removes its socket.
func TestDaemonVhostUserSocket(t *testing.T) {
	bin := buildDaemon(t)
	share := t.TempDir()
	const versionBit = 1 << 32       // VIRTIO_F_VERSION_1
	const protocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES

	l1, l2, upper, work := overlayLayers(t)
	for _, name := range []string{"shared-dir", "overlay"} {
		src := []string{"--shared-dir", share}
		if name == "overlay" {
			src = []string{"--overlay", "lowerdir=" + l1 + ":" + l2 + ",upperdir=" + upper + ",workdir=" + work}
		}
		t.Run(name+" socket-path", func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "vfs.sock")
			// A stale socket left by a killed daemon is replaced.
			stale, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			stale.(*net.UnixListener).SetUnlinkOnClose(false)
			stale.Close()
			cmd := exec.Command(bin, append(src, "--socket-path", sock, "--log-level", "warn")...)
			cmd.Stderr = os.Stderr
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
					t.Fatalf("connect: %v", err)
				}
				time.Sleep(25 * time.Millisecond)
			}
			if f := getFeatures(t, c); f&versionBit == 0 || f&protocolFeatures == 0 {
				t.Errorf("features %#x lack VERSION_1 or PROTOCOL_FEATURES", f)
			}
			c.Close()
			if code := waitExit(t, cmd); code != 0 {
				t.Fatalf("exit status %d after disconnect, want 0", code)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("socket %s left behind: %v", sock, err)
			}
		})

		t.Run(name+" fd", func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "libvirt.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			f, err := l.(*net.UnixListener).File()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, append(src, "--fd=3", "--log-level", "warn")...)
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			c, err := net.Dial("unix", sock)
			if err != nil {
				cmd.Process.Kill()
				t.Fatal(err)
			}
			if f := getFeatures(t, c); f&versionBit == 0 {
				t.Errorf("features %#x lack VERSION_1", f)
			}
			c.Close()
			if code := waitExit(t, cmd); code != 0 {
				t.Fatalf("exit status %d after disconnect, want 0", code)
			}
		})
	}

	t.Run("fd not a socket", func(t *testing.T) {
		f, err := os.Open(share)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(bin, "--shared-dir", share, "--fd=3")
		cmd.ExtraFiles = []*os.File{f}
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("exit status %d, want 1; output %s", cmd.ProcessState.ExitCode(), out)
		}
	})
}

// TestDaemonSocketGroup runs the daemon with --socket-group as virtiofsd
// runs it: the socket belongs to the group and only owner and group may
// connect; SOCK.pid holds the daemon's pid and keeps a second daemon off
// the same socket; both go away when the daemon exits.
func TestDaemonSocketGroup(t *testing.T) {
	bin := buildDaemon(t)
	grp, err := user.LookupGroup("nogroup")
	if err != nil {
		testenv.Missing(t, "group nogroup: %v", err)
	}
	gid, _ := strconv.Atoi(grp.Gid)
	dir := t.TempDir()
	sock := filepath.Join(dir, "vfs.sock")
	cmd := exec.Command(bin, "--shared-dir", t.TempDir(), "--socket-path", sock, "--socket-group", "nogroup", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var c net.Conn
	for i := 0; ; i++ {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if i > 200 {
			t.Fatalf("connect: %v", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Gid) != gid || st.Mode&0o777 != 0o770 {
		t.Errorf("socket gid %d mode %#o, want gid %d (nogroup) and 0770", st.Gid, st.Mode&0o777, gid)
	}
	pid, err := os.ReadFile(sock + ".pid")
	if err != nil || strings.TrimSpace(string(pid)) == "" {
		t.Errorf("pid file: %q, %v", pid, err)
	}
	// A second daemon on the same socket path refuses to start.
	out, err := exec.Command(bin, "--shared-dir", t.TempDir(), "--socket-path", sock, "--sandbox", "none").CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "another daemon serves this socket") {
		t.Errorf("second daemon: exit %d, %q; want 1 and the pid file's message", code, out)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the second daemon removed the first one's socket: %v", err)
	}
	c.Close()
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	for _, p := range []string{sock, sock + ".pid"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}

	out, err = exec.Command(bin, "--shared-dir", dir, "--socket-path", sock, "--socket-group", "no-such-group-here").CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "--socket-group") {
		t.Errorf("unknown group: exit %d, %q", code, out)
	}
}

// exitCode is the exit status of a finished command's error.
func exitCode(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestDaemonSyslog runs Kata's command line (--syslog, --fd=3) with a
// private /dev whose /dev/log is the test's datagram socket: the lines
// arrive in syslog format at the right priorities, also from the
// sandboxed, seccomp-confined child after it pivoted away from /dev/log.
func TestDaemonSyslog(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	logSock := filepath.Join(dir, "log")
	lc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: logSock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lines := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := lc.Read(buf)
			if err != nil {
				close(lines)
				return
			}
			lines <- string(buf[:n])
		}
	}()
	vsock := filepath.Join(dir, "kata.sock")
	l, err := net.Listen("unix", vsock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	realDev := filepath.Join(dir, "realdev")
	if err := os.Mkdir(realDev, 0o755); err != nil {
		t.Fatal(err)
	}
	// A private /dev: the real nodes the daemon needs, and our /dev/log.
	script := `set -e
mount --make-rprivate /
mount --bind /dev "$REALDEV"
mount -t tmpfs tmpfs /dev
for n in null zero urandom; do touch /dev/$n; mount --bind "$REALDEV/$n" /dev/$n; done
if [ -n "$LOGSOCK" ]; then touch /dev/log; mount --bind "$LOGSOCK" /dev/log; fi
exec "$@"`
	cmd := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", bin,
		"--syslog", "--cache=auto", "--shared-dir="+t.TempDir(), "--fd=3", "--thread-pool-size=1", "--announce-submounts", "--inode-file-handles=prefer", "--log-level=debug")
	cmd.Env = append(os.Environ(), "REALDEV="+realDev, "LOGSOCK="+logSock)
	cmd.ExtraFiles = []*os.File{f}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c, err := net.Dial("unix", vsock)
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	getFeatures(t, c)
	c.Close()
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit status %d, stderr %q", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q, want everything in syslog", stderr.String())
	}

	// Without a syslog daemon, the log goes to stderr and the daemon
	// serves all the same (as virtiofsd does).
	l2, err := net.Listen("unix", filepath.Join(dir, "kata2.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	f2, err := l2.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd2 := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", bin, "--syslog", "--shared-dir="+t.TempDir(), "--fd=3")
	cmd2.Env = append(os.Environ(), "REALDEV="+realDev, "LOGSOCK=")
	cmd2.ExtraFiles = []*os.File{f2}
	var stderr2 strings.Builder
	cmd2.Stderr = &stderr2
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	f2.Close()
	c2, err := net.Dial("unix", filepath.Join(dir, "kata2.sock"))
	if err != nil {
		cmd2.Process.Kill()
		t.Fatal(err)
	}
	getFeatures(t, c2)
	c2.Close()
	if code := waitExit(t, cmd2); code != 0 || !strings.Contains(stderr2.String(), "logging to stderr") || !strings.Contains(stderr2.String(), "Waiting for vhost-user socket connection") {
		t.Errorf("without /dev/log: exit %d, stderr %q; want 0 and the log on stderr", code, stderr2.String())
	}

	var got []string
	timeout := time.After(5 * time.Second)
	for done := false; !done; {
		select {
		case line := <-lines:
			got = append(got, line)
			done = strings.Contains(line, "front-end disconnected")
		case <-timeout:
			done = true
		}
	}
	want := map[string]string{ // message → priority (daemon facility)
		"Waiting for vhost-user socket connection": "<30>",
		"front-end disconnected":                   "<30>",
		"GET_FEATURES":                             "<31>",
	}
	for msg, pri := range want {
		found := false
		for _, line := range got {
			if strings.Contains(line, msg) {
				found = true
				if !strings.HasPrefix(line, pri) || !strings.Contains(line, " govirtiofsd[") {
					t.Errorf("syslog line %q: want priority %s and tag govirtiofsd[PID]", line, pri)
				}
			}
		}
		if !found {
			t.Errorf("no syslog line with %q in %q", msg, got)
		}
	}
}
