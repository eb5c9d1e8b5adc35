//! The agent's side of the kernel's per-inode verdict cache.

use super::*;

/// The agent's side of the kernel's per-inode verdict cache (see `guard-ebpf`'s
/// `verdicts` module): what the kernel saw at an interpreter's open, the verdicts the agent
/// records after a check, and the agent's liveness.
pub struct KernelVerdicts {
    states: InodeStorage<MapData, InodeState>,
    verdicts: std::sync::Mutex<InodeStorage<MapData, InodeVerdict>>,
    agent: std::sync::Mutex<Array<MapData, AgentState>>,
}

impl KernelVerdicts {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<KernelVerdicts, LsmError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LsmError::Missing(name));
        Ok(KernelVerdicts {
            states: InodeStorage::try_from(take(INODE_STATE_MAP)?)?,
            verdicts: std::sync::Mutex::new(InodeStorage::try_from(take(VERDICTS_MAP)?)?),
            agent: std::sync::Mutex::new(Array::try_from(take(AGENT_MAP)?)?),
        })
    }

    /// What the kernel recorded for the file at an interpreter's latest open of it; `None`
    /// when it recorded nothing (not opened by an interpreter since the layer loaded).
    pub fn state(&self, file: &impl AsRawFd) -> Result<Option<InodeState>, LsmError> {
        match self.states.get(file, 0) {
            Ok(state) => Ok(Some(state)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that the agent verified `file`'s content, for any runner, as it stood when
    /// the kernel's change count was `seen.changes`.
    pub fn record(&self, file: &impl AsRawFd, seen: &InodeState) -> Result<(), LsmError> {
        let verdict = InodeVerdict {
            changes: seen.changes,
        };
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(verdicts.insert(file, verdict, 0)?)
    }

    /// Tells the kernel the agent `tgid` answers permission events from now on: until the
    /// process exits, files without a verdict go on to it.
    pub fn agent_ready(&self, tgid: u32) -> Result<(), LsmError> {
        let mut agent = self.agent.lock().unwrap_or_else(|e| e.into_inner());
        Ok(agent.set(0, AgentState { tgid, alive: 1 }, 0)?)
    }
}
