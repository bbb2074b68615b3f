package qemutests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestQEMUStream boots a guest (by default the 6.12 pair; QEMUTEST_STREAM_PAIRS
// names others, whose kernel needs virtio_console built in) with no
// vhost-user-fs device: a virtio-serial port whose host end QEMU connects
// to `govirtiofsd --listen unix:SOCK`, and in the guest govirtiofs-guest
// relaying between /dev/fuse and /dev/virtio-ports/govirtiofs (the stream
// transport, as Firecracker users run it over vsock). The guest runs the
// same checks and conformance suite as TestQEMU on that mount, the host
// verifies what they left, and after the unmount the relay must exit 0 and
// the daemon, stopped with SIGTERM once QEMU is gone, too.
func TestQEMUStream(t *testing.T) {
	if testing.Short() && !ciMode() {
		t.Skip("QEMU guests take minutes; skipped under -short")
	}
	// Every request crosses QEMU's main loop twice and wakes the relay in
	// the guest: under TCG the stream runs several times slower than
	// vhost-user-fs (readdir_guest_5000 takes about a minute, not ten
	// seconds), so the watchdog and the run's limit are wider.
	for key, def := range map[string]string{"QEMUTEST_WATCHDOG": "300", "QEMUTEST_TIMEOUT": "1500"} {
		if os.Getenv(key) == "" {
			t.Setenv(key, def)
		}
	}
	setup := loadSetup(t)
	daemon := daemonFromEnv(t, setup)
	if daemon.name != "govirtiofsd" {
		t.Skipf("the stream transport is govirtiofsd's own; QEMUTEST_DAEMON=%s has none", daemon.name)
	}
	// The two big-directory tests take most of the suite's time (54 of
	// 64 s over vhost-user-fs, ten times that over the serial stream);
	// they test directory listing, which TestQEMU covers in the guest and
	// internal/posixtest's TestStreamPassthrough over this transport.
	daemon.posixSkip = map[string]string{
		"Readdir10000":      "over the serial stream it takes minutes; TestQEMU and TestStreamPassthrough run it",
		"ReaddirConcurrent": "over the serial stream it takes minutes; TestQEMU and TestStreamPassthrough run it",
	}
	gov := daemon.command[0]
	daemon.argv = func(socket, dir, _ string) []string {
		return append([]string{gov, "--listen", "unix:" + socket, "--shared-dir", dir, "--xattr", "--killpriv-v2"},
			strings.Fields(os.Getenv("QEMUTEST_DAEMON_ARGS"))...)
	}
	relay := filepath.Join(t.TempDir(), "govirtiofs-guest")
	goBuild(t, "the guest relay", "build", "-trimpath", "-o", relay, "../cmd/govirtiofs-guest")
	relayBin, err := os.ReadFile(relay)
	if err != nil {
		t.Fatal(err)
	}
	plan := planGuest(t, daemon)
	plan.files = append(plan.files, cpioFile{name: "bin/govirtiofs-guest", mode: 0o100755, data: relayBin})
	// The request-queue check is virtio-fs's.
	plan.checks = slices.DeleteFunc(plan.checks, func(c string) bool { return c == "request_queues" })

	logRoot := logRootDir(t)
	var summary []string
	for _, p := range selectPairs(t, os.Getenv("QEMUTEST_STREAM_PAIRS"), streamDefaultPairs(t)) {
		p.queues = 1
		p.name = "stream-" + p.name
		t.Run(p.name, func(t *testing.T) {
			summary = append(summary, runPairWith(t, setup, daemon, p, plan, logRoot, func(g *guestRun) {
				g.serialPort = "govirtiofs"
				if o := os.Getenv("QEMUTEST_STREAM_OPTS"); o != "" {
					g.kernelArgs = "gvt.streamopts=" + o
				}
			}))
		})
	}
	for _, s := range summary {
		t.Log(s)
	}
}

// streamDefaultPairs is the 6.12 pair: Debian 12's 6.1 kernel has
// virtio_console as a module the base initramfs leaves out.
func streamDefaultPairs(t *testing.T) []pair {
	for _, p := range pairs {
		if p.short == "6.12" {
			return []pair{p}
		}
	}
	t.Fatal("no 6.12 pair")
	return nil
}
