# Sourced by every VM test (not a test itself: run-tests.sh runs only *.sh).
# Counts failures in $fail; each test ends with `exit $fail`.
set -u
fail=0
# The VM's devtmpfs has no /dev/fd; bash's <(…) and the tests need it.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
    else
        echo "not ok: $what"
        fail=1
    fi
}
# Each test starts without layers an earlier one left pinned (a failed test may not have
# cleaned up; a pinned fail-closed layer would break every test after it).
command -v guard > /dev/null && guard debug lsm-unpin > /dev/null 2>&1
# As an unprivileged user, as interpreters usually run.
user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
# Waits (up to 60 s) until `guard debug lsm`, process $2 writing to log $1, says it is
# active; fails at once if it exits first.
# wait_agent PID LOG [SECONDS]: until the agent started as PID answers `guard status`;
# prints LOG and fails if it exits first or takes SECONDS (a minute by default: each more
# interpreter grammar is one more program the verifier walks, slowly under TCG).
wait_agent() {
    for _ in $(seq 1 $((${3:-60} * 5))); do
        guard status > /dev/null 2>&1 && return 0
        kill -0 "$1" 2> /dev/null || break
        sleep 0.2
    done
    cat "$2"
    return 1
}

wait_loader() {
    for _ in $(seq 1 300); do
        grep -q "^lsm: active" "$1" && return 0
        kill -0 "$2" 2> /dev/null || return 1
        sleep 0.2
    done
    return 1
}
