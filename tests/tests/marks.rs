//! Marks reach the filesystem meant (issue 22.4), host mode. The agent reads the mount table
//! and marks each filesystem through one of its mount points; a path read there may since
//! lead elsewhere, and a lookup may hang:
//!
//! - a second mount over a filesystem's mount point: marking by that path marked the one on
//!   top, and the covered filesystem, still reachable through another mount (a bind mount)
//!   or a descriptor, went unmarked without a word. Now each place is opened and checked to
//!   reach that very mount; the filesystem is marked through a place that does.
//! - a filesystem reachable through none of its places is reported (`guard status`, an
//!   error in the log), never taken for marked.
//! - a mount point below a user's FUSE filesystem whose daemon stops answering root: the
//!   lookup hung the agent's start. Now each lookup has a deadline; the others go on.
//!
//! The agent watches one test tmpfs and follows mounts below it.

use std::process::Command;
use std::time::Duration;

use guard_tests::*;

fn mount_tmpfs(at: &std::path::Path) {
    std::fs::create_dir_all(at).expect("mkdir");
    let out = run_with_timeout(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=755", "guard-test"])
            .arg(at),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "mount: {}", text(&out.stderr));
}

fn bind(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    let out = run_with_timeout(
        Command::new("mount").arg("--bind").arg(from).arg(to),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "mount --bind: {}", text(&out.stderr));
}

fn start(fs: &Tmpfs) -> Agent {
    Agent::start(fs.path(), &["--follow"])
}

fn assert_logged(agent: &Agent, needle: &str) {
    let log = agent.log_text();
    assert!(
        log.contains(needle),
        "no {needle:?} in the agent's log:\n{log}"
    );
}

fn assert_unmarked(agent: &Agent, count: u64) {
    assert_eq!(
        agent.status_field("unmarked_filesystems"),
        count,
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_covered_filesystem_is_marked_through_a_place_that_still_reaches_it() {
    let fs = Tmpfs::new();
    let covered = fs.path().join("covered");
    mount_tmpfs(&covered);
    let ran = fs.marker("covered-ran");
    std::fs::write(covered.join("evil.py"), payload(&ran)).expect("write");
    set_mode(&covered.join("evil.py"), 0o644);
    let other = fs.path().join("other");
    bind(&covered, &other);
    // Another filesystem mounted over the first one's first mount point.
    mount_tmpfs(&covered);

    // Without guard, the covered filesystem's unsigned code runs through the other place.
    let out = python(&other, &["evil.py"]);
    assert!(ran.exists(), "without guard: {}", text(&out.stderr));
    std::fs::remove_file(&ran).expect("rm");

    let agent = start(&fs);
    let out = python(&other, &["evil.py"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(
        !ran.exists(),
        "unsigned code ran on a covered filesystem:\n{}",
        agent.log_text()
    );
    assert!(!agent.denies_for("evil.py").is_empty());
    assert_unmarked(&agent, 0);
    assert_logged(&agent, "renamed or covered since");
}

#[test]
fn a_filesystem_reachable_through_none_of_its_places_is_reported() {
    let fs = Tmpfs::new();
    let covered = fs.path().join("covered");
    mount_tmpfs(&covered);
    mount_tmpfs(&covered);
    let agent = start(&fs);
    assert_unmarked(&agent, 1);
    assert_logged(&agent, "NOT MARKED");
    let status = agent.status_text();
    assert!(status.contains("1 NOT MARKED"), "{status}");
}

#[test]
fn a_lookup_that_hangs_does_not_hold_up_the_other_marks() {
    let fs = Tmpfs::new();
    fs.signed("app/ok.py", "print('ok')\n");
    let ran = fs.marker("unsigned-ran");
    fs.write("app/evil.py", payload(&ran));
    // Dropped after the FUSE filesystem: an agent thread waiting on the daemon cannot be
    // killed until its connection is aborted.
    let agent;
    // A user's FUSE filesystem with a directory a tmpfs is mounted on (root is answered
    // while it mounts), then its daemon stops answering root.
    let fuse = StallingFuse::mount_at(
        &fs.path().join("fuse"),
        &["--dir", "d", "--answer-root-until-signal"],
    );
    let below = fuse.path().join("d");
    mount_tmpfs(&below);
    fuse.stall_root();
    // The FUSE entry for `d` expires after a second: the next lookup asks the daemon.
    std::thread::sleep(Duration::from_millis(1500));

    agent = start(&fs);
    fuse.wait_stalled_by(agent.pid());
    assert_logged(&agent, "took more than");
    assert_unmarked(&agent, 1);
    // The trusted tmpfs is marked and its opens decided.
    let out = python(&fs.path().join("app"), &["ok.py"]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    let out = python(&fs.path().join("app"), &["evil.py"]);
    assert!(!out.status.success() && !ran.exists());
}

/// A shell of nobody's whose cwd is `dir`, that runs `evil.py` there once `go` exists (so
/// its cwd can be covered by another mount first). Through /proc/self/cwd: CPython opens
/// its script by an absolute path, which the mount on top would answer.
fn holder(dir: &std::path::Path, go: &std::path::Path) -> std::process::Child {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args([
            "/bin/sh",
            "-c",
            "cd \"$0\" || exit 9; while [ ! -e \"$1\" ]; do sleep 0.05; done; exec \"$2\" /proc/self/cwd/evil.py",
        ])
        .arg(dir)
        .arg(go)
        .arg(PYTHON)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv")
}

#[test]
fn a_covered_filesystem_a_process_still_holds_is_marked_through_its_handle() {
    let fs = Tmpfs::new();
    let covered = fs.path().join("held");
    mount_tmpfs(&covered);
    let ran = fs.marker("held-ran");
    std::fs::write(covered.join("evil.py"), payload(&ran)).expect("write");
    set_mode(&covered.join("evil.py"), 0o644);
    let (go_bare, go_guarded) = (fs.path().join("go-bare"), fs.path().join("go-guarded"));
    let bare = holder(&covered, &go_bare);
    let guarded = holder(&covered, &go_guarded);
    std::thread::sleep(Duration::from_millis(500)); // both are in their cwd
    mount_tmpfs(&covered);

    // Without guard, the covered filesystem's unsigned code runs from the held cwd.
    std::fs::write(&go_bare, "").expect("go");
    let out = wait_with_timeout(bare, Duration::from_secs(30)).expect("the first holder hung");
    assert!(ran.exists(), "without guard: {}", text(&out.stderr));
    std::fs::remove_file(&ran).expect("rm");

    let agent = start(&fs);
    assert_unmarked(&agent, 0);
    assert_logged(&agent, "through a process's handle");
    std::fs::write(&go_guarded, "").expect("go");
    let out = wait_with_timeout(guarded, Duration::from_secs(30)).expect("the holder hung");
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(
        !ran.exists(),
        "unsigned code ran on a covered filesystem:\n{}",
        agent.log_text()
    );
    assert!(!agent.denies_for("evil.py").is_empty());
}
