//! fanotify's ignore marks (issue #19): a signed file whose open was allowed for everyone is
//! left to the kernel, which then answers its opens without asking the agent, until
//! something the verdict rests on changes. Each change is shown twice: the open before it
//! reaches no agent at all (no event: the cache is really in use, so a mark left in place
//! would let the changed file run), and after it the file is checked again and refused.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guard_tests::*;
use nix::sys::signal::Signal;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `script` in `dir` as nobody and returns whether it printed `ok`.
fn runs(dir: &Path, script: &str) -> bool {
    let out = python(dir, &[script]);
    out.status.success() && text(&out.stdout) == "ok\n"
}

/// Runs the signed `script` until its opens no longer reach the agent: the first run is
/// decided (and the mark made), the next ones must cost no event.
fn kept(agent: &Agent, dir: &Path, script: &str) {
    let kept_before = agent.status_field("kernel_kept");
    assert!(
        runs(dir, script),
        "{script}: signed script refused\n{}",
        agent.log_text()
    );
    agent.wait_for_status("kernel_kept", kept_before + 1);
    let events = agent.status_field("events");
    assert!(runs(dir, script), "{script}: refused on its second run");
    let after = agent.status_field("events");
    assert_eq!(
        after, events,
        "{script}: a kept file's open still reached the agent"
    );
}

/// Runs `script` after a change and wants it refused, the agent having been asked.
fn rechecked(agent: &Agent, dir: &Path, script: &str, change: &str) {
    let events = agent.status_field("events");
    assert!(
        !runs(dir, script),
        "after {change}, {script} still ran: the kernel kept a stale verdict\n{}",
        agent.log_text()
    );
    assert!(
        agent.status_field("events") > events,
        "after {change}, {script} was refused without asking the agent"
    );
    assert!(
        !agent.denies_for(script).is_empty(),
        "after {change}: no refusal of {script} logged"
    );
}

/// The same size, other bytes: what a signature no longer covers.
fn overwrite_in_place(path: &Path) {
    let len = usize::try_from(std::fs::metadata(path).unwrap().len()).unwrap();
    let evil = format!("{:<width$}", "print('evil')#", width = len - 1) + "\n";
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(evil.as_bytes(), 0).unwrap();
}

fn setfattr(args: &[&str], path: &Path) {
    let out = run_with_timeout(Command::new("setfattr").args(args).arg(path), LIMIT);
    assert!(
        out.status.success(),
        "setfattr {args:?}: {}",
        text(&out.stderr)
    );
}

fn signed_scripts(fs: &Tmpfs, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|name| fs.signed(&format!("k/{name}"), "print('ok')\n"))
        .collect()
}

#[test]
fn every_change_to_a_kept_file_is_checked_again() {
    let fs = Tmpfs::new();
    let names = [
        "write.py",
        "truncate.py",
        "chmod.py",
        "chown.py",
        "acl.py",
        "xattr.py",
        "renamed.py",
    ];
    let scripts = signed_scripts(&fs, &names);
    // Another content: its signature is no signature of the others.
    let other = fs.signed("k/other.py", "print('ok')  # other\n");
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("k");
    for name in names {
        kept(&agent, &dir, name);
    }

    overwrite_in_place(&scripts[0]);
    rechecked(&agent, &dir, "write.py", "a write");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&scripts[1])
        .unwrap()
        .set_len(3)
        .unwrap();
    rechecked(&agent, &dir, "truncate.py", "a truncate");

    set_mode(&scripts[2], 0o666);
    rechecked(&agent, &dir, "chmod.py", "chmod 0666");

    chown(&scripts[3], NOBODY, NOBODY);
    rechecked(&agent, &dir, "chown.py", "chown nobody");

    let out = run("setfacl", &[&"-m", &"u:nobody:rw", &scripts[4]]);
    assert!(out.status.success(), "setfacl: {}", text(&out.stderr));
    rechecked(&agent, &dir, "acl.py", "an ACL letting nobody write");

    // Another file's signature: valid, but not for these bytes.
    let foreign = run("getfattr", &[&"-e", &"hex", &"-n", &"security.ima", &other]);
    let value = text(&foreign.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("security.ima=").map(str::to_string))
        .expect("other.py's signature");
    setfattr(&["-n", "security.ima", "-v", &value], &scripts[5]);
    rechecked(&agent, &dir, "xattr.py", "security.ima replaced");

    let evil = fs.write("k/evil.tmp", "print('ok')\n");
    std::fs::rename(&evil, &scripts[6]).unwrap();
    rechecked(&agent, &dir, "renamed.py", "a rename over it");
    assert!(agent.status_field("kernel_forgotten") > 0);

    // Renamed itself (no attribute change): its new name could be an interpreter module's,
    // whose file is never kept. Still signed, it runs, but the agent is asked again.
    kept(&agent, &dir, "other.py");
    std::fs::rename(&other, dir.join("moved.py")).unwrap();
    let events = agent.status_field("events");
    let out = python(&dir, &["moved.py"]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    assert!(
        agent.status_field("events") > events,
        "a kept file renamed was not asked about again"
    );
}

/// Unlinking a kept file drops its mark too: held open, it is a deleted file, refused when
/// reopened through /proc.
#[test]
fn a_kept_file_deleted_while_held_open_is_checked_again() {
    let fs = Tmpfs::new();
    let script = fs.signed("k/gone.py", "print('ok')\n");
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("k");
    kept(&agent, &dir, "gone.py");
    let held = std::fs::File::open(&script).unwrap();
    std::fs::remove_file(&script).unwrap();
    let proc_path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&held)
    );
    // Root reopens it (nobody may not reach root's descriptors): the runner's identity
    // does not matter to a deleted file.
    let out = run_with_timeout(
        Command::new(PYTHON).arg(&proc_path).current_dir(&dir),
        LIMIT,
    );
    assert!(
        !out.status.success(),
        "a deleted kept file ran: {}",
        text(&out.stdout)
    );
    assert!(
        agent
            .audit_lines()
            .iter()
            .any(|l| l.contains("\"decision\":\"deny\"") && l.contains("not-deleted")),
        "no not-deleted refusal:\n{}",
        agent.log_text()
    );
    drop(held);
}

/// A reload drops every mark: a key removed, a policy that no longer trusts the owner.
/// The file is signed by a second key, the one the policy names (the agent's `--key` stays).
#[test]
fn a_reload_forgets_every_kept_verdict() {
    let fs = Tmpfs::new();
    let conf = tempfile::tempdir().unwrap();
    let (key, cert) = keygen(conf.path(), "second");
    let script = fs.write("k/a.py", "print('ok')\n");
    sign_with(&key, &script);
    let policy = conf.path().join("policy.toml");
    let write_policy = |trust: &str| write_python_policy(&policy, trust);
    // Named by a glob: a deleted key is simply no longer trusted after the reload.
    let by_glob = format!("keys = [{:?}]", conf.path().join("*.pem").to_str().unwrap());
    write_policy(&by_glob);
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let dir = fs.path().join("k");
    kept(&agent, &dir, "a.py");

    let saved = std::fs::read(&cert).unwrap();
    std::fs::remove_file(&cert).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reloads", 1);
    rechecked(&agent, &dir, "a.py", "the key's removal");

    // The key back: kept again; then a policy that trusts no owner of the file.
    std::fs::write(&cert, saved).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reloads", 2);
    kept(&agent, &dir, "a.py");
    write_policy(&format!("{by_glob}\nowners = [4242]"));
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reloads", 3);
    rechecked(&agent, &dir, "a.py", "a policy trusting no owner of it");
}

/// What is not the same for every opener is never left to the kernel: an unsigned file, a
/// group-writable signed file (its verdict depends on the runner), and anything while every
/// allow is logged.
#[test]
fn verdicts_that_depend_on_the_opener_are_not_kept() {
    let fs = Tmpfs::new();
    let group = fs.signed("k/group.py", "print('ok')\n");
    set_mode(&group, 0o664);
    chown(&group, 0, 4242);
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("k");
    assert!(runs(&dir, "group.py"));
    assert!(runs(&dir, "group.py"));
    assert_eq!(agent.status_field("kernel_kept"), 0, "{}", agent.status());
    drop(agent);

    let conf = tempfile::tempdir().unwrap();
    let policy = conf.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[trust]\nkeys = [{:?}]\nfilesystems = [\"tmpfs\"]\n[audit]\nlog_allows = true\n\
             [[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
             code_patterns = [\"*.py\"]\n",
            keys().cert_pem.to_str().unwrap()
        ),
    )
    .unwrap();
    let fine = fs.signed("k/fine.py", "print('ok')\n");
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    assert!(runs(&dir, "fine.py"));
    assert!(runs(&dir, "fine.py"));
    assert_eq!(agent.status_field("kernel_kept"), 0, "{}", agent.status());
    let allows = agent
        .audit_lines()
        .iter()
        .filter(|l| l.contains("\"decision\":\"allow\"") && l.contains("fine.py"))
        .count();
    assert!(
        allows >= 2,
        "log_allows: {allows} allow records for two runs"
    );
    drop(fine);
}

/// A signed file another program reads (a backup, `tar`) is verified ahead, after its open
/// was answered: the first interpreter to run it already reaches no agent, and a change
/// after that is still checked.
#[test]
fn a_signed_file_another_program_read_is_verified_ahead() {
    let fs = Tmpfs::new();
    let script = fs.signed("k/ahead.py", "print('ok')\n");
    let unsigned = fs.write("k/plain.py", "print('ok')\n");
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("k");
    let out = run_with_timeout(Command::new("cat").arg(&script).arg(&unsigned), LIMIT);
    assert!(out.status.success());
    agent.wait_for_status("kernel_kept", 1);
    let events = agent.status_field("events");
    assert!(runs(&dir, "ahead.py"), "{}", agent.log_text());
    assert_eq!(
        agent.status_field("events"),
        events,
        "the first interpreter open of a file verified ahead reached the agent"
    );
    assert_eq!(
        agent.status_field("kernel_kept"),
        1,
        "an unsigned file was kept"
    );
    set_mode(&script, 0o666);
    rechecked(&agent, &dir, "ahead.py", "chmod 0666");
    assert!(!runs(&dir, "plain.py"));
}
