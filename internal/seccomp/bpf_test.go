package seccomp

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data as the filter sees it.
type seccompData struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

// bytes lays d out as the kernel does on a little-endian machine.
func (d seccompData) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], d.nr)
	binary.LittleEndian.PutUint32(b[4:], d.arch)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// checkProgram makes the static checks the kernel makes on a seccomp
// filter (bpf_check_classic and seccomp_check_filter) for the instructions
// the builder uses: a length of 1 to 4096, known opcodes, aligned loads
// inside seccomp_data, every jump landing inside the program, and a return
// as the last instruction.
func checkProgram(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("length %d", len(prog))
	}
	for pc, in := range prog {
		switch in.Code {
		case opLdAbs:
			if in.K >= 64 || in.K%4 != 0 {
				return fmt.Errorf("pc %d: load at offset %d", pc, in.K)
			}
		case opJeq, opJge:
			if pc+1+int(in.Jt) >= len(prog) || pc+1+int(in.Jf) >= len(prog) {
				return fmt.Errorf("pc %d: jump jt %d jf %d past the end (%d)", pc, in.Jt, in.Jf, len(prog))
			}
		case opJa:
			if uint64(pc)+1+uint64(in.K) >= uint64(len(prog)) {
				return fmt.Errorf("pc %d: ja %d past the end (%d)", pc, in.K, len(prog))
			}
		case opRet:
		default:
			return fmt.Errorf("pc %d: opcode %#x", pc, in.Code)
		}
	}
	if prog[len(prog)-1].Code != opRet {
		return fmt.Errorf("last instruction %#x is not a return", prog[len(prog)-1].Code)
	}
	return nil
}

// runBPF runs prog on d as the kernel would and returns the verdict, and
// how many instructions ran.
func runBPF(prog []unix.SockFilter, d seccompData) (verdict uint32, steps int, err error) {
	data := d.bytes()
	var a uint32
	for pc := 0; ; {
		if pc < 0 || pc >= len(prog) {
			return 0, steps, fmt.Errorf("pc %d outside the program (%d instructions)", pc, len(prog))
		}
		steps++
		in := prog[pc]
		pc++
		switch in.Code {
		case opLdAbs:
			if in.K+4 > uint32(len(data)) {
				return 0, steps, fmt.Errorf("load at %d", in.K)
			}
			a = binary.LittleEndian.Uint32(data[in.K:])
		case opJeq:
			if a == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case opJge:
			if a >= in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case opJa:
			pc += int(in.K)
		case opRet:
			return in.K, steps, nil
		default:
			return 0, steps, fmt.Errorf("pc %d: unknown opcode %#x", pc-1, in.Code)
		}
	}
}

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retDeny  = unix.SECCOMP_RET_ERRNO | 1 // a verdict distinct from every other
	testArch = unix.AUDIT_ARCH_X86_64
)

// ruleSet returns rules allowing nrs, with arg0 restrictions for the
// numbers in args.
func ruleSet(nrs []uint32, args map[uint32]uint64) []rule {
	rules := make([]rule, len(nrs))
	for i, nr := range nrs {
		rules[i] = rule{nr: nr}
		if v, ok := args[nr]; ok {
			rules[i].hasArg0, rules[i].arg0 = true, v
		}
	}
	return rules
}

// verify runs prog on every number up to past the largest allowed, on
// boundary values and on another arch, and reports the first verdict that
// differs from what rules and spec say. It returns the longest run.
func verify(prog []unix.SockFilter, spec archSpec, rules []rule) (int, error) {
	want := map[uint32]rule{}
	// Every number up to past the largest allowed one below 1<<16, the
	// allowed ones and their neighbours above, and boundaries.
	var top uint32
	nrs := []uint32{0xffffffff, 0x7fffffff, 0x80000000, 0x3fffffff, 0x40000000, 0x40000000 | 39}
	for _, r := range rules {
		want[r.nr] = r
		if r.nr < 1<<16 {
			top = max(top, r.nr)
		} else {
			nrs = append(nrs, r.nr-1, r.nr, r.nr+1)
		}
	}
	for nr := uint32(0); nr <= top+16; nr++ {
		nrs = append(nrs, nr)
	}
	longest := 0
	for _, nr := range nrs {
		r, allowed := want[nr]
		d := seccompData{nr: nr, arch: spec.audit}
		expect := uint32(retDeny)
		switch {
		case spec.refuseBit != 0 && nr >= spec.refuseBit:
			expect = retKill
		case allowed && !r.hasArg0:
			expect = retAllow
		case allowed:
			d.args[0] = r.arg0
			expect = retAllow
		}
		got, steps, err := runBPF(prog, d)
		longest = max(longest, steps)
		if err != nil || got != expect {
			return longest, fmt.Errorf("nr %#x: verdict %#x (%v), want %#x", nr, got, err, expect)
		}
		if allowed && r.hasArg0 && expect == retAllow {
			// Each half of args[0] matters.
			for _, bad := range []uint64{r.arg0 ^ 1, r.arg0 ^ 1<<32, 0, ^r.arg0} {
				if bad == r.arg0 {
					continue
				}
				d.args[0] = bad
				if got, _, err := runBPF(prog, d); err != nil || got != retDeny {
					return longest, fmt.Errorf("nr %#x with arg0 %#x (allowed: %#x): verdict %#x (%v), want deny", nr, bad, r.arg0, got, err)
				}
			}
		}
		// Another convention is killed whatever the number.
		d.arch = unix.AUDIT_ARCH_I386
		if got, _, err := runBPF(prog, d); err != nil || got != retKill {
			return longest, fmt.Errorf("nr %#x on AUDIT_ARCH_I386: verdict %#x (%v), want kill", nr, got, err)
		}
	}
	return longest, nil
}

// spread returns n distinct numbers below limit, sorted, chosen by seed.
func spread(n int, limit uint32, seed uint64) []uint32 {
	r := rand.New(rand.NewPCG(seed, 1))
	set := map[uint32]bool{}
	for len(set) < n {
		set[r.Uint32N(limit)] = true
	}
	out := make([]uint32, 0, n)
	for nr := range set {
		out = append(out, nr)
	}
	slices.Sort(out)
	return out
}

func seq(from, n, step uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = from + uint32(i)*step
	}
	return out
}

// TestBuildFilter runs built programs through the interpreter: every
// number, allowed or not, arg-restricted or not, gets its verdict, for
// tables from empty to far larger than one 8-bit jump can span.
func TestBuildFilter(t *testing.T) {
	x86 := archSpec{audit: testArch, refuseBit: 0x40000000}
	arm := archSpec{audit: unix.AUDIT_ARCH_AARCH64}
	big := spread(1000, 3000, 7)
	for _, tc := range []struct {
		name    string
		spec    archSpec
		nrs     []uint32
		args    map[uint32]uint64
		wantJa  bool // the tree must need a long jump
		maxRuns int  // a bound on the instructions one lookup runs
	}{
		{name: "empty", spec: x86, nrs: nil, maxRuns: 8},
		{name: "one", spec: x86, nrs: []uint32{0}, maxRuns: 9},
		{name: "one leaf", spec: x86, nrs: []uint32{1, 5, 9, 200}, maxRuns: 12},
		{name: "leaf and one", spec: x86, nrs: []uint32{1, 5, 9, 200, 201}, maxRuns: 14},
		{name: "arm64 no refused bit", spec: arm, nrs: []uint32{0, 63, 64, 0x40000000 | 39}, maxRuns: 10},
		{name: "dense 256", spec: x86, nrs: seq(0, 256, 1), maxRuns: 30},
		{name: "sparse 300", spec: x86, nrs: spread(300, 5000, 1), wantJa: true, maxRuns: 30},
		{name: "1000", spec: x86, nrs: big, wantJa: true, maxRuns: 35},
		{name: "1000 arm64", spec: arm, nrs: big, wantJa: true, maxRuns: 35},
		{name: "args in a leaf of one", spec: x86, nrs: []uint32{272}, args: map[uint32]uint64{272: unix.CLONE_FS}, maxRuns: 14},
		{name: "args among others", spec: x86, nrs: []uint32{3, 4, 5, 6}, args: map[uint32]uint64{4: 1 << 40, 6: 0xffffffffffffffff}, maxRuns: 16},
		{name: "args in 1000", spec: x86, nrs: big, args: map[uint32]uint64{big[0]: unix.CLONE_FS, big[500]: 0, big[999]: 1<<32 | 5}, wantJa: true, maxRuns: 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := ruleSet(tc.nrs, tc.args)
			// The builder sorts: give it the rules out of order.
			rand.New(rand.NewPCG(3, 4)).Shuffle(len(rules), func(i, j int) { rules[i], rules[j] = rules[j], rules[i] })
			prog, err := buildFilter(tc.spec, rules, retDeny)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkProgram(prog); err != nil {
				t.Fatalf("the kernel would refuse the program: %v", err)
			}
			hasJa := slices.ContainsFunc(prog, func(in unix.SockFilter) bool { return in.Code == opJa })
			if hasJa != tc.wantJa {
				t.Errorf("program of %d instructions has a ja: %v, want %v", len(prog), hasJa, tc.wantJa)
			}
			longest, err := verify(prog, tc.spec, rules)
			if err != nil {
				t.Fatal(err)
			}
			if longest > tc.maxRuns {
				t.Errorf("a lookup ran %d instructions, want at most %d (is the tree balanced?)", longest, tc.maxRuns)
			}
		})
	}
}

// TestVerifyCatchesBadJumps makes sure the interpreter check would see an
// off-by-one jump offset: it breaks each jump of a program in turn and
// expects verify (or checkProgram) to notice.
func TestVerifyCatchesBadJumps(t *testing.T) {
	spec := archSpec{audit: testArch, refuseBit: 0x40000000}
	rules := ruleSet(spread(400, 2000, 9), nil)
	rules[17].hasArg0, rules[17].arg0 = true, unix.CLONE_FS
	prog, err := buildFilter(spec, rules, retDeny)
	if err != nil {
		t.Fatal(err)
	}
	broken := 0
	for pc := range prog {
		bad := slices.Clone(prog)
		switch bad[pc].Code {
		case opJeq, opJge:
			bad[pc].Jt++
		case opJa:
			bad[pc].K++
		default:
			continue
		}
		broken++
		if checkProgram(bad) == nil {
			if _, err := verify(bad, spec, rules); err == nil {
				t.Errorf("pc %d: a jump one too far went unnoticed", pc)
			}
		}
	}
	if broken < 400 {
		t.Fatalf("only %d jumps to break", broken)
	}
}

// TestBuildFilterRefuses checks the builder's own errors.
func TestBuildFilterRefuses(t *testing.T) {
	x86 := archSpec{audit: testArch, refuseBit: 0x40000000}
	for _, tc := range []struct {
		name  string
		rules []rule
	}{
		{"a number twice", []rule{{nr: 3}, {nr: 1}, {nr: 3}}},
		{"a number in the refused range", []rule{{nr: 1}, {nr: 0x40000000 | 39}}},
		{"too long", ruleSet(seq(0, 3000, 2), nil)},
	} {
		if _, err := buildFilter(x86, tc.rules, retDeny); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestProgramVerdicts runs this architecture's real filter on the table
// and on calls the daemon must never make.
func TestProgramVerdicts(t *testing.T) {
	if len(allowList) == 0 {
		t.Skip("no allow-list on " + runtime.GOARCH)
	}
	prog, err := program(retDeny)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkProgram(prog); err != nil {
		t.Fatal(err)
	}
	rules := make([]rule, len(allowList))
	for i, e := range allowList {
		rules[i] = rule{nr: e.nr}
		if v, ok := argRestrictions[e.name]; ok {
			rules[i].hasArg0, rules[i].arg0 = true, v
		}
	}
	if _, err := verify(prog, arch, rules); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d system calls, %d instructions", len(allowList), len(prog))
	check := func(what string, d seccompData, want uint32) {
		t.Helper()
		if got, _, err := runBPF(prog, d); err != nil || got != want {
			t.Errorf("%s: verdict %#x (%v), want %#x", what, got, err, want)
		}
	}
	for name, nr := range forbidden {
		check("forbidden "+name, seccompData{nr: uint32(nr), arch: arch.audit}, retDeny)
	}
	check("unshare(CLONE_FS)", seccompData{nr: unix.SYS_UNSHARE, arch: arch.audit, args: [6]uint64{unix.CLONE_FS}}, retAllow)
	check("unshare(CLONE_NEWUSER)", seccompData{nr: unix.SYS_UNSHARE, arch: arch.audit, args: [6]uint64{unix.CLONE_NEWUSER}}, retDeny)
	check("unshare(CLONE_FS|CLONE_NEWNS)", seccompData{nr: unix.SYS_UNSHARE, arch: arch.audit, args: [6]uint64{unix.CLONE_FS | unix.CLONE_NEWNS}}, retDeny)
	check("read on another arch", seccompData{nr: unix.SYS_READ, arch: unix.AUDIT_ARCH_I386}, retKill)
	if arch.refuseBit != 0 {
		check("x32 read", seccompData{nr: arch.refuseBit | unix.SYS_READ, arch: arch.audit}, retKill)
	}
}
