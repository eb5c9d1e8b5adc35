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
    LsmOffsets, LsmSettings, PERMISSIVE, PROTECT_AGENT, PROTECT_SIGNATURES, SelfProtectSettings,
    Trust, VERDICT_CACHE,
};

use crate::btf::{Btf, BtfError};
use crate::ebpf_object::EBPF_OBJECT;
use crate::ebpf_object::Identity;
pub use crate::policy::NativeCode;

mod config;
mod events;
mod layer;
mod verdicts;

pub use config::*;
pub use events::*;
pub use layer::*;
pub use verdicts::*;

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

/// Where the agent pins the layer.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/guard/lsm";
/// Where everything guard pins lives.
pub const GUARD_PIN_ROOT: &str = "/sys/fs/bpf/guard";

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
        let offsets = crate::ebpf_object::kernel_offsets(&btf).unwrap();
        assert_ne!(offsets.task_mm, 0);
        assert_ne!(offsets.inode_nlink, offsets.inode_mode);
        // struct qstr is { u32 hash; u32 len; } (one u64), then the name pointer.
        assert_eq!(offsets.dentry_name, offsets.dentry_name_len + 4);
        assert_eq!(offsets.file_path_dentry, offsets.file_path_mnt + 8);
        assert_ne!(offsets.mount_vfsmount, 0);
        assert_ne!(offsets.mount_mountpoint, 0);
        assert_ne!(offsets.inode_link, 0);
    }

    #[test]
    fn every_trusted_owner_reaches_the_kernel() {
        let mut config = LsmConfig::new(vec![]);
        assert_eq!(config.settings(LsmOffsets::default()).trust.owner_count, 1);
        config.trust = Trust::new(&[0, 2, 1000], &[]);
        let settings = config.settings(LsmOffsets::default());
        assert_eq!(settings.trust.owner_count, 3);
        assert_eq!(settings.trust.owners[..4], [0, 2, 1000, 0]);
    }

    #[test]
    fn every_program_loaded_is_known_as_ours() {
        let mut config = LsmConfig::new(vec![]);
        config.exec_check = true;
        config.native_code = NativeCode::Trusted;
        config.protect_signatures = true;
        config.verdict_cache = true;
        config.protect_agent = true;
        config.protected_pins = Some(PathBuf::from("/sys/fs/bpf/guard"));
        let offsets = LsmOffsets {
            bprm_is_check_mask: 1,
            ..LsmOffsets::default()
        };
        for program in config
            .programs(&offsets)
            .into_iter()
            .chain(config.tracepoints())
        {
            // The kernel keeps 15 bytes of a program's name.
            assert!(
                config::is_ours(&program[..program.len().min(15)]),
                "{program}"
            );
        }
        assert!(config::is_ours("sched_process_e"));
        assert!(!config::is_ours("some_other_prog"));
    }

    #[test]
    fn code_names_follow_file_open() {
        let mut config = LsmConfig::new(vec![]);
        config.code_patterns = vec!["*.py".into(), "*.so.[0-9]*".into()];
        let offsets = LsmOffsets::default();
        let settings = config.settings(offsets);
        assert_eq!(settings.code_suffix_count, 1);
        assert!(config.programs(&offsets).contains(&"code_link_follow"));
        assert!(config.programs(&offsets).contains(&"code_readlink"));
        assert!(config.tracepoints().contains(&MAIN_SCRIPT_TRACEPOINT));
        config.file_open = false;
        assert!(!config.programs(&offsets).contains(&"code_link_stat"));
        assert!(!config.programs(&offsets).contains(&"code_readlink"));
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
        config.trust = Trust::new(&[0], &[0xEF53, 0xEF53, 0x0102_1994]);
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
