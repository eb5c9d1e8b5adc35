//! The layer's refusals as the kernel reports them on its ring buffer.

use super::*;

/// What a self-protection event's fields mean (see `SelfProtectSettings`), or `None` for a
/// file event.
pub(super) fn hook_target(hook: LsmHook, ino: u64, detail: u32) -> Option<String> {
    Some(match hook {
        LsmHook::TaskKill | LsmHook::FileSendSigiotask => {
            format!("target=pid:{ino} signal={detail}")
        }
        LsmHook::PtraceAccessCheck => format!("target=pid:{ino} ptrace-mode={detail:#x}"),
        LsmHook::BpfMap => format!("target=map-id:{ino} fmode={detail:#x}"),
        LsmHook::BpfProg => format!("target=prog-id:{ino}"),
        LsmHook::SbUmount => format!("target=bpffs dev={}:{}", detail >> 20, detail & 0xf_ffff),
        _ => return None,
    })
}

/// One refusal, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsmEvent {
    pub hook: LsmHook,
    pub rule: Rule,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    /// False in permissive mode.
    pub refused: bool,
    /// The file opened or exec'd, or the inode whose signature was to change.
    pub object: Identity,
    /// The object's `st_mode`.
    pub mode: u32,
    pub nlink: u32,
}

impl std::fmt::Display for LsmEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} rule={} pid={} tid={} uid={} ",
            self.hook.name(),
            if self.refused {
                "refused"
            } else {
                "would refuse"
            },
            self.rule.id(),
            self.pid,
            self.tid,
            self.uid,
        )?;
        match hook_target(self.hook, self.object.ino, self.mode) {
            Some(target) => write!(f, "{target}"),
            None => write!(
                f,
                "dev={}:{} ino={} mode={:o} nlink={}",
                libc::major(self.object.dev),
                libc::minor(self.object.dev),
                self.object.ino,
                self.mode,
                self.nlink,
            ),
        }
    }
}
