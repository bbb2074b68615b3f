package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Syslog priorities: facility daemon (3) times 8 plus the severity.
const (
	syslogErr     = 3*8 + 3
	syslogWarning = 3*8 + 4
	syslogInfo    = 3*8 + 6
	syslogDebug   = 3*8 + 7
)

// syslogWriter sends the log's lines to the system log over one
// connection to /dev/log, made before the daemon confines itself. It never
// dials again: in the sandbox /dev/log is out of reach and seccomp does not
// allow socket(2). A line that cannot be sent is written to stderr instead.
type syslogWriter struct {
	mu     sync.Mutex
	conn   net.Conn
	stream bool // a stream socket: lines need a delimiter
	buf    bytes.Buffer
	pid    int
}

// newSyslog connects to the local syslog daemon (a datagram socket, or a
// stream socket as some daemons offer).
func newSyslog() (*syslogWriter, error) {
	var err error
	for _, network := range []string{"unixgram", "unix"} {
		var c net.Conn
		if c, err = net.Dial(network, "/dev/log"); err == nil {
			return &syslogWriter{conn: c, stream: network == "unix", pid: os.Getpid()}, nil
		}
	}
	return nil, fmt.Errorf("syslog: %w", err)
}

// Write sends one log line at the priority of its hclog level.
func (s *syslogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	pri := syslogInfo
	switch {
	case strings.Contains(line, "[ERROR]"):
		pri = syslogErr
	case strings.Contains(line, "[WARN]"):
		pri = syslogWarning
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		pri = syslogDebug
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	fmt.Fprintf(&s.buf, "<%d>%s %s[%d]: %s", pri, time.Now().Format(time.Stamp), progName, s.pid, line)
	if s.stream {
		s.buf.WriteByte('\n')
	}
	if _, err := s.conn.Write(s.buf.Bytes()); err != nil {
		os.Stderr.Write(p)
	}
	return len(p), nil
}

// Close closes the connection.
func (s *syslogWriter) Close() error { return s.conn.Close() }
