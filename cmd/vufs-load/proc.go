package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// procStats are a daemon process tree's resource figures.
type procStats struct {
	cpuSecs   float64 // utime+stime of every process in the tree
	rssAnonKB uint64  // RssAnon summed over the tree
	procs     int
}

// statLine parses /proc/PID/stat: ppid, utime+stime in ticks.
func statLine(pid int) (ppid int, ticks uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return ppid, ut + st, nil
}

// rssAnon reads RssAnon (kB) from /proc/PID/status.
func rssAnon(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no RssAnon", pid)
}

// treeStats sums CPU time and RssAnon over pid and all its descendants
// (govirtiofsd forks a sandboxed child). pid 0 gives zeros.
func treeStats(pid int) (procStats, error) {
	if pid <= 0 {
		return procStats{}, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return procStats{}, err
	}
	parent := map[int]int{}
	ticks := map[int]uint64{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pp, t, err := statLine(p)
		if err != nil {
			continue // gone
		}
		parent[p], ticks[p] = pp, t
	}
	if _, ok := parent[pid]; !ok {
		return procStats{}, fmt.Errorf("daemon pid %d is not running", pid)
	}
	var st procStats
	for p := range parent {
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				st.cpuSecs += float64(ticks[p]) / clockTicks
				if kb, err := rssAnon(p); err == nil {
					st.rssAnonKB += kb
				}
				st.procs++
				break
			}
			if _, ok := parent[q]; !ok {
				break
			}
		}
	}
	return st, nil
}
