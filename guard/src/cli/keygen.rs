//! `guard keygen`: a signing key, its public key and a self-signed certificate that
//! `guard` and `evmctl` both accept.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use der::{EncodePem, pem::LineEnding};
use guard::keys::{KeyType, Signer};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Key type.
    #[arg(long = "type", value_name = "TYPE", default_value = "rsa3072",
          value_parser = clap::builder::PossibleValuesParser::new(KeyType::ALL.map(KeyType::name)))]
    kind: String,
    /// Directory for the files (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Base name: NAME.key (private, PKCS#8), NAME.pub, NAME.crt (PEM), NAME.der.
    #[arg(long, value_name = "NAME", default_value = "guard")]
    name: String,
    /// Certificate validity in days.
    #[arg(long, value_name = "DAYS", default_value_t = 3650)]
    days: u64,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let kind = KeyType::ALL
        .into_iter()
        .find(|k| k.name() == args.kind)
        .context("unsupported key type")?;
    if args.name.is_empty() || args.name.contains('/') || args.name.starts_with('.') {
        bail!("{}: not a usable file name", args.name);
    }
    let path = |ext: &str| args.out.join(format!("{}.{ext}", args.name));
    let (key_path, pub_path, crt_path, der_path) =
        (path("key"), path("pub"), path("crt"), path("der"));
    // Checked up front so that a refusal leaves no half-written set behind.
    for p in [&key_path, &pub_path, &crt_path, &der_path] {
        if p.symlink_metadata().is_ok() {
            bail!("{}: already exists, not overwritten", p.display());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create directory", args.out.display()))?;

    let signer = Signer::generate(kind)?;
    let cert =
        signer.self_signed_certificate(&format!("guard signing key {}", args.name), args.days)?;
    let cert_pem = cert
        .to_pem(LineEnding::LF)
        .context("cannot encode the certificate")?;
    let cert_der = der::Encode::to_der(&cert).context("cannot encode the certificate")?;

    write_new(&key_path, signer.private_key_pem()?.as_bytes(), 0o600)?;
    write_new(&pub_path, signer.public_key_pem()?.as_bytes(), 0o644)?;
    write_new(&crt_path, cert_pem.as_bytes(), 0o644)?;
    write_new(&der_path, &cert_der, 0o644)?;
    println!(
        "key id {:08x} ({}): {}, {}, {}, {}",
        signer.key_id(),
        signer.public_key().describe(),
        key_path.display(),
        pub_path.display(),
        crt_path.display(),
        der_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `create_new` so that a file appearing since the check is not overwritten either, and the
/// mode is set at creation so the private key is never readable by others, even briefly.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}
