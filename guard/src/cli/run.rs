//! `guard run` and `guard status`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use guard::agent::{self, Backend, status};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Policy file (TOML); the embedded default policy when absent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Trust this public key or certificate in addition to the policy's (repeatable).
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Refuse a policy file without a valid IMA signature (security.ima) by one of the
    /// --key keys (not the policy's own keys); checked at start and at every reload.
    #[arg(long, requires_all = ["policy", "keys"])]
    pub require_signed_policy: bool,
    /// Log what would be refused, refuse nothing.
    #[arg(long)]
    pub permissive: bool,
    /// Enforcement backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Mark only the filesystems holding these paths (repeatable); default: every mounted
    /// filesystem but kernel pseudo filesystems (code on types the policy does not trust is
    /// refused), following new mounts.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,
    /// With --watch: also mark every filesystem mounted at or below a watched path, now and
    /// as they are mounted later.
    #[arg(long, requires = "watch")]
    pub follow: bool,
    /// JSON audit log (one object per line); overrides the policy's `audit.file`.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Unix socket `guard status` reads.
    #[arg(long, value_name = "PATH", default_value = status::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Write the status as metrics (Prometheus text) to this file, atomically, for
    /// node_exporter's textfile collector (name it `*.prom` in its directory).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Seconds between two writes of --metrics-file.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_interval: u64,
    /// Send each audit record to this journal socket as an entry with GUARD_* fields
    /// (native protocol). Default: journald's socket when standard error is the journal
    /// (under systemd), else the records are lines on standard error.
    #[arg(long, value_name = "PATH")]
    pub journal_socket: Option<PathBuf>,
    /// Do not load the exec gate (the eBPF program that refuses `-c`, code on stdin and
    /// descriptor scripts at exec): for debugging, or hosts that forbid BPF.
    #[arg(long)]
    pub no_exec_gate: bool,
    /// Run with less protection than asked when a layer fails to load (the exec gate; the
    /// BPF LSM layer where the kernel has BPF LSM; `[native] code` without it). Without
    /// this, enforce mode refuses to start, naming what failed; permissive mode warns.
    #[arg(long)]
    pub allow_degraded: bool,
    /// An executable that may stop, trace and unpin the agent (repeatable). PID 1 (the init
    /// system: `systemctl stop`) and guard itself always may; anyone else, root included,
    /// is refused where the BPF LSM layer runs.
    #[arg(long = "controller", value_name = "PATH")]
    pub controllers: Vec<PathBuf>,
    /// Decision worker threads.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Cached content verifications (signature checks) kept.
    #[arg(long, default_value_t = 131_072)]
    pub cache_size: usize,
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    agent::run(agent::Config {
        policy_path: args.policy,
        extra_keys: args.keys,
        permissive: args.permissive,
        watch: args.watch,
        follow: args.follow,
        audit: args.audit,
        socket: args.socket,
        metrics_file: args.metrics_file,
        metrics_interval: std::time::Duration::from_secs(args.metrics_interval),
        journal_socket: args.journal_socket,
        workers: args.workers,
        cache_capacity: args.cache_size,
        backend: args.backend,
        require_signed_policy: args.require_signed_policy,
        exec_gate: !args.no_exec_gate,
        allow_degraded: args.allow_degraded,
        controllers: args.controllers,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Makes the running agent re-read its policy and keys (SIGHUP) and waits until it has: a
/// caller that goes on (apt unpacking, an administrator's next command) meets the new policy.
/// Fails if the agent does not answer or refuses the new policy (the previous one stays).
pub(super) fn reload_and_wait(socket: &Path) -> anyhow::Result<()> {
    let before = status::query(socket).context("the agent does not answer")?;
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(before.pid).context("the agent's pid does not fit a pid_t")?,
    );
    // A reload that begins after this reads the files as they are now (the agent runs one
    // reload at a time).
    let changed = guard::agent::stats::boottime_ns();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .with_context(|| format!("signalling the agent (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(now) = status::query(socket) else {
            continue;
        };
        if now.pid != before.pid {
            // A restarted agent read the files at start.
            return Ok(());
        }
        if now.reload_started_ns >= changed {
            return Ok(());
        }
        if now.failed_reload_started_ns >= changed {
            bail!(
                "the agent (pid {pid}) refused the new policy and keeps the previous one: its \
                 log says why"
            );
        }
    }
    bail!("the agent (pid {pid}) did not reload within 120 s")
}

#[derive(Args)]
pub(crate) struct ReloadArgs {
    /// Unix socket of the running agent.
    #[arg(long, value_name = "PATH", default_value = status::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `guard reload`: the unit's ExecReload, so that `systemctl reload guard` returns once the
/// new policy is loaded, and fails when it is refused.
pub(super) fn reload(args: &ReloadArgs) -> anyhow::Result<ExitCode> {
    reload_and_wait(&args.socket)?;
    println!("guard: policy reloaded");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// Unix socket of the running agent.
    #[arg(long, value_name = "PATH", default_value = status::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the raw JSON report (as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// How to print the report: for people, as JSON, or as metrics (OpenMetrics 1.0 text,
    /// or the Prometheus text format node_exporter's textfile collector reads).
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatusFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StatusFormat {
    Text,
    Json,
    Openmetrics,
    Prometheus,
}

pub(super) fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    use guard::agent::metrics::{Format, render};
    let report = status::query(&args.socket)?;
    let format = if args.json {
        StatusFormat::Json
    } else {
        args.format
    };
    match format {
        StatusFormat::Text => {}
        StatusFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        StatusFormat::Openmetrics => {
            print!("{}", render(&report, Format::OpenMetrics));
            return Ok(ExitCode::SUCCESS);
        }
        StatusFormat::Prometheus => {
            print!("{}", render(&report, Format::Prometheus));
            return Ok(ExitCode::SUCCESS);
        }
    }
    println!(
        "agent:        pid {}, up {:.0} s, backend {}, {} mode",
        report.pid, report.uptime_s, report.backend, report.mode
    );
    println!("policy:       {}", report.policy);
    println!(
        "trust:        {} keys, {} allow-listed digests ({} from packages apt verified: guard packages list)",
        report.trusted_keys, report.allowed_digests, report.trusted_packages
    );
    println!(
        "filesystems:  {} marked ({} of untrusted types)",
        report.marked_filesystems, report.untrusted_filesystems
    );
    if report.unmarked_filesystems > 0 {
        println!(
            "              {} NOT MARKED: their opens are not checked (the agent's log says why)",
            report.unmarked_filesystems
        );
    }
    println!("exec gate:    {}", report.exec_gate);
    if report.unverified_mappings > 0 {
        println!(
            "              {} executable mappings not looked at again on return (address space locked)",
            report.unverified_mappings
        );
    }
    println!(
        "events:       {} ({} from guard itself)",
        report.events, report.own_events
    );
    println!(
        "decisions:    {} on code, {} denied, {} would be denied (permissive)",
        report.decisions, report.denies, report.would_deny
    );
    println!(
        "cache:        {} entries, {} hits, {} misses",
        report.cache_entries, report.cache_hits, report.cache_misses
    );
    println!(
        "kernel cache: {} files left to the kernel, dropped {} times (attribute changes, reloads)",
        report.kernel_kept, report.kernel_forgotten
    );
    println!(
        "python hook:  {} interpreters hooked, {} events, {} recorded, {} refused, {} counted only (budget, rate, agent behind)",
        report.hooked_processes,
        report.dynamic_events,
        report.dynamic_records,
        report.dynamic_denied,
        report.dynamic_dropped
    );
    if report.memory_limit > 0 {
        println!(
            "memory:       {} MiB anonymous of a {} MiB limit; cache capacity {}, {} evicted under pressure",
            report.memory_anon >> 20,
            report.memory_limit >> 20,
            report.cache_capacity,
            report.cache_evictions
        );
    }
    println!(
        "queue depth:  {}{}",
        report.queue_depth,
        if report.saturated > 0 {
            format!(
                " ({} opens refused unjudged: every worker busy, queue full)",
                report.saturated
            )
        } else {
            String::new()
        }
    );
    println!(
        "latency:      p50 {:.1} us, p99 {:.1} us, max {:.1} us (all answers)",
        report.latency_p50_us, report.latency_p99_us, report.latency_max_us
    );
    println!(
        "  cache hit:  p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        report.hit_p50_us, report.hit_p99_us, report.hit_max_us
    );
    println!(
        "  cache miss: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        report.miss_p50_us, report.miss_p99_us, report.miss_max_us
    );
    println!(
        "audit trail:  {} records written, {} lost (file not writable), {} dropped (queue full), {} rotations{}",
        report.audit_written,
        report.audit_lost,
        report.audit_dropped,
        report.audit_rotations,
        match &report.audit_error {
            Some(why) => format!(
                "\n              NOT WRITABLE: {why}; {} code loads refused meanwhile",
                report.audit_refused
            ),
            None if report.audit_refused > 0 => format!(
                "; {} code loads refused while it was not writable",
                report.audit_refused
            ),
            None => String::new(),
        }
    );
    println!(
        "kernel audit: {}",
        if report.kernel_audit {
            format!(
                "refusals recorded (ausearch -m FANOTIFY,USER_AVC): {} fanotify answers, {} not recorded",
                report.kernel_audit_answers, report.kernel_audit_failed
            )
        } else {
            "not used ([audit] kernel; auto: when auditd runs)".to_string()
        }
    );
    println!(
        "problems:     {} errors, {} queue overflows, {} audit records dropped, {} failed reloads",
        report.errors, report.overflows, report.audit_dropped, report.reload_failures
    );
    Ok(ExitCode::SUCCESS)
}
