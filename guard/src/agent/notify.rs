//! The systemd notification protocol (`sd_notify`): READY=1 once enforcement is active,
//! WATCHDOG=1 while the agent is healthy, STOPPING=1 on shutdown.
//!
//! A few lines over a unix datagram socket rather than libsystemd: the protocol is one
//! datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without `$NOTIFY_SOCKET` (not started by
//! systemd) every call does nothing. Errors are logged, never fatal: a supervisor that
//! cannot be told is no reason to stop enforcing.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sends one notification (several `KEY=VALUE` lines are allowed). Returns whether it was
/// sent; false when there is no `$NOTIFY_SOCKET` or it cannot be reached.
pub fn notify(state: &str) -> bool {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(&target, state) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "cannot notify the service manager ({}): {e}",
                target.to_string_lossy()
            );
            false
        }
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        }
        Some((b'/', _)) => {
            socket.send_to(state.as_bytes(), target)?;
        }
        // systemd also accepts vsock addresses; guard runs on the host it protects.
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract socket name",
            ));
        }
    }
    Ok(())
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if it is meant for this
/// process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Proof of life from the event loop: the loop calls [`Heartbeat::beat`] on every turn (it
/// wakes at least once a second), and the watchdog thread pets systemd only while the
/// beats are recent. A wedged loop therefore stops the pings and systemd restarts the
/// agent, which a thread pinging on its own would hide.
#[derive(Clone)]
pub struct Heartbeat {
    started: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    pub fn beat(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Tells systemd the agent is enforcing (READY=1, with a status line) and, when a watchdog
/// is configured, starts the thread that sends WATCHDOG=1 at half the interval while the
/// returned heartbeat is fed.
pub fn ready(status: &str) -> Heartbeat {
    let heartbeat = Heartbeat {
        started: Instant::now(),
        last_ms: Arc::new(AtomicU64::new(0)),
    };
    let pid = std::process::id();
    // MAINPID lets the manager track us even if we were started through a wrapper.
    notify(&format!("READY=1\nMAINPID={pid}\nSTATUS={status}"));
    if let Some(interval) = watchdog_interval() {
        let period = interval / 2;
        // A loop turn takes about a second at most (its poll timeout) plus the events read
        // in it. Silent for half the interval means stuck: the next ping is withheld and
        // systemd kills the agent within one interval of the last good ping, not two.
        let stale = period.max(Duration::from_secs(3));
        let spawned = spawn_watchdog(heartbeat.clone(), period, stale, || {
            notify("WATCHDOG=1");
        });
        match spawned {
            Ok(_) => log::info!(
                "systemd watchdog: pinging every {:.1} s",
                period.as_secs_f64()
            ),
            Err(e) => log::error!("cannot start the watchdog thread: {e}"),
        }
    }
    heartbeat
}

/// Every `period`, calls `ping` if the heartbeat is younger than `stale`.
fn spawn_watchdog(
    beats: Heartbeat,
    period: Duration,
    stale: Duration,
    ping: impl Fn() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("guard-watchdog".into())
        .spawn(move || {
            loop {
                let age = beats.age();
                if age < stale {
                    ping();
                } else {
                    log::error!(
                        "event loop silent for {:.1} s: withholding the watchdog ping",
                        age.as_secs_f64()
                    );
                }
                std::thread::sleep(period);
            }
        })
}

/// Tells systemd the agent is stopping (so a SIGTERM-driven stop is not seen as a crash).
pub fn stopping() {
    notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket_and_rejects_junk_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(send(std::ffi::OsStr::new("relative"), "READY=1").is_err());
        assert!(send(std::ffi::OsStr::new(""), "READY=1").is_err());
    }

    #[test]
    fn a_silent_loop_stops_the_pings() {
        let heartbeat = Heartbeat {
            started: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        let pings = Arc::new(AtomicU64::new(0));
        let counter = pings.clone();
        spawn_watchdog(
            heartbeat.clone(),
            Duration::from_millis(10),
            Duration::from_millis(100),
            move || {
                counter.fetch_add(1, Ordering::Relaxed);
            },
        )
        .unwrap();
        // Beating: pings flow.
        for _ in 0..10 {
            heartbeat.beat();
            std::thread::sleep(Duration::from_millis(10));
        }
        let while_beating = pings.load(Ordering::Relaxed);
        assert!(while_beating >= 3, "{while_beating}");
        // Silent: after the stale time, no more pings.
        std::thread::sleep(Duration::from_millis(150));
        let stalled = pings.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pings.load(Ordering::Relaxed),
            stalled,
            "pinged while silent"
        );
        // Beating again: pings resume.
        for _ in 0..10 {
            heartbeat.beat();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(pings.load(Ordering::Relaxed) > stalled);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("guard-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
