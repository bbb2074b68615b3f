package passthrough

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"github.com/govirtiofs/govirtiofs/internal/hostfs"
)

// asCaller runs fn with the calling thread's fsuid, fsgid and supplementary
// groups set to ctx's (see hostfs.Switcher.AsCaller), so that whatever fn
// creates belongs to the caller and the host checks the caller's
// permissions. fn must only make system calls.
func (fs *FS) asCaller(ctx *fuseproto.Context, fn func() error) error {
	return fs.creds.AsCaller(hostfs.CredsOf(ctx), fn)
}
