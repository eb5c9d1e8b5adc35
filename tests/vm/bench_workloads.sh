#!/bin/bash
# `cargo xtask bench --vm`: the host bench's workloads in the VM, guard (`guard run --backend
# auto`: the BPF LSM layer, the exec gate and fanotify, with the embedded default policy)
# against no guard, interleaved in one boot: each round runs no guard, then guard (a fresh
# agent), each turn the same steps as the host's:
#   drop caches; P2 one cold import storm; one untimed warm-up; RUNS timed warm storms (P1);
#   one untimed tar then RUNS timed tars of /usr/lib/python3.11 (P4, signed when the image
#   was built: `guard sign --python`); the same of an unsigned copy of it (P4u).
# The storm is `python3 -S storm.py` as nobody importing the first 150 stdlib modules that
# import cleanly here (the host's list may differ a little: other packages). Prints
# GUARD-BENCH-SAMPLE ID none|guard MS and GUARD-BENCH-NOTE TEXT for xtask (bench/mod.rs).
# Fails if guard does not run as bpf-lsm+fanotify, does not refuse an unsigned module or
# refuses anything of the workload. Figures from an emulated CPU: ratios, not milliseconds.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
ROUNDS=3
RUNS=3
MODULES=150
started=$SECONDS
app=$(mktemp -d /tmp/benchapp.XXXXXX)
chmod 755 "$app"
unsigned=/var/tmp/bench-unsigned
rm -rf "$unsigned"
mkdir -p "$unsigned/lib"
cp -R --preserve=mode,ownership,timestamps /usr/lib/python3.11 "$unsigned/lib/" ||
    { echo "not ok: copying the stdlib for P4u"; exit 1; }
chmod 755 "$unsigned" "$unsigned/lib"
# Without --preserve=xattr cp copies no signature. -h: the tree's symlinks (into /etc, as
# in the original tree) are not the copy's files.
if getfattr -R -h -m security.ima "$unsigned" 2> /dev/null | grep -q security.ima; then
    echo "not ok: the unsigned copy has signatures"
    exit 1
fi

cat > "$app/probe.py" << 'EOF'
import sys, importlib, io, contextlib
skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test",
        "lib2to3", "ensurepip", "pydoc_data", "msilib", "nntplib", "telnetlib"}
ok = []
for name in sorted(sys.stdlib_module_names):
    if name.startswith('_') or name in skip:
        continue
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            importlib.import_module(name)
        ok.append(name)
    except BaseException:
        pass
print(' '.join(ok))
EOF
modules=$(cd "$app" && "${user[@]}" -- python3 -S probe.py | tr ' ' '\n' | head -n $MODULES)
count=$(echo "$modules" | grep -c .)
{
    echo "# the import storm"
    echo "$modules" | sed 's/^/import /'
    echo "import sys"
    echo "print(len(sys.modules))"
} > "$app/storm.py"
printf 'import planted\nprint("planted module ran")\n' > "$app/planted_main.py"
chmod 644 "$app"/*.py
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$app/storm.py" > /dev/null
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$app/planted_main.py" > /dev/null
# Written after signing, signed by nobody: the enforcement check.
printf 'print("untrusted code ran")\n' > "$app/planted.py"
chmod 644 "$app/planted.py"
rm -f "$app/probe.py"
echo "GUARD-BENCH-NOTE storm: $count modules ($(cd "$app" && "${user[@]}" -- python3 -S storm.py 2> /dev/null) in sys.modules), $ROUNDS rounds, $RUNS timed runs per warm workload per round; P4 tree $(find /usr/lib/python3.11 -type f | wc -l) files"

# ms WHAT CMD...: runs CMD as nobody in the app directory, prints its wall-clock ms; fails
# the test (and prints its output) if CMD fails.
ms() {
    local what=$1 out t0 t1
    shift
    t0=$EPOCHREALTIME
    if ! out=$(cd "$app" && "${user[@]}" -- "$@" 2>&1 > /dev/null); then
        echo "not ok: $what failed: ${out:0:300}" >&2
        return 1
    fi
    t1=$EPOCHREALTIME
    awk "BEGIN{printf \"%.1f\n\", ($t1 - $t0) * 1000}"
}
# Into a pipe, as on the host: GNU tar skips reading data when writing to /dev/null.
tar_of() { tar -cf - -C "$1" python3.11 | cat > /dev/null; }
export -f tar_of
sample() {
    local id=$1 who=$2 v
    shift 2
    v=$(ms "$id" "$@") || { fail=1; return 1; }
    echo "GUARD-BENCH-SAMPLE $id $who $v"
}

agent_log=/var/log/guard/bench-agent.log
mkdir -p /var/log/guard
agent=
start_agent() {
    # /usr/bin/kill is a controller: the agent protects itself from everyone else.
    guard run --backend auto --key "$GUARD_CERT" --audit /var/log/guard/bench-audit.jsonl \
        --controller /usr/bin/kill >> "$agent_log" 2>&1 &
    agent=$!
    wait_agent "$agent" "$agent_log"
}
stop_agent() {
    /usr/bin/kill -TERM "$agent"
    wait "$agent" 2> /dev/null
    guard debug lsm-unpin > /dev/null 2>&1
    agent=
}
# field NAME: a number or string of `guard status --json` (python3 -c is no option here).
field() { guard status --json | grep -o "\"$1\": *[^,}]*" | head -1 | cut -d: -f2- | tr -d ' "'; }

turn() {
    local who=$1
    if [ "$who" = guard ]; then
        start_agent || { echo "not ok: the agent started"; fail=1; return 1; }
        local backend
        backend=$(field backend)
        if [ "$backend" != "bpf-lsm+fanotify" ]; then
            echo "not ok: guard runs as $backend, not bpf-lsm+fanotify"
            fail=1
            stop_agent
            return 1
        fi
    fi
    sync
    echo 3 > /proc/sys/vm/drop_caches
    sample P2 "$who" python3 -S storm.py || return 1
    ms warm-up python3 -S storm.py > /dev/null || { fail=1; return 1; }
    for _ in $(seq 1 $RUNS); do sample P1 "$who" python3 -S storm.py || return 1; done
    local id tree
    for id in P4 P4u; do
        tree=/usr/lib
        [ $id = P4u ] && tree=$unsigned/lib
        ms "tar warm-up" bash -c "tar_of $tree" > /dev/null || { fail=1; return 1; }
        for _ in $(seq 1 $RUNS); do sample $id "$who" bash -c "tar_of $tree" || return 1; done
    done
    # Every workload above succeeded (a refused import or read fails it): nothing of it
    # was refused. The planted module must be, by guard only.
    local planted rc
    planted=$(cd "$app" && timeout 60 "${user[@]}" -- python3 -S planted_main.py 2>&1)
    rc=$?
    if [ "$who" = guard ]; then
        local decisions
        decisions=$(field decisions)
        stop_agent
        if [ $rc -eq 0 ] || [[ $planted == *"planted module ran"* ]]; then
            echo "not ok: guard did not refuse the planted unsigned module: ${planted:0:300}"
            fail=1
        fi
        [ "$round" = 1 ] && echo "GUARD-BENCH-NOTE guard turn: backend $backend, $decisions code decisions in the first turn, the planted unsigned module refused (rc $rc: $(echo "$planted" | tail -1 | cut -c1-120))"
    elif [[ $planted != *"planted module ran"* ]]; then
        echo "not ok: the planted module does not run without guard: ${planted:0:300}"
        fail=1
    fi
    return 0
}

for round in $(seq 1 $ROUNDS); do
    echo "round $round/$ROUNDS ($((SECONDS - started)) s)"
    turn none || break
    turn guard || break
done
[ -n "$agent" ] && stop_agent
echo "GUARD-BENCH-NOTE bench_workloads.sh took $((SECONDS - started)) s on this kernel (TCG)"
rm -rf "$app" "$unsigned"
exit $fail
