//! Helpers shared by the integration tests: the real guard binary, real filesystems the
//! tests mount themselves, real signing keys, and everything bounded by timeouts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The guard binary under test (`cargo xtask test` sets GUARD_BIN).
pub fn guard_bin() -> PathBuf {
    if let Ok(path) = std::env::var("GUARD_BIN") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/guard")
}

/// The interpreter the default-like test policy profiles.
pub const PYTHON: &str = "/usr/bin/python3";

/// Unprivileged identity scripts run as.
pub const NOBODY: u32 = 65534;

/// Runs a command to completion with a deadline; on timeout it is killed and the test fails.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    wait_with_timeout(child, limit)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {limit:?}"))
}

/// Waits for a child with a deadline; kills it and returns None on timeout.
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Option<Output> {
    let deadline = Instant::now() + limit;
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Some(Output {
                    status,
                    stdout: out.join().unwrap_or_default(),
                    stderr: err.join().unwrap_or_default(),
                });
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a guard invocation printed no panic.
pub fn assert_no_panic(output: &Output) {
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "guard panicked:\n{stderr}");
}

/// A tmpfs the test mounts itself and lazily unmounts when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn new() -> Tmpfs {
        Tmpfs::with_size("256m")
    }

    /// A tmpfs of `size` (mount's `size=` option): a small one fills up.
    pub fn with_size(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("guard-fs-")
            .tempdir()
            .expect("tempdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("mode=0755,size={size}"),
                "guard-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a root-owned 0644 file (creating parent directories 0755).
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        set_mode(&path, 0o644);
        path
    }
}

impl Tmpfs {
    /// Writes a root-owned 0644 file and signs it (evmctl, the test key).
    pub fn signed(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.write(relative, content);
        sign(&path);
        path
    }

    /// A path in a world-writable directory where a payload may leave its mark.
    pub fn marker(&self, name: &str) -> PathBuf {
        let dir = self.path().join("out");
        std::fs::create_dir_all(&dir).expect("mkdir");
        set_mode(&dir, 0o1777);
        dir.join(name)
    }
}

/// Python that creates `marker` when it runs: the payload whose execution must not happen.
pub fn payload(marker: &Path) -> String {
    format!(
        "open({:?}, 'w').write('ran')\n",
        marker.to_str().expect("utf-8 path")
    )
}

impl Default for Tmpfs {
    fn default() -> Self {
        Tmpfs::new()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// An ext2 filesystem on a loop device (an image in a temporary directory), mounted where
/// the test says and lazily unmounted when dropped. It holds signatures as tmpfs does, so a
/// policy that trusts only tmpfs can be shown refusing code on it for its type alone.
pub struct Ext2 {
    mount_point: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl Ext2 {
    /// Mounts a fresh 16 MiB ext2 at `mount_point` (created if missing).
    pub fn mount_at(mount_point: &Path) -> Ext2 {
        let image_dir = tempfile::Builder::new()
            .prefix("guard-ext2-")
            .tempdir()
            .expect("tempdir");
        let image = image_dir.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let out = run_with_timeout(
            Command::new("mkfs.ext2").args(["-q", "-F"]).arg(&image),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "mkfs.ext2: {}", text(&out.stderr));
        std::fs::create_dir_all(mount_point).expect("mkdir");
        let out = run_with_timeout(
            Command::new("mount")
                .args(["-t", "ext2", "-o", "loop"])
                .arg(&image)
                .arg(mount_point),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "mounting an ext2 image needs root and a loop device: {}",
            text(&out.stderr)
        );
        set_mode(mount_point, 0o755);
        Ext2 {
            mount_point: mount_point.to_path_buf(),
            _image_dir: image_dir,
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Writes a root-owned 0644 file (creating parent directories 0755).
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.mount_point.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        set_mode(&path, 0o644);
        path
    }

    /// Writes a root-owned 0644 file and signs it (evmctl, the test key).
    pub fn signed(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.write(relative, content);
        sign(&path);
        path
    }
}

impl Drop for Ext2 {
    fn drop(&mut self) {
        // Lazily: the loop device is released when the last user lets go.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

/// A user's FUSE filesystem whose daemon answers everyone but root, and root never
/// (tests/vm/stalling_fuse.py, the same daemon the VM test runs): the agent's own requests
/// to it hang for ever. Dropped, its connection is aborted (which fails every request still
/// waiting, the agent's included) and it is unmounted.
pub struct StallingFuse {
    mount_point: PathBuf,
    daemon: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StallingFuse {
    /// Mounts it at `mount_point` (created if missing) with `x.py` in it, plus `extra`
    /// daemon arguments (`--file NAME=TEXT`, `--link NAME=TARGET`).
    pub fn mount_at(mount_point: &Path, extra: &[&str]) -> StallingFuse {
        let dir = tempfile::Builder::new()
            .prefix("guard-fuse-")
            .tempdir()
            .expect("tempdir");
        let script = dir.path().join("stalling_fuse.py");
        std::fs::write(&script, include_str!("../vm/stalling_fuse.py")).expect("write");
        let log = dir.path().join("daemon.log");
        std::fs::create_dir_all(mount_point).expect("mkdir");
        set_mode(mount_point, 0o755);
        let daemon = Command::new(PYTHON)
            .arg(&script)
            .arg(mount_point)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("daemon.err")).expect("log"))
            .spawn()
            .expect("start the FUSE daemon");
        let mut fuse = StallingFuse {
            mount_point: mount_point.to_path_buf(),
            daemon: Some(daemon),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fuse.log_text().contains("mounted") {
            if let Some(Ok(Some(status))) = fuse.daemon.as_mut().map(Child::try_wait) {
                let err = std::fs::read_to_string(fuse._dir.path().join("daemon.err"));
                panic!("the FUSE daemon exited ({status}): {err:?} (needs root and /dev/fuse)");
            }
            assert!(Instant::now() < deadline, "the FUSE daemon did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        fuse
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// From now on root is never answered (a daemon started with
    /// `--answer-root-until-signal` answered it until now).
    pub fn stall_root(&self) {
        if let Some(daemon) = &self.daemon {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon.id() as i32),
                nix::sys::signal::Signal::SIGUSR1,
            )
            .expect("signal the FUSE daemon");
        }
    }

    /// What the daemon printed: "stalled request OP from pid TID (N)" per request of root's.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The thread ids whose requests it left unanswered.
    pub fn stalled_callers(&self) -> Vec<i32> {
        self.log_text()
            .lines()
            .filter_map(|l| l.strip_prefix("stalled request "))
            .filter_map(|l| l.split(" from pid ").nth(1))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect()
    }

    /// Waits (up to 30 s) until a thread of process `pid` has a request stalled here.
    pub fn wait_stalled_by(&self, pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .stalled_callers()
                .iter()
                .any(|tid| thread_group(*tid) == Some(pid))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no request of process {pid} reached the daemon: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The process a thread belongs to (its `Tgid`), while it lives.
pub fn thread_group(tid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

impl Drop for StallingFuse {
    fn drop(&mut self) {
        // Never through the mount itself (root's requests hang): its connection's number is
        // the filesystem's device minor in the mount table, fusectl's directory for it.
        let minor = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.split(' ').nth(4) == self.mount_point.to_str())
            .and_then(|l| l.split(' ').nth(2)?.split(':').nth(1).map(str::to_owned));
        if let Some(minor) = minor {
            let connections = Path::new("/sys/fs/fuse/connections");
            // (fails harmlessly when fusectl is mounted already)
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "fusectl"])
                .arg(connections)
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::write(connections.join(minor).join("abort"), "1");
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// A policy file trusting only the filesystem types `types`, profiling /usr/bin/python3.
pub fn policy_trusting(dir: &Path, types: &[&str]) -> PathBuf {
    let path = dir.join("policy.toml");
    let list: Vec<String> = types.iter().map(|t| format!("{t:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "[trust]\nfilesystems = [{}]\n[[interpreter]]\nname = \"python\"\n\
             executables = [\"/usr/bin/python3*\"]\ncode_patterns = [\"*.py\"]\n",
            list.join(", ")
        ),
    )
    .expect("policy");
    path
}

/// Writes an enforcing policy for /usr/bin/python3 on tmpfs, `trust` the rest of its
/// `[trust]` table (`keys = [...]`, `owners = [...]`).
pub fn write_python_policy(path: &Path, trust: &str) {
    std::fs::write(
        path,
        format!(
            "mode = \"enforce\"\n[trust]\n{trust}\nfilesystems = [\"tmpfs\"]\n\
             [[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
             code_patterns = [\"*.py\"]\n"
        ),
    )
    .expect("policy");
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// A signing key pair (EC P-256) with a self-signed certificate, made once per test run
/// with openssl, the way an operator would.
pub struct Keys {
    pub private: PathBuf,
    pub cert_pem: PathBuf,
    pub cert_der: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("guard-keys-")
            .tempdir()
            .expect("tempdir");
        let private = dir.path().join("signing.key");
        let cert_pem = dir.path().join("signing.crt");
        let cert_der = dir.path().join("signing.der");
        let run = |args: &[&str]| {
            let out = run_with_timeout(Command::new("openssl").args(args), Duration::from_secs(30));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                text(&out.stderr)
            );
        };
        run(&[
            "req",
            "-new",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-subj",
            "/CN=guard test signing key",
            "-days",
            "30",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-keyout",
            private.to_str().unwrap(),
            "-out",
            cert_pem.to_str().unwrap(),
        ]);
        run(&[
            "x509",
            "-in",
            cert_pem.to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            cert_der.to_str().unwrap(),
        ]);
        Keys {
            private,
            cert_pem,
            cert_der,
            _dir: dir,
        }
    })
}

/// A second signing key pair (P-256, self-signed certificate `NAME.pem` beside `NAME.key`),
/// for tests that take a key away: the agents' `--key` stays trusted whatever the policy says.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let out = run_with_timeout(
        Command::new("openssl")
            .args(["req", "-new", "-x509", "-nodes", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-subj", "/CN=second"])
            .args(["-days", "2", "-addext", "subjectKeyIdentifier=hash"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (key, cert)
}

/// Signs a file with evmctl (the reference implementation of the format).
pub fn sign(path: &Path) {
    sign_with(&keys().private, path);
}

/// Signs a file with evmctl and the private key `key`.
pub fn sign_with(key: &Path, path: &Path) {
    let out = run_with_timeout(
        Command::new("evmctl")
            .args(["ima_sign", "--hashalgo", "sha256", "--key"])
            .arg(key)
            .arg(path),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "evmctl ima_sign {}: {}{}",
        path.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A running `guard run`, killed when dropped.
pub struct Agent {
    child: Option<Child>,
    /// The status socket; the Python audit hook's is beside it (`python-hook.sock`).
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent marking only `watch`, trusting the test key, and waits until
    /// `guard status` answers (marks in place).
    pub fn start(watch: &Path, extra: &[&str]) -> Agent {
        Agent::start_with_env(watch, extra, &[])
    }

    /// [`Agent::start`] with extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC...).
    pub fn start_with_env(watch: &Path, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut args = vec!["--watch", watch.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Agent::start_with(&args, env)
    }

    /// Starts the agent through a wrapper command (for example `setpriv` dropping a
    /// capability), marking only `watch`.
    pub fn start_wrapped(wrapper: &[&str], watch: &Path, extra: &[&str]) -> Agent {
        let mut args = vec!["--watch", watch.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Agent::start_full(wrapper, &args, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::start_full(&[], extra, env)
    }

    /// Starts the agent marking only `watch`, its audit file at `audit` (not in its own
    /// directory): a test's filesystem with room for a few records.
    pub fn start_with_audit(watch: &Path, audit: &Path, extra: &[&str]) -> Agent {
        let mut args = vec!["--watch", watch.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Agent::start_inner_at(&[], &args, &[], false, Some(audit))
    }

    /// Starts the agent with its exec gate. The gate acts host-wide on the policy's
    /// interpreter identities: give a policy whose interpreter is a private copy, so the
    /// host's own `python3 -c` (other tests, other users) is left alone.
    pub fn start_with_exec_gate(watch: &Path, extra: &[&str]) -> Agent {
        let mut args = vec!["--watch", watch.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        Agent::start_inner(&[], &args, &[], true)
    }

    fn start_full(wrapper: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::start_inner(wrapper, extra, env, false)
    }

    fn start_inner(
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
        exec_gate: bool,
    ) -> Agent {
        Agent::start_inner_at(wrapper, extra, env, exec_gate, None)
    }

    fn start_inner_at(
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
        exec_gate: bool,
        audit: Option<&Path>,
    ) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("guard-agent-")
            .tempdir()
            .expect("tempdir");
        // Interpreters' audit hooks connect to the hook socket beside the status one, as
        // any user (the status socket itself stays 0600).
        set_mode(dir.path(), 0o755);
        let socket = dir.path().join("guard.sock");
        let audit = audit.map_or_else(|| dir.path().join("audit.jsonl"), Path::to_path_buf);
        let log = dir.path().join("agent.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(guard_bin());
                command
            }
            None => Command::new(guard_bin()),
        };
        let child = command
            .args(["run", "--backend", "fanotify"])
            .args(if exec_gate {
                &[][..]
            } else {
                // Fanotify alone: the operator accepts what only the gate enforces.
                &["--no-exec-gate", "--allow-degraded"][..]
            })
            .arg("--socket")
            .arg(&socket)
            .arg("--audit")
            .arg(&audit)
            .arg("--key")
            .arg(&keys().cert_pem)
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file)
            .spawn()
            .expect("start guard run");
        let mut agent = Agent {
            child: Some(child),
            socket,
            audit,
            log,
            _dir: dir,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        // The exec gate's programs take the verifier seconds each, more on a loaded machine
        // (two agents starting at once on two cores beside a VM took 20 s).
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("guard run exited early ({status}):\n{}", self.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("guard run not ready within 60 s:\n{}", self.log_text());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit records written so far (the audit thread flushes when idle).
    pub fn audit_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = String::new();
        while Instant::now() < deadline {
            let now = std::fs::read_to_string(&self.audit).unwrap_or_default();
            if !now.is_empty() && now == last {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(100));
        }
        last.lines().map(str::to_string).collect()
    }

    /// `guard status --json` of this agent.
    pub fn status(&self) -> String {
        let out = run_with_timeout(
            Command::new(guard_bin())
                .args(["status", "--json", "--socket"])
                .arg(&self.socket),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "guard status: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// `guard status` as people read it.
    pub fn status_text(&self) -> String {
        let out = run_with_timeout(
            Command::new(guard_bin())
                .args(["status", "--socket"])
                .arg(&self.socket),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "guard status: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// The deny records of the audit file that mention `needle` (a file name).
    pub fn denies_for(&self, needle: &str) -> Vec<String> {
        self.audit_lines()
            .into_iter()
            .filter(|l| l.contains("\"decision\":\"deny\"") && l.contains(needle))
            .collect()
    }

    /// Waits (10 s at most) until a counter of `guard status` reaches `value`.
    pub fn wait_for_status(&self, field: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status_field(field) < value {
            assert!(
                Instant::now() < deadline,
                "{field} never reached {value}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One numeric field of `guard status --json`.
    pub fn status_field(&self, name: &str) -> u64 {
        let status = self.status();
        let needle = format!("\"{name}\": ");
        status
            .lines()
            .find_map(|l| l.trim().strip_prefix(&needle))
            .and_then(|v| v.trim_end_matches(',').parse::<f64>().ok())
            // Counters, and latencies in whole microseconds.
            .map(|v| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let whole = v as u64;
                whole
            })
            .unwrap_or_else(|| panic!("no {name} in status:\n{status}"))
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let child = self.child.take().expect("running");
        let out =
            wait_with_timeout(child, Duration::from_secs(10)).expect("guard run stops on SIGTERM");
        out.status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private copy of the host's python3 in `dir`, for a policy to profile: the exec gate
/// acts host-wide on the identities it profiles, and the host's own python3 is left alone.
/// Copied by another process: a descriptor open for writing in this one would leak into a
/// child another test thread forks, and the exec would fail with ETXTBSY.
pub fn private_python(dir: &Path) -> PathBuf {
    let real = std::fs::canonicalize(PYTHON).expect("python3");
    let copy = dir.join("python3");
    let out = run("cp", &[&real, &copy]);
    assert!(out.status.success(), "cp: {}", text(&out.stderr));
    set_mode(&copy, 0o755);
    copy
}

/// `program` run as nobody without supplementary groups, with a cleared environment but
/// `PATH`: how the tests run interpreters (a private copy of python3, a venv's).
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    cmd
}

/// A command running python3 as an unprivileged user (with the given supplementary groups),
/// from `cwd`.
pub fn python_as(uid: u32, groups: &[u32], cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg("--").arg(PYTHON).args(args).current_dir(cwd);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent");
    cmd
}

/// Runs python3 as nobody with a 30 s bound.
pub fn python(cwd: &Path, args: &[&str]) -> Output {
    run_with_timeout(
        &mut python_as(NOBODY, &[], cwd, args),
        Duration::from_secs(30),
    )
}

/// Runs a command to completion (bounded). A missing tool is a test failure, never a skip:
/// the interoperability tests mean nothing without it.
pub fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let program = program.as_ref();
    let mut cmd = Command::new(program);
    for arg in args {
        cmd.arg(arg);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program:?} (is it installed?): {e}"));
    wait_with_timeout(child, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{program:?} did not finish within 120 s"))
}

/// Runs guard with `args`.
pub fn guard(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    run(guard_bin(), args)
}

pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// A memory cgroup with a limit, for a process started through [`MemoryCgroup::wrapper`]:
/// cgroup v2 where its memory controller is enabled at the root, else v1's memory
/// hierarchy. Removed on drop (its processes are killed first).
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    pub fn new(limit_bytes: u64) -> MemoryCgroup {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let root = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        let dir = root.join(format!("guard-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("a memory cgroup (needs root and a memory controller)");
        let cgroup = MemoryCgroup { dir, v2 };
        let limit = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cgroup.dir.join(limit), limit_bytes.to_string()).expect("memory limit");
        if v2 {
            // No swap to escape to: the limit is the limit.
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        } else {
            let _ = std::fs::write(cgroup.dir.join("memory.swappiness"), "0");
        }
        cgroup
    }

    /// A command prefix that moves itself into the cgroup, then execs the rest.
    pub fn wrapper(&self) -> Vec<String> {
        let procs = self.dir.join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display()),
        ]
    }

    fn read_u64(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Bytes charged now.
    pub fn usage(&self) -> u64 {
        self.read_u64(if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        })
    }

    /// The most ever charged.
    pub fn peak(&self) -> u64 {
        self.read_u64(if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        })
    }

    /// Anonymous memory charged now (what only the OOM killer can take back; the page
    /// cache of files written is reclaimed under the limit).
    pub fn anon(&self) -> u64 {
        let key = if self.v2 { "anon " } else { "rss " };
        std::fs::read_to_string(self.dir.join("memory.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Processes the kernel's OOM killer killed in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A signed-program body that opens every file of the directory `sys.argv[1]` and prints
/// `refused N opened M`.
pub const OPENER: &str = "import os, sys\nrefused = opened = 0\n\
    for name in os.listdir(sys.argv[1]):\n    try:\n        \
    open(os.path.join(sys.argv[1], name), 'rb').close()\n        opened += 1\n    \
    except PermissionError:\n        refused += 1\nprint(f'refused {refused} opened {opened}')\n";

/// A zip holding `evil.py` and `pkg/evil.py` (`payload`), made by Python's zipfile in
/// `scratch`, with 64 bytes in front so that its head is not a zip's: only the
/// end-of-central-directory record makes it one. Returns the bytes and the offset of that
/// record's signature.
pub fn prefixed_zip(scratch: &Path, payload: &str) -> (Vec<u8>, usize) {
    let zip = scratch.join("built.zip");
    let script = format!(
        "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    \
         z.writestr('evil.py', {payload:?})\n    z.writestr('pkg/evil.py', {payload:?})\n"
    );
    let out = run(PYTHON, &[&"-c", &script, &zip]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bytes = vec![b'#'; 64];
    bytes.extend(std::fs::read(&zip).expect("the zip"));
    let eocd = bytes
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .expect("an end of central directory");
    (bytes, eocd)
}

/// python3 as nobody from `cwd` on the FUSE filesystem. The change of directory happens as
/// nobody (root's, in the spawning child, would wait on the daemon for ever).
pub fn python_in_fuse(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ])
    .args(["--", "/bin/sh", "-c", "cd \"$0\" && exec \"$@\""])
    .arg(cwd)
    .arg(PYTHON)
    .args(args)
    .current_dir("/")
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env("HOME", "/nonexistent");
    cmd
}

/// A writer flipping two bytes of a file in place as fast as it can, between `XX` and `PK`
/// (an end-of-central-directory signature made and unmade), until stopped.
pub struct Flipper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Flipper {
    pub fn start(path: &Path, offset: usize) -> Flipper {
        use std::os::unix::fs::FileExt;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("the file to flip");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let signature: &[u8] = if flips.is_multiple_of(2) {
                        b"XX"
                    } else {
                        b"PK"
                    };
                    file.write_at(signature, offset as u64).expect("flip");
                    flips += 1;
                }
                flips
            })
        };
        Flipper { stop, thread }
    }

    /// Stops and says how many flips were made.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the flipper")
    }
}
