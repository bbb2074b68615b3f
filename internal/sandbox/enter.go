package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The namespace sandbox's root is a tmpfs that is first mounted on /proc of
// the child's private mount namespace (hiding the host's /proc there), so
// that the daemon can open its files through the familiar /proc/self/fd
// paths both before and after the root changes:
//
//	/proc          tmpfs, later the root
//	/proc/proc     a procfs of the child's own PID namespace
//	/proc/self     -> proc/self
//	/proc/dev/...  bind mounts of the device nodes the daemon needs
//
// After PivotRoot the tmpfs is "/", read-only, and /proc/self/fd/N still
// names descriptor N.
const stage = "/proc"

const (
	mountFlagsProc  = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mountFlagsTmpfs = unix.MS_NOSUID | unix.MS_NOEXEC
)

// PrepareNamespace is the namespace sandbox's first step in the child,
// before the daemon opens its shared directories: it makes the mount
// namespace private (nothing propagates back to the host) and puts a
// procfs of the child's PID namespace under /proc.
func PrepareNamespace() error {
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("sandbox: making the mount namespace private: %w", err)
	}
	if err := unix.Mount("tmpfs", stage, "tmpfs", mountFlagsTmpfs, "mode=0755,size=64k,nr_inodes=64"); err != nil {
		return fmt.Errorf("sandbox: mounting the new root's tmpfs: %w", err)
	}
	if err := os.Mkdir(stage+"/proc", 0o555); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := unix.Mount("proc", stage+"/proc", "proc", mountFlagsProc, ""); err != nil {
		return fmt.Errorf("sandbox: mounting /proc: %w", err)
	}
	for _, l := range []string{"self", "thread-self"} {
		if err := os.Symlink("proc/"+l, stage+"/"+l); err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
	}
	return nil
}

// PivotRoot is the namespace sandbox's second step, once the daemon holds
// descriptors for everything it serves: it bind-mounts the device nodes
// named in devices (such as /dev/fuse) into the new root, makes the tmpfs
// PrepareNamespace mounted the root directory, detaches the old root and
// everything under it, and makes the new root read-only.
func PivotRoot(devices ...string) error {
	for _, dev := range devices {
		if err := bindDevice(dev); err != nil {
			return err
		}
	}
	if err := os.Chdir(stage); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; unmounting
	// "." then takes away the old root and leaves the new.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("sandbox: pivot_root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("sandbox: making the old root private: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("sandbox: detaching the old root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|mountFlagsTmpfs, ""); err != nil {
		return fmt.Errorf("sandbox: making the new root read-only: %w", err)
	}
	return nil
}

// bindDevice bind-mounts the device node at path to the same path under
// the staged root.
func bindDevice(path string) error {
	dst := filepath.Join(stage, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o600)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	f.Close()
	if err := unix.Mount(path, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("sandbox: bind-mounting %s: %w", path, err)
	}
	return nil
}

// EnterChroot is the chroot sandbox: it changes the root directory to dir and
// the working directory to the new root. Paths under /proc no longer work
// afterwards; the daemon reaches /proc through a descriptor it opened
// before.
func EnterChroot(dir string) error {
	if err := unix.Chroot(dir); err != nil {
		return fmt.Errorf("sandbox: chroot %s: %w", dir, err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}
