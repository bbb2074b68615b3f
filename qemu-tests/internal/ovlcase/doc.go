// Package ovlcase is the overlay case of the QEMU tests: two lower layers
// built on the host, the changes a guest makes to the union of them through
// `govirtiofsd --overlay`, and the manifests that compare what the guest saw
// with what kernel overlayfs makes of the same layers afterwards.
//
// The same code runs in two places: in the guest (the checker in
// ../../guest, mode -overlay), on the virtiofs mount of the union, and in
// the host test (../../overlay_test.go), which builds the layers, replays
// the same steps on a kernel overlayfs mount as the reference, and compares.
//
// # The layers (BuildLowers)
//
// L2, the bottom layer, holds a few package trees of Go's own source
// (src/encoding, src/archive, ...; see l2Trees), the tarball data/src.tar
// (src/crypto, src/go, src/internal and src/net of Go's source, about
// 4,000 entries with the symlinks and hard links added), and misc/: small
// files with owners, modes, xattrs, hard links, symlinks and a sparse file
// made to be changed. L1, the top layer, shadows some of them: src/encoding/json (also
// in L2), src/image and src/crypto/sha256 (also in the tarball), a file
// both layers have (misc/shadowed.txt), a whiteout (misc/hidden.txt), an
// opaque directory (misc/opaque), hard links of its own. Every object has a
// fixed mtime (FixtureTime, TarTime), so a changed one stands out.
//
// # The changes (Steps)
//
// In order: untar data/src.tar into the union's root (over lower
// directories and over lower files of the same names); append to, truncate,
// chmod, chown and set xattrs and times on lower files and directories;
// rm -rf lower trees (L1's, L2's, merged ones); rename lower directories,
// within their parent and into others, twice in a row, with
// RENAME_NOREPLACE and RENAME_EXCHANGE, always with rename(2) itself, so
// EXDEV is an error (the overlay records redirects); rename lower and
// metadata-only copied-up files; make hard links of lower and upper files;
// create files, directories, symlinks and a fifo over deleted names; delete
// the tarball. Each step checks its own results as it goes and returns the
// first operation that failed, with its errno.
//
// # Manifests (Walk)
//
// A manifest lists every object of a tree: path, type, permission bits,
// owner, size, SHA-256 of the contents or symlink target, xattrs, mtime
// and, but for directories, nlink. Raw manifests (of a layer itself, read on
// the host) also keep what the kernel may not change behind our back:
// ctime, inode number, directories' size and nlink, and every xattr,
// trusted.overlay.* included.
package ovlcase
