//! Trusted keys: loading public keys and certificates, key ids as evmctl derives them,
//! signing and verification of IMA signatures.
//!
//! INTERFACE ONLY — filled in by the signatures work (issue #2).

use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashAlgo};
use crate::ima::SignatureError;

/// Why a key or certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// The outcome of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub key_id: u32,
    pub algo: HashAlgo,
}

/// The set of public keys signatures are checked against.
#[derive(Default)]
pub struct Keyring {}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds a public key (PEM SPKI) or certificate (PEM or DER) file.
    pub fn add_file(&mut self, _path: &Path) -> Result<u32, KeyError> {
        todo!("signatures work")
    }

    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies a `security.ima` value. `digest_of` is asked for the file's digest with the
    /// algorithm the signature names (so the file is hashed only once, and only when the
    /// header is sound and the key is known).
    pub fn verify(
        &self,
        _xattr: &[u8],
        _digest_of: &mut dyn FnMut(HashAlgo) -> std::io::Result<Digest>,
    ) -> Result<Verified, SignatureError> {
        todo!("signatures work")
    }
}
