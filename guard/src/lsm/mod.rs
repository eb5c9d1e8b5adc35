//! The BPF LSM layer: kernel hooks that refuse, synchronously and failing closed, what can
//! be decided from the inode alone.
//!
//! * `file_open` — an interpreter task (recognised by the identity of its executable,
//!   `current->mm->exe_file`) may read only from a linked regular file: FIFOs, sockets,
//!   block devices, anonymous inodes, memfds and deleted files are refused with `EACCES`,
//!   also when reached through `/proc/*/fd` or `/dev/fd` (the opened file is the target).
//!   The rule is [`guard_common::lsm::judge_open`]. Signatures, owners and modes of regular
//!   files stay with fanotify, which sees content.
//!
//! * `mmap_file`/`file_mprotect` ([`LsmConfig::exec_mappings`]) — an interpreter task may
//!   map code executable only from a linked regular file: a memfd written and mapped
//!   `PROT_EXEC` (or `mprotect`ed to it) without any open is refused with `EACCES`.
//!   Anonymous executable memory (libffi closures) stays allowed.
//! * `bprm_creds_for_exec` (6.14+, [`LsmConfig::exec_check`]) — an `execveat(fd, "", …,
//!   AT_EXECVE_CHECK)` of a file not owned by the trusted owner, writable by others, or
//!   unlinked is refused with `EACCES`. Real execs are not judged.
//! * `bprm_check_security`, `mmap_file`, `file_mprotect` ([`LsmConfig::native_code`], the
//!   policy's `[native] code`) — for every task, each file an exec runs (the program, a
//!   `#!` script's interpreter) and each executable mapping (shared libraries,
//!   `LD_PRELOAD`, `ld.so ./prog`) must be a linked regular file (`linked`), and also owned
//!   by the trusted owner, not writable by group or others, on a trusted filesystem type
//!   of the initial user namespace (`trusted`). The rule is
//!   [`guard_common::lsm::judge_native`].
//! * `inode_setxattr`/`inode_removexattr` ([`LsmConfig::protect_signatures`]) — only the
//!   executables named as signers may set or remove `security.ima`; anyone else, root
//!   included, gets `EPERM` ([`Rule::SignerOnly`]).
//!
//! * self-protection ([`LsmConfig::protect_agent`], `guard-ebpf/src/self_protect.rs`) — only
//!   controllers (PID 1, the loader, [`LsmConfig::controllers`]) may signal (but for
//!   harmless signals) or ptrace-attach the loader, get descriptors for the layer's maps
//!   (named `LSM_…`) and programs, unlink or rename the pins below
//!   [`LsmConfig::protected_pins`], or unmount the BPF filesystem holding them
//!   ([`Rule::ControllerOnly`], `EPERM`).
//!
//! Untrusted filesystems (a superblock owned by a user namespace) are not judged here: the
//! kernel cannot tell a code open from a data open, and refusing every read-only open on
//! such a mount would break interpreters reading data there. fanotify judges them.
//!
//! Every refusal is reported on a ring buffer: [`LsmLayer::events`], pollable through
//! [`LsmLayer::as_fd`]. The programs stay attached while the [`LsmLayer`] lives.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, InodeStorage, MapData, MapError, RingBuf};
use aya::pin::PinError;
use aya::programs::links::FdLink;
use aya::programs::{BtfTracePoint, Lsm, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use guard_common::Rule;
use guard_common::code_name::{CodeSuffix, MAX_CODE_SUFFIXES};
use guard_common::exec_gate::InterpreterKey;
pub use guard_common::lsm::Hook as LsmHook;
use guard_common::lsm::{
    AgentState, ENFORCE_EXEC_CHECK, ENFORCE_EXEC_MAP, ENFORCE_FILE_OPEN, InodeState, InodeVerdict,
    LsmOffsets, LsmSettings, MAX_TRUSTED_FILESYSTEMS, MAX_TRUSTED_OWNERS, PERMISSIVE,
    PROTECT_AGENT, PROTECT_SIGNATURES, SelfProtectSettings, Trust, VERDICT_CACHE,
};

use crate::btf::{Btf, BtfError};
use crate::ebpf_object::EBPF_OBJECT;
use crate::exec_gate::Identity;
pub use crate::policy::NativeCode;

const SETTINGS_GLOBAL: &str = "LSM_SETTINGS";
const INTERPRETERS_MAP: &str = "LSM_INTERPRETERS";
const SIGNERS_MAP: &str = "LSM_SIGNERS";
const EVENTS_MAP: &str = "LSM_EVENTS";
const INODE_STATE_MAP: &str = "LSM_INODE_STATE";
const VERDICTS_MAP: &str = "LSM_VERDICTS";
const AGENT_MAP: &str = "LSM_AGENT";
const SELF_PROTECT_GLOBAL: &str = "SELF_PROTECT_SETTINGS";
const CONTROLLERS_MAP: &str = "LSM_CONTROLLERS";
const PROTECTED_MAP: &str = "LSM_PROTECTED";
const OWN_PROGS_MAP: &str = "LSM_OWN_PROGS";
/// Self-protection of the loader and its maps and programs ([`LsmConfig::protect_agent`]).
const SELF_PROTECT_PROGRAMS: [&str; 5] = [
    "task_kill",
    "file_send_sigiotask",
    "ptrace_access_check",
    "bpf_map",
    "bpf_prog",
];
/// Self-protection of the pins ([`LsmConfig::protected_pins`]).
const PIN_PROGRAMS: [&str; 3] = ["pin_unlink", "pin_rename", "sb_umount"];

/// The hook a program attaches to: its name, but for those that share a hook with another.
fn hook_of(program: &str) -> &str {
    match program {
        "pin_unlink" => "inode_unlink",
        "pin_rename" => "inode_rename",
        MAIN_SCRIPT_TRACEPOINT => "sched_process_exec",
        "code_link_follow" => "inode_follow_link",
        "code_link_stat" => "inode_getattr",
        other => other,
    }
}
/// Hooks of the verdict cache: they count changes and code readers, and refuse only
/// truncating code an interpreter is reading.
const CHANGE_HOOKS: [&str; 6] = [
    "file_post_open",
    "file_release",
    "inode_setattr",
    "inode_rename",
    "inode_link",
    "inode_unlink",
];
/// Records each interpreter's script operand at exec (`tp_btf/sched_process_exec`).
const MAIN_SCRIPT_TRACEPOINT: &str = "main_script_exec";
/// With `file_open`: what makes a file named as code on an untrusted filesystem
/// ([`guard_common::code_name`]).
const CODE_NAME_HOOKS: [&str; 2] = ["code_link_follow", "code_link_stat"];
/// Notices the agent's exit (`tp_btf`, also its program's name).
const AGENT_EXIT_TRACEPOINT: &str = "sched_process_exit";
/// Every program of the layer.
const ALL_PROGRAMS: &[&str] = &[
    "file_open",
    "mmap_file",
    "file_mprotect",
    "bprm_creds_for_exec",
    "bprm_check_security",
    "inode_setxattr",
    "inode_removexattr",
    "file_post_open",
    "file_release",
    "inode_setattr",
    "inode_rename",
    "inode_link",
    "inode_unlink",
    AGENT_EXIT_TRACEPOINT,
    "task_kill",
    "file_send_sigiotask",
    "ptrace_access_check",
    "bpf_map",
    "bpf_prog",
    "pin_unlink",
    "pin_rename",
    "sb_umount",
    MAIN_SCRIPT_TRACEPOINT,
    "code_link_follow",
    "code_link_stat",
    // The exec gate, pinned beside the layer by the agent.
    "sched_process_exec",
];
/// Size of the kernel's interpreter map.
pub const MAX_INTERPRETERS: usize = 64;
/// Size of the kernel's signer map.
pub const MAX_SIGNERS: usize = 16;
/// Size of the kernel's controller map.
pub const MAX_CONTROLLERS: usize = 16;

/// Where the kernel lists its active LSMs.
const ACTIVE_LSMS: &str = "/sys/kernel/security/lsm";

/// Why the layer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The kernel cannot run BPF LSM programs at all (not built in, not in `lsm=`, no BTF).
    #[error("BPF LSM unsupported: {0}")]
    Unsupported(String),
    #[error("cannot read kernel BTF for struct offsets: {0}")]
    Btf(#[from] BtfError),
    #[error("cannot read kernel BTF for the hooks: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("cannot load the LSM object: {0}")]
    Load(#[from] EbpfError),
    #[error("LSM program {0} was refused: {1}")]
    Program(&'static str, ProgramError),
    #[error("LSM map error: {0}")]
    Map(#[from] MapError),
    #[error("the LSM object has no {0}")]
    Missing(&'static str),
    #[error("cannot pin under {0}: {1}")]
    Pin(PathBuf, String),
    #[error("too many {0} ({1}, at most {2})")]
    TooMany(&'static str, usize, usize),
    /// A pinned layer's self-protection refuses this executable: it is none of the
    /// controllers of the layer a previous loader pinned (an upgraded binary not handed
    /// the layer over).
    #[error(
        "the BPF LSM layer pinned in {0} refuses this executable ({1}): only its controllers \
         may replace it. Hand it over with the guard binary that loaded it before switching \
         binaries (`OLD-GUARD debug lsm-handover {1}`), or reboot"
    )]
    NotController(PathBuf, String),
}

/// How the layer stands, for fail-safe reporting (status, logs): the agent keeps running
/// with fanotify alone when the layer is not active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsmStatus {
    Active,
    /// The kernel cannot do it: expected on some hosts, not an error.
    Unsupported(String),
    /// The kernel should have, but loading failed: an error to report.
    Failed(String),
    /// A layer pinned by another guard binary refuses this one ([`LsmError::NotController`]):
    /// it keeps enforcing, failing closed, whatever this process does, so running without
    /// a layer of one's own would only pretend.
    Locked(String),
}

impl std::fmt::Display for LsmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LsmStatus::Active => write!(f, "active"),
            LsmStatus::Unsupported(why) => write!(f, "unsupported: {why}"),
            LsmStatus::Failed(why) => write!(f, "failed: {why}"),
            LsmStatus::Locked(why) => write!(f, "locked: {why}"),
        }
    }
}

/// What the layer enforces, and for which executables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsmConfig {
    /// The profiled interpreters (at most [`MAX_INTERPRETERS`]).
    pub interpreters: Vec<Identity>,
    /// `file_open`: refuse interpreters' reads of non-regular and unlinked files.
    pub file_open: bool,
    /// `mmap_file`/`file_mprotect`: refuse interpreters' executable mappings of
    /// non-regular and unlinked files (memfd code handed to `ctypes` without an open).
    pub exec_mappings: bool,
    /// `bprm_creds_for_exec`: refuse execs and `AT_EXECVE_CHECK`s of untrusted files.
    pub exec_check: bool,
    /// The trusted owners for `exec_check` and [`NativeCode::Trusted`] (at most
    /// [`MAX_TRUSTED_OWNERS`]).
    pub trusted_uids: Vec<u32>,
    /// The policy's executable rules for every task (`bprm_check_security`, and
    /// `mmap_file`/`file_mprotect` whatever `exec_mappings` says).
    pub native_code: NativeCode,
    /// The trusted filesystem types, by magic (at most [`MAX_TRUSTED_FILESYSTEMS`]
    /// distinct ones): for [`NativeCode::Trusted`], and for `file_open`'s files named as
    /// code ([`guard_common::code_name`]).
    pub trusted_filesystems: Vec<u64>,
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

/// Where the agent pins the layer.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/guard/lsm";
/// Where everything guard pins lives.
pub const GUARD_PIN_ROOT: &str = "/sys/fs/bpf/guard";

impl LsmConfig {
    /// `file_open` enforced for these interpreters; the other hooks off.
    pub fn new(interpreters: Vec<Identity>) -> LsmConfig {
        LsmConfig {
            interpreters,
            file_open: true,
            exec_mappings: true,
            exec_check: false,
            trusted_uids: vec![0],
            native_code: NativeCode::Any,
            trusted_filesystems: Vec::new(),
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

    fn settings(&self, offsets: LsmOffsets) -> LsmSettings {
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
        let code_suffix_count = guard_common::code_name::code_suffixes(
            self.code_patterns.iter().map(String::as_str),
            &mut code_suffixes,
        ) as u32;
        LsmSettings {
            offsets,
            flags,
            trust: Trust::new(&self.trusted_uids, &self.trusted_filesystems),
            code_suffixes,
            code_suffix_count,
        }
    }

    /// The distinct trusted filesystem magics as the kernel compares them (32 bits: the
    /// kernel program truncates `s_magic` the same way).
    fn trusted_magics(&self) -> Vec<u32> {
        let mut magics: Vec<u32> = Vec::new();
        for magic in &self.trusted_filesystems {
            let magic = *magic as u32;
            if !magics.contains(&magic) {
                magics.push(magic);
            }
        }
        magics
    }

    /// The programs to load (each named after its hook).
    fn programs(&self, offsets: &LsmOffsets) -> Vec<&'static str> {
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
    fn tracepoints(&self) -> Vec<&'static str> {
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

/// What a self-protection event's fields mean (see `SelfProtectSettings`), or `None` for a
/// file event.
fn hook_target(hook: LsmHook, ino: u64, detail: u32) -> Option<String> {
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

/// Whether `bpf` is among the active LSMs listed in `contents` (of [`ACTIVE_LSMS`]).
fn bpf_lsm_listed(contents: &str) -> bool {
    contents.trim().split(',').any(|lsm| lsm == "bpf")
}

/// Why this kernel cannot run the layer, if it cannot.
pub fn unsupported_reason() -> Option<String> {
    match std::fs::read_to_string(ACTIVE_LSMS) {
        Ok(lsms) if bpf_lsm_listed(&lsms) => {}
        Ok(lsms) => return Some(format!("bpf is not an active LSM ({})", lsms.trim())),
        Err(e) => return Some(format!("cannot read {ACTIVE_LSMS}: {e}")),
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    None
}

pub(crate) fn kernel_offsets(btf: &Btf) -> Result<LsmOffsets, BtfError> {
    // Before 6.14 there is no AT_EXECVE_CHECK: a zero mask never matches.
    let (bprm_is_check, mask) = match btf.member_bit("linux_binprm", "is_check") {
        Ok(found) => found,
        Err(BtfError::NoMember(..)) => (0, 0),
        Err(e) => return Err(e),
    };
    let file_path = btf.member_offset("file", "f_path", btf.struct_size("path")?)?;
    let dentry_name = btf.member_offset("dentry", "d_name", btf.struct_size("qstr")?)?;
    Ok(LsmOffsets {
        task_mm: btf.member_offset("task_struct", "mm", 8)?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file", 8)?,
        file_inode: btf.member_offset("file", "f_inode", 8)?,
        file_mode: btf.member_offset("file", "f_mode", 4)?,
        inode_mode: btf.member_offset("inode", "i_mode", 2)?,
        inode_nlink: btf.member_offset("inode", "i_nlink", 4)?,
        inode_uid: btf.member_offset("inode", "i_uid", 4)?,
        inode_ino: btf.member_offset("inode", "i_ino", 8)?,
        inode_sb: btf.member_offset("inode", "i_sb", 8)?,
        sb_dev: btf.member_offset("super_block", "s_dev", 4)?,
        bprm_file: btf.member_offset("linux_binprm", "file", 8)?,
        bprm_is_check,
        bprm_is_check_mask: mask as u32,
        dentry_inode: btf.member_offset("dentry", "d_inode", 8)?,
        vma_file: btf.member_offset("vm_area_struct", "vm_file", 8)?,
        inode_writecount: btf.member_offset("inode", "i_writecount", 4)?,
        sb_user_ns: btf.member_offset("super_block", "s_user_ns", 8)?,
        user_ns_level: btf.member_offset("user_namespace", "level", 4)?,
        iattr_valid: btf.member_offset("iattr", "ia_valid", 4)?,
        sb_magic: btf.member_offset("super_block", "s_magic", 8)?,
        bprm_p: btf.member_offset("linux_binprm", "p", 8)?,
        bprm_argc: btf.member_offset("linux_binprm", "argc", 4)?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end", 8)?,
        file_path_mnt: file_path + btf.member_offset("path", "mnt", 8)?,
        file_path_dentry: file_path + btf.member_offset("path", "dentry", 8)?,
        dentry_name_len: dentry_name + btf.member_offset("qstr", "len", 4)?,
        dentry_name: dentry_name + btf.member_offset("qstr", "name", 8)?,
        vfsmount_root: btf.member_offset("vfsmount", "mnt_root", 8)?,
        mount_vfsmount: btf.member_offset("mount", "mnt", btf.struct_size("vfsmount")?)?,
        mount_mountpoint: btf.member_offset("mount", "mnt_mountpoint", 8)?,
        mount_parent: btf.member_offset("mount", "mnt_parent", 8)?,
        bprm_envc: btf.member_offset("linux_binprm", "envc", 4)?,
        vma_flags: btf.member_offset("vm_area_struct", "vm_flags", 8)?,
        vma_end: btf.member_offset("vm_area_struct", "vm_end", 8)?,
        mm_saved_auxv: btf.array_member_offset("mm_struct", "saved_auxv", 16)?,
        task_files: btf.member_offset("task_struct", "files", 8)?,
        files_fdt: btf.member_offset("files_struct", "fdt", 8)?,
        fdt_fd: btf.member_offset("fdtable", "fd", 8)?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds", 4)?,
        task_personality: btf.member_offset("task_struct", "personality", 4)?,
    })
}

/// The loaded and attached LSM programs. Detached when dropped.
pub struct LsmLayer {
    events: RingBuf<MapData>,
    verdicts: Option<std::sync::Arc<KernelVerdicts>>,
    /// Dropping an unpinned link detaches its program; a pinned one stays.
    _links: Vec<FdLink>,
    // Owns the programs and their links; dropped after `events`.
    ebpf: Ebpf,
    hooks: Vec<&'static str>,
}

impl LsmLayer {
    /// Loads, configures and attaches the hooks `config` enables. Needs root and a kernel
    /// with `bpf` among its active LSMs ([`LsmError::Unsupported`] otherwise).
    pub fn load(config: &LsmConfig) -> Result<LsmLayer, LsmError> {
        if let Some(why) = unsupported_reason() {
            return Err(LsmError::Unsupported(why));
        }
        if config.interpreters.len() > MAX_INTERPRETERS {
            return Err(LsmError::TooMany(
                "interpreters",
                config.interpreters.len(),
                MAX_INTERPRETERS,
            ));
        }
        if config.trusted_uids.len() > MAX_TRUSTED_OWNERS {
            return Err(LsmError::TooMany(
                "trusted owners",
                config.trusted_uids.len(),
                MAX_TRUSTED_OWNERS,
            ));
        }
        if config.trusted_magics().len() > MAX_TRUSTED_FILESYSTEMS {
            return Err(LsmError::TooMany(
                "trusted filesystem types",
                config.trusted_magics().len(),
                MAX_TRUSTED_FILESYSTEMS,
            ));
        }
        if config.signers.len() > MAX_SIGNERS {
            return Err(LsmError::TooMany(
                "signers",
                config.signers.len(),
                MAX_SIGNERS,
            ));
        }
        if config.controllers.len() > MAX_CONTROLLERS {
            return Err(LsmError::TooMany(
                "controllers",
                config.controllers.len(),
                MAX_CONTROLLERS,
            ));
        }
        if let Some(dir) = &config.pin_dir {
            // Without this the refusal comes as an EPERM on the first `LSM_` map created.
            pinned_controllers(dir)?;
        }
        let kernel_btf = Btf::from_kernel()?;
        let offsets = kernel_offsets(&kernel_btf)?;
        let settings = config.settings(offsets);
        let protect = self_protect_settings(&kernel_btf, config)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(SETTINGS_GLOBAL, &settings, true)
            .override_global(SELF_PROTECT_GLOBAL, &protect, true)
            // LSM_MAIN_SCRIPTS is task storage, which aya has no user-space type for: only
            // the kernel programs use it.
            .allow_unsupported_maps()
            .load(EBPF_OBJECT)?;

        // Maps first, attach last: no program may run with a half-filled map.
        fill(&mut ebpf, INTERPRETERS_MAP, &config.interpreters)?;
        fill(&mut ebpf, SIGNERS_MAP, &config.signers)?;
        fill(&mut ebpf, CONTROLLERS_MAP, &config.controllers)?;
        if config.protect_agent {
            let mut protected: Array<_, u32> = Array::try_from(
                ebpf.map_mut(PROTECTED_MAP)
                    .ok_or(LsmError::Missing(PROTECTED_MAP))?,
            )?;
            protected.set(0, std::process::id(), 0)?;
        }
        if let Some(tgid) = config.agent {
            let mut agent: Array<_, AgentState> = Array::try_from(
                ebpf.map_mut(AGENT_MAP)
                    .ok_or(LsmError::Missing(AGENT_MAP))?,
            )?;
            agent.set(0, AgentState { tgid, alive: 1 }, 0)?;
        }
        let btf = aya::Btf::from_sys_fs()?;
        let mut hooks = Vec::new();
        let mut links = Vec::new();
        // LSM hooks and tracepoints differ only in their program type.
        macro_rules! attach_all {
            ($kind:ty, $names:expr) => {
                for name in $names {
                    let program: &mut $kind = ebpf
                        .program_mut(name)
                        .ok_or(LsmError::Missing(name))?
                        .try_into()
                        .map_err(|e| LsmError::Program(name, e))?;
                    program
                        .load(hook_of(name), &btf)
                        .map_err(|e| LsmError::Program(name, e))?;
                    let id = program.attach().map_err(|e| LsmError::Program(name, e))?;
                    let link = program
                        .take_link(id)
                        .map_err(|e| LsmError::Program(name, e))?;
                    links.push(FdLink::from(link));
                    hooks.push(name);
                }
            };
        }
        attach_all!(Lsm, config.programs(&offsets));
        attach_all!(BtfTracePoint, config.tracepoints());
        if config.protect_agent {
            // After attaching: a descriptor for a program only lets one read it or attach
            // it once more, so the moment without protection costs nothing (unlike maps,
            // which are protected by name from their creation).
            own_programs(&mut ebpf, &hooks)?;
        }
        // Everything is attached: only now may the old pins (a previous loader's programs)
        // go, so enforcement never lapses.
        if let Some(dir) = &config.pin_dir {
            links = pin(&ebpf, dir, &hooks, links)?;
        }
        let events = RingBuf::try_from(
            ebpf.take_map(EVENTS_MAP)
                .ok_or(LsmError::Missing(EVENTS_MAP))?,
        )?;
        let verdicts = if config.verdict_cache {
            Some(std::sync::Arc::new(KernelVerdicts::take(&mut ebpf)?))
        } else {
            None
        };
        Ok(LsmLayer {
            events,
            verdicts,
            _links: links,
            ebpf,
            hooks,
        })
    }

    /// The verdict cache, when [`LsmConfig::verdict_cache`] is on.
    pub fn verdicts(&self) -> Option<std::sync::Arc<KernelVerdicts>> {
        self.verdicts.clone()
    }

    /// Removes the pins under `dir`, detaching the programs no loader holds any more (the
    /// way to turn a pinned layer off). Returns how many pins were removed.
    /// The directories right under `dir` are cleared too, so [`GUARD_PIN_ROOT`] turns off
    /// the layer and the exec gate pinned beside it.
    pub fn unpin(dir: &Path) -> Result<usize, LsmError> {
        let mut found = pins(dir)?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    found.extend(pins(&entry.path())?);
                }
            }
        }
        let mut removed = 0;
        for entry in found {
            std::fs::remove_file(&entry).map_err(|e| LsmError::Pin(entry, e.to_string()))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Adds `successor` (an upgraded guard binary) to the controllers of the layer pinned in
    /// `dir`, so that, started as the agent, it may replace the layer. Only a controller
    /// (the binary that loaded the layer, or one handed over to before) gets the map.
    /// Returns false when no layer is pinned there.
    pub fn hand_over(dir: &Path, successor: Identity) -> Result<bool, LsmError> {
        let Some(mut controllers) = pinned_controllers(dir)? else {
            return Ok(false);
        };
        // A full map (MAX_CONTROLLERS) fails here with E2BIG.
        controllers.insert(successor.kernel_key(), 0, 0)?;
        Ok(true)
    }

    /// Programs named as this layer's still loaded in the kernel (by any loader). After
    /// [`Self::unpin`] the kernel releases them from a workqueue, a little later.
    pub fn loaded_programs() -> Result<Vec<String>, LsmError> {
        let mut found = Vec::new();
        for info in aya::programs::loaded_programs() {
            let info = info.map_err(|e| LsmError::Program("(listing)", e))?;
            if let Some(name) = info.name_as_str()
                && is_ours(name)
            {
                found.push(name.to_string());
            }
        }
        Ok(found)
    }

    /// Run counts and total run time (ns) of this layer's programs loaded now, summed per
    /// name (kept by the kernel while BPF statistics are on).
    pub fn program_stats() -> Result<std::collections::BTreeMap<String, (u64, u64)>, LsmError> {
        let mut stats = std::collections::BTreeMap::new();
        for info in aya::programs::loaded_programs() {
            let info = info.map_err(|e| LsmError::Program("(listing)", e))?;
            if let Some(name) = info.name_as_str()
                && is_ours(name)
            {
                let entry: &mut (u64, u64) = stats.entry(name.to_string()).or_default();
                entry.0 += info.run_count();
                entry.1 += info.run_time().as_nanos() as u64;
            }
        }
        Ok(stats)
    }

    /// [`Self::load`] for an agent that runs on regardless: the layer when active, and the
    /// status to report either way.
    pub fn start(config: &LsmConfig) -> (Option<LsmLayer>, LsmStatus) {
        match LsmLayer::load(config) {
            Ok(layer) => (Some(layer), LsmStatus::Active),
            Err(LsmError::Unsupported(why)) => (None, LsmStatus::Unsupported(why)),
            Err(e @ LsmError::NotController(..)) => (None, LsmStatus::Locked(e.to_string())),
            Err(e) => (None, LsmStatus::Failed(e.to_string())),
        }
    }

    /// The hooks attached.
    pub fn hooks(&self) -> &[&'static str] {
        &self.hooks
    }

    /// Instructions the verifier processed for each attached program.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        self.hooks
            .iter()
            .map(|name| {
                let count = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|info| info.verified_instruction_count());
                (*name, count)
            })
            .collect()
    }

    /// The refusals reported since the last call (non-blocking; poll [`Self::as_fd`] for
    /// readability to wait).
    pub fn events(&mut self) -> impl Iterator<Item = LsmEvent> + '_ {
        std::iter::from_fn(move || {
            loop {
                let item = self.events.next()?;
                if item.len() < size_of::<guard_common::lsm::LsmEvent>() {
                    log::warn!("lsm: short event ({} bytes)", item.len());
                    continue;
                }
                // SAFETY: the kernel wrote a whole LsmEvent (length checked above), a
                // repr(C) struct of integers valid for any bit pattern; the ring buffer gives
                // no alignment guarantee, hence read_unaligned.
                let raw: guard_common::lsm::LsmEvent =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let (Some(hook), Some(rule)) =
                    (LsmHook::from_u32(raw.hook), Rule::from_u32(raw.rule))
                else {
                    log::warn!("lsm: unknown hook {} or rule {}", raw.hook, raw.rule);
                    continue;
                };
                return Some(LsmEvent {
                    hook,
                    rule,
                    pid: raw.tgid,
                    tid: raw.pid,
                    uid: raw.uid,
                    refused: raw.refused != 0,
                    object: Identity::from_kernel(raw.dev, raw.ino),
                    mode: raw.mode,
                    nlink: raw.nlink,
                });
            }
        })
    }
}

/// `LSM_CONTROLLERS` is pinned too: a successor binary is added to it before an upgrade
/// (see [`LsmLayer::hand_over`]).
const PINNED_MAPS: [&str; 4] = [INTERPRETERS_MAP, SIGNERS_MAP, EVENTS_MAP, CONTROLLERS_MAP];

/// The agent's side of the kernel's per-inode verdict cache (see `guard-ebpf`'s
/// `verdicts` module): what the kernel saw at an interpreter's open, the verdicts the agent
/// records after a check, and the agent's liveness.
pub struct KernelVerdicts {
    states: InodeStorage<MapData, InodeState>,
    verdicts: std::sync::Mutex<InodeStorage<MapData, InodeVerdict>>,
    agent: std::sync::Mutex<Array<MapData, AgentState>>,
}

impl KernelVerdicts {
    fn take(ebpf: &mut Ebpf) -> Result<KernelVerdicts, LsmError> {
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

/// Whether a loaded program's name is one of the layer's (the kernel keeps 15 bytes).
fn is_ours(name: &str) -> bool {
    ALL_PROGRAMS
        .iter()
        .any(|p| p.as_bytes()[..p.len().min(15)] == *name.as_bytes())
}

/// The self-protection hooks' offsets and the pin tree they protect (created if missing).
fn self_protect_settings(btf: &Btf, config: &LsmConfig) -> Result<SelfProtectSettings, LsmError> {
    if !config.protect_agent {
        return Ok(SelfProtectSettings::default());
    }
    let (pins_dev, pins_ino) = match &config.protected_pins {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| LsmError::Pin(dir.clone(), e.to_string()))?;
            let key = Identity::of_path(dir)
                .map_err(|e| LsmError::Pin(dir.clone(), e.to_string()))?
                .kernel_key();
            (key.dev, key.ino)
        }
        None => (0, 0),
    };
    Ok(SelfProtectSettings {
        task_tgid: btf.member_offset("task_struct", "tgid", 4)?,
        map_id: btf.member_offset("bpf_map", "id", 4)?,
        map_name: btf.member_offset("bpf_map", "name", 16)?,
        prog_aux: btf.member_offset("bpf_prog", "aux", 8)?,
        aux_id: btf.member_offset("bpf_prog_aux", "id", 4)?,
        dentry_parent: btf.member_offset("dentry", "d_parent", 8)?,
        vfsmount_sb: btf.member_offset("vfsmount", "mnt_sb", 8)?,
        pins_dev,
        pins_ino,
    })
}

/// Records the ids of the layer's programs for `bpf_prog`.
fn own_programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), LsmError> {
    let mut ids = Vec::new();
    for name in names {
        let program = ebpf.program(name).ok_or(LsmError::Missing(name))?;
        let info = program.info().map_err(|e| LsmError::Program(name, e))?;
        ids.push(info.id());
    }
    let mut map: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut(OWN_PROGS_MAP)
            .ok_or(LsmError::Missing(OWN_PROGS_MAP))?,
    )?;
    for id in ids {
        map.insert(id, 0, 0)?;
    }
    Ok(())
}

/// The controllers map of the layer pinned in `dir` (`None`: no layer with self-protection
/// is pinned there). [`LsmError::NotController`] when its self-protection refuses this
/// executable.
fn pinned_controllers(
    dir: &Path,
) -> Result<Option<HashMap<MapData, InterpreterKey, u32>>, LsmError> {
    let path = dir.join(format!("map_{CONTROLLERS_MAP}"));
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    match MapData::from_pin(&path) {
        Ok(data) => Ok(Some(HashMap::try_from(aya::maps::Map::HashMap(data))?)),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
            let exe = std::fs::read_link("/proc/self/exe")
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "this guard".into());
            Err(LsmError::NotController(dir.to_owned(), exe))
        }
        Err(e) => Err(LsmError::Pin(path, e.to_string())),
    }
}

/// The pin files (`link_*`, `map_*`) in `dir`; none when it does not exist.
fn pins(dir: &Path) -> Result<Vec<PathBuf>, LsmError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LsmError::Pin(dir.to_owned(), e.to_string())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LsmError::Pin(dir.to_owned(), e.to_string()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("link_") || name.starts_with("map_") {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Replaces the pins in `dir` with this layer's links and maps.
fn pin(
    ebpf: &Ebpf,
    dir: &Path,
    hooks: &[&'static str],
    links: Vec<FdLink>,
) -> Result<Vec<FdLink>, LsmError> {
    let err = |e: &dyn std::fmt::Display| LsmError::Pin(dir.to_owned(), e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    // A previous loader's pins, including hooks this configuration no longer enables.
    for old in pins(dir)? {
        std::fs::remove_file(&old).map_err(|e| err(&e))?;
    }
    let mut pinned = Vec::new();
    for (hook, link) in hooks.iter().zip(links) {
        let link = link
            .pin(dir.join(format!("link_{hook}")))
            .map_err(|e: PinError| err(&e))?;
        pinned.push(FdLink::from(link));
    }
    for name in PINNED_MAPS {
        ebpf.map(name)
            .ok_or(LsmError::Missing(name))?
            .pin(dir.join(format!("map_{name}")))
            .map_err(|e| err(&e))?;
    }
    Ok(pinned)
}

fn fill(ebpf: &mut Ebpf, name: &'static str, identities: &[Identity]) -> Result<(), LsmError> {
    let mut map: HashMap<_, InterpreterKey, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(LsmError::Missing(name))?)?;
    for identity in identities {
        map.insert(identity.kernel_key(), 0, 0)?;
    }
    Ok(())
}

impl AsFd for LsmLayer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl AsRawFd for LsmLayer {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_lsm_detection() {
        assert!(bpf_lsm_listed(
            "lockdown,capability,landlock,yama,apparmor,bpf\n"
        ));
        assert!(!bpf_lsm_listed(
            "lockdown,capability,landlock,yama,apparmor\n"
        ));
        assert!(!bpf_lsm_listed("bpfx,capability"));
    }

    #[test]
    fn offsets_from_the_running_kernel() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("no kernel BTF here; skipped");
            return;
        };
        let offsets = kernel_offsets(&btf).unwrap();
        assert_ne!(offsets.task_mm, 0);
        assert_ne!(offsets.inode_nlink, offsets.inode_mode);
        // struct qstr is { u32 hash; u32 len; } (one u64), then the name pointer.
        assert_eq!(offsets.dentry_name, offsets.dentry_name_len + 4);
        assert_eq!(offsets.file_path_dentry, offsets.file_path_mnt + 8);
        assert_ne!(offsets.mount_vfsmount, 0);
        assert_ne!(offsets.mount_mountpoint, 0);
    }

    #[test]
    fn every_trusted_owner_reaches_the_kernel() {
        let mut config = LsmConfig::new(vec![]);
        assert_eq!(config.settings(LsmOffsets::default()).trust.owner_count, 1);
        config.trusted_uids = vec![0, 2, 1000];
        let settings = config.settings(LsmOffsets::default());
        assert_eq!(settings.trust.owner_count, 3);
        assert_eq!(settings.trust.owners[..4], [0, 2, 1000, 0]);
    }

    #[test]
    fn code_names_follow_file_open() {
        let mut config = LsmConfig::new(vec![]);
        config.code_patterns = vec!["*.py".into(), "*.so.[0-9]*".into()];
        let offsets = LsmOffsets::default();
        let settings = config.settings(offsets);
        assert_eq!(settings.code_suffix_count, 1);
        assert!(config.programs(&offsets).contains(&"code_link_follow"));
        assert!(config.tracepoints().contains(&MAIN_SCRIPT_TRACEPOINT));
        config.file_open = false;
        assert!(!config.programs(&offsets).contains(&"code_link_stat"));
        assert!(!config.tracepoints().contains(&MAIN_SCRIPT_TRACEPOINT));
    }

    #[test]
    fn native_code_settings() {
        use guard_common::lsm::{NATIVE_ANY, NATIVE_LINKED, NATIVE_OWNER};
        let mut config = LsmConfig::new(vec![]);
        config.exec_mappings = false;
        let offsets = LsmOffsets {
            bprm_is_check_mask: 1,
            ..LsmOffsets::default()
        };
        assert!(!config.programs(&offsets).contains(&"bprm_check_security"));
        assert!(!config.programs(&offsets).contains(&"mmap_file"));
        assert_eq!(config.settings(offsets).flags & NATIVE_ANY, 0);

        config.native_code = NativeCode::Linked;
        let programs = config.programs(&offsets);
        for hook in ["bprm_check_security", "mmap_file", "file_mprotect"] {
            assert!(programs.contains(&hook), "{hook}");
        }
        assert_eq!(config.settings(offsets).flags & NATIVE_ANY, NATIVE_LINKED);

        config.native_code = NativeCode::TrustedOwner;
        assert_eq!(
            config.settings(offsets).flags & NATIVE_ANY,
            NATIVE_LINKED | NATIVE_OWNER
        );

        config.native_code = NativeCode::Trusted;
        // ext2, ext3 and ext4 share one magic: counted once.
        config.trusted_filesystems = vec![0xEF53, 0xEF53, 0x0102_1994];
        let settings = config.settings(offsets);
        assert_eq!(settings.flags & NATIVE_ANY, NATIVE_ANY);
        assert_eq!(settings.trust.filesystem_count, 2);
        assert_eq!(settings.trust.filesystems[..3], [0xEF53, 0x0102_1994, 0]);
    }

    #[test]
    fn start_degrades_without_bpf_lsm() {
        // Only where the kernel lacks BPF LSM: elsewhere loading is for the VM tests.
        if unsupported_reason().is_none() {
            return;
        }
        let (layer, status) = LsmLayer::start(&LsmConfig::new(vec![]));
        assert!(layer.is_none());
        assert!(matches!(status, LsmStatus::Unsupported(_)), "{status}");
    }
}
