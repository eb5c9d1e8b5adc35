//! guard's Node.js command-line reader against the real node: the input chooses a command
//! line from the differential test's grammar (`guard-common/tests/argv_node_differential.rs`),
//! the first node found runs it, and any reading that differs from what it ran panics.
//! Slow by nature (a process per input); its worth is in the inputs the fuzzer steers.
#![no_main]

// The oracles reproduce a case with it; a fuzz target draws no seed of its own.
#[allow(dead_code)]
#[path = "../../guard-common/tests/support/differential.rs"]
mod differential;
#[path = "../../guard-common/tests/support/argv_oracle.rs"]
mod oracle;
#[path = "../../guard-common/tests/support/node_oracle.rs"]
mod node_oracle;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (PathBuf, node_oracle::Sandbox) {
    static SETUP: OnceLock<(PathBuf, node_oracle::Sandbox)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let node = node_oracle::node_interpreters()
            .into_iter()
            .next()
            .expect("no node (ELF /usr/bin/node, /usr/bin/nodejs, /usr/local/bin/node)");
        // Under libFuzzer's own -timeout=10 per input.
        (node, node_oracle::Sandbox::new(Duration::from_secs(5)))
    })
}

fuzz_target!(|data: &[u8]| {
    let (node, sandbox) = setup();
    let words = node_oracle::generate(&mut oracle::Bytes::new(data));
    if let Err(story) = node_oracle::differ(sandbox, node, &words, 0) {
        panic!("guard and node disagree: {story}");
    }
});
