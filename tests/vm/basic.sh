#!/bin/bash
# The VM itself: the kernel, BPF LSM, and the signing tools guard relies on.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"

echo "kernel: $(uname -r)"
check "kernel is a Debian cloud kernel" bash -c 'uname -r | grep -q -- "-cloud-amd64$"'
check "bpf is an active LSM" grep -qw bpf /sys/kernel/security/lsm
check "python3 present" python3 -c 'import sys; print(sys.version.split()[0])'
check "evmctl present" command -v evmctl
check "guard present" test -x /usr/local/bin/guard
check "key and certificate present" test -r "$GUARD_KEY" -a -r "$GUARD_CERT"

f=$(mktemp /root/sig.XXXXXX)
echo 'print("signed")' > "$f"
check "security.ima writable" setfattr -n security.ima -v 0x0401 "$f"
check "evmctl ima_sign" evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$f"
check "signature is IMA v2 (0x0302...)" bash -c "getfattr -e hex -n security.ima '$f' | grep -q '^security.ima=0x0302'"
check "evmctl ima_verify" evmctl ima_verify --key "$GUARD_CERT_DER" "$f"
echo 'print("changed")' > "$f"
check "evmctl ima_verify rejects a changed file" bash -c "! evmctl ima_verify --key '$GUARD_CERT_DER' '$f' 2>/dev/null"
exit $fail
