package passthrough

import (
	"fmt"

	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/hashicorp/go-hclog"
)

// CachePolicy says how long the guest kernel may cache names, attributes and
// file data. The numbers are virtiofsd's, so that a guest sees the same
// behaviour with either daemon.
type CachePolicy int

const (
	// CacheAuto lets the kernel cache names and attributes for one second
	// and file data until it sees the file change. It is the default.
	CacheAuto CachePolicy = iota
	// CacheNever disables caching: zero timeouts and direct I/O on every
	// open file.
	CacheNever
	// CacheMetadata caches names and attributes for a day but reads and
	// writes file data directly.
	CacheMetadata
	// CacheAlways caches everything for a day and keeps page cache and
	// directory listings across opens.
	CacheAlways
)

// String returns the policy's name as ParseCachePolicy accepts it.
func (p CachePolicy) String() string {
	switch p {
	case CacheAuto:
		return "auto"
	case CacheNever:
		return "never"
	case CacheMetadata:
		return "metadata"
	case CacheAlways:
		return "always"
	}
	return fmt.Sprintf("CachePolicy(%d)", int(p))
}

// ParseCachePolicy parses "never", "metadata", "auto" or "always".
func ParseCachePolicy(s string) (CachePolicy, error) {
	switch s {
	case "never":
		return CacheNever, nil
	case "metadata":
		return CacheMetadata, nil
	case "auto":
		return CacheAuto, nil
	case "always":
		return CacheAlways, nil
	}
	return 0, fmt.Errorf("passthrough: unknown cache policy %q (want never, metadata, auto or always)", s)
}

// Timeout returns the entry and attribute timeout in seconds: 0 for
// CacheNever, a day for CacheMetadata and CacheAlways, one second for
// CacheAuto.
func (p CachePolicy) Timeout() uint64 {
	switch p {
	case CacheNever:
		return 0
	case CacheMetadata, CacheAlways:
		return 86400
	}
	return 1
}

// OpenFlags returns the FOPEN_* flags Open and Create answer with:
// FopenDirectIO for CacheNever and CacheMetadata, FopenKeepCache for
// CacheAlways, none for CacheAuto.
func (p CachePolicy) OpenFlags() uint32 {
	switch p {
	case CacheNever, CacheMetadata:
		return fuseproto.FopenDirectIO
	case CacheAlways:
		return fuseproto.FopenKeepCache
	}
	return 0
}

// OpendirFlags returns the FOPEN_* flags Opendir answers with:
// FopenKeepCache|FopenCacheDir for CacheAlways, none otherwise.
func (p CachePolicy) OpendirFlags() uint32 {
	if p == CacheAlways {
		return fuseproto.FopenKeepCache | fuseproto.FopenCacheDir
	}
	return 0
}

// Options configure an FS.
type Options struct {
	// Cache is the caching policy; the zero value is CacheAuto.
	Cache CachePolicy
	// Xattr enables extended attributes. When it is off (the default, as
	// in virtiofsd) the xattr operations answer ENOSYS, which makes the
	// kernel stop sending them.
	Xattr bool
	// ReadOnly makes every modifying request answer EROFS, including opens
	// for writing, truncation or appending.
	ReadOnly bool
	// AnnounceSubmounts sets fuseproto.AttrSubmount on directories whose
	// host mount differs from their parent's, so that the guest gives each
	// host mount its own superblock (and st_dev).
	AnnounceSubmounts bool
	// AllowDirectIO keeps the guest's O_DIRECT on host opens. By default
	// it is dropped, as virtiofsd does: the guest kernel already bypasses
	// its own page cache, and host O_DIRECT needs aligned buffers, which
	// a FUSE payload (data at an offset inside the request) is not.
	AllowDirectIO bool
	// PreserveNoatime keeps the guest's O_NOATIME on host opens. By
	// default it is dropped, as virtiofsd does: open(2) refuses O_NOATIME
	// with EPERM unless the opener owns the file or has CAP_FOWNER, which
	// an unprivileged daemon, or a file opened as the caller, may not.
	PreserveNoatime bool
	// Timeout, if not nil, replaces the cache policy's entry and attribute
	// timeout (seconds), as the legacy daemon's -o timeout= did.
	Timeout *uint64
	// InodeFileHandles says when inodes are referenced by file handles
	// instead of held descriptors; the zero value is FileHandlesPrefer.
	InodeFileHandles InodeFileHandles
	// MigrationMode, MigrationOnError, MigrationVerifyHandles and
	// MigrationConfirmPaths configure SaveState and LoadState (see
	// MigrationMode); the zero values are virtiofsd's defaults.
	MigrationMode          MigrationMode
	MigrationOnError       MigrationOnError
	MigrationVerifyHandles bool
	MigrationConfirmPaths  bool
	// Logger receives warnings and debug lines; nil discards them.
	Logger hclog.Logger
}
