package main

// mount(8)'s calling convention for filesystem helpers. For
// "mount -t fuse.govirtiofs SOURCE DIR -o OPTIONS" (and an fstab line of
// type fuse.govirtiofs) util-linux runs /sbin/mount.fuse.govirtiofs as
//
//	/sbin/mount.fuse.govirtiofs SOURCE DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]
//
// with the options it does not keep for itself (it drops defaults, x-* and
// comment=, and puts rw or ro first). The helper must return once the
// filesystem is mounted, so the daemon forks itself into the background
// like fuse-overlayfs (daemon.go).

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/govirtiofs/govirtiofs/fuseproto/devfuse"
	"github.com/govirtiofs/govirtiofs/overlay"
)

// fsTypes are the -t values that name our filesystem.
var fsTypes = map[string]bool{"fuse.govirtiofs": true, "govirtiofs": true}

// mountUsage ends the help text.
const mountUsage = `
mount(8)'s convention (a first argument that is not an option, or called as
mount.fuse.govirtiofs, the helper "mount -t fuse.govirtiofs" runs):

  ` + progName + ` SOURCE MOUNTPOINT [-o OPTIONS]... [-f] [-s] [-n] [-v]

mounts on MOUNTPOINT and returns once the mount is in place, leaving a daemon
that serves it until it is unmounted (umount MOUNTPOINT). With lowerdir in
OPTIONS the union of overlay layers is mounted and SOURCE is only its name
(say "overlay"); without, SOURCE is the directory to share. OPTIONS are
comma-separated (a backslash escapes a comma or colon in a path):
  overlay:  lowerdir=L1:L2, upperdir=U, workdir=W, userxattr, redirect_dir=,
            index=, metacopy=, xino=, uuid=, volatile, nfs_export=off
  mount:    ro, rw, nosuid, suid, nodev, dev, noexec, exec, noatime, atime,
            relatime, strictatime, nodiratime, ...; allow_other and
            default_permissions are always on; auto, noauto, nofail,
            _netdev, user, users, nouser, defaults, async, x-*, comment=
            are accepted and ignored
  daemon:   cache=never|metadata|auto|always, xattr, readonly,
            thread_pool_size=N, log_level=LEVEL, writeback, posix_acl,
            no_readdirplus, allow_direct_io, announce_submounts
With remount in OPTIONS (mount -o remount,ro MOUNTPOINT) only ro/rw and the
mount flags of the mount in place change.
-f keeps the daemon in the foreground, logging on stderr; called as
mount.fuse.govirtiofs, -f is mount(8)'s fake mount: check the options, mount
nothing. -s ignores unknown options; -n and -v are ignored. In the
background the daemon logs to syslog when /dev/log exists.
`

// mountCmd is a command line in mount(8)'s convention.
type mountCmd struct {
	cfg        config
	fake       bool // mount(8) -f: check the command line, mount nothing
	foreground bool // -f when not called as mount(8)'s helper
	remount    bool // -o remount: change the flags of the mount on cfg.mountpoint
}

// mountConvention reports whether the command line is in mount(8)'s
// convention: the program is called as mount(8)'s helper, or the first
// argument is not an option.
func mountConvention(argv0 string, args []string) bool {
	return isMountHelper(argv0) || len(args) > 0 && !strings.HasPrefix(args[0], "-")
}

// isMountHelper reports whether argv0 names mount(8)'s helper,
// mount.fuse.govirtiofs (or any mount.TYPE link to the program).
func isMountHelper(argv0 string) bool {
	return strings.HasPrefix(filepath.Base(argv0), "mount.")
}

// parseMountArgs parses a command line in mount(8)'s convention (without
// the program name). helper says the program was called as mount(8)'s
// helper, where -f means a fake mount rather than the foreground. It
// returns flag.ErrHelp for -h or --help, and otherwise a one-line error
// for anything wrong. Relative paths are made absolute.
func parseMountArgs(args []string, helper bool) (mountCmd, error) {
	var mc mountCmd
	var pos, opts []string
	sloppy := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, error) {
			if len(a) > 2 {
				return a[2:], nil
			}
			if i+1 == len(args) {
				return "", fmt.Errorf("option %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case a == "-h" || a == "--help" || a == "-help":
			return mc, flag.ErrHelp
		case strings.HasPrefix(a, "-o"):
			v, err := value()
			if err != nil {
				return mc, err
			}
			opts = append(opts, v)
		case strings.HasPrefix(a, "-t"):
			v, err := value()
			if err != nil {
				return mc, err
			}
			if !fsTypes[v] {
				return mc, fmt.Errorf("filesystem type %q is not fuse.govirtiofs", v)
			}
		case strings.HasPrefix(a, "-N"):
			return mc, errors.New("-N (mount in another namespace) is not supported")
		case strings.HasPrefix(a, "--") || a == "-":
			return mc, fmt.Errorf("unknown option %s", a)
		case strings.HasPrefix(a, "-"):
			for _, c := range a[1:] {
				switch c {
				case 's':
					sloppy = true
				case 'f':
					if helper {
						mc.fake = true
					} else {
						mc.foreground = true
					}
				case 'n', 'v':
				default:
					return mc, fmt.Errorf("unknown option -%c", c)
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return mc, errors.New("want SOURCE MOUNTPOINT [-o OPTIONS]")
	}
	source, mountpoint := pos[0], pos[1]
	if source == "" || mountpoint == "" {
		return mc, errors.New("SOURCE and MOUNTPOINT must not be empty")
	}

	mc.cfg = defaultConfig()
	// The flags write the daemon options given as -o keys into mc.cfg
	// (making them sets its string options to their empty defaults).
	daemonFlags := newFlagSet(&mc.cfg, nil)
	var all []string
	for _, o := range opts {
		for _, opt := range splitOptions(o) {
			if opt == "" {
				continue
			}
			all = append(all, opt)
			mc.remount = mc.remount || opt == "remount"
		}
	}
	var err error
	if mc.cfg.mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return mc, err
	}
	if mc.remount {
		for _, opt := range all {
			if err := mc.cfg.remountOption(opt, sloppy); err != nil {
				return mc, err
			}
		}
		return mc, nil
	}
	var ovl []string
	for _, opt := range all {
		if err := mc.cfg.mountOption(opt, &ovl, daemonFlags, sloppy); err != nil {
			return mc, err
		}
	}
	if len(ovl) > 0 {
		oc, err := overlay.ParseConfig(strings.Join(ovl, ","))
		if err != nil {
			return mc, err
		}
		if err := absLayers(&oc); err != nil {
			return mc, err
		}
		mc.cfg.overlay = &oc
		mc.cfg.source = source
	} else if mc.cfg.sharedDir, err = filepath.Abs(source); err != nil {
		return mc, err
	}
	return mc, checkConfig(&mc.cfg, "-o ")
}

// absLayers makes the layer paths of c absolute, so that the daemon can
// leave the working directory.
func absLayers(c *overlay.Config) error {
	for _, p := range append([]*string{&c.Upper, &c.Work}, ptrs(c.Lower)...) {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

func ptrs(s []string) []*string {
	p := make([]*string, len(s))
	for i := range s {
		p[i] = &s[i]
	}
	return p
}

// splitOptions splits a -o value at each comma not escaped by a backslash,
// keeping the escapes (overlay.ParseConfig reads them).
func splitOptions(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// overlayOptions are the -o keys that belong to the overlay
// (overlay.ParseConfig).
var overlayOptions = map[string]bool{
	"lowerdir": true, "upperdir": true, "workdir": true, "userxattr": true, "redirect_dir": true,
	"index": true, "metacopy": true, "xino": true, "uuid": true, "volatile": true, "nfs_export": true,
}

// flagOptions are the generic mount options that set (or clear) per-mount
// flags.
var flagOptions = map[string]struct{ set, clear uintptr }{
	"nosuid":        {set: unix.MS_NOSUID},
	"suid":          {clear: unix.MS_NOSUID},
	"nodev":         {set: unix.MS_NODEV},
	"dev":           {clear: unix.MS_NODEV},
	"noexec":        {set: unix.MS_NOEXEC},
	"exec":          {clear: unix.MS_NOEXEC},
	"noatime":       {set: unix.MS_NOATIME, clear: unix.MS_RELATIME | unix.MS_STRICTATIME},
	"atime":         {clear: unix.MS_NOATIME},
	"relatime":      {set: unix.MS_RELATIME, clear: unix.MS_NOATIME | unix.MS_STRICTATIME},
	"norelatime":    {clear: unix.MS_RELATIME},
	"strictatime":   {set: unix.MS_STRICTATIME, clear: unix.MS_NOATIME | unix.MS_RELATIME},
	"nostrictatime": {clear: unix.MS_STRICTATIME},
	"nodiratime":    {set: unix.MS_NODIRATIME},
	"diratime":      {clear: unix.MS_NODIRATIME},
}

// ignoredOptions are the generic mount options that change nothing here:
// every mount has allow_other and default_permissions; the rest are
// mount(8)'s, systemd's or the kernel's defaults.
var ignoredOptions = map[string]bool{
	"allow_other": true, "default_permissions": true, "auto": true, "noauto": true, "nofail": true,
	"_netdev": true, "user": true, "users": true, "nouser": true, "owner": true, "group": true,
	"defaults": true, "async": true, "silent": true, "loud": true, "nonempty": true,
}

// daemonOptions are the daemon's flags that may be given as -o keys (with
// '_' for '-'); the others choose the transport, which a mount fixes.
var daemonOptions = map[string]bool{
	"cache": true, "xattr": true, "readonly": true, "thread-pool-size": true, "log-level": true,
	"allow-direct-io": true, "writeback": true, "posix-acl": true, "no-readdirplus": true,
	"announce-submounts": true, "sandbox": true, "seccomp": true, "modcaps": true, "rlimit-nofile": true,
	"translate-uid": true, "translate-gid": true, "xattrmap": true, "killpriv-v2": true, "allow-mmap": true,
	"security-label": true, "preserve-noatime": true, "inode-file-handles": true, "no-fuse-passthrough": true,
}

// mountOption applies one -o option: an overlay option is appended to ovl,
// a daemon option is set in flags (which writes into cfg). Unknown options
// are an error unless sloppy.
func (cfg *config) mountOption(opt string, ovl *[]string, flags *flag.FlagSet, sloppy bool) error {
	key, val, hasVal := strings.Cut(opt, "=")
	noValue := func() error {
		if hasVal {
			return fmt.Errorf("-o %s takes no value", key)
		}
		return nil
	}
	name := strings.ReplaceAll(key, "_", "-")
	f, isFlag := flagOptions[key]
	switch {
	case overlayOptions[key]:
		*ovl = append(*ovl, opt)
	case key == "ro" || key == "rw":
		cfg.readonly = key == "ro"
		return noValue()
	case isFlag:
		cfg.mountFlags.add(f.set, f.clear)
		return noValue()
	case key == "user" && hasVal, key == "comment" && hasVal, strings.HasPrefix(key, "x-"):
		// user=NAME: mount(8) names the user of a "user" fstab entry.
	case ignoredOptions[key]:
		return noValue()
	case key == "sync":
		return errors.New("-o sync is not supported")
	case daemonOptions[name]:
		if b, ok := flags.Lookup(name).Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			switch val {
			case "", "on", "true", "yes", "1":
				val = "true"
			case "off", "false", "no", "0":
				val = "false"
			default:
				return fmt.Errorf("-o %s: want on or off", opt)
			}
		} else if !hasVal {
			return fmt.Errorf("-o %s needs a value", key)
		}
		if err := flags.Set(name, val); err != nil {
			return fmt.Errorf("-o %s: %v", opt, err)
		}
	case sloppy:
	default:
		return fmt.Errorf("unknown mount option %q", key)
	}
	return nil
}

// fuseOptions are the FUSE kernel options of a mount, which mount(8) passes
// back (from /proc/self/mountinfo) with -o remount.
var fuseOptions = map[string]bool{
	"user_id": true, "group_id": true, "rootmode": true, "fd": true, "max_read": true, "blksize": true,
	"default_permissions": true, "allow_other": true,
}

// remountOption applies one option of -o remount: only the mount's flags
// can change, the filesystem and the daemon's options stay as mounted.
func (cfg *config) remountOption(opt string, sloppy bool) error {
	key, _, hasVal := strings.Cut(opt, "=")
	f, isFlag := flagOptions[key]
	switch {
	case key == "remount" && !hasVal:
	case (key == "ro" || key == "rw") && !hasVal:
		cfg.readonly = key == "ro"
	case isFlag && !hasVal:
		cfg.mountFlags.add(f.set, f.clear)
	case fuseOptions[key], ignoredOptions[key], key == "user", key == "comment", strings.HasPrefix(key, "x-"):
	case overlayOptions[key], daemonOptions[strings.ReplaceAll(key, "_", "-")]:
		return fmt.Errorf("-o %s cannot be changed by a remount", key)
	case sloppy:
	default:
		return fmt.Errorf("unknown mount option %q", key)
	}
	return nil
}

// remount changes the flags of the mount on path to those the options
// of -o remount name (mount(8) passes all of them: those it does not
// change as /proc/self/mountinfo shows them).
func remount(path string, m mountFlags, readonly bool) error {
	flags := m.set | unix.MS_REMOUNT
	if readonly {
		flags |= unix.MS_RDONLY
	}
	switch fstype, err := mountedType(path); {
	case err != nil:
		return err
	case fstype == "":
		return fmt.Errorf("mount point %s: nothing is mounted there", path)
	case fstype != devfuse.FSType:
		return fmt.Errorf("mount point %s: %s is mounted there, not %s", path, fstype, devfuse.FSType)
	}
	for {
		err := unix.Mount("", path, "", flags, "")
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("remount %s: %w", path, err)
	}
}

// mountedType returns the type of the topmost filesystem mounted on path
// (absolute, without symlinks), or "".
func mountedType(path string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	// Mount points are escaped as octal: space, tab, newline, backslash.
	escaped := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`).Replace(path)
	fstype := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 || f[4] != escaped {
			continue
		}
		for i := 6; i+1 < len(f); i++ {
			if f[i] == "-" {
				fstype = f[i+1]
				break
			}
		}
	}
	return fstype, nil
}

// devfuseFlags are the per-mount flags devfuse.Mount sets (besides
// MS_RDONLY), the kernel choosing relatime.
const devfuseFlags = unix.MS_NOSUID | unix.MS_NODEV

// mountFlags are the changes -o options ask for to the per-mount flags
// devfuse.Mount sets; the zero value asks for none.
type mountFlags struct{ set, clear uintptr }

// add records an option that sets and clears flags; a later option
// overrides an earlier one.
func (m *mountFlags) add(set, clear uintptr) {
	m.set = m.set&^clear | set
	m.clear = m.clear&^set | clear
}

// flags returns the per-mount flags asked for.
func (m mountFlags) flags() uintptr { return (devfuseFlags | m.set) &^ m.clear }

// apply gives the mount at path the flags asked for (with MS_RDONLY if
// readonly), by a bind remount, which changes only the mount's flags: none
// of the filesystem's. Nothing is done if they are devfuse.Mount's.
func (m mountFlags) apply(path string, readonly bool) error {
	flags := m.flags()
	if flags == devfuseFlags {
		return nil
	}
	flags |= unix.MS_REMOUNT | unix.MS_BIND
	if readonly {
		flags |= unix.MS_RDONLY
	}
	for {
		err := unix.Mount("", path, "", flags, "")
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("mount point %s: setting the mount flags: %w", path, err)
	}
}
