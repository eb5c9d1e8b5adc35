//! Generator and oracle of the CPython command-line differential test, shared by
//! `tests/argv_differential.rs` and the `argv_cpython` fuzz target (included by path, so the
//! `no_std` crate carries none of it).
//!
//! CPython is asked what it ran, never guard's model of it: it runs in a directory where every
//! word of the command line that can name a file is a script printing a tag with its
//! `sys.argv[0]`, its standard input is a program printing another tag, and the `-c` values
//! are code printing a tag or code that fails with a traceback naming `<string>`. What it
//! printed (and its error messages for modules, usage and missing files) says which program
//! it ran, whether it read code from standard input and whether it went interactive.
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

use guard_common::argv::Dialect;
use guard_common::exec_gate::{
    ARG_BUFFER, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_NO_SITE,
    DENY_STDIN_CODE, MAX_ARGS, MAX_CLUSTER, NoModules, Step, judge_argv,
};
use guard_common::python_argv::{self, Invocation, Reader, Word};

// ---------------------------------------------------------------------------------------
// Choices

/// Where the generator's choices come from: a seeded PRNG in the test, the fuzzer's bytes
/// in the fuzz target.
pub(crate) trait Source {
    /// A number below `n` (`n` at least 1).
    fn below(&mut self, n: usize) -> usize;

    /// Zero says no: an exhausted [`Bytes`] source takes no optional branch.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) >= 100 - percent
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len())]
    }
}

/// SplitMix64: tiny, fast, and good enough to spread choices; deterministic by seed.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// The stream of one case: the same for a seed and index whatever thread runs it.
    pub(crate) fn for_case(seed: u64, case: u64) -> SplitMix {
        let mut mix = SplitMix(seed ^ case.wrapping_mul(0xA076_1D64_78BD_642F));
        mix.next();
        mix
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Source for SplitMix {
    fn below(&mut self, n: usize) -> usize {
        // Below n, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let choice = (self.next() % n as u64) as usize;
        choice
    }
}

/// The fuzzer's bytes, one per choice (every choice is below 256); zeros once used up, so
/// every input is a command line and short inputs are short ones.
pub(crate) struct Bytes<'a> {
    bytes: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Bytes { bytes }
    }
}

impl Source for Bytes<'_> {
    fn below(&mut self, n: usize) -> usize {
        assert!(n <= 256, "a choice wider than a byte");
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first as usize % n
            }
            None => 0,
        }
    }
}

/// Records the choices another source makes as the bytes that replay them through
/// [`Bytes`]: how the fuzz target's seeds are written from generated cases.
pub(crate) struct Recorder<S> {
    pub inner: S,
    pub bytes: Vec<u8>,
}

impl<S: Source> Source for Recorder<S> {
    fn below(&mut self, n: usize) -> usize {
        let choice = self.inner.below(n);
        // A recording replays choices modulo 256, as the fuzzer's bytes do.
        #[allow(clippy::cast_possible_truncation)]
        let byte = choice as u8;
        self.bytes.push(byte);
        choice
    }
}

// ---------------------------------------------------------------------------------------
// The command lines

/// Inline code that says it ran. Also a file name (when it becomes a script operand) and a
/// module name (`No module named ...`), like every other word.
pub(crate) const CODE_WORD: &str = "print(\"GUARDTAG code\")";
const TAG: &str = "GUARDTAG ";

/// Options without an argument. `v` is missing: it floods stderr with import traces and is
/// in [`ODD`] instead.
const NO_ARGUMENT: &[u8] = b"bBdEiIOPqRsStux";
/// Script operands: files, a directory (`''` and `.` run its `__main__.py`), standard input
/// (`-`, and the descriptor links that read it as a file), a missing file.
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
];
/// `-c` values: code that prints its tag, nothing (`''` runs nothing and exits 0), and
/// option-like words that fail as code with a traceback in `<string>`.
const CODE: &[&str] = &[
    CODE_WORD, CODE_WORD, "", "-i", "-c", "--", "-", "-m", "-Im", "-W", "-E-", "x", "p",
];
/// `-m` values: none exists, so CPython names each in its error (`.rel` is refused as
/// relative).
const MODULES: &[&str] = &[
    "gm", "gm.sub", ".rel", "", "-c", "-i", "--", "-", "p", "-m", CODE_WORD,
];
/// Values of `-W`, `-X` and `--check-hash-based-pycs` (which takes only three of them).
const VALUES: &[&str] = &[
    "ignore", "error", "d", "dev", "utf8", "always", "never", "default", "", "-c", "-m", "-i",
    "--", "-", "-E-", "p", "x", "-Ic", CODE_WORD,
];
/// Options that end option processing as `--` does: a cluster whose last letter is `-`.
const ENDS: &[&str] = &["--", "-E-", "-i-", "-IE-"];
/// The long option with an argument, alone and as the tail of a cluster (getopt reads
/// `-E-NAME` as `-E --NAME`).
const LONG_WITH_ARGUMENT: &[&str] = &[
    "--check-hash-based-pycs",
    "-E-check-hash-based-pycs",
    "-i-check-hash-based-pycs",
    "-Ii-check-hash-based-pycs",
];
/// Unknown options, options CPython refuses, and options that print and exit.
const ODD: &[&str] = &[
    "-a",
    "-J",
    "-E:",
    "-.",
    "--frob",
    "--check-hash-based-pycs=always",
    "---",
    "-E-frob",
    "-E-c",
    "-i-c",
    "-h",
    "-?",
    "-V",
    "-VV",
    "--help",
    "--version",
    "--help-all",
    "--help-env",
    "--help-xoptions",
    "-E-help-env",
    "-v",
    // Not an option letter to CPython, bytes guard reads past.
    "-E\u{e9}c",
];
/// Bare option letters, also as the words of a program's own argv.
const SHORT: &[&str] = &["-c", "-m", "-W", "-X", "-i", "-E", "-I", "-Ei", "-"];

const ALL: &[&[&str]] = &[
    SCRIPTS,
    CODE,
    MODULES,
    VALUES,
    ENDS,
    LONG_WITH_ARGUMENT,
    ODD,
    SHORT,
];

fn any_word<'a>(src: &mut impl Source) -> &'a str {
    let list = ALL[src.below(ALL.len())];
    src.pick(list)
}

fn non_empty<'a>(src: &mut impl Source, list: &[&'a str]) -> &'a str {
    match src.pick(list) {
        "" => list[0],
        word => word,
    }
}

fn letters(src: &mut impl Source, count: usize) -> Vec<u8> {
    let mut word = vec![b'-'];
    for _ in 0..count {
        word.push(NO_ARGUMENT[src.below(NO_ARGUMENT.len())]);
    }
    word
}

/// An option letter with an argument, at the end of `word` (a cluster so far): its value
/// attached, or as the next word, or missing.
fn with_argument(src: &mut impl Source, mut word: Vec<u8>, words: &mut Vec<Vec<u8>>) {
    let (letter, values) = match src.below(4) {
        0 => (b'c', CODE),
        1 => (b'm', MODULES),
        2 => (b'W', VALUES),
        _ => (b'X', VALUES),
    };
    word.push(letter);
    match src.below(8) {
        0..=2 => {
            word.extend_from_slice(non_empty(src, values).as_bytes());
            words.push(word);
        }
        3..=5 => {
            words.push(word);
            words.push(src.pick(values).as_bytes().to_vec());
        }
        6 => {
            // Values that look like options, or belong to another option.
            words.push(word);
            words.push(any_word(src).as_bytes().to_vec());
        }
        _ => words.push(word),
    }
}

/// One option, operand or program word (with its value) appended to `words`.
fn item(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    match src.below(20) {
        0..=2 => words.push(letters(src, 1)),
        3 => words.push(b"-i".to_vec()),
        4..=5 => {
            let count = 1 + src.below(4);
            let cluster = letters(src, count);
            if src.chance(60) {
                with_argument(src, cluster, words);
            } else {
                words.push(cluster);
            }
        }
        6..=8 => with_argument(src, b"-".to_vec(), words),
        9 => {
            words.push(src.pick(LONG_WITH_ARGUMENT).as_bytes().to_vec());
            if src.chance(90) {
                words.push(src.pick(VALUES).as_bytes().to_vec());
            }
        }
        10..=12 => words.push(src.pick(SCRIPTS).as_bytes().to_vec()),
        13..=14 => {
            words.push(src.pick(ENDS).as_bytes().to_vec());
            if src.chance(80) {
                words.push(any_word(src).as_bytes().to_vec());
            }
        }
        15 => words.push(src.pick(ODD).as_bytes().to_vec()),
        16..=18 => words.push(any_word(src).as_bytes().to_vec()),
        _ => words.push(long_word(src)),
    }
}

/// Words longer than the kernel reads of one ([`ARG_BUFFER`]) or longer clusters than it
/// reads ([`MAX_CLUSTER`]).
fn long_word(src: &mut impl Source) -> Vec<u8> {
    let length = 10 + src.below(190);
    match src.below(4) {
        0 => {
            let mut word = letters(src, 0);
            word.extend(std::iter::repeat_n(b'E', length));
            word.push([b'c', b'i', b'm', b'-'][src.below(4)]);
            word
        }
        1 => vec![b'a'; length],
        2 => {
            let mut word = b"-W".to_vec();
            word.extend(std::iter::repeat_n(b'c', length));
            word
        }
        _ => {
            let mut word = b"-Im".to_vec();
            word.extend(std::iter::repeat_n(b'g', length));
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
    crate::differential::shell_line("python3", words)
}

// ---------------------------------------------------------------------------------------
// The interpreters

/// The profiled CPython executables: the default policy's `/usr/bin/python3*` and
/// `/usr/local/bin/python3*`, ELF files only (`python3.11-config` is a shell script), each
/// once by canonical path.
pub(crate) fn profiled_interpreters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(b"python3"))
            .map(|e| e.path())
            .collect();
        names.sort();
        for path in names {
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
    }
    found
}

// ---------------------------------------------------------------------------------------
// Running CPython

const SCRIPT_BODY: &str = "# guard argv oracle: the first line is a comment, as -x skips it\n\
import sys; print(\"GUARDTAG script\", sys.argv[0].encode(\"utf-8\", \"surrogateescape\").hex(), sys.flags.inspect, sys.flags.no_site)\n";
const MAIN_BODY: &str = "# guard argv oracle\n\
import sys; print(\"GUARDTAG main\", sys.argv[0].encode(\"utf-8\", \"surrogateescape\").hex(), sys.flags.inspect, sys.flags.no_site)\n";
const STDIN_BODY: &str = "# guard argv oracle\n\
import sys; print(\"GUARDTAG stdin\", sys.argv[0].encode(\"utf-8\", \"surrogateescape\").hex(), sys.flags.inspect, sys.flags.no_site)\n";

/// A temporary directory: `cwd/` where CPython runs (every word that can name a file there
/// is a script printing its tag, and `__main__.py` for the directory operands), and `io/`
/// with the standard input program and the output files, out of reach of any operand or
/// module name.
pub(crate) struct Sandbox {
    root: PathBuf,
    cwd: PathBuf,
    io: PathBuf,
    /// Words already made files.
    made: Mutex<HashSet<Vec<u8>>>,
    /// Runs as `nobody` when root: no `-E`/`-I` run (which ignores PYTHONDONTWRITEBYTECODE)
    /// can write a `__pycache__` anywhere that matters.
    nobody: bool,
    pub timeout: Duration,
}

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

impl Sandbox {
    pub(crate) fn new(timeout: Duration) -> Sandbox {
        let base = std::env::temp_dir();
        sweep(&base);
        let root = base.join(format!(
            "guard-argv-{}-{}",
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
        write_file(&cwd.join("__main__.py"), MAIN_BODY);
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
        // The vocabulary's files up front: `./p` names one without being one.
        let vocabulary: Vec<Vec<u8>> = ALL
            .iter()
            .flat_map(|list| list.iter().map(|w| w.as_bytes().to_vec()))
            .collect();
        sandbox.make_files(&vocabulary);
        sandbox
    }

    /// Every word that can name a file in the cwd becomes a script: whatever CPython takes as
    /// its operand then says so, even where guard and the generator think otherwise.
    fn make_files(&self, words: &[Vec<u8>]) {
        for word in words {
            let name = word.as_slice();
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name.contains(&b'/')
                || name.len() > 255
                || self.made.lock().unwrap().contains(name)
            {
                continue;
            }
            let path = self.cwd.join(OsStr::from_bytes(name));
            if !path.exists() {
                // Written aside and renamed: a concurrent run never sees a half-written file.
                let temporary = self.io.join(format!(
                    "new-{:?}-{}",
                    std::thread::current().id(),
                    SANDBOXES.fetch_add(1, Ordering::Relaxed)
                ));
                write_file(&temporary, SCRIPT_BODY);
                fs::rename(&temporary, &path).expect("sandbox script");
            }
            self.made.lock().unwrap().insert(name.to_vec());
        }
    }

    /// Runs `python words...` in the sandbox, standard input the tagged program (never a
    /// terminal), killed after the timeout. `slot` names the output files: one per thread.
    pub(crate) fn run(&self, python: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        self.make_files(words);
        // A signal the run did not ask for (a kernel layer another test loaded on this host,
        // the OOM killer) is no answer from CPython: ask again, then report it.
        let mut output = self.run_once(python, words, slot);
        for _ in 0..5 {
            if output.timed_out || output.code.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            output = self.run_once(python, words, slot);
        }
        output
    }

    fn run_once(&self, python: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        let stdout_path = self.io.join(format!("{slot}.stdout"));
        let stderr_path = self.io.join(format!("{slot}.stderr"));
        let mut cmd = Command::new(python);
        cmd.args(words.iter().map(|w| OsStr::from_bytes(w)))
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.cwd)
            .env("LANG", "C.UTF-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(fs::File::open(self.io.join("stdin")).expect("stdin program"))
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"));
        if self.nobody {
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().expect("cannot start python");
        let deadline = Instant::now() + self.timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Output {
            code: status.code(),
            timed_out,
            stdout: fs::read(&stdout_path).unwrap_or_default(),
            stderr: fs::read(&stderr_path).unwrap_or_default(),
            cwd: self.cwd.as_os_str().as_bytes().to_vec(),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Removes the sandboxes of processes gone (a fuzz run ends without dropping its own).
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("guard-argv-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
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
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    cwd: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// What CPython ran

/// The program CPython ran, from what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    /// Nothing at all: a usage error, or it printed help or its version.
    Nothing(&'static str),
    /// `-c` code.
    Code,
    /// `-m`: the module name it looked for (`None`: a relative name, which it refuses
    /// without naming it).
    Module(Option<Vec<u8>>),
    /// A script operand, as given (`sys.argv[0]`).
    Script(Vec<u8>),
    /// A script operand it could not open: the path in its message.
    MissingScript(Vec<u8>),
    /// Code from standard input: no operand, or `-`.
    Stdin { dash: bool },
}

/// CPython's own account of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ran {
    pub program: Program,
    /// It read code from standard input as its program (also through `/dev/stdin`).
    pub stdin_code: bool,
    /// It went interactive after the program (`-i`).
    pub inspect: bool,
    /// It started without `site` (`-S`), as a file or stdin program reports it; `None`
    /// when only inline code ran.
    pub no_site: Option<bool>,
}

fn quoted(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.program {
            Program::Nothing(why) => write!(f, "nothing ({why})")?,
            Program::Code => write!(f, "inline code")?,
            Program::Module(Some(name)) => write!(f, "module {}", quoted(name))?,
            Program::Module(None) => write!(f, "a relative module")?,
            Program::Script(operand) => write!(f, "script {}", quoted(operand))?,
            Program::MissingScript(path) => write!(f, "missing script {}", quoted(path))?,
            Program::Stdin { dash: true } => write!(f, "stdin (-)")?,
            Program::Stdin { dash: false } => write!(f, "stdin (no operand)")?,
        }
        if self.stdin_code && !matches!(self.program, Program::Stdin { .. }) {
            write!(f, ", code read from stdin")?;
        }
        if self.inspect {
            write!(f, ", then interactive")?;
        }
        Ok(())
    }
}

/// guard's reading, with the words as text.
pub(crate) fn describe(inv: &Invocation) -> String {
    let word = |w: Option<&[u8]>| w.map_or("none".to_string(), quoted);
    format!(
        "inline_code {}, module {}, script {}, inspect {}, no_site {}, truncated {}",
        inv.inline_code,
        word(inv.module),
        word(inv.script),
        inv.inspect,
        inv.no_site,
        inv.truncated
    )
}

struct Event {
    kind: String,
    argv0: Vec<u8>,
    inspect: bool,
    no_site: Option<bool>,
}

fn events(stdout: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for line in stdout.lines() {
        let Some(at) = line.find(TAG) else {
            continue;
        };
        let fields: Vec<&str> = line[at + TAG.len()..].split(' ').collect();
        let event = match fields.as_slice() {
            ["code"] => Event {
                kind: "code".into(),
                argv0: Vec::new(),
                inspect: false,
                no_site: None,
            },
            [kind, hex, inspect, no_site] => Event {
                kind: kind.to_string(),
                argv0: unhex(hex).ok_or_else(|| format!("bad tag line {line:?}"))?,
                inspect: *inspect != "0",
                no_site: Some(*no_site != "0"),
            },
            _ => return Err(format!("bad tag line {line:?}")),
        };
        events.push(event);
    }
    Ok(events)
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

/// The module name in runpy's error, if it printed one.
fn module_error(stderr: &str) -> Option<Option<Vec<u8>>> {
    const SPEC: &str = "Error while finding module specification for '";
    const MISSING: &str = "No module named ";
    for line in stderr.lines() {
        if let Some(at) = line.find(SPEC) {
            // runpy quotes the name with repr(): the vocabulary has no `'` nor escapes.
            let rest = &line[at + SPEC.len()..];
            let end = rest.find("' (")?;
            return Some(Some(rest.as_bytes()[..end].to_vec()));
        }
        if line.contains("Relative module names not supported") {
            return Some(None);
        }
    }
    // The last one: under -i, runpy's traceback quotes the same message twice.
    let line = stderr.lines().rev().find(|l| l.contains(MISSING))?;
    let at = line.rfind(MISSING)?;
    Some(Some(line.as_bytes()[at + MISSING.len()..].to_vec()))
}

/// Reads CPython's account of a run from its output.
pub(crate) fn what_ran(output: &Output) -> Result<Ran, String> {
    if output.timed_out {
        return Err("CPython did not finish in time".into());
    }
    if output.code.is_none() {
        return Err("CPython was killed by a signal, six times".into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events = events(&stdout)?;
    let nothing = |why| Ran {
        program: Program::Nothing(why),
        stdin_code: false,
        inspect: false,
        no_site: None,
    };
    if events.is_empty() {
        if output.code == Some(2) && (stderr.starts_with("usage: ") || stderr.contains("\nusage: "))
        {
            return Ok(nothing("usage error"));
        }
        if output.code == Some(0) && !stdout.trim().is_empty() {
            return Ok(nothing("help or version"));
        }
    }
    // CPython's own message when it cannot open the operand: the path, made absolute.
    let missing = stderr.find("can't open file '").map(|at| {
        let rest = &stderr[at + "can't open file '".len()..];
        let end = rest.find("': [Errno").unwrap_or(rest.len());
        rest.as_bytes()[..end].to_vec()
    });
    let first = events.first();
    let (program, stdin_code) =
        if first.is_some_and(|e| e.kind == "code") || stderr.contains("File \"<string>\"") {
            (Program::Code, false)
        } else if let Some(module) = module_error(&stderr) {
            (Program::Module(module), false)
        } else if let Some(path) = missing {
            (Program::MissingScript(path), false)
        } else if let Some(first) = first {
            match first.kind.as_str() {
                "script" | "main" => (Program::Script(first.argv0.clone()), false),
                "stdin" => match first.argv0.as_slice() {
                    b"" => (Program::Stdin { dash: false }, true),
                    b"-" => (Program::Stdin { dash: true }, true),
                    // `-c ''` ran, printing nothing, then -i read standard input.
                    b"-c" => (Program::Code, false),
                    // An operand that opened standard input as a file.
                    operand => (Program::Script(operand.to_vec()), true),
                },
                other => return Err(format!("unknown tag {other:?}")),
            }
        } else if output.code == Some(0) && stdout.trim().is_empty() {
            // Only code that does nothing (`-c ''`) prints nothing and succeeds: every file
            // and standard input print a tag, and no module exists.
            (Program::Code, false)
        } else {
            return Err("CPython's outcome is not recognised".into());
        };
    // After a program, standard input is read only by the interactive loop. A program read
    // from standard input itself reports -i in sys.flags.
    let after_program = events
        .iter()
        .skip(usize::from(stdin_code))
        .any(|e| e.kind == "stdin");
    let inspect = after_program || events.iter().any(|e| e.inspect);
    let no_site = events.iter().find_map(|e| e.no_site);
    Ok(Ran {
        program,
        stdin_code,
        inspect,
        no_site,
    })
}

// ---------------------------------------------------------------------------------------
// The comparison

const ALL_DENIED: u32 =
    DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;

/// The word index of the script operand as the kernel's `main_script` program finds it: the
/// kernel's cluster limit, word prefix and word count.
fn kernel_operand(words: &[Vec<u8>]) -> Option<usize> {
    let mut reader = Reader::with_cluster_limit(MAX_CLUSTER);
    for (i, word) in words.iter().enumerate().take(MAX_ARGS as usize) {
        let seen = &word[..word.len().min(ARG_BUFFER - 1)];
        match reader.feed(seen) {
            Word::Script(_) => return Some(i),
            Word::InlineCode | Word::Module(_) | Word::Unread | Word::Program => return None,
            _ => {}
        }
    }
    None
}

fn cmdline(words: &[Vec<u8>]) -> Vec<u8> {
    let mut joined = b"python3\0".to_vec();
    for word in words {
        joined.extend_from_slice(word);
        joined.push(0);
    }
    joined
}

/// Why guard's reading of `words` disagrees with what CPython `ran`, if it does.
pub(crate) fn disagreement(words: &[Vec<u8>], ran: &Ran, cwd: &[u8]) -> Option<String> {
    let inv: Invocation = python_argv::parse(words.iter().map(|w| w.as_slice()));
    let joined = cmdline(words);
    let from_proc = python_argv::parse_cmdline(&joined);
    if from_proc != inv {
        return Some(format!(
            "parse_cmdline reads {}, parse reads {}",
            describe(&from_proc),
            describe(&inv)
        ));
    }
    let program_ok = match &ran.program {
        // Whatever guard thinks, nothing ran.
        Program::Nothing(_) => return None,
        Program::Code => inv.inline_code && inv.module.is_none() && inv.script.is_none(),
        Program::Module(name) => {
            !inv.inline_code
                && inv.script.is_none()
                && match (name, inv.module) {
                    (Some(name), Some(module)) => module == name.as_slice(),
                    (None, Some(module)) => module.starts_with(b"."),
                    (_, None) => false,
                }
        }
        Program::Script(operand) => {
            !inv.inline_code
                && inv.module.is_none()
                && operand.as_slice() != b"-"
                && inv.script == Some(operand.as_slice())
        }
        Program::MissingScript(path) => {
            !inv.inline_code
                && inv.module.is_none()
                && inv.script.is_some_and(|script| {
                    let mut absolute = Vec::new();
                    if !script.starts_with(b"/") {
                        absolute.extend_from_slice(cwd);
                        absolute.push(b'/');
                    }
                    absolute.extend_from_slice(script);
                    absolute == *path
                })
        }
        Program::Stdin { dash } => {
            !inv.inline_code
                && inv.module.is_none()
                && inv.script == dash.then_some(&b"-"[..])
                && inv.reads_stdin()
        }
    };
    if !program_ok
        || inv.truncated
        || inv.inspect != ran.inspect
        || ran.no_site.is_some_and(|no_site| no_site != inv.no_site)
    {
        return Some(format!("guard reads {}", describe(&inv)));
    }
    let code = matches!(ran.program, Program::Code);
    let step = judge_argv(
        Dialect::Python,
        ALL_DENIED,
        &NoModules,
        words.iter().map(|w| w.as_slice()),
    );
    if (code || ran.stdin_code || ran.inspect) && !matches!(step, Step::Refuse(_)) {
        return Some(format!("the kernel's judge says {step:?}"));
    }
    // A start-up without `site` is refused where the audit hook is required, whatever
    // else the command line asks.
    let hooked = judge_argv(
        Dialect::Python,
        ALL_DENIED | DENY_NO_SITE,
        &NoModules,
        words.iter().map(|w| w.as_slice()),
    );
    if ran.no_site == Some(true) && !matches!(hooked, Step::Refuse(_)) {
        return Some(format!(
            "CPython skipped site, the kernel's judge with DENY_NO_SITE says {hooked:?}"
        ));
    }
    if let Some(index) = kernel_operand(words) {
        let operand = words[index].as_slice();
        let same = match &ran.program {
            Program::Script(script) => script.as_slice() == operand,
            Program::Stdin { dash: true } => operand == b"-",
            Program::MissingScript(_) => inv.script == Some(operand),
            _ => false,
        };
        if !same {
            return Some(format!(
                "the kernel takes word {index} ({:?}) as the script operand",
                String::from_utf8_lossy(operand)
            ));
        }
    }
    None
}

/// Runs one command line and compares: `Err` with the whole story when guard disagrees.
pub(crate) fn differ(
    sandbox: &Sandbox,
    python: &Path,
    words: &[Vec<u8>],
    slot: usize,
) -> Result<Ran, String> {
    let output = sandbox.run(python, words, slot);
    let story = |why: &str| {
        format!(
            "{}\n  interpreter: {}\n  {why}\n  CPython exit {:?}\n  stdout: {}\n  stderr: {}",
            shell_words(words),
            python.display(),
            output.code,
            excerpt(&output.stdout),
            excerpt(&output.stderr),
        )
    };
    let ran = what_ran(&output).map_err(|e| story(&e))?;
    match disagreement(words, &ran, &output.cwd) {
        Some(why) => Err(story(&format!("CPython ran {ran}, but {why}"))),
        None => Ok(ran),
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
