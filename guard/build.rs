//! Builds the kernel programs (`guard-ebpf`) for the BPF target with aya-build, so the
//! `guard` binary embeds them (`include_bytes_aligned!`).
//!
//! Needs the nightly toolchain with rust-src and bpf-linker: `cargo xtask setup`.

use anyhow::{Context as _, anyhow};
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
