package seccomp

import "golang.org/x/sys/unix"

// arch is x86_64's native convention. The x32 ABI reports the same audit
// arch with bit 30 set in the number: refused.
var arch = archSpec{audit: unix.AUDIT_ARCH_X86_64, refuseBit: 0x40000000}

// allowList is what govirtiofsd calls on x86_64 once it serves, found by
// reading the code and by tracing the daemon (strace -f) under the posix
// and overlay suites over /dev/fuse, the command's own tests and the QEMU
// guests over vhost-user. The numbers are x/sys/unix's, which come from
// the kernel's headers; TestTableNames checks each name against its
// constant.
var allowList = []sysEntry{
	// Go runtime: threads, scheduling, signals, time.
	{"clone", unix.SYS_CLONE},                         // new OS threads (newosproc)
	{"exit", unix.SYS_EXIT},                           // a thread ends (a goroutine that exits locked, as hostfs's after a failed credential restore)
	{"exit_group", unix.SYS_EXIT_GROUP},               // the process ends
	{"futex", unix.SYS_FUTEX},                         // parking and waking threads
	{"sched_yield", unix.SYS_SCHED_YIELD},             // spinning locks (osyield)
	{"nanosleep", unix.SYS_NANOSLEEP},                 // usleep: sysmon, spinning
	{"clock_gettime", unix.SYS_CLOCK_GETTIME},         // nanotime/walltime when the vDSO is missing
	{"gettid", unix.SYS_GETTID},                       // thread ids for signals
	{"getpid", unix.SYS_GETPID},                       // preemption: tgkill(getpid(), tid, SIGURG)
	{"tgkill", unix.SYS_TGKILL},                       // preemption signals, signal forwarding
	{"rt_sigaction", unix.SYS_RT_SIGACTION},           // os/signal, crash handling
	{"rt_sigprocmask", unix.SYS_RT_SIGPROCMASK},       // thread start and exit
	{"rt_sigreturn", unix.SYS_RT_SIGRETURN},           // return from every signal handler
	{"sigaltstack", unix.SYS_SIGALTSTACK},             // signal stack of each new thread
	{"restart_syscall", unix.SYS_RESTART_SYSCALL},     // a sleep interrupted by a signal resumes
	{"sched_getaffinity", unix.SYS_SCHED_GETAFFINITY}, // GOMAXPROCS follows CPU affinity and cgroup limits (Go 1.25)
	{"getrandom", unix.SYS_GETRANDOM},                 // runtime and crypto randomness without the vDSO
	{"epoll_create1", unix.SYS_EPOLL_CREATE1},         // the network poller, made on first use
	{"epoll_ctl", unix.SYS_EPOLL_CTL},                 // registering sockets and pipes
	{"epoll_pwait", unix.SYS_EPOLL_PWAIT},             // netpoll
	{"eventfd2", unix.SYS_EVENTFD2},                   // netpoll wake-up; virtio-fs queue wake-ups and kick/call fds in tests

	// C library: a cgo build starts threads through glibc's pthread_create.
	{"clone3", unix.SYS_CLONE3},                   // glibc 2.34+ thread creation
	{"rseq", unix.SYS_RSEQ},                       // glibc registers each new thread
	{"set_robust_list", unix.SYS_SET_ROBUST_LIST}, // glibc thread start
	{"mprotect", unix.SYS_MPROTECT},               // guard page of a glibc thread stack
	{"brk", unix.SYS_BRK},                         // glibc malloc

	// Memory.
	{"mmap", unix.SYS_MMAP},       // heap, stacks; vhost-user guest memory regions
	{"munmap", unix.SYS_MUNMAP},   // heap, stacks; guest memory on SET_MEM_TABLE and disconnect
	{"madvise", unix.SYS_MADVISE}, // returning heap to the kernel

	// Files: the shared directory, /dev/fuse, cgroup files the runtime reads.
	{"read", unix.SYS_READ},                           // files, /dev/fuse requests, eventfds
	{"write", unix.SYS_WRITE},                         // files, /dev/fuse replies, eventfds, logs
	{"writev", unix.SYS_WRITEV},                       // /dev/fuse replies (header and data)
	{"pread64", unix.SYS_PREAD64},                     // READ into a reply buffer
	{"pwrite64", unix.SYS_PWRITE64},                   // WRITE from a request buffer
	{"preadv", unix.SYS_PREADV},                       // READ into guest memory (virtqueue iovecs)
	{"pwritev", unix.SYS_PWRITEV},                     // WRITE from guest memory
	{"preadv2", unix.SYS_PREADV2},                     // preadv with RWF_* flags: no more than preadv
	{"pwritev2", unix.SYS_PWRITEV2},                   // pwritev with RWF_* flags
	{"lseek", unix.SYS_LSEEK},                         // LSEEK (SEEK_DATA/HOLE), directory rewinds
	{"openat", unix.SYS_OPENAT},                       // opening by descriptor; /dev/fuse for extra readers
	{"openat2", unix.SYS_OPENAT2},                     // hostfs.Resolver: RESOLVE_BENEATH lookups
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT}, // overlay origins, index entries
	{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT}, // overlay origin handles on copy-up
	{"close", unix.SYS_CLOSE},                         // every descriptor
	{"dup", unix.SYS_DUP},                             // FLUSH and OFD lock owners duplicate a handle
	{"fcntl", unix.SYS_FCNTL},                         // F_GETFL/F_SETFL, F_DUPFD_CLOEXEC, OFD locks (F_OFD_*)
	{"fstat", unix.SYS_FSTAT},                         // os.File.Stat, copy-up
	{"newfstatat", unix.SYS_NEWFSTATAT},               // lstat by name (overlay whiteouts, lookups)
	{"statx", unix.SYS_STATX},                         // GETATTR, LOOKUP (hostfs.FdStatx)
	{"fstatfs", unix.SYS_FSTATFS},                     // STATFS, filesystem checks on handles
	{"getdents64", unix.SYS_GETDENTS64},               // READDIR, overlay merged listings
	{"readlinkat", unix.SYS_READLINKAT},               // READLINK
	{"mkdirat", unix.SYS_MKDIRAT},                     // MKDIR, overlay copy-up of directories
	{"mknodat", unix.SYS_MKNODAT},                     // MKNOD, overlay whiteouts (0/0 char devices)
	{"symlinkat", unix.SYS_SYMLINKAT},                 // SYMLINK
	{"linkat", unix.SYS_LINKAT},                       // LINK, TMPFILE names, overlay index
	{"renameat2", unix.SYS_RENAMEAT2},                 // RENAME (RENAME_NOREPLACE/EXCHANGE/WHITEOUT)
	{"unlinkat", unix.SYS_UNLINKAT},                   // UNLINK, RMDIR; removing the vhost-user socket on exit
	{"fchmod", unix.SYS_FCHMOD},                       // SETATTR mode on a handle
	{"fchmodat", unix.SYS_FCHMODAT},                   // SETATTR mode through /proc/self/fd
	{"fchmodat2", unix.SYS_FCHMODAT2},                 // fchmodat with flags (Linux 6.6)
	{"fchownat", unix.SYS_FCHOWNAT},                   // SETATTR owner, copy-up, creation as the caller
	{"utimensat", unix.SYS_UTIMENSAT},                 // SETATTR times
	{"ftruncate", unix.SYS_FTRUNCATE},                 // SETATTR size, O_TRUNC
	{"fallocate", unix.SYS_FALLOCATE},                 // FALLOCATE
	{"copy_file_range", unix.SYS_COPY_FILE_RANGE},     // COPY_FILE_RANGE, overlay copy-up
	{"fsync", unix.SYS_FSYNC},                         // FSYNC, FSYNCDIR
	{"fdatasync", unix.SYS_FDATASYNC},                 // FSYNC with the datasync flag
	{"syncfs", unix.SYS_SYNCFS},                       // SYNCFS
	{"faccessat2", unix.SYS_FACCESSAT2},               // ACCESS
	{"memfd_create", unix.SYS_MEMFD_CREATE},           // overlay: a memfd carries each union inode's locks
	{"ioctl", unix.SYS_IOCTL},                         // FUSE_DEV_IOC_CLONE, FICLONE, FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR
	{"fchdir", unix.SYS_FCHDIR},                       // chroot sandbox: a thread's own cwd for xattrs; unmounting through the mount point's parent
	{"unshare", unix.SYS_UNSHARE},                     // chroot sandbox: unshare(CLONE_FS) only (argRestrictions)

	// Extended attributes: by /proc/self/fd path, by handle, by name.
	{"getxattr", unix.SYS_GETXATTR},       // GETXATTR, overlay whiteouts, opaque dirs, redirects, origins
	{"setxattr", unix.SYS_SETXATTR},       // SETXATTR, overlay copy-up and markers
	{"listxattr", unix.SYS_LISTXATTR},     // LISTXATTR, copy-up
	{"removexattr", unix.SYS_REMOVEXATTR}, // REMOVEXATTR
	{"lgetxattr", unix.SYS_LGETXATTR},     // the same by name, without following a symlink
	{"lsetxattr", unix.SYS_LSETXATTR},
	{"llistxattr", unix.SYS_LLISTXATTR},
	{"lremovexattr", unix.SYS_LREMOVEXATTR},
	{"fgetxattr", unix.SYS_FGETXATTR}, // the same on an open (not O_PATH) descriptor
	{"fsetxattr", unix.SYS_FSETXATTR},
	{"flistxattr", unix.SYS_FLISTXATTR},
	{"fremovexattr", unix.SYS_FREMOVEXATTR},
	{"getxattrat", unix.SYS_GETXATTRAT}, // the *xattrat family (Linux 6.13, numbers 463-466): dirfd-relative
	{"setxattrat", unix.SYS_SETXATTRAT},
	{"listxattrat", unix.SYS_LISTXATTRAT},
	{"removexattrat", unix.SYS_REMOVEXATTRAT},

	// Locks.
	{"flock", unix.SYS_FLOCK}, // BSD locks (SETLK with FUSE_LK_FLOCK), RELEASE with the flock flag
	// POSIX locks are OFD locks: fcntl, above.

	// vhost-user: the VMM's connection.
	{"accept4", unix.SYS_ACCEPT4},         // the front-end's connection (again with --keep-serving)
	{"getsockname", unix.SYS_GETSOCKNAME}, // net.UnixListener.Accept names the accepted socket
	{"recvmsg", unix.SYS_RECVMSG},         // messages with descriptors (memory regions, kick/call eventfds)
	{"sendmsg", unix.SYS_SENDMSG},         // replies; backend requests with descriptors
	{"ppoll", unix.SYS_PPOLL},             // virtio-fs queues wait for a kick (unix.Poll)

	// Credentials: per-thread, as raw system calls (internal/hostfs).
	{"setfsuid", unix.SYS_SETFSUID}, // acting as the caller, and back
	{"setfsgid", unix.SYS_SETFSGID},
	{"setgroups", unix.SYS_SETGROUPS}, // the caller's supplementary groups, and back

	// Shutdown.
	{"umount2", unix.SYS_UMOUNT2}, // unmounting the /dev/fuse mount on SIGTERM (not inside the namespace sandbox, where the parent unmounts)
}
