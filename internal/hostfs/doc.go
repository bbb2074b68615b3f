// Package hostfs holds the host-side helpers shared by the filesystems that
// serve a host directory (passthrough and overlay): errno conversion and name
// checks, statx without allocation, single-component opens that never leave a
// directory or follow a symlink, per-thread credential switching, and POSIX
// record locks kept as host OFD locks per guest lock owner.
//
// It is the only package of those filesystems that imports unsafe, for the
// few raw system calls golang.org/x/sys/unix does not wrap (sys.go).
//
// # Opening names
//
// Resolver.OpenBeneath resolves one name in a directory descriptor with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS), or
// openat with O_NOFOLLOW on kernels without openat2, where names that are
// not single components are refused.
//
// # Credentials
//
// Switcher.AsCaller runs a function with a caller's fsuid, fsgid and
// supplementary groups, set with raw per-thread system calls on a goroutine
// locked to its OS thread; Go's setuid family, which changes every thread of
// the process, is never used. A thread whose ids cannot be restored is
// discarded by the runtime.
//
// # Locks
//
// Locks keeps the POSIX record locks of one inode as open-file-description
// locks on one host descriptor per guest lock owner, so that two guest
// processes never share locks; dropping an owner closes its descriptor,
// which releases them. A waiting lock polls with a growing backoff
// (RetryLock) instead of blocking a worker, so an interrupt or the end of
// the session can always cancel it.
//
// # File handles
//
// HandleOf and OpenHandle wrap name_to_handle_at(2) and open_by_handle_at(2)
// (ErrNoHandles marks a filesystem that makes none); Mounts keeps the
// descriptor per host mount that opening a handle needs, counted by its
// users.
//
// # Lock order
//
// Locks.mu, one per inode, is the package's only mutex besides
// Mounts.mu, a leaf held across no system call. It is held while an
// OpenFunc opens an owner's descriptor and while Getlk asks the other
// owners' descriptors who holds a conflicting lock (non-blocking fcntl
// calls), and never across a lock wait: RetryLock sleeps with no mutex held.
// A caller may hold its own mutexes ordered before Locks.mu when calling in.
// An OpenFunc runs under Locks.mu: it must not call into the same Locks, and
// any mutex it takes comes after Locks.mu in its caller's order. Resolver
// (an atomic flag) and Switcher (immutable after NewSwitcher) have no mutex.
package hostfs
