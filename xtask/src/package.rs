//! `cargo xtask package`: the Debian package (cargo-deb), checked with lintian, and `--check`:
//! also look inside, install it on this host, run the installed agent the way its unit does,
//! purge it.
//!
//! The check installs into the real root with `dpkg -i` (this is a disposable CI machine, run
//! as root) because that is what exercises the maintainer scripts, `systemd-analyze verify`
//! against the installed binary and man pages, and man-db; it always purges afterwards and
//! then proves nothing is left.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, output, run, workspace_root};

/// Which cargo profile to package.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Release,
    /// The debug binary `cargo xtask test` has already built: the package is byte-for-byte
    /// the same except for the binary's optimisation, and the check then takes seconds
    /// instead of a multi-minute release build.
    Dev,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "debug",
        }
    }
}

/// Every page `guard generate-man` must produce: one per visible (sub)command, in section 8
/// (guard is in /usr/sbin).
const MAN_PAGES: &[&str] = &[
    "guard",
    "guard-explain",
    "guard-policy",
    "guard-policy-check",
    "guard-policy-show",
    "guard-run",
    "guard-status",
    "guard-reload",
    "guard-sign",
    "guard-verify",
    "guard-keygen",
];

const UNIT: &str = "/lib/systemd/system/guard.service";

/// Builds the .deb and returns its path.
pub(crate) fn build(profile: Profile) -> Result<PathBuf> {
    ensure_cargo_deb()?;
    let root = workspace_root();
    run(cargo().args([
        "build",
        "--package",
        "guard",
        "--profile",
        profile.cargo_name(),
    ]))?;
    let built = root.join("target").join(profile.dir()).join("guard");

    // cargo-deb packages `target/release/*` of the target directory it is given. Staging the
    // binary we just built (of either profile) in a target directory of its own lets the
    // same metadata package both, without cargo-deb's objection to dev profiles and without
    // writing into the real target/release.
    let stage = root.join("target/package/stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let out = stage.join("release");
    std::fs::create_dir_all(&out)?;
    let bin = out.join("guard");
    std::fs::copy(&built, &bin)
        .with_context(|| format!("copying {} to {}", built.display(), bin.display()))?;

    // Documentation comes from the binary being packaged, so it matches its options exactly.
    let doc = out.join("guard-doc");
    run(Command::new(&bin).arg("generate-man").arg(doc.join("man")))?;
    run(Command::new(&bin)
        .arg("generate-completions")
        .arg(doc.join("completions")))?;
    for page in MAN_PAGES {
        let path = doc.join("man").join(format!("{page}.8"));
        ensure!(
            path.is_file(),
            "guard generate-man did not write {}",
            path.display()
        );
        // Debian policy: man pages gzip -9n (no name or time stamp: reproducible). cargo-deb
        // compresses only assets it does not take for build products, which these are.
        run(Command::new("gzip").arg("-9n").arg(&path))?;
    }

    let dist = root.join("target/package");
    std::fs::create_dir_all(&dist)?;
    let deb = dist.join(format!(
        "guard_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        deb_arch()?
    ));
    let _ = std::fs::remove_file(&deb);
    let started = Instant::now();
    run(cargo()
        // Stripped: `[profile.release] debug = 1` is for profiling in the tree, and would
        // otherwise triple the package. (`--dbgsym` would ship the symbols separately.)
        .args([
            "deb",
            "--package",
            "guard",
            "--no-build",
            "--strip",
            "--output",
        ])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", &stage))?;
    add_md5sums(&deb, &dist.join("md5sums-tree"))?;
    let size = std::fs::metadata(&deb)
        .with_context(|| format!("cargo deb wrote no {}", deb.display()))?
        .len();
    eprintln!(
        "xtask: {} ({} KiB, packaged in {:.1} s)",
        deb.display(),
        size / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// cargo-deb writes no DEBIAN/md5sums, which `debsums` (and dpkg --verify on older dpkg)
/// check the installed files against: repack the package with one, listing every file but
/// the conffiles, as dh_md5sums does (dpkg keeps the conffiles' sums itself).
fn add_md5sums(deb: &Path, tree: &Path) -> Result<()> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(deb)
        .arg(tree))?;
    let conffiles = std::fs::read_to_string(tree.join("DEBIAN/conffiles")).unwrap_or_default();
    let conffiles: BTreeSet<&str> = conffiles
        .lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .collect();
    let listing = output(
        Command::new("find")
            .arg(".")
            .args([
                "-path", "./DEBIAN", "-prune", "-o", "-type", "f", "-printf", "%P\n",
            ])
            .current_dir(tree),
    )?;
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|f| !f.is_empty() && !conffiles.contains(f))
        .collect();
    files.sort_unstable();
    ensure!(!files.is_empty(), "{} holds no files", deb.display());
    let sums = output(Command::new("md5sum").args(&files).current_dir(tree))?;
    let md5sums = tree.join("DEBIAN/md5sums");
    std::fs::write(&md5sums, sums).with_context(|| format!("writing {}", md5sums.display()))?;
    set_mode(&md5sums, 0o644)?;
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(tree)
        .arg(deb)
        .stdout(Stdio::null()))?;
    std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))
}

fn deb_arch() -> Result<String> {
    Ok(output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string())
}

fn ensure_cargo_deb() -> Result<()> {
    let mut probe = cargo();
    probe.arg("deb");
    crate::ensure_cargo_tool(probe, "cargo-deb")
}

/// Installs the Debian packages the check uses when they are missing (man, systemd-analyze).
fn ensure_tools() -> Result<()> {
    ensure_debian_tools(&[
        ("man", "man-db"),
        ("systemd-analyze", "systemd"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
        ("python3", "python3"),
    ])
}

/// Installs, with apt, the package of each (command, package) whose command is missing.
fn ensure_debian_tools(tools: &[(&str, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for &(tool, package) in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(package);
        }
    }
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// Builds the package from `profile` and checks it end to end on this host.
pub(crate) fn check(profile: Profile) -> Result<()> {
    ensure!(
        nix_is_root(),
        "the package check installs the package: run it as root"
    );
    ensure_tools()?;
    let deb = build(profile)?;
    let started = Instant::now();
    lint(&deb)?;
    check_contents(&deb)?;
    if is_installed("guard") {
        // A previous check interrupted half-way; start from a clean host.
        eprintln!("xtask: guard is installed already: purging it first");
        run(Command::new("dpkg").args(["--purge", "guard"]))?;
    }
    run(Command::new("dpkg").arg("--install").arg(&deb))?;
    let installed = check_installed().and_then(|()| check_agent());
    let purged = purge_and_check_clean();
    installed?;
    purged?;
    eprintln!(
        "xtask: package check passed in {:.1} s after the build",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the package's lintian overrides live in the source; shipped as
/// /usr/share/lintian/overrides/guard, where lintian reads them from the package itself.
const LINTIAN_OVERRIDES: &str = "packaging/debian/lintian-overrides";

/// Debian's package checker on the .deb: any tag it reports, of any severity, fails, unless
/// the package overrides it under a comment that says why (an override without one fails
/// too, and lintian itself reports overrides that no longer match anything).
pub(crate) fn lint(deb: &Path) -> Result<()> {
    ensure_debian_tools(&[("lintian", "lintian")])?;
    let overrides = workspace_root().join(LINTIAN_OVERRIDES);
    if overrides.exists() {
        let text = std::fs::read_to_string(&overrides)
            .with_context(|| format!("reading {}", overrides.display()))?;
        let unexplained = unexplained_overrides(&text);
        ensure!(
            unexplained.is_empty(),
            "{}: overrides without a comment above them saying why: {unexplained:?}",
            overrides.display()
        );
    }
    check_changelog_version(deb)?;
    let out = Command::new("lintian")
        .args([
            "--display-info",
            "--pedantic",
            "--show-overrides",
            // Decided below from the tags: with --show-overrides, lintian's own --fail-on
            // counts the overridden ones too.
            "--fail-on",
            "none",
        ])
        .arg(deb)
        .stdin(Stdio::null())
        .output()
        .context("cannot start lintian")?;
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    // Overridden tags (O:) are shown, so the log says what is tolerated and the comment why.
    for line in report.lines() {
        eprintln!("lintian: {line}");
    }
    ensure!(
        out.status.success(),
        "lintian {} did not run ({}):\n{errors}",
        deb.display(),
        out.status
    );
    // E error, W warning, I info, P pedantic, X experimental; O overridden, N its comment.
    let tags: Vec<&str> = report
        .lines()
        .filter(|l| {
            ["E: ", "W: ", "I: ", "P: ", "X: "]
                .iter()
                .any(|t| l.starts_with(t))
        })
        .collect();
    ensure!(
        tags.is_empty(),
        "lintian reports {} tag(s) on {}: fix each, or override it in {} under a comment \
         saying why:\n{}",
        tags.len(),
        deb.display(),
        LINTIAN_OVERRIDES,
        tags.join("\n")
    );
    let overridden = report.lines().filter(|l| l.starts_with("O: ")).count();
    eprintln!("xtask: lintian clean ({overridden} tags overridden, each with its reason)");
    Ok(())
}

/// Override lines not directly under a comment (a blank line ends an explanation).
fn unexplained_overrides(text: &str) -> Vec<String> {
    let mut explained = false;
    let mut bare = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            explained = true;
        } else if line.is_empty() {
            explained = false;
        } else if !explained {
            bare.push(line.to_string());
        }
    }
    bare
}

/// The changelog's latest entry is the package's version: lintian checks the file's
/// presence, not that it was kept up to date with Cargo.toml.
fn check_changelog_version(deb: &Path) -> Result<()> {
    let version = output(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .arg("Version"),
    )?;
    let version = version.trim();
    let path = workspace_root().join("packaging/debian/changelog");
    let changelog =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let latest = changelog
        .lines()
        .next()
        .and_then(|l| l.split_once('(')?.1.split_once(')'))
        .map(|(v, _)| v)
        .with_context(|| format!("{}: no `guard (VERSION)` first line", path.display()))?;
    ensure!(
        latest == version,
        "{} starts at {latest}, the package is {version}: add an entry",
        path.display()
    );
    Ok(())
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", package])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "installed")
        .unwrap_or(false)
}

/// The paths, modes and metadata inside the .deb, before anything touches the host.
fn check_contents(deb: &Path) -> Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let entries: BTreeSet<String> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(&format!(".{path}")))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    let mut expected: Vec<String> = [
        "/usr/sbin/guard",
        UNIT,
        "/etc/guard/policy.toml",
        "/etc/apt/apt.conf.d/50guard",
        "/etc/dpkg/dpkg.cfg.d/guard",
        "/usr/share/guard/policies/debian.toml",
        "/usr/share/guard/policies/rhel.toml",
        "/usr/share/bash-completion/completions/guard",
        "/usr/share/zsh/vendor-completions/_guard",
        "/usr/share/fish/vendor_completions.d/guard.fish",
        "/usr/share/doc/guard/operations.md",
        "/usr/share/doc/guard/copyright",
        "/usr/share/doc/guard/changelog.Debian.gz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend(
        MAN_PAGES
            .iter()
            .map(|p| format!("/usr/share/man/man8/{p}.8.gz")),
    );
    let missing: Vec<&String> = expected.iter().filter(|p| !entries.contains(*p)).collect();
    ensure!(
        missing.is_empty(),
        "missing from the package: {missing:?}\n{listing}"
    );
    ensure!(
        mode_of("/usr/sbin/guard").as_deref() == Some("-rwxr-xr-x"),
        "/usr/sbin/guard is not 0755:\n{listing}"
    );
    ensure!(
        mode_of(UNIT).as_deref() == Some("-rw-r--r--"),
        "the unit is not 0644:\n{listing}"
    );
    // Nothing of the build host leaks in (absolute target paths, test keys...).
    for entry in &entries {
        ensure!(
            !entry.contains("target") && !entry.contains("/root"),
            "unexpected entry {entry}"
        );
    }

    let control = output(Command::new("dpkg-deb").args(["--field"]).arg(deb))?;
    for needle in [
        "Package: guard",
        "Recommends: ima-evm-utils",
        "Section: admin",
    ] {
        ensure!(
            control.contains(needle),
            "control lacks {needle:?}:\n{control}"
        );
    }
    ensure!(
        !control.contains("Depends: python"),
        "guard must not depend on python:\n{control}"
    );
    let conffiles = extract_control_file(deb, "conffiles")?;
    // Local edits survive upgrades; the hooks stay (inert) after a remove, until a purge.
    for conffile in [
        "/etc/guard/policy.toml",
        "/etc/apt/apt.conf.d/50guard",
        "/etc/dpkg/dpkg.cfg.d/guard",
    ] {
        ensure!(
            conffiles.lines().any(|l| l.trim() == conffile),
            "{conffile} is not a conffile: {conffiles:?}"
        );
    }
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        extract_control_file(deb, script).with_context(|| format!("no {script}"))?;
    }

    // The shipped policy is the embedded default, byte for byte.
    let shipped = output(
        Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./etc/guard/policy.toml")
            .arg("sh")
            .arg(deb),
    )?;
    let embedded = std::fs::read_to_string(workspace_root().join("guard/policy/default.toml"))?;
    ensure!(
        shipped == embedded,
        "/etc/guard/policy.toml differs from guard/policy/default.toml"
    );
    eprintln!("xtask: package contents OK ({} entries)", entries.len());
    Ok(())
}

fn extract_control_file(deb: &Path, name: &str) -> Result<String> {
    output(Command::new("dpkg-deb").arg("--info").arg(deb).arg(name))
}

/// What the installed package provides, checked with the installed files only.
fn check_installed() -> Result<()> {
    let version = output(Command::new("/usr/sbin/guard").arg("--version"))?;
    ensure!(
        version.starts_with("guard "),
        "guard --version: {version:?}"
    );
    let checked = output(Command::new("/usr/sbin/guard").args([
        "policy",
        "check",
        "/etc/guard/policy.toml",
    ]))?;
    ensure!(checked.contains(": OK"), "{checked}");
    for policy in ["debian", "rhel"] {
        output(
            Command::new("/usr/sbin/guard")
                .args(["policy", "check"])
                .arg(format!("/usr/share/guard/policies/{policy}.toml")),
        )?;
    }
    ensure!(Path::new("/etc/guard/keys").is_dir(), "no /etc/guard/keys");
    ensure!(Path::new("/var/log/guard").is_dir(), "no /var/log/guard");
    // postinst enabled the unit although systemd is not running (deb-systemd-helper).
    if Path::new("/usr/bin/deb-systemd-helper").exists() {
        let wants = Path::new("/etc/systemd/system/multi-user.target.wants/guard.service");
        ensure!(
            wants.symlink_metadata().is_ok(),
            "postinst did not enable the unit ({} missing)",
            wants.display()
        );
    }

    for page in MAN_PAGES {
        let path = format!("/usr/share/man/man8/{page}.8.gz");
        let rendered = output(
            Command::new("man")
                .args(["-l", &path])
                .env("MANWIDTH", "100")
                .env("MAN_KEEP_FORMATTING", "0")
                .env("PAGER", "cat"),
        )?;
        let rendered = without_overstrike(&rendered);
        ensure!(
            rendered.contains("NAME") && rendered.contains(page),
            "man -l {path} rendered nothing useful:\n{rendered}"
        );
    }
    // The bash completion loads and registers the command.
    let complete = output(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/guard && complete -p guard",
    ]))?;
    ensure!(complete.contains("guard"), "{complete}");

    // Passes only with the binary and the man pages it names in place.
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .context("systemd-analyze")?;
    let messages = String::from_utf8_lossy(&verify.stderr).into_owned();
    ensure!(
        verify.status.success() && !messages.contains("guard.service"),
        "systemd-analyze verify {UNIT}:\n{messages}"
    );
    eprintln!("xtask: installed files OK (binary, policies, man pages, completions, unit)");
    Ok(())
}

/// grotty's bold and underline for a non-terminal: `X\bX`, `_\bX`. Keeps the plain text.
fn without_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// Key=value settings of the installed unit's [Service] section (last one wins; repeated
/// keys such as Condition* are not needed here).
fn unit_settings() -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(UNIT).context(UNIT)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Result<&'a str> {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .with_context(|| format!("{UNIT} has no {key}="))
}

/// A tmpfs mounted for the check, unmounted when dropped.
struct Mounted(tempfile::TempDir);

impl Mounted {
    fn new(prefix: &str) -> Result<Mounted> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "guard-pkg"])
            .arg(dir.path()))?;
        Ok(Mounted(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// The agent as systemd would run it, without systemd (not PID 1 here): the unit's ExecStart,
/// under the unit's capability bounding set and no_new_privs, in a mount namespace whose root
/// is read-only (ProtectSystem=strict) and a network namespace of its own (PrivateNetwork),
/// with NOTIFY_SOCKET and WATCHDOG_USEC set. (The seccomp filter is not reproduced.) Only
/// `--watch` (one tmpfs, not the whole host), the socket and the audit path are added.
fn check_agent() -> Result<()> {
    let settings = unit_settings()?;
    let exec_start = setting(&settings, "ExecStart")?;
    let caps = setting(&settings, "CapabilityBoundingSet")?;
    ensure!(
        setting(&settings, "Type")? == "notify",
        "the unit is not Type=notify"
    );
    let bounding: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();

    let code = Mounted::new("guard-pkg-code-")?;
    // Writable paths of the agent, like RuntimeDirectory= and LogsDirectory=.
    let state = Mounted::new("guard-pkg-state-")?;
    let keys = state.path().join("keys");
    let guard = |args: &[&str]| output(Command::new("/usr/sbin/guard").args(args));
    guard(&[
        "keygen",
        "--type",
        "p256",
        "--out",
        keys.to_str().unwrap_or_default(),
    ])?;
    let key = first_with_extension(&keys, "key")?;
    let cert = first_with_extension(&keys, "crt")?;
    let app = code.path().join("app");
    std::fs::create_dir_all(&app)?;
    let marker = state.path().join("out");
    std::fs::create_dir_all(&marker)?;
    set_mode(&marker, 0o1777)?;
    std::fs::write(app.join("signed.py"), "print('signed ran')\n")?;
    let unsigned_ran = marker.join("unsigned-ran");
    std::fs::write(
        app.join("unsigned.py"),
        format!(
            "open({:?}, 'w').write('ran')\n",
            unsigned_ran.to_string_lossy()
        ),
    )?;
    for file in ["signed.py", "unsigned.py"] {
        set_mode(&app.join(file), 0o644)?;
    }
    guard(&[
        "sign",
        "--key",
        key.to_str().unwrap_or_default(),
        app.join("signed.py").to_str().unwrap_or_default(),
    ])?;

    let notify_path = state.path().join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path)?;
    let socket = state.path().join("guard.sock");
    let audit = state.path().join("audit.jsonl");
    let log = state.path().join("agent.log");

    // Everything after `--` is the unit's command line, split as systemd would (no quoting
    // in ours), plus the test-only options.
    let script = r#"set -e
mount --make-rslave /
mount -o remount,bind,ro /
exec setpriv --bounding-set=-all,"$BOUNDING" --inh-caps=-all --no-new-privs -- "$@""#;
    let mut cmd = Command::new("unshare");
    // --net: PrivateNetwork=yes (the notification and status sockets are path sockets).
    cmd.args(["--mount", "--net", "--", "sh", "-c", script, "sh"])
        .args(exec_start.split_whitespace())
        .arg("--watch")
        .arg(code.path())
        .arg("--socket")
        .arg(&socket)
        .arg("--audit")
        .arg(&audit)
        .arg("--key")
        .arg(&cert)
        .env("BOUNDING", bounding.join(","))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    // stdout and stderr share one file (as journald would interleave them).
    let log_file = std::fs::File::create(&log)?;
    cmd.stdout(log_file.try_clone()?).stderr(log_file);
    let mut agent = Running(cmd.spawn().context("starting the agent")?);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The exec gate's verification takes seconds, more on a loaded machine; the unit allows
    // TimeoutStartSec=300s.
    let ready = wait_datagram(&manager, "READY=1", Duration::from_secs(120), &mut agent.0)
        .with_context(log_text)?;
    // READY means enforcing: the status socket answers at once.
    let status = guard(&["status", "--socket", socket.to_str().unwrap_or_default()])
        .with_context(log_text)?;
    ensure!(status.contains("fanotify"), "{status}");
    wait_datagram(&manager, "WATCHDOG=1", Duration::from_secs(5), &mut agent.0)
        .with_context(log_text)?;

    let python = |script: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                "/usr/bin/python3",
            ])
            .arg(script)
            .current_dir(&app)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
    };
    let signed = python("signed.py")?;
    ensure!(
        signed.status.success() && String::from_utf8_lossy(&signed.stdout) == "signed ran\n",
        "signed script refused under the unit's sandbox: {}\n{}",
        String::from_utf8_lossy(&signed.stderr),
        log_text()
    );
    let unsigned = python("unsigned.py")?;
    ensure!(
        !unsigned.status.success() && !unsigned_ran.exists(),
        "unsigned script ran under the installed agent:\n{}",
        log_text()
    );
    let audit_text = wait_for_text(&audit, "unsigned.py", Duration::from_secs(3));
    ensure!(
        audit_text.contains("\"decision\":\"deny\"") && audit_text.contains("valid-signature"),
        "no deny in the audit trail:\n{audit_text}"
    );

    // systemd stops with SIGTERM: STOPPING=1, then a clean exit.
    nix_kill(agent.0.id(), libc::SIGTERM)?;
    wait_datagram(
        &manager,
        "STOPPING=1",
        Duration::from_secs(10),
        &mut agent.0,
    )
    .with_context(log_text)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = agent.0.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(exit.success(), "agent exit {exit}:\n{}", log_text());
    eprintln!(
        "xtask: installed agent OK under the unit's sandbox ({}): {}",
        bounding.join(","),
        ready.replace('\n', " ")
    );
    Ok(())
}

/// Kills the agent if the check fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn nix_kill(pid: u32, signal: i32) -> Result<()> {
    let pid = i32::try_from(pid).context("pid")?;
    let signal = nix::sys::signal::Signal::try_from(signal).context("signal")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("kill -{signal} {pid}"))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn first_with_extension(dir: &Path, extension: &str) -> Result<PathBuf> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == extension) {
            return Ok(path);
        }
    }
    bail!("guard keygen wrote no *.{extension} in {}", dir.display())
}

/// Receives notifications until one has the line `needle`; fails if the agent exits first.
fn wait_datagram(
    socket: &UnixDatagram,
    needle: &str,
    limit: Duration,
    agent: &mut Child,
) -> Result<String> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == needle) {
                return Ok(message);
            }
        }
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited ({status}) before sending {needle}");
        }
    }
    bail!("no {needle} from the agent within {limit:?}")
}

fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(path) {
            let _ = file.read_to_string(&mut text);
        }
        if text.contains(needle) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Purges the package and proves the host is as before: no files, no unit links, no state.
fn purge_and_check_clean() -> Result<()> {
    run(Command::new("dpkg").args(["--purge", "guard"]))?;
    ensure!(!is_installed("guard"), "guard still installed after purge");
    let mut left = Vec::new();
    for path in [
        "/usr/sbin/guard",
        UNIT,
        "/etc/guard",
        "/var/log/guard",
        "/run/guard",
        "/usr/share/guard",
        "/usr/share/doc/guard",
        "/usr/share/man/man8/guard.8.gz",
        "/usr/share/bash-completion/completions/guard",
        "/etc/systemd/system/multi-user.target.wants/guard.service",
        "/etc/systemd/system/guard.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/guard.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/guard.service",
        "/var/lib/systemd/deb-systemd-helper-masked/guard.service",
    ] {
        if Path::new(path).symlink_metadata().is_ok() {
            left.push(path);
        }
    }
    ensure!(
        left.is_empty(),
        "left behind after dpkg --purge guard: {left:?}"
    );
    eprintln!("xtask: purged, nothing left");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unexplained_overrides;

    #[test]
    fn an_override_needs_a_comment_right_above_it() {
        let text = "# why\nguard: tag-a\nguard: tag-b\n\nguard: tag-c\n# why c\n\nguard: tag-d\n";
        assert_eq!(
            unexplained_overrides(text),
            ["guard: tag-c", "guard: tag-d"]
        );
        assert!(unexplained_overrides("# why\n# more\nguard: tag\n").is_empty());
    }
}
