//! The agent under faults: killed under load, files changing while they are hashed, hostile
//! files and xattrs, vanishing filesystems, deleted keys, running out of descriptors. Each
//! must end in an answer (a deny with a reason in enforce mode), never a hang, a panic or a
//! leaked descriptor.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guard_tests::*;
use nix::sys::signal::Signal;

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the agent holds `expected` descriptors again (answers close event fds
/// asynchronously); returns the last count seen.
fn settled_fd_count(pid: i32, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = fd_count(pid);
        if now <= expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_denied_with(agent: &Agent, file: &str, reason: &str) {
    let denies = agent.denies_for(file);
    assert!(
        denies.iter().any(|l| l.contains(reason)),
        "no deny of {file} with reason {reason:?}; denies: {denies:#?}\nlog:\n{}",
        agent.log_text()
    );
}

/// How python reports an open the agent refused: PermissionError for an import,
/// "[Errno 1] Operation not permitted" for the main script.
fn refused(stderr: &str) -> bool {
    stderr.contains("PermissionError") || stderr.contains("Operation not permitted")
}

fn assert_agent_healthy(agent: &Agent) {
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.pid()), None).is_ok(),
        "the agent died:\n{log}"
    );
}

#[test]
fn agent_killed_under_load_releases_everyone_and_a_new_agent_enforces() {
    let fs = Tmpfs::new();
    fs.signed("k/main.py", "import mod\nprint(mod.V)\n");
    fs.signed("k/mod.py", "V = 1\n");
    let ran = fs.marker("unsigned-ran");
    fs.write("k/unsigned.py", payload(&ran));
    let dir = fs.path().join("k");
    let agent = Agent::start(fs.path(), &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut runners = Vec::new();
    for _ in 0..16 {
        let stop = stop.clone();
        let dir = dir.clone();
        runners.push(std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                // Bounded: a run still blocked 15 s after the agent died fails the test.
                let _ = run_with_timeout(
                    &mut python_as(NOBODY, &[], &dir, &["main.py"]),
                    Duration::from_secs(15),
                );
                longest = longest.max(started.elapsed());
            }
            longest
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        agent.status_field("decisions") > 0,
        "no load reached the agent"
    );
    agent.signal(Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for runner in runners {
        let longest = runner.join().expect("a python run stayed blocked");
        assert!(longest < Duration::from_secs(15));
    }
    drop(agent);

    // Without an agent fanotify enforces nothing: unsigned code runs (fail open).
    let out = python(&dir, &["unsigned.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(&ran).unwrap();

    let agent = Agent::start(fs.path(), &[]);
    let out = python(&dir, &["unsigned.py"]);
    assert!(!out.status.success(), "a new agent did not enforce");
    assert!(!ran.exists(), "unsigned code ran under the new agent");
    assert!(python(&dir, &["main.py"]).status.success());
    assert_agent_healthy(&agent);
}

#[test]
fn a_file_rewritten_while_it_is_hashed_is_never_allowed() {
    let fs = Tmpfs::new();
    // Sparse, so tmpfs holds little; big enough that hashing it takes a while.
    const SIZE: u64 = 64 << 20;
    let path = fs.write("h/big.py", "print('big')\n#");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    sign(&path);
    let dir = fs.path().join("h");
    let agent = Agent::start(fs.path(), &[]);

    // Control: unchanged, it is allowed (python then refuses its NUL bytes itself).
    let out = python(&dir, &["big.py"]);
    let stderr = text(&out.stderr);
    assert!(
        !refused(&stderr),
        "the signed file itself is refused: {stderr}\n{}",
        agent.log_text()
    );

    // Same-size writes that change a byte and put it back: at every instant the content is
    // either wrong or equal to the signed content, but never stable while it is hashed.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                file.write_at(b"X", SIZE / 2).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                file.write_at(b"\0", SIZE / 2).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                writes += 1;
            }
            writes
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for attempt in 0..3 {
        let out = python(&dir, &["big.py"]);
        let stderr = text(&out.stderr);
        assert!(
            refused(&stderr),
            "attempt {attempt}: a file changing while hashed was allowed: {stderr}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 10);
    assert_denied_with(&agent, "big.py", "changed while it was being verified");
    assert_agent_healthy(&agent);
}

/// Sets `security.ima` to the largest value the filesystem takes, up to the xattr limit.
fn set_largest_xattr(path: &Path, head: &[u8]) -> usize {
    let mut size = 65536;
    while size > 1024 {
        let mut value = head.to_vec();
        value.resize(size, 0xa5);
        if xattr::set(path, "security.ima", &value).is_ok() {
            return size;
        }
        size -= 1024;
    }
    panic!("no large xattr accepted on tmpfs");
}

#[test]
fn hostile_files_are_denied_with_a_reason_without_panic_or_descriptor_leak() {
    let fs = Tmpfs::new();
    let valid = fs.signed("x/valid.py", "print('valid')\n");
    let signature = xattr::get(&valid, "security.ima").unwrap().unwrap();

    // 4 GiB, sparse, unsigned.
    let huge = fs.write("x/huge.py", "print('huge')\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    // Readable by nobody but root: the kernel refuses the runner before fanotify asks.
    let unreadable = fs.write("x/unreadable.py", "print('secret')\n");
    set_mode(&unreadable, 0o000);
    let big_xattr = fs.write("x/bigxattr.py", "print('big xattr')\n");
    let xattr_size = set_largest_xattr(&big_xattr, &signature[..9]);
    let truncated = fs.write("x/truncated.py", "print('valid')\n");
    xattr::set(
        &truncated,
        "security.ima",
        &signature[..signature.len() - 7],
    )
    .unwrap();
    let header_only = fs.write("x/header.py", "print('valid')\n");
    xattr::set(&header_only, "security.ima", &signature[..5]).unwrap();
    let unknown_key = fs.write("x/unknownkey.py", "print('valid')\n");
    let mut other = signature.clone();
    other[3..7].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    xattr::set(&unknown_key, "security.ima", &other).unwrap();

    let agent = Agent::start(fs.path(), &[]);
    let dir = fs.path().join("x");
    // A first decision opens whatever lazily opened descriptors the agent keeps.
    assert!(python(&dir, &["valid.py"]).status.success());
    let baseline = fd_count(agent.pid());

    let cases = [
        ("huge.py", "no security.ima signature"),
        ("bigxattr.py", "signature size field says"),
        ("truncated.py", "signature size field says"),
        ("header.py", "empty or truncated"),
        ("unknownkey.py", "unknown key id deadbeef"),
    ];
    for (file, reason) in cases {
        let started = Instant::now();
        let out = python(&dir, &[file]);
        assert!(!out.status.success(), "{file} ran");
        assert!(refused(&text(&out.stderr)), "{file}: {}", text(&out.stderr));
        assert!(started.elapsed() < Duration::from_secs(10), "{file} slow");
        assert_denied_with(&agent, file, reason);
    }
    let out = python(&dir, &["unreadable.py"]);
    assert!(!out.status.success(), "unreadable.py ran");
    assert!(python(&dir, &["valid.py"]).status.success());
    assert!(xattr_size > 60_000, "tmpfs took only {xattr_size} bytes");

    assert_agent_healthy(&agent);
    let after = settled_fd_count(agent.pid(), baseline);
    assert!(
        after <= baseline,
        "descriptor leak: {baseline} before, {after} after"
    );
}

#[test]
fn a_filesystem_that_vanishes_under_a_running_interpreter() {
    let fs = Tmpfs::new();
    let gone = Tmpfs::new();
    let ran = fs.marker("late-unsigned-ran");
    let flag = fs.marker("unmounted");
    let _ = std::fs::remove_file(&flag);
    // Imports a signed module, waits until its filesystem is detached, then tries an
    // unsigned one through its working directory.
    gone.signed("v/main.py",
        &format!(
            "import os, sys, time\nimport good\nsys.stdout.write('imported\\n'); sys.stdout.flush()\n\
             while not os.path.exists({flag:?}): time.sleep(0.02)\n\
             try:\n    exec(compile(open('late.py').read(), 'late.py', 'exec'))\nexcept Exception as e:\n    print('refused', type(e).__name__)\n",
            flag = flag.to_str().unwrap()
        ),
    );
    gone.signed("v/good.py", "V = 1\n");
    gone.write("v/late.py", payload(&ran));
    let agent = Agent::start(
        fs.path(),
        &["--watch", gone.path().to_str().unwrap(), "--workers", "2"],
    );
    let baseline = fd_count(agent.pid());

    let mut cmd = python_as(NOBODY, &[], &gone.path().join("v"), &["main.py"]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let status = Command::new("umount")
        .arg("-l")
        .arg(gone.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(&flag, "").unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(20)).expect("python hung");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("imported") && stdout.contains("refused PermissionError"),
        "stdout {stdout:?} stderr {}\n{}",
        text(&out.stderr),
        agent.log_text()
    );
    assert!(
        !ran.exists(),
        "unsigned code ran from a detached filesystem"
    );
    assert_denied_with(&agent, "late.py", "no security.ima signature");
    assert_agent_healthy(&agent);
    let after = settled_fd_count(agent.pid(), baseline);
    assert!(
        after <= baseline,
        "descriptor leak: {baseline} before, {after} after"
    );
}

#[test]
fn a_key_file_deleted_at_runtime() {
    let fs = Tmpfs::new();
    let keys_dir = tempfile::tempdir().unwrap();
    let (key, cert) = keygen(keys_dir.path(), "second");
    let file = fs.write("r/second.py", "print('second')\n");
    sign_with(&key, &file);
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    let write_policy = |keys: &str| write_python_policy(&policy, &format!("keys = [{keys}]"));
    // Named by a glob: a deleted key is simply no longer trusted after the reload.
    write_policy(&format!(
        "{:?}",
        keys_dir.path().join("*.pem").to_str().unwrap()
    ));
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let dir = fs.path().join("r");
    assert!(python(&dir, &["second.py"]).status.success());
    let baseline = fd_count(agent.pid());

    std::fs::remove_file(&cert).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reloads", 1);
    assert!(!python(&dir, &["second.py"]).status.success());
    assert_denied_with(&agent, "second.py", "unknown key id");

    // Named exactly: the reload is refused and the keys in memory stay in force.
    let (third_key, cert) = keygen(keys_dir.path(), "third");
    let third = fs.write("r/third.py", "print('third')\n");
    sign_with(&third_key, &third);
    write_policy(&format!("{:?}", cert.to_str().unwrap()));
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reloads", 2);
    std::fs::remove_file(&cert).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_status("reload_failures", 1);
    assert!(agent.log_text().contains("policy not reloaded"));
    assert!(!python(&dir, &["second.py"]).status.success());
    let out = python(&dir, &["third.py"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    assert_agent_healthy(&agent);
    let after = settled_fd_count(agent.pid(), baseline);
    assert!(
        after <= baseline,
        "descriptor leak: {baseline} before, {after} after"
    );
}

fn set_nofile(pid: i32, limit: usize) {
    let out = run_with_timeout(
        Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            // Soft limit only: raising a hard limit back needs CAP_SYS_RESOURCE, which root
            // may lack in a container.
            .arg(format!("--nofile={limit}:")),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "prlimit: {}", text(&out.stderr));
}

#[test]
fn out_of_descriptors_the_agent_still_answers_and_refuses() {
    let fs = Tmpfs::new();
    fs.signed("n/main.py", "print('signed')\n");
    let ran = fs.marker("noext-ran");
    // No code name: only the main-script lookup (which needs a descriptor) makes it code.
    fs.write("n/noext", payload(&ran));
    let agent = Agent::start(fs.path(), &["--workers", "1"]);
    let dir = fs.path().join("n");
    assert!(!python(&dir, &["noext"]).status.success());
    assert!(python(&dir, &["main.py"]).status.success());
    let pid = agent.pid();
    let errors_before = agent.status_field("errors");
    std::thread::sleep(Duration::from_millis(300));
    // The limit bounds descriptor numbers, not their count: `spare` free descriptors means
    // a limit at the `spare`-th unused number.
    let used: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let free: Vec<usize> = (0..).filter(|n| !used.contains(n)).take(4).collect();

    // No spare descriptor, then one, two, three: each step starves a different read (the
    // event's own descriptor in the kernel, the agent's dup, /proc/PID/cmdline, ...).
    for (spare, limit) in free.iter().enumerate() {
        set_nofile(pid, *limit);
        for _ in 0..2 {
            let started = Instant::now();
            let out = python(&dir, &["noext"]);
            assert!(!out.status.success(), "spare {spare}: unsigned noext ran");
            assert!(!ran.exists(), "spare {spare}: unsigned code ran");
            assert!(started.elapsed() < Duration::from_secs(10));
            let started = Instant::now();
            let _ = python(&dir, &["main.py"]);
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    }
    set_nofile(pid, 1024);

    assert!(python(&dir, &["main.py"]).status.success());
    assert!(
        agent.status_field("errors") > errors_before,
        "starvation not counted: {}",
        agent.status()
    );
    let log = agent.log_text();
    assert!(
        log.contains("the kernel refused an open guard could not receive"),
        "{log}"
    );
    assert!(
        agent
            .audit_lines()
            .iter()
            .any(|l| l.contains("cannot establish the facts")),
        "no deny with a reason in the audit log:\n{log}"
    );
    assert_agent_healthy(&agent);
}
