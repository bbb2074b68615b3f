#!/usr/bin/env bash
# Host benchmark: one host directory used natively, served by govirtiofsd over
# /dev/fuse (--mountpoint, --cache auto) and by go-fuse's loopback example.
# Every run gets a fresh directory and a fresh mount; the three filesystems
# alternate (native, govirtiofsd, go-fuse, native, ...) for BENCH_ROUNDS
# rounds. Each row records throughput or time and the FUSE daemon's CPU
# seconds (utime+stime of its process and all descendants, from /proc, before
# and after the workload). The markdown table of medians (min-max) goes to
# stdout and to bin/bench-host.md.
#
# usage: scripts/bench-host.sh            (as root; no arguments)
# environment:
#   BENCH_ROUNDS          rounds, a positive integer [3]
#   BENCH_HOST_WORKLOADS  comma-separated subset of seq,rand,meta,tree [all]
#   BENCH_DIR             scratch directory on the filesystem to measure
#                         [/var/tmp/govirtiofs-bench]
#   BENCH_GVFS_ARGS       extra govirtiofsd options [none: its defaults,
#                         i.e. --sandbox namespace --seccomp kill]
#   GOFUSE_VERSION        go-fuse release of the loopback example [v2.12.1]
#   GOVIRTIOFS_CACHE      cache directory, as qemu-tests/lib.sh
#                         [/var/cache/govirtiofs as root]
#
# Workload groups (one fresh directory and mount each):
#   seq   fio sequential write, then cold read, of 256 MiB in 1 MiB blocks
#   rand  on a 256 MiB file laid out natively beforehand: fio 4 KiB cold
#         random read (psync, iodepth 1), 4 KiB random read (libaio, iodepth
#         16, direct=1; "O_DIRECT refused" if the mount refuses it), 4 KiB
#         random write (psync, iodepth 1, fsync at the end); BENCH_RAND_IO
#         bytes each [64m]
#   meta  create, stat, ls -l and unlink of 5,000 small files
#   tree  untar of Go's src (tar of $(go env GOROOT)/src, cached), find,
#         grep -r, rm -rf
# Caches are dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every
# measured step, so reads, stats, listings and lookups start cold.
set -euo pipefail

usage="usage: $0 (no arguments; environment BENCH_ROUNDS, BENCH_HOST_WORKLOADS=seq,rand,meta,tree, BENCH_DIR)"
if [ $# -gt 0 ]; then
	case $1 in
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	esac
	echo "$usage" >&2
	exit 2
fi

rounds=${BENCH_ROUNDS:-3}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
	echo "$0: BENCH_ROUNDS must be a positive integer, not \"$rounds\"" >&2
	exit 2
fi
all_groups=(seq rand meta tree)
groups=()
IFS=, read -r -a wanted <<<"${BENCH_HOST_WORKLOADS:-seq,rand,meta,tree}"
for w in "${wanted[@]}"; do
	case $w in
	seq | rand | meta | tree) groups+=("$w") ;;
	*)
		echo "$0: BENCH_HOST_WORKLOADS: unknown workload \"$w\" (want a comma-separated subset of ${all_groups[*]})" >&2
		exit 2
		;;
	esac
done
if [ ${#groups[@]} -eq 0 ]; then
	echo "$0: BENCH_HOST_WORKLOADS is empty (want a comma-separated subset of ${all_groups[*]})" >&2
	exit 2
fi
rand_io=${BENCH_RAND_IO:-64m}
if ! [[ $rand_io =~ ^[1-9][0-9]*[kmg]?$ ]]; then
	echo "$0: BENCH_RAND_IO must be a size such as 64m, not \"$rand_io\"" >&2
	exit 2
fi
read -r -a gvfs_extra <<<"${BENCH_GVFS_ARGS:-}"
if [ "$(id -u)" != 0 ]; then
	echo "$0: must run as root (mounts, drop_caches)" >&2
	exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$PATH:/usr/local/go/bin"
# shellcheck source=qemu-tests/lib.sh
. "$root/qemu-tests/lib.sh"
cache=$(gvt_cache_dir)
bench_dir=${BENCH_DIR:-/var/tmp/govirtiofs-bench}
gofuse_version=${GOFUSE_VERSION:-v2.12.1}
gvfs=$root/bin/govirtiofsd
gofuse=$cache/gofuse-$gofuse_version/loopback
out_md=$root/bin/bench-host.md
nfiles=5000
seq_size=256m
clk_tck=$(getconf CLK_TCK)

# ---- cleanup: every daemon this script started, every mount it made -------

daemon_pid=
cur_mnt=
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	set +e # a failing step must not cut the cleanup short
	stop_daemon || true
	if [ -d "$bench_dir" ]; then
		# A mount left behind by an interrupted run, then the scratch tree.
		findmnt -rn -o TARGET | grep -F "$bench_dir/" | sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null
		done
		rm -rf --one-file-system "$bench_dir"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- prerequisites ----------------------------------------------------------

if ! command -v fio >/dev/null; then
	echo "installing fio" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq fio >/dev/null ||
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq fio >/dev/null; }
fi
if [ ! -x "$gvfs" ]; then
	make -C "$root" build >&2
fi
if [ ! -x "$gofuse" ]; then
	echo "building go-fuse $gofuse_version example/loopback" >&2
	# Outside our module (cd /), so go.mod and go.sum stay untouched.
	(cd / && GOFLAGS="" GOBIN=$(dirname "$gofuse") go install "github.com/hanwen/go-fuse/v2/example/loopback@$gofuse_version")
fi
go_version=$(go env GOVERSION)
tarball=$cache/bench/$go_version-src.tar
if [[ " ${groups[*]} " == *" tree "* ]] && [ ! -f "$tarball" ]; then
	mkdir -p "$cache/bench"
	tar -C "$(go env GOROOT)" -cf "$tarball.tmp" src
	mv "$tarball.tmp" "$tarball"
fi

rm -rf --one-file-system "$bench_dir"
mkdir -p "$bench_dir"
results=$bench_dir/results.tsv
: >"$results"

# ---- helpers ----------------------------------------------------------------

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# tree_ticks PID: utime+stime clock ticks of PID and all its descendants.
tree_ticks() {
	[ -n "$1" ] || {
		echo 0
		return
	}
	# cat, not awk over the glob: a process may end between glob and open
	# (and then cat fails, which is no failure here).
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
		{
			pid = $1; line = $0
			sub(/^[0-9]+ \(.*\) /, "", line)   # comm may hold spaces and parens
			split(line, f, " ")
			ppid[pid] = f[2]; ticks[pid] = f[12] + f[13]
		}
		END {
			want[root] = 1; changed = 1
			while (changed) {
				changed = 0
				for (p in ppid) if (!(p in want) && (ppid[p] in want)) { want[p] = 1; changed = 1 }
			}
			s = 0
			for (p in want) if (p in ticks) s += ticks[p]
			print s
		}'
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# record ROW VALUE CPU_START_TICKS: one result line for the current run (no
# CPU column when CPU_START_TICKS is empty).
record() {
	local cpu=-
	if [ -n "$daemon_pid" ] && [ -n "$3" ]; then
		cpu=$(awk -v a="$3" -v b="$(tree_ticks "$daemon_pid")" -v hz="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / hz }')
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$cur_fs" "$round" "$2" "$cpu" >>"$results"
	printf '  %-22s %-12s %10s  cpu %s\n' "$1" "$cur_fs" "$2" "$cpu" >&2
}

# start_fs FS DATA MNT: serve DATA on MNT (native: MNT is DATA itself).
start_fs() {
	cur_fs=$1
	local data=$2 mnt=$3 log=$bench_dir/$1.log
	daemon_pid=
	case $1 in
	native) return ;;
	govirtiofsd)
		mkdir -p "$mnt"
		"$gvfs" --shared-dir "$data" --mountpoint "$mnt" --cache auto \
			--log-level error "${gvfs_extra[@]}" >>"$log" 2>&1 &
		daemon_pid=$!
		;;
	go-fuse)
		mkdir -p "$mnt"
		"$gofuse" -q "$mnt" "$data" >>"$log" 2>&1 &
		daemon_pid=$!
		;;
	esac
	cur_mnt=$mnt
	local i
	for ((i = 0; i < 200; i++)); do
		if findmnt -n -M "$mnt" >/dev/null; then
			return
		fi
		if ! kill -0 "$daemon_pid" 2>/dev/null; then
			break
		fi
		sleep 0.05
	done
	echo "$0: $1 did not mount $mnt; its log:" >&2
	tail -n 20 "$log" >&2
	exit 1
}

# stop_daemon: SIGTERM the daemon (both unmount on it), wait, then make sure.
stop_daemon() {
	local i
	if [ -n "$daemon_pid" ]; then
		kill -TERM "$daemon_pid" 2>/dev/null || true
		for ((i = 0; i < 200; i++)); do
			kill -0 "$daemon_pid" 2>/dev/null || break
			sleep 0.05
		done
		if kill -0 "$daemon_pid" 2>/dev/null; then
			echo "$0: daemon $daemon_pid ignored SIGTERM; unmounting and killing it" >&2
			umount -l "$cur_mnt" 2>/dev/null || true
			kill -KILL "$daemon_pid" 2>/dev/null || true
		fi
		wait "$daemon_pid" 2>/dev/null || true
		daemon_pid=
	fi
	if [ -n "$cur_mnt" ] && findmnt -n -M "$cur_mnt" >/dev/null; then
		umount "$cur_mnt" 2>/dev/null || umount -l "$cur_mnt" || true
	fi
	cur_mnt=
}

# fio_run FIELD ARGS...: run one fio job, print FIELD of its terse v3 line
# (7 read KiB/s, 8 read IOPS, 48 write KiB/s, 49 write IOPS).
fio_run() {
	local field=$1
	shift
	fio --name=bench --output-format=terse --terse-version=3 "$@" | awk -F';' -v f="$field" '{ print $f }'
}

# ---- workload groups (DIR is where the workload runs) -----------------------

group_seq() {
	local dir=$1 t kib
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	kib=$(fio_run 48 --filename="$dir/seq" --rw=write --bs=1m --size=$seq_size --ioengine=psync --end_fsync=1)
	record seq-write-1M "$(awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }')" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	kib=$(fio_run 7 --filename="$dir/seq" --rw=read --bs=1m --size=$seq_size --ioengine=psync)
	record seq-read-1M-cold "$(awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }')" "$t"
}

# prepare_rand DATA: lay out the random-I/O file natively, before the mount.
prepare_rand() {
	fio --name=layout --filename="$1/rand" --rw=write --bs=1m --size=$seq_size \
		--ioengine=psync --end_fsync=1 --output=/dev/null
}

group_rand() {
	local dir=$1 t iops common=(--filename="$1/rand" --bs=4k --size="$seq_size" --io_size="$rand_io" --runtime=120 --randrepeat=1)
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	iops=$(fio_run 8 "${common[@]}" --rw=randread --ioengine=psync --iodepth=1)
	record randread-4k-psync-qd1 "$iops" "$t"
	drop_caches
	if dd if="$dir/rand" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then
		t=$(tree_ticks "$daemon_pid")
		iops=$(fio_run 8 "${common[@]}" --rw=randread --ioengine=libaio --iodepth=16 --direct=1)
		record randread-4k-aio-qd16-dio "$iops" "$t"
	else
		record randread-4k-aio-qd16-dio "O_DIRECT refused" ""
	fi
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	iops=$(fio_run 49 "${common[@]}" --rw=randwrite --ioengine=psync --iodepth=1 --end_fsync=1)
	record randwrite-4k-psync-qd1 "$iops" "$t"
}

# names DIR: the small files' paths, without reading the directory.
names() {
	local i
	for ((i = 0; i < nfiles; i++)); do
		printf '%s/f%d\n' "$1" "$i"
	done
}

group_meta() {
	local dir=$1/meta t s i
	mkdir "$dir"
	names "$dir" >"$bench_dir/names"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	for ((i = 0; i < nfiles; i++)); do
		printf 'small file %d\n' "$i" >"$dir/f$i"
	done
	record meta-create-5k "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	xargs -d '\n' stat -c %s -- <"$bench_dir/names" >/dev/null
	record meta-stat-5k "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	ls -l "$dir" >/dev/null
	record meta-ls-l-5k "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	xargs -d '\n' rm -- <"$bench_dir/names"
	record meta-unlink-5k "$(elapsed "$s" "$(now)")" "$t"
}

group_tree() {
	local dir=$1 t s
	drop_caches
	cat "$tarball" >/dev/null # the source is read from the page cache
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	tar -C "$dir" -xf "$tarball"
	record untar-go-src "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	find "$dir/src" -name '*.go' | wc -l >/dev/null
	record find-go-src "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	grep -r -F -e 'no-such-string-xq9z7' "$dir/src" >/dev/null || [ $? = 1 ]
	record grep-r-go-src "$(elapsed "$s" "$(now)")" "$t"
	drop_caches
	t=$(tree_ticks "$daemon_pid")
	s=$(now)
	rm -rf "$dir/src"
	record rm-rf-go-src "$(elapsed "$s" "$(now)")" "$t"
}

# ---- the runs ---------------------------------------------------------------

filesystems=(native govirtiofsd go-fuse)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(now)
for ((round = 1; round <= rounds; round++)); do
	for g in "${groups[@]}"; do
		for fs in "${filesystems[@]}"; do
			run=$bench_dir/r$round-$g-$fs
			mkdir -p "$run/data"
			echo "round $round/$rounds: $g on $fs" >&2
			if [ "$g" = rand ]; then
				prepare_rand "$run/data"
			fi
			where=$run/data
			[ "$fs" = native ] || where=$run/mnt
			start_fs "$fs" "$run/data" "$run/mnt"
			"group_$g" "$where"
			stop_daemon
			rm -rf --one-file-system "$run"
		done
	done
done
wall=$(elapsed "$start" "$(now)")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the table --------------------------------------------------------------

# stat_of ROW FS COLUMN: "median (min–max)" of COLUMN (4 value, 5 cpu) over
# rounds, or the single word a run recorded instead of a number.
stat_of() {
	awk -F'\t' -v r="$1" -v f="$2" -v c="$3" '$1 == r && $2 == f { print $c }' "$results" |
		sort -g | awk '
			/^[0-9.]+$/ { v[++n] = $1; next }
			{ word = $0 }
			END {
				if (n == 0) { print (word == "" ? "-" : word); exit }
				m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
				if (n == 1) printf "%g\n", m
				else printf "%g (%g–%g)\n", m, v[1], v[n]
			}'
}
median_of() { stat_of "$@" | awk '{ print $1 }'; }

# ratio ROW KIND: govirtiofsd over go-fuse, as time (throughput rows: the
# inverse of the throughput ratio) and as CPU; below 1 govirtiofsd is better.
ratio() {
	local g f
	g=$(median_of "$1" govirtiofsd "$2")
	f=$(median_of "$1" go-fuse "$2")
	awk -v g="$g" -v f="$f" -v inv="$3" 'BEGIN {
		if (g !~ /^[0-9.]+$/ || f !~ /^[0-9.]+$/ || g == 0 || f == 0) { print "-"; exit }
		printf "%.2f\n", inv ? f / g : g / f
	}'
}

unit_of() {
	case $1 in
	seq-*) echo "MiB/s ↑" ;;
	rand*) echo "IOPS ↑" ;;
	*) echo "s ↓" ;;
	esac
}

rows=()
for g in "${groups[@]}"; do
	case $g in
	seq) rows+=(seq-write-1M seq-read-1M-cold) ;;
	rand) rows+=(randread-4k-psync-qd1 randread-4k-aio-qd16-dio randwrite-4k-psync-qd1) ;;
	meta) rows+=(meta-create-5k meta-stat-5k meta-ls-l-5k meta-unlink-5k) ;;
	tree) rows+=(untar-go-src find-go-src grep-r-go-src rm-rf-go-src) ;;
	esac
done

gvfs_desc="--cache auto --log-level error${BENCH_GVFS_ARGS:+ $BENCH_GVFS_ARGS} (sandbox, seccomp, threads: its defaults unless given)"
{
	echo "# Host benchmark: native vs govirtiofsd (/dev/fuse) vs go-fuse loopback"
	echo
	echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs, $rounds rounds, alternating native, govirtiofsd, go-fuse; every run a fresh directory and mount"
	echo "- backing filesystem: $(findmnt -n -o FSTYPE -T "$bench_dir") ($bench_dir); $(fio --version); $go_version src tarball for the tree rows"
	echo "- govirtiofsd: \`--shared-dir D --mountpoint M $gvfs_desc\`"
	echo "- go-fuse: $gofuse_version example/loopback \`-q M D\` (its defaults: fusermount, entry and attr timeouts 1 s, no allow_other; as root on a kernel with FUSE passthrough, 6.9 and later, it opens files with FOPEN_PASSTHROUGH, so their reads and writes never reach the daemon)"
	echo "- cells: median (min–max) over rounds; CPU: utime+stime seconds of the daemon's process tree during the row; caches dropped before every row"
	echo "- time ratio: govirtiofsd time / go-fuse time (for throughput rows go-fuse / govirtiofsd throughput); CPU ratio: govirtiofsd / go-fuse; below 1 govirtiofsd is better"
	echo
	echo "| workload | unit | native | govirtiofsd | go-fuse | govirtiofsd CPU s | go-fuse CPU s | time ratio | CPU ratio | govirtiofsd vs go-fuse |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	for r in "${rows[@]}"; do
		unit=$(unit_of "$r")
		inv=0
		[[ $unit == *↑ ]] && inv=1
		tr=$(ratio "$r" 4 "$inv")
		cr=$(ratio "$r" 5 0)
		verdict=$(awk -v t="$tr" 'BEGIN { if (t == "-") print "n/a"; else if (t > 1) print "**slower**"; else print "faster or equal" }')
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$unit" \
			"$(stat_of "$r" native 4)" "$(stat_of "$r" govirtiofsd 4)" "$(stat_of "$r" go-fuse 4)" \
			"$(stat_of "$r" govirtiofsd 5)" "$(stat_of "$r" go-fuse 5)" "$tr" "$cr" "$verdict"
	done
	echo
	echo "Measured part: ${wall} s; load average before $load_before, after $load_after (other work on the machine widens min–max)."
} | tee "$out_md.tmp"
mv "$out_md.tmp" "$out_md"
