// Command vufs-load is a host-side load generator for any vhost-user-fs
// daemon (govirtiofsd, the Rust virtiofsd, the C virtiofsd). It connects to
// the daemon's socket as QEMU would, with its own memfd guest memory,
// enables as many request queues as the daemon offers (or fewer), sends
// FUSE INIT and drives FUSE workloads ("mixes") at full speed from several
// locked OS threads, each with several requests in flight. Every reply is
// checked (unique, errno, sizes, READ data), and a wrong answer fails the
// run. It reports ops/s (FUSE requests answered), latency percentiles from
// publishing a request to reaping its used element, the daemon's CPU
// seconds per 1000 ops (utime+stime of its whole process tree) and its
// RssAnon.
//
// Drive a running daemon (its shared directory must be --dir; the tree is
// prepared under --dir/vufs-load):
//
//	vufs-load --socket S --dir D --pid P [--mix lookup-getattr,read-4k-rand]
//
// Compare daemons, each started afresh per round and queue count on a
// fresh shared directory ({dir} and {sock} are substituted; the command is
// split at spaces):
//
//	vufs-load --dir-base TMP --rounds 3 --queues 1,4 \
//	  --daemon 'govirtiofsd=/path/govirtiofsd --shared-dir {dir} --socket-path {sock} --sandbox none' \
//	  --daemon 'virtiofsd-rust=/path/virtiofsd --shared-dir {dir} --socket-path {sock} --sandbox none'
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// daemonSpec is one --daemon NAME=COMMAND.
type daemonSpec struct {
	name string
	argv []string
}

// config is the parsed command line.
type config struct {
	socket   string
	dir      string
	pid      int
	mixes    []string
	dur      time.Duration
	gap      time.Duration
	warmup   time.Duration
	threads  int
	depth    int
	queues   []int
	dirBase  string
	daemons  []daemonSpec
	rounds   int
	ref      string
	out      string
	prepare  bool
	corrupt  bool // tests only
	stdout   io.Writer
	progress io.Writer
}

// usageError is a bad command line: one line on stderr, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("vufs-load", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &config{}
	var mixes, queues string
	var daemons []string
	parseFlagsInto(fs, c, &mixes, &queues, &daemons)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	return checkFlags(fs, c, mixes, queues, daemons)
}

// parseFlagsInto defines the flags on fs, storing into c and the strings
// checkFlags parses.
func parseFlagsInto(fs *flag.FlagSet, c *config, mixes, queues *string, daemonsp *[]string) {
	fs.StringVar(&c.socket, "socket", "", "vhost-user socket of a running daemon")
	fs.StringVar(&c.dir, "dir", "", "the running daemon's shared directory (the tree is prepared in it)")
	fs.IntVar(&c.pid, "pid", 0, "the running daemon's pid (CPU and RssAnon of its process tree)")
	fs.StringVar(mixes, "mix", "all", "comma-separated mixes: "+strings.Join(mixNames, ", ")+", or all")
	fs.DurationVar(&c.dur, "duration", 3*time.Second, "measured time per mix")
	fs.DurationVar(&c.warmup, "warmup", 500*time.Millisecond, "unmeasured time before each mix's measurement")
	fs.IntVar(&c.threads, "threads", 4, "load threads")
	fs.IntVar(&c.depth, "depth", 8, "requests in flight per thread")
	fs.DurationVar(&c.gap, "gap", 0, "think time before each next request of a slot (0: none; e.g. 200us models a slow guest issuing one request at a time)")
	fs.StringVar(queues, "queues", "", "comma-separated request queue counts to use (0: all offered) [default: 0 with --socket, 1,4 with --daemon]")
	fs.StringVar(&c.dirBase, "dir-base", "", "comparison mode: where fresh shared directories and sockets are made")
	fs.Func("daemon", "comparison mode: NAME=COMMAND with {dir} and {sock} (repeat)", func(s string) error {
		*daemonsp = append(*daemonsp, s)
		return nil
	})
	fs.IntVar(&c.rounds, "rounds", 3, "comparison rounds (daemons alternate within each)")
	fs.StringVar(&c.ref, "reference", "", "the daemon ratios are taken against [default: virtiofsd-rust, else the second --daemon]")
	fs.StringVar(&c.out, "out", "", "also write the table to this file")
	fs.BoolVar(&c.prepare, "prepare", true, "with --socket: prepare the tree in --dir first")
}

// checkFlags validates the parsed flags and completes c.
func checkFlags(fs *flag.FlagSet, c *config, mixes, queues string, daemons []string) (*config, error) {
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if mixes == "all" {
		c.mixes = mixNames
	} else {
		for m := range strings.SplitSeq(mixes, ",") {
			if !contains(mixNames, m) {
				return nil, usageError{fmt.Sprintf("unknown mix %q (known: %s)", m, strings.Join(mixNames, ", "))}
			}
			c.mixes = append(c.mixes, m)
		}
	}
	compare := c.dirBase != "" || len(daemons) > 0
	if queues == "" {
		queues = "0"
		if compare {
			queues = "1,4"
		}
	}
	for q := range strings.SplitSeq(queues, ",") {
		n, err := strconv.Atoi(q)
		if err != nil || n < 0 || n > 1024 {
			return nil, usageError{fmt.Sprintf("bad --queues value %q", q)}
		}
		c.queues = append(c.queues, n)
	}
	switch {
	case c.threads < 1 || c.threads > 64:
		return nil, usageError{"--threads must be 1..64"}
	case c.depth < 1 || c.threads*c.depth > 80:
		return nil, usageError{"--depth must be at least 1 and threads*depth at most 80"}
	case c.dur <= 0 || c.warmup < 0:
		return nil, usageError{"--duration must be positive and --warmup not negative"}
	case c.rounds < 1:
		return nil, usageError{"--rounds must be at least 1"}
	}
	if compare {
		if c.dirBase == "" || len(daemons) == 0 || c.socket != "" || c.dir != "" || c.pid != 0 {
			return nil, usageError{"comparison mode needs --dir-base and --daemon, and no --socket, --dir or --pid"}
		}
		for _, d := range daemons {
			name, cmd, ok := strings.Cut(d, "=")
			argv := strings.Fields(cmd)
			if !ok || name == "" || len(argv) == 0 || !strings.Contains(cmd, "{dir}") || !strings.Contains(cmd, "{sock}") {
				return nil, usageError{fmt.Sprintf("bad --daemon %q: want NAME=COMMAND with {dir} and {sock}", d)}
			}
			for _, o := range c.daemons {
				if o.name == name {
					return nil, usageError{fmt.Sprintf("--daemon %s given twice", name)}
				}
			}
			c.daemons = append(c.daemons, daemonSpec{name: name, argv: argv})
		}
		if c.ref == "" {
			c.ref = c.daemons[min(1, len(c.daemons)-1)].name
			for _, d := range c.daemons {
				if d.name == "virtiofsd-rust" {
					c.ref = d.name
				}
			}
		}
		found := false
		for _, d := range c.daemons {
			found = found || d.name == c.ref
		}
		if !found {
			return nil, usageError{fmt.Sprintf("--reference %s is not a --daemon", c.ref)}
		}
		return c, nil
	}
	if c.socket == "" || c.dir == "" {
		return nil, usageError{"need --socket and --dir (or --dir-base and --daemon)"}
	}
	if c.pid < 0 {
		return nil, usageError{"bad --pid"}
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vufs-load: %v\n", err)
		os.Exit(2)
	}
	c.stdout, c.progress = os.Stdout, os.Stderr
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "vufs-load: %v\n", err)
		os.Exit(1)
	}
}

// run executes either mode and prints the table.
func run(c *config) error {
	var rows []row
	var err error
	if len(c.daemons) > 0 {
		rows, err = compareDaemons(c)
	} else {
		rows, err = driveRunning(c)
	}
	if rows == nil && err != nil {
		return err
	}
	table := formatTable(c, rows)
	fmt.Fprint(c.stdout, table)
	if c.out != "" {
		if werr := os.WriteFile(c.out, []byte(table), 0o644); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// row is one measured (daemon, queues, mix, round), or a daemon that could
// not be measured.
type row struct {
	daemon string
	round  int
	queues int // requested (0: all offered)
	res    result
	status string // "" measured; "missing"; "failed: ..."
}

// runSession connects to socket with at most q request queues, runs every
// mix and returns a row per mix.
func runSession(c *config, socket string, pid, q int, daemon string, round int) ([]row, error) {
	dataSize := uint64(c.threads*c.depth)*(4096+16+(1<<20)+16) + 4<<20
	cn, err := dial(socket, q, dataSize)
	if err != nil {
		return nil, err
	}
	defer cn.close()
	sess, err := openSession(cn)
	if err != nil {
		return nil, err
	}
	var rows []row
	for _, m := range c.mixes {
		res, err := sess.run(m, runOpts{threads: c.threads, depth: c.depth, warmup: c.warmup, dur: c.dur, pid: pid, gap: c.gap, corrupt: c.corrupt})
		if err != nil {
			return rows, fmt.Errorf("%s, %d queue(s), %s: %w", daemon, len(cn.queues), m, err)
		}
		if c.progress != nil {
			fmt.Fprintf(c.progress, "round %d %s q=%d %s: %.0f ops/s p50 %v p99 %v cpu/1000 %.4f s\n",
				round, daemon, res.queues, m, res.opsPerSec, res.p50, res.p99, res.cpuPer1000)
		}
		rows = append(rows, row{daemon: daemon, round: round, queues: q, res: res})
	}
	return rows, nil
}

// driveRunning is mode 1: an already running daemon.
func driveRunning(c *config) ([]row, error) {
	if c.prepare {
		if err := prepareTree(c.dir); err != nil {
			return nil, fmt.Errorf("preparing the tree: %w", err)
		}
	}
	var rows []row
	for _, q := range c.queues {
		r, err := runSession(c, c.socket, c.pid, q, "daemon", 1)
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// usage prints the synopsis and every flag with its default.
func usage(w io.Writer) {
	fmt.Fprint(w, `usage: vufs-load --socket S --dir D --pid P [flags]     drive a running vhost-user-fs daemon
       vufs-load --dir-base TMP --daemon NAME=CMD... [flags]  compare daemons, alternating

`)
	fs := flag.NewFlagSet("vufs-load", flag.ContinueOnError)
	fs.SetOutput(w)
	parseFlagsInto(fs, &config{}, new(string), new(string), new([]string))
	fs.PrintDefaults()
}
