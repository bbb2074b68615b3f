package fuseproto

import (
	"fmt"
	"testing"
)

// TestNameCache checks that the name cache always returns the name asked
// for, whatever collides in its table, and allocates nothing for a name it
// holds.
func TestNameCache(t *testing.T) {
	var c nameCache
	for round := range 3 {
		for i := range 500 {
			n := fmt.Sprintf("name-%d", (i*7+round)%300)
			if got := c.get([]byte(n)); got != n {
				t.Fatalf("get(%q) = %q", n, got)
			}
		}
	}
	b := []byte("hot-path-file.dat")
	c.get(b)
	if a := testing.AllocsPerRun(100, func() { c.get(b) }); a != 0 {
		t.Errorf("%v allocations per cached name", a)
	}
	if a := testing.AllocsPerRun(100, func() { c.get([]byte("x")) }); a != 0 {
		t.Errorf("%v allocations per one-byte name", a)
	}
}
