package qemutests

import (
	"bytes"
	"maps"
	"strings"
	"testing"
	"time"
)

// These tests check the harness's own parsing; they need no QEMU.

func TestQueueInterrupts(t *testing.T) {
	info := []string{
		"GUESTINFO interrupts per virtqueue:",
		"GUESTINFO    24:          0          0          0          0  PCI-MSIX-0000:00:04.0   0-edge      virtio0-config",
		"GUESTINFO    25:          0          0          0      14862  PCI-MSIX-0000:00:04.0   1-edge      virtio0-hiprio",
		"GUESTINFO    26:        100          0          0          0  PCI-MSIX-0000:00:04.0   2-edge      virtio0-requests.0",
		"GUESTINFO    27:          0         20          5          0  PCI-MSIX-0000:00:04.0   3-edge      virtio0-requests.1",
		"GUESTINFO    28:          0          0          0          0  PCI-MSIX-0000:00:04.0   4-edge      virtio0-requests.2",
		"GUESTINFO    29:          0          0          0          7  PCI-MSIX-0000:00:04.0   5-edge      virtio0-requests.3",
	}
	got := queueInterrupts(info)
	want := map[int]int{0: 100, 1: 25, 2: 0, 3: 7}
	if !maps.Equal(got, want) {
		t.Fatalf("queueInterrupts = %v, want %v", got, want)
	}
	if err := queueSpread(got, 4); err != nil {
		t.Errorf("queueSpread of three used queues out of four: %v", err)
	}
	if err := queueSpread(map[int]int{0: 9, 1: 0, 2: 0, 3: 0}, 4); err == nil {
		t.Error("queueSpread accepted one used queue out of four")
	}
	if err := queueSpread(map[int]int{0: 9}, 4); err == nil {
		t.Error("queueSpread accepted one queue listed where four were asked for")
	}
}

func TestConsume(t *testing.T) {
	r := newBootResult()
	lines := []string{
		"Booting from ROM..GUESTBOOT 6.1.0-48-amd64 cpus=1 uptime=2.13",
		"GUESTTEST mount PASS",
		"[    3.1] some kernel message GUESTTEST xattr FAIL setxattr: operation not supported",
		"GUESTTEST xattr PASS 0.01s",
		"GUESTSUM out/big-guest.bin abc123",
		"GUESTPOSIX === RUN   TestMountedDir/Chmod",
		"GUESTPOSIX     attr.go:12: mode is 0644, want 0755",
		"GUESTPOSIX === RUN   TestMountedDir/Chown",
		"GUESTPOSIX --- FAIL: TestMountedDir (1.00s)",
		"GUESTPOSIX     --- FAIL: TestMountedDir/Chmod (0.01s)",
		"GUESTPOSIX     --- PASS: TestMountedDir/Chown (0.01s)",
		"GUESTDONE",
	}
	for i, l := range lines {
		r.consume(l, time.Duration(i)*time.Second)
	}
	if r.boot != 0 || !r.done || r.verdict != 11*time.Second {
		t.Errorf("boot %v done %v verdict %v", r.boot, r.done, r.verdict)
	}
	if v := r.checks["mount"]; !v.pass || r.mounted != time.Second {
		t.Errorf("mount: %+v at %v", v, r.mounted)
	}
	if v := r.checks["xattr"]; v.pass || v.detail != "setxattr: operation not supported" {
		t.Errorf("xattr reported FAIL then PASS: got %+v, want the failure kept", v)
	}
	if r.sums["out/big-guest.bin"] != "abc123" {
		t.Errorf("sums %v", r.sums)
	}
	if r.posix["Chmod"].result != "FAIL" || r.posix["Chown"].result != "PASS" || len(r.posixOrder) != 2 {
		t.Errorf("posix results %v order %v", r.posix, r.posixOrder)
	}
	if l := r.posixLog["Chmod"]; len(l) != 1 || l[0] != "attr.go:12: mode is 0644, want 0755" {
		t.Errorf("Chmod's log %q", l)
	}
	if got := quoteGuest("GUESTPOSIX     --- FAIL: TestMountedDir/Chmod (0.01s)"); strings.Contains(got, "--- FAIL") {
		t.Errorf("quoteGuest left a go test marker: %q", got)
	}
}

func TestWriteNewc(t *testing.T) {
	var b bytes.Buffer
	if err := writeNewc(&b, []cpioFile{{name: "init", mode: 0o100755, data: []byte("#!/bin/sh\n")}}); err != nil {
		t.Fatal(err)
	}
	out := b.Bytes()
	if len(out)%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", len(out))
	}
	if !bytes.HasPrefix(out, []byte("070701")) || !bytes.Contains(out, []byte("init\x00")) || !bytes.Contains(out, []byte("TRAILER!!!\x00")) {
		t.Errorf("archive lacks the newc magic, the name or the trailer: %q", out)
	}
	// Header of the first entry: mode field (second) and file size (seventh).
	if got := string(out[14:22]); got != "000081ed" {
		t.Errorf("mode field %q, want 000081ed", got)
	}
	if got := string(out[54:62]); got != "0000000a" {
		t.Errorf("size field %q, want 0000000a", got)
	}
}
