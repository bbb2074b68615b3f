#!/bin/sh
# /guest.sh of the test guest (busybox sh): /init runs it with the virtiofs
# mount point as $1, and unmounts and powers off after it.
#
# It runs the checker (/bin/guesttest, from guest/main.go), then, when the
# initramfs carries it, the conformance suite internal/posixtest in a
# directory of its own. In the overlay mode it runs only the checker's
# overlay case (guesttest -overlay), in the idmap mode only its id-mapping
# case (guesttest -idmap). The host test fills in the placeholders:
#   @MODE@       "overlay" for the overlay case, "idmap" for the id-mapping
#                case, "dropin", "acl", "migrate" or "seclabel" for those
#                cases (the checker alone, guesttest -MODE), else empty
#   @CHECKS@     regexp choosing the checker's checks (empty: all)
#   @POSIXRUN@   the suite's -test.run pattern
#   @POSIXSKIP@  comma-separated suite tests to leave out
#   @WATCHDOG@   seconds without output after which a program counts as hung:
#                the stacks of tasks stuck in the kernel go to the console
#                and the program gets SIGQUIT (a Go program then prints its
#                goroutines and exits), so the host sees why, not just a hang.
mnt="$1"
mode="@MODE@"
watchdog=@WATCHDOG@

info() { sed 's/^/GUESTINFO   /'; }

# blocked_tasks prints the kernel stacks of tasks in D state or waiting in
# FUSE or virtio code.
blocked_tasks() {
	for t in /proc/[0-9]*/task/[0-9]*; do
		stack="$(cat "$t/stack" 2>/dev/null)"
		state="$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "$t/status" 2>/dev/null)"
		case "$state:$stack" in
		D:* | *fuse* | *virtio*)
			echo "task ${t#/proc/} ($(cat "$t/comm" 2>/dev/null)) state $state:"
			echo "$stack" | sed 's/^/    /'
			;;
		esac
	done
}

# run_watched PREFIX CMD...: runs CMD with its output on the console, each
# line behind PREFIX; returns CMD's exit status.
run_watched() {
	prefix="$1"
	shift
	rm -f /tmp/w.pid /tmp/w.rc
	: >/tmp/w.out
	(
		sh -c 'echo $$ >/tmp/w.pid; exec "$@"' sh "$@"
		echo "$?" >/tmp/w.rc
	) 2>&1 | tee /tmp/w.out | awk -v p="$prefix" '{ print p $0; fflush() }' &
	follower=$!
	idle=0
	last=0
	fired=
	while kill -0 "$follower" 2>/dev/null; do
		sleep 2
		size="$(wc -c </tmp/w.out)"
		if [ "$size" != "$last" ]; then
			last="$size"
			idle=0
			continue
		fi
		idle=$((idle + 2))
		if [ -z "$fired" ] && [ "$idle" -ge "$watchdog" ]; then
			fired=1
			echo "GUESTINFO watchdog: no output from $1 for $idle s; blocked tasks:"
			blocked_tasks | info
			kill -QUIT "$(cat /tmp/w.pid)" 2>/dev/null
		fi
	done
	wait "$follower"
	rc="$(cat /tmp/w.rc 2>/dev/null)"
	return "${rc:-255}"
}

echo "GUESTINFO mounted: $(grep virtiofs /proc/mounts)"

if [ "$mode" = overlay ]; then
	echo "GUESTINFO ls -l $mnt:"
	ls -l "$mnt" | info
	run_watched "" /bin/guesttest -overlay "$mnt"
	echo "GUESTINFO interrupts per virtqueue:"
	grep virtio /proc/interrupts | info
	exit 0
fi

case "$mode" in
dropin | acl | migrate | seclabel)
	run_watched "" /bin/guesttest -"$mode" "$mnt"
	exit 0
	;;
esac

if [ "$mode" = idmap ]; then
	run_watched "" /bin/guesttest -idmap "$mnt"
	echo "GUESTINFO ls -lnR $mnt:"
	ls -lnR "$mnt" | info
	exit 0
fi

echo "GUESTINFO ls -l $mnt/in:"
ls -l "$mnt/in" | info

run_watched "" /bin/guesttest -run '@CHECKS@' "$mnt"

echo "GUESTINFO ls -l $mnt/out:"
ls -l "$mnt/out" | info

if [ -x /bin/posixtest.test ]; then
	mkdir "$mnt/posix"
	cd /tmp || exit 1
	export POSIXTEST_DIR="$mnt/posix" POSIXTEST_SKIP="@POSIXSKIP@"
	run_watched "GUESTPOSIX " /bin/posixtest.test -test.run '@POSIXRUN@' -test.v -test.timeout 1h
	rc=$?
	if [ "$rc" = 0 ]; then
		echo "GUESTTEST posix_suite PASS"
	else
		echo "GUESTTEST posix_suite FAIL the suite exited with status $rc"
	fi
	cd / || exit 1
	rmdir "$mnt/posix"
fi

echo "GUESTINFO interrupts per virtqueue:"
grep virtio /proc/interrupts | info
