//! Generator and oracle of the Node.js command-line differential test
//! (`tests/argv_node_differential.rs`): the choices come from the CPython test's sources
//! (`argv_oracle.rs`, included beside this file).
//!
//! Node is asked what it ran, never guard's model of it: it runs in a directory where every
//! word of the command line that can name a file is a script printing a tag with its own
//! name and `process.argv[1]` (which node sets to the main operand's resolved path when it
//! runs one), its standard input is a program printing another tag, inline code and `data:`
//! URLs print tags of their own, and an environment file puts a `--require` of a tagged
//! file into `NODE_OPTIONS`. What it printed (and its messages: `[eval]` in a traceback, the
//! REPL's greeting, the inspector's "Debugger listening", the debugger client, a missing
//! main module, the test runner's TAP) says what it ran.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_common::argv::{Dialect, Word};
use guard_common::exec_gate::{
    ARG_BUFFER, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_STDIN_CODE,
    MAX_ARGS, NoModules, Step, judge_argv,
};
use guard_common::node_argv::{self, Invocation, Reader};

use crate::oracle::Source;

// ---------------------------------------------------------------------------------------
// The command lines

const TAG: &str = "GUARDTAG ";
/// Inline code that says it ran (also a file name and a module specifier).
pub(crate) const CODE_WORD: &str = "console.log(\"GUARDTAG code\")";
/// A `data:` URL whose code says it ran.
const DATA_URL: &str = "data:text/javascript,console.log(\"GUARDTAG data\")";
/// The environment file (`--env-file`): valid JavaScript and a dotenv file whose
/// `NODE_OPTIONS` requires [`ENV_PRELOAD`].
const ENV_FILE: &str = "env";
const ENV_PRELOAD: &str = "envpre";

/// Operands: files, the cwd (its `index.js`), standard input (`-`, the empty word, the
/// descriptor links), a missing file, the debugger client's word.
const SCRIPTS: &[&str] = &[
    "p",
    "./p",
    "q",
    "",
    ".",
    "-",
    "/dev/stdin",
    "/proc/self/fd/0",
    "nodir/p",
    "\u{e9}",
    "inspect",
    "./inspect",
    "x.mjs",
];
/// `-e`/`-p` values: code that prints its tag, nothing, option-like words (node refuses
/// them as values), words that fail as code with a traceback in `[eval]`.
const CODE: &[&str] = &[
    CODE_WORD, CODE_WORD, "", "-i", "-e", "--", "-", "\\-e", "x", "p", "inspect",
];
/// Values of the options with one.
const VALUES: &[&str] = &[
    "p", "./p", "module", "commonjs", "0", "", "-e", "-i", "--", "-", "\\-i", "x", "inspect",
    "node:fs", ENV_FILE, CODE_WORD, DATA_URL,
];
/// ES module specifiers (`--import`, `--loader`, `--test-reporter`), also as `-r` values.
const SPECIFIERS: &[&str] = &[
    "./p",
    "./q",
    "p",
    "node:fs",
    "file:p",
    DATA_URL,
    " data:text/javascript,console.log(\"GUARDTAG data\")",
    "DATA:text/javascript,console.log(\"GUARDTAG data\")",
    "da\tta:text/javascript,console.log(\"GUARDTAG data\")",
    "./data:x",
    "nodir/p",
    "-e",
    "",
    "spec",
    // Standard input as a module, in spellings the URL parser rewrites or not.
    "/dev/stdin",
    "/proc/self/fd/0",
    "/dev/./stdin",
    "/%64ev/stdin",
    "/dev\\stdin",
    "file:///dev/stdin",
];
/// Options with a value, in every spelling node accepts and some it does not.
const WITH_VALUE: &[&str] = &[
    "-r",
    "--require",
    "--require",
    "--import",
    "--import",
    "--loader",
    "--experimental-loader",
    "--experimental_loader",
    "--test-reporter",
    "-C",
    "--conditions",
    "--title",
    "--input-type",
    "--input_type",
    "--experimental-default-type",
    "--env-file",
    "--max-http-header-size",
    "--inspect-port",
    "--debug-port",
    "--unhandled-rejections",
    "--dns-result-order",
    "--icu-data-dir",
    "--disable-warning",
    "--experimental-specifier-resolution",
    "--es-module-specifier-resolution",
    "--snapshot-blob",
    "--test-name-pattern",
    "--use-largepages",
    "--no-require",
    "--stack-trace-limit",
    "--heap-prof-dir",
    "-e",
    "--eval",
    "-pe",
    "--eval",
];
/// Options without a value: node's own, V8's, negations, aliases.
const NO_VALUE: &[&str] = &[
    "-i",
    "-i",
    "--interactive",
    "--no-interactive",
    "--no_interactive",
    "--interactive=0",
    "-c",
    "--check",
    "-p",
    "--print",
    "--no-print",
    "--print=x",
    "--trace-warnings",
    "--no-warnings",
    "--expose-gc",
    "--expose_gc",
    "-expose-gc",
    "--allow-natives-syntax",
    "--frozen-intrinsics",
    "--jitless",
    "--no-opt",
    "--stack-size=900",
    "--stack-size",
    "--inspect=0",
    "--inspect-brk=0",
    "--inspect_brk=0",
    "--inspect-wait=0",
    "--inspect",
    "--no-inspect",
    "--debug",
    "--debug-brk",
    "--prof-process",
    "--no-prof-process",
    "--build-snapshot",
    "--no-build-snapshot",
    "--experimental-vm-modules",
    "--preserve-symlinks",
    "--title=x",
    "--input-type=module",
    "--experimental-default-type=module",
    "--experimental-default-type=commonjs",
    "--test",
    "--no-test",
    "--no-check",
    "--no-version",
    "--no-help",
];
/// Options that end the options.
const ENDS: &[&str] = &[
    "--",
    "--prof-process",
    "--no-prof-process",
    "--prof_process",
];
/// Unknown options, options node refuses, options that print and exit.
const ODD: &[&str] = &[
    "-x",
    "--frob",
    "---",
    "--=",
    "--no-",
    "-e=x",
    "-ep",
    "-pi",
    "--e",
    "--p",
    "-_e",
    "--no-no-interactive",
    "--EVAL=x",
    "-pe=x",
    "--eval=",
    "--no-eval=x",
    "-h",
    "--help",
    "-v",
    "--version",
    "--v8-options",
    "--completion-bash",
    "--trace-turbo-path",
];
/// Bare options, also as words of a program's own argv.
const SHORT: &[&str] = &["-e", "-p", "-pe", "-r", "-i", "-c", "--", "-"];

const ALL: &[&[&str]] = &[
    SCRIPTS, CODE, VALUES, SPECIFIERS, WITH_VALUE, NO_VALUE, ENDS, ODD, SHORT,
];

fn any_word<'a>(src: &mut impl Source) -> &'a str {
    let list = ALL[src.below(ALL.len())];
    src.pick(list)
}

/// The values an option takes, by its name.
fn values_for(option: &str) -> &'static [&'static str] {
    match option {
        "-e" | "--eval" | "-pe" => CODE,
        "-r"
        | "--require"
        | "--import"
        | "--loader"
        | "--experimental-loader"
        | "--experimental_loader"
        | "--test-reporter" => SPECIFIERS,
        _ => VALUES,
    }
}

/// An option with its value: attached with `=`, in the next word, or missing.
fn with_value(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    let option = src.pick(WITH_VALUE);
    let values = values_for(option);
    match src.below(8) {
        0..=2 => {
            let mut word = option.as_bytes().to_vec();
            word.push(b'=');
            word.extend_from_slice(src.pick(values).as_bytes());
            words.push(word);
        }
        3..=5 => {
            words.push(option.as_bytes().to_vec());
            words.push(src.pick(values).as_bytes().to_vec());
        }
        6 => {
            words.push(option.as_bytes().to_vec());
            words.push(any_word(src).as_bytes().to_vec());
        }
        _ => words.push(option.as_bytes().to_vec()),
    }
}

/// One option, operand or program word (with its value) appended to `words`.
fn item(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    match src.below(20) {
        0..=4 => words.push(src.pick(NO_VALUE).as_bytes().to_vec()),
        5..=9 => with_value(src, words),
        10..=12 => words.push(src.pick(SCRIPTS).as_bytes().to_vec()),
        13 => {
            words.push(src.pick(ENDS).as_bytes().to_vec());
            if src.chance(80) {
                words.push(any_word(src).as_bytes().to_vec());
            }
        }
        14 => words.push(src.pick(ODD).as_bytes().to_vec()),
        15 => {
            // `-p` and a word that may become code.
            words.push(
                src.pick(&["-p", "--print", "--no-print", "--print=y"])
                    .as_bytes()
                    .to_vec(),
            );
            words.push(any_word(src).as_bytes().to_vec());
        }
        16 => {
            // Inline code in one of its spellings.
            let spelling = src.pick(&["-e", "--eval", "-pe", "-p", "--eval=", "--print="]);
            if spelling.ends_with('=') {
                words.push(format!("{spelling}{CODE_WORD}").into_bytes());
            } else {
                words.push(spelling.as_bytes().to_vec());
                words.push(src.pick(CODE).as_bytes().to_vec());
            }
        }
        17..=18 => words.push(any_word(src).as_bytes().to_vec()),
        _ => words.push(long_word(src)),
    }
}

/// Words longer than the kernel reads of one ([`ARG_BUFFER`]).
fn long_word(src: &mut impl Source) -> Vec<u8> {
    let length = 100 + src.below(100);
    match src.below(5) {
        0 => {
            let mut word = b"--title=".to_vec();
            word.extend(std::iter::repeat_n(b'x', length));
            word
        }
        1 => vec![b'a'; length],
        2 => {
            let mut word = b"--".to_vec();
            word.extend(std::iter::repeat_n(b'x', length));
            word
        }
        3 => {
            let mut word = b"--import=./".to_vec();
            word.extend(std::iter::repeat_n(b'x', length));
            word
        }
        _ => {
            let mut word = b"--require".to_vec();
            word.extend(std::iter::repeat_n(b'_', length));
            word
        }
    }
}

/// A command line (without `argv[0]`).
pub(crate) fn generate(src: &mut impl Source) -> Vec<Vec<u8>> {
    let items = if src.chance(5) {
        10 + src.below(30)
    } else {
        src.below(7)
    };
    let mut words = Vec::new();
    for _ in 0..items {
        item(src, &mut words);
    }
    words
}

/// The command line as a shell would take it, to paste into one.
pub(crate) fn shell_words(words: &[Vec<u8>]) -> String {
    crate::differential::shell_line("node", words)
}

// ---------------------------------------------------------------------------------------
// The interpreters

/// The node executables here: `/usr/bin/node`, `/usr/bin/nodejs`, `/usr/local/bin/node`,
/// ELF files only, each once by canonical path; `GUARD_ARGV_NODE` (paths separated by `:`)
/// replaces the list.
pub(crate) fn node_interpreters() -> Vec<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("GUARD_ARGV_NODE") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => ["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"]
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let mut found: Vec<PathBuf> = Vec::new();
    for path in candidates {
        let Ok(canonical) = fs::canonicalize(&path) else {
            continue;
        };
        let mut magic = [0u8; 4];
        let elf = fs::File::open(&canonical)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if elf && !found.contains(&canonical) {
            found.push(canonical);
        }
    }
    found
}

/// `node --version`.
pub(crate) fn version(node: &Path) -> String {
    Command::new(node)
        .arg("--version")
        .env_clear()
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Running node

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's body: valid as CommonJS and as an ES module, prints its name and `argv[1]`.
fn file_body(name: &[u8]) -> String {
    format!(
        "// guard argv oracle\nconsole.log(\"GUARDTAG file\", \"{}\", Buffer.from(String(process.argv[1])).toString(\"hex\"));\n",
        hex(name)
    )
}

const STDIN_BODY: &str = "console.log(\"GUARDTAG stdin\")\n";

/// A temporary directory: `cwd/` where node runs (every word that can name a file there is
/// a tagged script, `index.js` for the directory operand), and `io/` with the standard
/// input program and the output files, out of reach of any operand.
pub(crate) struct Sandbox {
    root: PathBuf,
    cwd: PathBuf,
    io: PathBuf,
    made: Mutex<HashSet<Vec<u8>>>,
    /// Runs as `nobody` when root: nothing node writes (REPL history, reports, snapshots)
    /// lands anywhere.
    nobody: bool,
    pub timeout: Duration,
}

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

impl Sandbox {
    pub(crate) fn new(timeout: Duration) -> Sandbox {
        let base = std::env::temp_dir();
        let root = base.join(format!(
            "guard-node-argv-{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        let cwd = root.join("cwd");
        let io = root.join("io");
        for dir in [&root, &cwd, &io] {
            fs::create_dir_all(dir).expect("sandbox directory");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        write_file(&cwd.join("index.js"), &file_body(b"index.js"));
        write_file(
            &cwd.join(ENV_FILE),
            &format!(
                "{}NODE_OPTIONS=\"--require=./{ENV_PRELOAD}\"\n",
                file_body(ENV_FILE.as_bytes())
            ),
        );
        write_file(&cwd.join(ENV_PRELOAD), "console.log(\"GUARDTAG env\")\n");
        write_file(&io.join("stdin"), STDIN_BODY);
        let nobody = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let sandbox = Sandbox {
            root,
            cwd,
            io,
            made: Mutex::new(HashSet::new()),
            nobody,
            timeout,
        };
        let vocabulary: Vec<Vec<u8>> = ALL
            .iter()
            .flat_map(|list| list.iter().map(|w| w.as_bytes().to_vec()))
            .collect();
        sandbox.make_files(&vocabulary);
        sandbox
    }

    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    fn make_files(&self, words: &[Vec<u8>]) {
        for word in words {
            let name = word.as_slice();
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name == ENV_FILE.as_bytes()
                || name == ENV_PRELOAD.as_bytes()
                || name.contains(&b'/')
                || name.contains(&b'=')
                || name.len() > 255
                || self.made.lock().unwrap().contains(name)
            {
                continue;
            }
            let path = self.cwd.join(OsStr::from_bytes(name));
            if !path.exists() {
                let temporary = self.io.join(format!(
                    "new-{:?}-{}",
                    std::thread::current().id(),
                    SANDBOXES.fetch_add(1, Ordering::Relaxed)
                ));
                write_file(&temporary, &file_body(name));
                fs::rename(&temporary, &path).expect("sandbox script");
            }
            self.made.lock().unwrap().insert(name.to_vec());
        }
    }

    /// Runs `node words...` in the sandbox, standard input the tagged program (never a
    /// terminal), killed with its process group after the timeout or as soon as it
    /// listens for a debugger.
    pub(crate) fn run(&self, node: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        self.make_files(words);
        let mut output = self.run_once(node, words, slot);
        for _ in 0..5 {
            // A signal the run did not ask for (a kernel layer another test loaded, the
            // OOM killer) is no answer from node: ask again. node's own abort is one.
            let aborted = node_aborted(&String::from_utf8_lossy(&output.stderr));
            if output.timed_out || output.code.is_some() || output.stopped || aborted {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            output = self.run_once(node, words, slot);
        }
        output
    }

    fn run_once(&self, node: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        let stdout_path = self.io.join(format!("{slot}.stdout"));
        let stderr_path = self.io.join(format!("{slot}.stderr"));
        let mut cmd = Command::new(node);
        cmd.args(words.iter().map(|w| OsStr::from_bytes(w)))
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.cwd)
            .env("LANG", "C.UTF-8")
            .env("NODE_REPL_HISTORY", "")
            .env("NO_COLOR", "1")
            .env("NODE_DISABLE_COLORS", "1")
            .stdin(fs::File::open(self.io.join("stdin")).expect("stdin program"))
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"))
            .process_group(0);
        if self.nobody {
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().expect("cannot start node");
        let group = child.id();
        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let mut stopped = false;
        let mut polls = 0u32;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                timed_out = true;
                kill_group(group);
                break child.wait().expect("wait");
            }
            polls += 1;
            // A debugger port or client waits for someone: what it is is known already.
            if polls.is_multiple_of(20) {
                let stderr = fs::read(&stderr_path).unwrap_or_default();
                let stdout = fs::read(&stdout_path).unwrap_or_default();
                if listens(
                    &String::from_utf8_lossy(&stderr),
                    &String::from_utf8_lossy(&stdout),
                ) {
                    stopped = true;
                    kill_group(group);
                    break child.wait().expect("wait");
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // The debugger client's own child, and anything else left in the group.
        kill_group(group);
        Output {
            code: status.code(),
            timed_out,
            stopped,
            stdout: fs::read(&stdout_path).unwrap_or_default(),
            stderr: fs::read(&stderr_path).unwrap_or_default(),
        }
    }
}

/// node's own assertion failed, or it could not allocate (an invalid snapshot blob): it
/// aborted, in 18's words or 20's.
fn node_aborted(stderr: &str) -> bool {
    stderr.contains("Assertion failed")
        || stderr.contains("node::Abort()")
        || stderr.contains("terminate called after throwing")
}

fn listens(stderr: &str, stdout: &str) -> bool {
    stderr.contains("Debugger listening on")
        || stderr.contains("Starting inspector on")
        || client(stdout)
}

/// The debugger client's own output: what its child node says, each line behind `< `
/// (after a backspace), its prompt, its attempts to connect.
fn client(stdout: &str) -> bool {
    stdout.starts_with("\u{8}<")
        || stdout.starts_with("< ")
        || stdout.contains("\n< ")
        || stdout.contains("\u{8}< ")
        || stdout.contains("debug>")
        || stdout.contains("connecting to ")
}

fn kill_group(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn write_file(path: &Path, body: &str) {
    fs::write(path, body).expect("sandbox file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// What one run printed.
pub(crate) struct Output {
    /// Exit status; `None` when killed.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Killed on purpose: it listened for a debugger.
    pub stopped: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// What node ran

/// What node ran, from what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ran {
    /// Nothing guard must see: a refused command line, help, version, the tick processor, a
    /// syntax check, an error before any program.
    Nothing(&'static str),
    /// The test runner: each file runs in a child node, an exec of its own.
    TestRunner,
    /// Code that is no file: `-e`/`-p` code, a `data:` URL, standard input, a REPL, an
    /// inspector, the debugger client, `NODE_OPTIONS` from an environment file.
    Code(&'static str),
    /// The main module node resolved from its operand (`process.argv[1]`), found or not; with
    /// whatever else ran (preloads) being files.
    Main(Vec<u8>),
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ran::Nothing(why) => write!(f, "nothing ({why})"),
            Ran::TestRunner => write!(f, "the test runner"),
            Ran::Code(what) => write!(f, "code that is no file ({what})"),
            Ran::Main(path) => write!(f, "main module {:?}", String::from_utf8_lossy(path)),
        }
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads node's account of a run from its output.
pub(crate) fn what_ran(output: &Output) -> Result<Ran, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if std::env::var_os("GUARD_ORACLE_DEBUG").is_some() {
        eprintln!(
            "DEBUG code {:?} stdout {stdout:?} stderr {stderr:?}",
            output.code
        );
    }
    if stdout.contains("TAP version 13") || stdout.contains("# tests ") {
        return Ok(Ran::TestRunner);
    }
    // Code that is no file, in the order node would run it.
    if stderr.contains("Debugger listening on") || stderr.contains("Starting inspector on") {
        return Ok(Ran::Code("an inspector"));
    }
    // The client's usage names node by its path.
    if stdout.contains(" inspect <host>:<port>")
        || stderr.contains(" inspect <host>:<port>")
        || client(&stdout)
    {
        return Ok(Ran::Code("the debugger client"));
    }
    if stdout.contains("Welcome to Node.js") {
        return Ok(Ran::Code("a REPL"));
    }
    let mut mains: Vec<Vec<u8>> = Vec::new();
    for line in stdout.lines() {
        // A tag starts its line, or follows the REPL's prompts.
        let mut line = line;
        while let Some(rest) = line.strip_prefix("> ") {
            line = rest;
        }
        let Some(tagged) = line.strip_prefix(TAG) else {
            continue;
        };
        let fields: Vec<&str> = tagged.split(' ').collect();
        match fields.as_slice() {
            ["code"] => return Ok(Ran::Code("inline code")),
            ["data"] => return Ok(Ran::Code("a data: URL")),
            ["stdin"] => return Ok(Ran::Code("standard input")),
            ["env"] => return Ok(Ran::Code("NODE_OPTIONS from an environment file")),
            ["file", _name, argv1] => {
                let argv1 = unhex(argv1).ok_or_else(|| format!("bad tag line {line:?}"))?;
                // node makes the operand absolute unless it starts with `-` (then it is
                // a package name); other modes leave it as given.
                if argv1.starts_with(b"/") || argv1.starts_with(b"-") {
                    mains.push(argv1);
                }
            }
            _ => return Err(format!("bad tag line {line:?}")),
        }
    }
    if stderr.contains("[eval]") || stderr.contains("[eval1]") {
        return Ok(Ran::Code("inline code (failed)"));
    }
    if stderr.contains("[stdin]") {
        return Ok(Ran::Code("standard input (failed)"));
    }
    if output.code.is_none() && !output.timed_out {
        if node_aborted(&stderr) {
            // node's own assertion (an invalid snapshot blob): it aborted.
            return Ok(Ran::Nothing("node aborted"));
        }
        return Err("node was killed by a signal, six times".into());
    }
    if let Some(main) = mains.first() {
        if mains.iter().any(|m| m != main) {
            return Err("files report different main modules".into());
        }
        return Ok(Ran::Main(main.clone()));
    }
    // node's own message for a main module it cannot find: the resolved path.
    const MISSING: &str = "Error: Cannot find module '";
    if let Some(at) = stderr.find(MISSING) {
        let rest = &stderr[at + MISSING.len()..];
        if let Some(end) = rest.find("'\n") {
            let after = &rest[end..];
            let main = rest.starts_with('/') || rest.starts_with('-');
            if main && !after.starts_with("'\nRequire stack") && after.contains("requireStack: []")
            {
                return Ok(Ran::Main(rest.as_bytes()[..end].to_vec()));
            }
        }
    }
    if output.timed_out {
        if stdout.trim().is_empty() && stderr.trim().is_empty() {
            // Waiting for something it does not say (`--inspect-wait --no-inspect`): guard
            // must refuse what it cannot tell from a debugger.
            return Ok(Ran::Code("a silent wait"));
        }
        return Err("node did not finish in time".into());
    }
    if output.code == Some(9) {
        return Ok(Ran::Nothing("refused command line"));
    }
    if output.code == Some(0) && stdout.trim().is_empty() && stderr.trim().is_empty() {
        // `-e ''`, or a syntax check: nothing to tell them apart by.
        return Ok(Ran::Nothing("silent"));
    }
    if output.code == Some(0) {
        return Ok(Ran::Nothing("help or version"));
    }
    Ok(Ran::Nothing("an error before any program"))
}

// ---------------------------------------------------------------------------------------
// The comparison

pub(crate) const ALL_DENIED: u32 =
    DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;

/// The word index of the operand as a kernel reader finds it: the kernel's word prefix
/// and word count; `None` past a word it refuses unread.
fn kernel_operand(words: &[Vec<u8>]) -> Option<usize> {
    let mut reader = Reader::new();
    for (i, word) in words.iter().enumerate().take(MAX_ARGS as usize) {
        let seen = &word[..word.len().min(ARG_BUFFER - 1)];
        match reader.feed(seen) {
            Word::Script(_) => return Some(i),
            Word::Unread | Word::Program => return None,
            _ => {}
        }
    }
    None
}

fn cmdline(words: &[Vec<u8>]) -> Vec<u8> {
    let mut joined = b"node\0".to_vec();
    for word in words {
        joined.extend_from_slice(word);
        joined.push(0);
    }
    joined
}

/// `path.resolve(cwd, operand)`: absolute, `.` and `..` components and repeated or
/// trailing slashes gone.
pub(crate) fn resolve(cwd: &[u8], operand: &[u8]) -> Vec<u8> {
    let mut joined = Vec::new();
    if !operand.starts_with(b"/") {
        joined.extend_from_slice(cwd);
        joined.push(b'/');
    }
    joined.extend_from_slice(operand);
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in joined.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut resolved = Vec::new();
    for part in parts {
        resolved.push(b'/');
        resolved.extend_from_slice(part);
    }
    if resolved.is_empty() {
        resolved.push(b'/');
    }
    resolved
}

pub(crate) fn describe(inv: &Invocation) -> String {
    format!(
        "inline_code {}, script {}, interactive {}, reads_stdin {}, code_environment {}, unread {}, truncated {}",
        inv.inline_code,
        inv.script.map_or("none".to_string(), |s| format!(
            "{:?}",
            String::from_utf8_lossy(s)
        )),
        inv.interactive,
        inv.reads_stdin,
        inv.code_environment,
        inv.unread,
        inv.truncated
    )
}

/// How guard's reading compares with what node ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Agreement {
    /// guard reads it as node ran it.
    Same,
    /// node ran a file as its main module, guard refuses the command line anyway (an
    /// inspector turned off again, a value a node version might not take…).
    Stricter,
}

/// Why guard's reading of `words` disagrees with what node `ran`, if it does.
pub(crate) fn disagreement(words: &[Vec<u8>], ran: &Ran, cwd: &[u8]) -> Result<Agreement, String> {
    let inv = node_argv::parse(words.iter().map(|w| w.as_slice()));
    let joined = cmdline(words);
    let from_proc = node_argv::parse_cmdline(&joined);
    if from_proc != inv {
        return Err(format!(
            "parse_cmdline reads {}, parse reads {}",
            describe(&from_proc),
            describe(&inv)
        ));
    }
    let step = judge_argv(
        Dialect::Node,
        ALL_DENIED,
        &NoModules,
        words.iter().map(|w| w.as_slice()),
    );
    let refused = matches!(step, Step::Refuse(_));
    match ran {
        Ran::Nothing(_) | Ran::TestRunner => Ok(Agreement::Same),
        Ran::Code(_) => {
            if refused {
                Ok(Agreement::Same)
            } else {
                Err(format!(
                    "guard reads {}, and the kernel's judge says {step:?}",
                    describe(&inv)
                ))
            }
        }
        Ran::Main(path) => {
            // A reading guard knows to be incomplete refuses: nothing more to compare.
            if inv.unread {
                return if refused {
                    Ok(Agreement::Stricter)
                } else {
                    Err(format!("guard reads {} but allows it", describe(&inv)))
                };
            }
            // node resolves an operand from the cwd, unless it starts with `-`: then the
            // main module is a package of that name (a syntax check resolves it all the
            // same).
            let same = inv
                .script
                .is_some_and(|script| script == path.as_slice() || resolve(cwd, script) == *path);
            if !same {
                return Err(format!("guard reads {}", describe(&inv)));
            }
            if let Some(index) = kernel_operand(words) {
                if Some(words[index].as_slice()) != inv.script {
                    return Err(format!(
                        "the kernel's reader takes word {index} ({:?}) as the operand",
                        String::from_utf8_lossy(&words[index])
                    ));
                }
            } else if !refused {
                return Err("the kernel's reader finds no operand".into());
            }
            Ok(if refused {
                Agreement::Stricter
            } else {
                Agreement::Same
            })
        }
    }
}

/// Runs one command line and compares: `Err` with the whole story when guard disagrees.
pub(crate) fn differ(
    sandbox: &Sandbox,
    node: &Path,
    words: &[Vec<u8>],
    slot: usize,
) -> Result<(Ran, Agreement), String> {
    let output = sandbox.run(node, words, slot);
    let story = |why: &str| {
        format!(
            "{}\n  interpreter: {}\n  {why}\n  node exit {:?}{}\n  stdout: {}\n  stderr: {}",
            shell_words(words),
            node.display(),
            output.code,
            if output.stopped { " (stopped)" } else { "" },
            excerpt(&output.stdout),
            excerpt(&output.stderr),
        )
    };
    let ran = what_ran(&output).map_err(|e| story(&e))?;
    match disagreement(words, &ran, sandbox.cwd().as_os_str().as_bytes()) {
        Ok(agreement) => Ok((ran, agreement)),
        Err(why) => Err(story(&format!("node ran {ran}, but {why}"))),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(700).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("{short:?}")
}
