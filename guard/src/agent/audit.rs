//! The audit trail: one JSON object per decision line, plus a human line in the log.
//!
//! Records are handed to a dedicated thread over a bounded queue. A worker never waits for
//! the log: when the queue is full the record is dropped and counted, because the opener
//! the log would wait for may be the very process blocked on our answer.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Serialize;

use super::stats::{Stats, bump};

#[derive(Serialize, Clone, Debug)]
pub struct CheckRecord {
    pub rule: &'static str,
    pub passed: bool,
    pub reason: String,
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
    pub checks: Vec<CheckRecord>,
    /// What the Python audit hook reported (`code` is `dynamic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<super::python_hook::DynamicRecord>,
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
}

impl From<KernelRefusal> for AuditRecord {
    fn from(refusal: KernelRefusal) -> AuditRecord {
        AuditRecord {
            missing: None,
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

/// Starts the audit thread. `file` receives the JSON lines; the human lines go to `log`.
pub fn start(
    file: Option<PathBuf>,
    stats: Arc<Stats>,
) -> anyhow::Result<(AuditSender, JoinHandle<()>)> {
    let sink = match &file {
        Some(path) => Some(open_audit_file(path)?),
        None => None,
    };
    let (queue, receiver) = bounded(16 * 1024);
    let handle = std::thread::Builder::new()
        .name("guard-audit".into())
        .spawn(move || drain(receiver, sink))?;
    Ok((AuditSender { queue, stats }, handle))
}

fn open_audit_file(path: &Path) -> anyhow::Result<BufWriter<File>> {
    use anyhow::Context;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("audit log directory {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("audit log {}", path.display()))?;
    Ok(BufWriter::new(file))
}

fn drain(receiver: Receiver<Message>, mut sink: Option<BufWriter<File>>) {
    while let Ok(Message::Record(record)) = receiver.recv() {
        log_human(&record);
        if let Some(out) = sink.as_mut() {
            if let Ok(line) = serde_json::to_string(&*record) {
                let _ = writeln!(out, "{line}");
            }
            // Flush when the queue is drained, so the file is current without a write per line.
            if receiver.is_empty() {
                let _ = out.flush();
            }
        }
    }
    if let Some(out) = sink.as_mut() {
        let _ = out.flush();
    }
}

fn log_human(record: &AuditRecord) {
    let line = format!(
        "{} pid={} uid={} exe={} path={} id={} code={} rule={}: {}",
        record.decision,
        record.pid,
        record.uid,
        record.exe,
        record.path,
        record.id,
        record.code,
        record.rule,
        record.reason
    );
    match (record.decision, record.enforced) {
        ("deny", true) => log::warn!("{line}"),
        ("deny", false) => log::warn!("{line} (permissive: not enforced)"),
        _ => log::info!("{line}"),
    }
}
