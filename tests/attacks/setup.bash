# The attack catalog's files (catalog.txt), made by root before each phase; sourced by both
# runners (tests/vm/attacks.sh in the VM, tests/tests/attacks.rs on the host), which set:
#   ROOT      the lab (emptied first): out/ (payload markers, 1777), base/ (root's signed code),
#             tmp/ (the attacker's scratch, 1777), home/ (a HOME the attacker owns), app/,
#             lib/, lib2/, home2/
#   SHM_EVIL  an unsigned script on a second filesystem (/dev/shm-like)
#   CODE      the payload (creates $ROOT/out/ran); GUARD_KEY the signing key
# and a python3 on PATH that is nobody's profile (it runs here as root, before any agent).
# shellcheck shell=bash
set -u
OUT=$ROOT/out BASE=$ROOT/base TMP=$ROOT/tmp AHOME=$ROOT/home
LINE=$(head -n 1 <<<"$CODE")

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
padded() { printf "%-$((${#CODE} - 1))s\n" "$1"; }
hexsig() { getfattr -e hex -n security.ima "$1" 2> /dev/null | sed -n 's/^security.ima=//p'; }

# Python run as root: builds the pycs of families 12 and 13.
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
# The unsigned library of family 19: its constructor creates $OUT/native. Built where there
# is a compiler (the host); the VM image has none and uses this build of it, whose marker is
# the VM's /tmp/attacks/out/native (no libc):
#   static const char marker[] = "/tmp/attacks/out/native";
#   __attribute__((constructor)) static void run(void) {
#       long fd;
#       asm volatile("syscall" : "=a"(fd) : "0"(2L), "D"(marker), "S"(0101L), "d"(0644L)
#                    : "rcx", "r11", "memory");
#       if (fd >= 0) asm volatile("syscall" : : "a"(3L), "D"(fd) : "rcx", "r11", "memory");
#   }
# gcc -Os -shared -fPIC -nostdlib -s -Wl,--build-id=none -Wl,-z,noseparate-code evil.c
# (gcc 12.2), then gzip -9 -n | base64.
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

mkdir -p "$ROOT"
find "$ROOT" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
rm -f "$SHM_EVIL"
mkdir -p "$OUT" "$BASE" "$TMP" "$AHOME"
chmod 755 "$ROOT" "$BASE"
chmod 1777 "$OUT" "$TMP"
chown 65534:65534 "$AHOME"
signed "$BASE/helper.py" 'V = "signed"
'
signed "$BASE/ok.py" 'import sys, helper
print("ok", helper.V, *sys.argv[1:])
'
signed "$BASE/uses_json.py" 'import json
print(json.dumps([1]))
'
evil "$TMP/evil.py" "$CODE"
# 1b: data files that interpreter modules run as code.
evil "$TMP/notes.txt" ">>> $LINE
"
evil "$TMP/evil.txt" "$CODE"
# (pygments loads a lexer from any file with `.py` somewhere in its name)
evil "$TMP/evil.py.txt" "$CODE"
python3 -c 'import pickle, sys
class P:
    def __reduce__(self): return (exec, (sys.argv[2],))
open(sys.argv[1], "wb").write(pickle.dumps(P()))' "$TMP/evil.pkl" "$LINE"
chown 65534:65534 "$TMP/evil.pkl"
# 4: unsigned files wherever the attacker can write, whatever their name.
evil "$AHOME/.cache/evil" "$CODE"
evil "$AHOME/notes.txt" "$CODE"
evil "$TMP/app/__main__.py" "$CODE"
chown 65534:65534 "$TMP/app"
evil "$SHM_EVIL" "$CODE"
# 5: the attacker's loader (perl) puts the payload in a memfd and runs python3 on it by the
# path spelled in its argument ({fd}, {pid}), or through a symlink $LINK to that path.
cat > "$ROOT/memfd.pl" <<'PERL'
my $n = "x"; my $fd = syscall(319, $n, 0); die "memfd_create: $!" if $fd < 0;
my $c = $ENV{CODE}; syscall(1, $fd, $c, length $c) == length $c or die "write: $!";
my $p = $ARGV[0]; $p =~ s/\{fd\}/$fd/g; $p =~ s/\{pid\}/$$/g;
if ($ENV{LINK}) { symlink($p, $ENV{LINK}) or die "symlink: $!"; $p = $ENV{LINK}; }
exec("python3", $p) or die "exec: $!";
PERL
chmod 644 "$ROOT/memfd.pl"
# Issue 15 and 25: code-named links to data-named files, a data-named script, hops.
evil "$TMP/links/p" "$CODE"
evil "$TMP/links/pth-data" "import os; $LINE
"
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$TMP/links/pkg" "$TMP/links/home/.local/lib/python$pyver/site-packages"
ln -s p "$TMP/links/evil.py"
ln -s ../p "$TMP/links/pkg/__init__.py"
ln -s ../../../../../pth-data "$TMP/links/home/.local/lib/python$pyver/site-packages/evil.pth"
chown -hR 65534:65534 "$TMP/links"
signed "$BASE/imports_evil.py" 'import evil
'
signed "$BASE/imports_pkg.py" 'import pkg
'
evil "$TMP/argv/payload" "$CODE"
evil "$TMP/hops/payload" "$CODE"
ln -s . "$TMP/hops/s"
chown -hR 65534:65534 "$TMP/argv" "$TMP/hops"
# 5: files the attacker will delete while holding them open.
evil "$TMP/deleted.py" "$CODE"
evil "$TMP/deleted2.py" "$CODE"
# 8: -m from the attacker's cwd; a stdlib shadow next to a signed script.
evil "$TMP/m/json.py" "$CODE"
evil "$TMP/m/evilmod.py" "$CODE"
chown 65534:65534 "$TMP/m"
signed "$ROOT/app/uses_json.py" "$(cat "$BASE/uses_json.py")"
evil "$ROOT/app/json.py" "$CODE"
chmod 755 "$ROOT/app"
# 9: PYTHONPATH targets, one module each and all three together; PYTHONHOME.
for d in pp-site pp; do evil "$TMP/$d/sitecustomize.py" "$CODE"; done
for d in pp-user pp; do evil "$TMP/$d/usercustomize.py" "$CODE"; done
for d in pp-json pp; do evil "$TMP/$d/json.py" "$CODE"; done
# (encodings runs before io exists: no open() nor print() yet)
early="import posix; posix.close(posix.open('$OUT/ran', posix.O_CREAT | posix.O_WRONLY))
"
evil "$TMP/phome/lib/python$pyver/encodings/__init__.py" "$early"
evil "$TMP/phome/lib/python$pyver/os.py" "$early"
chown -R 65534:65534 "$TMP"/pp-* "$TMP/pp" "$TMP/phome"
# 10: .pth files in the user site of HOMEs the attacker owns.
site=.local/lib/python$pyver/site-packages
evil "$AHOME/$site/x.pth" "import os; $LINE
"
evil "$ROOT/home2/$site/y.pth" 'import evil_site
'
evil "$ROOT/home2/$site/evil_site.py" "$CODE"
chown -R 65534:65534 "$AHOME" "$ROOT/home2"
# 11: archives.
python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("__main__.py", sys.argv[2])
    z.writestr("json.py", sys.argv[2])' "$TMP/evil.zip" "$CODE"
cp "$TMP/evil.zip" "$TMP/evil.whl"
cp "$TMP/evil.zip" "$TMP/archive.dat"
chown 65534:65534 "$TMP/evil.zip" "$TMP/evil.whl" "$TMP/archive.dat"
# 12: forged pycs for a signed module in a __pycache__ the attacker can write.
tag=$(python3 -c 'import sys; print(sys.implementation.cache_tag)')
signed "$ROOT/lib/mod.py" 'WHO = "signed source"
'
signed "$ROOT/lib/main.py" 'import mod
print(mod.WHO)
'
chmod 755 "$ROOT/lib"
mkdir -p "$ROOT/lib/__pycache__"
chown 65534:65534 "$ROOT/lib/__pycache__"
for kind in timestamp checked unchecked; do
    python3 -c "$pyc_of" "$ROOT/lib/mod.py" "$TMP/forged/$kind.pyc" $kind "${CODE}WHO = 'forged'"
done
python3 -c "$pyc_of" "$ROOT/lib/mod.py" \
    "$TMP/prefix${ROOT}/lib/mod.$tag.pyc" timestamp "${CODE}WHO = 'forged'"
chown -R 65534:65534 "$TMP/forged" "$TMP/prefix"
# 13: sourceless pycs.
python3 -c "$pyc_of" /nonexistent "$TMP/sl/evilmod.pyc" timestamp "$CODE"
cp "$TMP/sl/evilmod.pyc" "$TMP/sl/evil.txt"
python3 -c "$pyc_of" /nonexistent "$TMP/slj/json.pyc" timestamp "$CODE"
chown -R 65534:65534 "$TMP/sl" "$TMP/slj"
# 14: security.ima copied onto another file; user.ima on the attacker's own file.
signed "$BASE/good.py" 'print("good")
'
hexsig "$BASE/good.py" > "$ROOT/good.sig"
hexsig "$BASE/good.py" | sed 's/..$/00/' > "$ROOT/forged.sig"
printf '%s' "$CODE" > "$BASE/copied.py"
chmod 644 "$BASE/copied.py"
setfattr -n security.ima -v "$(cat "$ROOT/good.sig")" "$BASE/copied.py"
evil "$TMP/user.py" "$CODE"
setfattr -n user.ima -v "$(cat "$ROOT/good.sig")" "$TMP/user.py"
# 15: signed but attacker-owned; signed but world-writable.
signed "$TMP/own.py" "$CODE"
chown 65534:65534 "$TMP/own.py"
signed "$BASE/world.py" "$CODE"
chmod 666 "$BASE/world.py"
# Issue 16: signed, root's, 0644, with an ACL that lets nobody write it: as a named user,
# as a named group (nogroup, nobody's). The xattr's binary form (the VM has no setfacl):
# version 2, then {u16 tag, u16 perm, u32 id} entries sorted by tag.
uo=01000600ffffffff go=04000400ffffffff oth=20000400ffffffff
for acl in "user:${uo}02000600feff0000${go}10000600ffffffff${oth}" \
    "group:${uo}${go}08000600feff000010000600ffffffff${oth}"; do
    signed "$BASE/acl_${acl%%:*}.py" "$CODE"
    setfattr -n system.posix_acl_access -v "0x02000000${acl#*:}" "$BASE/acl_${acl%%:*}.py"
done
# 16: signed scripts for the rewrites, the same size as the payload (the runners' own code).
signed "$BASE/same.py" "$(padded "print('same')")"
signed "$BASE/held.py" "$(padded "print('held')")"
signed "$BASE/race.py" "$(padded "print('race')")"
cp "$BASE/race.py" "$ROOT/race.good"
row=$(printf '0,%.0s' $(seq 30))
{
    echo "x = ["
    for _ in $(seq 10000); do echo "$row"; done
    echo "]"
    echo "print('big')"
    printf "#%$((${#CODE} - 2))s\n" ''
} > "$ROOT/big.good"
cp "$ROOT/big.good" "$BASE/big.py"
sign "$BASE/big.py"
printf '%s' "$CODE" > "$ROOT/race.evil"
# 17: a trusted module to mount over; mount points for the user namespaces.
signed "$ROOT/lib2/trusted.py" 'print("trusted")
'
chmod 755 "$ROOT/lib2"
mkdir -p "$TMP/mnt1" "$TMP/mnt2" "$TMP/mnt3"
chown 65534:65534 "$TMP"/mnt*
# 19: an unsigned library, also named .dat; a signed script that loads a library.
if command -v gcc > /dev/null; then
    printf '#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void run(void) { close(open("%s", O_CREAT | O_WRONLY, 0644)); }\n' \
        "$OUT/native" | gcc -shared -fPIC -o "$TMP/evil.so" -x c -
elif [ "$OUT" = /tmp/attacks/out ]; then
    base64 -d <<<"$evil_so" | gunzip > "$TMP/evil.so"
else
    echo "no compiler, and the prebuilt evil.so marks /tmp/attacks/out only" >&2
    exit 1
fi
cp "$TMP/evil.so" "$TMP/evil.dat"
chown 65534:65534 "$TMP/evil.so" "$TMP/evil.dat"
signed "$BASE/load.py" 'import ctypes, sys
try:
    ctypes.CDLL(sys.argv[1])
    print("loaded")
except OSError as e:
    print("refused", e)
'
# What the commands may use beyond the runners' variables: the bytecode's cache tag.
echo "$tag" > "$ROOT/tag"
