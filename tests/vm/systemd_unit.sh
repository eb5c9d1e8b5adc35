#!/bin/bash
# The package as Debian and systemd see it (issue 24): systemd is PID 1 (xtask boots this
# test on its own, see xtask/vm/systemd-tests.sh), guard's .deb is installed with apt, and
# every promise of guard.service is shown through systemd itself: `systemctl start` returns
# once enforcement is active (BPF mode, and fanotify through a drop-in), `systemctl reload`
# applies a policy, and fails and keeps the old one when the new one is invalid, the
# watchdog restarts a wedged agent, Restart=always brings a killed one back with BPF mode
# closed meanwhile,
# `systemctl stop` and `apt purge` leave nothing enforcing or pinned, and a reboot comes back
# enforcing (the second boot: GUARD_VM_BOOT=2). Each hardening directive of the unit is in
# force throughout; `systemd-analyze security guard` is printed.
set -u
fail=0
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "not ok: $what"
        fail=1
    fi
}
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
saved=$GUARD_VM_STATE/systemd_unit
mkdir -p "$saved"
user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
marker=/tmp/systemd-unit-ran
app=/opt/guard-app

# python3 -c as an unprivileged user: refused while guard enforces (the exec gate, and the
# BPF LSM layer in BPF mode), runs otherwise.
inline_runs() {
    rm -f "$marker"
    "${user[@]}" python3 -c "open('$marker', 'w')" > /dev/null 2>&1
    [ -e "$marker" ]
}
inline_refused() { ! inline_runs; }
# An unsigned script file as an unprivileged user: refused by fanotify (and the BPF layer).
unsigned_refused() {
    rm -f "$marker"
    "${user[@]}" python3 "$app/unsigned.py" > /dev/null 2>&1
    [ ! -e "$marker" ]
}
unsigned_runs() { ! unsigned_refused; }
signed_runs() { "${user[@]}" python3 "$app/app.py" 2> /dev/null | grep -q '^app ok$'; }
prop() { systemctl show -P "$1" guard.service; }
active() { [ "$(systemctl is-active guard.service)" = active ]; }
backend_is() { /usr/sbin/guard status 2> /dev/null | grep -q "backend $1,"; }
# Nothing of guard's in the BPF filesystem but (empty) directories.
nothing_pinned() { [ -z "$(find /sys/fs/bpf -mindepth 1 ! -type d 2> /dev/null)" ]; }
no_agent() { ! pgrep -x guard > /dev/null; }
# until SECONDS COMMAND...: polls every half second.
until_true() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    while [ $SECONDS -lt $end ]; do
        "$@" && return 0
        sleep 0.5
    done
    "$@"
}
# A counter of `guard status --json`; -1 while the agent does not answer.
status_field() {
    local v
    v=$(/usr/sbin/guard status --json 2> /dev/null | sed -n "s/^ *\"$1\": \([0-9]*\).*/\1/p")
    echo "${v:--1}"
}
reloads_above() { [ "$(status_field reloads)" -gt "$1" ]; }
refusals_above() { [ "$(status_field reload_failures)" -gt "$1" ]; }
restarts_above() { [ "$(prop NRestarts)" -gt "$1" ] && active; }
show_journal() { journalctl -u guard.service --no-pager -n "${1:-40}" | sed 's/^/    /'; }
# require WHAT COMMAND...: a check the rest depends on; its failure ends the test with the
# unit's journal.
require() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "not ok: $what"
        show_journal 80
        exit 1
    fi
}

if [ "${GUARD_VM_BOOT:-1}" = 1 ]; then
    check "systemd is PID 1" test "$(cat /proc/1/comm)" = systemd

    # A signed application, as its vendor ships it.
    mkdir -p "$app"
    printf 'import json\nprint("app ok")\n' > "$app/app.py"
    printf 'open("%s", "w")\n' "$marker" > "$app/unsigned.py"
    chmod 755 "$app"
    chmod 644 "$app/app.py" "$app/unsigned.py"
    evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$app/app.py" > /dev/null 2>&1
    check "without guard: python3 -c runs" inline_runs

    require "apt installs guard's .deb" \
        apt-get install -y -q /mnt/vm/packages/guard.deb
    check "the package enabled the unit" test "$(systemctl is-enabled guard.service)" = enabled
    # No trusted key yet: the unit's condition keeps it from enforcing everything away.
    check "inert without a certificate" test "$(prop ConditionResult)" = no
    check "inert: python3 -c runs" inline_runs

    install -m 0644 "$GUARD_CERT" /etc/guard/keys/vm.pem
    require "systemctl start guard" systemctl start guard.service
    # No wait: `start` returned, so the agent sent READY=1, so it enforces.
    check "right after start, python3 -c is refused (BPF mode)" inline_refused
    check "the agent runs the BPF LSM backend" backend_is bpf-lsm+fanotify
    check "a signed script runs" signed_runs
    check "the unit is active, not degraded" test "$(prop ActiveState)/$(prop SubState)" = active/running

    # Reload: a new policy applies; an invalid one is refused and the previous stays.
    cp /etc/guard/policy.toml "$saved/policy.toml"
    reloads=$(status_field reloads)
    sed -i 's/^mode = "enforce"/mode = "permissive"/' /etc/guard/policy.toml
    require "systemctl reload guard (permissive policy)" systemctl reload guard.service
    # ExecReload= is `guard reload`: systemctl returns once the agent has loaded the policy.
    check "the reload is done when systemctl returns" reloads_above "$reloads"
    # The exec gate follows the loaded policy on its own (a new gate is verified and attached
    # before the old one goes: seconds here).
    check "the new policy applies: python3 -c runs" until_true 60 inline_runs
    failures=$(status_field reload_failures)
    pid=$(prop MainPID)
    echo 'mode = [' >> /etc/guard/policy.toml
    check "systemctl reload guard fails on an invalid policy" \
        bash -c '! systemctl reload guard.service'
    check "the agent refused it" refusals_above "$failures"
    check "the agent keeps running" test "$(prop MainPID)" = "$pid"
    check "the previous policy stays: python3 -c runs" inline_runs
    cp "$saved/policy.toml" /etc/guard/policy.toml
    reloads=$(status_field reloads)
    check "systemctl reload guard (enforce again)" systemctl reload guard.service
    check "back to enforce" reloads_above "$reloads"
    check "python3 -c is refused again" until_true 60 inline_refused

    # Restart=always: a killed agent comes back, and the pinned layers keep BPF mode closed
    # while it is down. Only PID 1 may kill it there (the layer's self-protection).
    pid=$(prop MainPID)
    restarts=$(prop NRestarts)
    check "root's kill -9 of the agent is refused" bash -c "! kill -KILL $pid 2> /dev/null"
    systemctl kill --signal=SIGKILL guard.service
    check "while the killed agent is down, python3 -c is refused" inline_refused
    require "Restart=always brings it back" until_true 60 restarts_above "$restarts"
    check "a new agent" test "$(prop MainPID)" != "$pid"
    check "it enforces: python3 -c is refused" inline_refused

    # The watchdog: a stopped agent pings no more; systemd aborts and restarts it.
    pid=$(prop MainPID)
    restarts=$(prop NRestarts)
    systemctl kill --signal=SIGSTOP guard.service
    require "the watchdog restarts the wedged agent" until_true 120 restarts_above "$restarts"
    check "the journal says why" bash -c \
        "journalctl -u guard.service --no-pager | grep -q 'Watchdog timeout'"
    check "it enforces after the watchdog: python3 -c is refused" inline_refused

    # restart: a stop job too, but the restart's; the layers stay pinned through it (the
    # unit's ExecStopPost= unpins for a plain stop only).
    unpins=$(journalctl -u guard.service --no-pager | grep -c 'lsm: removed')
    require "systemctl restart guard" systemctl restart guard.service
    check "the restart kept the layers pinned" \
        test "$(journalctl -u guard.service --no-pager | grep -c 'lsm: removed')" = "$unpins"
    check "it enforces after the restart: python3 -c is refused" inline_refused

    # stop: nothing enforces, nothing stays pinned.
    require "systemctl stop guard" systemctl stop guard.service
    check "after stop: no agent" no_agent
    check "after stop: nothing pinned" nothing_pinned
    check "after stop: the unit unpinned" bash -c \
        "journalctl -u guard.service --no-pager | grep -q 'lsm: removed'"
    check "after stop: python3 -c runs" inline_runs
    check "after stop: the unit is inactive, not failed" test "$(prop ActiveState)" = inactive

    # The fanotify backend, as an administrator selects it: a drop-in. Its exec gate carries
    # the native-code rule too (BPF mode leaves that to the LSM layer), a program the
    # verifier takes longest over: the start waits for it.
    mkdir -p /etc/systemd/system/guard.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/sbin/guard run --policy /etc/guard/policy.toml --backend fanotify\n' \
        > /etc/systemd/system/guard.service.d/backend.conf
    systemctl daemon-reload
    require "systemctl start guard (--backend fanotify)" systemctl start guard.service
    check "right after start, python3 -c is refused (fanotify)" inline_refused
    check "right after start, an unsigned script is refused (fanotify)" unsigned_refused
    check "the agent runs the fanotify backend" backend_is fanotify
    check "a signed script runs (fanotify)" signed_runs
    check "systemctl stop guard (fanotify)" systemctl stop guard.service
    check "after stop (fanotify): nothing pinned" nothing_pinned
    check "after stop (fanotify): an unsigned script runs" unsigned_runs
    rm -r /etc/systemd/system/guard.service.d
    systemctl daemon-reload

    require "systemctl start guard (BPF again)" systemctl start guard.service
    echo "systemd-analyze security guard:"
    systemd-analyze security --no-pager guard.service | sed 's/^/    /'
    if [ "$fail" != 0 ]; then
        show_journal 60
    fi
    echo "$fail" > "$saved/fail"
    # Reboot: the runner waits to be stopped, and runs this test again after the boot.
    touch "$GUARD_VM_STATE/rebooting"
    systemctl reboot
    exit 0
fi

fail=$(cat "$saved/fail" 2> /dev/null || echo 1)
check "the first boot's part ran" test -f "$saved/policy.toml"
require "after the reboot the agent is active" until_true 60 active
check "after the reboot python3 -c is refused" inline_refused
check "after the reboot the agent runs the BPF LSM backend" backend_is bpf-lsm+fanotify
check "after the reboot a signed script runs" signed_runs

check "apt purge guard" apt-get purge -y -q guard
check "after purge: no agent" no_agent
check "after purge: nothing pinned" nothing_pinned
check "after purge: python3 -c runs" inline_runs
check "after purge: no unit" bash -c "! systemctl cat guard.service > /dev/null 2>&1"
if [ "$fail" != 0 ]; then
    show_journal 60
fi
exit "$fail"
