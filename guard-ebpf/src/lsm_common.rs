//! What the LSM hooks share: the loader-set settings and the reading of kernel structs at
//! offsets taken from the running kernel's BTF. The maps are in [`crate::maps`].

use crate::kernel::{btf_member, kread};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated};
use guard_common::{
    Rule,
    code_name::{CODE_SUFFIX_BYTES, CodeSuffix, MAX_CODE_SUFFIXES},
    exec_gate::InterpreterKey,
    lsm::{LsmEvent, LsmOffsets, LsmSettings, PERMISSIVE, Trust},
};

pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;

/// Set by the loader (`EbpfLoader::override_global`); in `.rodata`, so the verifier treats
/// its contents as constants and prunes disabled hooks.
#[unsafe(no_mangle)]
pub static LSM_SETTINGS: LsmSettings = LsmSettings {
    offsets: LsmOffsets::ZERO,
    flags: 0,
    trust: Trust::EMPTY,
    code_suffixes: [CodeSuffix {
        len: 0,
        bytes: [0; CODE_SUFFIX_BYTES],
    }; MAX_CODE_SUFFIXES],
    code_suffix_count: 0,
};

/// A field of the layer's settings (see [`crate::kernel::loader_set`]).
macro_rules! setting {
    ($($field:tt)+) => {
        crate::kernel::loader_set(&raw const crate::lsm_common::LSM_SETTINGS.$($field)+)
    };
}
pub(crate) use setting;

/// `file->f_inode` of a hook's BTF-typed `struct file *` argument.
#[inline(always)]
pub fn file_inode(file: *const u8) -> crate::maps::Inode {
    let offset = setting!(offsets.file_inode);
    // SAFETY: `file` is a hook's BTF-typed argument (the verifier refuses a program that
    // loads through anything else); `f_inode` is a pointer member.
    crate::maps::Inode(unsafe { btf_member(file, offset) })
}

/// `dentry->d_inode` of a hook's BTF-typed `struct dentry *` argument (null for a negative
/// dentry).
#[inline(always)]
pub fn dentry_inode(dentry: *const u8) -> crate::maps::Inode {
    let offset = setting!(offsets.dentry_inode);
    // SAFETY: as in `file_inode`; `d_inode` is a pointer member.
    crate::maps::Inode(unsafe { btf_member(dentry, offset) })
}

/// An inode's identity and the facts the hooks judge.
pub struct InodeFacts {
    pub key: InterpreterKey,
    pub mode: u32,
    pub nlink: u32,
}

#[inline(always)]
pub fn inode_key(inode: *const u8) -> Result<InterpreterKey, i32> {
    let ino: u64 = kread(inode, setting!(offsets.inode_ino))?;
    let sb: *const u8 = kread(inode, setting!(offsets.inode_sb))?;
    let dev: u32 = kread(sb, setting!(offsets.sb_dev))?;
    Ok(InterpreterKey { ino, dev, pad: 0 })
}

#[inline(always)]
pub fn inode_facts(inode: *const u8) -> Result<InodeFacts, i32> {
    let key = inode_key(inode)?;
    let mode: u16 = kread(inode, setting!(offsets.inode_mode))?;
    let nlink: u32 = kread(inode, setting!(offsets.inode_nlink))?;
    Ok(InodeFacts {
        key,
        mode: mode as u32,
        nlink,
    })
}

/// The identity of the current task's executable (`current->mm->exe_file->f_inode`);
/// `None` for kernel threads.
#[inline(always)]
pub fn current_exe() -> Result<Option<InterpreterKey>, i32> {
    // SAFETY: returns the current task pointer; only read through bpf_probe_read_kernel.
    let task = unsafe { generated::bpf_get_current_task() } as *const u8;
    let mm: *const u8 = kread(task, setting!(offsets.task_mm))?;
    if mm.is_null() {
        return Ok(None);
    }
    let exe: *const u8 = kread(mm, setting!(offsets.mm_exe_file))?;
    if exe.is_null() {
        return Ok(None);
    }
    let inode: *const u8 = kread(exe, setting!(offsets.file_inode))?;
    inode_key(inode).map(Some)
}

/// Reports a refusal and returns what the hook returns: `-errno`, or 0 when permissive.
#[inline(always)]
pub fn refuse(hook: u32, rule: Rule, facts: &InodeFacts, errno: i32) -> i32 {
    let refused = setting!(flags) & PERMISSIVE == 0;
    let pid_tgid = bpf_get_current_pid_tgid();
    let event = LsmEvent {
        hook,
        rule: rule as u32,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        refused: refused as u32,
        ino: facts.key.ino,
        dev: facts.key.dev,
        mode: facts.mode,
        nlink: facts.nlink,
        pad: 0,
    };
    // A full ring buffer loses the report, never the refusal.
    crate::maps::report(&event);
    if refused { -errno } else { 0 }
}
