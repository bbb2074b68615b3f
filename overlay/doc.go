// Package overlay serves a union of a writable upper directory over
// read-only lower directories as a fuseproto.FileSystem, with kernel
// overlayfs's semantics and on-disk format: kernel overlayfs can mount an
// upper this package wrote, and this package reads uppers and lowers the
// kernel or image tools wrote.
//
// # Layers
//
// A name is looked up in the upper first, then in each lower directory
// merged into its parent, topmost first. The topmost non-directory hides
// everything below it; directories of the same name merge; a whiteout (a
// 0/0 character device, an xattr whiteout in a directory marked
// opaque=x, or in the lowers an OCI .wh.NAME) stops the search, and an
// opaque directory (opaque=y, or .wh..wh..opq in a lower) merges nothing
// below it. A directory's redirect xattr sends the search of the lowers to
// another name or path (whiteout.go, lookup.go).
//
// # Identity
//
// An inode's identity is the host object it originates from: the lower
// object a copy-up came from (its origin xattr holds the lower's file
// handle, decoded with open_by_handle_at), else the upper object, else the
// topmost lower one. st_ino is that object's number, with the index of its
// filesystem in the top 8 bits when the layers span several filesystems
// (kernel overlayfs's xino), so it is unique across layers, the same before
// and after copy-up and across remounts, and READDIR's d_ino is the same
// number (origin.go).
//
// # Changes
//
// Every change to a lower object copies it up first (copyup.go): the
// parent chain, then the object, built in workdir/work and renamed into
// place. Hard-linked lower files go through workdir/index (index=on) so
// their names stay one inode; metadata-only changes copy up metadata only
// (metacopy=on). Removal leaves a whiteout where a lower still holds the
// name (remove.go); creation over a whiteout replaces it in one rename
// (create.go); renames of lower and merged directories record redirects
// (rename.go). Everything on the layers is done with the daemon's
// credentials, except that new objects are created with the caller's, so
// the host applies ownership, set-group-ID and default ACL inheritance;
// the guest kernel checks permissions (default_permissions) against the
// union's attributes, which copy-up preserves.
//
// # Lock order
//
//  1. FS.renameMu (renames only)
//  2. inode.mu of directories, ancestors before descendants (a rename
//     locks its two parents, the ancestor first; unrelated ones in any
//     order, as only renames lock two and they are serialized)
//  3. inode.mu of the objects in them (copy-up locks parent then child)
//  4. dirStream.mu (a directory handle's listing; taken with no inode.mu
//     held, and READDIRPLUS lookups then take the directory's)
//  5. hostfs.Locks.mu, then inode.lockMu (the lock file's descriptor)
//  6. inodeTable.mu, handleTable.mu, FS.devMu, FS.originMu (leaf locks; no
//     system call under inodeTable.mu)
package overlay
