//! Hidden subcommands that render documentation from the clap definition itself, so the
//! man pages and shell completions the package ships cannot drift from the real options.
//! `cargo xtask package` runs them with the binary it packages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Args)]
pub(crate) struct OutDir {
    /// Directory to write into (created if missing).
    pub dir: PathBuf,
}

fn command() -> clap::Command {
    Cli::command()
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The manual section of guard's pages: 8, system administration, since the package installs
/// guard in /usr/sbin (Debian policy 12.1; lintian checks the pairing).
const MAN_SECTION: &str = "8";

/// guard.8 and one page per visible subcommand (guard-run.8, guard-policy-check.8, …).
pub(super) fn man(args: &OutDir) -> anyhow::Result<ExitCode> {
    // clap_mangen::generate_to writes section 1 only; this is its walk with the section set.
    fn generate(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            generate(sub, dir)?;
        }
        clap_mangen::Man::new(cmd)
            .section(MAN_SECTION)
            .generate_to(dir)
            .map(|_| ())
    }
    create(&args.dir)?;
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    generate(cmd, &args.dir)
        .with_context(|| format!("writing man pages to {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Completions for bash (guard.bash), zsh (_guard) and fish (guard.fish).
pub(super) fn completions(args: &OutDir) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell;
    create(&args.dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = command();
        clap_complete::generate_to(shell, &mut cmd, "guard", &args.dir)
            .with_context(|| format!("writing {shell} completions to {}", args.dir.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and positional of every subcommand has a help line: the man pages and
    /// `--help` are the operator's reference. (`tests/tests/cli.rs` checks the rendered help.)
    #[test]
    fn every_argument_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "guard", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }
}
