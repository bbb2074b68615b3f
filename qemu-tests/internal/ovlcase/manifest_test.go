package ovlcase

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func file(p, content string, mtime int64) *Entry {
	return &Entry{Path: p, Type: "file", Mode: 0o644, Size: int64(len(content)), Content: content, Nlink: 1, Mtime: mtime}
}

func dir(p string, mtime int64) *Entry {
	return &Entry{Path: p, Type: "dir", Mode: 0o755, Mtime: mtime}
}

func whiteout(p string) *Entry { return &Entry{Path: p, Type: "chr 0:0"} }

func manifest(es ...*Entry) Manifest {
	m := Manifest{}
	for _, e := range es {
		m[e.Path] = e
	}
	return m
}

func TestAuditUpper(t *testing.T) {
	before := manifest(dir(".", 1), dir("a", 1), file("a/kept", "k", 1), file("a/gone", "g", 1),
		dir("b", 1), dir("b/c", 1), file("b/c/f", "f", 1), dir("untouched", 1), file("untouched/x", "x", 1))
	// a/gone deleted, a/new made, b/c/f changed (b and b/c copied up on the way).
	after := manifest(dir(".", 2), dir("a", 2), file("a/kept", "k", 1), file("a/new", "n", 2),
		dir("b", 1), dir("b/c", 1), file("b/c/f", "F", 2), dir("untouched", 1), file("untouched/x", "x", 1))
	clean := []*Entry{dir(".", 2), dir("a", 2), whiteout("a/gone"), file("a/new", "n", 2), dir("b", 1), dir("b/c", 1), file("b/c/f", "F", 2)}
	for _, tc := range []struct {
		name  string
		extra []*Entry
		want  []string // substrings of the problems, in path order
	}{
		{"only the changes", nil, nil},
		{"file copied up unchanged", []*Entry{file("a/kept", "k", 1)}, []string{"a/kept (file): an object the union shows unchanged"}},
		{"directory copied up for nothing", []*Entry{dir("untouched", 1)}, []string{"untouched (dir): a directory the union shows unchanged"}},
		{"whiteout of a shown path", []*Entry{whiteout("untouched/x")}, []string{"untouched/x (chr 0:0): a whiteout of a path the union still shows"}},
		{"whiteout of nothing", []*Entry{whiteout("a/never")}, []string{"a/never (chr 0:0): a whiteout of a path no lower layer shows"}},
		{"object the union hides", []*Entry{file("b/c/tmp", "t", 2)}, []string{"b/c/tmp (file): an object the union does not show"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upper := manifest(append(slices.Clone(clean), tc.extra...)...)
			got := AuditUpper(upper, before, after)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("problem %q, want it to say %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func TestCompareRecent(t *testing.T) {
	a := manifest(file("f", "x", 100), file("g", "y", 5))
	b := manifest(file("f", "x", 200), file("g", "y", 5), dir("d", 1))
	if d := Compare(a, b, 50, 150); len(d) != 1 || d[0].Path != "d" || d[0].Field != "exists" {
		t.Errorf("with thresholds: %v, want only d missing on one side", d)
	}
	d := Compare(a, b, 0, 0)
	if len(d) != 2 || d[1].Path != "f" || d[1].Field != "mtime" {
		t.Errorf("exact: %v, want d's existence and f's mtime", d)
	}
}

func TestWalkEncodeDecode(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d/e/f"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("e/f", filepath.Join(root, "d/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, ManifestDir), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := Walk(root, WalkOptions{Workers: 3, Skip: func(rel string) bool { return rel == ManifestDir }})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Paths(); !slices.Equal(got, []string{".", "d", "d/e", "d/e/f", "d/link"}) {
		t.Fatalf("paths %q", got)
	}
	f := m["d/e/f"]
	if f.Type != "file" || f.Mode != 0o640 || f.Size != 4 ||
		f.Content != "sha256:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7" {
		t.Errorf("d/e/f: %+v", f)
	}
	if l := m["d/link"]; l.Type != "symlink" || l.Content != "e/f" {
		t.Errorf("d/link: %+v", l)
	}
	if d := m["d"]; d.Size != 0 || d.Nlink != 0 || d.Ino != 0 {
		t.Errorf("d: %+v; a directory's size and nlink and the inode belong to raw manifests only", d)
	}
	var buf bytes.Buffer
	if err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(m, back, 0, 0); len(d) != 0 {
		t.Errorf("after encoding and decoding: %v", d)
	}
	raw, err := Walk(root, WalkOptions{Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := raw["d"]; r.Ino == 0 || r.Ctime == 0 || r.Nlink == 0 || !strings.Contains(r.Summary(), "ino=") {
		t.Errorf("raw d: %+v", r)
	}
	if time.Unix(0, raw["d/e/f"].Mtime).Before(time.Now().Add(-time.Minute)) {
		t.Errorf("d/e/f's mtime %v", time.Unix(0, raw["d/e/f"].Mtime))
	}
}
