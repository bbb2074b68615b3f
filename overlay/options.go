package overlay

import (
	"fmt"
	"strings"

	"github.com/govirtiofs/govirtiofs/passthrough"
	"github.com/hashicorp/go-hclog"
)

// Config describes the layers of a union and the overlayfs options that
// govern it, as the kernel's overlayfs mount options name them.
type Config struct {
	// Lower are the read-only layers, the topmost first, as in
	// lowerdir=L1:L2:L3.
	Lower []string
	// Upper and Work are the writable layer and its work directory, on
	// the same host filesystem. Both empty makes a read-only union.
	Upper, Work string
	// UserXattr stores and reads the overlay's private xattrs as
	// user.overlay.* instead of trusted.overlay.* (the userxattr option).
	UserXattr bool
	// RedirectDir makes renames of lower and merged directories record
	// an overlay.redirect xattr instead of failing with EXDEV
	// (redirect_dir=on). Redirects found on the layers are followed
	// either way.
	RedirectDir bool
	// Index keeps hard links of lower files intact across copy-up through
	// an index in the work directory (index=on).
	Index bool
	// Metacopy copies up only the metadata of a lower file whose data is
	// not being changed (metacopy=on).
	Metacopy bool
}

// ParseConfig parses overlayfs mount options such as
// "lowerdir=/l1:/l2,upperdir=/u,workdir=/w". Within a value, "\," and "\:"
// escape a comma or a colon, and "\\" a backslash. Options accepted:
// lowerdir (required), upperdir and workdir (both or neither), userxattr,
// redirect_dir=on|off|follow|nofollow, index=on|off, metacopy=on|off, and
// the ones that change nothing here: xino=on|off|auto (inode numbers are
// always unique across layers), uuid=..., volatile and nfs_export=off.
//
// Unless named, redirect_dir, index and metacopy are on with trusted
// xattrs and off with userxattr, where kernel overlayfs does not honour
// them; naming them on with userxattr is allowed, and makes an upper that
// only govirtiofsd reads correctly.
func ParseConfig(opts string) (Config, error) {
	var c Config
	var redirect, index, metacopy *bool
	on := func(k, v string) (*bool, error) {
		switch v {
		case "on":
			t := true
			return &t, nil
		case "off":
			f := false
			return &f, nil
		}
		return nil, fmt.Errorf("overlay: %s=%q: want on or off", k, v)
	}
	sawLower := false
	for _, opt := range splitEscaped(opts, ',') {
		if opt == "" {
			continue
		}
		k, v, hasV := strings.Cut(opt, "=")
		var err error
		switch k {
		case "lowerdir":
			sawLower = true
			for _, l := range splitEscaped(v, ':') {
				if l == "" {
					return c, fmt.Errorf("overlay: lowerdir %q has an empty layer", unescape(v))
				}
				c.Lower = append(c.Lower, unescape(l))
			}
		case "upperdir":
			c.Upper = unescape(v)
		case "workdir":
			c.Work = unescape(v)
		case "userxattr":
			if hasV {
				return c, fmt.Errorf("overlay: userxattr takes no value")
			}
			c.UserXattr = true
		case "redirect_dir":
			switch v {
			case "on":
				t := true
				redirect = &t
			case "off", "follow", "nofollow":
				f := false
				redirect = &f
			default:
				return c, fmt.Errorf("overlay: redirect_dir=%q: want on, off, follow or nofollow", v)
			}
		case "index":
			index, err = on(k, v)
		case "metacopy":
			metacopy, err = on(k, v)
		case "xino":
			if v != "on" && v != "off" && v != "auto" {
				err = fmt.Errorf("overlay: xino=%q: want on, off or auto", v)
			}
		case "uuid":
			if v != "on" && v != "off" && v != "null" && v != "auto" {
				err = fmt.Errorf("overlay: uuid=%q: want on, off, null or auto", v)
			}
		case "nfs_export":
			if v != "off" {
				err = fmt.Errorf("overlay: nfs_export=%q is not supported (only off)", v)
			}
		case "volatile":
		default:
			return c, fmt.Errorf("overlay: unknown option %q", k)
		}
		if err != nil {
			return c, err
		}
	}
	if !sawLower || len(c.Lower) == 0 {
		return c, fmt.Errorf("overlay: lowerdir is required")
	}
	if (c.Upper == "") != (c.Work == "") {
		return c, fmt.Errorf("overlay: upperdir and workdir go together")
	}
	def := !c.UserXattr
	c.RedirectDir, c.Index, c.Metacopy = def, def, def
	if redirect != nil {
		c.RedirectDir = *redirect
	}
	if index != nil {
		c.Index = *index
	}
	if metacopy != nil {
		c.Metacopy = *metacopy
	} else if !c.RedirectDir {
		c.Metacopy = false // metacopy needs redirects
	}
	if c.Metacopy && !c.RedirectDir {
		return c, fmt.Errorf("overlay: metacopy=on needs redirect_dir=on")
	}
	return c, nil
}

// String formats c as mount options ParseConfig reads back.
func (c Config) String() string {
	esc := func(s string) string {
		r := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
		return r.Replace(s)
	}
	var b strings.Builder
	b.WriteString("lowerdir=")
	for i, l := range c.Lower {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(esc(l))
	}
	if c.Upper != "" {
		b.WriteString(",upperdir=" + esc(c.Upper) + ",workdir=" + esc(c.Work))
	}
	if c.UserXattr {
		b.WriteString(",userxattr")
	}
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	fmt.Fprintf(&b, ",redirect_dir=%s,index=%s,metacopy=%s", onOff(c.RedirectDir), onOff(c.Index), onOff(c.Metacopy))
	return b.String()
}

// splitEscaped splits s at each sep not preceded by a backslash, keeping the
// escapes in the pieces.
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape removes the backslash escapes of an option value.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Options are the serving choices shared with the passthrough filesystem.
type Options struct {
	// Cache says how long the guest may cache names, attributes and data.
	Cache passthrough.CachePolicy
	// Xattr enables the extended attribute operations.
	Xattr bool
	// ReadOnly refuses every change even when the union has an upper,
	// and leaves the work directory as it finds it.
	ReadOnly bool
	// PreserveNoatime keeps the guest's O_NOATIME on host opens; by
	// default it is dropped, as in passthrough.
	PreserveNoatime bool
	// Logger receives the filesystem's log; nil discards it.
	Logger hclog.Logger
}
