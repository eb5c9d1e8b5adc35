#!/bin/bash
# BPF LSM mmap_file/file_mprotect: an interpreter may not map a memfd (or any unlinked or
# non-regular file) executable, neither with mmap(PROT_EXEC) nor by mprotect afterwards;
# extension modules and anonymous executable memory (ctypes callbacks) keep working.
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
log=$(mktemp)
guard debug lsm --interpreter "$(readlink -f /usr/bin/python3)" > "$log" 2>&1 &
loader=$!
wait_loader "$log" $loader
cat "$log"
check "LSM layer loaded with the mapping hooks" grep -q "^lsm: active hooks=.*mmap_file,file_mprotect" "$log"

check "mmap(PROT_EXEC) of a memfd refused" "${user[@]}" python3 -c '
import mmap, os
fd = os.memfd_create("code")
os.write(fd, b"\xc3" * 4096)
try:
    mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)
except PermissionError as e:
    print("refused:", e)
else:
    raise SystemExit("mapped")'
check "mprotect to PROT_EXEC of a memfd mapping refused" "${user[@]}" python3 -c '
import ctypes, ctypes.util, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.memfd_create("code")
os.write(fd, b"\xc3" * 4096)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
assert addr not in (None, ctypes.c_void_p(-1).value)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
r = libc.mprotect(addr, 4096, mmap.PROT_READ | mmap.PROT_EXEC)
print("mprotect:", r, os.strerror(ctypes.get_errno()))
raise SystemExit(0 if r == -1 and ctypes.get_errno() == 13 else 1)'
check "extension modules and ctypes callbacks still work" "${user[@]}" python3 -c '
import ctypes, sqlite3, _ssl, json
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert cb(1) == 2
print("ok")'
check "other programs may map a memfd executable" perl -e '
my $n = "x"; my $fd = syscall(319, $n, 0); die if $fd < 0;
my $b = "\xc3" x 4096; syscall(1, $fd, $b, 4096) == 4096 or die;
my $a = syscall(9, 0, 4096, 5, 2, $fd, 0); exit($a > 0 ? 0 : 1);'

sleep 1
kill -TERM $loader
wait $loader
cat "$log"
check "refusal reported: mmap_file not-deleted" grep -q "mmap_file refused rule=not-deleted" "$log"
check "refusal reported: file_mprotect not-deleted" grep -q "file_mprotect refused rule=not-deleted" "$log"
rm -f "$log"
exit $fail
