//! `guard debug …`: hidden commands for testing kernel layers on their own.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use guard::ebpf_object::Identity;
use guard::lsm::{LsmConfig, LsmLayer};

#[derive(Subcommand)]
pub(crate) enum DebugCommand {
    /// Load the BPF LSM layer alone, print its refusals, run until SIGTERM or SIGINT.
    Lsm(LsmArgs),
    /// Run a command with BPF run-time statistics on and print, per guard program, how often
    /// it ran meanwhile and its mean cost.
    HookCosts {
        #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Remove the pins of a pinned LSM layer and of the exec gate pinned beside it, detaching them.
    LsmUnpin {
        #[arg(long, value_name = "DIR", default_value = guard::lsm::GUARD_PIN_ROOT)]
        pin: PathBuf,
    },
    /// Let another guard binary (an upgrade) take over the pinned LSM layer: run it with the
    /// binary that loaded the layer (a controller), then restart the agent from the new one.
    LsmHandover {
        /// The successor binary (symlinks followed; its inode is what the kernel trusts).
        #[arg(value_name = "NEW-GUARD")]
        successor: PathBuf,
        #[arg(long, value_name = "DIR", default_value = guard::lsm::DEFAULT_PIN_DIR)]
        pin: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct LsmArgs {
    /// An interpreter executable to profile (repeatable; symlinks followed).
    #[arg(long = "interpreter", value_name = "PATH", required = true)]
    pub interpreters: Vec<PathBuf>,
    /// An executable allowed to change security.ima (repeatable); enables the protection.
    #[arg(long = "signer", value_name = "PATH")]
    pub signers: Vec<PathBuf>,
    /// Also refuse execs and AT_EXECVE_CHECKs of files not owned by root, writable by
    /// others, or unlinked.
    #[arg(long)]
    pub exec_check: bool,
    /// The policy's executable rules for every task (`[native] code`): any, linked or
    /// trusted (owner root, the embedded default policy's filesystem types).
    #[arg(long, value_name = "RULE", default_value = "any", value_parser = native_code)]
    pub native_code: guard::policy::NativeCode,
    /// Report, do not refuse.
    #[arg(long)]
    pub permissive: bool,
    /// Pin the hooks and maps here: they stay attached after the loader exits or dies.
    #[arg(long, value_name = "DIR")]
    pub pin: Option<PathBuf>,
    /// Also run the verdict cache's hooks, with this loader standing in as a live agent
    /// (nothing records verdicts: every regular file goes on as to a running agent).
    #[arg(long)]
    pub verdict_cache: bool,
}

pub(super) fn run(command: DebugCommand) -> anyhow::Result<ExitCode> {
    match command {
        DebugCommand::Lsm(args) => lsm(args),
        DebugCommand::HookCosts { command } => hook_costs(&command),
        DebugCommand::LsmHandover { successor, pin } => {
            let identity = Identity::of_path(&successor)
                .with_context(|| format!("successor {}", successor.display()))?;
            if LsmLayer::hand_over(&pin, identity).with_context(|| {
                format!("handing {} over to {}", pin.display(), successor.display())
            })? {
                println!(
                    "lsm: {} may now take over the layer pinned in {}",
                    successor.display(),
                    pin.display()
                );
            } else {
                println!(
                    "lsm: no layer with self-protection pinned in {}: nothing to hand over",
                    pin.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DebugCommand::LsmUnpin { pin } => {
            let removed = LsmLayer::unpin(&pin)?;
            println!("lsm: removed {removed} pins from {}", pin.display());
            // The kernel releases unpinned programs from a workqueue, after an RCU grace
            // period (RCU tasks for trampolines): wait, so that what runs next does not meet
            // hooks on their way out. 30 s was once too short in CI's emulated VM.
            let started = std::time::Instant::now();
            let mut told = false;
            loop {
                let left = LsmLayer::loaded_programs()?;
                if left.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                let waited = started.elapsed();
                if waited > UNPIN_RELEASE_WAIT {
                    eprintln!(
                        "lsm: pins removed, but still loaded after {} s: {}",
                        waited.as_secs(),
                        left.join(" ")
                    );
                    return Ok(ExitCode::FAILURE);
                }
                if !told && waited > std::time::Duration::from_secs(10) {
                    eprintln!("lsm: waiting for the kernel to release {}", left.join(" "));
                    told = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// How long `lsm-unpin` waits for the kernel to release the unpinned programs.
const UNPIN_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

fn hook_costs(command: &[String]) -> anyhow::Result<ExitCode> {
    // Statistics stay on while this descriptor is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let before = LsmLayer::program_stats()?;
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("running {}", command[0]))?;
    let after = LsmLayer::program_stats()?;
    for (name, (runs, nanos)) in &after {
        let (runs0, nanos0) = before.get(name).copied().unwrap_or_default();
        let (runs, nanos) = (runs - runs0, nanos - nanos0);
        let mean = nanos.checked_div(runs).unwrap_or(0);
        println!("hook-costs: {name} runs={runs} total_ns={nanos} mean_ns={mean}");
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn native_code(value: &str) -> Result<guard::policy::NativeCode, String> {
    use guard::policy::NativeCode;
    match value {
        "any" => Ok(NativeCode::Any),
        "linked" => Ok(NativeCode::Linked),
        "trusted-owner" => Ok(NativeCode::TrustedOwner),
        "trusted" => Ok(NativeCode::Trusted),
        _ => Err("expected any, linked, trusted-owner or trusted".into()),
    }
}

fn identities(paths: &[PathBuf]) -> anyhow::Result<Vec<Identity>> {
    paths
        .iter()
        .map(|p| Identity::of_path(p).with_context(|| p.display().to_string()))
        .collect()
}

fn lsm(args: LsmArgs) -> anyhow::Result<ExitCode> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;

    // `guard debug lsm` is CPython's: its interpreters are read with CPython's grammar.
    let interpreters = identities(&args.interpreters)?
        .into_iter()
        .map(guard::ebpf_object::Interpreter::python)
        .collect();
    let mut config = LsmConfig::new(interpreters);
    config.signers = identities(&args.signers)?;
    config.protect_signatures = !args.signers.is_empty();
    config.exec_check = args.exec_check;
    config.native_code = args.native_code;
    let policy = guard::policy::Policy::embedded_default()?;
    config.trust = policy.trust_table();
    config.code_patterns = policy
        .interpreters
        .iter()
        .flat_map(|profile| profile.code_patterns.iter().map(|p| p.as_str().to_owned()))
        .collect();
    config.permissive = args.permissive;
    config.pin_dir = args.pin;
    config.verdict_cache = args.verdict_cache;
    config.agent = args.verdict_cache.then(std::process::id);
    let mut layer = LsmLayer::load(&config).context("loading the LSM layer")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "lsm: active hooks={}", layer.hooks().join(","))?;
    for (hook, count) in layer.verified_instructions() {
        writeln!(out, "lsm: {hook} verified in {count:?} instructions")?;
    }
    out.flush()?;
    loop {
        let stop = {
            let mut fds = [
                PollFd::new(layer.as_fd(), PollFlags::POLLIN),
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            fds[1].any().unwrap_or(false)
        };
        for event in layer.events() {
            writeln!(out, "lsm: {event}")?;
        }
        out.flush()?;
        if stop {
            writeln!(out, "lsm: stopping")?;
            return Ok(ExitCode::SUCCESS);
        }
    }
}
