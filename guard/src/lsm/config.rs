//! What the layer enforces ([`LsmConfig`]), and the programs and settings that follow from it.

use super::*;

/// Self-protection of the loader and its maps and programs ([`LsmConfig::protect_agent`]).
pub(super) const SELF_PROTECT_PROGRAMS: [&str; 5] = [
    "task_kill",
    "file_send_sigiotask",
    "ptrace_access_check",
    "bpf_map",
    "bpf_prog",
];
/// Self-protection of the pins ([`LsmConfig::protected_pins`]).
pub(super) const PIN_PROGRAMS: [&str; 3] = ["pin_unlink", "pin_rename", "sb_umount"];

/// The hook a program attaches to: its name, but for those that share a hook with another.
pub(super) fn hook_of(program: &str) -> &str {
    match program {
        "pin_unlink" => "inode_unlink",
        "pin_rename" => "inode_rename",
        MAIN_SCRIPT_TRACEPOINT => "sched_process_exec",
        "code_link_follow" => "inode_follow_link",
        "code_link_stat" => "inode_getattr",
        "code_readlink" => "inode_readlink",
        other => other,
    }
}
/// Hooks of the verdict cache: they count changes and code readers, and refuse only
/// truncating code an interpreter is reading.
pub(super) const CHANGE_HOOKS: [&str; 6] = [
    "file_post_open",
    "file_release",
    "inode_setattr",
    "inode_rename",
    "inode_link",
    "inode_unlink",
];
/// Records each interpreter's script operand at exec (`tp_btf/sched_process_exec`).
pub(super) const MAIN_SCRIPT_TRACEPOINT: &str = "main_script_exec";
/// With `file_open`: what makes a file named as code on an untrusted filesystem, and
/// the links named as code an interpreter may read ([`guard_common::code_name`]).
pub(super) const CODE_NAME_HOOKS: [&str; 3] =
    ["code_link_follow", "code_link_stat", "code_readlink"];
/// Notices the agent's exit (`tp_btf`, also its program's name).
pub(super) const AGENT_EXIT_TRACEPOINT: &str = "sched_process_exit";
/// The layer's hooks that are neither change hooks nor self-protection.
const ENFORCING_HOOKS: [&str; 7] = [
    "file_open",
    "mmap_file",
    "file_mprotect",
    "bprm_creds_for_exec",
    "bprm_check_security",
    "inode_setxattr",
    "inode_removexattr",
];
/// Every program of the layer, and the exec gate's pinned beside it by the agent.
fn all_programs() -> impl Iterator<Item = &'static str> {
    ENFORCING_HOOKS
        .into_iter()
        .chain(CHANGE_HOOKS)
        .chain(SELF_PROTECT_PROGRAMS)
        .chain(PIN_PROGRAMS)
        .chain(CODE_NAME_HOOKS)
        .chain([
            MAIN_SCRIPT_TRACEPOINT,
            AGENT_EXIT_TRACEPOINT,
            "sched_process_exec",
        ])
}
/// What the layer enforces, and for which executables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsmConfig {
    /// The profiled interpreters (at most [`MAX_INTERPRETERS`]).
    pub interpreters: Vec<crate::ebpf_object::Interpreter>,
    /// `file_open`: refuse interpreters' reads of non-regular and unlinked files.
    pub file_open: bool,
    /// `mmap_file`/`file_mprotect`: refuse interpreters' executable mappings of
    /// non-regular and unlinked files (memfd code handed to `ctypes` without an open).
    pub exec_mappings: bool,
    /// `bprm_creds_for_exec`: refuse execs and `AT_EXECVE_CHECK`s of untrusted files.
    pub exec_check: bool,
    /// The trusted owners and filesystem types as the kernel holds them
    /// ([`crate::policy::Policy::trust_table`], which validated the counts): owners for
    /// `exec_check` and the native-code levels, filesystem types for
    /// [`NativeCode::Trusted`] and `file_open`'s files named as code
    /// ([`guard_common::code_name`]).
    pub trust: Trust,
    /// The policy's executable rules for every task (`bprm_check_security`, and
    /// `mmap_file`/`file_mprotect` whatever `exec_mappings` says).
    pub native_code: NativeCode,
    /// The profiles' code patterns (`*.py`…): those that are a literal suffix name code
    /// for `file_open` ([`guard_common::code_name::code_suffixes`]).
    pub code_patterns: Vec<String>,
    /// Only these executables may set or remove `security.ima` (at most [`MAX_SIGNERS`]).
    pub signers: Vec<Identity>,
    /// Enforce `signers`.
    pub protect_signatures: bool,
    /// Per-inode verdicts the agent records ([`KernelVerdicts`]), voided by any change; while
    /// the agent is down, `file_open` refuses interpreters' reads of regular files that have
    /// none. Only for an agent: without one, every such read is refused.
    pub verdict_cache: bool,
    /// With `verdict_cache`: the pid of an agent already answering permission events, set
    /// alive before the programs attach (a reload); `None` leaves the agent down until
    /// [`KernelVerdicts::agent_ready`].
    pub agent: Option<u32>,
    /// Report refusals, do not refuse.
    pub permissive: bool,
    /// Self-protection: the loader's process cannot be signalled (but harmlessly) or
    /// ptrace-attached, and the layer's maps and programs cannot be reached, except by
    /// controllers: PID 1, the loader itself and `controllers`.
    pub protect_agent: bool,
    /// Executables allowed to stop, trace and unpin the protected loader (at most
    /// [`MAX_CONTROLLERS`]); the loader's own executable is not added implicitly.
    pub controllers: Vec<Identity>,
    /// With `protect_agent`: only controllers may unlink or rename the entries of this
    /// directory of a BPF filesystem and of its subdirectories (the pins), or unmount that
    /// filesystem. Created if missing.
    pub protected_pins: Option<PathBuf>,
    /// Pin links and maps in this directory of a BPF filesystem (e.g. [`DEFAULT_PIN_DIR`]):
    /// the hooks then stay attached, failing closed, when the loader dies. A loader started
    /// with the same directory takes over: it attaches its own programs first, then replaces
    /// the pins, so enforcement never lapses.
    pub pin_dir: Option<PathBuf>,
}

impl LsmConfig {
    /// `file_open` enforced for these interpreters; the other hooks off.
    pub fn new(interpreters: Vec<crate::ebpf_object::Interpreter>) -> LsmConfig {
        LsmConfig {
            interpreters,
            file_open: true,
            exec_mappings: true,
            exec_check: false,
            trust: Trust::new(&[0], &[]),
            native_code: NativeCode::Any,
            code_patterns: Vec::new(),
            signers: Vec::new(),
            protect_signatures: false,
            verdict_cache: false,
            agent: None,
            permissive: false,
            protect_agent: false,
            controllers: Vec::new(),
            protected_pins: None,
            pin_dir: None,
        }
    }

    pub(super) fn settings(&self, offsets: LsmOffsets) -> LsmSettings {
        let mut flags = 0;
        for (on, bit) in [
            (self.permissive, PERMISSIVE),
            (self.file_open, ENFORCE_FILE_OPEN),
            (self.exec_mappings, ENFORCE_EXEC_MAP),
            (self.exec_check, ENFORCE_EXEC_CHECK),
            (self.protect_signatures, PROTECT_SIGNATURES),
            (self.verdict_cache, VERDICT_CACHE),
            (self.protect_agent, PROTECT_AGENT),
        ] {
            if on {
                flags |= bit;
            }
        }
        flags |= self.native_code.flags();
        let mut code_suffixes = [CodeSuffix::default(); MAX_CODE_SUFFIXES];
        let code_suffix_count = u32::try_from(guard_common::code_name::code_suffixes(
            self.code_patterns.iter().map(String::as_str),
            &mut code_suffixes,
        ))
        .unwrap_or(u32::MAX);
        LsmSettings {
            offsets,
            flags,
            trust: self.trust,
            code_suffixes,
            code_suffix_count,
        }
    }

    /// The programs to load (each named after its hook).
    pub(super) fn programs(&self, offsets: &LsmOffsets) -> Vec<&'static str> {
        let mut programs = Vec::new();
        if self.file_open {
            programs.push("file_open");
            programs.extend(CODE_NAME_HOOKS);
        }
        if self.exec_mappings || self.native_code != NativeCode::Any {
            programs.push("mmap_file");
            programs.push("file_mprotect");
        }
        if self.native_code != NativeCode::Any {
            programs.push("bprm_check_security");
        }
        // Kernels before 6.14 have no AT_EXECVE_CHECK to answer.
        if self.exec_check && offsets.bprm_is_check_mask != 0 {
            programs.push("bprm_creds_for_exec");
        }
        if self.protect_signatures || self.verdict_cache {
            programs.push("inode_setxattr");
            programs.push("inode_removexattr");
        }
        if self.verdict_cache {
            programs.extend(CHANGE_HOOKS);
        }
        if self.protect_agent {
            programs.extend(SELF_PROTECT_PROGRAMS);
            if self.protected_pins.is_some() {
                programs.extend(PIN_PROGRAMS);
            }
        }
        programs
    }

    /// The tracepoints to attach beside the hooks.
    pub(super) fn tracepoints(&self) -> Vec<&'static str> {
        let mut tracepoints = Vec::new();
        if self.file_open {
            tracepoints.push(MAIN_SCRIPT_TRACEPOINT);
        }
        // The exit of the agent (or of the protected loader) clears its state.
        if self.verdict_cache || self.protect_agent {
            tracepoints.push(AGENT_EXIT_TRACEPOINT);
        }
        tracepoints
    }
}

/// Whether a loaded program's name is one of the layer's (the kernel keeps 15 bytes).
pub(super) fn is_ours(name: &str) -> bool {
    all_programs().any(|p| p.as_bytes()[..p.len().min(15)] == *name.as_bytes())
}
