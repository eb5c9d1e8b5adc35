//! Refusals in the kernel audit log, where auditd, `ausearch`, `aureport` and SIEM pipelines
//! already look.
//!
//! fanotify's answers are recorded by the kernel itself: a group made with
//! `FAN_ENABLE_AUDIT` may add `FAN_AUDIT` to an answer, and since Linux 6.3 `FAN_INFO` with
//! the rule that decided (`FAN_RESPONSE_INFO_AUDIT_RULE`): a `FANOTIFY` record in the
//! opener's own event (`resp=2 fan_type=1 fan_info=6` is a refusal by rule 6,
//! `valid-signature`), beside its `SYSCALL` and `PATH` records — as fapolicyd does. The
//! kernel layers (the exec gate, the BPF LSM layer) refuse without asking the agent: their
//! refusals are sent by the agent as `USER_AVC` records over the audit netlink socket.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::fanotify::Fanotify;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};

use super::audit::AuditRecord;

/// Message types of `<linux/audit.h>`.
const AUDIT_GET: u16 = 1000;
pub const AUDIT_USER_AVC: u16 = 1107;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HDRLEN: usize = 16;

/// `fanotify_response_info_audit_rule`'s trust values.
const TRUST_NO: u32 = 0;
const TRUST_YES: u32 = 1;
const TRUST_UNKNOWN: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum KernelAuditError {
    #[error("audit netlink socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("sending to the kernel audit log: {0}")]
    Send(#[source] nix::Error),
    #[error("reading the audit status: {0}")]
    Status(String),
}

/// Whether the running kernel took `FAN_INFO` answers: probed by the first one.
static RULE_INFO: AtomicBool = AtomicBool::new(true);

/// Whether the agent's fanotify groups were made with `FAN_ENABLE_AUDIT` (it needs
/// `CAP_AUDIT_WRITE`): only then may an answer carry `FAN_AUDIT`.
pub static FANOTIFY_AUDIT: AtomicBool = AtomicBool::new(false);

/// Decides `[audit] kernel` now: on, off, or (auto) whether an audit daemon runs.
pub fn resolve(setting: crate::policy::KernelAudit, stats: &super::stats::Stats) {
    use crate::policy::KernelAudit as Setting;
    let on = match setting {
        Setting::On => true,
        Setting::Off => false,
        Setting::Auto => match KernelAudit::open().and_then(|mut audit| audit.daemon_running()) {
            Ok(running) => running,
            Err(e) => {
                log::info!("kernel audit log not used ({e})");
                false
            }
        },
    };
    if on && !FANOTIFY_AUDIT.load(Ordering::Relaxed) {
        log::warn!(
            "kernel audit log: fanotify groups without FAN_ENABLE_AUDIT (no CAP_AUDIT_WRITE?): \
             only the kernel layers' refusals are recorded there"
        );
    }
    if stats.kernel_audit.swap(on, Ordering::SeqCst) != on || on {
        log::info!(
            "kernel audit log: {}",
            if on {
                "refusals recorded (FANOTIFY and USER_AVC records)"
            } else {
                "not used"
            }
        );
    }
}

/// Answers a permission event with `FAN_AUDIT` (and the deciding rule where the kernel
/// takes it), falling back to fewer fields on `EINVAL` so the event is answered whatever
/// the kernel supports. False if even `FAN_AUDIT` was refused: the caller answers plainly.
/// `trusted`: whether the policy allowed the file (a would-be refusal is allowed untrusted).
pub fn respond_audited(
    group: &Fanotify,
    fd: std::os::fd::BorrowedFd<'_>,
    allow: bool,
    trusted: bool,
    rule: guard_common::Rule,
) -> bool {
    use std::os::fd::AsRawFd;
    let response = if allow {
        libc::FAN_ALLOW
    } else {
        libc::FAN_DENY
    } | libc::FAN_AUDIT;
    let mut answer = Vec::with_capacity(24);
    answer.extend_from_slice(&fd.as_raw_fd().to_ne_bytes());
    if RULE_INFO.load(Ordering::Relaxed) {
        answer.extend_from_slice(&(response | libc::FAN_INFO).to_ne_bytes());
        // fanotify_response_info_header { type, pad, len } and the audit rule's fields.
        answer.push(libc::FAN_RESPONSE_INFO_AUDIT_RULE);
        answer.push(0);
        answer.extend_from_slice(&16u16.to_ne_bytes());
        answer.extend_from_slice(&(rule as u32).to_ne_bytes());
        answer.extend_from_slice(&TRUST_UNKNOWN.to_ne_bytes());
        let object = if trusted { TRUST_YES } else { TRUST_NO };
        answer.extend_from_slice(&object.to_ne_bytes());
        match nix::unistd::write(group.as_fd(), &answer) {
            Ok(_) => return true,
            // Before 6.3: no FAN_INFO. The event is still pending.
            Err(nix::errno::Errno::EINVAL) => {
                if RULE_INFO.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "this kernel records fanotify answers without the rule (no FAN_INFO)"
                    );
                }
            }
            Err(_) => return false,
        }
        answer.truncate(4);
    }
    answer.extend_from_slice(&response.to_ne_bytes());
    nix::unistd::write(group.as_fd(), &answer).is_ok()
}

/// The agent's audit netlink socket, for user records.
pub struct KernelAudit {
    socket: OwnedFd,
    buffer: Vec<u8>,
}

impl KernelAudit {
    pub fn open() -> Result<KernelAudit, KernelAuditError> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkAudit,
        )
        .map_err(KernelAuditError::Socket)?;
        // A backlogged audit queue delays the audit thread (its queue absorbs, then drops
        // and counts), never an answer.
        let timeout = nix::sys::time::TimeVal::new(1, 0);
        setsockopt(&socket, sockopt::SendTimeout, &timeout).map_err(KernelAuditError::Socket)?;
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout).map_err(KernelAuditError::Socket)?;
        Ok(KernelAudit {
            socket,
            buffer: Vec::with_capacity(1024),
        })
    }

    fn send(&mut self, kind: u16, payload: &[u8]) -> Result<(), KernelAuditError> {
        use std::os::fd::AsRawFd;
        let length = u32::try_from(NLMSG_HDRLEN + payload.len() + 1).unwrap_or(u32::MAX);
        self.buffer.clear();
        self.buffer.extend_from_slice(&length.to_ne_bytes());
        self.buffer.extend_from_slice(&kind.to_ne_bytes());
        self.buffer.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        self.buffer.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        self.buffer.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it
        self.buffer.extend_from_slice(payload);
        self.buffer.push(0);
        sendto(
            self.socket.as_raw_fd(),
            &self.buffer,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map(|_| ())
        .map_err(KernelAuditError::Send)
    }

    /// Whether an audit daemon has registered with the kernel (`auditctl -s`'s `pid`).
    pub fn daemon_running(&mut self) -> Result<bool, KernelAuditError> {
        use std::os::fd::AsRawFd;
        self.send(AUDIT_GET, &[])?;
        let mut reply = [0u8; 512];
        for _ in 0..4 {
            let n = recv(self.socket.as_raw_fd(), &mut reply, MsgFlags::empty())
                .map_err(|e| KernelAuditError::Status(e.to_string()))?;
            let reply = &reply[..n];
            let kind = reply
                .get(4..6)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                .ok_or_else(|| KernelAuditError::Status("short reply".into()))?;
            match kind {
                // struct audit_status { mask, enabled, failure, pid, … }
                AUDIT_GET => {
                    let field = |at: usize| {
                        reply
                            .get(NLMSG_HDRLEN + at..NLMSG_HDRLEN + at + 4)
                            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    };
                    let (enabled, pid) = field(4)
                        .zip(field(12))
                        .ok_or_else(|| KernelAuditError::Status("short status".into()))?;
                    return Ok(enabled != 0 && pid != 0);
                }
                NLMSG_ERROR => {
                    let errno = reply
                        .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if errno != 0 {
                        return Err(KernelAuditError::Status(
                            nix::errno::Errno::from_raw(-errno).to_string(),
                        ));
                    }
                }
                _ => {}
            }
        }
        Err(KernelAuditError::Status(
            "no status in the kernel's replies".into(),
        ))
    }

    /// Sends a kernel layer's decision as a `USER_AVC` record.
    pub fn user_avc(&mut self, record: &AuditRecord) -> Result<(), KernelAuditError> {
        let text = user_avc_text(record);
        self.send(AUDIT_USER_AVC, text.as_bytes())
    }
}

/// An audit field value as the kernel writes untrusted strings: quoted when plain, else
/// hex (`ausearch -i` decodes `exe`, `path` and `name`).
fn audit_value(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\'')
    {
        format!("\"{value}\"")
    } else {
        value.bytes().map(|b| format!("{b:02X}")).collect()
    }
}

/// The record's fields in the style of other userspace access decisions (AppArmor's
/// `apparmor="DENIED"` in dbus's USER_AVC records): `key=value`, no `'`.
pub fn user_avc_text(record: &AuditRecord) -> String {
    let refused = record.decision == "deny" && record.enforced;
    let rule_number = guard_common::Rule::ALL
        .iter()
        .find(|rule| rule.id() == record.rule)
        .map(|rule| *rule as u32)
        .unwrap_or(0);
    let mut text = format!(
        "guard=\"{}\" layer={} decision={} rule={} rule_number={} mode={} opid={} ouid={} exe={} id={} code={}",
        if refused { "DENIED" } else { "ALLOWED" },
        record.layer,
        record.decision,
        record.rule,
        rule_number,
        if record.enforced {
            "enforce"
        } else {
            "permissive"
        },
        record.pid,
        record.uid,
        audit_value(&record.exe),
        record.id,
        record.code,
    );
    if !record.path.is_empty() {
        text.push_str(" path=");
        text.push_str(&audit_value(&record.path));
    }
    text.push_str(if refused {
        " res=failed"
    } else {
        " res=success"
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_records_are_fields_auparse_reads() {
        let record = AuditRecord {
            time: 0.0,
            pid: 42,
            exe: "/usr/bin/python3.11".into(),
            uid: 1000,
            path: "/tmp/my script.py".into(),
            id: "0:42:7".into(),
            code: "argv",
            decision: "deny",
            enforced: true,
            rule: "no-inline-code",
            reason: "python3 -c 'x'".into(),
            missing: None,
            layer: "exec-gate",
            checks: vec![],
            dynamic: None,
        };
        let text = user_avc_text(&record);
        assert_eq!(
            text,
            "guard=\"DENIED\" layer=exec-gate decision=deny rule=no-inline-code rule_number=7 \
             mode=enforce opid=42 ouid=1000 exe=\"/usr/bin/python3.11\" id=0:42:7 code=argv \
             path=2F746D702F6D79207363726970742E7079 res=failed"
        );
        // The kernel wraps the text in msg='…': a quote in it would end the field.
        assert!(!text.contains('\''));
    }
}
