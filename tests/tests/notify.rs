//! The systemd notification protocol, for real: `guard run` with NOTIFY_SOCKET pointing at a
//! datagram socket the test owns, as systemd's `Type=notify` and `WatchdogSec=` would set it.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use guard_tests::*;

/// Receives datagrams until one contains `needle` or the deadline passes; returns them all.
fn wait_for(socket: &UnixDatagram, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let message = text(&buf[..n]);
            let found = message.lines().any(|l| l == needle);
            seen.push(message);
            if found {
                return seen;
            }
        }
    }
    panic!("no {needle} within {limit:?}; received {seen:?}");
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let fs = Tmpfs::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    // 1 s watchdog: the agent must ping every 0.5 s.
    let agent = Agent::start_with_env(
        fs.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    // Agent::start returned once the status socket answered; READY=1 is sent right after it,
    // and only then: the first datagram must be READY with our pid.
    let seen = wait_for(&manager, "READY=1", Duration::from_secs(10));
    assert_eq!(seen.len(), 1, "something before READY=1: {seen:?}");
    assert!(
        seen[0].contains(&format!("MAINPID={}", agent.pid())),
        "{seen:?}"
    );
    assert!(agent.status_field("marked_filesystems") >= 1);

    let started = Instant::now();
    wait_for(&manager, "WATCHDOG=1", Duration::from_secs(5));
    wait_for(&manager, "WATCHDOG=1", Duration::from_secs(5));
    // Two pings at half the interval: well under two intervals.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let status = agent.stop();
    assert!(status.success(), "{status}");
    wait_for(&manager, "STOPPING=1", Duration::from_secs(5));
}

#[test]
fn no_watchdog_pings_unless_asked_and_no_notify_socket_is_harmless() {
    let fs = Tmpfs::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    let agent = Agent::start_with_env(fs.path(), &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    wait_for(&manager, "READY=1", Duration::from_secs(10));
    manager
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        manager.recv(&mut buf).is_err(),
        "unexpected datagram without WATCHDOG_USEC"
    );
    assert!(agent.stop().success());

    // A WATCHDOG_PID naming another process means the watchdog is not ours: no pings.
    let agent = Agent::start_with_env(
        fs.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    wait_for(&manager, "READY=1", Duration::from_secs(10));
    assert!(
        manager.recv(&mut buf).is_err(),
        "pinged another pid's watchdog"
    );
    assert!(agent.stop().success());

    // A socket nobody listens on: the agent logs and keeps enforcing.
    let gone = dir.path().join("gone.sock");
    let agent = Agent::start_with_env(fs.path(), &[], &[("NOTIFY_SOCKET", gone.to_str().unwrap())]);
    assert!(agent.status_field("marked_filesystems") >= 1);
    assert!(agent.stop().success());
}
