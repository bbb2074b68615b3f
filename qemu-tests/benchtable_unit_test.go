package qemutests

import (
	"slices"
	"strings"
	"testing"
)

// The guest benchmark's bookkeeping (benchtable_test.go), without QEMU.

func TestBenchMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1}, 3},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

func TestBenchFmtCell(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want string
	}{
		{[]float64{1.234}, "1.23"},
		{[]float64{12.34, 10, 15}, "12.3 (10.0–15.0)"},
		{[]float64{1500, 1400, 1600}, "1500 (1400–1600)"},
	} {
		if got := fmtCell(c.xs); got != c.want {
			t.Errorf("fmtCell(%v) = %q, want %q", c.xs, got, c.want)
		}
	}
	if got := fmtRatio([]float64{2}, []float64{4}); got != "0.50" {
		t.Errorf("fmtRatio = %q, want 0.50", got)
	}
	if got := fmtRatio([]float64{2}, nil); got != "–" {
		t.Errorf("fmtRatio without reference = %q, want –", got)
	}
}

func TestBenchParseEnd(t *testing.T) {
	for _, c := range []struct {
		in      string
		name    string
		secs    float64
		wantErr bool
	}{
		{"find secs=1.500 entries=12803", "find", 1.5, false},
		{"seq_write secs=6.4 fio=3;fio-3.33;seqw", "seq_write", 6.4, false},
		{"find", "", 0, true},
		{"find entries=3", "", 0, true},
		{"find secs=x", "", 0, true},
		{"find secs=1 junk", "", 0, true},
	} {
		e, err := parseBenchEnd(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("parseBenchEnd(%q) error %v, want error %v", c.in, err, c.wantErr)
			continue
		}
		if err == nil && (e.name != c.name || e.secs != c.secs) {
			t.Errorf("parseBenchEnd(%q) = %s %v, want %s %v", c.in, e.name, e.secs, c.name, c.secs)
		}
	}
}

// terse builds a fio terse v3 line with the given read and write figures.
func terse(readBW, readIOPS, writeBW, writeIOPS string) string {
	f := make([]string, 130)
	for i := range f {
		f[i] = "0"
	}
	f[0], f[1], f[2] = "3", "fio-3.33", "job"
	f[6], f[7], f[47], f[48] = readBW, readIOPS, writeBW, writeIOPS
	return strings.Join(f, ";")
}

func TestBenchGuestValue(t *testing.T) {
	for _, c := range []struct {
		row     benchRow
		end     string
		want    float64
		wantErr bool
	}{
		{benchRow{"seq_write", "MiB/s"}, "seq_write secs=6 fio=" + terse("0", "0", "49367", "48"), 49367.0 / 1024, false},
		{benchRow{"seq_read", "MiB/s"}, "seq_read secs=6 fio=" + terse("2048", "2", "0", "0"), 2, false},
		{benchRow{"rand_read_qd1", "IOPS"}, "rand_read_qd1 secs=11 fio=" + terse("2222", "555", "0", "0"), 555, false},
		{benchRow{"untar", "s"}, "untar secs=42.5", 42.5, false},
		{benchRow{"rand_read_qd1", "IOPS"}, "rand_read_qd1 secs=11", 0, true},
		{benchRow{"rand_read_qd1", "IOPS"}, "rand_read_qd1 secs=11 fio=2;fio;x", 0, true},
	} {
		e, err := parseBenchEnd(c.end)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.row.guestValue(e)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v, want error %v", c.row.name, err, c.wantErr)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %v, want %v", c.row.name, got, c.want)
		}
	}
}

func TestBenchProcStat(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    procStat
		wantErr bool
	}{
		{"1234 (govirtiofsd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1 2 3",
			procStat{pid: 1234, ppid: 1, ticks: 325}, false},
		// A command name with spaces and parentheses.
		{"77 (a) b (c) R 76 77 77 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 2 3",
			procStat{pid: 77, ppid: 76, ticks: 7}, false},
		{"77 (x) R 76", procStat{}, true},
		{"garbage", procStat{}, true},
	} {
		got, err := parseProcStat(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("parseProcStat(%q) = %+v, %v; want %+v, error %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}

func TestBenchRssAnonAndTree(t *testing.T) {
	if n, ok := parseRssAnon("Name:\tx\nVmRSS:\t  900 kB\nRssAnon:\t    4321 kB\nRssFile:\t 1 kB\n"); !ok || n != 4321 {
		t.Errorf("parseRssAnon = %d, %v; want 4321", n, ok)
	}
	if _, ok := parseRssAnon("Name:\tkthread\n"); ok {
		t.Error("parseRssAnon found RssAnon in a status without one")
	}
	stats := []procStat{{pid: 1, ppid: 0}, {pid: 10, ppid: 1}, {pid: 11, ppid: 10}, {pid: 12, ppid: 11}, {pid: 20, ppid: 1}}
	var got []int
	for _, s := range descendants(10, stats) {
		got = append(got, s.pid)
	}
	if !slices.Equal(got, []int{10, 11, 12}) {
		t.Errorf("descendants(10) = %v, want [10 11 12]", got)
	}
	if d := descendants(99, stats); d != nil {
		t.Errorf("descendants of a gone process = %v, want none", d)
	}
}

func TestBenchSelectRows(t *testing.T) {
	rows := slices.Concat(benchMainRows, benchLastRows, benchNeverRows)
	for _, c := range []struct {
		sel  string
		want string
	}{
		{"", strings.Join(rowNamesOf(rows), ",")},
		{"meta", "meta_create,meta_stat,meta_list,meta_unlink"},
		{"never", "never_meta_create,never_meta_stat,never_meta_list,never_meta_unlink"},
		{"find,seq_read", "seq_read,find,find_100k"}, // a prefix: find_100k too
		{"untar", "untar"},
		{"rand", "rand_read_qd1,rand_read_qd16"},
	} {
		got := strings.Join(rowNamesOf(selectRows(rows, benchList(c.sel, nil))), ",")
		if got != c.want {
			t.Errorf("BENCH_WORKLOADS=%q selects %s, want %s", c.sel, got, c.want)
		}
	}
}

func rowNamesOf(rows []benchRow) []string {
	var n []string
	for _, r := range rows {
		n = append(n, r.name)
	}
	return n
}

func TestBenchTableMarkdown(t *testing.T) {
	tbl := &benchTable{
		title:   "cfg",
		daemons: []string{"govirtiofsd", "virtiofsd-rust", "virtiofsd-c"},
		ref:     "virtiofsd-rust",
		missing: map[string]string{"virtiofsd-c": "not installed"},
		rows:    []benchRow{{"seq_read", "MiB/s"}, {"untar", "s"}},
	}
	tbl.add("seq_read", "govirtiofsd", benchSample{guest: 100, cpu: 1, rssKiB: 2048})
	tbl.add("seq_read", "govirtiofsd", benchSample{guest: 120, cpu: 3, rssKiB: 2048})
	tbl.add("seq_read", "virtiofsd-rust", benchSample{guest: 100, cpu: 1, rssKiB: 1024})
	tbl.add("untar", "virtiofsd-rust", benchSample{guest: 10, cpu: 2, rssKiB: 1024})
	tbl.fail("untar", "govirtiofsd")
	md := tbl.markdown()
	for _, want := range []string{
		"| workload | unit | govirtiofsd | virtiofsd-rust | virtiofsd-c | govirtiofsd/virtiofsd-rust | CPU s govirtiofsd |",
		"| seq_read | MiB/s ↑ | 110 (100–120) | 100 | missing | 1.10 | 2.00 (1.00–3.00) | 1.00 | missing | 2.00 |",
		"| untar | s ↓ | fail | 10.0 | missing | – | fail | 2.00 | missing | – |",
		"| RssAnon after seq_read | MiB ↓ | 2.00 (2.00–2.00) | 1.00 | missing | 2.00 |",
		"virtiofsd-c is missing: not installed",
		"govirtiofsd used more CPU than virtiofsd-rust (median) on: seq_read (2.00 vs 1.00 s)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
