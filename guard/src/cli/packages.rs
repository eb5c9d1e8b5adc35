//! `guard packages`: the apt and dpkg hooks that make verified packages' files trusted
//! (see [`guard::packages`] for the trust chain).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use guard::agent::status;
use guard::packages::{self, Deb, PackageList};
use guard::policy::Policy;

/// The policy the packaged agent runs with (its unit's `--policy`).
const DEFAULT_POLICY: &str = "/etc/guard/policy.toml";
/// Where the hooks say what they trusted and refused, beside the agent's audit trail.
const LOG: &str = "/var/log/guard/packages.log";

#[derive(Subcommand)]
pub(crate) enum PackagesCommand {
    /// apt's DPkg::Pre-Install-Pkgs hook: reads .deb paths on standard input, records the
    /// file digests of each one a trusted apt source verified, reloads the agent before dpkg
    /// unpacks anything.
    Trust(HookArgs),
    /// apt's DPkg::Post-Invoke and dpkg's post-invoke hook: adds the bytecode maintainer
    /// scripts compiled from trusted sources, drops the lists of removed packages.
    Sync(SyncArgs),
    /// The packages whose files are trusted, with version and source.
    List(HookArgs),
}

#[derive(Args)]
pub(crate) struct HookArgs {
    /// The agent's policy (its `[packages]` section says where lists go and which apt
    /// origins are trusted).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Unix socket of the running agent, reloaded after a change.
    #[arg(long, value_name = "PATH", default_value = status::DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Args)]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    hook: HookArgs,
    /// apt's run is over: also drop lists of versions dpkg does not have (the version an
    /// upgrade replaced, a list written for a package apt then did not install).
    #[arg(long)]
    end_of_run: bool,
}

pub(super) fn run(command: PackagesCommand) -> anyhow::Result<ExitCode> {
    match command {
        PackagesCommand::Trust(args) => trust(&args),
        PackagesCommand::Sync(args) => sync(&args),
        PackagesCommand::List(args) => list(&args),
    }
}

/// The policy's store and origins; None when package trust is not configured (the hooks
/// are then no-ops: guard installed but not set up must not break apt).
fn configured(args: &HookArgs) -> anyhow::Result<Option<(Policy, PathBuf)>> {
    if !args.policy.exists() {
        return Ok(None);
    }
    let policy = Policy::load(&args.policy)?;
    let Some(store) = policy.packages.store.clone() else {
        return Ok(None);
    };
    Ok(Some((policy, store)))
}

fn trust(args: &HookArgs) -> anyhow::Result<ExitCode> {
    let mut debs = Vec::new();
    // Paths are bytes: a name that is not UTF-8 is still a file apt will install.
    for line in std::io::stdin().lock().split(b'\n') {
        let line = line.context("reading the .deb list on standard input")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if !line.is_empty() {
            debs.push(PathBuf::from(std::ffi::OsStr::from_bytes(line)));
        }
    }
    let Some((policy, store)) = configured(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let started = Instant::now();
    let mut opened = Vec::new();
    for path in &debs {
        // One guard cannot read gets no list: its files stay untrusted, apt goes on.
        match Deb::read(path) {
            Ok(deb) => opened.push(deb),
            Err(e) => note(&format!("{e}: its files stay untrusted")),
        }
    }
    let wanted: HashSet<String> = opened.iter().map(|d| d.sha256.clone()).collect();
    let indexes = packages::trusted_indexes(&policy.packages.origins)?;
    let found = packages::find_in_indexes(&indexes, &wanted)?;
    let installed = packages::installed()?;
    let (mut written, mut files) = (0usize, 0usize);
    for deb in opened {
        let Some((id, index)) = found.get(&deb.sha256) else {
            note(&format!(
                "{}: no source guard trusts verified this archive (sha256 {}): its files stay untrusted",
                deb.path.display(),
                deb.sha256
            ));
            continue;
        };
        if let Some((old, status)) = installed.get(&(id.name.clone(), id.arch.clone()))
            && packages::files_present(status)
            && packages::version_newer(old, &id.version)?
        {
            note(&format!(
                "downgrade of {} {old} to {id} from {}: trusted, the administrator's choice",
                id.name,
                index.describe()
            ));
        }
        let digests = deb.files?;
        files += digests.len();
        let list = PackageList {
            id: id.clone(),
            source: index.describe(),
            deb_sha256: deb.sha256.clone(),
            files: digests,
            bytecode: None,
        };
        let existing = store.join(list.file_name());
        if let Ok(old) = PackageList::read(&existing)
            && old.deb_sha256 != list.deb_sha256
        {
            bail!(
                "{id} is trusted already as another archive (sha256 {} from {}), and {} \
                 (sha256 {}) from {} claims the same version: not trusted, apt stops here",
                old.deb_sha256,
                old.source,
                deb.path.display(),
                list.deb_sha256,
                list.source
            );
        }
        let path = list.store(&store)?;
        note(&format!(
            "trusted {id} from {}: {} files ({})",
            index.describe(),
            list.files.len(),
            path.display()
        ));
        written += 1;
    }
    if written > 0 {
        reload_agent(&args.socket)?;
    }
    eprintln!(
        "guard: {written} of {} packages trusted ({files} files) in {:.1} s",
        debs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn sync(args: &SyncArgs) -> anyhow::Result<ExitCode> {
    let Some((_, store)) = configured(&args.hook)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let installed = packages::installed()?;
    let mut changed = false;
    // One list that cannot be read or written must not keep the others' packages trusted
    // after their removal: every list is handled, the first error reported after.
    let mut first_error = None;
    for path in packages::lists_in(&store)? {
        let handled = sync_one(&path, &store, &installed, args.end_of_run);
        match handled {
            Ok(did) => changed |= did,
            Err(e) => {
                note(&format!("{e:#}"));
                first_error.get_or_insert(e);
            }
        }
    }
    if changed {
        reload_agent(&args.hook.socket)?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Drops or completes one list; whether it changed the store.
fn sync_one(
    path: &Path,
    store: &Path,
    installed: &packages::Installed,
    end_of_run: bool,
) -> anyhow::Result<bool> {
    let mut list = PackageList::read(path)?;
    let on_disk = installed.get(&(list.id.name.clone(), list.id.arch.clone()));
    let same_version = on_disk.is_some_and(|(version, _)| *version == list.id.version);
    let keep = packages::keeps(&list, on_disk, end_of_run);
    if !keep {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        note(&format!(
            "no longer trusted: {} (dpkg has {})",
            list.id,
            match on_disk {
                Some((version, status)) => format!("{version}, status {}", status.trim()),
                None => "no such package".into(),
            }
        ));
        return Ok(true);
    }
    let configured =
        same_version && on_disk.is_some_and(|(_, status)| packages::configured(status));
    if list.bytecode.is_none() && configured {
        let pycs = packages::compiled_bytecode(&list);
        note(&format!(
            "{}: {} bytecode files compiled from its sources trusted",
            list.id,
            pycs.len()
        ));
        list.bytecode = Some(pycs);
        list.store(store)?;
        return Ok(true);
    }
    Ok(false)
}

fn list(args: &HookArgs) -> anyhow::Result<ExitCode> {
    let Some((_, store)) = configured(args)? else {
        println!(
            "package trust is not configured in {}",
            args.policy.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    for path in packages::lists_in(&store)? {
        let list = PackageList::read(&path)?;
        println!(
            "{} from {}: {} files, bytecode {}",
            list.id,
            list.source,
            list.files.len(),
            list.bytecode
                .as_ref()
                .map_or("pending".to_string(), |b| b.len().to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Says what a hook did on stderr (apt shows it, and keeps it in /var/log/apt/term.log) and
/// in guard's packages log.
fn note(message: &str) {
    eprintln!("guard: {message}");
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(LOG)
    {
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let _ = writeln!(log, "{when} {message}");
    }
}

/// Makes the running agent load the store as it now is, and waits until it has: apt must
/// not let dpkg unpack before the new files are trusted. No agent (no socket, nobody
/// listening): nothing to do. An agent that does not answer, or refuses the reload, fails
/// the hook, so apt stops before unpacking.
fn reload_agent(socket: &Path) -> anyhow::Result<()> {
    match std::os::unix::net::UnixStream::connect(socket) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(());
        }
        _ => {}
    }
    super::run::reload_and_wait(socket).context("the packages' files would not be trusted")
}
