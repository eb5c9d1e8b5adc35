//! The agent's side of the Python audit hook ([`crate::python_hook`]): a `SOCK_SEQPACKET`
//! socket every profiled interpreter's hook connects to at start-up, asks its profile's
//! `dynamic_code` setting on, and reports events through; the decisions
//! ([`crate::dynamic_code::decide`]) and records land in the same audit trail and counters
//! as every other layer's.
//!
//! Nothing here may slow an interpreter down or let one grow the agent: one thread reads
//! every connection without blocking, the hook sends without waiting (a full socket drops
//! and counts on its side), each process has a budget of records and the host a rate, and
//! what goes over is counted, never queued. Who sent a message is the kernel's word
//! (`SCM_CREDENTIALS`, `SO_PEERCRED`), never the message's.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    sockopt,
};
use serde::Serialize;
use sha2::Digest as _;

use super::audit::{AuditRecord, CheckRecord};
use super::stats::bump;
use super::{State, process};
use crate::dynamic_code::{self, Decision, HookEvent};
use crate::facts;
use crate::policy::DynamicCode;

/// Connections open at once; more are closed at once (the hook then refuses what it would
/// have had to ask about: it cannot learn what is allowed).
const MAX_CONNECTIONS: usize = 16_384;
/// Connections one user (but root) may hold: more are closed at once, so a user holding
/// connections open makes only that user's interpreters fail closed.
const USER_CONNECTIONS: usize = 1024;
/// Records one process may add to the trail; later events are counted only.
const PROCESS_BUDGET: u32 = 256;
/// Records per second the whole host may add (a bucket of this many, refilled each second).
const HOST_RATE: u32 = 500;
/// The largest message a hook sends (16 KiB of source, the fields, a path).
const MESSAGE_MAX: usize = 32 * 1024;
/// Messages read from one connection before the others get their turn.
const FAIRNESS: usize = 64;
/// What a record shows of the source: enough to recognise it, not the whole of it.
const EXCERPT: usize = 256;
const LISTENER: u64 = u64::MAX;

/// What the trail says about one hook event, besides the common fields.
#[derive(Serialize, Clone, Debug)]
pub struct DynamicRecord {
    /// The CPython audit event (`compile`, `exec`, `marshal.loads`, `ctypes.dlopen`…).
    pub event: String,
    /// The line of `path` (the calling file) that made it.
    pub line: u64,
    /// The SHA-256 of the source, bytecode or data the event carried (empty when none).
    pub sha256: String,
    pub size: u64,
    /// The first bytes of it, as text.
    pub excerpt: String,
    /// The event's own words: the filename given to `compile`, a library, a class, a
    /// program.
    pub detail: String,
    /// Events the hook could not send before this one (the agent was behind).
    pub dropped_before: u64,
    /// The qualified name of the function that made it (`path` is its file).
    pub function: String,
}

struct Connection {
    fd: OwnedFd,
    /// The process that connected (`SO_PEERCRED`); each message's own sender comes with it.
    pid: i32,
    uid: u32,
    /// The profile of its interpreter, decided at `hello` (`Err`: why it is not known).
    profile: Option<Result<usize, String>>,
    exe: String,
    records: u32,
    /// The over-budget record was written.
    over_budget: bool,
}

/// The host-wide rate: a bucket refilled once a second.
struct Rate {
    tokens: u32,
    refilled: Instant,
}

impl Rate {
    fn take(&mut self) -> bool {
        if self.refilled.elapsed().as_secs() >= 1 {
            self.tokens = HOST_RATE;
            self.refilled = Instant::now();
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Binds the hook socket at `path` (any user may connect: who they are comes from the
/// kernel) and serves it on a thread.
pub fn serve(path: &Path, state: Arc<State>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("python hook socket")?;
    // A socket file left by a dead agent would make bind fail; a live agent's is not ours.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let address = UnixAddr::new(path).with_context(|| format!("{}", path.display()))?;
    socket::bind(listener.as_raw_fd(), &address)
        .with_context(|| format!("python hook socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .with_context(|| format!("{}", path.display()))?;
    }
    socket::setsockopt(&listener, sockopt::PassCred, &true).context("SO_PASSCRED")?;
    socket::listen(&listener, Backlog::new(4096).unwrap_or(Backlog::MAXCONN))
        .context("listen on the python hook socket")?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll")?;
    epoll
        .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
        .context("epoll")?;
    std::thread::Builder::new()
        .name("guard-python-hook".into())
        .spawn(move || run(&state, &listener, &epoll))?;
    Ok(())
}

fn run(state: &State, listener: &OwnedFd, epoll: &Epoll) {
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    let mut next_key: u64 = 0;
    let mut rate = Rate {
        tokens: HOST_RATE,
        refilled: Instant::now(),
    };
    let mut buffer = vec![0u8; MESSAGE_MAX];
    let mut events = vec![EpollEvent::empty(); 64];
    while !state.stopping() {
        let ready = match epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("python hook socket: epoll: {e}");
                bump(&state.stats.errors);
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        for event in &events[..ready] {
            let key = event.data();
            if key == LISTENER {
                accept(state, listener, epoll, &mut connections, &mut next_key);
                continue;
            }
            let Some(connection) = connections.get_mut(&key) else {
                continue;
            };
            if !serve_connection(state, connection, &mut buffer, &mut rate) {
                let _ = epoll.delete(&connection.fd);
                connections.remove(&key);
            }
        }
    }
}

fn accept(
    state: &State,
    listener: &OwnedFd,
    epoll: &Epoll,
    connections: &mut HashMap<u64, Connection>,
    next_key: &mut u64,
) {
    loop {
        let fd = match socket::accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            Ok(fd) => owned(fd),
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
            Err(e) => {
                // EMFILE and the like: the connection waits in the backlog; the hook times
                // out and refuses what it would have asked.
                log::warn!("python hook socket: accept: {e}");
                bump(&state.stats.errors);
                return;
            }
        };
        let (pid, uid) = match socket::getsockopt(&fd, sockopt::PeerCredentials) {
            Ok(cred) => (cred.pid(), cred.uid()),
            Err(_) => continue,
        };
        let users = connections.values().filter(|c| c.uid == uid).count();
        if connections.len() >= MAX_CONNECTIONS || (uid != 0 && users >= USER_CONNECTIONS) {
            bump(&state.stats.dynamic_dropped);
            continue;
        }
        let _ = socket::setsockopt(&fd, sockopt::PassCred, &true);
        *next_key += 1;
        let key = *next_key;
        if epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, key))
            .is_err()
        {
            continue;
        }
        connections.insert(
            key,
            Connection {
                fd,
                pid,
                uid,
                profile: None,
                exe: String::new(),
                records: 0,
                over_budget: false,
            },
        );
    }
}

/// Reads what one connection has; false when it is closed.
fn serve_connection(
    state: &State,
    connection: &mut Connection,
    buffer: &mut [u8],
    rate: &mut Rate,
) -> bool {
    for _ in 0..FAIRNESS {
        let mut credentials = nix::cmsg_space!(libc::ucred);
        let (length, sender, truncated) = {
            let mut iov = [std::io::IoSliceMut::new(buffer)];
            let message = match socket::recvmsg::<()>(
                connection.fd.as_raw_fd(),
                &mut iov,
                Some(&mut credentials),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(message) => message,
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            };
            if message.bytes == 0 {
                return false;
            }
            let mut sender = (connection.pid, connection.uid);
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmCredentials(cred) = cmsg {
                        sender = (cred.pid(), cred.uid());
                    }
                }
            }
            (
                message.bytes,
                sender,
                message.flags.contains(MsgFlags::MSG_TRUNC),
            )
        };
        let message = &buffer[..length];
        if message == b"hello" {
            hello(state, connection, sender.0);
            continue;
        }
        if truncated {
            // Longer than any hook sends: not a hook's message.
            bump(&state.stats.dynamic_dropped);
            continue;
        }
        if let Some(answer) = report(state, connection, sender, message, rate) {
            let _ = socket::send(connection.fd.as_raw_fd(), &[answer], MsgFlags::MSG_DONTWAIT);
        }
    }
    true
}

/// Tells a new hook its profile's setting: `allow` (the hook stays out of the way),
/// `audit` or `deny`. An interpreter no profile names is left alone; one guard cannot
/// identify is told `deny`.
fn hello(state: &State, connection: &mut Connection, pid: i32) {
    let loaded = state.loaded();
    let mut answer: Vec<u8> = match process::executable(pid) {
        Ok(exe) => match facts::profile_of_executable(&loaded.interpreters, exe) {
            Some(index) => {
                connection.profile = Some(Ok(index));
                connection.exe = process::executable_path(pid);
                bump(&state.stats.hooked_processes);
                let profile = &loaded.policy.interpreters[index];
                let mut answer = match profile.dynamic_code {
                    DynamicCode::Allow => b"allow".to_vec(),
                    DynamicCode::Audit => b"audit".to_vec(),
                    DynamicCode::Deny => b"deny".to_vec(),
                };
                // The expected makers, one a line (`file<TAB>function`): their events need not
                // leave the process (neither refused nor recorded one by one). The hook
                // matches them conservatively and leaves any doubt to the agent.
                for caller in &profile.dynamic_code_callers {
                    answer.push(b'\n');
                    answer.extend_from_slice(caller.file.as_str().as_bytes());
                    answer.push(b'\t');
                    answer.extend_from_slice(caller.function.as_deref().unwrap_or("*").as_bytes());
                }
                answer
            }
            None => b"allow".to_vec(),
        },
        Err(e) => {
            connection.profile = Some(Err(format!(
                "the interpreter's executable could not be read: {e}"
            )));
            b"deny".to_vec()
        }
    };
    answer.truncate(MESSAGE_MAX);
    let _ = socket::send(connection.fd.as_raw_fd(), &answer, MsgFlags::MSG_DONTWAIT);
}

/// One event: decided, counted, recorded within the budgets. Returns the answer to send
/// when the hook asked.
fn report(
    state: &State,
    connection: &mut Connection,
    (pid, uid): (i32, u32),
    message: &[u8],
    rate: &mut Rate,
) -> Option<u8> {
    let stats = &state.stats;
    let mut fields = message.splitn(10, |&b| b == 0);
    let mut next = || fields.next().unwrap_or_default();
    let (name, caller, function, line, ask, dropped, size, digest, detail, payload) = (
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    );
    let number = |field: &[u8]| {
        std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let dropped = number(dropped);
    stats.dynamic_dropped.fetch_add(dropped, Ordering::Relaxed);
    let asked = ask == b"1";
    if name == b"dropped" {
        // The hook's last word at exit: only what it could not send.
        return None;
    }
    bump(&stats.dynamic_events);
    let Some(event) = HookEvent::from_name(name) else {
        // Not a message a hook sends: refused if it asked, otherwise ignored.
        return asked.then_some(b'd');
    };
    let caller = String::from_utf8_lossy(caller).into_owned();
    let function = String::from_utf8_lossy(function).into_owned();
    let maker = dynamic_code::Maker {
        file: &caller,
        function: &function,
    };
    let loaded = state.loaded();
    let policy = &loaded.policy;
    let unknown = |why: &str| Decision {
        verdict: crate::engine::facts_unavailable(policy, why),
        record: true,
    };
    // A hook guard cannot place under a profile: what it makes is refused (fail closed).
    let decision = match &connection.profile {
        Some(Ok(index)) => match policy.interpreters.get(*index) {
            Some(profile) => dynamic_code::decide(policy, profile, event, maker),
            None => unknown("the policy changed since the hook connected"),
        },
        Some(Err(why)) => unknown(why),
        None => unknown("the hook sent an event before hello"),
    };
    let answer = asked.then_some(decision.answer());
    let Decision { verdict, record } = decision;
    if !verdict.policy_allows {
        bump(&stats.code_decisions);
        if verdict.enforced {
            bump(&stats.denies);
            bump(&stats.dynamic_denied);
        } else {
            bump(&stats.would_deny);
        }
    }
    if !record {
        return answer;
    }
    if connection.records >= PROCESS_BUDGET || !rate.take() {
        bump(&stats.dynamic_dropped);
        if !connection.over_budget {
            // The trail says when a process stops being recorded one by one: what follows
            // is counted only, and someone reading it knows to look at that process.
            connection.over_budget = true;
            state.audit.send(over_budget(connection, pid, uid, policy));
        }
        return answer;
    }
    connection.records += 1;
    bump(&stats.dynamic_records);
    let sha256 = if digest.is_empty() && !payload.is_empty() {
        hex(&sha2::Sha256::digest(payload))
    } else {
        String::from_utf8_lossy(digest).into_owned()
    };
    let excerpt = &payload[..payload.len().min(EXCERPT)];
    state.audit.send(AuditRecord {
        time: super::audit::now(),
        pid,
        exe: connection.exe.clone(),
        uid,
        path: caller,
        id: String::new(),
        layer: "python-hook",
        code: "dynamic",
        decision: if verdict.policy_allows {
            "allow"
        } else {
            "deny"
        },
        enforced: verdict.enforced,
        rule: verdict.rule.id(),
        reason: verdict.reason().to_string(),
        missing: None,
        checks: super::audit::check_records(&verdict),
        dynamic: Some(DynamicRecord {
            event: String::from_utf8_lossy(name).into_owned(),
            line: number(line),
            sha256,
            size: number(size),
            excerpt: String::from_utf8_lossy(excerpt).into_owned(),
            detail: String::from_utf8_lossy(detail).into_owned(),
            dropped_before: dropped,
            function,
        }),
    });
    answer
}

/// The record that a process went over its budget (or the host over its rate): its later
/// events are counted in `guard status`, not recorded.
fn over_budget(
    connection: &Connection,
    pid: i32,
    uid: u32,
    policy: &crate::policy::Policy,
) -> AuditRecord {
    let reason = format!(
        "the process made more dynamic-code events than are recorded one by one ({} per \
         process, {} a second for the host): its later events are counted only",
        PROCESS_BUDGET, HOST_RATE
    );
    AuditRecord {
        time: super::audit::now(),
        pid,
        exe: connection.exe.clone(),
        uid,
        path: String::new(),
        id: String::new(),
        layer: "python-hook",
        code: "dynamic",
        decision: "allow",
        enforced: policy.mode == crate::policy::Mode::Enforce,
        rule: guard_common::Rule::DynamicCode.id(),
        reason: reason.clone(),
        missing: None,
        checks: vec![CheckRecord {
            rule: guard_common::Rule::DynamicCode.id(),
            passed: true,
            reason,
        }],
        dynamic: Some(DynamicRecord {
            event: "over-budget".into(),
            line: 0,
            sha256: String::new(),
            size: 0,
            excerpt: String::new(),
            detail: String::new(),
            dropped_before: 0,
            function: String::new(),
        }),
    }
}

/// The kernel boundary: nix's `accept4` hands back a bare descriptor.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: accept4 just returned this descriptor; nothing else owns or closes it.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AsFd for Connection {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
