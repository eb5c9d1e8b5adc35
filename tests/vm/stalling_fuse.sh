#!/bin/bash
# No user stalls the host through a FUSE daemon (issue 22.1), BPF mode: the daemon
# (stalling_fuse.py, the host test's too) answers the user and never root, so every request
# the agent makes to it hangs for ever. Two ways the agent reaches it, each shown not to hang
# the host nor anyone else's decisions:
# - the reader of the filesystem's own fanotify group opens each event's file there: only
#   opens on that filesystem wait, as they would for its daemon;
# - a worker walks the script operand through the interpreter's cwd (`python3 link` from a
#   cwd on FUSE, link -> the stdlib's asyncio package, a REPL on stdin, refused as the main
#   script): the walk has a deadline, and what it could not find out is no permission
#   (refused). The kernel layer may refuse first; either way, nobody waits.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
audit=/var/log/guard/audit-fuse.jsonl
agent_log=/var/log/guard/agent-fuse.log
mkdir -p /var/log/guard
rm -f "$audit"
[ -e /dev/fuse ] || modprobe fuse
mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections
d=/tmp/stalling-fuse
rm -rf "$d"
mkdir -p "$d/app" "$d/fuse" "$d/out"
chmod 755 "$d" "$d/app" "$d/fuse"
chmod 1777 "$d/out"
printf 'V = "signed"\n' > "$d/app/helper.py"
printf 'import helper\nprint("ok", helper.V)\n' > "$d/app/ok.py"
printf 'open("%s/out/unsigned", "w")\n' "$d" > "$d/app/evil.py"
chmod 644 "$d/app"/*.py
for f in helper ok; do evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$d/app/$f.py" > /dev/null; done
stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
python3 "$(dirname "$0")/stalling_fuse.py" "$d/fuse" --link "repl=$stdlib/asyncio" > "$d/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do grep -q mounted "$d/daemon.log" && break; sleep 0.2; done
check "the FUSE daemon mounts" grep -q mounted "$d/daemon.log"
# nb DIR CMD…: as nobody from DIR (the cd as nobody: root's would wait on the daemon).
nb() {
    local dir=$1
    shift
    timeout -k 5 "${limit:-60}" "${user[@]}" -- env -i PATH=/usr/bin:/bin HOME=/nonexistent \
        sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
}
fuse_serves() { nb "$d/fuse" python3 x.py | grep -q 'ran from fuse'; }
# The package's __main__ runs when nothing refuses it: run by path, asyncio's stops at its
# first (relative) import (CPython 3.11), which shows it ran; refused, it never gets there.
repl_ran() { nb "$d/fuse" python3 repl < /dev/null 2>&1 | grep -q "relative import"; }
repl_refused() { ! repl_ran; }
others_answered() {
    local start=$SECONDS out
    out=$(nb "$d/app" python3 ok.py 2>&1)
    check "$1: another user's signed program runs ($((SECONDS - start)) s)" test "$out" = "ok signed"
    rm -f "$d/out/unsigned"
    start=$SECONDS
    nb "$d/app" python3 evil.py > /dev/null 2>&1
    local rc=$?
    check "$1: unsigned code is refused (rc=$rc, $((SECONDS - start)) s)" \
        bash -c "[ ! -e $d/out/unsigned ] && [ $rc -ne 0 ] && [ $rc -ne 124 ]"
    check "$1: the agent answers its status" timeout 20 guard status > /dev/null
}

# Without guard: the user's files are served, and the link runs the REPL on stdin.
check "without guard: x.py runs from FUSE" fuse_serves
check "without guard: python3 link-to-asyncio runs its __main__" repl_ran

guard run --backend auto --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts" wait_agent "$agent" "$agent_log"
check "the FUSE filesystem is marked on its own" grep -q "marked fuse.stallfs filesystem" "$agent_log"

# An interpreter opening x.py there: whatever waits on the daemon, nobody else does.
limit=120 nb "$d/fuse" python3 x.py > "$d/stuck.out" 2>&1 &
stuck=$!
sleep 5
others_answered "an open on FUSE pending"
echo "  (daemon: $(grep -c stalled "$d/daemon.log") request(s) of root's left unanswered; x.py: $(kill -0 $stuck 2> /dev/null && echo still waiting || echo "answered: $(head -c 100 "$d/stuck.out")"))"

# The operand walk through the stalling cwd: refused within the deadline, never run.
start=$SECONDS
check "a package run through a link in a stalling cwd is refused" repl_refused
echo "  (answered in $((SECONDS - start)) s; reasons: $(grep '__main__.py' "$audit" | grep -o '"reason":"[^"]*"' | sort -u | head -c 600))"
others_answered "walks stuck on FUSE"
grep -q "stalled request" "$d/daemon.log" && echo "  the agent's own requests: $(grep -c stalled "$d/daemon.log") unanswered"

# Its connection aborted, everything waiting on it fails and the agent goes on.
for c in /sys/fs/fuse/connections/*/; do echo 1 > "$c/abort"; done 2> /dev/null
umount -l "$d/fuse"
wait "$daemon" 2> /dev/null
kill -KILL "$stuck" 2> /dev/null
wait "$stuck" 2> /dev/null
others_answered "the daemon gone"
check "the agent is still running" kill -0 "$agent"
/usr/bin/kill -TERM "$agent"
wait "$agent" 2> /dev/null
guard debug lsm-unpin > /dev/null 2>&1
rm -rf "$d"
exit "$fail"
