#!/bin/bash
# Refusals in the kernel audit log (issue #21): with Debian's auditd running, a refusal by
# each layer is found by ausearch with guard's rule: fanotify's as the kernel's own FANOTIFY
# record (fan_info = the rule number), the exec gate's and the BPF LSM layer's as the
# agent's USER_AVC records.
# guard-vm: one kernel
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
refused() {
    local out rc
    out=$(timeout 20 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:160}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 126 ] && [ $rc -ne 127 ]
}

# auditd with a log of its own (the image does not start it at boot).
aud=$(mktemp -d /tmp/auditd.XXXXXX)
mkdir "$aud/plugins"
cat > "$aud/auditd.conf" << EOF
local_events = yes
write_logs = yes
log_file = $aud/audit.log
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 1
max_log_file = 8
num_logs = 2
max_log_file_action = ROTATE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
plugin_dir = $aud/plugins
EOF
chmod 600 "$aud/auditd.conf"
auditd -n -c "$aud" > "$aud/auditd.out" 2>&1 &
auditd_pid=$!
# Registered, and auditing on: a process forked before auditing was ever enabled has no
# audit context, so its fanotify answers would be recorded nowhere (USER_AVC records are
# kept even with auditing off).
registered() { auditctl -s | grep -q "^pid $auditd_pid\$" && auditctl -s | grep -q "^enabled 1\$"; }
for _ in $(seq 1 100); do registered && break; sleep 0.2; done
check "auditd runs, registered, auditing enabled" registered
# A task's FANOTIFY record needs an audit context, that is some syscall rule loaded.
check "a syscall rule loaded" auditctl -a never,exit -F arch=b64 -S acct

agent_log=/var/log/guard/agent-kernel-audit.log
mkdir -p /var/log/guard
guard run --backend auto --key "$GUARD_CERT" --audit /var/log/guard/audit-kernel-audit.jsonl \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts" wait_agent "$agent" "$agent_log"
check "the agent records in the kernel audit log ([audit] kernel = auto)" \
    bash -c "guard status --json | grep -q '\"kernel_audit\": true'"
guard status | grep -E "^(agent|exec gate|kernel audit):"

d=$(mktemp -d /tmp/kaudit.XXXXXX)
chmod 755 "$d"
printf 'open("%s/ran", "w")\n' "$d" > "$d/unsigned.py"
chmod 644 "$d/unsigned.py"
chmod 1777 "$d"
check "fanotify: an unsigned script refused" refused "${user[@]}" python3 "$d/unsigned.py"
check "the launch layer: python3 -c refused" refused "${user[@]}" python3 -c 'print("inline ran")'
"${user[@]}" sh -c "cp /bin/true $d/true"
# An exec the kernel refuses fails with EACCES (setpriv says so, exit 126).
exec_refused() { timeout 20 "${user[@]}" "$1" 2>&1 | grep -q "failed to execute.*Permission denied"; }
check "the BPF LSM layer: nobody's copy of /bin/true refused" exec_refused "$d/true"
check "nothing ran" test ! -e "$d/ran"
sleep 2

log=$aud/audit.log
# What the agent decided, and the kernel's audit state, to read a failure by.
grep -h '"decision":"deny"' /var/log/guard/audit-kernel-audit.jsonl | cut -c1-260
auditctl -s | grep -E "^(enabled|pid|lost|backlog_limit)"
guard status --json | grep '"kernel_audit'
check "fanotify answers asked the kernel to record them" \
    bash -c "! guard status --json | grep -q '\"kernel_audit_answers\": 0,'"
fanotify=$(ausearch -if "$log" -m FANOTIFY 2>/dev/null)
user_avc=$(ausearch -if "$log" -m USER_AVC 2>/dev/null)
echo "$fanotify" | grep -E "FANOTIFY|python3" | head -6 | cut -c1-240
echo "$user_avc" | grep guard= | head -6 | cut -c1-300
check "ausearch -m FANOTIFY: fanotify's refusal, rule 6 (valid-signature), by python3" \
    bash -c "grep -q 'resp=2 fan_type=1 fan_info=6 ' <<< \"\$0\" && grep -q 'exe=\"/usr/bin/python3' <<< \"\$0\"" "$fanotify"
check "ausearch -m USER_AVC: the launch refusal, rule no-inline-code" \
    grep -q 'guard="DENIED" layer=[a-z-]* decision=deny rule=no-inline-code rule_number=7 mode=enforce' <<< "$user_avc"
check "ausearch -m USER_AVC: the exec gate's refusal" \
    grep -q 'guard="DENIED" layer=exec-gate decision=deny' <<< "$user_avc"
check "ausearch -m USER_AVC: the BPF LSM layer's refusal, rule trusted-owner" \
    grep -q 'guard="DENIED" layer=bpf-lsm decision=deny rule=trusted-owner rule_number=3 ' <<< "$user_avc"
check "ausearch -i names the fanotify answer" \
    bash -c "ausearch -if '$log' -m FANOTIFY -i | grep -q 'resp=deny'"
check "aureport counts the events" bash -c "aureport -if '$log' --summary | grep -qi 'number of events'"
check "no record failed to reach the audit log" \
    bash -c "guard status --json | grep -q '\"kernel_audit_failed\": 0'"

/usr/bin/kill -TERM "$agent"
wait "$agent" 2> /dev/null
auditctl -d never,exit -F arch=b64 -S acct > /dev/null 2>&1
kill "$auditd_pid" 2> /dev/null
wait "$auditd_pid" 2> /dev/null
auditctl -e 0 > /dev/null 2>&1
guard debug lsm-unpin > /dev/null 2>&1
exit $fail
