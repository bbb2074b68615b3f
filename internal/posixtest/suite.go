// Package posixtest is a POSIX conformance suite for a mounted filesystem.
//
// The suite knows nothing about how the filesystem under test is served:
// every test works only through ordinary system calls on paths under a
// directory it is given, so the same tests run over /dev/fuse on the host,
// inside a QEMU guest over virtio-fs, or over any other transport. The
// expected results are what Linux filesystems (ext4, xfs, tmpfs) do; where
// Linux allows more than one answer the tests accept each of them.
//
// # Running the suite
//
// [Suite] maps test names to test functions. [Run] (or [RunWith]) runs each
// one as a subtest in a fresh, empty subdirectory of the mount point and,
// after it, checks for leaks: the test must have removed everything it
// created and closed every file descriptor it opened under its directory,
// and nothing may have appeared next to its directory.
//
// # Helper processes
//
// Some behaviour can only be observed from a second process: POSIX record
// locks belong to a process, and files created by an unprivileged user must
// be created by a process running as that user. The suite starts such
// helpers by re-executing the running test binary
// (os.Executable) with the arguments
//
//	-test.run=^TestPosixHelperProcess$ -test.count=1
//
// and the environment variable POSIXTEST_HELPER holding a JSON description
// of the action. A package that runs the suite must therefore provide
//
//	func TestPosixHelperProcess(t *testing.T) { posixtest.HelperProcess() }
//
// (or call [HelperProcess] first thing in its TestMain). HelperProcess does
// nothing in an ordinary run; in a helper it performs the action, writes its
// results to standard output on lines starting with "posixtest: ", and
// exits. A helper that is to act as another user starts as root and drops
// to that user (setgroups, setgid, setuid) before touching the filesystem,
// because the test binary usually sits in a directory other users cannot
// search.
//
// # Large tests
//
// LargeFile1GiB writes and reads back a 1 GiB file. It is skipped under
// -short unless the environment has CI=true: CI always runs it.
package posixtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Suite is the conformance suite: each function gets t and an empty
// directory it owns on the filesystem under test, and must leave that
// directory empty and close every descriptor it opened under it.
var Suite = map[string]func(t *testing.T, mnt string){
	// Regular file data.
	"FileReadWrite":     testFileReadWrite,
	"FileAppend":        testFileAppend,
	"FileTruncate":      testFileTruncate,
	"FileFtruncate":     testFileFtruncate,
	"FileOExcl":         testFileOExcl,
	"FileUnlinkOpen":    testFileUnlinkOpen,
	"FileODirect":       testFileODirect,
	"FileFsync":         testFileFsync,
	"Tmpfile":           testTmpfile,
	"MmapShared":        testMmapShared,
	"LargeFile1GiB":     testLargeFile1GiB,
	"Fallocate":         testFallocate,
	"FallocPunchHole":   testFallocPunchHole,
	"SeekDataHole":      testSeekDataHole,
	"CopyFileRange":     testCopyFileRange,
	"Statfs":            testStatfs,
	"Statx":             testStatx,
	"NameMax":           testNameMax,
	"NamesSpecialBytes": testNamesSpecialBytes,
	"ConcurrentIO":      testConcurrentIO,

	// Namespace operations.
	"Rename":              testRename,
	"RenameOverFile":      testRenameOverFile,
	"RenameNoreplace":     testRenameNoreplace,
	"RenameExchange":      testRenameExchange,
	"RenameDir":           testRenameDir,
	"HardLink":            testHardLink,
	"Symlink":             testSymlink,
	"SymlinkDangling":     testSymlinkDangling,
	"Mkfifo":              testMkfifo,
	"MknodDevices":        testMknodDevices,
	"UnixSocket":          testUnixSocket,
	"MkdirRmdir":          testMkdirRmdir,
	"DirentInodes":        testDirentInodes,
	"Readdir10000":        testReaddir10000,
	"ReaddirSeek":         testReaddirSeek,
	"ReaddirConcurrent":   testReaddirConcurrent,
	"ConcurrentNamespace": testConcurrentNamespace,

	// Attributes.
	"Chmod":                testChmod,
	"Chown":                testChown,
	"Utimensat":            testUtimensat,
	"TimesUpdatedByWrite":  testTimesUpdatedByWrite,
	"SetuidClearedOnWrite": testSetuidClearedOnWrite,
	"SetuidClearedOTrunc":  testSetuidClearedOTrunc,
	"XattrUser":            testXattrUser,
	"XattrCreateReplace":   testXattrCreateReplace,
	"NonRootCreate":        testNonRootCreate,
	"NonRootSetgidDir":     testNonRootSetgidDir,
	"NonRootPermissions":   testNonRootPermissions,

	// Locks.
	"Flock":                  testFlock,
	"FlockBlocking":          testFlockBlocking,
	"PosixLockCrossProcess":  testPosixLockCrossProcess,
	"PosixLockWait":          testPosixLockWait,
	"PosixLockCloseReleases": testPosixLockCloseReleases,
	"PosixLockExitReleases":  testPosixLockExitReleases,
	"OFDLock":                testOFDLock,
}

// Options adjust a run of the suite for one transport.
type Options struct {
	// Skip names tests not to run on this transport, each with the
	// reason, which is logged. They are left out, not reported as skipped
	// tests: a run counts only what it ran.
	Skip map[string]string
}

// Run runs every test of Suite as a subtest of t, each in a fresh
// subdirectory of mnt named after the test, and checks for leaks after each.
func Run(t *testing.T, mnt string) { RunWith(t, mnt, Options{}) }

// RunWith is Run with options.
func RunWith(t *testing.T, mnt string, opts Options) {
	t.Helper()
	before, err := dirNames(mnt)
	if err != nil {
		t.Fatalf("listing mount point: %v", err)
	}
	names := make([]string, 0, len(Suite))
	for name := range Suite {
		names = append(names, name)
	}
	slices.Sort(names)
	for name := range opts.Skip {
		if _, ok := Suite[name]; !ok {
			t.Errorf("Options.Skip names %q, which is not a test of the suite", name)
		}
	}
	for _, name := range names {
		if slices.Contains(before, name) {
			t.Fatalf("mount point already holds %q; the suite needs a directory of its own", name)
		}
	}
	for _, name := range names {
		fn := Suite[name]
		if reason, ok := opts.Skip[name]; ok {
			t.Logf("not run here: %s: %s", name, reason)
			continue
		}
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("making the test directory: %v", err)
			}
			// The leak check is registered first so that it runs last,
			// after the test's own cleanups have closed its files.
			t.Cleanup(func() { checkLeaks(t, dir) })
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatalf("chmod of the test directory: %v", err)
			}
			fn(t, dir)
		})
	}
	after, err := dirNames(mnt)
	if err != nil {
		t.Fatalf("listing mount point after the suite: %v", err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("mount point entries changed over the suite: before %q, after %q", before, after)
	}
}

// checkLeaks fails t if the test left descriptors open or entries behind in
// dir, and then removes dir.
func checkLeaks(t *testing.T, dir string) {
	for _, fd := range fdsUnder(dir) {
		if !t.Failed() {
			t.Errorf("leak: file descriptor %d still open on %s", fd.fd, fd.path)
		}
		unix.Close(fd.fd)
	}
	names, err := dirNames(dir)
	if err != nil {
		t.Errorf("leak check: listing %s: %v", dir, err)
	} else if len(names) > 0 && !t.Failed() {
		t.Errorf("leak: the test left %d entries behind: %q", len(names), truncList(names, 20))
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("removing the test directory: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != unix.ENOENT {
		t.Errorf("lstat of the removed test directory: got %v, want ENOENT", err)
	}
}

type openFD struct {
	fd   int
	path string
}

// fdsUnder lists this process's descriptors open on dir or below it.
func fdsUnder(dir string) []openFD {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var out []openFD
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		if target == dir || strings.HasPrefix(target, dir+"/") {
			var fd int
			for _, c := range e.Name() {
				fd = fd*10 + int(c-'0')
			}
			out = append(out, openFD{fd, target})
		}
	}
	return out
}

// dirNames lists dir without "." and "..", sorted.
func dirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}

func truncList(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], "...")
}
