#!/bin/bash
# What the default `[native] code = "trusted-owner"` costs on a Debian userland (issue 16):
# ordinary workloads under the agent with the embedded default policy, each asserted to run
# or to be refused as docs/operations.md#native-code says. Prints the table it checked.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
audit=/var/log/guard/audit-workloads.jsonl
agent_log=/var/log/guard/agent-workloads.log
mkdir -p /var/log/guard
rm -f "$audit"
d=$(mktemp -d /tmp/workloads.XXXXXX)
chmod 755 "$d"
home=$d/home
mkdir -p "$home"
chown 65534:65534 "$home"
printf 'import ssl, sqlite3, json\nprint("signed ok")\n' > "$d/signed.py"
chmod 644 "$d/signed.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$d/signed.py" > /dev/null

guard run --backend auto --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts with the default policy" wait_agent "$agent" "$agent_log"
guard status | grep -E "backend|exec gate"

table=()
# workload NAME runs|refused CMD...: runs CMD (bounded), checks the outcome, records it.
workload() {
    local name=$1 want=$2 out rc got
    shift 2
    out=$(timeout 120 "$@" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then got=runs; else got=refused; fi
    [ $rc -eq 124 ] && got="timed out"
    table+=("| $name | $got |")
    if [ "$got" = "$want" ]; then
        echo "ok: $name: $got"
    else
        echo "not ok: $name: $got, expected $want (rc=$rc)"
        echo "$out" | tail -n 5 | sed 's/^/    /'
        fail=1
    fi
}

# Package tools, as root: apt's and dpkg's programs, a local package with a maintainer script
# and a program, installed, run by a user, removed.
workload "apt-get check, apt-cache policy, dpkg -l" runs \
    sh -c 'apt-get -qq check && apt-cache policy python3 > /dev/null && dpkg -l python3 > /dev/null'
pkg=$d/pkg
mkdir -p "$pkg/DEBIAN" "$pkg/usr/local/bin"
cp /bin/true "$pkg/usr/local/bin/guard-workload-tool"
printf 'Package: guard-workload\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n' \
    > "$pkg/DEBIAN/control"
printf '#!/bin/sh\nset -e\necho postinst ran > /var/tmp/guard-workload-postinst\n' > "$pkg/DEBIAN/postinst"
chmod 755 "$pkg/DEBIAN/postinst"
workload "dpkg-deb --build, dpkg -i (postinst runs), the package's program as nobody, dpkg -r" runs \
    sh -c "dpkg-deb -Zgzip --build $pkg $d/w.deb > /dev/null && dpkg -i $d/w.deb > /dev/null &&
           grep -q ran /var/tmp/guard-workload-postinst &&
           ${user[*]} /usr/local/bin/guard-workload-tool && dpkg -r guard-workload > /dev/null"

# Python as everyone uses it: root's interpreter, its extension modules, a signed script.
workload "signed script importing ssl, sqlite3 (nobody)" runs "${user[@]}" python3 "$d/signed.py"

# A root build: root's output, umask 022; the same with umask 002 (group-writable output).
mkdir -p "$d/build"
workload "root build, umask 022 (program run by root and nobody)" runs \
    sh -c "umask 022 && cp /bin/true $d/build/prog && $d/build/prog && ${user[*]} $d/build/prog"
workload "root build, umask 002 (group-writable program)" refused \
    sh -c "umask 002 && rm -f $d/build/gw && cp /bin/true $d/build/gw && chmod 775 $d/build/gw && $d/build/gw"

# A container-like overlay mounted by root: root-owned image files run.
mkdir -p "$d/lower/bin" "$d/upper" "$d/work" "$d/merged"
cp /bin/true "$d/lower/bin/true"
mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged"
workload "root's overlay (a container image): its program, as root and nobody" runs \
    sh -c "$d/merged/bin/true && ${user[*]} $d/merged/bin/true"
# Rootless: a user namespace's own mount, the user's copy in it.
workload "rootless (unshare -Urm): the host's programs" runs \
    "${user[@]}" unshare -Urm sh -c '/bin/true && ls / > /dev/null'
workload "rootless (unshare -Urm): a copy on the namespace's tmpfs" refused \
    "${user[@]}" unshare -Urm sh -c 'mount -t tmpfs none /mnt && cp /bin/true /mnt/t && /mnt/t'

# A user's venv: the interpreter is a link to root's; a tool the user puts in it is theirs.
workload "user's venv (python3 -m venv --without-pip), its python runs a signed script" runs \
    "${user[@]}" sh -c "python3 -m venv --without-pip $home/venv && $home/venv/bin/python3 $d/signed.py"
workload "user's venv: a compiled tool the user installed in it" refused \
    "${user[@]}" sh -c "cp /bin/true $home/venv/bin/tool && $home/venv/bin/tool"
# ~/.local/bin: a user's #! script run directly (BPF mode judges the script's exec step);
# the same script through sh.
mkdir -p "$home/.local/bin"
printf '#!/bin/sh\nexit 0\n' > "$home/.local/bin/hello"
chmod 755 "$home/.local/bin/hello"
chown -R 65534:65534 "$home/.local"
if guard status | grep -q "bpf-lsm"; then want=refused; else want=runs; fi
workload "~/.local/bin/hello, a user's #!/bin/sh script run directly" $want "${user[@]}" "$home/.local/bin/hello"
workload "sh ~/.local/bin/hello" runs "${user[@]}" sh "$home/.local/bin/hello"

/usr/bin/kill -TERM $agent
wait $agent 2>/dev/null
umount "$d/merged"
echo "| workload (default [native] code = \"trusted-owner\") | outcome |"
echo "|---|---|"
printf '%s\n' "${table[@]}"
grep '"decision":"deny"' "$audit" | grep -o '"code":"[a-z_]*".*"rule":"[a-z-]*"' | sort | uniq -c | head -20
guard debug lsm-unpin > /dev/null 2>&1
rm -rf "$d" /var/tmp/guard-workload-postinst
exit $fail
