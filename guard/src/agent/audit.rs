//! The audit trail: one JSON object per decision line, plus a human line in the log.
//!
//! Records are handed to a dedicated thread over a bounded queue. A worker never waits for
//! the log: when the queue is full the record is dropped and counted, because the opener
//! the log would wait for may be the very process blocked on our answer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use serde::Serialize;

use super::journal::Journal;
use super::kernel_audit::KernelAudit;
use super::stats::{Stats, bump};

#[derive(Serialize, Clone, Debug)]
pub struct CheckRecord {
    pub rule: &'static str,
    pub passed: bool,
    pub reason: String,
}

/// The version of the audit file's records (`"schema"`, first in every line; documented in
/// docs/operations.md). Fields may be added without a new version; a field removed,
/// renamed or changing meaning takes one.
pub const SCHEMA_VERSION: u32 = 1;

/// A line of the audit file: the record, with its schema version.
#[derive(Serialize)]
struct Line<'a> {
    schema: u32,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

/// One decision, as written to the audit file.
#[derive(Serialize, Clone, Debug)]
pub struct AuditRecord {
    /// Seconds since the epoch, with milliseconds.
    pub time: f64,
    pub pid: i32,
    /// The subject's executable, for humans (identity decided, not the name).
    pub exe: String,
    pub uid: u32,
    /// The object's path, for humans only.
    pub path: String,
    /// `major:minor:inode` of the object.
    pub id: String,
    pub code: &'static str,
    pub decision: &'static str,
    pub enforced: bool,
    pub rule: &'static str,
    pub reason: String,
    /// A fact guard could not establish, for which the open was judged as code (fail
    /// closed): which one, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// Which layer decided: `fanotify`, `exec-gate`, `bpf-lsm` or `python-hook`.
    pub layer: &'static str,
    pub checks: Vec<CheckRecord>,
    /// What the Python audit hook reported (`code` is `dynamic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<super::python_hook::DynamicRecord>,
}

/// A verdict's checks as the trail writes them.
pub fn check_records(verdict: &crate::engine::Verdict) -> Vec<CheckRecord> {
    verdict
        .checks
        .iter()
        .map(|c| CheckRecord {
            rule: c.rule.id(),
            passed: c.passed,
            reason: c.reason.clone(),
        })
        .collect()
}

/// What a kernel layer refused (the exec gate, the LSM layer), as the audit trail says it:
/// one rule, no path (the kernel reports identities).
pub struct KernelRefusal {
    pub pid: u32,
    pub exe: String,
    pub uid: u32,
    pub id: crate::engine::FileId,
    pub code: &'static str,
    /// False in permissive mode.
    pub enforced: bool,
    pub rule: guard_common::Rule,
    pub reason: String,
    /// `exec-gate` or `bpf-lsm`.
    pub layer: &'static str,
}

impl From<KernelRefusal> for AuditRecord {
    fn from(refusal: KernelRefusal) -> AuditRecord {
        AuditRecord {
            missing: None,
            layer: refusal.layer,
            time: now(),
            pid: i32::try_from(refusal.pid).unwrap_or(-1),
            exe: refusal.exe,
            uid: refusal.uid,
            path: String::new(),
            id: refusal.id.to_string(),
            code: refusal.code,
            decision: "deny",
            enforced: refusal.enforced,
            rule: refusal.rule.id(),
            reason: refusal.reason.clone(),
            checks: vec![CheckRecord {
                rule: refusal.rule.id(),
                passed: false,
                reason: refusal.reason,
            }],
            dynamic: None,
        }
    }
}

/// Counts a kernel layer's refusal and sends its record.
pub fn kernel_refusal(state: &super::State, refusal: KernelRefusal) {
    use super::stats::bump;
    bump(&state.stats.code_decisions);
    if refusal.enforced {
        bump(&state.stats.denies);
    } else {
        bump(&state.stats.would_deny);
    }
    state
        .stats
        .by_rule
        .bump(refusal.rule, false, refusal.enforced);
    state.audit.send(refusal.into());
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The sending side, cheap to clone into workers.
#[derive(Clone)]
pub struct AuditSender {
    queue: Sender<Message>,
    stats: Arc<Stats>,
}

enum Message {
    Record(Box<AuditRecord>),
    /// Flush and end the audit thread (the agent is stopping).
    Stop,
}

impl AuditSender {
    /// Queues a record without ever blocking.
    pub fn send(&self, record: AuditRecord) {
        match self.queue.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                bump(&self.stats.audit_dropped)
            }
        }
    }

    /// Asks the audit thread to write what it has and stop. Blocks briefly if the queue is
    /// full: by then no answer to the kernel depends on it.
    pub fn stop(&self) {
        let _ = self
            .queue
            .send_timeout(Message::Stop, std::time::Duration::from_secs(5));
    }
}

/// Where the JSON lines go and how the file is bounded (the policy's `[audit]`).
#[derive(Clone, Debug)]
pub struct TrailConfig {
    pub path: PathBuf,
    /// Rotate when a record would take the file past this size; 0: never.
    pub max_file_size: u64,
    /// Rotated files kept: `FILE.1` (newest) .. `FILE.N`.
    pub max_files: u32,
}

/// Starts the audit thread. `trail` receives the JSON lines; the human lines go to `log`.
pub fn start(
    trail: Option<TrailConfig>,
    journal: Option<Journal>,
    kernel: Option<KernelAudit>,
    stats: Arc<Stats>,
) -> anyhow::Result<(AuditSender, JoinHandle<()>)> {
    let trail = match trail {
        Some(config) => Some(Trail::open(config, stats.clone())?),
        None => None,
    };
    let (queue, receiver) = bounded(16 * 1024);
    let sinks = Sinks {
        journal,
        kernel,
        stats: stats.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("guard-audit".into())
        .spawn(move || drain(receiver, trail, sinks))?;
    Ok((AuditSender { queue, stats }, handle))
}

/// Records are written in batches of about this size: one write per batch, or when the
/// queue is empty, so the file is current without a write per line.
const BATCH_BYTES: usize = 64 * 1024;

/// While the file cannot be written for want of space, how often the audit thread looks
/// whether space came back when no record arrives to try.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Free space under which a full disk is not taken as writable again: a few records'.
const FREE_TO_RETRY: u64 = 16 * 1024;

/// The audit file: whole lines only, rotated by size, every record counted as written or
/// lost.
struct Trail {
    config: TrailConfig,
    /// None after a rotation whose new file could not be created: retried at each write.
    file: Option<File>,
    /// What the current file holds: rotation measures it, and a failed write is cut back
    /// to it, so no record is ever half written (nor written again).
    size: u64,
    pending: Vec<u8>,
    pending_records: u64,
    /// The last failure was a full disk or quota: free space is worth watching.
    out_of_space: bool,
    /// A rotation failed and was reported: said once until one succeeds.
    rotation_failing: bool,
    stats: Arc<Stats>,
}

impl Trail {
    fn open(config: TrailConfig, stats: Arc<Stats>) -> anyhow::Result<Trail> {
        use anyhow::Context;
        if let Some(dir) = config.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("audit log directory {}", dir.display()))?;
        }
        let file = open_append(&config.path)
            .with_context(|| format!("audit log {}", config.path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("audit log {}", config.path.display()))?
            .len();
        Ok(Trail {
            config,
            file: Some(file),
            size,
            pending: Vec::with_capacity(BATCH_BYTES),
            pending_records: 0,
            out_of_space: false,
            rotation_failing: false,
            stats,
        })
    }

    /// Adds one record's line (with its newline) to the batch; rotates first when the line
    /// would take the file past its size, so no record is ever split across two files.
    fn push(&mut self, line: &[u8]) {
        let held = self.size + self.pending.len() as u64;
        let max = self.config.max_file_size;
        if max > 0 && held > 0 && held + line.len() as u64 > max {
            self.flush();
            self.rotate();
        }
        self.pending.extend_from_slice(line);
        self.pending_records += 1;
        if self.pending.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Writes the batch: its records are all written or all lost, and counted as such.
    fn flush(&mut self) {
        if self.pending_records == 0 {
            return;
        }
        let records = self.pending_records;
        let result = self.write_pending();
        self.pending.clear();
        self.pending_records = 0;
        match result {
            Ok(()) => {
                self.stats
                    .audit_written
                    .fetch_add(records, Ordering::Relaxed);
                self.recovered();
            }
            Err(e) => {
                self.stats.audit_lost.fetch_add(records, Ordering::Relaxed);
                self.failed(&e);
            }
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let file = open_append(&self.config.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        match file.write_all(&self.pending) {
            Ok(()) => {
                self.size += self.pending.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A short write left part of the batch: cut it off, so the file holds whole
                // lines and every record of the batch is lost, none half there.
                if let Err(cut) = file.set_len(self.size) {
                    log::error!(
                        "audit trail {}: cannot cut back a partly written batch: {cut}",
                        self.config.path.display()
                    );
                }
                Err(e)
            }
        }
    }

    /// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`…, the oldest beyond `max_files`
    /// is replaced; a new `FILE` is begun.
    fn rotate(&mut self) {
        let path = self.config.path.clone();
        let numbered = |n: u32| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        for n in (1..self.config.max_files).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.rotation_failed(&format!(
                    "cannot rename {} to {}: {e}",
                    numbered(n).display(),
                    numbered(n + 1).display()
                )),
            }
        }
        if let Err(e) = std::fs::rename(&self.config.path, numbered(1)) {
            // Writing on past the size beats losing records: the next record tries again.
            self.rotation_failed(&format!("cannot rotate: {e}"));
            return;
        }
        self.rotation_failing = false;
        bump(&self.stats.audit_rotations);
        self.size = 0;
        // If the new file cannot be created now (no inode left), the next write tries.
        self.file = open_append(&self.config.path).ok();
    }

    fn rotation_failed(&mut self, what: &str) {
        if !self.rotation_failing {
            self.rotation_failing = true;
            bump(&self.stats.errors);
            log::error!("audit trail {}: {what}", self.config.path.display());
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.out_of_space = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        *self
            .stats
            .audit_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(e.to_string());
        if !self.stats.audit_failing.swap(true, Ordering::SeqCst) {
            log::error!(
                "audit trail {}: cannot write: {e}: records are lost (counted in guard status) \
                 until it can; audit.disk_full says whether code loads are refused meanwhile",
                self.config.path.display()
            );
        }
    }

    fn recovered(&mut self) {
        if self.stats.audit_failing.swap(false, Ordering::SeqCst) {
            *self
                .stats
                .audit_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
            log::warn!(
                "audit trail {}: written again; {} record(s) lost since the agent started",
                self.config.path.display(),
                self.stats.audit_lost.load(Ordering::Relaxed)
            );
        }
        self.out_of_space = false;
    }

    /// With no record to try, whether a full disk has room again: the flag that refuses
    /// code loads (`disk_full = "refuse"`) must not outlast the shortage by waiting for a
    /// record that only an allowed load would write.
    fn retry_when_idle(&mut self) {
        if !self.out_of_space || !self.stats.audit_failing.load(Ordering::SeqCst) {
            return;
        }
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let Ok(fs) = nix::sys::statvfs::fstatvfs(file) else {
            return;
        };
        #[allow(clippy::useless_conversion)]
        let free = u64::from(fs.blocks_available()).saturating_mul(fs.fragment_size());
        if free >= FREE_TO_RETRY {
            self.recovered();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Where a record goes besides the file.
struct Sinks {
    journal: Option<Journal>,
    /// For the kernel layers' refusals: fanotify's are recorded by the kernel itself.
    kernel: Option<KernelAudit>,
    stats: Arc<Stats>,
}

impl Sinks {
    fn kernel_record(&mut self, record: &AuditRecord) {
        if record.layer == "fanotify" || !self.stats.kernel_audit.load(Ordering::Relaxed) {
            return;
        }
        let Some(kernel) = self.kernel.as_mut() else {
            bump(&self.stats.kernel_audit_failed);
            return;
        };
        if let Err(e) = kernel.user_avc(record)
            && self
                .stats
                .kernel_audit_failed
                .fetch_add(1, Ordering::Relaxed)
                == 0
        {
            log::error!("{e} (counted in guard status)");
        }
    }
}

fn drain(receiver: Receiver<Message>, mut trail: Option<Trail>, mut sinks: Sinks) {
    let mut line = Vec::with_capacity(1024);
    let mut journal_failing = false;
    loop {
        let message = match receiver.recv_timeout(RETRY_INTERVAL) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(trail) = trail.as_mut() {
                    trail.retry_when_idle();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let Message::Record(record) = message else {
            break;
        };
        sinks.kernel_record(&record);
        match sinks.journal.as_mut() {
            Some(journal) => {
                match journal.send_record(&record, &human_line(&record)) {
                    Ok(()) => journal_failing = false,
                    Err(e) => {
                        // The line still reaches standard error (the journal's stream).
                        if !journal_failing {
                            log::error!("{e}: audit records go to standard error as lines");
                        }
                        journal_failing = true;
                        log_human(&record);
                    }
                }
            }
            None => log_human(&record),
        }
        if let Some(trail) = trail.as_mut() {
            line.clear();
            let versioned = Line {
                schema: SCHEMA_VERSION,
                record: &record,
            };
            if serde_json::to_writer(&mut line, &versioned).is_ok() {
                line.push(b'\n');
                trail.push(&line);
            } else {
                bump(&trail.stats.audit_lost);
            }
            if receiver.is_empty() {
                trail.flush();
            }
        }
    }
    if let Some(trail) = trail.as_mut() {
        trail.flush();
    }
}

fn human_line(record: &AuditRecord) -> String {
    format!(
        "{} pid={} uid={} exe={} path={} id={} code={} rule={}: {}{}",
        record.decision,
        record.pid,
        record.uid,
        record.exe,
        record.path,
        record.id,
        record.code,
        record.rule,
        record.reason,
        if record.decision == "deny" && !record.enforced {
            " (permissive: not enforced)"
        } else {
            ""
        }
    )
}

fn log_human(record: &AuditRecord) {
    let line = human_line(record);
    match record.decision {
        "deny" => log::warn!("{line}"),
        _ => log::info!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i32) -> AuditRecord {
        AuditRecord {
            time: now(),
            pid: n,
            exe: "/usr/bin/python3".into(),
            uid: 1000,
            path: format!("/srv/app/module_{n}.py"),
            id: "0:42:7".into(),
            code: "source",
            decision: "deny",
            enforced: false,
            rule: "valid-signature",
            reason: "no security.ima signature".into(),
            missing: None,
            layer: "fanotify",
            checks: vec![],
            dynamic: None,
        }
    }

    fn trail_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn flood(config: TrailConfig, records: i32) -> Arc<Stats> {
        let stats = Arc::new(Stats::default());
        let (sender, thread) = start(Some(config), None, None, stats.clone()).unwrap();
        for n in 0..records {
            // The queue holds 16 Ki records: a flood faster than the disk waits here
            // rather than be dropped, so every record must reach the file.
            while sender.queue.len() > 8 * 1024 {
                std::thread::sleep(Duration::from_millis(1));
            }
            sender.send(record(n));
        }
        sender.stop();
        thread.join().unwrap();
        stats
    }

    #[test]
    fn rotation_under_a_flood_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let max_file_size = 16 * 1024;
        let records = 20_000;
        let stats = flood(
            TrailConfig {
                path: path.clone(),
                max_file_size,
                max_files: 1000,
            },
            records,
        );
        let mut seen = vec![0u32; records as usize];
        let files = trail_files(dir.path());
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                text.len() as u64 <= max_file_size,
                "{} too big",
                file.display()
            );
            assert!(text.ends_with('\n'), "{} ends mid-record", file.display());
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                let n = usize::try_from(value["pid"].as_u64().unwrap()).unwrap();
                seen[n] += 1;
            }
        }
        let missing = seen.iter().filter(|&&c| c == 0).count();
        let repeated = seen.iter().filter(|&&c| c > 1).count();
        assert_eq!((missing, repeated), (0, 0), "records lost or repeated");
        assert_eq!(stats.audit_written.load(Ordering::Relaxed), records as u64);
        assert_eq!(stats.audit_lost.load(Ordering::Relaxed), 0);
        assert_eq!(stats.audit_dropped.load(Ordering::Relaxed), 0);
        let rotations = stats.audit_rotations.load(Ordering::Relaxed);
        assert_eq!(files.len() as u64, rotations + 1);
        assert!(rotations > 100, "{rotations} rotations");
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("{\"schema\":1,\"time\":"), "{first}");
        // FILE.1 is the newest rotated file: it ends just before FILE begins.
        let first_of = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap();
            let value: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap()).unwrap();
            value["pid"].as_u64().unwrap()
        };
        assert!(first_of(&dir.path().join("audit.jsonl.1")) < first_of(&path));
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let stats = flood(
            TrailConfig {
                path: path.clone(),
                max_file_size: 4096,
                max_files: 3,
            },
            2_000,
        );
        let names: Vec<String> = trail_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl",
                "audit.jsonl.1",
                "audit.jsonl.2",
                "audit.jsonl.3"
            ]
        );
        assert_eq!(stats.audit_written.load(Ordering::Relaxed), 2_000);
        assert!(stats.audit_rotations.load(Ordering::Relaxed) > 3);
        // The last record is in the current file.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("\"pid\":1999,"), "{current}");
    }

    #[test]
    fn an_unwritable_trail_counts_every_record_lost() {
        // /dev/full fails every write with ENOSPC (never rotated: max_file_size 0).
        let stats = flood(
            TrailConfig {
                path: PathBuf::from("/dev/full"),
                max_file_size: 0,
                max_files: 1,
            },
            500,
        );
        assert_eq!(stats.audit_written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.audit_lost.load(Ordering::Relaxed), 500);
        assert!(stats.audit_failing.load(Ordering::Relaxed));
        let error = stats.audit_error.lock().unwrap().clone().unwrap();
        assert!(error.contains("No space left"), "{error}");
    }
}

/// What a record costs the audit thread (JSON, the trail's write, the journal's datagram):
/// `cargo test --release -p guard --lib -- --ignored cost_per_record --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;

    fn measure(journal: bool) -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("journal.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            receiver
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            while receiver.recv(&mut buffer).is_ok() {}
        });
        let stats = Arc::new(Stats::default());
        let journal = journal.then(|| Journal::connect(&socket).unwrap());
        let config = TrailConfig {
            path: dir.path().join("audit.jsonl"),
            max_file_size: 8 << 20,
            max_files: 5,
        };
        let (sender, thread) = start(Some(config), journal, None, stats.clone()).unwrap();
        let records = 200_000;
        let started = std::time::Instant::now();
        for n in 0..records {
            while sender.queue.len() > 8 * 1024 {
                std::thread::yield_now();
            }
            sender.send(tests_record(n));
        }
        sender.stop();
        thread.join().unwrap();
        let elapsed = started.elapsed();
        assert_eq!(stats.audit_written.load(Ordering::Relaxed), records as u64);
        let _ = reader.join();
        elapsed / records as u32
    }

    fn tests_record(n: i32) -> AuditRecord {
        AuditRecord {
            time: now(),
            pid: n,
            exe: "/usr/bin/python3.11".into(),
            uid: 1000,
            path: format!("/srv/app/lib/python3.11/site-packages/pkg/module_{n}.py"),
            id: "254:1:1234567".into(),
            code: "source",
            decision: "deny",
            enforced: false,
            rule: "valid-signature",
            reason: "no security.ima signature".into(),
            missing: None,
            layer: "fanotify",
            checks: vec![CheckRecord {
                rule: "valid-signature",
                passed: false,
                reason: "no security.ima signature".into(),
            }],
            dynamic: None,
        }
    }

    #[test]
    #[ignore = "a measurement: run in release"]
    fn cost_per_record() {
        // The human line goes through the logger: quiet here, as it is when nothing
        // reads the log (the journal gets the record itself).
        log::set_max_level(log::LevelFilter::Off);
        let file = measure(false);
        let both = measure(true);
        eprintln!("per record: {file:?} (file, rotated at 8 MiB), {both:?} (file and journal)");
    }
}
