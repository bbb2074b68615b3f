#!/bin/sh
# /guest.sh of the benchmark guest (busybox sh): /init (guest/init.sh) runs
# it with the virtio-fs mount point as $1, and unmounts and powers off
# after it. gvtbench reads its workloads from gvtbench.workloads= on the
# kernel command line and takes the host's acknowledgements on the console.
mnt="$1"
echo "GUESTINFO mounted: $(grep virtiofs /proc/mounts)"
/bin/gvtbench -mnt "$mnt"
echo "GUESTINFO interrupts per virtqueue:"
grep virtio /proc/interrupts | sed 's/^/GUESTINFO   /'
