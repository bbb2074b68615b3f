// Package overlaytest is the differential test of govirtiofsd's overlay
// against kernel overlayfs, the reference: "apply the same changes, compare
// manifests" (containerd continuity fs/fstest style).
//
// # What a case is
//
// A Case (cases.go) is a fixture of layers, overlay options and a list of
// steps. The fixture is declarative (fixture.go): a Layer is a list of
// Appliers (File, Dir, Symlink, Hardlink, Whiteout for the character
// device 0/0, XattrWhiteout, OCIWhiteout and OCIOpaque for image-layer
// markers, Opaque, Setxattr, Chown, Chmod, Sparse, Fifo, Device, Flags,
// ManyFiles). Every object of a built layer carries FixtureTime, so a
// manifest tells an untouched or faithfully copied-up object from one the
// overlay changed. A step (ops.go) is one operation on the merged view:
// open/create in its flavours, read, write, append, truncate, chmod,
// chown, utimes, the xattr calls, mknod, mkdir, symlink, link, unlink,
// rmdir, rename with NOREPLACE/EXCHANGE/WHITEOUT, O_TMPFILE with linkat,
// fallocate, FS_IOC_GETFLAGS, readdir (names, d_type, d_ino against
// st_ino; a stream rewound half way; a count for huge directories),
// statfs; or a remount of both sides.
//
// # How a case runs (diff_test.go)
//
// Every case gets its own tmpfs (so all layers of a side share one
// filesystem, as kernel overlayfs wants for persistent unique inode
// numbers, and tmpfs has trusted xattrs, RENAME_WHITEOUT, O_TMPFILE and
// file handles). The fixture is built twice below it, once per side. Layers
// with OCI markers are converted for the kernel as containerd does
// (ConvertForKernel: .wh.NAME becomes a char 0/0 whiteout, .wh..wh..opq
// opaque=y); ours gets the raw OCI form. SeparateFS cases put every lower on
// a tmpfs of its own, so objects of different layers have the same real
// inode numbers.
//
// The kernel side is `mount -t overlay` with xino=auto and the case's
// options (DefaultOptions: redirect_dir=on,index=on,metacopy=on; trusted
// xattrs, the tests run as root). Ours is `govirtiofsd --overlay ...
// --mountpoint MNT --cache never --xattr`, built once from cmd/govirtiofsd
// and run in a child process (a Go process must not serve a FUSE mount and
// use it, see internal/posixtest); --cache never makes the entry and
// attribute timeouts 0 so the FUSE client's caches hide nothing. Unmounting
// is umount(2), after which the daemon must exit with status 0.
//
// Then, for the initial state and after every step:
//
//   - the step's result on both sides: the errno (exactly), and what the
//     step observed (data read, a directory listing with d_type, d_ino
//     against lstat's st_ino, and so on);
//   - a manifest of each merged view (manifest.go): per path the type,
//     permission bits, owner, size, blocks (regular files), contents (a
//     hash, or the symlink target), the xattrs visible through the mount,
//     nlink, mtime ("fixture", "recent" or the exact time) and the inode
//     identity; plus consistency checks (d_type and d_ino of the readdir
//     entry against lstat, st_dev the root's, no name listed twice), which
//     are required of ours rather than compared, because the kernel
//     breaks one itself (see CompareChecks);
//   - a manifest of each upper directory, read on the host.
//
// Inode numbers differ between the sides by nature, so they are compared
// as identities: a tracker labels each st_ino with the path and step where
// it was first seen and keeps the label while the inode stays in view.
// Equal labels mean that the same objects share an inode (hard links),
// that an object keeps its st_ino across a step (copy-up, rename,
// remount), and that no two objects share one (uniqueness across layers).
//
// After the steps both sides are unmounted and the uppers compared once
// more. The upper manifest normalises only what two correct overlays may
// write differently (see UpperManifest): whiteouts are compared by form
// (char 0/0), not by inode (the kernel links its whiteouts together);
// opaque, redirect, nlink, protattr and whiteout xattrs by value; origin
// on non-directories, metacopy and upper by presence (their values are
// file handles of the fixture or digests); uuid, impure and origin on
// directories not at all (mount- and lookup-time bookkeeping of the
// kernel, whose effects the round trip checks). The work directory is not
// compared.
//
// Two more comparisons end every case (but NoManifest ones):
//
//   - remount: ours is mounted again on the upper it left; its merged view
//     must equal the last one before the unmount, with every object's
//     st_ino unchanged;
//   - round trip: kernel overlayfs is mounted on ours's layers (OCI markers
//     converted) and must show the merged view ours showed last (identities
//     compared as "which paths share an inode"), with no consistency
//     problem it did not also have on its own upper.
//
// Only the consistency checks tell the kernel's own quirks from ours; a
// step result or a manifest field where the kernel is inconsistent is
// avoided in the fixtures instead (an xattr whiteout in the lowest layer,
// which kernel 6.18 lists in readdir but not in lookup).
//
// A difference fails the test with one line naming the step, the view,
// the path, the field, and both values:
//
//	step 5 "chmod t/chmod 04755": upper: t/chmod: xattrs: kernel trusted.overlay.metacopy=(present) ..., ours ...
//
// unless the case lists it in Differs, the short table of intentional
// differences (reasons given), which are logged instead.
//
// # Running
//
// The tests need root, /dev/fuse and kernel overlayfs; without them they
// skip, and under CI=true they fail (internal/testenv).
//
//	go test ./internal/overlaytest/                                  # govirtiofsd vs kernel
//	OVERLAYTEST_OURS=fuse-overlayfs go test ./internal/overlaytest/  # harness check against fuse-overlayfs
//	OVERLAYTEST_OURS=kernel go test ./internal/overlaytest/          # harness check: kernel vs kernel, must pass
//	OVERLAYTEST_SABOTAGE=lookup/topmost-wins go test ...             # adds a file to ours's fixture: must fail
//	OVERLAYTEST_LOG_STEPS=1 go test -v -run 'TestDifferential/rename' ... # log every step's kernel result and timing
//
// fuse-overlayfs is a stand-in only (it has no redirect_dir, index or
// metacopy, writes its own upper format, and answers EXDEV to some
// directory renames); its differences are expected.
package overlaytest
