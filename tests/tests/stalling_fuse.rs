//! No user stalls the host through a FUSE daemon (issue 22.1), host mode: the daemon
//! (tests/vm/stalling_fuse.py) answers the user and never root, so every request the agent
//! makes to it hangs for ever. The agent's reader opens the file of each event (fanotify
//! creates the descriptor inside the reader's `read()`): a filesystem of an untrusted type,
//! FUSE among them, has a group and a reader of its own, so only opens on that filesystem
//! wait, as they would for its daemon, and every other user's are still answered.
//!
//! The other way in, a worker's walk of the script operand through the interpreter's cwd,
//! happens only for the stdlib's own modules (not on a test's filesystem): its deadline is
//! shown in the VM (tests/vm/stalling_fuse.sh), where the agent marks every filesystem.
//!
//! The agent watches one test tmpfs (trusted) and follows mounts below it, where the FUSE
//! filesystem is mounted; its daemon runs as root with `allow_other`, so the agent is let in.

use std::process::Stdio;
use std::time::Duration;

use guard_tests::*;

/// A signed program of another user's, run as nobody while the FUSE filesystem stalls the
/// agent: it must run, and unsigned code must still be refused, both well within the bound.
fn other_users_are_answered(fs: &Tmpfs, agent: &Agent, unsigned_ran: &std::path::Path) {
    let out = run_with_timeout(
        &mut python_as(NOBODY, &[], &fs.path().join("app"), &["ok.py"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && text(&out.stdout) == "ok signed\n",
        "a signed program was not answered while the FUSE daemon stalls the agent: {}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        agent.log_text()
    );
    let out = run_with_timeout(
        &mut python_as(NOBODY, &[], &fs.path().join("app"), &["evil.py"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "unsigned code ran");
    assert!(!unsigned_ran.exists(), "unsigned code ran");
    assert!(
        !agent.denies_for("evil.py").is_empty(),
        "{}",
        agent.log_text()
    );
    // The agent answers its own status too.
    assert!(agent.status_field("events") > 0);
}

fn setup() -> (Tmpfs, tempfile::TempDir, std::path::PathBuf) {
    let fs = Tmpfs::new();
    fs.signed("app/helper.py", "V = 'signed'\n");
    fs.signed("app/ok.py", "import helper\nprint('ok', helper.V)\n");
    let unsigned_ran = fs.marker("unsigned-ran");
    fs.write("app/evil.py", payload(&unsigned_ran));
    let policy_dir = tempfile::tempdir().expect("tempdir");
    policy_trusting(policy_dir.path(), &["tmpfs"]);
    (fs, policy_dir, unsigned_ran)
}

fn start(fs: &Tmpfs, policy_dir: &tempfile::TempDir) -> Agent {
    let policy = policy_dir.path().join("policy.toml");
    Agent::start(
        fs.path(),
        &["--follow", "--policy", policy.to_str().expect("utf-8")],
    )
}

#[test]
fn a_fuse_daemon_that_never_answers_the_agent_stalls_only_its_own_filesystem() {
    let (fs, policy_dir, unsigned_ran) = setup();
    // Dropped after the FUSE filesystem: an agent thread waiting on the daemon cannot be
    // killed until its connection is aborted.
    let agent;
    let fuse = StallingFuse::mount_at(&fs.path().join("fuse"), &[]);
    // Shown without guard: the user's own requests are answered (the interpreter runs x.py).
    let out = run_with_timeout(
        &mut python_in_fuse(fuse.path(), &["x.py"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        text(&out.stdout),
        "ran from fuse\n",
        "{}",
        text(&out.stderr)
    );

    agent = start(&fs, &policy_dir);
    assert!(
        agent.log_text().contains("marked fuse.stallfs filesystem"),
        "{}",
        agent.log_text()
    );
    // The user's interpreter opens x.py; the agent's reader, opening it for the event,
    // waits on the daemon for ever, and so does the interpreter (its open is unanswered).
    let mut stuck = python_in_fuse(fuse.path(), &["x.py"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    fuse.wait_stalled_by(agent.pid());

    other_users_are_answered(&fs, &agent, &unsigned_ran);
    // The stall was real all along: the interpreter on the FUSE filesystem still waits.
    assert!(
        stuck.try_wait().expect("wait").is_none(),
        "the interpreter on the stalling filesystem was answered: the test shows nothing"
    );
    stuck.kill().expect("kill");
    let _ = stuck.wait();
    // Its connection aborted, the filesystem's reader ends and the agent goes on.
    drop(fuse);
    other_users_are_answered(&fs, &agent, &unsigned_ran);
}
