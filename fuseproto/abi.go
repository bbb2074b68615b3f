package fuseproto

// This file holds the FUSE wire ABI: opcodes, flag bits and the fixed-layout
// structs of the Linux kernel's include/uapi/linux/fuse.h, protocol 7.45.
// Every struct here has exactly the kernel's size and field offsets on
// little-endian 64-bit hosts (abi_test.go checks each one); they are decoded
// from and encoded into request buffers by the audited casts in wire.go.

// Protocol version spoken by this package.
const (
	KernelVersion      = 7
	KernelMinorVersion = 45
	// MinKernelMinor is the oldest minor protocol we accept; older kernels
	// (before Linux 2.6.32) get EPROTO.
	MinKernelMinor = 13
	// RootID is the node ID of the filesystem root.
	RootID = 1
)

// Opcode is a FUSE request opcode.
type Opcode uint32

// FUSE opcodes.
const (
	OpLookup          Opcode = 1
	OpForget          Opcode = 2
	OpGetattr         Opcode = 3
	OpSetattr         Opcode = 4
	OpReadlink        Opcode = 5
	OpSymlink         Opcode = 6
	OpMknod           Opcode = 8
	OpMkdir           Opcode = 9
	OpUnlink          Opcode = 10
	OpRmdir           Opcode = 11
	OpRename          Opcode = 12
	OpLink            Opcode = 13
	OpOpen            Opcode = 14
	OpRead            Opcode = 15
	OpWrite           Opcode = 16
	OpStatfs          Opcode = 17
	OpRelease         Opcode = 18
	OpFsync           Opcode = 20
	OpSetxattr        Opcode = 21
	OpGetxattr        Opcode = 22
	OpListxattr       Opcode = 23
	OpRemovexattr     Opcode = 24
	OpFlush           Opcode = 25
	OpInit            Opcode = 26
	OpOpendir         Opcode = 27
	OpReaddir         Opcode = 28
	OpReleasedir      Opcode = 29
	OpFsyncdir        Opcode = 30
	OpGetlk           Opcode = 31
	OpSetlk           Opcode = 32
	OpSetlkw          Opcode = 33
	OpAccess          Opcode = 34
	OpCreate          Opcode = 35
	OpInterrupt       Opcode = 36
	OpBmap            Opcode = 37
	OpDestroy         Opcode = 38
	OpIoctl           Opcode = 39
	OpPoll            Opcode = 40
	OpNotifyReply     Opcode = 41
	OpBatchForget     Opcode = 42
	OpFallocate       Opcode = 43
	OpReaddirplus     Opcode = 44
	OpRename2         Opcode = 45
	OpLseek           Opcode = 46
	OpCopyFileRange   Opcode = 47
	OpSetupMapping    Opcode = 48
	OpRemoveMapping   Opcode = 49
	OpSyncfs          Opcode = 50
	OpTmpfile         Opcode = 51
	OpStatx           Opcode = 52
	OpCopyFileRange64 Opcode = 53
)

// INIT flags (fuse_init_in.flags and flags2<<32).
const (
	InitAsyncRead         uint64 = 1 << 0
	InitPosixLocks        uint64 = 1 << 1
	InitFileOps           uint64 = 1 << 2
	InitAtomicOTrunc      uint64 = 1 << 3
	InitExportSupport     uint64 = 1 << 4
	InitBigWrites         uint64 = 1 << 5
	InitDontMask          uint64 = 1 << 6
	InitSpliceWrite       uint64 = 1 << 7
	InitSpliceMove        uint64 = 1 << 8
	InitSpliceRead        uint64 = 1 << 9
	InitFlockLocks        uint64 = 1 << 10
	InitHasIoctlDir       uint64 = 1 << 11
	InitAutoInvalData     uint64 = 1 << 12
	InitDoReaddirplus     uint64 = 1 << 13
	InitReaddirplusAuto   uint64 = 1 << 14
	InitAsyncDIO          uint64 = 1 << 15
	InitWritebackCache    uint64 = 1 << 16
	InitNoOpenSupport     uint64 = 1 << 17
	InitParallelDirops    uint64 = 1 << 18
	InitHandleKillpriv    uint64 = 1 << 19
	InitPosixACL          uint64 = 1 << 20
	InitAbortError        uint64 = 1 << 21
	InitMaxPages          uint64 = 1 << 22
	InitCacheSymlinks     uint64 = 1 << 23
	InitNoOpendirSupport  uint64 = 1 << 24
	InitExplicitInvalData uint64 = 1 << 25
	InitMapAlignment      uint64 = 1 << 26
	InitSubmounts         uint64 = 1 << 27
	InitHandleKillprivV2  uint64 = 1 << 28
	InitSetxattrExt       uint64 = 1 << 29
	InitInitExt           uint64 = 1 << 30
	InitInitReserved      uint64 = 1 << 31
	InitSecurityCtx       uint64 = 1 << 32
	InitHasInodeDAX       uint64 = 1 << 33
	InitCreateSuppGroup   uint64 = 1 << 34
	InitHasExpireOnly     uint64 = 1 << 35
	InitDirectIOAllowMmap uint64 = 1 << 36
	InitPassthrough       uint64 = 1 << 37
	InitNoExportSupport   uint64 = 1 << 38
	InitHasResend         uint64 = 1 << 39
	InitAllowIdmap        uint64 = 1 << 40
	InitOverIoUring       uint64 = 1 << 41
	InitRequestTimeout    uint64 = 1 << 42
)

// fuse_setattr_in.valid bits.
const (
	FattrMode        uint32 = 1 << 0
	FattrUID         uint32 = 1 << 1
	FattrGID         uint32 = 1 << 2
	FattrSize        uint32 = 1 << 3
	FattrAtime       uint32 = 1 << 4
	FattrMtime       uint32 = 1 << 5
	FattrFh          uint32 = 1 << 6
	FattrAtimeNow    uint32 = 1 << 7
	FattrMtimeNow    uint32 = 1 << 8
	FattrLockOwner   uint32 = 1 << 9
	FattrCtime       uint32 = 1 << 10
	FattrKillSUIDGID uint32 = 1 << 11
)

// fuse_open_out.open_flags bits.
const (
	FopenDirectIO             uint32 = 1 << 0
	FopenKeepCache            uint32 = 1 << 1
	FopenNonseekable          uint32 = 1 << 2
	FopenCacheDir             uint32 = 1 << 3
	FopenStream               uint32 = 1 << 4
	FopenNoflush              uint32 = 1 << 5
	FopenParallelDirectWrites uint32 = 1 << 6
	FopenPassthrough          uint32 = 1 << 7
)

// Miscellaneous flag bits carried by individual requests.
const (
	ReleaseFlush        uint32 = 1 << 0 // fuse_release_in.release_flags
	ReleaseFlockUnlock  uint32 = 1 << 1
	GetattrFh           uint32 = 1 << 0 // fuse_getattr_in.getattr_flags
	LkFlock             uint32 = 1 << 0 // fuse_lk_in.lk_flags
	WriteCache          uint32 = 1 << 0 // fuse_write_in.write_flags
	WriteLockOwner      uint32 = 1 << 1
	WriteKillSUIDGID    uint32 = 1 << 2
	ReadLockOwner       uint32 = 1 << 1 // fuse_read_in.read_flags
	FsyncFdatasync      uint32 = 1 << 0 // fuse_fsync_in.fsync_flags
	AttrSubmount        uint32 = 1 << 0 // fuse_attr.flags
	AttrDAX             uint32 = 1 << 1
	OpenKillSUIDGID     uint32 = 1 << 0 // fuse_open_in/fuse_create_in.open_flags
	SetxattrACLKillSGID uint32 = 1 << 0 // fuse_setxattr_in.setxattr_flags
	IoctlCompat         uint32 = 1 << 0
	IoctlUnrestricted   uint32 = 1 << 1
	IoctlRetry          uint32 = 1 << 2
	Ioctl32Bit          uint32 = 1 << 3
	IoctlDir            uint32 = 1 << 4
	IoctlCompatX32      uint32 = 1 << 5
	PollScheduleNotify  uint32 = 1 << 0
	InterruptRequestBit uint64 = 1 << 0 // set in the unique of an INTERRUPT request
	ExtGroups           uint32 = 32     // fuse_ext_header.type of supplementary groups
	MaxNrSecctx         uint32 = 31     // FUSE_MAX_NR_SECCTX: fuse_ext_header.type 0..31 is a fuse_secctx_header
)

// InHeader is struct fuse_in_header, which starts every request.
type InHeader struct {
	Len         uint32
	Opcode      Opcode
	Unique      uint64
	NodeID      uint64
	UID         uint32
	GID         uint32
	PID         uint32
	TotalExtlen uint16 // length of extensions, in units of 8 bytes
	Padding     uint16
}

// OutHeader is struct fuse_out_header, which starts every reply. Error is a
// negated errno.
type OutHeader struct {
	Len    uint32
	Error  int32
	Unique uint64
}

// Attr is struct fuse_attr: the attributes of an inode as the kernel caches
// them. Ino is what st_ino shows; it must equal d_ino in directory listings.
type Attr struct {
	Ino       uint64
	Size      uint64
	Blocks    uint64
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Nlink     uint32
	UID       uint32
	GID       uint32
	Rdev      uint32
	Blksize   uint32
	Flags     uint32 // AttrSubmount, AttrDAX
}

// Kstatfs is struct fuse_kstatfs.
type Kstatfs struct {
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Bsize   uint32
	Namelen uint32
	Frsize  uint32
	Padding uint32
	Spare   [6]uint32
}

// FileLock is struct fuse_file_lock: a byte range [Start, End] (End is
// inclusive; OFFSET_MAX means to the end), F_RDLCK/F_WRLCK/F_UNLCK and the
// owner's pid.
type FileLock struct {
	Start uint64
	End   uint64
	Type  uint32
	PID   uint32
}

// EntryOut is struct fuse_entry_out: a looked-up inode. Each successful reply
// carrying a nonzero NodeID adds one to the inode's lookup count, which only
// FORGET takes away.
type EntryOut struct {
	NodeID         uint64
	Generation     uint64 // NodeID:Generation is unique for the life of the filesystem
	EntryValid     uint64 // seconds the kernel may cache the name
	AttrValid      uint64 // seconds the kernel may cache Attr
	EntryValidNsec uint32
	AttrValidNsec  uint32
	Attr           Attr
}

// ForgetIn is struct fuse_forget_in.
type ForgetIn struct {
	Nlookup uint64
}

// ForgetOne is struct fuse_forget_one, an element of BATCH_FORGET.
type ForgetOne struct {
	NodeID  uint64
	Nlookup uint64
}

// BatchForgetIn is struct fuse_batch_forget_in; Count ForgetOne follow it.
type BatchForgetIn struct {
	Count uint32
	Dummy uint32
}

// GetattrIn is struct fuse_getattr_in.
type GetattrIn struct {
	GetattrFlags uint32
	Dummy        uint32
	Fh           uint64
}

// AttrOut is struct fuse_attr_out.
type AttrOut struct {
	AttrValid     uint64
	AttrValidNsec uint32
	Dummy         uint32
	Attr          Attr
}

// SxTime is struct fuse_sx_time.
type SxTime struct {
	Sec      int64
	Nsec     uint32
	Reserved int32
}

// Statx is struct fuse_statx, the FUSE form of struct statx.
type Statx struct {
	Mask           uint32
	Blksize        uint32
	Attributes     uint64
	Nlink          uint32
	UID            uint32
	GID            uint32
	Mode           uint16
	Spare0         uint16
	Ino            uint64
	Size           uint64
	Blocks         uint64
	AttributesMask uint64
	Atime          SxTime
	Btime          SxTime
	Ctime          SxTime
	Mtime          SxTime
	RdevMajor      uint32
	RdevMinor      uint32
	DevMajor       uint32
	DevMinor       uint32
	Spare2         [14]uint64
}

// StatxIn is struct fuse_statx_in.
type StatxIn struct {
	GetattrFlags uint32
	Reserved     uint32
	Fh           uint64
	SxFlags      uint32
	SxMask       uint32
}

// StatxOut is struct fuse_statx_out.
type StatxOut struct {
	AttrValid     uint64
	AttrValidNsec uint32
	Flags         uint32
	Spare         [2]uint64
	Stat          Statx
}

// MknodIn is struct fuse_mknod_in.
type MknodIn struct {
	Mode    uint32
	Rdev    uint32
	Umask   uint32
	Padding uint32
}

// MkdirIn is struct fuse_mkdir_in.
type MkdirIn struct {
	Mode  uint32
	Umask uint32
}

// RenameIn is struct fuse_rename_in.
type RenameIn struct {
	Newdir uint64
}

// Rename2In is struct fuse_rename2_in.
type Rename2In struct {
	Newdir  uint64
	Flags   uint32
	Padding uint32
}

// LinkIn is struct fuse_link_in.
type LinkIn struct {
	OldNodeID uint64
}

// SetattrIn is struct fuse_setattr_in. Valid says which fields are set.
type SetattrIn struct {
	Valid     uint32
	Padding   uint32
	Fh        uint64
	Size      uint64
	LockOwner uint64
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Unused4   uint32
	UID       uint32
	GID       uint32
	Unused5   uint32
}

// OpenIn is struct fuse_open_in.
type OpenIn struct {
	Flags     uint32 // open(2) flags
	OpenFlags uint32 // OpenKillSUIDGID
}

// CreateIn is struct fuse_create_in (CREATE and TMPFILE).
type CreateIn struct {
	Flags     uint32
	Mode      uint32
	Umask     uint32
	OpenFlags uint32
}

// OpenOut is struct fuse_open_out.
type OpenOut struct {
	Fh        uint64
	OpenFlags uint32
	BackingID int32
}

// ReleaseIn is struct fuse_release_in (RELEASE and RELEASEDIR).
type ReleaseIn struct {
	Fh           uint64
	Flags        uint32
	ReleaseFlags uint32
	LockOwner    uint64
}

// FlushIn is struct fuse_flush_in.
type FlushIn struct {
	Fh        uint64
	Unused    uint32
	Padding   uint32
	LockOwner uint64
}

// ReadIn is struct fuse_read_in (READ, READDIR, READDIRPLUS).
type ReadIn struct {
	Fh        uint64
	Offset    uint64
	Size      uint32
	ReadFlags uint32
	LockOwner uint64
	Flags     uint32
	Padding   uint32
}

// WriteIn is struct fuse_write_in; Size bytes of data follow it.
type WriteIn struct {
	Fh         uint64
	Offset     uint64
	Size       uint32
	WriteFlags uint32
	LockOwner  uint64
	Flags      uint32
	Padding    uint32
}

// WriteOut is struct fuse_write_out.
type WriteOut struct {
	Size    uint32
	Padding uint32
}

// StatfsOut is struct fuse_statfs_out.
type StatfsOut struct {
	St Kstatfs
}

// FsyncIn is struct fuse_fsync_in (FSYNC and FSYNCDIR).
type FsyncIn struct {
	Fh         uint64
	FsyncFlags uint32
	Padding    uint32
}

// SetxattrIn is struct fuse_setxattr_in as extended by FUSE_SETXATTR_EXT;
// without that flag the kernel sends only the first 8 bytes.
type SetxattrIn struct {
	Size          uint32
	Flags         uint32
	SetxattrFlags uint32
	Padding       uint32
}

// GetxattrIn is struct fuse_getxattr_in (GETXATTR and LISTXATTR). A zero
// Size asks for the size of the value only.
type GetxattrIn struct {
	Size    uint32
	Padding uint32
}

// GetxattrOut is struct fuse_getxattr_out, the reply to a size query.
type GetxattrOut struct {
	Size    uint32
	Padding uint32
}

// LkIn is struct fuse_lk_in (GETLK, SETLK, SETLKW).
type LkIn struct {
	Fh      uint64
	Owner   uint64
	Lk      FileLock
	LkFlags uint32
	Padding uint32
}

// LkOut is struct fuse_lk_out.
type LkOut struct {
	Lk FileLock
}

// AccessIn is struct fuse_access_in.
type AccessIn struct {
	Mask    uint32
	Padding uint32
}

// InitIn is struct fuse_init_in. Kernels before 7.36 send only the first 16
// bytes.
type InitIn struct {
	Major        uint32
	Minor        uint32
	MaxReadahead uint32
	Flags        uint32
	Flags2       uint32
	Unused       [11]uint32
}

// InitOut is struct fuse_init_out.
type InitOut struct {
	Major               uint32
	Minor               uint32
	MaxReadahead        uint32
	Flags               uint32
	MaxBackground       uint16
	CongestionThreshold uint16
	MaxWrite            uint32
	TimeGran            uint32
	MaxPages            uint16
	MapAlignment        uint16
	Flags2              uint32
	MaxStackDepth       uint32
	RequestTimeout      uint16
	Unused              [11]uint16
}

// InterruptIn is struct fuse_interrupt_in.
type InterruptIn struct {
	Unique uint64
}

// BmapIn is struct fuse_bmap_in.
type BmapIn struct {
	Block     uint64
	Blocksize uint32
	Padding   uint32
}

// BmapOut is struct fuse_bmap_out.
type BmapOut struct {
	Block uint64
}

// IoctlIn is struct fuse_ioctl_in.
type IoctlIn struct {
	Fh      uint64
	Flags   uint32
	Cmd     uint32
	Arg     uint64
	InSize  uint32
	OutSize uint32
}

// PollIn is struct fuse_poll_in.
type PollIn struct {
	Fh     uint64
	Kh     uint64
	Flags  uint32
	Events uint32
}

// PollOut is struct fuse_poll_out.
type PollOut struct {
	Revents uint32
	Padding uint32
}

// FallocateIn is struct fuse_fallocate_in.
type FallocateIn struct {
	Fh      uint64
	Offset  uint64
	Length  uint64
	Mode    uint32
	Padding uint32
}

// Dirent is struct fuse_dirent without its trailing name.
type Dirent struct {
	Ino     uint64
	Off     uint64
	Namelen uint32
	Type    uint32
}

// LseekIn is struct fuse_lseek_in.
type LseekIn struct {
	Fh      uint64
	Offset  uint64
	Whence  uint32
	Padding uint32
}

// LseekOut is struct fuse_lseek_out.
type LseekOut struct {
	Offset uint64
}

// CopyFileRangeIn is struct fuse_copy_file_range_in (COPY_FILE_RANGE and
// COPY_FILE_RANGE_64).
type CopyFileRangeIn struct {
	FhIn      uint64
	OffIn     uint64
	NodeIDOut uint64
	FhOut     uint64
	OffOut    uint64
	Len       uint64
	Flags     uint64
}

// CopyFileRangeOut is struct fuse_copy_file_range_out, the reply to
// COPY_FILE_RANGE_64.
type CopyFileRangeOut struct {
	BytesCopied uint64
}

// SyncfsIn is struct fuse_syncfs_in.
type SyncfsIn struct {
	Padding uint64
}

// ExtHeader is struct fuse_ext_header, which starts each request extension.
type ExtHeader struct {
	Size uint32
	Type uint32
}

// SecctxHeader is struct fuse_secctx_header, which starts the security
// contexts of a creating request (FUSE_SECURITY_CTX). It doubles as an
// ExtHeader whose Type is NrSecctx (0..MaxNrSecctx); Size counts the
// header, and is a multiple of 8.
type SecctxHeader struct {
	Size     uint32
	NrSecctx uint32
}

// Secctx is struct fuse_secctx: Size bytes of context value follow it,
// after the NUL-terminated xattr name.
type Secctx struct {
	Size    uint32
	Padding uint32
}

// Sizes of the structs whose length matters on the wire.
const (
	InHeaderSize         = 40
	OutHeaderSize        = 16
	AttrSize             = 88
	EntryOutSize         = 128
	AttrOutSize          = 104
	DirentSize           = 24
	DirentplusSize       = EntryOutSize + DirentSize
	InitInCompatSize     = 16 // before 7.36
	InitOutCompat22Size  = 24 // before 7.23
	SetxattrInCompatSize = 8  // without SETXATTR_EXT
	EntryOutCompatSize   = 120
	AttrOutCompatSize    = 96
	MknodInCompatSize    = 8
	WriteInCompatSize    = 24
	StatfsOutCompatSize  = 48
	MaxNameLen           = 255   // NAME_MAX: longer names get ENAMETOOLONG
	MaxXattrNameLen      = 255   // XATTR_NAME_MAX
	MaxXattrSize         = 65536 // XATTR_SIZE_MAX
	MaxSymlinkTargetLen  = 4095  // PATH_MAX less the NUL
)

// IoctlOut is struct fuse_ioctl_out; OutSize bytes of data follow it.
type IoctlOut struct {
	Result  int32
	Flags   uint32
	InIovs  uint32
	OutIovs uint32
}
