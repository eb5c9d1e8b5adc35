//! `cargo xtask bench`: guard's cost against no guard and against fapolicyd (issue #7).
//!
//! Everything runs on a private ext2 image the harness mounts under target/bench: a copy
//! of the Python standard library (signed by guard, trusted by fapolicyd), a source tree
//! for the non-Python workload, 100 k tiny modules for the memory test. The host's own
//! files are never signed or trusted, and only the bench filesystem is marked, by guard
//! (`--watch`) and by fapolicyd (`watch_fs` = a type only the bench uses).

mod contender;
mod host;
mod instructions;
mod report;
mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use contender::{Kind, Running};
use report::{Bpf, Latency, Memory, Signing};
use util::{Ran, check_interrupted, drop_caches, must, run_timed};

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Options {
    /// Rounds: each round runs every contender once, in the same order (A/B/C/D, A/B/C/D...).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Timed runs of each warm workload per contender and round (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Pairs of P1 and P1h runs per contender and round (after one warm-up of each): the
    /// hook's cost is read from the ratio within each pair, and telling 2 % from the runs'
    /// own spread on a busy host takes many pairs.
    #[arg(long, default_value_t = 20)]
    hook_pairs: usize,
    /// Stdlib modules the import storm imports.
    #[arg(long, default_value_t = 150)]
    modules: usize,
    /// Signed files for the memory test (P6).
    #[arg(long, default_value_t = 100_000)]
    p6_files: usize,
    /// Leave fapolicyd out (its columns then say "not measured: skipped by --no-fapolicyd").
    #[arg(long)]
    no_fapolicyd: bool,
    /// Also measure the BPF mode in the VM on both kernels, side by side (release build,
    /// TCG): the same workloads under `guard run --backend auto` (BPF LSM + fanotify)
    /// against no guard (tests/vm/bench_workloads.sh), and the LSM layer's own cost
    /// (tests/vm/bench_lsm_overhead.sh); their ratios go into the report. Runs after the
    /// host's measurements. Not part of `cargo xtask test`.
    #[arg(long)]
    vm: bool,
}

/// About how long `--vm` takes (both kernels side by side, TCG on 2 host cores: measured
/// 2 min for bench_lsm_overhead.sh and 2.5 min for two rounds of bench_workloads.sh).
const VM_MINUTES: u32 = 8;

/// The default expected makers of dynamic code (#20), as (file under the standard
/// library, function).
const MAKERS: [(&str, &str); 4] = [
    ("collections/__init__.py", "namedtuple"),
    ("dataclasses.py", "_create_fn"),
    ("types.py", "coroutine"),
    ("ast.py", "parse"),
];

/// The unprivileged identity every workload runs as: root with a trusted executable is
/// allowed everything by fapolicyd's 20-dracut rule, which would measure nothing.
const NOBODY: u32 = 65534;

/// Where everything is.
pub(crate) struct Layout {
    pub work: PathBuf,
    pub root: PathBuf,
    pub guard: PathBuf,
    pub policy: PathBuf,
    key: PathBuf,
    /// PYTHONHOME: `lib/python3.11` is a copy of the host's stdlib.
    prefix: PathBuf,
    stdlib: PathBuf,
    /// `lib/python3.11`: a copy of the same stdlib, never signed (P4u).
    unsigned: PathBuf,
    app: PathBuf,
    /// An untrusted copy of /bin/true: fapolicyd's readiness probe.
    pub probe_exec: PathBuf,
}

pub(crate) fn run(workspace: &Path, options: &Options) -> Result<()> {
    if !nix_is_root() {
        bail!("cargo xtask bench needs root (mounts, fanotify, fapolicyd, drop_caches)");
    }
    util::catch_interrupts();
    let started = Instant::now();
    let work = workspace.join("target/bench");
    std::fs::create_dir_all(&work)?;
    // guard appends to its audit file: start each bench with an empty one (P6 alone
    // writes 100 k records).
    let _ = std::fs::remove_file(work.join("guard-audit.jsonl"));

    eprintln!("bench: building guard (release)");
    must(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace)
            .args(["build", "--release", "--package", "guard"]),
        Duration::from_secs(3600),
    )?;
    let guard = workspace.join("target/release/guard");

    // Order matters for Drop: the bench filesystem is unmounted after fapolicyd's state
    // is restored (fields drop last-declared first... locals drop in reverse order).
    let fapolicyd_host = if options.no_fapolicyd {
        None
    } else {
        Some(host::FapolicydHost::prepare(&work)?)
    };
    let fs = host::BenchFs::mount(&work)?;
    let machine = host::machine();

    let layout = setup(&work, &fs.root, &guard, options)?;
    let mut fapolicyd_unavailable = options
        .no_fapolicyd
        .then(|| "skipped by --no-fapolicyd".to_string());
    let mut fapolicyd_rules = String::new();
    if fapolicyd_host.is_some() {
        eprintln!("bench: trusting the bench files in fapolicyd (fapolicyd-cli --file add)");
        // The app's scripts one by one: the planted module next to them must stay untrusted.
        let trusted = [
            layout.prefix.clone(),
            layout.unsigned.clone(),
            layout.app.join("storm.py"),
            layout.app.join("planted_main.py"),
        ];
        let trusted: Vec<&Path> = trusted.iter().map(PathBuf::as_path).collect();
        match contender::configure_fapolicyd(&trusted) {
            Ok(rules) => fapolicyd_rules = rules,
            Err(e) => fapolicyd_unavailable = Some(format!("{e:#}")),
        }
    }

    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !k.is_fapolicyd() || fapolicyd_unavailable.is_none())
        .collect();
    let mut samples: BTreeMap<(&str, Kind), Vec<f64>> = BTreeMap::new();
    let mut latency_rounds = Vec::new();
    let mut checks = Vec::new();
    for round in 1..=options.rounds {
        for &kind in &kinds {
            eprintln!(
                "bench: round {round}/{}: {} ({:.0} s elapsed)",
                options.rounds,
                kind.label(),
                started.elapsed().as_secs_f64()
            );
            let outcome = one_round(&layout, kind, options, &mut samples)?;
            if let Some(latency) = outcome.latency {
                latency_rounds.push(latency);
            }
            if round == 1 {
                checks.push(outcome.check);
            }
        }
    }

    eprintln!("bench: P5 signing throughput");
    let signing = p5_signing(&layout, options)?;
    eprintln!(
        "bench: P6 agent memory with {} cached verdicts",
        options.p6_files
    );
    let memory = p6_memory(&layout, options)?;
    eprintln!("bench: P1, P1h and P1e in instructions executed (callgrind)");
    let storm = std::fs::read_to_string(layout.app.join("storm.py"))?;
    let instructions =
        instructions::measure(&work, &guard, &storm, &MAKERS).map_err(|e| format!("{e:#}"));

    let stdlib_files = layout.stdlib_files();
    let load_after = host::loadavg();
    drop(fs);
    drop(fapolicyd_host);

    let bpf = if options.vm {
        eprintln!(
            "bench: the BPF mode in the VM, both kernels side by side (about {VM_MINUTES} min)"
        );
        match crate::vm::vm_bench() {
            Ok(runs) => Bpf::Ran(runs.iter().map(vm_kernel).collect()),
            Err(e) => Bpf::NotRun(format!("--vm failed: {e:#}")),
        }
    } else {
        Bpf::NotRun(format!(
            "pass --vm (BPF LSM programs cannot load on this host; the VM runs them under \
             TCG, about {VM_MINUTES} min)"
        ))
    };

    let results = report::build(report::Inputs {
        machine,
        options: format!(
            "{} rounds, {} timed runs per warm workload per round ({} P1/P1h pairs), {} \
             modules, {} P6 files",
            options.rounds, options.runs, options.hook_pairs, options.modules, options.p6_files
        ),
        samples: &samples,
        fapolicyd_unavailable: fapolicyd_unavailable.as_deref(),
        instructions,
        latency_rounds: &latency_rounds,
        signing,
        memory,
        bpf,
        checks,
        fapolicyd_rules,
        stdlib_files,
        load_after,
        elapsed_s: started.elapsed().as_secs_f64(),
    });
    let markdown = report::write(&work, &results)?;
    println!("{markdown}");
    eprintln!(
        "bench: done in {:.0} s: {}, {}, {}",
        started.elapsed().as_secs_f64(),
        work.join("report.md").display(),
        work.join("results.json").display(),
        work.join("ratios.svg").display()
    );
    Ok(())
}

/// One kernel's samples and notes from tests/vm/bench_workloads.sh's lines
/// (`GUARD-BENCH-SAMPLE ID none|guard MS`, `GUARD-BENCH-NOTE TEXT`) and
/// bench_lsm_overhead.sh's summary (`LSM-OVERHEAD ...`).
fn vm_kernel(run: &crate::vm::KernelRun) -> report::VmKernel {
    let mut k = report::VmKernel {
        release: run.release.clone(),
        failure: (!run.failures.is_empty()).then(|| run.failures.join("; ")),
        ..Default::default()
    };
    for line in &run.lines {
        if let Some(at) = line.find("GUARD-BENCH-SAMPLE ") {
            let mut words = line[at..].split_whitespace().skip(1);
            if let (Some(id), Some(who), Some(Ok(ms))) = (
                words.next(),
                words.next(),
                words.next().map(str::parse::<f64>),
            ) {
                k.samples
                    .entry(id.to_string())
                    .or_default()
                    .entry(who.to_string())
                    .or_default()
                    .push(ms);
            }
        } else if let Some(at) = line.find("GUARD-BENCH-NOTE ") {
            k.notes
                .push(line[at + "GUARD-BENCH-NOTE ".len()..].trim().to_string());
        } else if let Some(at) = line.find("LSM-OVERHEAD ") {
            k.notes.push(format!(
                "bench_lsm_overhead.sh: {}",
                line[at + "LSM-OVERHEAD ".len()..].trim()
            ));
        }
    }
    k
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Layout {
    fn stdlib_files(&self) -> usize {
        util::count_files(&self.stdlib)
    }

    /// `python3 -S SCRIPT` as nobody, importing only from the bench copy of the stdlib.
    fn python(&self, script: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .args(["--", "/usr/bin/python3", "-S", script])
            .current_dir(&self.app)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .env("PYTHONHOME", &self.prefix);
        cmd
    }
}

/// Modules never imported by the storm: side effects (browsers, GUIs, printing) or
/// packages that only warn.
const SKIP_MODULES: &[&str] = &[
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "test",
    "lib2to3",
    "ensurepip",
    "pydoc_data",
    "msilib",
    "nntplib",
    "telnetlib",
];

fn setup(work: &Path, root: &Path, guard: &Path, options: &Options) -> Result<Layout> {
    let layout = Layout {
        work: work.to_path_buf(),
        root: root.to_path_buf(),
        guard: guard.to_path_buf(),
        policy: work.join("policy.toml"),
        key: work.join("keys/guard.key"),
        prefix: root.join("prefix"),
        stdlib: root.join("prefix/lib/python3.11"),
        unsigned: root.join("unsigned"),
        app: root.join("app"),
        probe_exec: root.join("probe/untrusted-true"),
    };
    eprintln!("bench: copying /usr/lib/python3.11 to the bench filesystem");
    std::fs::create_dir_all(layout.prefix.join("lib"))?;
    // -L: symlinks into the host's tree (_sysconfigdata, sitecustomize) become copies, so
    // nothing the workload imports lives outside the bench filesystem.
    must(
        Command::new("cp")
            .args(["-aL", "/usr/lib/python3.11"])
            .arg(layout.prefix.join("lib")),
        Duration::from_secs(300),
    )?;
    std::fs::create_dir_all(&layout.app)?;
    std::fs::create_dir_all(layout.probe_exec.parent().unwrap_or(root))?;
    std::fs::copy("/bin/true", &layout.probe_exec)?;

    // Which modules import cleanly here (unguarded), to build a storm that cannot fail.
    let probe = format!(
        "import sys, importlib, io, contextlib\n\
         skip = set({SKIP_MODULES:?})\n\
         ok = []\n\
         for name in sorted(sys.stdlib_module_names):\n\
         \x20   if name.startswith('_') or name in skip:\n\
         \x20       continue\n\
         \x20   try:\n\
         \x20       with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n\
         \x20           importlib.import_module(name)\n\
         \x20       ok.append(name)\n\
         \x20   except BaseException:\n\
         \x20       pass\n\
         print(' '.join(ok))\n"
    );
    std::fs::write(layout.app.join("probe_modules.py"), probe)?;
    let ran = must(
        &mut layout.python("probe_modules.py"),
        Duration::from_secs(120),
    )?;
    let modules: Vec<String> = ran
        .stdout()
        .split_whitespace()
        .take(options.modules)
        .map(str::to_string)
        .collect();
    if modules.len() < options.modules {
        bail!(
            "only {} stdlib modules import cleanly, {} wanted",
            modules.len(),
            options.modules
        );
    }
    let mut storm = String::from("# P1/P2: import storm over the signed stdlib copy\n");
    for module in &modules {
        storm.push_str(&format!("import {module}\n"));
    }
    storm.push_str("import sys\nprint(len(sys.modules))\n");
    std::fs::write(layout.app.join("storm.py"), &storm)?;
    // P1h: the same storm with guard's audit hook (#20) installed first, as its `.pth` file
    // does at start-up (the storm runs without site, so the hook is imported by name),
    // talking to the bench agent's hook socket beside its status socket.
    must(
        Command::new(guard)
            .args(["python-hook", "install", "--site"])
            .arg(&layout.app)
            .arg("--socket")
            .arg(layout.work.join("python-hook.sock"))
            // Without guard no agent answers: the hook then stays out of the way.
            .args(["--when-unreachable", "allow"]),
        Duration::from_secs(60),
    )?;
    // Byte-compiled as a distribution compiles what it installs (the runs cannot write a
    // cache there): otherwise every run would compile the hook's source first.
    must(
        Command::new("/usr/bin/python3")
            .args(["-m", "py_compile"])
            .arg(layout.app.join("guard_audit_hook.py")),
        Duration::from_secs(60),
    )?;
    std::fs::write(
        layout.app.join("storm_hooked.py"),
        format!("import guard_audit_hook\n{storm}"),
    )?;
    // P1e: the same storm under an audit hook that does nothing: what the interpreter
    // itself pays once any hook is installed (it builds every event's arguments; for
    // `marshal.loads`, a copy of each module's bytecode), the floor under P1h.
    std::fs::write(
        layout.app.join("storm_empty_hook.py"),
        format!("import sys\nsys.addaudithook(lambda event, args: None)\n{storm}"),
    )?;
    std::fs::write(
        layout.app.join("planted_main.py"),
        "import planted\nprint('planted module ran')\n",
    )?;

    eprintln!("bench: keys and signatures (guard keygen, guard sign -r)");
    let keys = work.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    must(
        Command::new(guard)
            .args(["keygen", "--type", "p256", "--out"])
            .arg(&keys),
        Duration::from_secs(60),
    )?;
    must(
        Command::new(guard)
            .args(["sign", "-r", "--key"])
            .arg(&layout.key)
            .arg(&layout.prefix)
            .arg(&layout.app),
        Duration::from_secs(600),
    )?;
    // P4u's tree: the same stdlib, copied after signing and never signed (no xattrs copied:
    // `cp -a` would carry security.ima over from a signed source).
    std::fs::create_dir_all(layout.unsigned.join("lib"))?;
    must(
        Command::new("cp")
            .args([
                "-RL",
                "--preserve=mode,ownership,timestamps",
                "/usr/lib/python3.11",
            ])
            .arg(layout.unsigned.join("lib")),
        Duration::from_secs(300),
    )?;
    // Planted after signing and outside every trust list: the enforcement check.
    // The shebang makes fapolicyd's file-type detection call it text/x-python.
    std::fs::write(
        layout.app.join("planted.py"),
        "#!/usr/bin/python3\nimport os\nprint('untrusted code ran')\n",
    )?;
    std::fs::write(
        &layout.policy,
        format!(
            "# cargo xtask bench: the default policy's python profile, the bench key, the\n\
             # bench filesystem (ext2 has ext4's magic), and the interpreter by its real path.\n\
             mode = \"enforce\"\n\n\
             [trust]\n\
             keys = [{:?}]\n\
             owners = [\"root\"]\n\
             filesystems = [\"ext4\", \"tmpfs\"]\n\n\
             [[interpreter]]\n\
             name = \"python\"\n\
             executables = [\"/usr/bin/python3*\"]\n\
             argv = \"python\"\n\
             code_patterns = [\"*.py\", \"*.pyc\", \"*.pyo\", \"*.pyw\", \"*.pth\", \"*.so\", \"*.so.*\", \"*.zip\", \"*.whl\", \"*.egg\", \"*.pyz\"]\n\
             sniff = [\"pyc\", \"zip\", \"elf\"]\n\
             main_script_is_code = true\n\
             inline_code = \"deny\"\n\
             stdin = \"deny\"\n\
             interactive = \"deny\"\n\
             deny_env = [\"PYTHONSTARTUP\", \"PYTHONINSPECT\", \"PYTHONPYCACHEPREFIX\"]\n\
             # The default expected makers of dynamic code (#20), where this stdlib lives:\n\
             # as a host whose Python is not under /usr/lib lists them.\n\
             dynamic_code_callers = [{makers}]\n\n\
             [audit]\n\
             log_allows = false\n",
            keys.join("guard.crt").display().to_string(),
            makers = MAKERS
                .iter()
                .map(|(file, function)| format!(
                    "{{ file = {:?}, function = {function:?} }}",
                    layout.stdlib.join(file).display().to_string()
                ))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    )?;
    must(
        Command::new(guard)
            .args(["policy", "check"])
            .arg(&layout.policy),
        Duration::from_secs(30),
    )?;
    // Sanity without any guard: the storm runs, the planted module runs (so refusing it
    // later means something).
    let ran = must(&mut layout.python("storm.py"), Duration::from_secs(60))?;
    eprintln!(
        "bench: storm imports {} modules ({} in sys.modules)",
        modules.len(),
        ran.stdout().trim()
    );
    must(
        &mut layout.python("planted_main.py"),
        Duration::from_secs(60),
    )
    .context("the planted module must run without a guard")?;
    Ok(layout)
}

struct RoundOutcome {
    latency: Option<Latency>,
    check: String,
}

fn timed_ok(ran: Ran, what: &str) -> Result<f64> {
    if !ran.output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            ran.output.status,
            ran.stderr()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(ran.elapsed.as_secs_f64() * 1000.0)
}

fn one_round(
    layout: &Layout,
    kind: Kind,
    options: &Options,
    samples: &mut BTreeMap<(&str, Kind), Vec<f64>>,
) -> Result<RoundOutcome> {
    let limit = Duration::from_secs(120);
    let running = Running::start(kind, layout)?;
    let tar = |tree: &Path| {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--", "tar", "-cf", "-", "-C"])
            .arg(tree)
            .arg("lib");
        cmd
    };

    // P2: a fresh daemon (caches empty) and an empty page cache.
    drop_caches()?;
    let cold = timed_ok(
        run_timed(&mut layout.python("storm.py"), limit, false)?,
        "cold import storm",
    )?;
    samples.entry(("P2", kind)).or_default().push(cold);

    // P1, P1h (the same storm with the audit hook) and P1e (with an empty hook), warm: one
    // untimed run of each first, then in threes, each in turn first, so the hook's cost is
    // read as the ratio within each three and the host's drift over a round cancels.
    for (script, what) in [
        ("storm.py", "warm-up"),
        ("storm_hooked.py", "warm-up with the hook"),
        ("storm_empty_hook.py", "warm-up with an empty hook"),
    ] {
        timed_ok(run_timed(&mut layout.python(script), limit, false)?, what)?;
    }
    // Each run's CPU time too (P1cpu, P1hcpu, P1ecpu): what the hook adds is work in the
    // interpreter, and CPU time does not count the waits a busy host adds to wall time.
    for run in 0..options.hook_pairs {
        let mut runs = [
            ("P1", "P1cpu", "storm.py", "warm import storm"),
            (
                "P1h",
                "P1hcpu",
                "storm_hooked.py",
                "warm import storm with the hook",
            ),
            (
                "P1e",
                "P1ecpu",
                "storm_empty_hook.py",
                "warm import storm with an empty hook",
            ),
        ];
        runs.rotate_left(run % 3);
        for (id, cpu_id, script, what) in runs {
            let ran = run_timed(&mut layout.python(script), limit, false)?;
            let cpu = ran.cpu.as_secs_f64() * 1000.0;
            let ms = timed_ok(ran, what)?;
            samples.entry((id, kind)).or_default().push(ms);
            samples.entry((cpu_id, kind)).or_default().push(cpu);
        }
    }

    // P4: tar of the tree, not an interpreter: the tax every process pays. P4u: the same
    // of the unsigned copy, which guard cannot leave to the kernel.
    for (id, tree) in [("P4", &layout.prefix), ("P4u", &layout.unsigned)] {
        timed_ok(run_timed(&mut tar(tree), limit, true)?, "tar warm-up")?;
        for _ in 0..options.runs {
            let ms = timed_ok(run_timed(&mut tar(tree), limit, true)?, "tar")?;
            samples.entry((id, kind)).or_default().push(ms);
        }
    }
    check_interrupted()?;

    let mut latency = None;
    let mut check = String::new();
    if kind == Kind::Guard {
        let status = running.guard_status(layout)?;
        let field = |name: &str| status[name].as_f64().unwrap_or(f64::NAN);
        if field("decisions") < 1.0 || field("denies") != 0.0 || field("errors") != 0.0 {
            bail!(
                "guard did not decide the signed workload cleanly (decisions {}, denies {}, \
                 errors {}): measuring it would be measuring the wrong thing",
                field("decisions"),
                field("denies"),
                field("errors")
            );
        }
        latency = Some(Latency {
            decisions: field("decisions"),
            events: field("events"),
            cache_hits: field("cache_hits"),
            cache_misses: field("cache_misses"),
            hit_p50_us: field("hit_p50_us"),
            hit_p99_us: field("hit_p99_us"),
            miss_p50_us: field("miss_p50_us"),
            miss_p99_us: field("miss_p99_us"),
            miss_max_us: field("miss_max_us"),
            all_p50_us: field("latency_p50_us"),
            all_p99_us: field("latency_p99_us"),
            all_max_us: field("latency_max_us"),
        });
        check = format!(
            "guard: {} code decisions, 0 denies on the signed workload; ",
            field("decisions")
        );
    }

    // The enforcement check: the planted, unsigned and untrusted module.
    let planted = run_timed(&mut layout.python("planted_main.py"), limit, false)?;
    let refused = !planted.output.status.success()
        && planted.stderr().contains("PermissionError")
        && !planted.stdout().contains("planted module ran");
    match kind {
        Kind::None if refused => bail!("the planted module was refused with no guard running"),
        Kind::None => check.push_str("no guard: the planted module runs"),
        _ if !refused => bail!(
            "{} did not refuse the planted unsigned module: it is not enforcing, its numbers \
             would be meaningless (exit {}, stderr: {})",
            kind.label(),
            planted.output.status,
            planted.stderr()
        ),
        _ => check.push_str(&format!(
            "{}: the planted module is refused ({})",
            kind.label(),
            planted.stderr().lines().last().unwrap_or_default().trim()
        )),
    }
    if kind == Kind::Guard {
        let status = running.guard_status(layout)?;
        if status["denies"].as_f64().unwrap_or(0.0) < 1.0 {
            bail!("guard refused the planted module but counted no deny");
        }
    }
    running.stop()?;
    Ok(RoundOutcome { latency, check })
}

/// Builds a fresh command for each timed run.
type MakeCommand<'a> = Box<dyn Fn() -> Command + 'a>;

fn p5_signing(layout: &Layout, options: &Options) -> Result<Signing> {
    let tree = layout.root.join("sigtree");
    let _ = std::fs::remove_dir_all(&tree);
    must(
        Command::new("cp")
            .args(["-aL"])
            .arg(&layout.stdlib)
            .arg(&tree),
        Duration::from_secs(300),
    )?;
    let files = util::count_files(&tree);
    let bytes: u64 = walk_bytes(&tree);
    let tools: [(&str, MakeCommand); 3] = [
        (
            "sha256sum",
            Box::new(|| {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg("find \"$1\" -type f -print0 | xargs -0 sha256sum > /dev/null")
                    .arg("sh")
                    .arg(&tree);
                cmd
            }),
        ),
        (
            "guard sign -r",
            Box::new(|| {
                let mut cmd = Command::new(&layout.guard);
                cmd.args(["sign", "-r", "--key"])
                    .arg(&layout.key)
                    .arg(&tree);
                cmd
            }),
        ),
        (
            "evmctl ima_sign -r",
            Box::new(|| {
                let mut cmd = Command::new("evmctl");
                cmd.args(["ima_sign", "-r", "--hashalgo", "sha256", "--key"])
                    .arg(&layout.key)
                    .arg(&tree);
                cmd
            }),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let rounds = options.rounds.clamp(1, 3);
    for round in 0..=rounds {
        for (i, (name, make)) in tools.iter().enumerate() {
            let ms = timed_ok(
                run_timed(&mut make(), Duration::from_secs(600), true)?,
                name,
            )?;
            // Round 0 warms the page cache.
            if round > 0 {
                samples[i].push(ms);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tree);
    Ok(Signing {
        files,
        bytes,
        tools: tools
            .iter()
            .zip(samples)
            .map(|((name, _), s)| (name.to_string(), s))
            .collect(),
    })
}

fn walk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += walk_bytes(&entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

fn p6_memory(layout: &Layout, options: &Options) -> Result<Memory> {
    let dir = layout.root.join("p6");
    let _ = std::fs::remove_dir_all(&dir);
    let per_dir = 1000;
    for i in 0..options.p6_files {
        let sub = dir.join(format!("d{:03}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&sub)?;
            check_interrupted()?;
        }
        std::fs::write(sub.join(format!("m{i:06}.py")), format!("X = {i}\n"))?;
    }
    std::fs::write(
        dir.join("open_all.py"),
        "import io, os, sys\n\
         n = 0\n\
         for sub in sorted(os.scandir(sys.argv[1]), key=lambda e: e.name):\n\
         \x20   if sub.is_dir():\n\
         \x20       for entry in os.scandir(sub.path):\n\
         \x20           io.open_code(entry.path).close()\n\
         \x20           n += 1\n\
         print(n)\n",
    )?;
    let sign = must(
        Command::new(&layout.guard)
            .args(["sign", "-r", "--key"])
            .arg(&layout.key)
            .arg(&dir),
        Duration::from_secs(1800),
    )?;
    let running = Running::start(Kind::Guard, layout)?;
    let pid = running.pid().context("agent pid")?;
    let idle_kib = util::vm_hwm_kib(pid)?;
    let mut cmd = layout.python(dir.join("open_all.py").to_str().context("path")?);
    cmd.arg(&dir);
    let ran = run_timed(&mut cmd, Duration::from_secs(1800), false)?;
    let open_ms = timed_ok(ran, "P6 opening every file")?;
    let status = running.guard_status(layout)?;
    let peak_kib = util::vm_hwm_kib(pid)?;
    let field = |name: &str| status[name].as_f64().unwrap_or(f64::NAN);
    if field("denies") != 0.0 || field("decisions") < options.p6_files as f64 {
        bail!(
            "P6: guard made {} decisions and {} denies for {} signed files",
            field("decisions"),
            field("denies"),
            options.p6_files
        );
    }
    let memory = Memory {
        files: options.p6_files,
        sign_s: sign.elapsed.as_secs_f64(),
        open_all_s: open_ms / 1000.0,
        cache_entries: field("cache_entries"),
        cache_misses: field("cache_misses"),
        idle_hwm_kib: idle_kib,
        peak_hwm_kib: peak_kib,
        miss_p50_us: field("miss_p50_us"),
        miss_p99_us: field("miss_p99_us"),
    };
    running.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_lines_become_samples_and_notes() {
        let run = crate::vm::KernelRun {
            release: "6.12.0-test".into(),
            lines: vec![
                "[    1.0] noise".into(),
                "GUARD-BENCH-SAMPLE P1 none 120.5".into(),
                "GUARD-BENCH-SAMPLE P1 guard 130.0".into(),
                "GUARD-BENCH-SAMPLE P1 guard garbage".into(),
                "GUARD-BENCH-NOTE storm: 150 modules".into(),
                "LSM-OVERHEAD 6.12.0-test: 20k opens".into(),
            ],
            failures: Vec::new(),
            passed: 2,
            failed: 0,
        };
        let k = vm_kernel(&run);
        assert_eq!(k.samples["P1"]["none"], vec![120.5]);
        assert_eq!(k.samples["P1"]["guard"], vec![130.0]);
        assert_eq!(k.notes.len(), 2);
        assert!(k.failure.is_none());
    }
}
