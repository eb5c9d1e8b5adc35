#!/bin/bash
# Perl, Ruby and Node.js under `guard run --backend auto` (BPF LSM, exec gate and fanotify),
# profiled with their own grammars beside the embedded default's python: the VM's own
# /usr/bin/perl, ruby and node, their libraries signed with the VM key when the image was
# built (guard sign --perl --ruby --node). Each attack runs first without guard, where its
# payload must run (otherwise it proves nothing), then under the agent, where it must not;
# the signed baseline (a signed program using a signed module) runs after each. Every run
# is as nobody, bounded by a timeout; a payload that ran leaves a file in $out.
# shellcheck disable=SC2016
# shellcheck source=lib.bash
. "$(dirname "$0")/lib.bash"
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin

d=$(mktemp -d /tmp/interpreters.XXXXXX)
chmod 755 "$d"
out=$d/out
mkdir -m 1777 "$out"
marker=$out/ran
sign() { evmctl ima_sign --hashalgo sha256 --key "$GUARD_KEY" "$1" > /dev/null; }
agent_log=/var/log/guard/agent-interpreters.log
mkdir -p /var/log/guard

policy=/etc/guard/interpreters.toml
{
    guard policy show | grep -v '^#'
    cat << 'EOF'

[[interpreter]]
name = "perl"
executables = ["/usr/bin/perl", "/usr/bin/perl5*"]
argv = "perl"
code_patterns = ["*.pl", "*.pm", "*.pmc", "*.al", "*.ix", "*.ph", "*.so"]
deny_env = ["PERL5OPT", "PERL5DB", "PERLDB_OPTS"]
stdin_code_scripts = ["/usr/bin/json_pp"]

[[interpreter]]
name = "ruby"
executables = ["/usr/bin/ruby", "/usr/bin/ruby3*"]
argv = "ruby"
code_patterns = ["*.rb", "*.so", "*.gemspec"]
deny_env = ["RUBYOPT"]
inline_code_scripts = ["/usr/bin/erb*"]

[[interpreter]]
name = "node"
executables = ["/usr/bin/node", "/usr/bin/nodejs"]
argv = "node"
code_patterns = ["*.js", "*.mjs", "*.cjs", "*.node", "*.wasm", "package.json"]
deny_env = ["NODE_OPTIONS", "NODE_REPL_EXTERNAL_MODULE"]

EOF
} > "$policy"
check "policy valid" guard policy check "$policy"

limit=30
# nb LANG-DIR ARGS…: the interpreter $exe run as nobody in the lab, clean environment plus
# $ENVS (NAME=VALUE words), standard input from $INPUT (a file) or /dev/null.
nb() {
    (cd "$lab" && exec timeout -k 5 "$limit" "${user[@]}" -- env -i PATH=/usr/bin:/bin \
        HOME=/nonexistent LANG=C.UTF-8 ${ENVS:-} "$exe" "$@" < "${INPUT:-/dev/null}")
}
ran() { [ -e "$marker" ] && rm -f "$marker"; }
not_ran() { ! ran; }
runs_baseline() { nb ok_main.x 2>&1 | grep -q "signed main"; }

# lab LANG SUFFIX PAYLOAD LOAD_FMT PRINT_FMT: the lab of one interpreter.
setup_lab() {
    local name=$1 suffix=$2 payload=$3 load=$4 print=$5
    lab=$d/$name
    mkdir -m 755 "$lab"
    # shellcheck disable=SC2059
    {
        printf "$print" "signed module" > "$lab/ok_module.$suffix"
        printf "$load" "ok_module.$suffix" > "$lab/ok_main.x"
        printf "$print" "signed main" >> "$lab/ok_main.x"
        printf "$load" "evil.$suffix" > "$lab/loads_evil.x"
        printf "$load" "link.$suffix" > "$lab/loads_link.x"
    }
    printf '%s\n' "$payload" > "$lab/evil.$suffix"
    printf '%s\n' "$payload" > "$lab/data.txt"
    printf '%s\n' "$payload" > "$lab/code.in"
    ln -s data.txt "$lab/link.$suffix"
    chmod 644 "$lab"/*.x "$lab"/*."$suffix" "$lab/data.txt" "$lab/code.in" 2> /dev/null
    for f in "$lab/ok_module.$suffix" "$lab"/*.x; do sign "$f"; done
}

# attacks NAME: one line per attack, "DESCRIPTION|ENVS|INPUT|ARGS…" (ARGS split on spaces
# unless quoted by the caller's eval), each with the payload in $payload.
perl_attacks() {
    cat << 'EOF'
the program on stdin||code.in|
`-` and the program on stdin||code.in|-
/dev/stdin as the script||code.in|/dev/stdin
a data file as the script|||data.txt
a link named as code to a data file|||link.pm
an unsigned module beside signed code|||loads_evil.x
a link named as code loaded by signed code|||loads_link.x
-e|||-e "$payload"
-E|||-E "$payload"
-e in a cluster|||-we "$payload"
-M with code|||"-Mstrict;$payload" -e1
-M of an unsigned module|||-I. -Mevil ok_main.x
json_pp -f eval (a gadget script) reading stdin||code.in|/usr/bin/json_pp -f eval
PERL5OPT loading a module|PERL5OPT=-Mevil PERL5LIB=.||ok_main.x
the debugger reading stdin||debugger.in|-d ok_main.x
EOF
}
ruby_attacks() {
    cat << 'EOF'
the program on stdin||code.in|
`-` and the program on stdin||code.in|-
/dev/stdin as the script||code.in|/dev/stdin
a data file as the script|||data.txt
a link named as code to a data file|||link.rb
an unsigned module beside signed code|||loads_evil.x
a link named as code loaded by signed code|||loads_link.x
-e|||-e "$payload"
-e in a cluster|||-we "$payload"
-r of an unsigned library|||-r./evil ok_main.x
erb (a gadget script) on a template|||/usr/bin/erb template.erb
RUBYOPT requiring a library|RUBYOPT=-r./evil||ok_main.x
EOF
}
node_attacks() {
    cat << 'EOF'
the program on stdin||code.in|
`-` and the program on stdin||code.in|-
/dev/stdin as the script||code.in|/dev/stdin
a data file as the script|||data.txt
a link named as code to a data file|||link.js
an unsigned module beside signed code|||loads_evil.x
a link named as code loaded by signed code|||loads_link.x
-e|||-e "$payload"
-p|||-p "$payload"
the REPL reading stdin||code.in|-i
-r of an unsigned module|||-r ./evil.js ok_main.x
-r of a data file (node compiles any name)|||-r ./data.txt ok_main.x
a package directory whose main is a data file|||pkg
a package found by name whose main is a data file|||loads_planted.x
--title hiding the data file it runs|||--title=x data.txt
-r of standard input||code.in|-r /dev/stdin ok_main.x
NODE_OPTIONS requiring a module|NODE_OPTIONS=--require=./evil.js||ok_main.x
EOF
}
# run_attacks NAME PHASE: every attack of NAME; PHASE "bare" (payload must run) or
# "guarded" (it must not, and the baseline still runs).
run_attacks() {
    local name=$1 phase=$2 line what envs input args
    while IFS='|' read -r what envs input args; do
        rm -f "$marker"
        ENVS=$envs INPUT=${input:+$lab/$input} eval "nb $args" > /dev/null 2>&1
        if [ "$phase" = bare ]; then
            check "$name without guard: $what runs" ran
        else
            check "$name under guard: $what refused" not_ran
            check "$name under guard: the baseline runs after $what" runs_baseline
        fi
    done < <("${name}_attacks")
}

setup_lab perl pm "open(my \$f, '>', '$marker'); print \$f 'ran'; close \$f;" \
    "require './%s';\n" 'print "%s\\n";\n'
# The debugger evaluates each line it reads as Perl.
printf "open(my \$f, '>', '%s'); print \$f 'ran'; close \$f\nq\n" "$marker" > "$d/perl/debugger.in"
chmod 644 "$d/perl/debugger.in"
setup_lab ruby rb "File.write('$marker', 'ran')" "require_relative './%s'\n" "puts '%s'\n"
setup_lab node js "require('fs').writeFileSync('$marker', 'ran');" "require('./%s');\n" \
    "console.log('%s');\n"
# A package directory: `node pkg` runs the file its package.json names, whatever its name.
mkdir -m 755 "$d/node/pkg"
printf '{"name": "pkg", "main": "notes.txt"}\n' > "$d/node/pkg/package.json"
cp "$d/node/data.txt" "$d/node/pkg/notes.txt"
chmod 644 "$d/node/pkg/package.json" "$d/node/pkg/notes.txt"
# A package the attacker planted where node searches for a name signed code requires.
mkdir -p -m 755 "$d/node/node_modules/planted"
printf '{"name": "planted", "main": "notes.txt"}\n' > "$d/node/node_modules/planted/package.json"
cp "$d/node/data.txt" "$d/node/node_modules/planted/notes.txt"
chmod 644 "$d/node/node_modules/planted/"*
printf "require('planted');\n" > "$d/node/loads_planted.x"
chmod 644 "$d/node/loads_planted.x"
sign "$d/node/loads_planted.x"

# The gadget scripts, signed like the rest of the distribution: refused for what they run.
sign /usr/bin/json_pp
sign "$(readlink -f /usr/bin/erb)"
printf "<%% File.write('%s', 'ran') %%>\n" "$marker" > "$d/ruby/template.erb"
chmod 644 "$d/ruby/template.erb"

# Node opens a module by its real path: `require('./link.js')` with `link.js -> data.txt`
# reads the link (fs.realpathSync's walk) and opens data.txt, a name that is not code. The
# kernel refuses an interpreter's readlink of a link named as code to a name that is not
# (`code-named-link`), or whose target it cannot read (`facts-unavailable`: here a target of
# about 200 bytes, which neither tmpfs nor ext4 keep in the inode).
node_lab=$d/node-links
mkdir -m 755 "$node_lab"
node_payload="require('fs').writeFileSync('$marker', 'ran');"
far=$(printf './%.0s' $(seq 1 95))real.js
{
    printf "console.log('signed module');\n" > "$node_lab/ok_module.js"
    printf "require('./ok_module.js');\nconsole.log('signed main');\n" > "$node_lab/main.js"
    printf "require('./link.js');\n" > "$node_lab/loads_link.js"
    printf "console.log('signed through a link');\n" > "$node_lab/real.js"
    printf "require('./good.js');\n" > "$node_lab/loads_good.js"
    printf "require('./far.js');\n" > "$node_lab/loads_far.js"
    printf "console.log(require('fs').readlinkSync('plain'));\n" > "$node_lab/reads_plain.js"
    printf "import os\nprint(os.readlink('link.py'))\n" > "$node_lab/reads_link.py"
}
printf '%s\n' "$node_payload" > "$node_lab/data.txt"
ln -s data.txt "$node_lab/link.js"
ln -s real.js "$node_lab/good.js"
ln -s "$far" "$node_lab/far.js"
ln -s data.txt "$node_lab/plain"
ln -s data.txt "$node_lab/link.py"
chmod 644 "$node_lab"/*.js "$node_lab"/*.py "$node_lab/data.txt" 2> /dev/null
for f in ok_module.js main.js loads_link.js real.js loads_good.js loads_far.js reads_plain.js \
    reads_link.py; do
    sign "$node_lab/$f"
done
# node_checks PHASE: "bare" (every payload runs, every link resolves) or "guarded".
node_checks() {
    local phase=$1 lab=$node_lab exe=/usr/bin/node
    says() { nb "$1" 2>&1 | grep -qx "$2"; }
    says_not() { ! says "$@"; }
    check "node $phase: the signed baseline runs" says main.js "signed main"
    rm -f "$marker"
    nb loads_link.js > /dev/null 2>&1
    if [ "$phase" = bare ]; then
        check "node without guard: a link named as code to a data file, required by signed code, runs" ran
        check "node without guard: a link named as code far from its target runs" \
            says loads_far.js "signed through a link"
    else
        check "node under guard: a link named as code to a data file, required by signed code, refused" not_ran
        check "node under guard: the link's readlink is what was refused" \
            eval 'nb loads_link.js 2>&1 | grep -q "EACCES: permission denied, readlink .*/link.js"'
        check "node under guard: the baseline runs after the link" says main.js "signed main"
        check "node under guard: a link named as code whose target the kernel cannot read, refused" \
            says_not loads_far.js "signed through a link"
        check "node under guard: the far link's readlink is what was refused" \
            eval 'nb loads_far.js 2>&1 | grep -q "EACCES: permission denied, readlink .*/far.js"'
    fi
    check "node $phase: a link named as code to a signed file named as code runs" \
        says loads_good.js "signed through a link"
    check "node $phase: a link not named as code is read" says reads_plain.js "data.txt"
    exe=/usr/bin/python3
    if [ "$phase" = bare ]; then
        check "python without guard: a link named as code to a data file is read" \
            says reads_link.py "data.txt"
    else
        check "python under guard: a link named as code to a data file is not read" \
            says_not reads_link.py "data.txt"
        check "python under guard: the refusal is EACCES" \
            eval 'nb reads_link.py 2>&1 | grep -q "PermissionError.*Permission denied"'
    fi
}

declare -A exes=([perl]=/usr/bin/perl [ruby]=/usr/bin/ruby [node]=/usr/bin/node)
declare -A payloads=(
    [perl]="open(my \$f, '>', '$marker'); print \$f 'ran'; close \$f;"
    [ruby]="File.write('$marker', 'ran')"
    [node]="require('fs').writeFileSync('$marker', 'ran');"
)
for name in perl ruby node; do
    exe=${exes[$name]} lab=$d/$name payload=${payloads[$name]}
    echo "### $name without guard ($exe)"
    check "$name: the signed baseline runs" runs_baseline
    run_attacks "$name" bare
done
echo "### node without guard"
node_checks bare

audit=/var/log/guard/audit-interpreters.jsonl
rm -f "$audit"
guard run --backend auto --policy "$policy" --key "$GUARD_CERT" --audit "$audit" \
    --controller /usr/bin/kill >> "$agent_log" 2>&1 &
agent=$!
# Four grammars' programs to verify (CPython's, Perl's, Ruby's, Node's), and the LSM layer's.
check "agent starts" wait_agent "$agent" "$agent_log" 400
for name in perl ruby node; do
    exe=${exes[$name]} lab=$d/$name payload=${payloads[$name]}
    echo "### $name under guard"
    check "$name: the signed baseline runs under guard" runs_baseline
    run_attacks "$name" guarded
done
echo "### node under guard"
node_checks guarded
check "the readlink refusal is audited (code-named-link)" \
    grep -q 'inode_readlink refused rule=code-named-link' "$audit"
check "the unread target's refusal is audited (facts-unavailable)" \
    grep -q 'inode_readlink refused rule=facts-unavailable' "$audit"
/usr/bin/kill "$agent"
wait "$agent" 2> /dev/null
guard debug lsm-unpin > /dev/null 2>&1
[ "$fail" = 0 ] || tail -n 40 "$agent_log"
exit "$fail"
