// Package passthrough serves a host directory as a fuseproto.FileSystem.
//
// # Inodes
//
// Every host inode the guest knows is one entry of an inode table. With
// file handles (Options.InodeFileHandles, prefer by default) an inode is
// keyed by its mount id and file handle and holds no descriptor: a request
// opens one with open_by_handle_at (through a descriptor per host mount) and
// closes it when the last request using the inode ends (inode.pin), so the
// daemon keeps descriptors only for open files. Without handles (never, or
// a filesystem that makes none) it is keyed by its host identity (st_dev,
// st_ino and the mount id from statx) and holds an O_PATH|O_NOFOLLOW
// descriptor, which keeps the host inode, and so its number, alive; a
// handle, unlike st_ino, is never reused by another inode. Node IDs are our
// own counter: the root is fuseproto.RootID and is never forgotten; other
// IDs are never reused. An inode lives while the kernel's lookup count (one
// per reply carrying an EntryOut, given back by Forget) or our own reference
// count (one per request or open handle using it) is nonzero; when both
// reach zero it is removed and its descriptor closed. Attr.Ino is the host
// st_ino, and Generation is always 0, as node IDs are never reused. An
// inode referenced by its handle that the host deletes while the guest
// has it open only by name is gone: requests on it answer ESTALE, as in
// virtiofsd (an open file's descriptor keeps it).
//
// # Migration
//
// SaveState and LoadState (fuseproto.Migrator) move the inode and handle
// tables to another daemon over the same share; see state.go.
//
// # Path safety
//
// Every host operation is relative to a held descriptor: names are single
// components resolved with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS) (or openat with O_NOFOLLOW where openat2 is
// missing; see hostfs.Resolver), no host symlink is ever followed, ".." of
// the root is the root, and descriptors for I/O are reopened from the
// O_PATH one through /proc/self/fd, for regular files and directories only:
// device nodes, fifos, sockets and symlinks are never opened. Extended attributes are
// reached through the /proc/self/fd/N path of the inode, so /proc must stay
// mounted in the daemon's mount namespace.
//
// # Credentials
//
// Operations that create an inode (Mknod, Mkdir, Symlink, Create, Tmpfile),
// Access and the flag-setting ioctls run with the caller's fsuid, fsgid and
// supplementary groups on a locked OS thread (hostfs.Switcher, through
// asCaller in creds.go), so new files belong to the caller from the instant
// they exist. Everything else runs with the daemon's ids; the guest kernel
// checks permissions itself (virtiofs mounts always use
// default_permissions).
//
// # Locks
//
// POSIX record locks are host open-file-description locks taken on a
// descriptor per (inode, lock owner), kept by each inode's hostfs.Locks, so
// that two guest processes sharing an inode do not share locks. Flush (each
// close(2) in the guest) closes the owner's descriptor, which releases its
// locks; Release also drops the owners that took locks through the handle
// (OFD locks in the guest, whose owner no FLUSH names). flock(2) locks are
// taken on the handle's own descriptor. A waiting SETLKW polls with a
// growing backoff instead of blocking a worker, and answers EINTR when the
// request is interrupted or the session ends.
//
// Poll answers ENOSYS, after which the kernel treats files as always ready,
// which is true of regular files and directories, the only kinds we open.
// Bmap answers ENOSYS: it is meaningful only for block-device FUSE.
//
// # Lock order
//
// Mutexes are taken in this order, and none is held across a blocking wait:
//
//  1. dirStream.mu (one directory handle's listing state; held while
//     READDIRPLUS looks entries up)
//  2. hostfs.Locks.mu of inode.locks (one inode's lock-owner descriptors;
//     held while opening an owner's descriptor through /proc/self/fd,
//     which takes none of ours)
//  3. inodeTable.mu (lookup counts and references; no system call is made
//     under it)
//  4. handleTable.mu (handle numbers; never held while calling out)
//  5. inode.fdMu and hostfs.Mounts.mu (leaves: an inode's descriptor
//     opened by handle, and the mount descriptors; fdMu is held across
//     that open_by_handle_at and its close, Mounts.mu across no system
//     call)
//
// Descriptors are closed only when the last reference goes, outside
// inodeTable.mu and handleTable.mu.
package passthrough
