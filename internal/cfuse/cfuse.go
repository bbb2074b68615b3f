// Package cfuse reports the sizes and field offsets of the FUSE wire structs
// as the C compiler lays them out from the system's <linux/fuse.h>, so that
// fuseproto's tests can check the Go structs against the kernel's own header
// rather than against numbers copied by hand. It needs cgo and the Linux
// UAPI headers (Debian's linux-libc-dev).
package cfuse

/*
#include <stddef.h>
#include <linux/fuse.h>

#define S(t) { #t, sizeof(struct t) }
#define O(t, f) { #t "." #f, offsetof(struct t, f) }

struct layout { const char *name; size_t value; };

static const struct layout layouts[] = {
	S(fuse_in_header), O(fuse_in_header, unique), O(fuse_in_header, nodeid), O(fuse_in_header, uid),
	O(fuse_in_header, pid), O(fuse_in_header, total_extlen),
	S(fuse_out_header), O(fuse_out_header, error), O(fuse_out_header, unique),
	S(fuse_attr), O(fuse_attr, atime), O(fuse_attr, atimensec), O(fuse_attr, mode), O(fuse_attr, rdev), O(fuse_attr, flags),
	S(fuse_kstatfs), O(fuse_kstatfs, bsize), O(fuse_kstatfs, frsize), O(fuse_kstatfs, spare),
	S(fuse_file_lock), O(fuse_file_lock, type), O(fuse_file_lock, pid),
	S(fuse_entry_out), O(fuse_entry_out, entry_valid), O(fuse_entry_out, attr_valid_nsec), O(fuse_entry_out, attr),
	S(fuse_forget_in), S(fuse_forget_one), S(fuse_batch_forget_in),
	S(fuse_getattr_in), O(fuse_getattr_in, fh),
	S(fuse_attr_out), O(fuse_attr_out, attr),
	S(fuse_mknod_in), O(fuse_mknod_in, umask), S(fuse_mkdir_in), S(fuse_rename_in), S(fuse_rename2_in), O(fuse_rename2_in, flags),
	S(fuse_link_in),
	S(fuse_setattr_in), O(fuse_setattr_in, fh), O(fuse_setattr_in, lock_owner), O(fuse_setattr_in, atime),
	O(fuse_setattr_in, atimensec), O(fuse_setattr_in, mode), O(fuse_setattr_in, uid), O(fuse_setattr_in, gid),
	S(fuse_open_in), O(fuse_open_in, open_flags), S(fuse_create_in), O(fuse_create_in, umask), O(fuse_create_in, open_flags),
	S(fuse_open_out), O(fuse_open_out, open_flags),
	S(fuse_release_in), O(fuse_release_in, release_flags), O(fuse_release_in, lock_owner),
	S(fuse_flush_in), O(fuse_flush_in, lock_owner),
	S(fuse_read_in), O(fuse_read_in, size), O(fuse_read_in, lock_owner), O(fuse_read_in, flags),
	S(fuse_write_in), O(fuse_write_in, write_flags), O(fuse_write_in, lock_owner),
	S(fuse_write_out), S(fuse_statfs_out), S(fuse_fsync_in), O(fuse_fsync_in, fsync_flags),
	S(fuse_setxattr_in), O(fuse_setxattr_in, setxattr_flags), S(fuse_getxattr_in), S(fuse_getxattr_out),
	S(fuse_lk_in), O(fuse_lk_in, owner), O(fuse_lk_in, lk), O(fuse_lk_in, lk_flags), S(fuse_lk_out),
	S(fuse_access_in),
	S(fuse_init_in), O(fuse_init_in, flags), O(fuse_init_in, flags2), O(fuse_init_in, unused),
	S(fuse_init_out), O(fuse_init_out, max_background), O(fuse_init_out, max_write), O(fuse_init_out, time_gran),
	O(fuse_init_out, max_pages), O(fuse_init_out, map_alignment), O(fuse_init_out, flags2),
	S(fuse_interrupt_in), S(fuse_bmap_in), S(fuse_bmap_out),
	S(fuse_ioctl_in), O(fuse_ioctl_in, cmd), O(fuse_ioctl_in, arg), O(fuse_ioctl_in, out_size), S(fuse_ioctl_out),
	S(fuse_poll_in), O(fuse_poll_in, events), S(fuse_poll_out),
	S(fuse_fallocate_in), O(fuse_fallocate_in, mode),
	S(fuse_dirent), O(fuse_dirent, namelen), O(fuse_dirent, type), O(fuse_dirent, name),
	S(fuse_direntplus), O(fuse_direntplus, dirent),
	S(fuse_lseek_in), O(fuse_lseek_in, whence), S(fuse_lseek_out),
	S(fuse_copy_file_range_in), O(fuse_copy_file_range_in, nodeid_out), O(fuse_copy_file_range_in, flags),
	S(fuse_syncfs_in), S(fuse_ext_header),
	S(fuse_secctx_header), O(fuse_secctx_header, nr_secctx), S(fuse_secctx),
};

static int nlayouts(void) { return sizeof(layouts) / sizeof(layouts[0]); }
static const char *layout_name(int i) { return layouts[i].name; }
static size_t layout_value(int i) { return layouts[i].value; }
static int minor_version(void) { return FUSE_KERNEL_MINOR_VERSION; }
*/
import "C"

// Layouts maps "struct" to its size and "struct.field" to the field's offset,
// in bytes, as the C compiler computes them.
func Layouts() map[string]int {
	m := make(map[string]int)
	for i := range int(C.nlayouts()) {
		m[C.GoString(C.layout_name(C.int(i)))] = int(C.layout_value(C.int(i)))
	}
	return m
}

// HeaderMinor is FUSE_KERNEL_MINOR_VERSION of the header the layouts come
// from; structs added after it are not covered.
func HeaderMinor() int { return int(C.minor_version()) }
