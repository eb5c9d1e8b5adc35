//! guard's Python audit hook with the real agent and real CPython: code a signed program
//! makes at run time (`exec` of a data file's contents and its other spellings) is
//! recorded with its digest and caller, refused under `dynamic_code = "deny"` while the
//! stdlib's own dynamic code keeps working, a start-up that skips the hook is refused
//! where it is required, and a flood of events blocks neither side.
//!
//! The hook is installed as a deployment installs it (`guard python-hook install` writes
//! the module, its native front and its `.pth` file into a site directory, then all are
//! signed), into the site directory of a virtual environment on the test's own tmpfs
//! whose python is the host's /usr/bin/python3.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use guard_tests::*;

/// A virtual environment `name` on `fs` around the host's python3, as `python3 -m venv`
/// makes one (without the system's site directories). Returns its python and its site
/// directory.
fn venv(fs: &Tmpfs, name: &str) -> (PathBuf, PathBuf) {
    let version = stdout(&run(
        PYTHON,
        &[&"-c", &"import sys; print('%d.%d' % sys.version_info[:2])"],
    ))
    .trim()
    .to_string();
    let venv = fs.path().join(name);
    let site = venv.join(format!("lib/python{version}/site-packages"));
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    fs.write(
        &format!("{name}/pyvenv.cfg"),
        format!("home = /usr/bin\ninclude-system-site-packages = false\nversion = {version}\n"),
    );
    let python = venv.join("bin/python3");
    std::os::unix::fs::symlink(PYTHON, &python).unwrap();
    (python, site)
}

/// A virtual environment on `fs` with guard's hook installed for `agent`, its hook and its
/// configuration signed (an environment the operator vouches for). Returns its python.
fn venv_with_hook(fs: &Tmpfs, agent: &Agent) -> PathBuf {
    let (python, site) = venv(fs, "venv");
    sign(&fs.path().join("venv/pyvenv.cfg"));
    let socket = agent.socket.parent().unwrap().join("python-hook.sock");
    let out = guard(&[
        &"python-hook",
        &"install",
        &"--site",
        &site,
        &"--socket",
        &socket,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for file in stdout(&out).lines() {
        sign(Path::new(file));
    }
    python
}

fn policy(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n\
             [[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
             code_patterns = [\"*.py\", \"*.pth\"]\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// Runs `python script` as nobody from the script's directory.
fn run_as_nobody(python: &Path, script: &Path) -> Output {
    let mut cmd = as_nobody(python);
    cmd.arg(script)
        .current_dir(script.parent().unwrap())
        .env("HOME", "/nonexistent");
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn dynamic_records(agent: &Agent) -> Vec<serde_json::Value> {
    agent
        .audit_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["code"] == "dynamic")
        .collect()
}

fn wait_for_records(
    agent: &Agent,
    what: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = dynamic_records(agent);
        if what(&records) || std::time::Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The attack: a signed program that runs what a data file holds.
struct Lab {
    fs: Tmpfs,
    marker: PathBuf,
    data: PathBuf,
    payload: String,
}

impl Lab {
    fn new() -> Lab {
        let fs = Tmpfs::new();
        let marker = fs.marker("ran");
        // One line that starts with `import`: `site` runs such a line of a `.pth` file.
        let payload = format!(
            "import os; open({:?}, 'w').write('ran')\n",
            marker.to_str().unwrap()
        );
        let data = fs.write("app/data.txt", &payload);
        Lab {
            fs,
            marker,
            data,
            payload,
        }
    }

    /// A signed script in the lab whose body runs the data file's contents.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let body = body.replace("DATA", &format!("{:?}", self.data.to_str().unwrap()));
        self.fs.signed(&format!("app/{name}"), &body)
    }

    fn ran(&self) -> bool {
        let ran = self.marker.exists();
        let _ = std::fs::remove_file(&self.marker);
        ran
    }
}

#[test]
fn exec_of_a_data_file_is_recorded_with_its_digest_and_caller() {
    let lab = Lab::new();
    let script = lab.script("run.py", "import sys\nexec(open(DATA).read())\n");
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "");
    let agent = Agent::start(lab.fs.path(), &["--policy", policy.to_str().unwrap()]);
    let python = venv_with_hook(&lab.fs, &agent);

    let out = run_as_nobody(&python, &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(lab.ran(), "audit mode refused nothing");
    let records = wait_for_records(&agent, |r| {
        r.iter().any(|r| r["dynamic"]["event"] == "compile")
    });
    let compile = records
        .iter()
        .find(|r| r["dynamic"]["event"] == "compile")
        .unwrap_or_else(|| panic!("no compile record: {records:?}\n{}", agent.log_text()));
    assert_eq!(compile["rule"], "dynamic-code", "{compile}");
    assert_eq!(compile["decision"], "allow", "{compile}");
    assert_eq!(compile["path"], script.to_str().unwrap(), "{compile}");
    assert_eq!(compile["dynamic"]["line"], 2, "{compile}");
    assert_eq!(
        compile["dynamic"]["sha256"],
        sha256_hex(lab.payload.as_bytes()),
        "{compile}"
    );
    assert_eq!(compile["dynamic"]["size"], lab.payload.len(), "{compile}");
    assert!(
        compile["dynamic"]["excerpt"]
            .as_str()
            .unwrap()
            .starts_with("import os; open("),
        "{compile}"
    );
    assert_eq!(compile["uid"], NOBODY, "{compile}");
    assert!(
        compile["exe"].as_str().unwrap().contains("python3"),
        "{compile}"
    );
    // The exec of what was compiled is its own record; the stdlib's own dynamic code is
    // counted, not recorded.
    assert!(
        records.iter().any(|r| r["dynamic"]["event"] == "exec"),
        "{records:?}"
    );
    assert!(
        !records.iter().any(|r| r["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/usr/lib/python3")),
        "{records:?}"
    );
    // The interpreter compiling its own main script is no dynamic code.
    assert!(
        !records.iter().any(|r| r["path"] == "<no frame>"),
        "{records:?}"
    );
    assert!(agent.status_field("hooked_processes") >= 1);
    assert!(agent.status_field("dynamic_records") >= 2);
}

/// Every spelling of "make code from the data file" a signed program can use.
const SPELLINGS: &[(&str, &str)] = &[
    ("exec.py", "exec(open(DATA).read())\n"),
    ("eval.py", "eval(compile(open(DATA).read(), 'x', 'exec'))\n"),
    (
        "code_replace.py",
        "def f(): pass\nsrc = open(DATA).read()\nimport types\nf.__code__ = f.__code__.replace(co_name='g')\n",
    ),
    (
        "loader.py",
        "import importlib.machinery\nimportlib.machinery.SourceFileLoader('m', DATA).load_module()\n",
    ),
    // The import system's own functions handed the data: a loader whose get_data returns
    // it under a code name, and its compile step called directly.
    (
        "loader_subclass.py",
        "import importlib.machinery\n\
         class L(importlib.machinery.SourceFileLoader):\n\
         \x20   def get_data(self, path):\n\
         \x20       return open(DATA, 'rb').read()\n\
         L('m', '/nonexistent/m.py').load_module()\n",
    ),
    (
        "source_to_code.py",
        "import importlib.machinery\n\
         loader = importlib.machinery.SourceFileLoader('m', '/nonexistent/m.py')\n\
         exec(loader.source_to_code(open(DATA, 'rb').read(), '/nonexistent/m.py'))\n",
    ),
    ("run_path.py", "import runpy\nrunpy.run_path(DATA)\n"),
    // A listed file's other functions, handed `exec`; typing evaluating a string.
    (
        "counter_trampoline.py",
        "import collections\n\
         class C(collections.Counter):\n\
         \x20   update = exec\n\
         C(open(DATA).read())\n",
    ),
    (
        "forward_ref.py",
        "import typing\n\
         expression = open(DATA).read().split('; ', 1)[1]\n\
         typing.ForwardRef(expression)._evaluate(globals(), None, frozenset())\n",
    ),
    (
        "addpackage.py",
        "import os, site\nsite.addpackage(os.path.dirname(DATA), os.path.basename(DATA), set())\n",
    ),
    (
        "timeit_gadget.py",
        "import timeit\ntimeit.timeit(open(DATA).read(), number=1)\n",
    ),
    (
        "marshal_data.py",
        "import marshal\nexec(marshal.loads(open(DATA + '.bin', 'rb').read()))\n",
    ),
    // Bytecode through the import system's own steps: a stock get_code whose loader reads
    // with its own get_data, and the unmarshalling step called directly.
    (
        "bytecode_loader_subclass.py",
        "import importlib.machinery, importlib.util\n\
         pyc = importlib.util.MAGIC_NUMBER + bytes(12) + open(DATA + '.bin', 'rb').read()\n\
         class L(importlib.machinery.SourcelessFileLoader):\n\
         \x20   def get_data(self, path):\n\
         \x20       return pyc\n\
         L('m', '/nonexistent/m.pyc').load_module()\n",
    ),
    (
        "compile_bytecode.py",
        "import importlib._bootstrap_external as external\n\
         exec(external._compile_bytecode(open(DATA + '.bin', 'rb').read()))\n",
    ),
];

#[test]
fn deny_refuses_dynamic_code_and_the_stdlib_keeps_working() {
    let lab = Lab::new();
    // Bytecode as data: what `marshal.loads` would turn into code.
    let out = run(
        PYTHON,
        &[
            &"-c",
            &format!(
                "import marshal; open({:?}, 'wb').write(marshal.dumps(compile(open({:?}).read(), 'd', 'exec')))",
                format!("{}.bin", lab.data.to_str().unwrap()),
                lab.data.to_str().unwrap()
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let scripts: Vec<(&str, PathBuf)> = SPELLINGS
        .iter()
        .map(|(name, body)| (*name, lab.script(name, body)))
        .collect();
    let baseline = lab.fs.signed(
        "app/baseline.py",
        "from __future__ import annotations\n\
         import collections, dataclasses, enum, json, logging, argparse, typing, types, sys\n\
         P = collections.namedtuple('P', 'a b')\n\
         @dataclasses.dataclass(frozen=True, order=True)\n\
         class D:\n    a: int = 1\n    b: str = 'x'\n\
         class E(enum.Enum):\n    A = 1\n\
         @types.coroutine\ndef c(): yield\n\
         argparse.ArgumentParser().parse_args([])\n\
         print(json.dumps([P(1, 2), D().a, E.A.value]), 'guard_audit_fast' in sys.modules)\n",
    );

    // Without guard, every spelling runs the data file (the marshal one runs bytecode).
    for (name, script) in &scripts {
        let out = run_as_nobody(Path::new(PYTHON), script);
        if *name == "code_replace.py" {
            // Makes a code object by hand and runs nothing: refused under deny below.
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            continue;
        }
        assert!(
            lab.ran(),
            "{name} did not run the payload without guard: {}",
            text(&out.stderr)
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "dynamic_code = \"deny\"\n");
    let agent = Agent::start(lab.fs.path(), &["--policy", policy.to_str().unwrap()]);
    let python = venv_with_hook(&lab.fs, &agent);

    let out = run_as_nobody(&python, &baseline);
    assert!(
        out.status.success(),
        "the stdlib's own dynamic code was refused: {}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    // The hook's native front loaded (signed beside it), as a deployment's would.
    assert_eq!(text(&out.stdout), "[[1, 2], 1, 1] True\n");

    for (name, script) in &scripts {
        // Refused where it was asked for: the program may catch the exception (`site`
        // reports it and goes on), but nothing runs.
        let out = run_as_nobody(&python, script);
        assert!(
            text(&out.stderr).contains("guard: dynamic code refused"),
            "{name}: {}",
            text(&out.stderr)
        );
        assert!(!lab.ran(), "{name} ran the payload under deny");
    }
    let records = wait_for_records(&agent, |r| {
        r.iter().filter(|r| r["decision"] == "deny").count() >= scripts.len()
    });
    let denied: Vec<_> = records.iter().filter(|r| r["decision"] == "deny").collect();
    assert!(denied.len() >= scripts.len(), "{records:?}");
    assert!(
        denied
            .iter()
            .all(|r| r["enforced"] == true && r["rule"] == "dynamic-code")
    );
    assert!(agent.status_field("dynamic_denied") >= scripts.len() as u64);
}

#[test]
fn a_virtual_environment_without_the_hook_does_not_start_where_it_is_required() {
    let lab = Lab::new();
    let script = lab.script("run.py", "exec(open(DATA).read())\n");
    // The attacker's environment: site directories of its own, without the system's (and
    // so without the hook). Without guard it runs the signed program unaudited.
    let (bare, _) = venv(&lab.fs, "bare");
    let out = run_as_nobody(&bare, &script);
    assert!(
        lab.ran(),
        "the bare venv did not run the payload: {}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    for (setting, refused) in [("deny", true), ("audit", false)] {
        let policy = policy(dir.path(), &format!("dynamic_code = \"{setting}\"\n"));
        let agent = Agent::start(lab.fs.path(), &["--policy", policy.to_str().unwrap()]);
        let out = run_as_nobody(&bare, &script);
        if refused {
            assert!(
                !out.status.success(),
                "the bare venv started: {}",
                text(&out.stdout)
            );
            assert!(!lab.ran(), "the bare venv ran the payload under deny");
            assert!(
                agent
                    .denies_for("pyvenv.cfg")
                    .iter()
                    .any(|l| l.contains("valid-signature")),
                "pyvenv.cfg not refused as unsigned code: {}",
                agent.log_text()
            );
        } else {
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(lab.ran(), "audit refused the venv");
        }
    }
}

#[test]
fn a_start_up_that_skips_the_hook_is_refused_where_it_is_required() {
    let lab = Lab::new();
    let script = lab.script("run.py", "exec(open(DATA).read())\n");
    let bin = tempfile::tempdir().unwrap();
    let python = private_python(bin.path());
    // Without guard, `-S` runs the program without site, so without any hook.
    let out = run_with_timeout(
        Command::new(&python).arg("-S").arg(&script),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(lab.ran());

    for (setting, refused) in [("deny", true), ("audit", false)] {
        let policy = bin.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n[[interpreter]]\n\
                 name = \"python\"\nexecutables = [{:?}]\ncode_patterns = [\"*.py\"]\n\
                 dynamic_code = \"{setting}\"\n",
                python.to_str().unwrap()
            ),
        )
        .unwrap();
        let agent =
            Agent::start_with_exec_gate(lab.fs.path(), &["--policy", policy.to_str().unwrap()]);
        // `-S` skips site; PYTHONHOME moves the prefix whose site directories it reads.
        let home = [("PYTHONHOME", "/usr")];
        for (args, env) in [
            (&["-S"][..], &[][..]),
            (&["-ES"], &[]),
            (&["-I", "-S"], &[]),
            (&["-sS"], &[]),
            (&[], &home),
        ] {
            let out = run_with_timeout(
                Command::new(&python)
                    .args(args)
                    .arg(&script)
                    .envs(env.iter().copied()),
                Duration::from_secs(30),
            );
            if refused {
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGKILL),
                    "{setting} {args:?}"
                );
                assert!(!lab.ran(), "{setting} {args:?} ran");
            } else {
                assert!(
                    out.status.success(),
                    "{setting} {args:?}: {}",
                    text(&out.stderr)
                );
                assert!(lab.ran(), "{setting} {args:?}");
            }
        }
        if refused {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !agent
                .audit_lines()
                .iter()
                .any(|l| l.contains("audit-hook-required"))
            {
                assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn agent_rss_kib(agent: &Agent) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_exec_neither_blocks_the_interpreter_nor_grows_the_agent() {
    let lab = Lab::new();
    let flood = lab.fs.signed(
        "app/flood.py",
        "for i in range(100000):\n    exec('x = %d' % i)\nprint('done')\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "");
    let agent = Agent::start(lab.fs.path(), &["--policy", policy.to_str().unwrap()]);
    let python = venv_with_hook(&lab.fs, &agent);
    let before = agent_rss_kib(&agent);

    let started = std::time::Instant::now();
    let out = run_as_nobody(&python, &flood);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "done\n");
    let took = started.elapsed();

    // Every event is accounted for: recorded within the budget, or counted (the agent may
    // still be reading the backlog the hook left in its socket).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = agent.status_field("dynamic_events") + agent.status_field("dynamic_dropped");
        if seen >= 200_000 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = agent.status_field("dynamic_records");
    let dropped = agent.status_field("dynamic_dropped");
    assert!(records <= 256, "{records} records from one process");
    assert!(dropped > 0, "nothing counted as dropped");
    assert!(
        agent.status_field("dynamic_events") + dropped >= 200_000,
        "events lost without a count: {}",
        agent.status_text()
    );
    // The trail says when the process stopped being recorded one by one.
    let over = wait_for_records(&agent, |r| {
        r.iter().any(|r| r["dynamic"]["event"] == "over-budget")
    });
    assert!(
        over.iter().any(|r| r["dynamic"]["event"] == "over-budget"),
        "no over-budget record"
    );
    let after = agent_rss_kib(&agent);
    assert!(
        after < before + 16 * 1024,
        "the agent grew from {before} to {after} KiB"
    );
    eprintln!("flood of 200000 events: {took:?}, {records} recorded, {dropped} counted only");
}
