//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The guard binary under test: `GUARD_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build.
pub fn guard_bin() -> PathBuf {
    match std::env::var_os("GUARD_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives inside the workspace")
            .join("target/debug/guard"),
    }
}

/// Runs a command to completion. A missing tool is a test failure, never a skip: the
/// interoperability tests mean nothing without it.
pub fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let program = program.as_ref();
    let mut cmd = Command::new(program);
    for arg in args {
        cmd.arg(arg);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program:?} (is it installed?): {e}"))
}

/// Runs guard with `args`.
pub fn guard(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    run(guard_bin(), args)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
