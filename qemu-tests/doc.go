// Package qemutests holds the end-to-end tests that boot real QEMU guests
// against a vhost-user-fs daemon: the guest mounts the share with
// `mount -t virtiofs` and runs a checker program (guest/) on it, and the host
// reads the verdicts from the serial console and verifies what the guest
// left in the share.
//
// Two kernel/QEMU pairs run, one after the other:
//
//	linux-6.1+qemu-7.2    Debian 12's kernel (virtio and virtiofs as modules)
//	                      and Debian 12's QEMU, one vCPU, one request queue
//	linux-6.12+qemu-10.0  the bookworm-backports kernel (built in) and QEMU,
//	                      -smp 4 and num-request-queues=4
//
// Prerequisites come from setup.sh (QEMU 7.2 and 10.0, guest kernels,
// busybox, base initramfs images; all cached outside the repository) and the
// daemon binary. Under CI=true the test runs setup.sh itself (about a second
// once its downloads are cached) and a missing prerequisite is a failure;
// elsewhere the test skips with a message saying what to run.
//
// Each check the guest reports is a subtest (TestQEMU/<pair>/<check>); where
// the check leaves files behind, the subtest also verifies them on the host.
// The guest then runs the conformance suite internal/posixtest on the mount
// (TestQEMU/<pair>/posix/<test>). More subtests: request_queues (the
// multi-queue pair spread requests over its queues, from the guest's
// /proc/interrupts) and daemon_exit (the daemon exited with status 0 once
// QEMU was gone). Console and daemon logs of the last run are kept in
// QEMUTEST_LOGDIR.
//
// TestQEMUOverlay boots a guest (by default only the 6.12 pair) on an
// overlay served by `govirtiofsd --overlay lowerdir=L1:L2,upperdir=U,
// workdir=W`, its layers on a tmpfs the test mounts. The guest's checker
// (guesttest -overlay) untars about 4,000 entries of Go's source into the
// union and changes lower files and directories every way overlayfs keeps
// records of (internal/ovlcase): each step is a verdict
// (TestQEMUOverlay/<pair>/overlay_<step>). It then lists the union with cold
// caches and leaves the manifest in the union. On the host: the lowers
// must be unchanged to the byte (lowers_unchanged: contents, owners, modes,
// xattrs, mtimes, ctimes, inode numbers), the daemon's work directory free
// of leftovers (workdir_clean), kernel overlayfs mounted on L1:L2 with the
// daemon's U and W (redirect_dir, index, metacopy on) must show exactly the
// tree the guest listed (kernel_roundtrip), the upper must hold the changes
// and nothing else (upper_holds_changes), and the same steps run on kernel
// overlayfs over the same lowers must give the guest's tree but for the
// mtimes of changed objects (reference). It needs root (tmpfs, overlayfs).
//
// TestQEMUIDMap boots a guest (by default the 6.12 pair) against a daemon
// with --translate-uid/--translate-gid rules (internal/idcase: guest 0 ↔
// host 200000, guest 1000 ↔ host 201000, guest 666 forbidden): guest root,
// user 1000 and user 666 create, chown and change objects; the guest checks
// the owners it sees (warm, after a cold lookup, through READDIRPLUS) and
// the EPERMs of the forbidden user, and the host checks every object's
// exact owner afterwards (host_owners).
//
// TestQEMUStream boots a guest (by default the 6.12 pair) with no
// vhost-user-fs device: a virtio-serial port whose host end QEMU connects to
// `govirtiofsd --listen unix:SOCK`, and govirtiofs-guest in the guest
// relaying between /dev/fuse and /dev/virtio-ports/govirtiofs (init.sh's
// gvt.stream=). The same checks and conformance suite as TestQEMU run on
// that mount (less the two big-directory tests, minutes over the serial
// stream); after the unmount the relay must exit 0, and the daemon, stopped
// with SIGTERM once QEMU is gone, too.
//
// TestQEMUDropIn starts the daemon with each command line an orchestrator
// generates for the Rust virtiofsd, unchanged (libvirt's system and
// session daemons and its older -o form, Kata's Go runtime and runtime-rs,
// Cloud Hypervisor's documentation), with the listening socket passed as
// that orchestrator passes it (libvirt: a socket it bound and listens on,
// as fd 5; Kata's Go runtime: fd 3) and the session line run as the
// unprivileged user govirtiofs-test with libvirt's --uid-map/--gid-map
// from /etc/subuid. One 6.12 guest per line runs a short check
// (internal/dropcase: create, write, read, append, rename, unlink, readdir,
// stat, a file made by user 1000, xattrs as the line asks), the host checks
// owners and contents, and the daemon must exit 0 with QEMU
// (TestQEMUDropIn/<line>/<pair>/<check>). About 50 s.
//
// TestQEMUPosixACL serves a 6.12 guest with --xattr --posix-acl: guest
// root writes access and default ACLs as system.posix_acl_* xattrs, users
// 1000 and 1001 are granted and refused accordingly, new files inherit the
// default ACL, and the host reads the same ACLs back (internal/aclcase).
//
// TestQEMUSecurityLabel serves a 6.12 guest with --security-label. The
// guest boots with lsm=selinux on its kernel command line
// (guestRun.kernelArgs) and no policy, so its kernel sends the SELinux
// label of every new object ("unlabeled\0") with CREATE, MKDIR, SYMLINK
// and MKNOD (FUSE_SECURITY_CTX) and the daemon stores it on the host
// object. The
// guest (guesttest -seclabel, internal/seclabelcase) makes a file, a
// directory, a symlink and a fifo, reads security.selinux back (getxattr,
// listxattr, warm and with cold caches; uninitialized SELinux leaves both
// to the filesystem) and reports it; the host then requires exactly that
// value in the object's xattr (TestQEMUSecurityLabel/<case>/<pair>/
// seclabel_<op>). Two cases, one guest each: security (security.selinux on
// the host, the daemon with --modcaps=+sys_admin) and user_xattrmap
// (--xattrmap ":prefix:all:security.:user.virtiofs.::ok:all:::", the label
// under user.virtiofs.security.selinux; the host allows user.* only on
// files and directories, so the symlink and the fifo must fail with EPERM
// and leave nothing behind). About 15 s.
//
// TestQEMUMigration live-migrates a 6.12 guest between two QEMU 10.0
// processes over QMP, each served by its own daemon on the same share,
// while the guest holds files open (internal/migcase); the guest goes on
// with them on the destination. It needs a daemon with vhost-user-fs
// migration (LOG_SHMFD, VHOST_F_LOG_ALL, DEVICE_STATE).
//
// QEMUTEST_DAEMON=virtiofsd-rust runs any of them against the reference
// Rust virtiofsd 1.13 (Debian trixie's, fetched by
// setup-virtiofsd-rust.sh into the cache and run through trixie's loader;
// one request queue).
//
// Environment:
//
//	GOVIRTIOFSD             the daemon binary (default ../bin/govirtiofsd)
//	QEMUTEST_DAEMON         govirtiofsd (default), virtiofsd-c, the C
//	                        virtiofsd that Debian's QEMU 7.2 ships
//	                        (/usr/lib/qemu/virtiofsd), or virtiofsd-rust
//	                        (setup-virtiofsd-rust.sh); both serve one
//	                        request queue, so the 10.0 pair then uses one
//	QEMUTEST_DAEMON_CMD     any other daemon: a command line in which
//	                        {socket} and {dir} are replaced (e.g.
//	                        "mydaemon --socket-path={socket} --dir {dir}");
//	                        with {overlay} (replaced by the overlayfs
//	                        options) it also runs TestQEMUOverlay
//	QEMUTEST_DAEMON_ARGS    extra arguments appended to the daemon's
//	QEMUTEST_REQUEST_QUEUES num-request-queues for the 10.0 pair (default 4)
//	QEMUTEST_PAIRS          comma-separated subset of pairs to run, by full
//	                        name or kernel version ("6.1", "6.12")
//	QEMUTEST_OVERLAY_PAIRS  the same for TestQEMUOverlay (default
//	                        QEMUTEST_PAIRS if set, else "6.12")
//	QEMUTEST_IDMAP_PAIRS    the same for TestQEMUIDMap
//	QEMUTEST_ACL_PAIRS      the same for TestQEMUPosixACL
//	QEMUTEST_SECLABEL_PAIRS the same for TestQEMUSecurityLabel (6.1 sends
//	                        the label as a trailing argument, 6.12 as a
//	                        request extension)
//	QEMUTEST_DROPIN_PAIRS   the pairs of TestQEMUDropIn (default "6.12")
//	QEMUTEST_DROPIN_CASES   regexp: the command lines it runs
//	QEMUTEST_MIGRATION_PAIRS the pairs of TestQEMUMigration (QEMU 10.0
//	                        only; default "6.12")
//	QEMUTEST_CHECKS         regexp: run only the checker's checks it matches
//	QEMUTEST_POSIX=0        leave out the posixtest suite
//	QEMUTEST_POSIX_RUN      regexp: run only the suite's tests it matches
//	QEMUTEST_TIMEOUT        per-guest limit in seconds (default 600)
//	QEMUTEST_WATCHDOG       seconds a guest program may print nothing before
//	                        the guest dumps blocked tasks and stops it
//	                        (default 90; the host gives up a minute later)
//	QEMUTEST_LOGDIR         where console and daemon logs go (default
//	                        ../bin/qemu-tests)
//	QEMUTEST_KEEP=1         keep the temporary share (kept on failure too,
//	                        without its two 256 MiB files); for the overlay
//	                        case, keep its tmpfs of layers mounted
//	QEMUTEST_SETUP=1        run setup.sh first, as CI=true does
//	GOVIRTIOFS_CACHE        setup.sh's cache folder (see setup.sh)
package qemutests
