package fuseproto

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
)

// seedRequests are valid and borderline requests for the fuzzers' corpora.
func seedRequests() [][]byte {
	return [][]byte{
		msg(OpLookup, 1, "a"), msg(OpLookup, 1, ".."), msg(OpGetattr, 2, &GetattrIn{}),
		msg(OpSetattr, 2, &SetattrIn{Valid: FattrMode | FattrAtimeNow}), msg(OpSymlink, 1, "l", "/t"),
		msg(OpMknod, 1, &MknodIn{Mode: 0o20644, Rdev: 0x0101}, "n"), msg(OpMkdir, 1, &MkdirIn{}, "d"),
		msg(OpRename2, 1, &Rename2In{Newdir: 1, Flags: 2}, "a", "b"), msg(OpLink, 1, &LinkIn{OldNodeID: 2}, "h"),
		msg(OpCreate, 1, &CreateIn{}, "c"), msg(OpRead, 2, &ReadIn{Size: 4096}),
		msg(OpWrite, 2, &WriteIn{Size: 3}, []byte("abc")), msg(OpSetxattr, 2, &SetxattrIn{Size: 1}, "user.a", []byte("v")),
		msg(OpGetxattr, 2, &GetxattrIn{Size: 64}, "user.a"), msg(OpReaddirplus, 1, &ReadIn{Size: 4096}),
		msg(OpBatchForget, 0, &BatchForgetIn{Count: 1}, &ForgetOne{NodeID: 2, Nlookup: 1}),
		msg(OpIoctl, 2, &IoctlIn{InSize: 2, OutSize: 4}, []byte("ab")), msg(OpCopyFileRange64, 2, &CopyFileRangeIn{Len: 9}),
		msg(OpStatx, 2, &StatxIn{SxMask: 0xfff}), msg(OpInit, 0, initIn(45)), msg(OpInterrupt, 0, &InterruptIn{Unique: 3}),
		msg(OpSetlk, 2, &LkIn{LkFlags: LkFlock}), msg(Opcode(4096), 1), make([]byte, 40),
		// Security contexts (the fuzzed session has InitSecurityCtx).
		withExt(msg(OpCreate, 1, &CreateIn{}, "c"), secBlock(selinux)),
		withExt(msg(OpMkdir, 1, &MkdirIn{}, "d"), secBlock()),
		withExt(msg(OpSymlink, 1, "l", "/t"), secBlock(selinux, smack)),
		withExt(msg(OpMknod, 1, &MknodIn{Mode: 0o10644}, "n"), patch(secBlock(selinux), 8, 0xffff)),
		withExt(msg(OpTmpfile, 1, &CreateIn{}, "/"), secBlock(selinux), append(Encode(nil, &ExtHeader{Size: 16, Type: ExtGroups}), 1, 0, 0, 0, 7, 0, 0, 0)),
	}
}

// FuzzHandle feeds arbitrary bytes to a Server in session and checks that it
// never panics (a recovered panic is logged, which fails the fuzzer), that
// every reply is well formed, and that a request whose header lies about its
// length never reaches the FileSystem.
func FuzzHandle(f *testing.F) {
	for _, b := range seedRequests() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		var log bytes.Buffer
		fs := &fakeFS{data: []byte("data"), dirents: []string{"x", "y"}}
		s := NewServer(fs, Options{Enable: InitSecurityCtx, Logger: testLogger(&log)})
		s.Handle(msg(OpInit, 0, initIn(45)), nil, &recReplier{})
		before := len(fs.calls)
		r := &recReplier{}
		s.Handle(req, nil, r)
		if strings.Contains(log.String(), "panic") {
			t.Fatalf("request panicked: %s", log.String())
		}
		var h InHeader
		lenOK := Decode(req, &h) && int(h.Len) == len(req)
		if !lenOK && len(fs.calls) != before {
			t.Fatalf("request with a lying length reached the FileSystem: %v", fs.calls[before:])
		}
		if r.n > 1 {
			t.Fatalf("%d replies to one request", r.n)
		}
		if r.n == 1 {
			oh := r.header(t)
			if oh.Error > 0 || oh.Error <= -512 {
				t.Fatalf("reply error %d out of range", oh.Error)
			}
			if lenOK && oh.Unique != h.Unique {
				t.Fatalf("reply unique %d for request %d", oh.Unique, h.Unique)
			}
			if oh.Error != 0 && len(r.msg) != OutHeaderSize {
				t.Fatalf("error reply with a %d-byte body", len(r.msg)-OutHeaderSize)
			}
		}
	})
}

// FuzzCheckName checks the component rule on arbitrary names: accepted names
// are 1..255 bytes with no '/' and no NUL, and "." and ".." only reach
// lookup.
func FuzzCheckName(f *testing.F) {
	for _, n := range []string{"a", ".", "..", "...", "a/b", "/", "", "a\x00", strings.Repeat("n", 255), strings.Repeat("n", 256), "..\x00"} {
		f.Add([]byte(n))
	}
	f.Fuzz(func(t *testing.T, name []byte) {
		e := CheckName(name)
		valid := len(name) > 0 && len(name) <= MaxNameLen && !bytes.ContainsAny(name, "/\x00")
		if (e == OK) != valid {
			t.Fatalf("CheckName(%q) = %v, valid %v", name, e, valid)
		}
		dots := string(name) == "." || string(name) == ".."
		for _, use := range []nameUse{nameCreate, nameUnlink, nameRmdir, nameRename} {
			if got := checkNameFor(name, use); valid && dots && got == OK {
				t.Fatalf("%q accepted for use %d", name, use)
			} else if valid && !dots && got != OK {
				t.Fatalf("%q refused for use %d: %v", name, use, got)
			} else if !valid && got == OK {
				t.Fatalf("invalid %q accepted for use %d", name, use)
			}
		}
		if valid && checkNameFor(name, nameLookup) != OK {
			t.Fatalf("%q refused for lookup", name)
		}
		if e == syscall.ENAMETOOLONG && len(name) <= MaxNameLen {
			t.Fatalf("ENAMETOOLONG for %d bytes", len(name))
		}
	})
}
