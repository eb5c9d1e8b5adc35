//! The per-inode verdict cache and the hooks that keep it honest.
//!
//! The agent verifies a file's signature in user space and then records a verdict in
//! `LSM_VERDICTS` (inode storage, keyed from user space by the file descriptor it checked),
//! stamped with the inode's change count it read *before* looking at the file. The kernel
//! counts changes in `LSM_INODE_STATE`: every write open and its release, setattr
//! (truncate, chmod, chown), rename, link, unlink and xattr change. A verdict stamped with
//! an older count is void, so no change can slip between the check and the use.
//!
//! `file_open` uses a valid verdict without asking anyone; while the agent is down it
//! refuses interpreters' reads of regular files that have none (fail closed).

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};
use guard_common::lsm::{FMODE_WRITE, InodeState, VERDICT_CACHE};

use crate::lsm_common::{LSM_INODE_STATE, LSM_VERDICTS, btf_member, kread, setting};

/// How `file_open` stands on an interpreter's read of a linked regular file.
pub enum Standing {
    /// The agent verified this content and nothing changed since.
    Verified,
    /// No valid verdict: the agent must decide (or, when it is down, the kernel refuses).
    Unverified,
}

/// Records, for the agent, whether the file is open for writing as the interpreter opens it
/// (`writers_at_open`), and whether a valid verdict covers it. A file open for writing is
/// never verified: its content can change under the reader.
#[inline(always)]
pub fn standing(inode_ptr: *mut u8) -> Standing {
    let writers = kread::<i32>(inode_ptr, setting!(offsets.inode_writecount)).unwrap_or(1) > 0;
    let mut fresh = InodeState::default();
    // SAFETY: `inode_ptr` is the BTF-typed `file->f_inode` of the hook's file.
    let state = unsafe {
        LSM_INODE_STATE.get_or_insert_ptr_mut(inode_ptr.cast::<inode>(), Some(&mut fresh))
    };
    if state.is_null() {
        // No memory for the state: nothing can vouch for the file.
        return Standing::Unverified;
    }
    // SAFETY: a non-null pointer from bpf_inode_storage_get is the inode's value, alive
    // for the program's run; concurrent writers of this field all store the same meaning.
    let changes = unsafe {
        (*state).writers_at_open = writers as u32;
        core::ptr::read_volatile(&raw const (*state).changes)
    };
    if writers {
        return Standing::Unverified;
    }
    // SAFETY: as above, for the verdict storage (looked up, never created here).
    let verdict = unsafe { LSM_VERDICTS.get_ptr_mut(inode_ptr.cast::<inode>()) };
    // SAFETY: non-null means the inode's value, alive for the program's run.
    if !verdict.is_null() && unsafe { (*verdict).changes } == changes {
        Standing::Verified
    } else {
        Standing::Unverified
    }
}

/// Counts a change of the inode: every verdict stamped before it is void.
#[inline(always)]
pub fn changed(inode_ptr: *mut u8) {
    if setting!(flags) & VERDICT_CACHE == 0 || inode_ptr.is_null() {
        return;
    }
    // SAFETY: `inode_ptr` is a BTF-typed inode pointer (or the helper rejects it).
    let state = unsafe { LSM_INODE_STATE.get_ptr_mut(inode_ptr.cast::<inode>()) };
    if state.is_null() {
        // Never opened by an interpreter since it was loaded: no verdict to void.
        return;
    }
    // SAFETY: the inode's value, alive for the program's run. Atomic (BPF_ATOMIC_ADD) so
    // that concurrent changes are all counted: a lost count could leave a truncation
    // racing another change unseen. core's AtomicU64 has no fetch_add on this target.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &raw mut (*state).changes,
            1,
        )
    };
}

/// `changed` for the inode of a dentry (null for a negative dentry).
#[inline(always)]
pub fn dentry_changed(dentry: *const u8) {
    if dentry.is_null() {
        return;
    }
    let offset = setting!(offsets.dentry_inode);
    // SAFETY: `dentry` is a BTF-typed hook argument; `d_inode` is a pointer member.
    changed(unsafe { btf_member(dentry, offset) });
}

/// `changed` for a file opened for writing.
#[inline(always)]
pub fn written_file(file: *const u8) {
    let Ok(f_mode) = kread::<u32>(file, setting!(offsets.file_mode)) else {
        return;
    };
    if f_mode & FMODE_WRITE != 0 {
        let offset = setting!(offsets.file_inode);
        // SAFETY: `file` is a BTF-typed hook argument; `f_inode` is a pointer member.
        changed(unsafe { btf_member(file, offset) });
    }
}

// file_release(struct file *file): a writer is done, whatever it wrote is there now.
#[lsm(hook = "file_release")]
pub fn file_release(ctx: LsmContext) -> i32 {
    written_file(ctx.arg(0));
    0
}

// inode_setattr(struct mnt_idmap *, struct dentry *, struct iattr *), then the previous
// verdict.
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    dentry_changed(ctx.arg(1));
    ctx.arg(3)
}

// inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
//              struct dentry *new_dentry), then the previous verdict.
#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    dentry_changed(ctx.arg(1));
    dentry_changed(ctx.arg(3));
    ctx.arg(4)
}

// inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry), then
// the previous verdict.
#[lsm(hook = "inode_link")]
pub fn inode_link(ctx: LsmContext) -> i32 {
    dentry_changed(ctx.arg(0));
    ctx.arg(3)
}

// inode_unlink(struct inode *dir, struct dentry *dentry), then the previous verdict.
#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    dentry_changed(ctx.arg(1));
    ctx.arg(2)
}
