package overlaytest

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultOptions are the overlay options of a case that names none: the
// full trusted-xattr feature set a container runtime turns on.
const DefaultOptions = "redirect_dir=on,index=on,metacopy=on"

// A Case is one differential test: layers built the same way for both
// sides, then the same steps run on both mounts.
type Case struct {
	Name string
	// Lower are the lower layers, topmost first (lowerdir=L1:L2:L3).
	Lower []Layer
	// Upper is what the upper directory holds before the first mount.
	Upper Layer
	// Options are overlay options besides the layers; "" is
	// DefaultOptions.
	Options string
	// ReadOnly mounts without upper and work directories.
	ReadOnly bool
	// SeparateFS puts every lower layer on its own tmpfs, so objects of
	// different layers share real inode numbers.
	SeparateFS bool
	// NoManifest skips the merged-view manifests after every step (for
	// trees too big to walk 2×steps times); step results and the final
	// upper are still compared.
	NoManifest bool
	Steps      []Step
	// Differs lists the intentional differences of govirtiofsd from the
	// kernel in this case.
	Differs []Differ
}

// A Differ is an intentional difference between govirtiofsd and kernel
// overlayfs: a diff that matches it is logged instead of failing the test.
type Differ struct {
	// Step is a prefix of the step's name ("" for any step; "upper" for
	// the final upper comparison).
	Step string
	// Path and Field match a Diff's exactly ("" for any).
	Path, Field string
	// Why is the reason, for the log and the reviewer.
	Why string
}

func (d Differ) matches(stepName string, diff Diff) bool {
	return strings.HasPrefix(stepName, d.Step) &&
		(d.Path == "" || d.Path == diff.Path) &&
		(d.Field == "" || d.Field == diff.Field)
}

func (c Case) options() string {
	if c.Options == "" {
		return DefaultOptions
	}
	return c.Options
}

// HasOCIMarkers reports whether any layer holds OCI whiteout markers, so
// the kernel's copy of the fixture must be converted.
func (c Case) HasOCIMarkers() bool {
	for _, l := range c.Lower {
		if l.HasOCIMarkers() {
			return true
		}
	}
	return false
}

// L is a Layer of the given appliers.
func L(a ...Applier) Layer { return Layer(a) }

// aclAccess encodes a system.posix_acl_access value: owner rwx, user uid
// r--, group r-x, mask r-x, other r--.
func aclAccess(uid uint32) string {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	add := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	const undefined = 0xffffffff
	add(0x01, 7, undefined) // ACL_USER_OBJ
	add(0x02, 4, uid)       // ACL_USER
	add(0x04, 5, undefined) // ACL_GROUP_OBJ
	add(0x10, 5, undefined) // ACL_MASK
	add(0x20, 4, undefined) // ACL_OTHER
	return string(b)
}

// whiteoutLayers are three lowers and an upper in which a whiteout of the
// form made by wh hides a name in each position: upper, top lower, middle
// lower, and bottom lower (where it hides nothing and must still not
// show), at the root and in a subdirectory. The upper's whiteout is always
// a char 0/0 (what overlayfs writes). bottom false leaves out the
// whiteouts in the bottom layer: kernel 6.18 does not read opaque=x on the
// lowest layer (nor on the upper), so readdir lists an xattr whiteout there
// although lookup says ENOENT, an inconsistency not worth matching.
func whiteoutLayers(wh func(string) Applier, bottom bool) (lower []Layer, upper Layer) {
	l3 := L(
		File("in-upper", "l3", 0o644), File("in-top", "l3", 0o644), File("in-mid", "l3", 0o644),
		File("readd", "l3", 0o644), File("keep", "l3", 0o644),
		File("d/in-top", "l3", 0o644), File("d/in-mid", "l3", 0o644), File("d/keep", "l3", 0o644),
		Dir("wdir", 0o755), File("wdir/x", "l3", 0o644),
	)
	if bottom {
		l3 = append(l3, wh("in-bottom"), wh("d/in-bottom"))
	}
	l2 := L(wh("in-mid"), wh("readd"), wh("d/in-mid"), wh("wdir"), File("d/two", "l2", 0o644))
	l1 := L(wh("in-top"), File("readd", "l1 over a whiteout below", 0o600), wh("d/in-top"), File("top", "l1", 0o644))
	return []Layer{l1, l2, l3}, L(Whiteout("in-upper"), File("u", "upper", 0o644))
}

var whiteoutSteps = []Step{
	readdir("."), readdir("d"),
	stat("in-upper"), stat("in-top"), stat("in-mid"), stat("in-bottom"), stat("d/in-bottom"), stat("wdir"), stat("wdir/x"),
	read("readd"), read("keep"),
	create("in-upper", 0o640),
	mkdir("in-mid", 0o755),
	symlink("target", "in-top"),
	mknod("in-bottom", unix.S_IFIFO, 0o600, 0, 0),
	mkdir("wdir", 0o700),
	readdir("wdir"),
	unlink("d/keep"),
	readdir("d"),
	readdir("."),
}

// Cases is the differential suite.
var Cases = []Case{
	{
		Name: "lookup/topmost-wins",
		Lower: []Layer{
			L(File("a", "a1", 0o644), Dir("dof", 0o755), File("dof/in", "dir over file", 0o644), File("fod", "file over dir", 0o600),
				File("m/one", "1", 0o644)),
			L(File("a", "a2", 0o644), File("b", "b2", 0o640), Dir("fod", 0o755), File("fod/inner", "hidden", 0o644),
				File("m/two", "2", 0o644), Chown("m", 1000, 1000)),
			L(File("a", "a3", 0o644), File("b", "b3", 0o644), File("c", "c3", 0o644), File("dof", "hidden", 0o644),
				File("m/two", "hidden", 0o644), File("m/three", "3", 0o644), Chmod("m", 0o700)),
		},
		Upper: L(File("c", "upper", 0o600), File("u", "upper only", 0o644)),
		Steps: []Step{
			readdir("."), readdir("m"), read("a"), read("b"), read("c"), read("m/two"), read("m/three"),
			stat("fod"), stat("fod/inner"), readdir("dof"), read("dof/in"),
		},
	},
	func() Case {
		lower, upper := whiteoutLayers(Whiteout, true)
		return Case{Name: "whiteout/chardev", Lower: lower, Upper: upper, Steps: whiteoutSteps}
	}(),
	func() Case {
		lower, upper := whiteoutLayers(XattrWhiteout, false)
		return Case{Name: "whiteout/xattr", Lower: lower, Upper: upper, Steps: whiteoutSteps}
	}(),
	func() Case {
		lower, upper := whiteoutLayers(OCIWhiteout, true)
		lower[1] = append(lower[1], OCIOpaque("o"), File("o/mid", "l2", 0o644), Dir(".wh..wh.plnk", 0o700), File(".wh..wh.plnk/123.456", "aufs", 0o644))
		lower[2] = append(lower[2], File("o/bottom", "hidden by the OCI opaque marker", 0o644))
		return Case{Name: "whiteout/oci", Lower: lower, Upper: upper,
			Steps: append([]Step{readdir("o"), stat(".wh..wh.plnk"), stat(".wh.in-top"), create("o/new", 0o644), readdir("o")}, whiteoutSteps...),
			Differs: []Differ{{Step: "initial", Path: "o", Field: "size",
				Why: "a fixture difference: ours reads the raw OCI layer, whose o/ holds the .wh..wh..opq marker, one entry more than the kernel's converted o/, and tmpfs counts entries in a directory's size"}},
		}
	}(),
	{
		Name: "opaque/upper-and-middle",
		Lower: []Layer{
			L(File("o1/top", "l1", 0o644), File("o2/c", "l1", 0o644)),
			L(Opaque("o2"), File("o2/b", "l2", 0o644), File("o2/sub/y", "l2", 0o644), File("o1/mid", "l2", 0o644)),
			L(File("o1/a", "l3", 0o644), File("o1/sub/deep/x", "l3", 0o644), File("o2/a", "l3", 0o644), File("o2/sub/x", "l3", 0o644),
				File("o2/sub/deeper/z", "l3", 0o644)),
		},
		Upper: L(Opaque("o1"), File("o1/u", "upper", 0o644)),
		Steps: []Step{
			readdir("o1"), readdir("o2"), readdir("o2/sub"), stat("o1/a"), stat("o1/sub"), stat("o2/sub/x"), stat("o2/sub/deeper"),
			create("o2/sub/new", 0o644), readdir("o2/sub"),
			rmdir("o1"), unlink("o1/u"), rmdir("o1"), readdir("."), mkdir("o1", 0o755), readdir("o1"),
		},
	},
	{
		Name: "xattrs/overlay-names",
		Lower: []Layer{
			L(File("g", "g", 0o644)),
			L(File("f", "f", 0o644), Setxattr("f", "user.a", "1"), Setxattr("f", "trusted.overlay.overlay.esc", "escaped"),
				Dir("d", 0o755), Setxattr("d", "trusted.overlay.overlay.opaque", "y"), File("d/inner", "l2", 0o644)),
			L(File("d/below", "l3: an escaped opaque xattr does not hide me", 0o644), File("g", "hidden", 0o644)),
		},
		Steps: []Step{
			listx("f"), getx("f", "trusted.overlay.esc"), getx("f", "trusted.overlay.overlay.esc"), getx("f", "user.a"),
			listx("d"), getx("d", "trusted.overlay.opaque"), readdir("d"),
			setx("g", "trusted.overlay.opaque", "y"), getx("g", "trusted.overlay.opaque"), listx("g"),
			setx("g", "trusted.overlay.overlay.x", "2"), listx("g"),
			setx("g", "user.overlay.opaque", "y"), getx("g", "user.overlay.opaque"), listx("g"),
			removex("f", "trusted.overlay.esc"), listx("f"),
			removex("f", "trusted.overlay.origin"),
			setx("d", "trusted.overlay.redirect", "/elsewhere"), readdir("d"),
			setx("f", "trusted.other", "t"), getx("f", "trusted.other"),
			mknod("whiteout", unix.S_IFCHR, 0o600, 0, 0),
			mknod("null", unix.S_IFCHR, 0o666, 1, 3),
			mknod("fifo", unix.S_IFIFO, 0o600, 0, 0),
			mknod("blk", unix.S_IFBLK, 0o600, 7, 0),
			mknod("d/whiteout-over-lower", unix.S_IFCHR, 0o600, 0, 0),
			mknod("g", unix.S_IFCHR, 0o600, 0, 0),
		},
	},
	{
		Name: "names/long-wh-dots-loops",
		Lower: []Layer{
			L(File("f", "f", 0o644)),
			L(Dir("d", 0o755), File("d/x", "x", 0o644), Symlink("loop1", "loop2"), Symlink("loop2", "loop1"),
				Symlink("abs", "/dev/null"), Symlink("rel", "d/x"), Symlink(strings.Repeat("n", 255), "f")),
		},
		Steps: []Step{
			create(strings.Repeat("a", 255), 0o644), create(strings.Repeat("b", 256), 0o644),
			stat(strings.Repeat("n", 255)), stat(strings.Repeat("n", 256)), mkdir(strings.Repeat("c", 256), 0o755),
			create(".wh.made-through-the-overlay", 0o644), mkdir(".wh..wh..opq", 0o755),
			readdir("."),
			stat("loop1"), openOnly("loop1", unix.O_RDONLY, "O_RDONLY"), stat("abs"), stat("rel"), readlink("abs"),
			mkdir("d/.", 0o755), mkdir("d/..", 0o755), rmdir("d/."), rmdir("d/.."), unlink("d/."),
			rename("d/.", "e"), rename("f", "d/."), stat("f/x"), create("f/x", 0o644), mkdir("missing/x", 0o755),
			openOnly("d", unix.O_WRONLY, "O_WRONLY"), link("d", "dlink"), renameFlags("d", "d/x/y", 0), rename("d", "d/sub"),
		},
	},
	{
		Name: "readdir/merged",
		Lower: []Layer{
			L(File("m/e", "l1", 0o644), File("m/a", "l1", 0o644), Symlink("m/s", "a"), Fifo("m/p", 0o600)),
			L(File("m/b", "l2", 0o644), File("m/d", "l2", 0o644), Whiteout("m/c"), Dir("m/sub", 0o755)),
			L(File("m/a", "l3", 0o644), File("m/b", "l3", 0o644), File("m/c", "l3", 0o644), File("m/x1", "l3", 0o644),
				File("m/x2", "l3", 0o644), File("m/sub/y", "l3", 0o644), Device("m/null", unix.S_IFCHR, 0o666, 1, 3)),
		},
		Upper: L(File("m/f", "upper", 0o644), Whiteout("m/x1")),
		Steps: []Step{
			readdir("m"), readdir("m/sub"), stat("m"), readdirStream("m", "new1"), readdir("m"),
			chmod("m/b", 0o600), readdir("m"), unlink("m/a"), readdir("m"),
		},
	},
	{
		Name: "readdir/100k",
		Lower: []Layer{
			L(ManyFiles("big", "f%06d", 50000, 80000), func() Applier {
				return applier("whiteouts big/f000000..99", func(root string) error {
					for i := 0; i < 100; i++ {
						if err := Whiteout(fmt.Sprintf("big/f%06d", i)).Apply(root); err != nil {
							return err
						}
					}
					return nil
				})
			}()),
			L(ManyFiles("big", "f%06d", 25000, 55000)),
			L(ManyFiles("big", "f%06d", 0, 30000)),
		},
		Upper:      L(ManyFiles("big", "f%06d", 75000, 100000)),
		NoManifest: true,
		Steps:      []Step{readdirCount("big"), unlink("big/f000100"), create("big/f000000", 0o644), readdirCount("big")},
	},
	{
		Name: "copyup/triggers",
		Lower: []Layer{
			L(File("t/top", "l1", 0o644)),
			L(Dir("t", 0o750), Chown("t", 1000, 1000), Setxattr("t", "user.dir", "d"),
				File("t/wronly", "wronly", 0o644), File("t/rdwr", "rdwr", 0o644), File("t/otrunc", "otrunc", 0o644),
				File("t/truncate", "truncate", 0o644), File("t/chmod", "chmod", 0o644), File("t/chown", "chown", 0o644),
				File("t/utimes", "utimes", 0o644), File("t/setx", "setx", 0o644), File("t/removex", "removex", 0o644),
				Setxattr("t/removex", "user.x", "x"), File("t/link", "link", 0o644), File("t/append", "append", 0o644),
				Chown("t/chown", 1000, 1000)),
			L(File("t/deep/er/file", "deep", 0o644), Chmod("t/deep", 0o700), Setxattr("t/deep/er", "user.p", "p")),
		},
		Steps: []Step{
			openOnly("t/wronly", unix.O_WRONLY, "O_WRONLY"),
			openOnly("t/rdwr", unix.O_RDWR, "O_RDWR"),
			openOnly("t/otrunc", unix.O_WRONLY|unix.O_TRUNC, "O_WRONLY|O_TRUNC"),
			truncate("t/truncate", 3),
			chmod("t/chmod", 0o4755),
			chown("t/chown", 2000, 3000),
			utimes("t/utimes", 1234567890),
			setx("t/setx", "user.new", "v"),
			removex("t/removex", "user.x"),
			link("t/link", "t/link2"),
			appendTo("t/append", "+more"),
			chmod("t/deep/er/file", 0o600),
			read("t/deep/er/file"), read("t/chmod"), read("t/wronly"),
		},
	},
	{
		Name: "copyup/non-triggers",
		Lower: []Layer{
			L(File("n/top", "l1", 0o644)),
			L(File("n/f", "f", 0o644), File("n/g", "g", 0o644), File("n/h", "h", 0o644), Dir("n/dir", 0o755),
				Symlink("n/sym", "f"), Setxattr("n/h", "user.h", "h"), Fifo("n/fifo", 0o644)),
		},
		Steps: []Step{
			openOnly("n/f", unix.O_RDONLY, "O_RDONLY"), read("n/g"), stat("n/h"), readdir("n"), readdir("n/dir"),
			readlink("n/sym"), getx("n/h", "user.h"), listx("n/h"), statfs(), stat("n/sym"),
			openOnly("n/fifo", unix.O_RDONLY|unix.O_NONBLOCK, "O_RDONLY|O_NONBLOCK"),
			symlink("f", "n/newlink"), readdir("n"),
		},
	},
	{
		Name: "copyup/preserves",
		Lower: []Layer{
			L(File("p/top", "l1", 0o644)),
			L(Sparse("p/sparse", 4<<20, map[int64]string{0: "head", 2 << 20: "middle"}),
				File("p/big", strings.Repeat("0123456789abcdef", 512<<10/16*8), 0o644),
				File("p/suid", "suid", 0o6755), Chown("p/suid", 1000, 2000), Setxattr("p/suid", "user.x", "x"),
				Setxattr("p/suid", "security.y", "y"),
				File("p/acl", "acl", 0o644), Setxattr("p/acl", "system.posix_acl_access", aclAccess(1234)),
				Symlink("p/sym", "somewhere"), Fifo("p/fifo", 0o644), Device("p/null", unix.S_IFCHR, 0o666, 1, 3),
				Chown("p/sym", 7, 8), Chown("p", 1000, 1000)),
		},
		Differs: []Differ{{Step: "append p/sparse", Path: "p/sparse", Field: "blocks",
			Why: "copy-up keeps holes exactly (SEEK_DATA/SEEK_HOLE); the kernel copies every 1 MiB chunk that holds data, so its copy allocates more; contents are equal"}},
		Steps: []Step{
			appendTo("p/sparse", "tail"), writeAt("p/big", 1<<20, "changed"), appendTo("p/suid", "+"), appendTo("p/acl", "+"),
			chown("p/sym", 5, 5), chmod("p/fifo", 0o600), chown("p/null", 9, 9),
			read("p/sparse"), read("p/big"),
		},
	},
	{
		Name: "copyup/protattr",
		Lower: []Layer{
			L(File("a", "append-only", 0o644), Flags("a", fsAppendFL), File("i", "immutable", 0o644), Flags("i", fsImmutableFL),
				File("s", "noatime", 0o644), Flags("s", fsNoatimeFL)),
		},
		Steps: []Step{
			getflags("a"), getflags("i"), appendTo("a", "+"), getflags("a"), writeAt("a", 0, "X"), chmod("a", 0o600), unlink("a"),
			chmod("i", 0o600), appendTo("i", "+"), link("i", "i2"), appendTo("s", "+"), getflags("s"),
			remount(), getflags("a"), writeAt("a", 0, "X"), read("a"),
		},
	},
	{
		Name: "copyup/parent-chain",
		Lower: []Layer{
			L(File("a/b/top", "l1", 0o644)),
			L(File("a/b/other", "l2", 0o644), Chown("a/b", 1000, 100)),
			L(File("a/b/c/d/file", "l3", 0o644), Chmod("a", 0o751), Chmod("a/b", 0o710), Chmod("a/b/c", 0o700),
				Chown("a/b/c", 1000, 100), Setxattr("a/b", "user.p", "on b"), Setxattr("a/b/c/d", "user.q", "on d")),
		},
		Steps: []Step{
			chmod("a/b/c/d/file", 0o640), create("a/b/c/new", 0o644), read("a/b/c/d/file"),
		},
	},
	{
		Name: "copyup/ino-stable",
		Lower: []Layer{
			L(File("dx/in1", "l1", 0o644)),
			L(File("x", "x", 0o644), File("dx/in2", "l2", 0o644)),
			L(File("y", "y", 0o644), File("z", "z", 0o644), Dir("dx", 0o755), Symlink("s", "x"), Fifo("p", 0o644)),
		},
		Steps: []Step{
			chmod("x", 0o600), appendTo("y", "+"), chmod("dx", 0o700), create("dx/new", 0o644), chown("s", 3, 3),
			chmod("p", 0o600), remount(), readdir("."), readdir("dx"), truncate("z", 0), remount(),
		},
	},
	{
		Name: "copyup/open-fd",
		Lower: []Layer{
			L(File("f", "old data", 0o644), File("g", "old", 0o644)),
		},
		Steps: []Step{staleFD("f", "new data"), read("f"), staleFD("f", "newer")},
	},
	{
		Name: "metacopy/on",
		Lower: []Layer{
			L(File("mc/top", "l1", 0o644)),
			L(File("mc/f1", "data one", 0o644), File("mc/f2", "data two", 0o644), File("mc/f3", strings.Repeat("3", 4096), 0o644),
				Chown("mc/f1", 1000, 1000), Setxattr("mc/f2", "user.k", "v"), File("mc/f4", "four", 0o644)),
		},
		Steps: []Step{
			chmod("mc/f1", 0o600), read("mc/f1"), appendTo("mc/f1", "+"), read("mc/f1"),
			chown("mc/f2", 1, 1), rename("mc/f2", "mc/f2-renamed"), read("mc/f2-renamed"), remount(), read("mc/f2-renamed"),
			writeAt("mc/f2-renamed", 0, "DATA"), read("mc/f2-renamed"),
			utimes("mc/f3", 1000000000), truncate("mc/f3", 10), read("mc/f3"),
			setx("mc/f4", "user.m", "m"), rename("mc/f4", "moved-f4"), remount(), read("moved-f4"), unlink("moved-f4"),
		},
	},
	{
		Name:    "metacopy/off",
		Options: "redirect_dir=on,index=on,metacopy=off",
		Lower: []Layer{
			L(File("mc/f1", "data one", 0o644), File("mc/f2", "data two", 0o644)),
		},
		Steps: []Step{chmod("mc/f1", 0o600), chown("mc/f2", 1, 1), rename("mc/f2", "f2"), remount(), read("f2")},
	},
	{
		Name: "unlink/whiteout-only-over-lower",
		Lower: []Layer{
			L(File("u-top", "l1", 0o644)),
			L(File("u-mid", "l2", 0o644)),
			L(File("u-lower", "l3", 0o644), File("h1", "h", 0o644), Hardlink("h1", "h2"), Symlink("sym", "u-lower"), Dir("dir", 0o755)),
		},
		Upper: L(File("u-pure", "upper", 0o644)),
		Steps: []Step{
			unlink("u-lower"), unlink("u-pure"), chmod("u-mid", 0o600), unlink("u-mid"), appendTo("u-top", "+"), unlink("u-top"),
			create("u-new", 0o644), unlink("u-new"), unlink("h1"), stat("h2"), unlink("sym"), unlink("missing"), unlink("dir"),
			create("u-lower", 0o644), unlink("u-lower"),
		},
	},
	{
		Name: "rmdir/whiteouts-vs-visible",
		Lower: []Layer{
			L(File("visible/c", "l1", 0o644)),
			L(File("only-wh/b", "l2", 0o644), File("nested/x/y", "l2", 0o644)),
			L(File("only-wh/a", "l3", 0o644), File("visible/a", "l3", 0o644), File("visible/b", "l3", 0o644), File("opq/a", "l3", 0o644),
				File("file", "l3", 0o644)),
		},
		Upper: L(Opaque("opq")),
		Steps: []Step{
			rmdir("only-wh"), unlink("only-wh/a"), unlink("only-wh/b"), readdir("only-wh"), rmdir("only-wh"),
			unlink("visible/a"), rmdir("visible"), readdir("opq"), rmdir("opq"), mkdir("pure", 0o755), rmdir("pure"),
			rmdir("nested"), rmdir("file"), rmdir("missing"), rmdir("visible/."), readdir("."),
			mkdir("only-wh", 0o755), readdir("only-wh"),
		},
	},
	{
		Name: "create/over-whiteout",
		Lower: []Layer{
			L(File("md/a", "l1", 0o644)),
			L(File("c1", "l2", 0o644), File("c2", "l2", 0o644), File("c3", "l2", 0o644), File("c4", "l2", 0o644), File("c5", "l2", 0o644),
				File("src", "src", 0o644), File("z", "l2", 0o644), File("md/b", "l2", 0o644), Dir("c2dir", 0o755), File("c2dir/x", "x", 0o644)),
		},
		Upper: L(Whiteout("c1"), Whiteout("c2"), Whiteout("c3"), Whiteout("c4"), Whiteout("c5"), Whiteout("c2dir")),
		Steps: []Step{
			create("c1", 0o600), mkdir("c2", 0o755), mknod("c3", unix.S_IFIFO, 0o600, 0, 0), symlink("c1", "c4"), link("src", "c5"),
			mkdir("c2dir", 0o700), readdir("c2dir"), mkdir("md/newdir", 0o755), create("md/newfile", 0o644),
			unlink("z"), mkdir("z", 0o755), readdir("z"), rmdir("z"), create("z", 0o644), readdir("."),
		},
	},
	{
		Name: "create/excl-tmpfile-fallocate",
		Lower: []Layer{
			L(File("f", "lower", 0o644), File("g", "lower g", 0o644), File("gone", "hidden", 0o644), Dir("td", 0o755), File("td/x", "x", 0o644)),
		},
		Upper: L(Whiteout("gone")),
		Steps: []Step{
			createExcl("f"), createExcl("gone"), createExcl("td"), tmpfile("td", "tmp data", "td/linked"), tmpfile("td", "unnamed", ""),
			readdir("td"), fallocate("f", 0, 0, 8192), fallocate("g", unix.FALLOC_FL_KEEP_SIZE, 0, 65536), read("f"), read("g"),
			fallocate("td/x", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1),
		},
	},
	{
		Name: "remove/rm-rf-deep",
		Lower: []Layer{
			L(File("tree/d0/top", "l1", 0o644)),
			L(File("tree/d0/extra", "l2", 0o644), Whiteout("tree/d1/f0"), Dir("tree/d3", 0o700)),
			L(func() Applier {
				return applier("deep tree", func(root string) error {
					for i := 0; i < 3; i++ {
						for j := 0; j < 3; j++ {
							for k := 0; k < 3; k++ {
								p := fmt.Sprintf("tree/d%d/e%d/g%d/f%d", i, j, k, k)
								if err := File(p, p, 0o644).Apply(root); err != nil {
									return err
								}
							}
						}
						if err := File(fmt.Sprintf("tree/d%d/f0", i), "f0", 0o644).Apply(root); err != nil {
							return err
						}
					}
					return nil
				})
			}()),
		},
		Upper: L(File("tree/d2/upperfile", "upper", 0o644)),
		Steps: []Step{removeAll("tree"), readdir("."), stat("tree"), mkdir("tree", 0o755), readdir("tree")},
	},
	{
		Name: "rename/files",
		Lower: []Layer{
			L(File("r/f", "l1", 0o644), File("other/o", "o", 0o644)),
			L(File("r/a", "a", 0o644), File("r/b", "b", 0o644), File("r/c", "c", 0o644)),
			L(File("r/d", "d", 0o644), File("r/e", "e", 0o644), File("r/w", "hidden", 0o644), Dir("r/dir", 0o755), File("r/dir/x", "x", 0o644)),
		},
		Upper: L(File("r/u1", "u1", 0o644), File("r/u2", "u2", 0o644), Whiteout("r/w")),
		Steps: []Step{
			rename("r/a", "r/a-new"), rename("r/b", "r/c"), rename("r/d", "r/u1"), rename("r/e", "r/w"), rename("r/u2", "r/u2-new"),
			rename("r/f", "r/f"), renameFlags("r/c", "r/a-new", unix.RENAME_NOREPLACE), renameFlags("r/c", "r/fresh", unix.RENAME_NOREPLACE),
			renameFlags("r/a-new", "r/u1", unix.RENAME_EXCHANGE), renameFlags("r/u1", "r/x", unix.RENAME_WHITEOUT),
			renameFlags("r/u1", "r/nothing", unix.RENAME_EXCHANGE),
			rename("r/u1", "r/dir"), rename("r/dir", "r/u1"), rename("r/missing", "r/x"), rename("r/u1", "r/nodir/x"),
			rename("r/fresh", "other/fresh"), rename("other/o", "r/o"), readdir("r"), readdir("other"),
		},
	},
	{
		Name: "rename/dirs-redirect",
		Lower: []Layer{
			L(File("M/m1", "l1", 0o644), File("E/e1", "l1", 0o644)),
			L(File("M/m2", "l2", 0o644), File("A/sub/z", "l2", 0o644), Dir("P", 0o755), File("Q/q", "q", 0o644)),
			L(File("A/x", "x", 0o644), File("A/sub/y", "y", 0o644), File("M/m3", "l3", 0o644), File("E/e3", "l3", 0o644)),
		},
		Steps: []Step{
			rename("A", "B"), rename("B", "C"), readdir("C"), readdir("C/sub"), read("C/x"), stat("A"), stat("B"),
			rename("C", "P/C"), readdir("P/C"), readdir("P/C/sub"), rename("M", "M2"), readdir("M2"), create("A", 0o644),
			remount(), readdir("P/C"), readdir("M2"), read("P/C/sub/z"),
			rename("P/C/sub", "sub-moved"), readdir("sub-moved"),
			removeAll("P/C"), stat("P/C"), readdir("P"), readdir("."),
			rename("Q", "E"), renameFlags("Q", "E", unix.RENAME_EXCHANGE), readdir("E"), readdir("Q"),
			mkdir("new1", 0o755), create("new1/f", 0o644), rename("new1", "new2"), rename("new2", "M2/new2"), readdir("M2/new2"),
			rename("M2", "M2/new2/inside"), remount(), readdir("M2"), readdir("."),
		},
	},
	{
		Name:    "rename/dirs-no-redirect",
		Options: "redirect_dir=off,index=off,metacopy=off",
		Lower: []Layer{
			L(File("M/m1", "l1", 0o644)),
			L(File("A/x", "x", 0o644), File("M/m2", "l2", 0o644), File("T/t", "t", 0o644)),
		},
		Steps: []Step{
			rename("A", "B"), rename("M", "M2"), mkdir("U", 0o755), renameFlags("U", "T", unix.RENAME_EXCHANGE),
			renameFlags("T", "U", unix.RENAME_EXCHANGE), rename("U", "U2"), rename("U2", "M/U2"), readdir("M"), readdir("."),
		},
	},
	{
		Name: "rename/redirect-max",
		Lower: []Layer{
			L(File(strings.Repeat("L", 100)+"/"+strings.Repeat("l", 100)+"/"+strings.Repeat("d", 60)+"/f", "f", 0o644)),
		},
		Steps: []Step{
			rename(strings.Repeat("L", 100)+"/"+strings.Repeat("l", 100)+"/"+strings.Repeat("d", 60), "short"),
			rename(strings.Repeat("L", 100)+"/"+strings.Repeat("l", 100)+"/"+strings.Repeat("d", 60),
				strings.Repeat("L", 100)+"/"+strings.Repeat("l", 100)+"/renamed-in-place"),
			rename(strings.Repeat("L", 100)+"/"+strings.Repeat("l", 100)+"/renamed-in-place", "short"),
			rename(strings.Repeat("L", 100), "top"), readdir("top/" + strings.Repeat("l", 100)),
		},
	},
	{
		Name: "hardlinks/index",
		Lower: []Layer{
			L(File("x", "x", 0o644)),
			L(File("h1", "linked", 0o644), Hardlink("h1", "h2"), Hardlink("h1", "d/h3"), File("k1", "k", 0o644), Hardlink("k1", "k2")),
		},
		Steps: []Step{
			chmod("h1", 0o600), read("h2"), appendTo("h2", "+more"), read("h1"), read("d/h3"), link("h1", "h-new"), unlink("h2"),
			remount(), chmod("d/h3", 0o640), link("k1", "k3"), rename("k2", "d/k2"), remount(), unlink("k1"),
		},
	},
	{
		Name:    "hardlinks/no-index",
		Options: "redirect_dir=off,index=off,metacopy=off",
		Lower: []Layer{
			L(File("h1", "linked", 0o644), Hardlink("h1", "h2"), File("k1", "k", 0o644), Hardlink("k1", "k2")),
		},
		Steps: []Step{
			chmod("h1", 0o600), read("h2"), appendTo("h2", "+more"), read("h1"), link("k1", "k3"), remount(), unlink("k2"),
		},
	},
	{
		Name:       "inodes/separate-fs",
		SeparateFS: true,
		Lower: []Layer{
			L(File("a", "a", 0o644), File("d/x", "x", 0o644)),
			L(File("b", "b", 0o644), File("d/y", "y", 0o644)),
			L(File("c", "c", 0o644), File("d/z", "z", 0o644)),
		},
		Steps: []Step{readdir("."), readdir("d"), chmod("b", 0o600), appendTo("c", "+"), create("d/new", 0o644), remount(), readdir("d")},
	},
	{
		Name:     "readonly/erofs",
		ReadOnly: true,
		Options:  "redirect_dir=on,metacopy=on",
		Lower: []Layer{
			L(File("f", "l1", 0o644), Dir("d", 0o755)),
			L(File("g", "l2", 0o644), File("d/x", "x", 0o644), Whiteout("gone"), Symlink("s", "f")),
		},
		Steps: []Step{
			read("f"), readdir("d"), statfs(),
			create("new", 0o644), createExcl("f"), openOnly("f", unix.O_WRONLY, "O_WRONLY"), openOnly("g", unix.O_RDWR, "O_RDWR"),
			truncate("f", 0), chmod("f", 0o600), chown("f", 1, 1), utimes("f", 1), setx("f", "user.x", "x"), removex("f", "user.x"),
			mkdir("d/new", 0o755), rmdir("d"), unlink("g"), rename("f", "f2"), symlink("f", "s2"), link("f", "f3"),
			mknod("fifo", unix.S_IFIFO, 0o600, 0, 0), tmpfile("d", "x", ""),
		},
	},
	{
		Name: "errors/misc",
		Lower: []Layer{
			L(File("f", "f", 0o644), Dir("d", 0o755), File("d/x", "x", 0o644), Symlink("s", "d")),
		},
		Steps: []Step{
			stat("f/x"), openOnly("d", unix.O_RDWR, "O_RDWR"), mkdir("d", 0o755), mkdir("f", 0o755), symlink("x", "f"),
			link("d", "d2"), link("missing", "m2"), rename("d", "d/x/deeper"), rmdir("s"), unlink("s/x"), readdir("s"),
			openOnly("missing/x", unix.O_CREAT|unix.O_WRONLY, "O_CREAT"), openOnly("f", unix.O_DIRECTORY, "O_DIRECTORY"),
			openOnly("s", unix.O_NOFOLLOW, "O_NOFOLLOW"), readdir("."),
		},
	},
}
