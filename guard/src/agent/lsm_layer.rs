//! The agent's side of the BPF LSM layer: configure it from the policy, pin it so it
//! outlives the agent (fail closed), keep it in step with reloads, and audit its refusals.
//!
//! fanotify still runs beside it: signatures are checked in user space. The kernel layer
//! refuses what needs no user space (file kinds, unlinked files, filesystems of user
//! namespaces, executable mappings of them, writes to `security.ima` by anything but the
//! named signers) and keeps the agent's verdicts per inode, so that when the agent dies it
//! still runs verified code and refuses the rest.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::audit::KernelRefusal;
use super::stats::bump;
use super::{Loaded, State};
use crate::ebpf_object::Identity;
use crate::lsm::{DEFAULT_PIN_DIR, GUARD_PIN_ROOT, LsmConfig, LsmEvent, LsmLayer, LsmStatus};
use crate::policy::Mode;

/// Executables allowed to write signatures: guard itself and evmctl, where present.
fn signers() -> Vec<Identity> {
    let mut paths: Vec<PathBuf> = vec![PathBuf::from("/proc/self/exe")];
    for candidate in ["/usr/bin/evmctl", "/usr/local/bin/evmctl"] {
        if Path::new(candidate).exists() {
            paths.push(PathBuf::from(candidate));
        }
    }
    paths
        .iter()
        .filter_map(|p| Identity::of_path(p).ok())
        .collect()
}

/// The layer's configuration for the policy in force. `agent` is the agent's pid once it
/// answers permission events (a reload): a first load waits for
/// [`crate::lsm::KernelVerdicts::agent_ready`], so a restarted agent's layer refuses
/// unverified code until its fanotify marks are in place.
pub fn config(loaded: &Loaded, agent: Option<u32>) -> LsmConfig {
    let mut config = LsmConfig::new(loaded.interpreter_identities());
    config.exec_check = true;
    config.trust = loaded.policy.trust_table();
    config.native_code = loaded.policy.native.code;
    config.code_patterns = loaded
        .policy
        .interpreters
        .iter()
        .flat_map(|profile| profile.code_patterns.iter().map(|p| p.as_str().to_owned()))
        .collect();
    config.signers = signers();
    config.protect_signatures = !config.signers.is_empty();
    config.permissive = loaded.policy.mode == Mode::Permissive;
    config.verdict_cache = true;
    config.agent = agent;
    config.pin_dir = Some(PathBuf::from(DEFAULT_PIN_DIR));
    // Self-protection: PID 1 (`systemctl stop`), guard itself (the agent, `guard debug
    // lsm-unpin`) and the named controllers alone may stop, trace or unpin the agent; the
    // pins of the exec gate beside the layer are protected with it.
    config.protect_agent = true;
    config.controllers = Identity::of_path(Path::new("/proc/self/exe"))
        .into_iter()
        .chain(loaded.controllers.iter().copied())
        .collect();
    config.protected_pins = Some(PathBuf::from(GUARD_PIN_ROOT));
    config
}

/// Loads the layer for the policy in force.
pub fn start(loaded: &Loaded, agent: Option<u32>) -> (Option<LsmLayer>, LsmStatus) {
    LsmLayer::start(&config(loaded, agent))
}

/// Polls the layer's reports until the agent stops; reloads replace it (the new programs
/// attach and take over the pins before the old ones go).
pub fn run(state: Arc<State>, mut layer: LsmLayer, mut generation: u64) {
    while !state.stopping() {
        {
            let mut fds = [PollFd::new(layer.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(500u16));
        }
        for event in layer.events() {
            report(&state, &event);
        }
        let now = state.generation();
        if now != generation {
            generation = now;
            match start(&state.loaded(), Some(std::process::id())) {
                (Some(replacement), _) => {
                    state.set_kernel_verdicts(replacement.verdicts());
                    if let Err(e) = super::identities::resync_lsm(&state) {
                        bump(&state.stats.errors);
                        log::error!(
                            "BPF LSM layer: cannot add the identities adopted since the policy \
                             load: {e}"
                        );
                    }
                    // The old programs run first on each hook until they are released:
                    // what they refused during the reload is reported in their ring buffer.
                    for event in layer.events() {
                        report(&state, &event);
                    }
                    layer = replacement;
                    log::info!("BPF LSM layer reloaded");
                }
                (None, status) => {
                    bump(&state.stats.errors);
                    log::error!("BPF LSM layer not reloaded, the previous one stays: {status:?}");
                }
            }
        }
    }
    // The pinned programs stay attached after the agent exits: enforcement fails closed
    // (only code the agent verified still opens). `guard debug lsm-unpin` removes them.
}

fn report(state: &State, event: &LsmEvent) {
    super::audit::kernel_refusal(
        state,
        KernelRefusal {
            pid: event.pid,
            exe: super::process::executable_path(i32::try_from(event.pid).unwrap_or(-1)),
            uid: event.uid,
            id: crate::engine::FileId {
                dev: event.object.dev,
                ino: event.object.ino,
            },
            code: event.hook.name(),
            enforced: event.refused,
            rule: event.rule,
            reason: format!("refused in the kernel: {event}"),
            layer: "bpf-lsm",
        },
    );
}
