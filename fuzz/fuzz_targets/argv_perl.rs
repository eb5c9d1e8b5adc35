//! guard's perl command-line reader against the real perl: the input chooses a command
//! line from the differential test's grammar (`guard-common/tests/perl_argv_differential.rs`),
//! the first perl on this machine runs it, and any reading that differs from what it ran
//! panics. Slow by nature (a process per input); its worth is in the inputs the fuzzer
//! steers.
#![no_main]

// The oracles reproduce a case with it; a fuzz target draws no seed of its own.
#[allow(dead_code)]
#[path = "../../guard-common/tests/support/differential.rs"]
mod differential;
#[path = "../../guard-common/tests/support/perl_argv_oracle.rs"]
mod oracle;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (PathBuf, oracle::Sandbox) {
    static SETUP: OnceLock<(PathBuf, oracle::Sandbox)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let perl = oracle::profiled_interpreters()
            .into_iter()
            .next()
            .expect("no perl (ELF /usr/bin/perl*, /usr/local/bin/perl*)");
        // Under libFuzzer's own -timeout=10 per input.
        (perl, oracle::Sandbox::new(Duration::from_secs(5)))
    })
}

fuzz_target!(|data: &[u8]| {
    let (perl, sandbox) = setup();
    let words = oracle::generate(&mut oracle::Bytes::new(data));
    if let Err(story) = oracle::differ(sandbox, perl, &words, 0) {
        panic!("guard and perl disagree: {story}");
    }
});
