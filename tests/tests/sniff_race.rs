//! Content the opener can change is no verdict (issue 22 item 2), host mode.
//!
//! A zip on `PYTHONPATH` named `.dat` is code only by its bytes: its owner flips the
//! end-of-central-directory signature back and forth, so that the agent reads "not a zip"
//! while the interpreter's `zipimport` reads a zip. The agent now judges a file the
//! interpreter opens by a search-path entry's name as an archive whatever its bytes.

use std::path::Path;
use std::time::Duration;

use guard_tests::*;

/// Runs under guard; each has about one chance in eight to win the race without the fix.
const TRIES: usize = 100;

/// Runs `main` with `PYTHONPATH` set to `entry`.
fn runs_payload(app: &Path, main: &Path, entry: &str, marker: &Path) -> bool {
    let out = run_with_timeout(
        python_as(NOBODY, &[], app, &[main.to_str().unwrap()]).env("PYTHONPATH", entry),
        Duration::from_secs(30),
    );
    assert_no_panic(&out);
    marker.exists()
}

#[test]
fn a_zip_on_the_search_path_flipped_by_its_owner_never_runs() {
    let fs = Tmpfs::new();
    let marker = fs.marker("evil-ran");
    let home = fs.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    chown(&home, NOBODY, NOBODY);
    let scratch = tempfile::tempdir().unwrap();
    let (bytes, eocd) = prefixed_zip(scratch.path(), &payload(&marker));
    let lib = home.join("lib.dat");
    std::fs::write(&lib, &bytes).unwrap();
    chown(&lib, NOBODY, NOBODY);
    let main = fs.signed(
        "app/main.py",
        "try:\n    import evil\nexcept Exception as e:\n    print('refused', e)\n",
    );
    let app = fs.path().join("app");

    // `zipimport` takes the longest prefix of an entry that is a file: `lib.dat/pkg` is
    // the directory `pkg` inside the archive `lib.dat`.
    let lib_entry = lib.to_str().unwrap().to_string();
    let entries = [lib_entry.clone(), format!("{lib_entry}/pkg")];
    // Without guard the zip imports, whatever it is called, both ways.
    for entry in &entries {
        assert!(
            runs_payload(&app, &main, entry, &marker),
            "the attack does not run without guard ({entry})"
        );
        std::fs::remove_file(&marker).unwrap();
    }

    let policy = policy_trusting(fs.path(), &["tmpfs"]);
    let agent = Agent::start(fs.path(), &["--policy", policy.to_str().unwrap()]);
    let flipper = Flipper::start(&lib, eocd);
    let mut tries = 0;
    while tries < TRIES && !marker.exists() {
        runs_payload(&app, &main, &entries[tries % 2], &marker);
        tries += 1;
    }
    let flips = flipper.stop();
    eprintln!("{tries} runs under guard against {flips} flips");
    assert!(
        !marker.exists(),
        "the flipped zip ran after {tries} runs\n{}",
        agent.log_text()
    );
    // Refused as an archive by its search-path name, not by what its bytes said.
    let denies = agent.denies_for("lib.dat");
    assert!(
        denies.iter().any(|d| d.contains("\"code\":\"archive\"")),
        "{denies:#?}"
    );
}
