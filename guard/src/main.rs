//! The `guard` command: agent and administration tool.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = cli::Cli::parse();
    if !matches!(args.command, cli::Command::Run(_)) {
        // A command whose output is cut short (`guard status | head`) ends quietly, as Unix
        // tools do, instead of failing on EPIPE. The agent keeps SIGPIPE ignored: a closed
        // log pipe must not kill enforcement.
        #[allow(unsafe_code)]
        // SAFETY: restores the default disposition (no handler code runs), before any
        // thread exists.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("guard: {error:#}");
            ExitCode::from(2)
        }
    }
}
