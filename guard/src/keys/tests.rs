use std::cell::Cell;

use super::*;
use crate::digest::digest_reader;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/keys/testdata");

fn data(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

fn hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn digest(content: &[u8], algo: HashAlgo) -> Digest {
    digest_reader(content, algo).unwrap()
}

/// Verifies `xattr` against `content`, counting how often the file was hashed.
fn check(ring: &Keyring, xattr: &[u8], content: &[u8]) -> (Result<Verified, SignatureError>, u32) {
    let calls = Cell::new(0);
    let result = ring.verify(xattr, &mut |algo| {
        calls.set(calls.get() + 1);
        Ok(digest(content, algo))
    });
    (result, calls.get())
}

fn ring_of(signer: &Signer) -> Keyring {
    let mut ring = Keyring::new();
    ring.add_key(signer.public_key(), signer.key_id());
    ring
}

fn error_of(result: Result<u32, KeyError>) -> String {
    match result {
        Ok(id) => panic!("accepted with key id {id:08x}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn evmctl_signatures_verify() {
    // Made by `evmctl ima_sign` (ima-evm-utils 1.4) with openssl-generated keys; the key ids
    // in the files are evmctl's.
    let cases = [
        (
            "evmctl-rsa.pub",
            "evmctl-rsa.sig",
            &b"hello\n"[..],
            0xb011_30c7,
            HashAlgo::Sha256,
        ),
        (
            "evmctl-p256.der",
            "evmctl-p256.sig",
            b"hiP-256\n",
            0x4706_a927,
            HashAlgo::Sha384,
        ),
        (
            "evmctl-p384.crt",
            "evmctl-p384.sig",
            b"hiP-384\n",
            0xa570_3140,
            HashAlgo::Sha384,
        ),
    ];
    for (key, sig, content, id, algo) in cases {
        let mut ring = Keyring::new();
        assert_eq!(ring.add_file(&data(key)).unwrap(), id, "{key}");
        let xattr = hex(&std::fs::read_to_string(data(sig)).unwrap());
        let (result, calls) = check(&ring, &xattr, content);
        assert_eq!(result, Ok(Verified { key_id: id, algo }), "{key}");
        assert_eq!(calls, 1);
        let (result, _) = check(&ring, &xattr, b"changed\n");
        assert!(result.is_err(), "{key} accepted changed content");
    }
}

#[test]
fn rsa_round_trip_and_failure_classes() {
    let signer = Signer::generate(KeyType::Rsa2048).unwrap();
    let ring = ring_of(&signer);
    for algo in [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512] {
        let xattr = signer.sign_digest(&digest(b"code", algo)).unwrap();
        assert_eq!(xattr.len(), 9 + 256);
        let (result, calls) = check(&ring, &xattr, b"code");
        assert_eq!(
            result,
            Ok(Verified {
                key_id: signer.key_id(),
                algo
            })
        );
        assert_eq!(calls, 1);

        // A sound signature over other content: the recovered DigestInfo tells.
        let (result, _) = check(&ring, &xattr, b"codf");
        assert_eq!(result, Err(SignatureError::DigestMismatch));

        // A damaged signature: nothing recoverable.
        let mut damaged = xattr.clone();
        damaged[20] ^= 1;
        let (result, _) = check(&ring, &damaged, b"code");
        assert!(
            matches!(result, Err(SignatureError::BadSignature)),
            "{result:?}"
        );
    }
}

#[test]
fn rsa_signature_for_another_algorithm_is_bad() {
    let signer = Signer::generate(KeyType::Rsa2048).unwrap();
    let ring = ring_of(&signer);
    let mut xattr = signer
        .sign_digest(&digest(b"code", HashAlgo::Sha256))
        .unwrap();
    xattr[2] = HashAlgo::Sha512.ima_id();
    let (result, _) = check(&ring, &xattr, b"code");
    assert_eq!(result, Err(SignatureError::BadSignature));
}

#[test]
fn ecdsa_round_trips() {
    for kind in [KeyType::P256, KeyType::P384] {
        let signer = Signer::generate(kind).unwrap();
        let ring = ring_of(&signer);
        for algo in [HashAlgo::Sha256, HashAlgo::Sha384, HashAlgo::Sha512] {
            let xattr = signer.sign_digest(&digest(b"code", algo)).unwrap();
            let (result, _) = check(&ring, &xattr, b"code");
            assert_eq!(
                result,
                Ok(Verified {
                    key_id: signer.key_id(),
                    algo
                }),
                "{kind:?}"
            );
            // ECDSA recovers no digest: other content is reported as a bad signature
            // whose message says it may be either.
            assert_eq!(
                check(&ring, &xattr, b"codf").0,
                Err(SignatureError::BadSignature)
            );
            let mut damaged = xattr.clone();
            *damaged.last_mut().unwrap() ^= 0x40;
            assert!(matches!(
                check(&ring, &damaged, b"code").0,
                Err(SignatureError::BadSignature)
            ));
        }
    }
}

#[test]
fn header_errors_and_unknown_keys_never_hash_the_file() {
    let signer = Signer::generate(KeyType::P256).unwrap();
    let ring = ring_of(&signer);
    let good = signer.sign_digest(&digest(b"x", HashAlgo::Sha256)).unwrap();
    let mut unknown = good.clone();
    unknown[3] ^= 0xff;
    let unknown_id = u32::from_be_bytes(unknown[3..7].try_into().unwrap());
    let cases: Vec<(Vec<u8>, SignatureError)> = vec![
        (vec![], SignatureError::Truncated(0)),
        (vec![3, 2], SignatureError::Truncated(2)),
        (vec![4, 4, 1, 2], SignatureError::NotASignature(4)),
        (unknown, SignatureError::UnknownKeyId(unknown_id)),
        (
            good[..good.len() - 1].to_vec(),
            SignatureError::SizeMismatch {
                declared: good.len() - 9,
                actual: good.len() - 10,
            },
        ),
    ];
    for (xattr, want) in cases {
        let (result, calls) = check(&ring, &xattr, b"x");
        assert_eq!(result, Err(want));
        assert_eq!(calls, 0, "hashed for {xattr:02x?}");
    }
}

#[test]
fn unreadable_content_is_reported() {
    let signer = Signer::generate(KeyType::P256).unwrap();
    let ring = ring_of(&signer);
    let xattr = signer.sign_digest(&digest(b"x", HashAlgo::Sha256)).unwrap();
    let result = ring.verify(&xattr, &mut |_| Err(std::io::Error::other("EIO")));
    assert_eq!(result, Err(SignatureError::Unreadable("EIO".into())));
}

#[test]
fn empty_keyring_knows_no_key() {
    let signer = Signer::generate(KeyType::P256).unwrap();
    let xattr = signer.sign_digest(&digest(b"x", HashAlgo::Sha256)).unwrap();
    let (result, calls) = check(&Keyring::new(), &xattr, b"x");
    assert_eq!(result, Err(SignatureError::UnknownKeyId(signer.key_id())));
    assert_eq!(calls, 0);
}

#[test]
fn certificate_skid_gives_the_key_id() {
    let mut ring = Keyring::new();
    // The SKID was set by hand; evmctl's own key would be 4706a927.
    assert_eq!(ring.add_file(&data("skid.crt")).unwrap(), 0x0102_0304);
}

#[test]
fn generated_certificate_agrees_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [KeyType::Rsa2048, KeyType::P384] {
        let signer = Signer::generate(kind).unwrap();
        let cert = signer.self_signed_certificate("test", 1).unwrap();
        let (key, id) = from_certificate(&cert).unwrap();
        assert_eq!(id, signer.key_id());
        assert_eq!(key.key_id(), signer.key_id());
        let key_path = dir.path().join(format!("{kind:?}.key"));
        std::fs::write(&key_path, signer.private_key_pem().unwrap().as_bytes()).unwrap();
        let pub_path = dir.path().join(format!("{kind:?}.pub"));
        std::fs::write(&pub_path, signer.public_key_pem().unwrap()).unwrap();
        let reloaded = Signer::from_files(&key_path, None).unwrap();
        assert_eq!(reloaded.key_id(), signer.key_id());
        let mut ring = Keyring::new();
        assert_eq!(ring.add_file(&pub_path).unwrap(), signer.key_id());
        assert_eq!(ring.add_file(&key_path).unwrap(), signer.key_id());
    }
}

#[test]
fn traditional_openssl_private_keys_sign() {
    for name in ["rsa-traditional.pem", "ec-params.pem", "ec384-sec1.pem"] {
        let signer = Signer::from_files(&data(name), None).unwrap();
        let ring = ring_of(&signer);
        let xattr = signer.sign_digest(&digest(b"x", HashAlgo::Sha256)).unwrap();
        assert!(check(&ring, &xattr, b"x").0.is_ok(), "{name}");
    }
}

#[test]
fn signer_certificate_must_match_the_key() {
    let err = Signer::from_files(&data("rsa-traditional.pem"), Some(&data("skid.crt")))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("skid.crt: does not hold the public key"),
        "{err}"
    );
    let err = Signer::from_files(&data("evmctl-rsa.pub"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a private key"), "{err}");
}

#[test]
fn unusable_key_files_are_named_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let binary = dir.path().join("binary.der");
    std::fs::write(&binary, [0x30, 0x82, 0xff, 0xff, 1, 2, 3]).unwrap();
    let unterminated = dir.path().join("half.pem");
    std::fs::write(&unterminated, "-----BEGIN PUBLIC KEY-----\nMIIB\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let params_only = dir.path().join("params.pem");
    std::fs::write(
        &params_only,
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
    )
    .unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.path().to_path_buf(), "is a directory"),
        (dir.path().join("missing"), "no such file"),
        (garbage.clone(), "invalid PEM"),
        (unterminated, "invalid PEM"),
        (binary, "neither PEM nor"),
        (empty, "neither PEM nor"),
        (
            params_only,
            "no key or certificate in PEM (found EC PARAMETERS)",
        ),
        (data("rsa1024.pub"), "unsupported RSA key size 1024"),
        (data("ed25519.pub"), "unsupported key type"),
        (data("p521.pub"), "unsupported EC curve 1.3.132.0.35"),
        (
            data("encrypted.pem"),
            "encrypted private keys are not supported",
        ),
    ];
    for (path, reason) in cases {
        let message = error_of(Keyring::new().add_file(&path));
        assert!(
            message.starts_with(&format!("{}: ", path.display())),
            "{message}"
        );
        assert!(message.contains(reason), "{message} lacks {reason}");
        assert!(!message.contains('\n'), "{message}");
    }
}
