#!/bin/bash
# `guard run` (backend auto) on a kernel with BPF LSM: the kernel layer, the exec gate and
# fanotify together with the embedded default policy. Signed code runs; unsigned code, a
# FIFO script, `python3 -c`, a module someone holds open for writing and code on a
# user-namespace tmpfs are refused; after a SIGKILL of the agent the pinned kernel layer
# still runs what the agent verified and refuses the rest (fail closed), and a restarted
# agent takes over.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
# Refused: the command ran (not 126/127: not found), failed, and did not time out (124).
refused() {
    local out rc
    out=$(timeout 20 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:160}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 126 ] && [ $rc -ne 127 ]
}
agent_log=/var/log/guard/agent-bpf.log
start_agent() {
    mkdir -p /var/log/guard
    # The agent protects itself from everyone but its controllers: /usr/bin/kill is one
    # here, so the test can SIGKILL it (a crash, for fail-closed) where a shell could not.
    guard run --backend auto --key "$GUARD_CERT" --audit /var/log/guard/audit.jsonl \
        --controller /usr/bin/kill >> "$agent_log" 2>&1 &
    agent=$!
    wait_agent "$agent" "$agent_log"
}

dir=$(mktemp -d /tmp/agentbpf.XXXXXX)
chmod 755 "$dir"
printf 'print("signed ok")\n' > "$dir/signed.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/signed.py" > /dev/null
printf 'open("%s/ran", "w")\n' "$dir" > "$dir/unsigned.py"
chmod 644 "$dir"/*.py
chmod 1777 "$dir"
mkfifo -m 666 "$dir/fifo"
printf 'import sys\nprint(open(sys.argv[1]).read())\n' > "$dir/readfile.py"
chmod 644 "$dir/readfile.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/readfile.py" > /dev/null

# A writer that opens verified code while the agent is still checking an interpreter's open
# of it (a large file: hashing takes a while) is not refused, since nobody reads the file
# yet; it could write after the check, before the read. The kernel refuses that open after
# the agent allowed it. Without guard the same steps inject the writer's bytes.
printf 'import os, sys, time\nprint("opening", flush=True)\ntry:\n    f = open(sys.argv[1], "rb")\nexcept PermissionError:\n    print("refused", flush=True)\n    sys.exit(0)\nprint("opened", flush=True)\nwhile not os.path.exists(sys.argv[2]):\n    time.sleep(0.05)\nprint("INJECTED" if f.read(8) == b"INJECTED" else "intact", flush=True)\n' > "$dir/window.py"
chmod 644 "$dir/window.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/window.py" > /dev/null
# window_writer BIG: starts window.py on BIG as nobody; once its open is waiting on
# fanotify (or done, without guard), opens BIG for writing, and writes after the open.
window_writer() {
    local big=$1 out=$dir/window.out pid
    rm -f "$dir/window.go" "$out"
    "${user[@]}" -- python3 -B "$dir/window.py" "$big" "$dir/window.go" > "$out" 2>&1 &
    pid=$!
    for _ in $(seq 1 2000); do grep -q opening "$out" 2> /dev/null && break; sleep 0.01; done
    for _ in $(seq 1 2000); do
        grep -q fanotify "/proc/$pid/wchan" 2> /dev/null && break
        grep -qE "opened|refused" "$out" && break
        sleep 0.005
    done
    grep -q fanotify "/proc/$pid/wchan" 2> /dev/null && echo "  (writer opens during the check)"
    exec 4<> "$big"
    for _ in $(seq 1 2000); do grep -qE "opened|refused" "$out" && break; sleep 0.01; done
    printf 'INJECTED' >&4
    exec 4>&-
    touch "$dir/window.go"
    wait "$pid"
    cat "$out"
}
# window_result WANT [during]: WANT is what window.py printed; with `during`, the writer's
# open must have come while the agent was checking (else the window was missed).
window_result() {
    big_module "$dir/big.py"
    window_writer "$dir/big.py" > "$dir/window.res"
    sed 's/^/  /' "$dir/window.res"
    grep -q "$1" "$dir/window.res" && { [ $# -eq 1 ] || grep -q "during the check" "$dir/window.res"; }
}
# Group-writable (group adm, which nobody is not in): not writable by the runner, so the
# agent allows it for nobody, and a member of adm may write it. Such a verdict depends on
# the runner, so the agent does not hand it to the kernel: only the kernel's comparison at
# `file_post_open` sees the writer.
big_module() {
    rm -f "$1"
    { printf 'print(1)\n'; head -c 48000000 /dev/zero | tr '\0' '#'; printf '\n'; } > "$1"
    chgrp adm "$1"
    chmod 664 "$1"
    evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$1" > /dev/null
}
check "without guard, a writer opened around an open injects its bytes" window_result INJECTED
check "agent starts" start_agent
guard status | head -4
check "backend is bpf-lsm+fanotify" bash -c "guard status | grep -q 'backend bpf-lsm+fanotify'"
check "signed script runs as nobody" bash -c "${user[*]} -- python3 $dir/signed.py | grep -q 'signed ok'"
check "unsigned script refused" refused "${user[@]}" -- python3 "$dir/unsigned.py"
check "python3 -c killed" refused "${user[@]}" -- python3 -c "open('$dir/ran', 'w')"
check "FIFO script refused without hanging" refused "${user[@]}" -- python3 "$dir/fifo"
check "no payload ran" test ! -e "$dir/ran"
# A signed module modified in place (same size) after its first import is refused next time.
printf 'V = "one"\n' > "$dir/mod.py"
printf 'import mod\nprint(mod.V)\n' > "$dir/imp.py"
chmod 644 "$dir/mod.py" "$dir/imp.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/mod.py" > /dev/null
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/imp.py" > /dev/null
check "signed module imports" bash -c "cd $dir && ${user[*]} -- python3 -B imp.py | grep -q one"
printf 'V = "two"\n' > "$dir/mod.py"
check "the same module modified in place is refused" refused "${user[@]}" -- python3 -B "$dir/imp.py"
# A writer (here root's shell) holding a signed module open could change it under the
# reader after the check: refused while the writer is there, fine once it is gone.
printf 'V = "held"\n' > "$dir/held.py"
printf 'import held\nprint(held.V)\n' > "$dir/holder.py"
chmod 644 "$dir/held.py" "$dir/holder.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/held.py" > /dev/null
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/holder.py" > /dev/null
exec 3>> "$dir/held.py"
check "a module open for writing elsewhere is refused" refused "${user[@]}" -- python3 -B "$dir/holder.py"
exec 3>&-
check "the same module imports once the writer is gone" bash -c "${user[*]} -- python3 -B $dir/holder.py | grep -q held"
# Verified code an interpreter is reading may not be written or truncated meanwhile (a check
# at open cannot cover a writer that comes after it), by root neither; once released it may.
printf 'import sys, time\nf = open(sys.argv[1])\nprint("holding", flush=True)\ntime.sleep(5)\n' > "$dir/hold.py"
printf 'V = 1\n' > "$dir/victim.py"
chmod 644 "$dir/hold.py" "$dir/victim.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/hold.py" > /dev/null
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/victim.py" > /dev/null
"${user[@]}" -- python3 -B "$dir/hold.py" "$dir/victim.py" > "$dir/hold.out" 2>&1 &
holder=$!
for _ in $(seq 1 100); do grep -q holding "$dir/hold.out" && break; sleep 0.1; done
check "verified code being read: write open refused" bash -c "! echo '#' >> $dir/victim.py"
# truncate(2) by path, no open: perl's truncate with a file name.
check "verified code being read: truncate refused" bash -c "! perl -e 'truncate(\"$dir/victim.py\", 0) or exit 1'"
wait $holder
check "released: it can be written again" bash -c "echo '#' >> $dir/victim.py"
check "a writer that opens verified code during its check: the open is refused" window_result refused during
# A tmpfs mounted in a user namespace belongs to its creator (owners, xattrs): refused by
# the kernel whatever it holds, and fanotify never sees it. The kernel cannot tell a code
# read from a data read, so interpreters read nothing there.
check "code on a user-namespace tmpfs is refused" refused "${user[@]}" -- unshare -Urm sh -c \
    "mount -t tmpfs none /mnt && cp $dir/unsigned.py /mnt/u.py && python3 /mnt/u.py"
check "data on it is refused too" refused "${user[@]}" -- unshare -Urm sh -c \
    "mount -t tmpfs none /mnt && echo data > /mnt/d && python3 $dir/readfile.py /mnt/d"
sleep 1
check "kernel refusal audited" grep -q '"rule":"regular-file"' /var/log/guard/audit.jsonl
check "writer refusal audited" grep -q '"rule":"no-open-writers"' /var/log/guard/audit.jsonl
check "kernel writer refusal audited" grep -q 'file_open refused rule=no-open-writers' /var/log/guard/audit.jsonl
check "kernel truncate refusal audited" grep -q 'inode_setattr refused rule=no-open-writers' /var/log/guard/audit.jsonl
check "user-namespace refusal audited" grep -q '"rule":"trusted-filesystem"' /var/log/guard/audit.jsonl
# Verified while the agent ran: signed.py (and python's own modules), cached.py.
printf 'print("cached ok")\n' > "$dir/cached.py"
chmod 644 "$dir/cached.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$dir/cached.py" > /dev/null
check "cached.py runs" bash -c "${user[*]} -- python3 -B $dir/cached.py | grep -q 'cached ok'"
/usr/bin/kill -KILL $agent
wait $agent 2>/dev/null
check "FIFO still refused with the agent SIGKILLed (pinned layer)" refused "${user[@]}" -- python3 "$dir/fifo"
check "python3 -c still killed with the agent SIGKILLed (pinned gate)" refused "${user[@]}" -- python3 -c "open('$dir/ran', 'w')"
check "unsigned script refused with the agent SIGKILLed (fail closed)" refused "${user[@]}" -- python3 "$dir/unsigned.py"
check "verified script still runs with the agent SIGKILLed" bash -c "${user[*]} -- python3 -B $dir/signed.py | grep -q 'signed ok'"
# Rewritten with the very same bytes: the kernel cannot re-verify, so it refuses until the
# agent is back.
cp "$dir/cached.py" "$dir/cached.copy"
cat "$dir/cached.copy" > "$dir/cached.py"
check "a verified file written to while the agent is down is refused" refused "${user[@]}" -- python3 -B "$dir/cached.py"
check "no payload ran" test ! -e "$dir/ran"
check "a restarted agent takes over" start_agent
check "unsigned script refused again" refused "${user[@]}" -- python3 "$dir/unsigned.py"
check "the rewritten file runs again (verified anew)" bash -c "${user[*]} -- python3 -B $dir/cached.py | grep -q 'cached ok'"
/usr/bin/kill -TERM $agent
wait $agent 2>/dev/null
guard debug lsm-unpin > /dev/null 2>&1
exit $fail
