//! The attack catalog (issue #6) against host mode: `guard run --backend fanotify` with its
//! exec gate. One test per attack family; every attack runs as `nobody`, its payload creates
//! a marker file that must never appear, every process is bounded, and the signed baseline
//! keeps working in the same test.
//!
//! The policy profiles a private copy of python3 (the exec gate acts host-wide on the
//! identities the policy names), and the agent marks only the tmpfs mounts of the test.
//! What host mode does not refuse is listed, with the reason, in docs/threat-model.md.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use guard_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Labs' agents hold it shared; a test showing an attack works without guard holds it alone.
static AGENTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs `f` while no lab's agent (and its host-wide exec gate) runs in this process.
fn without_any_agent<T>(f: impl FnOnce() -> T) -> T {
    let _alone = AGENTS.write().unwrap_or_else(|p| p.into_inner());
    f()
}

/// One agent with its exec gate, a private python3 it profiles, and two watched tmpfs
/// mounts: `fs` (code, the "/tmp"- and "$HOME"-like attacker directories) and `shm` (a
/// "/dev/shm"-like second filesystem).
struct Lab {
    agent: Agent,
    /// Held while the lab's agent runs: its exec gate judges native code host-wide, so
    /// attacks shown to work without guard wait for every lab to end
    /// ([`without_any_agent`]).
    _running: std::sync::RwLockReadGuard<'static, ()>,
    fs: Tmpfs,
    /// Watched for as long as the lab runs.
    _shm: Tmpfs,
    python: PathBuf,
    bin: tempfile::TempDir,
}

/// A lab before its agent starts: the mounts, the private python3 and the policy.
struct Bench {
    fs: Tmpfs,
    shm: Tmpfs,
    python: PathBuf,
    bin: tempfile::TempDir,
    policy: PathBuf,
}

impl Bench {
    fn new(stdlib: bool) -> Bench {
        let fs = Tmpfs::new();
        let shm = Tmpfs::new();
        let bin = tempfile::tempdir().unwrap();
        set_mode(bin.path(), 0o755);
        let real = std::fs::canonicalize(PYTHON).unwrap();
        let python = if stdlib {
            let name = real.file_name().unwrap();
            let lib = fs.path().join("usr/lib").join(name);
            std::fs::create_dir_all(fs.path().join("usr/bin")).unwrap();
            std::fs::create_dir_all(fs.path().join("usr/lib")).unwrap();
            for dir in ["usr", "usr/bin", "usr/lib"] {
                set_mode(&fs.path().join(dir), 0o755);
            }
            let source = Path::new("/usr/lib").join(name);
            let out = run_with_timeout(
                Command::new("cp").arg("-a").arg(&source).arg(&lib),
                Duration::from_secs(120),
            );
            assert!(
                out.status.success(),
                "copying the stdlib: {}",
                describe(&out)
            );
            // The test suite is a third of the stdlib and not needed.
            let _ = std::fs::remove_dir_all(lib.join("test"));
            let python = fs.path().join("usr/bin").join(name);
            std::fs::copy(&real, &python).unwrap();
            set_mode(&python, 0o755);
            let out = guard(&[&"sign", &"-r", &"--key", &keys().private, &lib, &python]);
            assert!(
                out.status.success(),
                "signing the stdlib: {}",
                describe(&out)
            );
            python
        } else {
            let python = bin.path().join("python3");
            std::fs::copy(&real, &python).unwrap();
            set_mode(&python, 0o755);
            python
        };
        // Allows are not logged one by one, as deployed: the kernel keeps verdicts that
        // hold for every open (ignore marks), and every attack runs against that cache.
        let policy = bin.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "mode = \"enforce\"\n\
                 [trust]\nowners = [\"root\"]\nfilesystems = [\"tmpfs\", \"ext4\"]\n\
                 [[interpreter]]\nname = \"python\"\nexecutables = [{:?}]\nargv = \"python\"\n\
                 code_patterns = [\"*.py\", \"*.pyc\", \"*.pyo\", \"*.pyw\", \"*.pth\", \"*._pth\", \"*.so\", \
                 \"*.so.[0-9]*\", \"*.zip\", \"*.whl\", \"*.egg\", \"*.pyz\"]\n\
                 sniff = [\"pyc\", \"zip\", \"elf\"]\nmain_script_is_code = true\n\
                 inline_code = \"deny\"\nstdin = \"deny\"\ninteractive = \"deny\"\n\
                 deny_env = [\"PYTHONSTARTUP\", \"PYTHONINSPECT\", \"PYTHONPYCACHEPREFIX\"]\n\
                 [audit]\nlog_allows = false\n",
                python.to_str().unwrap()
            ),
        )
        .unwrap();
        for dir in ["out", "tmp"] {
            let d = fs.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            set_mode(&d, 0o1777);
        }
        set_mode(shm.path(), 0o1777);
        Bench {
            fs,
            shm,
            python,
            bin,
            policy,
        }
    }

    /// The lab: its agent (with its exec gate) started on the bench.
    fn start(self) -> Lab {
        let shm_path = self.shm.path().to_str().unwrap().to_string();
        let running = AGENTS.read().unwrap_or_else(|p| p.into_inner());
        let agent = Agent::start_with_exec_gate(
            self.fs.path(),
            &[
                "--watch",
                &shm_path,
                "--policy",
                self.policy.to_str().unwrap(),
            ],
        );
        Lab {
            agent,
            _running: running,
            fs: self.fs,
            _shm: self.shm,
            python: self.python,
            bin: self.bin,
        }
    }
}

impl Lab {
    fn new() -> Lab {
        Lab::build(false)
    }

    /// A lab whose python3 has a private, signed copy of the host's stdlib on the watched
    /// tmpfs (`usr/bin/python3.11`, `usr/lib/python3.11`): the agent finds it from the
    /// interpreter's real path and sees the opens of its modules.
    fn with_stdlib() -> Lab {
        Lab::build(true)
    }

    fn build(stdlib: bool) -> Lab {
        let lab = Bench::new(stdlib).start();
        lab.signed("base/ok.py", "import sys\nprint('ok', *sys.argv[1:])\n");
        lab
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.fs.path().join(relative)
    }

    /// A signed, root-owned 0644 file on the watched tmpfs.
    fn signed(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.fs.write(relative, content);
        sign(&path);
        path
    }

    /// An attacker's file: owned by nobody, unsigned.
    fn evil(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.fs.write(relative, content);
        let mut dir = path.parent().unwrap();
        while dir != self.fs.path() && !dir.ends_with("tmp") {
            chown(dir, NOBODY, NOBODY);
            dir = dir.parent().unwrap();
        }
        chown(&path, NOBODY, NOBODY);
        path
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.path("out").join(name)
    }

    fn py(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = nobody(cwd, env);
        cmd.arg(&self.python).args(args);
        run_with_timeout(&mut cmd, LIMIT)
    }

    /// A bash script run as nobody, with `$PY` the profiled interpreter.
    fn sh(&self, cwd: &Path, script: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = nobody(cwd, env);
        cmd.args(["bash", "-c", script]).env("PY", &self.python);
        run_with_timeout(&mut cmd, LIMIT)
    }

    /// The signed baseline still runs for nobody.
    fn baseline(&self) {
        let out = self.py(&self.path("base"), &["ok.py", "x"], &[]);
        assert!(
            out.status.success() && text(&out.stdout) == "ok x\n",
            "signed baseline refused: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.agent.log_text()
        );
    }

    /// Denies the agent audited for a path containing `needle`.
    fn denies(&self, needle: &str) -> Vec<String> {
        self.agent
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains("\"decision\":\"deny\"") && l.contains(needle))
            .collect()
    }

    /// [`Lab::denies`] once there are more than `before` of them, or as they are after 3 s:
    /// the agent audits after it answers the kernel, so a refused process can end first.
    fn denies_after(&self, needle: &str, before: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let denies = self.denies(needle);
            if denies.len() > before || std::time::Instant::now() > deadline {
                return denies;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn nobody(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ])
    .current_dir(cwd)
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", "/nonexistent")
    .envs(env.iter().copied());
    cmd
}

/// Python that creates `marker` when it runs.
fn payload(marker: &Path) -> String {
    format!(
        "open({:?}, 'w').write('ran')\nprint('PAYLOAD RAN')\n",
        marker.to_str().unwrap()
    )
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Refused at exec by the gate: SIGKILL before any code ran.
#[track_caller]
fn assert_killed(what: &str, out: &Output, marker: &Path) {
    assert!(!marker.exists(), "{what}: payload ran\n{}", describe(out));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{what}: not killed at exec\n{}",
        describe(out)
    );
}

/// Killed at exec, inside a bash script (bash reports 128 + SIGKILL, or was replaced by
/// the interpreter through `exec`).
#[track_caller]
fn assert_killed_in_shell(what: &str, out: &Output, marker: &Path) {
    assert!(!marker.exists(), "{what}: payload ran\n{}", describe(out));
    assert!(
        out.status.code() == Some(128 + libc::SIGKILL)
            || out.status.signal() == Some(libc::SIGKILL),
        "{what}: not killed at exec\n{}",
        describe(out)
    );
}

/// Refused: the payload did not run and the interpreter failed.
#[track_caller]
/// The payload did not run (the command may go on without the refused code).
fn assert_not_ran(what: &str, out: &Output, marker: &Path) {
    assert!(!marker.exists(), "{what}: payload ran\n{}", describe(out));
    // A line of its own: a terminal echoes the typed payload's source.
    assert!(
        !text(&out.stdout)
            .lines()
            .any(|l| l.trim_end() == "PAYLOAD RAN"),
        "{what}: payload ran\n{}",
        describe(out)
    );
}

fn assert_refused(what: &str, out: &Output, marker: &Path) {
    assert!(!marker.exists(), "{what}: payload ran\n{}", describe(out));
    assert!(
        !out.status.success(),
        "{what}: succeeded\n{}",
        describe(out)
    );
    assert_ne!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{what}: killed at exec, expected a refused open\n{}",
        describe(out)
    );
}

/// Family 1 by identity: `-c` through root's names for the interpreter (a symlink, a hard
/// link). Its spellings, an attacker's symlink and a forged argv[0] are in the catalog.
#[test]
fn inline_code_in_every_spelling_is_killed_at_exec() {
    let lab = Lab::new();
    let marker = lab.marker("inline");
    let code = payload(&marker);
    let cwd = lab.path("tmp");
    let link = lab.bin.path().join("py-link");
    std::os::unix::fs::symlink(&lab.python, &link).unwrap();
    let hard = lab.bin.path().join("py-hard");
    std::fs::hard_link(&lab.python, &hard).unwrap();
    for exe in [&link, &hard] {
        let mut cmd = nobody(&cwd, &[]);
        cmd.arg(exe).args(["-c", &code]);
        let out = run_with_timeout(&mut cmd, LIMIT);
        assert_killed(&format!("{} -c", exe.display()), &out, &marker);
    }
    lab.baseline();
    // An argument `-c` after the script belongs to the script.
    let out = lab.py(&lab.path("base"), &["ok.py", "-c", "x"], &[]);
    assert_eq!(text(&out.stdout), "ok -c x\n", "{}", describe(&out));
}

/// Family 1b: stdlib modules that are interpreters themselves are killed at exec (their
/// `-m` spellings are in the catalog); modules that do not evaluate code keep working, and
/// so does a script given `-m code` as its arguments.
#[test]
fn interpreter_modules_that_evaluate_no_code_keep_working() {
    let lab = Lab::new();
    let base = lab.path("base");
    lab.baseline();
    // Modules that do not evaluate code keep working, also next to a refused name.
    lab.signed("base/data.json", "{\"a\": 1}\n");
    for (args, expected) in [
        (&["-m", "json.tool", "data.json"][..], "\"a\": 1"),
        (&["-m", "this"], "Beautiful is better than ugly."),
        (&["-m", "codecs"], ""),
        (&["ok.py", "-m", "code"], "ok -m code"),
    ] {
        let out = lab.py(&base, args, &[]);
        assert!(
            out.status.success() && text(&out.stdout).contains(expected),
            "{args:?} refused: {}",
            describe(&out)
        );
    }
}

/// `NAME._pth` beside the path the interpreter was started by (a link of the attacker's to
/// it) replaces its whole search path: CPython reads it at startup. It is code by its name,
/// so the attacker's is refused, and CPython, which skips a `._pth` it cannot read, keeps
/// its own search path (the zip-flipping race of 11b came back through one).
#[test]
fn a_search_path_file_beside_the_interpreter_is_code() {
    let lab = Lab::new();
    let real = std::fs::canonicalize(PYTHON).unwrap();
    let version = real.file_name().unwrap().to_str().unwrap().to_string();
    let attacker = lab.path("tmp/pthlib");
    std::fs::create_dir_all(&attacker).unwrap();
    chown(&attacker, NOBODY, NOBODY);
    let pth = format!(
        "{}\n/usr/lib/{version}\n/usr/lib/{version}/lib-dynload\n",
        attacker.display()
    );
    lab.signed("base/path.py", "import sys\nprint(sys.path)\n");
    let base = lab.path("base");
    let attacker_dir = attacker.to_str().unwrap();
    // Without guard (a link to the host's unprofiled python3), the search path is the file's.
    let unguarded = lab.path("tmp/pth0");
    std::fs::create_dir_all(&unguarded).unwrap();
    std::os::unix::fs::symlink(&real, unguarded.join("python3")).unwrap();
    lab.evil("tmp/pth0/python3._pth", &pth);
    let out = lab.sh(
        &base,
        "exec \"$DIR/python3\" path.py",
        &[("DIR", unguarded.to_str().unwrap())],
    );
    assert!(
        text(&out.stdout).contains(attacker_dir),
        "the ._pth does not set the search path without guard: {}",
        describe(&out)
    );
    // With guard: refused as code, skipped by CPython, the search path the interpreter's own.
    let guarded = lab.path("tmp/pth1");
    std::fs::create_dir_all(&guarded).unwrap();
    std::os::unix::fs::symlink(&lab.python, guarded.join("python3")).unwrap();
    lab.evil("tmp/pth1/python3._pth", &pth);
    let out = lab.sh(
        &base,
        "exec \"$DIR/python3\" path.py",
        &[("DIR", guarded.to_str().unwrap())],
    );
    assert!(
        out.status.success() && !text(&out.stdout).contains(attacker_dir),
        "the attacker's ._pth set the search path: {}",
        describe(&out)
    );
    assert!(
        !lab.agent.denies_for("python3._pth").is_empty(),
        "no refusal of the ._pth:\n{}",
        lab.agent.log_text()
    );
}

/// Family 1b by path: the file of an interpreter module run as the main script (by its
/// path, its bytecode, a symlink to it, relative to the stdlib) is that module, refused at
/// the open with the rule of its `-m` spelling; imported by a signed script it runs.
#[test]
fn interpreter_module_files_as_main_scripts_are_refused() {
    let lab = Lab::with_stdlib();
    let marker = lab.marker("bypath");
    let line = format!(
        "open({:?}, 'w').write('ran'); print('PAYLOAD RAN')",
        marker.to_str().unwrap()
    );
    let evil = lab.evil("tmp/evil.py", payload(&marker));
    let evil = evil.to_str().unwrap();
    let lib = std::fs::canonicalize(&lab.python)
        .unwrap()
        .parent()
        .unwrap()
        .join("../lib")
        .join(lab.python.file_name().unwrap());
    let lib = std::fs::canonicalize(lib).unwrap();
    let tag = {
        let name = lab.python.file_name().unwrap().to_str().unwrap();
        format!(
            "cpython-{}",
            name.trim_start_matches("python").replace('.', "")
        )
    };
    let cwd = lab.path("tmp");
    let base = lab.path("base");
    // nobody's own name for the module file.
    let link = lab.path("tmp/t.py");
    std::os::unix::fs::symlink(lib.join("timeit.py"), &link).unwrap();
    let _ = std::process::Command::new("chown")
        .args(["-h", "nobody:nogroup"])
        .arg(&link)
        .status();
    let lib_str = lib.to_str().unwrap().to_string();
    let env = [
        ("EVIL", evil),
        ("LINE", line.as_str()),
        ("LIB", lib_str.as_str()),
    ];
    let pyc = format!("\"$LIB/__pycache__/timeit.{tag}.pyc\" -n 1 -s \"$LINE\" pass");
    // Issue 25: an operand through 40 symlinks (the kernel's limit) reaches timeit.py for the
    // interpreter; a second walk through /proc/PID/cwd (one link more) would fail.
    let hops = lab.path("tmp/hops");
    std::fs::create_dir_all(&hops).unwrap();
    std::os::unix::fs::symlink(".", hops.join("s")).unwrap();
    std::os::unix::fs::symlink(lib.join("timeit.py"), hops.join("t")).unwrap();
    std::os::unix::fs::symlink(lib.join("asyncio"), lab.path("tmp/al")).unwrap();
    let through_hops = format!("{}t -n 1 -s \"$LINE\" pass", "s/".repeat(39));
    // The module's file under a name of nobody's: a directory whose `__main__.py` links to
    // it, run as the directory or by `-m` (and `-m` of the link `t.py` above). CPython runs
    // it as `__main__`, whatever the name.
    for (dir, module) in [("tmp/dt", "timeit.py"), ("tmp/dc", "code.py")] {
        std::fs::create_dir_all(lab.path(dir)).unwrap();
        std::os::unix::fs::symlink(lib.join(module), lab.path(dir).join("__main__.py")).unwrap();
    }
    // Under another module path: a link to the stdlib directory makes `-m s.timeit` the
    // stdlib's timeit; a link to asyncio makes `-m x` its REPL.
    std::os::unix::fs::symlink(&lib, lab.path("tmp/s")).unwrap();
    std::os::unix::fs::symlink(lib.join("asyncio"), lab.path("tmp/x")).unwrap();
    let attacks: Vec<(&Path, String, &str)> = vec![
        (
            &cwd,
            "\"$LIB/timeit.py\" -n 1 -s \"$LINE\" pass".into(),
            "no-inline-code",
        ),
        (&cwd, pyc, "no-inline-code"),
        (&cwd, "t.py -n 1 -s \"$LINE\" pass".into(), "no-inline-code"),
        (
            &lib,
            "timeit.py -n 1 -s \"$LINE\" pass".into(),
            "no-inline-code",
        ),
        (
            &lib,
            "-I ./timeit.py -n 1 -s \"$LINE\" pass".into(),
            "no-inline-code",
        ),
        (
            &base,
            "\"$LIB/pdb.py\" -c \"$LINE\" -c c ok.py < /dev/null".into(),
            "no-inline-code",
        ),
        (&hops, through_hops, "no-inline-code"),
        (&cwd, "-m t -n 1 -s \"$LINE\" pass".into(), "no-inline-code"),
        (&cwd, "dt -n 1 -s \"$LINE\" pass".into(), "no-inline-code"),
        (
            &cwd,
            "-m dt -n 1 -s \"$LINE\" pass".into(),
            "no-inline-code",
        ),
        (&cwd, "dc < \"$EVIL\"".into(), "no-stdin-code"),
        (&cwd, "-m dc < \"$EVIL\"".into(), "no-stdin-code"),
        (
            &cwd,
            "-m s.timeit -n 1 -s \"$LINE\" pass".into(),
            "no-inline-code",
        ),
        (&cwd, "-m s.code < \"$EVIL\"".into(), "no-stdin-code"),
        (&cwd, "-m x < \"$EVIL\"".into(), "no-stdin-code"),
        (&cwd, "\"$LIB/code.py\" < \"$EVIL\"".into(), "no-stdin-code"),
        (
            &cwd,
            "-E \"$LIB/code.py\" < \"$EVIL\"".into(),
            "no-stdin-code",
        ),
    ];
    for (dir, args, rule) in &attacks {
        // Without guard (the host's python3 is not profiled), the payload runs.
        let out = lab.sh(dir, &format!("exec {PYTHON} {args}"), &env);
        assert!(
            marker.exists(),
            "{args}: the attack does not work unguarded\n{}",
            describe(&out)
        );
        std::fs::remove_file(&marker).unwrap();
        let before = lab.denies(rule).len();
        let out = lab.sh(dir, &format!("exec \"$PY\" {args}"), &env);
        assert_refused(args, &out, &marker);
        assert!(
            lab.denies_after(rule, before).len() > before,
            "{args}: not refused by {rule}\n{}\n{}",
            describe(&out),
            lab.agent.log_text()
        );
    }
    // A package directory runs its `__main__`: `asyncio`'s fails on its relative import
    // when run by path (CPython 3.11), so it cannot be shown running a payload, but its
    // `__main__` is refused as the main script before it gets that far.
    for args in [
        "\"$LIB/asyncio\"",
        "\"$LIB/asyncio/__main__.py\"",
        "al",
        "al/",
    ] {
        let before = lab.denies("asyncio/__main__").len();
        let out = lab.sh(&cwd, &format!("exec \"$PY\" {args} < \"$EVIL\""), &env);
        assert_refused(args, &out, &marker);
        let denies = lab.denies_after("asyncio/__main__", before);
        assert!(
            denies.len() > before && denies.last().unwrap().contains("no-stdin-code"),
            "{args}: its __main__ not refused by no-stdin-code\n{}\n{denies:?}",
            describe(&out)
        );
    }
    lab.baseline();
    // Imported, the same files run: `import timeit`, `import pdb`, `import code`, asyncio.
    lab.signed(
        "base/imports.py",
        "import timeit, pdb, code, asyncio\n\
         print('imported', timeit.timeit('pass', number=1) >= 0, asyncio.run(asyncio.sleep(0, 'ran')))\n",
    );
    let out = lab.py(&base, &["imports.py"], &[]);
    assert!(
        out.status.success() && text(&out.stdout) == "imported True ran\n",
        "imports refused: {}\n{}",
        describe(&out),
        lab.agent.log_text()
    );
    // Other stdlib files still run as main scripts.
    let out = lab.sh(&base, "exec \"$PY\" \"$LIB/this.py\"", &env);
    assert!(
        out.status.success() && text(&out.stdout).contains("Beautiful is better"),
        "this.py refused: {}",
        describe(&out)
    );
}

/// Family 7 (the rest of 2, 3 and 7 is in the catalog): PYTHONINSPECT and PYTHONSTARTUP
/// are refused at exec even where they would run nothing (no `-i`, no terminal: shown by no
/// payload without guard, so not in the catalog); data on stdin for a signed script is fine.
#[test]
fn code_environment_is_killed_at_exec() {
    let lab = Lab::new();
    let marker = lab.marker("stdin");
    let evil = lab.evil("tmp/evil.py", payload(&marker));
    let evil = evil.to_str().unwrap();
    let cwd = lab.path("tmp");
    let env = [("EVIL", evil)];
    for script in [
        "cat \"$EVIL\" | PYTHONINSPECT=1 \"$PY\" ../base/ok.py",
        "env PYTHONSTARTUP=\"$EVIL\" \"$PY\" -i ../base/ok.py < /dev/null",
        "env PYTHONSTARTUP=\"$EVIL\" \"$PY\" ../base/ok.py",
    ] {
        let out = lab.sh(&cwd, &format!("exec {script}"), &env);
        assert_killed_in_shell(script, &out, &marker);
    }
    lab.baseline();
    // Data on stdin for a signed script is fine.
    lab.signed(
        "base/cat.py",
        "import sys\nprint(sys.stdin.read().upper())\n",
    );
    let out = lab.sh(
        &lab.path("base"),
        "echo data | \"$PY\" cat.py && \"$PY\" cat.py < ok.py",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).starts_with("DATA\n"),
        "{}",
        describe(&out)
    );
}

/// Family 8 (with 9 and 10, the rest of it, in the catalog): a module shadowing the stdlib
/// next to a signed script is refused, and once it is gone the script runs.
#[test]
fn a_refused_shadow_leaves_the_signed_script_working() {
    let lab = Lab::new();
    let marker = lab.marker("shadow");
    let code = payload(&marker);
    lab.signed("app/uses_json.py", "import json\nprint(json.dumps([1]))\n");
    let shadow = lab.evil("app/json.py", &code);
    let out = lab.py(&lab.path("app"), &["uses_json.py"], &[]);
    assert_refused("shadowing json.py next to a signed script", &out, &marker);
    std::fs::remove_file(&shadow).unwrap();
    let out = lab.py(&lab.path("app"), &["uses_json.py"], &[]);
    assert_eq!(text(&out.stdout), "[1]\n", "{}", describe(&out));
    lab.baseline();
}

const PYC_OF: &str = r#"
import sys, importlib._bootstrap_external as b, os
src, target, kind = sys.argv[1], sys.argv[2], sys.argv[3]
source = open(src, 'rb').read() if os.path.exists(src) else b''
code = compile(sys.argv[4], src, 'exec')
if kind == 'timestamp':
    st = os.stat(src) if os.path.exists(src) else os.stat('/')
    data = b._code_to_timestamp_pyc(code, st.st_mtime, st.st_size)
else:
    data = b._code_to_hash_pyc(code, b._imp.source_hash(b._RAW_MAGIC_NUMBER, source), kind == 'checked')
os.makedirs(os.path.dirname(target) or '.', exist_ok=True)
open(target, 'wb').write(data)
"#;

fn pyc(lab: &Lab, source: &Path, target: &Path, kind: &str, code: &str) {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", PYC_OF])
        .arg(source)
        .arg(target)
        .args([kind, code]);
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert!(out.status.success(), "pyc: {}", describe(&out));
    let mut dir = target.parent().unwrap();
    while dir != lab.fs.path() && dir != lab.path("tmp") {
        chown(dir, NOBODY, NOBODY);
        dir = dir.parent().unwrap();
    }
    chown(target, NOBODY, NOBODY);
}

/// Family 13 (with 11 and 12, in the catalog): sourceless pycs on PYTHONPATH that a
/// signed script does not import leave it working.
#[test]
fn unimported_sourceless_bytecode_leaves_signed_scripts_working() {
    let lab = Lab::new();
    let marker = lab.marker("bytecode");
    let code = payload(&marker);
    let sourceless = lab.path("tmp/sl/evilmod.pyc");
    pyc(
        &lab,
        Path::new("/nonexistent"),
        &sourceless,
        "timestamp",
        &code,
    );
    lab.signed("app/uses_json.py", "import json\nprint(json.dumps([1]))\n");
    let out = lab.py(
        &lab.path("app"),
        &["uses_json.py"],
        &[("PYTHONPATH", lab.path("tmp/sl").to_str().unwrap())],
    );
    assert_eq!(text(&out.stdout), "[1]\n", "{}", describe(&out));
    assert!(!marker.exists());
    lab.baseline();
}

/// `python3 -m compileall` then `guard sign -r`: the signed pycs are used, for nobody.
#[test]
fn compileall_then_guard_sign_signs_source_and_bytecode() {
    let lab = Lab::new();
    lab.signed("pkg/main.py", "import helper\nprint(helper.VALUE)\n");
    let helper = lab.fs.write("pkg/helper.py", "VALUE = 'from bytecode'\n");
    let sign_all = || {
        let out = guard(&[&"sign", &"-r", &"--key", &keys().private, &lab.path("pkg")]);
        assert!(out.status.success(), "guard sign: {}", describe(&out));
    };
    // Under enforcement the profiled interpreter may not compile unsigned sources (compiling
    // reads them as code): sign the sources, compile, then sign again for the pycs.
    let mut cmd = Command::new(&lab.python);
    cmd.args(["-m", "compileall", "-q"]).arg(lab.path("pkg"));
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert!(
        !out.status.success(),
        "compiled unsigned sources: {}",
        describe(&out)
    );
    sign_all();
    let mut cmd = Command::new(&lab.python);
    cmd.args(["-m", "compileall", "-q"]).arg(lab.path("pkg"));
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert!(out.status.success(), "{}", describe(&out));
    sign_all();
    // The source is unreadable for nobody: the import can only come from the pyc.
    set_mode(&helper, 0o600);
    let out = lab.py(&lab.path("pkg"), &["main.py"], &[]);
    assert_eq!(
        text(&out.stdout),
        "from bytecode\n",
        "signed pyc not used: {}\n{}",
        describe(&out),
        lab.agent.log_text()
    );
    // The pyc was allowed: verified at that open (an audited miss), from the cache, or
    // left to the kernel after `guard sign` opened it (verified ahead): no allow needs to be
    // logged, and none of its opens was refused.
    assert!(
        lab.denies("helper.").iter().all(|l| !l.contains(".pyc")),
        "{:?}",
        lab.agent.audit_lines()
    );
    lab.baseline();
}

/// Family 16 (14 is in the catalog): rewrites, symlink swaps and bind mounts over a trusted
/// module, which need root's writes between or during the runs.
#[test]
fn forged_signatures_rewrites_and_swaps_are_refused() {
    let lab = Lab::new();
    let marker = lab.marker("forged");
    let code = payload(&marker);
    let good = lab.signed("base/good.py", "print('good')\n");
    // Family 16: same-size rewrite with mtime restored, after a run that cached it.
    let same = lab.signed(
        "base/same.py",
        &format!("{:<width$}\n", "print('same')", width = code.len() - 1),
    );
    let out = lab.py(&lab.path("base"), &["same.py"], &[]);
    assert_eq!(text(&out.stdout), "same\n", "{}", describe(&out));
    let before = std::fs::metadata(&same).unwrap();
    std::fs::write(&same, &code).unwrap();
    assert_eq!(std::fs::metadata(&same).unwrap().len(), before.len());
    let mtime = before.modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&same)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = lab.py(&lab.path("base"), &["same.py"], &[]);
    assert_refused("same-size rewrite", &out, &marker);
    // A symlink the attacker swaps between a signed script and his own, racing the runs:
    // the decision is on the opened file, so only the signed one ever runs.
    let evil = lab.evil("tmp/evil.py", &code);
    let out = lab.sh(
        &lab.path("tmp"),
        &format!(
            "ln -sf {good} link.py\n\
             ( end=$((SECONDS+3)); while [ $SECONDS -lt $end ]; do \
               ln -sf {evil} link.new && mv -T link.new link.py; \
               ln -sf {good} link.new && mv -T link.new link.py; done ) &\n\
             good=0; for i in $(seq 40); do \"$PY\" link.py 2>/dev/null && good=$((good+1)); done\n\
             wait; echo runs=$good",
            good = good.display(),
            evil = evil.display()
        ),
        &[],
    );
    assert!(
        !marker.exists(),
        "symlink swap ran the payload\n{}",
        describe(&out)
    );
    assert!(!text(&out.stdout).contains("PAYLOAD"), "{}", describe(&out));
    // A bind mount over a trusted module, by root in a private mount namespace and by
    // nobody in a user namespace: the marked filesystem still sees the evil inode.
    let trusted = lab.signed("lib/trusted.py", "print('trusted')\n");
    let out = lab.py(&lab.path("lib"), &["trusted.py"], &[]);
    assert_eq!(text(&out.stdout), "trusted\n", "{}", describe(&out));
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {evil} {trusted} && exec setpriv --reuid={NOBODY} --regid={NOBODY} \
             --clear-groups -- {py} {trusted}",
            evil = evil.display(),
            trusted = trusted.display(),
            py = lab.python.display()
        ))
        .current_dir(lab.path("lib"));
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert_refused("root bind mount over a trusted module", &out, &marker);
    let out = lab.sh(
        &lab.path("lib"),
        &format!(
            "exec unshare -Urm sh -c 'mount --bind {evil} {trusted} && exec \"$PY\" {trusted}'",
            evil = evil.display(),
            trusted = trusted.display()
        ),
        &[],
    );
    assert_refused("user-namespace bind mount", &out, &marker);
    let out = lab.py(&lab.path("lib"), &["trusted.py"], &[]);
    assert_eq!(text(&out.stdout), "trusted\n", "{}", describe(&out));
    lab.baseline();
}

/// The system's dynamic loader, as the profiled python3 names it (`PT_INTERP`).
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Family 18: the dynamic loader run directly (`ld.so python3 …`) runs the interpreter
/// under the loader's identity. Every spelling of the loader is refused at exec whatever
/// program it is asked to launch (the catalog's family 18; here root's hard link to it),
/// and `ldd` (which runs the loader in modes that run nothing) keeps working.
#[test]
fn loader_launches_are_killed_at_exec() {
    let lab = Lab::new();
    let marker = lab.marker("loader");
    let code = payload(&marker);
    let cwd = lab.path("tmp");
    // Root's hard link to the loader (the same inode): a name the catalog cannot make.
    let hard = lab.bin.path().join("ld-hard");
    std::fs::hard_link(std::fs::canonicalize(LOADER).unwrap(), &hard).unwrap();
    let env = [
        ("LD", LOADER),
        ("HARD", hard.to_str().unwrap()),
        ("CODE", &code),
    ];
    let out = lab.sh(&cwd, "exec \"$HARD\" \"$PY\" -c \"$CODE\"", &env);
    assert_killed_in_shell("the loader's hard link", &out, &marker);
    let refusals = lab
        .agent
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"rule\":\"no-loader-launch\""))
        .count();
    assert!(refusals >= 1, "{refusals} loader refusals audited");

    // ldd runs the loader with --version, --verify and LD_TRACE_LOADED_OBJECTS=1.
    for target in [lab.python.to_str().unwrap(), "/usr/bin/python3"] {
        let out = lab.sh(&cwd, "exec ldd \"$T\"", &[("T", target)]);
        assert!(
            out.status.success() && text(&out.stdout).contains("libc.so.6"),
            "ldd {target}: {}",
            describe(&out)
        );
    }
    for script in [
        "exec \"$LD\" --version",
        "exec \"$LD\" --verify \"$PY\"",
        "exec \"$LD\" --list \"$PY\"",
        "exec env LD_TRACE_LOADED_OBJECTS=1 \"$LD\" \"$PY\" -c \"$CODE\"",
    ] {
        let out = lab.sh(&cwd, script, &env);
        assert!(out.status.success(), "{script}: {}", describe(&out));
    }
    assert!(!marker.exists(), "a loader mode ran the payload");
    lab.baseline();
}

/// Issue 15, class 1: an open is code by the name the interpreter asked for (the catalog's
/// `names`: code-named links to data-named files are code). Data stays data: a signed script
/// named `tool` reads a data file also named `tool`.
#[test]
fn data_named_like_a_script_stays_data() {
    let lab = Lab::new();
    let dir = lab.path("tmp/links");
    let tool = lab.signed(
        "base/tool",
        "import sys\nprint(open(sys.argv[1]).read(), end='')\n",
    );
    lab.evil("tmp/links/tool", "just data\n");
    let out = lab.py(&dir, &[tool.to_str().unwrap(), "tool"], &[]);
    assert_eq!(text(&out.stdout), "just data\n", "{}", describe(&out));
    lab.baseline();
}

/// Issue 16: ACL entries are permissions. A signed, root-owned 0644 file whose ACL lets the
/// runner write it (a named user, a named group the runner is in) is writable by the
/// runner (W^X), whatever its mode bits say; a mask without write takes that away.
#[test]
fn acl_entries_that_let_the_runner_write_are_refused() {
    let lab = Lab::new();
    let marker = lab.marker("acl");
    let cwd = lab.path("base");
    for (name, acl, refused) in [
        ("user.py", "u:nobody:rw", true),
        ("group.py", &format!("g:{NOBODY}:rw") as &str, true),
        ("masked.py", "u:nobody:rw,m::r", false),
        ("read_only.py", "u:nobody:r", false),
    ] {
        let script = lab.signed(&format!("base/{name}"), &payload(&marker));
        let out = run("setfacl", &[&"-m", &acl, &script]);
        assert!(out.status.success(), "setfacl {acl}: {}", describe(&out));
        let out = lab.py(&cwd, &[name], &[]);
        if refused {
            assert_refused(name, &out, &marker);
            let denies = lab.denies(name);
            assert!(
                denies
                    .iter()
                    .any(|d| d.contains("not-writable-by-runner") && d.contains("ACL")),
                "{name}: {denies:?}"
            );
        } else {
            assert!(
                marker.exists(),
                "{name} ({acl}) refused: {}",
                describe(&out)
            );
            std::fs::remove_file(&marker).unwrap();
        }
    }
    lab.baseline();
}

/// Issue 16: native code a user made, or can change, does not run, whichever program runs
/// it: the default `[native] code = "trusted-owner"`, enforced in host mode by the exec
/// gate (the process is killed before it runs the code). Each attack runs first without
/// guard, where it must work; root-owned programs and libraries, and the signed baseline,
/// keep running.
#[test]
fn native_code_users_made_does_not_run() {
    let fs = Tmpfs::new();
    let dir = fs.path().join("home");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o1777);
    let out_dir = fs.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    set_mode(&out_dir, 0o1777);
    let marker = |name: &str| out_dir.join(name);
    // A program and a library that each leave a marker, built by root, handed to nobody.
    let program_source = dir.join("prog.c");
    std::fs::write(
        &program_source,
        "#include <fcntl.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         int main(void) { close(open(getenv(\"M\"), O_CREAT | O_WRONLY, 0644)); return 0; }\n",
    )
    .unwrap();
    let library_source = dir.join("evil.c");
    std::fs::write(
        &library_source,
        "#include <fcntl.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         __attribute__((constructor)) static void run(void) { \
         const char *m = getenv(\"M\"); if (m) close(open(m, O_CREAT | O_WRONLY, 0644)); }\n",
    )
    .unwrap();
    let program = dir.join("prog");
    let library = dir.join("evil.so");
    for args in [
        vec![
            &"-o" as &dyn AsRef<std::ffi::OsStr>,
            &program,
            &program_source,
        ],
        vec![&"-shared", &"-fPIC", &"-o", &library, &library_source],
    ] {
        let out = run("gcc", &args);
        assert!(out.status.success(), "gcc: {}", describe(&out));
    }
    chown(&program, NOBODY, NOBODY);
    chown(&library, NOBODY, NOBODY);
    // Root's copies of the program: one as root leaves it, the others with ACL entries.
    let copy = |name: &str, acl: Option<&str>| {
        let path = dir.join(name);
        std::fs::copy(&program, &path).unwrap();
        chown(&path, 0, 0);
        set_mode(&path, 0o755);
        if let Some(acl) = acl {
            let out = run("setfacl", &[&"-m", &acl, &path]);
            assert!(out.status.success(), "setfacl {acl}: {}", describe(&out));
        }
    };
    copy("root_prog", None);
    copy("acl_user", Some("u:nobody:rwx"));
    copy("acl_group", Some(&format!("g:{NOBODY}:rwx")));
    copy("acl_masked", Some("u:nobody:rwx,m::rx"));
    let python = std::fs::canonicalize(PYTHON).unwrap();
    let libm = "/lib/x86_64-linux-gnu/libm.so.6";

    // (name, script run by nobody in `dir` with $M its marker, refused with guard).
    // fexecve() of a copy held in a memfd, by a program nobody may run (perl).
    std::fs::write(
        dir.join("memfd.pl"),
        "my $name = 'x'; my $fd = syscall(319, $name, 0); die \"memfd: $!\" if $fd < 0;\n\
         open(my $in, '<', $ENV{REAL}) or die; open(my $out, '>&=', $fd) or die;\n\
         local $/; select((select($out), $| = 1)[0]); print {$out} <$in>;\n\
         exec {\"/proc/self/fd/$fd\"} 'python3', '-c', \"open('$ENV{M}', 'w')\" or die \"exec: $!\";\n",
    )
    .unwrap();
    let memfd = "perl memfd.pl";
    // A readable mapping that READ_IMPLIES_EXEC (set by the process itself: exec clears it
    // for 64-bit programs) makes executable: the kernel's prot, not the one spelled. Leaves
    // the marker when the user's file is mapped executable.
    std::fs::write(
        dir.join("implied.py"),
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None)\n\
         libc.mmap.restype = ctypes.c_void_p\n\
         libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, \
         ctypes.c_int, ctypes.c_long]\n\
         libc.personality(0x0400000)\n\
         fd = os.open(sys.argv[1], os.O_RDONLY)\n\
         libc.mmap(None, 4096, 1, 2, fd, 0)\n\
         for line in open('/proc/self/maps'):\n\
         \x20   if line.rstrip().endswith(sys.argv[1]) and line.split()[1][2] == 'x':\n\
         \x20       open(os.environ['M'], 'w')\n",
    )
    .unwrap();
    let attacks: Vec<(&str, String, bool)> = vec![
        (
            "copy_c",
            "cp \"$REAL\" ./p1 && ./p1 -c \"open('$M', 'w')\"".into(),
            true,
        ),
        (
            "copy_script",
            "cp \"$REAL\" ./p2 && echo \"open('$M', 'w')\" > evil.py && ./p2 evil.py".into(),
            true,
        ),
        (
            "copy_modified",
            "cp \"$REAL\" ./p3 && printf 'guard' >> ./p3 && ./p3 -c \"open('$M', 'w')\"".into(),
            true,
        ),
        ("memfd_fexecve", memfd.into(), true),
        (
            "loader_copy",
            "cp /lib64/ld-linux-x86-64.so.2 ./ld && ./ld \"$REAL\" -c \"open('$M', 'w')\"".into(),
            true,
        ),
        ("own_build", "./prog".into(), true),
        (
            "ld_preload",
            "LD_PRELOAD=\"$PWD/evil.so\" /bin/true".into(),
            true,
        ),
        (
            "ctypes",
            "\"$REAL\" -c \"import ctypes; ctypes.CDLL('$PWD/evil.so')\"".into(),
            true,
        ),
        (
            "dlopen",
            "perl -MDynaLoader -e 'DynaLoader::dl_load_file(\"$ENV{PWD}/evil.so\") or die'".into(),
            true,
        ),
        (
            "read_implies_exec",
            "\"$REAL\" implied.py \"$PWD/evil.so\"".into(),
            true,
        ),
        ("acl_user", "./acl_user".into(), true),
        ("acl_group", "./acl_group".into(), true),
        // Baselines: root's programs and libraries, a mask that takes the write away.
        ("root_prog", "./root_prog".into(), false),
        ("acl_masked", "./acl_masked".into(), false),
        (
            "root_library",
            format!("LD_PRELOAD={libm} ./root_prog"),
            false,
        ),
        (
            "root_python",
            "\"$REAL\" -c \"import ctypes.util; open('$M', 'w')\"".into(),
            false,
        ),
    ];
    let attempt = |name: &str, script: &str| -> (Output, bool) {
        let m = marker(name);
        let _ = std::fs::remove_file(&m);
        let mut cmd = nobody(
            &dir,
            &[
                ("M", m.to_str().unwrap()),
                ("REAL", python.to_str().unwrap()),
            ],
        );
        cmd.env("PWD", &dir).args(["bash", "-c", script]);
        let out = run_with_timeout(&mut cmd, LIMIT);
        let ran = m.exists();
        let _ = std::fs::remove_file(&m);
        (out, ran)
    };
    without_any_agent(|| {
        for (name, script, _) in &attacks {
            let (out, ran) = attempt(name, script);
            assert!(
                ran,
                "{name} does not run even without guard:\n{}",
                describe(&out)
            );
        }
    });

    let lab = Lab::new();
    for (name, script, refused) in &attacks {
        let (out, ran) = attempt(name, script);
        if *refused {
            assert!(!ran, "{name} ran:\n{}", describe(&out));
            assert!(!out.status.success(), "{name}:\n{}", describe(&out));
        } else {
            assert!(
                ran,
                "{name} refused:\n{}\n{}",
                describe(&out),
                lab.agent.log_text()
            );
        }
    }
    let native: Vec<String> = lab
        .agent
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"code\":\"native\""))
        .collect();
    for rule in ["trusted-owner", "not-deleted", "not-writable-by-runner"] {
        assert!(
            native.iter().any(|l| l.contains(rule)),
            "no native {rule} refusal audited: {native:#?}"
        );
    }
    lab.baseline();
}

/// Issue 17: identities follow the files. A package update renames a new interpreter binary
/// over the old one: a new inode, unknown to the gate and the agent. The agent adopts it at
/// its first exec (the kernel waits for the answer), so `-c` is killed and unsigned scripts
/// are refused from the very first run of each new inode, with no reload. Without the
/// adoption the first run of each copy would be no interpreter to guard at all.
#[test]
fn a_replaced_interpreter_is_profiled_from_its_first_exec() {
    let lab = Lab::with_stdlib();
    let marker = lab.marker("replaced");
    let python = lab.python.clone();
    let staging = python.with_file_name(".python.dpkg-new");
    let real = std::fs::canonicalize(PYTHON).unwrap();
    let evil = lab.evil("tmp/replaced.py", payload(&marker));
    for round in 0..10 {
        // As dpkg does: write the new file beside it, then rename it over the old one.
        std::fs::copy(&real, &staging).unwrap();
        set_mode(&staging, 0o755);
        std::fs::rename(&staging, &python).unwrap();
        let out = lab.py(&lab.path("tmp"), &["-c", &payload(&marker)], &[]);
        assert_killed(&format!("round {round}: -c"), &out, &marker);
        std::fs::copy(&real, &staging).unwrap();
        set_mode(&staging, 0o755);
        std::fs::rename(&staging, &python).unwrap();
        let out = lab.py(&lab.path("tmp"), &[evil.to_str().unwrap()], &[]);
        assert_refused(&format!("round {round}: unsigned script"), &out, &marker);
    }
    assert!(
        lab.agent
            .log_text()
            .contains("adopted before its first exec"),
        "{}",
        lab.agent.log_text()
    );
    lab.baseline();
}

/// Issue 22.5: interpreter front ends are interpreters too. Debian's `pydoc3` is a script
/// that runs `pydoc.cli()`, which imports a path operand as a module (`pydoc3 ./x.txt` runs
/// x.txt); `-m pydoc` is refused as inline code, and so is the front end: a script beside
/// the interpreter whose whole work is a listed module's entry point is that module.
#[test]
fn interpreter_front_ends_are_their_modules() {
    let front_end = |python: &Path| {
        format!(
            "#!{}\n\nimport pydoc\nif __name__ == '__main__':\n    pydoc.cli()\n",
            python.display()
        )
    };
    // Without guard, the host's own front end runs the payload.
    without_any_agent(|| {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o777);
        let marker = dir.path().join("ran");
        let real = std::fs::canonicalize(PYTHON).unwrap();
        let tool = dir.path().join("pydoc3");
        std::fs::write(&tool, front_end(&real)).unwrap();
        set_mode(&tool, 0o755);
        std::fs::write(dir.path().join("x.txt"), payload(&marker)).unwrap();
        let mut cmd = nobody(dir.path(), &[]);
        cmd.arg(&tool).arg("./x.txt");
        let out = run_with_timeout(&mut cmd, LIMIT);
        assert!(
            marker.exists(),
            "pydoc3 ./x.txt without guard: {}",
            describe(&out)
        );
    });

    let lab = Lab::with_stdlib();
    let marker = lab.marker("front_end");
    let tool = lab.fs.write("usr/bin/pydoc3", front_end(&lab.python));
    set_mode(&tool, 0o755);
    sign(&tool);
    lab.agent.signal(nix::sys::signal::Signal::SIGHUP);
    lab.agent.wait_for_status("reloads", 1);
    lab.evil("tmp/x.txt", payload(&marker));
    let mut cmd = nobody(&lab.path("tmp"), &[]);
    cmd.arg(&tool).arg("./x.txt");
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert_refused("pydoc3 ./x.txt", &out, &marker);
    assert!(
        lab.denies("pydoc3")
            .iter()
            .any(|d| d.contains("no-inline-code")),
        "{:?}",
        lab.agent.audit_lines()
    );
    lab.baseline();
}

/// Issue 17: an interpreter module's file replaced by a package update (a new inode renamed
/// over `timeit.py`, signed again by the administrator) is still that module: run as the
/// main script with `-s CODE` it is refused as `-m timeit` is, with no reload. Without the
/// rule its new identity would make it a signed script like any other.
#[test]
fn a_replaced_interpreter_module_file_is_still_the_module() {
    let lab = Lab::with_stdlib();
    let marker = lab.marker("replaced_module");
    let line = format!(
        "open({:?}, 'w').write('ran'); print('PAYLOAD RAN')",
        marker.to_str().unwrap()
    );
    let lib =
        std::fs::canonicalize(lab.path("usr/lib").join(lab.python.file_name().unwrap())).unwrap();
    let timeit = lib.join("timeit.py");
    let staging = lib.join("timeit.py.dpkg-new");
    std::fs::copy(&timeit, &staging).unwrap();
    set_mode(&staging, 0o644);
    sign(&staging);
    std::fs::rename(&staging, &timeit).unwrap();
    let out = lab.py(
        &lab.path("tmp"),
        &[timeit.to_str().unwrap(), "-n", "1", "-s", &line, "pass"],
        &[],
    );
    assert_refused("the replaced timeit.py -s CODE", &out, &marker);
    assert!(
        lab.denies("timeit.py")
            .iter()
            .any(|d| d.contains("no-inline-code")),
        "{:?}",
        lab.agent.audit_lines()
    );
    // Imported, it is a module like any other.
    lab.signed("base/uses_timeit.py", "import timeit\nprint('imported')\n");
    let out = lab.py(&lab.path("base"), &["uses_timeit.py"], &[]);
    assert_eq!(text(&out.stdout), "imported\n", "{}", describe(&out));
    lab.baseline();
}

/// Threat model W: a warning filter's category is a module CPython imports at start-up, by
/// the name given, before the script; a listed package's `__main__` imported runs its
/// command line (pygments' calls `main(sys.argv)`, and `-x -l FILE:CLASS` execs a lexer
/// file it reads as data). `-W` and `PYTHONWARNINGS` alike; the same file opened by no
/// filter (a byte-compilation, an import by a signed script) stays a module.
#[test]
fn a_warning_filter_does_not_run_a_listed_main() {
    let lab = Lab::with_stdlib();
    let marker = lab.marker("warnings");
    lab.evil("tmp/evil.py.txt", payload(&marker));
    let host_dist = Path::new("/usr/lib/python3/dist-packages");
    assert!(
        host_dist.join("pygments/__main__.py").exists(),
        "python3-pygments is missing (cargo xtask setup installs it)"
    );
    // A signed copy where the lab interpreter's module table looks; a reload finds it.
    for dir in ["usr/lib/python3", "usr/lib/python3/dist-packages"] {
        std::fs::create_dir_all(lab.path(dir)).unwrap();
        set_mode(&lab.path(dir), 0o755);
    }
    let dist = lab.path("usr/lib/python3/dist-packages");
    let out = run_with_timeout(
        Command::new("cp")
            .arg("-a")
            .arg(host_dist.join("pygments"))
            .arg(&dist),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = guard(&[&"sign", &"-r", &"--key", &keys().private, &dist]);
    assert!(out.status.success(), "{}", describe(&out));
    lab.agent.signal(nix::sys::signal::Signal::SIGHUP);
    lab.agent.wait_for_status("reloads", 1);

    let cwd = lab.path("tmp");
    let script = lab.path("base/ok.py");
    let script = script.to_str().unwrap();
    for (how, option, variable) in [
        ("-W", "-W ignore::pygments.__main__.X", None),
        ("PYTHONWARNINGS", "", Some("ignore::pygments.__main__.X")),
    ] {
        let run = |python: &str, path: &Path| {
            let mut env = vec![("PYTHONPATH", path.to_str().unwrap())];
            if let Some(value) = variable {
                env.push(("PYTHONWARNINGS", value));
            }
            lab.sh(
                &cwd,
                &format!("exec {python} {option} {script} -x -l evil.py.txt:P < /dev/null"),
                &env,
            )
        };
        let out = run(PYTHON, host_dist);
        assert!(
            marker.exists(),
            "{how}: the attack does not work unguarded\n{}",
            describe(&out)
        );
        std::fs::remove_file(&marker).unwrap();
        let out = run("\"$PY\"", &dist);
        assert_not_ran(how, &out, &marker);
        assert!(
            !lab.denies("pygments").is_empty(),
            "{how}: no refusal of pygments' __main__ logged\n{}",
            describe(&out)
        );
    }
    lab.baseline();
    // Opened by no warning filter, the same file is a module like any other.
    lab.signed(
        "base/compiles.py",
        "import sys\ncompile(open(sys.argv[1]).read(), sys.argv[1], 'exec')\nprint('compiled')\n",
    );
    let main = dist.join("pygments/__main__.py");
    let out = lab.py(
        &lab.path("base"),
        &["compiles.py", main.to_str().unwrap()],
        &[],
    );
    assert_eq!(text(&out.stdout), "compiled\n", "{}", describe(&out));
}

/// One attack of tests/attacks/catalog.txt (its header describes the fields).
#[derive(Debug)]
struct Attack {
    family: String,
    on: String,
    dir: String,
    expect: String,
    audit: Vec<String>,
    name: String,
    command: String,
}

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("attacks")
}

fn catalog() -> Vec<Attack> {
    let path = catalog_dir().join("catalog.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut attacks: Vec<Attack> = Vec::new();
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("    ") {
            let attack = attacks.last_mut().expect("a command follows a header");
            if !attack.command.is_empty() {
                attack.command.push('\n');
            }
            attack.command.push_str(command);
        } else if !line.is_empty() && !line.starts_with('#') {
            let f: Vec<&str> = line.splitn(6, '|').map(str::trim).collect();
            assert_eq!(f.len(), 6, "catalog header: {line}");
            assert!(
                ["both", "host", "vm"].contains(&f[1]),
                "catalog: where it runs: {line}"
            );
            assert!(
                ["killed", "refused", "not_ran"].contains(&f[3]) || f[3].starts_with("signed:"),
                "catalog: expected outcome: {line}"
            );
            attacks.push(Attack {
                family: f[0].into(),
                on: f[1].into(),
                dir: f[2].into(),
                expect: f[3].into(),
                audit: match f[4] {
                    "-" => Vec::new(),
                    needles => needles.split(',').map(|n| n.trim().into()).collect(),
                },
                name: f[5].into(),
                command: String::new(),
            });
        }
    }
    assert!(
        attacks.iter().all(|a| !a.command.is_empty()),
        "catalog: an attack without a command"
    );
    attacks
}

/// The variables the catalog's commands may use, for a bench's lab.
fn catalog_env(bench: &Bench) -> Vec<(String, String)> {
    let root = bench.fs.path().to_str().unwrap().to_string();
    let code = format!("open('{root}/out/ran', 'w').write('ran')\nprint('PAYLOAD RAN')\n");
    let line = code.lines().next().unwrap().to_string();
    let bin = bench.bin.path().to_str().unwrap();
    vec![
        ("PATH".into(), format!("{bin}:/usr/bin:/bin")),
        ("LANG".into(), "C.UTF-8".into()),
        ("PY".into(), bench.python.to_str().unwrap().into()),
        ("CODE".into(), code),
        ("LINE".into(), line),
        ("EVIL".into(), format!("{root}/tmp/evil.py")),
        ("BASE".into(), format!("{root}/base")),
        ("TMP".into(), format!("{root}/tmp")),
        ("OUT".into(), format!("{root}/out")),
        ("AHOME".into(), format!("{root}/home")),
        (
            "SHM_EVIL".into(),
            bench.shm.path().join("evil.py").to_str().unwrap().into(),
        ),
        ("ROOT".into(), root),
    ]
}

/// Makes the catalog's files (tests/attacks/setup.bash), as root, with no agent running.
fn catalog_setup(bench: &Bench, env: &[(String, String)]) -> Vec<(String, String)> {
    let mut cmd = Command::new("bash");
    // Root's own PATH: the pycs and zips are built by the host's python3.
    cmd.arg(catalog_dir().join("setup.bash"))
        .env("GUARD_KEY", &keys().private)
        .envs(env.iter().filter(|(k, _)| k != "PATH").map(|(k, v)| (k, v)));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(out.status.success(), "setup.bash: {}", describe(&out));
    let tag = std::fs::read_to_string(bench.fs.path().join("tag")).unwrap();
    let mut env = env.to_vec();
    env.push(("TAG".into(), tag.trim().into()));
    env
}

/// What an attack did.
struct Outcome {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    ran: bool,
    hung: bool,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "status {:?}{}\nstdout: {}\nstderr: {}",
            self.status,
            if self.hung { " (hung, killed)" } else { "" },
            self.stdout.chars().take(2000).collect::<String>(),
            self.stderr.chars().take(2000).collect::<String>()
        )
    }
}

/// Runs an attack as nobody (bash, its own process group, killed with every process it left
/// when it ends or after 30 s): whether the payload ran, by its marker in `out` or a line of
/// its own on stdout (a terminal echoes the typed payload's source).
fn attempt(root: &Path, env: &[(String, String)], attack: &Attack) -> Outcome {
    use std::os::unix::process::CommandExt;
    let out_dir = root.join("out");
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let _ = std::fs::remove_file(e.unwrap().path());
    }
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut cmd = nobody(&root.join(&attack.dir), &[]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(["bash", "-c", &attack.command])
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, hung) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    let stdout = text(&std::fs::read(&out_path).unwrap());
    let stderr = text(&std::fs::read(&err_path).unwrap());
    let ran = std::fs::read_dir(&out_dir).unwrap().next().is_some()
        || stdout.lines().any(|l| l.trim_end() == "PAYLOAD RAN");
    Outcome {
        status,
        stdout,
        stderr,
        ran,
        hung,
    }
}

/// Why an attack's outcome under guard is not the one the catalog expects, if it is not.
fn judge(lab: &Lab, attack: &Attack, outcome: &Outcome, denies_before: usize) -> Option<String> {
    let killed = outcome.status.code() == Some(128 + libc::SIGKILL)
        || outcome.status.signal() == Some(libc::SIGKILL);
    if outcome.ran {
        return Some("PAYLOAD RAN".into());
    }
    if outcome.hung {
        return Some("hung".into());
    }
    match attack.expect.as_str() {
        "killed" if !killed => return Some("not killed at exec".into()),
        "refused" if outcome.status.success() => return Some("exit 0".into()),
        "refused" if killed => return Some("killed at exec, expected a refused open".into()),
        signed => {
            if let Some(text) = signed.strip_prefix("signed:")
                && !outcome.stdout.starts_with(text)
            {
                return Some("the signed code did not run".into());
            }
        }
    }
    if attack.audit.is_empty() {
        return None;
    }
    // The agent audits after it answers: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let audited = lab
            .agent
            .audit_lines()
            .into_iter()
            .filter(|l| l.contains("\"decision\":\"deny\""))
            .skip(denies_before)
            .any(|l| attack.audit.iter().all(|n| l.contains(n.as_str())));
        if audited {
            return None;
        }
        if std::time::Instant::now() > deadline {
            return Some(format!("no deny audited with {:?}", attack.audit));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The attack catalog (tests/attacks/catalog.txt, shared with the VM's tests/vm/attacks.sh):
/// every attack the host runs is shown to run its payload without any agent, then run under
/// the lab's agent, where it must not; the signed baseline runs after each family.
/// GUARD_CATALOG_ALL=1 runs the VM's own attacks too, to see which host mode refuses.
#[test]
fn the_attack_catalog_is_refused() {
    let all = std::env::var_os("GUARD_CATALOG_ALL").is_some();
    let attacks: Vec<Attack> = catalog()
        .into_iter()
        .filter(|a| all || a.on != "vm")
        .collect();
    let bench = Bench::new(false);
    let env = catalog_env(&bench);
    let mut failures = Vec::new();
    without_any_agent(|| {
        let env = catalog_setup(&bench, &env);
        for attack in &attacks {
            let outcome = attempt(bench.fs.path(), &env, attack);
            if !outcome.ran {
                failures.push(format!(
                    "{} {}: the payload does not run even without guard: the attack is broken\n{}",
                    attack.family,
                    attack.name,
                    outcome.describe()
                ));
            }
        }
    });
    let env = catalog_setup(&bench, &env);
    let lab = bench.start();
    let baseline = |family: &str, failures: &mut Vec<String>| {
        let mut cmd = nobody(&lab.path("base"), &[]);
        cmd.arg(&lab.python).args(["ok.py", "x"]);
        let out = run_with_timeout(&mut cmd, LIMIT);
        if !(out.status.success() && text(&out.stdout) == "ok signed x\n") {
            failures.push(format!(
                "signed baseline refused after family {family}: {}",
                describe(&out)
            ));
        }
    };
    for (i, attack) in attacks.iter().enumerate() {
        let denies_before = lab.denies("").len();
        let outcome = attempt(lab.fs.path(), &env, attack);
        match judge(&lab, attack, &outcome, denies_before) {
            None => println!("ok: {} {}", attack.family, attack.name),
            Some(why) => {
                println!("not ok: {} {}: {why}", attack.family, attack.name);
                failures.push(format!(
                    "{} {} ({}): {why}\n{}",
                    attack.family,
                    attack.name,
                    attack.expect,
                    outcome.describe()
                ));
            }
        }
        if attacks
            .get(i + 1)
            .is_none_or(|next| next.family != attack.family)
        {
            baseline(&attack.family, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks failed:\n{}\n{}",
        failures.len(),
        attacks.len(),
        failures.join("\n"),
        lab.agent.log_text()
    );
}
