package xattrmap

import (
	"bytes"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// seedRules are valid and malformed rule strings for the fuzzers' corpora.
func seedRules() []string {
	return []string{
		docExample1, docExample1Map, docExample2, docExample2Map, docExample3,
		":prefix:client:trusted.:user.virtiofs.:", ":prefix:server::user.virtiofs.:", ":ok:all:::",
		":unsupported:all:security.:security.: :ok:all:::", "§ok§all§é§ü§", "xokxallxxx",
		"", " ", ":", ":prefix:client:hi", ":TOMATOPIRATE:trusted.:virtiofs.user.:", "/prefix/helloworld///",
		":map:trusted.:virtiofs.user.::map:trusted.:virtiofs.user.:", ":ok:all:::junk", ":ok:all:\x00::", "\xff",
	}
}

// sampleNames returns names worth probing m with: each key and prepend, on
// its own and with something around it, their prefixes, and fixed names.
func sampleNames(m *Map) []string {
	names := []string{"", "a", "user.a", "trusted.a", "security.selinux", "system.posix_acl_access", strings.Repeat("n", NameMax)}
	rules := m.rules
	if len(rules) > 32 {
		rules = rules[:32]
	}
	for _, r := range rules {
		for _, p := range []string{r.key, r.prepend} {
			names = append(names, p, p+"x", "x"+p, p+r.key, p+r.prepend)
			if p != "" {
				names = append(names, p[:len(p)-1])
			}
		}
	}
	return names
}

// FuzzParse checks that Parse never panics, that its errors are one line,
// that String reads back to the same rules, and that every lookup answers
// within its contract.
func FuzzParse(f *testing.F) {
	for _, s := range seedRules() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rules string) {
		m, err := Parse(rules)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error %q is more than one line", err)
			}
			return
		}
		if len(m.rules) == 0 {
			t.Fatal("Parse succeeded with no rules")
		}
		again, err := Parse(m.String())
		if err != nil || !reflect.DeepEqual(again.rules, m.rules) {
			t.Fatalf("Parse(%q) = %q, which reads back as %v, %v", rules, m.String(), again, err)
		}
		for _, n := range sampleNames(m) {
			h, errno := m.ToHost(n)
			switch errno {
			case 0:
				if !strings.HasSuffix(h, n) || len(h) > NameMax && h != n {
					t.Fatalf("ToHost(%q) = %q", n, h)
				}
			case syscall.EPERM, syscall.ENOTSUP, syscall.ERANGE:
				if h != "" {
					t.Fatalf("ToHost(%q) refused with %v but returned %q", n, errno, h)
				}
			default:
				t.Fatalf("ToHost(%q) errno %v", n, errno)
			}
			g, ok := m.ToGuest(n)
			if ok != (g != "") || !strings.HasSuffix(n, g) {
				t.Fatalf("ToGuest(%q) = %q, %v", n, g, ok)
			}
		}
	})
}

// FuzzListToGuest checks ListToGuest against ToGuest applied to each name,
// and that mapping in place gives the same list.
func FuzzListToGuest(f *testing.F) {
	lists := []string{
		"user.virtiofs.user.a\x00security.selinux\x00user.virtiofs.trusted.b\x00user.c\x00",
		"trusted.y\x00user.z\x00", "\x00a\x00\x00b", "", "user.virtiofs.\x00",
	}
	for i, s := range seedRules() {
		f.Add(s, []byte(lists[i%len(lists)]))
	}
	f.Fuzz(func(t *testing.T, rules string, list []byte) {
		m, err := Parse(rules)
		if err != nil {
			return
		}
		var want []byte
		for _, n := range bytes.Split(list, []byte{0}) {
			if g, ok := m.ToGuest(string(n)); ok {
				want = append(append(want, g...), 0)
			}
		}
		got := m.ListToGuest(nil, list)
		if !bytes.Equal(got, want) {
			t.Fatalf("ListToGuest(%q) = %q, want %q", list, got, want)
		}
		if len(got) > len(list)+1 {
			t.Fatalf("ListToGuest(%q) grew to %d bytes", list, len(got))
		}
		buf := append([]byte(nil), list...)
		if inPlace := m.ListToGuest(buf[:0], buf); !bytes.Equal(inPlace, want) {
			t.Fatalf("ListToGuest in place (%q) = %q, want %q", list, inPlace, want)
		}
	})
}
