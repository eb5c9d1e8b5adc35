//! The BPF LSM layer's wire format: settings the loader hands to the kernel programs, and
//! the refusals they report.
//!
//! The kernel side implements only the structural subset of the policy, the part it can
//! decide from the inode alone (see `guard::lsm`): everything else is left to fanotify.

pub use crate::PERMISSIVE;
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
/// `bprm_check_security`, `mmap_file`, `file_mprotect` for every task: native code (each
/// binfmt step of an exec, executable mappings) must come from a linked regular file.
pub const NATIVE_LINKED: u32 = 1 << 6;
/// With [`NATIVE_LINKED`]: and from one no untrusted user owns or can write (W^X for native
/// code): owned by a trusted owner, not writable by group or others, on a filesystem whose
/// owners are the kernel's facts (the initial user namespace's, not FUSE).
pub const NATIVE_OWNER: u32 = 1 << 9;
/// With [`NATIVE_OWNER`]: and on a trusted filesystem type.
pub const NATIVE_TRUSTED: u32 = 1 << 7;
/// Any of the native-code levels.
pub const NATIVE_ANY: u32 = NATIVE_LINKED | NATIVE_OWNER | NATIVE_TRUSTED;

/// `FUSE_SUPER_MAGIC`: a FUSE daemon (any user's, through `fusermount`) states owners and
/// modes as it likes, even in the initial user namespace.
pub const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// `iattr.ia_valid`'s bit for a size change (truncate).
pub const ATTR_SIZE: u32 = 1 << 3;

/// Self-protection: only controllers (see `SelfProtectSettings`) may signal or ptrace the
/// protected process (the loader), get descriptors for the layer's maps and programs,
/// unlink or rename its pins, or unmount the BPF filesystem holding them.
pub const PROTECT_AGENT: u32 = 1 << 8;

/// How many filesystem magics [`Trust::filesystems`] holds.
pub const MAX_TRUSTED_FILESYSTEMS: usize = 16;
/// How many owners [`Trust::owners`] holds.
pub const MAX_TRUSTED_OWNERS: usize = 8;
/// Which hook reported an event, on the wire as its `u32`. The self-protection hooks
/// ([`PROTECT_AGENT`]) report a target, not a file (see [`SelfProtectSettings`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    FileOpen = 1,
    BprmCredsForExec = 2,
    InodeSetxattr = 3,
    InodeRemovexattr = 4,
    MmapFile = 5,
    FileMprotect = 6,
    InodeSetattr = 7,
    BprmCheckSecurity = 8,
    TaskKill = 9,
    PtraceAccessCheck = 10,
    FileSendSigiotask = 11,
    BpfMap = 12,
    BpfProg = 13,
    PinUnlink = 14,
    PinRename = 15,
    SbUmount = 16,
    InodeReadlink = 17,
}

impl Hook {
    pub const ALL: [Hook; 17] = [
        Hook::FileOpen,
        Hook::BprmCredsForExec,
        Hook::InodeSetxattr,
        Hook::InodeRemovexattr,
        Hook::MmapFile,
        Hook::FileMprotect,
        Hook::InodeSetattr,
        Hook::BprmCheckSecurity,
        Hook::TaskKill,
        Hook::PtraceAccessCheck,
        Hook::FileSendSigiotask,
        Hook::BpfMap,
        Hook::BpfProg,
        Hook::PinUnlink,
        Hook::PinRename,
        Hook::SbUmount,
        Hook::InodeReadlink,
    ];

    pub const fn from_u32(value: u32) -> Option<Hook> {
        let mut i = 0;
        while i < Hook::ALL.len() {
            if Hook::ALL[i] as u32 == value {
                return Some(Hook::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The LSM hook, as the kernel names it (the pins' programs share theirs).
    pub const fn name(self) -> &'static str {
        match self {
            Hook::FileOpen => "file_open",
            Hook::BprmCredsForExec => "bprm_creds_for_exec",
            Hook::InodeSetxattr => "inode_setxattr",
            Hook::InodeRemovexattr => "inode_removexattr",
            Hook::MmapFile => "mmap_file",
            Hook::FileMprotect => "file_mprotect",
            Hook::InodeSetattr => "inode_setattr",
            Hook::BprmCheckSecurity => "bprm_check_security",
            Hook::TaskKill => "task_kill",
            Hook::PtraceAccessCheck => "ptrace_access_check",
            Hook::FileSendSigiotask => "file_send_sigiotask",
            Hook::BpfMap => "bpf_map",
            Hook::BpfProg => "bpf_prog",
            Hook::PinUnlink => "inode_unlink",
            Hook::PinRename => "inode_rename",
            Hook::SbUmount => "sb_umount",
            Hook::InodeReadlink => "inode_readlink",
        }
    }
}

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
    /// `super_block.s_magic` (an `unsigned long`; every magic guard knows fits 32 bits).
    pub sb_magic: u32,
    /// `linux_binprm.p`: after the exec, the new user stack pointer (argc, argv[], envp[]).
    pub bprm_p: u32,
    pub bprm_argc: u32,
    /// `mm_struct.arg_end`: the end of the argv strings.
    pub mm_arg_end: u32,
    /// `file.f_path.mnt` and `file.f_path.dentry`.
    pub file_path_mnt: u32,
    pub file_path_dentry: u32,
    /// `dentry.d_name.len` and `dentry.d_name.name`.
    pub dentry_name_len: u32,
    pub dentry_name: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `struct mount`'s `mnt` (its `vfsmount`), `mnt_mountpoint` and `mnt_parent`.
    pub mount_vfsmount: u32,
    pub mount_mountpoint: u32,
    pub mount_parent: u32,
    /// `linux_binprm.envc` (the exec gate's environment walk).
    pub bprm_envc: u32,
    /// `vm_area_struct.vm_flags` (an `unsigned long`; `VM_EXEC` is bit 2) and `vm_end`.
    pub vma_flags: u32,
    pub vma_end: u32,
    /// `mm_struct.saved_auxv`: the auxiliary vector (`AT_BASE`: where the ELF interpreter
    /// was mapped).
    pub mm_saved_auxv: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.fd` and `fdtable.max_fds`: a
    /// descriptor's file.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    /// `task_struct.personality`: with `READ_IMPLIES_EXEC` the kernel maps readable memory
    /// executable whatever `prot` says.
    pub task_personality: u32,
    /// `inode.i_link`: a symbolic link's target when the filesystem keeps it in memory
    /// (tmpfs, ext4's fast links); null otherwise. In a union: read only for a symlink.
    pub inode_link: u32,
    /// Keeps the struct whole words (`aya::Pod`: no implicit padding in the settings).
    pub pad: u32,
}

impl LsmOffsets {
    /// All zeroes: what the kernel objects are compiled with, before the loader sets them.
    pub const ZERO: LsmOffsets = LsmOffsets {
        task_mm: 0,
        mm_exe_file: 0,
        file_inode: 0,
        file_mode: 0,
        inode_mode: 0,
        inode_nlink: 0,
        inode_uid: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        bprm_file: 0,
        bprm_is_check: 0,
        bprm_is_check_mask: 0,
        dentry_inode: 0,
        vma_file: 0,
        inode_writecount: 0,
        sb_user_ns: 0,
        user_ns_level: 0,
        iattr_valid: 0,
        sb_magic: 0,
        bprm_p: 0,
        bprm_argc: 0,
        mm_arg_end: 0,
        file_path_mnt: 0,
        file_path_dentry: 0,
        dentry_name_len: 0,
        dentry_name: 0,
        vfsmount_root: 0,
        mount_vfsmount: 0,
        mount_mountpoint: 0,
        mount_parent: 0,
        bprm_envc: 0,
        vma_flags: 0,
        vma_end: 0,
        mm_saved_auxv: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_fd: 0,
        fdt_max_fds: 0,
        task_personality: 0,
        inode_link: 0,
        pad: 0,
    };
}

/// The read-only global the loader sets (`LSM_SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsmSettings {
    pub offsets: LsmOffsets,
    /// `PERMISSIVE` and `ENFORCE_*` bits.
    pub flags: u32,
    /// The trusted owners and filesystem types (`bprm_creds_for_exec`, the native rules,
    /// [`crate::code_name`]).
    pub trust: Trust,
    /// [`crate::code_name`]: the policy's code suffixes, the first `code_suffix_count`.
    pub code_suffixes: [crate::code_name::CodeSuffix; crate::code_name::MAX_CODE_SUFFIXES],
    pub code_suffix_count: u32,
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
    /// Changes of the content alone (write opens and truncation), which an interpreter's open
    /// compares between `file_open` and `file_post_open`: a writer that came while the agent
    /// was checking could write after the check, so that open is refused. Renames and links
    /// (a package upgrade replacing the file) leave the bytes being read as they were.
    pub content_changes: u64,
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

/// The self-protection hooks' read-only global (`SELF_PROTECT_SETTINGS`): offsets from the
/// running kernel's BTF and the identity of the pin tree to protect.
///
/// Their [`LsmEvent`]s carry the target instead of a file: `ino` is the signalled or traced
/// process (`task_kill`, `file_send_sigiotask`, `ptrace_access_check`), the map or program
/// id (`bpf_map`, `bpf_prog`) or the pin's inode; `mode` the signal, the ptrace mode, the
/// descriptor's `fmode` or the pin's `i_mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfProtectSettings {
    pub task_tgid: u32,
    pub map_id: u32,
    /// `bpf_map.name` (16 bytes, NUL-padded).
    pub map_name: u32,
    pub prog_aux: u32,
    pub aux_id: u32,
    pub dentry_parent: u32,
    pub vfsmount_sb: u32,
    /// `s_dev` of the BPF filesystem holding the pins (kernel encoding); 0: no pins.
    pub pins_dev: u32,
    /// The directory whose entries and their entries are protected (guard's pin root).
    pub pins_ino: u64,
}

/// Maps whose name starts with this are the layer's (`LSM_…`): protected by name, so the
/// maps of a reloading agent are covered by the previous layer from their creation.
pub const OWN_MAP_PREFIX: [u8; 4] = *b"LSM_";

/// `PTRACE_MODE_ATTACH`: ptrace itself, `/proc/PID/mem`, `process_vm_*`, `pidfd_getfd`.
/// Read-mode checks (`/proc/PID/{fd,maps,environ,exe}` listings) only disclose.
pub const PTRACE_MODE_ATTACH: u32 = 0x02;

/// Signals anyone may still send the protected agent: 0 (does it exist?), `SIGHUP`
/// (reload the policy: an operator's `kill -HUP`, not PID 1; `systemctl reload` runs `guard
/// reload`, a controller anyway; what a reload reads is the policy file's business, see
/// `--require-signed-policy`), `SIGCONT` (undoes
/// only a stop, which is refused), and `SIGCHLD`, `SIGURG`, `SIGWINCH` (ignored by default).
/// Everything else would end, stop or disturb the agent.
#[inline(always)]
pub const fn harmless_signal(sig: u32) -> bool {
    matches!(sig, 0 | 1 | 17 | 18 | 23 | 28)
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

/// Where a linked regular file an interpreter reads lives, for `file_open`'s
/// `trusted-filesystem` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFilesystem {
    /// A superblock owned by a user namespace is its creator's: any uid and any xattr there,
    /// `security.ima` included, is theirs to forge, and fanotify cannot mark it. Refused.
    Foreign,
    /// A type the policy does not trust (procfs serves bytes a user chooses, and fanotify
    /// cannot mark it either): refused when the file is named as code.
    Untrusted,
    /// Left to fanotify (content, signatures).
    Trusted,
}

/// The `trusted-filesystem` standing of a read of a linked regular file on a superblock of
/// user namespace level `fs_user_ns_level` and type `fs_magic`.
#[inline(always)]
pub fn judge_read_filesystem(
    fs_user_ns_level: u32,
    fs_magic: u32,
    trust: &Trust,
) -> ReadFilesystem {
    if fs_user_ns_level != 0 {
        ReadFilesystem::Foreign
    } else if !trust.filesystem(fs_magic) {
        ReadFilesystem::Untrusted
    } else {
        ReadFilesystem::Trusted
    }
}

/// The rule for a character device an interpreter reads under a name that is code (`named`:
/// its script operand's last component, a code suffix, by its own, a followed link's or a
/// mount point's name): a device is never code. A terminal read as the main script is an
/// interactive console in all but name (`python3 /dev/tty`, `cd /dev; python3 tty`, a
/// symlink to it, `/proc/self/fd/0` reached as `0` run what is typed); other devices serve
/// bytes the opener does not choose. Breaks [`crate::Rule::RegularFile`]. Devices read
/// under other names (`/dev/null`, `/dev/urandom`, getpass's `/dev/tty`) are data.
#[inline(always)]
pub fn judge_device_read(i_mode: u32, named: bool) -> Option<crate::Rule> {
    if i_mode & S_IFMT == S_IFCHR && named {
        Some(crate::Rule::RegularFile)
    } else {
        None
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

/// Permission bits that let someone other than the owner write: `S_IWGRP | S_IWOTH`.
pub const GROUP_OTHERS_WRITE: u32 = 0o022;

/// What the native-code rule looks at in a file about to run as code: exec'd (each binfmt
/// step: the program, a `#!` script's interpreter) or mapped executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeFile {
    /// `i_mode`: type and permission bits.
    pub mode: u32,
    pub nlink: u32,
    /// `i_uid`, a kernel uid.
    pub uid: u32,
    /// `s_magic` of the file's superblock, truncated to 32 bits.
    pub fs_magic: u32,
    /// `s_user_ns->level` of the file's superblock: 0 for the initial user namespace.
    pub fs_user_ns_level: u32,
}

/// The policy's trusted owners and filesystem types as the kernel programs hold them: fixed
/// arrays, each with a count of the entries in use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Kernel uids, the first `owner_count` of them.
    pub owners: [u32; MAX_TRUSTED_OWNERS],
    pub owner_count: u32,
    /// Superblock magics (32 bits: every magic guard knows fits), each once, the first
    /// `filesystem_count` of them.
    pub filesystems: [u32; MAX_TRUSTED_FILESYSTEMS],
    pub filesystem_count: u32,
}

impl Trust {
    /// Nobody and nothing: what the kernel objects are compiled with.
    pub const EMPTY: Trust = Trust {
        owners: [0; MAX_TRUSTED_OWNERS],
        owner_count: 0,
        filesystems: [0; MAX_TRUSTED_FILESYSTEMS],
        filesystem_count: 0,
    };

    /// The table for these owners and magics: duplicates once, and no more than the arrays
    /// hold (loaders refuse a policy with more, see `guard::policy`).
    pub fn new(owners: &[u32], magics: &[u64]) -> Trust {
        let mut trust = Trust::default();
        for &uid in owners {
            if (trust.owner_count as usize) < MAX_TRUSTED_OWNERS && !trust.owner(uid) {
                trust.owners[trust.owner_count as usize] = uid;
                trust.owner_count += 1;
            }
        }
        for &magic in magics {
            // Every magic guard knows fits in 32 bits (the kernel's `s_magic` is an
            // unsigned long holding 32-bit values).
            #[allow(clippy::cast_possible_truncation)]
            let magic = magic as u32;
            if (trust.filesystem_count as usize) < MAX_TRUSTED_FILESYSTEMS
                && !trust.filesystem(magic)
            {
                trust.filesystems[trust.filesystem_count as usize] = magic;
                trust.filesystem_count += 1;
            }
        }
        trust
    }

    #[inline(always)]
    pub fn owner(&self, uid: u32) -> bool {
        listed(uid, &self.owners, self.owner_count)
    }

    #[inline(always)]
    pub fn filesystem(&self, magic: u32) -> bool {
        listed(magic, &self.filesystems, self.filesystem_count)
    }
}

/// Whether `value` is among the first `count` of `values` (a bounded loop the verifier
/// accepts): a filesystem magic, an owner.
#[inline(always)]
pub fn listed<const N: usize>(value: u32, values: &[u32; N], count: u32) -> bool {
    let mut i = 0;
    while i < N {
        if i < count as usize && values[i] == value {
            return true;
        }
        i += 1;
    }
    false
}

/// The policy's executable rules (`[native] code`) for a file about to run as native code,
/// by any task. `flags` holds the `NATIVE_*` level (none: nothing to judge); each level
/// checks all the looser ones do, in the engine's order:
///
/// * [`NATIVE_LINKED`]: `regular-file` (an exec is always of a regular file, the kernel
///   insists; a mapping may be of a character device, `/dev/zero` being anonymous memory in
///   disguise, not of anything else) and `not-deleted` (memfds, `O_TMPFILE` and deleted
///   files have no link, so no owner or place anyone vouched for: `fexecve` of a memfd, a
///   SysV segment attached `SHM_EXEC`);
/// * [`NATIVE_OWNER`], for regular files: `trusted-owner` (one of `trust`'s owners) and
///   `not-writable-by-runner` (no write bit for group or others: nobody but that owner can
///   change it, whoever runs it; a POSIX ACL's named entries are bounded by its mask, which
///   is the group bits), then `trusted-filesystem` when those owners are claims rather than
///   facts: a superblock of another user namespace, or FUSE;
/// * [`NATIVE_TRUSTED`]: and `trusted-filesystem` unless the type is one of `trust`'s
///   (overlays, network and removable filesystems).
#[inline(always)]
pub fn judge_native(flags: u32, file: &CodeFile, trust: &Trust) -> Option<crate::Rule> {
    if flags & NATIVE_ANY == 0 {
        return None;
    }
    match file.mode & S_IFMT {
        S_IFREG => {}
        S_IFCHR => return None,
        _ => return Some(crate::Rule::RegularFile),
    }
    if file.nlink == 0 {
        return Some(crate::Rule::NotDeleted);
    }
    if flags & (NATIVE_OWNER | NATIVE_TRUSTED) == 0 {
        return None;
    }
    if !trust.owner(file.uid) {
        return Some(crate::Rule::TrustedOwner);
    }
    if file.mode & GROUP_OTHERS_WRITE != 0 {
        return Some(crate::Rule::NotWritableByRunner);
    }
    if file.fs_user_ns_level != 0 || file.fs_magic == FUSE_SUPER_MAGIC {
        return Some(crate::Rule::TrustedFilesystem);
    }
    if flags & NATIVE_TRUSTED != 0 && !trust.filesystem(file.fs_magic) {
        return Some(crate::Rule::TrustedFilesystem);
    }
    None
}

// aya reads these from maps and ring buffers as plain bytes.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    // SAFETY: all of them are `repr(C)`, made only of `u32`/`u64` fields laid out without
    // implicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::LsmSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LsmOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Trust {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AgentState {}
    // SAFETY: as above (the u64 is 8-aligned after eight u32s).
    unsafe impl aya::Pod for super::SelfProtectSettings {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rule;

    #[test]
    fn hooks_are_one_value_each() {
        for (i, hook) in Hook::ALL.iter().enumerate() {
            assert_eq!(Hook::from_u32(*hook as u32), Some(*hook));
            assert_eq!(
                *hook as usize,
                i + 1,
                "{hook:?}: values are 1..=17, in order"
            );
        }
        assert_eq!(Hook::from_u32(0), None);
        assert_eq!(Hook::from_u32(Hook::InodeReadlink as u32 + 1), None);
        // The exec gate's and the LSM layer's flags share the permissive bit, and no other.
        use crate::exec_gate::{
            DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_STDIN_CODE,
        };
        let gate = DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;
        let layer = ENFORCE_FILE_OPEN
            | ENFORCE_EXEC_CHECK
            | PROTECT_SIGNATURES
            | ENFORCE_EXEC_MAP
            | VERDICT_CACHE
            | NATIVE_ANY
            | PROTECT_AGENT;
        assert_eq!((gate | layer) & PERMISSIVE, 0);
    }

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
    fn read_filesystem_rule() {
        const EXT4: u32 = 0xEF53;
        const PROC: u32 = 0x9FA0;
        let trust = Trust::new(&[0], &[EXT4 as u64]);
        assert_eq!(
            judge_read_filesystem(0, EXT4, &trust),
            ReadFilesystem::Trusted
        );
        assert_eq!(
            judge_read_filesystem(0, PROC, &trust),
            ReadFilesystem::Untrusted
        );
        assert_eq!(
            judge_read_filesystem(0, FUSE_SUPER_MAGIC, &trust),
            ReadFilesystem::Untrusted
        );
        // A user namespace's mount of a trusted type is still its creator's.
        for level in [1, 2, 32] {
            assert_eq!(
                judge_read_filesystem(level, EXT4, &trust),
                ReadFilesystem::Foreign
            );
        }
    }

    #[test]
    fn device_read_rule() {
        assert_eq!(
            judge_device_read(S_IFCHR | 0o620, true),
            Some(Rule::RegularFile)
        );
        assert_eq!(judge_device_read(S_IFCHR | 0o666, false), None);
        // Regular files named as code are fanotify's to judge (signatures).
        assert_eq!(judge_device_read(S_IFREG | 0o644, true), None);
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
    fn native_rule() {
        const EXT4: u32 = 0xEF53;
        const TMPFS: u32 = 0x0102_1994;
        const OVERLAY: u32 = 0x794C_7630;
        // root and a second owner (bin, 2); ext4 and tmpfs.
        let trust = Trust::new(&[0, 2, 0], &[EXT4 as u64, TMPFS as u64, EXT4 as u64]);
        assert_eq!((trust.owner_count, trust.filesystem_count), (2, 2));
        let usr_bin = CodeFile {
            mode: S_IFREG | 0o755,
            nlink: 1,
            uid: 0,
            fs_magic: EXT4,
            fs_user_ns_level: 0,
        };
        let judge = |flags, file: CodeFile| judge_native(flags, &file, &trust);
        let owner = NATIVE_LINKED | NATIVE_OWNER;
        let trusted = owner | NATIVE_TRUSTED;
        for flags in [NATIVE_LINKED, owner, trusted] {
            assert_eq!(judge(flags, usr_bin), None);
            // fexecve(memfd), an O_TMPFILE, a deleted program, shmat(SHM_EXEC).
            let memfd = CodeFile {
                mode: S_IFREG | 0o777,
                nlink: 0,
                fs_magic: TMPFS,
                ..usr_bin
            };
            assert_eq!(judge(flags, memfd), Some(Rule::NotDeleted));
            let zero = CodeFile {
                mode: S_IFCHR | 0o666,
                ..usr_bin
            };
            assert_eq!(judge(flags, zero), None);
            for kind in [S_IFIFO, S_IFSOCK, S_IFBLK, 0] {
                let odd = CodeFile {
                    mode: kind | 0o755,
                    ..usr_bin
                };
                assert_eq!(judge(flags, odd), Some(Rule::RegularFile), "{kind:o}");
            }
        }
        // A user's own build, a copy of python3 or ld.so in /tmp: fine when only links
        // count, refused from the default level on.
        let built = CodeFile {
            uid: 1000,
            mode: S_IFREG | 0o700,
            fs_magic: TMPFS,
            ..usr_bin
        };
        assert_eq!(judge(NATIVE_LINKED, built), None);
        assert_eq!(judge(owner, built), Some(Rule::TrustedOwner));
        assert_eq!(judge(trusted, built), Some(Rule::TrustedOwner));
        // Every listed owner is trusted, not only the first.
        let by_bin = CodeFile { uid: 2, ..usr_bin };
        assert_eq!(judge(owner, by_bin), None);
        assert_eq!(judge(trusted, by_bin), None);
        let root_only = Trust::new(&[0], &[EXT4 as u64]);
        assert_eq!(
            judge_native(trusted, &by_bin, &root_only),
            Some(Rule::TrustedOwner)
        );
        // Group or others may write (an ACL's named entries widen the group bits, its mask).
        for writable in [0o775, 0o757, 0o777, 0o4775] {
            let file = CodeFile {
                mode: S_IFREG | writable,
                ..usr_bin
            };
            assert_eq!(judge(owner, file), Some(Rule::NotWritableByRunner));
            assert_eq!(judge(trusted, file), Some(Rule::NotWritableByRunner));
        }
        let setgid = CodeFile {
            mode: S_IFREG | 0o2755,
            ..usr_bin
        };
        assert_eq!(judge(owner, setgid), None);
        assert_eq!(judge(trusted, setgid), None);
        // FUSE and other namespaces' mounts: owners are claims at both levels.
        let fuse = CodeFile {
            fs_magic: FUSE_SUPER_MAGIC,
            ..usr_bin
        };
        assert_eq!(judge(owner, fuse), Some(Rule::TrustedFilesystem));
        assert_eq!(judge(trusted, fuse), Some(Rule::TrustedFilesystem));
        assert_eq!(judge(NATIVE_LINKED, fuse), None);
        let userns = CodeFile {
            fs_user_ns_level: 1,
            fs_magic: TMPFS,
            ..usr_bin
        };
        assert_eq!(judge(owner, userns), Some(Rule::TrustedFilesystem));
        assert_eq!(judge(trusted, userns), Some(Rule::TrustedFilesystem));
        // A root-made overlay (a container's image): facts, but not a listed type.
        let overlay = CodeFile {
            fs_magic: OVERLAY,
            ..usr_bin
        };
        assert_eq!(judge(owner, overlay), None);
        assert_eq!(judge(trusted, overlay), Some(Rule::TrustedFilesystem));
        // Off: nothing is judged, not even a memfd.
        let memfd = CodeFile { nlink: 0, ..built };
        assert_eq!(judge(0, memfd), None);
        // Only the first `count` entries count.
        let none = Trust::new(&[0], &[]);
        assert_eq!(
            judge_native(trusted, &usr_bin, &none),
            Some(Rule::TrustedFilesystem)
        );
        assert!(trust.filesystem(TMPFS));
        assert!(!Trust::new(&[], &[EXT4 as u64]).filesystem(TMPFS));
        assert!(!trust.filesystem(0));
        assert!(!trust.owner(1000));
    }

    #[test]
    fn wire_sizes() {
        assert_eq!(size_of::<LsmEvent>(), 48);
        assert_eq!(
            size_of::<LsmSettings>(),
            size_of::<LsmOffsets>()
                + 4
                + size_of::<Trust>()
                + (4 + crate::code_name::CODE_SUFFIX_BYTES) * crate::code_name::MAX_CODE_SUFFIXES
                + 4
        );
        assert_eq!(size_of::<InodeState>(), 24);
        assert_eq!(size_of::<AgentState>(), 8);
        assert_eq!(size_of::<SelfProtectSettings>(), 40);
    }

    #[test]
    fn harmless_signals() {
        for sig in [0, 1, 17, 18, 23, 28] {
            assert!(harmless_signal(sig), "{sig}");
        }
        // SIGINT, SIGQUIT, SIGABRT, SIGKILL, SIGUSR1, SIGSEGV, SIGTERM, SIGSTOP, SIGTSTP,
        // SIGIO, SIGSYS, SIGRTMIN.
        for sig in [2, 3, 6, 9, 10, 11, 15, 19, 20, 29, 31, 34] {
            assert!(!harmless_signal(sig), "{sig}");
        }
    }
}
