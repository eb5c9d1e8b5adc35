#!/bin/bash
# Runs every /mnt/vm/tests/*.sh in the guest and reports each on its own
# line for xtask to count: GUARD-VM-TEST PASS|FAIL <name>.
set -u
failed=0
for t in /mnt/vm/tests/*.sh; do
    name=$(basename "$t")
    echo "=== $name on $(uname -r)"
    started=$SECONDS
    if bash "$t" < /dev/null; then
        result=PASS
    else
        result=FAIL
        failed=1
    fi
    # The duration keeps the suite's time budget in sight (xtask reads the first two words).
    echo "GUARD-VM-TEST $result $name $((SECONDS - started)) s"
done
exit $failed
