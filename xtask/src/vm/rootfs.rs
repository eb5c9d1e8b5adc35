//! The guest's Debian userland: a debootstrap tree, cached per suite, turned
//! into an ext4 image (ext4 keeps `security.*` xattrs, which guard's
//! signatures live in).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{kernel::Kernel, replace_dir, step, write_atomic};

const MIRROR: &str = "http://deb.debian.org/debian";

/// On top of minbase (which already has bash, coreutils, util-linux with
/// setpriv/unshare, bsdutils with script, passwd with useradd).
const PACKAGES: &[&str] = &[
    "python3",
    "ima-evm-utils",
    "attr",
    "procps",
    "kmod",
    "openssl",
    "strace",
    // systemd as PID 1 for tests/vm/*systemd*.sh only (every other boot runs xtask/vm/init.sh),
    // and dbus for `systemd-analyze security`, which asks the manager over the system bus.
    "systemd",
    "dbus",
];

/// Bump when the image contents change in a way the inputs below do not show.
const IMAGE_LAYOUT: &str = "4";

/// Free space in the guest root on top of what the tree needs.
const IMAGE_SLACK: u64 = 1 << 30;

pub(super) struct Keys {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub cert_der: PathBuf,
}

/// Where the signing key and certificate live inside the guest.
pub(super) const GUEST_KEY: &str = "/etc/guard/signing-key.pem";
pub(super) const GUEST_CERT: &str = "/etc/guard/signing-cert.pem";
pub(super) const GUEST_CERT_DER: &str = "/etc/guard/signing-cert.der";

/// One EC P-256 key pair for the VM, kept on the host too so host-side test
/// code can sign files in shared directories with the same key.
pub(super) fn ensure_keys(vm_dir: &Path) -> Result<Keys> {
    let dir = vm_dir.join("keys");
    let keys = Keys {
        key: dir.join("signing-key.pem"),
        cert: dir.join("signing-cert.pem"),
        cert_der: dir.join("signing-cert.der"),
    };
    if keys.key.exists() && keys.cert.exists() && keys.cert_der.exists() {
        return Ok(keys);
    }
    step("generating the VM's EC P-256 signing key and self-signed certificate");
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    crate::run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(tmp.join("signing-key.pem")),
    )?;
    crate::run(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "3650",
                "-subj",
                "/CN=guard test VM signing key",
            ])
            .args(["-addext", "subjectKeyIdentifier=hash"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "keyUsage=critical,digitalSignature"])
            .arg("-key")
            .arg(tmp.join("signing-key.pem"))
            .arg("-out")
            .arg(tmp.join("signing-cert.pem")),
    )?;
    crate::run(
        Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(tmp.join("signing-cert.pem"))
            .arg("-out")
            .arg(tmp.join("signing-cert.der")),
    )?;
    replace_dir(&tmp, &dir)?;
    Ok(keys)
}

pub(super) fn ensure_tree(vm_dir: &Path, suite: &str) -> Result<PathBuf> {
    let tree = vm_dir.join(format!("rootfs-{suite}"));
    let done = tree.join(".guard-debootstrap-done");
    // A tree made with another package list is made again (its stamp changes, so does the
    // image built from it).
    let packages = tree.join(".guard-debootstrap-packages");
    if done.exists() && fs::read_to_string(&packages).ok().as_deref() == Some(&PACKAGES.join(",")) {
        return Ok(tree);
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("debootstrap is missing: apt-get install debootstrap");
    }
    let tmp = tree.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    step(&format!(
        "debootstrap {suite} into {} (first time only, a few minutes)",
        tmp.display()
    ));
    let started = Instant::now();
    crate::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(suite)
            .arg(&tmp)
            .arg(MIRROR),
    )?;
    // The stamp's content (the build time) feeds the image name, so a new
    // debootstrap always yields a new image.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    write_atomic(
        &tmp.join(".guard-debootstrap-packages"),
        PACKAGES.join(",").as_bytes(),
    )?;
    write_atomic(
        &tmp.join(".guard-debootstrap-done"),
        now.to_string().as_bytes(),
    )?;
    replace_dir(&tmp, &tree)?;
    step(&format!(
        "debootstrap done ({:.0} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(tree)
}

/// FNV-1a: only to name cached images and repositories after their inputs, no security role.
pub(super) fn fnv(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn dir_size(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    let mut size = meta.len().div_ceil(4096) * 4096;
    if meta.is_dir() {
        for e in fs::read_dir(path)? {
            size += dir_size(&e?.path())?;
        }
    }
    Ok(size)
}

/// Returns the root image for these kernels, building it when the tree, the
/// keys or the kernel set changed. Modules of every kernel go in, so one
/// image serves all kernels and `modprobe` works in the guest.
pub(super) fn ensure_image(
    vm_dir: &Path,
    tree: &Path,
    suite: &str,
    keys: &Keys,
    kernels: &[Kernel],
    signer: Option<&Path>,
) -> Result<PathBuf> {
    let mut h = fnv(IMAGE_LAYOUT.as_bytes(), 0xcbf2_9ce4_8422_2325);
    // Signatures depend on content and key only, not on the guard build that wrote them.
    h = fnv(
        if signer.is_some() {
            b"signed"
        } else {
            b"unsigned"
        },
        h,
    );
    h = fnv(&fs::read(tree.join(".guard-debootstrap-done"))?, h);
    for f in [&keys.key, &keys.cert] {
        h = fnv(&fs::read(f)?, h);
    }
    let mut releases: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
    releases.sort();
    releases.dedup();
    h = fnv(releases.join(" ").as_bytes(), h);
    let prefix = format!("root-{suite}-");
    let image = vm_dir.join(format!("{prefix}{h:016x}.img"));
    if image.exists() {
        return Ok(image);
    }
    let started = Instant::now();
    step(&format!(
        "preparing the guest tree for kernels {}",
        releases.join(", ")
    ));
    customise(tree, keys, kernels)?;
    if let Some(guard) = signer {
        sign_interpreters(tree, guard)?;
    }
    let size = dir_size(tree)? * 5 / 4 + IMAGE_SLACK;
    let tmp = image.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    step(&format!(
        "building {} ({} MiB) with mkfs.ext4 -d",
        image.display(),
        size >> 20
    ));
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "guard-root", "-E", "root_owner=0:0", "-d"])
            .arg(tree)
            .arg(&tmp)
            .arg(format!("{}k", size >> 10))
            .stdout(std::process::Stdio::null()),
    )?;
    fs::rename(&tmp, &image)?;
    // Older images only waste space once a new one exists.
    for e in fs::read_dir(vm_dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if p != image && name.starts_with(&prefix) && name.ends_with(".img") {
            let _ = fs::remove_file(&p);
        }
    }
    step(&format!(
        "root image ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(image)
}

/// Signs everything the guest's interpreters run (python3, perl, ruby and node: their
/// libraries, extension objects and the shared libraries they load) with the VM key, so
/// the agent can enforce on a real Debian userland. Runs guard inside the tree so the
/// layout is the guest's.
fn sign_interpreters(tree: &Path, guard: &Path) -> Result<()> {
    step(
        "signing the guest's interpreters with the VM key (guard sign --python --perl --ruby --node)",
    );
    let inside = "tmp/guard-sign";
    let copy = tree.join(inside);
    fs::copy(guard, &copy).with_context(|| format!("copying {}", guard.display()))?;
    let result = crate::run(
        Command::new("chroot")
            .arg(tree)
            .arg(format!("/{inside}"))
            .args([
                "sign",
                "--python",
                "/usr/bin/python3",
                "--perl",
                "/usr/bin/perl",
                "--ruby",
                "/usr/bin/ruby",
                "--node",
                "/usr/bin/nodejs",
                "--key",
                GUEST_KEY,
            ]),
    );
    let _ = fs::remove_file(&copy);
    result
}

/// Packages the tests need beyond debootstrap's, from the tree's own suite, each with a file
/// that shows it is there. auditd for tests/vm/kernel_audit.sh (refusals in the kernel audit
/// log): installed, not started (the test starts it with a log of its own, no other test
/// runs with auditing on). perl (beyond perl-base: its debugger and modules), ruby and
/// nodejs for the other interpreters' tests (tests/vm/interpreters.sh).
const GUEST_PACKAGES: &[(&str, &str)] = &[
    ("auditd", "usr/sbin/auditd"),
    ("perl", "usr/bin/cpan"),
    ("ruby", "usr/bin/ruby"),
    ("nodejs", "usr/bin/nodejs"),
];

fn install_packages(tree: &Path) -> Result<()> {
    let missing: Vec<&str> = GUEST_PACKAGES
        .iter()
        .filter(|(_, file)| !tree.join(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing {} into the guest tree (first time only)",
        missing.join(", ")
    ));
    // No `apt-get clean`: the test apt repository repacks the python3.11 .debs debootstrap
    // left in the tree's archive cache (apt_repo.rs).
    // Maintainer scripts must not start the daemon in the chroot.
    let policy = tree.join("usr/sbin/policy-rc.d");
    write_atomic(&policy, b"#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
    let result = crate::run(Command::new("chroot").arg(tree).args([
        "sh",
        "-c",
        &format!(
            "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q install -y \
             --no-install-recommends {} && rm -rf /var/lib/apt/lists/*",
            missing.join(" ")
        ),
    ]));
    let _ = fs::remove_file(&policy);
    result?;
    let _ = fs::remove_file(tree.join("etc/systemd/system/multi-user.target.wants/auditd.service"));
    Ok(())
}

/// Idempotent changes to the debootstrap tree before imaging it.
fn customise(tree: &Path, keys: &Keys, kernels: &[Kernel]) -> Result<()> {
    let guard_dir = tree.join("etc/guard");
    fs::create_dir_all(&guard_dir)?;
    for (src, dst) in [
        (&keys.key, GUEST_KEY),
        (&keys.cert, GUEST_CERT),
        (&keys.cert_der, GUEST_CERT_DER),
    ] {
        fs::copy(src, tree.join(dst.trim_start_matches('/')))
            .with_context(|| format!("copying {}", src.display()))?;
    }
    for d in [
        "mnt/vm",
        "var/log/guard",
        "sys/fs/bpf",
        "sys/kernel/security",
    ] {
        fs::create_dir_all(tree.join(d))?;
    }
    write_atomic(&tree.join("etc/hostname"), b"guard-vm\n")?;
    install_packages(tree)?;
    let modules = tree.join("usr/lib/modules");
    let _ = fs::remove_dir_all(&modules);
    fs::create_dir_all(&modules)?;
    for k in kernels {
        let dst = modules.join(&k.release);
        if dst.exists() {
            continue;
        }
        crate::run(Command::new("cp").arg("-a").arg(k.modules()).arg(&dst))?;
        // depmod from the guest's own kmod, so the host needs no kmod package.
        crate::run(
            Command::new("chroot")
                .arg(tree)
                .args(["depmod", "-a"])
                .arg(&k.release),
        )?;
    }
    Ok(())
}
