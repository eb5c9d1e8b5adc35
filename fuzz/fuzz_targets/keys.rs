//! Key and certificate files (PEM or DER, public, private or certificate): the bytes go
//! through the same loader as `Keyring::add_file`, from a real temporary file.
#![no_main]

use std::io::Write;

use guard::keys::Keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ring = Keyring::new();
    let from_bytes = ring.add_bytes(data, std::path::Path::new("<fuzz>")).ok();
    // The file path must agree with the bytes path (it adds only the size and type checks).
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write");
    let mut ring = Keyring::new();
    let from_file = ring.add_file(file.path()).ok();
    assert_eq!(from_bytes, from_file);
});
