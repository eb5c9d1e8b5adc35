//! `guard explain` and `guard policy` on real files: each verdict with its reason on screen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use guard_tests::*;

struct RsaKey {
    private: PathBuf,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// RSA, so that a changed file is told apart from a bad signature (the digest is
/// recoverable from an RSA signature, not from an ECDSA one).
fn rsa_key() -> RsaKey {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("rsa.key");
    let cert = dir.path().join("rsa.crt");
    let out = run_with_timeout(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-subj",
                "/CN=explain",
                "-days",
                "2",
                "-addext",
                "subjectKeyIdentifier=hash",
                "-keyout",
            ])
            .arg(&private)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    RsaKey {
        private,
        cert,
        _dir: dir,
    }
}

fn explain(path: &Path, key: &RsaKey, extra: &[&str]) -> Output {
    let out = run_with_timeout(
        Command::new(guard_bin())
            .arg("explain")
            .arg(path)
            .arg("--key")
            .arg(&key.cert)
            .args(extra),
        Duration::from_secs(30),
    );
    assert_no_panic(&out);
    out
}

fn assert_verdict(out: &Output, code: i32, rule: &str, reason: &str) {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        text(&out.stderr)
    );
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("verdict:"))
        .unwrap_or_else(|| panic!("no verdict:\n{stdout}"));
    assert!(verdict.contains(rule), "expected rule {rule}: {verdict}");
    assert!(
        verdict.contains(reason),
        "expected reason {reason:?}: {verdict}"
    );
}

#[test]
fn explain_gives_each_verdict_with_its_reason() {
    let key = rsa_key();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tool.py");
    std::fs::write(&file, "print('tool')\n").unwrap();
    set_mode(&file, 0o644);
    let out = run_with_timeout(
        Command::new("evmctl")
            .args(["ima_sign", "--hashalgo", "sha256", "--key"])
            .arg(&key.private)
            .arg(&file),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = explain(&file, &key, &["--user", "nobody"]);
    assert_verdict(
        &out,
        0,
        "ALLOW by rule valid-signature",
        "valid signature by key",
    );
    assert!(text(&out.stdout).contains("[pass] trusted-owner"));

    set_mode(&file, 0o666);
    assert_verdict(
        &explain(&file, &key, &["--user", "nobody"]),
        1,
        "not-writable-by-runner",
        "writable by everyone",
    );
    set_mode(&file, 0o644);

    chown(&file, NOBODY, NOBODY);
    assert_verdict(
        &explain(&file, &key, &["--user", "root"]),
        1,
        "trusted-owner",
        "owned by uid 65534",
    );
    chown(&file, 0, 0);

    let mut content = std::fs::read(&file).unwrap();
    content[0] ^= 1;
    std::fs::write(&file, &content).unwrap();
    assert_verdict(
        &explain(&file, &key, &[]),
        1,
        "valid-signature",
        "digest mismatch",
    );

    let unsigned = dir.path().join("unsigned.py");
    std::fs::write(&unsigned, "print(1)\n").unwrap();
    assert_verdict(
        &explain(&unsigned, &key, &[]),
        1,
        "valid-signature",
        "no security.ima signature",
    );

    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    assert_verdict(&explain(&fifo, &key, &[]), 1, "regular-file", "FIFO");
}

/// `guard explain -- ARG...`: a command line, by the engine and the exec gate's judge, with
/// the embedded default policy.
#[test]
fn explain_judges_command_lines_as_the_exec_gate_does() {
    let launch = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new(guard_bin())
                .arg("explain")
                .arg("--")
                .args(args),
            Duration::from_secs(30),
        );
        assert_no_panic(&out);
        out
    };
    for (args, rule, reason) in [
        (
            &["-m", "timeit", "-s", "x", "pass"][..],
            "no-inline-code",
            "-m timeit runs Python from its command line",
        ),
        (
            &["-Im", "code"],
            "no-stdin-code",
            "-m code reads Python from standard input",
        ),
        (
            &["-E", "-X", "dev", "-m", "asyncio.__main__"],
            "no-stdin-code",
            "-m asyncio.__main__ reads Python",
        ),
        (
            &["-c", "x"],
            "no-inline-code",
            "inline code (-c) is refused",
        ),
    ] {
        let out = launch(args);
        assert_verdict(&out, 1, &format!("DENY by rule {rule}"), reason);
        assert!(
            text(&out.stdout).contains(&format!("exec gate:   kill by rule {rule}")),
            "{}",
            text(&out.stdout)
        );
    }
    let out = launch(&["-m", "json.tool", "x.json"]);
    assert_verdict(&out, 0, "ALLOW", "every check passed");
    assert!(text(&out.stdout).contains("exec gate:   allow"));
    // A file and a command line at once is a usage error.
    let out = run_with_timeout(
        Command::new(guard_bin()).args(["explain", "/etc/passwd", "--", "-m", "code"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Perl's, Ruby's and Node's command lines by their own grammars, with the kernel's verdict
/// beside the engine's, worded in each interpreter's spelling.
#[test]
fn explain_judges_perl_ruby_and_node_command_lines_by_their_grammars() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[interpreter]]\nname = \"perl\"\nexecutables = [\"/usr/bin/perl\"]\nargv = \"perl\"\n\
         code_patterns = [\"*.pl\", \"*.pm\"]\n\
         [[interpreter]]\nname = \"ruby\"\nexecutables = [\"/usr/bin/ruby\"]\nargv = \"ruby\"\n\
         code_patterns = [\"*.rb\"]\n\
         [[interpreter]]\nname = \"node\"\nexecutables = [\"/usr/bin/node\"]\nargv = \"node\"\n\
         code_patterns = [\"*.js\"]\n",
    )
    .unwrap();
    let launch = |interpreter: &str, args: &[&str]| {
        let out = run_with_timeout(
            Command::new(guard_bin())
                .arg("explain")
                .arg("--policy")
                .arg(&policy)
                .args(["--interpreter", interpreter, "--"])
                .args(args),
            Duration::from_secs(30),
        );
        assert_no_panic(&out);
        out
    };
    for (interpreter, args, rule, reason) in [
        (
            "/usr/bin/perl",
            &["-e", "1"][..],
            "no-inline-code",
            "(-e, -E",
        ),
        (
            "/usr/bin/perl",
            &["-Mstrict;print(1)", "x.pl"],
            "no-inline-code",
            "(-e, -E",
        ),
        (
            "/usr/bin/perl",
            &["-d", "x.pl"],
            "no-interactive",
            "the debugger, -d",
        ),
        ("/usr/bin/perl", &["-"], "no-stdin-code", "standard input"),
        ("/usr/bin/ruby", &["-W2e", "1"], "no-inline-code", "(-e)"),
        (
            "/usr/bin/ruby",
            &["-r", "debug/start", "x.rb"],
            "no-interactive",
            "debug gem",
        ),
        ("/usr/bin/node", &["-p", "1"], "no-inline-code", "(-e, -p"),
        (
            "/usr/bin/node",
            &["--inspect", "x.js"],
            "no-interactive",
            "the inspector",
        ),
        // Unread for what it does, not for the gate's limits.
        (
            "/usr/bin/perl",
            &["-S", "x.pl"],
            "facts-unavailable",
            "-S NAME",
        ),
        (
            "/usr/bin/node",
            &["--title=x", "x.js"],
            "facts-unavailable",
            "--title (node writes it",
        ),
    ] {
        let out = launch(interpreter, args);
        assert_verdict(&out, 1, &format!("DENY by rule {rule}"), reason);
        assert!(
            text(&out.stdout).contains(&format!("exec gate:   kill by rule {rule}")),
            "{interpreter} {args:?}: {}",
            text(&out.stdout)
        );
    }
    // Options that take their argument inside the cluster are no `-e`.
    for (interpreter, args) in [
        ("/usr/bin/perl", &["-w", "-Mstrict", "x.pl"][..]),
        ("/usr/bin/ruby", &["-ie", "x.rb"]),
        ("/usr/bin/node", &["x.js", "--title=x"]),
    ] {
        let out = launch(interpreter, args);
        assert!(
            text(&out.stdout).contains("exec gate:   allow"),
            "{interpreter} {args:?}: {}",
            text(&out.stdout)
        );
    }
}

/// `[native] code` as the kernel layer judges it, beside the script verdict.
#[test]
fn explain_reports_the_native_code_rules() {
    let key = rsa_key();
    let dir = tempfile::tempdir().unwrap();
    let default = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guard/policy/default.toml"),
    )
    .unwrap();
    let default_level = "\ncode = \"trusted-owner\"\n";
    assert_eq!(default.matches(default_level).count(), 1);
    let with = |name: &str, level: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            default.replace(default_level, &format!("\ncode = \"{level}\"\n")),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let trusted = &with("trusted.toml", "trusted");
    let any = &with("any.toml", "any");
    let tool = dir.path().join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    let native_line = |out: &Output| -> String {
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("native:"))
            .unwrap_or_else(|| panic!("no native line:\n{}", text(&out.stdout)))
            .to_string()
    };

    set_mode(&tool, 0o755);
    let line = native_line(&explain(&tool, &key, &["--policy", any]));
    assert!(line.contains("code = \"any\": not judged"), "{line}");
    let line = native_line(&explain(&tool, &key, &[]));
    assert!(line.contains("code = \"trusted-owner\": may run"), "{line}");

    // The default refuses what nobody owns, as "trusted" does.
    chown(&tool, NOBODY, NOBODY);
    for policy in [&[][..], &["--policy", trusted][..]] {
        let line = native_line(&explain(&tool, &key, policy));
        assert!(
            line.contains("refused") && line.contains("trusted-owner"),
            "{line}"
        );
    }
    chown(&tool, 0, 0);

    set_mode(&tool, 0o775);
    let line = native_line(&explain(&tool, &key, &["--policy", trusted]));
    assert!(
        line.contains("refused") && line.contains("not-writable-by-runner"),
        "{line}"
    );
}

/// A command line's program, as the native-code rule judges it: the profiled interpreter
/// beside the launch verdict, and a copy of it (no profile names it) on its own.
#[test]
fn explain_judges_a_command_lines_program() {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    let out = guard(&[&"explain", &"--", &"-c", &"pass"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("program:") && stdout.contains("may run as a program"),
        "{stdout}"
    );
    let copy = dir.path().join("python3");
    std::fs::copy(std::fs::canonicalize(PYTHON).unwrap(), &copy).unwrap();
    chown(&copy, NOBODY, NOBODY);
    let out = guard(&[&"explain", &"--interpreter", &copy, &"--", &"-c", &"pass"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("not an interpreter any profile names")
            && stdout.contains("refused as a program or library by rule trusted-owner"),
        "{stdout}"
    );
    chown(&copy, 0, 0);
    set_mode(&copy, 0o755);
    let out = guard(&[&"explain", &"--interpreter", &copy, &"--", &"-c", &"pass"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn explain_reports_a_truncated_signature() {
    let key = rsa_key();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.py");
    std::fs::write(&file, "x = 1\n").unwrap();
    let status = Command::new("setfattr")
        .args(["-n", "security.ima", "-v", "0x0302"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    assert_verdict(
        &explain(&file, &key, &[]),
        1,
        "valid-signature",
        "truncated",
    );
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nnot base64 at all!\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let file = dir.path().join("f.py");
    std::fs::write(&file, "x = 1\n").unwrap();
    for key in [garbage.as_path(), dir.path()] {
        let out = run_with_timeout(
            Command::new(guard_bin())
                .arg("explain")
                .arg(&file)
                .arg("--key")
                .arg(key),
            Duration::from_secs(30),
        );
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "not one line: {stderr}"
        );
        assert!(
            stderr.contains(key.to_str().unwrap()),
            "error does not name the file: {stderr}"
        );
    }
    let out = run_with_timeout(
        Command::new(guard_bin()).args(["explain", "/nonexistent/x.py"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/x.py"));
}

#[test]
fn policy_check_locates_errors_and_show_prints_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "mode = \"enforce\"\n[trust]\nowners = [\"root\"]\nkeyz = []\n",
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(guard_bin())
            .args(["policy", "check"])
            .arg(&policy),
        Duration::from_secs(30),
    );
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:1:", policy.display())),
        "{stderr}"
    );

    std::fs::write(&policy, "[trust]\nkeys = [\"missing.pem\"]\n").unwrap();
    let out = run_with_timeout(
        Command::new(guard_bin())
            .args(["policy", "check"])
            .arg(&policy),
        Duration::from_secs(30),
    );
    assert!(
        text(&out.stderr).contains(":2:9:") && text(&out.stderr).contains("missing.pem"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&policy, "mode = \"permissive\"\n").unwrap();
    let out = run_with_timeout(
        Command::new(guard_bin())
            .args(["policy", "check"])
            .arg(&policy),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run_with_timeout(
        Command::new(guard_bin()).args(["policy", "show"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(
        shown.contains("[[interpreter]]") && shown.contains("mode = \"enforce\""),
        "{shown}"
    );
}

#[test]
fn output_cut_short_by_a_pipe_is_not_a_panic() {
    // `guard sign --list` prints thousands of lines: more than a pipe holds.
    let script = format!(
        "{} sign --python {} --list 2>&1 >/dev/null | head -c0; {} sign --python {} --list | head -n1 >/dev/null",
        guard_bin().display(),
        PYTHON,
        guard_bin().display(),
        PYTHON
    );
    let out = run_with_timeout(
        Command::new("bash").args(["-c", &script]),
        Duration::from_secs(120),
    );
    assert_no_panic(&out);
}

#[test]
fn explain_says_what_the_audit_hook_decides() {
    let dir = tempfile::tempdir().unwrap();
    let deny = dir.path().join("deny.toml");
    std::fs::write(
        &deny,
        "[[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
         dynamic_code = \"deny\"\n",
    )
    .unwrap();
    // The default policy audits: allowed, recorded.
    let out = guard(&[
        &"explain",
        &"--dynamic-code",
        &"compile",
        &"/srv/app/run.py",
    ]);
    assert_verdict(&out, 0, "dynamic-code", "audited");
    assert!(
        stdout(&out).contains("recorded one by one"),
        "{}",
        stdout(&out)
    );
    // Deny refuses a caller that is not listed, not the stdlib's own.
    let policy: [&dyn AsRef<std::ffi::OsStr>; 2] = [&"--policy", &deny];
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"explain"];
    args.extend(policy);
    let refused = [
        args.clone(),
        vec![&"--dynamic-code", &"compile", &"/srv/app/run.py"],
    ]
    .concat();
    assert_verdict(&guard(&refused), 1, "dynamic-code", "is refused");
    let listed = [
        args.clone(),
        vec![
            &"--dynamic-code",
            &"compile",
            &"--function",
            &"_create_fn",
            &"/usr/lib/python3.11/dataclasses.py",
        ],
    ]
    .concat();
    let out = guard(&listed);
    assert_verdict(&out, 0, "dynamic-code", "on its own");
    assert!(
        stdout(&out).contains("not recorded one by one"),
        "{}",
        stdout(&out)
    );
    // Another function of the same file is not expected.
    let other = [
        args.clone(),
        vec![
            &"--dynamic-code",
            &"compile",
            &"--function",
            &"field",
            &"/usr/lib/python3.11/dataclasses.py",
        ],
    ]
    .concat();
    assert_verdict(&guard(&other), 1, "dynamic-code", "is refused");
    // Only audited, even under deny.
    let launch = [
        args.clone(),
        vec![&"--dynamic-code", &"subprocess.Popen", &"/x.py"],
    ]
    .concat();
    assert_verdict(&guard(&launch), 0, "process-launch", "never refused");
    // The start-up that skips the hook, as the exec gate judges it.
    let skip = [args.clone(), vec![&"--", &"-S", &"x.py"]].concat();
    let out = guard(&skip);
    assert_verdict(&out, 1, "audit-hook-required", "-S starts without site");
    assert!(stdout(&out).contains("exec gate:   kill by rule audit-hook-required"));
    // An event the hook does not report is an error naming the ones it does.
    let out = guard(&[&"explain", &"--dynamic-code", &"open", &"/x.py"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pickle.find_class"),
        "{}",
        stderr(&out)
    );
}
