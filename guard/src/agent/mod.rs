//! The enforcing agent (`guard run`). [`supervisor`] starts and stops everything and
//! reloads the policy; [`fanotify`] answers permission events; [`lsm_layer`] and
//! [`exec_gate`] are the agent's sides of the two kernel layers; the engine
//! ([`crate::engine`]) decides for all of them. This module holds the state they share.

pub mod audit;
pub mod deadline;
pub mod exec_gate;
pub mod fanotify;
pub mod identities;
pub mod ignore_marks;
pub mod journal;
pub mod kernel_audit;
pub mod lsm_layer;
pub mod memory;
pub mod metrics;
pub mod mounts;
pub mod notify;
pub mod opener;
pub mod process;
pub mod python_hook;
pub mod stats;
pub mod status;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;

use crate::cache::VerificationCache;
use crate::engine::FileId;
use crate::facts;
use crate::policy::{Mode, Policy};

use audit::AuditSender;
use stats::Stats;

/// Which enforcement backend to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// BPF LSM when the kernel offers it, else fanotify.
    Auto,
    /// fanotify permission events.
    Fanotify,
    /// BPF LSM programs.
    Bpf,
}

/// How the agent was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy_path: Option<PathBuf>,
    pub extra_keys: Vec<PathBuf>,
    pub permissive: bool,
    pub watch: Vec<PathBuf>,
    /// With `watch`: also mark filesystems mounted at or below a watched path, now and later.
    pub follow: bool,
    pub audit: Option<PathBuf>,
    pub socket: PathBuf,
    /// Where to write the metrics for node_exporter's textfile collector, and how often.
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: std::time::Duration,
    /// Send audit records to this journal socket as structured entries; None: journald's
    /// own when the standard error is the journal.
    pub journal_socket: Option<PathBuf>,
    pub workers: usize,
    pub cache_capacity: usize,
    pub backend: Backend,
    /// The policy file must be IMA-signed by one of `extra_keys` (checked at every load).
    pub require_signed_policy: bool,
    /// Load the exec gate (refuses `-c`, stdin code and descriptor scripts at exec).
    pub exec_gate: bool,
    /// Run on when a layer fails to load, with less protection than the policy asks.
    pub allow_degraded: bool,
    /// Executables that may stop, trace and unpin the agent besides PID 1 and guard itself
    /// (the BPF LSM layer's self-protection).
    pub controllers: Vec<PathBuf>,
}

impl Config {
    /// Loads, checks and resolves the policy. Any error leaves the caller's state untouched.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let mut policy = match &self.policy_path {
            Some(path) if self.require_signed_policy => {
                crate::signed_policy::load(path, &self.extra_keys)?
            }
            _ => Policy::load_or_default(self.policy_path.as_deref())?,
        };
        policy.add_keys(&self.extra_keys).context("--key")?;
        if self.permissive {
            policy.mode = Mode::Permissive;
        }
        let interpreters = facts::resolve_interpreters(&policy);
        let executable_paths = facts::resolve_executable_paths(&policy);
        let executable_patterns = policy
            .interpreters
            .iter()
            .enumerate()
            .flat_map(|(index, profile)| {
                profile
                    .executables
                    .iter()
                    .filter_map(move |p| glob::Pattern::new(p).ok().map(|p| (p, index)))
            })
            .collect();
        let (loaders, loader_paths) = facts::resolve_loaders(&policy).into_iter().unzip();
        let modules = crate::modules::ModuleFiles::resolve(&policy);
        let controllers = self
            .controllers
            .iter()
            .map(|path| {
                crate::ebpf_object::Identity::of_path(path)
                    .with_context(|| format!("--controller {}", path.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Loaded {
            policy: Arc::new(policy),
            interpreters,
            executable_paths,
            executable_patterns,
            loaders,
            loader_paths,
            modules,
            controllers,
        })
    }
}

/// A policy with the host facts it needs resolved (interpreter identities).
#[derive(Clone)]
pub struct Loaded {
    pub policy: Arc<Policy>,
    pub interpreters: Vec<(FileId, usize)>,
    /// The real paths of the profiles' executables: a file exec'd there under an identity
    /// not yet known is a new version of it ([`identities`]).
    pub executable_paths: Vec<(std::path::PathBuf, usize)>,
    /// The profiles' `executables` globs, compiled once: a new version installed beside
    /// the old matches them ([`identities`]).
    pub executable_patterns: Vec<(glob::Pattern, usize)>,
    /// Dynamic loaders whose direct launches of programs the exec gate refuses.
    pub loaders: Vec<FileId>,
    /// Their real paths, as `executable_paths`.
    pub loader_paths: Vec<std::path::PathBuf>,
    /// The files of the profiles' interpreter modules in their stdlib directories, refused
    /// as main scripts.
    pub modules: crate::modules::ModuleFiles,
    /// The configuration's controllers (`--controller`), resolved at every (re)load.
    pub controllers: Vec<crate::ebpf_object::Identity>,
}

impl Loaded {
    /// The profiled interpreters' identities, as the kernel layers key them.
    pub fn interpreter_identities(&self) -> Vec<crate::ebpf_object::Interpreter> {
        self.interpreters
            .iter()
            .filter_map(|(id, profile)| {
                Some(crate::ebpf_object::Interpreter {
                    identity: (*id).into(),
                    dialect: self.policy.interpreters.get(*profile)?.argv.dialect(),
                })
            })
            .collect()
    }
}

/// What the event loop and workers share.
pub struct State {
    loaded: RwLock<Arc<Loaded>>,
    pub cache: VerificationCache,
    pub stats: Arc<Stats>,
    pub audit: AuditSender,
    pub backend: String,
    pub queued: AtomicU64,
    exec_gate: Mutex<String>,
    /// Bumped by every policy change, so the layers that hold kernel state follow it.
    generation: AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
    /// The BPF LSM layer's verdict cache, when that layer runs.
    kernel_verdicts: RwLock<Option<Arc<crate::lsm::KernelVerdicts>>>,
    /// The kernel maps of executable identities, and the lock that orders adopting a new
    /// identity against a layer's reload ([`identities`]).
    pub identities: Mutex<identities::KernelIdentities>,
    /// fanotify's ignore marks on files whose opens the kernel answers itself.
    pub ignore_marks: std::sync::OnceLock<Arc<ignore_marks::IgnoreMarks>>,
}

impl State {
    pub fn new(
        loaded: Loaded,
        cache_capacity: usize,
        stats: Arc<Stats>,
        audit: AuditSender,
        backend: &str,
    ) -> State {
        State {
            loaded: RwLock::new(Arc::new(loaded)),
            cache: VerificationCache::new(cache_capacity),
            stats,
            audit,
            backend: backend.to_string(),
            queued: AtomicU64::new(0),
            exec_gate: Mutex::new("not running".into()),
            generation: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            kernel_verdicts: RwLock::new(None),
            identities: Mutex::new(identities::KernelIdentities::default()),
            ignore_marks: std::sync::OnceLock::new(),
        }
    }

    /// The kernel's verdict cache, if the BPF LSM layer runs.
    pub fn kernel_verdicts(&self) -> Option<Arc<crate::lsm::KernelVerdicts>> {
        self.kernel_verdicts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Follows the BPF LSM layer to its latest load.
    pub fn set_kernel_verdicts(&self, verdicts: Option<Arc<crate::lsm::KernelVerdicts>>) {
        let layer = verdicts.is_some();
        *self
            .kernel_verdicts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = verdicts;
        // With the layer, opens of files held open for writing are the agent's to judge:
        // no ignore mark may answer them (`ignore_marks`).
        if layer && let Some(marks) = self.ignore_marks.get() {
            marks.forget_all();
        }
    }

    /// The policy in force. Decisions hold their own reference, so a reload never
    /// changes the rules under a decision in progress.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Installs the same policy with one more identity resolved ([`identities`]): no
    /// reload, so caches and kernel layers stay.
    pub fn adopt(&self, loaded: Loaded) -> Arc<Loaded> {
        let loaded = Arc::new(loaded);
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded.clone();
        loaded
    }

    /// Installs a new policy. Cached verifications are dropped: trusted keys may differ.
    pub fn replace(&self, loaded: Loaded) {
        // Under the adoption lock: an identity adopted meanwhile must not put the previous
        // resolution back (`identities::adopt` reads, extends and installs it).
        let _adoptions = self
            .identities
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        self.cache.clear();
        self.generation.fetch_add(1, Ordering::SeqCst);
        // After the generation: a decision under the previous policy that marks a file
        // after this sees the new generation and takes its mark back.
        if let Some(marks) = self.ignore_marks.get() {
            marks.forget_all();
        }
    }

    /// Whether code loads are refused because the audit file cannot be written
    /// (`audit.disk_full = "refuse"` in enforce mode).
    pub fn refusing_unrecorded(&self, policy: &Policy) -> bool {
        self.stats
            .audit_failing
            .load(std::sync::atomic::Ordering::Relaxed)
            && policy.audit.disk_full == crate::policy::DiskFull::Refuse
            && policy.mode == Mode::Enforce
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn queue_depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn set_exec_gate_status(&self, status: impl Into<String>) {
        *self.exec_gate.lock().unwrap_or_else(|p| p.into_inner()) = status.into();
    }

    pub fn exec_gate_status(&self) -> String {
        self.exec_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    // fanotify always runs (signatures are checked in user space); the backend decides
    // whether the BPF LSM layer runs beside it.
    supervisor::run(config)
}

pub(crate) fn log_policy(loaded: &Loaded) {
    let policy = &loaded.policy;
    log::info!(
        "policy {} ({} mode): {} trusted key(s), {} interpreter executable(s)",
        policy.origin,
        policy.mode,
        policy.trust.keyring.len(),
        loaded.interpreters.len()
    );
    if policy.trust.keyring.is_empty() {
        log::warn!("no trusted key: every signature will be refused");
    }
    if loaded.interpreters.is_empty() {
        log::warn!("no interpreter executable found for the policy's profiles");
    }
    log::info!(
        "{} interpreter module file(s) refused as main scripts, in {}",
        loaded.modules.len(),
        if loaded.modules.stdlib_dirs.is_empty() {
            "no stdlib directory found".to_string()
        } else {
            loaded
                .modules
                .stdlib_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
}
