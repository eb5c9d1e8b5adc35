//! Differential test of guard's CPython command-line reader (`python_argv`, and the kernel's
//! `ArgvJudge` on it) against every profiled CPython on this machine.
//!
//! Any command line the two read differently is a way past guard: `python3 -W '' ./payload`
//! once hid its script operand from the agent. The generator and the oracle are in
//! `support/argv_oracle.rs`, shared with the `argv_cpython` fuzz target.
//!
//! `GUARD_ARGV_SEED` picks another seed (decimal or 0x-hex), `GUARD_ARGV_CASES` another
//! number of command lines per interpreter.

#[path = "support/differential.rs"]
mod differential;
#[path = "support/argv_oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oracle::{Program, Sandbox, SplitMix};

const DEFAULT_SEED: u64 = 0x6775_6172_6461_7267;
/// Per run: CPython starts in tens of milliseconds; one that hangs is killed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How many disagreements are printed in full.
const SHOWN: usize = 15;

fn kind(program: &Program) -> &'static str {
    match program {
        Program::Nothing(why) => why,
        Program::Code => "inline code",
        Program::Module(_) => "module",
        Program::Script(_) => "script",
        Program::MissingScript(_) => "missing script",
        Program::Stdin { .. } => "stdin",
    }
}

/// Runs `cases` generated command lines on `python`, on every core; returns the
/// disagreements and how many runs ended each way.
fn run_all(
    sandbox: &Sandbox,
    python: &Path,
    seed: u64,
    cases: usize,
) -> (Vec<String>, BTreeMap<String, usize>) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let outcomes = Mutex::new(BTreeMap::new());
    // Each run is a process start; one more worker than cores keeps the cores busy while
    // others wait for theirs.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    std::thread::scope(|scope| {
        for slot in 0..workers {
            let (next, failures, outcomes) = (&next, &failures, &outcomes);
            scope.spawn(move || {
                loop {
                    let case = next.fetch_add(1, Ordering::Relaxed);
                    if case >= cases {
                        break;
                    }
                    let words = oracle::generate(&mut SplitMix::for_case(seed, case as u64));
                    let key = match oracle::differ(sandbox, python, &words, slot) {
                        Ok(ran) => {
                            let inspect = if ran.inspect { ", then -i" } else { "" };
                            format!("{}{inspect}", kind(&ran.program))
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
    (failures, outcomes.into_inner().unwrap())
}

#[test]
fn guard_reads_generated_command_lines_as_cpython_does() {
    let pythons = oracle::profiled_interpreters();
    assert!(
        !pythons.is_empty(),
        "no profiled CPython (ELF /usr/bin/python3*, /usr/local/bin/python3*): `cargo xtask setup` installs python3"
    );
    let seed = differential::seed(DEFAULT_SEED);
    let cases = differential::cases();
    eprintln!(
        "argv differential: seed {seed:#x} (GUARD_ARGV_SEED), {cases} command lines (GUARD_ARGV_CASES) on each of {pythons:?}"
    );
    let sandbox = Sandbox::new(TIMEOUT);
    let mut failed = Vec::new();
    for python in &pythons {
        let started = Instant::now();
        let (failures, outcomes) = run_all(&sandbox, python, seed, cases);
        eprintln!(
            "argv differential: {} — {cases} command lines in {:.1} s: {outcomes:?}",
            python.display(),
            started.elapsed().as_secs_f64()
        );
        failed.extend(failures);
    }
    if !failed.is_empty() {
        for story in failed.iter().take(SHOWN) {
            eprintln!("\n{story}");
        }
        panic!(
            "{} command lines are read differently by guard and CPython (seed {seed:#x}; {} shown above)",
            failed.len(),
            failed.len().min(SHOWN)
        );
    }
}

/// Command lines that once were, or nearly were, read differently: each runs on every
/// interpreter whatever the seed.
#[test]
fn known_command_lines_agree() {
    let pythons = oracle::profiled_interpreters();
    assert!(!pythons.is_empty(), "no profiled CPython");
    let sandbox = Sandbox::new(TIMEOUT);
    let lines: &[(&[&str], &str)] = &[
        // The empty word is -W's argument; ./p is the script.
        (&["-W", "", "./p"], "script"),
        (&["-X", "", "p"], "script"),
        (&["-W", "-c", "p"], "script"),
        (&["", "-c", "x"], "script"),
        (&["-c", ""], "inline code"),
        (&["-i", "-c", ""], "inline code"),
        (&["-c", "-i"], "inline code"),
        (&["-Im", "gm"], "module"),
        (&["-mgm.sub", "-c"], "module"),
        (&["-i", "-"], "stdin"),
        (&["-E"], "stdin"),
        (&["--", "-"], "stdin"),
        (&["-i", "/dev/stdin"], "script"),
        (&["--check-hash-based-pycs", "always", "p"], "script"),
        // getopt reads `-E-NAME` as `-E --NAME`, and a cluster ending in `-` as `--`.
        (&["-E-check-hash-based-pycs", "always", "p"], "script"),
        (&["-E-", "-c", "x"], "script"),
        (&["-i-", "-m", "gm"], "script"),
        (&["-E-check-hash-based-pycs", "-c", "p"], "usage error"),
        (&["-E-c", "x"], "usage error"),
        (&["-c"], "usage error"),
        (&["-V", "-c", "x"], "help or version"),
    ];
    for python in &pythons {
        for (line, expected) in lines {
            let words: Vec<Vec<u8>> = line.iter().map(|w| w.as_bytes().to_vec()).collect();
            match oracle::differ(&sandbox, python, &words, 0) {
                Ok(ran) => assert_eq!(
                    kind(&ran.program),
                    *expected,
                    "{}: CPython ran {ran}",
                    oracle::shell_words(&words)
                ),
                Err(story) => panic!("{story}"),
            }
        }
    }
}

/// Writes the fuzz target's seeds (`fuzz/seeds/argv_cpython/`): the choices of generated
/// command lines, which the target's byte source replays. Run by hand after changing the
/// generator: `cargo test -p guard-common --test argv_differential -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/argv_cpython");
    std::fs::create_dir_all(&dir).unwrap();
    let mut kept = 0;
    let mut case = 0;
    while kept < 24 {
        let mut recorder = oracle::Recorder {
            inner: SplitMix::for_case(DEFAULT_SEED, case),
            bytes: Vec::new(),
        };
        let words = oracle::generate(&mut recorder);
        case += 1;
        // Short lines: the fuzzer grows them.
        if words.is_empty() || words.len() > 6 {
            continue;
        }
        let replayed = oracle::generate(&mut oracle::Bytes::new(&recorder.bytes));
        assert_eq!(
            replayed, words,
            "the byte source replays the recorded choices"
        );
        std::fs::write(dir.join(kept.to_string()), &recorder.bytes).unwrap();
        eprintln!("{kept}: {}", oracle::shell_words(&words));
        kept += 1;
    }
}
