//! `cargo xtask setup`: the toolchain and host packages the build and the tests need.
//! Idempotent: every step checks first and says what it does or why it skips.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{run, workspace_root};

/// Debian packages the tests and the test VM use: evmctl (the interop oracle), setfattr,
/// the python3 the agent profiles, perl, ruby and nodejs (the other interpreters: their
/// command-line differential tests and attack tests), openssl for
/// test keys, setpriv, man and systemd-analyze for the package check, gcc for the attack
/// tests' native library, and qemu, debootstrap,
/// mkfs.ext4, xz and busybox for the VM (virtiofsd ships in qemu-system-common), gnupg to
/// sign the VM's test apt repository (a fresh machine has gpgv only), lintian for the package
/// check (`cargo xtask package` fails on any tag it reports that no override explains),
/// prometheus_client's parser to read `guard status --format openmetrics` as a scraper
/// would, auditd for auditctl and ausearch (the kernel audit test starts its own daemon
/// where none runs), and valgrind for the bench's instruction counts.
const DEBIAN_PACKAGES: &[&str] = &[
    "python3",
    "perl",
    "ruby",
    "nodejs",
    "attr",
    "acl",
    "ima-evm-utils",
    "openssl",
    "util-linux",
    "procps",
    "man-db",
    "systemd",
    "gcc",
    "qemu-system-x86",
    "debootstrap",
    "e2fsprogs",
    "xz-utils",
    "busybox-static",
    "valgrind",
    "gnupg",
    "lintian",
    "python3-prometheus-client",
    "auditd",
];

/// The bpf-linker release that matches the aya 0.14 set.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub(crate) fn setup() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `-Z build-std=core` for the BPF target needs the standard library's sources.
fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("xtask setup: rust-src for nightly: present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker linked against the nightly's own LLVM, so the bitcode rustc emits and the
/// LLVM that links it are the same version (a system LLVM would not be).
fn bpf_linker() -> Result<()> {
    if succeeds(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"])) {
        eprintln!("xtask setup: bpf-linker: present");
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    // libLLVM.so.22.1-rust-1.97.0-nightly
    let versioned = std::fs::read_dir(&sysroot_lib)
        .with_context(|| format!("cannot list {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", sysroot_lib.display()))?;
    let major = versioned
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|major| major.parse::<u32>().is_ok())
        .with_context(|| format!("cannot read the LLVM version of {versioned}"))?
        .to_owned();

    let prefix = workspace_root().join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for link in [versioned.as_str(), "libLLVM.so"] {
        let path = prefix_lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(sysroot_lib.join(&versioned), &path)
            .with_context(|| format!("cannot link {}", path.display()))?;
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against {versioned} (takes minutes)"
    );
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !succeeds(Command::new("dpkg").args(["-s", package])))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: Debian packages present: {}",
            DEBIAN_PACKAGES.join(" ")
        );
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
