package hostfs

import (
	"github.com/govirtiofs/govirtiofs/fuseproto"
	"golang.org/x/sys/unix"
)

// KilledMode returns mode without the set-user-ID bit and, if the file is
// group-executable, without the set-group-ID bit, as the kernel clears them
// when an unprivileged user writes or truncates a file. (A set-group-ID bit
// without group execute marks mandatory locking and stays.)
func KilledMode(mode uint32) uint32 {
	m := mode &^ unix.S_ISUID
	if mode&unix.S_IXGRP != 0 {
		m &^= unix.S_ISGID
	}
	return m
}

// KillSUIDGIDFd clears the set-ID bits of the regular file open as fd; other
// kinds of file are left alone.
func KillSUIDGIDFd(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if m := KilledMode(st.Mode); m != st.Mode {
		return unix.Fchmod(fd, m&0o7777)
	}
	return nil
}

// SetattrTimes returns the atime and mtime a SETATTR asks for, as
// utimensat(2) takes them: UTIME_NOW for the *_NOW bits, UTIME_OMIT for a
// time not named in in.Valid.
func SetattrTimes(in *fuseproto.SetattrIn) [2]unix.Timespec {
	v := in.Valid
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	switch {
	case v&fuseproto.FattrAtimeNow != 0:
		ts[0].Nsec = unix.UTIME_NOW
	case v&fuseproto.FattrAtime != 0:
		ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
	}
	switch {
	case v&fuseproto.FattrMtimeNow != 0:
		ts[1].Nsec = unix.UTIME_NOW
	case v&fuseproto.FattrMtime != 0:
		ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
	}
	return ts
}

// StatfsOut converts a statfs(2) result into a STATFS reply.
func StatfsOut(st *unix.Statfs_t, out *fuseproto.StatfsOut) {
	*out = fuseproto.StatfsOut{St: fuseproto.Kstatfs{
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Bsize:   uint32(st.Bsize),
		Namelen: uint32(st.Namelen),
		Frsize:  uint32(st.Frsize),
	}}
}
