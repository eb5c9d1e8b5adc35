//! Memory pressure (issue 22): the agent under a cgroup memory limit, flooded with distinct
//! files. Every verified file leaves an entry in the verification cache (about a kilobyte
//! of anonymous memory): a full cache does not fit the limit. The agent must keep under
//! it, shrinking the cache, and keep answering right, never be killed (fanotify fails open
//! while it is gone).

use std::time::{Duration, Instant};

use guard_tests::*;

/// Distinct files the interpreter opens: each is code by name and unsigned, so each needs
/// a signature check and leaves an entry in the cache (over 20 MiB for all of them).
fn files() -> usize {
    std::env::var("GUARD_MEMORY_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60_000)
}

/// The agent's limit; it uses about 3 MiB once ready.
const LIMIT: u64 = 16 << 20;

#[test]
fn a_flood_of_distinct_files_under_a_memory_limit_does_not_kill_the_agent() {
    let fs = Tmpfs::new();
    let count = files();
    let flood = fs.path().join("flood");
    std::fs::create_dir_all(&flood).unwrap();
    for i in 0..count {
        std::fs::write(flood.join(format!("m{i}.py")), b"").unwrap();
    }
    let marker = fs.marker("signed-ran");
    let signed = fs.signed(
        "app/signed.py",
        &format!("open({:?}, 'w').close()\n", marker.to_str().unwrap()),
    );
    let opener = fs.signed("app/opener.py", OPENER);
    let policy = policy_trusting(fs.path(), &["tmpfs"]);
    let cgroup = MemoryCgroup::new(LIMIT);
    let wrapper = cgroup.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&wrapper, fs.path(), &["--policy", policy.to_str().unwrap()]);
    let ready = cgroup.anon();
    let started = Instant::now();
    let out = run_with_timeout(
        &mut python_as(
            NOBODY,
            &[],
            fs.path(),
            &[opener.to_str().unwrap(), flood.to_str().unwrap()],
        ),
        Duration::from_secs(300),
    );
    let summary = format!(
        "flood of {count} files in {:?}: {} (exit {}); agent's cgroup: anonymous memory {} kB \
         when ready, {} kB after, peak charge {} kB of {} kB, OOM kills {}",
        started.elapsed(),
        stdout(&out).trim(),
        out.status,
        ready >> 10,
        cgroup.anon() >> 10,
        cgroup.peak() >> 10,
        LIMIT >> 10,
        cgroup.oom_kills()
    );
    eprintln!("{summary}");
    assert_eq!(cgroup.oom_kills(), 0, "{summary}\n{}", agent.log_text());
    // Every one refused (0 wrong decisions), the agent still there and right afterwards.
    assert_eq!(
        stdout(&out).trim(),
        format!("refused {count} opened 0"),
        "{summary}\n{}",
        stderr(&out)
    );
    let status = agent.status_text();
    eprintln!("{status}");
    assert!(
        agent.status_field("cache_evictions") > 0,
        "the limit was never approached: the test shows nothing\n{summary}\n{status}"
    );
    assert!(
        agent.status_field("cache_capacity") < count as u64,
        "{status}"
    );
    assert_eq!(agent.status_field("errors"), 0, "{status}");
    let ran = python(fs.path(), &[signed.to_str().unwrap()]);
    assert!(ran.status.success() && marker.exists(), "{}", stderr(&ran));
    assert!(
        agent.log_text().contains("the verification cache shrinks"),
        "{}",
        agent.log_text()
    );
}
