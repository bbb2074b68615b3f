// Command gvtbench is the guest side of the guest benchmark
// (qemu-tests/bench_test.go, BenchmarkGuest): a static program in the
// benchmark's initramfs that runs the workloads on the virtio-fs mount one
// after the other and reports each on the serial console.
//
// For each workload it first prepares what the workload needs (untimed:
// the 256 MiB file, the 5,000 small files, the untarred tree), then syncs
// and drops the guest's caches (sync; echo 3 > /proc/sys/vm/drop_caches),
// prints
//
//	BENCH START <name>
//
// and waits for the host to acknowledge on the console ("ack", at most
// 10 s) so the host samples the daemon's CPU time right at the start; it
// then runs the workload, measures its time in the guest, prints
//
//	BENCH END <name> secs=<seconds> [fio=<fio's terse v3 line>] [entries=N]
//
// and waits for the host's acknowledgement again before cleaning up. A
// workload that fails prints "BENCH FAIL <name> <why>" (and waits for an
// acknowledgement too). The workloads are
// chosen with -workloads or gvtbench.workloads= on the kernel command line.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	seqSize    = 256 << 20
	smallFiles = 5000
	parallel   = 4 // jobs of the parallel workloads
	ackTimeout = 10 * time.Second
)

var (
	mnt     = flag.String("mnt", "/mnt", "the virtio-fs mount")
	tarball = flag.String("tar", "/gosrc.tar", "the source tarball to untar")
	list    = flag.String("workloads", "", "comma-separated workloads (default: gvtbench.workloads= from /proc/cmdline)")
	noAck   = flag.Bool("noack", false, "do not wait for the host's acknowledgements")
)

// workload is one timed step.
type workload struct {
	// prep makes what run needs; untimed, before the caches are dropped.
	prep func() error
	// run is timed; it returns extra key=value fields for the END line.
	run func() (string, error)
	// cleanup runs after the END line; untimed.
	cleanup func()
}

func p(name string) string { return filepath.Join(*mnt, name) }

var workloads = map[string]workload{
	"seq_write": {
		prep: func() error { return removeIfExists(p("seq.bin")) },
		run:  writeSeq,
	},
	"seq_read": {
		prep: func() error { return ensureSeqFile() },
		run: func() (string, error) {
			return fio("--name=seqr", "--filename="+p("seq.bin"), "--rw=read", "--bs=1M", "--size=256M", "--ioengine=psync")
		},
	},
	"rand_read_qd1": {
		prep: func() error { return ensureSeqFile() },
		run: func() (string, error) {
			return fio("--name=rr1", "--filename="+p("seq.bin"), "--rw=randread", "--bs=4k", "--size=256M", "--io_size=16M",
				"--direct=1", "--ioengine=libaio", "--iodepth=1", "--norandommap", "--randrepeat=1")
		},
	},
	"rand_read_qd16": {
		prep: func() error { return ensureSeqFile() },
		run: func() (string, error) {
			return fio("--name=rr16", "--filename="+p("seq.bin"), "--rw=randread", "--bs=4k", "--size=256M", "--io_size=48M",
				"--direct=1", "--ioengine=libaio", "--iodepth=16", "--norandommap", "--randrepeat=1")
		},
	},
	"par_rand_read": {
		prep: func() error { return ensureSeqFile() },
		run: func() (string, error) {
			return fio("--name=prr", "--filename="+p("seq.bin"), "--rw=randread", "--bs=4k", "--size=256M", "--io_size=16M",
				"--direct=1", "--ioengine=libaio", "--iodepth=4", "--numjobs=4", "--group_reporting", "--norandommap", "--randrepeat=1")
		},
	},
	"meta_create": {
		prep: func() error { return os.RemoveAll(p("meta")) },
		run:  func() (string, error) { return "", createSmall() },
	},
	"meta_stat": {
		prep: ensureSmallFiles,
		run: func() (string, error) {
			for i := range smallFiles {
				if _, err := os.Lstat(smallName(i)); err != nil {
					return "", err
				}
			}
			return "", nil
		},
	},
	"meta_list": {
		prep: ensureSmallFiles,
		run: func() (string, error) {
			// ls -l: read the directory, lstat every entry.
			names, err := readNames(p("meta"))
			if err != nil {
				return "", err
			}
			for _, n := range names {
				if _, err := os.Lstat(filepath.Join(p("meta"), n)); err != nil {
					return "", err
				}
			}
			return fmt.Sprintf("entries=%d", len(names)), nil
		},
	},
	"meta_unlink": {
		prep: ensureSmallFiles,
		run: func() (string, error) {
			for i := range smallFiles {
				if err := os.Remove(smallName(i)); err != nil {
					return "", err
				}
			}
			if err := os.Remove(p("meta")); err != nil {
				return "", err
			}
			syscall.Sync()
			return "", nil
		},
	},
	"untar": {
		prep: func() error { return os.RemoveAll(p("src")) },
		run: func() (string, error) {
			if err := untar(p("src")); err != nil {
				return "", err
			}
			syscall.Sync()
			return "", nil
		},
	},
	"find": {
		prep: ensureTree,
		run: func() (string, error) {
			n, err := countLines("find", p("src"))
			return fmt.Sprintf("entries=%d", n), err
		},
	},
	"grep": {
		prep: ensureTree,
		run: func() (string, error) {
			// Every file is read; -l lists the ones that match.
			n, err := countLines("grep", "-r", "-l", "func main", p("src"))
			return fmt.Sprintf("entries=%d", n), err
		},
	},
	"rm": {
		prep: ensureTree,
		run: func() (string, error) {
			if err := run("rm", "-rf", p("src")); err != nil {
				return "", err
			}
			syscall.Sync()
			return "", nil
		},
	},
	"par_untar": {
		prep: func() error { return removeAll(parDirs()) },
		run: func() (string, error) {
			errs := make([]error, parallel)
			var wg sync.WaitGroup
			for i, d := range parDirs() {
				wg.Go(func() { errs[i] = untar(d) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return "", err
				}
			}
			syscall.Sync()
			return "", nil
		},
		cleanup: func() { removeAll(parDirs()) },
	},
	"find_100k": {
		// The host made tree100k in the share before the boot.
		run: func() (string, error) {
			n, err := countLines("find", p("tree100k"))
			return fmt.Sprintf("entries=%d", n), err
		},
	},
}

func main() {
	flag.Parse()
	names := *list
	if names == "" {
		cmdline, _ := os.ReadFile("/proc/cmdline")
		for _, f := range strings.Fields(string(cmdline)) {
			if v, ok := strings.CutPrefix(f, "gvtbench.workloads="); ok {
				names = v
			}
		}
	}
	acks := make(chan struct{}, 16)
	if !*noAck {
		go readAcks(os.Stdin, acks)
	}
	for _, name := range strings.Split(names, ",") {
		if name == "" {
			continue
		}
		w, ok := workloads[name]
		if !ok {
			fmt.Printf("BENCH FAIL %s unknown workload\n", name)
			continue
		}
		step(name, w, acks)
	}
}

// step runs one workload with its markers.
func step(name string, w workload, acks chan struct{}) {
	if w.prep != nil {
		if err := w.prep(); err != nil {
			fmt.Printf("BENCH FAIL %s preparing: %v\n", name, oneLine(err))
			waitAck(acks)
			return
		}
	}
	dropCaches()
	fmt.Printf("BENCH START %s\n", name)
	waitAck(acks)
	start := time.Now()
	extra, err := w.run()
	secs := time.Since(start).Seconds()
	if err != nil {
		fmt.Printf("BENCH FAIL %s %v\n", name, oneLine(err))
		waitAck(acks)
		return
	}
	line := fmt.Sprintf("BENCH END %s secs=%.3f", name, secs)
	if extra != "" {
		line += " " + extra
	}
	fmt.Println(line)
	waitAck(acks)
	if w.cleanup != nil {
		w.cleanup()
	}
}

// readAcks turns the host's "ack" lines on the console into tokens.
func readAcks(r io.Reader, acks chan<- struct{}) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "ack") {
			acks <- struct{}{}
		}
	}
}

func waitAck(acks chan struct{}) {
	if *noAck {
		time.Sleep(200 * time.Millisecond)
		return
	}
	select {
	case <-acks:
	case <-time.After(ackTimeout):
		fmt.Println("GUESTINFO gvtbench: no ack from the host")
	}
}

// dropCaches syncs, drops the guest's page, dentry and inode caches, and
// gives the FORGETs that follow a moment to reach the daemon.
func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		fmt.Printf("GUESTINFO gvtbench: drop_caches: %v\n", err)
	}
	time.Sleep(500 * time.Millisecond)
}

// fio runs fio with terse output and returns "fio=<line>".
func fio(args ...string) (string, error) {
	args = append(args, "--output-format=terse", "--terse-version=3")
	cmd := exec.Command("/bin/fio", args...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("fio: %v: %s %s", err, out.String(), errb.String())
	}
	for l := range strings.Lines(out.String()) {
		if strings.HasPrefix(l, "3;") {
			return "fio=" + strings.ReplaceAll(strings.TrimSpace(l), " ", "_"), nil
		}
	}
	return "", fmt.Errorf("fio printed no terse line: %s %s", out.String(), errb.String())
}

func untar(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return run("tar", "-xf", *tarball, "-C", dir)
}

func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	return nil
}

// countLines runs a command and counts the lines it prints.
func countLines(name string, args ...string) (int, error) {
	cmd := exec.Command(name, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n++
	}
	if err := cmd.Wait(); err != nil {
		return n, fmt.Errorf("%s: %v: %s", name, err, errb.String())
	}
	return n, nil
}

func smallName(i int) string { return filepath.Join(p("meta"), fmt.Sprintf("f%05d", i)) }

func ensureSmallFiles() error {
	if _, err := os.Stat(smallName(smallFiles - 1)); err == nil {
		return nil
	}
	if err := os.RemoveAll(p("meta")); err != nil {
		return err
	}
	return createSmall()
}

func ensureSeqFile() error {
	if fi, err := os.Stat(p("seq.bin")); err == nil && fi.Size() == seqSize {
		return nil
	}
	_, err := writeSeq()
	return err
}

func ensureTree() error {
	if _, err := os.Stat(p("src/src/go.mod")); err == nil {
		return nil
	}
	if err := os.RemoveAll(p("src")); err != nil {
		return err
	}
	return untar(p("src"))
}

func parDirs() []string {
	var d []string
	for i := range parallel {
		d = append(d, p(fmt.Sprintf("par%d", i)))
	}
	return d
}

func removeAll(dirs []string) error {
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// oneLine flattens an error for the console, at most 300 bytes.
func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func writeSeq() (string, error) {
	return fio("--name=seqw", "--filename="+p("seq.bin"), "--rw=write", "--bs=1M", "--size=256M",
		"--ioengine=psync", "--end_fsync=1", "--fallocate=none")
}

// createSmall makes meta/ with smallFiles files of 512 bytes.
func createSmall() error {
	if err := os.Mkdir(p("meta"), 0o755); err != nil {
		return err
	}
	data := bytes.Repeat([]byte("x"), 512)
	for i := range smallFiles {
		f, err := os.OpenFile(smallName(i), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	syscall.Sync()
	return nil
}
