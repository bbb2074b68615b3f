package virtiofs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
	"github.com/govirtiofs/govirtiofs/virtqueue/vqtest"
)

// This file is the end-to-end table of issue 5, "a hostile guest": every
// row sends one hostile input through the fake front-end to one daemon (a
// virtio-fs Device over a fuseproto.Server over passthrough.FS), checks the
// answer the specs call for, and then checks that the daemon still serves
// (on the same queue, on another queue after a broken one, or on a fresh
// connection after a dropped one), that no file descriptor or goroutine
// leaked, that nothing panicked, and that nothing changed outside the
// share. docs/hostile-guest.md lists the rows.

// lockedBuffer is a log sink read while the daemon writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// since returns what was logged after offset off.
func (l *lockedBuffer) since(off int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()[off:]
}

func (l *lockedBuffer) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// hostileDaemon is one daemon serving one connection after another, over a
// share next to a directory it must never touch:
//
//	base/share/file          10000 bytes
//	base/share/dir/
//	base/share/escape     -> ../outside
//	base/outside/sentinel
//	base/outside/dir/inner
type hostileDaemon struct {
	base, share, outside string
	srv                  *fuseproto.Server
	be                   *vhostuser.Backend
	log                  *lockedBuffer
	before               map[string]string // the tree outside the share
}

const hostileFileSize = 10000

func newHostileDaemon(t *testing.T) *hostileDaemon {
	base := t.TempDir()
	d := &hostileDaemon{
		base: base, share: filepath.Join(base, "share"), outside: filepath.Join(base, "outside"),
		log: &lockedBuffer{},
	}
	for _, dir := range []string{d.share, filepath.Join(d.share, "dir"), filepath.Join(d.outside, "dir")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{
		filepath.Join(d.share, "file"):             pattern(hostileFileSize, 5),
		filepath.Join(d.outside, "sentinel"):       []byte("the guest must never change this"),
		filepath.Join(d.outside, "dir", "inner"):   []byte("nor this"),
		filepath.Join(d.outside, "dir", "..inner"): []byte("nor this one, whose name has two dots"),
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../outside", filepath.Join(d.share, "escape")); err != nil {
		t.Fatal(err)
	}
	d.before = snapshotTree(t, d.outside)

	level := hclog.Warn
	if os.Getenv("VIRTIOFS_DEBUG") != "" {
		level = hclog.Debug
	}
	logger := hclog.New(&hclog.LoggerOptions{Level: level, Output: d.log})
	pfs, err := passthrough.New(d.share, passthrough.Options{Xattr: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pfs.Close() })
	d.srv = fuseproto.NewServer(pfs, fuseproto.Options{Logger: logger})
	dev, err := NewDevice(d.srv, Options{RequestQueues: 2, ThreadPoolSize: 2, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	d.be = vhostuser.NewBackend(dev, vhostuser.Options{Logger: logger})
	return d
}

// snapshotTree records every entry under root: type, mode, size, content
// hash or link target, and modification time.
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkContainment fails the test if anything changed outside the share,
// if anything besides share/ and outside/ appeared next to them, or if a
// name containing ".." appeared in the share.
func (d *hostileDaemon) checkContainment(t *testing.T) {
	t.Helper()
	after := snapshotTree(t, d.outside)
	for p, desc := range d.before {
		if after[p] != desc {
			t.Errorf("outside the share: %s changed from %q to %q", p, desc, after[p])
		}
	}
	for p := range after {
		if _, ok := d.before[p]; !ok {
			t.Errorf("outside the share: %s appeared", p)
		}
	}
	ents, err := os.ReadDir(d.base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "share" && e.Name() != "outside" {
			t.Errorf("%s appeared next to the share", filepath.Join(d.base, e.Name()))
		}
	}
	filepath.WalkDir(d.share, func(p string, de fs.DirEntry, err error) error {
		if err == nil && strings.Contains(de.Name(), "..") {
			t.Errorf("%s appeared in the share", p)
		}
		return nil
	})
}

// hx is one session of a row: a connection set up as QEMU does (hiprio
// queue 0, request queues 1 and 2, 64 entries each) with FUSE INIT done.
type hx struct {
	t       *testing.T
	d       *hostileDaemon
	e       *env
	hi, rq  *vutest.VQ
	rq2     *vutest.VQ
	last    []byte // the body of the last FUSE reply
	logMark int    // the daemon's log before this session
}

// connect starts a session on a new socketpair.
func (d *hostileDaemon) connect(t *testing.T) *hx {
	t.Helper()
	front, back := vutest.Socketpair(t)
	e := &env{t: t, root: d.share, srv: d.srv, done: make(chan error, 1)}
	go func() { e.done <- d.be.ServeConn(context.Background(), back) }()
	t.Cleanup(func() {
		front.Close()
		select {
		case err := <-e.done:
			e.done <- err
		case <-time.After(vutest.Timeout):
			t.Error("ServeConn did not return after the front-end closed")
		}
	})
	e.fe = vutest.New(t, front, nil)
	e.fe.QEMUStart(3, 64, allFeatures)
	x := &hx{t: t, d: d, e: e, hi: e.fe.Queues[0], rq: e.fe.Queues[1], rq2: e.fe.Queues[2], logMark: d.log.len()}
	e.init(x.rq)
	// Descriptors 56..63 of queue 1 are for hand-made chains.
	x.rq.Driver.ReuseDescs(56, 57, 58, 59, 60, 61, 62, 63)
	return x
}

// answerKind is what the daemon does with a hostile input.
type answerKind int

const (
	// aErrno: a FUSE reply carrying errno (0: success).
	aErrno answerKind = iota
	// aNoReply: the chain comes back in the used ring with length 0 (the
	// request has no reply, or the chain was refused unserved).
	aNoReply
	// aBroken: the virtqueue is broken and no longer served until the
	// driver sets it up again; the other queues go on.
	aBroken
	// aAck and aNack: the vhost-user message was acknowledged, or
	// refused with a nonzero REPLY_ACK; the connection goes on.
	aAck
	aNack
	// aDropped: the back-end closes the vhost-user connection; a new
	// connection is served.
	aDropped
)

type answer struct {
	kind  answerKind
	errno syscall.Errno
}

func (a answer) String() string {
	switch a.kind {
	case aErrno:
		if a.errno == 0 {
			return "reply, success"
		}
		return fmt.Sprintf("reply, errno %d (%v)", int(a.errno), a.errno)
	case aNoReply:
		return "chain returned with length 0"
	case aBroken:
		return "queue broken"
	case aAck:
		return "REPLY_ACK 0"
	case aNack:
		return "REPLY_ACK failure"
	case aDropped:
		return "connection dropped"
	}
	return "?"
}

func errnoA(e syscall.Errno) answer { return answer{kind: aErrno, errno: e} }

var (
	success  = errnoA(0)
	noReply  = answer{kind: aNoReply}
	broken   = answer{kind: aBroken}
	acked    = answer{kind: aAck}
	nacked   = answer{kind: aNack}
	dropped  = answer{kind: aDropped}
	eINVAL   = errnoA(syscall.EINVAL)
	eIO      = errnoA(syscall.EIO)
	eBADF    = errnoA(syscall.EBADF)
	eEXIST   = errnoA(syscall.EEXIST)
	eBUSY    = errnoA(syscall.EBUSY)
	eNOTDIR  = errnoA(syscall.ENOTDIR)
	eTOOLONG = errnoA(syscall.ENAMETOOLONG)
)

// used turns a used element into an answer, checking the reply's header.
func (x *hx) used(u vqtest.Used, room uint32, unique uint64) answer {
	x.t.Helper()
	if u.Len == 0 {
		return noReply
	}
	if u.Len > room {
		x.t.Fatalf("%d bytes used of %d", u.Len, room)
	}
	var oh fuseproto.OutHeader
	if !fuseproto.Decode(u.Data, &oh) || oh.Len != u.Len {
		x.t.Fatalf("reply header %+v for %d used bytes", oh, u.Len)
	}
	if unique != 0 && oh.Unique != unique {
		x.t.Fatalf("reply unique %d, want %d", oh.Unique, unique)
	}
	if oh.Error != 0 && oh.Len != fuseproto.OutHeaderSize {
		x.t.Fatalf("error reply of %d bytes", oh.Len)
	}
	x.last = u.Data[fuseproto.OutHeaderSize:]
	return errnoA(syscall.Errno(-oh.Error))
}

// chain publishes a chain of readable buffers out and writable buffers in
// on vq and returns the answer; unique is the request's, or 0 to skip that
// check.
func (x *hx) chain(vq *vutest.VQ, out [][]byte, in []uint32, o vqtest.ChainOpts, unique uint64) answer {
	x.t.Helper()
	// As Linux does with EVENT_IDX: notify me on the next used element.
	vq.Driver.SetUsedEvent(vq.Driver.UsedIdx())
	head := vq.Add(out, in, o)
	u, err := vq.Wait()
	if err != nil {
		x.t.Fatal(err)
	}
	if u.Head != head {
		x.t.Fatalf("used head %d, want %d", u.Head, head)
	}
	var room uint32
	for _, n := range in {
		room += n
	}
	return x.used(u, room, unique)
}

// header returns a fuse_in_header for op on node whose length counts the
// header and n more bytes.
func (x *hx) header(op fuseproto.Opcode, node uint64, n int) (fuseproto.InHeader, []byte) {
	h := fuseproto.InHeader{Len: uint32(fuseproto.InHeaderSize + n), Opcode: op, Unique: x.e.uniq.Add(2), NodeID: node, PID: 1}
	return h, enc(&h)
}

// fuseRoom sends op on node with args (each in its own readable buffer,
// indirect when they are large) on vq, with room bytes of writable room
// after the reply header's buffer.
func (x *hx) fuseRoom(vq *vutest.VQ, op fuseproto.Opcode, node uint64, room uint32, args ...[]byte) answer {
	x.t.Helper()
	n := 0
	for _, a := range args {
		n += len(a)
	}
	h, hb := x.header(op, node, n)
	in := []uint32{fuseproto.OutHeaderSize}
	if room > 0 {
		in = append(in, room)
	}
	return x.chain(vq, append([][]byte{hb}, args...), in, vqtest.ChainOpts{Indirect: n > 4096}, h.Unique)
}

// fuse is fuseRoom on request queue 1 with 4 KiB of room.
func (x *hx) fuse(op fuseproto.Opcode, node uint64, args ...[]byte) answer {
	x.t.Helper()
	return x.fuseRoom(x.rq, op, node, 4096, args...)
}

// mustOK fails unless a is a successful reply.
func (x *hx) mustOK(what string, a answer) {
	x.t.Helper()
	if a != success {
		x.t.Fatalf("%s: %v", what, a)
	}
}

// entry decodes the EntryOut of the last reply.
func (x *hx) entry() fuseproto.EntryOut {
	var eo fuseproto.EntryOut
	fuseproto.Decode(x.last, &eo)
	return eo
}

// lookup looks name up in parent and returns its node ID.
func (x *hx) lookup(parent uint64, name string) uint64 {
	x.t.Helper()
	x.mustOK("LOOKUP "+name, x.fuse(fuseproto.OpLookup, parent, cstr(name)))
	return x.entry().NodeID
}

// open opens node (a file, or with dir a directory) and returns the fh.
func (x *hx) open(node uint64, dir bool) uint64 {
	x.t.Helper()
	op := fuseproto.OpOpen
	if dir {
		op = fuseproto.OpOpendir
	}
	in := fuseproto.OpenIn{Flags: uint32(os.O_RDWR)}
	if dir {
		in.Flags = uint32(os.O_RDONLY)
	}
	x.mustOK("OPEN", x.fuse(op, node, enc(&in)))
	var oo fuseproto.OpenOut
	fuseproto.Decode(x.last, &oo)
	return oo.Fh
}

// forget sends FORGET of n lookups of node on the high-priority queue.
func (x *hx) forget(node, n uint64) answer {
	x.t.Helper()
	h, hb := x.header(fuseproto.OpForget, node, 8)
	in := fuseproto.ForgetIn{Nlookup: n}
	return x.chain(x.hi, [][]byte{hb, enc(&in)}, nil, vqtest.ChainOpts{}, h.Unique)
}

// hostFile checks the content of a file in the share.
func (x *hx) hostFile(name string, want []byte) {
	x.t.Helper()
	got, err := os.ReadFile(filepath.Join(x.d.share, name))
	if err != nil || !bytes.Equal(got, want) {
		x.t.Fatalf("share/%s: %d bytes, %v", name, len(got), err)
	}
}

// noHostFile checks that name does not exist in the share.
func (x *hx) noHostFile(name string) {
	x.t.Helper()
	if _, err := os.Lstat(filepath.Join(x.d.share, name)); !errors.Is(err, fs.ErrNotExist) {
		x.t.Fatalf("share/%s exists (%v)", name, err)
	}
}

// vhost sends a vhost-user message (with NEED_REPLY as the front-end has
// it) and returns the answer: the ack or nack, or the dropped connection.
func (x *hx) vhost(req vhostuser.Request, payload []byte, fds ...int) answer {
	x.t.Helper()
	_, err := x.e.fe.Do(req, payload, fds...)
	switch {
	case errors.Is(err, vutest.ErrNack):
		return nacked
	case err == nil && x.e.fe.NeedReply:
		return acked
	case err == nil:
		// No reply asked for: a round trip tells whether the
		// connection survived.
		if _, err := x.e.fe.Do(vhostuser.GetFeatures, nil); err == nil {
			return acked
		}
	}
	return x.waitDropped()
}

// waitDropped waits for the back-end to end the connection with an error.
func (x *hx) waitDropped() answer {
	x.t.Helper()
	select {
	case err := <-x.e.done:
		x.e.done <- err
		if err == nil {
			x.t.Fatal("ServeConn returned nil: the connection ended but was not dropped")
		}
		return dropped
	case <-time.After(vutest.Timeout):
		x.t.Fatal("the connection was not dropped")
		return answer{}
	}
}

// waitBroken waits for the device to report queue index broken.
func (x *hx) waitBroken(index int) answer {
	x.t.Helper()
	want := fmt.Sprintf("queue=%d", index)
	deadline := time.Now().Add(vutest.Timeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(x.d.log.since(x.logMark), "\n") {
			if strings.Contains(l, "virtqueue broken") && strings.Contains(l, want) {
				return broken
			}
		}
		time.Sleep(time.Millisecond)
	}
	x.t.Fatalf("queue %d not reported broken; log:\n%s", index, x.d.log.since(x.logMark))
	return answer{}
}

// stillServes checks, after answer a, that the daemon serves a normal
// request where the specs say it must: on the same queue after a reply or
// a refused chain, on the other request queue and then on the same queue
// set up again after a broken queue, on the same connection after a
// vhost-user ack or nack, on a fresh connection after a dropped one.
func (x *hx) stillServes(a answer) {
	x.t.Helper()
	check := func(x *hx, vq *vutest.VQ) {
		x.t.Helper()
		var gi fuseproto.GetattrIn
		x.mustOK("GETATTR", x.fuseRoom(vq, fuseproto.OpGetattr, fuseproto.RootID, fuseproto.AttrOutSize, enc(&gi)))
		x.mustOK("LOOKUP", x.fuseRoom(vq, fuseproto.OpLookup, fuseproto.RootID, fuseproto.EntryOutSize, cstr("file")))
		node := x.entry().NodeID
		oi := fuseproto.OpenIn{Flags: uint32(os.O_RDONLY)}
		x.mustOK("OPEN", x.fuseRoom(vq, fuseproto.OpOpen, node, 16, enc(&oi)))
		var oo fuseproto.OpenOut
		fuseproto.Decode(x.last, &oo)
		ri := fuseproto.ReadIn{Fh: oo.Fh, Size: 100}
		x.mustOK("READ", x.fuseRoom(vq, fuseproto.OpRead, node, 100, enc(&ri)))
		if !bytes.Equal(x.last, pattern(hostileFileSize, 5)[:100]) {
			x.t.Fatal("READ after the hostile input returned other data")
		}
		rel := fuseproto.ReleaseIn{Fh: oo.Fh}
		x.mustOK("RELEASE", x.fuseRoom(vq, fuseproto.OpRelease, node, 0, enc(&rel)))
		if a := x.forget(node, 1); a != noReply {
			x.t.Fatalf("FORGET: %v", a)
		}
	}
	switch a.kind {
	case aErrno, aNoReply, aAck, aNack:
		check(x, x.rq)
	case aBroken:
		check(x, x.rq2)
		// The driver resets the queue: stop it, lay the ring out again
		// and start it.
		x.rq.GetBase()
		x.rq = x.e.fe.NewVQ(1, 64)
		x.rq.SetupVring(0)
		x.rq.Enable(true)
		check(x, x.rq)
	case aDropped:
		y := x.d.connect(x.t)
		check(y, y.rq)
		if err := y.e.end(); err != nil {
			x.t.Fatalf("the fresh connection ended with %v", err)
		}
	}
}

// hostileRow is one hostile input: run sends it and returns the answer
// (checking whatever else it did), want is the answer the specs call for.
type hostileRow struct {
	name string
	run  func(x *hx) answer
	want answer
}

// TestHostileGuestTable runs every row of hostileRows on one daemon, each
// on a connection of its own.
func TestHostileGuestTable(t *testing.T) {
	d := newHostileDaemon(t)
	t.Run("warm-up", func(t *testing.T) {
		x := d.connect(t)
		x.stillServes(success)
		x.e.end()
	})
	rows := hostileRows()
	seen := map[string]bool{}
	for _, row := range rows {
		if seen[row.name] {
			t.Fatalf("two rows named %q", row.name)
		}
		seen[row.name] = true
		t.Run(row.name, func(t *testing.T) {
			fds, goroutines := openFDs(t), runtime.NumGoroutine()
			t.Run("session", func(t *testing.T) {
				x := d.connect(t)
				got := row.run(x)
				if got != row.want {
					t.Fatalf("answer: %v, want %v", got, row.want)
				}
				x.stillServes(got)
				if got.kind != aDropped {
					if err := x.e.end(); err != nil {
						t.Fatalf("ServeConn: %v", err)
					}
				}
				if l := d.log.since(x.logMark); strings.Contains(l, "panic") || strings.Contains(l, "fault") {
					t.Fatalf("the daemon panicked or faulted:\n%s", l)
				}
			})
			d.checkContainment(t)
			if after := openFDs(t); after != fds {
				t.Errorf("%d fds open after the session, %d before", after, fds)
			}
			deadline := time.Now().Add(3 * time.Second)
			for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > goroutines {
				t.Errorf("%d goroutines after the session, %d before", n, goroutines)
			}
		})
	}
	t.Logf("%d rows", len(rows))
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func hostileRows() []hostileRow {
	var rows []hostileRow
	for _, part := range [][]hostileRow{nameRows(), handleRows(), forgetRows(), lengthRows(), chainRows(), vhostRows()} {
		rows = append(rows, part...)
	}
	return rows
}

const root = uint64(fuseproto.RootID)

// symlinkNode looks up share/escape, a symlink to ../outside.
func (x *hx) symlinkNode() uint64 {
	x.t.Helper()
	n := x.lookup(root, "escape")
	if x.entry().Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		x.t.Fatalf("escape has mode %#o", x.entry().Attr.Mode)
	}
	return n
}

// nameRows send names that are not one path component, or that lie about
// their length, to every operation that takes a name.
func nameRows() []hostileRow {
	long := strings.Repeat("n", 256)
	longest := strings.Repeat("n", 255)
	huge := strings.Repeat("n", 5000)
	mkdir := func(name []byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.MkdirIn{Mode: 0o755}
			return x.fuse(fuseproto.OpMkdir, root, enc(&in), name)
		}
	}
	create := func(name []byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o644}
			return x.fuse(fuseproto.OpCreate, root, enc(&in), name)
		}
	}
	mknod := func(name []byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.MknodIn{Mode: syscall.S_IFIFO | 0o644}
			return x.fuse(fuseproto.OpMknod, root, enc(&in), name)
		}
	}
	rename := func(names ...[]byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.RenameIn{Newdir: root}
			return x.fuse(fuseproto.OpRename, root, append([][]byte{enc(&in)}, names...)...)
		}
	}
	rename2 := func(flags uint32, names ...[]byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.Rename2In{Newdir: root, Flags: flags}
			return x.fuse(fuseproto.OpRename2, root, append([][]byte{enc(&in)}, names...)...)
		}
	}
	link := func(name []byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.LinkIn{OldNodeID: x.lookup(root, "file")}
			return x.fuse(fuseproto.OpLink, root, enc(&in), name)
		}
	}
	symlink := func(name, target []byte) func(x *hx) answer {
		return func(x *hx) answer { return x.fuse(fuseproto.OpSymlink, root, name, target) }
	}
	lookup := func(name []byte) func(x *hx) answer {
		return func(x *hx) answer { return x.fuse(fuseproto.OpLookup, root, name) }
	}
	isRoot := func(x *hx, a answer) answer {
		x.t.Helper()
		if a == success && x.entry().NodeID != root {
			x.t.Fatalf("entry for node %d, want the root", x.entry().NodeID)
		}
		return a
	}
	return []hostileRow{
		// LOOKUP: "." and ".." are answered (export support), never
		// above the root.
		{"LOOKUP name with a slash", lookup(cstr("a/b")), eINVAL},
		{"LOOKUP dotdot-slash path to outside", lookup(cstr("../outside")), eINVAL},
		{"LOOKUP a lone slash", lookup(cstr("/")), eINVAL},
		{"LOOKUP .. of the root is the root", func(x *hx) answer { return isRoot(x, lookup(cstr(".."))(x)) }, success},
		{"LOOKUP . of the root is the root", func(x *hx) answer { return isRoot(x, lookup(cstr("."))(x)) }, success},
		{"LOOKUP .. of a subdirectory is the root", func(x *hx) answer {
			dir := x.lookup(root, "dir")
			return isRoot(x, x.fuse(fuseproto.OpLookup, dir, cstr("..")))
		}, success},
		{"LOOKUP with an embedded NUL ends the name there", func(x *hx) answer {
			a := lookup([]byte("file\x00../outside/sentinel\x00"))(x)
			if a == success && x.entry().Attr.Size != hostileFileSize {
				x.t.Fatalf("looked up a file of %d bytes, not share/file", x.entry().Attr.Size)
			}
			return a
		}, success},
		{"LOOKUP name without NUL terminator", lookup(nameless("file")), eINVAL},
		{"LOOKUP empty name", lookup(cstr("")), eINVAL},
		{"LOOKUP 255-byte name", lookup(cstr(longest)), errnoA(syscall.ENOENT)},
		{"LOOKUP 256-byte name", lookup(cstr(long)), eTOOLONG},
		{"LOOKUP 5000-byte name", lookup(cstr(huge)), eTOOLONG},
		{"LOOKUP name longer than the message", func(x *hx) answer {
			// The header counts a 300-byte name; the chain carries 5.
			h, _ := x.header(fuseproto.OpLookup, root, 301)
			return x.chain(x.rq, [][]byte{enc(&h), cstr("file")}, []uint32{16, 128}, vqtest.ChainOpts{}, h.Unique)
		}, eIO},
		{"LOOKUP in a symlink to outside the share", func(x *hx) answer {
			return x.fuse(fuseproto.OpLookup, x.symlinkNode(), cstr("sentinel"))
		}, eNOTDIR},
		{"LOOKUP in a regular file", func(x *hx) answer {
			return x.fuse(fuseproto.OpLookup, x.lookup(root, "file"), cstr("x"))
		}, eNOTDIR},
		{"LOOKUP of a symlink to outside returns the link", func(x *hx) answer {
			x.symlinkNode()
			return success
		}, success},

		{"CREATE ..", create(cstr("..")), eEXIST},
		{"CREATE .", create(cstr(".")), eEXIST},
		{"CREATE name with a slash", create(cstr("a/b")), eINVAL},
		{"CREATE dotdot-slash path to outside", create(cstr("../outside/created")), eINVAL},
		{"CREATE empty name", create(cstr("")), eINVAL},
		{"CREATE name without NUL terminator", create(nameless("c")), eINVAL},
		{"CREATE 256-byte name", create(cstr(long)), eTOOLONG},
		{"CREATE with an embedded NUL creates the first part only", func(x *hx) answer {
			a := create([]byte("c1\x00../outside/c1\x00"))(x)
			x.hostFile("c1", nil)
			return a
		}, success},
		{"CREATE over a symlink to outside", create(cstr("escape")), errnoA(syscall.ELOOP)},
		{"CREATE in a symlink to outside", func(x *hx) answer {
			in := fuseproto.CreateIn{Flags: uint32(os.O_RDWR | os.O_CREATE), Mode: 0o644}
			return x.fuse(fuseproto.OpCreate, x.symlinkNode(), enc(&in), cstr("created"))
		}, eNOTDIR},
		{"CREATE with fuse_create_in cut short", func(x *hx) answer {
			return x.fuse(fuseproto.OpCreate, root, make([]byte, 8))
		}, eINVAL},

		{"MKDIR ..", mkdir(cstr("..")), eEXIST},
		{"MKDIR .", mkdir(cstr(".")), eEXIST},
		{"MKDIR name with a slash", mkdir(cstr("a/b")), eINVAL},
		{"MKDIR dotdot-slash path to outside", mkdir(cstr("../outside/made")), eINVAL},
		{"MKDIR empty name", mkdir(cstr("")), eINVAL},
		{"MKDIR name without NUL terminator", mkdir(nameless("m")), eINVAL},
		{"MKDIR 256-byte name", mkdir(cstr(long)), eTOOLONG},
		{"MKDIR name longer than the message", func(x *hx) answer {
			in := fuseproto.MkdirIn{Mode: 0o755}
			h, _ := x.header(fuseproto.OpMkdir, root, 8+256)
			return x.chain(x.rq, [][]byte{enc(&h), enc(&in), cstr("m2")}, []uint32{16, 128}, vqtest.ChainOpts{}, h.Unique)
		}, eIO},
		{"MKDIR with an embedded NUL creates the first part only", func(x *hx) answer {
			a := mkdir([]byte("m1\x00../../outside/m1\x00"))(x)
			if fi, err := os.Stat(filepath.Join(x.d.share, "m1")); err != nil || !fi.IsDir() {
				x.t.Fatalf("share/m1: %v", err)
			}
			return a
		}, success},
		{"MKDIR over a symlink to outside", mkdir(cstr("escape")), eEXIST},
		{"MKDIR in a symlink to outside", func(x *hx) answer {
			in := fuseproto.MkdirIn{Mode: 0o755}
			return x.fuse(fuseproto.OpMkdir, x.symlinkNode(), enc(&in), cstr("made"))
		}, eNOTDIR},

		{"MKNOD ..", mknod(cstr("..")), eEXIST},
		{"MKNOD .", mknod(cstr(".")), eEXIST},
		{"MKNOD dotdot-slash path to outside", mknod(cstr("../outside/fifo")), eINVAL},
		{"MKNOD with an embedded NUL creates the first part only", func(x *hx) answer {
			a := mknod([]byte("f1\x00../outside/f1\x00"))(x)
			if fi, err := os.Lstat(filepath.Join(x.d.share, "f1")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
				x.t.Fatalf("share/f1: %v", err)
			}
			return a
		}, success},
		{"MKNOD name with a slash", mknod(cstr("a/b")), eINVAL},
		{"MKNOD empty name", mknod(cstr("")), eINVAL},
		{"MKNOD name without NUL terminator", mknod(nameless("f")), eINVAL},
		{"MKNOD 256-byte name", mknod(cstr(long)), eTOOLONG},
		{"MKNOD in a symlink to outside", func(x *hx) answer {
			in := fuseproto.MknodIn{Mode: syscall.S_IFIFO | 0o644}
			return x.fuse(fuseproto.OpMknod, x.symlinkNode(), enc(&in), cstr("fifo"))
		}, eNOTDIR},
		{"MKNOD with fuse_mknod_in cut short", func(x *hx) answer {
			return x.fuse(fuseproto.OpMknod, root, make([]byte, 4))
		}, eINVAL},

		{"RENAME to a dotdot-slash path to outside", rename(cstr("file"), cstr("../outside/file")), eINVAL},
		{"RENAME from a dotdot-slash path to outside", rename(cstr("../outside/sentinel"), cstr("stolen")), eINVAL},
		{"RENAME .. to x", rename(cstr(".."), cstr("x")), eBUSY},
		{"RENAME file to .", rename(cstr("file"), cstr(".")), eBUSY},
		{"RENAME file to empty name", rename(cstr("file"), cstr("")), eINVAL},
		{"RENAME without the new name", rename(cstr("file")), eINVAL},
		{"RENAME new name without NUL terminator", rename(cstr("file"), nameless("g")), eINVAL},
		{"RENAME to a 256-byte name", rename(cstr("file"), cstr(long)), eTOOLONG},
		{"RENAME into a symlink to outside", func(x *hx) answer {
			in := fuseproto.RenameIn{Newdir: x.symlinkNode()}
			return x.fuse(fuseproto.OpRename, root, enc(&in), cstr("file"), cstr("file"))
		}, eNOTDIR},
		{"RENAME into nodeid 0", func(x *hx) answer {
			in := fuseproto.RenameIn{}
			return x.fuse(fuseproto.OpRename, root, enc(&in), cstr("file"), cstr("file"))
		}, eBADF},
		{"RENAME with fuse_rename_in cut short", func(x *hx) answer {
			return x.fuse(fuseproto.OpRename, root, make([]byte, 4))
		}, eINVAL},
		{"RENAME2 to a dotdot-slash path to outside", rename2(0, cstr("file"), cstr("../outside/file")), eINVAL},
		{"RENAME2 exchange with ..", rename2(unix.RENAME_EXCHANGE, cstr("file"), cstr("..")), eBUSY},
		{"RENAME2 new name with an embedded NUL", func(x *hx) answer {
			// The new name ends at its first NUL; the bytes after it
			// are ignored.
			a := rename2(unix.RENAME_NOREPLACE, cstr("file"), []byte("g\x00../outside/g\x00"))(x)
			if a == success {
				x.hostFile("g", pattern(hostileFileSize, 5))
				if err := os.Rename(filepath.Join(x.d.share, "g"), filepath.Join(x.d.share, "file")); err != nil {
					x.t.Fatal(err)
				}
			}
			return a
		}, success},
		{"RENAME2 unknown flags", rename2(1<<20, cstr("file"), cstr("h")), eINVAL},
		{"RENAME2 to .", rename2(0, cstr("file"), cstr(".")), eBUSY},
		{"RENAME2 to empty name", rename2(0, cstr("file"), cstr("")), eINVAL},
		{"RENAME2 old name without NUL terminator", rename2(0, nameless("file")), eINVAL},
		{"RENAME2 to a 256-byte name", rename2(0, cstr("file"), cstr(long)), eTOOLONG},

		{"LINK to a dotdot-slash path to outside", link(cstr("../outside/link")), eINVAL},
		{"LINK to ..", link(cstr("..")), eEXIST},
		{"LINK to .", link(cstr(".")), eEXIST},
		{"LINK with an embedded NUL creates the first part only", func(x *hx) answer {
			a := link([]byte("l4\x00../outside/l4\x00"))(x)
			x.hostFile("l4", pattern(hostileFileSize, 5))
			return a
		}, success},
		{"LINK to empty name", link(cstr("")), eINVAL},
		{"LINK name without NUL terminator", link(nameless("l")), eINVAL},
		{"LINK to a 256-byte name", link(cstr(long)), eTOOLONG},
		{"LINK of nodeid 0", func(x *hx) answer {
			in := fuseproto.LinkIn{}
			return x.fuse(fuseproto.OpLink, root, enc(&in), cstr("l0"))
		}, eBADF},
		{"LINK of a nodeid never given", func(x *hx) answer {
			in := fuseproto.LinkIn{OldNodeID: 1 << 40}
			return x.fuse(fuseproto.OpLink, root, enc(&in), cstr("l1"))
		}, eBADF},
		{"LINK of the root directory", func(x *hx) answer {
			in := fuseproto.LinkIn{OldNodeID: root}
			return x.fuse(fuseproto.OpLink, root, enc(&in), cstr("l2"))
		}, errnoA(syscall.EPERM)},
		{"LINK into a symlink to outside", func(x *hx) answer {
			in := fuseproto.LinkIn{OldNodeID: x.lookup(root, "file")}
			return x.fuse(fuseproto.OpLink, x.symlinkNode(), enc(&in), cstr("l3"))
		}, eNOTDIR},

		{"SYMLINK name with a slash", symlink(cstr("a/b"), cstr("t")), eINVAL},
		{"SYMLINK named ..", symlink(cstr(".."), cstr("t")), eEXIST},
		{"SYMLINK named .", symlink(cstr("."), cstr("t")), eEXIST},
		{"SYMLINK dotdot-slash path to outside", symlink(cstr("../outside/link"), cstr("t")), eINVAL},
		{"SYMLINK name with an embedded NUL ends there", func(x *hx) answer {
			// The bytes after the NUL are the target.
			a := symlink([]byte("s1\x00../outside\x00"), cstr("ignored"))(x)
			if target, err := os.Readlink(filepath.Join(x.d.share, "s1")); err != nil || target != "../outside" {
				x.t.Fatalf("share/s1 -> %q, %v", target, err)
			}
			return a
		}, success},
		{"SYMLINK named empty", symlink(cstr(""), cstr("t")), eINVAL},
		{"SYMLINK named 256 bytes", symlink(cstr(long), cstr("t")), eTOOLONG},
		{"SYMLINK without any NUL", symlink(nameless("s"), nil), eINVAL},
		{"SYMLINK target without NUL terminator", symlink(cstr("s"), nameless("t")), errnoA(syscall.ENOENT)},
		{"SYMLINK empty target", symlink(cstr("s"), cstr("")), errnoA(syscall.ENOENT)},
		{"SYMLINK 5000-byte target", symlink(cstr("s"), cstr(huge)), eTOOLONG},
		{"SYMLINK pointing outside is stored, never followed", func(x *hx) answer {
			a := symlink(cstr("out"), cstr("../outside/sentinel"))(x)
			if a != success {
				return a
			}
			node := x.entry().NodeID
			in := fuseproto.OpenIn{Flags: uint32(os.O_RDWR | os.O_TRUNC)}
			if a := x.fuse(fuseproto.OpOpen, node, enc(&in)); a != errnoA(syscall.ELOOP) {
				x.t.Fatalf("OPEN of the symlink: %v", a)
			}
			x.mustOK("READLINK", x.fuse(fuseproto.OpReadlink, node))
			if string(x.last) != "../outside/sentinel" {
				x.t.Fatalf("READLINK: %q", x.last)
			}
			return a
		}, success},

		{"TMPFILE with a name is unnamed", func(x *hx) answer {
			in := fuseproto.CreateIn{Flags: uint32(os.O_RDWR), Mode: 0o644}
			a := x.fuse(fuseproto.OpTmpfile, root, enc(&in), cstr("../outside/tmp"))
			if a == success {
				var eo fuseproto.EntryOut
				var oo fuseproto.OpenOut
				fuseproto.Decode(x.last, &eo)
				fuseproto.Decode(x.last[fuseproto.EntryOutSize:], &oo)
				data := []byte("unnamed")
				wi := fuseproto.WriteIn{Fh: oo.Fh, Size: uint32(len(data))}
				x.mustOK("WRITE", x.fuse(fuseproto.OpWrite, eo.NodeID, enc(&wi), data))
				x.noHostFile("tmp")
			}
			return a
		}, success},
		{"TMPFILE in a symlink to outside", func(x *hx) answer {
			in := fuseproto.CreateIn{Flags: uint32(os.O_RDWR), Mode: 0o644}
			return x.fuse(fuseproto.OpTmpfile, x.symlinkNode(), enc(&in), cstr("/"))
		}, eNOTDIR},
		{"TMPFILE with fuse_create_in cut short", func(x *hx) answer {
			return x.fuse(fuseproto.OpTmpfile, root, make([]byte, 8))
		}, eINVAL},

		{"UNLINK ..", func(x *hx) answer { return x.fuse(fuseproto.OpUnlink, root, cstr("..")) }, errnoA(syscall.EISDIR)},
		{"UNLINK dotdot-slash path to outside", func(x *hx) answer { return x.fuse(fuseproto.OpUnlink, root, cstr("../outside/sentinel")) }, eINVAL},
		{"UNLINK in a symlink to outside", func(x *hx) answer {
			return x.fuse(fuseproto.OpUnlink, x.symlinkNode(), cstr("sentinel"))
		}, eNOTDIR},
		{"RMDIR ..", func(x *hx) answer { return x.fuse(fuseproto.OpRmdir, root, cstr("..")) }, errnoA(syscall.ENOTEMPTY)},
		{"RMDIR .", func(x *hx) answer { return x.fuse(fuseproto.OpRmdir, root, cstr(".")) }, eINVAL},
	}
}

// nameless returns s without a NUL terminator.
func nameless(s string) []byte { return []byte(s) }

// bogusFh is a file handle the daemon never gave out.
const bogusFh = 0x7357_0000_dead

// handleRows use nodeids and file handles the guest never got, or already
// gave back.
func handleRows() []hostileRow {
	getattr := func(node uint64) func(x *hx) answer {
		return func(x *hx) answer {
			var in fuseproto.GetattrIn
			return x.fuse(fuseproto.OpGetattr, node, enc(&in))
		}
	}
	// withFile runs op on share/file's node with a bogus handle.
	withFile := func(op fuseproto.Opcode, arg func(fh uint64) []byte, extra ...[]byte) func(x *hx) answer {
		return func(x *hx) answer {
			node := x.lookup(root, "file")
			return x.fuse(op, node, append([][]byte{arg(bogusFh)}, extra...)...)
		}
	}
	withDir := func(op fuseproto.Opcode, arg func(fh uint64) []byte) func(x *hx) answer {
		return func(x *hx) answer { return x.fuse(op, root, arg(bogusFh)) }
	}
	read := func(fh uint64) []byte { in := fuseproto.ReadIn{Fh: fh, Size: 100}; return enc(&in) }
	write := func(fh uint64) []byte { in := fuseproto.WriteIn{Fh: fh, Size: 3}; return enc(&in) }
	release := func(fh uint64) []byte { in := fuseproto.ReleaseIn{Fh: fh}; return enc(&in) }
	fsync := func(fh uint64) []byte { in := fuseproto.FsyncIn{Fh: fh}; return enc(&in) }
	flush := func(fh uint64) []byte { in := fuseproto.FlushIn{Fh: fh, LockOwner: 7}; return enc(&in) }
	lseek := func(fh uint64) []byte { in := fuseproto.LseekIn{Fh: fh, Whence: 3}; return enc(&in) }
	falloc := func(fh uint64) []byte { in := fuseproto.FallocateIn{Fh: fh, Length: 10}; return enc(&in) }
	return []hostileRow{
		{"GETATTR nodeid 0", getattr(0), eBADF},
		{"GETATTR nodeid never given", getattr(1 << 40), eBADF},
		{"GETATTR nodeid 2^64-1", getattr(^uint64(0)), eBADF},
		{"GETATTR nodeid already forgotten", func(x *hx) answer {
			node := x.lookup(root, "file")
			if a := x.forget(node, 1); a != noReply {
				x.t.Fatalf("FORGET: %v", a)
			}
			return getattr(node)(x)
		}, eBADF},
		{"GETATTR with a bogus fh uses the nodeid", func(x *hx) answer {
			in := fuseproto.GetattrIn{GetattrFlags: fuseproto.GetattrFh, Fh: bogusFh}
			return x.fuse(fuseproto.OpGetattr, x.lookup(root, "file"), enc(&in))
		}, success},
		{"SETATTR with a bogus fh uses the nodeid", func(x *hx) answer {
			in := fuseproto.SetattrIn{Valid: fuseproto.FattrFh | fuseproto.FattrMode, Fh: bogusFh, Mode: 0o640}
			return x.fuse(fuseproto.OpSetattr, x.lookup(root, "file"), enc(&in))
		}, success},
		{"SETATTR of nodeid 0", func(x *hx) answer {
			in := fuseproto.SetattrIn{Valid: fuseproto.FattrMode, Mode: 0o777}
			return x.fuse(fuseproto.OpSetattr, 0, enc(&in))
		}, eBADF},
		{"OPEN nodeid never given", func(x *hx) answer {
			in := fuseproto.OpenIn{Flags: uint32(os.O_RDWR)}
			return x.fuse(fuseproto.OpOpen, 1<<40, enc(&in))
		}, eBADF},
		{"OPENDIR nodeid 0", func(x *hx) answer {
			var in fuseproto.OpenIn
			return x.fuse(fuseproto.OpOpendir, 0, enc(&in))
		}, eBADF},
		{"LOOKUP in nodeid 0", func(x *hx) answer { return x.fuse(fuseproto.OpLookup, 0, cstr("file")) }, eBADF},
		{"MKDIR in a nodeid never given", func(x *hx) answer {
			in := fuseproto.MkdirIn{Mode: 0o755}
			return x.fuse(fuseproto.OpMkdir, 1<<40, enc(&in), cstr("m3"))
		}, eBADF},
		{"READ with a valid fh and nodeid 0 is served from the fh", func(x *hx) answer {
			fh := x.open(x.lookup(root, "file"), false)
			return x.fuse(fuseproto.OpRead, 0, read(fh))
		}, success},
		{"READ bogus fh", withFile(fuseproto.OpRead, read), eBADF},
		{"WRITE bogus fh", withFile(fuseproto.OpWrite, write, []byte("abc")), eBADF},
		{"FSYNC bogus fh", withFile(fuseproto.OpFsync, fsync), eBADF},
		{"FLUSH bogus fh", withFile(fuseproto.OpFlush, flush), eBADF},
		{"LSEEK bogus fh", withFile(fuseproto.OpLseek, lseek), eBADF},
		{"FALLOCATE bogus fh", withFile(fuseproto.OpFallocate, falloc), eBADF},
		{"RELEASE bogus fh", withFile(fuseproto.OpRelease, release), eBADF},
		{"READDIR bogus fh", withDir(fuseproto.OpReaddir, read), eBADF},
		{"READDIRPLUS bogus fh", withDir(fuseproto.OpReaddirplus, read), eBADF},
		{"FSYNCDIR bogus fh", withDir(fuseproto.OpFsyncdir, fsync), eBADF},
		{"RELEASEDIR bogus fh", withDir(fuseproto.OpReleasedir, release), eBADF},
		{"COPY_FILE_RANGE bogus fhs", func(x *hx) answer {
			in := fuseproto.CopyFileRangeIn{FhIn: bogusFh, FhOut: bogusFh + 1, Len: 10}
			return x.fuse(fuseproto.OpCopyFileRange64, x.lookup(root, "file"), enc(&in))
		}, eBADF},
		{"READ a released fh", func(x *hx) answer {
			node := x.lookup(root, "file")
			fh := x.open(node, false)
			x.mustOK("RELEASE", x.fuse(fuseproto.OpRelease, node, release(fh)))
			if a := x.fuse(fuseproto.OpRelease, node, release(fh)); a != eBADF {
				x.t.Fatalf("second RELEASE: %v", a)
			}
			return x.fuse(fuseproto.OpRead, node, read(fh))
		}, eBADF},
		{"READ with a directory's fh", func(x *hx) answer {
			fh := x.open(root, true)
			return x.fuse(fuseproto.OpRead, x.lookup(root, "file"), read(fh))
		}, eBADF},
		{"READDIR with a file's fh", func(x *hx) answer {
			fh := x.open(x.lookup(root, "file"), false)
			return x.fuse(fuseproto.OpReaddir, root, read(fh))
		}, eBADF},
		{"OPEN of a symlink to outside", func(x *hx) answer {
			in := fuseproto.OpenIn{Flags: uint32(os.O_RDONLY)}
			return x.fuse(fuseproto.OpOpen, x.symlinkNode(), enc(&in))
		}, errnoA(syscall.ELOOP)},
		{"OPENDIR of a symlink to outside", func(x *hx) answer {
			in := fuseproto.OpenIn{Flags: uint32(os.O_RDONLY)}
			return x.fuse(fuseproto.OpOpendir, x.symlinkNode(), enc(&in))
		}, eNOTDIR},
	}
}

// batchForget sends BATCH_FORGET on the high-priority queue with count
// (which may lie) and the entries.
func (x *hx) batchForget(count uint32, ents ...fuseproto.ForgetOne) answer {
	x.t.Helper()
	in := fuseproto.BatchForgetIn{Count: count}
	args := [][]byte{enc(&in)}
	n := 8
	for i := range ents {
		args = append(args, enc(&ents[i]))
		n += 16
	}
	h, hb := x.header(fuseproto.OpBatchForget, 0, n)
	return x.chain(x.hi, append([][]byte{hb}, args...), nil, vqtest.ChainOpts{}, h.Unique)
}

// forgetRows forget more than was looked up, nodes never given, the root.
func forgetRows() []hostileRow {
	lookups := func(x *hx, name string, n int) uint64 {
		x.t.Helper()
		var node uint64
		for range n {
			node = x.lookup(root, name)
		}
		return node
	}
	gone := func(x *hx, node uint64) {
		x.t.Helper()
		var in fuseproto.GetattrIn
		if a := x.fuse(fuseproto.OpGetattr, node, enc(&in)); a != eBADF {
			x.t.Fatalf("GETATTR of a node forgotten: %v", a)
		}
	}
	alive := func(x *hx, node uint64) {
		x.t.Helper()
		var in fuseproto.GetattrIn
		x.mustOK("GETATTR", x.fuse(fuseproto.OpGetattr, node, enc(&in)))
	}
	return []hostileRow{
		{"FORGET nodeid never given", func(x *hx) answer { return x.forget(1<<40, 1) }, noReply},
		{"FORGET nodeid 0", func(x *hx) answer { return x.forget(0, 1) }, noReply},
		{"FORGET the root 2^64-1 times", func(x *hx) answer {
			a := x.forget(root, ^uint64(0))
			alive(x, root)
			return a
		}, noReply},
		{"FORGET more than looked up", func(x *hx) answer {
			node := lookups(x, "file", 2)
			a := x.forget(node, 1000)
			gone(x, node)
			// A new lookup gives the file a fresh nodeid.
			if again := x.lookup(root, "file"); again == node {
				x.t.Fatalf("nodeid %d reused", node)
			}
			return a
		}, noReply},
		{"FORGET twice", func(x *hx) answer {
			node := lookups(x, "file", 1)
			x.forget(node, 1)
			return x.forget(node, 1)
		}, noReply},
		{"FORGET with fuse_forget_in cut short", func(x *hx) answer {
			node := lookups(x, "file", 1)
			h, hb := x.header(fuseproto.OpForget, node, 4)
			a := x.chain(x.hi, [][]byte{hb, {1, 0, 0, 0}}, nil, vqtest.ChainOpts{}, h.Unique)
			alive(x, node)
			return a
		}, noReply},
		{"FORGET with room for a reply", func(x *hx) answer {
			h, hb := x.header(fuseproto.OpForget, 1<<40, 8)
			in := fuseproto.ForgetIn{Nlookup: 1}
			return x.chain(x.hi, [][]byte{hb, enc(&in)}, []uint32{64}, vqtest.ChainOpts{}, h.Unique)
		}, noReply},
		{"FORGET on a request queue", func(x *hx) answer {
			node := lookups(x, "file", 1)
			h, hb := x.header(fuseproto.OpForget, node, 8)
			in := fuseproto.ForgetIn{Nlookup: 1}
			a := x.chain(x.rq, [][]byte{hb, enc(&in)}, nil, vqtest.ChainOpts{}, h.Unique)
			gone(x, node)
			return a
		}, noReply},
		{"FORGET storm of 500 unknown, forgotten and root nodes", func(x *hx) answer {
			node := lookups(x, "file", 3)
			for i := range 500 {
				ids := []uint64{node, root, 0, 1 << 40, uint64(i), ^uint64(0)}
				if a := x.forget(ids[i%len(ids)], uint64(i)); a != noReply {
					x.t.Fatalf("FORGET %d: %v", i, a)
				}
			}
			gone(x, node)
			alive(x, root)
			return noReply
		}, noReply},
		{"BATCH_FORGET count larger than its entries", func(x *hx) answer {
			node := lookups(x, "file", 2)
			dir := lookups(x, "dir", 1)
			a := x.batchForget(1000, fuseproto.ForgetOne{NodeID: node, Nlookup: 2}, fuseproto.ForgetOne{NodeID: dir, Nlookup: 1})
			gone(x, node)
			gone(x, dir)
			return a
		}, noReply},
		{"BATCH_FORGET count 2^32-1 without entries", func(x *hx) answer { return x.batchForget(^uint32(0)) }, noReply},
		{"BATCH_FORGET count smaller than its entries", func(x *hx) answer {
			node := lookups(x, "file", 1)
			dir := lookups(x, "dir", 1)
			a := x.batchForget(1, fuseproto.ForgetOne{NodeID: node, Nlookup: 1}, fuseproto.ForgetOne{NodeID: dir, Nlookup: 1})
			gone(x, node)
			alive(x, dir)
			return a
		}, noReply},
		{"BATCH_FORGET of the root, nodeid 0, unknown and repeated nodes", func(x *hx) answer {
			node := lookups(x, "file", 1)
			a := x.batchForget(6,
				fuseproto.ForgetOne{NodeID: root, Nlookup: ^uint64(0)}, fuseproto.ForgetOne{NodeID: 0, Nlookup: 1},
				fuseproto.ForgetOne{NodeID: 1 << 40, Nlookup: 5}, fuseproto.ForgetOne{NodeID: node, Nlookup: 1},
				fuseproto.ForgetOne{NodeID: node, Nlookup: 1}, fuseproto.ForgetOne{NodeID: node, Nlookup: ^uint64(0)})
			gone(x, node)
			alive(x, root)
			return a
		}, noReply},
		{"BATCH_FORGET with fuse_batch_forget_in cut short", func(x *hx) answer {
			h, hb := x.header(fuseproto.OpBatchForget, 0, 4)
			return x.chain(x.hi, [][]byte{hb, {9, 0, 0, 0}}, nil, vqtest.ChainOpts{}, h.Unique)
		}, noReply},
		{"BATCH_FORGET with a partial last entry", func(x *hx) answer {
			node := lookups(x, "file", 1)
			in := fuseproto.BatchForgetIn{Count: 2}
			one := fuseproto.ForgetOne{NodeID: node, Nlookup: 1}
			h, hb := x.header(fuseproto.OpBatchForget, 0, 8+16+8)
			a := x.chain(x.hi, [][]byte{hb, enc(&in), enc(&one), make([]byte, 8)}, nil, vqtest.ChainOpts{}, h.Unique)
			gone(x, node)
			return a
		}, noReply},
	}
}

// withLen returns the encoded header h with Len replaced.
func withLen(h fuseproto.InHeader, n uint32) []byte {
	h.Len = n
	return enc(&h)
}

// lengthRows lie about lengths: in the FUSE header, in op structs, and in
// READ and WRITE sizes.
func lengthRows() []hostileRow {
	var gi fuseproto.GetattrIn
	getattrLen := func(n uint32) func(x *hx) answer {
		return func(x *hx) answer {
			h, _ := x.header(fuseproto.OpGetattr, root, 16)
			return x.chain(x.rq, [][]byte{withLen(h, n), enc(&gi)}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{}, h.Unique)
		}
	}
	// short sends op with a body of n bytes, the header's length agreeing.
	short := func(op fuseproto.Opcode, n int) func(x *hx) answer {
		return func(x *hx) answer {
			node := root
			if op != fuseproto.OpReaddir && op != fuseproto.OpInit {
				node = x.lookup(root, "file")
			}
			return x.fuse(op, node, make([]byte, n))
		}
	}
	setxattr := func(size uint32, name, value []byte) func(x *hx) answer {
		return func(x *hx) answer {
			in := fuseproto.SetxattrIn{Size: size}
			return x.fuse(fuseproto.OpSetxattr, x.lookup(root, "file"), enc(&in), name, value)
		}
	}
	// writeFile opens share/file and sends a WRITE of data with size.
	writeFile := func(size uint32, data []byte, indirect bool) func(x *hx) answer {
		return func(x *hx) answer {
			node := x.lookup(root, "file")
			fh := x.open(node, false)
			in := fuseproto.WriteIn{Fh: fh, Size: size}
			h, hb := x.header(fuseproto.OpWrite, node, 40+len(data))
			out := [][]byte{hb, enc(&in)}
			if len(data) > 0 {
				out = append(out, data)
			}
			a := x.chain(x.rq, out, []uint32{16, 8}, vqtest.ChainOpts{Indirect: indirect}, h.Unique)
			x.hostFile("file", pattern(hostileFileSize, 5))
			return a
		}
	}
	// readFile opens share/file and READs size bytes into room bytes.
	readFile := func(size, room uint32) func(x *hx) answer {
		return func(x *hx) answer {
			node := x.lookup(root, "file")
			fh := x.open(node, false)
			in := fuseproto.ReadIn{Fh: fh, Size: size}
			a := x.fuseRoom(x.rq, fuseproto.OpRead, node, room, enc(&in))
			if want := pattern(hostileFileSize, 5)[:min(room, size, hostileFileSize)]; a == success && !bytes.Equal(x.last, want) {
				x.t.Fatalf("READ returned %d bytes, want %d", len(x.last), len(want))
			}
			return a
		}
	}
	return []hostileRow{
		{"header len larger than the chain", getattrLen(56 + 100), eIO},
		{"header len smaller than the chain", getattrLen(50), eIO},
		{"header len smaller than the header", getattrLen(8), eIO},
		{"header len 0", getattrLen(0), eIO},
		{"header len 2^32-1", getattrLen(^uint32(0)), eIO},
		{"chain shorter than the header", func(x *hx) answer {
			_, hb := x.header(fuseproto.OpGetattr, root, 0)
			// Unique 0: the header is incomplete, so the reply cannot
			// name the request.
			return x.chain(x.rq, [][]byte{hb[:20]}, []uint32{16}, vqtest.ChainOpts{}, 0)
		}, eIO},
		{"chain without readable buffers", func(x *hx) answer {
			return x.chain(x.rq, nil, []uint32{16, 100}, vqtest.ChainOpts{}, 0)
		}, eIO},
		{"header total_extlen beyond the request", func(x *hx) answer {
			h, _ := x.header(fuseproto.OpGetattr, root, 16)
			h.TotalExtlen = 100
			return x.chain(x.rq, [][]byte{enc(&h), enc(&gi)}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{}, h.Unique)
		}, eIO},
		{"request extension of size 0", func(x *hx) answer {
			h, _ := x.header(fuseproto.OpGetattr, root, 16+8)
			h.TotalExtlen = 1
			return x.chain(x.rq, [][]byte{enc(&h), enc(&gi), make([]byte, 8)}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{}, h.Unique)
		}, eINVAL},
		{"request larger than the worker's buffer", func(x *hx) answer {
			n := x.d.srv.BufferSize() + 4096
			h, hb := x.header(fuseproto.OpGetattr, root, n)
			body := make([]byte, n)
			return x.chain(x.rq, [][]byte{hb, body}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{Indirect: true}, h.Unique)
		}, eIO},
		{"GETATTR body smaller than fuse_getattr_in", short(fuseproto.OpGetattr, 3), eINVAL},
		{"SETATTR body smaller than fuse_setattr_in", short(fuseproto.OpSetattr, 40), eINVAL},
		{"READ body smaller than fuse_read_in", short(fuseproto.OpRead, 39), eINVAL},
		{"WRITE body smaller than fuse_write_in", short(fuseproto.OpWrite, 23), eINVAL},
		{"READDIR body smaller than fuse_read_in", short(fuseproto.OpReaddir, 8), eINVAL},
		{"LSEEK body smaller than fuse_lseek_in", short(fuseproto.OpLseek, 8), eINVAL},
		{"INIT body smaller than fuse_init_in", short(fuseproto.OpInit, 8), eINVAL},
		{"SETXATTR size larger than the value", setxattr(9, cstr("user.a"), []byte("v")), eINVAL},
		{"SETXATTR size smaller than the value", setxattr(1, cstr("user.a"), []byte("value")), eINVAL},
		{"SETXATTR size beyond 64 KiB", setxattr(fuseproto.MaxXattrSize+1, cstr("user.a"), nil), errnoA(syscall.E2BIG)},
		{"SETXATTR name without NUL terminator", setxattr(0, nameless("user.a"), nil), eINVAL},
		{"SETXATTR name of 256 bytes", setxattr(1, cstr("user."+strings.Repeat("x", 251)), []byte("v")), errnoA(syscall.ERANGE)},
		{"GETXATTR size beyond 64 KiB is clamped", func(x *hx) answer {
			in := fuseproto.GetxattrIn{Size: ^uint32(0)}
			return x.fuse(fuseproto.OpGetxattr, x.lookup(root, "file"), enc(&in), cstr("user.none"))
		}, errnoA(syscall.ENODATA)},
		{"WRITE size larger than its data", writeFile(100, []byte("0123456789"), false), eINVAL},
		{"WRITE size smaller than its data", writeFile(3, []byte("0123456789"), false), eINVAL},
		{"WRITE size 2^32-1 without data", writeFile(^uint32(0), nil, false), eINVAL},
		{"WRITE beyond max_write", func(x *hx) answer {
			n := int(x.d.srv.MaxWrite()) + 4096
			return writeFile(uint32(n), make([]byte, n), true)(x)
		}, eINVAL},
		{"READ beyond max_write gets what fits", readFile(16<<20, 8192), success},
		{"READ size 2^32-1 gets what fits", readFile(^uint32(0), 4096), success},
		{"READ larger than the writable room", readFile(8192, 100), success},
		{"READ with room for the header only", readFile(4096, 0), success},
		{"IOCTL in_size larger than its data", func(x *hx) answer {
			fh := x.open(x.lookup(root, "file"), false)
			in := fuseproto.IoctlIn{Fh: fh, Cmd: 0x80086601, InSize: 64}
			return x.fuse(fuseproto.OpIoctl, x.lookup(root, "file"), enc(&in))
		}, eINVAL},
	}
}

// handmade writes descriptors of queue 1 (56..63 are kept for this) and
// indirect tables, publishes head, kicks, and waits for head to come back.
func (x *hx) handmade(descs map[uint16]vqtest.Desc, tables map[virtqueue.GuestAddress][]vqtest.Desc, head uint16) vqtest.Used {
	x.t.Helper()
	drv := x.rq.Driver
	for i, d := range descs {
		drv.WriteDesc(i, d)
	}
	for a, ds := range tables {
		for i, d := range ds {
			x.e.fe.Mem.PutDesc(a+virtqueue.GuestAddress(16*i), d)
		}
	}
	drv.SetUsedEvent(drv.UsedIdx())
	drv.PublishRaw(head)
	x.rq.DoKick()
	u, err := x.rq.Wait()
	if err != nil {
		x.t.Fatal(err)
	}
	if u.Head != head {
		x.t.Fatalf("used head %d, want %d", u.Head, head)
	}
	return u
}

// getattrAt writes a GETATTR of the root at a (56 bytes) and returns its
// unique.
func (x *hx) getattrAt(a virtqueue.GuestAddress) uint64 {
	h, hb := x.header(fuseproto.OpGetattr, root, 16)
	var gi fuseproto.GetattrIn
	x.e.fe.Mem.Write(a, append(hb, enc(&gi)...))
	return h.Unique
}

// replyAt reads the reply of used element u from guest memory at a.
func (x *hx) replyAt(a virtqueue.GuestAddress, u vqtest.Used, unique uint64) answer {
	x.t.Helper()
	if u.Len == 0 {
		return noReply
	}
	b := make([]byte, u.Len)
	x.e.fe.Mem.Read(a, b)
	u.Data = b
	return x.used(u, u.Len, unique)
}

func dsc(a virtqueue.GuestAddress, n uint32, flags, next uint16) vqtest.Desc {
	return vqtest.Desc{Addr: a, Len: n, Flags: flags, Next: next}
}

// endOfMemory is the first guest address past vutest.Layout.
var endOfMemory = vutest.Layout[1].GuestAddr + virtqueue.GuestAddress(vutest.Layout[1].Size)

// chainRows send descriptor chains that loop, overlap, point outside guest
// memory, misuse indirect tables, or break the available ring.
func chainRows() []hostileRow {
	const N, W, I = virtqueue.DescFNext, virtqueue.DescFWrite, virtqueue.DescFIndirect
	type descs = map[uint16]vqtest.Desc
	type tables = map[virtqueue.GuestAddress][]vqtest.Desc
	// refused sends a chain built by mk (from a buffer holding a GETATTR,
	// a reply area and a scratch area for indirect tables) at head 56.
	refused := func(mk func(req, out, tbl virtqueue.GuestAddress) (descs, tables)) func(x *hx) answer {
		return func(x *hx) answer {
			req, out, tbl := x.rq.Driver.AllocRaw(4096), x.rq.Driver.AllocRaw(4096), x.rq.Driver.AllocRaw(4096)
			unique := x.getattrAt(req)
			ds, ts := mk(req, out, tbl)
			return x.replyAt(out, x.handmade(ds, ts, 56), unique)
		}
	}
	getattr := func(req, out virtqueue.GuestAddress) descs {
		return descs{56: dsc(req, 56, N, 57), 57: dsc(out, 120, W, 0)}
	}
	breakRing := func(publish func(drv *vqtest.Driver)) func(x *hx) answer {
		return func(x *hx) answer {
			publish(x.rq.Driver)
			x.rq.DoKick()
			return x.waitBroken(1)
		}
	}
	return []hostileRow{
		{"well-formed hand-made chain (control)", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return getattr(req, out), nil
		}), success},
		{"descriptor chained to itself", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 56)}, nil
		}), noReply},
		{"two descriptors chained in a loop", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(out, 120, W|N, 56)}, nil
		}), noReply},
		{"chain longer than the queue", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			// Through all 64 descriptors and on: the 65th visit is
			// refused.
			ds := descs{}
			for i := range uint16(64) {
				ds[i] = dsc(req, 1, N, (i+1)%64)
			}
			return ds, nil
		}), noReply},
		{"next index beyond the queue", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 64)}, nil
		}), noReply},
		{"buffer outside guest memory", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(1<<40, 56, N, 57), 57: dsc(out, 120, W, 0)}, nil
		}), noReply},
		{"writable buffer outside guest memory", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(1<<40, 120, W, 0)}, nil
		}), noReply},
		{"buffer straddling the end of guest memory", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(endOfMemory-8, 120, W, 0)}, nil
		}), noReply},
		{"buffer wrapping around 2^64", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(^virtqueue.GuestAddress(0)-15, 56, N, 57), 57: dsc(out, 120, W, 0)}, nil
		}), noReply},
		{"buffer of 2^32-1 bytes", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(out, ^uint32(0), W, 0)}, nil
		}), noReply},
		{"readable buffer after a writable one", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(out, 120, W|N, 57), 57: dsc(req, 56, 0, 0)}, nil
		}), noReply},
		{"no writable buffer", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, 0, 0)}, nil
		}), noReply},
		{"writable room smaller than the reply", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(out, 119, W, 0)}, nil
		}), noReply},
		{"nested indirect tables", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 32, I, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(tbl+256, 16, I, 0)}}
		}), noReply},
		{"indirect table size not a multiple of 16", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 40, I, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(out, 120, W, 0)}}
		}), noReply},
		{"indirect table of size 0", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 0, I, 0)}, nil
		}), noReply},
		{"indirect table of more than 4096 entries", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 16*(virtqueue.MaxIndirectDescs+1), I, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(out, 120, W, 0)}}
		}), noReply},
		{"indirect descriptor with NEXT", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 32, I|N, 57), 57: dsc(out, 120, W, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(out, 120, W, 0)}}
		}), noReply},
		{"indirect table outside guest memory", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(1<<40, 32, I, 0)}, nil
		}), noReply},
		{"indirect table straddling the end of guest memory", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(endOfMemory-16, 32, I, 0)}, nil
		}), noReply},
		{"loop inside an indirect table", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 32, I, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(out, 120, W|N, 0)}}
		}), noReply},
		{"next index beyond an indirect table", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(tbl, 32, I, 0)}, tables{tbl: {dsc(req, 56, N, 2), dsc(out, 120, W, 0)}}
		}), noReply},
		{"indirect descriptor marked writable is served", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			// The device must ignore WRITE on a descriptor that refers
			// to an indirect table (virtio 1.2, 2.7.5.3.2).
			return descs{56: dsc(tbl, 32, I|W, 0)}, tables{tbl: {dsc(req, 56, N, 1), dsc(out, 120, W, 0)}}
		}), success},
		{"direct descriptors then an indirect table are served", refused(func(req, out, tbl virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 56, N, 57), 57: dsc(tbl, 16, I, 0)}, tables{tbl: {dsc(out, 120, W, 0)}}
		}), success},
		{"indirect table longer than the queue is served", func(x *hx) answer {
			// 56 + 120 one-byte buffers: 176 entries in one table.
			h, hb := x.header(fuseproto.OpGetattr, root, 16)
			var gi fuseproto.GetattrIn
			return x.chain(x.rq, [][]byte{hb, enc(&gi)}, []uint32{16, fuseproto.AttrOutSize}, vqtest.ChainOpts{Indirect: true, Split: 1}, h.Unique)
		}, success},
		{"zero-length descriptors are served", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			return descs{56: dsc(req, 0, N, 57), 57: dsc(req, 56, N, 58), 58: dsc(out, 0, W|N, 59), 59: dsc(out, 120, W, 0)}, nil
		}), success},
		{"buffer straddling two regions is served", func(x *hx) answer {
			x.rq.Driver.AllocRaw(3 << 20) // covers the region boundary at 4 MiB
			req := vutest.Layout[1].GuestAddr - 20
			out := x.rq.Driver.AllocRaw(4096)
			unique := x.getattrAt(req)
			return x.replyAt(out, x.handmade(getattr(req, out), nil, 56), unique)
		}, success},
		{"two readable descriptors on the same memory", refused(func(req, out, _ virtqueue.GuestAddress) (descs, tables) {
			// The GETATTR's argument is read from the header's bytes.
			return descs{56: dsc(req, 40, N, 57), 57: dsc(req, 16, N, 58), 58: dsc(out, 120, W, 0)}, nil
		}), success},
		{"writable buffer overlapping the readable one", func(x *hx) answer {
			// The reply is written over the request, which was read
			// first.
			req := x.rq.Driver.AllocRaw(4096)
			unique := x.getattrAt(req)
			return x.replyAt(req, x.handmade(descs{56: dsc(req, 56, N, 57), 57: dsc(req, 120, W, 0)}, nil, 56), unique)
		}, success},
		{"writable buffer over the descriptor table", func(x *hx) answer {
			req, out := x.rq.Driver.AllocRaw(4096), x.rq.Driver.Desc+16*56
			unique := x.getattrAt(req)
			// The reply overwrites descriptors 56..63, this chain's own.
			return x.replyAt(out, x.handmade(descs{56: dsc(req, 56, N, 57), 57: dsc(out, 120, W, 0)}, nil, 56), unique)
		}, success},
		{"head index beyond the queue", breakRing(func(drv *vqtest.Driver) { drv.PublishRaw(64) }), broken},
		{"head index 65535", breakRing(func(drv *vqtest.Driver) { drv.PublishRaw(0xffff) }), broken},
		{"available index jumps ahead by more than the queue", breakRing(func(drv *vqtest.Driver) { drv.SetAvailIdx(drv.AvailIdx() + 65) }), broken},
		{"available index moves back", breakRing(func(drv *vqtest.Driver) { drv.SetAvailIdx(drv.AvailIdx() - 1) }), broken},
	}
}

// vhostRows are vhost-user messages that reach the virtio-fs device; the
// message-level table is vhostuser's TestHostileVhostUser.
func vhostRows() []hostileRow {
	// restartRing2 stops vring 2, sets its addresses as addr makes them
	// from the good ones, and starts it again: the answer is the kick's.
	restartRing2 := func(addr func(a *vhostuser.VringAddr)) func(x *hx) answer {
		return func(x *hx) answer {
			x.rq2.GetBase()
			m, drv := x.e.fe.Mem, x.rq2.Driver
			a := vhostuser.VringAddr{Index: 2, Desc: m.UserAddr(drv.Desc), Used: m.UserAddr(drv.Used), Avail: m.UserAddr(drv.Avail)}
			addr(&a)
			if got := x.vhost(vhostuser.SetVringAddr, a.Encode()); got != acked {
				x.t.Fatalf("SET_VRING_ADDR: %v", got)
			}
			return x.vhost(vhostuser.SetVringKick, vhostuser.EncodeU64(2), x.rq2.Kick)
		}
	}
	region0 := vutest.Layout[0]
	user0 := uint64(region0.GuestAddr) + vqtest.DefaultUserBase
	withoutReply := func(req vhostuser.Request, payload []byte) func(x *hx) answer {
		return func(x *hx) answer {
			x.e.fe.NeedReply = false
			return x.vhost(req, payload)
		}
	}
	return []hostileRow{
		{"vring addresses outside guest memory", restartRing2(func(a *vhostuser.VringAddr) {
			a.Desc, a.Avail, a.Used = 0x1000, 0x2000, 0x3000
		}), nacked},
		{"used ring straddling the end of its region", restartRing2(func(a *vhostuser.VringAddr) {
			a.Used = user0 + region0.Size - 64
		}), nacked},
		{"descriptor table not 16-byte aligned", restartRing2(func(a *vhostuser.VringAddr) { a.Desc += 8 }), nacked},
		{"SET_VRING_NUM 0 on a stopped ring", func(x *hx) answer {
			x.rq2.GetBase()
			return x.vhost(vhostuser.SetVringNum, vhostuser.VringState{Index: 2, Num: 0}.Encode())
		}, nacked},
		{"SET_VRING_NUM 65536", func(x *hx) answer {
			x.rq2.GetBase()
			return x.vhost(vhostuser.SetVringNum, vhostuser.VringState{Index: 2, Num: 1 << 16}.Encode())
		}, nacked},
		{"SET_VRING_KICK of vring 3 of 3", func(x *hx) answer {
			return x.vhost(vhostuser.SetVringKick, vhostuser.EncodeU64(3), x.rq2.Kick)
		}, nacked},
		{"SET_VRING_NUM of vring 3 of 3 without NEED_REPLY", withoutReply(vhostuser.SetVringNum, vhostuser.VringState{Index: 3, Num: 64}.Encode()), dropped},
		{"GET_VRING_BASE of vring 5 of 3", func(x *hx) answer {
			return x.vhost(vhostuser.GetVringBase, vhostuser.VringState{Index: 5}.Encode())
		}, dropped},
		{"unknown request without NEED_REPLY", withoutReply(99, nil), dropped},
		{"SET_FEATURES with RING_PACKED, never offered", func(x *hx) answer {
			return x.vhost(vhostuser.SetFeatures, vhostuser.EncodeU64(x.e.fe.Features|1<<34))
		}, nacked},
		{"SET_MEM_TABLE with an eventfd for memory keeps the old table", func(x *hx) answer {
			return x.vhost(vhostuser.SetMemTable, vhostuser.EncodeMemTable(x.e.fe.Mem.Specs()), x.rq.Kick, x.rq2.Kick)
		}, nacked},
	}
}
