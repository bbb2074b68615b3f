// Package vqtest is the driver side of virtqueues for tests: guest memory
// in memfds (as a VMM would have it), and a Driver that lays out split rings,
// builds descriptor chains (direct, indirect, or hand-made hostile ones),
// publishes them and reads the used ring. The virtqueue, vhostuser and
// virtio-fs tests share it. It wraps package vhostuser/frontend, failing
// the test (or panicking) where the library returns errors.
package vqtest

import (
	"fmt"
	"testing"

	"github.com/govirtiofs/govirtiofs/vhostuser/frontend"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// DefaultUserBase is added to a region's guest address to make up its
// frontend ("user") address when a Layout leaves UserAddr zero, so that
// tests notice when the two are confused.
const DefaultUserBase = frontend.DefaultUserBase

// Layout describes one region of test guest memory.
type Layout = frontend.Layout

// Region is one memfd-backed region, mapped in the test process.
type Region = frontend.Region

// Memory is test guest memory: several memfd regions. Its accessors panic
// on addresses outside it.
type Memory struct {
	*frontend.Memory
}

// NewMemory creates memfd regions as laid out; they are closed when the test
// ends.
func NewMemory(tb testing.TB, layout ...Layout) *Memory {
	tb.Helper()
	m, err := frontend.NewMemory(layout...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	return &Memory{m}
}

// Map maps every region into a new backend-side GuestMemory, as the
// vhost-user backend does from the fds it receives.
func (m *Memory) Map(tb testing.TB) *virtqueue.GuestMemory {
	tb.Helper()
	g := virtqueue.NewGuestMemory()
	tb.Cleanup(g.Clear)
	for _, r := range m.Regions {
		reg, err := virtqueue.MapRegion(r.FD, r.Spec)
		if err != nil {
			tb.Fatalf("MapRegion: %v", err)
		}
		if err := g.Add(reg); err != nil {
			reg.Close()
			tb.Fatalf("Add: %v", err)
		}
	}
	return g
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("vqtest: %v", err))
	}
}

// UserAddr translates a guest address to the frontend's address.
func (m *Memory) UserAddr(a virtqueue.GuestAddress) uint64 {
	u, err := m.Memory.UserAddr(a)
	must(err)
	return u
}

// Bytes returns the n bytes at a, which must lie in one region.
func (m *Memory) Bytes(a virtqueue.GuestAddress, n int) []byte {
	b, err := m.Memory.Bytes(a, n)
	must(err)
	return b
}

// Write copies p to a, across regions.
func (m *Memory) Write(a virtqueue.GuestAddress, p []byte) { must(m.Memory.Write(a, p)) }

// Read copies len(p) bytes at a into p, across regions.
func (m *Memory) Read(a virtqueue.GuestAddress, p []byte) { must(m.Memory.Read(a, p)) }

// PutDesc writes one descriptor at a.
func (m *Memory) PutDesc(a virtqueue.GuestAddress, d Desc) { must(m.Memory.PutDesc(a, d)) }

// CopyFrom copies every region's bytes from src, which must have the same
// layout (a migration's RAM copy).
func (m *Memory) CopyFrom(src *Memory) { m.Memory.CopyFrom(src.Memory) }

// CopyPages copies the given 4 KiB guest-physical pages from src (the
// pages a dirty log reported); pages outside guest memory are skipped.
func (m *Memory) CopyPages(src *Memory, pages []uint64) { m.Memory.CopyPages(src.Memory, pages) }

// DiffPages returns the 4 KiB guest-physical pages whose bytes differ
// between m and o, which must have the same layout.
func (m *Memory) DiffPages(o *Memory) []uint64 { return m.Memory.DiffPages(o.Memory) }
