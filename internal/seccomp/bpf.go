package seccomp

import (
	"cmp"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// The filter is classic BPF run by the kernel on struct seccomp_data for
// every system call:
//
//	struct seccomp_data {
//		int   nr;                  // offset 0: the system call number
//		__u32 arch;                // offset 4: AUDIT_ARCH_* of the calling convention
//		__u64 instruction_pointer; // offset 8
//		__u64 args[6];             // offset 16
//	};
//
// The program the kernel runs is
//
//	ld  [4]                        ; arch
//	jeq #AUDIT_ARCH, 1, 0
//	ret #SECCOMP_RET_KILL_PROCESS  ; another ABI (i386 int 0x80 on x86_64, ...)
//	ld  [0]                        ; nr
//	jge #0x40000000, 0, 1          ; x86_64 only: the x32 ABI sets this bit
//	ret #SECCOMP_RET_KILL_PROCESS
//	<search tree over the sorted allowed numbers>
//
// The search tree is a binary search: an inner node is one "jge #pivot"
// whose false branch is the subtree right after it and whose true branch
// is the other subtree further on; a leaf tests up to leafSize numbers with
// "jeq" and ends in its own pair of returns, "ret #action" then
// "ret #SECCOMP_RET_ALLOW". A number allowed with one first argument only
// (unshare(CLONE_FS)) jumps instead to a block after the leaf's returns
// that compares both halves of args[0] and returns its own verdict:
//
//	ld  [16]                       ; low half of args[0] (little-endian)
//	jeq #lo, 0, 2
//	ld  [20]                       ; high half
//	jeq #hi, 1, 0
//	ret #action
//	ret #SECCOMP_RET_ALLOW
//
// Because every leaf carries its own verdicts,
// no jump has to reach a shared verdict at the far end of the program, so
// the 8-bit offsets of conditional jumps suffice whatever the number of
// entries; the one jump that can be long, over a left subtree of more than
// 255 instructions, goes through an unconditional "ja", whose offset has
// 32 bits. A lookup costs about log2(n/leafSize)+leafSize comparisons.

// seccomp_data offsets. The halves of args[0] are those of a little-endian
// machine, which both supported architectures are.
const (
	offNr     = 0
	offArch   = 4
	offArg0Lo = 16
	offArg0Hi = 20
)

// leafSize is the most numbers a leaf of the search tree tests one by one.
const leafSize = 4

// maxInsns is BPF_MAXINSNS, the longest program the kernel loads.
const maxInsns = 4096

// Opcodes of the instructions the filter uses.
const (
	opLdAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS  // A = seccomp_data[k:k+4]
	opJeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K // A == k ? jt : jf
	opJge   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K // A >= k ? jt : jf (unsigned)
	opJa    = unix.BPF_JMP | unix.BPF_JA               // pc += k
	opRet   = unix.BPF_RET | unix.BPF_K                // return k
)

// archSpec describes the calling convention a filter admits.
type archSpec struct {
	// audit is the AUDIT_ARCH_* value the kernel reports in
	// seccomp_data.arch for this convention.
	audit uint32
	// refuseBit, if not zero, is a bit of the system call number that
	// selects another ABI sharing audit (x32 on x86_64, 0x40000000): any
	// number with it set is killed.
	refuseBit uint32
}

func stmt(code uint16, k uint32) unix.SockFilter {
	return unix.SockFilter{Code: code, K: k}
}

func jump(code uint16, k uint32, jt, jf int) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: uint8(jt), Jf: uint8(jf), K: k}
}

// rule allows one system call.
type rule struct {
	nr uint32
	// If hasArg0, the call is allowed only with arg0 as its first
	// argument.
	hasArg0 bool
	arg0    uint64
}

// buildFilter returns the program that allows the calls rules describe (in
// any order, no number twice) in the convention a, answers every other
// call of that convention with deny (a SECCOMP_RET_* value), and kills the
// process on any other convention.
func buildFilter(a archSpec, rules []rule, deny uint32) ([]unix.SockFilter, error) {
	sorted := slices.Clone(rules)
	slices.SortFunc(sorted, func(x, y rule) int { return cmp.Compare(x.nr, y.nr) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].nr == sorted[i-1].nr {
			return nil, fmt.Errorf("seccomp: system call number %d is listed twice", sorted[i].nr)
		}
	}
	prog := []unix.SockFilter{
		stmt(opLdAbs, offArch),
		jump(opJeq, a.audit, 1, 0),
		stmt(opRet, unix.SECCOMP_RET_KILL_PROCESS),
		stmt(opLdAbs, offNr),
	}
	if a.refuseBit != 0 {
		prog = append(prog,
			jump(opJge, a.refuseBit, 0, 1),
			stmt(opRet, unix.SECCOMP_RET_KILL_PROCESS))
		// Numbers at or above the bit never reach the tree, so an
		// allowed one there would be dead and is a mistake in the table.
		if n := len(sorted); n > 0 && sorted[n-1].nr >= a.refuseBit {
			return nil, fmt.Errorf("seccomp: allowed system call number %#x is in the refused range from %#x", sorted[n-1].nr, a.refuseBit)
		}
	}
	prog = append(prog, searchTree(sorted, deny)...)
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("seccomp: the filter has %d instructions, more than the kernel's limit of %d", len(prog), maxInsns)
	}
	return prog, nil
}

// argBlockLen is the length of the block that checks args[0].
const argBlockLen = 6

// searchTree returns the instructions that, with the system call number
// in A, return SECCOMP_RET_ALLOW for a call rules (sorted by number, no
// number twice) allow and deny otherwise.
func searchTree(rules []rule, deny uint32) []unix.SockFilter {
	if len(rules) <= leafSize {
		return leaf(rules, deny)
	}
	mid := len(rules) / 2
	left, right := searchTree(rules[:mid], deny), searchTree(rules[mid:], deny)
	pivot := rules[mid].nr
	var node []unix.SockFilter
	if len(left) <= 255 {
		// A >= pivot: skip the left subtree.
		node = []unix.SockFilter{jump(opJge, pivot, len(left), 0)}
	} else {
		// A >= pivot: fall through to the ja over the left subtree;
		// otherwise skip the ja.
		node = []unix.SockFilter{jump(opJge, pivot, 0, 1), stmt(opJa, uint32(len(left)))}
	}
	node = append(node, left...)
	return append(node, right...)
}

// leaf returns a leaf of the search tree: a jeq per rule, "ret deny",
// "ret ALLOW" (when there are rules), then a block per rule with an
// argument check. Offsets stay below 2+leafSize*(1+argBlockLen), far from
// the 255 a conditional jump can reach.
func leaf(rules []rule, deny uint32) []unix.SockFilter {
	n := len(rules)
	out := make([]unix.SockFilter, 0, n+2)
	blocks := 0
	for i, r := range rules {
		// From the instruction after this jeq, the ALLOW is n-i on;
		// the block of this rule starts argBlockLen per earlier block
		// after that.
		target := n - i
		if r.hasArg0 {
			target += 1 + blocks*argBlockLen
			blocks++
		}
		out = append(out, jump(opJeq, r.nr, target, 0))
	}
	out = append(out, stmt(opRet, deny))
	if n == 0 {
		return out
	}
	out = append(out, stmt(opRet, unix.SECCOMP_RET_ALLOW))
	for _, r := range rules {
		if r.hasArg0 {
			out = append(out,
				stmt(opLdAbs, offArg0Lo),
				jump(opJeq, uint32(r.arg0), 0, 2),
				stmt(opLdAbs, offArg0Hi),
				jump(opJeq, uint32(r.arg0>>32), 1, 0),
				stmt(opRet, deny),
				stmt(opRet, unix.SECCOMP_RET_ALLOW))
		}
	}
	return out
}
