//! `guard run --require-signed-policy`: the policy file itself must be IMA-signed by a key
//! given with --key, at start and at every reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guard_tests::*;

const DEFAULT: &str = include_str!("../../guard/policy/default.toml");

/// The default policy with its own key list replaced (host keys must not matter here).
fn policy_text(keys: &str) -> String {
    let line = DEFAULT
        .lines()
        .find(|l| l.starts_with("keys = "))
        .expect("keys line in the default policy");
    DEFAULT.replace(line, &format!("keys = [{keys}]"))
}

fn write_policy(fs: &Tmpfs, text: &str) -> PathBuf {
    fs.write("etc/policy.toml", text)
}

/// `guard run` that must refuse to start; returns its standard error.
fn refused(watch: &Path, policy: &Path, key: &Path) -> String {
    let out = run_with_timeout(
        std::process::Command::new(guard_bin())
            .args([
                "run",
                "--backend",
                "fanotify",
                "--require-signed-policy",
                "--watch",
            ])
            .arg(watch)
            .arg("--policy")
            .arg(policy)
            .arg("--key")
            .arg(key)
            .arg("--socket")
            .arg(watch.join("never.sock")),
        Duration::from_secs(20),
    );
    assert_no_panic(&out);
    assert!(!out.status.success(), "started with {}", policy.display());
    stderr(&out)
}

#[test]
fn unsigned_or_self_signed_policies_are_refused_signed_ones_run() {
    let fs = Tmpfs::new();
    let policy = write_policy(&fs, &policy_text(""));

    let err = refused(fs.path(), &policy, &keys().cert_pem);
    assert!(
        err.contains("policy signature refused: no security.ima signature"),
        "{err}"
    );

    // Signed by a key the policy trusts itself, but not given with --key: circular, refused.
    let other = fs.path().join("other");
    let out = guard(&[&"keygen", &"--type", &"p256", &"--out", &other]);
    assert!(out.status.success(), "{}", stderr(&out));
    let own = policy_text(&format!("{:?}", other.join("guard.crt").to_str().unwrap()));
    let policy = write_policy(&fs, &own);
    let out = guard(&[&"sign", &"--key", &other.join("guard.key"), &policy]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = refused(fs.path(), &policy, &keys().cert_pem);
    assert!(err.contains("unknown key id"), "{err}");

    // Signed by the --key key: runs.
    let policy = write_policy(&fs, &policy_text(""));
    sign(&policy);
    let policy_arg = policy.to_str().unwrap();
    let agent = Agent::start(
        fs.path(),
        &["--policy", policy_arg, "--require-signed-policy"],
    );
    assert!(
        agent.log_text().contains("signed by key"),
        "{}",
        agent.log_text()
    );

    // An edit without re-signing is refused at reload; the signed policy stays in force.
    std::fs::write(
        &policy,
        policy_text("").replace("mode = \"enforce\"", "mode = \"permissive\""),
    )
    .unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    agent.wait_for_status("reload_failures", 1);
    assert!(
        agent.status().contains("\"mode\": \"enforce\""),
        "{}",
        agent.status()
    );
    assert!(
        agent.log_text().contains("policy signature refused"),
        "{}",
        agent.log_text()
    );
    assert!(agent.stop().success());
}

#[test]
fn require_signed_policy_needs_a_policy_file_and_a_key() {
    let out = guard(&[
        &"run",
        &"--require-signed-policy",
        &"--key",
        &keys().cert_pem,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--policy"), "{}", stderr(&out));
    let out = guard(&[
        &"run",
        &"--require-signed-policy",
        &"--policy",
        &"/nonexistent",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
}

/// The policy of a real host lives on a marked filesystem (/etc on the root filesystem):
/// reading it again at SIGHUP raises permission events the agent must still answer.
#[test]
fn reload_reads_a_policy_on_a_marked_filesystem() {
    let fs = Tmpfs::new();
    let policy = write_policy(&fs, &policy_text(""));
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    std::fs::write(
        &policy,
        policy_text("").replace("mode = \"enforce\"", "mode = \"permissive\""),
    )
    .unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    agent.wait_for_status("reloads", 1);
    assert!(agent.status().contains("\"mode\": \"permissive\""));
    assert!(agent.stop().success(), "agent did not stop after a reload");
}
