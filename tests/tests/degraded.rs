//! No silent degradation (issue 16): in enforce mode a layer that fails to load stops the
//! agent from starting, naming what failed and the option that accepts running degraded;
//! permissive mode warns. A policy the kernel's tables cannot hold is refused at load.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guard_tests::*;

/// Runs its arguments with `bpf(2)` failing EPERM (a seccomp filter), as on a host whose
/// policy forbids BPF: the exec gate cannot load.
const NO_BPF: &str = r#"
import ctypes, os, struct, sys
insns = [(0x20, 0, 0, 0), (0x15, 0, 1, 321), (0x06, 0, 0, 0x00050001), (0x06, 0, 0, 0x7fff0000)]
code = b"".join(struct.pack("HBBI", *i) for i in insns)
buf = ctypes.create_string_buffer(code, len(code))
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
prog = Prog(len(insns), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0, "no_new_privs"
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, "seccomp"
os.execv(sys.argv[1], sys.argv[1:])
"#;

struct Setup {
    dir: tempfile::TempDir,
    fs: Tmpfs,
}

impl Setup {
    fn new(policy_extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // A private python3, so a gate that does load touches no other test's interpreter.
        let python = dir.path().join("python3");
        std::fs::copy(std::fs::canonicalize(PYTHON).unwrap(), &python).unwrap();
        set_mode(&python, 0o755);
        std::fs::write(dir.path().join("no_bpf.py"), NO_BPF).unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            format!(
                "[trust]\nfilesystems = [\"tmpfs\"]\n[[interpreter]]\nname = \"python\"\n\
                 executables = [{:?}]\ncode_patterns = [\"*.py\"]\n{policy_extra}",
                python.to_str().unwrap()
            ),
        )
        .unwrap();
        Setup {
            dir,
            fs: Tmpfs::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `guard run` (through the bpf-refusing wrapper when `no_bpf`), with its own socket.
    fn run(&self, no_bpf: bool, extra: &[&str]) -> Child {
        let mut cmd = if no_bpf {
            let mut cmd = Command::new(PYTHON);
            cmd.arg(self.path("no_bpf.py")).arg(guard_bin());
            cmd
        } else {
            Command::new(guard_bin())
        };
        cmd.args(["run", "--backend", "fanotify", "--watch"])
            .arg(self.fs.path())
            .arg("--policy")
            .arg(self.path("policy.toml"))
            .arg("--socket")
            .arg(self.path("guard.sock"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("guard run")
    }

    /// Waits until the agent answers on its socket; stops it; returns its log.
    fn runs(&self, mut child: Child) -> String {
        // The exec gate's verification takes seconds, more on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let out = child.wait_with_output().unwrap();
                panic!("guard run exited ({status}): {}", stderr(&out));
            }
            if std::os::unix::net::UnixStream::connect(self.path("guard.sock")).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "guard run not ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = wait_with_timeout(child, Duration::from_secs(20)).expect("stops");
        stderr(&out)
    }

    /// The agent refuses to start: exit 2, saying why.
    fn refuses(&self, child: Child) -> String {
        let out = wait_with_timeout(child, Duration::from_secs(60)).expect("exits");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    }
}

#[test]
fn enforce_mode_does_not_start_without_its_exec_gate() {
    let setup = Setup::new("");
    // The same agent starts without the wrapper: the wrapper is what takes BPF away.
    let log = setup.runs(setup.run(false, &[]));
    assert!(log.contains("exec gate enforcing"), "{log}");
    let why = setup.refuses(setup.run(true, &[]));
    assert!(
        why.contains("exec gate did not load") && why.contains("--allow-degraded"),
        "{why}"
    );
    // The operator's choice: runs, and says so.
    let log = setup.runs(setup.run(true, &["--allow-degraded"]));
    assert!(log.contains("running degraded"), "{log}");
    // Permissive mode refuses nothing anyway: it warns.
    let log = setup.runs(setup.run(true, &["--permissive"]));
    assert!(log.contains("running degraded"), "{log}");
}

#[test]
fn native_rules_the_backend_cannot_enforce_stop_enforce_mode() {
    let setup = Setup::new("[native]\ncode = \"trusted\"\n");
    let why = setup.refuses(setup.run(false, &["--no-exec-gate"]));
    assert!(
        why.contains("[native] code = \"trusted\" is not enforced")
            && why.contains("--allow-degraded"),
        "{why}"
    );
    let log = setup.runs(setup.run(false, &["--no-exec-gate", "--allow-degraded"]));
    assert!(log.contains("running degraded"), "{log}");
}

#[test]
fn refused_environment_names_the_gate_cannot_hold_are_a_policy_error() {
    let check = |deny_env: &str| {
        let setup = Setup::new("");
        let policy = setup.path("policy.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        std::fs::write(&policy, format!("{text}deny_env = [{deny_env}]\n")).unwrap();
        let out = guard(&[&"policy", &"check", &policy]);
        assert!(!out.status.success(), "{deny_env}: accepted");
        let why = stderr(&out);
        assert!(
            why.contains(policy.to_str().unwrap()) && why.contains("deny_env"),
            "{why}"
        );
        why
    };
    let seventeen: Vec<String> = (0..17).map(|i| format!("\"VAR{i}\"")).collect();
    assert!(check(&seventeen.join(", ")).contains("at most 16"));
    check(&format!("\"{}\"", "A".repeat(31)));
    check("\"A=B\"");
    // Sixteen are fine.
    let sixteen: Vec<String> = (0..16).map(|i| format!("\"VAR{i}\"")).collect();
    let setup = Setup::new(&format!("deny_env = [{}]\n", sixteen.join(", ")));
    let out = guard(&[&"policy", &"check", &setup.path("policy.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
}
