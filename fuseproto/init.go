package fuseproto

import (
	"fmt"
	"syscall"
)

// DefaultInitFlags are the INIT flags a Server turns on whenever the kernel
// offers them: what a production passthrough daemon uses. Writeback caching
// and POSIX ACLs change semantics, and idmapped mounts need
// default_permissions; they are only turned on through Options.Enable.
//
// Neither killpriv flag is a default, as in virtiofsd: without them the
// guest kernel clears set-user-ID, set-group-ID and security.capability
// itself, with SETATTR and REMOVEXATTR requests, after checking the
// caller's CAP_FSETID. FUSE_HANDLE_KILLPRIV (v1) is never turned on, as
// virtiofsd never turns it on: it leaves the killing on writes, truncates
// and chowns to the server without saying whether the caller has
// CAP_FSETID.
const DefaultInitFlags = InitAsyncRead | InitPosixLocks | InitAtomicOTrunc |
	InitExportSupport | InitBigWrites | InitDontMask | InitFlockLocks |
	InitAutoInvalData | InitDoReaddirplus | InitReaddirplusAuto | InitAsyncDIO |
	InitParallelDirops | InitMaxPages | InitCacheSymlinks | InitSubmounts |
	InitSetxattrExt | InitInitExt | InitCreateSuppGroup

// optionalInitFlags may be turned on by Options.Enable.
// InitAllowIdmap is among them because the kernel refuses a session that
// turns it on without default_permissions: a transport that knows the mount
// has default_permissions (virtio-fs always does) enables it.
// InitHandleKillprivV2 (--killpriv-v2) has the filesystem clear the set-ID
// bits when the kernel flags a write, truncating open or SETATTR with
// WriteKillSUIDGID, OpenKillSUIDGID or FattrKillSUIDGID.
// InitDirectIOAllowMmap (--allow-mmap) lets the guest mmap files opened
// with FOPEN_DIRECT_IO shared. InitSecurityCtx (--security-label) makes the
// kernel send security contexts with creating requests (Context.SecCtx);
// unlike the others, a kernel that does not offer it fails INIT (EPROTO),
// as in virtiofsd, rather than silently storing no labels.
// InitPassthrough (Linux 6.9+, /dev/fuse only) lets the Server answer opens
// with FOPEN_PASSTHROUGH when the FileSystem is a BackingFiler and the
// transport a BackingReplier (see passthrough.go); the kernel ignores it
// with the writeback cache, so negotiate drops it then.
const optionalInitFlags = InitWritebackCache | InitPosixACL | InitExplicitInvalData |
	InitNoOpenSupport | InitNoOpendirSupport | InitAllowIdmap |
	InitHandleKillprivV2 | InitDirectIOAllowMmap | InitSecurityCtx | InitPassthrough

// passthroughStackDepth is fuse_init_out.max_stack_depth with
// InitPassthrough: backing files may be on filesystems that stack on no
// other (not overlayfs, not another passthrough FUSE mount: BACKING_OPEN
// answers ELOOP for those and the Server serves their I/O itself). The
// kernel gives the FUSE superblock this depth, so 1 still lets an overlay
// use the mount as a layer.
const passthroughStackDepth = 1

// requiredInitFlags fail INIT with EPROTO when enabled but not offered.
const requiredInitFlags = InitSecurityCtx

// pageSize is the unit of max_pages.
const pageSize = 4096

// negotiate computes the INIT reply for the kernel's in, following the
// version rules of fuse.h: a kernel with a newer major gets our major and
// sends INIT again; an older major, or a minor older than MinKernelMinor, is
// refused with EPROTO; otherwise both sides speak the smaller minor. It
// returns the reply, its wire size (kernels before 7.23 take a shorter
// struct), and the session Config.
func (s *Server) negotiate(in *InitIn) (out InitOut, size int, cfg Config, errno Errno) {
	out.Major = KernelVersion
	out.Minor = KernelMinorVersion
	size = sizeOf[InitOut]()
	if in.Major > KernelVersion {
		return out, size, cfg, OK
	}
	if in.Major < KernelVersion || in.Minor < MinKernelMinor {
		return out, 0, cfg, syscall.EPROTO
	}
	minor := min(in.Minor, KernelMinorVersion)
	offered := uint64(in.Flags)
	if minor < 36 {
		// flags2 and INIT_EXT arrived with 7.36.
		offered &^= InitInitExt
	} else if offered&InitInitExt != 0 {
		offered |= uint64(in.Flags2) << 32
	}
	want := (DefaultInitFlags | s.opts.Enable&optionalInitFlags) &^ s.opts.Disable
	enabled := offered & want
	if enabled&InitWritebackCache != 0 {
		// The kernel turns passthrough off with the writeback cache.
		enabled &^= InitPassthrough
	}
	if enabled&InitInitExt == 0 {
		// Without INIT_EXT there is no flags2 in the reply.
		enabled &= 1<<32 - 1
	}
	if missing := want & requiredInitFlags &^ enabled; missing != 0 {
		s.log.Error("the kernel does not offer a FUSE feature that was asked for", "flags", fmt.Sprintf("%#x", missing))
		return out, 0, cfg, syscall.EPROTO
	}

	out.Minor = minor
	out.MaxReadahead = in.MaxReadahead
	out.Flags = uint32(enabled)
	if enabled&InitInitExt != 0 {
		out.Flags2 = uint32(enabled >> 32)
	}
	out.MaxBackground = s.opts.MaxBackground
	out.CongestionThreshold = s.opts.CongestionThreshold
	out.MaxWrite = s.maxWrite
	out.TimeGran = 1
	if enabled&InitMaxPages != 0 {
		out.MaxPages = uint16(s.maxWrite / pageSize)
	}
	if enabled&InitPassthrough != 0 {
		out.MaxStackDepth = passthroughStackDepth
	}
	if minor < 23 {
		size = InitOutCompat22Size
	}
	cfg = Config{Minor: minor, Flags: enabled, MaxWrite: s.maxWrite, MaxReadahead: in.MaxReadahead}
	return out, size, cfg, OK
}
