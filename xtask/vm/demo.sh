#!/bin/bash
# What `cargo xtask run` shows without a command: the kernel, its LSMs, and
# how signed, unsigned and non-file Python code fares (with or without the
# agent, whichever is running).
set -u
demo() {
    echo
    echo "### $*"
    "$@"
    echo "### exit status: $?"
}
work=$(mktemp -d /root/demo.XXXXXX)
printf 'print("hello from a signed script")\n' > "$work/signed.py"
printf 'print("hello from an unsigned script")\n' > "$work/unsigned.py"

demo uname -r
lsm() { cat /sys/kernel/security/lsm; echo; }
demo lsm
echo
demo evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$work/signed.py"
demo getfattr -e hex -n security.ima "$work/signed.py"
demo evmctl ima_verify --key "$GUARD_CERT_DER" "$work/signed.py"
demo python3 "$work/signed.py"
demo python3 "$work/unsigned.py"
demo python3 -c 'print("hello from python3 -c")'
echo
echo '### echo print(...) | python3'
echo 'print("hello from a pipe")' | python3
echo "### exit status: $?"
echo
if [ -s /var/log/guard/audit.jsonl ]; then
    echo "### audit log: $(grep -c '"decision":"allow"' /var/log/guard/audit.jsonl) allowed code loads (signed stdlib and libraries), and the refusals:"
    grep '"decision":"deny"' /var/log/guard/audit.jsonl
else
    echo "### no audit lines (agent not running or nothing logged)"
fi
