//! The IMA v2 digital signature carried in `security.ima` (what `evmctl ima_sign` writes):
//! `0x03 | version 2 | hash algo | key id (4, BE) | sig size (2, BE) | signature`.
//!
//! INTERFACE ONLY — filled in by the signatures work (issue #2).

use crate::digest::HashAlgo;

/// The xattr that carries the signature.
pub const XATTR_NAME: &str = "security.ima";
/// `EVM_IMA_XATTR_DIGSIG`.
pub const TYPE_DIGSIG: u8 = 0x03;

/// A parsed v2 signature header and its signature bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImaSignature {
    pub algo: HashAlgo,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// Why a `security.ima` value is not a usable signature, or does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no security.ima signature")]
    Missing,
    #[error("security.ima is empty or truncated ({0} bytes)")]
    Truncated(usize),
    #[error("security.ima holds no signature (type 0x{0:02x})")]
    NotASignature(u8),
    #[error("unsupported signature version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported hash algorithm {0}")]
    UnsupportedAlgorithm(u8),
    #[error("signature size field says {declared} bytes but {actual} follow")]
    SizeMismatch { declared: usize, actual: usize },
    #[error("unknown key id {0:08x}")]
    UnknownKeyId(u32),
    #[error("bad signature")]
    BadSignature,
    #[error("digest mismatch: the file's content is not what was signed")]
    DigestMismatch,
    #[error("cannot read the file to hash it: {0}")]
    Unreadable(String),
}

pub fn parse(_xattr: &[u8]) -> Result<ImaSignature, SignatureError> {
    todo!("signatures work")
}
