//! The policy's executable rules (`[native] code`) for every task: `lsm/bprm_check_security`
//! judges each binfmt step of an exec (the program; for a `#!` script, the script and then
//! its interpreter; a binfmt_misc handler), and [`crate::exec_map`] the executable mappings
//! (shared libraries, `LD_PRELOAD`, `ld.so ./prog`, the ELF interpreter the kernel maps).
//! The rule is [`guard_common::lsm::judge_native`].
//!
//! `bprm_check_security` rather than `bprm_creds_for_exec`: the latter runs once per exec,
//! on the file named, before binfmt handlers pick the interpreter; the former runs for every
//! file the kernel is about to run. `AT_EXECVE_CHECK` stops before it (see
//! [`crate::bprm_creds_for_exec`]).

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    lsm::{CodeFile, NATIVE_ANY, judge_native},
};

use crate::kernel::kread;
use crate::lsm_common::{EACCES, InodeFacts, inode_facts, refuse, setting};

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // bprm_check_security(struct linux_binprm *bprm), then the previous verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    if !enabled() {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    let Ok(file) = kread::<*const u8>(bprm, setting!(offsets.bprm_file)) else {
        return -EACCES;
    };
    judge_file(Hook::BprmCheckSecurity as u32, file)
}

/// Whether the native-code rule is on.
#[inline(always)]
pub fn enabled() -> bool {
    setting!(flags) & NATIVE_ANY != 0
}

/// Judges `file` as native code: 0, or the refusal (reported) to return. Facts that cannot
/// be read fail closed.
#[inline(always)]
pub fn judge_file(hook: u32, file: *const u8) -> i32 {
    judge_file_as(hook, file, setting!(flags))
}

/// [`judge_file`] at the native-code level `flags` holds (`NATIVE_*`).
#[inline(always)]
pub fn judge_file_as(hook: u32, file: *const u8, flags: u32) -> i32 {
    match judge(file, flags) {
        Ok(None) => 0,
        Ok(Some((rule, facts))) => refuse(hook, rule, &facts, EACCES),
        Err(_) => -EACCES,
    }
}

#[inline(always)]
fn judge(file: *const u8, flags: u32) -> Result<Option<(Rule, InodeFacts)>, i32> {
    let inode: *const u8 = kread(file, setting!(offsets.file_inode))?;
    let facts = inode_facts(inode)?;
    let uid: u32 = kread(inode, setting!(offsets.inode_uid))?;
    let sb: *const u8 = kread(inode, setting!(offsets.inode_sb))?;
    let fs_magic: u32 = kread(sb, setting!(offsets.sb_magic))?;
    let user_ns: *const u8 = kread(sb, setting!(offsets.sb_user_ns))?;
    let fs_user_ns_level: u32 = kread(user_ns, setting!(offsets.user_ns_level))?;
    let code = CodeFile {
        mode: facts.mode,
        nlink: facts.nlink,
        uid,
        fs_magic,
        fs_user_ns_level,
    };
    let rule = judge_native(flags, &code, &setting!(trust));
    Ok(rule.map(|rule| (rule, facts)))
}
