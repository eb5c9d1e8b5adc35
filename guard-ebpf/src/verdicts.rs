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
//!
//! While an interpreter holds verified code open (counted from `file_post_open`, after
//! fanotify allowed the open, to `file_release`), write opens and truncation of it are
//! refused: a check at open cannot cover a writer that comes after it. A writer that comes
//! while the agent is still checking (between `file_open` and `file_post_open`) is not
//! refused, so the interpreter's open is: `file_post_open` compares the inode's content
//! changes with those `file_open` recorded in the task's own record ([`standing`],
//! [`content_unchanged_since_open`]).

use aya_ebpf::{macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    lsm::{ATTR_SIZE, ENFORCE_FILE_OPEN, FMODE_READ, FMODE_WRITE, S_IFMT, S_IFREG, VERDICT_CACHE},
};

use crate::kernel::kread;
use crate::lsm_common::{
    EACCES, current_exe, dentry_inode, file_inode, inode_facts, refuse, setting,
};
use crate::maps::{
    Inode, InodeStateRef, is_interpreter, reader_file_add, reader_file_take, verdict_changes,
};
use guard_common::code_name::MainScript;

/// How `file_open` stands on an interpreter's read of a linked regular file.
pub enum Standing {
    /// The agent verified this content and nothing changed since.
    Verified,
    /// No valid verdict: the agent must decide (or, when it is down, the kernel refuses).
    Unverified,
    /// No memory to track the inode or this open: nothing can vouch for what is read.
    Untracked,
}

/// Records, for the agent, whether the file is open for writing as the interpreter opens it
/// (`writers_at_open`), and whether a valid verdict covers it. A file open for writing is
/// never verified: its content can change under the reader. Also records, for
/// `file_post_open`, the content changes this open of `file` starts from.
#[inline(always)]
pub fn standing(file: *const u8, inode: Inode, script: Option<&mut MainScript>) -> Standing {
    let writers = kread::<i32>(inode.0, setting!(offsets.inode_writecount)).unwrap_or(1) > 0;
    let Some(state) = InodeStateRef::of_or_create(inode) else {
        // No memory for the state: nothing can vouch for the file.
        return Standing::Untracked;
    };
    state.set_writers_at_open(writers);
    let changes = state.changes();
    // No record of the task (no memory): the open could not be followed to its end.
    let Some(script) = script else {
        return Standing::Untracked;
    };
    script.record_opening(file as u64, state.content_changes());
    if !writers && verified_at(inode, changes) {
        Standing::Verified
    } else {
        Standing::Unverified
    }
}

/// Whether the agent's verdict on the inode is stamped with `changes`, the current count.
#[inline(always)]
fn verified_at(inode: Inode, changes: u64) -> bool {
    verdict_changes(inode) == Some(changes)
}

/// Whether the inode is verified code that an interpreter is reading now: then nobody may
/// change it (`-EACCES` from the hook), as nobody may write a running executable.
#[inline(always)]
pub fn code_in_use(inode: Inode) -> bool {
    if setting!(flags) & VERDICT_CACHE == 0 || inode.is_null() {
        return false;
    }
    let Some(state) = InodeStateRef::of(inode) else {
        return false;
    };
    state.code_readers() > 0 && verified_at(inode, state.changes())
}

/// Counts an interpreter's read-only open of a regular file that went through (after
/// fanotify allowed it), once per `struct file`.
#[inline(always)]
pub fn reader_opened(file: *const u8, inode: Inode) {
    // Not counted (no state, or the table is full): then never uncounted either.
    if let Some(state) = InodeStateRef::of(inode)
        && reader_file_add(file as u64)
    {
        state.add_code_readers(1);
    }
}

/// Uncounts a released file counted by [`reader_opened`].
#[inline(always)]
fn reader_released(file: *const u8) {
    if !reader_file_take(file as u64) {
        return;
    }
    if let Some(state) = InodeStateRef::of(file_inode(file)) {
        // Adding u32::MAX wraps to subtracting one.
        state.add_code_readers(u32::MAX);
    }
}

/// Counts a change of the inode: every verdict stamped before it is void.
#[inline(always)]
pub fn changed(inode: Inode) {
    count_change(inode, false);
}

/// A change of the bytes themselves (a write open, a truncation): counted as a change, and
/// as one an interpreter's open in progress must not miss.
#[inline(always)]
fn content_changed(inode: Inode) {
    count_change(inode, true);
}

#[inline(always)]
fn count_change(inode: Inode, content: bool) {
    if setting!(flags) & VERDICT_CACHE == 0 || inode.is_null() {
        return;
    }
    // No state: never opened by an interpreter since the layer loaded, so no verdict to
    // void and no open in progress.
    if let Some(state) = InodeStateRef::of(inode) {
        state.count_change(content);
    }
}

/// Whether the content of the file an interpreter is opening stayed as it was when
/// `file_open` recorded it ([`standing`]); forgets the record.
///
/// No record means this layer did not judge the open at `file_open`: the executable became
/// a known interpreter's in between (the agent adopts a new identity, a package upgrade's
/// python), or the layer was replaced in between (a policy reload loads a new one, with
/// maps of its own). The agent checked the open all the same; only the window stays as it
/// was before this check. A record whose inode state is gone cannot vouch: `false`.
#[inline(always)]
fn content_unchanged_since_open(file: *const u8, inode: Inode) -> bool {
    let Some(seen) = crate::maps::main_script(false).and_then(|s| s.take_opening(file as u64))
    else {
        return true;
    };
    InodeStateRef::of(inode).is_some_and(|state| state.content_changes() == seen)
}

/// `changed` for the inode of a dentry (null for a negative dentry).
#[inline(always)]
pub fn dentry_changed(dentry: *const u8) {
    if dentry.is_null() {
        return;
    }
    changed(dentry_inode(dentry));
}

/// A file opened for writing: refused (`true`) while it is verified code an interpreter is
/// reading, else counted as a change.
#[inline(always)]
pub fn write_open_refused(file: *const u8) -> bool {
    let Ok(f_mode) = kread::<u32>(file, setting!(offsets.file_mode)) else {
        return false;
    };
    if f_mode & FMODE_WRITE == 0 {
        return false;
    }
    let inode = file_inode(file);
    if code_in_use(inode) {
        return true;
    }
    content_changed(inode);
    false
}

// file_release(struct file *file): a writer is done, whatever it wrote is there now; or an
// interpreter is done reading.
#[lsm(hook = "file_release")]
pub fn file_release(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    if setting!(flags) & VERDICT_CACHE == 0 {
        return 0;
    }
    reader_released(file);
    if let Ok(f_mode) = kread::<u32>(file, setting!(offsets.file_mode))
        && f_mode & FMODE_WRITE != 0
    {
        changed(file_inode(file));
    }
    0
}

// inode_setattr(struct mnt_idmap *, struct dentry *, struct iattr *), then the previous
// verdict. Truncating verified code an interpreter is reading is refused.
#[lsm(hook = "inode_setattr")]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let dentry: *const u8 = ctx.arg(1);
    let iattr: *const u8 = ctx.arg(2);
    let truncates = kread::<u32>(iattr, setting!(offsets.iattr_valid))
        .map_or(true, |valid| valid & ATTR_SIZE != 0);
    let inode = dentry_inode(dentry);
    if truncates && code_in_use(inode) {
        return match kread::<*const u8>(dentry, setting!(offsets.dentry_inode)).map(inode_facts) {
            Ok(Ok(facts)) => refuse(
                Hook::InodeSetattr as u32,
                Rule::NoOpenWriters,
                &facts,
                EACCES,
            ),
            _ => -EACCES,
        };
    }
    if truncates {
        content_changed(inode);
    } else {
        changed(inode);
    }
    0
}

// file_post_open(struct file *file, int mask), then the previous verdict: the open went
// through (fanotify allowed it), so the file will be released; count an interpreter's read,
// unless its content changed while the agent was checking it (then refuse the open).
#[lsm(hook = "file_post_open")]
pub fn file_post_open(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(2);
    if retval != 0 || setting!(flags) & VERDICT_CACHE == 0 {
        return retval;
    }
    let file: *const u8 = ctx.arg(0);
    let Ok(f_mode) = kread::<u32>(file, setting!(offsets.file_mode)) else {
        return 0;
    };
    if f_mode & (FMODE_READ | FMODE_WRITE) != FMODE_READ {
        return 0;
    }
    match current_exe() {
        Ok(Some(exe)) if is_interpreter(&exe) => {}
        _ => return 0,
    }
    let inode = file_inode(file);
    // `file_open` recorded exactly these opens (an interpreter's read of a regular file it
    // judged), when it judges at all.
    if setting!(flags) & ENFORCE_FILE_OPEN != 0 {
        let Ok(facts) = inode_facts(inode.0) else {
            return -EACCES;
        };
        if facts.mode & S_IFMT == S_IFREG && !content_unchanged_since_open(file, inode) {
            return refuse(Hook::FileOpen as u32, Rule::NoOpenWriters, &facts, EACCES);
        }
    }
    reader_opened(file, inode);
    0
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
