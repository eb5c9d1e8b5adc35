//! Audit records as journal entries: the real agent sends them in journald's native
//! protocol to a socket the test binds, and the test reads them as journald would.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use guard_tests::*;

/// One entry's fields, decoded independently of guard's encoder: `NAME=value\n`, or
/// `NAME\n` + 64-bit little-endian length + value + `\n`.
fn decode(mut entry: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !entry.is_empty() {
        let end = entry.iter().position(|&b| b == b'\n').expect("newline");
        let line = &entry[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8(line[..eq].to_vec()).unwrap();
            let value = String::from_utf8(line[eq + 1..].to_vec()).unwrap();
            assert!(fields.insert(name, value).is_none(), "field repeated");
            entry = &entry[end + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let rest = &entry[end + 1..];
            let length =
                usize::try_from(u64::from_le_bytes(rest[..8].try_into().unwrap())).unwrap();
            let value = String::from_utf8(rest[8..8 + length].to_vec()).unwrap();
            assert_eq!(
                rest[8 + length],
                b'\n',
                "{name}: no newline after the value"
            );
            fields.insert(name, value);
            entry = &rest[8 + length + 1..];
        }
        // journald's rule for names: upper case, digits and '_', not starting with '_'.
    }
    for name in fields.keys() {
        assert!(
            !name.starts_with('_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "{name:?} is no journal field name"
        );
    }
    fields
}

#[test]
fn decisions_reach_the_journal_as_fields() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "print('main ran')\n");
    fs.write("app/bad.py", "print('bad ran')\n");
    fs.write("app/new\nline.py", "print('bad ran')\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("journal.sock");
    let journal = UnixDatagram::bind(&socket_path).expect("bind");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let agent = Agent::start(
        fs.path(),
        &["--journal-socket", socket_path.to_str().unwrap()],
    );
    let app = fs.path().join("app");
    assert!(python(&app, &["main.py"]).status.success());
    assert!(!python(&app, &["bad.py"]).status.success());
    assert!(!python(&app, &["new\nline.py"]).status.success());

    let mut entries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        if let Ok(n) = journal.recv(&mut buffer) {
            entries.push(decode(&buffer[..n]));
        }
        let path_of = |name: &str| {
            entries
                .iter()
                .any(|e| e.get("GUARD_PATH").is_some_and(|p| p.ends_with(name)))
        };
        if path_of("/app/main.py") && path_of("/app/bad.py") && path_of("/app/new\nline.py") {
            break;
        }
    }
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.get("GUARD_PATH").is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("no entry for {name}: {entries:#?}\n{}", agent.log_text()))
    };
    let deny = find("/app/bad.py");
    assert_eq!(deny["PRIORITY"], "4", "a refusal is a warning");
    assert_eq!(deny["GUARD_DECISION"], "deny");
    assert_eq!(deny["GUARD_MODE"], "enforce");
    assert_eq!(deny["GUARD_RULE"], "valid-signature");
    assert_eq!(deny["GUARD_UID"], NOBODY.to_string());
    assert!(
        deny["GUARD_EXE"].starts_with("/usr/bin/python3"),
        "{deny:?}"
    );
    assert!(deny["GUARD_PID"].parse::<u32>().unwrap() > 1, "{deny:?}");
    assert_eq!(deny["SYSLOG_IDENTIFIER"], "guard");
    assert!(deny["MESSAGE"].starts_with("deny pid="), "{deny:?}");
    assert!(!deny["MESSAGE_ID"].is_empty());
    let allow = find("/app/main.py");
    assert_eq!(allow["PRIORITY"], "6");
    assert_eq!(allow["GUARD_DECISION"], "allow");
    // A newline in a path is carried whole (the binary form), not cut into two fields.
    let odd = find("/app/new\nline.py");
    assert_eq!(
        odd["GUARD_PATH"],
        app.join("new\nline.py").to_str().unwrap()
    );
    // The journal has them: no second copy as a line on standard error.
    assert!(
        !agent.log_text().contains("deny pid="),
        "{}",
        agent.log_text()
    );
}

#[test]
fn under_journald_log_lines_carry_their_priority() {
    let fs = Tmpfs::new();
    fs.write("app/bad.py", "print('bad ran')\n");
    // As systemd starts a service whose standard error is the journal: JOURNAL_STREAM
    // names that stream. No journald here: the records fall back to lines, prefixed.
    let agent = Agent::start_wrapped(
        &[
            "sh",
            "-c",
            "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"",
        ],
        fs.path(),
        &[],
    );
    assert!(!python(&fs.path().join("app"), &["bad.py"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log_text().contains("deny pid=") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log_text();
    let line_of = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle}:\n{log}"))
    };
    // Errors are err (the degraded start), refusals warning, the rest info.
    assert!(line_of("running degraded").starts_with("<3>"), "{log}");
    assert!(line_of("deny pid=").starts_with("<4>"), "{log}");
    assert!(
        line_of("enforcing with fanotify").starts_with("<6>"),
        "{log}"
    );
}
