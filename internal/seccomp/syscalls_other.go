//go:build !amd64 && !arm64

package seccomp

// No allow-list is kept for this architecture: Install refuses any action
// but None, and Allowed returns nothing.
var (
	arch      archSpec
	allowList []sysEntry
)
