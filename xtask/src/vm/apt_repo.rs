//! A signed flat apt repository for the packages VM test (tests/vm/*packages*.sh), which
//! upgrades the guest's python3.11 through apt the way a host takes a Debian point release,
//! and installs a package guard has never seen. The "point release" is the guest's own
//! python3.11 packages, repacked one version up (so nothing is downloaded) with one file
//! the old version lacks. It is built on the host: the guest has gpgv but no gpg to sign a
//! Release, and no network.
//!
//! In place in the guest: `deb [signed-by=/mnt/vm/packages/repo/key.asc] file:/mnt/vm/packages/repo ./`

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::{replace_dir, rootfs::fnv, step, write_atomic};
use crate::output;

/// The binary packages of python3.11 the guest has, in one upgrade: they pin each other's
/// exact version, so apt can only take them together.
const PYTHON_PACKAGES: &[&str] = &[
    "python3.11",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
];

/// Appended to the installed version: dpkg sorts `OLD+guard1` right after `OLD`, as it
/// would a stable update.
const VERSION_SUFFIX: &str = "+guard1";

/// A file only the upgrade ships, so a test can tell content new in an upgrade from
/// content the image was signed with.
const MARKER_PACKAGE: &str = "libpython3.11-stdlib";
const MARKER_PATH: &str = "usr/lib/python3.11/guard_upgrade_marker.py";

/// The package no host file predates.
const MODULE_PACKAGE: &str = "guard-test-module";
const MODULE_VERSION: &str = "1.0";
const MODULE_PATH: &str = "usr/lib/python3/dist-packages/guard_test_module.py";
const MODULE_CONTENT: &str = "NAME = \"guard-test-module\"\n";

/// Written into Release; `[packages] origins` in a guest policy names it.
const ORIGIN: &str = "guard-test";

const KEY_EMAIL: &str = "guard-test@localhost";
const KEY_UID: &str = "guard test repository <guard-test@localhost>";

/// Bump when the repository's contents change in a way its inputs do not show.
const REPO_LAYOUT: &str = "1";

/// Returns the repository directory (Packages, Release, InRelease, Release.gpg, key.asc
/// and the .debs side by side), building it when the guest tree's python3.11 packages, the
/// signing key or the layout changed.
pub(super) fn ensure(vm_dir: &Path, tree: &Path) -> Result<PathBuf> {
    let gpg = ensure_key(vm_dir)?;
    let public_key = fs::read(gpg.public_key())
        .with_context(|| format!("reading {}", gpg.public_key().display()))?;
    let sources = python_debs(tree)?;
    let mut h = fnv(REPO_LAYOUT.as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = fnv(&public_key, h);
    for deb in &sources {
        h = fnv(
            &fs::read(&deb.path).with_context(|| format!("reading {}", deb.path.display()))?,
            h,
        );
    }
    let repo = vm_dir.join(format!("repo-{h:016x}"));
    if repo.join("InRelease").exists() {
        return Ok(repo);
    }
    let started = Instant::now();
    step(&format!(
        "building the test apt repository {} (python3.11 {} -> {}{VERSION_SUFFIX})",
        repo.display(),
        sources[0].version,
        sources[0].version
    ));
    let pid = std::process::id();
    let tmp = repo.with_extension(format!("tmp{pid}"));
    let work = repo.with_extension(format!("work{pid}"));
    for d in [&tmp, &work] {
        let _ = fs::remove_dir_all(d);
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let built = build(&gpg, &sources, &public_key, &work, &tmp);
    let _ = fs::remove_dir_all(&work);
    if let Err(e) = built.and_then(|()| replace_dir(&tmp, &repo)) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Older repositories only waste space once a new one exists.
    for e in fs::read_dir(vm_dir).with_context(|| format!("reading {}", vm_dir.display()))? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if p != repo && name.starts_with("repo-") && !name.contains('.') {
            let _ = fs::remove_dir_all(&p);
        }
    }
    step(&format!(
        "test apt repository ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(repo)
}

struct SourceDeb {
    name: &'static str,
    path: PathBuf,
    version: String,
}

/// The cached .debs debootstrap installed python3.11 from, at the version the guest has
/// (the cache may hold others).
fn python_debs(tree: &Path) -> Result<Vec<SourceDeb>> {
    let archives = tree.join("var/cache/apt/archives");
    let admindir = tree.join("var/lib/dpkg");
    let mut found = Vec::new();
    for &name in PYTHON_PACKAGES {
        let installed = output(
            Command::new("dpkg-query")
                .arg(format!("--admindir={}", admindir.display()))
                .args(["--show", "--showformat=${Version}", name]),
        )
        .with_context(|| {
            format!(
                "{name} is not installed in {} (the packages VM test needs the bookworm guest)",
                tree.display()
            )
        })?;
        let installed = installed.trim().to_owned();
        let mut path = None;
        for e in
            fs::read_dir(&archives).with_context(|| format!("reading {}", archives.display()))?
        {
            let p = e?.path();
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            if !(file.starts_with(&format!("{name}_")) && file.ends_with(".deb")) {
                continue;
            }
            if field(&p, "Version")? == installed {
                path = Some(p);
                break;
            }
        }
        let path = path.with_context(|| {
            format!(
                "no {name}_*.deb of version {installed} in {}",
                archives.display()
            )
        })?;
        found.push(SourceDeb {
            name,
            path,
            version: installed,
        });
    }
    // The sibling pins are rewritten from one old version to one new one.
    let version = &found[0].version;
    if let Some(other) = found.iter().find(|d| &d.version != version) {
        bail!(
            "python3.11 packages at different versions in {}: {} {version}, {} {}",
            tree.display(),
            found[0].name,
            other.name,
            other.version
        );
    }
    Ok(found)
}

fn build(
    gpg: &Gpg,
    sources: &[SourceDeb],
    public_key: &[u8],
    work: &Path,
    out: &Path,
) -> Result<()> {
    let mut debs = Vec::new();
    for source in sources {
        debs.push(repack(source, work, out)?);
    }
    debs.push(build_module(work, out)?);

    let mut packages = String::new();
    for deb in &debs {
        if !packages.is_empty() {
            packages.push('\n');
        }
        packages.push_str(&stanza(deb)?);
    }
    let packages_path = out.join("Packages");
    write_atomic(&packages_path, packages.as_bytes())?;

    let date = output(Command::new("date").args(["-u", "-R"]).env("LC_ALL", "C"))?;
    let release = format!(
        "Origin: {ORIGIN}\nLabel: {ORIGIN}\nSuite: {ORIGIN}\nCodename: {ORIGIN}\n\
         Date: {}\nArchitectures: amd64 all\n\
         Description: guard VM test repository (python3.11 repacked as a point release)\n\
         SHA256:\n {} {} Packages\n",
        date.trim(),
        digest("sha256sum", &packages_path)?,
        packages.len()
    );
    let release_path = out.join("Release");
    write_atomic(&release_path, release.as_bytes())?;
    gpg.sign(&["--clearsign"], &release_path, &out.join("InRelease"))?;
    gpg.sign(
        &["--armor", "--detach-sign"],
        &release_path,
        &out.join("Release.gpg"),
    )?;
    write_atomic(&out.join("key.asc"), public_key)?;
    world_readable(out)
}

/// The source package unpacked raw (maintainer scripts, conffiles and md5sums kept) and
/// built again one version up, with the sibling pins moved along.
fn repack(source: &SourceDeb, work: &Path, out: &Path) -> Result<PathBuf> {
    let old = &source.version;
    let new = format!("{old}{VERSION_SUFFIX}");
    let dir = work.join(source.name);
    crate::run(
        Command::new("dpkg-deb")
            .arg("--raw-extract")
            .arg(&source.path)
            .arg(&dir),
    )?;
    let control_path = dir.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path)
        .with_context(|| format!("reading {}", control_path.display()))?;
    let (old_pin, new_pin) = (format!("(= {old})"), format!("(= {new})"));
    let mut edited = String::new();
    let mut versioned = false;
    for line in control.lines() {
        if line.starts_with("Version:") {
            edited.push_str(&format!("Version: {new}"));
            versioned = true;
        } else {
            edited.push_str(&line.replace(&old_pin, &new_pin));
        }
        edited.push('\n');
    }
    ensure!(versioned, "{} has no Version field", control_path.display());
    write_atomic(&control_path, edited.as_bytes())?;
    set_mode(&control_path, 0o644)?;

    if source.name == MARKER_PACKAGE {
        let marker = dir.join(MARKER_PATH);
        write_atomic(&marker, format!("VERSION = \"{new}\"\n").as_bytes())?;
        set_mode(&marker, 0o644)?;
        // dpkg --verify and debsums know the file like every other one.
        let line = output(
            Command::new("md5sum")
                .arg("--")
                .arg(MARKER_PATH)
                .current_dir(&dir),
        )?;
        let md5sums = dir.join("DEBIAN/md5sums");
        let mut sums = fs::read_to_string(&md5sums)
            .with_context(|| format!("reading {}", md5sums.display()))?;
        if !sums.is_empty() && !sums.ends_with('\n') {
            sums.push('\n');
        }
        sums.push_str(&line);
        write_atomic(&md5sums, sums.as_bytes())?;
        set_mode(&md5sums, 0o644)?;
    }

    let arch = field(&source.path, "Architecture")?;
    let deb = out.join(deb_name(source.name, &new, &arch));
    build_deb(&dir, &deb)?;
    Ok(deb)
}

fn build_module(work: &Path, out: &Path) -> Result<PathBuf> {
    let dir = work.join(MODULE_PACKAGE);
    let file = dir.join(MODULE_PATH);
    let parent = file.parent().context("the module path has a directory")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    fs::create_dir_all(dir.join("DEBIAN"))
        .with_context(|| format!("creating {}", dir.join("DEBIAN").display()))?;
    write_atomic(&file, MODULE_CONTENT.as_bytes())?;
    let md5 = output(
        Command::new("md5sum")
            .arg("--")
            .arg(MODULE_PATH)
            .current_dir(&dir),
    )?;
    write_atomic(&dir.join("DEBIAN/md5sums"), md5.as_bytes())?;
    let control = format!(
        "Package: {MODULE_PACKAGE}\nVersion: {MODULE_VERSION}\nArchitecture: all\n\
         Maintainer: guard test suite <guard-test@localhost>\n\
         Description: Python module for the guard VM tests\n \
         Installed from the VM test repository: guard has never seen its files.\n"
    );
    write_atomic(&dir.join("DEBIAN/control"), control.as_bytes())?;
    // Built from files this process wrote under whatever umask it has.
    world_readable(&dir)?;
    let deb = out.join(deb_name(MODULE_PACKAGE, MODULE_VERSION, "all"));
    build_deb(&dir, &deb)?;
    Ok(deb)
}

fn build_deb(dir: &Path, deb: &Path) -> Result<()> {
    crate::run(
        Command::new("dpkg-deb")
            // As a Debian build would own them, whoever runs this.
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(dir)
            .arg(deb)
            .stdout(Stdio::null()),
    )
}

/// What dpkg-name would call it: the epoch's colon is not kept in file names.
fn deb_name(package: &str, version: &str, arch: &str) -> String {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    format!("{package}_{version}_{arch}.deb")
}

/// A Packages stanza: the control fields, then where the file is and its digests.
fn stanza(deb: &Path) -> Result<String> {
    let mut s = output(Command::new("dpkg-deb").arg("--field").arg(deb))?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    let name = deb
        .file_name()
        .with_context(|| format!("{} has no file name", deb.display()))?
        .to_string_lossy();
    let size = fs::metadata(deb)
        .with_context(|| format!("reading {}", deb.display()))?
        .len();
    s.push_str(&format!(
        "Filename: ./{name}\nSize: {size}\nMD5sum: {}\nSHA256: {}\n",
        digest("md5sum", deb)?,
        digest("sha256sum", deb)?
    ));
    Ok(s)
}

fn field(deb: &Path, name: &str) -> Result<String> {
    let value = output(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name))
        .with_context(|| format!("reading the {name} of {}", deb.display()))?;
    let value = value.trim();
    ensure!(!value.is_empty(), "{} has no {name} field", deb.display());
    Ok(value.to_owned())
}

fn digest(tool: &str, file: &Path) -> Result<String> {
    let out = output(Command::new(tool).arg("--").arg(file))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("{tool} printed nothing for {}", file.display()))
}

/// apt's file method and gpgv may read the repository as `_apt`.
fn world_readable(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        set_mode(path, 0o755)?;
        for e in fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            world_readable(&e?.path())?;
        }
    } else if meta.is_file() {
        set_mode(path, 0o644)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The repository's signing key: a gpg home of its own, kept across runs like the VM's
/// other keys, so a cached repository stays valid.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn command(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.home)
            .args(["--batch", "--quiet", "--no-tty"])
            .args(["--pinentry-mode", "loopback", "--passphrase", ""]);
        cmd
    }

    fn public_key(&self) -> PathBuf {
        self.home.join("key.asc")
    }

    fn sign(&self, how: &[&str], input: &Path, signed: &Path) -> Result<()> {
        // apt refuses SHA-1 signatures; say which digest rather than rely on gpg's choice.
        crate::run(
            self.command()
                .args(["--local-user", KEY_EMAIL, "--digest-algo", "SHA512"])
                .args(how)
                .arg("--output")
                .arg(signed)
                .arg(input),
        )
        .with_context(|| format!("signing {}", input.display()))
    }
}

impl Drop for Gpg {
    /// gpg leaves an agent (and keyboxd on newer gpg) running for the home.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", &self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn ensure_key(vm_dir: &Path) -> Result<Gpg> {
    let home = vm_dir.join("keys/apt-gnupg");
    let gpg = Gpg { home };
    if gpg.public_key().exists() {
        return Ok(gpg);
    }
    step("generating the test apt repository's signing key (gpg, ed25519)");
    let tmp_home = gpg
        .home
        .with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp_home);
    fs::create_dir_all(&tmp_home).with_context(|| format!("creating {}", tmp_home.display()))?;
    // gpg refuses a home others can read.
    set_mode(&tmp_home, 0o700)?;
    let tmp = Gpg {
        home: tmp_home.clone(),
    };
    let generated =
        crate::run(
            tmp.command()
                .args(["--quick-gen-key", KEY_UID, "ed25519", "sign", "never"]),
        )
        .and_then(|()| output(tmp.command().args(["--armor", "--export", KEY_EMAIL])))
        .and_then(|key| {
            ensure!(
                key.contains("BEGIN PGP PUBLIC KEY BLOCK"),
                "gpg exported no public key from {}",
                tmp_home.display()
            );
            write_atomic(&tmp.public_key(), key.as_bytes())
        });
    // Its agent must be gone before the home moves.
    drop(tmp);
    if let Err(e) = generated.and_then(|()| replace_dir(&tmp_home, &gpg.home)) {
        let _ = fs::remove_dir_all(&tmp_home);
        return Err(e);
    }
    Ok(gpg)
}
