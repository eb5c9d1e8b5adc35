//! Command-line surface. Each subcommand lives in its own module.

mod debug;
mod explain;
mod generate;
mod keygen;
mod packages;
mod policy;
mod python_hook;
mod run;
mod sign;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use guard::policy::Policy;

#[derive(Parser)]
#[command(
    name = "guard",
    version,
    about = "Lets language interpreters run only trusted, signed code",
    long_about = "guard lets interpreters (Python first) run code only from regular files that are \
owned by a trusted owner, not writable by the user running them, on a trusted filesystem, and \
signed with an IMA signature (security.ima) by a trusted key."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Show every check the policy makes on a file or an interpreter command line, and the
    /// verdict (exit 0 allow, 1 deny, 2 error).
    Explain(explain::ExplainArgs),
    /// Check or show a policy.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Install guard's Python audit hook (reports and refuses code made at run time).
    #[command(subcommand)]
    PythonHook(python_hook::PythonHookCommand),
    /// Run the enforcing agent (fanotify; BPF LSM where available).
    Run(run::RunArgs),
    /// Show the running agent's counters.
    Status(run::StatusArgs),
    /// Make the running agent re-read its policy and keys, and wait until it has (fails if
    /// it refuses them: the previous policy stays). `systemctl reload guard` runs it.
    Reload(run::ReloadArgs),
    /// Trust the files of packages apt verified (apt and dpkg hooks; `list` shows them).
    #[command(subcommand)]
    Packages(packages::PackagesCommand),
    /// Sign files: write an IMA v2 signature (security.ima), as `evmctl ima_sign` does.
    Sign(sign::Args),
    /// Check files' IMA signatures against public keys or certificates.
    Verify(verify::Args),
    /// Make a signing key, its public key and a self-signed certificate.
    Keygen(keygen::Args),
    /// Write man pages for guard and every subcommand (used to build packages).
    #[command(hide = true)]
    GenerateMan(generate::OutDir),
    /// Write bash, zsh and fish completions (used to build packages).
    #[command(hide = true)]
    GenerateCompletions(generate::OutDir),
    /// Test kernel layers on their own.
    #[command(hide = true, subcommand)]
    Debug(debug::DebugCommand),
}

/// Where the policy and extra trusted keys come from.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Policy file (TOML); the embedded default policy when absent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Trust this public key or certificate in addition to the policy's (repeatable).
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
}

impl PolicyArgs {
    pub(crate) fn load(&self) -> anyhow::Result<Policy> {
        let mut policy = Policy::load_or_default(self.policy.as_deref())?;
        policy.add_keys(&self.keys).context("--key")?;
        Ok(policy)
    }
}

pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Explain(args) => explain::run(&args),
        Command::Policy(command) => policy::run(&command),
        Command::PythonHook(command) => python_hook::run(&command),
        Command::Run(args) => run::run(args),
        Command::Status(args) => run::status(&args),
        Command::Reload(args) => run::reload(&args),
        Command::Packages(command) => packages::run(command),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::GenerateMan(args) => generate::man(&args),
        Command::GenerateCompletions(args) => generate::completions(&args),
        Command::Debug(command) => debug::run(command),
    }
}
