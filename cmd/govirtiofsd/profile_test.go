package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/govirtiofs/govirtiofs/internal/testenv"
)

// TestDaemonProfiles serves a mount with both profiles asked for, and
// checks that they are pprof files (gzip) once the daemon has exited; and
// that the sandboxes, which would break the profiler, are refused.
func TestDaemonProfiles(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildDaemon(t)
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	t.Setenv(cpuProfileEnv, cpu)
	t.Setenv(memProfileEnv, mem)

	d, _, mnt := startDaemon(t, bin, "--sandbox", "none", "--seccomp", "none")
	for i := range 200 {
		name := filepath.Join(mnt, "f"+strings.Repeat("x", i%7))
		if err := os.WriteFile(name, bytes.Repeat([]byte{'a'}, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit status %d, want 0\n%s", code, d.stderr)
	}
	for _, p := range []string{cpu, mem} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// A pprof profile is a gzipped protocol buffer.
		if len(b) < 20 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: %d bytes, not a gzipped profile", p, len(b))
		}
	}

	for _, args := range [][]string{
		{"--seccomp", "none"}, // the namespace sandbox
		{"--sandbox", "none"}, // seccomp kill
		{"--sandbox", "chroot", "--seccomp", "none"},
	} {
		mnt := t.TempDir()
		cmd := exec.Command(bin, append([]string{"--shared-dir", t.TempDir(), "--mountpoint", mnt}, args...)...)
		out, err := cmd.CombinedOutput()
		if code := exitCode(err); code != 1 || !strings.Contains(string(out), "need --sandbox none and --seccomp none") {
			t.Errorf("%q: exit %d, output %q; want 1 and the profiling refusal", args, code, out)
		}
		if fs := mountedFS(t, mnt); fs != "" {
			t.Errorf("%q: %s mounted", args, mnt)
		}
	}
}
