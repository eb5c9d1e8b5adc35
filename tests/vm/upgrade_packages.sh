#!/bin/bash
# Package updates (issue 17), BPF mode, the agent installed from the project's .deb and
# enforcing its packaged policy: python3.11 is upgraded through apt from a signed local
# repository (built by xtask: the installed python3.11 packages repacked as the next
# version, one with a new module in it). No private key is used after the start: the new
# files are trusted because apt verified them, and only those.
# Runs last (its name): it leaves python3.11 upgraded.
# What it shows is dpkg's, apt's and the agent's work, the same on every kernel (the kernel
# layer's hooks are the other tests'): the suite (`cargo xtask test`) runs it on its first
# kernel; `cargo xtask vm-test` on every kernel.
# guard-vm: one kernel
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
pk=/mnt/vm/packages
audit=/var/log/guard/audit-packages.jsonl
agent_log=/var/log/guard/agent-packages.log
apt_log=/var/log/guard/apt-packages.log
mkdir -p /var/log/guard
rm -f "$audit"
marker=/tmp/packages-ran
rm -f "$marker"
pyversion=$(dpkg-query -W -f '${Version}' python3.11)

# Signed programs of an application, as its vendor ships them (signed on the build host).
app=/opt/guard-app
mkdir -p "$app"
printf 'import json, email.message, sysconfig\nprint("app ok", json.dumps([1]))\n' > "$app/app.py"
printf 'import guard_upgrade_marker\nprint("marker", guard_upgrade_marker.VERSION)\n' > "$app/new.py"
printf 'import guard_planted\n' > "$app/planted.py"
printf 'import guard_local\n' > "$app/local.py"
printf 'import guard_test_module\nprint("module", guard_test_module.NAME)\n' > "$app/module.py"
chmod 755 "$app"
chmod 644 "$app"/*.py
for f in "$app"/*.py; do
    evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$f" > /dev/null 2>&1
done
# Code planted by root beside the standard library: from no package, unsigned.
printf 'open("%s", "w")\n' "$marker" > /usr/lib/python3.11/guard_planted.py
chmod 644 /usr/lib/python3.11/guard_planted.py

# apt sees only the test repository (the VM has no network); its key is trusted in apt.
repo=/srv/guard-repo
rm -rf "$repo"
cp -r "$pk/repo" "$repo"
chmod -R a+rX "$repo"
mkdir -p /etc/apt/keyrings
install -m 644 "$repo/key.asc" /etc/apt/keyrings/guard-test.asc
mv /etc/apt/sources.list /etc/apt/sources.list.off 2> /dev/null
echo "deb [signed-by=/etc/apt/keyrings/guard-test.asc] file:$repo ./" \
    > /etc/apt/sources.list.d/guard-test.list
check "apt-get update verifies the signed repository" apt-get update -q

# A package nobody verified, as a local build or a download would be.
local_pkg=$(mktemp -d /tmp/local-deb.XXXXXX)
mkdir -p "$local_pkg/DEBIAN" "$local_pkg/usr/lib/python3/dist-packages"
printf 'Package: guard-local\nVersion: 1.0\nArchitecture: all\nMaintainer: x <x@x>\nDescription: local\n' \
    > "$local_pkg/DEBIAN/control"
printf 'open("%s", "w")\n' "$marker" > "$local_pkg/usr/lib/python3/dist-packages/guard_local.py"
chmod -R go-w "$local_pkg"
dpkg-deb -b "$local_pkg" /tmp/guard-local.deb > /dev/null

# Without guard: every one of these runs.
"${user[@]}" python3.11 -c "open('$marker', 'w')"
check "without guard: -c runs" test -e "$marker"
rm -f "$marker"
"${user[@]}" python3 "$app/planted.py"
check "without guard: the planted module runs" test -e "$marker"
rm -f "$marker"

# The package, as an administrator installs it; no systemd here, so the agent is started
# as its unit starts it, with the packaged policy and the VM's certificate.
check "guard's .deb installs" dpkg -i "$pk/guard.deb"
check "the apt hook is installed" test -f /etc/apt/apt.conf.d/50guard
install -m 644 "$GUARD_CERT" /etc/guard/keys/vm.pem
/usr/sbin/guard run --policy /etc/guard/policy.toml --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts" wait_agent "$agent" "$agent_log"
check "before: a signed script importing the stdlib runs" \
    bash -c "${user[*]} python3 $app/app.py | grep -q 'app ok'"

# -c, run throughout the upgrade: it must never run.
stop=/tmp/packages-stop
rm -f "$stop"
(
    n=0
    while [ ! -e "$stop" ]; do
        timeout 30 "${user[@]}" python3.11 -c "open('$marker', 'w')" 2> /dev/null
        timeout 30 "${user[@]}" python3 -c "open('$marker', 'w')" 2> /dev/null
        n=$((n + 1))
        # Throughout, not flat out: each refused exec costs the emulated CPU apt runs on.
        sleep 5
    done
    echo "$n" > /tmp/packages-loops
) &
loop=$!
inode_before=$(stat -L -c %i /usr/bin/python3.11)
audit_before=$(wc -l < "$audit")
started=$SECONDS
DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -q python3.11 \
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib > "$apt_log" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { tail -40 "$apt_log"; tail -20 "$agent_log"; }
took=$((SECONDS - started))
touch "$stop"
wait "$loop"
audit_after=$(wc -l < "$audit")
during() { sed -n "$((audit_before + 1)),${audit_after}p" "$audit" | grep '"decision":"deny"'; }
after() { sed -n "$((audit_after + 1)),\$p" "$audit" | grep '"decision":"deny"'; }
export -f during after
export audit audit_before audit_after
echo "apt-get install took ${took} s, rc $rc; -c tried $(cat /tmp/packages-loops) times during it"
grep "guard:" "$apt_log"
check "the upgrade completes with its maintainer scripts" test "$rc" -eq 0
check "no error in apt's output" bash -c "! grep -q '^E:' $apt_log"
new=$(dpkg-query -W -f '${Version}' python3.11)
check "python3.11 went from $pyversion to $new" test "$new" = "$pyversion+guard1"
check "a new python3.11 inode" test "$(stat -L -c %i /usr/bin/python3.11)" != "$inode_before"
check "-c never ran during the upgrade" test ! -e "$marker"
check "-c was tried during the upgrade" test "$(cat /tmp/packages-loops)" -gt 0
check "the new stdlib carries no signature" \
    bash -c "! getfattr -n security.ima /usr/lib/python3.11/json/__init__.py 2> /dev/null"

check "after: a signed script importing the stdlib runs as a user" \
    bash -c "${user[*]} python3 $app/app.py | grep -q 'app ok'"
check "after: a module new in the upgrade is trusted" \
    bash -c "${user[*]} python3 $app/new.py | grep -q 'marker $new'"
"${user[@]}" python3.11 -c "open('$marker', 'w')"
check "after: -c refused" test ! -e "$marker"
"${user[@]}" python3 "$app/planted.py"
check "after: the planted module stays refused" test ! -e "$marker"
# (Not `tee /dev/stderr`: it reopens the console log and truncates it.)
explained=$(/usr/sbin/guard explain --policy /etc/guard/policy.toml --user nobody \
    /usr/lib/python3.11/json/__init__.py)
echo "$explained" | grep valid-signature
check "guard explain names the package" \
    grep -q "package libpython3.11-stdlib $new (amd64) from guard-test" <<< "$explained"
status=$(/usr/sbin/guard status)
echo "$status" | grep trust
check "guard status counts the packages" grep -q '(4 from packages apt verified' <<< "$status"
/usr/sbin/guard packages list
check "bytecode the maintainer scripts compiled is trusted" bash -c \
    "/usr/sbin/guard packages list | grep '^libpython3.11-stdlib' | grep -vq 'bytecode 0$\|bytecode pending'"
# Sources were trusted before dpkg unpacked them; bytecode once the maintainer scripts
# compiled it (a pyc refused in between is read from its trusted source instead).
check "no stdlib source refused during the upgrade" \
    bash -c "! during | grep -q '\"path\":\"/usr/lib/python3.11/[^\"]*\\.py\"'"
check "no bytecode refused after it" bash -c "! after | grep -q '__pycache__'"
after | grep '__pycache__' | head -3

# Unverified: dpkg -i of a local build.
check "dpkg -i of an unverified .deb installs" dpkg -i /tmp/guard-local.deb
"${user[@]}" python3 "$app/local.py"
check "its module stays untrusted" test ! -e "$marker"
# Verified packages installed with plain dpkg -i (no apt, no hook): unsupported, untrusted.
check "dpkg -i of the repository's .deb installs" dpkg -i "$repo"/guard-test-module_1.0_all.deb
check "without apt its module is untrusted" \
    bash -c "! ${user[*]} python3 $app/module.py 2> /dev/null | grep -q module"
check "apt-get reinstalls it" apt-get install -y -q --reinstall guard-test-module
check "through apt its module is trusted" \
    bash -c "${user[*]} python3 $app/module.py | grep -q 'module guard-test-module'"
# Removal: the list goes, and with it the trust of that content anywhere.
module=/usr/lib/python3/dist-packages/guard_test_module.py
cp "$module" /tmp/guard_test_module.py.saved
check "apt-get removes it" apt-get remove -y -q guard-test-module
check "its list is gone" bash -c "! ls /var/lib/guard/packages | grep -q guard-test-module"
install -m 644 /tmp/guard_test_module.py.saved "$module"
check "the same content put back by root is untrusted" \
    bash -c "! ${user[*]} python3 $app/module.py 2> /dev/null | grep -q module"
rm -f "$module"

/usr/bin/kill -TERM $agent
wait $agent 2> /dev/null
guard debug lsm-unpin > /dev/null 2>&1
dpkg -P guard-local > /dev/null 2>&1
rm -rf "$local_pkg" /tmp/guard-local.deb "$marker" /usr/lib/python3.11/guard_planted.py
exit $fail
