#!/bin/bash
# Measures the layer's cost: 20k opens by python (an interpreter task, so file_open's whole
# path runs, verdict cache included) and by perl (not an interpreter: identity lookup
# only), without and with the layer, as ratios of the best of 3 runs; then each hook's mean
# cost from the kernel's BPF run-time statistics over the same loops. Fails only if the
# layer does not load (figures from an emulated CPU are for comparison, not assertion).
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
opens_py() {
    python3 -c '
import time
t = time.perf_counter()
for _ in range(20000):
    open("/etc/hostname").close()
print(f"{time.perf_counter() - t:.4f}")'
}
# perl-base has no Time::HiRes: timed from outside (perl starts in about a millisecond).
opens_pl() {
    local t=$EPOCHREALTIME
    perl -e 'for (1..20000) { open(my $f, "<", "/etc/hostname") or die; close($f); }'
    awk "BEGIN{printf \"%.4f\n\", $EPOCHREALTIME - $t}"
}
# Symlink follows and stats by any task: inode_follow_link and inode_getattr run for all.
stats_pl() {
    local t=$EPOCHREALTIME
    perl -e 'for (1..20000) { stat("/usr/bin/python3") or die; }'
    awk "BEGIN{printf \"%.4f\n\", $EPOCHREALTIME - $t}"
}
best() { local b=; for _ in 1 2 3; do v=$("$@"); if [ -z "$b" ] || awk "BEGIN{exit !($v < $b)}"; then b=$v; fi; done; echo "$b"; }
py0=$(best opens_py); pl0=$(best opens_pl); st0=$(best stats_pl)
log=$(mktemp)
guard debug lsm --interpreter "$(readlink -f /usr/bin/python3)" --signer /usr/local/bin/guard \
    --exec-check --verdict-cache > "$log" 2>&1 &
loader=$!
wait_loader "$log" $loader
grep -q "^lsm: active" "$log" || { cat "$log"; echo "not ok: LSM layer loaded"; exit 1; }
py1=$(best opens_py); pl1=$(best opens_pl); st1=$(best stats_pl)
export -f opens_py opens_pl stats_pl
guard debug hook-costs -- bash -c 'opens_py; opens_pl; stats_pl; for i in $(seq 1 2000); do echo x > /tmp/hc.$i; mv /tmp/hc.$i /tmp/hc.m; done; rm -f /tmp/hc.m' \
    | grep '^hook-costs:' | sed "s/^/LSM-HOOK-COST $(uname -r) /"
kill -TERM $loader
wait $loader
echo "LSM-OVERHEAD $(uname -r): 20k opens, interpreter: ${py0}s -> ${py1}s (x$(awk "BEGIN{printf \"%.3f\", $py1/$py0}")), other task: ${pl0}s -> ${pl1}s (x$(awk "BEGIN{printf \"%.3f\", $pl1/$pl0}")); 20k stats of a symlink, other task: ${st0}s -> ${st1}s (x$(awk "BEGIN{printf \"%.3f\", $st1/$st0}"))"
rm -f "$log"
exit 0
