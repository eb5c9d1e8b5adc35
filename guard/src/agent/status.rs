//! `guard status`: the running agent answers with its counters over a unix socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::State;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/guard/guard.sock";

/// What `guard status` reports.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    pub pid: u32,
    pub uptime_s: f64,
    pub backend: String,
    pub mode: String,
    pub policy: String,
    pub marked_filesystems: u64,
    /// Why code is trusted: keys, allow-listed digests, packages apt verified.
    #[serde(default)]
    pub trusted_keys: u64,
    #[serde(default)]
    pub allowed_digests: u64,
    #[serde(default)]
    pub trusted_packages: u64,
    /// Of those, filesystems of untrusted types (code there is refused).
    #[serde(default)]
    pub untrusted_filesystems: u64,
    /// Filesystems that should be marked and are not (the agent's log says why).
    #[serde(default)]
    pub unmarked_filesystems: u64,
    /// Executable mappings the exec gate could not look at again on return (a task whose
    /// threads kept its address space locked); see docs/failure-posture.md.
    #[serde(default)]
    pub unverified_mappings: u64,
    /// Interpreters' opens refused unjudged because every worker was busy and the queue full.
    #[serde(default)]
    pub saturated: u64,
    pub events: u64,
    pub own_events: u64,
    pub decisions: u64,
    pub denies: u64,
    pub would_deny: u64,
    pub errors: u64,
    pub overflows: u64,
    pub audit_dropped: u64,
    /// Records written to the audit file, and lost because it could not be written:
    /// with `audit_dropped`, every record is counted once.
    #[serde(default)]
    pub audit_written: u64,
    #[serde(default)]
    pub audit_lost: u64,
    #[serde(default)]
    pub audit_rotations: u64,
    /// Code loads refused because the audit file could not be written.
    #[serde(default)]
    pub audit_refused: u64,
    /// Why the audit file's last write failed; None while it is written.
    #[serde(default)]
    pub audit_error: Option<String>,
    /// Whether decisions go to the kernel audit log, and the kernel layers' records that
    /// could not be sent there.
    #[serde(default)]
    pub kernel_audit: bool,
    #[serde(default)]
    pub kernel_audit_failed: u64,
    /// fanotify answers the kernel was asked to record (its FANOTIFY records).
    #[serde(default)]
    pub kernel_audit_answers: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// CLOCK_BOOTTIME (ns) at which the last successful, and the last failed, reload began.
    #[serde(default)]
    pub reload_started_ns: u64,
    #[serde(default)]
    pub failed_reload_started_ns: u64,
    pub cache_entries: u64,
    /// How many entries the cache may hold now: less than configured under memory pressure.
    #[serde(default)]
    pub cache_capacity: u64,
    /// Entries evicted to stay under the memory limit.
    #[serde(default)]
    pub cache_evictions: u64,
    /// Files whose opens were left to the kernel (ignore marks made), and how many times
    /// every such mark was dropped (an attribute change, a reload).
    #[serde(default)]
    pub kernel_kept: u64,
    #[serde(default)]
    pub kernel_forgotten: u64,
    /// The Python audit hook: interpreters whose hook connected, the events reported,
    /// recorded one by one, refused, and counted only (see `agent::python_hook`).
    #[serde(default)]
    pub hooked_processes: u64,
    #[serde(default)]
    pub dynamic_events: u64,
    #[serde(default)]
    pub dynamic_records: u64,
    #[serde(default)]
    pub dynamic_denied: u64,
    #[serde(default)]
    pub dynamic_dropped: u64,
    /// The agent's cgroup memory limit (0: none) and the anonymous memory charged to it.
    #[serde(default)]
    pub memory_limit: u64,
    #[serde(default)]
    pub memory_anon: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub queue_depth: u64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_max_us: f64,
    pub hit_p50_us: f64,
    pub hit_p99_us: f64,
    pub hit_max_us: f64,
    pub miss_p50_us: f64,
    pub miss_p99_us: f64,
    pub miss_max_us: f64,
    pub exec_gate: String,
    /// Code decisions by the rule that decided (non-zero counts only).
    #[serde(default)]
    pub by_rule: Vec<RuleDecisions>,
    /// Answer latencies as cumulative histograms (all answers, cache hits, cache misses).
    #[serde(default)]
    pub histograms: Vec<LatencyHistogram>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RuleDecisions {
    pub rule: String,
    /// `allow` or `deny`: what the policy said.
    pub decision: String,
    /// `enforce` or `permissive`: whether it was enforced.
    pub mode: String,
    pub count: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// `all`, `cache_hit` or `cache_miss`.
    pub answers: String,
    /// `(upper bound in seconds, answers at most that long)`, ascending.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// Bucket bounds of the latency histograms, in seconds: a cache hit's microseconds to a
/// stalled filesystem's seconds.
pub const LATENCY_BOUNDS: [f64; 14] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3, 1.0, 5.0,
];

fn histogram(answers: &str, histogram: &super::stats::Histogram) -> LatencyHistogram {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bounds_ns: Vec<u64> = LATENCY_BOUNDS
        .iter()
        .map(|s| (s * 1e9).round() as u64)
        .collect();
    let (below, count, sum_ns) = histogram.cumulative(&bounds_ns);
    LatencyHistogram {
        answers: answers.into(),
        buckets: LATENCY_BOUNDS.iter().copied().zip(below).collect(),
        count,
        sum_seconds: sum_ns as f64 / 1e9,
    }
}

pub fn report(state: &State) -> Report {
    let stats = &state.stats;
    let us = |ns: u64| ns as f64 / 1000.0;
    let loaded = state.loaded();
    Report {
        pid: std::process::id(),
        uptime_s: stats.started.elapsed().as_secs_f64(),
        backend: state.backend.clone(),
        mode: loaded.policy.mode.to_string(),
        policy: loaded.policy.origin.clone(),
        marked_filesystems: stats.marked_filesystems.load(Ordering::Relaxed),
        trusted_keys: loaded.policy.trust.keyring.len() as u64,
        allowed_digests: loaded.policy.trust.allowed_sha256.len() as u64,
        trusted_packages: loaded
            .policy
            .trust
            .lists
            .iter()
            .filter(|l| l.package.is_some())
            .count() as u64,
        untrusted_filesystems: stats.untrusted_filesystems.load(Ordering::Relaxed),
        unmarked_filesystems: stats.unmarked_filesystems.load(Ordering::Relaxed),
        unverified_mappings: stats.unverified_mappings.load(Ordering::Relaxed),
        saturated: stats.saturated.load(Ordering::Relaxed),
        events: stats.events.load(Ordering::Relaxed),
        own_events: stats.own_events.load(Ordering::Relaxed),
        decisions: stats.code_decisions.load(Ordering::Relaxed),
        denies: stats.denies.load(Ordering::Relaxed),
        would_deny: stats.would_deny.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        overflows: stats.overflows.load(Ordering::Relaxed),
        audit_dropped: stats.audit_dropped.load(Ordering::Relaxed),
        audit_written: stats.audit_written.load(Ordering::Relaxed),
        audit_lost: stats.audit_lost.load(Ordering::Relaxed),
        audit_rotations: stats.audit_rotations.load(Ordering::Relaxed),
        audit_refused: stats.audit_refused.load(Ordering::Relaxed),
        kernel_audit: stats.kernel_audit.load(Ordering::Relaxed),
        kernel_audit_failed: stats.kernel_audit_failed.load(Ordering::Relaxed),
        kernel_audit_answers: stats.kernel_audit_answers.load(Ordering::Relaxed),
        audit_error: stats
            .audit_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone(),
        reloads: stats.reloads.load(Ordering::Relaxed),
        reload_failures: stats.reload_failures.load(Ordering::Relaxed),
        reload_started_ns: stats.reload_started_ns.load(Ordering::Relaxed),
        failed_reload_started_ns: stats.failed_reload_started_ns.load(Ordering::Relaxed),
        cache_entries: state.cache.len() as u64,
        cache_capacity: state.cache.capacity() as u64,
        cache_evictions: stats.cache_evictions.load(Ordering::Relaxed),
        kernel_kept: stats.kernel_kept.load(Ordering::Relaxed),
        kernel_forgotten: stats.kernel_forgotten.load(Ordering::Relaxed),
        hooked_processes: stats.hooked_processes.load(Ordering::Relaxed),
        dynamic_events: stats.dynamic_events.load(Ordering::Relaxed),
        dynamic_records: stats.dynamic_records.load(Ordering::Relaxed),
        dynamic_denied: stats.dynamic_denied.load(Ordering::Relaxed),
        dynamic_dropped: stats.dynamic_dropped.load(Ordering::Relaxed),
        memory_limit: stats.memory_limit.load(Ordering::Relaxed),
        memory_anon: stats.memory_anon.load(Ordering::Relaxed),
        cache_hits: state.cache.hits.load(Ordering::Relaxed),
        cache_misses: state.cache.misses.load(Ordering::Relaxed),
        queue_depth: state.queue_depth(),
        latency_p50_us: us(stats.latency.quantile(0.5)),
        latency_p99_us: us(stats.latency.quantile(0.99)),
        latency_max_us: us(stats.latency.max()),
        hit_p50_us: us(stats.hit_latency.quantile(0.5)),
        hit_p99_us: us(stats.hit_latency.quantile(0.99)),
        hit_max_us: us(stats.hit_latency.max()),
        miss_p50_us: us(stats.miss_latency.quantile(0.5)),
        miss_p99_us: us(stats.miss_latency.quantile(0.99)),
        miss_max_us: us(stats.miss_latency.max()),
        exec_gate: state.exec_gate_status(),
        by_rule: stats
            .by_rule
            .nonzero()
            .into_iter()
            .map(|(rule, allowed, enforced, count)| RuleDecisions {
                rule: rule.id().into(),
                decision: if allowed { "allow" } else { "deny" }.into(),
                mode: if enforced { "enforce" } else { "permissive" }.into(),
                count,
            })
            .collect(),
        histograms: vec![
            histogram("all", &stats.latency),
            histogram("cache_hit", &stats.hit_latency),
            histogram("cache_miss", &stats.miss_latency),
        ],
    }
}

/// Binds the socket and serves reports on a thread. The socket is created only once
/// enforcement is in place, so a successful `guard status` means the agent is enforcing.
pub fn serve(path: &Path, state: Arc<State>) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    // A stale socket from a dead agent would make bind fail.
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("status socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    std::thread::Builder::new()
        .name("guard-status".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else {
                    // EMFILE leaves the connection pending: retrying at once would spin a
                    // core while the workers need it.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                if let Ok(text) = serde_json::to_string(&report(&state)) {
                    let _ = stream.write_all(text.as_bytes());
                }
            }
        })?;
    Ok(())
}

/// Asks a running agent for its report.
pub fn query(path: &Path) -> anyhow::Result<Report> {
    use anyhow::Context;
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    serde_json::from_str(&text).with_context(|| format!("bad answer on {}", path.display()))
}

pub fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
