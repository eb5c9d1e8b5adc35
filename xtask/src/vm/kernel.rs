//! Debian cloud kernels, fetched with `apt-get download` through a private apt
//! configuration so the host's /etc/apt and package state are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use super::{cpio::Cpio, replace_dir, step, write_atomic};

/// Both suites are signed by keys in Debian's standard archive keyring.
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Package lists older than this are refreshed; new kernel builds appear
/// every few days, and a stale list only means an older kernel.
const LIST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Drivers the initramfs loads before it can mount the root disk: the cloud
/// kernels build ext4, virtio-pci and virtiofs in, but virtio-blk as a module.
const INITRAMFS_MODULES: &[&str] = &["virtio_blk"];

pub(super) struct Apt {
    dir: PathBuf,
}

impl Apt {
    pub(super) fn new(vm_dir: &Path) -> Result<Self> {
        let dir = vm_dir.join("apt");
        for d in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let sources = dir.join("etc/sources.list");
        if fs::read_to_string(&sources).ok().as_deref() != Some(SOURCES) {
            write_atomic(&sources, SOURCES.as_bytes())?;
            // New sources make the old lists meaningless.
            let _ = fs::remove_file(dir.join("state/updated"));
        }
        let status = dir.join("state/status");
        if !status.exists() {
            // An empty dpkg status: the host's installed packages must not
            // influence which candidates apt reports.
            write_atomic(&status, b"")?;
        }
        Ok(Self { dir })
    }

    fn cmd(&self, program: &str) -> Command {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut cmd = Command::new(program);
        for (k, v) in [
            ("Dir::Etc", d("etc")),
            ("Dir::Etc::SourceList", d("etc/sources.list")),
            ("Dir::Etc::SourceParts", d("etc/sources.list.d")),
            ("Dir::Etc::Parts", d("etc/apt.conf.d")),
            ("Dir::Etc::Preferences", d("etc/preferences")),
            ("Dir::Etc::PreferencesParts", d("etc/preferences.d")),
            ("Dir::Etc::TrustedParts", d("etc/trusted.gpg.d")),
            ("Dir::State", d("state")),
            ("Dir::State::status", d("state/status")),
            ("Dir::Cache", d("cache")),
            ("APT::Architecture", "amd64".into()),
            ("APT::Architectures", "amd64".into()),
            // Downloads land in our own directories, owned by root; the _apt
            // sandbox user could not write there.
            ("APT::Sandbox::User", "root".into()),
        ] {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        cmd
    }

    pub(super) fn update_if_stale(&self) -> Result<()> {
        let stamp = self.dir.join("state/updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LIST_MAX_AGE);
        if fresh {
            return Ok(());
        }
        step("refreshing the private apt package lists (bookworm-security, trixie-backports)");
        crate::run(self.cmd("apt-get").arg("-q").arg("update"))?;
        write_atomic(&stamp, b"")?;
        Ok(())
    }

    fn pkgnames(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .cmd("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("running apt-cache pkgnames")?;
        if !out.status.success() {
            bail!(
                "apt-cache pkgnames {prefix} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn download(&self, packages: &[String], into: &Path) -> Result<()> {
        fs::create_dir_all(into)?;
        crate::run(
            self.cmd("apt-get")
                .arg("-q")
                .arg("download")
                .args(packages)
                .current_dir(into),
        )
    }
}

/// One extracted kernel under target/vm/kernels/<release>.
#[derive(Clone, Debug)]
pub(super) struct Kernel {
    /// What `uname -r` prints in the guest, e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    pub dir: PathBuf,
}

impl Kernel {
    pub(super) fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub(super) fn modules(&self) -> PathBuf {
        self.dir.join("modules")
    }
    pub(super) fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.cpio")
    }
}

/// Where a kernel comes from: bookworm-security ships `linux-image-<rel>-unsigned`
/// with modules inside; trixie-backports splits image and modules.
fn packages_for(release: &str) -> Vec<String> {
    if release.contains("+deb12-") {
        vec![format!("linux-image-{release}-unsigned")]
    } else {
        vec![
            format!("linux-binary-unsigned-{release}"),
            format!("linux-modules-{release}"),
        ]
    }
}

fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

/// Resolves `6.12`, `newest` or an exact release to an exact release.
pub(super) fn resolve(apt: &Apt, spec: &str) -> Result<String> {
    let candidates: Vec<String> = match spec {
        "6.12" => apt
            .pkgnames("linux-image-6.12.")?
            .iter()
            .filter_map(|p| p.strip_prefix("linux-image-")?.strip_suffix("-unsigned"))
            .filter(|r| r.ends_with("+deb12-cloud-amd64"))
            .map(str::to_owned)
            .collect(),
        "newest" => apt
            .pkgnames("linux-binary-unsigned-")?
            .iter()
            .filter_map(|p| p.strip_prefix("linux-binary-unsigned-"))
            .filter(|r| r.ends_with("-cloud-amd64"))
            .map(str::to_owned)
            .collect(),
        exact => return Ok(exact.to_owned()),
    };
    candidates
        .into_iter()
        .max_by_key(|r| version_key(r))
        .with_context(|| format!("no cloud kernel package found for --kernel {spec}"))
}

pub(super) fn ensure(vm_dir: &Path, apt: &Apt, release: &str) -> Result<Kernel> {
    let kernel = Kernel {
        release: release.to_owned(),
        dir: vm_dir.join("kernels").join(release),
    };
    if !kernel.vmlinuz().exists() {
        fetch(apt, &kernel)?;
    }
    // Cheap enough to redo every time, and it picks up edits of the init script.
    build_initrd(&kernel)?;
    Ok(kernel)
}

fn fetch(apt: &Apt, kernel: &Kernel) -> Result<()> {
    let release = &kernel.release;
    let started = std::time::Instant::now();
    let tmp = kernel.dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let debs = tmp.join("debs");
    let tree = tmp.join("tree");
    let packages = packages_for(release);
    step(&format!(
        "downloading kernel {release}: {}",
        packages.join(" ")
    ));
    apt.download(&packages, &debs)?;
    for deb in fs::read_dir(&debs)? {
        let deb = deb?.path();
        step(&format!(
            "extracting {}",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ));
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    }
    let vmlinuz = [
        format!("boot/vmlinuz-{release}"),
        format!("usr/lib/modules/{release}/vmlinuz.unsigned"),
        format!("usr/lib/modules/{release}/vmlinuz"),
    ]
    .iter()
    .map(|p| tree.join(p))
    .find(|p| p.exists())
    .with_context(|| format!("no vmlinuz for {release} in {}", packages.join(" ")))?;
    fs::rename(&vmlinuz, tmp.join("vmlinuz"))?;
    let modules = [
        format!("lib/modules/{release}"),
        format!("usr/lib/modules/{release}"),
    ]
    .iter()
    .map(|p| tree.join(p))
    .find(|p| p.join("kernel").exists())
    .with_context(|| format!("no modules for {release} in {}", packages.join(" ")))?;
    fs::rename(&modules, tmp.join("modules"))?;
    if let Ok(config) = fs::read(tree.join(format!("boot/config-{release}"))) {
        fs::write(tmp.join("config"), config)?;
    }
    fs::remove_dir_all(&tree)?;
    fs::remove_dir_all(&debs)?;
    replace_dir(&tmp, &kernel.dir)?;
    step(&format!(
        "kernel {release} ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Finds `name.ko*` below the modules tree; module names treat `-` and `_` alike.
fn find_module(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name)? {
                return Ok(Some(found));
            }
        } else if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
            let stem = file.split(".ko").next().unwrap_or(file).replace('-', "_");
            if file.contains(".ko") && stem == name.replace('-', "_") {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} (install it with apt-get)"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's .modinfo section.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &ko[at + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Adds `name` after its dependencies, so insmod in list order works.
fn collect_module(modules: &Path, name: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    if out.iter().any(|(n, _)| n == name) {
        return Ok(());
    }
    let Some(path) = find_module(modules, name)? else {
        // Built in: nothing to load.
        return Ok(());
    };
    let ko = decompress(&path)?;
    for dep in module_depends(&ko) {
        collect_module(modules, &dep, out)?;
    }
    out.push((name.to_owned(), ko));
    Ok(())
}

fn static_busybox() -> Result<Vec<u8>> {
    let path = Path::new("/bin/busybox");
    let bin = fs::read(path)
        .context("reading /bin/busybox (install it with `apt-get install busybox-static`)")?;
    if is_dynamic_elf(&bin) {
        bail!(
            "/bin/busybox is dynamically linked; the initramfs needs `apt-get install busybox-static`"
        );
    }
    Ok(bin)
}

/// True when a 64-bit ELF has a PT_INTERP program header.
fn is_dynamic_elf(bin: &[u8]) -> bool {
    let rd16 = |o: usize| {
        bin.get(o..o + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]])) as usize
    };
    let rd32 = |o: usize| {
        bin.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let rd64 = |o: usize| {
        bin.get(o..o + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
            .try_into()
            .unwrap_or(usize::MAX)
    };
    let (phoff, phentsize, phnum) = (rd64(0x20), rd16(0x36), rd16(0x38));
    (0..phnum).any(|i| rd32(phoff + i * phentsize) == 3)
}

fn build_initrd(kernel: &Kernel) -> Result<()> {
    let mut modules = Vec::new();
    for name in INITRAMFS_MODULES {
        collect_module(&kernel.modules(), name, &mut modules)?;
    }
    let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    step(&format!(
        "initramfs modules for {}: {}",
        kernel.release,
        if names.is_empty() {
            "none".into()
        } else {
            names.join(" ")
        }
    ));
    let mut cpio = Cpio::new(Vec::new());
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        cpio.dir(d)?;
    }
    cpio.char_dev("dev/console", 5, 1)?;
    cpio.file("bin/busybox", 0o755, &static_busybox()?)?;
    cpio.file("init", 0o755, include_bytes!("../../vm/initramfs-init.sh"))?;
    let mut order = String::new();
    for (name, ko) in &modules {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, ko)?;
        order.push_str(&format!("{name}.ko\n"));
    }
    cpio.file("modules.order", 0o644, order.as_bytes())?;
    write_atomic(&kernel.initrd(), &cpio.finish()?)
}
