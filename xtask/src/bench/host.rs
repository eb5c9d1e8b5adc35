//! Host state the benchmark changes, each behind a guard that restores it on drop (also on
//! error and Ctrl-C): the bench filesystem it mounts, fapolicyd's configuration and
//! database, a package it installs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::util::must;

/// The filesystem type of the bench filesystem. fapolicyd marks every mount whose type is
/// in `watch_fs`: with a type nothing else on the host uses, it marks only our mount and
/// leaves the rest of the host (and other users of it) alone, as `guard --watch` does.
/// guard trusts it as "ext4" (the same superblock magic).
pub(super) const BENCH_FS_TYPE: &str = "ext2";

/// A loop-mounted ext2 image under target/bench, unmounted and deleted on drop.
pub(super) struct BenchFs {
    pub root: PathBuf,
    image: PathBuf,
}

impl BenchFs {
    pub(super) fn mount(work: &Path) -> Result<BenchFs> {
        let root = work.join("fs");
        let image = work.join("fs.img");
        // A leftover from an interrupted run.
        let _ = Command::new("umount")
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .status();
        std::fs::create_dir_all(&root)?;
        if mounts_of_type(BENCH_FS_TYPE)?
            .iter()
            .any(|m| m != &root.display().to_string())
        {
            bail!(
                "an {BENCH_FS_TYPE} filesystem is already mounted on this host: fapolicyd would \
                 mark it too; the bench needs {BENCH_FS_TYPE} to be its own"
            );
        }
        let _ = std::fs::remove_file(&image);
        let file = std::fs::File::create(&image).context("bench image")?;
        // Sparse: room for two stdlib copies and 100 k tiny files, 1 KiB blocks.
        file.set_len(3 << 30)?;
        drop(file);
        must(
            Command::new("mkfs.ext2")
                .args(["-F", "-q", "-b", "1024", "-N", "300000"])
                .arg(&image),
            Duration::from_secs(120),
        )?;
        must(
            Command::new("mount")
                .args(["-t", BENCH_FS_TYPE, "-o", "loop"])
                .arg(&image)
                .arg(&root),
            Duration::from_secs(60),
        )?;
        let fs = BenchFs { root, image };
        std::fs::set_permissions(
            &fs.root,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(fs)
    }
}

impl Drop for BenchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn mounts_of_type(fs_type: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/mounts")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 2 && fields[2] == fs_type).then(|| fields[1].to_string())
        })
        .collect())
}

/// Paths fapolicyd reads or writes; each is saved and put back exactly.
const FAPOLICYD_STATE: &[&str] = &["/etc/fapolicyd", "/var/lib/fapolicyd", "/run/fapolicyd"];

/// Saves fapolicyd's configuration, database and runtime directory; restores them on drop.
pub(super) struct FapolicydHost {
    backup: PathBuf,
    saved: Vec<(PathBuf, bool)>,
    /// A policy-rc.d we created to keep apt from starting the daemon.
    policy_rc: Option<PathBuf>,
}

impl FapolicydHost {
    pub(super) fn prepare(work: &Path) -> Result<FapolicydHost> {
        if Command::new("pgrep")
            .args(["-x", "fapolicyd"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            bail!("fapolicyd is already running on this host: stop it before benchmarking");
        }
        let mut host = FapolicydHost {
            backup: work.join("fapolicyd-backup"),
            saved: Vec::new(),
            policy_rc: None,
        };
        if which("fapolicyd").is_none() {
            host.install()?;
        }
        let _ = std::fs::remove_dir_all(&host.backup);
        std::fs::create_dir_all(&host.backup)?;
        for path in FAPOLICYD_STATE {
            let path = PathBuf::from(path);
            let existed = path.exists();
            if existed {
                must(
                    Command::new("cp")
                        .arg("-a")
                        .arg(&path)
                        .arg(host.backup.join(flat(&path))),
                    Duration::from_secs(60),
                )?;
            }
            host.saved.push((path, existed));
        }
        Ok(host)
    }

    /// `apt-get install fapolicyd`, with a policy-rc.d that stops the package from starting
    /// the daemon: Debian's shipped rules deny every execution on every watched mount.
    fn install(&mut self) -> Result<()> {
        eprintln!("bench: fapolicyd missing: installing it with apt-get");
        let policy_rc = PathBuf::from("/usr/sbin/policy-rc.d");
        if !policy_rc.exists() {
            std::fs::write(&policy_rc, "#!/bin/sh\nexit 101\n")?;
            std::fs::set_permissions(
                &policy_rc,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            self.policy_rc = Some(policy_rc);
        }
        must(
            Command::new("apt-get").arg("update"),
            Duration::from_secs(300),
        )?;
        must(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "fapolicyd"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(600),
        )?;
        Ok(())
    }
}

impl Drop for FapolicydHost {
    fn drop(&mut self) {
        for (path, existed) in &self.saved {
            let _ = std::fs::remove_dir_all(path);
            if *existed {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(self.backup.join(flat(path)))
                    .arg(path)
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!(
                        "bench: WARNING: could not restore {} from {}",
                        path.display(),
                        self.backup.display()
                    );
                    continue;
                }
            }
        }
        if let Some(policy_rc) = &self.policy_rc {
            let _ = std::fs::remove_file(policy_rc);
        }
        let _ = std::fs::remove_dir_all(&self.backup);
    }
}

fn flat(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_matches('/')
        .replace('/', "_")
}

pub(super) fn which(program: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return Some(path);
        }
    }
    None
}

/// The machine, for the methodology section.
#[derive(serde::Serialize, Clone)]
pub(super) struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub memory_mib: u64,
    pub python: String,
    pub fapolicyd: String,
    /// /proc/loadavg when the bench started: other work on the host is noise.
    pub load_before: String,
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub(super) fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    let out = |cmd: &mut Command| {
        cmd.output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.trim().to_string()
            })
            .unwrap_or_default()
    };
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpu,
        memory_mib,
        python: out(Command::new("/usr/bin/python3").arg("--version")),
        load_before: loadavg(),
        fapolicyd: out(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "fapolicyd"])),
    }
}
