//! `guard run --require-signed-policy`: the policy file must carry a valid IMA signature in
//! its own `security.ima`, made by one of the keys given on the command line (`--key`).
//!
//! Not by the policy's own `[trust] keys`: whoever can write the policy could name their own
//! key there, so trusting it would be circular. The file is read once, from one descriptor,
//! and the bytes that were verified are the bytes that are parsed: replacing the file
//! between the check and the load changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::digest::digest_reader;
use crate::keys::{Keyring, read_signature};
use crate::policy::Policy;

/// Policies are small; anything bigger is not one (and is not read into memory whole).
const MAX_POLICY_BYTES: u64 = 4 << 20;

/// Loads `path` after checking its signature against `keys` (public keys or certificates).
pub fn load(path: &Path, keys: &[PathBuf]) -> anyhow::Result<Policy> {
    if keys.is_empty() {
        bail!("--require-signed-policy needs at least one --key to verify the policy with");
    }
    let mut keyring = Keyring::new();
    for key in keys {
        keyring.add_file(key).context("--key")?;
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut text = Vec::new();
    (&file)
        .take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if text.len() as u64 > MAX_POLICY_BYTES {
        bail!(
            "{}: larger than {} bytes: not a policy",
            path.display(),
            MAX_POLICY_BYTES
        );
    }
    let verified = read_signature(&file)
        .and_then(|xattr| keyring.verify(&xattr, &mut |algo| digest_reader(&text[..], algo)))
        .map_err(|e| anyhow::anyhow!("{}: policy signature refused: {e}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let policy = Policy::parse(&text, &path.display().to_string(), base)?;
    log::info!(
        "policy {} signed by key {:08x} ({})",
        path.display(),
        verified.key_id,
        verified.algo.name()
    );
    Ok(policy)
}
