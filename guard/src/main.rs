//! The `guard` command: agent and administration tool.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if guard::agent::journal::Journal::stderr_is_journal() {
        // journald takes a `<N>` prefix as the line's priority (SyslogLevelPrefix=, on by
        // default) and stamps the time itself: errors are `err`, refusals `warning`.
        logger.format(|out, record| {
            use guard::agent::journal::{PRIORITY_ERR, PRIORITY_INFO, PRIORITY_WARNING};
            use std::io::Write;
            let priority = match record.level() {
                log::Level::Error => PRIORITY_ERR,
                log::Level::Warn => PRIORITY_WARNING,
                log::Level::Info => PRIORITY_INFO,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{priority}>{}: {}", record.target(), record.args())
        });
    } else {
        logger.format_timestamp_millis();
    }
    logger.init();
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
