package overlay

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	on := func(c Config) Config { c.RedirectDir, c.Index, c.Metacopy = true, true, true; return c }
	rw := Config{Lower: []string{"/l1", "/l2"}, Upper: "/u", Work: "/w"}
	tests := []struct {
		name string
		opts string
		want Config
	}{
		{"read-write", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", on(rw)},
		{"read-only", "lowerdir=/a", on(Config{Lower: []string{"/a"}})},
		{"order does not matter", "workdir=/w,upperdir=/u,lowerdir=/l1:/l2", on(rw)},
		{"empty options are skipped", ",lowerdir=/l1:/l2,,upperdir=/u,workdir=/w,", on(rw)},
		{"three lowers", "lowerdir=/a:/b:/c", on(Config{Lower: []string{"/a", "/b", "/c"}})},

		// Defaults: on with trusted xattrs, off with userxattr.
		{"userxattr defaults", "lowerdir=/a,userxattr", Config{Lower: []string{"/a"}, UserXattr: true}},
		{"userxattr named on", "lowerdir=/a,userxattr,redirect_dir=on,index=on,metacopy=on",
			Config{Lower: []string{"/a"}, UserXattr: true, RedirectDir: true, Index: true, Metacopy: true}},
		{"userxattr index only", "lowerdir=/a,userxattr,index=on", Config{Lower: []string{"/a"}, UserXattr: true, Index: true}},
		{"userxattr redirect only", "lowerdir=/a,userxattr,redirect_dir=on", Config{Lower: []string{"/a"}, UserXattr: true, RedirectDir: true}},
		{"trusted all off", "lowerdir=/a,redirect_dir=off,index=off,metacopy=off", Config{Lower: []string{"/a"}}},
		{"trusted index off", "lowerdir=/a,index=off", Config{Lower: []string{"/a"}, RedirectDir: true, Metacopy: true}},
		{"trusted metacopy off", "lowerdir=/a,metacopy=off", Config{Lower: []string{"/a"}, RedirectDir: true, Index: true}},
		{"redirect_dir=on explicit", "lowerdir=/a,redirect_dir=on", on(Config{Lower: []string{"/a"}})},
		{"redirect_dir=follow", "lowerdir=/a,redirect_dir=follow,metacopy=off", Config{Lower: []string{"/a"}, Index: true}},
		{"redirect_dir=nofollow", "lowerdir=/a,redirect_dir=nofollow,metacopy=off", Config{Lower: []string{"/a"}, Index: true}},
		// Kernel overlayfs (fs/overlayfs/params.c, ovl_fs_params_verify):
		// an explicit redirect_dir other than on with metacopy left at
		// its default disables metacopy ("disabling metacopy due to
		// redirect_dir=off"); only both named conflict.
		{"redirect_dir=off turns default metacopy off", "lowerdir=/a,upperdir=/u,workdir=/w,redirect_dir=off",
			Config{Lower: []string{"/a"}, Upper: "/u", Work: "/w", Index: true}},
		{"redirect_dir=nofollow turns default metacopy off", "lowerdir=/a,redirect_dir=nofollow",
			Config{Lower: []string{"/a"}, Index: true}},

		// Options accepted that change nothing.
		{"xino=on", "lowerdir=/a,xino=on", on(Config{Lower: []string{"/a"}})},
		{"xino=off", "lowerdir=/a,xino=off", on(Config{Lower: []string{"/a"}})},
		{"xino=auto", "lowerdir=/a,xino=auto", on(Config{Lower: []string{"/a"}})},
		{"uuid=on", "lowerdir=/a,uuid=on", on(Config{Lower: []string{"/a"}})},
		{"uuid=off", "lowerdir=/a,uuid=off", on(Config{Lower: []string{"/a"}})},
		{"uuid=null", "lowerdir=/a,uuid=null", on(Config{Lower: []string{"/a"}})},
		{"uuid=auto", "lowerdir=/a,uuid=auto", on(Config{Lower: []string{"/a"}})},
		{"volatile", "lowerdir=/a,volatile", on(Config{Lower: []string{"/a"}})},
		{"nfs_export=off", "lowerdir=/a,nfs_export=off", on(Config{Lower: []string{"/a"}})},

		// Escapes.
		{"escaped colon and comma in lowers", `lowerdir=/a\:b:/c\,d:/e\\f`, on(Config{Lower: []string{"/a:b", "/c,d", `/e\f`}})},
		{"escaped backslash before a separator", `lowerdir=/a\\:/b`, on(Config{Lower: []string{`/a\`, "/b"}})},
		{"escapes in upper and work", `lowerdir=/l,upperdir=/u\,1\:x,workdir=/w\\2`,
			on(Config{Lower: []string{"/l"}, Upper: "/u,1:x", Work: `/w\2`})},
		{"equals sign in a value", "lowerdir=/a=b,upperdir=/u=1,workdir=/w", on(Config{Lower: []string{"/a=b"}, Upper: "/u=1", Work: "/w"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(tc.opts)
			if err != nil {
				t.Fatalf("ParseConfig(%q): %v", tc.opts, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseConfig(%q)\n got %+v\nwant %+v", tc.opts, got, tc.want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, opts string
		want       string // a substring of the error
	}{
		{"nothing", "", "lowerdir is required"},
		{"no lowerdir", "upperdir=/u,workdir=/w", "lowerdir is required"},
		{"empty lowerdir", "lowerdir=", "empty layer"},
		{"empty middle layer", "lowerdir=/a::/b", "empty layer"},
		{"empty last layer", "lowerdir=/a:", "empty layer"},
		{"empty first layer", "lowerdir=:/a", "empty layer"},
		{"upper without work", "lowerdir=/a,upperdir=/u", "go together"},
		{"work without upper", "lowerdir=/a,workdir=/w", "go together"},
		{"unknown option", "lowerdir=/a,bogus", `unknown option "bogus"`},
		{"unknown option with value", "lowerdir=/a,bogus=1", `unknown option "bogus"`},
		{"misspelt option", "lowerdir=/a,lowerdirs=/b", "unknown option"},
		{"userxattr with a value", "lowerdir=/a,userxattr=on", "userxattr takes no value"},
		{"bad index", "lowerdir=/a,index=yes", "index="},
		{"index without value", "lowerdir=/a,index", "index="},
		{"bad metacopy", "lowerdir=/a,metacopy=1", "metacopy="},
		{"bad redirect_dir", "lowerdir=/a,redirect_dir=sometimes", "redirect_dir="},
		{"bad xino", "lowerdir=/a,xino=maybe", "xino="},
		{"bad uuid", "lowerdir=/a,uuid=random", "uuid="},
		{"nfs_export on", "lowerdir=/a,nfs_export=on", "nfs_export"},
		{"metacopy=on with redirect_dir=off", "lowerdir=/a,metacopy=on,redirect_dir=off", "metacopy=on needs redirect_dir=on"},
		{"metacopy=on with redirect_dir=follow", "lowerdir=/a,redirect_dir=follow,metacopy=on", "metacopy=on needs redirect_dir=on"},
		{"metacopy=on with redirect_dir=nofollow", "lowerdir=/a,metacopy=on,redirect_dir=nofollow", "metacopy=on needs redirect_dir=on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(tc.opts)
			if err == nil {
				t.Fatalf("ParseConfig(%q) = %+v, want an error", tc.opts, c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig(%q): %v, want an error containing %q", tc.opts, err, tc.want)
			}
		})
	}
}

// TestConfigString checks that String gives options ParseConfig reads back
// to the same Config, escapes included.
func TestConfigString(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{Config{Lower: []string{"/a"}, RedirectDir: true, Index: true, Metacopy: true},
			"lowerdir=/a,redirect_dir=on,index=on,metacopy=on"},
		{Config{Lower: []string{"/l1", "/l2"}, Upper: "/u", Work: "/w"},
			"lowerdir=/l1:/l2,upperdir=/u,workdir=/w,redirect_dir=off,index=off,metacopy=off"},
		{Config{Lower: []string{"/a:b", "/c,d", `/e\f`}, Upper: "/u,1", Work: "/w:2", UserXattr: true, RedirectDir: true},
			`lowerdir=/a\:b:/c\,d:/e\\f,upperdir=/u\,1,workdir=/w\:2,userxattr,redirect_dir=on,index=off,metacopy=off`},
		{Config{Lower: []string{`/x\`, "/y"}, UserXattr: true, Index: true},
			`lowerdir=/x\\:/y,userxattr,redirect_dir=off,index=on,metacopy=off`},
		{Config{Lower: []string{"/a"}, Upper: "/u", Work: "/w", UserXattr: true, RedirectDir: true, Index: true, Metacopy: true},
			"lowerdir=/a,upperdir=/u,workdir=/w,userxattr,redirect_dir=on,index=on,metacopy=on"},
	}
	for _, tc := range tests {
		s := tc.c.String()
		if s != tc.want {
			t.Errorf("String() = %q, want %q", s, tc.want)
		}
		back, err := ParseConfig(s)
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", s, err)
			continue
		}
		if !reflect.DeepEqual(back, tc.c) {
			t.Errorf("round trip of %q\n got %+v\nwant %+v", s, back, tc.c)
		}
	}
}
