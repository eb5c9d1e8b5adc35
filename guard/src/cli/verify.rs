//! `guard verify`: checks IMA signatures, as `evmctl ima_verify` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use guard::keys::{Keyring, Verified};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Trusted keys: the policy's (the embedded default's when no --policy), plus every --key.
    #[command(flatten)]
    trust: super::PolicyArgs,
    /// Files to check.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = args.trust.load()?;
    let keyring = &policy.trust.keyring;
    if keyring.is_empty() {
        anyhow::bail!(
            "no trusted key: give --key PUB, or a --policy whose keys exist ({} has none)",
            policy.origin
        );
    }
    let all_ok = verify_paths(keyring, &args.paths, &mut std::io::stdout().lock())?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes one line per path, "PATH: OK (key id xxxxxxxx, sha256)" or "PATH: FAIL: reason",
/// and says whether every path verified. Errors only when `out` cannot be written.
pub(super) fn verify_paths(
    keyring: &Keyring,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let mut all_ok = true;
    for path in paths {
        match verify_path(keyring, path) {
            Ok(v) => writeln!(
                out,
                "{}: OK (key id {:08x}, {})",
                path.display(),
                v.key_id,
                v.algo.name()
            )?,
            Err(reason) => {
                all_ok = false;
                writeln!(out, "{}: FAIL: {reason}", path.display())?;
            }
        }
    }
    Ok(all_ok)
}

/// Verifies what `path` opens to: the signature and the content come from one descriptor.
pub(super) fn verify_path(keyring: &Keyring, path: &Path) -> Result<Verified, String> {
    let file = guard::facts::open_for_inspection(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => format!("cannot open: {e}"),
    })?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if meta.is_dir() {
        return Err("not a regular file (directory)".into());
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    keyring.verify_file(&file).map_err(|e| e.to_string())
}
