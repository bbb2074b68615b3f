// Package racetest races a hostile guest and a hostile host process against
// the real govirtiofsd binary: while swappers replace a shared directory
// with symlinks to "/", "/proc/self" and a sibling outside the share (through
// the mount, as a guest would, and on the host directory itself), workers
// create, write, chmod, chown, truncate, set xattrs, make nodes, link,
// rename, unlink and read under it through the mount. The test then checks
// that nothing outside the share was read or changed by the daemon and that
// the daemon neither crashed nor touched its own /proc entries.
//
// The test process never follows a symlink in the mount itself: every path
// is resolved with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH) from a
// descriptor of the mount, and the *at calls take one name relative to such
// a descriptor without following it. So whatever lands outside the share can
// only have been put there by the daemon.
package racetest
