#!/bin/bash
# The test runner when systemd is PID 1 (guard-vm-tests.service): runs /mnt/vm/tests/*.sh as
# run-tests.sh does, reports the status behind the run's marker, and powers off. Such a test
# may reboot the VM: it sets $GUARD_VM_STATE/rebooting and asks systemd; the runner then
# waits to be stopped, and runs the test again after the boot (GUARD_VM_BOOT tells which).
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
echo GUARD-VM-INIT-STARTED
set -a
# shellcheck disable=SC1091
. /mnt/vm/env
set +a
export GUARD_VM_STATE=/var/lib/guard-vm
mkdir -p "$GUARD_VM_STATE"
boot=$(($(cat "$GUARD_VM_STATE/boots" 2> /dev/null || echo 0) + 1))
echo "$boot" > "$GUARD_VM_STATE/boots"
sync
export GUARD_VM_BOOT=$boot
rm -f "$GUARD_VM_STATE/rebooting"

# The boot is over (the runner itself is part of it: Type=exec).
state=$(systemctl is-system-running --wait 2> /dev/null)
echo "guard-vm: boot $boot under systemd $(systemctl --version | head -n 1 | cut -d' ' -f2): $state"
[ "$state" = running ] || systemctl --failed --no-legend --plain

status=0
# A test may reboot once; a third boot is a panic's or a loop's.
if [ "$boot" -gt 2 ]; then
    echo "not ok: the VM booted $boot times"
    status=1
else
    cd /root || exit 1
    for t in /mnt/vm/tests/*.sh; do
        name=$(basename "$t")
        echo "=== $name on $(uname -r), boot $boot"
        started=$SECONDS
        if bash "$t" < /dev/null; then
            result=PASS
        else
            result=FAIL
            status=1
        fi
        if [ -e "$GUARD_VM_STATE/rebooting" ]; then
            echo "guard-vm: $name reboots the VM"
            sleep infinity
        fi
        echo "GUARD-VM-TEST $result $name $((SECONDS - started)) s"
    done
fi
echo "${GUARD_VM_MARKER}=${status}"
sync
echo o > /proc/sysrq-trigger
sleep 10
