package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/govirtiofs/govirtiofs/internal/sandbox"
	"github.com/govirtiofs/govirtiofs/internal/seccomp"
)

// Profiling for developers and benchmarks: with GOVIRTIOFSD_CPUPROFILE set
// to a file name the daemon writes a pprof CPU profile of its whole life
// there, and with GOVIRTIOFSD_MEMPROFILE an allocation profile (every
// allocation since start, and what is live) when it exits. The files are
// created before any sandbox is entered. The profiler's timers are
// syscalls the seccomp filter does not allow, and the namespace sandbox
// serves from a child process, so profiling requires --sandbox none and
// --seccomp none; startProfiles refuses anything else.
const (
	cpuProfileEnv = "GOVIRTIOFSD_CPUPROFILE"
	memProfileEnv = "GOVIRTIOFSD_MEMPROFILE"
)

// startProfiles starts what the environment asks for and returns the
// function that finishes the profiles, to be called when serving ends.
func startProfiles(cfg *config) (func(), error) {
	cpuPath, memPath := os.Getenv(cpuProfileEnv), os.Getenv(memProfileEnv)
	if cpuPath == "" && memPath == "" {
		return func() {}, nil
	}
	if cfg.sandbox != sandbox.None || cfg.seccomp != seccomp.None {
		return nil, fmt.Errorf("%s and %s need --sandbox none and --seccomp none", cpuProfileEnv, memProfileEnv)
	}
	var cpu, mem *os.File
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
		}
		cpu = f
	}
	if memPath != "" {
		f, err := os.Create(memPath)
		if err != nil {
			if cpu != nil {
				pprof.StopCPUProfile()
				cpu.Close()
			}
			return nil, fmt.Errorf("%s: %w", memProfileEnv, err)
		}
		mem = f
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		if mem != nil {
			runtime.GC() // the live heap as of now
			pprof.Lookup("allocs").WriteTo(mem, 0)
			mem.Close()
		}
	}, nil
}
