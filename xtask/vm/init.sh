#!/bin/bash
# PID 1 of the test VM (no systemd): set up the kernel filesystems guard
# needs, start the agent, run the command or the demo, report its exit
# status on the console behind a per-run marker, and power off.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=${TERM:-dumb}
echo GUARD-VM-INIT-STARTED

poweroff_now() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -o remount,rw /
hostname guard-vm

set -a
# shellcheck disable=SC1091
. /mnt/vm/env
set +a

while read -r tag dir; do
    [ -n "$tag" ] || continue
    mkdir -p "$dir"
    mount -t virtiofs "$tag" "$dir" || echo "guard-vm: cannot mount share $dir"
done < /mnt/vm/shares

if [ -f /mnt/vm/guard ]; then
    install -m 0755 /mnt/vm/guard /usr/local/bin/guard
    export GUARD_BIN=/usr/local/bin/guard
fi

AGENT_PID=
# The one place that starts guard's agent in the VM.
start_agent() {
    if [ "${GUARD_VM_AGENT:-1}" = 0 ]; then
        echo "guard-vm: agent not started (--no-agent)"
        return 0
    fi
    if [ ! -x /usr/local/bin/guard ]; then
        echo "guard-vm: no guard binary in the VM; running without the agent"
        return 0
    fi
    if ! guard run --help > /dev/null 2>&1; then
        echo "guard-vm: agent not available yet (guard has no 'run' subcommand); running without it"
        return 0
    fi
    mkdir -p /var/log/guard
    guard run --key "$GUARD_CERT" --audit /var/log/guard/audit.jsonl > /var/log/guard/agent.log 2>&1 &
    AGENT_PID=$!
    for _ in $(seq 1 "${GUARD_AGENT_WAIT_TENTHS:-300}"); do
        if guard status > /dev/null 2>&1; then
            echo "guard-vm: agent ready (pid $AGENT_PID)"
            return 0
        fi
        if ! kill -0 "$AGENT_PID" 2> /dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "guard-vm: the agent did not become ready; its log:"
    cat /var/log/guard/agent.log
    return 1
}

if start_agent; then
    cd "${GUARD_VM_CWD:-/root}" || cd /root
    if [ -f /mnt/vm/cmd ]; then
        mapfile -d '' -t cmd < /mnt/vm/cmd
        "${cmd[@]}" < /dev/null
        status=$?
    else
        bash /mnt/vm/demo.sh < /dev/null
        status=$?
    fi
    if [ -n "$AGENT_PID" ] && ! kill -0 "$AGENT_PID" 2> /dev/null; then
        echo "guard-vm: the agent died during the run; its log:"
        cat /var/log/guard/agent.log
        [ "$status" -ne 0 ] || status=70
    fi
else
    status=70
fi
echo "${GUARD_VM_MARKER}=${status}"
poweroff_now
