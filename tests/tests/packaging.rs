//! The files the Debian package ships, checked with the binary: distribution policies
//! validate, and the unit file names the binary's real options.

use std::path::PathBuf;

use guard_tests::*;

fn packaging(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(relative)
}

#[test]
fn distribution_policies_validate() {
    for name in ["debian", "rhel"] {
        let path = packaging(&format!("policies/{name}.toml"));
        let out = guard(&[&"policy", &"check", &path]);
        assert_no_panic(&out);
        // Key globs that match nothing are fine (no keys installed on a CI host).
        assert!(
            out.status.success() && stdout(&out).contains(": OK (enforce mode"),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let shown = guard(&[&"policy", &"show", &path]);
        assert!(shown.status.success(), "{}", stderr(&shown));
    }
    // Only the layout differs (interpreter paths, filesystem types, the package manager's
    // trust): every other setting follows the embedded default, so a change there must be
    // made here too.
    let default = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guard/policy/default.toml"),
    )
    .unwrap();
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .filter(|l| !l.starts_with("executables") && !l.starts_with("filesystems"))
            .filter(|l| !l.starts_with("store") && !l.starts_with("origins"))
            .map(str::to_string)
            .collect()
    };
    for name in ["debian", "rhel"] {
        let text = std::fs::read_to_string(packaging(&format!("policies/{name}.toml"))).unwrap();
        assert_eq!(settings(&text), settings(&default), "{name}.toml drifted");
    }
    let rhel = std::fs::read_to_string(packaging("policies/rhel.toml")).unwrap();
    assert!(rhel.contains("/usr/libexec/platform-python*") && rhel.contains("/usr/lib64/python3"));
    // The opt-in profiles of the other interpreters: valid once their `#| ` is removed.
    for name in ["debian", "rhel"] {
        let text = std::fs::read_to_string(packaging(&format!("policies/{name}.toml"))).unwrap();
        let enabled: String = text
            .lines()
            .map(|l| l.strip_prefix("#| ").or(l.strip_prefix("#|")).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(enabled.contains("argv = \"perl\"") && enabled.contains("argv = \"ruby\""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &enabled).unwrap();
        let out = guard(&[&"policy", &"check", &path]);
        assert!(
            out.status.success(),
            "{name}.toml with the other interpreters: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let debian = std::fs::read_to_string(packaging("policies/debian.toml")).unwrap();
    assert!(debian.contains("/usr/lib/python3/dist-packages"));
    // apt's verified packages on Debian; RPM ships IMA signatures itself (rpm-plugin-ima).
    let store = "store = \"/var/lib/guard/packages\"";
    assert!(debian.contains(store) && default.contains(store) && !rhel.contains("[packages]"));
}

#[test]
fn unit_runs_real_options_of_the_agent() {
    let unit = std::fs::read_to_string(packaging("guard.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/sbin/guard"));
    // Parse the same options with `--help` appended: clap validates them without starting.
    let args: Vec<&str> = words.chain(["--help"]).collect();
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    let out = guard(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=always",
        "OOMScoreAdjust=-1000",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
}
