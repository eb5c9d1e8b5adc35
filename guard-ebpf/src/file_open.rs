//! `lsm/file_open`: interpreters may read code only from a linked regular file on a
//! filesystem of the initial user namespace, and — while the agent is down — only from one
//! the agent verified.
//!
//! The opened file is the target of any `/proc/*/fd` or `/dev/fd` magic link, so the type
//! check covers those too. The type rule is [`guard_common::lsm::judge_open`]. A file named
//! as code on a filesystem type the policy does not trust is refused
//! ([`guard_common::code_name`]): fanotify cannot mark procfs. Every task's write opens
//! count as changes for the verdict cache ([`crate::verdicts`]).

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    code_name::MainScript,
    lsm::{
        ENFORCE_FILE_OPEN, FMODE_READ, FMODE_WRITE, ReadFilesystem, S_IFCHR, S_IFMT, S_IFREG,
        VERDICT_CACHE, judge_device_read, judge_open, judge_read_filesystem,
    },
};

use crate::kernel::kread;
use crate::lsm_common::{EACCES, current_exe, file_inode, inode_facts, refuse, setting};
use crate::main_script::{current_script, dentry_named_as_code, mount_named_as_code};
use crate::maps::{agent_alive, is_interpreter};
use crate::verdicts::{Standing, standing, write_open_refused};

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // file_open(struct file *file), then the previous LSM program's verdict.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    let file: *const u8 = ctx.arg(0);
    if write_open_refused(file) {
        return match kread::<*const u8>(file, setting!(offsets.file_inode)).map(inode_facts) {
            Ok(Ok(facts)) => refuse(Hook::FileOpen as u32, Rule::NoOpenWriters, &facts, EACCES),
            _ => -EACCES,
        };
    }
    if setting!(flags) & ENFORCE_FILE_OPEN == 0 {
        return 0;
    }
    // Facts that cannot be read about an interpreter's open fail closed; about any other
    // task's, they are none of the layer's business.
    match current_exe() {
        Ok(Some(exe)) if is_interpreter(&exe) => {}
        _ => return 0,
    }
    // Whatever this open is, it ends the path walk a code link mark belongs to.
    let mut script = current_script();
    let code_link = match script {
        Some(ref mut script) => core::mem::take(&mut script.code_link) != 0,
        None => false,
    };
    judge(file, script, code_link).unwrap_or(-EACCES)
}

/// Whether the file is reached under a name that is code: its own, or its mount point's.
#[inline(always)]
fn file_named_as_code(file: *const u8, script: &mut MainScript) -> Result<bool, i32> {
    let dentry: *const u8 = kread(file, setting!(offsets.file_path_dentry))?;
    if dentry_named_as_code(dentry, script)? {
        return Ok(true);
    }
    let mnt: *const u8 = kread(file, setting!(offsets.file_path_mnt))?;
    mount_named_as_code(mnt, dentry, script)
}

#[inline(always)]
fn judge(
    file: *const u8,
    mut script: Option<&mut MainScript>,
    code_link: bool,
) -> Result<i32, i32> {
    let f_mode: u32 = kread(file, setting!(offsets.file_mode))?;
    let inode: *const u8 = kread(file, setting!(offsets.file_inode))?;
    let facts = inode_facts(inode)?;
    if let Some(rule) = judge_open(f_mode, facts.mode, facts.nlink) {
        return Ok(refuse(Hook::FileOpen as u32, rule, &facts, EACCES));
    }
    if f_mode & (FMODE_READ | FMODE_WRITE) != FMODE_READ {
        return Ok(0);
    }
    // A device read under a code name: a terminal as the script. Without a record (no
    // memory) the name cannot be judged: refused, fail closed.
    if facts.mode & S_IFMT == S_IFCHR {
        let named = match script.as_deref_mut() {
            Some(script) => code_link || file_named_as_code(file, script)?,
            None => true,
        };
        return Ok(match judge_device_read(facts.mode, named) {
            Some(rule) => refuse(Hook::FileOpen as u32, rule, &facts, EACCES),
            None => 0,
        });
    }
    // What is left to judge is a read of a linked regular file: possibly code.
    if facts.mode & S_IFMT != S_IFREG {
        return Ok(0);
    }
    let sb: *const u8 = kread(inode, setting!(offsets.inode_sb))?;
    let user_ns: *const u8 = kread(sb, setting!(offsets.sb_user_ns))?;
    let level: u32 = kread(user_ns, setting!(offsets.user_ns_level))?;
    let fs_magic: u32 = kread(sb, setting!(offsets.sb_magic))?;
    let refused = match judge_read_filesystem(level, fs_magic, &setting!(trust)) {
        ReadFilesystem::Foreign => true,
        // Without a record (no memory) the name cannot be judged: refused, fail closed.
        ReadFilesystem::Untrusted => match script.as_deref_mut() {
            Some(script) => code_link || file_named_as_code(file, script)?,
            None => true,
        },
        ReadFilesystem::Trusted => false,
    };
    if refused {
        return Ok(refuse(
            Hook::FileOpen as u32,
            Rule::TrustedFilesystem,
            &facts,
            EACCES,
        ));
    }
    if setting!(flags) & VERDICT_CACHE == 0 {
        return Ok(0);
    }
    Ok(match standing(file, file_inode(file), script) {
        Standing::Verified => 0,
        Standing::Unverified if agent_alive() => 0,
        Standing::Unverified => refuse(Hook::FileOpen as u32, Rule::KernelVerdict, &facts, EACCES),
        Standing::Untracked => refuse(
            Hook::FileOpen as u32,
            Rule::FactsUnavailable,
            &facts,
            EACCES,
        ),
    })
}
