//! `lsm/bprm_creds_for_exec`: answers interpreters' `execveat(…, AT_EXECVE_CHECK)`.
//!
//! Since Linux 6.14 an interpreter can ask whether an open file may be executed; the kernel
//! runs this hook with `bprm->is_check` set and stops there. A file not owned by a trusted
//! owner, writable by others, or unlinked is refused (`EACCES`). Real execs are left alone:
//! refusing them by owner would be an allow-list for every program on the host, which is
//! not this layer's job. Where the kernel has no `is_check` the loader does not attach it.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::{
    Rule,
    lsm::{ENFORCE_EXEC_CHECK, HOOK_BPRM_CREDS_FOR_EXEC},
};

use crate::lsm_common::{EACCES, inode_facts, kread, refuse, setting};

/// `S_IWOTH`.
const OTHERS_WRITE: u32 = 0o002;

#[lsm(hook = "bprm_creds_for_exec")]
pub fn bprm_creds_for_exec(ctx: LsmContext) -> i32 {
    // bprm_creds_for_exec(struct linux_binprm *bprm), then the previous verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let mask = setting!(offsets.bprm_is_check_mask);
    if setting!(flags) & ENFORCE_EXEC_CHECK == 0 || mask == 0 {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    let Ok(bits) = kread::<u8>(bprm, setting!(offsets.bprm_is_check)) else {
        return -EACCES;
    };
    if bits as u32 & mask == 0 {
        return 0;
    }
    judge(bprm).unwrap_or(-EACCES)
}

#[inline(always)]
fn judge(bprm: *const u8) -> Result<i32, i32> {
    let file: *const u8 = kread(bprm, setting!(offsets.bprm_file))?;
    let inode: *const u8 = kread(file, setting!(offsets.file_inode))?;
    let facts = inode_facts(inode)?;
    let uid: u32 = kread(inode, setting!(offsets.inode_uid))?;
    let rule = if facts.nlink == 0 {
        Rule::NotDeleted
    } else if !setting!(trust).owner(uid) {
        Rule::TrustedOwner
    } else if facts.mode & OTHERS_WRITE != 0 {
        Rule::NotWritableByRunner
    } else {
        return Ok(0);
    };
    Ok(refuse(HOOK_BPRM_CREDS_FOR_EXEC, rule, &facts, EACCES))
}
