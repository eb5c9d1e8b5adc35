//! The BPF LSM layer's wire format: settings the loader hands to the kernel programs, and
//! the refusals they report.
//!
//! The kernel side implements only the structural subset of the policy, the part it can
//! decide from the inode alone (see `guard::lsm`): everything else is left to fanotify.

/// Report refusals but allow the access.
pub const PERMISSIVE: u32 = 1 << 0;
/// `file_open`: refuse interpreters' read-only opens of non-regular and unlinked files.
pub const ENFORCE_FILE_OPEN: u32 = 1 << 1;
/// `bprm_creds_for_exec`: refuse execs and `AT_EXECVE_CHECK`s of untrusted files.
pub const ENFORCE_EXEC_CHECK: u32 = 1 << 2;
/// `inode_setxattr`/`inode_removexattr`: only named signers may change `security.ima`.
pub const PROTECT_SIGNATURES: u32 = 1 << 3;
/// `mmap_file`/`file_mprotect`: refuse interpreters' executable mappings of non-regular and
/// unlinked files.
pub const ENFORCE_EXEC_MAP: u32 = 1 << 4;

/// `file_open`: keep per-inode verdicts (set by the agent after a signature check, dropped
/// on any change) and, while the agent is down, refuse interpreters' reads of regular files
/// that have none (fail closed).
pub const VERDICT_CACHE: u32 = 1 << 5;

/// `iattr.ia_valid`'s bit for a size change (truncate).
pub const ATTR_SIZE: u32 = 1 << 3;

/// Which hook reported an event.
pub const HOOK_FILE_OPEN: u32 = 1;
pub const HOOK_BPRM_CREDS_FOR_EXEC: u32 = 2;
pub const HOOK_INODE_SETXATTR: u32 = 3;
pub const HOOK_INODE_REMOVEXATTR: u32 = 4;
pub const HOOK_MMAP_FILE: u32 = 5;
pub const HOOK_FILE_MPROTECT: u32 = 6;
pub const HOOK_INODE_SETATTR: u32 = 7;

/// Byte offsets of the kernel struct members the programs read, from the running kernel's
/// BTF at load time (Rust BPF has no CO-RE). A bitfield is a byte offset and a mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub inode_mode: u32,
    pub inode_nlink: u32,
    pub inode_uid: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub bprm_file: u32,
    /// Byte holding `linux_binprm.is_check` (6.14+); 0 with a 0 mask where it is absent.
    pub bprm_is_check: u32,
    pub bprm_is_check_mask: u32,
    pub dentry_inode: u32,
    pub vma_file: u32,
    /// `inode.i_writecount` (an `atomic_t`): > 0 while someone has the file open for writing.
    pub inode_writecount: u32,
    pub sb_user_ns: u32,
    /// `user_namespace.level`: 0 for the initial namespace only.
    pub user_ns_level: u32,
    /// `iattr.ia_valid`.
    pub iattr_valid: u32,
}

/// The read-only global the loader sets (`LSM_SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmSettings {
    pub offsets: LsmOffsets,
    /// `PERMISSIVE` and `ENFORCE_*` bits.
    pub flags: u32,
    /// The trusted owner of executables (`bprm_creds_for_exec`), a kernel uid.
    pub trusted_uid: u32,
}

/// One refusal, reported through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmEvent {
    /// A `HOOK_*` value.
    pub hook: u32,
    /// A [`crate::Rule`] discriminant.
    pub rule: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    pub uid: u32,
    /// 1 when the access was refused, 0 when only reported (permissive).
    pub refused: u32,
    /// The object's identity (the file opened or exec'd, the inode whose xattr changed).
    pub ino: u64,
    /// `sb->s_dev` in the kernel's encoding.
    pub dev: u32,
    /// The object's `i_mode`.
    pub mode: u32,
    pub nlink: u32,
    pub pad: u32,
}

/// What the kernel keeps per inode (inode storage `LSM_INODE_STATE`), written by the kernel
/// only: `changes` counts every change that could alter what the file is (a write open or
/// its release, setattr, rename, link, unlink, xattr change), so a verdict taken at one
/// count is void at the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeState {
    pub changes: u64,
    /// 1 when the file was open for writing at an interpreter's latest open of it.
    pub writers_at_open: u32,
    /// Interpreters' read-only opens of it not yet released. While one is open and a
    /// verdict is valid, the file is code being read: write opens and truncation are refused
    /// (as the kernel refuses writes to a running executable).
    pub code_readers: u32,
}

/// The agent's verdict on an inode (inode storage `LSM_VERDICTS`), written by the agent
/// only, after it verified the file for any runner: valid while the inode's
/// [`InodeState::changes`] still equals `changes` (read by the agent before it looked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeVerdict {
    pub changes: u64,
}

/// The agent's liveness (array `LSM_AGENT`, one entry). The agent sets it once it answers
/// permission events; the kernel clears it when the agent's main thread exits, before the
/// agent's descriptors (its fanotify group) are closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentState {
    pub tgid: u32,
    pub alive: u32,
}

/// File type bits of `i_mode`, as in `<linux/stat.h>`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// `FMODE_READ`/`FMODE_WRITE` of `file->f_mode`.
pub const FMODE_READ: u32 = 1;
pub const FMODE_WRITE: u32 = 2;

/// The `file_open` rule for an interpreter task, shared with the kernel program so user
/// space tests pin down what the kernel decides.
///
/// CPython reads code through read-only opens, so only those are judged (a writable open
/// is never a code load: `tempfile.TemporaryFile`'s `O_TMPFILE` stays allowed). Among them:
/// directories, character devices (`/dev/null`, `/dev/urandom`, ttys) and symlinks pass;
/// FIFOs, sockets, block devices and inodes of no type (anonymous inodes, reached through
/// `/proc/*/fd`) break [`crate::Rule::RegularFile`]; a regular file without a link
/// (deleted, `O_TMPFILE`, memfd — shmem files are created unlinked) breaks
/// [`crate::Rule::NotDeleted`].
#[inline(always)]
pub fn judge_open(f_mode: u32, i_mode: u32, nlink: u32) -> Option<crate::Rule> {
    if f_mode & (FMODE_READ | FMODE_WRITE) != FMODE_READ {
        return None;
    }
    match i_mode & S_IFMT {
        S_IFREG => {
            if nlink == 0 {
                Some(crate::Rule::NotDeleted)
            } else {
                None
            }
        }
        S_IFDIR | S_IFCHR | S_IFLNK => None,
        _ => Some(crate::Rule::RegularFile),
    }
}

/// The `mmap_file`/`file_mprotect` rule for an executable mapping by an interpreter task:
/// code must come from a linked regular file. Character devices pass (`/dev/zero` mappings
/// are anonymous memory in disguise); memfds and deleted files break
/// [`crate::Rule::NotDeleted`], other types [`crate::Rule::RegularFile`].
#[inline(always)]
pub fn judge_exec_map(i_mode: u32, nlink: u32) -> Option<crate::Rule> {
    match i_mode & S_IFMT {
        S_IFREG if nlink == 0 => Some(crate::Rule::NotDeleted),
        S_IFREG | S_IFCHR => None,
        _ => Some(crate::Rule::RegularFile),
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are `repr(C)`, made only of `u32`/`u64` fields laid out without
    // implicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::LsmSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AgentState {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rule;

    #[test]
    fn open_rule() {
        let ro = FMODE_READ;
        assert_eq!(judge_open(ro, S_IFREG | 0o644, 1), None);
        assert_eq!(judge_open(ro, S_IFREG | 0o644, 0), Some(Rule::NotDeleted));
        assert_eq!(judge_open(ro | FMODE_WRITE, S_IFREG, 0), None);
        assert_eq!(judge_open(FMODE_WRITE, S_IFIFO, 1), None);
        assert_eq!(judge_open(ro, S_IFIFO | 0o600, 1), Some(Rule::RegularFile));
        assert_eq!(judge_open(ro, S_IFSOCK, 1), Some(Rule::RegularFile));
        assert_eq!(judge_open(ro, S_IFBLK, 1), Some(Rule::RegularFile));
        assert_eq!(judge_open(ro, 0o600, 1), Some(Rule::RegularFile));
        assert_eq!(judge_open(ro, S_IFCHR | 0o666, 1), None);
        assert_eq!(judge_open(ro, S_IFDIR | 0o755, 2), None);
    }

    #[test]
    fn exec_map_rule() {
        assert_eq!(judge_exec_map(S_IFREG | 0o755, 1), None);
        assert_eq!(judge_exec_map(S_IFREG | 0o777, 0), Some(Rule::NotDeleted));
        assert_eq!(judge_exec_map(S_IFCHR | 0o666, 1), None);
        assert_eq!(judge_exec_map(S_IFIFO, 1), Some(Rule::RegularFile));
        assert_eq!(judge_exec_map(0o600, 1), Some(Rule::RegularFile));
    }

    #[test]
    fn wire_sizes() {
        assert_eq!(size_of::<LsmEvent>(), 48);
        assert_eq!(size_of::<LsmSettings>(), 4 * 21);
        assert_eq!(size_of::<InodeState>(), 16);
        assert_eq!(size_of::<AgentState>(), 8);
    }
}
