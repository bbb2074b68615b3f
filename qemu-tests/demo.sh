#!/usr/bin/env bash
# The demo behind `make demo`: serves a small demo share with the daemon,
# boots a QEMU guest (Linux 6.12 on QEMU 10.0, falling back to Linux 6.1 on
# QEMU 7.2) that mounts it with `mount -t virtiofs`, shows what the guest
# sees, has the guest write a file back, powers the guest off, and shows the
# host's view of that file and where everything is.
#
# It builds nothing: `make demo` builds bin/govirtiofsd first. It runs
# setup.sh, which is quick once its downloads are cached.
#
# Environment:
#   GOVIRTIOFSD    the daemon binary (default bin/govirtiofsd in the repository)
#   DEMO_DAEMON    govirtiofsd (default) or virtiofsd-c, the C virtiofsd of
#                  Debian's QEMU 7.2 (/usr/lib/qemu/virtiofsd)
#   DEMO_DIR       where the share, socket and logs go (default
#                  /tmp/govirtiofs-demo; emptied first)
#   DEMO_PAIR      6.12 (default) or 6.1
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

if [ -t 1 ]; then
	say() { printf '\033[1m%s\033[0m\n' "$*"; }
else
	say() { printf '%s\n' "$*"; }
fi
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ---
"$here/setup.sh" 2>&1 | sed 's/^/  /' >&2
cache="$(gvt_cache_dir)"
declare -A S
while IFS='=' read -r k v; do
	case "$k" in '' | '#'*) continue ;; esac
	S[$k]="$v"
done <"$cache/setup.env"

daemon_kind="${DEMO_DAEMON:-${QEMUTEST_DAEMON:-govirtiofsd}}"
case "$daemon_kind" in
govirtiofsd)
	daemon_bin="${GOVIRTIOFSD:-$repo/bin/govirtiofsd}"
	[ -x "$daemon_bin" ] || die "no daemon at $daemon_bin: run 'make build' (make demo does), or set GOVIRTIOFSD"
	;;
virtiofsd-c)
	daemon_bin="${S[VIRTIOFSD_C]:-/usr/lib/qemu/virtiofsd}"
	[ -x "$daemon_bin" ] || die "no C virtiofsd at $daemon_bin"
	;;
*) die "DEMO_DAEMON=$daemon_kind: want govirtiofsd or virtiofsd-c" ;;
esac

pair="${DEMO_PAIR:-6.12}"
qemu_env=()
case "$pair" in
6.12)
	qemu=("${S[QEMU10]}" -L "${S[QEMU10_DATA]}" -L "${S[QEMU10_BIOS]}")
	qemu_env=(QEMU_MODULE_DIR="${S[QEMU10_MODULES]}")
	qemu_version="${S[QEMU10_VERSION]}"
	kernel="${S[KERNEL612]}" initrd_base="${S[INITRD612]}" kernel_release="${S[KERNEL612_RELEASE]}"
	if ! [ -x "${qemu[0]}" ]; then
		say "QEMU 10 is not available; using Linux 6.1 on QEMU 7.2"
		pair=6.1
	fi
	;;
6.1) ;;
*) die "DEMO_PAIR=$pair: want 6.12 or 6.1" ;;
esac
if [ "$pair" = 6.1 ]; then
	qemu=("${S[QEMU72]}")
	qemu_env=()
	qemu_version="${S[QEMU72_VERSION]}"
	kernel="${S[KERNEL61]}" initrd_base="${S[INITRD61]}" kernel_release="${S[KERNEL61_RELEASE]}"
fi

# --- the demo share ---
demo="${DEMO_DIR:-/tmp/govirtiofs-demo}"
case "$demo" in /*) ;; *) die "DEMO_DIR must be an absolute path" ;; esac
if [ -e "$demo" ]; then
	[ -e "$demo/.govirtiofs-demo" ] || die "$demo exists and is not a previous demo folder; set DEMO_DIR"
	rm -rf "$demo"
fi
mkdir -p "$demo/share/docs" "$demo/guest-root"
touch "$demo/.govirtiofs-demo"
share="$demo/share"
sock="$demo/vhost.sock"
cat >"$share/hello.txt" <<EOF
Hello from the host ($(uname -n))!
This file lives in $share and reaches the guest through virtio-fs.
EOF
printf '1. boot a VM\n2. mount -t virtiofs myfs /mnt\n3. enjoy\n' >"$share/docs/steps.txt"
head -c 1048576 /dev/urandom >"$share/docs/random-1MiB.bin"
ln -s docs/steps.txt "$share/steps-link"

# --- the guest: busybox initramfs plus our /init and a demo script ---
cp "$here/guest/init.sh" "$demo/guest-root/init"
chmod 755 "$demo/guest-root/init"
cat >"$demo/guest-root/guest.sh" <<'EOF'
mnt="$1"
show() { echo "guest\$ $*"; "$@" 2>&1 | sed 's/^/    /'; }
show uname -sr
show grep virtiofs /proc/mounts
show ls -l "$mnt"
show ls -l "$mnt/docs"
show cat "$mnt/hello.txt"
show cat "$mnt/steps-link"
show sha256sum "$mnt/docs/random-1MiB.bin"
echo "guest\$ echo ... > $mnt/from-guest.txt"
{
	echo "Hello from the guest: $(uname -sr), $(nproc) CPU(s)."
	echo "Guest clock: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "It sees $(ls "$mnt" | wc -l) entries in the share, this file included."
} >"$mnt/from-guest.txt"
show ls -l "$mnt/from-guest.txt"
sync
EOF
(cd "$demo/guest-root" && printf '%s\n' init guest.sh | "${S[BUSYBOX]}" cpio -o -H newc 2>/dev/null) >"$demo/extra.cpio"
cat "$initrd_base" "$demo/extra.cpio" >"$demo/initrd.cpio"

# --- run ---
case "$daemon_kind" in
govirtiofsd) daemon_cmd=("$daemon_bin" --socket-path "$sock" --shared-dir "$share" --xattr) ;;
virtiofsd-c) daemon_cmd=("$daemon_bin" "--socket-path=$sock" -o "source=$share" -o cache=auto -o xattr) ;;
esac
say "==> host: ${daemon_cmd[*]}"
"${daemon_cmd[@]}" >"$demo/daemon.log" 2>&1 &
daemon_pid=$!
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; fi
	kill "$daemon_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
	[ -S "$sock" ] && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$demo/daemon.log" >&2; die "the daemon exited before listening"; }
	sleep 0.1
done
[ -S "$sock" ] || die "no socket at $sock after 10 s; see $demo/daemon.log"
sleep 0.1

qemu_args=(-accel tcg -m 2048 -nographic -no-reboot
	-kernel "$kernel" -initrd "$demo/initrd.cpio"
	-append "console=ttyS0 panic=-1 edd=off quiet"
	-object "memory-backend-memfd,id=mem,size=2048M,share=on" -numa "node,memdev=mem"
	-chardev "socket,id=char0,path=$sock"
	-device "vhost-user-fs-pci,queue-size=1024,chardev=char0,tag=myfs")
say "==> host: booting Linux $kernel_release on QEMU $qemu_version (TCG), which mounts the share"
start=$(date +%s.%N)
env "${qemu_env[@]}" timeout 180 "${qemu[@]}" "${qemu_args[@]}" </dev/null >"$demo/console.log" 2>&1 &
qemu_pid=$!
# Show the guest's side as it happens: our script's lines, not the firmware's.
tail -n +1 -f "$demo/console.log" --pid="$qemu_pid" 2>/dev/null |
	sed -u -e 's/\r$//' -n -e '/GUESTBOOT/,$p' |
	sed -u -e 's/.*GUESTBOOT/GUESTBOOT/' -e '/^GUESTBOOT/d' -e '/reboot: Power down/d' \
		-e '/^GUESTTEST mount PASS/d' -e '/^GUESTTEST umount PASS/d' -e '/^GUESTDONE/d' -e 's/^/  /'
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

daemon_status=
for _ in $(seq 100); do
	if ! kill -0 "$daemon_pid" 2>/dev/null; then
		daemon_status=0
		wait "$daemon_pid" || daemon_status=$?
		break
	fi
	sleep 0.1
done
trap - EXIT
if [ -z "$daemon_status" ]; then
	kill "$daemon_pid" 2>/dev/null || true
	daemon_status="still running 10 s after the guest powered off (stopped now)"
fi

ok=true
grep -q 'GUESTTEST mount PASS' "$demo/console.log" || { echo "demo: the guest could not mount the share" >&2; ok=false; }
grep -q 'GUESTTEST umount PASS' "$demo/console.log" || { echo "demo: the guest did not unmount cleanly" >&2; ok=false; }
[ "$qemu_status" = 0 ] || { echo "demo: QEMU exited with status $qemu_status" >&2; ok=false; }
[ -s "$share/from-guest.txt" ] || { echo "demo: the guest's file did not reach the host" >&2; ok=false; }
[ "$daemon_status" = 0 ] || { echo "demo: the daemon did not exit cleanly" >&2; ok=false; }

echo
say "==> host: the guest powered off after ${elapsed}s; the daemon exited: $daemon_status"
say "==> host: cat $share/from-guest.txt"
sed 's/^/  /' "$share/from-guest.txt" 2>/dev/null || true
host_sum="$(sha256sum "$share/docs/random-1MiB.bin" | cut -d' ' -f1)"
guest_sum="$(grep -aoE '[0-9a-f]{64}  /mnt/docs/random-1MiB.bin' "$demo/console.log" | cut -c1-64 || true)"
if [ "$host_sum" = "$guest_sum" ]; then
	say "==> host: docs/random-1MiB.bin has sha256 $host_sum here too"
else
	echo "demo: docs/random-1MiB.bin has sha256 $host_sum on the host, '$guest_sum' in the guest" >&2
	ok=false
fi
say "==> host: ls -l $share"
ls -l "$share" | sed 's/^/  /'
echo
echo "Where to look:"
echo "  share:          $share"
echo "  daemon log:     $demo/daemon.log"
echo "  guest console:  $demo/console.log"
echo "  guest kernel:   $kernel"
echo "  QEMU:           ${qemu[0]}"
echo "  re-run:         make demo   (or qemu-tests/demo.sh; DEMO_DAEMON=virtiofsd-c for the C virtiofsd)"
if ! $ok; then
	echo "demo: FAILED; see the logs above" >&2
	exit 1
fi
