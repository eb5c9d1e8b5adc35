//! The CPython, perl and Node.js command-line readers shared with the kernel exec gate. The
//! input is split on NUL like /proc/PID/cmdline.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let invocation = guard_common::python_argv::parse(args.iter().copied());
    let _ = invocation.reads_stdin();
    let _ = invocation.script_is_descriptor_link();
    // Whatever it reports must come from the command line itself.
    for part in [invocation.script, invocation.module].into_iter().flatten() {
        assert!(
            args.iter().any(|a| a.ends_with(part)),
            "{part:?} is not in {args:?}"
        );
    }
    let perl = guard_common::perl_argv::read(args.iter().copied());
    let _ = perl.reads_stdin();
    if let Some(script) = perl.script {
        assert!(args.contains(&script), "{script:?} is not a word of {args:?}");
    }
    // The kernel's reader, fed words as the kernel cuts them, never panics either.
    let mut reader = guard_common::perl_argv::Reader::with_cluster_limit(15);
    for arg in &args {
        let _ = reader.feed(&arg[..arg.len().min(127)]);
    }
    // Node's reader, and the kernel's judge on it (words cut and padded as it reads them).
    let node = guard_common::node_argv::parse(args.iter().copied());
    let preloads = guard_common::node_argv::preloads(args.iter().copied()).map(|(_, name)| name);
    for part in node.script.into_iter().chain(preloads) {
        assert!(
            args.iter().any(|a| a.ends_with(part)),
            "{part:?} is not in {args:?}"
        );
    }
    let _ = guard_common::exec_gate::judge_argv(
        guard_common::argv::Dialect::Node,
        u32::MAX >> 1,
        &guard_common::exec_gate::NoModules,
        args.iter().copied(),
    );
});
