#!/bin/bash
# Runs every /mnt/vm/tests/*.sh in the guest and reports each on its own
# line for xtask to count: GUARD-VM-TEST PASS|FAIL <name>.
set -u
failed=0
for t in /mnt/vm/tests/*.sh; do
    name=$(basename "$t")
    echo "=== $name on $(uname -r)"
    if bash "$t" < /dev/null; then
        echo "GUARD-VM-TEST PASS $name"
    else
        echo "GUARD-VM-TEST FAIL $name"
        failed=1
    fi
done
exit $failed
