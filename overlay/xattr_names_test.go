package overlay

import "testing"

func TestXattrNames(t *testing.T) {
	tr, us := newNames(false), newNames(true)
	if tr.prefix != "trusted.overlay." || tr.opaque != "trusted.overlay.opaque" || tr.whiteout != "trusted.overlay.whiteout" ||
		tr.redirect != "trusted.overlay.redirect" || tr.origin != "trusted.overlay.origin" || tr.impure != "trusted.overlay.impure" ||
		tr.nlink != "trusted.overlay.nlink" || tr.metacopy != "trusted.overlay.metacopy" {
		t.Errorf("trusted names: %+v", tr)
	}
	if us.prefix != "user.overlay." || us.opaque != "user.overlay.opaque" || us.metacopy != "user.overlay.metacopy" ||
		us.redirect != "user.overlay.redirect" || us.origin != "user.overlay.origin" || us.whiteout != "user.overlay.whiteout" {
		t.Errorf("user names: %+v", us)
	}

	tests := []struct {
		user bool
		// guest is the name the guest uses, host what is stored on the
		// layer.
		guest, host string
	}{
		// Outside the overlay's namespace nothing changes.
		{false, "user.foo", "user.foo"},
		{false, "security.selinux", "security.selinux"},
		{false, "trusted.foo", "trusted.foo"},
		{false, "system.posix_acl_access", "system.posix_acl_access"},
		{false, "trusted.overlay", "trusted.overlay"},       // no dot: not the namespace
		{false, "trusted.overlayx.a", "trusted.overlayx.a"}, // a longer word
		{false, "user.overlay.opaque", "user.overlay.opaque"},
		{true, "trusted.overlay.opaque", "trusted.overlay.opaque"},
		{true, "user.foo", "user.foo"},
		// In the namespace: one "overlay." more on the layer.
		{false, "trusted.overlay.opaque", "trusted.overlay.overlay.opaque"},
		{false, "trusted.overlay.foo", "trusted.overlay.overlay.foo"},
		{false, "trusted.overlay.overlay.redirect", "trusted.overlay.overlay.overlay.redirect"},
		{false, "trusted.overlay.", "trusted.overlay.overlay."},
		{true, "user.overlay.opaque", "user.overlay.overlay.opaque"},
		{true, "user.overlay.x.y", "user.overlay.overlay.x.y"},
	}
	for _, tc := range tests {
		n := newNames(tc.user)
		if got := n.escape(tc.guest); got != tc.host {
			t.Errorf("%s escape(%q) = %q, want %q", n.prefix, tc.guest, got, tc.host)
		}
		back, ok := n.unescape(tc.host)
		if !ok || back != tc.guest {
			t.Errorf("%s unescape(%q) = %q, %v, want %q", n.prefix, tc.host, back, ok, tc.guest)
		}
		if n.isPrivate(tc.host) {
			t.Errorf("%s isPrivate(%q) = true for a stored guest name", n.prefix, tc.host)
		}
	}

	private := []struct {
		user    bool
		name    string
		private bool
	}{
		{false, "trusted.overlay.opaque", true},
		{false, "trusted.overlay.redirect", true},
		{false, "trusted.overlay.origin", true},
		{false, "trusted.overlay.impure", true},
		{false, "trusted.overlay.nlink", true},
		{false, "trusted.overlay.metacopy", true},
		{false, "trusted.overlay.whiteout", true},
		{false, "trusted.overlay.upper", true},
		{false, "trusted.overlay.uuid", true},
		{false, "trusted.overlay.protattr", true},
		{false, "trusted.overlay.", true},
		{false, "trusted.overlay.overlay.opaque", false},
		{false, "trusted.overlay.overlay.", false},
		{false, "trusted.overlay", false},
		{false, "user.overlay.opaque", false},
		{false, "user.foo", false},
		{true, "user.overlay.opaque", true},
		{true, "user.overlay.whiteout", true},
		{true, "user.overlay.overlay.opaque", false},
		{true, "trusted.overlay.opaque", false},
		{true, "user.overlayfoo", false},
	}
	for _, tc := range private {
		n := newNames(tc.user)
		if got := n.isPrivate(tc.name); got != tc.private {
			t.Errorf("%s isPrivate(%q) = %v, want %v", n.prefix, tc.name, got, tc.private)
		}
		shown, ok := n.unescape(tc.name)
		if ok == tc.private {
			t.Errorf("%s unescape(%q) = %q, %v: a private name must be hidden, any other shown", n.prefix, tc.name, shown, ok)
		}
		if tc.private && shown != "" {
			t.Errorf("%s unescape(%q) shows %q for a private name", n.prefix, tc.name, shown)
		}
	}
}
