//! `security.ima` values: the layout parser and the verifier with fixed trusted keys (the
//! evmctl-made test keys, so well-formed seeds reach the cryptography).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use guard::digest::{HashAlgo, digest_reader};
use guard::keys::Keyring;
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let mut ring = Keyring::new();
        for (name, bytes) in [
            ("evmctl-rsa.pub", &include_bytes!("../../guard/src/keys/testdata/evmctl-rsa.pub")[..]),
            ("evmctl-p256.der", &include_bytes!("../../guard/src/keys/testdata/evmctl-p256.der")[..]),
            ("evmctl-p384.crt", &include_bytes!("../../guard/src/keys/testdata/evmctl-p384.crt")[..]),
        ] {
            ring.add_bytes(bytes, Path::new(name)).expect("test key loads");
        }
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = guard::ima::parse(data) {
        // What parses must be exactly what it re-encodes to: no byte is ignored.
        assert_eq!(sig.to_xattr().as_deref(), Some(data));
    }
    let mut hashed = 0;
    let result = keyring().verify(data, &mut |algo: HashAlgo| {
        hashed += 1;
        digest_reader(&b"hello\n"[..], algo)
    });
    // The content is hashed only for a sound header naming a known key, and at most once.
    assert!(hashed <= 1);
    if result.is_ok() {
        assert_eq!(hashed, 1);
    }
});
