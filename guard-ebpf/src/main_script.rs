//! `tp_btf/sched_process_exec`: records the last path component of an interpreter's script
//! operand, and judges the names under which `file_open` reaches a file
//! ([`guard_common::code_name`]).
//!
//! Runs after the exec's point of no return, before the new program's first instruction,
//! in the exec'd task: the argv it reads is the kernel's own copy, not yet in reach of the
//! program. A shebang script's argv is the one binfmt_script rewrote, so its operand is the
//! script's path.

use aya_ebpf::{helpers::generated, macros::btf_tracepoint, programs::BtfTracePointContext};
use guard_common::{
    argv::{Dialect, Grammar, Word},
    code_name::{CodeSuffix, MainScript, NAME_BUFFER, last_component_start, named_as_code},
    exec_gate::{ARG_BUFFER, MAX_ARGS, MAX_CLUSTER},
    node_argv, perl_argv, python_argv, ruby_argv,
};

use crate::kernel::{
    LoopBody, bounded_loop, kread, read_kernel_name, read_user_name, read_user_str, read_user_u64,
};
use crate::lsm_common::{current_exe, setting};
use crate::maps::{forget_main_script, interpreter_dialect};
use core::ops::ControlFlow;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn main_script_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let dialect = match current_exe() {
        Ok(Some(exe)) => interpreter_dialect(&exe),
        _ => None,
    };
    let Some(dialect) = dialect else {
        // What an earlier exec of this task recorded no longer applies.
        forget_main_script();
        return 0;
    };
    let Some(script) = current_script() else {
        // No memory: `file_open` creates the record at the interpreter's first open, then
        // without the operand's name (the code suffixes still apply).
        return 0;
    };
    script.name_len = 0;
    script.code_link = 0;
    // Each interpreter's command line by its own grammar; one of a kind this program does
    // not know names no operand (its code suffixes still apply).
    let _ = match Dialect::from_u32(dialect) {
        Some(Dialect::Python) => record_operand::<python_argv::Reader>(bprm, script),
        Some(Dialect::Perl) => record_operand::<perl_argv::Reader>(bprm, script),
        Some(Dialect::Ruby) => record_operand::<ruby_argv::Reader>(bprm, script),
        Some(Dialect::Node) => record_operand::<node_argv::Reader>(bprm, script),
        _ => Ok(()),
    };
    0
}

/// The current task's record, created empty when missing; `None` without memory for it.
#[inline(always)]
pub fn current_script() -> Option<&'static mut MainScript> {
    crate::maps::main_script(true)
}

fn record_operand<G: Grammar>(bprm: *const u8, script: &mut MainScript) -> Result<(), i32> {
    let sp: u64 = kread(bprm, setting!(offsets.bprm_p))?;
    let argc: i32 = kread(bprm, setting!(offsets.bprm_argc))?;
    let Some(index) = operand_index::<G>(sp, argc) else {
        return Ok(());
    };
    // The argv strings lie end to end, each with its NUL: a word ends where the next one
    // starts, and the last one at the mm's `arg_end`.
    let start: u64 = read_user_u64(sp + 8 * (1 + index))?;
    let end: u64 = if index + 1 < argc as u64 {
        read_user_u64(sp + 8 * (2 + index))?
    } else {
        // SAFETY: returns the current task pointer; only read through bpf_probe_read_kernel.
        let task = unsafe { generated::bpf_get_current_task() } as *const u8;
        let mm: *const u8 = kread(task, setting!(offsets.task_mm))?;
        kread(mm, setting!(offsets.mm_arg_end))?
    };
    if end <= start {
        return Err(-1);
    }
    let total = (end - start - 1) as usize;
    let tail_len = if total < NAME_BUFFER {
        total
    } else {
        NAME_BUFFER
    };
    read_user_name(
        start + (total - tail_len) as u64,
        &mut script.scratch,
        tail_len,
    )?;
    let Some(first) = last_component_start(&script.scratch, tail_len, total) else {
        return Ok(());
    };
    if first > tail_len {
        return Ok(());
    }
    let len = tail_len - first;
    read_user_name(start + (total - len) as u64, &mut script.name, len)?;
    script.name_len = len as u32;
    Ok(())
}

/// State of the argv walk, handed to each `bpf_loop` step.
struct OperandWalk<G> {
    sp: u64,
    argc: i32,
    reader: G,
    /// The script operand's argv index, once found.
    found: u64,
    buf: [u8; ARG_BUFFER],
}

/// The argv index of the script operand, by the grammar the exec gate reads. The walk is in
/// this CPU's scratch slot ([`crate::maps::operand_scratch`]), as the gate's is.
#[inline(always)]
fn operand_index<G: Grammar>(sp: u64, argc: i32) -> Option<u64> {
    let walk = crate::maps::operand_scratch::<OperandWalk<G>>()?;
    // SAFETY: `walk` points to this CPU's slot, large and aligned enough for an OperandWalk
    // (checked at compile time). Every field but the buffer is written before the reference
    // is made, the buffer's bytes are plain `u8`s (whatever a previous walk left there is a
    // valid value), and no other program uses the slot while this one runs to its end on
    // this CPU.
    let walk = unsafe {
        core::ptr::addr_of_mut!((*walk).sp).write(sp);
        core::ptr::addr_of_mut!((*walk).argc).write(argc);
        core::ptr::addr_of_mut!((*walk).reader).write(G::with_cluster_limit(MAX_CLUSTER));
        core::ptr::addr_of_mut!((*walk).found).write(0);
        &mut *walk
    };
    bounded_loop(MAX_ARGS, &mut InScratch(&mut *walk));
    (walk.found != 0).then_some(walk.found)
}

/// What `bpf_loop` is handed: its context must be on the stack, the walk is not.
struct InScratch<'a, G>(&'a mut OperandWalk<G>);

impl<G: Grammar> LoopBody for InScratch<'_, G> {
    #[inline(always)]
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        self.0.step(index)
    }
}

/// Word `index + 1` (argv[0] is no option).
impl<G: Grammar> LoopBody for OperandWalk<G> {
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        let i = index + 1;
        if i >= self.argc as u64 {
            return ControlFlow::Break(());
        }
        // Zeros after the word, as the exec gate's walk reads it ([`Grammar::feed_padded`]).
        self.buf = [0; ARG_BUFFER];
        let Ok(word) = read_user_str(self.sp + 8 * (1 + i), &mut self.buf) else {
            return ControlFlow::Break(());
        };
        let read = word.len();
        let Some(word) = self.buf.get(..read) else {
            return ControlFlow::Break(());
        };
        match self.reader.feed_padded::<false>(word, &self.buf) {
            Word::Script(_) => {
                self.found = i;
                ControlFlow::Break(())
            }
            // `-c`, `-m`, or options the kernel does not read: no script operand.
            Word::InlineCode
            | Word::Module(_)
            | Word::Unread
            | Word::Program
            | Word::NoSite
            | Word::CodeEnvironment => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Whether `dentry`'s name is named as code for this interpreter task.
#[inline(always)]
pub fn dentry_named_as_code(dentry: *const u8, script: &mut MainScript) -> Result<bool, i32> {
    let len = read_dentry_name(dentry, &mut script.scratch)?;
    Ok(named_as_code(
        &script.scratch,
        len,
        script,
        code_suffix,
        setting!(code_suffix_count),
    ))
}

/// Reads `dentry`'s name into `buf`: its length, 0 for a name no file can have (empty, or
/// longer than `NAME_MAX`), which is named as nothing.
#[inline(always)]
pub fn read_dentry_name(dentry: *const u8, buf: &mut [u8; NAME_BUFFER]) -> Result<u32, i32> {
    let len: u32 = kread(dentry, setting!(offsets.dentry_name_len))?;
    let name: *const u8 = kread(dentry, setting!(offsets.dentry_name))?;
    if len == 0 || len as usize > NAME_BUFFER {
        return Ok(0);
    }
    read_kernel_name(name, buf, len)?;
    Ok(len)
}

/// The loader's code suffix `index` (below `MAX_CODE_SUFFIXES`).
#[inline(always)]
pub fn code_suffix(index: usize) -> CodeSuffix {
    let first = (&raw const crate::lsm_common::LSM_SETTINGS.code_suffixes).cast::<CodeSuffix>();
    // SAFETY: `index` is below the array's length (the only caller loops to it); volatile
    // so the compiler does not fold in the zeroes the global was compiled with.
    unsafe { core::ptr::read_volatile(first.wrapping_add(index)) }
}

/// Mounts stacked on one mount point that [`mount_named_as_code`] looks through; deeper
/// stacks count as named as code (fail closed).
const MAX_STACKED_MOUNTS: usize = 8;

/// Whether the file at `dentry` in `mnt` is a mount's root sitting on a mount point named as
/// code (`mount --bind /proc/self/environ x.py`). Through mounts stacked on one mount point,
/// the name is the bottom one's: the name the path walk looked up.
#[inline(always)]
pub fn mount_named_as_code(
    mnt: *const u8,
    dentry: *const u8,
    script: &mut MainScript,
) -> Result<bool, i32> {
    let mut mnt = mnt;
    let mut dentry = dentry;
    let mut mountpoint: *const u8 = core::ptr::null();
    let mut level = 0;
    while level < MAX_STACKED_MOUNTS {
        let root: *const u8 = kread(mnt, setting!(offsets.vfsmount_root))?;
        if root != dentry {
            break;
        }
        // container_of(mnt, struct mount, mnt)
        let mount = mnt.wrapping_sub(setting!(offsets.mount_vfsmount) as usize);
        // A namespace's root mount is its own parent, and sits on no mount point.
        let parent: *const u8 = kread(mount, setting!(offsets.mount_parent))?;
        if parent == mount {
            break;
        }
        mountpoint = kread(mount, setting!(offsets.mount_mountpoint))?;
        // The mount point may itself be the root of the mount below.
        mnt = parent.wrapping_add(setting!(offsets.mount_vfsmount) as usize);
        dentry = mountpoint;
        level += 1;
    }
    if level == MAX_STACKED_MOUNTS {
        return Ok(true);
    }
    if mountpoint.is_null() {
        return Ok(false);
    }
    dentry_named_as_code(mountpoint, script)
}
