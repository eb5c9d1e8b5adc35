//! The policy parser must turn any text into a policy or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A base without key files keeps relative globs from wandering the host.
    let _ = guard::policy::Policy::parse(text, "<fuzz>", std::path::Path::new("/nonexistent"));
});
