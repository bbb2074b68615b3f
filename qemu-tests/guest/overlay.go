package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/govirtiofs/govirtiofs/qemu-tests/internal/ovlcase"
	"golang.org/x/sys/unix"
)

// runOverlay runs the overlay case on mnt: every step of ovlcase.Steps as
// the check overlay_<step>, then overlay_manifest, which empties the
// guest's caches, lists the union and leaves the manifest in
// mnt/ovlcase.ManifestPath (announced as GUESTSUM) for the host to compare
// with kernel overlayfs's view of the same layers.
func runOverlay(mnt string) {
	// Modes as the steps give them, on the host's reference run too.
	unix.Umask(0)
	var objects atomic.Int64
	var current atomic.Value
	current.Store("")
	done := make(chan struct{})
	defer close(done)
	go func() {
		// The steps that untar or list thousands of objects print nothing
		// for a while; guest.sh's watchdog wants signs of life.
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Printf("GUESTINFO overlay: %s: %d objects untarred or listed so far\n", current.Load(), objects.Load())
			}
		}
	}()
	e := &ovlcase.Env{Root: mnt, Tick: func() { objects.Add(1) }}
	fmt.Printf("GUESTINFO guesttest -overlay cpus=%d steps=%d\n", runtime.NumCPU(), len(ovlcase.Steps))
	for _, st := range ovlcase.Steps {
		current.Store(st.Name)
		runCheck(nil, check{"overlay_" + st.Name, func(*env) error { return ovlcase.RunStep(e, st) }})
	}
	current.Store("manifest")
	runCheck(nil, check{"overlay_manifest", func(*env) error { return overlayManifest(mnt, e.Tick) }})
}

// overlayManifest lists the union with cold caches and writes the
// manifest into it.
func overlayManifest(mnt string, tick func()) error {
	unix.Sync()
	// Evict dentries, inodes and pages: the listing then asks the daemon
	// for everything.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop_caches: %v", err)
	}
	start := time.Now()
	m, walkErr := ovlcase.Walk(mnt, ovlcase.WalkOptions{
		Skip:    func(rel string) bool { return rel == ovlcase.ManifestDir },
		Workers: 2 * runtime.NumCPU(),
		Tick:    tick,
	})
	fmt.Printf("GUESTINFO overlay: listed %d objects in %.1fs\n", len(m), time.Since(start).Seconds())
	var buf bytes.Buffer
	if err := m.Encode(&buf); err != nil {
		return err
	}
	// Written even when the listing failed somewhere: the host's diff
	// then shows what is missing.
	p := filepath.Join(mnt, ovlcase.ManifestPath)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return errors.Join(walkErr, fmt.Errorf("writing %s: %s", ovlcase.ManifestPath, ovlcase.ErrText(err)))
	}
	sum := sha256.Sum256(buf.Bytes())
	fmt.Printf("GUESTSUM %s %s\n", ovlcase.ManifestPath, hex.EncodeToString(sum[:]))
	if walkErr != nil {
		return fmt.Errorf("listing the union: %v", walkErr)
	}
	return nil
}
