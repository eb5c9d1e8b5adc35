//! Generator and oracle of the perl command-line differential test, shared by
//! `tests/perl_argv_differential.rs` and the `argv_perl` fuzz target (included by path).
//!
//! perl is asked what it ran, never guard's model of it: it runs in a directory where every
//! word of the command line that can name a file is a script whose `BEGIN` block prints a
//! tag with its `$0` (a `BEGIN` block runs under `-c`, `-n` and `-p` too, and the files
//! start with a `#!perl` line for `-x`), its standard input is a program printing another
//! tag, the `-e` values are code printing a third, and the code smuggled into other
//! switches (`-M'strict;BEGIN{…}'`, `-F/(?{…})/`, `-d:Peek;…`, a quote broken by a
//! trailing backslash) prints a fourth. Each tag says whether the debugger
//! (`perl5db.pl`) was loaded; a standard-input tag after the program is the debugger's
//! prompt evaluating what it read.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_common::argv::Dialect;
use guard_common::argv::Word;
use guard_common::exec_gate::{
    ARG_BUFFER, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_STDIN_CODE,
    MAX_ARGS, MAX_CLUSTER, NoModules, Step, judge_argv,
};
use guard_common::perl_argv::{self, Reader, Reading};

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

/// SplitMix64: deterministic by seed.
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
        #[allow(clippy::cast_possible_truncation)]
        let choice = (self.next() % n as u64) as usize;
        choice
    }
}

/// The fuzzer's bytes, one per choice; zeros once used up.
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
/// [`Bytes`]: how the fuzz target's seeds are written.
pub(crate) struct Recorder<S> {
    pub inner: S,
    pub bytes: Vec<u8>,
}

impl<S: Source> Source for Recorder<S> {
    fn below(&mut self, n: usize) -> usize {
        let choice = self.inner.below(n);
        #[allow(clippy::cast_possible_truncation)]
        let byte = choice as u8;
        self.bytes.push(byte);
        choice
    }
}

// ---------------------------------------------------------------------------------------
// The command lines

const TAG: &str = "GUARDTAG ";
/// `-e` code that says it ran, and whether the debugger was loaded. Also a file name when
/// it lands where an operand is read.
pub(crate) const CODE_WORD: &str =
    "BEGIN { print \"GUARD\", \"TAG ecode \", (exists $INC{\"perl5db.pl\"} ? 1 : 0), \"\\n\" }";
/// Code smuggled into another switch: no whitespace (`-F` stops at it).
const SMUGGLED: &str = "print(\"GUARD\",\"TAG\\x20mcode\\n\")";

/// Switches without an argument. `u` is missing: it dumps core after compiling.
const NO_ARGUMENT: &[u8] = b"acnpswWXtTSfUg";
/// Script operands: files, a directory, standard input (`-`, the empty word, and the
/// descriptor links that read it: perl reads `/dev/fd/N` and `/dev/fd/N/NAME` from the
/// descriptor itself), a missing file.
const SCRIPTS: &[&str] = &[
    "p",
    "./p",
    "q",
    "",
    ".",
    "-",
    "/dev/stdin",
    "/proc/self/fd/0",
    "/dev/fd/0",
    "/dev/fd/0/x",
    "nodir/p",
    "\u{e9}",
];
/// `-e` values: code that prints its tag, code that prints nothing, and option-like words
/// (perl compiles them as code: `-w` is a file test).
const CODE: &[&str] = &[
    CODE_WORD, CODE_WORD, CODE_WORD, "", "-w", "-e", "--", "-", "-d", "p", "x", "1",
];
/// What follows `-M`/`-m` in the word: modules (some missing), arguments, versions, and
/// code after a name.
const MODULES: &[&str] = &[
    "strict",
    "warnings",
    "strict=vars",
    "lib=.",
    "lib=,x",
    "-strict",
    "Data::Dumper",
    "NoSuch",
    "NoSuch::Mod=a,b",
    "5.010",
    "v5.36",
    "",
    "-",
    "Foo:Bar",
    "strict=",
    "lib=x\\",
    "lib=);BEGIN{print(\"GUARD\",\"TAG\\x20mcode\\n\")};#",
    "strict;BEGIN{print(\"GUARD\",\"TAG\\x20mcode\\n\")}",
    "strict BEGIN{print(\"GUARD\",\"TAG\\x20mcode\\n\")}",
    "lib=-e",
];
/// What follows `-d` in the word.
const DEBUG: &[&str] = &[
    "",
    "",
    "t",
    ":Peek",
    "t:Peek",
    ":-Peek",
    "=Peek",
    ":Peek=a,b",
    ":NoSuch",
    ":Peek;BEGIN{print(\"GUARD\",\"TAG\\x20mcode\\n\")}",
    ":Peek=},do{print(\"GUARD\",\"TAG\\x20mcode\\n\")});#",
    ":Peek=a\\",
    ":Peek:x",
    "e",
    "w",
];
/// `-F` patterns: plain ones quoted by perl, delimited ones pasted into the program.
const PATTERNS: &[&str] = &[
    ",",
    ":",
    "",
    "/",
    "/,/",
    "'x'",
    "\"x\"",
    "x/y/",
    "/(?{print(\"GUARD\",\"TAG\\x20mcode\\n\")})/",
];
/// Arguments read up to whitespace or as digits: `-C`, `-i`, `-0`, `-l`, `-D`, `-x`,
/// `-V` (as `LETTER` + value).
const ATTACHED: &[&str] = &[
    "C", "CS", "CSD", "C0", "C7", "i", "i.bak", "i.e", "0", "0777", "00", "0x1F", "0xZ", "0e", "l",
    "l0", "l012", "l8", "D", "Dx", "D1", "x", "x.", "xnodir", "V", "V:osname", "V:a\\", "V:",
];
/// Options that end option processing: `--`, a cluster ending in `-`, `-` before a space.
const ENDS: &[&str] = &["--", "-w-", "-- x", "-w --", "-n-"];
/// Switches that exit, unknown ones, and oddities of spacing.
const ODD: &[&str] = &[
    "-v",
    "-h",
    "-?",
    "--help",
    "--version",
    "--frob",
    "-w-help",
    "-q",
    "-j",
    "-8",
    "-\t",
    "-\u{e9}",
    "- ",
    "-w e",
    "-w\r-e1",
    "-CS\r -e1",
    "-w -d",
    "- -d",
];
/// Bare switch words, also as the words of a program's own argv.
const SHORT: &[&str] = &[
    "-e", "-E", "-I", "-d", "-M", "-m", "-x", "-S", "-V", "-", "--", "-w", "-c",
];

const ALL: &[&[&str]] = &[SCRIPTS, CODE, MODULES, DEBUG, PATTERNS, ENDS, ODD, SHORT];

fn any_word<'a>(src: &mut impl Source) -> &'a str {
    let list = ALL[src.below(ALL.len())];
    src.pick(list)
}

fn letters(src: &mut impl Source, count: usize) -> Vec<u8> {
    let mut word = vec![b'-'];
    for _ in 0..count {
        word.push(NO_ARGUMENT[src.below(NO_ARGUMENT.len())]);
    }
    word
}

/// A switch with an argument at the end of `word` (a cluster so far): its value attached,
/// or (for `-e`, `-E`, `-I`) maybe as the next word or missing.
fn with_argument(src: &mut impl Source, mut word: Vec<u8>, words: &mut Vec<Vec<u8>>) {
    match src.below(9) {
        0..=2 => {
            word.push(if src.chance(80) { b'e' } else { b'E' });
            match src.below(8) {
                0..=2 => {
                    word.extend_from_slice(src.pick(CODE).as_bytes());
                    words.push(word);
                }
                3..=5 => {
                    words.push(word);
                    words.push(src.pick(CODE).as_bytes().to_vec());
                }
                6 => {
                    words.push(word);
                    words.push(any_word(src).as_bytes().to_vec());
                }
                _ => words.push(word),
            }
        }
        3 => {
            word.push(b'I');
            if src.chance(50) {
                word.extend_from_slice(src.pick(&[".", "e", "-e", "x"]).as_bytes());
                words.push(word);
            } else {
                words.push(word);
                if src.chance(90) {
                    words.push(any_word(src).as_bytes().to_vec());
                }
            }
        }
        4 => {
            word.push(if src.chance(70) { b'M' } else { b'm' });
            if src.chance(80) {
                word.extend_from_slice(src.pick(MODULES).as_bytes());
                words.push(word);
            } else {
                // `-M Foo`: perl 5.40 reads the next word, older ones refuse.
                words.push(word);
                words.push(src.pick(MODULES).as_bytes().to_vec());
            }
        }
        5 => {
            word.push(b'd');
            word.extend_from_slice(src.pick(DEBUG).as_bytes());
            words.push(word);
        }
        6 => {
            word.push(b'F');
            word.extend_from_slice(src.pick(PATTERNS).as_bytes());
            words.push(word);
        }
        _ => {
            word.extend_from_slice(src.pick(ATTACHED).as_bytes());
            // The cluster may go on after the argument.
            if src.chance(30) {
                word.extend_from_slice(src.pick(&["w", "e1", " -w", " -e1", " x"]).as_bytes());
            }
            words.push(word);
        }
    }
}

/// One switch, operand or program word (with its value) appended to `words`.
fn item(src: &mut impl Source, words: &mut Vec<Vec<u8>>) {
    match src.below(20) {
        0..=2 => words.push(letters(src, 1)),
        3 => words.push(b"-d".to_vec()),
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
            // A cluster that goes on after a space (`'-w -e…'`), or a second switch word
            // inside one.
            let count = src.below(3);
            let mut word = letters(src, count);
            word.push(b' ');
            if src.chance(80) {
                word.push(b'-');
            }
            let mut rest = Vec::new();
            let count = src.below(2);
            let cluster = letters(src, count);
            with_argument(src, cluster, &mut rest);
            if let Some(first) = rest.first_mut() {
                word.extend_from_slice(&first[1..]);
                *first = word;
            }
            words.extend(rest);
        }
        10..=12 => words.push(src.pick(SCRIPTS).as_bytes().to_vec()),
        13..=14 => {
            words.push(src.pick(ENDS).as_bytes().to_vec());
            if src.chance(80) {
                words.push(any_word(src).as_bytes().to_vec());
            }
        }
        15 => words.push(src.pick(ODD).as_bytes().to_vec()),
        16 => {
            // A broken quote: the next -M's arguments are code.
            words.push(
                src.pick(&["-Mlib=x\\", "-V:x\\", "-mlib=\\"])
                    .as_bytes()
                    .to_vec(),
            );
            words.push(format!("-Mlib=);BEGIN{{{SMUGGLED}}};#").into_bytes());
        }
        17..=18 => words.push(any_word(src).as_bytes().to_vec()),
        _ => words.push(long_word(src)),
    }
}

/// Words longer than the kernel reads of one ([`ARG_BUFFER`]) or longer clusters than it
/// reads ([`MAX_CLUSTER`]).
fn long_word(src: &mut impl Source) -> Vec<u8> {
    let length = 10 + src.below(190);
    match src.below(5) {
        0 => {
            let mut word = letters(src, 0);
            word.extend(std::iter::repeat_n(b'w', length));
            word.push([b'e', b'd', b'-', b'v'][src.below(4)]);
            word
        }
        1 => vec![b'a'; length],
        2 => {
            // An argument list whose end the kernel does not see.
            let mut word = b"-Mlib=".to_vec();
            word.extend(std::iter::repeat_n(b'x', length));
            word.push(b'\\');
            word
        }
        3 => {
            let mut word = b"-F,".to_vec();
            word.extend(std::iter::repeat_n(b',', length));
            word.extend_from_slice(b" -e1");
            word
        }
        _ => {
            let mut word = b"-i".to_vec();
            word.extend(std::iter::repeat_n(b'e', length));
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
    crate::differential::shell_line("perl", words)
}

// ---------------------------------------------------------------------------------------
// The interpreters

/// The perl executables a profile would name: ELF `/usr/bin/perl*`, `/usr/local/bin/perl*`
/// (`perlbug`, `perldoc`… are scripts), each file once.
pub(crate) fn profiled_interpreters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(b"perl"))
            .map(|e| e.path())
            .collect();
        names.sort();
        for path in names {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let mut magic = [0u8; 4];
            let elf = fs::File::open(&path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && magic == *b"\x7fELF";
            if elf && seen.insert((meta.dev(), meta.ino())) {
                found.push(path);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Running perl

fn body(kind: &str) -> String {
    format!(
        "#!/usr/bin/perl\n\
         BEGIN {{ print \"GUARD\", \"TAG {kind} \", unpack(\"H*\", $0), \" \", (exists $INC{{\"perl5db.pl\"}} ? 1 : 0), \"\\n\" }}\n"
    )
}

/// A temporary directory: `cwd/` where perl runs (every vocabulary word that can name a
/// file there is a script printing its tag; the directory and its files are read-only, so
/// `-i` edits nothing), and `io/` with the standard input program and the output files.
pub(crate) struct Sandbox {
    root: PathBuf,
    cwd: PathBuf,
    io: PathBuf,
    /// Runs as `nobody` when root.
    nobody: bool,
    /// `setsid`, so that the debugger finds no terminal and reads standard input.
    setsid: Option<PathBuf>,
    pub timeout: Duration,
}

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

impl Sandbox {
    pub(crate) fn new(timeout: Duration) -> Sandbox {
        let base = std::env::temp_dir();
        sweep(&base);
        let root = base.join(format!(
            "guard-perl-argv-{}-{}",
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
        write_file(&io.join("stdin"), &body("stdin"));
        let nobody = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let vocabulary = ALL
            .iter()
            .flat_map(|list| list.iter())
            .chain(["x", "e"].iter());
        for word in vocabulary {
            let name = word.as_bytes();
            // No file is called `-e`: a script of that name would look like the -e program
            // in perl's messages (`at -e line 0`); an operand after `--` is named in
            // perl's "Can't open perl script" instead.
            if name.is_empty() || name == b"." || name.contains(&b'/') || name[0] == b'-' {
                continue;
            }
            let path = cwd.join(OsStr::from_bytes(name));
            if !path.exists() {
                write_file(&path, &body("script"));
            }
        }
        fs::set_permissions(&cwd, fs::Permissions::from_mode(0o555)).expect("chmod");
        let setsid = ["/usr/bin/setsid", "/bin/setsid"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        Sandbox {
            root,
            cwd,
            io,
            nobody,
            setsid,
            timeout,
        }
    }

    /// Runs `perl words...` in the sandbox, standard input the tagged program (never a
    /// terminal), killed after the timeout. `slot` names the output files.
    pub(crate) fn run(&self, perl: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        let mut output = self.run_once(perl, words, slot);
        for _ in 0..5 {
            // A perl that is not the debugger's prompt looping at the end of its input and
            // still ran out of time was starved by a loaded host (a VM beside the suite):
            // asked again, as one killed by a signal is.
            let starved = output.timed_out
                && !String::from_utf8_lossy(&output.stderr).contains("Loading DB routines");
            if !starved && (output.timed_out || output.code.is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            output = self.run_once(perl, words, slot);
        }
        output
    }

    fn run_once(&self, perl: &Path, words: &[Vec<u8>], slot: usize) -> Output {
        let stdout_path = self.io.join(format!("{slot}.stdout"));
        let stderr_path = self.io.join(format!("{slot}.stderr"));
        let mut cmd = match &self.setsid {
            Some(setsid) => {
                let mut cmd = Command::new(setsid);
                cmd.arg(perl);
                cmd
            }
            None => Command::new(perl),
        };
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
        let mut child = cmd.spawn().expect("cannot start perl");
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
        let _ = fs::set_permissions(&self.cwd, fs::Permissions::from_mode(0o755));
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Removes the sandboxes of processes gone.
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("guard-perl-argv-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ =
                fs::set_permissions(entry.path().join("cwd"), fs::Permissions::from_mode(0o755));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn write_file(path: &Path, body: &str) {
    fs::write(path, body).expect("sandbox file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).expect("chmod");
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
// What perl ran

/// The program perl ran, from what it printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    /// Nothing at all, or nothing this oracle can name: a switch that croaked or exited, a
    /// module or script that failed to compile, `-V`'s report, code that printed nothing.
    Nothing(&'static str),
    /// The `-e` program.
    Code,
    /// A script operand, by its `$0`; `stdin` when what perl read was standard input (the
    /// operand is a descriptor link to it).
    Script { operand: Vec<u8>, stdin: bool },
    /// A script operand perl could not open: the name in its message.
    MissingScript(Vec<u8>),
    /// The program read from standard input, `$0` being `-` (no operand, or `-`) or empty
    /// (the empty word).
    Stdin { argv0: Vec<u8> },
}

/// perl's own account of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ran {
    pub program: Program,
    /// Code from the command line ran (the `-e` program, or code another switch carried).
    pub inline: bool,
    /// The debugger was loaded, or its prompt evaluated standard input after the program.
    pub interactive: bool,
    /// A tag that says whether the debugger was loaded printed.
    pub tagged: bool,
}

impl Ran {
    pub(crate) fn stdin_code(&self) -> bool {
        matches!(
            self.program,
            Program::Stdin { .. } | Program::Script { stdin: true, .. }
        )
    }
}

fn quoted(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.program {
            Program::Nothing(why) => write!(f, "nothing ({why})")?,
            Program::Code => write!(f, "the -e program")?,
            Program::Script { operand, stdin } => {
                write!(f, "script {}", quoted(operand))?;
                if *stdin {
                    write!(f, " (standard input)")?;
                }
            }
            Program::MissingScript(name) => write!(f, "missing script {}", quoted(name))?,
            Program::Stdin { argv0 } => write!(f, "stdin ($0 {})", quoted(argv0))?,
        }
        if self.inline && !matches!(self.program, Program::Code) {
            write!(f, ", with code from a switch")?;
        }
        if self.interactive {
            write!(f, ", debugger")?;
        }
        Ok(())
    }
}

/// guard's reading, with the words as text.
pub(crate) fn describe(inv: &Reading) -> String {
    format!(
        "inline_code {}, e_script {}, script {}, interactive {}, no_script {}, search {}, truncated {}",
        inv.inline_code,
        inv.e_script,
        inv.script.map_or("none".to_string(), quoted),
        inv.interactive,
        inv.no_script,
        inv.search,
        inv.truncated
    )
}

struct Event {
    kind: String,
    argv0: Vec<u8>,
    debugger: bool,
}

fn events(stdout: &str) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for line in stdout.lines() {
        let Some(at) = line.find(TAG) else {
            continue;
        };
        let fields: Vec<&str> = line[at + TAG.len()..]
            .trim_end_matches(['\0', '\r'])
            .split(' ')
            .collect();
        let event = match fields.as_slice() {
            ["mcode"] => Event {
                kind: "mcode".into(),
                argv0: Vec::new(),
                debugger: false,
            },
            ["ecode", debugger] => Event {
                kind: "ecode".into(),
                argv0: Vec::new(),
                debugger: *debugger != "0",
            },
            [kind, hex, debugger] => Event {
                kind: kind.to_string(),
                argv0: unhex(hex).ok_or_else(|| format!("bad tag line {line:?}"))?,
                debugger: *debugger != "0",
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

/// Reads perl's account of a run from its output.
pub(crate) fn what_ran(output: &Output) -> Result<Ran, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // perl5db.pl's prompt can loop at the end of its input: a debugger that is still
    // prompting when the time is up ran what its output says, and is interactive.
    let prompting = stderr.contains("Loading DB routines");
    if output.timed_out && !prompting {
        return Err("perl did not finish in time".into());
    }
    if output.code.is_none() && !output.timed_out {
        return Err("perl was killed by a signal, six times".into());
    }
    let events = events(&stdout)?;
    // The debugger's prompt evaluating standard input after an `-e` program (`$0` is
    // `-e`) or after `-V`'s (`/dev/null`): no program of its own.
    // (A script operand called `-e` is its `$0` too, and prints its tag first.)
    let script = events.iter().any(|e| e.kind == "script");
    let after = |e: &Event, argv0: &[u8]| !script && e.kind == "stdin" && e.argv0 == argv0;
    let prompt_after_e = events.iter().any(|e| after(e, b"-e"));
    let prompt_after_v = events.iter().any(|e| after(e, b"/dev/null"));
    let first = events.iter().position(|e| {
        (e.kind == "script" || e.kind == "stdin") && !after(e, b"-e") && !after(e, b"/dev/null")
    });
    let inline = events
        .iter()
        .any(|e| e.kind == "mcode" || e.kind == "ecode");
    // The -e program ran: its tag, the prompt after it, or perl names it in an error or
    // under -c (a script operand called `-e` is named so too, but prints its tag).
    let e_program = events.iter().any(|e| e.kind == "ecode")
        || prompt_after_e
        || (first.is_none()
            && (stderr.contains(" at -e line ") || stderr.contains("-e syntax OK")));
    let debugger = events.iter().any(|e| e.debugger);
    let missing = stderr.find("Can't open perl script \"").map(|at| {
        let rest = &stderr[at + "Can't open perl script \"".len()..];
        let end = rest.find("\": ").unwrap_or(rest.len());
        rest.as_bytes()[..end].to_vec()
    });
    let program = if e_program {
        Program::Code
    } else if let Some(first) = first {
        let event = &events[first];
        match (event.kind.as_str(), event.argv0.as_slice()) {
            ("script", operand) => Program::Script {
                operand: operand.to_vec(),
                stdin: false,
            },
            ("stdin", b"-" | b"") => Program::Stdin {
                argv0: event.argv0.clone(),
            },
            // An operand that read standard input as a file.
            (_, operand) => Program::Script {
                operand: operand.to_vec(),
                stdin: true,
            },
        }
    } else if prompt_after_v {
        Program::Nothing("Config")
    } else if let Some(name) = missing {
        Program::MissingScript(name)
    } else if output.code == Some(0) && !stdout.trim().is_empty() {
        Program::Nothing("help, version or Config")
    } else if output.code == Some(0) {
        Program::Nothing("silent")
    } else {
        Program::Nothing("error")
    };
    // After the program, standard input is read as code only by the debugger's prompt.
    let after_program = match first {
        Some(first) => events[first + 1..].iter().any(|e| e.kind == "stdin"),
        None => prompt_after_e || prompt_after_v,
    };
    Ok(Ran {
        program,
        inline: inline || e_program,
        interactive: debugger || after_program || (prompting && output.timed_out),
        tagged: events.iter().any(|e| e.kind != "mcode"),
    })
}

// ---------------------------------------------------------------------------------------
// The comparison

const ALL_DENIED: u32 =
    DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;

/// The word index of the script operand as a kernel program reading the argv with the
/// kernel's limits would find it: it stops at a word whose switches it could not read to
/// their end.
fn kernel_operand(words: &[Vec<u8>]) -> Option<usize> {
    let mut reader = Reader::with_cluster_limit(MAX_CLUSTER);
    for (i, word) in words.iter().enumerate().take(MAX_ARGS as usize) {
        let whole = word.len() < ARG_BUFFER - 1;
        let seen = &word[..word.len().min(ARG_BUFFER - 1)];
        match reader.feed(seen) {
            Word::Script(_) => return Some(i),
            Word::Unread | Word::Program => return None,
            // A cluster seen in part could go on with `--` or `-e` in the rest.
            Word::Options | Word::InlineCode if !whole => return None,
            _ => {}
        }
    }
    None
}

fn cmdline(words: &[Vec<u8>]) -> Vec<u8> {
    let mut joined = b"perl\0".to_vec();
    for word in words {
        joined.extend_from_slice(word);
        joined.push(0);
    }
    joined
}

/// `/dev/fd/N/NAME`: perl reads descriptor N and calls the script NAME.
fn fd_named(operand: &[u8], argv0: &[u8]) -> bool {
    let Some(rest) = operand.strip_prefix(b"/dev/fd/") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest[digits..].strip_prefix(b"/") == Some(argv0)
}

/// `-S NAME`: perl ran `DIR/NAME`, found on PATH.
fn found_on_path(operand: &[u8], path: &[u8]) -> bool {
    !operand.contains(&b'/')
        && path.len() > operand.len()
        && path.ends_with(operand)
        && path[path.len() - operand.len() - 1] == b'/'
}

/// Why guard's reading of `words` disagrees with what perl `ran`, if it does.
pub(crate) fn disagreement(words: &[Vec<u8>], ran: &Ran) -> Option<String> {
    let inv: Reading = perl_argv::read(words.iter().map(|w| w.as_slice()));
    let joined = cmdline(words);
    let from_proc = perl_argv::read_cmdline(&joined);
    if from_proc != inv {
        return Some(format!(
            "read_cmdline reads {}, read reads {}",
            describe(&from_proc),
            describe(&inv)
        ));
    }
    let program_ok = match &ran.program {
        // Whatever guard thinks, nothing ran.
        Program::Nothing(_) => return None,
        Program::Code => inv.e_script && inv.script.is_none(),
        Program::Script { operand, stdin } => {
            !inv.e_script
                && !inv.no_script
                && inv.script.is_some_and(|script| {
                    script == operand.as_slice()
                        || (*stdin && fd_named(script, operand))
                        || (inv.search && found_on_path(script, operand))
                })
        }
        Program::MissingScript(name) => {
            !inv.e_script && !inv.no_script && inv.script == Some(name.as_slice())
        }
        Program::Stdin { argv0 } => {
            inv.reads_stdin()
                && match inv.script {
                    None => argv0 == b"-",
                    Some(script) => script == argv0.as_slice(),
                }
        }
    };
    let interactive_ok = if ran.tagged {
        inv.interactive == ran.interactive
    } else {
        !ran.interactive || inv.interactive
    };
    if !program_ok || inv.truncated || (ran.inline && !inv.inline_code) || !interactive_ok {
        return Some(format!("guard reads {}", describe(&inv)));
    }
    let step = judge_argv(
        Dialect::Perl,
        ALL_DENIED,
        &NoModules,
        words.iter().map(|w| w.as_slice()),
    );
    if (ran.inline || ran.stdin_code() || ran.interactive) && !matches!(step, Step::Refuse(_)) {
        return Some(format!("the kernel's judge says {step:?}"));
    }
    if let Some(index) = kernel_operand(words) {
        let operand = words[index].as_slice();
        let same = match &ran.program {
            Program::Script { .. } | Program::MissingScript(_) => inv.script == Some(operand),
            Program::Stdin { argv0 } => operand == argv0.as_slice(),
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
    perl: &Path,
    words: &[Vec<u8>],
    slot: usize,
) -> Result<Ran, String> {
    let output = sandbox.run(perl, words, slot);
    let story = |why: &str| {
        format!(
            "{}\n  interpreter: {}\n  {why}\n  perl exit {:?}\n  stdout: {}\n  stderr: {}",
            shell_words(words),
            perl.display(),
            output.code,
            excerpt(&output.stdout),
            excerpt(&output.stderr),
        )
    };
    let ran = what_ran(&output).map_err(|e| story(&e))?;
    match disagreement(words, &ran) {
        Some(why) => Err(story(&format!("perl ran {ran}, but {why}"))),
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
