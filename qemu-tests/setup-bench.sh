#!/usr/bin/env bash
# Prepares what the guest benchmark (bench_test.go, BenchmarkGuest) adds to
# setup.sh's guests, as root, cached under setup.sh's cache folder:
#
#   - fio for the guest: Debian's fio is installed on the host with apt, and
#     its binary, every shared library ldd lists (flat, in
#     lib/x86_64-linux-gnu) and the dynamic loader (lib64) are packed into
#     a newc archive;
#   - a source tarball: Go's own $(go env GOROOT)/src (about 12,800 entries,
#     at least 10,000 required), stored uncompressed as /gosrc.tar in the
#     same archive, so the guest untars it from its initramfs and only the
#     writes reach the virtio-fs daemon.
#
# The result is $CACHE/bench/bench.cpio (appended to setup.sh's base
# initramfs by the benchmark) and $CACHE/bench/bench.env. Run setup.sh
# first (it provides busybox for cpio). A second run with the stamp in
# place does nothing; remove $CACHE/bench to rebuild.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

CACHE="$(gvt_cache_dir)"
DIR="$CACHE/bench"
log() { printf 'setup-bench: %s\n' "$*" >&2; }
die() { printf 'setup-bench: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DIR"
exec 8>"$DIR/.lock"
flock 8

GO="$(command -v go || echo /usr/local/go/bin/go)"
GOROOT_SRC="$("$GO" env GOROOT)/src"
[ -d "$GOROOT_SRC" ] || die "no Go source tree at $GOROOT_SRC"

if ! [ -x /usr/bin/fio ]; then
	[ "$(id -u)" = 0 ] || die "need root to apt-get install fio"
	log "apt-get install fio"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio >&2; then
		apt-get update -qq >&2 || log "warning: apt-get update reported errors (continuing)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio >&2 || die "apt-get install fio failed"
	fi
fi

want="v1 $(/usr/bin/fio --version) $("$GO" env GOVERSION) $GOROOT_SRC"
if [ -e "$DIR/bench.cpio" ] && [ -e "$DIR/bench.env" ] && [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$want" ]; then
	exit 0
fi

BB="$CACHE/busybox/busybox"
if [ -x "$BB" ]; then
	cpio_out() { "$BB" cpio -o -H newc 2>/dev/null; }
elif command -v cpio >/dev/null; then
	cpio_out() { cpio -o -H newc --quiet; }
else
	die "no busybox in $CACHE (run qemu-tests/setup.sh first) and no cpio"
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/x86_64-linux-gnu" "$stage/lib64"
cp /usr/bin/fio "$stage/bin/fio"
# ldd's "NAME => PATH (addr)" lines: every library, under its soname.
ldd /usr/bin/fio | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r name path; do
	cp -L "$path" "$stage/lib/x86_64-linux-gnu/$name"
done
if ldd /usr/bin/fio | grep -q 'not found'; then
	die "fio's libraries are incomplete: $(ldd /usr/bin/fio | grep 'not found' | tr '\n' ' ')"
fi
cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/ld-linux-x86-64.so.2"
# The staged fio must run with nothing but the staged libraries.
"$stage/lib64/ld-linux-x86-64.so.2" --library-path "$stage/lib/x86_64-linux-gnu" "$stage/bin/fio" --version >/dev/null ||
	die "the staged fio does not run"

log "packing $GOROOT_SRC"
tar -C "$(dirname "$GOROOT_SRC")" --owner=0 --group=0 -cf "$stage/gosrc.tar" src
entries="$(tar -tf "$stage/gosrc.tar" | wc -l)"
[ "$entries" -ge 10000 ] || die "$GOROOT_SRC has only $entries entries, want at least 10,000"

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio_out) >"$DIR/bench.cpio.tmp"
mv "$DIR/bench.cpio.tmp" "$DIR/bench.cpio"
cat >"$DIR/bench.env" <<EOF
# written by qemu-tests/setup-bench.sh; read by qemu-tests/bench_test.go
BENCH_CPIO=$DIR/bench.cpio
FIO_VERSION=$(/usr/bin/fio --version)
GOSRC=$GOROOT_SRC
GOSRC_ENTRIES=$entries
GOSRC_BYTES=$(stat -c %s "$stage/gosrc.tar")
EOF
echo "$want" >"$DIR/stamp"
log "ready: $DIR/bench.cpio ($(du -m "$DIR/bench.cpio" | cut -f1) MiB, tarball of $entries entries)"
