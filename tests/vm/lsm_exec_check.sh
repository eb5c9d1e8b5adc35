#!/bin/bash
# BPF LSM bprm_creds_for_exec: execveat(fd, "", …, AT_EMPTY_PATH | AT_EXECVE_CHECK) answers 0
# for a root-owned file nobody else may write, EACCES for one owned by another user, one
# writable by group or others (an ACL entry that lets a named user write it included: its
# mask is the group bits), or an unlinked one. Linux 6.14+; skipped (passing) on older kernels.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
# Prints the errno of execveat(fd of $1, "", NULL, NULL, AT_EMPTY_PATH | AT_EXECVE_CHECK),
# 0 on success. execveat is syscall 322 on x86-64.
exec_check() {
    perl -e '
open(my $fh, "<", $ARGV[0]) or die "open: $!";
unlink($ARGV[0]) if $ARGV[1];
my $empty = "";
my $r = syscall(322, fileno($fh), $empty, 0, 0, 0x1000 | 0x10000);
print(($r == 0 ? 0 : $! + 0) . "\n");' "$@"
}

dir=$(mktemp -d /tmp/lsmx.XXXXXX)
chmod 755 "$dir"
printf '#!/bin/sh\necho hi\n' > "$dir/root.sh"
chmod 755 "$dir/root.sh"
cp "$dir/root.sh" "$dir/nobody.sh"
chown 65534:65534 "$dir/nobody.sh"
cp "$dir/root.sh" "$dir/writable.sh"
chmod 757 "$dir/writable.sh"
cp "$dir/root.sh" "$dir/gone.sh"
# ACLs as the xattr's binary form (no setfacl in the image): version 2, then {u16 tag,
# u16 perm, u32 id}; nobody is 65534. A named user who may write; the same under a mask
# that takes the write away.
acl_of() {
    cp "$dir/root.sh" "$dir/$1"
    setfattr -n system.posix_acl_access \
        -v "0x0200000001000700ffffffff02000700feff000004000500ffffffff1000${2}00ffffffff20000500ffffffff" \
        "$dir/$1"
}
acl_of acl.sh 07
acl_of masked.sh 05
cp "$dir/root.sh" "$dir/group.sh"
chmod 775 "$dir/group.sh"

before=$(exec_check "$dir/nobody.sh")
echo "AT_EXECVE_CHECK of a nobody-owned file without the layer: errno $before"
if [ "$before" = 22 ]; then
    echo "ok: kernel $(uname -r) has no AT_EXECVE_CHECK (EINVAL): skipped"
    exit 0
fi
check "without the layer the check passes" [ "$before" = 0 ]

log=$dir/lsm.log
python=$(readlink -f /usr/bin/python3)
guard debug lsm --interpreter "$python" --exec-check > "$log" 2>&1 &
loader=$!
wait_loader "$log" $loader
cat "$log"
check "LSM layer loaded with bprm_creds_for_exec" grep -q "^lsm: active hooks=.*bprm_creds_for_exec" "$log"

check "root-owned, not writable by others: allowed" [ "$(exec_check "$dir/root.sh")" = 0 ]
check "/usr/bin/true: allowed" [ "$(exec_check /usr/bin/true)" = 0 ]
check "owned by nobody: EACCES" [ "$(exec_check "$dir/nobody.sh")" = 13 ]
check "writable by others: EACCES" [ "$(exec_check "$dir/writable.sh")" = 13 ]
check "writable by its group: EACCES" [ "$(exec_check "$dir/group.sh")" = 13 ]
check "an ACL entry lets nobody write it: EACCES" [ "$(exec_check "$dir/acl.sh")" = 13 ]
check "the same under a mask without write: allowed" [ "$(exec_check "$dir/masked.sh")" = 0 ]
check "unlinked: EACCES" [ "$(exec_check "$dir/gone.sh" 1)" = 13 ]
check "a real exec of a nobody-owned file still runs" bash -c "'$dir/nobody.sh' | grep -q hi"

sleep 1
kill -TERM $loader
wait $loader
cat "$log"
check "refusal reported: trusted-owner" grep -q "bprm_creds_for_exec refused rule=trusted-owner" "$log"
check "refusal reported: not-writable-by-runner" grep -q "bprm_creds_for_exec refused rule=not-writable-by-runner" "$log"
check "refusal reported: not-deleted" grep -q "bprm_creds_for_exec refused rule=not-deleted" "$log"
rm -rf "$dir"
exit $fail
