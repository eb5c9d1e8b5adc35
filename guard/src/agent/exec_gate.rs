//! The agent's side of the exec gate: configure it from the policy, keep it in step with
//! reloads, and turn its kill reports into audit records.
//!
//! Runs on its own thread so that loading a program (the verifier takes a while) never
//! delays an answer to a fanotify permission event.

use guard_common::lsm::Hook;
use std::os::fd::AsFd;
use std::sync::Arc;

use guard_common::Rule;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::audit::KernelRefusal;
use super::stats::bump;
use super::{Loaded, State};
use crate::ebpf_object::Identity;
use crate::exec_gate::{ExecGate, ExecGateConfig, GateEvent};
use crate::policy::{Mode, Permission};

/// The gate's configuration for a policy: one gate serves every profile, so a behaviour
/// any profile refuses is refused (only identities the profiles name are ever touched).
pub fn gate_config(loaded: &Loaded) -> ExecGateConfig {
    let policy = &loaded.policy;
    let denies = |permission: fn(&crate::policy::Profile) -> Permission| {
        policy
            .interpreters
            .iter()
            .any(|p| permission(p) == Permission::Deny)
    };
    let mut refused_env: Vec<String> = Vec::new();
    for profile in &policy.interpreters {
        for name in &profile.deny_env {
            if !refused_env.contains(name) {
                refused_env.push(name.clone());
            }
        }
    }
    // More than the gate holds is a policy error (`Policy::parse`), and the gate's own load
    // refuses it too: never truncated.
    // Like the environment: a module any profile lists is refused for all, under the
    // profiles' union of DENY_* flags (only profiled identities are ever judged).
    let union = |list: fn(&crate::policy::Profile) -> &Vec<String>| {
        let mut names: Vec<String> = Vec::new();
        for profile in &policy.interpreters {
            for name in list(profile) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    };
    ExecGateConfig {
        interpreters: loaded.interpreter_identities(),
        dialects: policy
            .interpreters
            .iter()
            .map(|p| p.argv.dialect())
            .collect(),
        loaders: loaded
            .loaders
            .iter()
            .map(|id| Identity::from(*id))
            .collect(),
        deny_inline_code: denies(|p| p.inline_code),
        deny_stdin_code: denies(|p| p.stdin),
        deny_interactive: denies(|p| p.interactive),
        deny_no_site: policy.interpreters.iter().any(|p| p.require_audit_hook),
        deny_descriptor_script: !policy.interpreters.is_empty(),
        refused_env,
        inline_code_modules: union(|p| &p.inline_code_modules),
        stdin_code_modules: union(|p| &p.stdin_code_modules),
        permissive: policy.mode == Mode::Permissive,
        native: policy.native.code,
        trust: policy.trust_table(),
        pin_dir: None,
    }
}

/// Loads the gate for the policy in force, reporting failure in the log and in status.
pub fn load(state: &State, loaded: &Loaded) -> Option<ExecGate> {
    let mut config = gate_config(loaded);
    // Beside the BPF LSM layer the gate fails closed with it: pinned, it keeps killing
    // refused launches while the agent is down.
    // The layer also enforces the native-code rule, at its hooks, refusing rather than
    // killing.
    if state.kernel_verdicts().is_some() {
        config.pin_dir = Some(crate::exec_gate::DEFAULT_GATE_PIN_DIR.into());
        config.native = crate::policy::NativeCode::Any;
    }
    match ExecGate::load(&config) {
        Ok(mut gate) => {
            // New identities of the profiled executables go into this gate from now on.
            if let Err(e) = super::identities::install_gate_map(state, gate.take_identity_map()) {
                bump(&state.stats.errors);
                log::error!(
                    "exec gate: cannot add the identities adopted since the policy load: {e}"
                );
            }
            let mode = if config.permissive {
                "reporting"
            } else {
                "enforcing"
            };
            let native = match config.native {
                crate::policy::NativeCode::Any => String::new(),
                level => format!(", native code \"{level}\" for every task"),
            };
            let what = format!(
                "{mode} on {} interpreter executable(s) and {} loader(s){native}",
                config.interpreters.len(),
                config.loaders.len()
            );
            log::info!("exec gate {what}");
            state.set_exec_gate_status(what);
            Some(gate)
        }
        Err(e) => {
            bump(&state.stats.errors);
            state.set_exec_gate_status(format!("FAILED: {e}"));
            log::error!(
                "exec gate not loaded: {e}. python3 -c, code on stdin and descriptor scripts \
                 are NOT refused on this host"
            );
            None
        }
    }
}

/// Runs the gate until `state` says the agent is stopping. Reloads replace the gate: the
/// new one is attached before the old one is dropped, so no exec goes unjudged.
pub fn run(state: Arc<State>, initial: Option<ExecGate>, mut generation: u64) {
    let mut gate = initial;
    // Counts of the gates a reload replaced.
    let mut carried = 0;
    while !state.stopping() {
        if let Some(current) = gate.as_mut() {
            let mut fds = [PollFd::new(current.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(500u16));
            let loaded = state.loaded();
            for event in current.events() {
                report(&state, &loaded, &event);
            }
            state.stats.unverified_mappings.store(
                carried + current.unverified_mappings(),
                std::sync::atomic::Ordering::Relaxed,
            );
        } else {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let now = state.generation();
        if now != generation {
            generation = now;
            let replacement = load(&state, &state.loaded());
            if replacement.is_some() {
                carried += gate.as_ref().map_or(0, ExecGate::unverified_mappings);
                gate = replacement;
            }
        }
    }
    state.set_exec_gate_status("stopped");
}

/// Why the gate refused, in words, for the rule it reports.
pub fn reason(rule: Rule) -> &'static str {
    match rule {
        Rule::NoInlineCode => "inline code (-c) is refused",
        Rule::NoStdinCode => "code from standard input is refused",
        Rule::NoInteractive => "interactive use (-i, the REPL) is refused",
        Rule::NoCodeEnvironment => "a refused environment variable is set",
        Rule::ScriptIsFile => "the script operand names a file descriptor, not a file",
        Rule::FactsUnavailable => "the command line is beyond what the gate can read: refused",
        Rule::AuditHookRequired => {
            "a start-up without site (-S) skips the audit hook the policy requires: refused"
        }
        Rule::NoLoaderLaunch => {
            "the dynamic loader was run directly to launch a program (ld.so PROGRAM): refused"
        }
        _ => "refused at exec",
    }
}

/// Why the native-code rule refused a program or library.
fn native_reason(rule: Rule, hook: u32) -> String {
    let what = match Hook::from_u32(hook) {
        Some(Hook::BprmCheckSecurity) => "program",
        Some(Hook::FileMprotect) => "mapping made executable",
        _ => "executable mapping",
    };
    let why = match rule {
        Rule::RegularFile => "not a regular file",
        Rule::NotDeleted => "has no name (a memfd, O_TMPFILE or deleted file)",
        Rule::TrustedOwner => "not owned by a trusted owner",
        Rule::NotWritableByRunner => "writable by group or others",
        Rule::TrustedFilesystem => "on a filesystem whose owners are not facts or not trusted",
        Rule::FactsUnavailable => "the kernel facts could not be read",
        _ => "refused",
    };
    format!("native code: {what} {why}")
}

fn report(state: &State, loaded: &Loaded, event: &GateEvent) {
    let id = crate::engine::FileId {
        dev: event.file.dev,
        ino: event.file.ino,
    };
    let launch = event.hook == Hook::BprmCredsForExec as u32;
    let exe = if launch {
        loaded
            .interpreters
            .iter()
            .find(|(known, _)| *known == id)
            .and_then(|(_, profile)| loaded.policy.interpreters.get(*profile))
            .map(|profile| format!("<{} interpreter>", profile.name))
            .or_else(|| {
                loaded
                    .loaders
                    .contains(&id)
                    .then(|| "<dynamic loader>".into())
            })
            .unwrap_or_else(|| "?".into())
    } else {
        // The process was killed before it could be asked; /proc may still name it, else
        // the name the kernel reported.
        std::fs::read_link(format!("/proc/{}/exe", event.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("<{}>", event.comm))
    };
    let (code, reason) = if launch {
        ("launch", reason(event.rule).to_string())
    } else {
        ("native", native_reason(event.rule, event.hook))
    };
    super::audit::kernel_refusal(
        state,
        KernelRefusal {
            pid: event.pid,
            exe,
            uid: event.uid,
            id,
            code,
            enforced: event.killed,
            rule: event.rule,
            reason,
            layer: "exec-gate",
        },
    );
}
