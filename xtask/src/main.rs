//! Project automation: `cargo xtask test`, `cargo xtask run`, ...

mod fuzz;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};

mod bench;
mod package;
mod setup;
mod vm;

#[derive(Parser)]
#[command(about = "guard's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain (rust-src, bpf-linker) and the host packages tests need.
    Setup,
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
    /// Run the libFuzzer harnesses (nightly; installs cargo-fuzz when missing).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only this target (repeatable); all by default.
        #[arg(long)]
        target: Vec<String>,
    },
    /// The load test: 32 interpreters, rewrites and reloads against the real agent; then
    /// adversaries (a stalling FUSE daemon, a byte-flipping writer, a flood of distinct
    /// files under a memory limit) against a victim's runs.
    Stress {
        /// Seconds of load (each test).
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only the adversaries.
        #[arg(long)]
        adversarial: bool,
    },
    /// Measure guard against no guard and fapolicyd (about 10 minutes; root).
    Bench(bench::Options),
    /// Build the Debian package (cargo-deb) into target/package/ and check it with lintian.
    Package {
        /// Package the debug binary instead of a release build (quick, for checks).
        #[arg(long)]
        debug: bool,
        /// Also check it end to end: contents, install on this host (root), run the
        /// installed agent as its unit would, purge.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Test { args } => test(&args),
        // Both build guard (with its eBPF programs) and boot qemu: a fresh machine needs
        // the toolchain pieces and packages first.
        Task::Run(args) => setup::setup().and_then(|()| vm::run(args)),
        Task::VmTest(args) => setup::setup().and_then(|()| vm::vm_test(args)),
        Task::Fuzz { time, target } => {
            let targets = if target.is_empty() {
                fuzz::TARGETS.iter().map(|t| t.to_string()).collect()
            } else {
                target
            };
            fuzz::fuzz(time, &targets, fuzz::Build::Optimised).map(|_| ())
        }
        Task::Stress { time, adversarial } => stress(time, adversarial),
        Task::Bench(options) => bench::run(&workspace_root(), &options),
        Task::Package { debug, check } => {
            let profile = if debug {
                package::Profile::Dev
            } else {
                package::Profile::Release
            };
            if check {
                package::check(profile)
            } else {
                package::build(profile).and_then(|deb| package::lint(&deb))
            }
        }
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

/// Installs a cargo subcommand from crates.io when `probe --version` fails.
fn ensure_cargo_tool(mut probe: Command, package: &str) -> Result<()> {
    let present = probe
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !present {
        run(Command::new("cargo").args(["install", "--locked", package]))?;
    }
    Ok(())
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
    // The suite's agents enforce the default native-code rule host-wide, which refuses
    // group-writable programs: the binaries it builds and runs must not be (umask 002).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    setup::setup()?;
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
    // A short run of every harness, replaying the kept crash inputs.
    let targets: Vec<String> = fuzz::TARGETS.iter().map(|t| t.to_string()).collect();
    fuzz::fuzz(FUZZ_SECONDS_IN_TEST, &targets, fuzz::Build::Quick)?;
    // The package, end to end, from the debug binary just tested (see package::Profile).
    package::check(package::Profile::Dev)?;
    // The kernel layer on real kernels with BPF LSM (6.12 and the newest), in the VM.
    vm::vm_test_in_suite()?;
    Ok(())
}

const FUZZ_SECONDS_IN_TEST: u64 = 5;

/// The full-length stress tests (the test suite runs short ones).
fn stress(seconds: u64, adversarial: bool) -> Result<()> {
    run(cargo().args(["build", "--package", "guard"]))?;
    let only: &[&str] = if adversarial { &["adversaries"] } else { &[] };
    run(cargo()
        .args([
            "test",
            "--package",
            "guard-tests",
            "--test",
            "stress",
            "--",
            "--nocapture",
            "--test-threads=1",
        ])
        .args(only)
        .env("GUARD_BIN", workspace_root().join("target/debug/guard"))
        .env("GUARD_STRESS_SECONDS", seconds.to_string()))
}

/// Runs a command and returns its standard output; fails with its standard error.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
