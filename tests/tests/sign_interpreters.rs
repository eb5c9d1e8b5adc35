//! `guard sign --perl`, `--ruby`, `--node`: what an installed interpreter runs, found from
//! the interpreter itself (its module path, the extension objects under it, the shared
//! libraries they and the interpreter load), as `--python` does for CPython.

use std::time::Duration;

use guard_tests::*;

/// The files `guard sign --FLAG EXE --list` would sign: each a regular file, listed once.
fn listed(flag: &str, exe: &str) -> Vec<String> {
    let out = run_with_timeout(
        std::process::Command::new(guard_bin()).args(["sign", flag, exe, "--list"]),
        Duration::from_secs(120),
    );
    assert_no_panic(&out);
    assert!(out.status.success(), "{flag} {exe}: {}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        let meta = std::fs::symlink_metadata(line).unwrap();
        assert!(meta.is_file(), "{line} is not a regular file");
        assert!(seen.insert(line.clone()), "{line} listed twice");
    }
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    assert!(
        lines.iter().any(|l| l == libc.to_str().unwrap()),
        "{flag}: libc not listed"
    );
    lines
}

#[test]
fn perl_layout_covers_inc_xs_objects_and_libraries() {
    let lines = listed("--perl", "/usr/bin/perl");
    assert!(
        lines.iter().any(|l| l.ends_with("/strict.pm")),
        "no strict.pm"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/auto/") && l.ends_with(".so")),
        "no XS object under auto/"
    );
}

#[test]
fn ruby_layout_covers_load_path_gems_and_libraries() {
    let lines = listed("--ruby", "/usr/bin/ruby");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("/usr/lib/ruby/") && l.ends_with("/set.rb")),
        "no set.rb"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/ruby/") && l.ends_with(".so")),
        "no extension object"
    );
    // rubygems evaluates each gem's specification at start-up: Ruby code by name.
    assert!(
        lines.iter().any(|l| l.ends_with(".gemspec")),
        "no gem specification"
    );
}

#[test]
fn node_layout_covers_its_libraries() {
    // Node's own library is inside its binary: what it maps is what there is to sign,
    // with whatever its global module directories hold.
    listed("--node", "/usr/bin/node");
}
