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
# tests/vm/*systemd*.sh: the real init, which runs them from a unit. Done again at every boot
# (such a test reboots the VM; the unit is on the snapshot, which survives that).
if [ -f /newroot/mnt/vm/guard-vm-tests.service ]; then
    units=/newroot/etc/systemd/system
    mkdir -p "$units/multi-user.target.wants"
    cp /newroot/mnt/vm/guard-vm-tests.service "$units/"
    ln -sf ../guard-vm-tests.service "$units/multi-user.target.wants/"
    # The tests own the serial console: no login prompt on it.
    ln -sf /dev/null "$units/serial-getty@ttyS0.service"
    # A set machine id: without one, systemd's first-boot logic (presets) would run.
    [ -s /newroot/etc/machine-id ] || echo 6775617264766d746573747330303031 > /newroot/etc/machine-id
    exec switch_root /newroot /lib/systemd/systemd
fi
exec switch_root /newroot /bin/bash /mnt/vm/init.sh
