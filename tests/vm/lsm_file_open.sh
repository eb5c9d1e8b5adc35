#!/bin/bash
# BPF LSM file_open: an interpreter may read code only from a linked regular file.
# Pipes, FIFOs, memfds and deleted files are refused at open (EACCES), also through
# /dev/fd and /proc/*/fd magic links, and each refusal is reported with its rule.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
# Succeeds when the command fails with Python's "Permission denied" at open.
refused() {
    local out
    out=$(timeout 20 "$@" 2>&1)
    local rc=$?
    echo "  -> rc=$rc ${out:0:160}"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "Permission denied" <<<"$out"
}

dir=$(mktemp -d /tmp/lsm.XXXXXX)
chmod 755 "$dir"
echo 'print("from a file")' > "$dir/ok.py"
chmod 644 "$dir/ok.py"
log=$dir/lsm.log

python=$(readlink -f /usr/bin/python3)
guard debug lsm --interpreter "$python" > "$log" 2>&1 &
loader=$!
wait_loader "$log" $loader
cat "$log"
if ! grep -q "^lsm: active" "$log"; then
    echo "not ok: LSM layer loaded"
    exit 1
fi
echo "ok: LSM layer loaded"

check "python runs a regular file" "${user[@]}" python3 "$dir/ok.py"
check "python reads /dev/null, /dev/urandom, runs a subprocess, uses a temporary file" \
    "${user[@]}" python3 -c '
import os, subprocess, tempfile
open("/dev/null").read(); open("/dev/urandom", "rb").read(16)
subprocess.run(["true"], check=True, stdin=subprocess.DEVNULL)
with tempfile.TemporaryFile() as f: f.write(b"x"); f.seek(0); assert f.read() == b"x"
import json, email.parser, sqlite3
print("stdlib ok")'

check "pipe through /dev/fd refused" refused "${user[@]}" bash -c "python3 /dev/fd/3 3< <(echo 'print(\"pipe ran\")')"
check "pipe through /proc/self/fd refused" refused "${user[@]}" bash -c "python3 /proc/self/fd/3 3< <(echo 'print(\"pipe ran\")')"

mkfifo -m 666 "$dir/fifo"
check "FIFO refused at open (no hang)" refused "${user[@]}" python3 "$dir/fifo"

cp "$dir/ok.py" "$dir/gone.py"
chmod 644 "$dir/gone.py"
check "deleted file refused" refused bash -c "exec 4< '$dir/gone.py'; rm -f '$dir/gone.py'; exec ${user[*]} python3 /dev/fd/4"

# memfd_create(2) is syscall 319 on x86-64; no MFD_CLOEXEC, so python inherits it.
check "memfd refused" refused "${user[@]}" perl -e '
my $name = "code";
my $fd = syscall(319, $name, 0);
die "memfd_create: $!" if $fd < 0;
my $code = "print(\"memfd ran\")\n";
syscall(1, $fd, $code, length($code)) == length($code) or die "write: $!";
exec("python3", "/proc/self/fd/$fd") or die "exec: $!";'

# procfs serves bytes the user chooses (environ, comm) and fanotify cannot mark it: a file
# named as code there (the operand's name, *.py, through a link or a mount) is refused.
payload='1;print("environ ran")'
check "python3 /proc/self/environ refused" refused "${user[@]}" env -i X="$payload" python3 /proc/self/environ
ln -sfn /proc/self/environ "$dir/env.py"
check "a symlink x.py -> /proc/self/environ refused" refused "${user[@]}" env -i X="$payload" python3 "$dir/env.py"
cat > "$dir/procdata.py" <<'PY'
import os
# Data reads of /proc and /sys: psutil and the like need them.
for path in ("/proc/self/environ", "/proc/self/stat", "/proc/self/status", "/proc/self/cmdline",
             "/proc/self/comm", "/proc/meminfo", "/sys/kernel/mm/transparent_hugepage/enabled"):
    if os.path.exists(path):
        open(path, "rb").read()
# A stat through a link named as code does not taint the next read.
os.stat(os.path.join(os.path.dirname(__file__), "env.py"))
open("/proc/self/stat", "rb").read()
print("proc data ok", os.cpu_count() > 0)
PY
chmod 644 "$dir/procdata.py"
check "a script reads /proc and /sys as data" bash -c "${user[*]} python3 '$dir/procdata.py' | grep -q 'proc data ok True'"

check "other programs still read pipes and FIFOs" bash -c "cat /dev/fd/3 3< <(echo hi) | grep -q hi"

sleep 1
kill -TERM $loader
wait $loader
cat "$log"
check "refusal reported: regular-file (pipe, FIFO)" grep -q "file_open refused rule=regular-file .*uid=65534" "$log"
check "refusal reported: not-deleted (deleted file, memfd)" grep -q "file_open refused rule=not-deleted" "$log"
check "refusal reported: trusted-filesystem (/proc/self/environ)" grep -q "file_open refused rule=trusted-filesystem .*uid=65534" "$log"
check "python3 /proc/self/environ runs once unloaded (sanity: the layer did it)" \
    bash -c "env -i X='$payload' python3 /proc/self/environ | grep -q 'environ ran'"
check "python runs from a FIFO again once unloaded (sanity: the layer did it)" \
    bash -c "(echo 'print(\"fifo ran\")' > '$dir/fifo' &) ; timeout 10 python3 '$dir/fifo' | grep -q 'fifo ran'"
rm -rf "$dir"
exit $fail
