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
# As an unprivileged user, as interpreters usually run.
user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
