package fuseproto

import (
	"bytes"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// queueReplier is a recReplier that says which queue it serves.
type queueReplier struct {
	recReplier
	q int
}

func (r *queueReplier) Queue() int { return r.q }

// TestRequestLog checks the per-request log: at debug level one line per
// request (replied or not) with queue, opcode, nodeid and errno; at info
// level none.
func TestRequestLog(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	s, fs := newSession(t, Options{Logger: log})
	buf.Reset()
	s.Handle(msg(OpGetattr, 1, &GetattrIn{}), nil, &queueReplier{q: 3})
	fs.errno = syscall.ENOENT
	call(s, msg(OpLookup, 1, "missing\x00"))
	fs.errno = OK
	call(s, msg(OpForget, 9, &ForgetIn{Nlookup: 1}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want one per request:\n%s", len(lines), buf.String())
	}
	for i, want := range [][]string{
		{"queue=3", "opcode=GETATTR", "nodeid=1", "errno=0", "replied=true"},
		{"queue=-1", "opcode=LOOKUP", "nodeid=1", "errno=" + strconv.Itoa(int(syscall.ENOENT)), "replied=true"},
		{"queue=-1", "opcode=FORGET", "nodeid=9", "errno=0", "replied=false"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}

	buf.Reset()
	log.SetLevel(hclog.Info)
	s, _ = newSession(t, Options{Logger: log})
	call(s, msg(OpGetattr, 1, &GetattrIn{}))
	call(s, msg(OpLookup, 1, "missing\x00"))
	if buf.Len() != 0 {
		t.Errorf("info level logged per request:\n%s", buf.String())
	}
}
