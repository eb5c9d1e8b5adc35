//! `guard run` with its exec gate: launches are judged at exec, files at open, by one agent.
//! The policy profiles a private copy of python3 so the host's own python3 is left alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guard_tests::*;

fn policy_for(dir: &Path, python: &Path, mode: &str) -> PathBuf {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "mode = \"{mode}\"\n[trust]\nfilesystems = [\"tmpfs\", \"ext4\"]\n[[interpreter]]\nname = \"python\"\nexecutables = [{:?}]\ncode_patterns = [\"*.py\"]\ndeny_env = [\"PYTHONSTARTUP\", \"PYTHONINSPECT\"]\n",
            python.to_str().unwrap()
        ),
    )
    .unwrap();
    policy
}

fn run_python(
    python: &Path,
    cwd: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ])
    .arg(python)
    .args(args)
    .current_dir(cwd)
    .env_clear()
    .env("PATH", "/usr/bin:/bin");
    match stdin {
        None => run_with_timeout(&mut cmd, Duration::from_secs(30)),
        Some(input) => {
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            use std::io::Write;
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
            wait_with_timeout(child, Duration::from_secs(30)).expect("bounded")
        }
    }
}

fn launch_denies(agent: &Agent) -> Vec<String> {
    agent
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"code\":\"launch\""))
        .collect()
}

#[test]
fn the_agent_refuses_inline_and_stdin_code_at_exec_and_signed_scripts_run() {
    let fs = Tmpfs::new();
    let bin = tempfile::tempdir().unwrap();
    let python = private_python(bin.path());
    let policy = policy_for(bin.path(), &python, "enforce");
    let script = fs.write("g/ok.py", "import sys\nprint('ok', sys.argv[1:])\n");
    sign(&script);
    let marker = fs.path().join("ran");
    let agent = Agent::start_with_exec_gate(fs.path(), &["--policy", policy.to_str().unwrap()]);
    assert!(
        agent.status().contains("enforcing on 1 interpreter"),
        "{}",
        agent.status()
    );
    let dir = fs.path().join("g");

    let out = run_python(&python, &dir, &["ok.py", "-c", "x"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok ['-c', 'x']\n");

    let payload = format!("open({:?}, 'w')", marker.to_str().unwrap());
    for args in [vec!["-c", payload.as_str()], vec!["-Ic", payload.as_str()]] {
        let out = run_python(&python, &dir, &args, None);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{args:?} not killed"
        );
    }
    let out = run_python(&python, &dir, &[], Some(&payload));
    assert!(!out.status.success(), "stdin code ran");
    assert!(!marker.exists(), "payload ran");

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while launch_denies(&agent).len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "launch refusals not audited:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = launch_denies(&agent);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no-inline-code") && l.contains("\"enforced\":true")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("no-stdin-code")),
        "{lines:?}"
    );
    assert!(agent.status_field("denies") >= 3);
}

#[test]
fn permissive_agent_reports_launches_without_killing() {
    let fs = Tmpfs::new();
    let bin = tempfile::tempdir().unwrap();
    let python = private_python(bin.path());
    let policy = policy_for(bin.path(), &python, "permissive");
    let agent = Agent::start_with_exec_gate(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let out = run_python(&python, fs.path(), &["-c", "print('inline')"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "inline\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while launch_denies(&agent).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "would-be refusal not audited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(launch_denies(&agent)[0].contains("\"enforced\":false"));
}
