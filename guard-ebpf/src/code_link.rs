//! `lsm/inode_follow_link` and `lsm/inode_getattr`: a symbolic link named as code
//! ([`guard_common::code_name`]) followed by an interpreter names the file its path walk
//! reaches: `ln -s /proc/self/environ x.py`, or `cd /proc/self/fd; python3 3`.
//!
//! The walk's next open (`file_open`) or stat (here) takes the mark, so it never outlives
//! the system call that set it: a stat of such a link is not followed by a data read of
//! `/proc` that could pass for the link's target.
//!
//! `lsm/inode_readlink`: an interpreter that reads a link instead of following it opens the
//! target by the target's own name. Node resolves every module's real path before opening
//! it (`require('./link.js')`, `link.js -> data.txt`: `readlink("link.js")`, then
//! `open("data.txt")`), so no open goes through the link, no follow is marked, and the data
//! name passes every check of code by name. A `readlink` of a link whose name ends with a
//! code suffix is refused unless its target's last component does too
//! ([`guard_common::code_name::judge_readlink`]); one that cannot be read here (no
//! `i_link`: ext4 links of 60 bytes or more, tmpfs ones over 128, overlayfs, procfs's
//! magic links; or 255 bytes or more) is refused as a fact unknown. A code-named link to a
//! code-named target stays readable: the open of the target is judged by its own name.
//!
//! For every profiled interpreter, not node alone: `os.path.realpath(__file__)` and then
//! loading what it names is the same shape in Python, Perl's `abs_path` and Ruby's
//! `File.realpath` likewise; of Debian bookworm's links with a code suffix (python3, perl,
//! ruby, nodejs) only `/usr/bin/ld.so` points to a name without one, and rdoc's `jquery.js`
//! to a target too long to be in the inode (docs/lsm.md). By the suffixes alone, not the
//! operand's name: CPython reads its script's link to find `sys.path[0]`, Perl's `FindBin`
//! its own, and `/usr/bin/tool -> ../share/tool/main` is common; the operand is code
//! whatever its name (fanotify matches it by identity), so its link adds nothing to judge.
//! Tasks are told by their executable, as `file_open` does, not by a record: node's
//! thread-pool threads (`fs.realpath`'s callback form) have none until their first open.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::{
    Rule,
    code_name::{NAME_BUFFER, judge_readlink, link_target_named_as_code, suffix_named_as_code},
    lsm::{ENFORCE_FILE_OPEN, Hook, S_IFLNK, S_IFMT},
};

use crate::kernel::{kread, read_kernel_str};
use crate::lsm_common::{EACCES, InodeFacts, current_exe, inode_facts, refuse, setting};
use crate::main_script::{code_suffix, current_script, dentry_named_as_code, read_dentry_name};
use crate::maps::{is_interpreter, main_script};

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

#[lsm(hook = "inode_readlink")]
pub fn code_readlink(ctx: LsmContext) -> i32 {
    // inode_readlink(struct dentry *dentry), then the previous verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 || setting!(flags) & ENFORCE_FILE_OPEN == 0 {
        return retval;
    }
    // Facts that cannot be read about an interpreter's readlink fail closed; about any other
    // task's, they are none of the layer's business.
    match current_exe() {
        Ok(Some(exe)) if is_interpreter(&exe) => {}
        _ => return 0,
    }
    let dentry: *const u8 = ctx.arg(0);
    judge(dentry).unwrap_or(-EACCES)
}

#[inline(always)]
fn judge(dentry: *const u8) -> Result<i32, i32> {
    let inode: *const u8 = kread(dentry, setting!(offsets.dentry_inode))?;
    let facts = inode_facts(inode)?;
    // The task's record holds the room to read names in. Without memory for it the names
    // cannot be judged: refused.
    let Some(script) = current_script() else {
        return Ok(refused(Rule::FactsUnavailable, &facts));
    };
    let count = setting!(code_suffix_count);
    let len = read_dentry_name(dentry, &mut script.scratch)?;
    let link_named = suffix_named_as_code(&script.scratch, len, code_suffix, count);
    if !link_named {
        return Ok(0);
    }
    let target_named = link_target(inode, &facts, &mut script.scratch)
        .map(|len| link_target_named_as_code(&script.scratch, len, code_suffix, count));
    Ok(match judge_readlink(link_named, target_named) {
        Some(rule) => refused(rule, &facts),
        None => 0,
    })
}

#[inline(always)]
fn refused(rule: Rule, facts: &InodeFacts) -> i32 {
    refuse(Hook::InodeReadlink as u32, rule, facts, EACCES)
}

/// The symbolic link `inode`'s target, read into `buf`, when the filesystem keeps it in
/// `i_link` and it fits: its length. `None` otherwise (the filesystem makes it on demand,
/// through `get_link`, which no program can call).
#[inline(always)]
fn link_target(inode: *const u8, facts: &InodeFacts, buf: &mut [u8; NAME_BUFFER]) -> Option<usize> {
    // `i_link` shares a union with a pipe's and a device's pointers: only a link's is one.
    if facts.mode & S_IFMT != S_IFLNK {
        return None;
    }
    let link: *const u8 = kread(inode, setting!(offsets.inode_link)).ok()?;
    if link.is_null() {
        return None;
    }
    // The count includes the NUL; a full buffer may hold a target cut short.
    let read = read_kernel_str(link, buf).ok()?;
    if read == 0 || read >= NAME_BUFFER {
        return None;
    }
    Some(read - 1)
}
