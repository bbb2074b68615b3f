#!/usr/bin/env bash
# make bench: the performance comparison of govirtiofsd with the reference
# virtio-fs daemons, in four parts, each writing a markdown table into bin/:
#
#   micro  Go microbenchmarks of the hot paths (decode, dispatch, encode of
#          GETATTR, LOOKUP, READ and WRITE 128 KiB through a worker; the
#          virtio and vhost-user benchmarks)          -> bin/bench-micro.txt
#   load   cmd/vufs-load, the host-side load generator: govirtiofsd, the
#          Rust virtiofsd 1.13 and the C virtiofsd, driven at full speed
#          through their vhost-user sockets, alternating, 1 and 4 request
#          queues; then one request at a time with think time (--gap), as
#          a TCG guest issues them; then nearly idle  -> bin/bench-load.md
#   host   scripts/bench-host.sh: the /dev/fuse mount against native and
#          go-fuse's loopback                         -> bin/bench-host.md
#   guest  qemu-tests BenchmarkGuest: QEMU guests (6.1 on QEMU 7.2, 6.12 on
#          QEMU 10.0) against each daemon in turn     -> bin/bench-guest.md
#
# Environment: BENCH_PARTS (comma-separated, default all four),
# BENCH_ROUNDS (default 3), and each part's own knobs (see bench-host.sh
# and qemu-tests/bench_test.go). Run as root; `make bench` installs the
# prerequisites first (scripts/deps.sh, qemu-tests/setup*.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
usage="usage: $0 (no arguments; environment BENCH_PARTS=micro,load,host,guest BENCH_ROUNDS=N)"
if [ $# -gt 0 ]; then
	echo "$usage" >&2
	exit 2
fi
parts=${BENCH_PARTS:-micro,load,host,guest}
rounds=${BENCH_ROUNDS:-3}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
	echo "$0: BENCH_ROUNDS must be a positive integer, not \"$rounds\"" >&2
	exit 2
fi
for p in ${parts//,/ }; do
	case $p in
	micro | load | host | guest) ;;
	*)
		echo "$0: unknown part \"$p\" in BENCH_PARTS (micro, load, host, guest)" >&2
		exit 2
		;;
	esac
done
want() { [[ ",$parts," == *",$1,"* ]]; }

# shellcheck source=qemu-tests/lib.sh
. qemu-tests/lib.sh
CACHE="$(gvt_cache_dir)"
mkdir -p bin

if want micro; then
	echo "== micro: Go benchmarks of the hot paths"
	go test -run XXX -bench . -benchmem ./fuseproto/... ./virtqueue/... ./vhostuser/... ./passthrough/... ./uidmap/... ./xattrmap/... |
		tee bin/bench-micro.txt | grep -E '^(Benchmark|ok|FAIL)'
fi

if want load; then
	echo "== load: vufs-load against each vhost-user-fs daemon"
	CGO_ENABLED=0 go build -o bin/vufs-load ./cmd/vufs-load
	rust="$CACHE/virtiofsd-rust/root"
	ldso="$rust/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
	daemons=(
		--daemon "govirtiofsd=$PWD/bin/govirtiofsd --shared-dir {dir} --socket-path {sock} --sandbox none --seccomp none --cache auto"
		--daemon "virtiofsd-rust=$ldso --library-path $rust/usr/lib/x86_64-linux-gnu $rust/usr/libexec/virtiofsd --shared-dir {dir} --socket-path {sock} --sandbox none --cache auto"
		--daemon "virtiofsd-c=/usr/lib/qemu/virtiofsd --socket-path={sock} -o source={dir} -o cache=auto"
	)
	base=$(mktemp -d /var/tmp/vufs-load.XXXXXX)
	trap 'rm -rf "$base"' EXIT
	{
		echo "### Full speed: 4 threads × 8 requests in flight"
		echo
		bin/vufs-load --dir-base "$base" --rounds "$rounds" --duration 3s --queues 1,4 --reference virtiofsd-rust "${daemons[@]}"
		echo
		echo "### One request at a time, 200 µs think time (a slow guest)"
		echo
		bin/vufs-load --dir-base "$base" --rounds "$rounds" --duration 3s --queues 1 --threads 1 --depth 1 --gap 200us \
			--mix lookup-getattr,read-4k-rand,write-4k-rand,create-cycle --reference virtiofsd-rust "${daemons[@]}"
		echo
		echo "### Nearly idle: two requests a second (what an idle VM costs; CPU is counted in 10 ms ticks)"
		echo
		bin/vufs-load --dir-base "$base" --rounds "$rounds" --duration 10s --queues 1 --threads 1 --depth 1 --gap 500ms \
			--mix read-4k-rand --reference virtiofsd-rust "${daemons[@]}"
	} | tee bin/bench-load.md
fi

if want host; then
	echo "== host: /dev/fuse against native and go-fuse loopback"
	BENCH_ROUNDS=$rounds scripts/bench-host.sh
fi

if want guest; then
	echo "== guest: QEMU guests against each daemon"
	qemu-tests/setup-bench.sh
	BENCH_ROUNDS=$rounds go test -run XXX -bench Guest -benchtime 1x -timeout 4h ./qemu-tests
fi
