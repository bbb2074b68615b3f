package seccomp

import "golang.org/x/sys/unix"

// arch is arm64's native convention. A 32-bit (AArch32) task reports
// AUDIT_ARCH_ARM and is killed; arm64 has no second ABI sharing its
// audit arch.
var arch = archSpec{audit: unix.AUDIT_ARCH_AARCH64}

// allowList is the same set of calls as syscalls_amd64.go, which says why
// each is there, in arm64's numbering (the generic table of
// asm-generic/unistd.h). Every call on the x86_64 list exists here under
// the same name; arm64 has no legacy calls (open, stat, epoll_wait, ...)
// that would need adding.
var allowList = []sysEntry{
	// Go runtime: threads, scheduling, signals, time.
	{"clone", unix.SYS_CLONE},
	{"exit", unix.SYS_EXIT},
	{"exit_group", unix.SYS_EXIT_GROUP},
	{"futex", unix.SYS_FUTEX},
	{"sched_yield", unix.SYS_SCHED_YIELD},
	{"nanosleep", unix.SYS_NANOSLEEP},
	{"clock_gettime", unix.SYS_CLOCK_GETTIME},
	{"gettid", unix.SYS_GETTID},
	{"getpid", unix.SYS_GETPID},
	{"tgkill", unix.SYS_TGKILL},
	{"rt_sigaction", unix.SYS_RT_SIGACTION},
	{"rt_sigprocmask", unix.SYS_RT_SIGPROCMASK},
	{"rt_sigreturn", unix.SYS_RT_SIGRETURN},
	{"sigaltstack", unix.SYS_SIGALTSTACK},
	{"restart_syscall", unix.SYS_RESTART_SYSCALL},
	{"sched_getaffinity", unix.SYS_SCHED_GETAFFINITY},
	{"getrandom", unix.SYS_GETRANDOM},
	{"epoll_create1", unix.SYS_EPOLL_CREATE1},
	{"epoll_ctl", unix.SYS_EPOLL_CTL},
	{"epoll_pwait", unix.SYS_EPOLL_PWAIT},
	{"eventfd2", unix.SYS_EVENTFD2},

	// C library: a cgo build starts threads through glibc's pthread_create.
	{"clone3", unix.SYS_CLONE3},
	{"rseq", unix.SYS_RSEQ},
	{"set_robust_list", unix.SYS_SET_ROBUST_LIST},
	{"mprotect", unix.SYS_MPROTECT},
	{"brk", unix.SYS_BRK},

	// Memory.
	{"mmap", unix.SYS_MMAP},
	{"munmap", unix.SYS_MUNMAP},
	{"madvise", unix.SYS_MADVISE},

	// Files: the shared directory, /dev/fuse, cgroup files the runtime reads.
	{"read", unix.SYS_READ},
	{"write", unix.SYS_WRITE},
	{"writev", unix.SYS_WRITEV},
	{"pread64", unix.SYS_PREAD64},
	{"pwrite64", unix.SYS_PWRITE64},
	{"preadv", unix.SYS_PREADV},
	{"pwritev", unix.SYS_PWRITEV},
	{"preadv2", unix.SYS_PREADV2},
	{"pwritev2", unix.SYS_PWRITEV2},
	{"lseek", unix.SYS_LSEEK},
	{"openat", unix.SYS_OPENAT},
	{"openat2", unix.SYS_OPENAT2},
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT},
	{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT},
	{"close", unix.SYS_CLOSE},
	{"dup", unix.SYS_DUP},
	{"fcntl", unix.SYS_FCNTL},
	{"fstat", unix.SYS_FSTAT},
	{"newfstatat", unix.SYS_NEWFSTATAT},
	{"statx", unix.SYS_STATX},
	{"fstatfs", unix.SYS_FSTATFS},
	{"getdents64", unix.SYS_GETDENTS64},
	{"readlinkat", unix.SYS_READLINKAT},
	{"mkdirat", unix.SYS_MKDIRAT},
	{"mknodat", unix.SYS_MKNODAT},
	{"symlinkat", unix.SYS_SYMLINKAT},
	{"linkat", unix.SYS_LINKAT},
	{"renameat2", unix.SYS_RENAMEAT2},
	{"unlinkat", unix.SYS_UNLINKAT},
	{"fchmod", unix.SYS_FCHMOD},
	{"fchmodat", unix.SYS_FCHMODAT},
	{"fchmodat2", unix.SYS_FCHMODAT2},
	{"fchownat", unix.SYS_FCHOWNAT},
	{"utimensat", unix.SYS_UTIMENSAT},
	{"ftruncate", unix.SYS_FTRUNCATE},
	{"fallocate", unix.SYS_FALLOCATE},
	{"copy_file_range", unix.SYS_COPY_FILE_RANGE},
	{"fsync", unix.SYS_FSYNC},
	{"fdatasync", unix.SYS_FDATASYNC},
	{"syncfs", unix.SYS_SYNCFS},
	{"faccessat2", unix.SYS_FACCESSAT2},
	{"memfd_create", unix.SYS_MEMFD_CREATE},
	{"ioctl", unix.SYS_IOCTL},
	{"fchdir", unix.SYS_FCHDIR},
	{"unshare", unix.SYS_UNSHARE},

	// Extended attributes: by /proc/self/fd path, by handle, by name.
	{"getxattr", unix.SYS_GETXATTR},
	{"setxattr", unix.SYS_SETXATTR},
	{"listxattr", unix.SYS_LISTXATTR},
	{"removexattr", unix.SYS_REMOVEXATTR},
	{"lgetxattr", unix.SYS_LGETXATTR},
	{"lsetxattr", unix.SYS_LSETXATTR},
	{"llistxattr", unix.SYS_LLISTXATTR},
	{"lremovexattr", unix.SYS_LREMOVEXATTR},
	{"fgetxattr", unix.SYS_FGETXATTR},
	{"fsetxattr", unix.SYS_FSETXATTR},
	{"flistxattr", unix.SYS_FLISTXATTR},
	{"fremovexattr", unix.SYS_FREMOVEXATTR},
	{"getxattrat", unix.SYS_GETXATTRAT},
	{"setxattrat", unix.SYS_SETXATTRAT},
	{"listxattrat", unix.SYS_LISTXATTRAT},
	{"removexattrat", unix.SYS_REMOVEXATTRAT},

	// Locks.
	{"flock", unix.SYS_FLOCK},

	// vhost-user: the VMM's connection.
	{"accept4", unix.SYS_ACCEPT4},
	{"getsockname", unix.SYS_GETSOCKNAME},
	{"recvmsg", unix.SYS_RECVMSG},
	{"sendmsg", unix.SYS_SENDMSG},
	{"ppoll", unix.SYS_PPOLL},

	// Credentials: per-thread, as raw system calls (internal/hostfs).
	{"setfsuid", unix.SYS_SETFSUID},
	{"setfsgid", unix.SYS_SETFSGID},
	{"setgroups", unix.SYS_SETGROUPS},

	// Shutdown.
	{"umount2", unix.SYS_UMOUNT2},
}
