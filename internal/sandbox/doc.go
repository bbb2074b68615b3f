// Package sandbox confines the daemon the way virtiofsd does, so that a bug
// in the filesystem code still cannot reach anything but the shared
// directory:
//
//   - Namespace mode (the default) re-executes the daemon in new mount, PID,
//     network and IPC namespaces (Spawn), where it opens its shared
//     directories and then replaces its root with an empty read-only tmpfs
//     holding only a private /proc (EnterNamespace): every later access to
//     the share goes through descriptors opened before, and the host's
//     file tree, processes, network and IPC objects are out of reach.
//     Run by a user other than root, or with UID/GID maps, the child also
//     gets a user namespace: the maps are written from outside (by the
//     setuid newuidmap and newgidmap helpers when the parent is not root),
//     and the child becomes root inside it.
//   - Chroot mode, for hosts where the daemon may not create namespaces
//     (inside a container), chroot(2)s into the shared directory.
//   - None leaves the process as it is.
//
// Whatever the mode, DropCapabilities then keeps only the capabilities the
// daemon needs (virtiofsd's list, adjusted with --modcaps), and SetNofile
// raises RLIMIT_NOFILE as virtiofsd's --rlimit-nofile does.
//
// The child learns what its parent set up from environment variables (see
// Child), so that the parent can hand it descriptors (a listening socket, a
// /dev/fuse session) by number.
package sandbox
