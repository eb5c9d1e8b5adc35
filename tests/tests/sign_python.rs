//! `guard sign --python`: what an installed interpreter runs, found from the interpreter.

use std::time::Duration;

use guard_tests::*;

#[test]
fn python_layout_covers_stdlib_extensions_and_libraries() {
    let out = run_with_timeout(
        std::process::Command::new(guard_bin()).args(["sign", "--python", PYTHON, "--list"]),
        Duration::from_secs(120),
    );
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    let stdlib_os = lines
        .iter()
        .any(|l| l.starts_with("/usr/lib/python3") && l.ends_with("/os.py"));
    assert!(stdlib_os, "no stdlib os.py in:\n{listed}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/lib-dynload/") && l.ends_with(".so")),
        "no extension module"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("__pycache__/") && l.ends_with(".pyc")),
        "no bytecode"
    );
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    assert!(lines.contains(&libc.to_str().unwrap()), "libc not listed");
    // Every listed file is a regular file, given once.
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        let meta = std::fs::symlink_metadata(line).unwrap();
        assert!(meta.is_file(), "{line} is not a regular file");
        assert!(seen.insert(*line), "{line} listed twice");
    }
}
