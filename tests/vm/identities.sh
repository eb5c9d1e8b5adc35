#!/bin/bash
# Identities follow the files (issue 17), BPF mode: a package update renames a new
# python3.11 over the old one (a new inode, as dpkg does). The agent adopts the new inode at
# its first exec, before the kernel runs it: -c is killed and an unsigned script refused
# from the first run of every new inode, with no reload; a signed script still runs.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
audit=/var/log/guard/audit-identities.jsonl
agent_log=/var/log/guard/agent-identities.log
mkdir -p /var/log/guard
rm -f "$audit"
py=$(readlink -f /usr/bin/python3)
marker=/tmp/identities-ran
d=$(mktemp -d /tmp/identities.XXXXXX)
chmod 755 "$d"
printf 'open("%s", "w")\n' "$marker" > "$d/unsigned.py"
printf 'print("signed ok")\n' > "$d/signed.py"
chmod 644 "$d/unsigned.py" "$d/signed.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$d/signed.py" > /dev/null
# As dpkg does: the new file beside the old, renamed over it.
replace() { cp "$py" "$py.dpkg-new" && mv "$py.dpkg-new" "$py"; }

# Without guard, a renamed copy is just as much python3.
replace
rm -f "$marker"
"${user[@]}" python3 -c "open('$marker', 'w')"
check "without guard: -c of a replaced python3 runs" test -e "$marker"

guard run --backend auto --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts" wait_agent "$agent" "$agent_log"
for round in 1 2 3 4 5; do
    replace
    rm -f "$marker"
    timeout 30 "${user[@]}" python3 -c "open('$marker', 'w')"
    rc=$?
    check "round $round: -c of the new inode refused (rc=$rc)" \
        bash -c "[ ! -e $marker ] && [ $rc -ne 0 ] && [ $rc -ne 124 ]"
    replace
    timeout 30 "${user[@]}" python3 "$d/unsigned.py"
    rc=$?
    check "round $round: an unsigned script refused by the new inode (rc=$rc)" \
        bash -c "[ ! -e $marker ] && [ $rc -ne 0 ] && [ $rc -ne 124 ]"
    replace
    check "round $round: a signed script runs on the new inode" \
        bash -c "${user[*]} python3 $d/signed.py | grep -q 'signed ok'"
done
check "adoptions logged" grep -q "adopted before its first exec" "$agent_log"
grep "adopted" "$agent_log" | head -3
/usr/bin/kill -TERM $agent
wait $agent 2>/dev/null
guard debug lsm-unpin > /dev/null 2>&1
rm -rf "$d" "$marker"
exit $fail
