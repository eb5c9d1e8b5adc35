#!/bin/busybox sh
# First stage of the test VM: load the drivers the root disk needs, mount it,
# and hand over to the per-run init on the run disk. Any failure powers the VM
# off, so xtask sees no exit marker and fails the run instead of hanging.
/bin/busybox --install -s /bin
export PATH=/bin

die() {
    echo "initramfs: $*"
    echo o > /proc/sysrq-trigger
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
    insmod "/lib/modules/$m" || die "insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
    i=$((i + 1))
    [ $i -gt 200 ] && die "root or run disk did not appear"
    sleep 0.05
done
mount -t ext4 /dev/vda /newroot || die "cannot mount the root disk"
mount -t ext4 /dev/vdb /newroot/mnt/vm || die "cannot mount the run disk"
umount /proc /sys /dev
exec switch_root /newroot /bin/bash /mnt/vm/init.sh
