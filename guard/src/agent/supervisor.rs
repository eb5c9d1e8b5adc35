//! The agent's supervisor (`guard run`): loads the policy, starts the kernel layers (the
//! BPF LSM layer, the exec gate) and the fanotify backend, announces readiness, reloads on
//! SIGHUP and stops on SIGTERM/SIGINT. It decides nothing itself: the backends ask the
//! engine.

use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::Context;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::fanotify::FanotifyBackend;
use super::stats::bump;
use super::{Config, Loaded, State, log_policy, status};

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    // Signals are read from a signalfd in the loop; block them before any thread starts so
    // every thread inherits the mask.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;

    super::memory::return_freed_memory();
    raise_descriptor_limit();
    let loaded = config.load()?;
    log_policy(&loaded);
    let stats = Arc::new(super::stats::Stats::default());
    // Where and how big the trail is are read once: a reload does not move the file.
    let audit = &loaded.policy.audit;
    let trail = config
        .audit
        .clone()
        .or_else(|| audit.file.clone())
        .map(|path| super::audit::TrailConfig {
            path,
            max_file_size: audit.max_file_size,
            max_files: audit.max_files,
        });
    let journal = match &config.journal_socket {
        Some(path) => Some(super::journal::Journal::connect(path)?),
        None if super::journal::Journal::stderr_is_journal() => {
            let path = std::path::Path::new(super::journal::DEFAULT_SOCKET);
            super::journal::Journal::connect(path)
                .inspect_err(|e| log::warn!("{e}: audit records go to standard error as lines"))
                .ok()
        }
        None => None,
    };
    let kernel_audit = super::kernel_audit::KernelAudit::open()
        .inspect_err(|e| log::warn!("{e}: the kernel layers' refusals are not in the audit log"))
        .ok();
    let (audit, audit_thread) = super::audit::start(trail, journal, kernel_audit, stats.clone())?;
    let (lsm_layer, backend) = start_kernel_layer(&config, &loaded)?;
    let state = Arc::new(State::new(
        loaded,
        config.cache_capacity,
        stats.clone(),
        audit,
        backend,
    ));
    state.set_kernel_verdicts(lsm_layer.as_ref().and_then(|layer| layer.verdicts()));

    let backend = FanotifyBackend::start(&config, &state)?;
    // After the groups are made: whether they can ask the kernel to record answers.
    super::kernel_audit::resolve(state.loaded().policy.audit.kernel, &state.stats);
    let watched = backend.watched;

    // Under a memory limit the cache gives way before the OOM killer takes the agent.
    if let Some(cgroup) = super::memory::Cgroup::own().filter(|c| c.limit().is_some()) {
        let state = state.clone();
        let configured = config.cache_capacity;
        std::thread::Builder::new()
            .name("guard-memory".into())
            .spawn(move || super::memory::govern(state, cgroup, configured))?;
    }

    let lsm_thread = match lsm_layer {
        Some(layer) => {
            let generation = state.generation();
            let state = state.clone();
            Some(
                std::thread::Builder::new()
                    .name("guard-lsm".into())
                    .spawn(move || super::lsm_layer::run(state, layer, generation))?,
            )
        }
        None => None,
    };

    let gate_thread = if config.exec_gate {
        // Loaded before readiness is announced: ready means every layer is in place.
        let generation = state.generation();
        let gate = super::exec_gate::load(&state, &state.loaded());
        if gate.is_none() {
            degraded(
                &config,
                &state.loaded(),
                "the exec gate did not load (see above): python3 -c, code on stdin, \
                 descriptor scripts and (without the BPF LSM layer) native code the policy \
                 refuses would not be refused",
            )?;
        }
        let state = state.clone();
        Some(
            std::thread::Builder::new()
                .name("guard-exec-gate".into())
                .spawn(move || super::exec_gate::run(state, gate, generation))?,
        )
    } else {
        let native = state.loaded().policy.native.code;
        if native != crate::policy::NativeCode::Any && state.kernel_verdicts().is_none() {
            degraded(
                &config,
                &state.loaded(),
                &format!(
                    "[native] code = \"{native}\" is not enforced: without the BPF LSM layer \
                     only the exec gate can, and --no-exec-gate turns it off"
                ),
            )?;
        }
        state.set_exec_gate_status("disabled (--no-exec-gate)");
        log::warn!(
            "exec gate disabled: python3 -c, code on stdin and descriptor scripts are not refused"
        );
        None
    };

    // What loading the layers parsed is freed: give it back before the long run.
    super::memory::trim();
    // The hooks' socket before the status one: once `guard status` answers, an interpreter
    // started afterwards finds its hook's agent.
    let hook_socket = crate::python_hook::socket_beside(&config.socket);
    super::python_hook::serve(&hook_socket, state.clone())?;
    status::serve(&config.socket, state.clone())?;
    if let Some(path) = &config.metrics_file {
        super::metrics::write_periodically(state.clone(), path.clone(), config.metrics_interval)
            .context("metrics file thread")?;
    }
    log::info!(
        "enforcing with fanotify on {} filesystem(s); status on {}",
        watched,
        config.socket.display()
    );
    // From here on this loop answers: the kernel may hand unverified files on to us.
    if let Some(verdicts) = state.kernel_verdicts()
        && let Err(e) = verdicts.agent_ready(std::process::id())
    {
        anyhow::bail!("cannot tell the BPF LSM layer the agent is ready: {e}");
    }
    let heartbeat = super::notify::ready(&format!("enforcing on {watched} filesystem(s)"));

    let own_pid = std::process::id() as i32;
    let mut stop = false;
    let mut refusing_unrecorded = false;
    while !stop {
        heartbeat.beat();
        // Files the kernel answers itself would run unrecorded: asked again from now on.
        let refusing = state.refusing_unrecorded(&state.loaded().policy);
        if refusing
            && !refusing_unrecorded
            && let Some(marks) = state.ignore_marks.get()
        {
            marks.forget_all();
        }
        refusing_unrecorded = refusing;
        let mut fds = [
            PollFd::new(backend.as_fd(), PollFlags::POLLIN),
            PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let group_ready = fds[0].any().unwrap_or(false);
        let signal_ready = fds[1].any().unwrap_or(false);
        if group_ready {
            backend.read(&state, own_pid);
        }
        if signal_ready {
            while let Ok(Some(info)) = signal_fd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    // Not on this thread: reading the policy and keys opens files on
                    // marked filesystems (/etc), and their permission events are answered
                    // by this very loop; reloading here deadlocked the agent.
                    Ok(Signal::SIGHUP) => {
                        let (config, state) = (config.clone(), state.clone());
                        let spawned = std::thread::Builder::new()
                            .name("guard-reload".into())
                            .spawn(move || reload(&config, &state));
                        if let Err(e) = spawned {
                            log::error!("SIGHUP: cannot start the reload: {e}");
                        }
                    }
                    Ok(signal) => {
                        log::info!("{signal}: stopping");
                        stop = true;
                    }
                    Err(_) => {}
                }
            }
        }
    }

    super::notify::stopping();
    state.stop();
    for thread in [gate_thread, lsm_thread].into_iter().flatten() {
        let _ = thread.join();
    }
    backend.stop();
    let _ = std::fs::remove_file(&config.socket);
    state.audit.stop();
    let _ = audit_thread.join();
    log::info!("stopped");
    Ok(())
}

/// Loads the BPF LSM layer as the backend asks: required (`bpf`), where the kernel has it
/// (`auto`), or not at all (`fanotify`). Returns the layer and the backend's name.
fn start_kernel_layer(
    config: &Config,
    loaded: &Loaded,
) -> anyhow::Result<(Option<crate::lsm::LsmLayer>, &'static str)> {
    use super::Backend;
    use crate::lsm::LsmStatus;
    if config.backend == Backend::Fanotify {
        return Ok((None, "fanotify"));
    }
    let (layer, status) = super::lsm_layer::start(loaded, None);
    match (status, config.backend) {
        (LsmStatus::Active, _) => {
            log::info!(
                "BPF LSM layer active and pinned under {}",
                crate::lsm::DEFAULT_PIN_DIR
            );
            Ok((layer, "bpf-lsm+fanotify"))
        }
        (LsmStatus::Locked(why), _) => anyhow::bail!("{why}"),
        (LsmStatus::Unsupported(why) | LsmStatus::Failed(why), Backend::Bpf) => {
            anyhow::bail!("--backend bpf: the BPF LSM layer cannot run here: {why}")
        }
        (LsmStatus::Unsupported(why), _) => {
            log::warn!(
                "no BPF LSM on this kernel ({why}): running the fanotify backend and the exec gate"
            );
            Ok((None, "fanotify"))
        }
        (LsmStatus::Failed(why), _) => {
            degraded(
                config,
                loaded,
                &format!(
                    "the BPF LSM layer failed to load ({why}): only the fanotify backend and \
                     the exec gate would run"
                ),
            )?;
            Ok((None, "fanotify"))
        }
    }
}

/// A layer the policy needs did not come up. Enforce mode refuses to run with less
/// protection than it says, unless the operator said so (`--allow-degraded`); permissive
/// mode, which refuses nothing anyway, warns.
fn degraded(config: &Config, loaded: &Loaded, what: &str) -> anyhow::Result<()> {
    let enforce = loaded.policy.mode == crate::policy::Mode::Enforce;
    if enforce && !config.allow_degraded {
        anyhow::bail!(
            "{what}; enforce mode does not start with less protection than the policy asks \
             (--allow-degraded runs without it)"
        );
    }
    log::error!("running degraded: {what}");
    Ok(())
}

/// Every event hands the agent a descriptor, and one the kernel cannot hand over is an open
/// refused: the soft limit goes up to the hard one (the unit sets both; a shell's soft
/// limit is often 1024).
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("raising the descriptor limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("reading the descriptor limit: {e}"),
    }
}

fn reload(config: &Config, state: &State) {
    // One at a time: a reload that began earlier (reading an older store) must not finish
    // last and put its policy in force over a newer one.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = super::stats::boottime_ns();
    match config.load() {
        Ok(loaded) => {
            log_policy(&loaded);
            super::kernel_audit::resolve(loaded.policy.audit.kernel, &state.stats);
            state.replace(loaded);
            bump(&state.stats.reloads);
            state
                .stats
                .reload_started_ns
                .store(started, std::sync::atomic::Ordering::Relaxed);
            log::info!("SIGHUP: policy reloaded");
        }
        Err(e) => {
            bump(&state.stats.reload_failures);
            state
                .stats
                .failed_reload_started_ns
                .store(started, std::sync::atomic::Ordering::Relaxed);
            log::error!("SIGHUP: policy not reloaded, the previous one stays in force: {e:#}");
        }
    }
}
