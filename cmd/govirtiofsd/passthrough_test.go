package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// TestDaemonFUSEPassthrough runs the daemon over /dev/fuse in each sandbox
// and with the options that turn FUSE passthrough off, and counts the READ
// and WRITE requests its debug log shows: none where passthrough applies
// (the tests run as root on a kernel that has it), some where it does not;
// the data is right either way, including after the host wrote the file.
func TestDaemonFUSEPassthrough(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	reqRE := regexp.MustCompile(`opcode=(READ|WRITE) `)
	for _, tc := range []struct {
		name        string
		args        []string
		passthrough bool
		log         string // a line the log must have
	}{
		{name: "namespace", passthrough: true},
		{name: "chroot", args: []string{"--sandbox=chroot"}, passthrough: true},
		{name: "none", args: []string{"--sandbox=none", "--seccomp=none"}, passthrough: true},
		{name: "cache always", args: []string{"--cache=always"}, passthrough: true},
		{name: "off", args: []string{"--no-fuse-passthrough"}},
		{name: "cache never", args: []string{"--cache=never"}},
		{name: "writeback", args: []string{"--writeback"}},
		{name: "no sys_admin", args: []string{"--modcaps=-sys_admin"}, log: "FUSE passthrough is off"},
		{name: "user namespace", args: []string{"--uid-map=:0:300000:65536:", "--gid-map=:0:300000:65536:"}, log: "FUSE passthrough is off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared, mnt := t.TempDir(), t.TempDir()
			if tc.name == "user namespace" {
				// The sandbox's root is host uid 300000: it must
				// reach the share.
				if err := os.Chmod(filepath.Dir(shared), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(shared, 300000, 300000); err != nil {
					t.Fatal(err)
				}
			}
			d := startMounting(t, bin, mnt, append([]string{"--shared-dir", shared, "--mountpoint", mnt, "--log-level=debug"}, tc.args...)...)
			data := bytes.Repeat([]byte("passthrough "), 200_000)
			if err := os.WriteFile(filepath.Join(mnt, "f"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(shared, "f")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("host sees %d bytes (%v), want %d", len(got), err, len(data))
			}
			if got, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the mount reads %d bytes (%v), want %d", len(got), err, len(data))
			}
			if err := os.WriteFile(filepath.Join(shared, "f"), data[:1000], 0o644); err != nil {
				t.Fatal(err)
			}
			// The writeback cache trusts the guest's size, so a file
			// the host shrinks behind it is not seen shrunk at once.
			if got, err := os.ReadFile(filepath.Join(mnt, "f")); tc.name != "writeback" && (err != nil || !bytes.Equal(got, data[:1000])) {
				t.Fatalf("after the host rewrote it the mount reads %d bytes (%v), want 1000", len(got), err)
			}

			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := d.wait(t); code != 0 {
				t.Fatalf("exit status %d\n%s", code, d.stderr)
			}
			log := d.stderr.String()
			n := len(reqRE.FindAllString(log, -1))
			if tc.passthrough && n != 0 {
				t.Errorf("%d READ and WRITE requests reached the daemon with passthrough\n%s", n, log)
			}
			if !tc.passthrough && n == 0 {
				t.Errorf("no READ or WRITE request reached the daemon without passthrough\n%s", log)
			}
			if tc.log != "" && strings.Count(log, tc.log) != 1 {
				t.Errorf("the log does not say %q once\n%s", tc.log, log)
			}
		})
	}
}
