//! guard's signatures against the oracle, evmctl (ima-evm-utils): each verifies what the
//! other signs, and both refuse a changed file. Needs root (security.* xattrs), evmctl and
//! openssl; missing tools fail the tests.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use guard_tests::{guard, run, stderr, stdout};

const IMA: &str = "security.ima";

/// A scratch directory where security.* xattrs can be written.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "x").unwrap();
    xattr::set(&probe, IMA, &[0x03]).unwrap_or_else(|e| {
        panic!(
            "cannot write {IMA} in {} (these tests need root and a filesystem with xattrs): {e}",
            dir.path().display()
        )
    });
    dir
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    no_panic(out);
}

fn no_panic(out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint: {err}");
}

fn openssl(args: &[&str]) {
    let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as &dyn AsRef<OsStr>).collect();
    ok(&run("openssl", &args), "openssl");
}

struct Keys {
    private: PathBuf,
    cert_pem: PathBuf,
    cert_der: PathBuf,
    public: PathBuf,
}

/// An openssl key pair and self-signed certificate, the way an administrator makes them.
fn openssl_keys(dir: &Path, name: &str, genpkey: &[&str]) -> Keys {
    let p = |ext: &str| dir.join(format!("{name}.{ext}"));
    let keys = Keys {
        private: p("key"),
        cert_pem: p("crt"),
        cert_der: p("der"),
        public: p("pub"),
    };
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    let out = s(&keys.private);
    args.extend_from_slice(&["-out", &out]);
    openssl(&args);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &out,
        "-subj",
        "/CN=test",
        "-days",
        "2",
        "-out",
        &s(&keys.cert_pem),
    ]);
    openssl(&[
        "x509",
        "-in",
        &s(&keys.cert_pem),
        "-outform",
        "DER",
        "-out",
        &s(&keys.cert_der),
    ]);
    openssl(&["pkey", "-in", &out, "-pubout", "-out", &s(&keys.public)]);
    keys
}

fn evmctl(args: &[&dyn AsRef<OsStr>]) -> Output {
    run("evmctl", args)
}

fn evmctl_sign(key: &Path, algo: &str, file: &Path) {
    ok(
        &evmctl(&[&"ima_sign", &"--key", &key, &"-a", &algo, &file]),
        "evmctl ima_sign",
    );
}

fn evmctl_verifies(cert_der: &Path, file: &Path) -> bool {
    let out = evmctl(&[&"ima_verify", &"--key", &cert_der, &file]);
    out.status.success()
}

fn write_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn flip_one_byte(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    // Rewrite in place: xattrs stay, content changes.
    let mut content = std::fs::read(path).unwrap();
    content[3] ^= 0x01;
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&content).unwrap();
}

fn verify_line(key: &Path, file: &Path) -> (bool, String) {
    let out = guard(&[&"verify", &"--key", &key, &file]);
    no_panic(&out);
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with(&format!("{}: ", file.display())), "{line}");
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}: {}",
        stderr(&out)
    );
    (out.status.success(), line.trim_end().to_string())
}

/// evmctl signs, guard verifies (with every form of the key), and a flipped byte is refused.
fn evmctl_to_guard(keys: &Keys, algo: &str, changed_reason: &str) {
    let dir = scratch();
    let file = write_file(dir.path(), "code.py", b"print('signed')\n");
    evmctl_sign(&keys.private, algo, &file);
    for key in [&keys.cert_der, &keys.cert_pem, &keys.public] {
        let (good, line) = verify_line(key, &file);
        assert!(good, "{line}");
        assert!(line.ends_with(&format!(", {algo})")), "{line}");
        assert!(line.contains(": OK (key id "), "{line}");
    }
    flip_one_byte(&file);
    let (good, line) = verify_line(&keys.cert_der, &file);
    assert!(!good, "{line}");
    assert!(
        line.contains(&format!(": FAIL: {changed_reason}")),
        "{line}"
    );
    assert!(
        !evmctl_verifies(&keys.cert_der, &file),
        "evmctl accepted a changed file"
    );
}

/// guard signs, evmctl verifies, and a flipped byte is refused by both.
fn guard_to_evmctl(keys: &Keys, algo: &str) {
    let dir = scratch();
    let file = write_file(dir.path(), "code.py", b"print('signed')\n");
    let out = guard(&[&"sign", &"--key", &keys.private, &"--hash", &algo, &file]);
    ok(&out, "guard sign");
    assert!(
        stdout(&out).starts_with("signed 1 file"),
        "{}",
        stdout(&out)
    );
    assert!(
        evmctl_verifies(&keys.cert_der, &file),
        "evmctl refused guard's signature"
    );
    assert!(verify_line(&keys.cert_der, &file).0);
    flip_one_byte(&file);
    assert!(
        !evmctl_verifies(&keys.cert_der, &file),
        "evmctl accepted a changed file"
    );
    assert!(!verify_line(&keys.cert_der, &file).0);
}

const ECDSA_CHANGED: &str = "bad signature: the file's content or the signature does not match";
const RSA_CHANGED: &str = "digest mismatch";

#[test]
fn rsa2048_interoperates_with_evmctl() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    for algo in ["sha256", "sha384", "sha512"] {
        evmctl_to_guard(&keys, algo, RSA_CHANGED);
        guard_to_evmctl(&keys, algo);
    }
}

#[test]
fn rsa4096_interoperates_with_evmctl() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
    );
    evmctl_to_guard(&keys, "sha256", RSA_CHANGED);
    guard_to_evmctl(&keys, "sha256");
}

#[test]
fn p256_interoperates_with_evmctl() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    for algo in ["sha256", "sha384"] {
        evmctl_to_guard(&keys, algo, ECDSA_CHANGED);
        guard_to_evmctl(&keys, algo);
    }
}

#[test]
fn p384_interoperates_with_evmctl() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "p384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    for algo in ["sha256", "sha384"] {
        evmctl_to_guard(&keys, algo, ECDSA_CHANGED);
        guard_to_evmctl(&keys, algo);
    }
}

#[test]
fn traditional_openssl_keys_sign() {
    let dir = scratch();
    let rsa = dir.path().join("rsa.pem");
    let ec = dir.path().join("ec.pem");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        rsa.to_str().unwrap(),
        "2048",
    ]);
    openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-out",
        ec.to_str().unwrap(),
    ]);
    for key in [&rsa, &ec] {
        let head = std::fs::read_to_string(key).unwrap();
        assert!(
            head.contains("-----BEGIN RSA PRIVATE KEY-----")
                || head.contains("-----BEGIN EC PRIVATE KEY-----")
        );
        let file = write_file(dir.path(), "code.py", b"x = 1\n");
        ok(&guard(&[&"sign", &"--key", key, &file]), "guard sign");
        // evmctl takes the private key file for verification too.
        let (good, line) = verify_line(key, &file);
        assert!(good, "{line}");
    }
}

#[test]
fn keygen_output_works_with_evmctl() {
    let dir = scratch();
    let out_dir = dir.path().join("keys");
    for kind in ["rsa2048", "p256", "p384"] {
        let out = guard(&[
            &"keygen", &"--type", &kind, &"--out", &out_dir, &"--name", &kind,
        ]);
        ok(&out, "guard keygen");
        let key = out_dir.join(format!("{kind}.key"));
        let der = out_dir.join(format!("{kind}.der"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let id = stdout(&out)[7..15].to_string();

        // evmctl signs with guard's key; guard verifies with each of its files.
        let file = write_file(dir.path(), &format!("{kind}-a.py"), b"a = 1\n");
        evmctl_sign(&key, "sha256", &file);
        for ext in ["crt", "der", "pub", "key"] {
            let (good, line) = verify_line(&out_dir.join(format!("{kind}.{ext}")), &file);
            assert!(good, "{line}");
            assert!(line.contains(&format!("key id {id}")), "{line} vs {id}");
        }
        // guard signs; evmctl verifies with guard's DER certificate.
        let file = write_file(dir.path(), &format!("{kind}-b.py"), b"b = 2\n");
        ok(
            &guard(&[
                &"sign",
                &"--key",
                &key,
                &"--cert",
                &out_dir.join(format!("{kind}.crt")),
                &file,
            ]),
            "guard sign",
        );
        assert!(
            evmctl_verifies(&der, &file),
            "evmctl refused a keygen signature ({kind})"
        );

        // Never overwrites.
        let again = guard(&[
            &"keygen", &"--type", &kind, &"--out", &out_dir, &"--name", &kind,
        ]);
        assert_eq!(again.status.code(), Some(2));
        no_panic(&again);
        assert!(
            stderr(&again).contains("already exists"),
            "{}",
            stderr(&again)
        );
    }
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    no_panic(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("guard: "), "{err}");
    assert!(err.contains(needle), "{err} lacks {needle}");
}

#[test]
fn bad_keys_are_one_line_errors() {
    let dir = scratch();
    let file = write_file(dir.path(), "code.py", b"x\n");
    let garbage = write_file(
        dir.path(),
        "garbage.pem",
        b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n",
    );
    let out = guard(&[&"verify", &"--key", &garbage, &file]);
    one_line_error(&out, 2, &format!("{}: invalid PEM", garbage.display()));
    let out = guard(&[&"verify", &"--key", &dir.path(), &file]);
    one_line_error(
        &out,
        2,
        &format!("{}: is a directory", dir.path().display()),
    );
    let out = guard(&[&"sign", &"--key", &garbage, &file]);
    one_line_error(&out, 2, "invalid PEM");
    let out = guard(&[&"sign", &"--key", &dir.path(), &file]);
    one_line_error(&out, 2, "is a directory");
}

#[test]
fn broken_and_missing_signatures_fail_cleanly() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let truncated = write_file(dir.path(), "truncated.py", b"x\n");
    // The brief's case, through the same tool an administrator would use.
    ok(
        &run("setfattr", &[&"-n", &IMA, &"-v", &"0x0302", &truncated]),
        "setfattr",
    );
    let unsigned = write_file(dir.path(), "unsigned.py", b"x\n");
    let hash_only = write_file(dir.path(), "hash.py", b"x\n");
    xattr::set(&hash_only, IMA, &[0x04, 0x04, 1, 2, 3]).unwrap();
    let other_key = write_file(dir.path(), "other.py", b"x\n");
    evmctl_sign(
        &openssl_keys(dir.path(), "rsa", &["-algorithm", "RSA"]).private,
        "sha256",
        &other_key,
    );
    let out = guard(&[
        &"verify",
        &"--key",
        &keys.cert_der,
        &truncated,
        &unsigned,
        &hash_only,
        &other_key,
        &dir.path(),
    ]);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let expect = [
        format!(
            "{}: FAIL: security.ima is empty or truncated (2 bytes)",
            truncated.display()
        ),
        format!("{}: FAIL: no security.ima signature", unsigned.display()),
        format!(
            "{}: FAIL: security.ima holds no signature (type 0x04)",
            hash_only.display()
        ),
        format!("{}: FAIL: unknown key id ", other_key.display()),
        format!(
            "{}: FAIL: not a regular file (directory)",
            dir.path().display()
        ),
    ];
    assert_eq!(lines.len(), expect.len(), "{text}");
    for (line, want) in lines.iter().zip(&expect) {
        assert!(line.starts_with(want.as_str()), "{line} vs {want}");
    }
    // evmctl agrees the truncated value is no signature.
    assert!(!evmctl_verifies(&keys.cert_der, &truncated));
}

#[test]
fn recursive_signing_stays_in_the_tree() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let outside = write_file(dir.path(), "outside.py", b"outside\n");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("pkg/sub")).unwrap();
    let a = write_file(&tree, "a.py", b"a\n");
    let b = write_file(&tree.join("pkg/sub"), "b.py", b"b\n");
    std::os::unix::fs::symlink(&outside, tree.join("pkg/link.py")).unwrap();
    std::os::unix::fs::symlink(dir.path(), tree.join("escape")).unwrap();
    nix::unistd::mkfifo(
        &tree.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    let out = guard(&[&"sign", &"-r", &"--key", &keys.private, &tree]);
    ok(&out, "guard sign -r");
    assert!(
        stdout(&out).starts_with("signed 2 files"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("skipped 3, failed 0"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("link.py: skipped: not a regular file (symbolic link, not followed)"),
        "{err}"
    );
    assert!(
        err.contains("fifo: skipped: not a regular file (FIFO)"),
        "{err}"
    );
    assert!(
        xattr::get(&outside, IMA).unwrap().is_none(),
        "signed through a symlink"
    );
    for file in [&a, &b] {
        assert!(evmctl_verifies(&keys.cert_der, file));
    }

    // Without -r a directory is an error; a symlink operand is not followed.
    let out = guard(&[
        &"sign",
        &"--key",
        &keys.private,
        &tree,
        &tree.join("pkg/link.py"),
        &a,
    ]);
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is a directory (use -r)"), "{err}");
    assert!(err.contains("symbolic link, not followed"), "{err}");
    assert!(stdout(&out).contains("signed 1 file"), "{}", stdout(&out));
}

/// Issue 16: a signature over SHA-1 is refused unless the policy's `min_digest` accepts it.
#[test]
fn sha1_signatures_are_refused_unless_the_policy_accepts_them() {
    let dir = scratch();
    let keys = openssl_keys(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let file = write_file(dir.path(), "old.py", b"print('signed long ago')\n");
    evmctl_sign(&keys.private, "sha1", &file);
    assert!(
        evmctl_verifies(&keys.cert_der, &file),
        "evmctl made a bad signature"
    );
    let (ok, line) = verify_line(&keys.cert_pem, &file);
    assert!(
        !ok && line.contains("weaker than the policy's min_digest sha256"),
        "{line}"
    );
    // The setting, through `guard explain` with a policy naming the key.
    let policy = |min: &str| {
        let path = dir.path().join(format!("policy-{min}.toml"));
        std::fs::write(
            &path,
            format!(
                "[trust]\nkeys = [{:?}]\nmin_digest = \"{min}\"\n\
                 [[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3\"]\n",
                keys.cert_pem.to_str().unwrap()
            ),
        )
        .unwrap();
        path
    };
    for (min, verdict) in [
        ("sha1", "[pass] valid-signature"),
        (
            "sha256",
            "[FAIL] valid-signature          signed over a sha1 digest",
        ),
    ] {
        let out = guard(&[&"explain", &file, &"--policy", &policy(min)]);
        assert!(stdout(&out).contains(verdict), "{min}: {}", stdout(&out));
    }
    // A name the policy cannot mean is an error naming the file.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[trust]\nmin_digest = \"md5\"\n").unwrap();
    let out = guard(&[&"policy", &"check", &bad]);
    assert!(
        !out.status.success() && stderr(&out).contains("bad.toml"),
        "{}",
        stderr(&out)
    );
}
