//! guard's CPython command-line reader against the real CPython: the input chooses a
//! command line from the differential test's grammar (`guard-common/tests/argv_differential.rs`),
//! the first profiled python3 runs it, and any reading that differs from what it ran panics.
//! Slow by nature (a process per input); its worth is in the inputs the fuzzer steers.
#![no_main]

// The oracles reproduce a case with it; a fuzz target draws no seed of its own.
#[allow(dead_code)]
#[path = "../../guard-common/tests/support/differential.rs"]
mod differential;
#[path = "../../guard-common/tests/support/argv_oracle.rs"]
mod oracle;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (PathBuf, oracle::Sandbox) {
    static SETUP: OnceLock<(PathBuf, oracle::Sandbox)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let python = oracle::profiled_interpreters()
            .into_iter()
            .next()
            .expect("no profiled CPython (ELF /usr/bin/python3*, /usr/local/bin/python3*)");
        // Under libFuzzer's own -timeout=10 per input.
        (python, oracle::Sandbox::new(Duration::from_secs(5)))
    })
}

fuzz_target!(|data: &[u8]| {
    let (python, sandbox) = setup();
    let words = oracle::generate(&mut oracle::Bytes::new(data));
    if let Err(story) = oracle::differ(sandbox, python, &words, 0) {
        panic!("guard and CPython disagree: {story}");
    }
});
