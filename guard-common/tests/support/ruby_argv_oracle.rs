//! Generator and oracle of the Ruby command-line differential test
//! (`tests/ruby_argv_differential.rs`). The choices come from the CPython oracle's
//! [`Source`] (`support/argv_oracle.rs`), so the same seeds and byte sources drive both.
//!
//! Ruby is asked what it ran, never guard's model of it: it runs in a directory where every
//! word of the command line that can name a file is a script printing a tag with its `$0`
//! (and a copy in `sub/`, for `-C sub` and `-xsub`), its standard input is a program
//! printing another tag, and the `-e` values are code printing a tag or code that fails
//! with an error at `-e:1`. Every program prints from a `BEGIN` block, so `-n`/`-p` loops
//! over an exhausted standard input still show what ran, and no tag is spelled whole in a
//! program's source (`-p` echoes the lines it reads). Each tag says whether rubygems was
//! loaded (`--disable=gems`).
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_common::Rule;
use guard_common::argv::Word;
use guard_common::exec_gate::{
    ARG_BUFFER, ArgvJudge, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE,
    DENY_STDIN_CODE, MAX_ARGS, MAX_CLUSTER, NoModules, Step,
};
use guard_common::ruby_argv::{self, Reader, Reading};

use crate::argv_oracle::Source;

// ---------------------------------------------------------------------------------------
// The command lines

/// Inline code that says it ran (the tag split, so `-p` echoing a line never forges it).
pub(crate) const CODE_WORD: &str = "BEGIN { puts \"GUARD\" + \"TAG code\" }";
const TAG: &str = "GUARDTAG ";

/// Option letters without an argument (`v` prints the version and goes on, `c` and `y`
/// only parse, `h` prints the usage).
const NO_ARGUMENT: &[u8] = b"acdlnpsSUvwy";
/// Script operands: files, a directory, standard input (`-`, the empty word, and the
/// descriptor links that read it as a file), missing files.
const SCRIPTS: &[&str] = &[
    "p",
    "./p",
    "q",
    "",
    "-",
    "/dev/stdin",
    "/proc/self/fd/0",
    "nodir/p",
    "sub/p",
    "\u{e9}",
    ".",
    "-e",
];
/// `-e` values: code that prints its tag, and option-like words that fail as code at `-e:1`
/// (none runs silently: a silent success is a command line that ran no program).
const CODE: &[&str] = &[
    CODE_WORD, CODE_WORD, CODE_WORD, "x", "-e", "-", "--", "-w", "-r", "-Ce", "q",
];
/// `-r` values: a feature that loads quietly (the stdlib's `set`, a `.rb` file in the
/// directory), and names `require` cannot load (ruby stops with a LoadError).
const FEATURES: &[&str] = &["set", "set", "./feat.rb", "nofeature", "-e", "-", "", "p"];
/// `-I`, `-C`, `-X` and `-x` directories: the directory, `sub` (where the same scripts are),
/// `/` (where none is), and words that are no directory (`-C` stops with "Can't chdir").
const DIRS: &[&str] = &[".", "sub", "sub", "/", "nodir", "", "-e", "p", "-"];
/// `-E` and the encoding options' values.
const ENCODINGS: &[&str] = &["UTF-8", "utf-8:utf-8", ":", "", "x", "-e", "p", "US-ASCII"];
/// Values of the other long options, attached or in the next word.
const VALUES: &[&str] = &[
    "gems",
    "did_you_mean",
    "all",
    "G",
    "rubyopt",
    "frozen-string-literal",
    "",
    "-e",
    "p",
    "-",
    "--",
    "insns",
    "1",
    CODE_WORD,
];
/// Words that end the options as `--` does.
const ENDS: &[&str] = &["--", "-w-", "-W-", "-d-", "-Ku-", "--\r"];
/// Long options with a value (the attached and separate spellings are generated).
const LONG_WITH_VALUE: &[&str] = &[
    "enable",
    "disable",
    "encoding",
    "internal-encoding",
    "external-encoding",
    "dump",
    "backtrace-limit",
    "parser",
    "crash-report",
];
/// Unknown options, options ruby refuses, options that print and exit, long flags.
const ODD: &[&str] = &[
    "-b",
    "-T",
    "-T1",
    "-j",
    "-A",
    "-W8",
    "-08",
    "-01234",
    "-\r",
    "-w\r",
    "-\rx",
    "--frob",
    "--verbose=1",
    "--encodingx",
    "--enable-",
    "--enable=",
    "--dump-x",
    "-h",
    "-wh",
    "--help",
    "--version",
    "--copyright",
    "-v",
    "--verbose",
    "--yydebug",
    "--jit",
    "--yjit",
    "--debug",
    "--debug=frozen-string-literal",
    "--disable-gems",
    "--disable=all",
    "--disable=did_you_mean,G",
    "--disable=gx",
    "--enable=frozen-string-literal",
    "-K-",
    "-Ke",
    "-Kxe",
    "-W:deprecated",
    "-W:e",
    "-W0",
    "-W2",
    "-0777",
    "-00",
    "-0",
    "-i.bak",
    "-ie",
    "-Fe",
    "-F:",
    "-x",
    "-xsub",
    "-x.",
    "-xnodir",
    "-Isub",
    "-e",
    "-w-disable",
    "-w-verbose",
    "-w-e",
    // Not an option letter to ruby, bytes guard reads past.
    "-\u{e9}",
];

/// Every list a word comes from: their files are made up front.
const ALL: &[&[&str]] = &[SCRIPTS, CODE, FEATURES, DIRS, ENCODINGS, VALUES, ENDS, ODD];

fn any_word(src: &mut impl Source) -> &'static str {
    let list = ALL[src.below(ALL.len())];
    list[src.below(list.len())]
}

/// `-` and `count` letters without an argument (`W` with or without a digit, `0` with
/// octal digits, `K` with the byte it eats).
fn letters(src: &mut impl Source, count: usize) -> Vec<u8> {
    let mut word = b"-".to_vec();
    for _ in 0..count {
        match src.below(12) {
            0 => {
                word.push(b'W');
                if src.chance(50) {
                    word.push(b"0127"[src.below(4)]);
                }
            }
            1 => {
                word.push(b'0');
                for _ in 0..src.below(4) {
                    word.push(b"0178"[src.below(4)]);
                }
            }
            2 => {
                word.push(b'K');
                word.push(b"uenx-e"[src.below(6)]);
            }
            _ => word.push(NO_ARGUMENT[src.below(NO_ARGUMENT.len())]),
        }
    }
    word
}

/// An option letter with an argument, at the end of `word` (a cluster so far): its value
/// attached, or as the next word, or missing.
fn with_argument(src: &mut impl Source, mut word: Vec<u8>, words: &mut Vec<Vec<u8>>) {
    let (letter, values, separate) = match src.below(9) {
        0 | 1 => (b'e', CODE, true),
        2 | 3 => (b'r', FEATURES, true),
        4 => (b'I', DIRS, true),
        5 => (b'C', DIRS, true),
        6 => (b'E', ENCODINGS, true),
        7 => (b'x', DIRS, false),
        _ => ([b'i', b'F', b'X'][src.below(3)], DIRS, true),
    };
    // `-i` and `-F` take only the rest of the cluster.
    let separate = separate && letter != b'i' && letter != b'F';
    word.push(letter);
    let value = src.pick(values);
    match src.below(8) {
        0..=2 => {
            word.extend_from_slice(value.as_bytes());
            words.push(word);
        }
        3..=5 if separate => {
            words.push(word);
            words.push(value.as_bytes().to_vec());
        }
        6 if separate => {
            // Values that look like options, or belong to another option.
            words.push(word);
            words.push(any_word(src).as_bytes().to_vec());
        }
        _ => words.push(word),
    }
}

/// A long option with a value: `--NAME=VALUE`, `--NAME-VALUE`, `--NAME VALUE`, or the same
/// at the end of a cluster (`-w-NAME`).
fn long_with_value(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    let name = src.pick(LONG_WITH_VALUE);
    let values = if name.ends_with("encoding") {
        ENCODINGS
    } else {
        VALUES
    };
    let mut word = if src.chance(20) {
        let count = 1 + src.below(2);
        letters(src, count)
    } else {
        b"-".to_vec()
    };
    word.push(b'-');
    word.extend_from_slice(name.as_bytes());
    let value = src.pick(values);
    match src.below(6) {
        0 | 1 => {
            word.push(b'=');
            word.extend_from_slice(value.as_bytes());
            words.push(word);
        }
        2 => {
            word.push(b'-');
            word.extend_from_slice(value.as_bytes());
            words.push(word);
        }
        3 | 4 => {
            words.push(word);
            words.push(value.as_bytes().to_vec());
        }
        _ => words.push(word),
    }
}

/// One option, operand or program word (with its value) appended to `words`.
fn item(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    match src.below(20) {
        0..=2 => {
            let count = 1 + src.below(2);
            words.push(letters(src, count));
        }
        3..=4 => {
            let count = 1 + src.below(3);
            let cluster = letters(src, count);
            if src.chance(60) {
                with_argument(src, cluster, words);
            } else {
                words.push(cluster);
            }
        }
        5..=7 => with_argument(src, b"-".to_vec(), words),
        8 => long_with_value(src, words),
        9..=11 => words.push(src.pick(SCRIPTS).as_bytes().to_vec()),
        12 => {
            words.push(src.pick(ENDS).as_bytes().to_vec());
            if src.chance(80) {
                words.push(any_word(src).as_bytes().to_vec());
            }
        }
        13..=14 => words.push(src.pick(ODD).as_bytes().to_vec()),
        15..=18 => words.push(any_word(src).as_bytes().to_vec()),
        _ => words.push(long_word(src)),
    }
}

/// Words longer than the kernel reads of one ([`ARG_BUFFER`]) or longer clusters than it
/// reads ([`MAX_CLUSTER`]).
fn long_word(src: &mut impl Source) -> Vec<u8> {
    let length = 10 + src.below(190);
    match src.below(4) {
        0 => {
            let mut word = b"-".to_vec();
            word.extend(std::iter::repeat_n(b'w', length));
            word.push([b'e', b'r', b'-', b'v'][src.below(4)]);
            word
        }
        1 => vec![b'a'; length],
        2 => {
            let mut word = b"-r".to_vec();
            word.extend(std::iter::repeat_n(b'e', length));
            word
        }
        _ => {
            let mut word = b"--disable=".to_vec();
            word.extend(std::iter::repeat_n(b',', length));
            word.extend_from_slice(b"gems");
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
    crate::differential::shell_line("ruby", words)
}

// ---------------------------------------------------------------------------------------
// The interpreters

/// The Ruby interpreters to ask: `ruby` and `ruby3.*` in `/usr/bin` and `/usr/local/bin`,
/// each once by canonical path.
pub(crate) fn interpreters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.as_bytes();
                name == b"ruby"
                    || (name.starts_with(b"ruby")
                        && name[4..].iter().all(|b| b.is_ascii_digit() || *b == b'.'))
            })
            .map(|e| e.path())
            .collect();
        names.sort();
        for path in names {
            let Ok(canonical) = fs::canonicalize(&path) else {
                continue;
            };
            if canonical.is_file() && !found.contains(&canonical) {
                found.push(canonical);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Running ruby

/// Prints the tag of `kind` with `$0` (hex), whether rubygems is loaded and whether it
/// runs as the program (`__FILE__` is `$0`; not when a console evaluates the line), from a
/// `BEGIN` block; the first line is a `#!` line naming ruby, as `-x` looks for.
fn body(kind: &str) -> String {
    format!(
        "#!ruby\nBEGIN {{ puts \"GUARD\" + \"TAG {kind} \" + $0.unpack1(\"H*\") + \
         \" \" + (defined?(Gem) ? \"1\" : \"0\") + (__FILE__ == $0 ? \" 1\" : \" 0\") }}\n"
    )
}

/// A temporary directory: `cwd/` where ruby runs (every word that can name a file there is
/// a script printing its tag, also in `cwd/sub/`; `feat.rb` a feature that loads quietly),
/// and `io/` with the standard input program and the output files.
pub(crate) struct Sandbox {
    root: PathBuf,
    cwd: PathBuf,
    io: PathBuf,
    /// Words already made files.
    made: Mutex<HashSet<Vec<u8>>>,
    /// Runs as `nobody` when root: `-i` cannot edit the sandbox's files.
    nobody: bool,
    pub timeout: Duration,
}

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

impl Sandbox {
    pub(crate) fn new(timeout: Duration) -> Sandbox {
        let base = std::env::temp_dir();
        let root = base.join(format!(
            "guard-ruby-argv-{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        let cwd = root.join("cwd");
        let io = root.join("io");
        for dir in [&root, &cwd, &cwd.join("sub"), &io] {
            fs::create_dir_all(dir).expect("sandbox directory");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        write_file(&cwd.join("feat.rb"), "# guard argv oracle: a feature\n");
        write_file(&io.join("stdin"), &body("stdin"));
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

    /// Every word that can name a file in the cwd (and in `sub/`) becomes a script.
    fn make_files(&self, words: &[Vec<u8>]) {
        for word in words {
            let name = word.as_slice();
            if name.is_empty()
                || name == b"."
                || name == b".."
                || name == b"sub"
                || name == b"feat.rb"
                || name.contains(&b'/')
                || name.len() > 255
                || self.made.lock().unwrap().contains(name)
            {
                continue;
            }
            for dir in [self.cwd.clone(), self.cwd.join("sub")] {
                let path = dir.join(OsStr::from_bytes(name));
                if !path.exists() {
                    // Written aside and renamed: a concurrent run never sees half a file.
                    let temporary = self.io.join(format!(
                        "new-{:?}-{}",
                        std::thread::current().id(),
                        SANDBOXES.fetch_add(1, Ordering::Relaxed)
                    ));
                    write_file(&temporary, &body("script"));
                    fs::rename(&temporary, &path).expect("sandbox script");
                }
            }
            self.made.lock().unwrap().insert(name.to_vec());
        }
    }

    /// Runs `ruby words...` in the sandbox, standard input the tagged program (never a
    /// terminal), killed after the timeout. `slot` names the output files: one per thread.
    pub(crate) fn run(&self, ruby: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        self.make_files(words);
        let mut output = self.run_once(ruby, words, slot);
        for _ in 0..5 {
            // Nothing a generated command line asks makes ruby wait (standard input is a
            // file): one out of time was starved by a loaded host (a VM beside the suite),
            // and is asked again, as one killed by a signal is.
            if output.code.is_some() && !output.timed_out {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            output = self.run_once(ruby, words, slot);
        }
        output
    }

    fn run_once(&self, ruby: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        let stdout_path = self.io.join(format!("{slot}.stdout"));
        let stderr_path = self.io.join(format!("{slot}.stderr"));
        let mut cmd = Command::new(ruby);
        cmd.args(words.iter().map(|w| OsStr::from_bytes(w)))
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.cwd)
            .env("LANG", "C.UTF-8")
            .stdin(fs::File::open(self.io.join("stdin")).expect("stdin program"))
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"));
        if self.nobody {
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd.spawn().expect("cannot start ruby");
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
        }
    }
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
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// What ruby ran

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    /// Nothing: an error, the usage, the version, a syntax check or a dump, or a command
    /// line without a program that exits (`--verbose`).
    Nothing(&'static str),
    /// `-e` code.
    Code,
    /// A script operand, as given (`$0`).
    Script(Vec<u8>),
    /// A script operand it could not open or run as a file: the name in its message.
    MissingScript(Vec<u8>),
    /// Code from standard input (`$0` is `-`).
    Stdin,
}

/// Ruby's own account of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ran {
    pub program: Program,
    /// It read code from standard input as its program (also through `/dev/stdin`).
    pub stdin_code: bool,
    /// Standard input was evaluated after the program started (a debugger's console).
    pub interactive: bool,
    /// Rubygems was loaded, as a program reported it; `None` when none reported.
    pub gems: Option<bool>,
}

fn quoted(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.program {
            Program::Nothing(why) => write!(f, "nothing ({why})")?,
            Program::Code => write!(f, "inline code")?,
            Program::Script(operand) => write!(f, "script {}", quoted(operand))?,
            Program::MissingScript(name) => write!(f, "missing script {}", quoted(name))?,
            Program::Stdin => write!(f, "stdin")?,
        }
        if self.stdin_code && !matches!(self.program, Program::Stdin) {
            write!(f, ", code read from stdin")?;
        }
        if self.interactive {
            write!(f, ", then interactive")?;
        }
        if self.gems == Some(false) {
            write!(f, ", without rubygems")?;
        }
        Ok(())
    }
}

/// guard's reading, with the words as text.
pub(crate) fn describe(inv: &Reading) -> String {
    format!(
        "inline_code {}, script {}, exits_without_program {}, debugger {}, no_gems {}, unread {}, truncated {}",
        inv.inline_code,
        inv.script.map_or("none".to_string(), quoted),
        inv.exits_without_program,
        inv.debugger,
        inv.no_gems,
        inv.unread,
        inv.truncated
    )
}

struct Event {
    kind: String,
    argv0: Vec<u8>,
    gems: Option<bool>,
    /// Printed by the program itself, not by a console evaluating its source.
    main: bool,
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
                gems: None,
                main: true,
            },
            [kind, hex, gems, main] => Event {
                kind: kind.to_string(),
                argv0: unhex(hex).ok_or_else(|| format!("bad tag line {line:?}"))?,
                gems: Some(*gems != "0"),
                main: *main != "0",
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

/// The operand ruby names when it cannot run it as a file: `RUBY: No such file or
/// directory -- NAME (LoadError)` (`RUBY` is its `argv[0]`), `Is a directory`,
/// `Permission denied`.
fn missing_script(stderr: &str) -> Option<Vec<u8>> {
    for line in stderr.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        for message in [
            "No such file or directory -- ",
            "Is a directory -- ",
            "Not a directory -- ",
            "Permission denied -- ",
        ] {
            if let Some(name) = rest.strip_prefix(message) {
                let name = name.strip_suffix(" (LoadError)")?;
                return Some(name.as_bytes().to_vec());
            }
        }
    }
    None
}

/// Reads ruby's account of a run from its output.
pub(crate) fn what_ran(output: &Output) -> Result<Ran, String> {
    if output.timed_out {
        return Err("ruby did not finish in time".into());
    }
    if output.code.is_none() {
        return Err("ruby was killed by a signal, six times".into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let events = events(&stdout)?;
    let gems = events.iter().find_map(|e| e.gems);
    let nothing = |why| Ran {
        program: Program::Nothing(why),
        stdin_code: false,
        interactive: false,
        gems,
    };
    // A console evaluating standard input (the debug gem's) once the program started: its
    // `$0` names the program, which may never print (the console quits at the end of
    // standard input before the program's first line).
    let console = events.iter().find(|e| !e.main);
    let interactive = console.is_some();
    if let (Some(console), None) = (console, events.iter().find(|e| e.main)) {
        let program = match console.argv0.as_slice() {
            b"-e" => Program::Code,
            b"-" => Program::Stdin,
            operand => Program::Script(operand.to_vec()),
        };
        return Ok(Ran {
            program,
            stdin_code: false,
            interactive,
            gems,
        });
    }
    let Some(first) = events.iter().find(|e| e.main) else {
        // Inline code that failed: ruby compiled it.
        if stderr.lines().any(|l| l.starts_with("-e:")) {
            return Ok(Ran {
                program: Program::Code,
                stdin_code: false,
                interactive: false,
                gems,
            });
        }
        if let Some(name) = missing_script(&stderr) {
            return Ok(Ran {
                program: Program::MissingScript(name),
                stdin_code: false,
                interactive: false,
                gems,
            });
        }
        if stdout.contains("Syntax OK") {
            return Ok(nothing("syntax check"));
        }
        if stdout.starts_with("Usage:") {
            return Ok(nothing("usage"));
        }
        if output.code == Some(0) && stdout.starts_with("ruby ") {
            return Ok(nothing("version or copyright"));
        }
        if output.code != Some(0) {
            return Ok(nothing("error"));
        }
        // Every program prints its tag: a success that printed none ran a dump (`-y`,
        // `--dump`) or exited without a program (`--verbose`).
        return Ok(nothing("dump or exit"));
    };
    let (program, stdin_code) = match first.kind.as_str() {
        "code" => (Program::Code, false),
        "script" => (Program::Script(first.argv0.clone()), false),
        "stdin" => match first.argv0.as_slice() {
            b"-" => (Program::Stdin, true),
            // An operand that opened standard input as a file.
            operand => (Program::Script(operand.to_vec()), true),
        },
        other => return Err(format!("unknown tag {other:?}")),
    };
    Ok(Ran {
        program,
        stdin_code,
        interactive,
        gems,
    })
}

// ---------------------------------------------------------------------------------------
// The comparison

const ALL_DENIED: u32 =
    DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;

/// The word index of the script operand as the kernel's `main_script` program would find it
/// with this grammar: the kernel's cluster limit, word prefix and word count.
fn kernel_operand(words: &[Vec<u8>]) -> Option<usize> {
    let mut reader = Reader::with_cluster_limit(MAX_CLUSTER);
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

/// Why guard's reading of `words` disagrees with what ruby `ran`, if it does; else the
/// kernel's judgement with every `DENY_*` flag.
pub(crate) fn disagreement(words: &[Vec<u8>], ran: &Ran) -> Result<Step, String> {
    let inv: Reading = ruby_argv::read(words.iter().map(|w| w.as_slice()));
    let judge = |flags: u32| {
        ArgvJudge::<Reader>::judge_words(flags, &NoModules, words.iter().map(|w| w.as_slice()))
    };
    let step = judge(ALL_DENIED);
    // Rubygems skipped: refused where the start-up hook is required, whatever else the
    // command line asks (checked before the program: a dump or an error still says).
    if ran.gems == Some(false) && !inv.no_gems {
        return Err(format!(
            "ruby ran without rubygems, guard reads {}",
            describe(&inv)
        ));
    }
    let program_ok = match &ran.program {
        // Whatever guard thinks, nothing ran.
        Program::Nothing(_) => return Ok(step),
        Program::Code => inv.inline_code && inv.script.is_none(),
        Program::Script(operand) => {
            !inv.inline_code && operand.as_slice() != b"-" && inv.script == Some(operand.as_slice())
        }
        Program::MissingScript(name) => !inv.inline_code && inv.script == Some(name.as_slice()),
        Program::Stdin => !inv.inline_code && inv.reads_stdin(),
    };
    // A cluster past the kernel's letters is unread by every reader of guard's (the user
    // space's summary reads as far as the kernel does): the judge fails closed.
    if inv.unread && step == Step::Refuse(Rule::FactsUnavailable) {
        return Ok(step);
    }
    // Ruby ran a program: it read every option, and every one had its argument.
    if !program_ok || inv.unread || inv.truncated || inv.debugger != ran.interactive {
        return Err(format!("guard reads {}", describe(&inv)));
    }
    let summary = ruby_argv::parse(words.iter().map(|w| w.as_slice()));
    let script = inv.script.map(|s| if s.is_empty() { &b"-"[..] } else { s });
    if summary.inline_code != inv.inline_code
        || summary.script != script
        || summary.inspect != inv.debugger
        || summary.no_site != inv.no_gems
    {
        return Err(format!(
            "parse reads {summary:?}, read reads {}",
            describe(&inv)
        ));
    }
    let code = matches!(ran.program, Program::Code);
    if (code || ran.stdin_code || ran.interactive) && !matches!(step, Step::Refuse(_)) {
        return Err(format!("the kernel's judge says {step:?}"));
    }
    // A plain script ran: the judge allows it, or fails closed on what the kernel cannot
    // read whole (a word past its buffer, a cluster past its limit, a 33rd word).
    let plain = matches!(ran.program, Program::Script(_)) && !ran.stdin_code && !ran.interactive;
    if plain && !matches!(step, Step::Allow | Step::Refuse(Rule::FactsUnavailable)) {
        return Err(format!("a script ran, the kernel's judge says {step:?}"));
    }
    if let Some(index) = kernel_operand(words) {
        let operand = words[index].as_slice();
        let same = match &ran.program {
            Program::Script(script) => script.as_slice() == operand,
            Program::MissingScript(_) | Program::Stdin => inv.script == Some(operand),
            _ => false,
        };
        if !same {
            return Err(format!(
                "the kernel takes word {index} ({:?}) as the script operand",
                String::from_utf8_lossy(operand)
            ));
        }
    }
    Ok(step)
}

/// Runs one command line and compares: `Err` with the whole story when guard disagrees,
/// else what ruby ran and the kernel's judgement.
pub(crate) fn differ(
    sandbox: &Sandbox,
    ruby: &Path,
    words: &[Vec<u8>],
    slot: usize,
) -> Result<(Ran, Step), String> {
    let output = sandbox.run(ruby, words, slot);
    let story = |why: &str| {
        format!(
            "{}\n  interpreter: {}\n  {why}\n  ruby exit {:?}\n  stdout: {}\n  stderr: {}",
            shell_words(words),
            ruby.display(),
            output.code,
            excerpt(&output.stdout),
            excerpt(&output.stderr),
        )
    };
    let ran = what_ran(&output).map_err(|e| story(&e))?;
    match disagreement(words, &ran) {
        Err(why) => Err(story(&format!("ruby ran {ran}, but {why}"))),
        Ok(step) => Ok((ran, step)),
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
