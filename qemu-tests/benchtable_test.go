package qemutests

// The guest benchmark's bookkeeping (bench_test.go): parsing what the
// guest and /proc report, medians, and the markdown tables. No QEMU here;
// benchtable_unit_test.go tests it in `make test`.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// benchRow is one workload row of a configuration's table.
type benchRow struct {
	name string // the guest's workload name; "never_" prefix for the cache-never boot
	// unit is what the guest column shows: "MiB/s", "IOPS" or "s".
	unit string
}

// higherBetter reports whether a larger guest value is better.
func (r benchRow) higherBetter() bool { return r.unit != "s" }

// benchSample is one run of one workload by one daemon.
type benchSample struct {
	guest  float64 // in the row's unit
	secs   float64 // guest-measured wall time
	cpu    float64 // daemon CPU seconds (utime+stime of its process tree)
	rssKiB int64   // daemon RssAnon (KiB, summed over the tree) after it
}

// benchEnd is a parsed "BENCH END <name> secs=S [key=value...]" line.
type benchEnd struct {
	name string
	secs float64
	kv   map[string]string
}

// parseBenchEnd parses the fields after "BENCH END".
func parseBenchEnd(rest string) (benchEnd, error) {
	f := strings.Fields(rest)
	if len(f) < 2 {
		return benchEnd{}, fmt.Errorf("short BENCH END line %q", rest)
	}
	e := benchEnd{name: f[0], kv: map[string]string{}}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return benchEnd{}, fmt.Errorf("BENCH END %s: field %q is not key=value", e.name, kv)
		}
		e.kv[k] = v
	}
	s, ok := e.kv["secs"]
	if !ok {
		return benchEnd{}, fmt.Errorf("BENCH END %s: no secs=", e.name)
	}
	var err error
	if e.secs, err = strconv.ParseFloat(s, 64); err != nil {
		return benchEnd{}, fmt.Errorf("BENCH END %s: secs=%q: %v", e.name, s, err)
	}
	return e, nil
}

// fioResult is what the benchmark takes from fio's terse (version 3) line.
type fioResult struct {
	readKiBps, readIOPS   float64
	writeKiBps, writeIOPS float64
}

// parseFioTerse reads fio --output-format=terse --terse-version=3: fields
// (1-based) 7 and 8 are the read bandwidth (KiB/s) and IOPS, 48 and 49 the
// write ones.
func parseFioTerse(line string) (fioResult, error) {
	f := strings.Split(strings.TrimSpace(line), ";")
	if len(f) < 49 || f[0] != "3" {
		return fioResult{}, fmt.Errorf("not a terse v3 fio line (%d fields): %.60q", len(f), line)
	}
	var r fioResult
	for _, x := range []struct {
		dst *float64
		i   int
	}{{&r.readKiBps, 6}, {&r.readIOPS, 7}, {&r.writeKiBps, 47}, {&r.writeIOPS, 48}} {
		v, err := strconv.ParseFloat(f[x.i], 64)
		if err != nil {
			return fioResult{}, fmt.Errorf("fio terse field %d: %v", x.i+1, err)
		}
		*x.dst = v
	}
	return r, nil
}

// guestValue is the row's guest figure from an END line.
func (r benchRow) guestValue(e benchEnd) (float64, error) {
	if r.unit == "s" {
		return e.secs, nil
	}
	line, ok := e.kv["fio"]
	if !ok {
		return 0, fmt.Errorf("%s: no fio= result", e.name)
	}
	f, err := parseFioTerse(line)
	if err != nil {
		return 0, err
	}
	switch r.unit {
	case "MiB/s":
		return (f.readKiBps + f.writeKiBps) / 1024, nil
	case "IOPS":
		return f.readIOPS + f.writeIOPS, nil
	}
	return 0, fmt.Errorf("%s: unknown unit %q", r.name, r.unit)
}

// procStat is what the benchmark reads from /proc/PID/stat.
type procStat struct {
	pid, ppid int
	ticks     uint64 // utime + stime, in clock ticks
}

// parseProcStat parses /proc/PID/stat; the command name may hold spaces
// and parentheses, so fields are counted from the last ')'.
func parseProcStat(s string) (procStat, error) {
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, fmt.Errorf("malformed stat %.40q", s)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return procStat{}, fmt.Errorf("stat pid: %v", err)
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(s[close+1:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("short stat %.40q", s)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat ppid: %v", err)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, fmt.Errorf("stat times %q %q", f[11], f[12])
	}
	return procStat{pid: pid, ppid: ppid, ticks: ut + st}, nil
}

// parseRssAnon returns the RssAnon line of /proc/PID/status in KiB.
func parseRssAnon(status string) (int64, bool) {
	for l := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, err := strconv.ParseInt(f[0], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// descendants returns root and every process below it in stats.
func descendants(root int, stats []procStat) []procStat {
	children := map[int][]procStat{}
	var self *procStat
	for i, s := range stats {
		children[s.ppid] = append(children[s.ppid], s)
		if s.pid == root {
			self = &stats[i]
		}
	}
	if self == nil {
		return nil
	}
	out := []procStat{*self}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i].pid]...)
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fmtNum prints a figure with three significant digits or so.
func fmtNum(v float64) string {
	switch a := max(v, -v); {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// fmtCell is "median (min–max)", or the one value of a single run.
func fmtCell(xs []float64) string {
	if len(xs) == 1 {
		return fmtNum(xs[0])
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(median(xs)), fmtNum(slices.Min(xs)), fmtNum(slices.Max(xs)))
}

// fmtRatio is a/b of the medians, or "–" if either is missing or b is 0.
func fmtRatio(a, b []float64) string {
	if len(a) == 0 || len(b) == 0 || median(b) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", median(a)/median(b))
}

// benchTable is one configuration's results.
type benchTable struct {
	title   string
	notes   []string
	daemons []string          // column order; daemons[0] is ours
	ref     string            // the reference daemon of the ratio columns
	missing map[string]string // daemon -> why it is not in the table
	rows    []benchRow
	// samples[row][daemon]
	samples map[string]map[string][]benchSample
	// failures[row][daemon] counts runs that gave no sample.
	failures map[string]map[string]int
}

func (t *benchTable) add(row, daemon string, s benchSample) {
	if t.samples == nil {
		t.samples = map[string]map[string][]benchSample{}
	}
	if t.samples[row] == nil {
		t.samples[row] = map[string][]benchSample{}
	}
	t.samples[row][daemon] = append(t.samples[row][daemon], s)
}

func (t *benchTable) fail(row, daemon string) {
	if t.failures == nil {
		t.failures = map[string]map[string]int{}
	}
	if t.failures[row] == nil {
		t.failures[row] = map[string]int{}
	}
	t.failures[row][daemon]++
}

func (t *benchTable) values(row, daemon string, f func(benchSample) float64) []float64 {
	var xs []float64
	for _, s := range t.samples[row][daemon] {
		xs = append(xs, f(s))
	}
	return xs
}

func (t *benchTable) cell(row, daemon string, xs []float64) string {
	if why := t.missing[daemon]; why != "" {
		return "missing"
	}
	c := "–"
	if len(xs) > 0 {
		c = fmtCell(xs)
	}
	if n := t.failures[row][daemon]; n > 0 {
		if len(xs) == 0 {
			return "fail"
		}
		c += fmt.Sprintf(" (%d failed)", n)
	}
	return c
}

// markdown renders the table: per workload the guest figure and the
// daemon CPU seconds of every daemon with the ratio ours/reference, then
// RssAnon rows (MiB after each workload).
func (t *benchTable) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", t.title)
	for _, n := range t.notes {
		fmt.Fprintf(&b, "%s\n", n)
	}
	if len(t.notes) > 0 {
		b.WriteString("\n")
	}
	ours := t.daemons[0]
	hdr := []string{"workload", "unit"}
	hdr = append(hdr, t.daemons...)
	hdr = append(hdr, ours+"/"+t.ref)
	for _, d := range t.daemons {
		hdr = append(hdr, "CPU s "+d)
	}
	hdr = append(hdr, "CPU "+ours+"/"+t.ref)
	line := func(cells []string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	line(hdr)
	seps := make([]string, len(hdr))
	for i := range seps {
		seps[i] = "---"
	}
	line(seps)
	guest := func(s benchSample) float64 { return s.guest }
	cpu := func(s benchSample) float64 { return s.cpu }
	rss := func(s benchSample) float64 { return float64(s.rssKiB) / 1024 }
	for _, r := range t.rows {
		unit := r.unit + " ↓"
		if r.higherBetter() {
			unit = r.unit + " ↑"
		}
		cells := []string{r.name, unit}
		for _, d := range t.daemons {
			cells = append(cells, t.cell(r.name, d, t.values(r.name, d, guest)))
		}
		cells = append(cells, fmtRatio(t.values(r.name, ours, guest), t.values(r.name, t.ref, guest)))
		for _, d := range t.daemons {
			cells = append(cells, t.cell(r.name, d, t.values(r.name, d, cpu)))
		}
		cells = append(cells, fmtRatio(t.values(r.name, ours, cpu), t.values(r.name, t.ref, cpu)))
		line(cells)
	}
	for _, r := range t.rows {
		cells := []string{"RssAnon after " + r.name, "MiB ↓"}
		for _, d := range t.daemons {
			cells = append(cells, t.cell(r.name, d, t.values(r.name, d, rss)))
		}
		cells = append(cells, fmtRatio(t.values(r.name, ours, rss), t.values(r.name, t.ref, rss)))
		for range t.daemons {
			cells = append(cells, "")
		}
		cells = append(cells, "")
		line(cells)
	}
	for _, d := range t.daemons {
		if why := t.missing[d]; why != "" {
			fmt.Fprintf(&b, "\n%s is missing: %s\n", d, why)
		}
	}
	if worse := t.cpuWorse(); len(worse) > 0 {
		fmt.Fprintf(&b, "\n%s used more CPU than %s (median) on: %s\n", ours, t.ref, strings.Join(worse, ", "))
	}
	return b.String()
}

// cpuWorse lists the rows where our daemon's median CPU exceeds the
// reference's.
func (t *benchTable) cpuWorse() []string {
	cpu := func(s benchSample) float64 { return s.cpu }
	var worse []string
	for _, r := range t.rows {
		a, b := t.values(r.name, t.daemons[0], cpu), t.values(r.name, t.ref, cpu)
		if len(a) > 0 && len(b) > 0 && median(a) > median(b) {
			worse = append(worse, fmt.Sprintf("%s (%.2f vs %.2f s)", r.name, median(a), median(b)))
		}
	}
	return worse
}
