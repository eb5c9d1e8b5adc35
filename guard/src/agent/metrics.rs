//! The status report as metrics: OpenMetrics 1.0 text for scrapers (`guard status --format
//! openmetrics`), and the Prometheus text format 0.0.4 that node_exporter's textfile
//! collector reads (`guard run --metrics-file`, written atomically by the agent).
//!
//! Both are rendered from the same [`Report`] `guard status` reads, so the numbers an
//! operator sees in the terminal and in a dashboard are the same numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::State;
use super::status::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
    /// Prometheus text 0.0.4: what node_exporter's textfile collector parses.
    Prometheus,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Info,
    Histogram,
}

struct Writer {
    format: Format,
    out: String,
}

impl Writer {
    /// Starts a metric family. Counters' samples are `NAME_total`; in the Prometheus
    /// format the family is named after its samples, and `info` is a gauge `NAME_info`.
    fn family(&mut self, name: &str, kind: Kind, unit: Option<&str>, help: &str) {
        let (declared, kind_name) = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => (name.to_string(), "counter"),
            (Format::Prometheus, Kind::Counter) => (format!("{name}_total"), "counter"),
            (_, Kind::Gauge) => (name.to_string(), "gauge"),
            (Format::OpenMetrics, Kind::Info) => (name.to_string(), "info"),
            (Format::Prometheus, Kind::Info) => (format!("{name}_info"), "gauge"),
            (_, Kind::Histogram) => (name.to_string(), "histogram"),
        };
        let _ = writeln!(self.out, "# TYPE {declared} {kind_name}");
        if let (Format::OpenMetrics, Some(unit)) = (self.format, unit) {
            let _ = writeln!(self.out, "# UNIT {declared} {unit}");
        }
        let _ = writeln!(self.out, "# HELP {declared} {}", escape_help(help));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, None, help);
        self.sample(&format!("{name}_total"), &[], value);
    }

    fn gauge(&mut self, name: &str, unit: Option<&str>, help: &str, value: impl std::fmt::Display) {
        self.family(name, Kind::Gauge, unit, help);
        self.sample(name, &[], value);
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Whether the exec gate's status line says it runs (`enforcing …`, `reporting …`).
fn exec_gate_up(status: &str) -> bool {
    status.starts_with("enforcing") || status.starts_with("reporting")
}

/// The report as metrics text.
pub fn render(report: &Report, format: Format) -> String {
    let mut w = Writer {
        format,
        out: String::with_capacity(8 * 1024),
    };
    w.family(
        "guard_agent",
        Kind::Info,
        None,
        "The running agent: backend, mode and policy in force.",
    );
    w.sample(
        "guard_agent_info",
        &[
            ("backend", &report.backend),
            ("mode", &report.mode),
            ("policy", &report.policy),
        ],
        1,
    );
    w.family(
        "guard_layer_up",
        Kind::Gauge,
        None,
        "Whether each enforcement layer runs (1) or not (0).",
    );
    w.sample("guard_layer_up", &[("layer", "fanotify")], 1);
    w.sample(
        "guard_layer_up",
        &[("layer", "exec_gate")],
        u8::from(exec_gate_up(&report.exec_gate)),
    );
    w.sample(
        "guard_layer_up",
        &[("layer", "bpf_lsm")],
        u8::from(report.backend.contains("bpf-lsm")),
    );
    w.gauge(
        "guard_uptime_seconds",
        Some("seconds"),
        "Seconds since the agent started.",
        report.uptime_s,
    );

    w.family(
        "guard_decisions",
        Kind::Counter,
        None,
        "Decisions on code by the rule that decided, what the policy said and whether it was enforced.",
    );
    for d in &report.by_rule {
        w.sample(
            "guard_decisions_total",
            &[
                ("rule", &d.rule),
                ("decision", &d.decision),
                ("mode", &d.mode),
            ],
            d.count,
        );
    }
    w.counter(
        "guard_events",
        "Permission events read from fanotify.",
        report.events,
    );
    w.counter(
        "guard_own_events",
        "Permission events caused by the agent itself.",
        report.own_events,
    );
    w.counter(
        "guard_saturated",
        "Interpreters' opens refused unjudged: every worker busy and the queue full.",
        report.saturated,
    );
    w.gauge(
        "guard_queue_depth",
        None,
        "Events waiting for a worker.",
        report.queue_depth,
    );

    w.counter(
        "guard_cache_hits",
        "Content verifications served from the cache.",
        report.cache_hits,
    );
    w.counter(
        "guard_cache_misses",
        "Content verifications computed (hash and signature).",
        report.cache_misses,
    );
    w.counter(
        "guard_cache_evictions",
        "Cache entries evicted to stay under the memory limit.",
        report.cache_evictions,
    );
    w.gauge(
        "guard_cache_entries",
        None,
        "Entries in the verification cache.",
        report.cache_entries,
    );
    w.gauge(
        "guard_cache_capacity",
        None,
        "Entries the verification cache may hold now.",
        report.cache_capacity,
    );
    w.counter(
        "guard_kernel_kept",
        "Files whose opens were left to the kernel (fanotify ignore marks made).",
        report.kernel_kept,
    );
    w.counter(
        "guard_kernel_forgotten",
        "Times every ignore mark was dropped (an attribute change, a reload).",
        report.kernel_forgotten,
    );

    w.family(
        "guard_answer_latency_seconds",
        Kind::Histogram,
        Some("seconds"),
        "Time from reading a permission event to answering it.",
    );
    for h in &report.histograms {
        let labels = |le: &str| [("answers", h.answers.clone()), ("le", le.to_string())];
        for (bound, count) in &h.buckets {
            let labels = labels(&bound.to_string());
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.sample("guard_answer_latency_seconds_bucket", &labels, count);
        }
        let labels = labels("+Inf");
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.sample("guard_answer_latency_seconds_bucket", &labels, h.count);
        let answers = [("answers", h.answers.as_str())];
        w.sample("guard_answer_latency_seconds_count", &answers, h.count);
        w.sample("guard_answer_latency_seconds_sum", &answers, h.sum_seconds);
    }

    w.family(
        "guard_audit_records",
        Kind::Counter,
        None,
        "Audit records by what became of them: written to the file, lost (file not writable), dropped (queue full).",
    );
    for (outcome, count) in [
        ("written", report.audit_written),
        ("lost", report.audit_lost),
        ("dropped", report.audit_dropped),
    ] {
        w.sample("guard_audit_records_total", &[("outcome", outcome)], count);
    }
    w.counter(
        "guard_audit_rotations",
        "Rotations of the audit file.",
        report.audit_rotations,
    );
    w.counter(
        "guard_audit_refused",
        "Code loads refused because the audit file could not be written (disk_full = refuse).",
        report.audit_refused,
    );
    w.gauge(
        "guard_audit_writable",
        None,
        "Whether the audit file's last write succeeded.",
        u8::from(report.audit_error.is_none()),
    );

    w.gauge(
        "guard_kernel_audit",
        None,
        "Whether refusals go to the kernel audit log.",
        u8::from(report.kernel_audit),
    );
    w.counter(
        "guard_kernel_audit_answers",
        "fanotify answers the kernel was asked to record (FANOTIFY records).",
        report.kernel_audit_answers,
    );
    w.counter(
        "guard_kernel_audit_failed",
        "Decisions to record that did not reach the kernel audit log.",
        report.kernel_audit_failed,
    );
    w.family(
        "guard_reloads",
        Kind::Counter,
        None,
        "Policy reloads (SIGHUP) by result.",
    );
    w.sample("guard_reloads_total", &[("result", "ok")], report.reloads);
    w.sample(
        "guard_reloads_total",
        &[("result", "failed")],
        report.reload_failures,
    );
    w.counter(
        "guard_errors",
        "Errors (see the agent's log).",
        report.errors,
    );
    w.counter(
        "guard_fanotify_overflows",
        "fanotify queue overflows: events the kernel allowed unseen.",
        report.overflows,
    );
    w.counter(
        "guard_unverified_mappings",
        "Executable mappings the exec gate could not look at again on return.",
        report.unverified_mappings,
    );
    w.family(
        "guard_filesystems",
        Kind::Gauge,
        None,
        "Filesystems marked, of those of untrusted types, and those that should be and are not.",
    );
    for (state, count) in [
        ("marked", report.marked_filesystems),
        ("untrusted", report.untrusted_filesystems),
        ("unmarked", report.unmarked_filesystems),
    ] {
        w.sample("guard_filesystems", &[("state", state)], count);
    }
    w.family(
        "guard_trust",
        Kind::Gauge,
        None,
        "Why code is trusted: keys, allow-listed digests, packages apt verified.",
    );
    for (kind, count) in [
        ("keys", report.trusted_keys),
        ("digests", report.allowed_digests),
        ("packages", report.trusted_packages),
    ] {
        w.sample("guard_trust", &[("kind", kind)], count);
    }
    w.gauge(
        "guard_memory_limit_bytes",
        Some("bytes"),
        "The agent's cgroup memory limit (0: none).",
        report.memory_limit,
    );
    w.gauge(
        "guard_memory_anon_bytes",
        Some("bytes"),
        "Anonymous memory charged to the agent's cgroup.",
        report.memory_anon,
    );
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

/// Writes the metrics to `path` every `interval`, atomically (a temporary file renamed
/// over it), for node_exporter's textfile collector. On a thread of its own: the file may
/// be on a filesystem the agent marks, and its own opens are answered by the event loop.
pub fn write_periodically(
    state: Arc<State>,
    path: PathBuf,
    interval: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("guard-metrics".into())
        .spawn(move || {
            let mut failing = false;
            while !state.stopping() {
                let text = render(&super::status::report(&state), Format::Prometheus);
                match write_atomically(&path, text.as_bytes()) {
                    Ok(()) => failing = false,
                    Err(e) => {
                        if !failing {
                            log::error!("metrics file {}: {e}", path.display());
                        }
                        failing = true;
                    }
                }
                std::thread::sleep(interval);
            }
        })?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = path.as_os_str().to_owned();
    // The textfile collector reads `*.prom` only: the temporary name is never read.
    name.push(".tmp");
    let temporary = PathBuf::from(name);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::status::{LatencyHistogram, RuleDecisions};

    fn report() -> Report {
        let json = r#"{"pid":1,"uptime_s":12.5,"backend":"fanotify","mode":"enforce",
            "policy":"/etc/guard/policy \"x\".toml","marked_filesystems":3,"events":10,
            "own_events":1,"decisions":4,"denies":1,"would_deny":0,"errors":0,"overflows":0,
            "audit_dropped":0,"reloads":2,"reload_failures":1,"cache_entries":5,
            "cache_hits":7,"cache_misses":3,"queue_depth":0,"latency_p50_us":1.0,
            "latency_p99_us":2.0,"latency_max_us":3.0,"hit_p50_us":1.0,"hit_p99_us":1.0,
            "hit_max_us":1.0,"miss_p50_us":1.0,"miss_p99_us":1.0,"miss_max_us":1.0,
            "exec_gate":"enforcing on 2 interpreter executable(s)"}"#;
        let mut report: Report = serde_json::from_str(json).unwrap();
        report.by_rule = vec![RuleDecisions {
            rule: "valid-signature".into(),
            decision: "deny".into(),
            mode: "enforce".into(),
            count: 1,
        }];
        report.histograms = vec![LatencyHistogram {
            answers: "all".into(),
            buckets: vec![(1e-5, 2), (1e-3, 9)],
            count: 10,
            sum_seconds: 0.25,
        }];
        report
    }

    #[test]
    fn openmetrics_names_families_and_ends_with_eof() {
        let text = render(&report(), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE guard_decisions counter\n"), "{text}");
        assert!(text.contains(
            "guard_decisions_total{rule=\"valid-signature\",decision=\"deny\",mode=\"enforce\"} 1\n"
        ));
        assert!(
            text.contains("policy=\"/etc/guard/policy \\\"x\\\".toml\""),
            "{text}"
        );
        assert!(
            text.contains("guard_answer_latency_seconds_bucket{answers=\"all\",le=\"+Inf\"} 10\n")
        );
        assert!(text.contains("guard_layer_up{layer=\"exec_gate\"} 1\n"));
    }

    #[test]
    fn prometheus_format_names_counters_by_their_samples() {
        let text = render(&report(), Format::Prometheus);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE guard_decisions_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE guard_agent_info gauge\n"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
    }
}
