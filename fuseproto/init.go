package fuseproto

import "syscall"

// DefaultInitFlags are the INIT flags a Server turns on whenever the kernel
// offers them: what a production passthrough daemon uses. Writeback caching
// and POSIX ACLs change semantics, and idmapped mounts need
// default_permissions; they are only turned on through Options.Enable.
const DefaultInitFlags = InitAsyncRead | InitPosixLocks | InitAtomicOTrunc |
	InitExportSupport | InitBigWrites | InitDontMask | InitFlockLocks |
	InitAutoInvalData | InitDoReaddirplus | InitReaddirplusAuto | InitAsyncDIO |
	InitParallelDirops | InitHandleKillpriv | InitHandleKillprivV2 |
	InitMaxPages | InitCacheSymlinks | InitSubmounts | InitSetxattrExt |
	InitInitExt | InitCreateSuppGroup | InitDirectIOAllowMmap

// optionalInitFlags may be turned on by Options.Enable.
// InitAllowIdmap is among them because the kernel refuses a session that
// turns it on without default_permissions: a transport that knows the mount
// has default_permissions (virtio-fs always does) enables it.
const optionalInitFlags = InitWritebackCache | InitPosixACL | InitExplicitInvalData |
	InitNoOpenSupport | InitNoOpendirSupport | InitAllowIdmap

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
	if minor < 23 {
		size = InitOutCompat22Size
	}
	cfg = Config{Minor: minor, Flags: enabled, MaxWrite: s.maxWrite, MaxReadahead: in.MaxReadahead}
	return out, size, cfg, OK
}
