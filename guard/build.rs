//! Builds what the `guard` binary embeds: the kernel programs (`guard-ebpf`) for the BPF
//! target with aya-build (`include_bytes_aligned!`), and the native front of the Python
//! audit hook (`guard-pyhook`, a CPython extension module) for the host, which
//! `guard python-hook install` writes beside the hook module.
//!
//! Needs the nightly toolchain with rust-src and bpf-linker: `cargo xtask setup`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // guard's own workspace, also when guard is built as a dependency of another one
    // (the fuzz harnesses are a workspace of their own).
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(manifest)
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    build_python_extension(metadata.workspace_root.as_std_path())?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "guard-ebpf")
        .ok_or_else(|| anyhow!("guard-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("guard-ebpf manifest has no parent"))?
        .as_str()
        .to_owned();
    let package = Package {
        name: ebpf.name.as_str(),
        root_dir: &root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}

/// Builds `guard-pyhook` (release, stripped) into its own target directory under `OUT_DIR`
/// (a cargo in the outer one would wait for the outer one's lock), and puts the module at
/// `OUT_DIR/guard_audit_fast.abi3.so`.
fn build_python_extension(workspace: &Path) -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let target_dir = out_dir.join("pyhook-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("guard-pyhook").display()
    );
    let built = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--package",
            "guard-pyhook",
            "--target-dir",
        ])
        .arg(&target_dir)
        // The flags of the build that runs this script (a sanitizer's, in the fuzz
        // workspace) are for guard, not for a module the interpreter loads.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .output()
        .context("running cargo to build guard-pyhook")?;
    if !built.status.success() {
        bail!(
            "building guard-pyhook failed ({}):\n{}",
            built.status,
            String::from_utf8_lossy(&built.stderr)
        );
    }
    let built = target_dir.join("release/libguard_audit_fast.so");
    std::fs::copy(&built, out_dir.join("guard_audit_fast.abi3.so"))
        .with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}
