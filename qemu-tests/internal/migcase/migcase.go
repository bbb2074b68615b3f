// Package migcase is the live-migration case of the QEMU tests
// (TestQEMUMigration): a guest that holds files open on the share while
// QEMU migrates it from a source served by one daemon to a destination
// served by another daemon on the same directory, and uses them afterwards.
//
// The same names are read by the guest's checker (../../guest, mode
// -migrate) and by the host test (../../migration_test.go).
//
// # The guest's side
//
// Before the migration the guest opens in/read.bin and reads its first
// ReadBefore bytes, creates out/append.txt and appends AppendBefore through
// an O_APPEND descriptor, opens in/dir and reads part of it (a small
// getdents buffer, so the kernel has fetched only the first entries),
// opens out/ as a directory descriptor, and reports migrate_ready. It then
// waits for Marker to appear in the share (the host makes it once QEMU
// says the migration completed), drops its caches, and goes on with what
// it holds: reads the rest of in/read.bin, appends AppendAfter, lists the
// rest of in/dir, looks up in/unseen.txt (never looked up before), creates
// out/created.txt by path and out/viadirfd.txt through the directory
// descriptor. Each is a verdict.
//
// # The share
//
//	in/read.bin     ReadSize bytes, byte i is Pattern(i)
//	in/dir/         DirCount empty files, DirName(0) …
//	in/unseen.txt   UnseenData
//	out/            where the guest writes
package migcase

import (
	"fmt"
	"os"
	"path/filepath"
)

// The case's sizes, names and contents.
const (
	ReadSize   = 4 << 20
	ReadBefore = 64 << 10
	DirCount   = 300
	Marker     = "migrated"

	ReadFile   = "in/read.bin"
	Dir        = "in/dir"
	Unseen     = "in/unseen.txt"
	UnseenData = "looked up only after the migration\n"
	Append     = "out/append.txt"
	Created    = "out/created.txt"
	ViaDirfd   = "out/viadirfd.txt"

	AppendBefore = "appended before the migration\n"
	AppendAfter  = "appended after the migration\n"
	CreatedData  = "created on the destination\n"
	DirfdData    = "created through a descriptor held across the migration\n"
)

// Checks are the guest's verdicts, in the order it reports them.
var Checks = []string{
	"migrate_ready",   // the files are open; the host may migrate
	"migrate_resumed", // the marker appeared: the guest runs on the destination
	"migrate_read",    // the rest of in/read.bin through the held descriptor
	"migrate_append",  // AppendAfter through the held O_APPEND descriptor
	"migrate_readdir", // the held in/dir descriptor lists the rest, no entry twice or missing
	"migrate_fstat",   // fstat of every held descriptor
	"migrate_lookup",  // in/unseen.txt, never looked up on the source
	"migrate_create",  // out/created.txt by path
	"migrate_dirfd",   // out/viadirfd.txt with openat on the held out/ descriptor
}

// Pattern is byte i of in/read.bin.
func Pattern(i int) byte { return byte(i*13 + i>>12) }

// DirName is the name of entry i of in/dir.
func DirName(i int) string { return fmt.Sprintf("entry-%04d", i) }

// Prepare fills share with what the guest reads.
func Prepare(share string) error {
	for _, d := range []string{Dir, "out"} {
		if err := os.MkdirAll(filepath.Join(share, d), 0o755); err != nil {
			return err
		}
	}
	b := make([]byte, ReadSize)
	for i := range b {
		b[i] = Pattern(i)
	}
	if err := os.WriteFile(filepath.Join(share, ReadFile), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(share, Unseen), []byte(UnseenData), 0o644); err != nil {
		return err
	}
	for i := range DirCount {
		if err := os.WriteFile(filepath.Join(share, Dir, DirName(i)), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}
