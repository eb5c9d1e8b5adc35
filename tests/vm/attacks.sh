#!/bin/bash
# The attack catalog (issue #6) in BPF mode: `guard run --backend auto` (BPF LSM, exec gate
# and fanotify) with the embedded default policy, against the VM's own signed python3.
# Every attack runs as nobody, bounded by a timeout, and its payload creates a file in $out:
# an attack is refused when that file never appears (a nonzero exit alone proves nothing).
#
# Each attack runs twice: first without guard, where its payload must run (otherwise the
# attack is broken and proves nothing), then under the agent, where it must not. The signed
# baseline (a signed script importing a signed module) must keep working after every family.
#
# `check` attacks fail the suite when the payload runs. `gap` attacks are the holes
# docs/threat-model.md lists as open in BPF mode: they print "gap:" when the payload runs and
# "ok:" (with a reminder) when refused, and never fail the suite; make them `check` once closed.
# Attack scripts are single-quoted on purpose (they expand as nobody); helpers run through `attack`.
# shellcheck disable=SC2016,SC2317
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
# The VM's devtmpfs has no /dev/stdin either (udev would make it).
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin

root=/tmp/attacks
out=$root/out       # payloads write here; the native one writes $out/native (evil.so)
base=$root/base     # signed code, root's
tmp=$root/tmp       # the attacker's scratch directory (1777, like /tmp)
home=$root/home     # a HOME the attacker owns
shm=/dev/shm/attacks-evil.py
log=/tmp/attacks.log
agent_log=/var/log/guard/agent-attacks.log
# (a terminal echoes the typed payload: only a line that is just "PAYLOAD RAN" counts)
code="open('$out/ran', 'w').write('ran')
print('PAYLOAD RAN')
"
line=$(head -n 1 <<<"$code")
pythons=()
for p in /usr/bin/python3* /usr/local/bin/python3*; do
    [ -f "$p" ] && [ "$(head -c 4 "$p" | od -An -c | tr -d ' ')" = '177ELF' ] && pythons+=("$p")
done

sign() { evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$1" > /dev/null; }
# signed FILE TEXT: root's, 0644, signed.
signed() {
    mkdir -p "$(dirname "$1")"
    printf '%s' "$2" > "$1"
    chmod 644 "$1"
    sign "$1"
}
# evil FILE TEXT: the attacker's (nobody), unsigned.
evil() {
    mkdir -p "$(dirname "$1")"
    printf '%s' "$2" > "$1"
    chown 65534:65534 "$1"
}
# padded TEXT: TEXT padded with spaces to the payload's size (for same-size rewrites).
padded() { printf "%-$((${#code} - 1))s\n" "$1"; }
hexsig() { getfattr -e hex -n security.ima "$1" 2> /dev/null | sed -n 's/^security.ima=//p'; }

# nb DIR SCRIPT [VAR=VALUE…]: SCRIPT run by bash as nobody in DIR, clean environment,
# killed after $limit seconds (a hang is reported, never taken for a refusal).
limit=30
nb() {
    local dir=$1 script=$2 start=$SECONDS rc
    shift 2
    (cd "$dir" && exec timeout -k 5 "$limit" "${user[@]}" -- env -i PATH=/usr/bin:/bin \
        HOME=/nonexistent LANG=C.UTF-8 EVIL="$tmp/evil.py" CODE="$code" LINE="$line" "$@" \
        bash -c "$script")
    rc=$?
    [ $((SECONDS - start)) -lt "$limit" ] || echo "ATTACK TIMED OUT after $limit s"
    return $rc
}

phase=bare
# attack check|gap NAME HOW CMD…: runs CMD (usually nb …) with the payload markers cleared.
# HOW: refused (the command fails), not_ran (it may go on without the refused code), or
# signed:TEXT (it goes on with the signed code, which prints TEXT).
attack() {
    local kind=$1 name=$2 how=$3
    shift 3
    rm -f "$out"/*
    local start=$SECONDS
    "$@" > "$log" 2>&1 < /dev/null
    local rc=$? ran=0 why='' took=$((SECONDS - start))
    if [ -n "$(ls -A "$out")" ] || grep -qE '^PAYLOAD RAN.?$' "$log"; then ran=1; fi
    if grep -q 'ATTACK SETUP FAILED' "$log"; then
        why="the attack's own setup failed"
    elif [ "$phase" = bare ]; then
        if [ $ran = 1 ]; then
            echo "ok: without guard the payload runs: $name (${took}s)"
        else
            why="the payload does not run even without guard: the attack is broken"
        fi
    elif [ $ran = 1 ]; then
        why="PAYLOAD RAN"
    elif grep -q 'ATTACK TIMED OUT' "$log"; then
        why="hung (timed out)"
    else
        case $how in
        refused) [ $rc -ne 0 ] || why="exit 0" ;;
        signed:*) grep -qF "${how#signed:}" "$log" || why="the signed code did not run" ;;
        esac
    fi
    if [ "$phase" = bare ] && [ -z "$why" ]; then
        return 0
    elif [ -z "$why" ]; then
        echo "ok: $name  (${took}s, rc=$rc: $(grep -v '^$' "$log" | tail -n 1 | cut -c1-110))"
        [ "$kind" = gap ] && echo "  (a known gap that is closed now: make it a check)"
    elif [ "$kind" = gap ] && [ "$phase" = guard ] && [ "$why" = "PAYLOAD RAN" ]; then
        echo "gap: $name  (payload ran; known gap, not counted as a failure)"
    else
        echo "not ok: $name: $why (rc=$rc)"
        sed -n '1,12s/^/    /p' "$log"
        fail=1
    fi
}

baseline() {
    [ "$phase" = guard ] || return 0
    local got
    got=$(nb "$base" 'python3 ok.py x' 2>&1)
    if [ "$got" = "ok signed x" ]; then
        echo "ok: signed baseline runs for nobody ($1)"
    else
        echo "not ok: signed baseline runs for nobody ($1): ${got:0:300}"
        fail=1
    fi
}

# Python run as root before the agent starts: builds the pycs for families 12 and 13.
pyc_of='
import sys, importlib._bootstrap_external as b, os
src, target, kind, text = sys.argv[1:5]
source = open(src, "rb").read() if os.path.exists(src) else b""
code = compile(text, src, "exec")
if kind == "timestamp":
    st = os.stat(src) if os.path.exists(src) else os.stat("/")
    data = b._code_to_timestamp_pyc(code, st.st_mtime, st.st_size)
else:
    data = b._code_to_hash_pyc(code, b._imp.source_hash(b._RAW_MAGIC_NUMBER, source), kind == "checked")
os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
open(target, "wb").write(data)
'
# The unsigned library of family 19: its constructor creates $out/native (no libc):
#   static const char marker[] = "/tmp/attacks/out/native";
#   __attribute__((constructor)) static void run(void) {
#       long fd;
#       asm volatile("syscall" : "=a"(fd) : "0"(2L), "D"(marker), "S"(0101L), "d"(0644L)
#                    : "rcx", "r11", "memory");
#       if (fd >= 0) asm volatile("syscall" : : "a"(3L), "D"(fd) : "rcx", "r11", "memory");
#   }
# gcc -Os -shared -fPIC -nostdlib -s -Wl,--build-id=none -Wl,-z,noseparate-code evil.c
# (gcc 12.2), then gzip -9 -n | base64: the VM image has no compiler.
evil_so='
H4sIAAAAAAACA+1YT2sTURCft2nSWGvSQ4VIqsaDVFHfJkGhKBVL/VOxh1rwHF6S1UTdjey+SCKC
Jw89CP0IHvwAPRYPEvBgj/0Sgl9AqRfjSzIv2R0SWkE9vR+8/e3Mzsx7O/MuM2/urN+1GAONGNyE
kQRwC/n9XFi3BAn1PAGzfds4TMZrK8qAcXp+CbUOUgP54EyUkyzK2s9CP0ij/ixhFuUkihtfZXVK
8RKeg/I8RHkK+aHyS8DRodO0ifsd9f/Cx2Yh+U8xjI/yNwy0stv70U8r6vHxg9KtvVs+p97Xtzrp
+P2tztrbTmtmN9bXfEnHPw/j2dJ9YQspReVZYDea0vaErL90gGVjN+bxnDvdbjdP8sdebQJrzbHs
7HRymw3ysqBWS9naYGBgYGBgYGBgYGBg8P+g+6JTpG/KQrR/+v6r2+jxNtrrXncPZd0b7qA8Q9rQ
48gZ5GnkfdKf6u/HiPyzO9if/aM83FtdvZ67cNsp14WXKxR5keevFK5eqjrlQrFZuIgqAB7UAulL
UQb+xGvymghqwKttL2i7A5Y+cN95LnoCcOm0pJIbVSEFcKdWeuwL1ynVqv5IAl736rIkfF+0+zGE
W68ArzRc1/HkX/q/Xv5/qBzq8YOuo+YFGM0VwvXQOIkxLFJnzZnh3GRQI1rP0/jNIvdmj/T9AOPl
8ziLsMi92Sf70/NrvR2atYTvvWb7kP2voU7Hz1lRzkyYf2gsE/9JcxcgcxeNB8R/w4ryZWJP6/dI
rRTWIDKHSY23TxIWmDvtP5wzpaMJixE/nYenaJKfMChanJD/MMfG3OtF9A8Oqd9vtN09dOATAAA=
'

setup() {
    rm -rf "$root" "$shm"
    mkdir -p "$out" "$base" "$tmp" "$home"
    chmod 755 "$root" "$base"
    chmod 1777 "$out" "$tmp"
    chown 65534:65534 "$home"
    signed "$base/helper.py" 'V = "signed"
'
    signed "$base/ok.py" 'import sys, helper
print("ok", helper.V, *sys.argv[1:])
'
    signed "$base/uses_json.py" 'import json
print(json.dumps([1]))
'
    evil "$tmp/evil.py" "$code"
    # 4: unsigned files wherever the attacker can write, whatever their name.
    evil "$home/.cache/evil" "$code"
    evil "$home/notes.txt" "$code"
    evil "$tmp/app/__main__.py" "$code"
    chown 65534:65534 "$tmp/app"
    evil "$shm" "$code"
    # Issue 15 and 25: code-named links to data-named files, a data-named script, hops.
    evil "$tmp/links/p" "$code"
    evil "$tmp/links/pth-data" "import os; $line
"
    local pyver
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    mkdir -p "$tmp/links/pkg" "$tmp/links/home/.local/lib/python$pyver/site-packages"
    ln -s p "$tmp/links/evil.py"
    ln -s ../p "$tmp/links/pkg/__init__.py"
    ln -s ../../../../../pth-data "$tmp/links/home/.local/lib/python$pyver/site-packages/evil.pth"
    chown -hR 65534:65534 "$tmp/links"
    signed "$base/imports_evil.py" 'import evil
'
    signed "$base/imports_pkg.py" 'import pkg
'
    evil "$tmp/argv/payload" "$code"
    evil "$tmp/hops/payload" "$code"
    ln -s . "$tmp/hops/s"
    chown -hR 65534:65534 "$tmp/argv" "$tmp/hops"
    # 5: files the attacker will delete while holding them open.
    evil "$tmp/deleted.py" "$code"
    evil "$tmp/deleted2.py" "$code"
    # 8: -m from the attacker's cwd; a stdlib shadow next to a signed script.
    evil "$tmp/m/json.py" "$code"
    evil "$tmp/m/evilmod.py" "$code"
    chown 65534:65534 "$tmp/m"
    signed "$root/app/uses_json.py" "$(cat "$base/uses_json.py")"
    evil "$root/app/json.py" "$code"
    chmod 755 "$root/app"
    # 9: PYTHONPATH and PYTHONHOME targets.
    evil "$tmp/pp-site/sitecustomize.py" "$code"
    evil "$tmp/pp-user/usercustomize.py" "$code"
    evil "$tmp/pp-json/json.py" "$code"
    # (encodings runs before io exists: no open() nor print() yet)
    local early="import posix; posix.close(posix.open('$out/ran', posix.O_CREAT | posix.O_WRONLY))
"
    evil "$tmp/phome/lib/python3.11/encodings/__init__.py" "$early"
    evil "$tmp/phome/lib/python3.11/os.py" "$early"
    chown -R 65534:65534 "$tmp"/pp-* "$tmp/phome"
    # 10: .pth files in the user site of HOMEs the attacker owns.
    local site=.local/lib/python3.11/site-packages
    evil "$home/$site/x.pth" "import os; $line
"
    evil "$root/home2/$site/y.pth" 'import evil_site
'
    evil "$root/home2/$site/evil_site.py" "$code"
    chown -R 65534:65534 "$home" "$root/home2"
    # 11: archives.
    python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("__main__.py", sys.argv[2])
    z.writestr("json.py", sys.argv[2])' "$tmp/evil.zip" "$code"
    cp "$tmp/evil.zip" "$tmp/evil.whl"
    cp "$tmp/evil.zip" "$tmp/archive.dat"
    chown 65534:65534 "$tmp/evil.zip" "$tmp/evil.whl" "$tmp/archive.dat"
    # 12: forged pycs for a signed module in a __pycache__ the attacker can write.
    tag=$(python3 -c 'import sys; print(sys.implementation.cache_tag)')
    signed "$root/lib/mod.py" 'WHO = "signed source"
'
    signed "$root/lib/main.py" 'import mod
print(mod.WHO)
'
    chmod 755 "$root/lib"
    mkdir -p "$root/lib/__pycache__"
    chown 65534:65534 "$root/lib/__pycache__"
    for kind in timestamp checked unchecked; do
        python3 -c "$pyc_of" "$root/lib/mod.py" "$tmp/forged/$kind.pyc" $kind "${code}WHO = 'forged'"
    done
    python3 -c "$pyc_of" "$root/lib/mod.py" \
        "$tmp/prefix${root}/lib/mod.$tag.pyc" timestamp "${code}WHO = 'forged'"
    chown -R 65534:65534 "$tmp/forged" "$tmp/prefix"
    # 13: sourceless pycs.
    python3 -c "$pyc_of" /nonexistent "$tmp/sl/evilmod.pyc" timestamp "$code"
    cp "$tmp/sl/evilmod.pyc" "$tmp/sl/evil.txt"
    python3 -c "$pyc_of" /nonexistent "$tmp/slj/json.pyc" timestamp "$code"
    chown -R 65534:65534 "$tmp/sl" "$tmp/slj"
    # 14: security.ima copied onto another file; user.ima on the attacker's own file.
    signed "$base/good.py" 'print("good")
'
    printf '%s' "$code" > "$base/copied.py"
    chmod 644 "$base/copied.py"
    setfattr -n security.ima -v "$(hexsig "$base/good.py")" "$base/copied.py"
    evil "$tmp/user.py" "$code"
    setfattr -n user.ima -v "$(hexsig "$base/good.py")" "$tmp/user.py"
    # 15: signed but attacker-owned; signed but world-writable.
    signed "$tmp/own.py" "$code"
    chown 65534:65534 "$tmp/own.py"
    signed "$base/world.py" "$code"
    chmod 666 "$base/world.py"
    # Issue 16: signed, root's, 0644, with an ACL that lets nobody write it: as a named user,
    # as a named group (nogroup, nobody's). No setfacl in the image: the xattr's binary
    # form, version 2, then {u16 tag, u16 perm, u32 id} entries sorted by tag.
    local uo=01000600ffffffff go=04000400ffffffff oth=20000400ffffffff
    for acl in "user:${uo}02000600feff0000${go}10000600ffffffff${oth}" \
        "group:${uo}${go}08000600feff000010000600ffffffff${oth}"; do
        signed "$base/acl_${acl%%:*}.py" "$code"
        setfattr -n system.posix_acl_access -v "0x02000000${acl#*:}" "$base/acl_${acl%%:*}.py"
    done
    # 16: signed scripts for the rewrites, the same size as the payload.
    signed "$base/same.py" "$(padded "print('same')")"
    signed "$base/held.py" "$(padded "print('held')")"
    signed "$base/race.py" "$(padded "print('race')")"
    cp "$base/race.py" "$root/race.good"
    local row
    row=$(printf '0,%.0s' $(seq 30))
    {
        echo "x = ["
        for _ in $(seq 10000); do echo "$row"; done
        echo "]"
        echo "print('big')"
        printf "#%$((${#code} - 2))s\n" ''
    } > "$root/big.good"
    cp "$root/big.good" "$base/big.py"
    sign "$base/big.py"
    printf '%s' "$code" > "$root/race.evil"
    # 17: a trusted module to mount over; mount points for the user namespaces.
    signed "$root/lib2/trusted.py" 'print("trusted")
'
    chmod 755 "$root/lib2"
    mkdir -p "$tmp/mnt1" "$tmp/mnt2" "$tmp/mnt3"
    chown 65534:65534 "$tmp"/mnt*
    # 19: an unsigned library, also named .dat; a signed script that loads a library.
    base64 -d <<<"$evil_so" | gunzip > "$tmp/evil.so"
    cp "$tmp/evil.so" "$tmp/evil.dat"
    chown 65534:65534 "$tmp/evil.so" "$tmp/evil.dat"
    signed "$base/load.py" 'import ctypes, sys
try:
    ctypes.CDLL(sys.argv[1])
    print("loaded")
except OSError as e:
    print("refused", e)
'
}

# 16: same-size rewrite with mtime restored, after a run that cached the verdict.
rewrite_after_run() {
    nb "$base" 'python3 same.py' | grep -q '^same$' || echo "ATTACK SETUP FAILED: first run"
    touch -r "$base/same.py" "$root/same.time"
    printf '%s' "$code" | dd of="$base/same.py" conv=notrunc status=none
    touch -r "$root/same.time" "$base/same.py"
    nb "$base" 'python3 same.py'
}
# 16: a writer that opened the signed file before a first run rewrites it before a second.
held_writer() {
    (
        exec 7<> "$base/held.py" || exit 3
        nb "$base" 'python3 held.py' 7>&-
        printf '%s' "$code" >&7
        nb "$base" 'python3 held.py' 7>&-
    )
}
descendants() {
    local c
    for c in $(< "/proc/$1/task/$1/children"); do
        echo "$c"
        descendants "$c"
    done 2> /dev/null
}
# holds PID FILE: PID has FILE open.
holds() {
    local fd
    for fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$fd")" = "$2" ] && return 0
    done
    return 1
}
# 16b/16c: big.py (signed: a 300 000-element list literal, then a placeholder the size of the
# payload; python3 reads a script block by block as it parses it) is
# opened by python3; while it is still reading it, the payload is written over the
# placeholder, through a descriptor opened for writing before the run (held) or after
# python3 opened it (new).
mid_read_writer() {
    local size pid=
    (
        if [ "$1" = held ]; then exec 7<> "$base/big.py" || exit 3; fi
        nb "$base" 'exec python3 big.py' 7>&- &
        local runner=$! end=$((SECONDS + 25)) p
        while [ -z "$pid" ] && [ "$SECONDS" -lt "$end" ] && kill -0 "$runner" 2> /dev/null; do
            for p in $(descendants "$runner"); do
                holds "$p" "$base/big.py" && pid=$p
            done
        done
        # Refused at open, python3 never holds it: nothing to race.
        [ -n "$pid" ] || echo "python3 never held big.py open"
        size=$(stat -c %s "$base/big.py")
        if [ -z "$pid" ]; then
            :
        elif [ "$1" = held ]; then
            printf '%s' "$code" | dd bs=1 seek=$((size - ${#code})) conv=notrunc status=none >&7
        else
            printf '%s' "$code" | dd of="$base/big.py" bs=1 seek=$((size - ${#code})) \
                conv=notrunc status=none
        fi
        wait "$runner"
    )
    cp "$root/big.good" "$base/big.py"
    sign "$base/big.py" 2> /dev/null
}
# The write lands while python3 still reads only if python3 is slow enough: up to three
# tries, until the payload runs (without guard it must, on some try; under guard it never
# may, on any).
mid_read_writer_tries() {
    for _ in 1 2 3; do
        mid_read_writer "$1"
        [ -z "$(ls -A "$out")" ] || break
    done
}
# 16: a writer flipping a signed file between its signed and the evil content (same inode,
# same size) while nobody runs it.
racing_writer() {
    local limit=120
    rm -f "$root/race.stop"
    (
        while [ ! -e "$root/race.stop" ]; do
            dd if="$root/race.evil" of="$base/race.py" conv=notrunc status=none
            dd if="$root/race.good" of="$base/race.py" conv=notrunc status=none
        done
    ) &
    local writer=$!
    # Until the payload runs (it must, without guard), or 20 runs (under guard): a fixed few
    # runs could all miss the writer on a loaded emulated CPU.
    nb "$base" 'for i in $(seq 20); do python3 race.py; [ -e "$RAN" ] && break; done' RAN="$out/ran"
    touch "$root/race.stop"
    wait "$writer"
    cp "$root/race.good" "$base/race.py"
}
# 16: the attacker swaps a symlink between a signed script and his own, racing the runs.
symlink_swap() {
    local limit=120
    nb "$tmp" 'ln -sf "$GOOD" link.py; rm -f swap.stop
        ( while [ ! -e swap.stop ]; do
            ln -sf "$EVIL" link.new && mv -T link.new link.py
            ln -sf "$GOOD" link.new && mv -T link.new link.py; done ) &
        for i in $(seq 20); do python3 link.py; [ -e "$RAN" ] && break; done
        touch swap.stop; wait' GOOD="$base/good.py" RAN="$out/ran"
}
# 17: root bind-mounts the attacker's file over a trusted module in a private mount
# namespace, then runs it as nobody.
root_bind_mount() {
    timeout -k 5 30 unshare -m --propagation private sh -c 'mount --bind "$1" "$2" &&
        exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \
        env -i PATH=/usr/bin:/bin python3 "$2"' sh "$tmp/evil.py" "$root/lib2/trusted.py"
}

attacks() {
    local py spell
    # 1: -c in every spelling, on every python3 binary, by another name or argv[0].
    for py in "${pythons[@]}"; do
        for spell in '-c' '-Ic' '-E -X dev -c' '-Sc' '-Bc' '-W ignore -c' '-u -O -c'; do
            attack check "1 $py $spell CODE" refused nb "$tmp" "exec \"\$PY\" $spell \"\$CODE\"" PY="$py"
        done
        attack check "1 $py -c through a symlink the attacker made" refused \
            nb "$tmp" 'ln -sf "$PY" pylink && exec ./pylink -c "$CODE"' PY="$py"
        attack check "1 $py -c with argv[0] /usr/bin/env" refused \
            nb "$tmp" 'exec -a /usr/bin/env "$PY" -c "$CODE"' PY="$py"
    done
    baseline "family 1"
    if [ "$phase" = guard ]; then
        check "1 an argument -c after the script belongs to the script" \
            bash -c "[ \"\$(cd $base && ${user[*]} python3 ok.py -c x)\" = 'ok signed -c x' ]"
    fi
    # 1b: modules that are interpreters themselves: -m NAME is -c or stdin code (exec gate).
    local s
    attack check "1b -m timeit -s CODE" refused nb "$tmp" 'exec python3 -m timeit -n 1 -s "$CODE" pass'
    attack check "1b -m pdb -c CODE on a signed script" refused \
        nb "$base" 'exec python3 -m pdb -c "$LINE" -c c ok.py'
    for s in 'python3 -m code' 'python3 -mcode' 'python3 -E -X dev -m code' \
        'python3 -I -m asyncio.__main__' 'python3 -m runpy code'; do
        attack check "1b $s < file" refused nb "$tmp" "exec $s < \"\$EVIL\""
    done
    # 1b by path: the file of an interpreter module run as the main script is that module
    # (fanotify, by identity: refused at the open with the rule of its -m spelling).
    local lib
    for lib in /usr/lib/python3.*; do [ -f "$lib/timeit.py" ] && break; done
    attack check "1b python3 STDLIB/timeit.py -s CODE (by path)" refused \
        nb "$tmp" 'exec python3 "$LIB/timeit.py" -n 1 -s "$CODE" pass' LIB="$lib"
    attack check "1b python3 STDLIB/pdb.py -c CODE on a signed script (by path)" refused \
        nb "$base" 'exec python3 "$LIB/pdb.py" -c "$LINE" -c c ok.py' LIB="$lib"
    attack check "1b python3 STDLIB/code.py < file (by path)" refused \
        nb "$tmp" 'exec python3 "$LIB/code.py" < "$EVIL"' LIB="$lib"
    # Under a name of the attacker's: CPython runs the file as __main__ whatever its name.
    attack check "1b -m of the attacker's link x.py to STDLIB/timeit.py" refused \
        nb "$tmp" 'ln -sf "$LIB/timeit.py" mt.py && exec python3 -m mt -n 1 -s "$CODE" pass' \
        LIB="$lib"
    attack check "1b a directory whose __main__.py links to STDLIB/timeit.py" refused \
        nb "$tmp" 'mkdir -p dt && ln -sf "$LIB/timeit.py" dt/__main__.py &&
            exec python3 dt -n 1 -s "$CODE" pass' LIB="$lib"
    attack check "1b -m of a package whose __main__.py links to STDLIB/code.py < file" refused \
        nb "$tmp" 'mkdir -p dc && ln -sf "$LIB/code.py" dc/__main__.py &&
            exec python3 -m dc < "$EVIL"' LIB="$lib"
    # Under another module path: -m runs what the import system finds by the dotted name.
    attack check "1b -m s.timeit, s the attacker's link to STDLIB" refused \
        nb "$tmp" 'ln -sfn "$LIB" s && exec python3 -m s.timeit -n 1 -s "$CODE" pass' LIB="$lib"
    baseline "family 1b"
    if [ "$phase" = guard ]; then
        check "1b -m json.tool and -m this still run" \
            bash -c "cd $base && echo '{\"a\": 1}' | ${user[*]} python3 -m json.tool | grep -q '\"a\": 1' \
                && ${user[*]} python3 -m this | grep -q 'Beautiful is better'"
    fi

    # 2: code on standard input.
    for s in 'cat "$EVIL" | python3' 'cat "$EVIL" | python3 -' 'cat "$EVIL" | python3 -E -' \
        'python3 < "$EVIL"' 'python3 - < "$EVIL"' 'python3 /dev/stdin < "$EVIL"' \
        'cat "$EVIL" | python3 /dev/stdin'; do
        attack check "2 $s" refused nb "$tmp" "$s"
    done
    baseline "family 2"
    if [ "$phase" = guard ]; then
        check "2 data on stdin for a signed script is fine" \
            bash -c "cd $base && echo data | ${user[*]} python3 ok.py | grep -q 'ok signed'"
    fi

    # 3: process substitution and descriptors, canonical and not.
    for s in 'python3 <(cat "$EVIL")' 'python3 /dev/fd/3 3<"$EVIL"' \
        'python3 /dev/fd/3 3< <(cat "$EVIL")' 'python3 /proc/self/fd/3 3<"$EVIL"' \
        'python3 -- /dev/fd/3 3<"$EVIL"' \
        'python3 //proc/self/fd/3 3< <(cat "$EVIL")' 'python3 /dev//fd/3 3< <(cat "$EVIL")' \
        'python3 /./proc/self/fd/3 3< <(cat "$EVIL")' 'python3 /dev/./fd/3 3< <(cat "$EVIL")' \
        'cd /dev && python3 fd/3 3< <(cat "$EVIL")' 'cd /dev && python3 stdin < <(cat "$EVIL")' \
        'ln -sf /proc/self/fd/3 x.py && python3 x.py 3< <(cat "$EVIL")' \
        'ln -sf /proc/self/fd/3 y.py && python3 y.py 3<"$EVIL"'; do
        attack check "3 $s" refused nb "$tmp" "$s"
    done
    baseline "family 3"

    # 4: unsigned files in /tmp, /dev/shm, $HOME; no extension, .txt, a directory.
    for s in evil.py ../home/.cache/evil ../home/notes.txt app "$shm"; do
        attack check "4 python3 $s (unsigned)" refused nb "$tmp" "python3 $s"
    done
    baseline "family 4"

    # 5: memfd and deleted files through /proc/*/fd (perl is the attacker's loader).
    local loader='my $n = "x"; my $fd = syscall(319, $n, 0); die "memfd_create: $!" if $fd < 0;
        my $c = $ENV{CODE}; syscall(1, $fd, $c, length $c) == length $c or die "write: $!";
        my $p = $ARGV[0]; $p =~ s/\{fd\}/$fd/g; $p =~ s/\{pid\}/$$/g;
        if ($ENV{LINK}) { symlink($p, $ENV{LINK}) or die "symlink: $!"; $p = $ENV{LINK}; }
        exec("python3", $p) or die "exec: $!";'
    for s in '/proc/self/fd/{fd}' '/dev/fd/{fd}' '/proc/{pid}/fd/{fd}' \
        '/proc/thread-self/fd/{fd}' '/proc/{pid}/task/{pid}/fd/{fd}' '//proc/self/fd/{fd}'; do
        attack check "5 memfd as $s" refused nb "$tmp" 'exec perl -e "$LOADER" "$P"' \
            LOADER="$loader" P="$s"
    done
    attack check "5c memfd through a symlink m.py -> /proc/PID/fd/N" refused \
        nb "$tmp" 'exec perl -e "$LOADER" "/proc/{pid}/fd/{fd}"' LOADER="$loader" LINK=m.py
    attack check "5 deleted file as /proc/self/fd/3" refused \
        nb "$tmp" 'exec 3<deleted.py; rm deleted.py; exec python3 /proc/self/fd/3'
    attack check "5b deleted file through a symlink to /proc/self/fd/3" refused \
        nb "$tmp" 'exec 3<deleted2.py; rm deleted2.py; ln -sf /proc/self/fd/3 d.py; exec python3 d.py'
    baseline "family 5"

    # 6: a FIFO as the script (a writer feeds it the payload if it is ever opened).
    for s in f1 f2.py; do
        attack check "6 FIFO $s as the script" refused \
            nb "$tmp" "mkfifo $s && { timeout 10 cat \"\$EVIL\" > $s & } && exec python3 $s"
    done
    baseline "family 6"

    # 7: interactive after a script, with code on stdin; PYTHONINSPECT; PYTHONSTARTUP; the
    # REPL on a pipe and on a terminal (script(1) gives python3 a pty and types stdin into it;
    # PYTHONINSPECT and PYTHONSTARTUP act only on a terminal or with -i).
    for s in 'cat "$EVIL" | python3 -i ../base/ok.py' 'cat "$EVIL" | python3 -i' \
        'PYTHONSTARTUP="$EVIL" python3 -i < /dev/null' \
        'script -eqc "python3 -i ../base/ok.py" /dev/null < "$EVIL"' \
        'script -eqc "PYTHONINSPECT=1 python3 ../base/ok.py" /dev/null < "$EVIL"' \
        'PYTHONSTARTUP="$EVIL" script -eqc python3 /dev/null <<< "raise SystemExit(3)"' \
        'script -eqc python3 /dev/null < "$EVIL"'; do
        attack check "7 $s" refused nb "$tmp" "$s"
    done
    baseline "family 7"

    # 8: -m shadowing from the cwd; a module next to a signed script shadowing the stdlib.
    attack check "8 -m json.tool with json.py in the cwd" refused \
        nb "$tmp/m" 'python3 -m json.tool /dev/null'
    attack check "8 -m evilmod from the cwd" refused nb "$tmp/m" 'python3 -m evilmod'
    attack check "8 json.py next to a signed script" refused nb "$root/app" 'python3 uses_json.py'
    baseline "family 8"

    # 9: PYTHONPATH (sitecustomize, usercustomize, stdlib shadow), PYTHONHOME.
    for s in pp-site pp-user pp-json; do
        attack check "9 PYTHONPATH=$s" not_ran nb "$base" 'python3 uses_json.py' \
            PYTHONPATH="$tmp/$s"
    done
    attack check "9 PYTHONHOME with an evil encodings package" refused \
        nb "$base" 'python3 ok.py' PYTHONHOME="$tmp/phome"
    baseline "family 9"

    # 10: .pth files in the user site.
    attack check "10 user-site .pth with an import line" not_ran \
        nb "$base" 'python3 ok.py' HOME="$home"
    attack check "10 user-site .pth importing an unsigned module" not_ran \
        nb "$base" 'python3 ok.py' HOME="$root/home2"
    baseline "family 10"

    # 11: archives.
    attack check "11 python3 evil.zip" refused nb "$tmp" 'python3 evil.zip'
    attack check "11 python3 archive.dat (a zip)" refused nb "$tmp" 'python3 archive.dat'
    attack check "11 PYTHONPATH=evil.whl shadowing json" not_ran \
        nb "$base" 'python3 uses_json.py' PYTHONPATH="$tmp/evil.whl"
    baseline "family 11"

    # 12: forged pycs in a writable __pycache__, also with hash checks forced; a pycache prefix.
    local kind flags
    for kind in timestamp checked unchecked; do
        for flags in '' '--check-hash-based-pycs always'; do
            [ "$kind" = timestamp ] && [ -n "$flags" ] && continue
            attack check "12 forged $kind pyc in __pycache__ $flags" "signed:signed source" \
                nb "$root/lib" "rm -f __pycache__/mod.$tag.pyc
                cp \"$tmp/forged/$kind.pyc\" __pycache__/mod.$tag.pyc && python3 $flags main.py" \
                PYTHONDONTWRITEBYTECODE=1
        done
    done
    attack check "12 -X pycache_prefix with a forged pyc" "signed:signed source" \
        nb "$root/lib" "python3 -X pycache_prefix=$tmp/prefix main.py" PYTHONDONTWRITEBYTECODE=1
    attack check "12 PYTHONPYCACHEPREFIX with a forged pyc" refused \
        nb "$root/lib" 'python3 main.py' PYTHONPYCACHEPREFIX="$tmp/prefix" PYTHONDONTWRITEBYTECODE=1
    baseline "family 12"

    # 13: sourceless pycs: imported, run, renamed .txt, shadowing the stdlib.
    attack check "13 -m evilmod (sourceless pyc)" refused nb "$tmp/sl" 'python3 -m evilmod'
    attack check "13 python3 evilmod.pyc" refused nb "$tmp/sl" 'python3 evilmod.pyc'
    attack check "13 python3 evil.txt (a pyc)" refused nb "$tmp/sl" 'python3 evil.txt'
    attack check "13 PYTHONPATH with a sourceless json.pyc" not_ran \
        nb "$base" 'python3 uses_json.py' PYTHONPATH="$tmp/slj"
    baseline "family 13"

    # 14: copied and look-alike signatures.
    attack check "14 security.ima copied onto another file" refused nb "$base" 'python3 copied.py'
    attack check "14 user.ima look-alike on the attacker's file" refused nb "$tmp" 'python3 user.py'
    # 15: signed but attacker-owned; signed but 0666.
    attack check "15 signed but owned by the attacker" refused nb "$tmp" 'python3 own.py'
    attack check "15 signed but mode 0666" refused nb "$base" 'python3 world.py'
    attack check "16 signed, 0644, an ACL entry lets the attacker write it" refused \
        nb "$base" 'python3 acl_user.py'
    attack check "16 signed, 0644, an ACL entry lets the attacker's group write it" refused \
        nb "$base" 'python3 acl_group.py'
    baseline "families 14, 15"

    # 16: rewrites and swaps.
    attack check "16 same-size rewrite with mtime restored" refused rewrite_after_run
    attack check "16 writer holding the file open rewrites it between two runs" not_ran held_writer
    attack check "16b writer holding the file open writes while python3 reads it" not_ran \
        mid_read_writer_tries held
    attack check "16c writer opening the file after python3 did, writing while it reads" not_ran \
        mid_read_writer_tries new
    attack check "16 racing same-size writer" not_ran racing_writer
    attack check "16 symlink swap racing the runs" not_ran symlink_swap
    baseline "family 16"

    # 17: bind mounts over a trusted module; user-namespace filesystems.
    attack check "17 root bind mount over a trusted module" refused root_bind_mount
    attack check "17 user-namespace bind mount over a trusted module" refused \
        nb "$root/lib2" 'exec unshare -Urm sh -c "mount --bind \"\$EVIL\" \"\$PWD/trusted.py\" &&
            exec python3 trusted.py"'
    attack check "17b user-namespace tmpfs, security.ima copied from a signed file" refused \
        nb "$tmp" 'exec unshare -Urm sh -c "mount -t tmpfs t mnt1 && cp \"\$EVIL\" mnt1/x.py &&
            setfattr -n security.ima -v \"\$SIG\" mnt1/x.py; getfattr -d -m - mnt1/x.py;
            exec python3 mnt1/x.py"' SIG="$(hexsig "$base/good.py")"
    attack check "17b user-namespace tmpfs, forged security.ima" refused \
        nb "$tmp" 'exec unshare -Urm sh -c "mount -t tmpfs t mnt2 && cp \"\$EVIL\" mnt2/x.py &&
            setfattr -n security.ima -v \"\$SIG\" mnt2/x.py; exec python3 mnt2/x.py"' \
        SIG="$(hexsig "$base/good.py" | sed 's/..$/00/')"
    attack check "17b user-namespace overlay: signed script from the lower layer, evil module above" \
        refused nb "$tmp" 'exec unshare -Urm sh -c "mount -t tmpfs t mnt3 &&
            mkdir mnt3/u mnt3/w mnt3/m && cp \"\$EVIL\" mnt3/u/helper.py &&
            mount -t overlay o -o lowerdir=\$BASE,upperdir=mnt3/u,workdir=mnt3/w mnt3/m &&
            exec python3 mnt3/m/ok.py"' BASE="$base"
    # 17d: procfs serves bytes the user chooses and fanotify cannot mark it; the kernel
    # refuses files named as code (the operand's name, *.py...) on untrusted filesystems,
    # under whatever name the path walk reaches them.
    attack check "17d python3 /proc/self/environ with code in a variable" refused \
        nb "$tmp" 'exec env -i X="1;$LINE" /usr/bin/python3 /proc/self/environ'
    attack check "17d python3 /proc/PID/comm of a process named exec(input())" refused \
        nb "$tmp" 'sh -c "printf \"exec(input())\" > /proc/self/comm; sleep 20; :" &
            sleep 0.5; python3 /proc/$!/comm < "$EVIL"; rc=$?; kill $!; exit $rc'
    attack check "17d cd /proc/self; python3 environ" refused \
        nb "$tmp" 'cd /proc/self && exec env -i X="1;$LINE" /usr/bin/python3 environ'
    attack check "17d a symlink x.py -> /proc/self/environ" refused \
        nb "$tmp" 'ln -sfn /proc/self/environ env17.py &&
            exec env -i X="1;$LINE" /usr/bin/python3 env17.py'
    attack check "17d a symlink without a code name -> /proc/self/environ" refused \
        nb "$tmp" 'ln -sfn /proc/self/environ env17 &&
            exec env -i X="1;$LINE" /usr/bin/python3 env17'
    # runpy compiles a directory's __main__ from bytes: environ's NULs fail, comm has none.
    attack check "17d a directory whose __main__.py -> /proc/PID/comm" refused \
        nb "$tmp" 'sh -c "printf \"exec(input())\" > /proc/self/comm; sleep 20; :" &
            sleep 0.5; mkdir -p dir17 && ln -sfn /proc/$!/comm dir17/__main__.py &&
            python3 dir17 < "$EVIL"; rc=$?; kill $!; exit $rc'
    attack check "17d /proc/self/fd/N of environ under the name N" refused \
        nb "$tmp" 'exec 7</proc/self/environ; cd /proc/self/fd &&
            exec env -i X="1;$LINE" /usr/bin/python3 7'
    # The shell's own environ ($$, not mount's /proc/self): it execs python3 in place.
    attack check "17d environ bind-mounted over x.py (user namespace)" refused \
        nb "$tmp" 'exec unshare -Urm sh -c "touch mnt17.py && mount --bind /proc/\$\$/environ mnt17.py &&
            exec env -i X=\"1;\$LINE\" /usr/bin/python3 mnt17.py"'
    attack check "17d environ bind-mounted twice over x.py" refused \
        nb "$tmp" 'exec unshare -Urm sh -c "touch mnt17b.py && mount --bind /proc/\$\$/environ mnt17b.py &&
            mount --bind /proc/\$\$/environ mnt17b.py &&
            exec env -i X=\"1;\$LINE\" /usr/bin/python3 mnt17b.py"'
    baseline "family 17"

    # Issue 15.1: an open is code by the name the interpreter asked for: code-named links
    # (a module, a package's __init__.py, a user-site .pth) to data-named files.
    attack check "names -m evil, evil.py -> a data-named file" refused \
        nb "$tmp/links" 'python3 -m evil'
    attack check "names a signed script imports evil.py -> a data-named file" refused \
        nb "$base" 'python3 imports_evil.py' PYTHONPATH="$tmp/links"
    attack check "names a package whose __init__.py -> a data-named file" refused \
        nb "$base" 'python3 imports_pkg.py' PYTHONPATH="$tmp/links"
    attack check "names a user-site .pth -> a data-named file" "signed:ok signed" \
        nb "$base" 'python3 ok.py' HOME="$tmp/links/home"
    # Issue 15.2: an empty word is a word (-W takes it; ./payload is the script).
    attack check "argv python3 -W '' ./payload" refused nb "$tmp/argv" "python3 -W '' ./payload"
    attack check "argv python3 -X '' payload" refused nb "$tmp/argv" "python3 -X '' payload"
    # Issue 15.3: a terminal is not a script (script(1) types the payload into the pty).
    attack check "tty python3 /dev/tty" refused \
        nb "$tmp" 'script -eqc "python3 /dev/tty" /dev/null < "$EVIL"'
    attack check "tty python3 //dev/./tty" refused \
        nb "$tmp" 'script -eqc "python3 //dev/./tty" /dev/null < "$EVIL"'
    attack check "tty cd /dev; python3 tty" refused \
        nb "$tmp" 'script -eqc "cd /dev && python3 tty" /dev/null < "$EVIL"'
    attack check "tty python3 \$(tty) (the pty by its own name)" refused \
        nb "$tmp" 'script -eqc "python3 \$(tty)" /dev/null < "$EVIL"'
    attack check "tty a symlink to the terminal" refused \
        nb "$tmp" 'ln -sfn /dev/tty ttylink && script -eqc "python3 ttylink" /dev/null < "$EVIL"'
    attack check "tty /proc/self/fd/0 reached as 0" refused \
        nb "$tmp" 'script -eqc "cd /proc/self/fd && python3 0" /dev/null < "$EVIL"'
    # Issue 25: lookups the attacker makes fail (the descriptor's path longer than PATH_MAX,
    # an operand through 40 symlinks) while the interpreter's own open succeeds.
    attack check "lookup a script in a directory deeper than PATH_MAX" refused \
        nb "$tmp" 'd=$(printf "d%.0s" $(seq 250)); for i in $(seq 18); do
            mkdir -p $d && cd $d || exit 9; done; printf "%s" "$CODE" > payload && python3 payload'
    attack check "lookup an operand through 40 symlinks" refused \
        nb "$tmp/hops" "python3 $(printf 's/%.0s' $(seq 40))payload"
    baseline "issues 15 and 25"

    # 18: the dynamic loader launching python3.
    local ldso=/lib64/ld-linux-x86-64.so.2
    attack check "18 ld.so python3 -c CODE" refused nb "$tmp" "exec $ldso /usr/bin/python3 -c \"\$CODE\""
    attack check "18 ld.so python3 unsigned.py" refused nb "$tmp" "exec $ldso /usr/bin/python3 evil.py"
    attack check "18 ld.so python3 < file" refused nb "$tmp" "exec $ldso /usr/bin/python3 < \"\$EVIL\""
    # 18b and issue 16: programs nobody made root's: copies of the loader and the interpreter
    # (the default [native] code = "trusted-owner").
    attack check "18b a copy of ld.so launching python3 -c" refused \
        nb "$tmp" "cp $ldso ./ld-copy && exec ./ld-copy /usr/bin/python3 -c \"\$CODE\""
    attack check "16 a copy of python3 -c CODE" refused \
        nb "$tmp" 'cp /usr/bin/python3 ./p-copy && exec ./p-copy -c "$CODE"'
    attack check "16 a copy of python3 unsigned.py" refused \
        nb "$tmp" 'cp /usr/bin/python3 ./p-copy && exec ./p-copy evil.py'
    attack check "16 a copy of python3 with a byte appended, -c CODE" refused \
        nb "$tmp" 'cp /usr/bin/python3 ./p-mod && printf x >> ./p-mod && exec ./p-mod -c "$CODE"'
    attack check "16 python3 copied into a memfd and fexecve'd (perl), -c CODE" refused \
        nb "$tmp" 'exec perl -e '"'"'my $n = "p"; my $fd = syscall(319, $n, 0); die if $fd < 0;
            open(my $m, ">&=", $fd) or die; open(my $i, "<:raw", "/usr/bin/python3") or die;
            local $/; select((select($m), $| = 1)[0]); print {$m} <$i>;
            exec {"/proc/self/fd/$fd"} "python3", "-c", $ENV{CODE} or die "exec: $!";'"'"
    attack check "16 LD_PRELOAD of the attacker's library into /bin/true" not_ran \
        nb "$tmp" 'LD_PRELOAD="$LIB" exec /bin/true' LIB="$tmp/evil.so"
    attack check "16 dlopen of the attacker's library (perl)" not_ran \
        nb "$tmp" 'exec perl -MDynaLoader -e "DynaLoader::dl_load_file(\$ENV{LIB})"' LIB="$tmp/evil.so"
    baseline "family 18"

    # 19: unsigned native code: LD_PRELOAD and ctypes.CDLL, also named .dat.
    for s in evil.so evil.dat; do
        attack check "19 LD_PRELOAD=$s" "signed:ok signed" \
            nb "$base" 'LD_PRELOAD="$LIB" exec python3 ok.py' LIB="$tmp/$s"
        attack check "19 ctypes.CDLL($s) from a signed script" "signed:refused" \
            nb "$base" 'python3 load.py "$LIB"' LIB="$tmp/$s"
    done
    baseline "family 19"
}

start_agent() {
    mkdir -p /var/log/guard
    # Only the agent's controllers may stop it (self-protection): /usr/bin/kill is one here.
    guard run --backend auto --key "$GUARD_CERT" --audit /var/log/guard/audit-attacks.jsonl \
        --controller /usr/bin/kill >> "$agent_log" 2>&1 &
    agent=$!
    wait_agent "$agent" "$agent_log"
}

echo "python3 binaries: ${pythons[*]}"
# The runs without guard need no guard layer left pinned by an earlier test.
guard debug lsm-unpin > /dev/null 2>&1
t0=$SECONDS
# The payloads' running without guard does not depend on the kernel: the suite shows it on
# its first kernel (GUARD_VM_BASELINE, set by xtask), and every kernel runs them under guard.
if [ "${GUARD_VM_BASELINE:-1}" = 1 ]; then
    setup
    attacks
    echo "(without guard: $((SECONDS - t0)) s)"
else
    echo "(without guard: shown on the suite's first kernel)"
fi
setup
phase=guard
t0=$SECONDS
if ! check "agent starts" start_agent; then
    exit 1
fi
check "backend is bpf-lsm+fanotify" bash -c "guard status | grep -q 'backend bpf-lsm+fanotify'"
attacks
echo "(under guard: $((SECONDS - t0)) s)"
/usr/bin/kill -TERM "$agent"
wait "$agent" 2> /dev/null
guard debug lsm-unpin > /dev/null 2>&1
rm -rf "$root" "$shm"
exit "$fail"
