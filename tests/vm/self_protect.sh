#!/bin/bash
# Self-protection of the agent (BPF LSM layer): root in a shell, which is no controller,
# cannot stop, pause or trace the agent, read its memory, get descriptors for its maps,
# aim SIGIO at it, remove its pins or unmount the BPF filesystem holding them. A named
# controller (`--controller`) stops it; the pins stay protected after it is gone, and
# `guard debug lsm-unpin` (guard itself, a controller) removes them. Refusals are audited.
# An upgrade: another guard binary (another inode) cannot replace the layer until the
# binary that loaded it hands it over (`guard debug lsm-handover`, what the package's
# maintainer scripts do); then it takes over, and the old binary is no controller any more.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
agent_log=/var/log/guard/self-protect.log
audit=/var/log/guard/self-protect.jsonl
pins=/sys/fs/bpf/guard/lsm
# A controller of its own: a copy of kill (the shell's builtin and /usr/bin/kill are not).
ctl=/usr/local/sbin/guard-ctl-kill
install -m 0755 /usr/bin/kill "$ctl"

# start_agent [BINARY]
start_agent() {
    mkdir -p /var/log/guard
    "${1:-guard}" run --backend bpf --key "$GUARD_CERT" --audit "$audit" --controller "$ctl" \
        >> "$agent_log" 2>&1 &
    agent=$!
    wait_agent "$agent" "$agent_log"
}
alive() { kill -0 "$agent" 2>/dev/null; }
# CMD fails with EPERM/EACCES (umount words it "must be superuser").
denied() {
    local out rc
    out=$(timeout 20 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:200}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
        grep -qiE "not permitted|permission denied|must be superuser" <<<"$out"
}
# Refused by the pinned layer as no controller of it (not any failure).
not_controller() {
    local out rc
    out=$(timeout 20 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:200}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "refuses this executable" <<<"$out"
}
# Denied, and the agent lives on.
refused() {
    denied "$@" || return 1
    sleep 0.3
    alive
}
# A signed helper for what needs syscalls the shell cannot make (python3 -c is refused).
helper() {
    cat > "$dir/$1"
    chmod 644 "$dir/$1"
    evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/$1" > /dev/null
}

dir=$(mktemp -d /tmp/selfprot.XXXXXX)
chmod 755 "$dir"
helper bpf_maps.py <<'EOF'
# Every BPF map by id: a descriptor for one named LSM_* must be refused (EPERM); the
# pinned map is refused too. Prints what it got; exit 0 when nothing of guard leaked.
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF, GET_NEXT_ID, GET_FD_BY_ID, INFO_BY_FD, OBJ_GET = 321, 12, 14, 15, 7
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    return r, ctypes.get_errno(), buf.raw
def u32s(*v):
    return b"".join(x.to_bytes(4, "little") for x in v)
leaked, refused, start = [], 0, 0
while True:
    r, err, raw = bpf(GET_NEXT_ID, u32s(start, 0, 0))
    if r < 0:
        break
    start = int.from_bytes(raw[4:8], "little")
    fd, err, _ = bpf(GET_FD_BY_ID, u32s(start, 0, 0))
    if fd < 0:
        print(f"map id {start}: {os.strerror(err)}")
        refused += err == 1
        continue
    info = ctypes.create_string_buffer(128)
    attr = u32s(fd, 128) + ctypes.addressof(info).to_bytes(8, "little")
    bpf(INFO_BY_FD, attr)
    name = info.raw[24:40].split(b"\0")[0].decode()
    print(f"map id {start}: got a descriptor for {name!r}")
    if name.startswith("LSM_"):
        leaked.append(name)
    os.close(fd)
path = ctypes.create_string_buffer(sys.argv[1].encode())
fd, err, _ = bpf(OBJ_GET, ctypes.addressof(path).to_bytes(8, "little") + u32s(0, 0))
print(f"pinned {sys.argv[1]}: {'descriptor ' + str(fd) if fd >= 0 else os.strerror(err)}")
sys.exit(0 if not leaked and refused > 0 and fd < 0 and err == 1 else 1)
EOF
helper sigio.py <<'EOF'
# F_SETOWN the agent, F_SETSIG SIGKILL, O_ASYNC, then make the pipe readable.
import fcntl, os, sys, signal, time
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, int(sys.argv[1]))
fcntl.fcntl(r, 10, signal.SIGKILL)  # F_SETSIG
fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
os.write(w, b"x")
time.sleep(0.5)
EOF

check "agent starts" start_agent
# Nothing below means anything without it (and the umount would go through).
[ $fail = 0 ] || exit 1
check "self-protection hooks attached" bash -c "ls $pins | grep -q link_task_kill && ls $pins | grep -q link_bpf_map"
for sig in TERM KILL STOP INT USR1; do
    check "kill -$sig from a root shell (builtin) refused" refused bash -c "kill -$sig $agent"
done
check "/usr/bin/kill -KILL refused" refused /usr/bin/kill -KILL "$agent"
check "kill -0 still answers" kill -0 "$agent"
check "kill -HUP (reload) allowed" kill -HUP "$agent"
# The kernel layer reloads in the background (seconds under TCG): wait, so the refusals
# below meet the new programs.
for _ in $(seq 1 300); do grep -q "BPF LSM layer reloaded" "$agent_log" && break; sleep 0.2; done
check "the kernel layer reloaded" grep -q "BPF LSM layer reloaded" "$agent_log"
check "agent alive after the reload" alive
sleep 30 &
other=$!
check "strace -p of another process works" bash -c "timeout 3 strace -p $other -o /dev/null; [ \$? = 124 ]"
kill $other
check "strace -p refused" refused strace -p "$agent" -o /dev/null
check "reading /proc/AGENT/mem refused" refused head -c 1 "/proc/$agent/mem"
check "/proc/AGENT/exe still readable (read mode)" test -n "$(readlink /proc/$agent/exe)"
check "ps still lists the agent" bash -c "ps -p $agent -o comm= | grep -q guard"
python3 "$dir/sigio.py" "$agent"
sleep 0.5
check "SIGKILL by SIGIO (F_SETOWN/F_SETSIG) refused" alive
check "no descriptor for the layer's maps (by id, by pin)" python3 "$dir/bpf_maps.py" "$pins/map_LSM_SIGNERS"
check "rm of a pinned link refused" refused rm "$pins/link_file_open"
check "mv of a pinned map refused" refused mv "$pins/map_LSM_SIGNERS" /sys/fs/bpf/stolen
check "rm of the exec gate's pins refused" bash -c "! rm -f /sys/fs/bpf/guard/exec-gate/* 2>/dev/null"
check "umount of the BPF filesystem refused" refused umount /sys/fs/bpf
check "pins all still there" bash -c "ls $pins | grep -q link_file_open && ls $pins | grep -q map_LSM_SIGNERS"
check "agent alive after all that" alive
check "the named controller stops the agent" "$ctl" -TERM "$agent"
for _ in $(seq 1 100); do alive || break; sleep 0.2; done
check "agent gone" bash -c "! kill -0 $agent 2>/dev/null"
wait "$agent" 2>/dev/null
grep -h '"rule":"controller-only"' "$audit" | head -3
for hook in task_kill ptrace_access_check file_send_sigiotask bpf_map inode_unlink inode_rename sb_umount; do
    check "$hook refusal audited" grep -q "\"code\":\"$hook\".*\"rule\":\"controller-only\"" "$audit"
done
check "pins still protected with the agent gone" denied rm "$pins/link_file_open"

echo "-- upgrade: a new guard binary takes over only when handed over"
next=/usr/local/sbin/guard-next
cp "$(command -v guard)" "$next"
takeover_refused() {
    local out
    out=$(timeout 120 "$next" run --backend bpf --key "$GUARD_CERT" 2>&1); rc=$?
    echo "  -> rc=$rc $(grep -m1 -o 'refuses this executable.*' <<<"$out" | head -c 300)"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "debug lsm-handover" <<<"$out"
}
check "a binary not handed over is refused, saying how to hand over" takeover_refused
check "pins untouched by the refused binary" bash -c "ls $pins | grep -q link_file_open"
check "the new binary cannot hand itself over" not_controller "$next" debug lsm-handover "$next"
check "the loading binary hands the layer over" guard debug lsm-handover "$next"
check "the new binary's agent takes over" start_agent "$next"
check "its layer is pinned (the old pins replaced)" bash -c "ls $pins | grep -q link_file_open && ls $pins | grep -q map_LSM_CONTROLLERS"
check "kill -TERM of the new agent from a root shell refused" refused bash -c "kill -TERM $agent"
check "the old binary is no controller of the new layer" not_controller guard debug lsm-handover /usr/bin/true
check "the named controller stops the new agent" "$ctl" -TERM "$agent"
for _ in $(seq 1 100); do alive || break; sleep 0.2; done
wait "$agent" 2>/dev/null
check "the old binary cannot unpin the new layer" denied guard debug lsm-unpin
check "the new binary (a controller) removes the pins" "$next" debug lsm-unpin
rm -f "$next"
check "no pins left" bash -c "[ -z \"\$(ls $pins)\" ]"
rm -rf "$dir"
exit $fail
