//! Differential test of guard's Node.js command-line reader (`node_argv`, and the kernel's
//! `ArgvJudge` on it) against every node on this machine, and of its option table against
//! the table each node reports of itself.
//!
//! Any command line the two read differently is a way past guard. The generator and the
//! oracle are in `support/node_oracle.rs`.
//!
//! `GUARD_ARGV_SEED` picks another seed (decimal or 0x-hex), `GUARD_ARGV_CASES` another
//! number of command lines per interpreter, `GUARD_ARGV_NODE` other node executables
//! (`:`-separated; Debian's node 18 beside a NodeSource node 20, say, in a mount namespace).

#[path = "support/differential.rs"]
mod differential;
#[path = "support/node_oracle.rs"]
mod node_oracle;
#[path = "support/argv_oracle.rs"]
mod oracle;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guard_common::argv::Dialect;
use guard_common::exec_gate::{NoModules, Step, judge_argv};
use guard_common::node_argv::{self, Kind, OPTIONS};
use node_oracle::{Agreement, Ran, Sandbox};
use oracle::SplitMix;

const DEFAULT_SEED: u64 = 0x6e6f_6465_6172_6776;
/// Per run: node starts in tens of milliseconds; one that hangs is killed.
const TIMEOUT: Duration = Duration::from_secs(10);
const SHOWN: usize = 15;

fn nodes() -> Vec<std::path::PathBuf> {
    let nodes = node_oracle::node_interpreters();
    assert!(
        !nodes.is_empty(),
        "no node (ELF /usr/bin/node, /usr/bin/nodejs, /usr/local/bin/node): `cargo xtask setup` installs nodejs"
    );
    nodes
}

fn key(ran: &Ran, agreement: Agreement) -> String {
    let ran = match ran {
        Ran::Main(_) => "main module".to_string(),
        other => other.to_string(),
    };
    match agreement {
        Agreement::Same => ran,
        Agreement::Stricter => format!("{ran}, refused by guard"),
    }
}

fn run_all(
    sandbox: &Sandbox,
    node: &Path,
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
                    let words = node_oracle::generate(&mut SplitMix::for_case(seed, case as u64));
                    let outcome = match node_oracle::differ(sandbox, node, &words, slot) {
                        Ok((ran, agreement)) => {
                            if agreement == Agreement::Stricter
                                && std::env::var_os("GUARD_ARGV_SHOW_STRICTER").is_some()
                            {
                                eprintln!("stricter: {}", node_oracle::shell_words(&words));
                            }
                            key(&ran, agreement)
                        }
                        Err(story) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("case {case}: {story}"));
                            "DISAGREEMENT".to_string()
                        }
                    };
                    *outcomes.lock().unwrap().entry(outcome).or_insert(0) += 1;
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    (failures, outcomes.into_inner().unwrap())
}

#[test]
fn guard_reads_generated_command_lines_as_node_does() {
    let nodes = nodes();
    let seed = differential::seed(DEFAULT_SEED);
    let cases = differential::cases();
    eprintln!(
        "node argv differential: seed {seed:#x} (GUARD_ARGV_SEED), {cases} command lines (GUARD_ARGV_CASES) on each of {nodes:?}"
    );
    let sandbox = Sandbox::new(TIMEOUT);
    let mut failed = Vec::new();
    for node in &nodes {
        let started = Instant::now();
        let (failures, outcomes) = run_all(&sandbox, node, seed, cases);
        eprintln!(
            "node argv differential: {} ({}) — {cases} command lines in {:.1} s: {outcomes:?}",
            node.display(),
            node_oracle::version(node),
            started.elapsed().as_secs_f64()
        );
        failed.extend(failures);
    }
    if !failed.is_empty() {
        for story in failed.iter().take(SHOWN) {
            eprintln!("\n{story}");
        }
        panic!(
            "{} command lines are read differently by guard and node (seed {seed:#x}; {} shown above)",
            failed.len(),
            failed.len().min(SHOWN)
        );
    }
}

/// Command lines whose reading is easy to get wrong: each runs on every node whatever the
/// seed, with what it must have run.
#[test]
fn known_command_lines_agree() {
    let nodes = nodes();
    let sandbox = Sandbox::new(TIMEOUT);
    let code = node_oracle::CODE_WORD;
    let lines: &[(&[&str], &str)] = &[
        (&["-e", code], "code"),
        (&["--eval", code, "p"], "code"),
        (&["--eval=console.log(\"GUARDTAG code\")"], "code"),
        // `-p WORD` is `--print --eval WORD`: the operand is code.
        (&["-p", "p"], "code"),
        (&["--print=x", "p"], "code"),
        (&["--no-print", "p"], "code"),
        (&["-pe", code], "code"),
        // An empty word or one starting with `-` is no `<arg>`: `-p` only prints.
        (&["-p", ""], "code"),
        (&["-p", "-"], "code"),
        (&["-"], "code"),
        (&[""], "code"),
        (&["--", ""], "code"),
        (&[], "code"),
        (&["-i"], "code"),
        (&["-i", "p"], "main"),
        (&["-i", "--no-interactive", "p"], "main"),
        (&["-i", "-e", code], "code"),
        (&["-i", "-e", code, "p"], "main"),
        (&["--inspect=0", "p"], "code"),
        (&["--inspect-brk=0", "p"], "code"),
        (&["inspect", "p"], "code"),
        (&["--", "inspect"], "code"),
        (&["./inspect"], "main"),
        (&["--", "-e"], "main"),
        (&["--prof-process", "-e"], "nothing"),
        (&["--no-prof-process", "-e"], "main"),
        (&["--title", "t", "p"], "main"),
        (&["--title=t", "--", "-i"], "main"),
        (&["--input_type=module", "p"], "main"),
        (&["--expose-gc", "p"], "main"),
        (&["--stack-size=900", "p"], "main"),
        (&["-r", "./q", "p"], "main"),
        (&["-r", "./p", "p"], "main"),
        (&["--import", "./q", "p"], "main"),
        (&["--import", node_oracle_data(), "p"], "code"),
        (
            &[
                "--import",
                "DATA:text/javascript,console.log(\"GUARDTAG data\")",
                "p",
            ],
            "code",
        ),
        (
            &[
                "--import",
                " data:text/javascript,console.log(\"GUARDTAG data\")",
                "p",
            ],
            "code",
        ),
        (
            &[
                "--import",
                "da\tta:text/javascript,console.log(\"GUARDTAG data\")",
                "p",
            ],
            "code",
        ),
        (&["-r", node_oracle_data(), "p"], "nothing"),
        // Standard input as a module: refused by its spelling, or unread.
        (&["-r", "/dev/stdin", "p"], "code"),
        (&["--require=//dev/./stdin", "p"], "code"),
        (&["-r", "/proc/self/fd/0", "p"], "code"),
        (&["--import", "/dev/stdin", "p"], "code"),
        (&["--import=/%64ev/stdin", "p"], "code"),
        (&["--import", "/dev\\stdin", "p"], "code"),
        (&["--import", "file:///dev/stdin", "p"], "code"),
        (&["--snapshot-blob", ".", "-"], "nothing"),
        // A syntax check runs nothing.
        (&["-c", "p"], "nothing"),
        (&["-c"], "nothing"),
        (&["--version", "-i"], "nothing"),
        (&["-e=x", "p"], "nothing"),
        (&["-ep", "x"], "nothing"),
        (&["-r", "-i", "p"], "nothing"),
        (&["-e", "\\-e"], "code"),
        (&["--no-require", "x", "p"], "nothing"),
        // V8 takes the word after a flag with a value as that value, whatever it is: the
        // word node passed on is no option of node's.
        (&["--trace-turbo-path", "--frob", "p"], "main"),
        (&["--trace-turbo-path", "--frob=1", "p"], "main"),
    ];
    for node in &nodes {
        for (line, expected) in lines {
            let words: Vec<Vec<u8>> = line.iter().map(|w| w.as_bytes().to_vec()).collect();
            match node_oracle::differ(&sandbox, node, &words, 0) {
                Ok((ran, _)) => {
                    let kind = match ran {
                        Ran::Nothing(_) => "nothing",
                        Ran::TestRunner => "test runner",
                        Ran::Code(_) => "code",
                        Ran::Main(_) => "main",
                    };
                    assert_eq!(
                        kind,
                        *expected,
                        "{}: node {} ran {ran}",
                        node_oracle::shell_words(&words),
                        node_oracle::version(node)
                    );
                }
                Err(story) => panic!("{story}"),
            }
        }
    }
    // Silent runs tell nothing to the oracle: guard refuses them all the same.
    for line in [&["-e", ""][..], &["--eval="], &["-pe", ""]] {
        let step = judge_argv(
            Dialect::Node,
            node_oracle::ALL_DENIED,
            &NoModules,
            line.iter().map(|w| w.as_bytes()),
        );
        assert!(matches!(step, Step::Refuse(_)), "{line:?}: {step:?}");
    }
}

fn node_oracle_data() -> &'static str {
    "data:text/javascript,console.log(\"GUARDTAG data\")"
}

/// The options a node reports of itself (`internalBinding('options')`, reached with
/// `--expose-internals`): name, type (`kNoOp` 0, `kV8Option` 1, `kBoolean` 2, numbers,
/// strings, host:port and lists above), and the aliases with their expansions.
struct Table {
    options: BTreeMap<String, u32>,
    aliases: BTreeMap<String, Vec<String>>,
}

const DUMP: &str = r#"
const { internalBinding } = require('internal/test/binding');
const binding = internalBinding('options');
const info = (binding.getCLIOptionsInfo || binding.getCLIOptions)();
const lines = [];
for (const [name, option] of info.options) lines.push(`option\t${name}\t${option.type}`);
for (const [name, expansion] of info.aliases) lines.push(`alias\t${name}\t${expansion.join('\t')}`);
process.stdout.write(lines.join('\n') + '\n');
"#;

fn table(node: &Path) -> Table {
    let out = Command::new(node)
        .args(["--expose-internals", "--no-warnings", "-e", DUMP])
        .env_clear()
        .output()
        .expect("cannot start node");
    assert!(
        out.status.success(),
        "{} cannot list its options: {}",
        node.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut table = Table {
        options: BTreeMap::new(),
        aliases: BTreeMap::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["option", name, kind] => {
                table
                    .options
                    .insert(name.to_string(), kind.parse().expect("a type number"));
            }
            ["alias", name, expansion @ ..] => {
                table.aliases.insert(
                    name.to_string(),
                    expansion.iter().map(|s| s.to_string()).collect(),
                );
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    table
}

/// How guard reads a name: as taking the next word, or as one word.
fn takes_next_word(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Value
            | Kind::Eval
            | Kind::PrintEval
            | Kind::Specifier
            | Kind::Require
            | Kind::SnapshotBlob
            | Kind::Title
    )
}

/// Kinds that never take the next word as a value to node and yet refuse it unread, or
/// read it only with `=`: safe whether or not a node version takes a value there.
fn read_only_attached(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::ValueInSomeVersions | Kind::EnvFile | Kind::CodeFile
    )
}

/// Names whose meaning guard judges: each must be read as that kind wherever a node has it.
const MEANINGS: &[(&str, Kind)] = &[
    ("--eval", Kind::Eval),
    ("--print", Kind::Print),
    ("--interactive", Kind::Interactive),
    ("--inspect", Kind::Inspector),
    ("--inspect-brk", Kind::Inspector),
    ("--inspect-brk-node", Kind::Inspector),
    ("--inspect-wait", Kind::Inspector),
    ("--debug", Kind::Inspector),
    ("--debug-brk", Kind::Inspector),
    ("--check", Kind::Check),
    ("--test", Kind::Test),
    ("--help", Kind::NoMain),
    ("--version", Kind::NoMain),
    ("--v8-options", Kind::NoMain),
    ("--completion-bash", Kind::NoMain),
    ("--prof-process", Kind::EndOfOptions),
    ("--import", Kind::Specifier),
    ("--experimental-loader", Kind::Specifier),
    ("--test-reporter", Kind::Specifier),
    ("--require", Kind::Require),
    ("--env-file", Kind::EnvFile),
    ("--env-file-if-exists", Kind::EnvFile),
    ("--snapshot-blob", Kind::SnapshotBlob),
    ("--build-snapshot", Kind::BuildSnapshot),
    ("--build-snapshot-config", Kind::CodeFile),
    ("--experimental-sea-config", Kind::CodeFile),
];

/// guard's table against each node's own: every option with a value is read as taking one
/// (or only with `=`); every other one as one word; every alias as what it expands to; the
/// names guard judges as what they do; and every name guard holds that this node does not
/// know is read as one word or only with `=` (node hands an unknown word to V8, which may
/// take it as the value of the flag before it: `--trace-turbo-path --disable-warning X app`
/// runs `X` on node 18).
#[test]
fn option_table_matches_each_node() {
    for node in nodes() {
        let version = node_oracle::version(&node);
        let table = table(&node);
        assert!(
            table.options.len() > 100,
            "{version}: {} options",
            table.options.len()
        );
        let guard = |name: &str| node_argv::option_word(name.as_bytes()).kind;
        let mut wrong = Vec::new();
        for (name, kind) in &table.options {
            if name.starts_with('[') {
                continue;
            }
            let value = *kind >= 3;
            let read = guard(name);
            let ok = if value {
                takes_next_word(read) || read_only_attached(read)
            } else {
                !takes_next_word(read)
            };
            if !ok {
                wrong.push(format!("{name}: node type {kind}, guard reads {read:?}"));
            }
        }
        for (name, expansion) in &table.aliases {
            let target = &expansion[0];
            let read = if let Some(bare) = name.strip_suffix('=') {
                // `--inspect=H`: the value is attached, the option the rest expands to.
                guard(bare)
            } else if let Some(bare) = name.strip_suffix(" <arg>") {
                assert_eq!(guard(bare), Kind::Print, "{version}: {name}");
                continue;
            } else {
                guard(name)
            };
            let ok = match (name.as_str(), expansion.as_slice()) {
                ("-pe", _) => read == Kind::PrintEval,
                (_, [_, end]) if end == "--" => read == Kind::EndOfOptions,
                // `--trace-events-enabled`: the value is in the expansion.
                (_, [_, value]) if !value.starts_with('-') => !takes_next_word(read),
                _ if name.ends_with('=') => {
                    read == guard(expansion.last().unwrap()) && !takes_next_word(read)
                }
                _ => {
                    let target_read = guard(target);
                    read == target_read
                        || (table.options.get(target).is_some_and(|t| *t >= 3)
                            && takes_next_word(read)
                            && takes_next_word(target_read))
                }
            };
            if !ok {
                wrong.push(format!(
                    "alias {name} -> {expansion:?}: guard reads {read:?}, {target} as {:?}",
                    guard(target)
                ));
            }
        }
        for (name, meaning) in MEANINGS {
            let known = table.options.contains_key(*name) || table.aliases.contains_key(*name);
            if known && guard(name) != *meaning {
                wrong.push(format!(
                    "{name}: guard reads {:?}, not {meaning:?}",
                    guard(name)
                ));
            }
        }
        // Every name node has that starts like one guard judges is one guard knows.
        for name in table.options.keys().chain(table.aliases.keys()) {
            let judged = [
                "--inspect",
                "--env-file",
                "--eval",
                "--print",
                "--snapshot",
                "--build-snapshot",
                "--experimental-loader",
                "--loader",
                "--import",
                "--test-reporter",
                "--interactive",
            ];
            if judged.iter().any(|p| name.starts_with(p))
                && !name.ends_with('=')
                && !name.ends_with(" <arg>")
                && guard(name) == Kind::Word
            {
                wrong.push(format!("{name}: unknown to guard's table"));
            }
        }
        let known: BTreeSet<&str> = table
            .options
            .keys()
            .chain(table.aliases.keys())
            .map(|s| s.as_str())
            .collect();
        for (name, kind) in OPTIONS {
            if !known.contains(name) && takes_next_word(*kind) {
                wrong.push(format!(
                    "{name}: {version} has no such option, guard reads it as {kind:?}"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} ({version}): guard's option table differs:\n{}",
            node.display(),
            wrong.join("\n")
        );
        eprintln!(
            "option table: {} ({version}): {} options, {} aliases agree",
            node.display(),
            table.options.len(),
            table.aliases.len()
        );
    }
}

/// Writes the fuzz target's seeds (`fuzz/seeds/argv_node/`): the choices of generated
/// command lines, which the target's byte source replays. Run by hand after changing the
/// generator: `cargo test -p guard-common --test argv_node_differential -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/argv_node");
    std::fs::create_dir_all(&dir).unwrap();
    let mut kept = 0;
    let mut case = 0;
    while kept < 24 {
        let mut recorder = oracle::Recorder {
            inner: SplitMix::for_case(DEFAULT_SEED, case),
            bytes: Vec::new(),
        };
        let words = node_oracle::generate(&mut recorder);
        case += 1;
        // Short lines: the fuzzer grows them.
        if words.is_empty() || words.len() > 6 {
            continue;
        }
        let replayed = node_oracle::generate(&mut oracle::Bytes::new(&recorder.bytes));
        assert_eq!(
            replayed, words,
            "the byte source replays the recorded choices"
        );
        std::fs::write(dir.join(kept.to_string()), &recorder.bytes).unwrap();
        eprintln!("{kept}: {}", node_oracle::shell_words(&words));
        kept += 1;
    }
}
