package main

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
