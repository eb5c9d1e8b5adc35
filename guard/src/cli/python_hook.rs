//! `guard python-hook install`: writes guard's Python audit hook into a site directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum PythonHookCommand {
    /// Write the audit hook module, its native front (an extension module that answers
    /// the import system's own events without running Python) and the `.pth` file that
    /// loads the hook at start-up into a site directory (a directory `site` reads `.pth`
    /// files from). Prints the files written. Sign them, like the rest of the
    /// interpreter's library: the interpreter may load them only signed.
    Install {
        /// The site directory.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/usr/lib/python3/dist-packages"
        )]
        site: PathBuf,
        /// The agent's hook socket (beside its status socket).
        #[arg(long, value_name = "PATH", default_value = guard::python_hook::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// When no agent can be asked (none runs, or a namespace hides its socket): refuse
        /// code made at run time but by the stdlib files the default policy expects (fail
        /// closed), or allow it.
        #[arg(long, value_enum, default_value = "refuse")]
        when_unreachable: WhenUnreachable,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum WhenUnreachable {
    Refuse,
    Allow,
}

pub(super) fn run(command: &PythonHookCommand) -> anyhow::Result<ExitCode> {
    match command {
        PythonHookCommand::Install {
            site,
            socket,
            when_unreachable,
        } => {
            let unreachable = match when_unreachable {
                WhenUnreachable::Refuse => guard::python_hook::Unreachable::Refuse,
                WhenUnreachable::Allow => guard::python_hook::Unreachable::Allow,
            };
            let written = guard::python_hook::install(site, socket, unreachable)
                .with_context(|| format!("installing the audit hook into {}", site.display()))?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
