#!/bin/bash
# guard's Python audit hook under `guard run --backend auto` (the BPF LSM layer where the
# kernel has it): installed into the system's site directory and signed like the stdlib, it
# records a signed script's exec of a data file with the source's digest and the calling
# line; with dynamic_code = "deny" the same exec (and its other spellings) is refused while
# the stdlib's own dynamic code runs, and `python3 -S`, which skips the hook, is refused at
# exec. Each attack is shown to run without guard first.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"

d=$(mktemp -d /tmp/dynamic.XXXXXX)
chmod 755 "$d"
mkdir -m 1777 "$d/out"
marker=$d/out/ran
sign() { evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$1" > /dev/null; }
printf "import os; open('%s', 'w').write('ran')\n" "$marker" > "$d/data.txt"
printf 'import sys\nexec(open("%s/data.txt").read())\n' "$d" > "$d/run.py"
printf 'import timeit\ntimeit.timeit(open("%s/data.txt").read(), number=1)\n' "$d" > "$d/gadget.py"
printf 'for i in range(20000):\n    exec("x = %%d" %% i)\nprint("flood done")\n' > "$d/flood.py"
cat > "$d/baseline.py" << 'EOF'
from __future__ import annotations
import collections, dataclasses, enum, json, types
P = collections.namedtuple("P", "a b")
@dataclasses.dataclass(frozen=True, order=True)
class D:
    a: int = 1
@types.coroutine
def c(): yield
import sys
print("baseline", json.dumps([P(1, 2), D().a]), "native" if "guard_audit_fast" in sys.modules else "python-only")
EOF
chmod 644 "$d"/*.py "$d/data.txt"
for f in "$d"/*.py; do sign "$f"; done
ran() { [ -e "$marker" ] && rm -f "$marker"; }

echo "### without guard"
"${user[@]}" -- python3 "$d/run.py"
check "without guard: exec of a data file runs" ran
"${user[@]}" -- python3 "$d/gadget.py"
check "without guard: timeit of a data file runs" ran
"${user[@]}" -- python3 -S "$d/run.py"
check "without guard: python3 -S runs it" ran
# A virtual environment the user makes: its own site directories, without the hook.
version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$d/venv/bin" "$d/venv/lib/python$version/site-packages"
printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' "$version" > "$d/venv/pyvenv.cfg"
chmod 644 "$d/venv/pyvenv.cfg"
ln -s /usr/bin/python3 "$d/venv/bin/python3"
"${user[@]}" -- "$d/venv/bin/python3" "$d/run.py"
check "without guard: a bare venv runs it" ran

site=/usr/lib/python3/dist-packages
mkdir -p "$site"
# Whatever happens, the tests after this one find the interpreter as it was.
trap 'rm -f "$site/guard_audit_hook.py" "$site/guard_audit_fast.abi3.so" "$site/00-guard-audit-hook.pth"' EXIT
guard python-hook install --site "$site" > "$d/hook.files"
check "hook installed" test -s "$d/hook.files"
while read -r f; do sign "$f"; done < "$d/hook.files"

audit=/var/log/guard/audit-dynamic.jsonl
agent_log=/var/log/guard/agent-dynamic.log
mkdir -p /var/log/guard
# start [POLICY]: the embedded default policy without one.
start() {
    rm -f "$audit"
    # Only the agent's controllers may stop it (self-protection): /usr/bin/kill is one.
    guard run --backend auto ${1:+--policy "$1"} --key "$GUARD_CERT" --audit "$audit" \
        --controller /usr/bin/kill >> "$agent_log" 2>&1 &
    agent=$!
    check "agent starts (${1:-default policy})" wait_agent "$agent" "$agent_log"
}
stop() {
    /usr/bin/kill "$agent"
    wait "$agent" 2> /dev/null
    guard debug lsm-unpin > /dev/null 2>&1
}
# Waits (up to 10 s) for a record of the hook's (code "dynamic") holding every string given
# (JSON fragments such as '"line":2,').
record() {
    local lines
    for _ in $(seq 1 50); do
        lines=$(grep -F '"code":"dynamic"' "$audit" 2> /dev/null)
        for want in "$@"; do
            lines=$(grep -F -- "$want" <<< "$lines")
        done
        [ -n "$lines" ] && return 0
        sleep 0.2
    done
    echo "  no record with $* in:"
    grep -F '"code":"dynamic"' "$audit" | head -5 | sed 's/^/    /'
    return 1
}

echo "### dynamic_code = \"audit\" (the default)"
start
sum=$(sha256sum "$d/data.txt" | cut -d' ' -f1)
check "audit: signed baseline runs" bash -c "${user[*]} -- python3 $d/baseline.py | grep -q baseline"
# The hook's native front (signed beside it) is mapped as a library the LSM layer judges.
check "audit: the hook's native front loads" bash -c "${user[*]} -- python3 $d/baseline.py | grep -q ' native$'"
"${user[@]}" -- python3 "$d/run.py"
check "audit: the exec runs" ran
check "audit: recorded with the digest, caller and line" \
    record '"event":"compile"' "\"sha256\":\"$sum\"" "\"path\":\"$d/run.py\"" '"line":2,' '"uid":65534,'
check "audit: status counts hooked interpreters" bash -c "guard status | grep -Eq 'python hook: +[1-9]'"
check "audit: a flood of exec finishes" bash -c "timeout 120 ${user[*]} -- python3 $d/flood.py | grep -q 'flood done'"
check "audit: the flood is counted, not recorded one by one" record '"event":"over-budget"'
guard status | grep 'python hook' | sed 's/^/  /'
stop

echo "### dynamic_code = \"deny\""
policy=/etc/guard/dynamic-deny.toml
guard policy show | grep -v '^#' | sed 's/^dynamic_code = "audit"$/dynamic_code = "deny"/' > "$policy"
check "policy says deny" grep -q '^dynamic_code = "deny"$' "$policy"
check "policy valid" guard policy check "$policy"
start "$policy"
check "deny: signed baseline runs" bash -c "${user[*]} -- python3 $d/baseline.py | grep -q baseline"
out=$("${user[@]}" -- python3 "$d/run.py" 2>&1)
echo "  -> ${out: -160}"
check "deny: exec of a data file refused" bash -c "! test -e $marker && grep -q 'dynamic code refused' <<< \"\$1\"" _ "$out"
"${user[@]}" -- python3 "$d/gadget.py" > /dev/null 2>&1
check "deny: timeit of a data file refused" bash -c "! test -e $marker"
check "deny: refusal recorded" record '"decision":"deny"' '"enforced":true' '"rule":"dynamic-code"'
"${user[@]}" -- python3 -S "$d/run.py" > /dev/null 2>&1
rc=$?
check "deny: python3 -S refused at exec (rc=$rc)" bash -c "[ $rc -ne 0 ] && ! test -e $marker"
"${user[@]}" -- "$d/venv/bin/python3" "$d/run.py" > /dev/null 2>&1
check "deny: a bare venv (unsigned pyvenv.cfg) runs nothing" bash -c "! test -e $marker"
check "deny: its pyvenv.cfg refused" bash -c "for _ in \$(seq 1 50); do grep -F pyvenv.cfg $audit | grep -q '\"decision\":\"deny\"' && exit 0; sleep 0.2; done; exit 1"
check "deny: -S refusal recorded" bash -c "for _ in \$(seq 1 50); do grep -q audit-hook-required $audit && exit 0; sleep 0.2; done; exit 1"
stop

exit $fail
