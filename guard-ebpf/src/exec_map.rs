//! `lsm/mmap_file` and `lsm/file_mprotect`: an interpreter task may map code executable
//! only from a linked regular file.
//!
//! `file_open` does not see a file the interpreter never opened by path:
//! `os.memfd_create`, a write and `mmap(PROT_EXEC)` (or `mprotect` to executable) would
//! hand native code to `ctypes` without any open. Anonymous executable mappings (no file:
//! libffi's closures) stay allowed. The rule is [`guard_common::lsm::judge_exec_map`].
//!
//! With the policy's executable rules on (`[native] code`, see [`crate::native`]), every
//! task's executable mappings are judged by those instead: shared libraries, `LD_PRELOAD`,
//! `ld.so ./prog`, and the segments and ELF interpreter the kernel maps at exec.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::lsm::{ENFORCE_EXEC_MAP, judge_exec_map};

use crate::kernel::kread;
use crate::lsm_common::{EACCES, current_exe, inode_facts, refuse, setting};
use crate::maps::is_interpreter;
use crate::native;

const PROT_EXEC: u64 = 4;

// mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
//           unsigned long flags), then the previous verdict.
#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    let prot: u64 = ctx.arg(2);
    let file: *const u8 = ctx.arg(0);
    judge(Hook::MmapFile as u32, file, prot)
}

// file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot),
// then the previous verdict.
#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let prot: u64 = ctx.arg(2);
    let vma: *const u8 = ctx.arg(0);
    let Ok(file) = kread::<*const u8>(vma, setting!(offsets.vma_file)) else {
        return -EACCES;
    };
    judge(Hook::FileMprotect as u32, file, prot)
}

#[inline(always)]
fn judge(hook: u32, file: *const u8, prot: u64) -> i32 {
    if prot & PROT_EXEC == 0 || file.is_null() {
        return 0;
    }
    // The stricter rule, for every task: it refuses all the interpreter rule does.
    if native::enabled() {
        return native::judge_file(hook, file);
    }
    if setting!(flags) & ENFORCE_EXEC_MAP == 0 {
        return 0;
    }
    match current_exe() {
        Ok(Some(exe)) if is_interpreter(&exe) => {}
        _ => return 0,
    }
    let Ok(inode) = kread::<*const u8>(file, setting!(offsets.file_inode)) else {
        return -EACCES;
    };
    let Ok(facts) = inode_facts(inode) else {
        return -EACCES;
    };
    match judge_exec_map(facts.mode, facts.nlink) {
        Some(rule) => refuse(hook, rule, &facts, EACCES),
        None => 0,
    }
}
