//! fanotify's own verdict cache: an evictable inode ignore mark on a file whose open was
//! allowed for every opener and every way of opening it, so the kernel stops asking for
//! that file until something about it changes.
//!
//! What clears a mark, and what does not:
//! - a write or a truncate: the kernel clears the ignore mask itself (FS_MODIFY, the mark
//!   is made without `FAN_MARK_IGNORED_SURV_MODIFY`);
//! - chmod, chown, an xattr (a signature, an ACL), a link count change (unlink, rename
//!   over, a hard link), utimes: FS_ATTRIB, which the kernel does *not* clear a mark for;
//!   and a rename of the file itself (FS_MOVE_SELF: a new name may be an interpreter
//!   module's). A second group (notification class, `FAN_REPORT_FID`, the only class that
//!   may watch these) watches each kept file for them, and any event there drops every
//!   ignore mark; so does an overflow of that group's queue;
//! - a policy reload (keys, owners, filesystems, `audit.log_allows`): drops every mark,
//!   and a decision made under the previous policy cannot put one back (the generation);
//! - the inode leaving the cache: the mark goes with it (evictable: it never pins one);
//! - the agent stopping: the group, and with it every mark, is gone.
//!
//! Host mode only: with the BPF LSM layer, whether someone holds the file open for writing
//! at each open is a fact the agent decides on (`no-open-writers`), which a mark would skip.
//!
//! The mark covers `FAN_OPEN_PERM` only: an exec of the file is still seen (identities
//! adopted at exec follow the executable, whatever was cached on it).
//!
//! A signed file another program opens (a backup, `tar`, a package manager) is verified
//! ahead, off the reader's path and after its open was answered, so its first open by an
//! interpreter already costs nothing: its verdict does not depend on who opens it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use super::stats::{Stats, bump};
use super::{Loaded, State};
use crate::cache::ContentKey;
use crate::engine::{CodeKind, FileId};

/// What drops every mark when it happens to a kept file: an attribute or link count change,
/// and a rename (no attribute event): renamed to an interpreter module's path (a package
/// manager's `timeit.py.dpkg-new` renamed over `timeit.py`), a file becomes one, which is
/// never kept.
const WATCHED: MaskFlags = MaskFlags::FAN_ATTRIB.union(MaskFlags::FAN_MOVE_SELF);

/// How many answered opens may wait for verification ahead; more are dropped.
const AHEAD_QUEUE: usize = 64;

/// Files bigger than this are not verified ahead: their first interpreter open pays.
const AHEAD_MAX_SIZE: u64 = 64 << 20;

/// An open the reader answered without reading the file: an opener that is no interpreter.
pub struct Ahead {
    pub event: nix::sys::fanotify::FanotifyEvent,
    pub loaded: Arc<Loaded>,
    pub generation: u64,
}

/// The ignore marks of the main group and the watch that drops them.
pub struct IgnoreMarks {
    main: Arc<Fanotify>,
    changes: Fanotify,
    stats: Arc<Stats>,
    ahead: crossbeam_channel::Sender<Ahead>,
    /// Off for good after the kernel refused a mark for a reason other than its limit (a
    /// kernel without evictable marks): nothing is cached, every open is asked.
    usable: AtomicBool,
}

/// What a verdict rests on of a file: its content's version (identity, size, times:
/// chmod, chown, ACLs and other xattrs move ctime), owner, mode and links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileState {
    version: ContentKey,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
}

impl FileState {
    /// The state an interpreter's open was decided on.
    pub fn of(object: &crate::engine::Object) -> FileState {
        FileState {
            version: ContentKey::of(object),
            mode: object.mode,
            uid: object.uid,
            gid: object.gid,
            nlink: object.nlink,
        }
    }

    fn now(fd: BorrowedFd<'_>) -> nix::Result<FileState> {
        let st = nix::sys::stat::fstat(fd)?;
        Ok(FileState {
            version: ContentKey::of_stat(&st),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
        })
    }
}

impl IgnoreMarks {
    /// The watch group for `main`'s marks and its reader thread; `None` (and every open
    /// asked, as before) when the kernel has no such group.
    pub fn start(main: Arc<Fanotify>, state: &Arc<State>) -> Option<Arc<IgnoreMarks>> {
        let changes = match Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::from_bits_retain(libc::FAN_REPORT_FID),
            EventFFlags::O_RDONLY | EventFFlags::O_CLOEXEC,
        ) {
            Ok(group) => group,
            Err(e) => {
                log::warn!(
                    "no attribute-change watch (fanotify_init FAN_REPORT_FID: {e}): verdicts \
                     are not cached in the kernel"
                );
                return None;
            }
        };
        // Each offer holds a descriptor: a short queue, so the agent never nears its
        // descriptor limit (the kernel refuses the opens it cannot hand the agent).
        let (ahead, offered) = crossbeam_channel::bounded::<Ahead>(AHEAD_QUEUE);
        let marks = Arc::new(IgnoreMarks {
            main,
            changes,
            stats: state.stats.clone(),
            ahead,
            usable: AtomicBool::new(true),
        });
        let watcher = marks.clone();
        let watcher_state = state.clone();
        let verifier = marks.clone();
        let verifier_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("guard-attrib".into())
            .spawn(move || watcher.watch(&watcher_state))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("guard-ahead".into())
                    .spawn(move || {
                        while let Ok(ahead) = offered.recv() {
                            verifier.verify_ahead(&verifier_state, ahead);
                        }
                    })
            });
        if let Err(e) = spawned {
            log::warn!("no attribute-change watch ({e}): verdicts are not cached in the kernel");
            return None;
        }
        Some(marks)
    }

    /// Leaves the opens of `fd`'s file to the kernel while nothing about it changes, for a
    /// verdict [`crate::engine::same_for_every_open`] says may be. `verified` is what the
    /// decision read of the file, `generation` the policy's when the event was sorted. A
    /// mark that cannot be made is no loss: the next open is asked, as before.
    pub fn keep(&self, fd: BorrowedFd<'_>, verified: &FileState, generation: u64, state: &State) {
        // With the BPF LSM layer, an open of a file someone holds open for writing is left
        // to the agent (`no-open-writers`, from what the kernel saw at that very open): an
        // ignore mark would answer it unasked. The layer keeps its own inode verdicts.
        if !self.usable.load(Ordering::Relaxed) || state.kernel_verdicts().is_some() {
            return;
        }
        // The watch first: a change after it is seen, and drops the mark made below.
        if let Err(e) = self.changes.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_EVICTABLE,
            WATCHED,
            fd,
            None::<&std::path::Path>,
        ) {
            self.refused("watching a file's attributes", e);
            return;
        }
        if let Err(e) = self.main.mark(
            MarkFlags::FAN_MARK_ADD
                | MarkFlags::FAN_MARK_IGNORED_MASK
                | MarkFlags::FAN_MARK_EVICTABLE,
            MaskFlags::FAN_OPEN_PERM,
            fd,
            None::<&std::path::Path>,
        ) {
            self.refused("an ignore mark", e);
            return;
        }
        bump(&self.stats.kernel_kept);
        // A change between the decision's look and the watch was not seen by it, and a
        // reload (or the LSM layer's arrival) between the sorting and now could not drop
        // this mark: take it back.
        let unchanged = FileState::now(fd).is_ok_and(|now| now == *verified);
        // Nor may the kernel answer unasked while code loads are refused for want of an
        // audit trail (the supervisor drops every mark when that begins).
        if !unchanged
            || state.generation() != generation
            || state.kernel_verdicts().is_some()
            || state.refusing_unrecorded(&state.loaded().policy)
        {
            self.drop_one(fd);
        }
    }

    /// Hands an answered open to the verifier ahead; dropped when it is behind (the open
    /// was answered, the next one is asked as before).
    pub fn offer(&self, ahead: Ahead) {
        if self.usable.load(Ordering::Relaxed) {
            let _ = self.ahead.try_send(ahead);
        }
    }

    /// Verifies a file another program opened as an interpreter's open of it as code would
    /// be, and keeps the verdict when it is the same for every open: only a file that
    /// carries a signature (the rest would be hashed for nothing), not an interpreter
    /// module's, and no runner (a verdict that depends on one is not kept).
    fn verify_ahead(&self, state: &State, ahead: Ahead) {
        let Some(fd) = ahead.event.fd() else { return };
        let loaded = &ahead.loaded;
        let policy = &loaded.policy;
        if policy.audit.log_allows
            || policy.interpreters.is_empty()
            || state.stopping()
            || state.kernel_verdicts().is_some()
        {
            return;
        }
        let Ok(owned) = fd.try_clone_to_owned() else {
            return;
        };
        let file = std::fs::File::from(owned);
        if crate::keys::read_signature(&file).is_err() {
            return;
        }
        let Ok(meta) = file.metadata() else { return };
        if !meta.is_file() || meta.len() > AHEAD_MAX_SIZE {
            return;
        }
        let id = {
            use std::os::unix::fs::MetadataExt;
            FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
        if loaded.modules.may_be_one(id, path.as_deref()) {
            return;
        }
        let Ok(object) = crate::facts::object_with(&file, &meta, CodeKind::Source) else {
            return;
        };
        let runner = || -> std::io::Result<crate::engine::Runner> {
            Err(std::io::Error::other("verified ahead of any interpreter"))
        };
        let (verdict, _) =
            crate::facts::decide_file(policy, 0, &file, &object, runner, Some(&state.cache));
        if crate::engine::same_for_every_open(policy, &object, &verdict) {
            self.keep(fd, &FileState::of(&object), ahead.generation, state);
        }
    }

    /// Drops every ignore mark: the next open of every file is asked again.
    pub fn forget_all(&self) {
        bump(&self.stats.kernel_forgotten);
        // FAN_MARK_FLUSH without a mount or filesystem flag: the inode marks only, which
        // in the main group are these ignore marks alone.
        if let Err(e) = self.main.mark(
            MarkFlags::FAN_MARK_FLUSH,
            MaskFlags::empty(),
            nix::fcntl::AT_FDCWD,
            None::<&std::path::Path>,
        ) {
            // Nothing else can take the marks back: stop the one group that holds them
            // from being trusted again, and say so.
            self.usable.store(false, Ordering::SeqCst);
            log::error!("dropping the kernel's cached verdicts failed: {e}");
        }
    }

    fn drop_one(&self, fd: BorrowedFd<'_>) {
        if self
            .main
            .mark(
                MarkFlags::FAN_MARK_REMOVE | MarkFlags::FAN_MARK_IGNORED_MASK,
                MaskFlags::FAN_OPEN_PERM,
                fd,
                None::<&std::path::Path>,
            )
            .is_err()
        {
            self.forget_all();
        }
    }

    fn refused(&self, what: &str, e: nix::errno::Errno) {
        // The per-user mark limit: this file is asked each time, the others stay cached.
        if e == nix::errno::Errno::ENOSPC {
            return;
        }
        // A filesystem without file handles (no FID events) cannot be watched: its files
        // are not cached, others are.
        if matches!(
            e,
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EXDEV | nix::errno::Errno::ENODEV
        ) {
            return;
        }
        if self.usable.swap(false, Ordering::SeqCst) {
            log::warn!("{what}: {e}: verdicts are not cached in the kernel from now on");
        }
        self.forget_all();
    }

    /// Any attribute change of a kept file, or a lost event, drops every mark. Which file
    /// changed is not worth finding out: its handle may not open any more (unlinked), and
    /// the rest refill from the agent's own cache at their next open.
    fn watch(&self, state: &State) {
        let mut buffer = vec![0u8; 16 * 1024];
        while !state.stopping() {
            let mut fds = [PollFd::new(self.changes.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("poll on the attribute-change watch: {e}");
                    self.usable.store(false, Ordering::SeqCst);
                    self.forget_all();
                    return;
                }
            }
            let mut changed = false;
            loop {
                match nix::unistd::read(&self.changes, &mut buffer) {
                    Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
                    Ok(_) => changed = true,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        log::error!("reading the attribute-change watch: {e}");
                        changed = true;
                        break;
                    }
                }
            }
            if changed {
                self.forget_all();
            }
        }
    }
}
