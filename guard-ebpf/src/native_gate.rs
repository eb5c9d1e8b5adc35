//! Host mode's native-code rule (`[native] code` without the BPF LSM layer), for every
//! task, by [`guard_common::lsm::judge_native`] as in BPF mode:
//!
//! * at `sched_process_exec` ([`judge_exec`], from the exec gate): the program exec'd and
//!   the ELF interpreter the kernel mapped for it (`AT_BASE`). The new program has not run
//!   an instruction yet, so SIGKILL here is a refusal. A `#!` script's own step is not seen
//!   (its interpreter judges it as code);
//! * at the mapping syscalls (`mmap`, `mprotect`, `pkey_mprotect`, `shmat` with
//!   `SHM_EXEC`): shared libraries, `LD_PRELOAD`, `ctypes`, `ld.so ./prog`; a readable
//!   mapping counts as executable under `READ_IMPLIES_EXEC`, as the kernel makes it. `mmap`'s
//!   descriptor is judged on entry, before any mapping exists; on return every executable
//!   file mapping in the range is judged again from the mappings themselves
//!   (`bpf_find_vma`), so a descriptor swapped between the two does not pass.
//!
//! Tracepoints cannot refuse, only kill: the task is sent SIGKILL, which ends it before it
//! returns to user space. A fact that cannot be read (a mapping that cannot be read, more
//! mappings than the walk reaches, no mapping at the ELF interpreter's address) is refused
//! (`facts-unavailable`). One is not: `bpf_find_vma` only try-locks the address space, and
//! a task whose threads keep it locked (a JIT's mapping churn) would be killed at random,
//! so the return-path check is then skipped and counted (`LSM_GATE_UNVERIFIED`): `mmap`'s
//! file was judged by descriptor on entry, and `mprotect` of a file mapping gives no more
//! than anonymous executable memory, which the rule allows. 32-bit (compat) system calls
//! are not traced: see docs/threat-model.md.

use aya_ebpf::{
    bindings::task_struct,
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    lsm::{CodeFile, NATIVE_ANY, judge_native},
};

use crate::exec_gate::{gate_setting, refuse};
use crate::kernel::{LoopBody, bounded_loop, kread};
use core::ops::ControlFlow;

const PROT_READ: u64 = 1;
const PROT_EXEC: u64 = 4;
/// `personality(2)` flag: the kernel adds `PROT_EXEC` to every readable mapping (`mmap`,
/// `mprotect`, `shmat`), so the `prot` a program spells is not what it gets.
const READ_IMPLIES_EXEC: u32 = 0x0040_0000;
const MAP_ANONYMOUS: u64 = 0x20;
const SHM_EXEC: u64 = 0o100000;
/// `vm_flags` bit of an executable mapping.
const VM_EXEC: u64 = 0x4;
/// `AT_NULL` and `AT_BASE` in the auxiliary vector.
const AT_NULL: u64 = 0;
const AT_BASE: u64 = 7;
/// `saved_auxv` holds fewer pairs than this on every architecture (`AT_VECTOR_SIZE`).
const AUXV_PAIRS: u64 = 32;
/// Mappings one call may span before the walk gives up (and refuses).
const MAX_RANGE_VMAS: u32 = 4096;
/// `bpf_find_vma` only try-locks the address space: attempts before refusing.
const FIND_ATTEMPTS: u32 = 16;
const ENOENT: i64 = 2;
const EBUSY: i64 = 16;
/// Tracepoint records: the syscall's arguments (enter) or return value (exit) start here.
const ARGS: usize = 16;

/// Whether host mode enforces a native-code level.
#[inline(always)]
pub fn enabled() -> bool {
    gate_setting!(native) & NATIVE_ANY != 0
}

/// An executable-mapping system call in flight, by thread: what to judge on its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    /// The range's start (`mprotect`), unless `from_return`.
    start: u64,
    len: u64,
    hook: u32,
    /// 1: the call returns the range's start (`mmap`, `shmat`), and maps nothing when it
    /// fails.
    from_return: u32,
}

/// The refusal for a file about to run as native code, with its identity.
#[repr(C)]
struct Refusal {
    ino: u64,
    dev: u32,
    rule: Rule,
}

/// Judges `file` (a `struct file *`) as native code.
#[inline(always)]
fn judge_file(file: *const u8) -> Result<Option<Refusal>, i32> {
    let mut refusal = Refusal {
        ino: 0,
        dev: 0,
        rule: Rule::FactsUnavailable,
    };
    match judge_file_into(file, &mut refusal) {
        0 => Ok(None),
        1 => Ok(Some(refusal)),
        e => Err(e),
    }
}

/// [`judge_file`]'s work, in a function of its own: the trust table it copies would not
/// fit in its callers' stack frames. Plain integers and pointers cross the call (the
/// kernel's BTF check refuses Rust enums in a signature): 0 allowed, 1 refused (`out`
/// says why), negative when a fact could not be read.
#[inline(never)]
fn judge_file_into(file: *const u8, out: &mut Refusal) -> i32 {
    match judge_facts(file) {
        Ok(None) => 0,
        Ok(Some(refusal)) => {
            *out = refusal;
            1
        }
        Err(_) => -1,
    }
}

#[inline(always)]
fn judge_facts(file: *const u8) -> Result<Option<Refusal>, i32> {
    let inode: *const u8 = kread(file, gate_setting!(offsets.file_inode))?;
    let mode: u16 = kread(inode, gate_setting!(offsets.inode_mode))?;
    let nlink: u32 = kread(inode, gate_setting!(offsets.inode_nlink))?;
    let uid: u32 = kread(inode, gate_setting!(offsets.inode_uid))?;
    let sb: *const u8 = kread(inode, gate_setting!(offsets.inode_sb))?;
    let fs_magic: u64 = kread(sb, gate_setting!(offsets.sb_magic))?;
    let user_ns: *const u8 = kread(sb, gate_setting!(offsets.sb_user_ns))?;
    let fs_user_ns_level: u32 = kread(user_ns, gate_setting!(offsets.user_ns_level))?;
    let code = CodeFile {
        mode: mode as u32,
        nlink,
        uid,
        fs_magic: fs_magic as u32,
        fs_user_ns_level,
    };
    let Some(rule) = judge_native(gate_setting!(native), &code, &gate_setting!(trust)) else {
        return Ok(None);
    };
    let ino: u64 = kread(inode, gate_setting!(offsets.inode_ino))?;
    let dev: u32 = kread(sb, gate_setting!(offsets.sb_dev))?;
    Ok(Some(Refusal { ino, dev, rule }))
}

/// Kills (unless permissive) for what `verdict` says; an unreadable fact is refused.
#[inline(always)]
fn apply(hook: u32, verdict: Result<Option<Refusal>, i32>) {
    let flags = gate_setting!(flags);
    match verdict {
        Ok(None) => {}
        Ok(Some(refusal)) => refuse(hook, refusal.rule, flags, refusal.ino, refusal.dev),
        Err(_) => refuse(hook, Rule::FactsUnavailable, flags, 0, 0),
    }
}

/// The exec's program and its ELF interpreter. Out of line: the exec gate's own frame is
/// full.
#[inline(never)]
pub fn judge_exec(bprm: *const u8) {
    apply(Hook::BprmCheckSecurity as u32, judge_program(bprm));
    apply(Hook::MmapFile as u32, judge_elf_interpreter());
}

#[inline(always)]
fn judge_program(bprm: *const u8) -> Result<Option<Refusal>, i32> {
    let file: *const u8 = kread(bprm, gate_setting!(offsets.bprm_file))?;
    judge_file(file)
}

/// The file mapped at `AT_BASE`, where the kernel put the program's `PT_INTERP` (none for a
/// static program). The path the program names is resolved in the exec'ing task's mount
/// namespace, which its user may have made (`unshare -rm` and a bind mount over
/// `/lib64/ld-linux-x86-64.so.2`).
#[inline(always)]
fn judge_elf_interpreter() -> Result<Option<Refusal>, i32> {
    // SAFETY: returns the current task, always valid in a tracing program.
    let task = unsafe { generated::bpf_get_current_task_btf() };
    let mm: *const u8 = kread(task.cast(), gate_setting!(offsets.task_mm))?;
    let auxv = mm.wrapping_add(gate_setting!(offsets.mm_saved_auxv) as usize);
    let mut base = 0u64;
    let mut i = 0;
    while i < AUXV_PAIRS {
        let key: u64 = kread(auxv, (16 * i) as u32)?;
        if key == AT_NULL {
            break;
        }
        if key == AT_BASE {
            base = kread(auxv, (16 * i + 8) as u32)?;
            break;
        }
        i += 1;
    }
    if base == 0 {
        return Ok(None);
    }
    // A program the kernel gave an interpreter has it mapped there: its absence is not
    // harmlessness.
    match find_vma(task, base)? {
        Some(vma) if !vma.file.is_null() => judge_file(vma.file),
        _ => Err(-1),
    }
}

/// What `bpf_find_vma`'s callback copies out of the mapping containing an address.
#[repr(C)]
struct VmaFacts {
    file: *const u8,
    flags: u64,
    end: u64,
    status: i32,
}

extern "C" fn vma_facts(_task: *mut task_struct, vma: *mut u8, ctx: *mut VmaFacts) -> i64 {
    // SAFETY: `ctx` is the `VmaFacts` find_vma passed, alive and unaliased during the call.
    let facts = unsafe { &mut *ctx };
    let vma = vma as *const u8;
    match (
        kread::<*const u8>(vma, gate_setting!(offsets.vma_file)),
        kread::<u64>(vma, gate_setting!(offsets.vma_flags)),
        kread::<u64>(vma, gate_setting!(offsets.vma_end)),
    ) {
        (Ok(file), Ok(flags), Ok(end)) => {
            facts.file = file;
            facts.flags = flags;
            facts.end = end;
            facts.status = 0;
        }
        _ => facts.status = -1,
    }
    0
}

/// The mapping of the current task that contains `addr`: `Ok(None)` when there is none,
/// `Err` when the address space stays locked or the mapping cannot be read.
#[inline(always)]
fn find_vma(task: *mut task_struct, addr: u64) -> Result<Option<VmaFacts>, i32> {
    let mut facts = VmaFacts {
        file: core::ptr::null(),
        flags: 0,
        end: 0,
        status: -1,
    };
    let mut attempt = 0;
    while attempt < FIND_ATTEMPTS {
        // SAFETY: `vma_facts` has the callback signature bpf_find_vma expects, and `facts`
        // outlives the call.
        let ret = unsafe {
            generated::bpf_find_vma(
                task,
                addr,
                vma_facts as *mut core::ffi::c_void,
                (&raw mut facts).cast(),
                0,
            )
        };
        if ret == 0 && facts.status == 0 {
            return Ok(Some(facts));
        } else if ret == -ENOENT {
            return Ok(None);
        } else if ret != -EBUSY {
            return Err(-1);
        }
        attempt += 1;
    }
    Err(-(EBUSY as i32))
}

/// State of a walk over a range's mappings, handed to each `bpf_loop` step. Plain fields
/// only: the verifier refuses the uninitialised payload bytes of a Rust enum stored here.
struct RangeWalk {
    task: *mut task_struct,
    addr: u64,
    end: u64,
    /// As [`judge_file_into`] returns: 0, 1 (`refusal` says why) or negative; 2 while the
    /// walk goes on.
    verdict: i32,
    refusal: Refusal,
}

const WALKING: i32 = 2;
/// The address space stayed locked: the mappings were not looked at.
const UNVERIFIED: i32 = 3;

/// Every executable file mapping in `[start, start + len)`, up to the first hole (a failed
/// `mprotect` changed what lies before it).
#[inline(always)]
fn judge_range(start: u64, len: u64) -> Result<Option<Refusal>, i32> {
    let mut walk = RangeWalk {
        // SAFETY: returns the current task, always valid in a tracing program.
        task: unsafe { generated::bpf_get_current_task_btf() },
        addr: start,
        end: start.saturating_add(len),
        verdict: WALKING,
        refusal: Refusal {
            ino: 0,
            dev: 0,
            rule: Rule::FactsUnavailable,
        },
    };
    bounded_loop(MAX_RANGE_VMAS, &mut walk);
    match walk.verdict {
        0 => Ok(None),
        1 => Ok(Some(walk.refusal)),
        // The task's own threads keep its address space locked (a JIT's mmap churn): what
        // its `mmap` asked for was judged by descriptor on entry, and a mapping made
        // executable by `mprotect` gives no more than anonymous executable memory, which
        // the rule allows. Counted, so it is not silent.
        UNVERIFIED => {
            crate::maps::count_unverified();
            Ok(None)
        }
        // More mappings than the walk reaches, or a fact it could not read.
        _ => Err(-1),
    }
}

/// One mapping of the walk.
impl LoopBody for RangeWalk {
    fn step(&mut self, _index: u64) -> ControlFlow<()> {
        if self.addr >= self.end {
            self.verdict = 0;
            return ControlFlow::Break(());
        }
        let vma = match find_vma(self.task, self.addr) {
            Ok(Some(vma)) => vma,
            Ok(None) => {
                self.verdict = 0;
                return ControlFlow::Break(());
            }
            Err(e) => {
                self.verdict = if e == -(EBUSY as i32) { UNVERIFIED } else { -1 };
                return ControlFlow::Break(());
            }
        };
        if vma.flags & VM_EXEC != 0 && !vma.file.is_null() {
            let verdict = judge_file_into(vma.file, &mut self.refusal);
            if verdict != 0 {
                self.verdict = verdict;
                return ControlFlow::Break(());
            }
        }
        if vma.end <= self.addr {
            self.verdict = -1;
            return ControlFlow::Break(());
        }
        self.addr = vma.end;
        ControlFlow::Continue(())
    }
}

/// The file behind descriptor `fd` of the current task.
#[inline(always)]
fn fd_file(fd: u64) -> Result<*const u8, i32> {
    // SAFETY: returns the current task, always valid in a tracing program.
    let task = unsafe { generated::bpf_get_current_task_btf() };
    let files: *const u8 = kread(task.cast(), gate_setting!(offsets.task_files))?;
    let fdt: *const u8 = kread(files, gate_setting!(offsets.files_fdt))?;
    let max: u32 = kread(fdt, gate_setting!(offsets.fdt_max_fds))?;
    if fd >= max as u64 {
        return Err(-1);
    }
    let table: *const u8 = kread(fdt, gate_setting!(offsets.fdt_fd))?;
    let file: *const u8 = kread(table, (fd * 8) as u32)?;
    if file.is_null() {
        return Err(-1);
    }
    Ok(file)
}

/// Whether a mapping with `prot` will be executable, as the kernel computes it.
#[inline(always)]
fn executable(prot: u64) -> bool {
    if prot & PROT_EXEC != 0 {
        return true;
    }
    if prot & PROT_READ == 0 {
        return false;
    }
    // SAFETY: returns the current task, always valid in a tracing program.
    let task = unsafe { generated::bpf_get_current_task_btf() };
    // Unreadable: judged as executable (the return path looks at the mapping itself).
    kread::<u32>(task.cast(), gate_setting!(offsets.task_personality))
        .map_or(true, |personality| personality & READ_IMPLIES_EXEC != 0)
}

fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: the record holds the syscall's six arguments from ARGS on.
    unsafe { ctx.read_at::<u64>(ARGS + 8 * n) }.unwrap_or(0)
}

fn remember(start: u64, len: u64, hook: u32, from_return: bool) {
    let pending = Pending {
        start,
        len,
        hook,
        from_return: from_return as u32,
    };
    crate::maps::pending_mapping_record(bpf_get_current_pid_tgid(), &pending);
}

/// The pending call of this thread, if it was executable, and the call's return value.
fn returned(ctx: &TracePointContext) -> Option<(Pending, u64)> {
    let pending = crate::maps::pending_mapping_take(bpf_get_current_pid_tgid())?;
    // SAFETY: the exit record's return value is at ARGS.
    let ret = unsafe { ctx.read_at::<u64>(ARGS) }.ok()?;
    Some((pending, ret))
}

/// A failed call returns `-errno`: nothing was mapped.
fn failed(ret: u64) -> bool {
    ret > u64::MAX - 4095
}

// mmap(addr, len, prot, flags, fd, off)
#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    if !enabled() || arg(&ctx, 3) & MAP_ANONYMOUS != 0 || !executable(arg(&ctx, 2)) {
        return 0;
    }
    // A bad descriptor fails the call itself; the return path judges what was mapped.
    if let Ok(file) = fd_file(arg(&ctx, 4)) {
        match judge_file(file) {
            Ok(None) => {}
            // Refused (and reported) once, before anything is mapped.
            verdict => {
                apply(Hook::MmapFile as u32, verdict);
                return 0;
            }
        }
    }
    remember(0, arg(&ctx, 1), Hook::MmapFile as u32, true);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    exit_mapping(&ctx);
    0
}

// shmat(shmid, shmaddr, shmflg): the segment's size is the mapping's.
#[tracepoint(category = "syscalls", name = "sys_enter_shmat")]
pub fn sys_enter_shmat(ctx: TracePointContext) -> u32 {
    // shmat maps read-only with SHM_RDONLY, else read-write: readable either way.
    if enabled() && (arg(&ctx, 2) & SHM_EXEC != 0 || executable(PROT_READ)) {
        remember(0, 1, Hook::MmapFile as u32, true);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_shmat")]
pub fn sys_exit_shmat(ctx: TracePointContext) -> u32 {
    exit_mapping(&ctx);
    0
}

// mprotect(start, len, prot) and pkey_mprotect(start, len, prot, pkey)
#[tracepoint(category = "syscalls", name = "sys_enter_mprotect")]
pub fn sys_enter_mprotect(ctx: TracePointContext) -> u32 {
    enter_protect(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mprotect")]
pub fn sys_exit_mprotect(ctx: TracePointContext) -> u32 {
    exit_mapping(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pkey_mprotect")]
pub fn sys_enter_pkey_mprotect(ctx: TracePointContext) -> u32 {
    enter_protect(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_pkey_mprotect")]
pub fn sys_exit_pkey_mprotect(ctx: TracePointContext) -> u32 {
    exit_mapping(&ctx);
    0
}

#[inline(always)]
fn enter_protect(ctx: &TracePointContext) {
    if !enabled() || !executable(arg(ctx, 2)) {
        return;
    }
    remember(arg(ctx, 0), arg(ctx, 1), Hook::FileMprotect as u32, false);
}

/// On return from an executable-mapping call: every executable file mapping it made.
#[inline(always)]
fn exit_mapping(ctx: &TracePointContext) {
    let Some((pending, ret)) = returned(ctx) else {
        return;
    };
    let start = if pending.from_return == 1 {
        if failed(ret) {
            return;
        }
        ret
    } else {
        pending.start
    };
    apply(pending.hook, judge_range(start, pending.len));
}
