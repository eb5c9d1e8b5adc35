//! Differential test of guard's perl command-line reader (`perl_argv`, and the kernel's
//! `ArgvJudge` on it) against every perl executable on this machine.
//!
//! Any command line the two read differently is a way past guard: `perl '-w -eCODE'` is
//! inline code, `perl ''` reads its program from standard input, `perl -MFoo=x\ -MBar=…`
//! runs Bar's arguments. The generator and the oracle are in `support/perl_argv_oracle.rs`,
//! shared with the `argv_perl` fuzz target.
//!
//! `GUARD_ARGV_SEED` picks another seed (decimal or 0x-hex), `GUARD_ARGV_CASES` another
//! number of command lines per interpreter.

#[path = "support/differential.rs"]
mod differential;
#[path = "support/perl_argv_oracle.rs"]
mod oracle;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oracle::{Program, Sandbox, SplitMix};

const DEFAULT_SEED: u64 = 0x6775_6172_6470_6572;
/// Per run: perl starts in milliseconds, its debugger in a tenth of a second.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How many disagreements are printed in full.
const SHOWN: usize = 15;

fn kind(ran: &oracle::Ran) -> String {
    let program = match &ran.program {
        Program::Nothing(why) => why,
        Program::Code => "the -e program",
        Program::Script { stdin: false, .. } => "script",
        Program::Script { stdin: true, .. } => "script reading stdin",
        Program::MissingScript(_) => "missing script",
        Program::Stdin { .. } => "stdin",
    };
    let mut kind = program.to_string();
    if ran.inline && !matches!(ran.program, Program::Code) {
        kind.push_str(", code in a switch");
    }
    if ran.interactive {
        kind.push_str(", debugger");
    }
    kind
}

/// Runs `cases` generated command lines on `perl`, on every core; returns the
/// disagreements and how many runs ended each way.
fn run_all(
    sandbox: &Sandbox,
    perl: &Path,
    seed: u64,
    cases: usize,
) -> (Vec<String>, BTreeMap<String, usize>) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let outcomes = Mutex::new(BTreeMap::new());
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
                    let key = match oracle::differ(sandbox, perl, &words, slot) {
                        Ok(ran) => kind(&ran),
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
fn guard_reads_generated_command_lines_as_perl_does() {
    let perls = oracle::profiled_interpreters();
    assert!(
        !perls.is_empty(),
        "no perl (ELF /usr/bin/perl*, /usr/local/bin/perl*): Debian's perl-base has one"
    );
    let seed = differential::seed(DEFAULT_SEED);
    let cases = differential::cases();
    eprintln!(
        "perl argv differential: seed {seed:#x} (GUARD_ARGV_SEED), {cases} command lines (GUARD_ARGV_CASES) on each of {perls:?}"
    );
    let sandbox = Sandbox::new(TIMEOUT);
    let mut failed = Vec::new();
    for perl in &perls {
        let started = Instant::now();
        let (failures, outcomes) = run_all(&sandbox, perl, seed, cases);
        eprintln!(
            "perl argv differential: {} — {cases} command lines in {:.1} s: {outcomes:?}",
            perl.display(),
            started.elapsed().as_secs_f64()
        );
        failed.extend(failures);
    }
    if !failed.is_empty() {
        for story in failed.iter().take(SHOWN) {
            eprintln!("\n{story}");
        }
        panic!(
            "{} command lines are read differently by guard and perl (seed {seed:#x}; {} shown above)",
            failed.len(),
            failed.len().min(SHOWN)
        );
    }
}

/// Command lines that once were, or nearly were, read differently, and the code-carrying
/// spellings: each runs on every interpreter whatever the seed, with what perl must have
/// done.
#[test]
fn known_command_lines_agree() {
    let perls = oracle::profiled_interpreters();
    assert!(!perls.is_empty(), "no perl");
    let sandbox = Sandbox::new(TIMEOUT);
    let smuggled = "print(\"GUARD\",\"TAG\\x20mcode\\n\")";
    let m_code = format!("-Mstrict;BEGIN{{{smuggled}}}");
    let m_args = format!("-Mlib=);BEGIN{{{smuggled}}};#");
    let d_code = format!("-d:Peek;BEGIN{{{smuggled}}}");
    let d_args = format!("-d:Peek=}},do{{{smuggled}}});#");
    let f_code = format!("-F/(?{{{smuggled}}})/");
    let e_code = oracle::CODE_WORD;
    let w_e = format!("-w -e{e_code}");
    let dash_e = format!("- -e{e_code}");
    let lines: Vec<(Vec<&str>, &str)> = vec![
        (vec!["p"], "script"),
        (vec!["-e", e_code, "p"], "the -e program"),
        (vec!["-e", e_code, "-w", "p"], "the -e program"),
        (vec![&w_e, "p"], "the -e program"),
        (vec![&dash_e], "the -e program"),
        (vec!["-Ie", "p"], "script"),
        (vec!["-I", "-e", "p"], "script"),
        (vec!["-w e"], "stdin"),
        (vec!["- "], "stdin"),
        (vec![""], "stdin"),
        (vec!["-w", ""], "stdin"),
        // The operand after `--`, even `-e` (no file is called so).
        (vec!["--", "-e"], "missing script"),
        (vec!["-w-", "-e"], "missing script"),
        (vec!["-- x", "-e"], "missing script"),
        (vec!["-w --", "p"], "script"),
        (vec!["-x", "p"], "script"),
        (vec!["-x.", "p"], "script"),
        (vec!["-0xe", "p"], "script"),
        (vec!["-CSD", "p"], "script"),
        (vec!["-Mlib=e", "p"], "script"),
        (vec!["/dev/fd/0"], "script reading stdin"),
        (vec!["/dev/fd/0/x"], "script reading stdin"),
        (vec!["/dev/stdin"], "script reading stdin"),
        (vec![&m_code, "p"], "script, code in a switch"),
        (vec!["-Mlib=x\\", &m_args, "p"], "script, code in a switch"),
        (
            vec!["-V:x\\", &m_args, "p"],
            "help, version or Config, code in a switch",
        ),
        (vec![&d_code, "p"], "script, code in a switch"),
        (vec![&d_args, "p"], "script, code in a switch"),
        (vec![&f_code, "p"], "script, code in a switch"),
        (vec!["-d", "p"], "script, debugger"),
        (vec!["-d"], "stdin, debugger"),
        (vec!["-d:Peek", "p"], "script"),
        (vec!["-d", "-d:Peek", "p"], "script"),
        (vec!["-V:osname", "p"], "help, version or Config"),
        (vec!["-v", "-e", e_code], "help, version or Config"),
        (vec!["-S", "p"], "error"),
        (vec!["-S", "./p"], "script"),
        (vec!["-e"], "error"),
    ];
    for perl in &perls {
        for (line, expected) in &lines {
            let words: Vec<Vec<u8>> = line.iter().map(|w| w.as_bytes().to_vec()).collect();
            match oracle::differ(&sandbox, perl, &words, 0) {
                Ok(ran) => assert_eq!(
                    kind(&ran),
                    *expected,
                    "{}: perl ran {ran}",
                    oracle::shell_words(&words)
                ),
                Err(story) => panic!("{story}"),
            }
        }
    }
}

/// Writes the fuzz target's seeds (`fuzz/seeds/argv_perl/`). Run by hand after changing
/// the generator: `cargo test -p guard-common --test perl_argv_differential -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/argv_perl");
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
