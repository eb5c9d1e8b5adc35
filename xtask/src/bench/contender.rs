//! The contenders: nothing, guard (fanotify backend), fapolicyd (integrity none / sha256).
//! Each is started before its measurements and stopped after them, and each proves it is
//! enforcing before its numbers count.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Layout;
use super::host::BENCH_FS_TYPE;
use super::util::{check_interrupted, run_timed, signal, wait_deadline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub(super) enum Kind {
    None,
    Guard,
    FapolicydNone,
    FapolicydSha256,
}

impl Kind {
    pub(super) const ALL: [Kind; 4] = [
        Kind::None,
        Kind::Guard,
        Kind::FapolicydNone,
        Kind::FapolicydSha256,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::None => "no guard",
            Kind::Guard => "guard (fanotify)",
            Kind::FapolicydNone => "fapolicyd (integrity none)",
            Kind::FapolicydSha256 => "fapolicyd (integrity sha256)",
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Guard => "guard",
            Kind::FapolicydNone => "fapolicyd-none",
            Kind::FapolicydSha256 => "fapolicyd-sha256",
        }
    }

    pub(super) fn is_fapolicyd(self) -> bool {
        matches!(self, Kind::FapolicydNone | Kind::FapolicydSha256)
    }
}

/// A started contender; stopped on drop.
pub(super) struct Running {
    pub kind: Kind,
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Running {
    pub(super) fn start(kind: Kind, layout: &Layout) -> Result<Running> {
        check_interrupted()?;
        let log = layout.work.join(format!("{}.log", kind.key()));
        let socket = layout.work.join("guard.sock");
        let mut running = Running {
            kind,
            child: None,
            socket,
            log,
        };
        match kind {
            Kind::None => {}
            Kind::Guard => running.start_guard(layout)?,
            Kind::FapolicydNone | Kind::FapolicydSha256 => running.start_fapolicyd(layout)?,
        }
        Ok(running)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn_logged(&mut self, cmd: &mut Command) -> Result<()> {
        let log = File::create(&self.log).with_context(|| self.log.display().to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        self.child = Some(child);
        Ok(())
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "exited early ({status}):\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )),
            _ => None,
        }
    }

    fn start_guard(&mut self, layout: &Layout) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        self.spawn_logged(
            Command::new(&layout.guard)
                .args(["run", "--backend", "fanotify", "--watch"])
                .arg(&layout.root)
                .arg("--socket")
                .arg(&self.socket)
                .arg("--audit")
                .arg(layout.work.join("guard-audit.jsonl"))
                .arg("--policy")
                .arg(&layout.policy)
                .env("RUST_LOG", "warn"),
        )?;
        // The socket exists only once the marks are in place.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(why) = self.exited() {
                bail!("guard run {why}");
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("guard run not ready within 20 s")
    }

    fn start_fapolicyd(&mut self, layout: &Layout) -> Result<()> {
        let integrity = if self.kind == Kind::FapolicydSha256 {
            "sha256"
        } else {
            "none"
        };
        write_fapolicyd_config(integrity)?;
        // systemd-tmpfiles makes it at boot; without it fapolicyd cannot create its FIFO.
        // (It is restored, or removed again, with the rest of fapolicyd's state.)
        std::fs::create_dir_all("/run/fapolicyd").context("/run/fapolicyd")?;
        // Foreground, logging only denials; it reads compiled.rules and the trust file.
        self.spawn_logged(Command::new("fapolicyd").arg("--debug-deny"))?;
        // Ready when an untrusted program on the bench filesystem can no longer run
        // (90-deny-execute). The probe touches no Python file, so caches stay cold.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(why) = self.exited() {
                bail!("fapolicyd {why}");
            }
            let probe = run_timed(
                &mut Command::new(&layout.probe_exec),
                Duration::from_secs(10),
                false,
            );
            match probe {
                Err(e) if is_permission_denied(&e) => return Ok(()),
                Err(e) => return Err(e).context("fapolicyd readiness probe"),
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        bail!(
            "fapolicyd did not start enforcing within 60 s:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// `guard status --json` of the running agent.
    pub(super) fn guard_status(&self, layout: &Layout) -> Result<serde_json::Value> {
        let ran = run_timed(
            Command::new(&layout.guard)
                .args(["status", "--json", "--socket"])
                .arg(&self.socket),
            Duration::from_secs(10),
            false,
        )?;
        if !ran.output.status.success() {
            bail!("guard status: {}", ran.stderr());
        }
        serde_json::from_slice(&ran.output.stdout).context("guard status output")
    }

    pub(super) fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGTERM);
        match wait_deadline(&mut child, Duration::from_secs(20)) {
            Ok(_) => Ok(()),
            Err(e) => Err(e).context(format!("{} did not stop on SIGTERM", self.kind.label())),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("bench: {e:#}");
        }
    }
}

fn is_permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// fapolicyd's configuration for one contender. Everything else is Debian's shipped value.
/// `uid`/`gid` root: it cannot switch to its own user here. `watch_fs`: only the bench
/// filesystem's type. `trust = file`: only what the harness adds (the Debian package
/// database backend would also trust the host's own files, which are not on the bench
/// filesystem anyway, at a long start-up cost). No shutdown report (it writes to /var/log).
fn write_fapolicyd_config(integrity: &str) -> Result<()> {
    let text = format!(
        "# written by cargo xtask bench; the original is restored afterwards\n\
         permissive = 0\n\
         nice_val = 14\n\
         q_size = 640\n\
         uid = root\n\
         gid = root\n\
         do_stat_report = 0\n\
         detailed_report = 0\n\
         db_max_size = 100\n\
         subj_cache_size = 1549\n\
         obj_cache_size = 8191\n\
         watch_fs = {BENCH_FS_TYPE}\n\
         trust = file\n\
         integrity = {integrity}\n\
         syslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust\n\
         rpm_sha256_only = 0\n\
         allow_filesystem_mark = 0\n"
    );
    std::fs::write("/etc/fapolicyd/fapolicyd.conf", text).context("fapolicyd.conf")
}

/// The rule files of fapolicyd's "known-libs" policy (its sample-rules README): the
/// shipped default for language files (70-trusted-lang: languages must be trusted).
const KNOWN_LIBS: &[&str] = &[
    "10-languages.rules",
    "20-dracut.rules",
    "21-updaters.rules",
    "30-patterns.rules",
    "40-bad-elf.rules",
    "41-shared-obj.rules",
    "42-trusted-elf.rules",
    "70-trusted-lang.rules",
    "72-shell.rules",
    "90-deny-execute.rules",
    "95-allow-open.rules",
];

/// Installs the known-libs rules as `compiled.rules` (what `fagenrules` would produce) and
/// trusts exactly `trusted` (fapolicyd-cli --file add), starting from an empty trust file.
pub(super) fn configure_fapolicyd(trusted: &[&Path]) -> Result<String> {
    let samples = Path::new("/usr/share/fapolicyd/sample-rules");
    let rules_d = Path::new("/etc/fapolicyd/rules.d");
    let _ = std::fs::remove_dir_all(rules_d);
    std::fs::create_dir_all(rules_d)?;
    let mut compiled = String::new();
    for name in KNOWN_LIBS {
        let text = std::fs::read_to_string(samples.join(name))
            .with_context(|| format!("fapolicyd sample rule {name}"))?;
        std::fs::write(rules_d.join(name), &text)?;
        compiled.push_str(&text);
        compiled.push('\n');
    }
    std::fs::write("/etc/fapolicyd/compiled.rules", &compiled)?;
    let _ = std::fs::remove_file("/etc/fapolicyd/fapolicyd.rules");
    std::fs::write(
        "/etc/fapolicyd/fapolicyd.trust",
        "# written by cargo xtask bench\n",
    )?;
    let _ = std::fs::remove_dir_all("/etc/fapolicyd/trust.d");
    std::fs::create_dir_all("/etc/fapolicyd/trust.d")?;
    // A stale database from the host must not add trust.
    let _ = std::fs::remove_dir_all("/var/lib/fapolicyd");
    std::fs::create_dir_all("/var/lib/fapolicyd")?;
    for path in trusted {
        super::util::must(
            Command::new("fapolicyd-cli")
                .args(["--file", "add"])
                .arg(path),
            Duration::from_secs(300),
        )?;
    }
    Ok(compiled
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n"))
}
