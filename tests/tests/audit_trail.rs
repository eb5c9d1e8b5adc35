//! The audit trail on a filesystem that fills up: every record is written or counted lost,
//! and `audit.disk_full` decides whether code still runs meanwhile. The real agent, the
//! trail on a small tmpfs the test fills.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guard_tests::*;

/// A policy for /usr/bin/python3 on tmpfs with `audit` as its `[audit]` table.
fn policy(dir: &Path, audit: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    write_python_policy(&path, "");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("policy");
    writeln!(file, "[audit]\n{audit}").expect("policy");
    path
}

/// Fills the filesystem holding `dir` to the last byte; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let block = vec![0u8; 4096];
    loop {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    // Byte by byte, the last partial page too.
    while file.write_all(&[0]).is_ok() {}
    filler
}

/// The records the agent handed its audit thread: each has one human line in its log.
fn records_logged(agent: &Agent) -> u64 {
    agent
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("guard::agent::audit] deny pid=")
                || l.contains("guard::agent::audit] allow pid=")
        })
        .count() as u64
}

/// Every record handed over is written, lost or dropped, exactly once.
fn assert_every_record_counted(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logged = records_logged(agent);
        let counted = agent.status_field("audit_written")
            + agent.status_field("audit_lost")
            + agent.status_field("audit_dropped");
        if logged == counted {
            assert_eq!(agent.status_field("audit_dropped"), 0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{logged} records logged, {counted} counted:\n{}\n{}",
            agent.status(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_error(agent: &Agent, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.status().contains("\"audit_error\": null") == present {
        assert!(
            Instant::now() < deadline,
            "audit_error never {}:\n{}",
            if present { "set" } else { "cleared" },
            agent.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs unsigned scripts `bad{first}.py`, `bad{first+1}.py`… (each refused, each a record)
/// until `lost` records could not be written: the file's last page had room for a few.
/// Returns the next script's number.
fn refuse_until_lost(agent: &Agent, app: &Path, first: usize, lost: u64) -> usize {
    let mut next = first;
    while agent.status_field("audit_lost") < lost {
        assert!(
            next < first + 40,
            "the trail never failed:\n{}",
            agent.status()
        );
        let out = python(app, &[&format!("bad{next}.py")]);
        assert!(!out.status.success(), "bad{next}.py ran");
        next += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    next
}

#[test]
fn a_full_disk_drops_and_counts_records_and_code_still_runs() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "print('main ran')\n");
    for i in 0..50 {
        fs.write(&format!("app/bad{i}.py"), "print('bad ran')\n");
    }
    let trail = Tmpfs::with_size("64k");
    let audit = trail.path().join("audit.jsonl");
    let config = tempfile::tempdir().expect("tempdir");
    let policy = policy(config.path(), "disk_full = \"drop\"");
    let agent = Agent::start_with_audit(fs.path(), &audit, &["--policy", policy.to_str().unwrap()]);
    let app = fs.path().join("app");

    assert!(!python(&app, &["bad0.py"]).status.success());
    agent.wait_for_status("audit_written", 1);

    let filler = fill(trail.path());
    let next = refuse_until_lost(&agent, &app, 1, 3);
    wait_for_error(&agent, true);
    assert!(
        agent.status_text().contains("NOT WRITABLE"),
        "{}",
        agent.status_text()
    );
    // "drop": signed code runs on while the trail is full.
    let out = python(&app, &["main.py"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    assert_every_record_counted(&agent);

    std::fs::remove_file(&filler).expect("remove filler");
    assert!(!python(&app, &[&format!("bad{next}.py")]).status.success());
    wait_for_error(&agent, false);
    assert_every_record_counted(&agent);
    let written = std::fs::read_to_string(&audit).expect("trail");
    assert!(written.contains(&format!("bad{next}.py")), "{written}");
    // Each record written once, whole: a batch cut short by the full disk was cut back.
    assert_eq!(
        written.lines().count() as u64,
        agent.status_field("audit_written")
    );
    for line in written.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "torn record: {line}"
        );
    }
}

#[test]
fn a_full_disk_refuses_code_when_the_policy_says_so() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "print('main ran')\n");
    fs.signed("app/other.py", "print('other ran')\n");
    fs.signed("app/late.py", "print('late ran')\n");
    for i in 0..40 {
        fs.write(&format!("app/bad{i}.py"), "print('bad ran')\n");
    }
    let trail = Tmpfs::with_size("64k");
    let audit = trail.path().join("audit.jsonl");
    let config = tempfile::tempdir().expect("tempdir");
    let policy = policy(config.path(), "disk_full = \"refuse\"");
    let agent = Agent::start_with_audit(fs.path(), &audit, &["--policy", policy.to_str().unwrap()]);
    let app = fs.path().join("app");

    let out = python(&app, &["main.py"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    let kept = agent.status_field("kernel_kept");
    let forgotten = agent.status_field("kernel_forgotten");

    let filler = fill(trail.path());
    refuse_until_lost(&agent, &app, 0, 1);
    wait_for_error(&agent, true);
    if kept > 0 {
        // main.py's opens were left to the kernel: asked again from now on.
        agent.wait_for_status("kernel_forgotten", forgotten + 1);
    }

    for script in ["other.py", "main.py"] {
        let out = python(&app, &[script]);
        assert!(
            !out.status.success(),
            "{script} ran while the trail could not record it:\n{}",
            agent.log_text()
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
    }
    assert!(
        agent.status_field("audit_refused") >= 2,
        "{}",
        agent.status()
    );
    assert!(
        agent
            .log_text()
            .contains("the audit trail cannot be written"),
        "{}",
        agent.log_text()
    );

    // Room again: the agent notices by itself and code runs, recorded.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_for_error(&agent, false);
    let out = python(&app, &["late.py"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    assert_every_record_counted(&agent);
    // Its allow (a verification, not a cache hit) is in the trail.
    let written = std::fs::read_to_string(&audit).expect("trail");
    assert!(written.contains("late.py\""), "{written}");
}
