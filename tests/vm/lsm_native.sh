#!/bin/bash
# The policy's executable rules (`[native] code`), for every process: bprm_check_security
# judges each file an exec runs, mmap_file/file_mprotect each executable mapping.
#   trusted: a nobody-built copy of /bin/true, a copy of ld.so, `ld.so ./prog`, an
#            LD_PRELOAD of nobody's library (its constructor must not run), fexecve of a
#            memfd, exec of an O_TMPFILE, a root-owned world-writable copy and a root-owned
#            copy on ramfs (no trusted type) are refused; /usr programs, python3 and its
#            extension modules, `ld.so /bin/true` run.
#   trusted-owner (the default): as trusted, but root's copy on ramfs runs; a root-owned
#            copy whose ACL lets nobody (a named user, a named group) write it is refused,
#            one whose mask takes the write away runs.
#   linked:  only the memfd and O_TMPFILE execs are refused.
#   any:     everything runs (the checks above can fail).
# Then under `guard run` with a policy saying code = "trusted": refused and audited; and
# with the default policy: nobody's copy of python3 runs neither -c nor a script.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
# No guard layer or exec gate left pinned by an earlier test (the gate kills `ld.so PROG`
# and `python3 -c`, which the checks below use).
guard debug lsm-unpin > /dev/null 2>&1
ldso=/lib64/ld-linux-x86-64.so.2
marker=/tmp/native-preload-ran
# A library whose constructor creates $marker (no libc):
#   static const char marker[] = "/tmp/native-preload-ran";
#   __attribute__((constructor)) static void run(void) {
#       long fd;
#       asm volatile("syscall" : "=a"(fd) : "0"(2L), "D"(marker), "S"(0101L), "d"(0644L)
#                    : "rcx", "r11", "memory");
#       if (fd >= 0) asm volatile("syscall" : : "a"(3L), "D"(fd) : "rcx", "r11", "memory");
#   }
# gcc -Os -shared -fPIC -nostdlib -s -Wl,--build-id=none -Wl,-z,noseparate-code preload.c
# (gcc 12.2), then gzip -9 -n | base64: the VM image has no compiler.
preload_so='
H4sIAAAAAAACA+1YT2sTURCft2nSWGvSQ4VIqsaDVNG8/EGhKBVL/VOxh1rwHF66qxtxN2XzKokI
njz0IPQjePAD9Fg8SMCDPfZLCH4BpV6ML8m8ZHdIaIXq6f3g7W9ndmbe25l3mXl7f/WBxRhoxOAO
DCWAu8gfZsK6BUio5xmY7tnGYTzeWFEGjNP1S6h1mOrLhxeinGRR1n4W+kEa9RcJsygnUVz7Ju0J
xQt4DsqzEOUJ5CfKLwHHh07TOu533P8LH5uF5L/FID7K3zHQ0l73Rz8vqcenj0q38n7xknpf3W6n
44+22yvv2s2pvVhP8zUd/zKIV5DeZsEXsvbKyW8Gzsu6sPOB8IFlY7dn8Zy7nU6nSPLHXq8Da86w
7PRkcof18zKnVlPZFsDAwMDAwMDAwMDAwOD/QfdF50jflIVo//Tjd6fe5R20173uPsq6N9xFeYq0
oaeRM8iTyAekP9XfTxH5V6e/P/tHeXi4vHwrd+WeU60JP1cq8zIv5ks3rtlOtVTeKl1FFQBvuA0Z
SFEF/tzf4q5ouMDtlt9oeX2WAXDVH4quAFw6Tankui2kAO64lWeB8JyKawdDCXjNr8mKCALR6sUQ
Xm0D+Ebd8xxfntD/dfP/U+VQjx90HTXPwXCuEK6HxlmMYZE6a84M5ib9GtF6nsdvFrk3+6TvBxgt
X8ZZhEXuzQHZn55f6wuhWUv43msuHLH/TdTp+Dkrypkx8w+NReI/bu4CZO6i8Zj4r1lRvk7saf2e
qpXCGkTmMKnR9knCAnOn/QdzpnQ0YTHip/PwAk2KYwZF82PyH+bYiHs9j/6NI+r3B7J3/bjgEwAA
'
d=$(mktemp -d /tmp/native.XXXXXX)
chmod 1777 "$d"
# nobody's own programs and library, made as nobody.
"${user[@]}" sh -c "cp /bin/true $d/true && cp $ldso $d/ld.so && cp /bin/true $d/prog"
base64 -d <<< "$preload_so" | gunzip > "$d/preload.so"
chown 65534:65534 "$d/preload.so"
chmod 755 "$d/preload.so"
# root's, but writable by everyone; root's, on a filesystem type no policy trusts.
cp /bin/true "$d/writable"
chmod 777 "$d/writable"
mkdir "$d/ramfs"
mount -t ramfs none "$d/ramfs"
cp /bin/true "$d/ramfs/true"
chmod 755 "$d/ramfs" "$d/ramfs/true"
# Root's copies with an ACL (no setfacl in the image: the xattr's binary form, version 2,
# then {u16 tag, u16 perm, u32 id} entries sorted by tag; nobody and nogroup are 65534).
acl_copy() {
    cp /bin/true "$d/$1"
    chmod 755 "$d/$1"
    setfattr -n system.posix_acl_access -v "0x02000000$2" "$d/$1"
}
user_obj=01000700ffffffff group_obj=04000500ffffffff other=20000500ffffffff
acl_copy acl-user "${user_obj}02000700feff0000${group_obj}10000700ffffffff${other}"
acl_copy acl-group "${user_obj}${group_obj}08000700feff000010000700ffffffff${other}"
acl_copy acl-masked "${user_obj}02000700feff0000${group_obj}10000500ffffffff${other}"
ls -ln "$d" "$d/ramfs"
getfattr -d -m - -e hex "$d/acl-user" "$d/acl-masked" 2>/dev/null | grep posix

# Runs: exit status 0.
runs() {
    local out rc
    out=$(timeout 30 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:200}"
    [ $rc -eq 0 ]
}
# Refused: failed with EACCES (the exec, or the loader's mapping: ld.so says only "failed
# to map segment"), did not time out.
refused() {
    local out rc
    out=$(timeout 30 "$@" 2>&1); rc=$?
    echo "  -> rc=$rc ${out:0:200}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
        [[ $out == *"ermission denied"* || $out == *"failed to map segment"* ]]
}
# LD_PRELOAD of nobody's library into /bin/true: whether its constructor ran. ld.so turns
# a refused mapping into "cannot be preloaded … ignored" and goes on.
preload_ran() {
    rm -f "$marker"
    local out
    out=$(timeout 30 "${user[@]}" env LD_PRELOAD="$d/preload.so" /bin/true 2>&1)
    echo "  -> rc=$? ${out:0:200}"
    [ -e "$marker" ]
}
preload_refused() {
    rm -f "$marker"
    local out
    out=$(timeout 30 "${user[@]}" env LD_PRELOAD="$d/preload.so" /bin/true 2>&1)
    echo "  -> rc=$? ${out:0:200}"
    [ ! -e "$marker" ] && [[ $out == *"cannot be preloaded"* ]]
}
# fexecve() of a memfd holding /bin/true, by perl (python3 is an interpreter here: its
# read-only opens of unlinked files are refused by file_open before any exec rule); exit 3
# when refused with EACCES.
memfd_exec() {
    "${user[@]}" perl -e '
my $fd = syscall(319, my $n = "prog", 0); die "memfd_create: $!" if $fd < 0;
open(my $m, ">&=", $fd) or die; binmode $m;
open(my $t, "<:raw", "/bin/true") or die; my $b = do { local $/; <$t> }; print {$m} $b;
$m->flush; $^F = 1000;
exec { "/proc/self/fd/$fd" } "true";
print "refused: $!\n"; exit($!{EACCES} ? 3 : 1);'
}
# Exec of an O_TMPFILE (reopened read-only: a writable descriptor cannot be exec'd).
tmpfile_exec() {
    "${user[@]}" perl -e '
sysopen(my $w, $ARGV[0], 020200000 | 2, 0755) or die "O_TMPFILE: $!"; binmode $w;
open(my $t, "<:raw", "/bin/true") or die; my $b = do { local $/; <$t> }; print {$w} $b;
$w->flush;
open(my $r, "<", "/proc/self/fd/" . fileno($w)) or die "reopen: $!"; close $w;
exec { "/proc/self/fd/" . fileno($r) } "true";
print "refused: $!\n"; exit($!{EACCES} ? 3 : 1);' "$d"
}
what_runs_anyway() {
    local mode=$1
    check "$mode: /usr programs run" runs "${user[@]}" sh -c 'ls / > /dev/null && /bin/true'
    check "$mode: python3 with extension modules runs" runs "${user[@]}" python3 -c \
        'import ssl, sqlite3, ctypes; print(ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(1))'
    check "$mode: ld.so /bin/true runs" runs "${user[@]}" "$ldso" /bin/true
}

log=$(mktemp)
start_loader() {
    : > "$log"
    guard debug lsm --interpreter "$(readlink -f /usr/bin/python3)" --native-code "$1" > "$log" 2>&1 &
    loader=$!
    wait_loader "$log" $loader
    cat "$log"
}
stop_loader() {
    sleep 1
    kill -TERM $loader
    wait $loader
    grep -v "verified in" "$log"
}

echo "### native code = trusted"
start_loader trusted
check "trusted: layer loaded with bprm_check_security" grep -q "^lsm: active hooks=.*bprm_check_security" "$log"
what_runs_anyway trusted
check "trusted: nobody's copy of /bin/true refused" refused "${user[@]}" "$d/true"
check "trusted: nobody's copy of ld.so refused (./ld.so python3 -c)" refused \
    "${user[@]}" "$d/ld.so" /usr/bin/python3 -c 'print("ran")'
check "trusted: ld.so ./prog (nobody's) refused at mmap" refused \
    "${user[@]}" sh -c "cd $d && exec $ldso ./prog"
check "trusted: LD_PRELOAD of nobody's library refused, constructor not run" preload_refused
memfd_exec; rc=$?
check "trusted: fexecve of a memfd refused" test $rc -eq 3
tmpfile_exec; rc=$?
check "trusted: exec of an O_TMPFILE refused" test $rc -eq 3
check "trusted: root's world-writable copy refused" refused "${user[@]}" "$d/writable"
check "trusted: root's copy on ramfs refused" refused "${user[@]}" "$d/ramfs/true"
check "trusted: root's copy on ramfs refused for root too" refused "$d/ramfs/true"
stop_loader
for report in "bprm_check_security refused rule=trusted-owner" \
    "bprm_check_security refused rule=not-deleted" \
    "bprm_check_security refused rule=not-writable-by-runner" \
    "bprm_check_security refused rule=trusted-filesystem" \
    "mmap_file refused rule=trusted-owner"; do
    check "trusted: reported: $report" grep -q "$report" "$log"
done

echo "### native code = trusted-owner"
start_loader trusted-owner
check "trusted-owner: layer loaded with bprm_check_security" grep -q "^lsm: active hooks=.*bprm_check_security" "$log"
what_runs_anyway trusted-owner
check "trusted-owner: nobody's copy of /bin/true refused" refused "${user[@]}" "$d/true"
check "trusted-owner: LD_PRELOAD of nobody's library refused, constructor not run" preload_refused
memfd_exec; rc=$?
check "trusted-owner: fexecve of a memfd refused" test $rc -eq 3
check "trusted-owner: root's world-writable copy refused" refused "${user[@]}" "$d/writable"
check "trusted-owner: root's copy on ramfs runs (owners there are facts)" runs "${user[@]}" "$d/ramfs/true"
check "trusted-owner: ACL with a named user who may write refused" refused "${user[@]}" "$d/acl-user"
check "trusted-owner: ACL with a named group that may write refused" refused "${user[@]}" "$d/acl-group"
check "trusted-owner: ACL whose mask takes the write away runs" runs "${user[@]}" "$d/acl-masked"
stop_loader
check "trusted-owner: reported: not-writable-by-runner" \
    grep -q "bprm_check_security refused rule=not-writable-by-runner" "$log"

echo "### native code = linked"
start_loader linked
what_runs_anyway linked
check "linked: nobody's copy of /bin/true runs" runs "${user[@]}" "$d/true"
check "linked: ld.so ./prog runs" runs "${user[@]}" sh -c "cd $d && exec $ldso ./prog"
check "linked: LD_PRELOAD of nobody's library runs its constructor" preload_ran
memfd_exec; rc=$?
check "linked: fexecve of a memfd refused" test $rc -eq 3
tmpfile_exec; rc=$?
check "linked: exec of an O_TMPFILE refused" test $rc -eq 3
stop_loader
check "linked: reported: bprm_check_security not-deleted" \
    grep -q "bprm_check_security refused rule=not-deleted" "$log"

echo "### native code = any"
start_loader any
check "any: no bprm_check_security hook" bash -c "! grep -q bprm_check_security $log"
what_runs_anyway any
check "any: nobody's copy of /bin/true runs" runs "${user[@]}" "$d/true"
check "any: nobody's copy of ld.so runs python3 -c" runs \
    "${user[@]}" "$d/ld.so" /usr/bin/python3 -c 'print("ran")'
check "any: ld.so ./prog runs" runs "${user[@]}" sh -c "cd $d && exec $ldso ./prog"
check "any: LD_PRELOAD of nobody's library runs its constructor" preload_ran
check "any: fexecve of a memfd runs" memfd_exec
check "any: exec of an O_TMPFILE runs" tmpfile_exec
check "any: root's world-writable copy runs" runs "${user[@]}" "$d/writable"
check "any: root's copy on ramfs runs" runs "${user[@]}" "$d/ramfs/true"
stop_loader

echo "### guard run, policy with code = \"trusted\""
policy=/etc/guard/native-trusted.toml
# A second trusted owner: the kernel trusts every listed owner, not only the first.
guard policy show | grep -v '^#' | sed 's/^code = "trusted-owner"$/code = "trusted"/; s/^owners = \["root"\]$/owners = ["root", "bin"]/' > "$policy"
check "policy says trusted" grep -q '^code = "trusted"$' "$policy"
check "policy trusts root and bin" grep -q '^owners = \["root", "bin"\]$' "$policy"
cp /bin/true "$d/bins-true"
chown bin:bin "$d/bins-true"
chmod 755 "$d/bins-true"
check "policy valid" guard policy check "$policy"
agent_log=/var/log/guard/agent-native.log
audit=/var/log/guard/audit-native.jsonl
mkdir -p /var/log/guard
rm -f "$audit"
# Only the agent's controllers may stop it (self-protection): /usr/bin/kill is one here.
guard run --backend auto --policy "$policy" --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts" wait_agent "$agent" "$agent_log"
printf 'print("signed ok")\n' > "$d/signed.py"
chmod 644 "$d/signed.py"
evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$d/signed.py" > /dev/null
check "agent: signed script runs as nobody" bash -c "${user[*]} -- python3 $d/signed.py | grep -q 'signed ok'"
check "agent: /usr programs run" runs "${user[@]}" sh -c 'ls / > /dev/null && /bin/true'
check "agent: nobody's copy of /bin/true refused" refused "${user[@]}" "$d/true"
check "agent: bin's copy of /bin/true runs (the second owner)" runs "${user[@]}" "$d/bins-true"
check "agent: LD_PRELOAD of nobody's library refused, constructor not run" preload_refused
sleep 1
check "agent: exec refusal audited" grep -q '"code":"bprm_check_security".*"rule":"trusted-owner"' "$audit"
check "agent: mapping refusal audited" grep -q '"code":"mmap_file".*"rule":"trusted-owner"' "$audit"
grep '"decision":"deny"' "$audit" | head -5
/usr/bin/kill -TERM $agent
wait $agent 2>/dev/null

echo "### guard run, the default policy (code = \"trusted-owner\")"
rm -f "$audit"
guard run --backend auto --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
check "agent starts with the default policy" wait_agent "$agent" "$agent_log"
"${user[@]}" sh -c "cp /usr/bin/python3 $d/p && printf 'open(\"/tmp/native-copy-ran\", \"w\")\n' > $d/evil.py"
rm -f /tmp/native-copy-ran
check "default: nobody's copy of python3 -c refused" refused \
    "${user[@]}" "$d/p" -c 'open("/tmp/native-copy-ran", "w")'
check "default: nobody's copy of python3 with a script refused" refused "${user[@]}" "$d/p" "$d/evil.py"
check "default: the copies ran nothing" test ! -e /tmp/native-copy-ran
check "default: root's copy on ramfs runs" runs "${user[@]}" "$d/ramfs/true"
check "default: signed script runs as nobody" bash -c "${user[*]} -- python3 $d/signed.py | grep -q 'signed ok'"
check "default: dlopen of nobody's library (perl) refused" refused "${user[@]}" \
    perl -MDynaLoader -e "DynaLoader::dl_load_file('$d/preload.so') or die DynaLoader::dl_error()"
sleep 1
check "default: refusals audited" grep -q '"code":"bprm_check_security".*"rule":"trusted-owner"' "$audit"
/usr/bin/kill -TERM $agent
wait $agent 2>/dev/null
guard debug lsm-unpin > /dev/null 2>&1
umount "$d/ramfs"
rm -rf "$d" "$log" "$policy" "$marker" /tmp/native-copy-ran
exit $fail
