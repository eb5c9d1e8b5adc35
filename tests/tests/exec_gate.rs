//! The exec gate on the real kernel with a real CPython.
//!
//! The gate profiles a private copy of the host's python3 (same binary, its own inode), so
//! these tests never touch other users' `python3 -c` on this shared host; one test checks
//! the real `/usr/bin/python3` identity in permissive mode, which reports and never kills.
//! All tests share one gate (the program sees every exec on the host; one gate and one
//! event list keep parallel tests apart, each looking only for its own child's pid).

use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use guard::ebpf_object::Identity;
use guard::exec_gate::{ExecGate, ExecGateConfig, GateEvent};
use guard_common::Rule;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Shared {
    gate: ExecGate,
    seen: Vec<GateEvent>,
    python: PathBuf,
    loader: PathBuf,
    _dir: tempfile::TempDir,
}

/// A copy of the host's python3 with its own inode (the stdlib is still found via the
/// compiled-in prefix).
fn python_copy(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize("/usr/bin/python3").expect("python3 on this host");
    let copy = dir.join("python3");
    std::fs::copy(&real, &copy).expect("copy python3");
    copy
}

/// A copy of the host's dynamic loader with its own inode: the gate judges it as the
/// agent judges the system's loader, without touching anyone else's `ld.so` use.
fn loader_copy(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").expect("ld.so on this host");
    let copy = dir.join("ld.so");
    std::fs::copy(&real, &copy).expect("copy ld.so");
    copy
}

fn shared() -> MutexGuard<'static, Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let python = python_copy(dir.path());
            let loader = loader_copy(dir.path());
            let mut config = ExecGateConfig::strict(vec![Identity::of_path(&python).unwrap()]);
            config.loaders = vec![Identity::of_path(&loader).unwrap()];
            let gate = ExecGate::load(&config).expect("exec gate loads (needs root)");
            if let Some(count) = gate.verified_instructions() {
                eprintln!("exec gate: verifier processed {count} instructions");
            }
            Mutex::new(Shared {
                gate,
                seen: Vec::new(),
                python,
                loader,
                _dir: dir,
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn python() -> PathBuf {
    shared().python.clone()
}

fn loader() -> PathBuf {
    shared().loader.clone()
}

fn wait(mut child: Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("child {} did not finish within {TIMEOUT:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The gate's event for `pid`, waiting a little for it.
fn event_for(pid: u32) -> Option<GateEvent> {
    let start = Instant::now();
    loop {
        {
            let mut shared = shared();
            let Shared { gate, seen, .. } = &mut *shared;
            seen.extend(gate.events());
            if let Some(event) = seen.iter().find(|e| e.pid == pid) {
                return Some(event.clone());
            }
        }
        if start.elapsed() > Duration::from_secs(2) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("ran")
    }

    /// Python code that proves it ran by creating the marker.
    fn payload(&self) -> String {
        format!("open({:?}, 'w').close()\n", self.marker().to_str().unwrap())
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn assert_killed(&self, child: Child, rule: Rule) {
        let pid = child.id();
        let status = wait(child);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!self.marker().exists(), "the payload ran");
        let event = event_for(pid).unwrap_or_else(|| panic!("no event for pid {pid}"));
        assert_eq!(event.rule, rule);
        assert!(event.killed);
        assert_eq!(event.uid, nix::unistd::getuid().as_raw());
    }

    fn assert_runs(&self, child: Child) {
        let pid = child.id();
        let status = wait(child);
        assert!(status.success(), "{status:?}");
        assert_eq!(event_for(pid), None);
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null()).spawn().unwrap()
}

#[test]
fn inline_code_is_killed() {
    let case = Case::new();
    let child = spawn(Command::new(python()).arg("-c").arg(case.payload()));
    case.assert_killed(child, Rule::NoInlineCode);
}

#[test]
fn inline_code_in_an_option_cluster_is_killed() {
    let case = Case::new();
    let child = spawn(Command::new(python()).arg("-Ic").arg(case.payload()));
    case.assert_killed(child, Rule::NoInlineCode);
    let child = spawn(
        Command::new(python())
            .args(["-E", "-X", "dev", "-c"])
            .arg(case.payload()),
    );
    case.assert_killed(child, Rule::NoInlineCode);
}

#[test]
fn code_piped_to_stdin_is_killed() {
    let case = Case::new();
    let mut child = Command::new(python())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The write may fail once the process is dead: that is the point.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(case.payload().as_bytes());
    case.assert_killed(child, Rule::NoStdinCode);
}

#[test]
fn dash_script_from_a_file_is_killed() {
    let case = Case::new();
    let payload = case.file("payload.py", &case.payload());
    let child = spawn(
        Command::new(python())
            .arg("-")
            .stdin(File::open(payload).unwrap()),
    );
    case.assert_killed(child, Rule::NoStdinCode);
}

#[test]
fn process_substitution_script_is_killed() {
    let case = Case::new();
    let payload = case.file("payload.py", &case.payload());
    // `exec` keeps bash's pid, so the event can be matched to the child. cat may outlive
    // the test's files (python is killed before it reads): silence it.
    let script = format!(
        "exec {} <(cat {} 2>/dev/null)",
        python().display(),
        payload.display()
    );
    let child = spawn(Command::new("bash").arg("-c").arg(script));
    case.assert_killed(child, Rule::ScriptIsFile);
}

#[test]
fn dev_stdin_script_is_killed() {
    let case = Case::new();
    let payload = case.file("payload.py", &case.payload());
    let child = spawn(
        Command::new(python())
            .arg("/dev/stdin")
            .stdin(File::open(payload).unwrap()),
    );
    case.assert_killed(child, Rule::ScriptIsFile);
}

#[test]
fn pythonstartup_is_killed() {
    let case = Case::new();
    let startup = case.file("startup.py", &case.payload());
    let script = case.file("script.py", &case.payload());
    let child = spawn(
        Command::new(python())
            .arg(script)
            .env("PYTHONSTARTUP", startup),
    );
    case.assert_killed(child, Rule::NoCodeEnvironment);
}

#[test]
fn pythoninspect_is_killed() {
    let case = Case::new();
    let script = case.file("script.py", &case.payload());
    let child = spawn(
        Command::new(python())
            .arg(script)
            .env("PYTHONINSPECT", "1")
            .stdin(Stdio::null()),
    );
    case.assert_killed(child, Rule::NoCodeEnvironment);
}

#[test]
fn script_with_option_like_arguments_runs() {
    let case = Case::new();
    let script = case.file("script.py", &case.payload());
    let child = spawn(Command::new(python()).arg(script).args(["arg1", "-c", "x"]));
    case.assert_runs(child);
    assert!(case.marker().exists(), "the script did not run");
}

#[test]
fn module_runs() {
    let case = Case::new();
    let json = case.file("data.json", "{\"a\": 1}");
    let child = spawn(Command::new(python()).args(["-m", "json.tool"]).arg(json));
    case.assert_runs(child);
}

#[test]
fn other_executables_are_untouched() {
    let case = Case::new();
    // The real python3 is not profiled by the shared gate.
    let child = spawn(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(case.payload()),
    );
    case.assert_runs(child);
    assert!(case.marker().exists());
}

#[test]
fn gate_is_detached_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let python = python_copy(dir.path());
    let case = Case::new();
    let config = ExecGateConfig::strict(vec![Identity::of_path(&python).unwrap()]);
    let gate = ExecGate::load(&config).unwrap();
    let status = wait(spawn(Command::new(&python).arg("-c").arg(case.payload())));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    drop(gate);
    let status = wait(spawn(Command::new(&python).arg("-c").arg(case.payload())));
    assert!(status.success(), "{status:?}");
    assert!(case.marker().exists());
}

#[test]
fn real_python3_identity_is_seen_in_permissive_mode() {
    let identity = Identity::of_path(Path::new("/usr/bin/python3")).unwrap();
    let resolved = std::fs::canonicalize("/usr/bin/python3").unwrap();
    assert_eq!(identity, Identity::of_path(&resolved).unwrap());
    let mut config = ExecGateConfig::strict(vec![identity]);
    config.permissive = true;
    let mut gate = ExecGate::load(&config).unwrap();
    let case = Case::new();
    let child = spawn(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(case.payload()),
    );
    let pid = child.id();
    assert!(wait(child).success());
    assert!(case.marker().exists(), "permissive mode must not kill");
    let start = Instant::now();
    let event = loop {
        if let Some(event) = gate.events().find(|e| e.pid == pid) {
            break event;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no event for {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(event.rule, Rule::NoInlineCode);
    assert!(!event.killed);
    assert_eq!(event.file, identity);
}

#[test]
fn loader_launching_a_program_is_killed() {
    let case = Case::new();
    let script = case.file("script.py", &case.payload());
    let link = case.dir.path().join("ld-link");
    std::os::unix::fs::symlink(loader(), &link).unwrap();
    let code = case.payload();
    let (ld, py) = (loader(), python());
    let (ld, py, script) = (
        ld.to_str().unwrap(),
        py.to_str().unwrap(),
        script.to_str().unwrap(),
    );
    let link = link.to_str().unwrap();
    let launches: [&[&str]; 6] = [
        &[ld, py, "-c", &code],
        &[ld, py, script],
        &[ld, "--library-path", "/nonexistent", py, "-c", &code],
        // Not a profiled interpreter: the loader may launch nothing at all.
        &[ld, "/usr/bin/python3", "-c", &code],
        &[link, py, "-c", &code],
        // An option glibc does not have: refused, not guessed at.
        &[ld, "--frobnicate", py, script],
    ];
    let identity = Identity::of_path(&loader()).unwrap();
    for launch in launches {
        let child = spawn(Command::new(launch[0]).args(&launch[1..]));
        let pid = child.id();
        let rule = if launch[1] == "--frobnicate" {
            Rule::FactsUnavailable
        } else {
            Rule::NoLoaderLaunch
        };
        case.assert_killed(child, rule);
        assert_eq!(event_for(pid).unwrap().file, identity, "{launch:?}");
    }
}

#[test]
fn loader_modes_that_run_nothing_are_untouched() {
    let case = Case::new();
    let code = case.payload();
    // What Debian's ldd runs: --version, --verify FILE, LD_TRACE_LOADED_OBJECTS=1 ld.so FILE.
    case.assert_runs(spawn(Command::new(loader()).arg("--version")));
    case.assert_runs(spawn(Command::new(loader()).arg("--verify").arg(python())));
    case.assert_runs(spawn(
        Command::new(loader())
            .arg(python())
            .args(["-c", &code])
            .env("LD_TRACE_LOADED_OBJECTS", "1"),
    ));
    case.assert_runs(spawn(Command::new(loader()).arg("--list").arg(python())));
    case.assert_runs(spawn(
        Command::new(loader())
            .args(["--library-path", "/nonexistent", "--verify"])
            .arg(python()),
    ));
    assert!(
        !case.marker().exists(),
        "a mode that runs nothing ran the payload"
    );
    // Exec'd as the interpreter of a program (the normal case), the loader is not judged.
    case.assert_runs(spawn(Command::new(python()).arg(case.file("s.py", &code))));
    assert!(case.marker().exists());
}
