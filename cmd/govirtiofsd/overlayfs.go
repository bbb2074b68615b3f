package main

import (
	"github.com/hashicorp/go-hclog"

	"github.com/govirtiofs/govirtiofs/overlay"
)

// newOverlay makes the overlay filesystem of cfg.overlay. The overlay
// reads and writes its layers' own xattrs whatever cfg.xattr says;
// cfg.xattr only gives the guest (or host mount) the xattr operations.
func newOverlay(cfg *config, log hclog.Logger) (fileSystem, error) {
	fs, err := overlay.New(*cfg.overlay, overlay.Options{
		Cache:           cfg.cache,
		Xattr:           cfg.xattr,
		ReadOnly:        cfg.readonly,
		PreserveNoatime: cfg.preserveNoatime,
		Logger:          log.Named("overlay"),
	})
	if err != nil {
		return nil, err
	}
	return fs, nil
}
