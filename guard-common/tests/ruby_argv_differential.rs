//! Differential test of guard's Ruby command-line reader (`ruby_argv`, and the kernel's
//! `ArgvJudge` on it) against every `ruby` on this machine, as `argv_differential.rs` is for
//! CPython: any command line the two read differently is a way past guard.
//!
//! `GUARD_ARGV_SEED` picks another seed (decimal or 0x-hex), `GUARD_ARGV_CASES` another
//! number of command lines per interpreter.

#[path = "support/argv_oracle.rs"]
mod argv_oracle;
#[path = "support/differential.rs"]
mod differential;
#[path = "support/ruby_argv_oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argv_oracle::SplitMix;
use guard_common::Rule;
use guard_common::exec_gate::Step;
use oracle::{Program, Sandbox};

const DEFAULT_SEED: u64 = 0x7275_6279_6172_6776;
/// Per run: ruby starts in tens of milliseconds; one that hangs is killed.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How many disagreements are printed in full.
const SHOWN: usize = 15;

fn kind(program: &Program) -> &'static str {
    match program {
        Program::Nothing(why) => why,
        Program::Code => "inline code",
        Program::Script(_) => "script",
        Program::MissingScript(_) => "missing script",
        Program::Stdin => "stdin",
    }
}

/// What the runs of one interpreter came to.
struct Runs {
    /// Disagreements, each with its whole story.
    failures: Vec<String>,
    /// How many runs ended each way.
    outcomes: BTreeMap<String, usize>,
    /// Command lines that ran a program where guard refuses as facts-unavailable.
    unread: Vec<String>,
}

/// Runs `cases` generated command lines on `ruby`, on every core.
fn run_all(sandbox: &Sandbox, ruby: &Path, seed: u64, cases: usize) -> Runs {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let outcomes = Mutex::new(BTreeMap::new());
    let unread = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    std::thread::scope(|scope| {
        for slot in 0..workers {
            let (next, failures, outcomes, unread) = (&next, &failures, &outcomes, &unread);
            scope.spawn(move || {
                loop {
                    let case = next.fetch_add(1, Ordering::Relaxed);
                    if case >= cases {
                        break;
                    }
                    let words = oracle::generate(&mut SplitMix::for_case(seed, case as u64));
                    let key = match oracle::differ(sandbox, ruby, &words, slot) {
                        Ok((ran, step)) => {
                            let mut key = kind(&ran.program).to_string();
                            if ran.stdin_code && !matches!(ran.program, Program::Stdin) {
                                key.push_str(", stdin as a file");
                            }
                            if ran.gems == Some(false) {
                                key.push_str(", no rubygems");
                            }
                            // Failing closed where ruby ran a program: counted apart.
                            if step == Step::Refuse(Rule::FactsUnavailable)
                                && !matches!(ran.program, Program::Nothing(_))
                            {
                                key.push_str(", guard refuses: facts unavailable");
                                unread
                                    .lock()
                                    .unwrap()
                                    .push(format!("case {case}: {}", oracle::shell_words(&words)));
                            }
                            key
                        }
                        Err(story) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("case {case}: {story}"));
                            "DISAGREEMENT".to_string()
                        }
                    };
                    *outcomes.lock().unwrap().entry(key).or_insert(0) += 1;
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    let mut unread = unread.into_inner().unwrap();
    unread.sort();
    Runs {
        failures,
        outcomes: outcomes.into_inner().unwrap(),
        unread,
    }
}

#[test]
fn guard_reads_generated_command_lines_as_ruby_does() {
    let rubies = oracle::interpreters();
    assert!(
        !rubies.is_empty(),
        "no ruby (/usr/bin/ruby*, /usr/local/bin/ruby*): `cargo xtask setup` installs it"
    );
    let seed = differential::seed(DEFAULT_SEED);
    let cases = differential::cases();
    eprintln!(
        "ruby argv differential: seed {seed:#x} (GUARD_ARGV_SEED), {cases} command lines (GUARD_ARGV_CASES) on each of {rubies:?}"
    );
    let sandbox = Sandbox::new(TIMEOUT);
    let mut failed = Vec::new();
    for ruby in &rubies {
        let started = Instant::now();
        let runs = run_all(&sandbox, ruby, seed, cases);
        eprintln!(
            "ruby argv differential: {} — {cases} command lines in {:.1} s: {:?}",
            ruby.display(),
            started.elapsed().as_secs_f64(),
            runs.outcomes
        );
        eprintln!(
            "ruby argv differential: {} ran a program where guard fails closed (facts unavailable: words past the kernel's reach)",
            runs.unread.len()
        );
        for line in runs.unread.iter().take(SHOWN) {
            eprintln!("  {line}");
        }
        failed.extend(runs.failures);
    }
    if !failed.is_empty() {
        for story in failed.iter().take(SHOWN) {
            eprintln!("\n{story}");
        }
        panic!(
            "{} command lines are read differently by guard and ruby (seed {seed:#x}; {} shown above)",
            failed.len(),
            failed.len().min(SHOWN)
        );
    }
}

/// Command lines whose reading is easy to get wrong: each runs on every interpreter
/// whatever the seed.
#[test]
fn known_command_lines_agree() {
    let rubies = oracle::interpreters();
    assert!(!rubies.is_empty(), "no ruby");
    let sandbox = Sandbox::new(TIMEOUT);
    let code = oracle::CODE_WORD;
    let lines: &[(&[&str], &str)] = &[
        // The empty operand is standard input, as `-` is.
        (&[""], "stdin"),
        (&["-"], "stdin"),
        (&["--", ""], "stdin"),
        (&["-w", "--", "-"], "stdin"),
        (&[], "stdin"),
        (&["-r"], "stdin"),
        (&["-I"], "stdin"),
        // Letters that continue the cluster into `-e`.
        (&["-We", code], "inline code"),
        (&["-W2e", code], "inline code"),
        (&["-0e", code], "inline code"),
        (&["-0777e", code], "inline code"),
        (&["-Kxe", code], "inline code"),
        (&["-K-e", code], "inline code"),
        // Options go on after `-e`; its first other word is the program's.
        (&["-e", code, "-w", "p"], "inline code"),
        (&["-e", code, "-"], "inline code"),
        (&["-e", code, "--", "p"], "inline code"),
        // Letters whose argument is the rest of the cluster: no `-e` there.
        (&["-ie", "p"], "script"),
        (&["-Fe", "p"], "script"),
        (&["-W:e", "p"], "script"),
        (&["-r", "-e", "p"], "error"),
        (&["-I", "-e", "p"], "script"),
        (&["-Isub", "-Csub", "p"], "script"),
        (&["-xsub", "p"], "script"),
        (&["-C", "sub", "p"], "script"),
        (&["-X", "sub", "p"], "script"),
        (&["-S", "p"], "script"),
        (&["-E", "UTF-8", "p"], "script"),
        // A cluster ending in `-` ends the options; `-K-` does not.
        (&["-w-", "-e"], "script"),
        (&["-Ku-", "-e"], "script"),
        (&["--\r", "p"], "script"),
        (&["-w\r", "p"], "script"),
        (&["-w-enable", "gems", "p"], "script"),
        // Long options with a value in the next word.
        (&["--enable", "gems", "p"], "script"),
        (&["--disable", "did_you_mean", "p"], "script"),
        (&["--encoding", "UTF-8", "p"], "script"),
        (&["--external-encoding", "UTF-8", "p"], "script"),
        (&["--backtrace-limit", "1", "p"], "script"),
        (&["--dump", "insns", "p"], "dump or exit"),
        (&["--enable=gems", "p"], "script"),
        (&["--enable-gems", "p"], "script"),
        (&["--debug", "p"], "script"),
        (&["--yydebug", "p"], "dump or exit"),
        (&["--disable=gems", "p"], "script"),
        (&["--disable-G", "p"], "script"),
        (&["--disable", "all", "p"], "script"),
        // Without a program, these exit rather than read standard input.
        (&["-v"], "version or copyright"),
        (&["--verbose"], "dump or exit"),
        (&["--version", "-"], "version or copyright"),
        (&["-h", "-"], "usage"),
        (&["-v", "-"], "stdin"),
        (&["-v", ""], "stdin"),
        (&["-c", "p"], "syntax check"),
        // Operands ruby cannot run: it names them.
        (&["nodir/p"], "missing script"),
        (&["."], "missing script"),
        (&["-C", "/", "p"], "missing script"),
        (&["-S", "nodir/p"], "missing script"),
        // Descriptor links read standard input as a file.
        (&["/dev/stdin"], "script"),
        (&["-e"], "error"),
        (&["--frob", "p"], "error"),
        (&["-b", "p"], "error"),
        // The debug gem's console evaluates standard input before the script.
        (&["-r", "debug/start", "p"], "script"),
    ];
    let mut failed = Vec::new();
    for ruby in &rubies {
        for (line, expected) in lines {
            let words: Vec<Vec<u8>> = line.iter().map(|w| w.as_bytes().to_vec()).collect();
            match oracle::differ(&sandbox, ruby, &words, 0) {
                Ok((ran, _)) if kind(&ran.program) == *expected => {}
                Ok((ran, _)) => failed.push(format!(
                    "{}: expected {expected}, ruby ran {ran}",
                    oracle::shell_words(&words)
                )),
                Err(story) => failed.push(story),
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
