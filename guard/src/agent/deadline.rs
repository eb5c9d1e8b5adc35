//! Lookups through paths a user controls, bounded in time: a FUSE daemon that never answers
//! root holds the thread that asked for ever (a FUSE request waits until it is answered or
//! the caller is killed), so such a lookup runs on a thread of its own and the caller waits
//! for it only until a deadline. What did not answer in time is a fact not established.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Lookups of one kind that may be stuck at once (each holds a thread until its filesystem
/// answers); past the limit, new ones fail at once rather than pile up threads.
pub struct Stuck {
    in_flight: AtomicUsize,
    limit: usize,
}

impl Stuck {
    pub const fn new(limit: usize) -> Stuck {
        Stuck {
            in_flight: AtomicUsize::new(0),
            limit,
        }
    }
}

/// Runs `lookup` on a thread of its own and waits for it until `deadline`: its answer, or
/// `TimedOut` (no answer, never a harmless one).
pub fn run_within<T: Send + 'static>(
    stuck: &'static Stuck,
    deadline: Duration,
    lookup: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if stuck.in_flight.fetch_add(1, Ordering::SeqCst) >= stuck.limit {
        stuck.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "earlier lookups through the user's paths are still stuck",
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("guard-lookup".into())
        .spawn(move || {
            let result = lookup();
            stuck.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        stuck.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(e);
    }
    rx.recv_timeout(deadline).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the lookup took more than {deadline:?}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_have_a_deadline_and_a_limit() {
        static STUCK: Stuck = Stuck::new(1);
        assert_eq!(
            run_within(&STUCK, Duration::from_secs(10), || Ok(7)).unwrap(),
            7
        );
        // A lookup that never answers: a FIFO's open blocks as a FUSE daemon that stalls.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stall");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let stalled = {
            let fifo = fifo.clone();
            run_within(&STUCK, Duration::from_millis(300), move || {
                std::fs::File::open(&fifo).map(|_| ())
            })
        };
        assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stuck one holds the only place: the next fails at once, without running.
        let refused = run_within(&STUCK, Duration::from_secs(10), || Ok(()));
        assert!(refused.unwrap_err().to_string().contains("still stuck"));
        // Release the stuck thread; then lookups run again.
        let _writer = std::fs::OpenOptions::new().write(true).open(&fifo);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while run_within(&STUCK, Duration::from_secs(10), || Ok(())).is_err() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
