package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/govirtiofs/govirtiofs/internal/sandbox"
)

// readyFDEnv marks the background daemon started by daemonize: its value is
// the number of the descriptor (a pipe) on which the daemon reports "ok" once
// the mount is in place, or the one-line error that stopped it.
const readyFDEnv = "GOVIRTIOFSD_READY_FD"

// readyOK is the report of a daemon whose mount is in place.
const readyOK = "ok"

// runMount runs a command line in mount(8)'s convention and returns the exit
// status: 2 for a bad command line, 1 if mounting failed, 0 once the mount
// is in place (in the foreground: once it has ended). With -o remount it
// changes the flags of the mount in place (mount -o remount,ro MNT).
func runMount(argv0 string, args []string, stdout, stderr io.Writer) int {
	mc, err := parseMountArgs(args, isMountHelper(argv0))
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 2
	}
	switch fd := os.Getenv(readyFDEnv); {
	case mc.fake:
		return 0
	case sandbox.IsChild():
		// The daemon's namespace sandbox re-executed it: serve.
		return serve(&mc.cfg, stderr, nil)
	case mc.remount:
		if err := remount(mc.cfg.mountpoint, mc.cfg.mountFlags, mc.cfg.readonly); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", progName, err)
			return 1
		}
		return 0
	case fd != "":
		return runBackground(&mc.cfg, fd)
	case mc.foreground:
		return serve(&mc.cfg, stderr, nil)
	}
	return daemonize(argv0, args, stderr)
}

// daemonize starts the program again (/proc/self/exe, with the same
// arguments) as a daemon in a new session, its standard input and outputs
// on /dev/null, and waits for its report: it returns 0 once the daemon has
// the mount in place, and otherwise prints the daemon's error and returns 1.
func daemonize(argv0 string, args []string, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = argv0
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fail(fmt.Errorf("starting the daemon: %w", err))
	}
	report, _ := bufio.NewReader(r).ReadString('\n')
	report = strings.TrimSuffix(report, "\n")
	if report == readyOK {
		cmd.Process.Release()
		return 0
	}
	werr := cmd.Wait()
	if report == "" {
		report = fmt.Sprintf("the daemon ended before mounting: %v", werr)
	}
	fmt.Fprintf(stderr, "%s: %s\n", progName, report)
	return 1
}

// runBackground is the daemon daemonize started: it serves cfg, reporting
// on the descriptor numbered fd, and logs to syslog if it can.
func runBackground(cfg *config, fd string) int {
	os.Unsetenv(readyFDEnv)
	n, err := strconv.Atoi(fd)
	if err != nil || n < 3 {
		fmt.Fprintf(os.Stderr, "%s: bad %s=%q\n", progName, readyFDEnv, fd)
		return 2
	}
	report := os.NewFile(uintptr(n), "ready")
	syscall.CloseOnExec(n)
	// Paths are absolute (parseMountArgs): leave the working directory, so
	// that the daemon does not keep a filesystem busy.
	os.Chdir("/")
	var out io.Writer = io.Discard
	if w, err := newSyslog(); err == nil {
		defer w.Close()
		out = w
	}
	return serve(cfg, out, func(err error) {
		msg := readyOK
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		report.WriteString(msg + "\n")
		report.Close()
	})
}
