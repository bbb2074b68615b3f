package fuseproto

import "strconv"

var opNames = map[Opcode]string{
	OpLookup: "LOOKUP", OpForget: "FORGET", OpGetattr: "GETATTR", OpSetattr: "SETATTR",
	OpReadlink: "READLINK", OpSymlink: "SYMLINK", OpMknod: "MKNOD", OpMkdir: "MKDIR",
	OpUnlink: "UNLINK", OpRmdir: "RMDIR", OpRename: "RENAME", OpLink: "LINK",
	OpOpen: "OPEN", OpRead: "READ", OpWrite: "WRITE", OpStatfs: "STATFS",
	OpRelease: "RELEASE", OpFsync: "FSYNC", OpSetxattr: "SETXATTR", OpGetxattr: "GETXATTR",
	OpListxattr: "LISTXATTR", OpRemovexattr: "REMOVEXATTR", OpFlush: "FLUSH", OpInit: "INIT",
	OpOpendir: "OPENDIR", OpReaddir: "READDIR", OpReleasedir: "RELEASEDIR", OpFsyncdir: "FSYNCDIR",
	OpGetlk: "GETLK", OpSetlk: "SETLK", OpSetlkw: "SETLKW", OpAccess: "ACCESS",
	OpCreate: "CREATE", OpInterrupt: "INTERRUPT", OpBmap: "BMAP", OpDestroy: "DESTROY",
	OpIoctl: "IOCTL", OpPoll: "POLL", OpNotifyReply: "NOTIFY_REPLY", OpBatchForget: "BATCH_FORGET",
	OpFallocate: "FALLOCATE", OpReaddirplus: "READDIRPLUS", OpRename2: "RENAME2", OpLseek: "LSEEK",
	OpCopyFileRange: "COPY_FILE_RANGE", OpSetupMapping: "SETUPMAPPING", OpRemoveMapping: "REMOVEMAPPING",
	OpSyncfs: "SYNCFS", OpTmpfile: "TMPFILE", OpStatx: "STATX", OpCopyFileRange64: "COPY_FILE_RANGE_64",
}

// String returns the kernel's name of the opcode, or its number.
func (o Opcode) String() string { return opName(o) }

func opName(o Opcode) string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return "OPCODE_" + strconv.Itoa(int(o))
}
