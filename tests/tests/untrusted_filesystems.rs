//! Code on filesystems of types the policy does not trust: the agent marks them too (they
//! used to be left unmarked, so their code ran unchecked) and the engine refuses code there
//! with `trusted-filesystem`, while data there stays readable.
//!
//! The policy trusts only tmpfs; the untrusted filesystem is an ext2 image on a loop device
//! (it holds signatures, so only its type can be the reason). The agent is scoped with
//! `--watch T --follow` to one test tmpfs T and what is mounted below it, so the host's own
//! filesystems are never marked.

use std::path::Path;

use guard_tests::*;

/// A trusted tmpfs (watched, followed) with an untrusted ext2 mounted at `untrusted` below it.
fn setup() -> (Tmpfs, Ext2, tempfile::TempDir) {
    let fs = Tmpfs::new();
    let ext2 = Ext2::mount_at(&fs.path().join("untrusted"));
    let policy_dir = tempfile::tempdir().expect("tempdir");
    policy_trusting(policy_dir.path(), &["tmpfs"]);
    (fs, ext2, policy_dir)
}

fn start(fs: &Tmpfs, policy_dir: &Path) -> Agent {
    let policy = policy_dir.join("policy.toml");
    Agent::start(
        fs.path(),
        &["--follow", "--policy", policy.to_str().expect("utf-8")],
    )
}

fn assert_refused_for_its_filesystem(agent: &Agent, name: &str) {
    let denies = agent.denies_for(name);
    assert!(
        !denies.is_empty(),
        "no deny recorded for {name}:\n{}",
        agent.log_text()
    );
    assert!(
        denies
            .iter()
            .all(|d| d.contains("\"rule\":\"trusted-filesystem\"")
                && d.contains("which the policy does not trust")),
        "{denies:?}"
    );
}

#[test]
fn signed_code_on_an_untrusted_filesystem_is_refused() {
    let (fs, ext2, policy_dir) = setup();
    let ran = fs.marker("untrusted-main-ran");
    ext2.signed("app/main.py", &payload(&ran));
    let imported = fs.marker("untrusted-module-ran");
    ext2.signed("lib/helper.py", &payload(&imported));
    fs.signed(
        "app/uses_helper.py",
        &format!(
            "import sys\nsys.path.insert(0, {:?})\nimport helper\n",
            ext2.path().join("lib").to_str().expect("utf-8")
        ),
    );
    let agent = start(&fs, policy_dir.path());
    assert_eq!(agent.status_field("untrusted_filesystems"), 1);

    // The signed script runs nowhere but on a trusted filesystem.
    let out = python(&ext2.path().join("app"), &["main.py"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(!ran.exists(), "signed code on an untrusted filesystem ran");
    assert_refused_for_its_filesystem(&agent, "main.py");

    // Nor is it imported from there by trusted code.
    let out = python(&fs.path().join("app"), &["uses_helper.py"]);
    assert!(
        !out.status.success(),
        "import succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        !imported.exists(),
        "a module on an untrusted filesystem ran"
    );
    assert_refused_for_its_filesystem(&agent, "helper.py");
    assert!(
        agent.log_text().contains("untrusted type"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn data_on_an_untrusted_filesystem_stays_readable_and_trusted_code_runs() {
    let (fs, ext2, policy_dir) = setup();
    ext2.write("data/table.csv", "a,b\n1,2\n");
    // A data file whose name is no code pattern: the agent sniffs it (and finds no code).
    ext2.write("data/blob", "just bytes\n");
    fs.signed(
        "app/reader.py",
        &format!(
            "print(open({:?}).read().strip())\nprint(open({:?}).read().strip())\n",
            ext2.path().join("data/table.csv").to_str().expect("utf-8"),
            ext2.path().join("data/blob").to_str().expect("utf-8"),
        ),
    );
    let agent = start(&fs, policy_dir.path());
    assert_eq!(agent.status_field("untrusted_filesystems"), 1);

    let out = python(&fs.path().join("app"), &["reader.py"]);
    assert!(
        out.status.success(),
        "reading data on an untrusted filesystem failed: {}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    assert_eq!(text(&out.stdout), "a,b\n1,2\njust bytes\n");
    assert!(agent.denies_for("table.csv").is_empty());
    assert!(agent.denies_for("blob").is_empty());
    assert!(agent.status_field("events") > 0);
}

#[test]
fn an_untrusted_filesystem_mounted_later_is_refused_too() {
    let fs = Tmpfs::new();
    let policy_dir = tempfile::tempdir().expect("tempdir");
    policy_trusting(policy_dir.path(), &["tmpfs"]);
    let agent = start(&fs, policy_dir.path());
    assert_eq!(agent.status_field("untrusted_filesystems"), 0);

    let ext2 = Ext2::mount_at(&fs.path().join("late"));
    agent.wait_for_status("untrusted_filesystems", 1);
    let ran = fs.marker("late-ran");
    ext2.signed("late.py", &payload(&ran));
    let out = python(ext2.path(), &["late.py"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(!ran.exists(), "signed code on a later untrusted mount ran");
    assert_refused_for_its_filesystem(&agent, "late.py");

    // Unmounted, its group goes; a filesystem mounted in its place is marked again.
    drop(ext2);
    let again = Ext2::mount_at(&fs.path().join("again"));
    let ran_again = fs.marker("again-ran");
    again.signed("again.py", &payload(&ran_again));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent
        .log_text()
        .contains(&format!("at {}", again.path().display()))
    {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = python(again.path(), &["again.py"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(!ran_again.exists());
    assert_refused_for_its_filesystem(&agent, "again.py");
}
