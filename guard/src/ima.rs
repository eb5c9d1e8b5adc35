//! The IMA v2 digital signature carried in `security.ima` (what `evmctl ima_sign` writes):
//! `0x03 | version 2 | hash algo | key id (4, BE) | sig size (2, BE) | signature`.
//!
//! This module only knows the byte layout; the cryptography lives in `keys`.

use crate::digest::HashAlgo;

/// The xattr that carries the signature.
pub const XATTR_NAME: &str = "security.ima";
/// `EVM_IMA_XATTR_DIGSIG`.
pub const TYPE_DIGSIG: u8 = 0x03;
/// The only signature version we accept: v2 signs the file digest itself. v3 (fs-verity)
/// signs a digest of a different structure and must not be confused with it.
pub const VERSION_2: u8 = 2;
/// `struct signature_v2_hdr` is packed: type, version, algo, key id (4), size (2).
pub const HEADER_LEN: usize = 9;

/// A parsed v2 signature header and its signature bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImaSignature {
    pub algo: HashAlgo,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl ImaSignature {
    /// The `security.ima` value. `None` when the signature cannot be described by the
    /// header's 16-bit size field (no supported key produces one that large).
    pub fn to_xattr(&self) -> Option<Vec<u8>> {
        let size = u16::try_from(self.signature.len()).ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.signature.len());
        out.extend_from_slice(&[TYPE_DIGSIG, VERSION_2, self.algo.ima_id()]);
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&self.signature);
        Some(out)
    }
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
    /// The signature is over a digest weaker than the policy accepts (`[trust] min_digest`).
    #[error("signed over a {algo} digest, weaker than the policy's min_digest {min}")]
    WeakDigest {
        algo: &'static str,
        min: &'static str,
    },
    /// The key did not make this signature over this content. ECDSA verification recovers
    /// nothing, so for ECDSA a changed file and a damaged or forged signature are the same
    /// failure; for RSA a changed file is `DigestMismatch` instead. The detail (for RSA:
    /// which part failed) is logged at debug level, keeping the variant's shape stable.
    #[error("bad signature: the file's content or the signature does not match")]
    BadSignature,
    #[error("digest mismatch: the file's content is not what was signed")]
    DigestMismatch,
    #[error("cannot read the file to hash it: {0}")]
    Unreadable(String),
}

/// Parses a `security.ima` value as a v2 signature. Checks only the layout; whether the
/// signature is valid is `Keyring::verify`'s business.
pub fn parse(xattr: &[u8]) -> Result<ImaSignature, SignatureError> {
    let Some(&kind) = xattr.first() else {
        return Err(SignatureError::Truncated(0));
    };
    // The type comes first so that a plain IMA hash (0x01, 0x04) or a verity signature
    // (0x06) is reported as such, whatever its length.
    if kind != TYPE_DIGSIG {
        return Err(SignatureError::NotASignature(kind));
    }
    let Some((header, signature)) = xattr.split_first_chunk::<HEADER_LEN>() else {
        return Err(SignatureError::Truncated(xattr.len()));
    };
    let [_, version, algo, k0, k1, k2, k3, s0, s1] = *header;
    if version != VERSION_2 {
        return Err(SignatureError::UnsupportedVersion(version));
    }
    let algo = HashAlgo::from_ima_id(algo).ok_or(SignatureError::UnsupportedAlgorithm(algo))?;
    let key_id = u32::from_be_bytes([k0, k1, k2, k3]);
    let declared = usize::from(u16::from_be_bytes([s0, s1]));
    if declared != signature.len() {
        return Err(SignatureError::SizeMismatch {
            declared,
            actual: signature.len(),
        });
    }
    if signature.is_empty() {
        // A header that announces and carries nothing is a truncated value, not a signature.
        return Err(SignatureError::Truncated(xattr.len()));
    }
    Ok(ImaSignature {
        algo,
        key_id,
        signature: signature.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        ImaSignature {
            algo: HashAlgo::Sha256,
            key_id: 0xb011_30c7,
            signature: (1..=40).collect(),
        }
        .to_xattr()
        .unwrap()
    }

    #[test]
    fn parses_what_it_writes() {
        let bytes = sample();
        assert_eq!(&bytes[..9], &[3, 2, 4, 0xb0, 0x11, 0x30, 0xc7, 0, 40]);
        let sig = parse(&bytes).unwrap();
        assert_eq!(sig.algo, HashAlgo::Sha256);
        assert_eq!(sig.key_id, 0xb011_30c7);
        assert_eq!(sig.signature, (1..=40).collect::<Vec<u8>>());
    }

    #[test]
    fn parses_evmctl_output() {
        // `evmctl ima_sign --key ecP-256.pem -a sha384` (ima-evm-utils 1.4).
        let hex = "0302054706a9270046304402202f23116f9426aecabe654c5750d9e24bf4e05bb3f89398cf81d0\
                   99a446f7e015022071e1f9eff873ea335d2c98f76ef6f78048e4f39a2efcb100300fb0a0e7b27fb5";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let sig = parse(&bytes).unwrap();
        assert_eq!(sig.algo, HashAlgo::Sha384);
        assert_eq!(sig.key_id, 0x4706_a927);
        assert_eq!(sig.signature.len(), 0x46);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let got = parse(&bytes[..len]);
            let want = if len < HEADER_LEN {
                SignatureError::Truncated(len)
            } else {
                SignatureError::SizeMismatch {
                    declared: 40,
                    actual: len - HEADER_LEN,
                }
            };
            assert_eq!(got, Err(want), "length {len}");
        }
    }

    #[test]
    fn trailing_bytes_are_a_size_mismatch() {
        let mut bytes = sample();
        bytes.push(0);
        assert_eq!(
            parse(&bytes),
            Err(SignatureError::SizeMismatch {
                declared: 40,
                actual: 41
            })
        );
    }

    #[test]
    fn empty_signature_is_truncated() {
        assert_eq!(
            parse(&[3, 2, 4, 0, 0, 0, 1, 0, 0]),
            Err(SignatureError::Truncated(9))
        );
    }

    #[test]
    fn wrong_type_is_not_a_signature() {
        for kind in [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0xff] {
            let mut bytes = sample();
            bytes[0] = kind;
            assert_eq!(parse(&bytes), Err(SignatureError::NotASignature(kind)));
            assert_eq!(parse(&[kind]), Err(SignatureError::NotASignature(kind)));
        }
    }

    #[test]
    fn other_versions_are_rejected() {
        for version in [0, 1, 3, 0xff] {
            let mut bytes = sample();
            bytes[1] = version;
            assert_eq!(
                parse(&bytes),
                Err(SignatureError::UnsupportedVersion(version))
            );
        }
    }

    #[test]
    fn unknown_algorithms_are_rejected() {
        // md5 (1), ripemd160 (3), sha224 (7), sm3 (17), and values past the kernel's table.
        for algo in [0, 1, 3, 7, 17, 200] {
            let mut bytes = sample();
            bytes[2] = algo;
            assert_eq!(
                parse(&bytes),
                Err(SignatureError::UnsupportedAlgorithm(algo))
            );
        }
    }

    #[test]
    fn every_supported_algorithm_round_trips() {
        for algo in [
            HashAlgo::Sha1,
            HashAlgo::Sha256,
            HashAlgo::Sha384,
            HashAlgo::Sha512,
        ] {
            let sig = ImaSignature {
                algo,
                key_id: 7,
                signature: vec![9; 3],
            };
            assert_eq!(parse(&sig.to_xattr().unwrap()), Ok(sig));
        }
    }

    #[test]
    fn oversized_signature_cannot_be_encoded() {
        let sig = ImaSignature {
            algo: HashAlgo::Sha256,
            key_id: 0,
            signature: vec![0; 65536],
        };
        assert_eq!(sig.to_xattr(), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: every prefix of many pseudo-random buffers.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            #[allow(clippy::cast_possible_truncation)]
            let mut buf: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            if let Some(first) = buf.first_mut() {
                *first = TYPE_DIGSIG;
            }
            if buf.len() > 1 {
                buf[1] = VERSION_2;
            }
            let _ = parse(&buf);
        }
    }
}
