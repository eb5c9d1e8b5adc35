#!/bin/bash
# BPF LSM inode_setxattr/inode_removexattr: while loaded, only the named signers (here
# evmctl and guard) may set or remove security.ima; root with setfattr gets EPERM.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
dir=$(mktemp -d /tmp/lsmi.XXXXXX)
f=$dir/code.py
echo 'print("signed")' > "$f"
log=$dir/lsm.log
python=$(readlink -f /usr/bin/python3)
guard debug lsm --interpreter "$python" --signer "$(command -v evmctl)" --signer /usr/local/bin/guard \
    > "$log" 2>&1 &
loader=$!
wait_loader "$log" $loader
cat "$log"
check "LSM layer loaded with the xattr hooks" grep -q "^lsm: active hooks=.*inode_setxattr,inode_removexattr" "$log"

out=$(setfattr -n security.ima -v 0x030204deadbeef "$f" 2>&1)
echo "  setfattr: $out"
check "root's setfattr security.ima refused" grep -q "Operation not permitted" <<<"$out"
check "other xattrs still settable" setfattr -n user.test -v 1 "$f"
check "evmctl ima_sign (a named signer) works" evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$f"
check "the signature is there" bash -c "getfattr -e hex -n security.ima '$f' | grep -q '^security.ima=0x0302'"
check "evmctl ima_verify" evmctl ima_verify --key "$GUARD_CERT_DER" "$f"
out=$(setfattr -x security.ima "$f" 2>&1)
echo "  setfattr -x: $out"
check "root's removal of security.ima refused" grep -q "Operation not permitted" <<<"$out"
check "guard sign (a named signer) works" guard sign --key "$GUARD_KEY" "$f"

sleep 1
kill -TERM $loader
wait $loader
cat "$log"
check "refusal reported: inode_setxattr signer-only" grep -q "inode_setxattr refused rule=signer-only" "$log"
check "refusal reported: inode_removexattr signer-only" grep -q "inode_removexattr refused rule=signer-only" "$log"
check "setfattr works again once unloaded" setfattr -x security.ima "$f"
rm -rf "$dir"
exit $fail
