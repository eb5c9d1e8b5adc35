//! Trusted keys: loading public keys and certificates, key ids as evmctl derives them,
//! signing and verification of IMA signatures.
//!
//! Key ids follow the kernel and evmctl: a certificate's id is the last 4 bytes of its
//! Subject Key Identifier; a bare key's id is the last 4 bytes of SHA-1 over the
//! `subjectPublicKey` bits of its SPKI. For RSA those bits are the PKCS#1 `RSAPublicKey`
//! DER, for EC the uncompressed point: exactly what evmctl's `calc_keyid_v2` hashes
//! (`i2d_PublicKey`), checked against ima-evm-utils 1.4 for RSA, P-256 and P-384. It is also
//! RFC 5280's method 1 for SKIDs, so certificates made by openssl or `guard keygen` get the
//! same id as their bare key.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::Digest as _;
use signature::hazmat::{PrehashSigner, PrehashVerifier};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use crate::digest::{Digest, HashAlgo, digest_file};
use crate::ima::{self, ImaSignature, SignatureError};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Below this, RSA offers no meaningful security; above it the `rsa` crate refuses to work.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 4096;
/// Key and certificate files are small; a bigger file is a mistake, not a key.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Why a key or certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

impl KeyError {
    fn new(path: &Path, reason: impl Into<String>) -> KeyError {
        KeyError::Unusable {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign: {0}")]
pub struct SignError(String);

/// The outcome of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key_id: u32,
    pub algo: HashAlgo,
}

/// Key types `guard keygen` makes and `guard sign` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    P256,
    P384,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::P256,
        KeyType::P384,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
        }
    }
}

/// A public key that can check IMA signatures.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo, refusing key types and sizes IMA v2 does not use.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        match spki.algorithm.oid {
            RSA_ENCRYPTION => {
                let key = RsaPublicKey::from_public_key_der(der)
                    .map_err(|e| format!("bad RSA public key: {e}"))?;
                check_rsa_bits(key.n().bits())?;
                Ok(PublicKey::Rsa(key))
            }
            ID_EC_PUBLIC_KEY => match spki.algorithm.parameters_oid() {
                Ok(SECP256R1) => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(PublicKey::P256)
                    .map_err(|e| format!("bad P-256 public key: {e}")),
                Ok(SECP384R1) => p384::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(PublicKey::P384)
                    .map_err(|e| format!("bad P-384 public key: {e}")),
                Ok(curve) => Err(format!(
                    "unsupported EC curve {curve} (only P-256 and P-384)"
                )),
                Err(_) => Err("EC key without a named curve".into()),
            },
            other => Err(format!(
                "unsupported key type (algorithm {other}; only RSA, P-256 and P-384)"
            )),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
        };
        // Encoding a key we hold in memory cannot fail short of allocation failure.
        doc.map(|d| d.into_vec()).unwrap_or_default()
    }

    /// The key id evmctl computes for this key when no certificate names one.
    pub fn key_id(&self) -> u32 {
        key_id_of_spki(&self.to_spki_der()).unwrap_or(0)
    }

    /// A short name for messages: "RSA-2048", "P-256".
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa(k) => format!("RSA-{}", k.n().bits()),
            PublicKey::P256(_) => "P-256".into(),
            PublicKey::P384(_) => "P-384".into(),
        }
    }

    /// Checks `signature` over `digest`. For RSA a failure is classified by recovering the
    /// signed DigestInfo; ECDSA verification recovers nothing, so a changed file and a
    /// damaged signature look the same.
    pub fn verify_digest(
        &self,
        algo: HashAlgo,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        match self {
            PublicKey::Rsa(key) => {
                if key.verify(pkcs1_scheme(algo), digest, signature).is_ok() {
                    return Ok(());
                }
                Err(classify_rsa_failure(key, algo, digest, signature))
            }
            PublicKey::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| not_der())?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| ecdsa_mismatch())
            }
            PublicKey::P384(key) => {
                let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| not_der())?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| ecdsa_mismatch())
            }
        }
    }
}

fn not_der() -> SignatureError {
    bad_signature("not a DER-encoded ECDSA signature")
}

fn ecdsa_mismatch() -> SignatureError {
    // ECDSA verification recovers no digest: a changed file cannot be told from a bad
    // signature.
    SignatureError::BadSignature
}

fn bad_signature(why: &str) -> SignatureError {
    log::debug!("bad signature: {why}");
    SignatureError::BadSignature
}

fn check_rsa_bits(bits: usize) -> Result<(), String> {
    if (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "unsupported RSA key size {bits} bits ({RSA_MIN_BITS} to {RSA_MAX_BITS})"
        ))
    }
}

fn pkcs1_scheme(algo: HashAlgo) -> Pkcs1v15Sign {
    match algo {
        HashAlgo::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        HashAlgo::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        HashAlgo::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlgo::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

/// Runs only after the `rsa` crate rejected the signature, so it decides the message, never
/// acceptance. It undoes the public operation and looks for a well-formed EMSA-PKCS1-v1_5
/// block (`00 01 FF.. 00 DigestInfo`) carrying a digest of the expected algorithm: if it is
/// there, the key did sign this algorithm's digest of some other content.
fn classify_rsa_failure(
    key: &RsaPublicKey,
    algo: HashAlgo,
    digest: &[u8],
    signature: &[u8],
) -> SignatureError {
    let bad = bad_signature;
    let k = key.size();
    if signature.len() != k {
        return bad(&format!(
            "{} bytes of signature for a {k}-byte RSA key",
            signature.len()
        ));
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= key.n() {
        return bad("RSA signature out of range for this key");
    }
    let Ok(m) = rsa::hazmat::rsa_encrypt(key, &s) else {
        return bad("RSA public operation failed");
    };
    let raw = m.to_bytes_be();
    let Some(pad) = k.checked_sub(raw.len()) else {
        return bad("RSA public operation failed");
    };
    let mut em = vec![0u8; pad];
    em.extend_from_slice(&raw);
    let not_ours = "not made by this key (RSA padding does not decode)";
    let Some(rest) = em.strip_prefix(&[0x00, 0x01]) else {
        return bad(not_ours);
    };
    let ff = rest.iter().take_while(|&&b| b == 0xff).count();
    let Some(info) = rest.get(ff..).and_then(|r| r.strip_prefix(&[0x00])) else {
        return bad(not_ours);
    };
    if ff < 8 {
        return bad(not_ours);
    }
    let scheme = pkcs1_scheme(algo);
    match info.strip_prefix(&scheme.prefix[..]) {
        Some(signed) if signed.len() == digest.len() && signed != digest => {
            SignatureError::DigestMismatch
        }
        Some(_) => bad("malformed DigestInfo"),
        None => bad(&format!(
            "the signed DigestInfo is not a {} digest",
            algo.name()
        )),
    }
}

/// Last 4 bytes of SHA-1 over the `subjectPublicKey` bits (see the module comment).
fn key_id_of_spki(der: &[u8]) -> Option<u32> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).ok()?;
    let hash = sha1::Sha1::digest(spki.subject_public_key.raw_bytes());
    let tail: [u8; 4] = hash[16..20].try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

/// A certificate's key and id: the SKID's last 4 bytes, as the kernel's `.ima` keyring uses
/// them. A certificate without a usable SKID falls back to the key's own id.
fn from_certificate(cert: &Certificate) -> Result<(PublicKey, u32), String> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("bad certificate key: {e}"))?;
    let key = PublicKey::from_spki_der(&spki)?;
    let skid = cert
        .tbs_certificate
        .get::<SubjectKeyIdentifier>()
        .map_err(|e| format!("bad Subject Key Identifier: {e}"))?;
    let id = skid
        .and_then(|(_, skid)| {
            let bytes = skid.0.as_bytes();
            let tail: [u8; 4] = bytes.get(bytes.len().checked_sub(4)?..)?.try_into().ok()?;
            Some(u32::from_be_bytes(tail))
        })
        .unwrap_or_else(|| key.key_id());
    Ok((key, id))
}

/// A private key that can make IMA signatures.
enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl PrivateKey {
    fn public(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, String> {
        let info = pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
        match info.algorithm.oid {
            RSA_ENCRYPTION => RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| format!("bad RSA private key: {e}"))
                .and_then(PrivateKey::checked_rsa),
            ID_EC_PUBLIC_KEY => match info.algorithm.parameters_oid() {
                Ok(SECP256R1) => p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::P256)
                    .map_err(|e| format!("bad P-256 private key: {e}")),
                Ok(SECP384R1) => p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::P384)
                    .map_err(|e| format!("bad P-384 private key: {e}")),
                Ok(curve) => Err(format!(
                    "unsupported EC curve {curve} (only P-256 and P-384)"
                )),
                Err(_) => Err("EC key without a named curve".into()),
            },
            other => Err(format!(
                "unsupported key type (algorithm {other}; only RSA, P-256 and P-384)"
            )),
        }
    }

    fn from_sec1_der(der: &[u8]) -> Result<PrivateKey, String> {
        // The SEC1 structure names its curve; each curve's decoder checks it is its own.
        if let Ok(key) = p256::SecretKey::from_sec1_der(der) {
            return Ok(PrivateKey::P256(key.into()));
        }
        if let Ok(key) = p384::SecretKey::from_sec1_der(der) {
            return Ok(PrivateKey::P384(key.into()));
        }
        Err("not a P-256 or P-384 EC private key".into())
    }

    fn checked_rsa(key: RsaPrivateKey) -> Result<PrivateKey, String> {
        check_rsa_bits(key.n().bits())?;
        Ok(PrivateKey::Rsa(Box::new(key)))
    }
}

/// What one key file holds.
enum Material {
    Public(PublicKey, u32),
    Private(PrivateKey),
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let file = File::open(path).map_err(|e| KeyError::new(path, io_reason(&e)))?;
    let meta = file
        .metadata()
        .map_err(|e| KeyError::new(path, io_reason(&e)))?;
    if meta.is_dir() {
        return Err(KeyError::new(path, "is a directory, not a key file"));
    }
    if !meta.is_file() {
        return Err(KeyError::new(path, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| KeyError::new(path, io_reason(&e)))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::new(path, "too large for a key or certificate"));
    }
    Ok(bytes)
}

/// `std::io::Error`'s Display appends "(os error N)", which says nothing to an operator.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => format!("cannot read: {e}"),
    }
}

/// Splits text into PEM blocks. `pem_rfc7468` decodes exactly one block with nothing around
/// it, but openssl writes files with several (`EC PARAMETERS` before `EC PRIVATE KEY`) and
/// with text before them (`openssl x509 -text`, `Bag Attributes`).
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

fn parse_key_file(bytes: &[u8]) -> Result<Material, String> {
    let text = std::str::from_utf8(bytes).ok();
    let blocks = text.map(pem_blocks).unwrap_or_default();
    if blocks.is_empty() {
        if text.is_some_and(|t| t.contains("-----BEGIN")) {
            return Err("invalid PEM: no complete block".into());
        }
        return parse_der(bytes);
    }
    let mut skipped = Vec::new();
    for block in &blocks {
        let (label, der) =
            der::pem::decode_vec(block.as_bytes()).map_err(|e| format!("invalid PEM: {e}"))?;
        let material = match label {
            "CERTIFICATE" => Certificate::from_der(&der)
                .map_err(|e| format!("bad certificate: {e}"))
                .and_then(|c| from_certificate(&c))
                .map(|(k, id)| Material::Public(k, id)),
            "PUBLIC KEY" => PublicKey::from_spki_der(&der).map(|k| {
                let id = k.key_id();
                Material::Public(k, id)
            }),
            "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(&der)
                .map_err(|e| format!("bad RSA public key: {e}"))
                .and_then(|k| check_rsa_bits(k.n().bits()).map(|()| PublicKey::Rsa(k)))
                .map(|k| {
                    let id = k.key_id();
                    Material::Public(k, id)
                }),
            "PRIVATE KEY" => PrivateKey::from_pkcs8_der(&der).map(Material::Private),
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(&der)
                .map_err(|e| format!("bad RSA private key: {e}"))
                .and_then(PrivateKey::checked_rsa)
                .map(Material::Private),
            "EC PRIVATE KEY" => PrivateKey::from_sec1_der(&der).map(Material::Private),
            "ENCRYPTED PRIVATE KEY" => {
                return Err("encrypted private keys are not supported".into());
            }
            other => {
                skipped.push(other.to_string());
                continue;
            }
        };
        return material;
    }
    Err(format!(
        "no key or certificate in PEM (found {})",
        skipped.join(", ")
    ))
}

fn parse_der(bytes: &[u8]) -> Result<Material, String> {
    if let Ok(cert) = Certificate::from_der(bytes) {
        return from_certificate(&cert).map(|(k, id)| Material::Public(k, id));
    }
    if SubjectPublicKeyInfoRef::from_der(bytes).is_ok() {
        return PublicKey::from_spki_der(bytes).map(|k| {
            let id = k.key_id();
            Material::Public(k, id)
        });
    }
    if pkcs8::PrivateKeyInfo::try_from(bytes).is_ok() {
        return PrivateKey::from_pkcs8_der(bytes).map(Material::Private);
    }
    Err("neither PEM nor a DER certificate, public key or PKCS#8 private key".into())
}

fn load_public(path: &Path) -> Result<(PublicKey, u32), KeyError> {
    let bytes = read_key_file(path)?;
    public_of_bytes(&bytes, path)
}

fn public_of_bytes(bytes: &[u8], origin: &Path) -> Result<(PublicKey, u32), KeyError> {
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::new(origin, "too large for a key or certificate"));
    }
    match parse_key_file(bytes).map_err(|r| KeyError::new(origin, r))? {
        Material::Public(key, id) => Ok((key, id)),
        Material::Private(key) => {
            let public = key.public();
            let id = public.key_id();
            Ok((public, id))
        }
    }
}

struct Entry {
    key_id: u32,
    key: PublicKey,
}

/// The set of public keys signatures are checked against.
pub struct Keyring {
    entries: Vec<Entry>,
    /// The weakest digest a signature may be over: SHA-1 collisions are practical.
    min_digest: HashAlgo,
}

impl Default for Keyring {
    fn default() -> Keyring {
        Keyring {
            entries: Vec::new(),
            min_digest: HashAlgo::Sha256,
        }
    }
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Accepts signatures over `algo` and stronger digests only (SHA-256 by default).
    pub fn set_min_digest(&mut self, algo: HashAlgo) {
        self.min_digest = algo;
    }

    pub fn min_digest(&self) -> HashAlgo {
        self.min_digest
    }

    /// Adds a public key (PEM SPKI) or certificate (PEM or DER) file. A private key file is
    /// accepted too and contributes its public half. Returns the key id.
    pub fn add_file(&mut self, path: &Path) -> Result<u32, KeyError> {
        let (key, key_id) = load_public(path)?;
        self.add_key(key, key_id);
        Ok(key_id)
    }

    /// Adds a key or certificate from the bytes of a key file (what [`Keyring::add_file`]
    /// reads); `origin` only names the bytes in errors. Lets key material that does not
    /// come from a file (and the fuzzer) take the same path.
    pub fn add_bytes(&mut self, bytes: &[u8], origin: &Path) -> Result<u32, KeyError> {
        let (key, key_id) = public_of_bytes(bytes, origin)?;
        self.add_key(key, key_id);
        Ok(key_id)
    }

    /// Adds a key under an explicit id (as a certificate's SKID may assign).
    pub fn add_key(&mut self, key: PublicKey, key_id: u32) {
        self.entries.push(Entry { key_id, key });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies a `security.ima` value. `digest_of` is asked for the file's digest with the
    /// algorithm the signature names (so the file is hashed only once, and only when the
    /// header is sound and the key is known).
    pub fn verify(
        &self,
        xattr: &[u8],
        digest_of: &mut dyn FnMut(HashAlgo) -> std::io::Result<Digest>,
    ) -> Result<Verified, SignatureError> {
        let sig = ima::parse(xattr)?;
        if sig.algo < self.min_digest {
            return Err(SignatureError::WeakDigest {
                algo: sig.algo.name(),
                min: self.min_digest.name(),
            });
        }
        // Key ids are only 32 bits: distinct keys may share one, so each is tried.
        let candidates: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.key_id == sig.key_id)
            .collect();
        if candidates.is_empty() {
            return Err(SignatureError::UnknownKeyId(sig.key_id));
        }
        let digest = digest_of(sig.algo).map_err(|e| SignatureError::Unreadable(e.to_string()))?;
        if digest.algo != sig.algo {
            return Err(SignatureError::Unreadable(format!(
                "asked for a {} digest, got {}",
                sig.algo.name(),
                digest.algo.name()
            )));
        }
        let mut failure = None;
        for entry in candidates {
            match entry
                .key
                .verify_digest(sig.algo, &digest.bytes, &sig.signature)
            {
                Ok(()) => {
                    return Ok(Verified {
                        key_id: sig.key_id,
                        algo: sig.algo,
                    });
                }
                // A recovered DigestInfo is the more telling diagnosis; keep it.
                Err(SignatureError::DigestMismatch) => {
                    failure = Some(SignatureError::DigestMismatch)
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        Err(failure.unwrap_or(SignatureError::BadSignature))
    }

    /// Verifies an open file: its `security.ima` (read from the descriptor) against the
    /// content read from the same descriptor.
    pub fn verify_file(&self, file: &File) -> Result<Verified, SignatureError> {
        let xattr = read_signature(file)?;
        self.verify(&xattr, &mut |algo| digest_file(file, algo))
    }
}

/// Reads `security.ima` from an open file.
pub fn read_signature(file: &File) -> Result<Vec<u8>, SignatureError> {
    use xattr::FileExt;
    match file.get_xattr(ima::XATTR_NAME) {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(SignatureError::Missing),
        // A filesystem without xattrs cannot carry a signature: that is a missing one.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(SignatureError::Missing),
        Err(e) => Err(SignatureError::Unreadable(format!(
            "cannot read {}: {e}",
            ima::XATTR_NAME
        ))),
    }
}

/// A private key ready to sign, with the key id its signatures carry.
pub struct Signer {
    key: PrivateKey,
    key_id: u32,
}

impl Signer {
    /// Loads a private key (PEM PKCS#8, `RSA PRIVATE KEY` or `EC PRIVATE KEY`, or DER
    /// PKCS#8). With `cert`, the key id comes from the certificate, which must hold the
    /// same public key.
    pub fn from_files(key_path: &Path, cert: Option<&Path>) -> Result<Signer, KeyError> {
        let bytes = read_key_file(key_path)?;
        let key = match parse_key_file(&bytes).map_err(|r| KeyError::new(key_path, r))? {
            Material::Private(key) => key,
            Material::Public(..) => {
                return Err(KeyError::new(
                    key_path,
                    "holds a public key or certificate, not a private key",
                ));
            }
        };
        let public = key.public();
        let key_id = match cert {
            None => public.key_id(),
            Some(cert_path) => {
                let (cert_key, id) = load_public(cert_path)?;
                if cert_key.to_spki_der() != public.to_spki_der() {
                    return Err(KeyError::new(
                        cert_path,
                        format!("does not hold the public key of {}", key_path.display()),
                    ));
                }
                id
            }
        };
        Ok(Signer { key, key_id })
    }

    /// Makes a fresh key.
    pub fn generate(kind: KeyType) -> Result<Signer, SignError> {
        let mut rng = rand_core::OsRng;
        let key = match kind {
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let bits = match kind {
                    KeyType::Rsa2048 => 2048,
                    KeyType::Rsa3072 => 3072,
                    _ => 4096,
                };
                let key =
                    RsaPrivateKey::new(&mut rng, bits).map_err(|e| SignError(e.to_string()))?;
                PrivateKey::Rsa(Box::new(key))
            }
            KeyType::P256 => PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            KeyType::P384 => PrivateKey::P384(p384::ecdsa::SigningKey::random(&mut rng)),
        };
        let key_id = key.public().key_id();
        Ok(Signer { key, key_id })
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Signs a file digest; returns the whole `security.ima` value.
    pub fn sign_digest(&self, digest: &Digest) -> Result<Vec<u8>, SignError> {
        let err = |e: signature::Error| SignError(e.to_string());
        let signature = match &self.key {
            PrivateKey::Rsa(key) => key
                // Blinding with fresh randomness keeps the private operation's timing
                // independent of the key.
                .sign_with_rng(
                    &mut rand_core::OsRng,
                    pkcs1_scheme(digest.algo),
                    &digest.bytes,
                )
                .map_err(|e| SignError(e.to_string()))?,
            PrivateKey::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign_prehash(&digest.bytes).map_err(err)?;
                sig.to_der().as_bytes().to_vec()
            }
            PrivateKey::P384(key) => {
                let sig: p384::ecdsa::Signature = key.sign_prehash(&digest.bytes).map_err(err)?;
                sig.to_der().as_bytes().to_vec()
            }
        };
        ImaSignature {
            algo: digest.algo,
            key_id: self.key_id,
            signature,
        }
        .to_xattr()
        .ok_or_else(|| SignError("signature too long for security.ima".into()))
    }

    /// The private key as PEM PKCS#8 (what openssl and evmctl read).
    pub fn private_key_pem(&self) -> Result<der::zeroize::Zeroizing<String>, SignError> {
        let pem = match &self.key {
            PrivateKey::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| SignError(e.to_string()))
    }

    /// The public key as PEM SPKI.
    pub fn public_key_pem(&self) -> Result<String, SignError> {
        let pem = match self.key.public() {
            PublicKey::Rsa(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P384(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.map_err(|e| SignError(e.to_string()))
    }

    /// A self-signed end-entity certificate for this key, valid for `days`. Its SKID is
    /// SHA-1 of the public key (RFC 5280 method 1), so the certificate, the bare public key
    /// and the private key all give the same key id.
    pub fn self_signed_certificate(
        &self,
        common_name: &str,
        days: u64,
    ) -> Result<Certificate, SignError> {
        use std::str::FromStr;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::time::Validity;

        let fail = |e: &dyn std::fmt::Display| SignError(format!("certificate: {e}"));
        // Commas, plus signs and the like would change the name's structure.
        let cn: String = common_name
            .chars()
            .filter(|c| c.is_alphanumeric() || " -_.@".contains(*c))
            .collect();
        let subject = Name::from_str(&format!("CN={cn}")).map_err(|e| fail(&e))?;
        let mut serial = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
        serial[0] &= 0x7f; // A positive INTEGER, as RFC 5280 requires.
        serial[0] |= 0x01; // ...without a leading zero byte.
        let serial = SerialNumber::new(&serial).map_err(|e| fail(&e))?;
        let validity = Validity::from_now(std::time::Duration::from_secs(days * 86_400))
            .map_err(|e| fail(&e))?;
        let spki = spki::SubjectPublicKeyInfoOwned::from_der(&self.key.public().to_spki_der())
            .map_err(|e| fail(&e))?;
        let profile = Profile::Leaf {
            issuer: subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        match &self.key {
            PrivateKey::Rsa(key) => {
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**key).clone());
                CertificateBuilder::new(profile, serial, validity, subject, spki, &signer)
                    .map_err(|e| fail(&e))?
                    .build_with_rng::<rsa::pkcs1v15::Signature>(&mut rand_core::OsRng)
                    .map_err(|e| fail(&e))
            }
            PrivateKey::P256(key) => {
                CertificateBuilder::new(profile, serial, validity, subject, spki, key)
                    .map_err(|e| fail(&e))?
                    .build::<p256::ecdsa::DerSignature>()
                    .map_err(|e| fail(&e))
            }
            PrivateKey::P384(key) => {
                CertificateBuilder::new(profile, serial, validity, subject, spki, key)
                    .map_err(|e| fail(&e))?
                    .build::<p384::ecdsa::DerSignature>()
                    .map_err(|e| fail(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
