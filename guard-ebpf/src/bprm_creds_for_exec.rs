//! `lsm/bprm_creds_for_exec`: answers interpreters' `execveat(…, AT_EXECVE_CHECK)`.
//!
//! Since Linux 6.14 an interpreter can ask whether an open file may be executed; the kernel
//! runs this hook with `bprm->is_check` set and stops there. A file not owned by a trusted
//! owner, writable by group or others, unlinked, or on FUSE or another user namespace's
//! mount is refused (`EACCES`), by [`guard_common::lsm::judge_native`]. Real execs are left alone:
//! refusing them by owner would be an allow-list for every program on the host, which is
//! not this layer's job. Where the kernel has no `is_check` the loader does not attach it.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::lsm::{ENFORCE_EXEC_CHECK, NATIVE_LINKED, NATIVE_OWNER};

use crate::kernel::kread;
use crate::lsm_common::{EACCES, setting};

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

/// The file an interpreter asks about, as native code at the `trusted-owner` level whatever
/// `[native] code` says: linked, owned by a trusted owner, writable by nobody else (group or
/// others, an ACL's named entries through its mask), on a filesystem whose owners are facts.
#[inline(always)]
fn judge(bprm: *const u8) -> Result<i32, i32> {
    let file: *const u8 = kread(bprm, setting!(offsets.bprm_file))?;
    Ok(crate::native::judge_file_as(
        Hook::BprmCredsForExec as u32,
        file,
        NATIVE_LINKED | NATIVE_OWNER,
    ))
}
