//! Counters the running agent exposes through `guard status`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sub-buckets per power of two: about 9% resolution on latency percentiles.
const SUB_BUCKETS: usize = 8;
/// Covers 1 ns .. 2^40 ns (about 18 minutes).
const POWERS: usize = 40;

/// A lock-free log-linear latency histogram.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max_ns: AtomicU64,
    /// For the metrics' `_sum` (saturates after some 580 years of waiting).
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..POWERS * SUB_BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_ns: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn index(ns: u64) -> usize {
        let ns = ns.max(1);
        let power = 63 - ns.leading_zeros() as usize;
        // Masked below SUB_BUCKETS.
        #[allow(clippy::cast_possible_truncation)]
        let sub = if power >= 3 {
            ((ns >> (power - 3)) & (SUB_BUCKETS as u64 - 1)) as usize
        } else {
            0
        };
        (power * SUB_BUCKETS + sub).min(POWERS * SUB_BUCKETS - 1)
    }

    /// Upper bound of a bucket, in nanoseconds.
    fn bound(index: usize) -> u64 {
        let power = index / SUB_BUCKETS;
        let sub = (index % SUB_BUCKETS) as u64;
        if power >= 3 {
            (1u64 << power) + ((sub + 1) << (power - 3))
        } else {
            1u64 << (power + 1)
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative counts at each of `bounds_ns` (ascending), the total and the sum, for
    /// the metrics: a sample counts under a bound when its whole bucket lies below it, so
    /// a count is at most one bucket's width (about 9%) short, never over.
    pub fn cumulative(&self, bounds_ns: &[u64]) -> (Vec<u64>, u64, u64) {
        let mut below = vec![0u64; bounds_ns.len()];
        let mut total = 0u64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let count = bucket.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            total += count;
            let upper = Self::bound(i);
            for (slot, bound) in below.iter_mut().zip(bounds_ns) {
                if upper <= *bound {
                    *slot += count;
                }
            }
        }
        (below, total, self.sum_ns.load(Ordering::Relaxed))
    }

    /// The `q` quantile (0..1) in nanoseconds, as a bucket's upper bound; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        // q in [0, 1]: a rank between 1 and total.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::bound(i).min(self.max_ns.load(Ordering::Relaxed).max(1));
            }
        }
        self.max_ns.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max_ns.load(Ordering::Relaxed)
    }
}

/// Code decisions by the rule that decided, what came of it and the mode it was decided in.
pub struct RuleCounts {
    /// Per rule: denied / allowed, each permissive / enforced.
    counts: Vec<[AtomicU64; 4]>,
}

impl Default for RuleCounts {
    fn default() -> Self {
        let slots = guard_common::Rule::ALL
            .iter()
            .map(|rule| *rule as usize + 1)
            .max()
            .unwrap_or(0);
        RuleCounts {
            counts: (0..slots).map(|_| Default::default()).collect(),
        }
    }
}

impl RuleCounts {
    fn slot(allowed: bool, enforced: bool) -> usize {
        usize::from(allowed) * 2 + usize::from(enforced)
    }

    pub fn bump(&self, rule: guard_common::Rule, allowed: bool, enforced: bool) {
        if let Some(slots) = self.counts.get(rule as usize) {
            bump(&slots[Self::slot(allowed, enforced)]);
        }
    }

    /// `(rule, allowed, enforced, count)` for the counts that are not zero.
    pub fn nonzero(&self) -> Vec<(guard_common::Rule, bool, bool, u64)> {
        let mut out = Vec::new();
        for rule in guard_common::Rule::ALL {
            let Some(slots) = self.counts.get(rule as usize) else {
                continue;
            };
            for allowed in [true, false] {
                for enforced in [true, false] {
                    let count = slots[Self::slot(allowed, enforced)].load(Ordering::Relaxed);
                    if count > 0 {
                        out.push((rule, allowed, enforced, count));
                    }
                }
            }
        }
        out
    }
}

/// Everything the agent counts.
pub struct Stats {
    /// Code decisions by the rule that decided.
    pub by_rule: RuleCounts,
    pub started: Instant,
    pub events: AtomicU64,
    pub own_events: AtomicU64,
    pub code_decisions: AtomicU64,
    pub denies: AtomicU64,
    pub would_deny: AtomicU64,
    pub errors: AtomicU64,
    pub overflows: AtomicU64,
    /// Records dropped because the audit thread's queue was full.
    pub audit_dropped: AtomicU64,
    /// Records written to the audit file, and those that could not be (disk full, I/O
    /// error): with `audit_dropped`, every record sent is in exactly one of the three.
    pub audit_written: AtomicU64,
    pub audit_lost: AtomicU64,
    pub audit_rotations: AtomicU64,
    /// The audit file's last write failed; why, for `guard status`.
    pub audit_failing: AtomicBool,
    pub audit_error: Mutex<Option<String>>,
    /// Code loads refused because the audit file could not be written
    /// (`audit.disk_full = "refuse"`).
    pub audit_refused: AtomicU64,
    /// Decisions go to the kernel audit log (`[audit] kernel`, resolved at start and at
    /// every reload); and the records that could not be sent there.
    pub kernel_audit: AtomicBool,
    pub kernel_audit_failed: AtomicU64,
    /// fanotify answers the kernel was asked to record.
    pub kernel_audit_answers: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// When (CLOCK_BOOTTIME, ns) the last reload that succeeded, and the last that failed,
    /// began reading: a caller that changed a file the policy reads, then signalled, knows
    /// its change is in force once a reload that began after its change has succeeded.
    pub reload_started_ns: AtomicU64,
    pub failed_reload_started_ns: AtomicU64,
    pub marked_filesystems: AtomicU64,
    /// Of the marked filesystems, those of types the policy does not trust.
    pub untrusted_filesystems: AtomicU64,
    /// Filesystems of the mount table none of whose mount points reached them when marked
    /// (renamed away, covered, a lookup stuck): their opens are not checked.
    pub unmarked_filesystems: AtomicU64,
    /// Executable mappings whose return-path check the exec gate skipped because the
    /// task's address space stayed locked (host mode's native-code rule).
    pub unverified_mappings: AtomicU64,
    /// Interpreters' opens answered by the reader because the workers' queue was full.
    pub saturated: AtomicU64,
    /// The memory limit that applies to the agent (its cgroup's), 0 when none; and the
    /// anonymous memory charged to that cgroup, as last read.
    pub memory_limit: AtomicU64,
    pub memory_anon: AtomicU64,
    /// Verification cache entries evicted to stay under the memory limit.
    pub cache_evictions: AtomicU64,
    /// Ignore marks made (files whose opens the kernel answers itself), and how many times
    /// an attribute change or a reload dropped them all.
    pub kernel_kept: AtomicU64,
    pub kernel_forgotten: AtomicU64,
    /// Interpreters whose audit hook connected under a profile; the events their hooks
    /// reported, those recorded one by one, those refused, and those counted only (over a
    /// budget or the rate, or lost on the hook's side while the agent was behind).
    pub hooked_processes: AtomicU64,
    pub dynamic_events: AtomicU64,
    pub dynamic_records: AtomicU64,
    pub dynamic_denied: AtomicU64,
    pub dynamic_dropped: AtomicU64,
    /// Latency of every answer (event read to response written).
    pub latency: Histogram,
    /// Latency of answers that needed a signature check (cache misses).
    pub miss_latency: Histogram,
    /// Latency of code answers served from the cache.
    pub hit_latency: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            by_rule: RuleCounts::default(),
            started: Instant::now(),
            events: AtomicU64::new(0),
            own_events: AtomicU64::new(0),
            code_decisions: AtomicU64::new(0),
            denies: AtomicU64::new(0),
            would_deny: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
            audit_written: AtomicU64::new(0),
            audit_lost: AtomicU64::new(0),
            audit_rotations: AtomicU64::new(0),
            audit_failing: AtomicBool::new(false),
            audit_error: Mutex::new(None),
            audit_refused: AtomicU64::new(0),
            kernel_audit: AtomicBool::new(false),
            kernel_audit_failed: AtomicU64::new(0),
            kernel_audit_answers: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            reload_started_ns: AtomicU64::new(0),
            failed_reload_started_ns: AtomicU64::new(0),
            marked_filesystems: AtomicU64::new(0),
            untrusted_filesystems: AtomicU64::new(0),
            unmarked_filesystems: AtomicU64::new(0),
            unverified_mappings: AtomicU64::new(0),
            saturated: AtomicU64::new(0),
            memory_limit: AtomicU64::new(0),
            memory_anon: AtomicU64::new(0),
            cache_evictions: AtomicU64::new(0),
            kernel_kept: AtomicU64::new(0),
            kernel_forgotten: AtomicU64::new(0),
            hooked_processes: AtomicU64::new(0),
            dynamic_events: AtomicU64::new(0),
            dynamic_records: AtomicU64::new(0),
            dynamic_denied: AtomicU64::new(0),
            dynamic_dropped: AtomicU64::new(0),
            latency: Histogram::default(),
            miss_latency: Histogram::default(),
            hit_latency: Histogram::default(),
        }
    }
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// CLOCK_BOOTTIME in nanoseconds: comparable between processes, never set back.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((50_000.0..=50_000.0 * 1.13).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((99_000.0..=100_000.0 * 1.13).contains(&p99), "p99 {p99}");
        assert_eq!(h.max(), 100_000);
    }

    #[test]
    fn buckets_are_monotonic() {
        // Below 8 ns only the first bucket of each power is used.
        let mut last = 0;
        for i in 3 * SUB_BUCKETS..POWERS * SUB_BUCKETS {
            let b = Histogram::bound(i);
            assert!(b > last, "bucket {i}");
            last = b;
        }
        for ns in [1u64, 2, 7, 8, 9, 1000, 123_456_789] {
            assert!(Histogram::bound(Histogram::index(ns)) >= ns, "{ns}");
        }
    }
}
