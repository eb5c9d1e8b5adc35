//! Load: 32 interpreters importing signed and unsigned code against the real agent while
//! files are rewritten, re-signed and deleted and the policy is reloaded every 2 s.
//!
//! `GUARD_STRESS_SECONDS` sets the length (`cargo xtask stress` runs 60 s; the test suite
//! a short run). Expectations per file class:
//! - stable signed modules: every import succeeds;
//! - unsigned files (modules and scripts): never run, every time;
//! - churning files: rewritten in place only with harmless content (signed or not), and
//!   replaced by rename with an unsigned payload that must never run; a run may see either
//!   a refused or an accepted harmless version, never the payload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guard_tests::*;
use nix::sys::signal::Signal;

const RUNNERS: usize = 32;

/// The tests here measure the agent under load: one at a time, or each would measure the
/// other's load too.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
const STABLE: usize = 8;
const CHURN: usize = 4;

fn seconds() -> u64 {
    std::env::var("GUARD_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

fn vm_rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `content` next to `path` and renames it over `path`, so a reader that already
/// has the file open keeps the bytes it was allowed.
fn replace(path: &Path, content: &str, signed: bool) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    set_mode(&tmp, 0o644);
    if signed {
        sign(&tmp);
    }
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Default)]
struct Tally {
    runs: AtomicU64,
    main_ok: AtomicU64,
    unsigned_refused: AtomicU64,
    churn_imported: AtomicU64,
    churn_refused: AtomicU64,
    max_trivial_ms: AtomicU64,
}

#[test]
fn thirty_two_interpreters_under_churn_and_reloads() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let duration = Duration::from_secs(seconds());
    let fs = Tmpfs::new();
    let app = fs.path().join("app");
    let out_dir = fs.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    set_mode(&out_dir, 0o1777);
    let ran = out_dir.join("unsigned-ran");

    for i in 0..STABLE {
        let path = fs.write(&format!("app/s{i}.py"), format!("V = {i}\n"));
        sign(&path);
    }
    for i in 0..CHURN {
        let path = fs.write(&format!("app/c{i}.py"), "V = 'first'\n");
        sign(&path);
    }
    fs.write("app/u0.py", payload(&ran));
    fs.write("app/unsigned_main.py", payload(&ran));
    let imports: String = (0..STABLE).map(|i| format!("import s{i}\n")).collect();
    let churn: String = (0..CHURN)
        .map(|i| {
            format!(
                "try:\n    import c{i}\n    print('churn-imported')\nexcept Exception:\n    \
                 print('churn-refused')\n"
            )
        })
        .collect();
    let main = format!(
        "{imports}{churn}try:\n    import u0\n    print('UNSIGNED-IMPORTED')\nexcept \
         PermissionError:\n    print('unsigned-refused')\nprint('main-done')\n"
    );
    sign(&fs.write("app/main.py", main));
    sign(&fs.write("app/trivial.py", "pass\n"));

    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    let policy_text = |log_allows: bool| {
        format!(
            "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n[[interpreter]]\n\
             name = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
             code_patterns = [\"*.py\"]\n[audit]\nlog_allows = {log_allows}\n"
        )
    };
    std::fs::write(&policy, policy_text(false)).unwrap();
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let pid = agent.pid();
    let rss_start = vm_rss_kb(pid);

    let deadline = Instant::now() + duration;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut threads = Vec::new();

    for index in 0..RUNNERS {
        let app = app.clone();
        let tally = tally.clone();
        threads.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut round = index;
            while Instant::now() < deadline {
                round += 1;
                let started = Instant::now();
                let script = match round % 4 {
                    0 => "unsigned_main.py",
                    1 => "trivial.py",
                    _ => "main.py",
                };
                // Bounded: a run blocked for 30 s fails the test from here.
                let out = python(&app, &[script]);
                let elapsed = started.elapsed();
                tally.runs.fetch_add(1, Ordering::Relaxed);
                let stdout = text(&out.stdout);
                match script {
                    "unsigned_main.py" => {
                        if out.status.success() {
                            failures.push(format!("unsigned main ran: {stdout}"));
                        } else {
                            tally.unsigned_refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    "trivial.py" => {
                        if !out.status.success() {
                            failures.push(format!("trivial refused: {}", text(&out.stderr)));
                        }
                        tally.max_trivial_ms.fetch_max(
                            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                    }
                    _ => {
                        if !out.status.success() || !stdout.contains("main-done") {
                            failures.push(format!(
                                "signed main failed: {stdout} {}",
                                text(&out.stderr)
                            ));
                        }
                        if stdout.contains("UNSIGNED-IMPORTED") {
                            failures.push("unsigned module imported".into());
                        } else {
                            tally.unsigned_refused.fetch_add(1, Ordering::Relaxed);
                        }
                        tally.main_ok.fetch_add(1, Ordering::Relaxed);
                        let imported = stdout.matches("churn-imported").count() as u64;
                        let refused = stdout.matches("churn-refused").count() as u64;
                        tally.churn_imported.fetch_add(imported, Ordering::Relaxed);
                        tally.churn_refused.fetch_add(refused, Ordering::Relaxed);
                    }
                }
            }
            failures
        }));
    }

    // Churn: harmless in-place rewrites (sometimes re-signed), unsigned payloads by
    // rename, deletions.
    let churner = {
        let app = app.clone();
        let stop = stop.clone();
        let ran = ran.clone();
        std::thread::spawn(move || {
            let mut step = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path: PathBuf = app.join(format!("c{}.py", step % CHURN as u64));
                match step % 5 {
                    0 => replace(&path, &payload(&ran), false),
                    1 => {
                        std::fs::write(&path, format!("V = {step}\n")).unwrap();
                        set_mode(&path, 0o644);
                    }
                    2 => {
                        std::fs::write(&path, format!("V = {step}\n")).unwrap();
                        set_mode(&path, 0o644);
                        sign(&path);
                    }
                    3 => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => replace(&path, &format!("V = {step}\n"), true),
                }
                step += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            step
        })
    };

    let reloader = {
        let stop = stop.clone();
        let policy = policy.clone();
        std::thread::spawn(move || {
            let mut reloads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(2));
                std::fs::write(&policy, policy_text(reloads.is_multiple_of(2))).unwrap();
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP);
                reloads += 1;
            }
            reloads
        })
    };

    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kb(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };

    let mut failures = Vec::new();
    for thread in threads {
        failures.extend(thread.join().expect("runner thread"));
    }
    stop.store(true, Ordering::Relaxed);
    let churn_steps = churner.join().unwrap();
    let reloads_sent = reloader.join().unwrap();
    let peak_rss = sampler.join().unwrap();

    let status = agent.status();
    let field = |name: &str| agent.status_field(name);
    let summary = format!(
        "stress {} s: {} runs ({} signed mains, {} unsigned refusals, churn imported {} / \
         refused {}), {} churn steps, {} reloads sent; agent: {} decisions, {} denies, {} \
         errors, {} overflows, latency p99 {} us max {} us; slowest trivial run {} ms; RSS \
         start {} kB peak {} kB",
        duration.as_secs(),
        tally.runs.load(Ordering::Relaxed),
        tally.main_ok.load(Ordering::Relaxed),
        tally.unsigned_refused.load(Ordering::Relaxed),
        tally.churn_imported.load(Ordering::Relaxed),
        tally.churn_refused.load(Ordering::Relaxed),
        churn_steps,
        reloads_sent,
        field("decisions"),
        field("denies"),
        field("errors"),
        field("overflows"),
        field("latency_p99_us"),
        field("latency_max_us"),
        tally.max_trivial_ms.load(Ordering::Relaxed),
        rss_start,
        peak_rss,
    );
    eprintln!("{summary}");

    assert!(failures.is_empty(), "{summary}\n{failures:#?}");
    assert!(!ran.exists(), "an unsigned payload ran\n{summary}");
    assert_eq!(field("overflows"), 0, "{summary}\n{status}");
    assert_eq!(field("reload_failures"), 0, "{summary}");
    assert!(field("reloads") >= 1, "{summary}");
    assert!(
        field("latency_max_us") < 1_000_000,
        "an answer took more than 1 s\n{summary}"
    );
    // Bounded: the cache and queues have fixed capacities; growth past this is a leak.
    assert!(peak_rss < 256 * 1024, "agent RSS {peak_rss} kB\n{summary}");
    assert!(tally.main_ok.load(Ordering::Relaxed) > 0, "{summary}");
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Adversaries (issue 22): while a victim runs a signed program in a loop, one user's FUSE
/// daemon stalls every request of the agent's, another flips the bytes of a zip on his
/// `PYTHONPATH`, a third floods the agent with distinct files, all under a memory limit on
/// the agent. Reports decisions, wrong decisions, the longest answer, hangs and agent
/// restarts; wrong decisions, hangs and restarts must be 0.
#[test]
fn adversaries_cannot_stall_race_or_starve_the_agent() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let duration = Duration::from_secs(seconds());
    let fs = Tmpfs::new();
    let scratch = tempfile::tempdir().unwrap();
    let marker = fs.marker("adversary-ran");
    // The victim's program and module, signed.
    fs.signed("app/helper.py", "V = 'signed'\n");
    let victim = fs.signed("app/victim.py", "import helper\nprint('ok', helper.V)\n");
    let app = fs.path().join("app");
    // The racer's zip, his own, flipped in place.
    let home = fs.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    chown(&home, NOBODY, NOBODY);
    let (bytes, eocd) = prefixed_zip(scratch.path(), &payload(&marker));
    let lib = home.join("lib.dat");
    std::fs::write(&lib, &bytes).unwrap();
    chown(&lib, NOBODY, NOBODY);
    let importer = fs.signed(
        "app/importer.py",
        "try:\n    import evil\nexcept Exception:\n    pass\n",
    );
    // The flooder's files: code by name, unsigned, a fresh batch each round.
    let opener = fs.signed("app/opener.py", OPENER);
    let policy = policy_trusting(scratch.path(), &["tmpfs"]);
    // Small enough that even a short flood meets it (about 0.4 KiB a cache entry).
    let cgroup = MemoryCgroup::new(16 << 20);
    let wrapper = cgroup.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // Declared before the FUSE filesystem: dropped after its connection is aborted.
    let agent;
    let fuse = StallingFuse::mount_at(&fs.path().join("fuse"), &[]);
    agent = Agent::start_wrapped(
        &wrapper,
        fs.path(),
        &["--follow", "--policy", policy.to_str().unwrap()],
    );
    let pid = agent.pid();
    let deadline = Instant::now() + duration;

    // The staller: interpreters on his FUSE filesystem, each left waiting on the agent's
    // stalled reader (his own opens, which only he waits for).
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(
            python_in_fuse(fuse.path(), &["x.py"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    // The racer's flipper and runs.
    let flipper = Flipper::start(&lib, eocd);
    let hangs = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let bounded = |cmd: &mut std::process::Command, hangs: &AtomicU64| {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_timeout(child, Duration::from_secs(30));
        if out.is_none() {
            hangs.fetch_add(1, Ordering::Relaxed);
        }
        out
    };
    let racer = {
        let (app, lib, importer, hangs) =
            (app.clone(), lib.clone(), importer.clone(), hangs.clone());
        std::thread::spawn(move || {
            let entries = [lib.display().to_string(), format!("{}/pkg", lib.display())];
            let mut runs = 0usize;
            while Instant::now() < deadline {
                let mut cmd = python_as(NOBODY, &[], &app, &[importer.to_str().unwrap()]);
                cmd.env("PYTHONPATH", &entries[runs % 2]);
                bounded(&mut cmd, &hangs);
                runs += 1;
            }
            runs
        })
    };
    let flooder = {
        let (fs_path, opener, hangs, wrong) = (
            fs.path().to_path_buf(),
            opener.clone(),
            hangs.clone(),
            wrong.clone(),
        );
        std::thread::spawn(move || {
            let mut files = 0usize;
            let mut round = 0;
            while Instant::now() < deadline {
                let batch = fs_path.join(format!("flood{round}"));
                std::fs::create_dir_all(&batch).unwrap();
                for i in 0..5000 {
                    std::fs::write(batch.join(format!("m{i}.py")), b"").unwrap();
                }
                let mut cmd = python_as(
                    NOBODY,
                    &[],
                    &fs_path,
                    &[opener.to_str().unwrap(), batch.to_str().unwrap()],
                );
                if let Some(out) = bounded(&mut cmd, &hangs)
                    && text(&out.stdout).trim() != "refused 5000 opened 0"
                {
                    wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!("flood round {round}: {}", text(&out.stdout));
                }
                files += 5000;
                round += 1;
            }
            files
        })
    };
    // The victim.
    let mut victim_runs = 0u64;
    let mut slowest = Duration::ZERO;
    while Instant::now() < deadline {
        let started = Instant::now();
        let mut cmd = python_as(NOBODY, &[], &app, &[victim.to_str().unwrap()]);
        match bounded(&mut cmd, &hangs) {
            Some(out) if text(&out.stdout) == "ok signed\n" => {}
            Some(out) => {
                wrong.fetch_add(1, Ordering::Relaxed);
                eprintln!("victim refused: {}", text(&out.stderr));
            }
            None => {}
        }
        slowest = slowest.max(started.elapsed());
        victim_runs += 1;
    }
    let racer_runs = racer.join().unwrap();
    let flood_files = flooder.join().unwrap();
    let flips = flipper.stop();
    if marker.exists() {
        wrong.fetch_add(1, Ordering::Relaxed);
    }
    let mut still_stalled = 0;
    for child in stalled.iter_mut() {
        if child.try_wait().unwrap().is_none() {
            still_stalled += 1;
        }
    }
    let alive = i32::try_from(agent.status_field("pid")) == Ok(pid);
    let summary = format!(
        "adversaries {} s: victim {victim_runs} runs (slowest {slowest:?}), racer {racer_runs} \
         runs against {flips} flips, flood of {flood_files} files, {still_stalled} of 4 \
         interpreters stalled on their own FUSE daemon; agent: {} decisions, {} wrong \
         decisions, longest answer {} us, {} hangs, {} restarts, {} OOM kills, cache \
         capacity {} ({} evicted under pressure)",
        duration.as_secs(),
        agent.status_field("decisions"),
        wrong.load(Ordering::Relaxed),
        agent.status_field("latency_max_us"),
        hangs.load(Ordering::Relaxed),
        u64::from(!alive),
        cgroup.oom_kills(),
        agent.status_field("cache_capacity"),
        agent.status_field("cache_evictions"),
    );
    eprintln!("{summary}");
    for mut child in stalled {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(fuse);
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "{summary}");
    assert_eq!(hangs.load(Ordering::Relaxed), 0, "{summary}");
    assert!(alive, "{summary}");
    assert_eq!(cgroup.oom_kills(), 0, "{summary}");
    assert!(
        victim_runs > 0 && racer_runs > 0 && flood_files > 0,
        "{summary}"
    );
    assert_eq!(still_stalled, 4, "the FUSE daemon did not stall: {summary}");
    assert!(
        !agent.log_text().contains("panicked"),
        "{}",
        agent.log_text()
    );
}
