//go:build race

package devfuse

// raceEnabled reports whether the race detector is on; it allocates on its
// own, so allocation counts are only logged under it.
const raceEnabled = true
