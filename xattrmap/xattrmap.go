// Package xattrmap translates extended attribute names between the guest
// and the host, as virtiofsd's --xattrmap option defines it (its
// doc/xattr-mapping.md and src/passthrough/xattrmap.rs, version 1.13).
//
// # Rules
//
// A rule string is a sequence of rules, with optional white space before,
// between and after them. The first character of a rule is its separator;
// every field of that rule ends with the same character, and the next rule
// may pick another one:
//
//	:type:scope:key:prepend:
//	:map:key:prepend:
//
// type is prefix, ok, bad or unsupported; scope is client (names the guest
// passes to GETXATTR, SETXATTR and REMOVEXATTR), server (names the host
// lists for LISTXATTR) or all (both). A client rule matches a name that
// starts with key; a server rule matches a name that starts with prepend.
// Either may be empty, which matches every name. The rules are tried in
// order and the first match decides:
//
//	type         client name (ToHost)            server name (ToGuest)
//	prefix       prepend+name goes to the host   prepend is stripped
//	ok           passed unchanged                passed unchanged
//	bad          refused with EPERM              hidden from the list
//	unsupported  refused with ENOTSUP            hidden from the list
//
// A prefix rule keeps key in the name: ":prefix:client:trusted.:user.vm.:"
// turns trusted.x into user.vm.trusted.x, and ":prefix:server::user.vm.:"
// turns user.vm.trusted.x back into trusted.x.
//
// map is shorthand for the common case and must be the last rule (so there
// is at most one). With an empty key, ":map::P:" is
//
//	:prefix:all::P:   :bad:all:::
//
// every guest name is stored under P and host names without P are hidden.
// With a key K, ":map:K:P:" is
//
//	:prefix:all:K:P:   :bad:all:P:K:   :ok:all:::
//
// names starting with K are stored under P, the guest may not reach names
// starting with P directly (EPERM), host names starting with K are hidden,
// and everything else passes unchanged.
//
// # Names no rule matches
//
// virtiofsd's documentation says every name must meet a rule, normally
// through a catch-all last rule such as ":ok:all:::" or ":bad:all:::", but
// virtiofsd 1.13 does not check it when parsing: it panics when it meets a
// name no rule matches. Parse accepts such rule sets too, and a name no rule
// matches is treated as matching a final ":bad:all:::" (refused with EPERM,
// hidden from lists), which is what QEMU's original C virtiofsd did with the
// terminator it appended to every map. Terminated reports whether a map has
// catch-all rules, so that a caller may warn.
//
// # Where this differs from virtiofsd 1.13
//
//   - A server name that a prefix rule strips to nothing (the host name
//     equals prepend) is hidden; virtiofsd lists it as an empty name.
//   - A list whose names are all hidden maps to an empty list; virtiofsd
//     answers a lone NUL byte.
//   - A client name that prefixing makes longer than XATTR_NAME_MAX (255
//     bytes) is refused with ERANGE, as the host would answer.
//   - Rule text is UTF-8 (as on virtiofsd's command line) and keys keep their
//     UTF-8 bytes; virtiofsd keeps only the low byte of each non-ASCII
//     character. A separator may be any character that is not white space.
//
// The errnos a server gives the guest (virtiofsd answers a bad name in
// GETXATTR with ENODATA rather than EPERM) are the caller's business; see
// fuseproto.XattrMapper. So is security.capability: when ToHost moves it
// to another name, the host kernel no longer removes it on write, truncate
// and chown, and virtiofsd removes the mapped name itself then.
//
// A Map is immutable once parsed and safe for concurrent use. Lookups walk
// the rules in order and allocate nothing, except that ToHost allocates the
// prefixed name when a prefix rule applies; ListToGuest can work in place.
package xattrmap

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// NameMax is XATTR_NAME_MAX, the longest extended attribute name Linux
// accepts.
const NameMax = 255

// ruleType is the type field of a rule.
type ruleType uint8

const (
	typePrefix ruleType = iota
	typeOK
	typeBad
	typeUnsupported
	typeMap // only while parsing; expanded before a Map is built
)

var typeNames = [...]string{
	typePrefix:      "prefix",
	typeOK:          "ok",
	typeBad:         "bad",
	typeUnsupported: "unsupported",
	typeMap:         "map",
}

// scope says which direction a rule applies to.
type scope uint8

const (
	scopeClient scope = 1 << iota // guest names: GETXATTR, SETXATTR, REMOVEXATTR
	scopeServer                   // host names: LISTXATTR
	scopeAll    = scopeClient | scopeServer
)

var scopeNames = map[string]scope{"client": scopeClient, "server": scopeServer, "all": scopeAll}

// rule is one expanded rule.
type rule struct {
	typ     ruleType
	scope   scope
	key     string // prefix of client names
	prepend string // prefix of server names; added by a prefix rule
}

func (r rule) String() string {
	sc := "all"
	switch r.scope {
	case scopeClient:
		sc = "client"
	case scopeServer:
		sc = "server"
	}
	fields := [...]string{typeNames[r.typ], sc, r.key, r.prepend}
	d := separator(fields[:])
	var b strings.Builder
	b.WriteString(d)
	for _, f := range fields {
		b.WriteString(f)
		b.WriteString(d)
	}
	return b.String()
}

// separator returns a separator that occurs in none of fields.
func separator(fields []string) string {
	for _, c := range ":/|,;#!@%=+~" {
		if !anyContains(fields, string(c)) {
			return string(c)
		}
	}
	// Fields are valid UTF-8 of finite length, so some private-use
	// character is missing from all of them.
	for c := rune(0xE000); ; c++ {
		if s := string(c); !anyContains(fields, s) {
			return s
		}
	}
}

func anyContains(fields []string, sep string) bool {
	for _, f := range fields {
		if strings.Contains(f, sep) {
			return true
		}
	}
	return false
}

// Map is a parsed rule set. A nil *Map must not be used; a caller without
// rules passes names through itself.
type Map struct {
	rules []rule // expanded, in the order they are tried
}

// Parse parses a rule string as virtiofsd's --xattrmap takes it. A
// malformed string returns a one-line error naming the rule (counted from
// 1) that is wrong.
func Parse(rules string) (*Map, error) {
	if !utf8.ValidString(rules) {
		return nil, errors.New("rules are not valid UTF-8")
	}
	m := &Map{}
	s := strings.TrimLeftFunc(rules, unicode.IsSpace)
	for n := 1; s != ""; n++ {
		r, rest, err := parseRule(s)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %v", n, err)
		}
		s = strings.TrimLeftFunc(rest, unicode.IsSpace)
		if r.typ != typeMap {
			m.rules = append(m.rules, r)
			continue
		}
		if s != "" {
			return nil, fmt.Errorf("rule %d: a map rule must be the last rule", n)
		}
		m.rules = append(m.rules, expandMap(r.key, r.prepend)...)
	}
	if len(m.rules) == 0 {
		return nil, errors.New("no rules")
	}
	return m, nil
}

// parseRule parses the rule at the start of s, which begins with its
// separator, and returns it with the text after it.
func parseRule(s string) (rule, string, error) {
	_, w := utf8.DecodeRuneInString(s)
	sep, rest := s[:w], s[w:]
	next := func() (string, bool) {
		i := strings.Index(rest, sep)
		if i < 0 {
			return "", false
		}
		f := rest[:i]
		rest = rest[i+len(sep):]
		return f, true
	}
	incomplete := func(form string) error {
		return fmt.Errorf("%q is incomplete: want %s", s, strings.ReplaceAll(form, ":", sep))
	}
	const form = ":type:scope:key:prepend: or :map:key:prepend:"
	t, ok := next()
	if !ok {
		return rule{}, "", incomplete(form)
	}
	var r rule
	switch t {
	case "prefix":
		r.typ = typePrefix
	case "ok":
		r.typ = typeOK
	case "bad":
		r.typ = typeBad
	case "unsupported":
		r.typ = typeUnsupported
	case "map":
		r.typ, r.scope = typeMap, scopeAll
	default:
		return rule{}, "", fmt.Errorf("unknown type %q (want prefix, ok, bad, unsupported or map)", t)
	}
	if r.typ != typeMap {
		sc, ok := next()
		if !ok {
			return rule{}, "", incomplete(":" + t + ":scope:key:prepend:")
		}
		if r.scope = scopeNames[sc]; r.scope == 0 {
			return rule{}, "", fmt.Errorf("unknown scope %q (want client, server or all)", sc)
		}
	}
	if r.key, ok = next(); !ok {
		return rule{}, "", incomplete(fieldsForm(r.typ))
	}
	if r.prepend, ok = next(); !ok {
		return rule{}, "", incomplete(fieldsForm(r.typ))
	}
	if strings.IndexByte(r.key, 0) >= 0 || strings.IndexByte(r.prepend, 0) >= 0 {
		return rule{}, "", errors.New("a name prefix contains a NUL byte")
	}
	return r, rest, nil
}

func fieldsForm(t ruleType) string {
	if t == typeMap {
		return ":map:key:prepend:"
	}
	return ":" + typeNames[t] + ":scope:key:prepend:"
}

// expandMap returns the rules ":map:key:prepend:" stands for.
func expandMap(key, prepend string) []rule {
	if key == "" {
		return []rule{
			{typ: typePrefix, scope: scopeAll, prepend: prepend},
			{typ: typeBad, scope: scopeAll},
		}
	}
	return []rule{
		{typ: typePrefix, scope: scopeAll, key: key, prepend: prepend},
		// The guest may not name the prefixed names directly, and
		// unprefixed host names in the mapped range stay hidden.
		{typ: typeBad, scope: scopeAll, key: prepend, prepend: key},
		{typ: typeOK, scope: scopeAll},
	}
}

// String returns the expanded rules, each with a separator that occurs in
// none of its fields, separated by spaces; Parse reads it back to an equal
// Map.
func (m *Map) String() string {
	parts := make([]string, len(m.rules))
	for i, r := range m.rules {
		parts[i] = r.String()
	}
	return strings.Join(parts, " ")
}

// Terminated reports whether every name meets a rule written in the map: a
// client-scope rule with an empty key and a server-scope rule with an empty
// prepend exist. Names of a map that is not terminated may fall through to
// the implicit ":bad:all:::".
func (m *Map) Terminated() bool {
	var seen scope
	for _, r := range m.rules {
		if r.key == "" {
			seen |= r.scope & scopeClient
		}
		if r.prepend == "" {
			seen |= r.scope & scopeServer
		}
	}
	return seen == scopeAll
}

// hasPrefix is strings.HasPrefix for a string or a byte slice, without
// converting (and so allocating) the slice.
func hasPrefix[T string | []byte](name T, prefix string) bool {
	return len(name) >= len(prefix) && string(name[:len(prefix)]) == prefix
}

// match returns the first rule of scope sc that name matches, or nil.
func match[T string | []byte](m *Map, sc scope, name T) *rule {
	for i := range m.rules {
		r := &m.rules[i]
		if r.scope&sc == 0 {
			continue
		}
		p := r.key
		if sc == scopeServer {
			p = r.prepend
		}
		if hasPrefix(name, p) {
			return r
		}
	}
	return nil
}

// ToHost maps a name the guest passes to GETXATTR, SETXATTR or REMOVEXATTR
// (or as a new file's security context) to the name to use on the host, by
// the first client-scope rule whose key starts it. It returns errno 0 with
// the name, or an errno to refuse the request with: EPERM for a bad rule or
// a name no rule matches, ENOTSUP for an unsupported rule, ERANGE when the
// prefixed name would exceed NameMax. It allocates only the prefixed name.
func (m *Map) ToHost(name string) (string, syscall.Errno) {
	r := match(m, scopeClient, name)
	if r == nil {
		return "", syscall.EPERM
	}
	switch r.typ {
	case typeOK:
		return name, 0
	case typePrefix:
		if len(r.prepend)+len(name) > NameMax {
			return "", syscall.ERANGE
		}
		return r.prepend + name, 0
	case typeUnsupported:
		return "", syscall.ENOTSUP
	default:
		return "", syscall.EPERM
	}
}

// ToGuest maps a name the host lists to the name the guest sees, by the
// first server-scope rule whose prepend starts it; ok false means the guest
// must not see it (a bad or unsupported rule, no rule, or a name that
// stripping leaves empty). The result is a substring of name.
func (m *Map) ToGuest(name string) (string, bool) {
	return toGuest(m, name)
}

func toGuest[T string | []byte](m *Map, name T) (T, bool) {
	r := match(m, scopeServer, name)
	if r == nil {
		return name[:0], false
	}
	switch r.typ {
	case typeOK:
		return name, len(name) > 0
	case typePrefix:
		g := name[len(r.prepend):]
		return g, len(g) > 0
	default:
		return name[:0], false
	}
}

// ListToGuest maps list, a listxattr(2) result (names each ended by a NUL
// byte; a last name without one is taken as ended), to what the guest sees
// and appends it to dst: each name mapped by ToGuest, hidden names left out,
// empty names skipped, every name ended by a NUL byte. Hiding or stripping
// never makes a name longer, so dst may be list[:0] to map in place; only a
// last name without its NUL can make the result one byte longer than list.
// It allocates nothing when dst has room.
func (m *Map) ListToGuest(dst, list []byte) []byte {
	for len(list) > 0 {
		var name []byte
		if i := bytes.IndexByte(list, 0); i >= 0 {
			name, list = list[:i], list[i+1:]
		} else {
			name, list = list, nil
		}
		if g, ok := toGuest(m, name); ok {
			dst = append(dst, g...)
			dst = append(dst, 0)
		}
	}
	return dst
}
