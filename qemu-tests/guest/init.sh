#!/bin/sh
# /init of the test and demo guests (busybox sh, PID 1). The base initramfs
# from setup.sh holds busybox and the kernel modules; the test or the demo
# appends this script as /init and its own /guest.sh.
#
# It loads the virtio and virtiofs modules when the kernel has them as
# modules, mounts the virtiofs share (tag from gvt.tag=, default myfs) on
# /mnt, runs /guest.sh with the mount point as $1, unmounts, and powers off.
# With gvt.stream=SOURCE it mounts through /bin/govirtiofs-guest SOURCE
# instead (the stream transport, e.g. serial:NAME), and after unmounting
# checks that the relay exited 0.
# The host reads the serial console: each step prints "GUESTTEST <name> PASS"
# or "GUESTTEST <name> FAIL <why>", and "GUESTDONE" comes last.
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s /bin
export PATH=/bin HOME=/ TERM=dumb

say() { echo "GUESTTEST $*"; }
finish() {
	echo "GUESTDONE"
	sync
	poweroff -f
	sleep 10
}

tag=myfs
stream=
streamopts=rw
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	gvt.tag=*) tag="${arg#gvt.tag=}" ;;
	gvt.stream=*) stream="${arg#gvt.stream=}" ;;
	gvt.streamopts=*) streamopts="${arg#gvt.streamopts=}" ;;
	esac
done

echo "GUESTBOOT $(uname -r) cpus=$(nproc) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -s /lib/modules/order ]; then
	while read -r m; do
		insmod "/lib/modules/$m.ko" || { say "insmod-$m FAIL"; finish; }
	done </lib/modules/order
fi

if [ -n "$stream" ]; then
	# No udev here: name the virtio-serial ports as udev would.
	for p in /sys/class/virtio-ports/*; do
		[ -s "$p/name" ] || continue
		mkdir -p /dev/virtio-ports
		ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"
	done
	govirtiofs-guest -o "$streamopts" "$stream" /mnt >/relay.log 2>&1 &
	relay=$!
	i=0
	while ! grep -q " /mnt fuse.govirtiofs " /proc/mounts; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 $relay 2>/dev/null; then
			say "mount FAIL govirtiofs-guest $stream /mnt: $(tr '\n' ' ' </relay.log)"
			finish
		fi
		sleep 0.1
	done
	say "mount PASS"
elif mount -t virtiofs "$tag" /mnt; then
	say "mount PASS"
else
	say "mount FAIL mount -t virtiofs $tag /mnt failed"
	finish
fi

if [ -e /guest.sh ]; then
	sh /guest.sh /mnt
fi

cd /
sync
if ! out="$(umount /mnt 2>&1)"; then
	say "umount FAIL $out"
elif [ -n "$stream" ]; then
	wait $relay
	rc=$?
	tail -n 20 /relay.log | sed 's/^/GUESTINFO relay: /'
	if [ $rc -eq 0 ]; then
		say "umount PASS"
	else
		say "umount FAIL govirtiofs-guest exited $rc after the unmount: $(tr '\n' ' ' </relay.log)"
	fi
else
	say "umount PASS"
fi
finish
