//! `guard policy check|show`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use guard::policy::Policy;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy file: syntax, types, keys, owners, allow-lists (exit 0 when usable).
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Print the effective policy (a file, or the embedded default).
    Show {
        /// The policy file; the embedded default when absent.
        file: Option<PathBuf>,
    },
}

pub(super) fn run(command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let policy = Policy::load(file)?;
            println!(
                "{}: OK ({} mode, {} trusted key(s), {} interpreter profile(s), {} exception(s))",
                file.display(),
                policy.mode,
                policy.trust.keyring.len(),
                policy.interpreters.len(),
                policy.exceptions.len()
            );
            if policy.trust.keyring.is_empty() {
                println!(
                    "{}: warning: no trusted key: every signature will be refused",
                    file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show { file } => {
            let policy = Policy::load_or_default(file.as_deref())?;
            print!("{}", policy.summary());
            Ok(ExitCode::SUCCESS)
        }
    }
}
