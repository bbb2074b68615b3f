package xattrmap

import (
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// The examples of virtiofsd's doc/xattr-mapping.md, as written there.
const (
	docExample1    = ":prefix:all::user.virtiofs.::bad:all:::"
	docExample1Map = ":map::user.virtiofs.:"
	docExample2    = `/prefix/all/trusted./user.virtiofs./
            /bad/server//trusted./
            /bad/client/user.virtiofs.//
            /ok/all///`
	docExample2Map = "/map/trusted./user.virtiofs./"
	docExample3    = `/bad/all/security./security./
            /ok/all///`
)

func mustParse(t testing.TB, s string) *Map {
	t.Helper()
	m, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return m
}

func TestParse(t *testing.T) {
	all := func(typ ruleType, key, prepend string) rule {
		return rule{typ: typ, scope: scopeAll, key: key, prepend: prepend}
	}
	tests := []struct {
		name  string
		rules string
		want  []rule
	}{
		{"prefix client", ":prefix:client:trusted.:user.virtiofs.:",
			[]rule{{typ: typePrefix, scope: scopeClient, key: "trusted.", prepend: "user.virtiofs."}}},
		{"prefix server", ":prefix:server::user.virtiofs.:",
			[]rule{{typ: typePrefix, scope: scopeServer, prepend: "user.virtiofs."}}},
		{"prefix all", ":prefix:all:trusted.:user.virtiofs.:", []rule{all(typePrefix, "trusted.", "user.virtiofs.")}},
		{"ok client", ":ok:client:user.::", []rule{{typ: typeOK, scope: scopeClient, key: "user."}}},
		{"ok server", ":ok:server::security.:", []rule{{typ: typeOK, scope: scopeServer, prepend: "security."}}},
		{"ok all", ":ok:all:::", []rule{all(typeOK, "", "")}},
		{"bad server", ":bad:server::security.:", []rule{{typ: typeBad, scope: scopeServer, prepend: "security."}}},
		{"unsupported", ":unsupported:client:system.::", []rule{{typ: typeUnsupported, scope: scopeClient, key: "system."}}},
		{"doc example 1", docExample1, []rule{all(typePrefix, "", "user.virtiofs."), all(typeBad, "", "")}},
		{"doc example 1 as map", docExample1Map, []rule{all(typePrefix, "", "user.virtiofs."), all(typeBad, "", "")}},
		{"doc example 2", docExample2, []rule{
			all(typePrefix, "trusted.", "user.virtiofs."),
			{typ: typeBad, scope: scopeServer, prepend: "trusted."},
			{typ: typeBad, scope: scopeClient, key: "user.virtiofs."},
			all(typeOK, "", ""),
		}},
		{"doc example 2 as map", docExample2Map, []rule{
			all(typePrefix, "trusted.", "user.virtiofs."),
			all(typeBad, "user.virtiofs.", "trusted."),
			all(typeOK, "", ""),
		}},
		{"doc example 3", docExample3, []rule{all(typeBad, "security.", "security."), all(typeOK, "", "")}},
		{"map after other rules", ":ok:all:security.:security.: :map::user.vm.:",
			[]rule{all(typeOK, "security.", "security."), all(typePrefix, "", "user.vm."), all(typeBad, "", "")}},
		{"separator per rule", ":prefix:all:a:b: /ok/all/// |bad|client|x||",
			[]rule{all(typePrefix, "a", "b"), all(typeOK, "", ""), {typ: typeBad, scope: scopeClient, key: "x"}}},
		{"separator inside another rule's fields", "/ok/all/a:b/c:d/ :ok:all:a/b:c/d:",
			[]rule{all(typeOK, "a:b", "c:d"), all(typeOK, "a/b", "c/d")}},
		{"letter separator", "xokxallxxx", []rule{all(typeOK, "", "")}},
		{"non-ASCII separator", "§ok§all§é§ü§", []rule{all(typeOK, "é", "ü")}},
		{"white space around and between", " \t\n:ok:client:::\r\n\t:bad:server:::  \n",
			[]rule{{typ: typeOK, scope: scopeClient}, {typ: typeBad, scope: scopeServer}}},
		{"no terminator", ":prefix:client:trusted.:user.vm.:",
			[]rule{{typ: typePrefix, scope: scopeClient, key: "trusted.", prepend: "user.vm."}}},
		{"key with spaces", ":ok:all: a b : c :", []rule{all(typeOK, " a b ", " c ")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.rules)
			if !reflect.DeepEqual(m.rules, tt.want) {
				t.Errorf("Parse(%q) = %s\nwant %s", tt.rules, m, &Map{rules: tt.want})
			}
			// String reads back to the same rules.
			again := mustParse(t, m.String())
			if !reflect.DeepEqual(again.rules, m.rules) {
				t.Errorf("Parse(String()) = %s, want %s", again, m)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		want  string // substring of the error
	}{
		{"empty", "", "no rules"},
		{"white space only", " \n\t ", "no rules"},
		{"incomplete", ":prefix:client:hi", `rule 1: ":prefix:client:hi" is incomplete: want :prefix:scope:key:prepend:`},
		{"no closing separator", ":ok:all::", "is incomplete"},
		{"separator only", ":", `rule 1: ":" is incomplete: want :type:scope:key:prepend: or :map:key:prepend:`},
		{"type only", "/ok", `want /type/scope/key/prepend/ or /map/key/prepend/`},
		{"type without scope", ":prefix:", "want :prefix:scope:key:prepend:"},
		{"map incomplete", ":map::", "want :map:key:prepend:"},
		{"unknown type", ":TOMATOPIRATE:trusted.:virtiofs.user.:", `rule 1: unknown type "TOMATOPIRATE" (want prefix, ok, bad, unsupported or map)`},
		{"type is case-sensitive", ":OK:all:::", `unknown type "OK"`},
		{"empty type", "::all:::", `unknown type ""`},
		{"white space in type", ": ok :all:::", `unknown type " ok "`},
		{"unknown scope", "/prefix/helloworld///", `rule 1: unknown scope "helloworld" (want client, server or all)`},
		{"scope is case-sensitive", ":ok:ALL:::", `unknown scope "ALL"`},
		{"map has no scope", ":map:all:a:b:", "rule 1: a map rule must be the last rule"},
		{"two maps", ":map:trusted.:virtiofs.user.::map:trusted.:virtiofs.user.:", "rule 1: a map rule must be the last rule"},
		{"map before another rule", ":map::user.vm.: :ok:all:::", "rule 1: a map rule must be the last rule"},
		{"second rule incomplete", ":ok:all::: :map:x:", `rule 2: ":map:x:" is incomplete`},
		{"trailing text", ":ok:all:::junk", `rule 2: "junk" is incomplete`},
		{"mixed separators", ":ok:all:a::b:", `rule 2: "b:" is incomplete`},
		{"third rule", ":ok:client::: :ok:server::: :frob:all:::", "rule 3: unknown type"},
		{"invalid UTF-8", ":ok:all:\xff::", "not valid UTF-8"},
		{"NUL in key", ":ok:all:a\x00b::", "rule 1: a name prefix contains a NUL byte"},
		{"NUL in prepend", ":ok:all::\x00:", "NUL byte"},
		{"multi-line incomplete", ":ok:all:::\n:bad:all:\n", `rule 2: ":bad:all:\n" is incomplete`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.rules)
			if err == nil {
				t.Fatalf("Parse(%q) = %s, want an error containing %q", tt.rules, m, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error %q, want it to contain %q", tt.rules, err, tt.want)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

// host and guest are expectations for ToHost and ToGuest.
type host struct {
	name  string
	want  string
	errno syscall.Errno
}

type guest struct {
	name string
	want string // "" hidden
}

func TestMapping(t *testing.T) {
	long := strings.Repeat("n", NameMax-len("user.")) // user.+long is NameMax bytes
	tests := []struct {
		name  string
		rules string
		host  []host
		guest []guest
	}{
		{"doc: prefix client", ":prefix:client:trusted.:user.virtiofs.:",
			[]host{{"trusted.x", "user.virtiofs.trusted.x", 0}, {"trusted.", "user.virtiofs.trusted.", 0},
				{"user.x", "", syscall.EPERM}}, // no rule: implicit bad
			[]guest{{"user.virtiofs.trusted.x", ""}, {"trusted.x", ""}}}, // no server rule at all
		{"doc: prefix server", ":prefix:server::user.virtiofs.:",
			[]host{{"trusted.x", "", syscall.EPERM}},
			[]guest{{"user.virtiofs.trusted.x", "trusted.x"}, {"user.virtiofs.a", "a"}, {"user.other", ""},
				{"user.virtiofs.", ""}}}, // stripped to nothing: hidden
		{"doc: prefix all", ":prefix:all:trusted.:user.virtiofs.:",
			[]host{{"trusted.x", "user.virtiofs.trusted.x", 0}, {"user.x", "", syscall.EPERM}},
			[]guest{{"user.virtiofs.trusted.x", "trusted.x"}, {"trusted.x", ""}}},
		{"doc: ok client", ":ok:client:user.::",
			[]host{{"user.x", "user.x", 0}, {"trusted.x", "", syscall.EPERM}},
			[]guest{{"user.x", ""}}},
		{"doc: ok server", ":ok:server::security.:",
			[]host{{"security.selinux", "", syscall.EPERM}},
			[]guest{{"security.selinux", "security.selinux"}, {"user.x", ""}}},
		{"doc: ok all", ":ok:all:::",
			[]host{{"user.x", "user.x", 0}, {"security.selinux", "security.selinux", 0}},
			[]guest{{"user.x", "user.x"}, {"trusted.x", "trusted.x"}}},
		{"doc: bad server", ":bad:server::security.: :ok:all:::",
			[]host{{"security.selinux", "security.selinux", 0}},
			[]guest{{"security.selinux", ""}, {"security.", ""}, {"user.x", "user.x"}}},
		{"bad client is EPERM", ":bad:client:trusted.:: :ok:all:::",
			[]host{{"trusted.x", "", syscall.EPERM}, {"user.x", "user.x", 0}},
			[]guest{{"trusted.x", "trusted.x"}}},
		{"unsupported", ":unsupported:all:security.:security.: :ok:all:::",
			[]host{{"security.selinux", "", syscall.ENOTSUP}, {"user.x", "user.x", 0}},
			[]guest{{"security.selinux", ""}, {"user.x", "user.x"}}},
		{"first match wins", ":ok:all:user.a:user.a: :bad:all:user.:user.: :prefix:all::p.:",
			[]host{{"user.ab", "user.ab", 0}, {"user.b", "", syscall.EPERM}, {"trusted.x", "p.trusted.x", 0}},
			[]guest{{"user.ab", "user.ab"}, {"user.b", ""}, {"p.user.b", "user.b"}, {"q", ""}}},
		{"client and server match different fields", ":prefix:all:k.:p.: :ok:all:::",
			// ToGuest strips p. whatever follows; ToHost keys on k.
			[]host{{"p.x", "p.x", 0}, {"k.x", "p.k.x", 0}},
			[]guest{{"p.x", "x"}, {"p.k.x", "k.x"}, {"k.x", "k.x"}}},
		{"key longer than the name", ":ok:client:user.long.:: :bad:all:::",
			[]host{{"user.", "", syscall.EPERM}, {"user.long.", "user.long.", 0}},
			nil},
		{"prefixed name too long", ":prefix:all::user.:",
			[]host{{long, "user." + long, 0}, {long + "n", "", syscall.ERANGE}},
			nil},
		{"doc example 1", docExample1,
			[]host{{"trusted.x", "user.virtiofs.trusted.x", 0}, {"user.virtiofs.x", "user.virtiofs.user.virtiofs.x", 0},
				{"security.selinux", "user.virtiofs.security.selinux", 0}},
			[]guest{{"user.virtiofs.security.selinux", "security.selinux"}, {"security.selinux", ""}, {"user.x", ""}}},
		{"doc example 2", docExample2,
			[]host{{"trusted.x", "user.virtiofs.trusted.x", 0}, {"user.virtiofs.x", "", syscall.EPERM},
				{"user.x", "user.x", 0}, {"security.selinux", "security.selinux", 0}},
			[]guest{{"user.virtiofs.trusted.x", "trusted.x"}, {"trusted.x", ""}, {"user.x", "user.x"},
				{"user.virtiofs.other", "other"}}},
		{"doc example 3", docExample3,
			[]host{{"security.selinux", "", syscall.EPERM}, {"user.x", "user.x", 0}},
			[]guest{{"security.selinux", ""}, {"user.x", "user.x"}}},
		{"map with empty key", docExample1Map,
			[]host{{"user.x", "user.virtiofs.user.x", 0}, {"system.posix_acl_access", "user.virtiofs.system.posix_acl_access", 0}},
			[]guest{{"user.virtiofs.user.x", "user.x"}, {"user.x", ""}, {"security.selinux", ""}}},
		{"map with key", docExample2Map,
			[]host{{"trusted.x", "user.virtiofs.trusted.x", 0}, {"user.virtiofs.x", "", syscall.EPERM},
				{"user.x", "user.x", 0}},
			[]guest{{"user.virtiofs.trusted.x", "trusted.x"}, {"trusted.x", ""}, {"user.x", "user.x"}}},
		{"acl names are not special", ":prefix:all:system.posix_acl_:user.acl.: :ok:all:::",
			[]host{{"system.posix_acl_access", "user.acl.system.posix_acl_access", 0}},
			[]guest{{"user.acl.system.posix_acl_default", "system.posix_acl_default"}, {"system.posix_acl_access", "system.posix_acl_access"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.rules)
			for _, h := range tt.host {
				got, errno := m.ToHost(h.name)
				if got != h.want || errno != h.errno {
					t.Errorf("ToHost(%q) = %q, %v; want %q, %v", h.name, got, errno, h.want, h.errno)
				}
			}
			for _, g := range tt.guest {
				got, ok := m.ToGuest(g.name)
				if got != g.want || ok != (g.want != "") {
					t.Errorf("ToGuest(%q) = %q, %v; want %q", g.name, got, ok, g.want)
				}
			}
		})
	}
}

// TestMapShorthand checks the documented equivalences of map rules and
// their long forms by what they do.
func TestMapShorthand(t *testing.T) {
	names := []string{"", "a", "user.", "user.x", "user.virtiofs.", "user.virtiofs.x", "user.virtiofs.trusted.x",
		"user.virtiofs.user.virtiofs.x", "trusted.", "trusted.x", "security.selinux", "system.posix_acl_access"}
	for _, pair := range [][2]string{{docExample1Map, docExample1}, {docExample2Map, docExample2}} {
		short, long := mustParse(t, pair[0]), mustParse(t, pair[1])
		for _, n := range names {
			h1, e1 := short.ToHost(n)
			h2, e2 := long.ToHost(n)
			if h1 != h2 || e1 != e2 {
				t.Errorf("%q: ToHost(%q) = %q, %v; %q gives %q, %v", pair[0], n, h1, e1, pair[1], h2, e2)
			}
			g1, ok1 := short.ToGuest(n)
			g2, ok2 := long.ToGuest(n)
			if g1 != g2 || ok1 != ok2 {
				t.Errorf("%q: ToGuest(%q) = %q, %v; %q gives %q, %v", pair[0], n, g1, ok1, pair[1], g2, ok2)
			}
		}
	}
}

func TestListToGuest(t *testing.T) {
	tests := []struct {
		name  string
		rules string
		list  string
		want  string
	}{
		{"map with empty key", docExample1Map,
			"user.virtiofs.user.a\x00security.selinux\x00user.virtiofs.trusted.b\x00user.c\x00",
			"user.a\x00trusted.b\x00"},
		{"doc example 2", docExample2,
			"user.virtiofs.trusted.x\x00trusted.y\x00user.z\x00security.selinux\x00",
			"trusted.x\x00user.z\x00security.selinux\x00"},
		{"bad hides", ":bad:server::security.: :ok:all:::", "security.secret\x00boring_attr\x00", "boring_attr\x00"},
		{"unsupported hides", ":unsupported:server::security.: :ok:all:::", "security.secret\x00boring_attr\x00", "boring_attr\x00"},
		{"prefix strips", ":prefix:server::virtiofs.user.:", "virtiofs.user.x\x00", "x\x00"},
		{"ok keeps", ":ok:all:allow.:allow.:", "allow.y\x00deny.z\x00", "allow.y\x00"},
		{"last name without NUL", ":ok:all:::", "a\x00b", "a\x00b\x00"},
		{"empty names skipped", ":ok:all:::", "\x00a\x00\x00b\x00", "a\x00b\x00"},
		{"stripped to nothing", ":prefix:all::user.vm.:", "user.vm.\x00user.vm.a\x00", "a\x00"},
		{"empty list", ":ok:all:::", "", ""},
		{"all hidden", docExample1Map, "user.a\x00security.selinux\x00", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParse(t, tt.rules)
			if got := string(m.ListToGuest(nil, []byte(tt.list))); got != tt.want {
				t.Errorf("ListToGuest(%q) = %q, want %q", tt.list, got, tt.want)
			}
			// In place, with no spare capacity.
			buf := []byte(tt.list)
			if got := string(m.ListToGuest(buf[:0:len(buf)], buf)); got != tt.want {
				t.Errorf("ListToGuest in place (%q) = %q, want %q", tt.list, got, tt.want)
			}
			// Appending after what dst holds.
			if got := string(m.ListToGuest([]byte("x\x00"), []byte(tt.list))); got != "x\x00"+tt.want {
				t.Errorf("ListToGuest after x = %q, want %q", got, "x\x00"+tt.want)
			}
		})
	}
}

func TestTerminated(t *testing.T) {
	for _, tt := range []struct {
		rules string
		want  bool
	}{
		{":ok:all:::", true},
		{":bad:all:::", true},
		{":unsupported:all:::", true},
		{":prefix:all::user.vm.:", false}, // server names without user.vm. meet no rule
		{docExample1, true},
		{docExample1Map, true},
		{docExample2, true},
		{docExample2Map, true},
		{docExample3, true},
		{":ok:client::: :ok:server:::", true},
		{":prefix:all::p.: :ok:client:::", false},
		{":prefix:client:trusted.:user.vm.:", false},
		{":ok:client:::", false},
		{":ok:server:::", false},
		{":ok:all:a:: :ok:all::b:", true},
	} {
		if got := mustParse(t, tt.rules).Terminated(); got != tt.want {
			t.Errorf("Parse(%q).Terminated() = %v, want %v", tt.rules, got, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	for _, tt := range []struct {
		rules, want string
	}{
		{docExample1Map, ":prefix:all::user.virtiofs.: :bad:all:::"},
		{docExample2Map, ":prefix:all:trusted.:user.virtiofs.: :bad:all:user.virtiofs.:trusted.: :ok:all:::"},
		{"/ok/client/a:b//", "/ok/client/a:b//"},
		{"§ok§server§§:/|,;#!@%=+~§", "\ue000ok\ue000server\ue000\ue000:/|,;#!@%=+~\ue000"},
	} {
		m := mustParse(t, tt.rules)
		if got := m.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.rules, got, tt.want)
		}
	}
}

func TestAllocs(t *testing.T) {
	m := mustParse(t, ":ok:all:user.:user.: :bad:all:security.:security.: :map:trusted.:user.virtiofs.:")
	list := []byte("user.a\x00security.selinux\x00user.virtiofs.trusted.b\x00trusted.c\x00system.posix_acl_access\x00")
	buf := make([]byte, len(list))
	for _, tt := range []struct {
		name string
		want float64
		f    func()
	}{
		{"ToHost ok", 0, func() { m.ToHost("user.a") }},
		{"ToHost bad", 0, func() { m.ToHost("security.selinux") }},
		{"ToHost prefix", 1, func() { m.ToHost("trusted.a") }},
		{"ToGuest", 0, func() { m.ToGuest("user.virtiofs.trusted.b") }},
		{"ListToGuest in place", 0, func() {
			copy(buf, list)
			m.ListToGuest(buf[:0], buf)
		}},
	} {
		if got := testing.AllocsPerRun(100, tt.f); got != tt.want {
			t.Errorf("%s: %v allocations, want %v", tt.name, got, tt.want)
		}
	}
}

func BenchmarkToHost(b *testing.B) {
	m := mustParse(b, docExample2)
	b.ReportAllocs()
	for b.Loop() {
		m.ToHost("user.some.attribute")
	}
}

func BenchmarkListToGuest(b *testing.B) {
	m := mustParse(b, docExample2)
	list := []byte(strings.Repeat("user.virtiofs.trusted.x\x00trusted.y\x00user.z\x00security.selinux\x00", 16))
	buf := make([]byte, len(list))
	b.ReportAllocs()
	b.SetBytes(int64(len(list)))
	for b.Loop() {
		copy(buf, list)
		m.ListToGuest(buf[:0], buf)
	}
}
