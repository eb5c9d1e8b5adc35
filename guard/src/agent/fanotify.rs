//! The fanotify backend: one `FAN_CLASS_CONTENT` group with filesystem marks, permission
//! events answered by a pool of workers.
//!
//! The reading thread only sorts events: the agent's own opens are allowed on the spot
//! (anything else would deadlock it), the rest go to workers, which gather facts, ask the
//! engine, answer the kernel, and only then hand the record to the audit thread.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use crossbeam_channel::{Receiver, TrySendError, bounded};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};

use super::audit::AuditRecord;
use super::ignore_marks::{Ahead, FileState, IgnoreMarks};
use super::stats::bump;
use super::{Config, Loaded, State, mounts, opener, process};
use crate::engine::{CodeKind, Runner, Verdict, facts_unavailable};
use crate::facts::{self, Lookup};
use crate::policy::Profile;

const PERMISSION_EVENTS: MaskFlags = MaskFlags::FAN_OPEN_PERM.union(MaskFlags::FAN_OPEN_EXEC_PERM);

/// The fanotify backend as the supervisor runs it: the main group with its filesystem
/// marks (and the isolated groups' reader threads), the queue and the workers.
pub(super) struct FanotifyBackend {
    group: Arc<Fanotify>,
    queue: crossbeam_channel::Sender<Job>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// How many filesystems are marked.
    pub watched: usize,
}

impl FanotifyBackend {
    pub(super) fn start(config: &Config, state: &Arc<State>) -> anyhow::Result<FanotifyBackend> {
        let group =
            Arc::new(new_group().context(
                "fanotify_init (needs CAP_SYS_ADMIN and a kernel with permission events)",
            )?);
        if let Some(marks) = super::ignore_marks::IgnoreMarks::start(group.clone(), state) {
            let _ = state.ignore_marks.set(marks);
        }
        let watched = mark_filesystems(&group, config, state)?;
        let (queue, jobs) = bounded::<Job>(4096);
        let mut workers = Vec::new();
        for index in 0..config.workers.max(1) {
            let group = group.clone();
            let state = state.clone();
            let jobs = jobs.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("guard-worker-{index}"))
                    .spawn(move || work(&group, &state, &jobs))?,
            );
        }
        Ok(FanotifyBackend {
            group,
            queue,
            workers,
            watched,
        })
    }

    /// Reads what the main group has and hands each interpreter's open to the workers.
    pub(super) fn read(&self, state: &State, own_pid: i32) {
        let group = &self.group;
        let mut dispatch = |job: Job| {
            state.queued.fetch_add(1, Ordering::Relaxed);
            match self.queue.try_send(job) {
                Ok(()) => {}
                // Every worker is busy and the queue full (workers stuck on a user's FUSE
                // daemon, a flood of opens): the reader never waits, or every open on every
                // marked filesystem would. The open is answered now, as a fact not
                // established.
                Err(TrySendError::Full(job)) => {
                    state.queued.fetch_sub(1, Ordering::Relaxed);
                    bump(&state.stats.saturated);
                    answer_unavailable(
                        group,
                        state,
                        job,
                        "every worker is busy and the queue is full: refused rather than waited on",
                    );
                }
                // Workers are gone (shutting down): answer here rather than leave it hanging.
                Err(TrySendError::Disconnected(job)) => {
                    state.queued.fetch_sub(1, Ordering::Relaxed);
                    if let Some(fd) = job.event.fd() {
                        respond(group, state, fd, true);
                    }
                }
            }
        };
        // Only the main group's files (trusted filesystem types) are verified ahead.
        let ahead = state.ignore_marks.get().map(Arc::as_ref);
        read_events(group, state, own_pid, ahead, &mut dispatch);
    }

    /// Workers drain what is queued and answer it; then closing the group lets the kernel
    /// allow anything still pending (fanotify's own semantics: see the README). Readers of
    /// untrusted filesystems are not waited for: one may be stuck on a server that never
    /// answers, and ends with the process.
    pub(super) fn stop(self) {
        drop(self.queue);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

impl AsFd for FanotifyBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

/// Which groups read which filesystems' events.
///
/// Filesystems of trusted types share the main group: one reader thread answers openers that
/// are not interpreters on the spot and hands interpreters' opens to the workers, which read
/// content (sniffing, hashing). Every filesystem of an untrusted type gets a group and a
/// reader thread of its own that also decides its interpreters' opens itself. The kernel
/// opens each event's file *inside* the reader's `read()` (on FUSE a request to the daemon,
/// on NFS an RPC), so a daemon that never answers, or a server that is down, would stop a
/// shared reader and with it every open on the host; apart, it stops only opens on its own
/// filesystem, which were waiting for that server anyway. Past [`MAX_ISOLATED`] groups the
/// rest share one more group (fanotify groups are limited per user, 128 by default).
struct Marker {
    main: Arc<Fanotify>,
    state: Arc<State>,
    isolated: Vec<Isolated>,
    shared: Option<Arc<Fanotify>>,
    /// Only filesystems mounted at or below these paths (`--watch … --follow`).
    scope: Option<Vec<std::path::PathBuf>>,
}

/// A group of its own for one filesystem of an untrusted type.
struct Isolated {
    group: Arc<Fanotify>,
    /// Set by its reader when the filesystem has gone and the reader has stopped.
    done: Arc<AtomicBool>,
}

/// Groups of their own for filesystems of untrusted types, at most.
const MAX_ISOLATED: usize = 64;

fn new_group() -> nix::Result<Fanotify> {
    use super::kernel_audit::FANOTIFY_AUDIT;
    // FAN_REPORT_TID: the thread that opened, whose syscall holds the path it asked for
    // (a process's other threads are elsewhere) and whose credentials the kernel used.
    let flags = InitFlags::FAN_CLASS_CONTENT
        | InitFlags::FAN_CLOEXEC
        | InitFlags::FAN_NONBLOCK
        | InitFlags::FAN_REPORT_TID;
    let event_flags = EventFFlags::O_RDONLY
        | EventFFlags::O_LARGEFILE
        | EventFFlags::O_CLOEXEC
        | EventFFlags::O_NOATIME;
    // FAN_ENABLE_AUDIT lets an answer ask the kernel to record it in the audit log; it
    // needs CAP_AUDIT_WRITE. Without it, groups that answer unrecorded.
    let audit = InitFlags::from_bits_retain(libc::FAN_ENABLE_AUDIT);
    match Fanotify::init(flags | audit, event_flags) {
        Ok(group) => {
            FANOTIFY_AUDIT.store(true, Ordering::Relaxed);
            Ok(group)
        }
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EINVAL) => {
            FANOTIFY_AUDIT.store(false, Ordering::Relaxed);
            Fanotify::init(flags, event_flags)
        }
        Err(e) => Err(e),
    }
}

/// The filesystems `group` holds a mark on now, as the kernel says.
fn marks_of(group: &Fanotify) -> HashSet<u64> {
    let path = format!("/proc/self/fdinfo/{}", group.as_fd().as_raw_fd());
    match std::fs::read_to_string(&path) {
        Ok(text) => mounts::superblock_marks(&text),
        Err(e) => {
            log::warn!("{path}: {e}");
            HashSet::new()
        }
    }
}

impl Marker {
    /// Marks each target not marked yet (in the group its kind calls for); returns how many
    /// filesystems are marked in all, and how many of them are of untrusted types.
    fn mark_all(&mut self, targets: &[mounts::Target]) -> (usize, usize) {
        self.isolated.retain(|i| !i.done.load(Ordering::SeqCst));
        let mut trusted_marks = marks_of(&self.main);
        let mut untrusted_marks = HashSet::new();
        for group in self
            .isolated
            .iter()
            .map(|i| &i.group)
            .chain(self.shared.as_ref())
        {
            untrusted_marks.extend(marks_of(group));
        }
        let mut unmarked = HashSet::new();
        for target in targets {
            if trusted_marks.contains(&target.dev) || untrusted_marks.contains(&target.dev) {
                continue;
            }
            let marked = match target.kind {
                mounts::Kind::Trusted => mark_in(&self.main, target, "trusted"),
                _ => self.mark_untrusted(target),
            };
            if marked {
                // The same filesystem may be listed twice (a watched path and its mount).
                match target.kind {
                    mounts::Kind::Trusted => trusted_marks.insert(target.dev),
                    _ => untrusted_marks.insert(target.dev),
                };
            } else {
                unmarked.insert(target.dev);
            }
        }
        // Untrusted ones in the main group only when no group apart could be had.
        let main_marks = marks_of(&self.main);
        let untrusted_in_main = main_marks
            .iter()
            .filter(|dev| {
                targets
                    .iter()
                    .any(|t| t.dev == **dev && t.kind != mounts::Kind::Trusted)
            })
            .count();
        let untrusted = untrusted_marks.len() + untrusted_in_main;
        let total = main_marks.len() + untrusted_marks.len();
        let stats = &self.state.stats;
        stats
            .marked_filesystems
            .store(total as u64, Ordering::Relaxed);
        stats
            .untrusted_filesystems
            .store(untrusted as u64, Ordering::Relaxed);
        // (one listed twice, once marked, is marked)
        unmarked.retain(|dev| !main_marks.contains(dev) && !untrusted_marks.contains(dev));
        stats
            .unmarked_filesystems
            .store(unmarked.len() as u64, Ordering::Relaxed);
        (total, untrusted)
    }

    /// A filesystem of an untrusted type: a group of its own, else the shared one, else (no
    /// group to be had) the main group: checked but not isolated beats not checked.
    fn mark_untrusted(&mut self, target: &mounts::Target) -> bool {
        if self.isolated.len() < MAX_ISOLATED {
            match new_group() {
                Ok(group) => {
                    let group = Arc::new(group);
                    if !mark_in(&group, target, "untrusted") {
                        return false;
                    }
                    let done = Arc::new(AtomicBool::new(false));
                    let name = format!("guard-fs-{}", target.dev);
                    let spawned = {
                        let (group, state, done) =
                            (group.clone(), self.state.clone(), done.clone());
                        std::thread::Builder::new()
                            .name(name)
                            .spawn(move || serve_alone(&group, &state, &done, true))
                    };
                    match spawned {
                        Ok(_) => {
                            self.isolated.push(Isolated { group, done });
                            return true;
                        }
                        // Dropping the group removes its mark; fall through to share one.
                        Err(e) => log::warn!("cannot start a reader for a filesystem: {e}"),
                    }
                }
                Err(e) => log::warn!(
                    "no fanotify group of its own for {} at {} ({e}): sharing one",
                    target.fs_type,
                    target.place()
                ),
            }
        }
        if self.isolated.len() >= MAX_ISOLATED {
            log::warn!(
                "no fanotify group of its own for {} at {} ({MAX_ISOLATED} in use): sharing one",
                target.fs_type,
                target.place()
            );
        }
        if self.shared.is_none() {
            match new_group() {
                Ok(group) => {
                    let group = Arc::new(group);
                    let spawned = {
                        let (group, state) = (group.clone(), self.state.clone());
                        std::thread::Builder::new()
                            .name("guard-fs-shared".into())
                            .spawn(move || {
                                serve_alone(&group, &state, &AtomicBool::new(false), false)
                            })
                    };
                    match spawned {
                        Ok(_) => self.shared = Some(group),
                        Err(e) => log::warn!("cannot start the shared reader: {e}"),
                    }
                }
                Err(e) => log::warn!("no shared fanotify group for untrusted filesystems: {e}"),
            }
        }
        match &self.shared {
            Some(shared) => mark_in(shared, target, "untrusted"),
            None => {
                log::error!(
                    "{} at {}: no group apart to be had, marked with the trusted filesystems \
                     (a stalled server there would hold up every open)",
                    target.fs_type,
                    target.place()
                );
                mark_in(&self.main, target, "untrusted")
            }
        }
    }
}

fn mark_filesystems(
    group: &Arc<Fanotify>,
    config: &Config,
    state: &Arc<State>,
) -> anyhow::Result<usize> {
    let scope = (!config.watch.is_empty()).then(|| {
        config
            .watch
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect::<Vec<_>>()
    });
    let follow_mounts = config.watch.is_empty() || config.follow;
    let mut targets = Vec::new();
    if !config.watch.is_empty() {
        let trusted = state.loaded().policy.trust.filesystems.clone();
        for watched in mounts::filesystems_of(&config.watch)? {
            let kind = match mounts::kind(&watched.fs_type, &trusted) {
                // Named explicitly: marked whatever it is (as --watch always did).
                mounts::Kind::Pseudo => mounts::Kind::Untrusted,
                kind => kind,
            };
            targets.push(mounts::Target {
                dev: watched.dev,
                fs_type: watched.fs_type.clone(),
                kind,
                places: vec![watched],
            });
        }
    }
    if follow_mounts {
        targets.extend(mounts_to_mark(state, scope.as_deref())?);
    }
    let mut marker = Marker {
        main: group.clone(),
        state: state.clone(),
        isolated: Vec::new(),
        shared: None,
        scope: if config.follow { scope } else { None },
    };
    let (count, untrusted) = marker.mark_all(&targets);
    if count == 0 {
        if !follow_mounts {
            anyhow::bail!("no filesystem could be marked: nothing would be enforced");
        }
        log::warn!("no filesystem could be marked: nothing is enforced until one is mounted");
    }
    if untrusted > 0 {
        log::info!(
            "{untrusted} filesystem(s) of untrusted types marked: code there is refused \
             (trusted-filesystem)"
        );
    }
    if follow_mounts {
        std::thread::Builder::new()
            .name("guard-mounts".into())
            .spawn(move || follow_new_mounts(marker))?;
    }
    Ok(count)
}

/// The filesystems of the mount table to mark (with `scope`, those at or below it).
fn mounts_to_mark(
    state: &State,
    scope: Option<&[std::path::PathBuf]>,
) -> anyhow::Result<Vec<mounts::Target>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("/proc/self/mountinfo")?;
    let loaded = state.loaded();
    Ok(mounts::to_mark(
        &mounts::parse_mountinfo(&text),
        &loaded.policy.trust.filesystems,
        scope,
    ))
}

/// How long marking waits for one place's lookup: a mount point's path may cross a
/// user's FUSE filesystem, whose daemon need not answer root.
const MARK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long marking waits for a scan of the processes' handles (no filesystem's lookups:
/// /proc only).
const HANDLE_SCAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// Marking lookups that may be stuck at once.
static STUCK_MARKS: super::deadline::Stuck = super::deadline::Stuck::new(32);

/// Marks one filesystem in `group` through the first of its places that still reaches it,
/// each looked up with a deadline; says so (or why not) in the log. A filesystem none of
/// whose places reaches it (each renamed away, covered by another mount, or stuck) is not
/// marked: an error in the log, counted as unmarked in `guard status`, tried again at the
/// next change of the mount table.
fn mark_in(group: &Arc<Fanotify>, target: &mounts::Target, what: &str) -> bool {
    let mut failures = Vec::new();
    for place in &target.places {
        let marked = {
            let (group, place, dev) = (group.clone(), place.clone(), target.dev);
            super::deadline::run_within(&STUCK_MARKS, MARK_DEADLINE, move || {
                mark(&group, &place, dev)
            })
        };
        match marked {
            Ok(()) => {
                log::info!(
                    "marked {} filesystem at {} ({what} type)",
                    target.fs_type,
                    place.mount_point.display()
                );
                if !failures.is_empty() {
                    log::warn!(
                        "{} filesystem marked at {}, not through its other places ({})",
                        target.fs_type,
                        place.mount_point.display(),
                        failures.join("; ")
                    );
                }
                return true;
            }
            Err(e) => failures.push(format!("{}: {e}", place.mount_point.display())),
        }
    }
    // No path leads to it (each covered, say), but a process may still hold a directory or
    // a file there (how anyone reaches a covered filesystem): marked through that handle.
    let ids: Vec<u64> = target.places.iter().filter_map(|p| p.id).collect();
    let held = {
        let (group, target) = (group.clone(), target.clone());
        super::deadline::run_within(&STUCK_MARKS, HANDLE_SCAN_DEADLINE, move || {
            let place = mounts::held_on(&ids, &target)
                .ok_or_else(|| std::io::Error::other("no process holds a handle there"))?;
            mark(&group, &place, target.dev).map(|()| place.mount_point)
        })
    };
    match held {
        Ok(handle) => {
            log::warn!(
                "{} filesystem {} marked through a process's handle {} ({})",
                target.fs_type,
                target.place(),
                handle.display(),
                failures.join("; ")
            );
            return true;
        }
        Err(e) => failures.push(e.to_string()),
    }
    log::error!(
        "{} filesystem {}: NOT MARKED, its opens are not checked ({})",
        target.fs_type,
        target.place(),
        failures.join("; ")
    );
    false
}

/// The kernel flags `/proc/self/mountinfo` with POLLPRI when the mount table changes:
/// mark filesystems that appear later (a disk mounted after boot, an NFS share, a FUSE
/// mount), and filesystems mounted where an unmounted one was (same device number).
fn follow_new_mounts(mut marker: Marker) {
    let Ok(table) = File::open("/proc/self/mountinfo") else {
        log::error!("cannot watch the mount table: new filesystems will not be marked");
        return;
    };
    loop {
        let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("watching the mount table: {e}");
                return;
            }
        }
        // Reading the table again re-arms the notification.
        let scope = marker.scope.clone();
        match mounts_to_mark(&marker.state, scope.as_deref()) {
            Ok(targets) => {
                marker.mark_all(&targets);
            }
            Err(e) => log::error!("reading the mount table: {e:#}"),
        }
        // Re-arm: POLLPRI stays set until the file is read from the start.
        let _ = std::io::Read::read_to_end(&mut &table, &mut Vec::new());
        let _ = std::io::Seek::seek(&mut &table, std::io::SeekFrom::Start(0));
    }
}

/// The reader of a group apart (filesystems of untrusted types): it sorts events as the main
/// reader does and decides interpreters' opens itself, so that nothing it waits for (the
/// filesystem's server, when the kernel opens an event's file or the agent reads it) holds up
/// the workers of the trusted filesystems. A group of one filesystem ends with it.
fn serve_alone(group: &Fanotify, state: &State, done: &AtomicBool, ends_with_filesystem: bool) {
    let own_pid = std::process::id() as i32;
    while !state.stopping() {
        let mut fds = [PollFd::new(group.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("poll on a filesystem's group: {e}");
                break;
            }
        }
        if fds[0].any().unwrap_or(false) {
            read_events(group, state, own_pid, None, &mut |job| {
                answer(group, state, job, None);
            });
        } else if ends_with_filesystem && marks_of(group).is_empty() {
            // The filesystem is gone (the kernel dropped the mark with it): nothing more
            // can arrive here.
            read_events(group, state, own_pid, None, &mut |job| {
                answer(group, state, job, None);
            });
            log::info!("a filesystem of an untrusted type is gone: its reader stops");
            for counter in [
                &state.stats.marked_filesystems,
                &state.stats.untrusted_filesystems,
            ] {
                let _ = counter
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
}

/// Marks the filesystem of `place` through a descriptor of its mount point that is checked
/// to reach that very mount (or, for a `--watch` path, that filesystem): a path read from
/// the mount table may since lead elsewhere (a directory renamed above it, a second mount
/// over it), and a mark made by path would then land on the wrong filesystem.
fn mark(group: &Fanotify, place: &mounts::Mount, dev: u64) -> std::io::Result<()> {
    use nix::fcntl::{OFlag, open};
    use std::os::unix::fs::MetadataExt;
    let fd = open(
        &place.mount_point,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let reached = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match place.id {
        Some(id) => {
            let now = mounts::mount_id_of_fd(fd.as_raw_fd())?;
            if now != id {
                return Err(std::io::Error::other(format!(
                    "the path now reaches mount {now}, not mount {id} (renamed or covered since)"
                )));
            }
        }
        None => {
            let now = std::fs::metadata(&reached)?.dev();
            if now != dev {
                return Err(std::io::Error::other(
                    "the path now reaches another filesystem",
                ));
            }
        }
    }
    // Filesystem marks, not mount marks: bind mounts and new mount namespaces see the same
    // superblock and cannot step around the mark. Made through the descriptor (its
    // /proc/self/fd link resolves to the very mount and directory it holds).
    group
        .mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
            PERMISSION_EVENTS,
            nix::fcntl::AT_FDCWD,
            Some(Path::new(&reached)),
        )
        .map_err(std::io::Error::from)
}

/// An interpreter's event, for a worker. It carries the policy it was sorted under, so a
/// reload between sorting and deciding cannot mismatch the profile.
struct Job {
    event: FanotifyEvent,
    received: Instant,
    loaded: Arc<Loaded>,
    /// The policy's generation, read before `loaded`: a mark made under an older policy
    /// is taken back.
    generation: u64,
    /// `None` when the process's executable could not be identified.
    profile: Option<usize>,
}

/// Reads what is pending on `group`: answers the agent's own opens and those of processes
/// that are no interpreter on the spot (offering the latter to `ahead`, to verify their
/// signed files ahead of any interpreter), and hands the rest to `dispatch`.
fn read_events(
    group: &Fanotify,
    state: &State,
    own_pid: i32,
    ahead: Option<&IgnoreMarks>,
    dispatch: &mut dyn FnMut(Job),
) {
    loop {
        let events = match group.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // EMFILE/ENFILE/ENOMEM: the kernel could not open the event's file for us and
                // has answered that permission event FAN_DENY itself (fail closed). Only the
                // error reaches us: no pid, no path. Say so and keep serving.
                bump(&state.stats.errors);
                log::error!(
                    "reading fanotify events: {e}: the kernel refused an open guard could not \
                     receive"
                );
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        let received = Instant::now();
        let generation = state.generation();
        let mut loaded = state.loaded();
        for event in events {
            bump(&state.stats.events);
            let Some(fd) = event.fd() else {
                // The kernel's queue overflowed; dropped permission events were allowed.
                bump(&state.stats.overflows);
                log::error!("fanotify queue overflow: the kernel allowed events guard never saw");
                continue;
            };
            let pid = event.pid();
            if pid == own_pid {
                bump(&state.stats.own_events);
                respond(group, state, fd, true);
                continue;
            }
            // An exec of a new file at a profiled executable's or a loader's path: adopted
            // before the kernel may run it.
            if event.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
                match super::identities::on_exec(state, &loaded, fd) {
                    Ok(Some(now)) => loaded = now,
                    Ok(None) => {}
                    Err(why) => {
                        bump(&state.stats.errors);
                        let enforce = loaded.policy.mode == crate::policy::Mode::Enforce;
                        log::error!(
                            "{why}: the exec is {}",
                            if enforce {
                                "refused"
                            } else {
                                "allowed (permissive)"
                            }
                        );
                        if enforce {
                            respond(group, state, fd, false);
                            continue;
                        }
                    }
                }
            }
            // The hot path of the whole host: an opener that is not a profiled interpreter
            // (or is already gone) is answered here, with one stat and no hop to a worker.
            let profile = match process::executable(pid) {
                Ok(exe) => match facts::profile_of_executable(&loaded.interpreters, exe) {
                    Some(profile) => Some(profile),
                    None => {
                        respond(group, state, fd, true);
                        state.stats.latency.record(received.elapsed());
                        if let Some(marks) = ahead {
                            marks.offer(Ahead {
                                event,
                                loaded: loaded.clone(),
                                generation,
                            });
                        }
                        continue;
                    }
                },
                // Gone (or a kernel thread): nothing will run what it opened.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    respond(group, state, fd, true);
                    state.stats.latency.record(received.elapsed());
                    continue;
                }
                // Cannot tell who it is (missing capability, /proc hidden): a worker
                // refuses it with the reason, rather than guess it is no interpreter.
                Err(_) => None,
            };
            dispatch(Job {
                event,
                received,
                loaded: loaded.clone(),
                generation,
                profile,
            });
        }
    }
}

/// Answers a decision, with the kernel's audit record of it when the kernel audit log is in
/// use and the decision is one to record: a refusal (a would-be one in permissive mode),
/// every decision with `audit.log_allows`.
fn respond_decided(
    group: &Fanotify,
    state: &State,
    fd: BorrowedFd<'_>,
    verdict: &Verdict,
    policy: &crate::policy::Policy,
) {
    use super::kernel_audit::{FANOTIFY_AUDIT, respond_audited};
    if (verdict.policy_allows && !policy.audit.log_allows)
        || !state.stats.kernel_audit.load(Ordering::Relaxed)
    {
        respond(group, state, fd, verdict.allow);
        return;
    }
    if FANOTIFY_AUDIT.load(Ordering::Relaxed)
        && respond_audited(
            group,
            fd,
            verdict.allow,
            verdict.policy_allows,
            verdict.rule,
        )
    {
        bump(&state.stats.kernel_audit_answers);
        return;
    }
    // Answered all the same, unrecorded: counted where the operator looks.
    bump(&state.stats.kernel_audit_failed);
    respond(group, state, fd, verdict.allow);
}

fn respond(group: &Fanotify, state: &State, fd: BorrowedFd<'_>, allow: bool) {
    let response = if allow {
        Response::FAN_ALLOW
    } else {
        Response::FAN_DENY
    };
    if let Err(e) = group.write_response(FanotifyResponse::new(fd, response)) {
        bump(&state.stats.errors);
        log::error!("answering the kernel: {e}");
    }
}

fn work(group: &Fanotify, state: &State, jobs: &Receiver<Job>) {
    // The main group's files are on filesystems of trusted types: only theirs are kept.
    let marks = state.ignore_marks.get().map(Arc::as_ref);
    while let Ok(job) = jobs.recv() {
        state.queued.fetch_sub(1, Ordering::Relaxed);
        answer(group, state, job, marks);
    }
}

/// Answers an interpreter's open without deciding it: refused (enforce mode) with `why`.
fn answer_unavailable(group: &Fanotify, state: &State, job: Job, why: &str) {
    let Some(fd) = job.event.fd() else { return };
    let outcome = Outcome::unavailable(&job.loaded, fd, why);
    respond_decided(group, state, fd, &outcome.verdict, &job.loaded.policy);
    state.stats.latency.record(job.received.elapsed());
    count(state, &outcome);
    state.audit.send(outcome.record(job.event.pid()));
}

/// Decides an interpreter's open, answers the kernel, then counts and logs it, and leaves
/// the file's next opens to the kernel (`marks`) when the verdict holds for all of them.
fn answer(group: &Fanotify, state: &State, job: Job, marks: Option<&IgnoreMarks>) {
    let Some(fd) = job.event.fd() else { return };
    let pid = job.event.pid();
    let loaded = &job.loaded;
    // A bug must not leave an open hanging or crash the agent: refuse, say so, go on.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluate(state, loaded, pid, fd, job.profile)
    }))
    .unwrap_or_else(|_| {
        Outcome::unavailable(loaded, fd, "internal error while deciding (see the log)")
    });
    let outcome = outcome.unless_unrecorded(state, &loaded.policy);
    // Answer first: everything below is bookkeeping the opener must not wait for.
    respond_decided(group, state, fd, &outcome.verdict, &loaded.policy);
    let elapsed = job.received.elapsed();
    state.stats.latency.record(elapsed);
    match outcome.lookup {
        Lookup::Hit => state.stats.hit_latency.record(elapsed),
        Lookup::Miss => state.stats.miss_latency.record(elapsed),
        Lookup::NotNeeded => {}
    }
    if let (Some(marks), Some(verified)) = (marks, &outcome.same_for_every_open) {
        marks.keep(fd, verified, job.generation, state);
    }
    count(state, &outcome);
    if outcome.worth_logging(&loaded.policy) {
        state.audit.send(outcome.record(pid));
    }
    drop(job); // closes the event's descriptor
}

/// A decision on an interpreter's open, with what the audit trail needs.
struct Outcome {
    code: CodeKind,
    verdict: Verdict,
    lookup: Lookup,
    path: String,
    id: String,
    /// A fact that could not be established, for which the open was judged as code.
    missing: Option<String>,
    /// The file as the decision saw it, when the verdict holds for every open of it.
    same_for_every_open: Option<FileState>,
}

impl Outcome {
    fn unavailable(loaded: &Loaded, fd: BorrowedFd<'_>, reason: &str) -> Outcome {
        Outcome {
            code: CodeKind::NotCode,
            verdict: facts_unavailable(&loaded.policy, reason),
            lookup: Lookup::NotNeeded,
            path: descriptor_path(fd),
            id: "?".into(),
            missing: None,
            same_for_every_open: None,
        }
    }

    /// `audit.disk_full = "refuse"`: while the audit file cannot be written, an enforced
    /// policy lets no code load run that the trail would not record (cache hits included:
    /// the operator chose that nothing runs while the trail is blind).
    fn unless_unrecorded(mut self, state: &State, policy: &crate::policy::Policy) -> Outcome {
        if !self.verdict.allow || !self.code.is_code() || !state.refusing_unrecorded(policy) {
            return self;
        }
        bump(&state.stats.audit_refused);
        let why = state
            .stats
            .audit_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .unwrap_or_else(|| "not writable".into());
        self.verdict = facts_unavailable(
            policy,
            format!(
                "the audit trail cannot be written ({why}): code is refused until it can \
                 (audit.disk_full = \"refuse\")"
            ),
        );
        self.same_for_every_open = None;
        self
    }

    /// Refusals always; an allowed code load when its content was verified (a cache miss),
    /// not each repeat served from the cache; everything with `audit.log_allows`.
    fn worth_logging(&self, policy: &crate::policy::Policy) -> bool {
        !self.verdict.policy_allows
            || (self.code.is_code() && self.lookup == Lookup::Miss)
            || policy.audit.log_allows
    }

    fn record(&self, pid: i32) -> AuditRecord {
        let verdict = &self.verdict;
        AuditRecord {
            time: super::audit::now(),
            pid,
            exe: process::executable_path(pid),
            uid: verdict
                .runner
                .or_else(|| process::credentials(pid).ok().map(|(uid, _)| uid))
                .unwrap_or(u32::MAX),
            path: self.path.clone(),
            id: self.id.clone(),
            code: self.code.name(),
            decision: if verdict.policy_allows {
                "allow"
            } else {
                "deny"
            },
            enforced: verdict.enforced,
            rule: verdict.rule.id(),
            reason: verdict.reason().to_string(),
            missing: self.missing.clone(),
            layer: "fanotify",
            checks: super::audit::check_records(verdict),
            dynamic: None,
        }
    }
}

fn count(state: &State, outcome: &Outcome) {
    if !outcome.code.is_code() && outcome.verdict.policy_allows {
        return;
    }
    bump(&state.stats.code_decisions);
    let verdict = &outcome.verdict;
    if !verdict.policy_allows {
        if verdict.enforced {
            bump(&state.stats.denies);
        } else {
            bump(&state.stats.would_deny);
        }
    }
    state
        .stats
        .by_rule
        .bump(verdict.rule, verdict.policy_allows, verdict.enforced);
}

fn evaluate(
    state: &State,
    loaded: &Loaded,
    pid: i32,
    fd: BorrowedFd<'_>,
    profile: Option<usize>,
) -> Outcome {
    let Some(profile) = profile else {
        bump(&state.stats.errors);
        let reason = match process::executable(pid) {
            Err(e) => format!("cannot identify the process's executable: {e}"),
            Ok(_) => "cannot identify the process's executable".to_string(),
        };
        return Outcome::unavailable(loaded, fd, &reason);
    };
    evaluate_interpreter(state, loaded, pid, fd, profile).unwrap_or_else(|e| {
        bump(&state.stats.errors);
        Outcome::unavailable(loaded, fd, &format!("cannot establish the facts: {e}"))
    })
}

fn evaluate_interpreter(
    state: &State,
    loaded: &Loaded,
    tid: i32,
    fd: BorrowedFd<'_>,
    profile_index: usize,
) -> std::io::Result<Outcome> {
    use std::os::unix::fs::MetadataExt;
    let policy = &loaded.policy;
    let profile = &policy.interpreters[profile_index];
    let file = File::from(fd.try_clone_to_owned()?);
    let meta = file.metadata()?;
    let own_path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let path = own_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let id = crate::engine::FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // By identity; a new file at a module's path (a package update) is that module too.
    let module_file = loaded
        .modules
        .get_unchanged(id, crate::modules::Stamp::of(&meta))
        .or_else(|| {
            own_path
                .as_ref()
                .ok()
                .and_then(|path| loaded.modules.at_path(path))
        });
    let mut named = open_names(profile, module_file.is_some(), tid, &own_path);
    let mut main_module = None;
    let mut is_main_script = false;
    if named.code.is_none() || module_file.is_some() {
        // CPython opens its main script by the operand's own path (made absolute): the
        // path it asks for ends with the operand, whatever the file behind it is called.
        let main = process::main_operand(tid, profile.argv.dialect());
        if let Err(e) = &main {
            named.missing = Some(format!("the interpreter's command line: {e}"));
        }
        let operand = match &main {
            Ok(process::MainOperand::Script(script)) => Some(script.as_slice()),
            _ => None,
        };
        if let (Some(operand), Some(asked)) = (operand, &named.asked_path) {
            is_main_script = opener::opens_operand(asked, operand);
        }
        // Node resolves its operand and path preloads itself (extensions, a package's
        // `main`, `index.js`) and opens the real path behind them: the name it asks for is
        // the link's target (`node link.js` opens `data.txt`), and any name is compiled
        // (`node -r ./notes.txt app.js`). What the command line names is code by identity.
        if !is_main_script && profile.argv.dialect() == guard_common::argv::Dialect::Node {
            match process::node_named_code_within(tid, process::WALK_DEADLINE) {
                Ok(files) => is_main_script = files.contains(&id),
                Err(e) => {
                    named.missing = Some(format!("what the node command line names: {e}"));
                }
            }
        }
        // The file of an interpreter module is refused when it is the main script, and
        // only then: `import timeit` from a signed script opens the same file. What cannot
        // be told apart is the main script.
        if let Some(entry) = module_file {
            let unknown = named.missing.is_some();
            // A package's `__main__` runs as the main script when the operand names the
            // package directory: CPython looks the file up in the directory it was given, so
            // the name the file was asked under sits in the directory the operand names. A
            // renamed spelling (a link to the directory) is resolved again; a walk that
            // fails is no answer.
            let package_main = match (operand, entry.package_dir) {
                (Some(operand), Some(_)) => {
                    let named_dir = opener::named_component(operand);
                    named.asked_dir.as_deref() == Some(named_dir)
                        || process::resolve_operand_within(tid, operand, process::WALK_DEADLINE)
                            .map_or(true, |main| entry.runs_as_main(id, main))
                }
                _ => false,
            };
            // Under a name that is not the file's own the interpreter runs it as another
            // module (`-m x` of a link `x.py` to it, a directory whose `__main__.py` links
            // to it): `__main__` among them. Opened by descriptor alone, no name says what
            // it runs as.
            let foreign_name = match &named.asked {
                Some(asked) => !entry.opened_as_itself(asked),
                None => !unknown,
            };
            // `-m NAME` runs the module the import system finds by NAME, whatever
            // directories (links to the stdlib, `dist-packages` as a namespace package) its
            // parts name: the file asked for under that dotted path is `__main__`.
            let module_main = match (&main, &named.asked_path) {
                (Ok(process::MainOperand::Module(module)), Some(asked)) => {
                    opener::opens_module(asked, module)
                }
                _ => false,
            };
            // A package's `__main__` a warning filter imports runs its command line: the
            // filter's category names it (`-W ignore::pygments.__main__.X`). A command line
            // or environment that cannot be read may name it.
            let warning_import = entry.package_dir.is_some()
                && process::warnings_may_import_a_main(tid).unwrap_or(true);
            if is_main_script
                || unknown
                || package_main
                || foreign_name
                || module_main
                || warning_import
            {
                main_module = Some(entry.module.as_str());
            }
        }
    }
    let names: Vec<&[u8]> = named
        .own
        .iter()
        .chain(&named.asked)
        .map(Vec::as_slice)
        .collect();
    // Only a file no name makes code is judged by its content; the search path's names
    // come first.
    let search_path = if named.code.is_none() && main_module.is_none() && !is_main_script {
        process::search_path_names(tid, profile.argv.search_path_env()).unwrap_or_else(|e| {
            named.missing = Some(format!("the interpreter's environment: {e}"));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let missing = named.missing.as_deref();
    let code = if main_module.is_some() {
        CodeKind::MainScript
    } else {
        facts::classify(
            profile,
            &file,
            meta.len(),
            &names,
            &search_path,
            is_main_script,
            missing,
        )?
    };
    // What the kernel layer saw at this open: writers, and the change count a verdict
    // recorded now must carry.
    let kernel = state.kernel_verdicts().filter(|_| code.is_code());
    // What the kernel saw cannot be told: judged as if it saw the worst (a writer).
    let seen = match kernel.as_ref().map(|k| k.state(&file)) {
        Some(Err(e)) => {
            bump(&state.stats.errors);
            return Ok(Outcome {
                code,
                verdict: facts_unavailable(
                    policy,
                    format!("cannot read the kernel layer's facts on the file: {e}"),
                ),
                lookup: Lookup::NotNeeded,
                path,
                id: id.to_string(),
                missing: named.missing,
                same_for_every_open: None,
            });
        }
        Some(Ok(seen)) => seen,
        None => None,
    };
    let mut object = facts::object_with(&file, &meta, code)?;
    object.open_writers = seen.map(|s| s.writers_at_open != 0);
    object.module_file = module_file.is_some();
    object.main_module = main_module.map(str::to_string);
    let runner = || {
        let (uid, gids) = process::credentials(tid)?;
        Ok(Runner { uid, gids })
    };
    let (mut verdict, lookup) = facts::decide_file(
        policy,
        profile_index,
        &file,
        &object,
        runner,
        Some(&state.cache),
    );
    // A verdict the kernel may keep runs this content while the agent is down.
    if let (Some(kernel), Some(seen)) = (&kernel, &seen)
        && verdict.kernel_may_keep
    {
        match kernel.record(&file, seen) {
            Err(e) => {
                bump(&state.stats.errors);
                log::warn!("recording the kernel verdict on {path}: {e}");
            }
            // From now on the kernel refuses writers while the interpreter reads the file.
            // A change between our first look and the record voided the verdict: what the
            // interpreter would read is not what was checked.
            Ok(()) => {
                if let Ok(Some(now)) = kernel.state(&file)
                    && now.changes != seen.changes
                {
                    verdict =
                        facts_unavailable(policy, "the file changed while it was being verified");
                }
            }
        }
    }
    // A file that may be a module's (by identity whatever its stamp, or by path) is never
    // left to the kernel: reached here under another path (a bind mount in a user
    // namespace), its opens by its own path must still be judged as the module's.
    let same_for_every_open = (crate::engine::same_for_every_open(policy, &object, &verdict)
        && !loaded
            .modules
            .may_be_one(id, own_path.as_ref().ok().map(std::path::PathBuf::as_path)))
    .then(|| FileState::of(&object));
    Ok(Outcome {
        code,
        verdict,
        lookup,
        path,
        id: object.id.to_string(),
        missing: named.missing,
        same_for_every_open,
    })
}

/// The names an interpreter's open reached its file by, as far as they decide whether it is
/// code.
struct OpenNames {
    /// The last component of the file's own path (the descriptor's).
    own: Option<Vec<u8>>,
    /// The last component of the path the interpreter passed to its open, when the file's
    /// own name does not already make it code (or it is an interpreter module's file).
    asked: Option<Vec<u8>>,
    /// The whole path the interpreter passed.
    asked_path: Option<Vec<u8>>,
    /// The directory the interpreter looked the name up in (for bytecode, the one holding
    /// its `__pycache__`).
    asked_dir: Option<Vec<u8>>,
    /// The code kind the names give.
    code: Option<CodeKind>,
    /// Which name could not be read, and why.
    missing: Option<String>,
}

/// The names of thread `tid`'s open of a file whose own path (`readlink` of the event's
/// descriptor) is `own_path`: unless that name already makes it code, the name the thread
/// asked for is read too.
fn open_names(
    profile: &Profile,
    module_file: bool,
    tid: i32,
    own_path: &std::io::Result<std::path::PathBuf>,
) -> OpenNames {
    use std::os::unix::ffi::OsStrExt;
    let mut missing = None;
    let own = match own_path {
        Ok(path) => {
            let bytes = path.as_os_str().as_bytes();
            let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
            Some(opener::last_component(bytes).to_vec())
        }
        Err(e) => {
            missing = Some(format!("the file's own name: {e}"));
            None
        }
    };
    let mut code = own
        .as_deref()
        .and_then(|own| facts::code_by_name(profile, &[own]));
    let mut asked = None;
    let mut asked_dir = None;
    let mut asked_path = None;
    if code.is_none() || module_file {
        match opener::asked_path(tid) {
            Ok(Some(path)) => {
                let last = opener::last_component(&path).to_vec();
                code = code.or_else(|| facts::code_by_name(profile, &[&last]));
                asked = Some(last);
                asked_dir = Some(opener::module_dir_component(&path).to_vec());
                asked_path = Some(path);
            }
            Ok(None) => {}
            Err(e) => {
                missing = Some(format!("the name the interpreter asked for: {e}"));
            }
        }
    }
    OpenNames {
        own,
        asked,
        asked_path,
        asked_dir,
        code,
        missing,
    }
}

/// The path of an event's file, for humans.
fn descriptor_path(fd: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}
