//! `lsm/inode_follow_link` and `lsm/inode_getattr`: a symbolic link named as code
//! ([`guard_common::code_name`]) followed by an interpreter names the file its path walk
//! reaches: `ln -s /proc/self/environ x.py`, or `cd /proc/self/fd; python3 3`.
//!
//! The walk's next open (`file_open`) or stat (here) takes the mark, so it never outlives
//! the system call that set it: a stat of such a link is not followed by a data read of
//! `/proc` that could pass for the link's target.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::ENFORCE_FILE_OPEN;

use crate::lsm_common::setting;
use crate::main_script::dentry_named_as_code;
use crate::maps::main_script;

#[lsm(hook = "inode_follow_link")]
pub fn code_link_follow(ctx: LsmContext) -> i32 {
    // inode_follow_link(struct dentry *dentry, struct inode *inode, bool rcu), then the
    // previous verdict.
    let retval: i32 = ctx.arg(3);
    if retval != 0 || setting!(flags) & ENFORCE_FILE_OPEN == 0 {
        return retval;
    }
    // Only tasks that exec'd an interpreter (or opened files as one) have a record.
    let Some(script) = main_script(false) else {
        return 0;
    };
    let dentry: *const u8 = ctx.arg(0);
    // A name that cannot be read may be the operand's: fail closed.
    if dentry_named_as_code(dentry, script).unwrap_or(true) {
        script.code_link = 1;
    }
    0
}

#[lsm(hook = "inode_getattr")]
pub fn code_link_stat(ctx: LsmContext) -> i32 {
    // inode_getattr(const struct path *path), then the previous verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 || setting!(flags) & ENFORCE_FILE_OPEN == 0 {
        return retval;
    }
    if let Some(script) = main_script(false) {
        script.code_link = 0;
    }
    0
}
