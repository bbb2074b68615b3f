package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// missingBinary returns the first absolute path among argv's words (other
// than the placeholders) that does not exist, or "".
func missingBinary(argv []string) string {
	for _, a := range argv {
		// --flag=/path forms too.
		if _, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(v, "/") {
			a = v
		}
		if !strings.HasPrefix(a, "/") || strings.Contains(a, "{") {
			continue
		}
		if _, err := os.Stat(a); err != nil {
			return a
		}
	}
	if !strings.HasPrefix(argv[0], "/") {
		if _, err := exec.LookPath(argv[0]); err != nil {
			return argv[0]
		}
	}
	return ""
}

// daemonProc is a started daemon.
type daemonProc struct {
	cmd    *exec.Cmd
	exited chan error
}

// startDaemon starts d on dir with its socket at sock and waits until the
// socket exists.
func startDaemon(d daemonSpec, dir, sock, logPath string) (*daemonProc, error) {
	argv := make([]string, len(d.argv))
	for i, a := range d.argv {
		argv[i] = strings.NewReplacer("{dir}", dir, "{sock}", sock).Replace(a)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &daemonProc{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			// Give it a moment to listen(2) after bind(2).
			time.Sleep(50 * time.Millisecond)
			return p, nil
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return nil, fmt.Errorf("exited before making its socket (%v); see %s", err, logPath)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("no socket %s within 15 s; see %s", sock, logPath)
		}
	}
}

// stop waits briefly for the daemon to exit on its own (it does when the
// front-end disconnects), then sends SIGTERM and at last SIGKILL, to the
// daemon and its process group.
func (p *daemonProc) stop() {
	pid := p.cmd.Process.Pid
	for _, sig := range []syscall.Signal{0, syscall.SIGTERM, syscall.SIGKILL} {
		if sig != 0 {
			syscall.Kill(pid, sig)
			syscall.Kill(-pid, sig)
		}
		select {
		case err := <-p.exited:
			p.exited <- err
			return
		case <-time.After(3 * time.Second):
		}
	}
}

// compareDaemons is mode 2: per round, per daemon in turn, per queue
// count, a fresh shared directory and daemon, and every mix.
func compareDaemons(c *config) ([]row, error) {
	if err := os.MkdirAll(c.dirBase, 0o755); err != nil {
		return nil, err
	}
	var rows []row
	var errs []error
	for round := 1; round <= c.rounds; round++ {
		for _, d := range c.daemons {
			for _, q := range c.queues {
				if m := missingBinary(d.argv); m != "" {
					rows = append(rows, row{daemon: d.name, round: round, queues: q, status: "missing"})
					if c.progress != nil {
						fmt.Fprintf(c.progress, "%s: %s is missing\n", d.name, m)
					}
					continue
				}
				r, err := c.oneDaemonRun(d, round, q)
				rows = append(rows, r...)
				if err != nil {
					errs = append(errs, err)
					short := err.Error()
					if len(short) > 100 {
						short = short[:100] + "…"
					}
					rows = append(rows, row{daemon: d.name, round: round, queues: q, status: "failed: " + short})
					if c.progress != nil {
						fmt.Fprintf(c.progress, "%s round %d q=%d: %v\n", d.name, round, q, err)
					}
				}
			}
		}
	}
	return rows, errors.Join(errs...)
}

func (c *config) oneDaemonRun(d daemonSpec, round, q int) ([]row, error) {
	base := filepath.Join(c.dirBase, fmt.Sprintf("r%d-%s-q%d", round, d.name, q))
	if err := os.RemoveAll(base); err != nil {
		return nil, err
	}
	dir, sock := filepath.Join(base, "share"), filepath.Join(base, "sock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := prepareTree(dir); err != nil {
		return nil, err
	}
	p, err := startDaemon(d, dir, sock, filepath.Join(base, "daemon.log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	defer p.stop()
	rows, err := runSession(c, sock, p.cmd.Process.Pid, q, d.name, round)
	if err == nil {
		// Keep the directory only when something failed.
		p.stop()
		os.RemoveAll(base)
	}
	return rows, err
}

// formatTable renders rows as markdown: medians over rounds with min–max,
// then the ratio rows and the queue-scaling line.
func formatTable(c *config, rows []row) string {
	type key struct {
		mix    string
		queues int
		daemon string
	}
	groups := map[key][]row{}
	var statuses = map[key]string{}
	var daemons []string
	for _, r := range rows {
		if !slices.Contains(daemons, r.daemon) {
			daemons = append(daemons, r.daemon)
		}
		if r.status != "" {
			for _, m := range c.mixes {
				k := key{m, r.queues, r.daemon}
				if _, ok := statuses[k]; !ok && len(groups[k]) == 0 {
					statuses[k] = r.status
				}
			}
			continue
		}
		k := key{r.res.mix, r.queues, r.daemon}
		groups[k] = append(groups[k], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "threads %d, depth %d, %v per mix after %v warm-up, %d round(s); ops = FUSE requests answered\n\n",
		c.threads, c.depth, c.dur, c.warmup, c.rounds)
	b.WriteString("| mix | queues | daemon | ops/s median (min–max) | p50 µs | p99 µs | p99.9 µs | CPU s/1000 ops median (min–max) | RssAnon MiB | note |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	med := func(rs []row, f func(result) float64) (m, lo, hi float64) {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r.res)
		}
		sort.Float64s(v)
		n := len(v)
		if n%2 == 1 {
			m = v[n/2]
		} else {
			m = (v[n/2-1] + v[n/2]) / 2
		}
		return m, v[0], v[n-1]
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	medOps := map[key]float64{}
	medCPU := map[key]float64{}
	for _, m := range c.mixes {
		for _, q := range c.queues {
			for _, d := range daemons {
				k := key{m, q, d}
				rs := groups[k]
				qs := fmt.Sprint(q)
				if q == 0 {
					qs = "all"
				}
				if len(rs) == 0 {
					st := statuses[k]
					if st == "" {
						st = "not run"
					}
					fmt.Fprintf(&b, "| %s | %s | %s | %s | | | | | | |\n", m, qs, d, st)
					continue
				}
				used := rs[0].res.queues
				if q == 0 || used != q {
					qs = fmt.Sprintf("%s→%d", qs, used)
					if used < q {
						qs += fmt.Sprintf(" (offers %d)", rs[0].res.offered)
					}
				}
				ops, opsLo, opsHi := med(rs, func(r result) float64 { return r.opsPerSec })
				p50, _, _ := med(rs, func(r result) float64 { return us(r.p50) })
				p99, _, _ := med(rs, func(r result) float64 { return us(r.p99) })
				p999, _, _ := med(rs, func(r result) float64 { return us(r.p999) })
				cpu, cpuLo, cpuHi := med(rs, func(r result) float64 { return r.cpuPer1000 })
				rss, _, _ := med(rs, func(r result) float64 { return float64(r.rssAnonKB) / 1024 })
				medOps[k], medCPU[k] = ops, cpu
				cpuS := "n/a"
				if cpu >= 0 {
					cpuS = fmt.Sprintf("%.4f (%.4f–%.4f)", cpu, cpuLo, cpuHi)
				}
				note := rs[0].res.note
				if len(rs) < c.rounds {
					note = strings.TrimPrefix(note+fmt.Sprintf("; %d of %d rounds", len(rs), c.rounds), "; ")
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %.0f (%.0f–%.0f) | %.0f | %.0f | %.0f | %s | %.1f | %s |\n",
					m, qs, d, ops, opsLo, opsHi, p50, p99, p999, cpuS, rss, note)
			}
		}
	}
	if len(daemons) > 1 && c.ref != "" {
		fmt.Fprintf(&b, "\nRatios against %s (medians; CPU < 1 and ops/s > 1 favour the other daemon):\n\n", c.ref)
		b.WriteString("| mix | queues | daemon | CPU per 1000 ops ratio | ops/s ratio |\n| --- | --- | --- | --- | --- |\n")
		for _, m := range c.mixes {
			for _, q := range c.queues {
				for _, d := range daemons {
					if d == c.ref {
						continue
					}
					a, r := key{m, q, d}, key{m, q, c.ref}
					cpuR, opsR := "n/a", "n/a"
					if medCPU[a] > 0 && medCPU[r] > 0 {
						cpuR = fmt.Sprintf("%.2f", medCPU[a]/medCPU[r])
					}
					if medOps[a] > 0 && medOps[r] > 0 {
						opsR = fmt.Sprintf("%.2f", medOps[a]/medOps[r])
					}
					fmt.Fprintf(&b, "| %s | %d | %s/%s | %s | %s |\n", m, q, d, c.ref, cpuR, opsR)
				}
			}
		}
	}
	if len(c.queues) > 1 {
		lo, hi := slices.Min(c.queues), slices.Max(c.queues)
		b.WriteString("\n")
		for _, d := range daemons {
			var parts []string
			for _, m := range c.mixes {
				a, z := medOps[key{m, hi, d}], medOps[key{m, lo, d}]
				if a > 0 && z > 0 {
					parts = append(parts, fmt.Sprintf("%s %.2f", m, a/z))
				} else {
					parts = append(parts, m+" n/a")
				}
			}
			fmt.Fprintf(&b, "%s %d-queue/%d-queue ops/s: %s\n", d, hi, lo, strings.Join(parts, ", "))
		}
	}
	return b.String()
}
