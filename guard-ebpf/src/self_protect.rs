//! Self-protection ([`PROTECT_AGENT`]): the agent cannot be stopped or tampered with except
//! by its *controllers*: PID 1 (the init system: `systemctl stop guard`), the agent itself,
//! and the executables the loader puts in `LSM_CONTROLLERS` (guard's own binary, so
//! `guard debug lsm-unpin` works, and those the configuration names).
//!
//! * `task_kill`, `file_send_sigiotask`: no signal but the harmless ones
//!   ([`harmless_signal`]) to any thread of the protected process. Kernel-originated
//!   signals (the OOM killer, faults) do not pass through these hooks.
//! * `ptrace_access_check`: no `PTRACE_MODE_ATTACH` access (ptrace, `/proc/PID/mem`,
//!   `process_vm_writev`, `pidfd_getfd`); read-mode checks only disclose and stay allowed,
//!   so `ps`, `lsof` and `ls -l /proc/PID/exe` keep working.
//! * `bpf_map`, `bpf_prog`: no descriptor (by id or from a pin) for a map named `LSM_…` or a
//!   program in `LSM_OWN_PROGS`: whoever holds a map descriptor can rewrite the signer or
//!   interpreter lists.
//! * `inode_unlink`, `inode_rename`, `sb_umount`: the pins below guard's pin root stay, so
//!   the layer stays attached (fail closed) when the agent is gone.
//!
//! Each refusal is `EPERM`, reported as [`Rule::ControllerOnly`].

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    exec_gate::InterpreterKey,
    lsm::{
        OWN_MAP_PREFIX, PROTECT_AGENT, PTRACE_MODE_ATTACH, SelfProtectSettings, harmless_signal,
    },
};

use crate::kernel::kread;
use crate::lsm_common::{EPERM, InodeFacts, current_exe, inode_facts, refuse, setting};

/// Set by the loader like `LSM_SETTINGS`.
#[unsafe(no_mangle)]
pub static SELF_PROTECT_SETTINGS: SelfProtectSettings = SelfProtectSettings {
    task_tgid: 0,
    map_id: 0,
    map_name: 0,
    prog_aux: 0,
    aux_id: 0,
    dentry_parent: 0,
    vfsmount_sb: 0,
    pins_dev: 0,
    pins_ino: 0,
};

/// A field of the self-protection settings (see [`crate::kernel::loader_set`]).
macro_rules! protect_setting {
    ($field:ident) => {
        crate::kernel::loader_set(&raw const SELF_PROTECT_SETTINGS.$field)
    };
}

#[inline(always)]
fn enabled() -> bool {
    setting!(flags) & PROTECT_AGENT != 0
}

#[inline(always)]
fn protected_tgid() -> u32 {
    crate::maps::protected_tgid()
}

/// Whether the current task may act on the agent.
#[inline(always)]
fn is_controller() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The init system, by process rather than executable: it stays a controller across a
    // re-exec into an upgraded binary, and on a host whose PID 1 is a shell, other shells
    // do not become controllers.
    if tgid == 1 || tgid == protected_tgid() {
        return true;
    }
    match current_exe() {
        Ok(Some(exe)) => crate::maps::is_controller(&exe),
        _ => false,
    }
}

/// Whether `task` (a BTF `struct task_struct *`) belongs to the protected process.
#[inline(always)]
fn is_protected(task: *const u8) -> bool {
    let target = protected_tgid();
    target != 0 && kread::<u32>(task, protect_setting!(task_tgid)) == Ok(target)
}

/// Refuses, reporting `target` and `detail` (see `SelfProtectSettings`).
#[inline(always)]
fn refuse_target(hook: u32, target: u64, detail: u32) -> i32 {
    let facts = InodeFacts {
        key: InterpreterKey {
            ino: target,
            dev: 0,
            pad: 0,
        },
        mode: detail,
        nlink: 0,
    };
    refuse(hook, Rule::ControllerOnly, &facts, EPERM)
}

/// A signal to `task`: refused unless harmless or from a controller.
#[inline(always)]
fn judge_signal(hook: u32, task: *const u8, sig: i32) -> i32 {
    if !enabled() || harmless_signal(sig as u32) || !is_protected(task) || is_controller() {
        return 0;
    }
    refuse_target(hook, protected_tgid() as u64, sig as u32)
}

// task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
//           const struct cred *cred), then the previous verdict.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    judge_signal(Hook::TaskKill as u32, ctx.arg(0), ctx.arg(2))
}

// file_send_sigiotask(struct task_struct *tsk, struct fown_struct *fown, int sig), then the
// previous verdict: F_SETOWN + F_SETSIG lets anyone who can own a file aim any signal (even
// SIGKILL) at the agent, and the default SIGIO ends it too. The sender is whoever made the
// file ready, not who set the owner, so only the signal and the target are judged.
#[lsm(hook = "file_send_sigiotask")]
pub fn file_send_sigiotask(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let task: *const u8 = ctx.arg(0);
    let sig: i32 = ctx.arg(2);
    if !enabled() || !is_protected(task) {
        return 0;
    }
    // 0 means SIGIO (terminates by default).
    if sig != 0 && harmless_signal(sig as u32) {
        return 0;
    }
    refuse_target(
        Hook::FileSendSigiotask as u32,
        protected_tgid() as u64,
        sig as u32,
    )
}

// ptrace_access_check(struct task_struct *child, unsigned int mode), then the previous
// verdict.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let mode: u32 = ctx.arg(1);
    if !enabled() || mode & PTRACE_MODE_ATTACH == 0 || !is_protected(ctx.arg(0)) || is_controller()
    {
        return 0;
    }
    refuse_target(
        Hook::PtraceAccessCheck as u32,
        protected_tgid() as u64,
        mode,
    )
}

// bpf_map(struct bpf_map *map, fmode_t fmode), then the previous verdict: a descriptor for
// a map, at its creation, by id or from a pin.
#[lsm(hook = "bpf_map")]
pub fn bpf_map(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    if !enabled() {
        return 0;
    }
    let map: *const u8 = ctx.arg(0);
    let Ok(prefix) = kread::<[u8; 4]>(map, protect_setting!(map_name)) else {
        return -EPERM;
    };
    if prefix != OWN_MAP_PREFIX || is_controller() {
        return 0;
    }
    let id: u32 = kread(map, protect_setting!(map_id)).unwrap_or(0);
    let fmode: u32 = ctx.arg(1);
    refuse_target(Hook::BpfMap as u32, id as u64, fmode)
}

// bpf_prog(struct bpf_prog *prog), then the previous verdict.
#[lsm(hook = "bpf_prog")]
pub fn bpf_prog(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    if !enabled() {
        return 0;
    }
    let prog: *const u8 = ctx.arg(0);
    let Ok(aux) = kread::<*const u8>(prog, protect_setting!(prog_aux)) else {
        return -EPERM;
    };
    let Ok(id) = kread::<u32>(aux, protect_setting!(aux_id)) else {
        return -EPERM;
    };
    if !crate::maps::is_own_program(id) || is_controller() {
        return 0;
    }
    refuse_target(Hook::BpfProg as u32, id as u64, 0)
}

/// Whether `dentry` is a pin below guard's pin root: its parent or grandparent is the root.
#[inline(always)]
fn is_pin(dentry: *const u8) -> bool {
    let (dev, ino) = (protect_setting!(pins_dev), protect_setting!(pins_ino));
    if dev == 0 || dentry.is_null() {
        return false;
    }
    let parent_offset = protect_setting!(dentry_parent);
    let inode_offset = setting!(offsets.dentry_inode);
    let mut dentry = dentry;
    let mut level = 0;
    while level < 2 {
        let Ok(parent) = kread::<*const u8>(dentry, parent_offset) else {
            return false;
        };
        if parent.is_null() || parent == dentry {
            return false;
        }
        let Ok(inode) = kread::<*const u8>(parent, inode_offset) else {
            return false;
        };
        if let Ok(key) = crate::lsm_common::inode_key(inode)
            && key.dev == dev
            && key.ino == ino
        {
            return true;
        }
        dentry = parent;
        level += 1;
    }
    false
}

#[inline(always)]
fn judge_pin(hook: u32, dentry: *const u8) -> i32 {
    if !enabled() || !is_pin(dentry) || is_controller() {
        return 0;
    }
    let Ok(inode) = kread::<*const u8>(dentry, setting!(offsets.dentry_inode)) else {
        return -EPERM;
    };
    match inode_facts(inode) {
        Ok(facts) => refuse(hook, Rule::ControllerOnly, &facts, EPERM),
        Err(_) => -EPERM,
    }
}

// inode_unlink(struct inode *dir, struct dentry *dentry), then the previous verdict.
#[lsm(hook = "inode_unlink")]
pub fn pin_unlink(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    judge_pin(Hook::PinUnlink as u32, ctx.arg(1))
}

// inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
//              struct dentry *new_dentry), then the previous verdict: moving a pin away, or
// another file over one, drops it.
#[lsm(hook = "inode_rename")]
pub fn pin_rename(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    let verdict = judge_pin(Hook::PinRename as u32, ctx.arg(1));
    if verdict != 0 {
        return verdict;
    }
    judge_pin(Hook::PinRename as u32, ctx.arg(3))
}

// sb_umount(struct vfsmount *mnt, int flags), then the previous verdict: unmounting the
// BPF filesystem that holds the pins releases them all.
#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let dev = protect_setting!(pins_dev);
    if !enabled() || dev == 0 {
        return 0;
    }
    let mnt: *const u8 = ctx.arg(0);
    let Ok(sb) = kread::<*const u8>(mnt, protect_setting!(vfsmount_sb)) else {
        return -EPERM;
    };
    let Ok(s_dev) = kread::<u32>(sb, setting!(offsets.sb_dev)) else {
        return -EPERM;
    };
    if s_dev != dev || is_controller() {
        return 0;
    }
    refuse_target(Hook::SbUmount as u32, 0, s_dev)
}

/// Clears the protection when the protected process exits (from `sched_process_exit`).
#[inline(always)]
pub fn protected_exited(tgid: u32) {
    crate::maps::protected_exited(tgid);
}
