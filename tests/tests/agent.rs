//! `guard run` (fanotify backend) enforcing for real: the real agent, the real
//! /usr/bin/python3 running as an unprivileged user, on a tmpfs each test mounts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guard_tests::*;
use nix::sys::signal::Signal;

#[test]
fn signed_code_runs_unsigned_module_and_script_are_refused() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "import good\nprint('main', good.VALUE)\n");
    fs.signed("app/good.py", "VALUE = 42\n");
    fs.signed("app/uses_bad.py", "import bad\nprint('imported bad')\n");
    let ran = fs.marker("bad-ran");
    fs.write("app/bad.py", payload(&ran));
    let unsigned_main = fs.marker("unsigned-main-ran");
    fs.write("app/unsigned_main.py", payload(&unsigned_main));
    let agent = Agent::start(fs.path(), &[]);
    let app = fs.path().join("app");

    let out = python(&app, &["main.py"]);
    assert!(
        out.status.success(),
        "signed code refused: {}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    assert_eq!(text(&out.stdout), "main 42\n");

    let out = python(&app, &["uses_bad.py"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("PermissionError") || stderr.contains("ImportError"),
        "{stderr}"
    );
    assert!(!ran.exists(), "unsigned module ran");
    assert!(
        !agent.denies_for("bad.py").is_empty(),
        "no deny logged:\n{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("deny"), "no human deny line");

    let out = python(&app, &["unsigned_main.py"]);
    assert!(!out.status.success());
    assert!(!unsigned_main.exists(), "unsigned main script ran");
    let line = &agent.denies_for("unsigned_main.py")[0];
    assert!(
        line.contains("valid-signature") && line.contains("\"enforced\":true"),
        "{line}"
    );
}

#[test]
fn code_writable_by_the_runner_is_refused_even_when_signed() {
    let fs = Tmpfs::new();
    let world = fs.signed("w/world.py", "print('world')\n");
    set_mode(&world, 0o666);
    let group = fs.signed("w/group.py", "print('group')\n");
    set_mode(&group, 0o664);
    chown(&group, 0, 4242);
    let own = fs.signed("w/own.py", "print('own')\n");
    chown(&own, NOBODY, NOBODY);
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("w");

    let out = python(&dir, &["world.py"]);
    assert!(!out.status.success(), "0666 script ran");
    assert!(agent.denies_for("world.py")[0].contains("not-writable-by-runner"));

    let out = run_with_timeout(
        &mut python_as(NOBODY, &[4242], &dir, &["group.py"]),
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "group-writable script ran for a group member"
    );
    assert!(agent.denies_for("group.py")[0].contains("not-writable-by-runner"));
    // The same file is fine for a runner outside the group.
    let out = python(&dir, &["group.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = python(&dir, &["own.py"]);
    assert!(!out.status.success(), "runner-owned script ran");
    assert!(agent.denies_for("own.py")[0].contains("trusted-owner"));
}

fn cache_tag() -> String {
    let out = run_with_timeout(
        Command::new(PYTHON).args(["-c", "import sys; print(sys.implementation.cache_tag)"]),
        Duration::from_secs(30),
    );
    text(&out.stdout).trim().to_string()
}

/// Compiles `source` into a pyc whose header claims to be for `for_source` (timestamp
/// pyc): what an attacker with write access to `__pycache__` would plant.
fn forge_pyc(source: &str, for_source: &Path, pyc: &Path) {
    let script = format!(
        "import importlib._bootstrap_external as b, marshal, os\n\
         st = os.stat({src:?})\n\
         code = compile({body:?}, {src:?}, 'exec')\n\
         data = b._code_to_timestamp_pyc(code, st.st_mtime, st.st_size)\n\
         os.makedirs(os.path.dirname({out:?}), exist_ok=True)\n\
         open({out:?}, 'wb').write(data)\n",
        src = for_source.to_str().unwrap(),
        body = source,
        out = pyc.to_str().unwrap()
    );
    let out = run_with_timeout(
        Command::new(PYTHON).args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "forging pyc: {}", text(&out.stderr));
    set_mode(pyc, 0o644);
}

#[test]
fn forged_pyc_is_refused_and_signed_pyc_is_accepted() {
    let fs = Tmpfs::new();
    let tag = cache_tag();
    fs.signed("p/main.py", "import mod\nprint(mod.WHO)\n");
    let module = fs.signed("p/mod.py", "WHO = 'source'\n");
    let pyc = fs.path().join(format!("p/__pycache__/mod.{tag}.pyc"));
    forge_pyc("WHO = 'forged bytecode'\n", &module, &pyc);
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("p");

    // The unsigned pyc is refused; CPython falls back to the signed source.
    let out = python(&dir, &["main.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "source\n", "forged bytecode ran");
    assert!(!agent.denies_for(&format!("mod.{tag}.pyc")).is_empty());

    // A signed pyc is code in its own right and runs.
    sign(&pyc);
    let out = python(&dir, &["main.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "forged bytecode\n",
        "signed pyc not used"
    );
}

#[test]
fn pth_files_and_zips_on_sys_path_are_code() {
    let fs = Tmpfs::new();
    let pth_ran = fs.marker("pth-ran");
    fs.write(
        "site/evil.pth",
        format!("import os; {}", payload(&pth_ran).trim()),
    );
    fs.signed(
        "z/main.py",
        &format!(
            "import site\nsite.addsitedir({:?})\nimport zipped\nprint('zipped', zipped.V)\n",
            fs.path().join("site").to_str().unwrap()
        ),
    );
    // A zip holding a module, under a name that is not .zip: recognised by content.
    let zip = fs.path().join("z/lib.txt");
    let script = format!(
        "import zipfile\nwith zipfile.ZipFile({:?}, 'w') as z: z.writestr('zipped.py', 'V = 7\\n')\n",
        zip.to_str().unwrap()
    );
    let out = run_with_timeout(
        Command::new(PYTHON).args(["-c", &script]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    set_mode(&zip, 0o644);
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("z");

    let mut cmd = python_as(NOBODY, &[], &dir, &["main.py"]);
    cmd.env("PYTHONPATH", &zip);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(!pth_ran.exists(), "unsigned .pth ran");
    assert!(
        !agent.denies_for("evil.pth").is_empty(),
        "{}",
        agent.log_text()
    );
    assert!(
        !out.status.success(),
        "module from an unsigned zip imported"
    );
    assert!(
        !agent.denies_for("lib.txt").is_empty(),
        "{}",
        agent.log_text()
    );

    sign(&fs.path().join("site/evil.pth"));
    sign(&zip);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "zipped 7\n");
    assert!(pth_ran.exists(), "signed .pth did not run");
}

#[test]
fn same_size_rewrite_with_restored_mtime_is_refused() {
    let fs = Tmpfs::new();
    let script = fs.signed("r/main.py", "print('original')\n");
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("r");
    let out = python(&dir, &["main.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let before = std::fs::metadata(&script).unwrap();
    std::fs::write(&script, "print('tampered')\n").unwrap();
    assert_eq!(std::fs::metadata(&script).unwrap().len(), before.len());
    let mtime = filetime_of(&before);
    let status = Command::new("touch")
        .arg("-d")
        .arg(mtime)
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());

    let out = python(&dir, &["main.py"]);
    assert!(
        !out.status.success(),
        "rewritten script ran: {}",
        text(&out.stdout)
    );
    let line = &agent.denies_for("main.py")[0];
    assert!(line.contains("valid-signature"), "{line}");
}

/// A group member holding a shared writable mapping rewrites signed code the runner may run
/// (it is not in the group): on tmpfs only the first write fault stamps the times, so
/// the rewrite leaves size, mtime and ctime as the cached verification saw them.
#[test]
fn writes_through_a_mapping_are_not_served_from_the_cache() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const GROUP: u32 = 4242;
    let fs = Tmpfs::new();
    let script = fs.signed("r/mapped.py", "print('original')\n");
    std::os::unix::fs::chown(&script, Some(0), Some(GROUP)).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o664)).unwrap();
    // Where the writer (not root) leaves its marks.
    let marks = fs.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = marks.join("writer.ready");
    let go = marks.join("writer.go");
    let done = marks.join("writer.done");
    let writer_code = format!(
        "import mmap, os, time\n\
         f = open({script:?}, 'r+b')\n\
         m = mmap.mmap(f.fileno(), 0)\n\
         m[0:1] = m[0:1]\n\
         open({ready:?}, 'w').close()\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         m[:18] = b\"print('tampered')\\n\"\n\
         open({done:?}, 'w').close()\n\
         time.sleep(60)\n"
    );
    // The writer runs before the agent watches: its own interpreter is none of the test's.
    let mut writer = Command::new("setpriv")
        .args([
            format!("--reuid={GROUP}"),
            format!("--regid={GROUP}"),
            "--clear-groups".into(),
            "--".into(),
            PYTHON.into(),
            "-c".into(),
            writer_code,
        ])
        .spawn()
        .unwrap();
    let wait_for = |path: &Path| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&ready);
    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("r");
    let out = python(&dir, &["mapped.py"]);
    assert!(
        out.status.success() && text(&out.stdout) == "original\n",
        "{}",
        text(&out.stderr)
    );
    let before = std::fs::metadata(&script).unwrap();
    std::fs::write(&go, "").unwrap();
    wait_for(&done);
    let after = std::fs::metadata(&script).unwrap();
    // The attack's premise: new bytes, and nothing in the file's facts says so.
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        "print('tampered')\n"
    );
    assert_eq!(
        (
            before.size(),
            before.mtime_nsec(),
            before.ctime(),
            before.ctime_nsec()
        ),
        (
            after.size(),
            after.mtime_nsec(),
            after.ctime(),
            after.ctime_nsec()
        ),
        "the kernel stamped the mapped write: this test shows nothing here"
    );
    let out = python(&dir, &["mapped.py"]);
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(
        !out.status.success() && !text(&out.stdout).contains("tampered"),
        "the rewritten script ran: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let line = &agent.denies_for("mapped.py")[0];
    assert!(line.contains("valid-signature"), "{line}");
}

fn filetime_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("@{}.{:09}", meta.mtime(), meta.mtime_nsec())
}

#[test]
fn permissive_mode_runs_everything_and_logs_would_be_denies() {
    let fs = Tmpfs::new();
    fs.write("m/unsigned.py", "print('ran anyway')\n");
    let agent = Agent::start(fs.path(), &["--permissive"]);
    let out = python(&fs.path().join("m"), &["unsigned.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran anyway\n");
    let line = &agent.denies_for("unsigned.py")[0];
    assert!(line.contains("\"enforced\":false"), "{line}");
    assert!(agent.status_field("would_deny") >= 1, "{}", agent.status());
    assert_eq!(agent.status_field("denies"), 0);
}

#[test]
fn reload_with_a_broken_policy_keeps_the_old_one() {
    let fs = Tmpfs::new();
    fs.signed("h/good.py", "print('good')\n");
    fs.write("h/bad.py", "print('bad')\n");
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n[[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\ncode_patterns = [\"*.py\"]\n",
    )
    .unwrap();
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let dir = fs.path().join("h");
    assert!(python(&dir, &["good.py"]).status.success());
    assert!(!python(&dir, &["bad.py"]).status.success());

    std::fs::write(&policy, "mode = \"permissive\"\n[trust\n").unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reload_failures", 1);
    assert!(
        !python(&dir, &["bad.py"]).status.success(),
        "broken policy disabled enforcement"
    );
    assert!(python(&dir, &["good.py"]).status.success());
    assert!(
        agent.log_text().contains("policy not reloaded"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn other_programs_read_code_files_normally() {
    let fs = Tmpfs::new();
    let unsigned = fs.write("d/unsigned.py", "print('data to cat')\n");
    let agent = Agent::start(fs.path(), &[]);
    let out = run_with_timeout(Command::new("cat").arg(&unsigned), Duration::from_secs(10));
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "print('data to cat')\n");
    let copy = fs.path().join("d/copy.py");
    let out = run_with_timeout(
        Command::new("cp").arg(&unsigned).arg(&copy),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(agent.denies_for("unsigned.py").is_empty());
}

#[test]
fn killing_the_agent_releases_waiting_opens() {
    let fs = Tmpfs::new();
    fs.signed("k/main.py", "print('released')\n");
    let agent = Agent::start(fs.path(), &[]);
    // A stopped agent cannot answer: the open waits in the kernel.
    agent.signal(Signal::SIGSTOP);
    let mut cmd = python_as(NOBODY, &[], &fs.path().join("k"), &["main.py"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the open did not wait for the agent"
    );
    agent.signal(Signal::SIGKILL);
    let out = wait_with_timeout(child, Duration::from_secs(20))
        .expect("open still blocked after the agent died");
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(agent);
}

#[test]
fn status_reports_counters_and_sigterm_stops_cleanly() {
    let fs = Tmpfs::new();
    fs.signed("s/main.py", "print(1)\n");
    let agent = Agent::start(fs.path(), &[]);
    for _ in 0..3 {
        assert!(python(&fs.path().join("s"), &["main.py"]).status.success());
    }
    let status = agent.status();
    for field in [
        "\"backend\": \"fanotify\"",
        "\"cache_hits\"",
        "\"latency_p99_us\"",
        "\"queue_depth\"",
    ] {
        assert!(status.contains(field), "{status}");
    }
    // Verified once: the repeats were served from the cache or left to the kernel.
    let misses = agent.status_field("cache_misses");
    assert_eq!(
        misses, 1,
        "three runs verified the file {misses} times: {status}"
    );
    let socket = agent.socket.clone();
    assert!(agent.stop().success());
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn filesystems_mounted_later_are_marked() {
    // Scoped to one test tmpfs (--watch … --follow), so following mounts cannot touch the
    // host's files. The policy trusts ramfs only: the watched tmpfs is marked as a
    // filesystem of an untrusted type, the ramfs mounted below it later as a trusted one.
    let fs = Tmpfs::new();
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_trusting(policy_dir.path(), &["ramfs"]);
    let agent = Agent::start(
        fs.path(),
        &["--follow", "--policy", policy.to_str().unwrap()],
    );
    assert_eq!(agent.status_field("marked_filesystems"), 1);
    assert_eq!(agent.status_field("untrusted_filesystems"), 1);

    let mount_point = fs.path().join("late");
    std::fs::create_dir(&mount_point).unwrap();
    let status = Command::new("mount")
        .args(["-t", "ramfs", "-o", "mode=0755", "guard-late"])
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount_point);
    agent.wait_for_status("marked_filesystems", 2);
    assert_eq!(agent.status_field("untrusted_filesystems"), 1);
    let script = mount_point.join("late.py");
    std::fs::write(&script, "print('unchecked')\n").unwrap();
    set_mode(&script, 0o644);
    let out = python(&mount_point, &["late.py"]);
    assert!(
        !out.status.success(),
        "unsigned script on a later mount ran"
    );
    let denies = agent.denies_for("late.py");
    assert!(
        denies
            .iter()
            .any(|d| d.contains("\"rule\":\"valid-signature\"")),
        "{denies:?}"
    );
}

#[test]
fn an_agent_that_cannot_identify_processes_refuses_instead_of_guessing() {
    let fs = Tmpfs::new();
    let ran = fs.marker("unidentified-ran");
    fs.write("c/unsigned.py", payload(&ran));
    // Without CAP_SYS_PTRACE, /proc/PID/exe of another user's process cannot be read.
    let agent = Agent::start_wrapped(
        &[
            "setpriv",
            "--bounding-set=-sys_ptrace",
            "--inh-caps=-sys_ptrace",
        ],
        fs.path(),
        &[],
    );
    let out = python(&fs.path().join("c"), &["unsigned.py"]);
    assert!(!out.status.success(), "ran: {}", text(&out.stdout));
    assert!(
        !ran.exists(),
        "unsigned code ran while its opener could not be identified"
    );
    let denies = agent.denies_for("unsigned.py");
    assert!(
        denies[0].contains("facts-unavailable") && denies[0].contains("cannot identify"),
        "{denies:?}"
    );
    assert!(agent.status_field("errors") >= 1);
}
