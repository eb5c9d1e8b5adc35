//! Project automation: `cargo xtask test`, `cargo xtask run`, ...

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod vm;

#[derive(Parser)]
#[command(about = "guard's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build everything and run every test (unit, integration, interop).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Boot the test VM and run a command (or a demo) in it as root.
    Run(vm::RunArgs),
    /// Boot each test kernel and run tests/vm/*.sh in the VM.
    VmTest(vm::VmTestArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Test { args } => test(&args),
        Task::Run(args) => vm::run(args),
        Task::VmTest(args) => vm::vm_test(args),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["build", "--package", "guard"]))?;
    let guard_bin = workspace_root().join("target/debug/guard");
    run(cargo()
        .args(["test", "--workspace"])
        .args(extra)
        .env("GUARD_BIN", &guard_bin))?;
    Ok(())
}
