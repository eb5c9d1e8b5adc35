//! Refusals in the kernel audit log, read with the tools operators use: Debian's auditd
//! (started by the test with a log of its own), auditctl, ausearch. fanotify's refusal
//! is the kernel's own FANOTIFY record with guard's rule number; the exec gate's is a
//! USER_AVC record the agent sends. (The BPF LSM layer's are USER_AVC records too: VM only.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guard_tests::*;

/// A rule any syscall-auditing host has some of: the kernel writes a task's FANOTIFY record
/// only when the task has an audit context, which takes one syscall rule loaded.
const RULE: &[&str] = &["never,exit", "-F", "arch=b64", "-S", "acct"];

fn auditctl(args: &[&str]) -> String {
    let out = run_with_timeout(Command::new("auditctl").args(args), Duration::from_secs(10));
    assert!(
        out.status.success(),
        "auditctl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The audit daemon the test reads: the host's, or its own in the foreground with its log
/// in a directory of the test's (stopped when dropped). The test's rule is removed and
/// auditing set back as it was, when dropped.
struct Auditd {
    /// None: the host's own auditd and its logs.
    own: Option<(Child, PathBuf, tempfile::TempDir)>,
    enabled_before: u64,
}

impl Auditd {
    fn start() -> Auditd {
        let status = auditctl(&["-s"]);
        let enabled_before = status_field(&status, "enabled");
        let mut add = vec!["-a"];
        add.extend_from_slice(RULE);
        if status_field(&status, "pid") != 0 {
            auditctl(&add);
            return Auditd {
                own: None,
                enabled_before,
            };
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.log");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins");
        let config = dir.path().join("auditd.conf");
        std::fs::write(
            &config,
            format!(
                "local_events = yes\nwrite_logs = yes\nlog_file = {}\nlog_format = RAW\n\
                 flush = INCREMENTAL_ASYNC\nfreq = 1\nmax_log_file = 8\nnum_logs = 2\n\
                 max_log_file_action = ROTATE\nspace_left = 2\nspace_left_action = IGNORE\n\
                 admin_space_left = 1\nadmin_space_left_action = IGNORE\n\
                 disk_full_action = IGNORE\ndisk_error_action = IGNORE\nplugin_dir = {}\n",
                log.display(),
                dir.path().join("plugins").display()
            ),
        )
        .expect("auditd.conf");
        set_mode(&config, 0o600);
        let child = Command::new("auditd")
            .args(["-n", "-c"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("auditd (apt-get install auditd)");
        let pid = u64::from(child.id());
        let auditd = Auditd {
            own: Some((child, log, dir)),
            enabled_before,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while status_field(&auditctl(&["-s"]), "pid") != pid {
            assert!(Instant::now() < deadline, "auditd did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
        auditctl(&add);
        auditd
    }

    /// `ausearch` with `args` over the daemon's log; empty when nothing matches.
    fn search(&self, args: &[&str]) -> String {
        let mut command = Command::new("ausearch");
        if let Some((_, log, _)) = &self.own {
            command.arg("-if").arg(log);
        }
        let out = run_with_timeout(command.args(args), Duration::from_secs(30));
        text(&out.stdout)
    }

    /// The event (ausearch separates them with `----`) `ausearch args` shows with `needle`
    /// in it: a name only this test's records carry.
    fn wait_for(&self, args: &[&str], needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.search(args);
            if let Some(event) = found.split("----").find(|event| event.contains(needle)) {
                return event.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "ausearch {args:?}: no {needle}:\n{found}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let mut delete = vec!["-d"];
        delete.extend_from_slice(RULE);
        let _ = Command::new("auditctl").args(&delete).output();
        if let Some((child, _, _)) = self.own.as_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        let _ = Command::new("auditctl")
            .args(["-e", &self.enabled_before.to_string()])
            .output();
    }
}

fn run_private(python: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = as_nobody(python);
    cmd.args(args).current_dir(cwd);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

#[test]
fn refusals_of_fanotify_and_the_exec_gate_are_in_ausearch() {
    let auditd = Auditd::start();
    let fs = Tmpfs::new();
    let bin = tempfile::tempdir().unwrap();
    let python = private_python(bin.path());
    let policy = bin.path().join("policy.toml");
    // [audit] kernel is "auto": on, since an audit daemon runs.
    std::fs::write(
        &policy,
        format!(
            "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n[[interpreter]]\n\
             name = \"python\"\nexecutables = [{:?}]\ncode_patterns = [\"*.py\"]\n",
            python.to_str().unwrap()
        ),
    )
    .unwrap();
    fs.write("app/bad.py", "print('bad ran')\n");
    // The exec gate does not load everywhere (a verifier that finds its stack too deep):
    // its end-to-end part runs where it does; the record it sends is checked below anyway.
    let agent = Agent::start_with_exec_gate(
        fs.path(),
        &["--policy", policy.to_str().unwrap(), "--allow-degraded"],
    );
    let gate_loaded = agent.status().contains("\"exec_gate\": \"enforcing");
    assert!(
        agent.status().contains("\"kernel_audit\": true"),
        "{}\n{}",
        agent.status(),
        agent.log_text()
    );
    let app = fs.path().join("app");

    let out = run_private(&python, &app, &["bad.py"]);
    assert!(!out.status.success(), "bad.py ran");
    if gate_loaded {
        let out = run_private(&python, &app, &["-c", "print('inline ran')"]);
        assert!(!out.status.success(), "python -c ran");
    }

    // fanotify: the kernel's record of the answer, rule 6 (valid-signature), in the
    // opener's event beside its SYSCALL record (exe: this test's python copy).
    let copy = python.to_str().unwrap();
    let valid_signature = guard_common::Rule::ValidSignature as u32;
    let fanotify = auditd.wait_for(&["-m", "FANOTIFY"], &format!("exe=\"{copy}\""));
    assert!(
        fanotify.contains(&format!("resp=2 fan_type=1 fan_info={valid_signature:X} ")),
        "{fanotify}"
    );
    // ausearch -i names the numbers.
    let interpreted = auditd.wait_for(&["-m", "FANOTIFY", "-i"], copy);
    assert!(interpreted.contains("resp=deny"), "{interpreted}");

    // The kernel layers' refusals: the agent's USER_AVC records, as it sends them (a
    // name with a space is hex, as the kernel writes untrusted strings).
    let exe = format!("{copy} copy");
    let record = guard::agent::audit::AuditRecord {
        time: 0.0,
        pid: 4242,
        exe: exe.clone(),
        uid: NOBODY,
        path: String::new(),
        id: "0:1:2".into(),
        code: "mmap",
        decision: "deny",
        enforced: true,
        rule: "trusted-owner",
        reason: "refused in the kernel".into(),
        missing: None,
        layer: "bpf-lsm",
        checks: vec![],
        dynamic: None,
    };
    guard::agent::kernel_audit::KernelAudit::open()
        .and_then(|mut audit| audit.user_avc(&record))
        .expect("USER_AVC sent");
    let hex: String = exe.bytes().map(|b| format!("{b:02X}")).collect();
    let lsm = auditd.wait_for(&["-m", "USER_AVC"], &hex);
    assert!(
        lsm.contains(
            "guard=\"DENIED\" layer=bpf-lsm decision=deny rule=trusted-owner rule_number=3"
        ) && lsm.contains("res=failed"),
        "{lsm}"
    );
    let interpreted = auditd.wait_for(&["-m", "USER_AVC", "-i"], &format!("exe={exe}"));
    assert!(interpreted.contains("rule=trusted-owner"), "{interpreted}");
    if gate_loaded {
        // Its exe names the profile (`<python interpreter>`): the process never ran.
        let gate = auditd.wait_for(
            &["-m", "USER_AVC"],
            "layer=exec-gate decision=deny rule=no-inline-code",
        );
        assert!(
            gate.contains("guard=\"DENIED\"") && gate.contains("res=failed"),
            "{gate}"
        );
    } else {
        eprintln!("the exec gate did not load here: its end-to-end refusal is not checked");
    }
    assert_eq!(agent.status_field("kernel_audit_failed"), 0);
    assert!(agent.status_field("kernel_audit_answers") >= 1);
}
