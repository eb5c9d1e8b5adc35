//! Identities follow the files: a package update replaces `/usr/bin/python3.11` (or the
//! dynamic loader) by renaming a new file over it, a new inode the agent and the kernel
//! layers do not know. Until they do, that binary would be no interpreter to guard at all.
//!
//! Every exec of a file on a marked filesystem is a `FAN_OPEN_EXEC_PERM` event, and the
//! kernel waits for the agent's answer before it runs anything. When the file exec'd has an
//! identity the policy's resolution does not hold but sits at the real path of a profiled
//! executable (or matches a profile's `executables` glob), or at a loader's path, the agent
//! adopts it before answering: into the exec gate's map, the BPF LSM layer's interpreter map
//! (BPF mode), and the agent's own resolution. So the first exec of the new inode is
//! already judged as the interpreter's, with no reload. A reload re-resolves everything
//! anyway; the layers re-apply the adopted identities when they are replaced
//! ([`install_gate_map`], [`resync_lsm`]), under the same lock, so none is lost.
//!
//! If the kernel maps cannot take the identity, the exec is refused (fail closed).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData};
use guard_common::argv::Dialect;
use guard_common::exec_gate::{InterpreterKey, KIND_LOADER};

use super::{Loaded, State};
use crate::ebpf_object::{Identity, Interpreter};
use crate::engine::FileId;

/// The kernel maps an adopted identity goes into.
#[derive(Default)]
pub struct KernelIdentities {
    /// The exec gate's executables map (`LSM_GATE_EXECS`), taken from the gate in force.
    gate: Option<HashMap<MapData, InterpreterKey, u32>>,
}

/// What an exec'd file is to the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Interpreter(usize),
    Loader,
}

/// For an exec event's file: adopts it when it is a new identity of a profiled executable or
/// loader. Returns the resolution now in force when it changed; `Err` (the exec must be
/// refused) when the kernel maps could not take it.
pub fn on_exec(
    state: &State,
    loaded: &Arc<Loaded>,
    file: BorrowedFd<'_>,
) -> Result<Option<Arc<Loaded>>, String> {
    let Ok(stat) = nix::sys::stat::fstat(file) else {
        // Judged as what it is by whoever opens it; nothing to adopt without an identity.
        return Ok(None);
    };
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let id = FileId {
        dev: stat.st_dev,
        ino: stat.st_ino,
    };
    if known(loaded, id) {
        return Ok(None);
    }
    let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return Ok(None);
    };
    let Some(role) = role_of(loaded, &path) else {
        return Ok(None);
    };
    adopt(state, id, role, &path).map(Some)
}

fn known(loaded: &Loaded, id: FileId) -> bool {
    loaded.interpreters.iter().any(|(known, _)| *known == id) || loaded.loaders.contains(&id)
}

/// What lives at `path`: a profile's executable (by its real path at the last resolution,
/// or by a profile's glob: a new version installed beside the old), or a loader.
fn role_of(loaded: &Loaded, path: &Path) -> Option<Role> {
    if let Some((_, profile)) = loaded.executable_paths.iter().find(|(p, _)| p == path) {
        return Some(Role::Interpreter(*profile));
    }
    if let Some((_, profile)) = loaded
        .executable_patterns
        .iter()
        .find(|(pattern, _)| pattern.matches_path(path))
    {
        return Some(Role::Interpreter(*profile));
    }
    loaded
        .loader_paths
        .iter()
        .any(|p| p == path)
        .then_some(Role::Loader)
}

fn adopt(state: &State, id: FileId, role: Role, path: &Path) -> Result<Arc<Loaded>, String> {
    let mut kernel = state
        .identities
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Another event may have adopted it meanwhile.
    let current = state.loaded();
    if known(&current, id) {
        return Ok(current);
    }
    let identity = Identity::from(id);
    // An interpreter's entry says which grammar reads its command line.
    let interpreter = match role {
        Role::Interpreter(profile) => Some(Interpreter {
            identity,
            dialect: current
                .policy
                .interpreters
                .get(profile)
                .map_or(Dialect::Python, |p| p.argv.dialect()),
        }),
        Role::Loader => None,
    };
    let kind = interpreter.map_or(KIND_LOADER, Interpreter::kind);
    if let Some(gate) = kernel.gate.as_mut() {
        gate.insert(identity.kernel_key(), kind, 0)
            .map_err(|e| format!("the exec gate's map refused {}: {e}", path.display()))?;
    }
    if let Some(interpreter) = interpreter
        && state.kernel_verdicts().is_some()
    {
        insert_lsm(&[interpreter])
            .map_err(|e| format!("the BPF LSM layer's map refused {}: {e}", path.display()))?;
    }
    let mut next = (*current).clone();
    match role {
        Role::Interpreter(profile) => {
            next.interpreters.push((id, profile));
            if !next.executable_paths.iter().any(|(p, _)| p == path) {
                next.executable_paths.push((path.to_owned(), profile));
            }
        }
        Role::Loader => next.loaders.push(id),
    }
    let what = match role {
        Role::Interpreter(profile) => format!(
            "the {} interpreter",
            next.policy
                .interpreters
                .get(profile)
                .map_or("?", |p| p.name.as_str())
        ),
        Role::Loader => "a dynamic loader".into(),
    };
    log::info!(
        "{} is a new file ({id}) at the path of {what}: adopted before its first exec",
        path.display()
    );
    Ok(state.adopt(next))
    // `kernel` is released here, after the resolution in force holds the identity.
}

/// Installs the exec gate's map (after a gate (re)load) and puts every identity of the
/// resolution in force into it: one adopted while the gate was being built is not lost.
pub fn install_gate_map(
    state: &State,
    map: Option<HashMap<MapData, InterpreterKey, u32>>,
) -> Result<(), aya::maps::MapError> {
    let mut kernel = state
        .identities
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    kernel.gate = map;
    let loaded = state.loaded();
    if let Some(gate) = kernel.gate.as_mut() {
        for interpreter in loaded.interpreter_identities() {
            gate.insert(interpreter.identity.kernel_key(), interpreter.kind(), 0)?;
        }
        for id in &loaded.loaders {
            gate.insert(Identity::from(*id).kernel_key(), KIND_LOADER, 0)?;
        }
    }
    Ok(())
}

/// After the BPF LSM layer was (re)loaded: every interpreter identity of the resolution in
/// force into its pinned map, under the adoption lock.
pub fn resync_lsm(state: &State) -> Result<(), aya::maps::MapError> {
    let _kernel = state
        .identities
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    insert_lsm(&state.loaded().interpreter_identities())
}

/// Into the layer's pinned interpreter map, opened afresh: a reload replaces the pin.
fn insert_lsm(interpreters: &[Interpreter]) -> Result<(), aya::maps::MapError> {
    let pin = PathBuf::from(crate::lsm::DEFAULT_PIN_DIR).join("map_LSM_INTERPRETERS");
    let data = MapData::from_pin(&pin)?;
    let mut map: HashMap<MapData, InterpreterKey, u32> = HashMap::try_from(Map::HashMap(data))?;
    for interpreter in interpreters {
        map.insert(interpreter.identity.kernel_key(), interpreter.kind(), 0)?;
    }
    Ok(())
}
