//! `cargo xtask fuzz`: the libFuzzer harnesses in `fuzz/` (cargo-fuzz layout, nightly).
//!
//! Every run replays `fuzz/regressions/<target>/` (inputs that once crashed) along with the
//! seeds, so a fixed crash that comes back fails the run at once. A new crash is copied
//! into that folder, to be kept with its fix.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

pub(crate) const TARGETS: [&str; 8] = [
    "policy",
    "ima",
    "keys",
    "sniff",
    "argv",
    "argv_cpython",
    "argv_perl",
    "argv_node",
];

/// Executions and outcome of one target's run.
pub(crate) struct Outcome {
    pub target: String,
    pub executions: u64,
    pub seconds: u64,
}

fn cargo_nightly() -> Command {
    // The rustup proxy, not the toolchain cargo xtask runs under: only the proxy
    // understands `+nightly`, and the outer cargo's variables would pin the stable tools.
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .current_dir(workspace_root().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Installs cargo-fuzz when missing (the `setup` half of fuzzing).
pub(crate) fn setup() -> Result<()> {
    let mut probe = cargo_nightly();
    probe.arg("fuzz");
    crate::ensure_cargo_tool(probe, "cargo-fuzz")
}

/// How the harnesses are compiled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// Optimised (`cargo xtask fuzz`): the most executions per second.
    Optimised,
    /// Unoptimised (the test suite's few seconds per target, mostly replaying kept inputs):
    /// the optimised build alone took six of the suite's minutes.
    Quick,
}

/// Runs each of `targets` for `seconds` and reports its executions.
pub(crate) fn fuzz(seconds: u64, targets: &[String], build: Build) -> Result<Vec<Outcome>> {
    for target in targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "unknown fuzz target {target:?} (known: {})",
                TARGETS.join(", ")
            );
        }
    }
    setup()?;
    let fuzz_dir = workspace_root().join("fuzz");
    // Debug assertions on: integer overflow is a crash worth knowing about.
    let profile: &[&str] = match build {
        Build::Optimised => &["--debug-assertions"],
        Build::Quick => &["--dev"],
    };
    crate::run(cargo_nightly().args(["fuzz", "build"]).args(profile))?;
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        let regressions = fuzz_dir.join("regressions").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| corpus.display().to_string())?;
        std::fs::create_dir_all(&regressions).with_context(|| regressions.display().to_string())?;
        let mut cmd = cargo_nightly();
        cmd.args(["fuzz", "run"])
            .args(profile)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg(&regressions)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // A single input taking seconds is a hang in an agent that answers the kernel.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-max_len=65536")
            .arg("-print_final_stats=1")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let output = cmd
            .output()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            eprintln!("{log}");
            let kept = keep_artifacts(&fuzz_dir, target)?;
            bail!(
                "fuzz target {target} failed ({}); crashing input(s) kept in {}: {}",
                output.status,
                regressions.display(),
                kept.join(", ")
            );
        }
        let executions = final_stat(&log, "stat::number_of_executed_units").unwrap_or(0);
        eprintln!("xtask: fuzz {target}: {executions} executions in {seconds} s, no crash");
        outcomes.push(Outcome {
            target: target.clone(),
            executions,
            seconds,
        });
    }
    for o in &outcomes {
        eprintln!(
            "xtask: fuzz summary: {:<8} {:>10} executions in {} s",
            o.target, o.executions, o.seconds
        );
    }
    Ok(outcomes)
}

fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
}

/// Copies libFuzzer's crash, timeout and out-of-memory artifacts into the target's
/// regression folder.
fn keep_artifacts(fuzz_dir: &Path, target: &str) -> Result<Vec<String>> {
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let mut kept = Vec::new();
    let Ok(entries) = std::fs::read_dir(&artifacts) else {
        return Ok(kept);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let destination = fuzz_dir.join("regressions").join(target).join(&name);
        std::fs::copy(entry.path(), &destination)
            .with_context(|| destination.display().to_string())?;
        kept.push(name);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "INFO: seed\nstat::number_of_executed_units: 123456\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(123456)
        );
        assert_eq!(final_stat(log, "stat::missing"), None);
    }
}
