//! `lsm/file_open`: interpreters may not read from anything but a linked regular file.
//!
//! The opened file is the target of any `/proc/*/fd` or `/dev/fd` magic link, so the type
//! check covers those too. The rule itself is [`guard_common::lsm::judge_open`].

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::{ENFORCE_FILE_OPEN, HOOK_FILE_OPEN, judge_open};

use crate::lsm_common::{EACCES, current_exe, inode_facts, is_interpreter, kread, refuse, setting};

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // file_open(struct file *file), then the previous LSM program's verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    if setting!(flags) & ENFORCE_FILE_OPEN == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    // Facts that cannot be read about an interpreter's open fail closed; about any other
    // task's, they are none of the layer's business.
    match current_exe() {
        Ok(Some(exe)) if is_interpreter(&exe) => {}
        _ => return 0,
    }
    judge(file).unwrap_or(-EACCES)
}

#[inline(always)]
fn judge(file: *const u8) -> Result<i32, i32> {
    let f_mode: u32 = kread(file, setting!(offsets.file_mode))?;
    let inode: *const u8 = kread(file, setting!(offsets.file_inode))?;
    let facts = inode_facts(inode)?;
    Ok(match judge_open(f_mode, facts.mode, facts.nlink) {
        Some(rule) => refuse(HOOK_FILE_OPEN, rule, &facts, EACCES),
        None => 0,
    })
}
