//! The test VM behind `cargo xtask run` and `cargo xtask vm-test`: a Debian
//! cloud kernel and a debootstrap userland booted in QEMU (TCG, since KVM does
//! not work on the development hosts), everything cached under target/vm.
//!
//! Boot: kernel + a tiny busybox initramfs (loads virtio_blk, the one driver
//! the cloud kernels build as a module) -> root image on /dev/vda (opened with
//! snapshot=on, so guest writes never reach the cache) -> a per-run disk on
//! /dev/vdb mounted at /mnt/vm with init.sh (PID 1), guard, the command and
//! the tests. The guest prints the command's status behind a per-run marker
//! on the serial console; a boot that never prints it (panic, hang, lost
//! agent) fails. The agent is started in exactly one place: `start_agent` in
//! xtask/vm/init.sh.
//!
//! VM tests are tests/vm/*.sh, run by bash as root with GUARD_BIN, GUARD_KEY,
//! GUARD_CERT (PEM) and GUARD_CERT_DER set; exit 0 passes. Selecting a
//! tests/vm/*packages*.sh also puts /mnt/vm/packages in the guest: guard.deb and
//! a signed apt repository (see `Packages`). A tests/vm/*systemd*.sh boots on its own, with
//! systemd as PID 1 instead of init.sh (see `Init`): it shows the package as systemd runs it,
//! and may reboot the VM (its writes survive a guest reboot, not the end of qemu).

mod apt_repo;
mod cpio;
mod kernel;
mod rootfs;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options shared by `run` and `vm-test`.
#[derive(Args, Clone, Debug)]
pub(crate) struct VmOpts {
    /// Overall limit in seconds; the VM is killed and the run fails after it.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Host directory to make visible in the guest at the same path (virtiofs).
    #[arg(long = "share", value_name = "DIR")]
    shares: Vec<PathBuf>,
    /// Number of guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Debian suite of the guest userland.
    #[arg(long, default_value = "bookworm")]
    suite: String,
    /// Show kernel boot messages.
    #[arg(long)]
    verbose: bool,
    /// Do not build guard; boot without it.
    #[arg(long)]
    no_guard: bool,
    /// Put the debug build of guard in the VM: quicker to build, slower to run (what
    /// `cargo xtask test` uses, having built it already).
    #[arg(long)]
    debug_build: bool,
    /// Put guard in the VM but do not start its agent (always so for vm-test:
    /// tests start it themselves).
    #[arg(long)]
    no_agent: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// `newest` (trixie-backports), `6.12` (bookworm-security) or an exact release.
    #[arg(long, default_value = "newest")]
    kernel: String,
    #[command(flatten)]
    opts: VmOpts,
    /// Command to run as root in the guest; without one, a demo runs.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct VmTestArgs {
    /// Kernels to boot, each as for `run --kernel`.
    #[arg(long = "kernel", default_values = ["6.12", "newest"])]
    kernels: Vec<String>,
    #[command(flatten)]
    opts: VmOpts,
    /// Only run tests/vm/*.sh whose file name contains one of these.
    filters: Vec<String>,
    /// The suite's split (`cargo xtask test`, for its time): a test marked `ONE_KERNEL`
    /// runs on the first kernel only. `cargo xtask vm-test` runs every test on every kernel.
    #[arg(skip)]
    split: bool,
}

fn vm_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("vm")
}

pub(crate) fn step(msg: &str) {
    eprintln!("xtask vm: {msg}");
}

/// Writes through a temporary name so an interrupted run never leaves a
/// truncated file that a later run would take for finished.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

pub(crate) fn replace_dir(tmp: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        fs::remove_dir_all(dst).with_context(|| format!("removing {}", dst.display()))?;
    }
    fs::rename(tmp, dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))
}

fn check_host_tools() -> Result<()> {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.ext4", "e2fsprogs"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("openssl", "openssl"),
        ("xz", "xz-utils"),
        // Signs the test apt repository (vm/apt_repo.rs).
        ("gpg", "gnupg"),
    ] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!("{tool} is missing on the host: apt-get install {package}");
        }
    }
    Ok(())
}

/// Everything a boot needs that is shared between boots.
struct Prepared {
    kernels: Vec<kernel::Kernel>,
    image: PathBuf,
    /// The debootstrap tree the image was built from.
    tree: PathBuf,
    guard: Option<PathBuf>,
}

fn prepare(specs: &[String], opts: &VmOpts) -> Result<Prepared> {
    check_host_tools()?;
    let started = Instant::now();
    let dir = vm_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let apt = kernel::Apt::new(&dir)?;
    apt.update_if_stale()?;
    // The image carries the modules of both default kernels, so switching
    // between them never rebuilds it.
    let mut releases = Vec::new();
    for spec in ["6.12", "newest"]
        .iter()
        .map(|s| s.to_string())
        .chain(specs.iter().cloned())
    {
        let r = kernel::resolve(&apt, &spec)?;
        if !releases.contains(&r) {
            releases.push(r);
        }
    }
    let all: Vec<kernel::Kernel> = releases
        .iter()
        .map(|r| kernel::ensure(&dir, &apt, r))
        .collect::<Result<_>>()?;
    let guard = if opts.no_guard {
        None
    } else {
        let (args, profile): (&[&str], &str) = if opts.debug_build {
            (&["build", "--package", "guard"], "debug")
        } else {
            (&["build", "--release", "--package", "guard"], "release")
        };
        step(&format!("building guard ({profile})"));
        crate::run(crate::cargo().args(args))?;
        let bin = dir
            .parent()
            .expect("target/vm has a parent")
            .join(profile)
            .join("guard");
        Some(bin)
    };
    let keys = rootfs::ensure_keys(&dir)?;
    let tree = rootfs::ensure_tree(&dir, &opts.suite)?;
    let image = rootfs::ensure_image(&dir, &tree, &opts.suite, &keys, &all, guard.as_deref())?;
    let mut kernels = Vec::new();
    for spec in specs {
        let r = kernel::resolve(&apt, spec)?;
        let k = all
            .iter()
            .find(|k| k.release == r)
            .expect("resolved above")
            .clone();
        step(&format!("kernel {spec} is {}", k.release));
        kernels.push(k);
    }
    step(&format!(
        "setup done ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(Prepared {
        kernels,
        image,
        tree,
        guard,
    })
}

pub(crate) fn run(args: RunArgs) -> Result<()> {
    let prepared = prepare(std::slice::from_ref(&args.kernel), &args.opts)?;
    let outcome = boot(
        &prepared,
        &prepared.kernels[0],
        &args.opts,
        &Payload::Cmd(args.cmd.clone()),
        true,
    )?;
    let code = outcome.status.unwrap_or(1);
    if outcome.status.is_none() {
        step("the guest ended without reporting an exit status (panic, crash or agent loss)");
    }
    std::process::exit(code);
}

/// The VM suite as `cargo xtask test` runs it: both kernels, the debug build it just tested.
pub(crate) fn vm_test_in_suite() -> Result<()> {
    // Measured on a clean clone with both kernels side by side (this machine, 2 cores): about
    // 35 min of tests on each kernel once the package upgrade (9-11 min) runs on the first
    // only and the attacks without guard (5 min) on the last; attacks.sh under guard takes
    // 10-12 min, self_protect.sh and lsm_native.sh 3-4 each on this emulated CPU. CI ran
    // the emulated CPU 1.4 times slower than that: the limit leaves room for it. The limit is
    // each boot's: systemd_unit.sh boots on its own after the rest (6 min on each kernel).
    vm_test(VmTestArgs {
        split: true,
        ..both_kernels(3900, true, Vec::new())
    })
}

/// Both kernels, as the suite and the bench boot them.
fn both_kernels(timeout: u64, debug_build: bool, filters: Vec<String>) -> VmTestArgs {
    VmTestArgs {
        kernels: vec!["6.12".into(), "newest".into()],
        opts: VmOpts {
            timeout,
            shares: Vec::new(),
            cpus: 2,
            memory: 2048,
            suite: "bookworm".into(),
            verbose: false,
            no_guard: false,
            debug_build,
            no_agent: true,
        },
        filters,
        split: false,
    }
}

/// Whether tests/vm/NAME runs: every test when no filter is given, else those a filter
/// names part of. bench_*.sh measure rather than test: only when named (`cargo xtask bench
/// --vm` names them).
fn selected(name: &str, filters: &[String]) -> bool {
    let named = filters.iter().any(|f| name.contains(f.as_str()));
    name.ends_with(".sh")
        && if name.starts_with("bench_") {
            named
        } else {
            filters.is_empty() || named
        }
}

/// The VM measurements (tests/vm/bench_*.sh: the workloads under BPF LSM + fanotify against
/// no guard, the BPF LSM layer's cost) on both kernels, with the release build: `cargo
/// xtask bench --vm`. Each kernel's release, the guest's lines and its failures.
pub(crate) fn vm_bench() -> Result<Vec<KernelRun>> {
    run_tests(both_kernels(3000, false, vec!["bench_".into()]))
}

/// What one kernel's boot of `vm-test` said.
pub(crate) struct KernelRun {
    pub release: String,
    pub lines: Vec<String>,
    /// Each failed or missing test, with its own words.
    pub failures: Vec<String>,
    pub passed: usize,
    /// Failed tests and tests that never reported.
    pub failed: usize,
}

pub(crate) fn vm_test(args: VmTestArgs) -> Result<()> {
    let runs = run_tests(args)?;
    let passed: usize = runs.iter().map(|r| r.passed).sum();
    let failures: Vec<&String> = runs.iter().flat_map(|r| &r.failures).collect();
    for f in &failures {
        println!("FAILED: {f}");
    }
    let failed: usize = runs.iter().map(|r| r.failed).sum();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn run_tests(mut args: VmTestArgs) -> Result<Vec<KernelRun>> {
    // Each test decides whether it needs a running agent (and with which
    // options), and tests that load their own BPF programs must not race one.
    args.opts.no_agent = true;
    let tests_dir = crate::workspace_root().join("tests/vm");
    let mut tests: Vec<PathBuf> = fs::read_dir(&tests_dir)
        .with_context(|| format!("reading {}", tests_dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    tests.retain(|p| {
        selected(
            &p.file_name().unwrap_or_default().to_string_lossy(),
            &args.filters,
        )
    });
    tests.sort();
    if tests.is_empty() {
        bail!("no tests in {}", tests_dir.display());
    }
    let prepared = prepare(&args.kernels, &args.opts)?;
    let marked = tests
        .iter()
        .map(|t| Ok((t.clone(), args.split && on_one_kernel(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let plan = assign(&marked, prepared.kernels.len());
    // Built once here, not in each kernel's thread: both boots copy the same files.
    let packages = if plan.iter().flatten().any(|t| needs_packages(t)) {
        Some(Packages::prepare(&prepared, &args.opts)?)
    } else {
        None
    };
    // The kernels boot side by side: each emulated VM runs on one host thread
    // (TCG, thread=single), so two take about the time of one on a machine with
    // two cores. Their lines are prefixed with the kernel's release.
    let last = prepared.kernels.len() - 1;
    let outcomes: Vec<Result<Outcome>> = std::thread::scope(|scope| {
        let runs: Vec<_> = prepared
            .kernels
            .iter()
            .zip(&plan)
            .enumerate()
            .map(|(i, (k, tests))| {
                step(&format!("vm-test on {}", k.release));
                let (prepared, opts, packages) = (&prepared, &args.opts, packages.as_ref());
                scope.spawn(move || boot_tests(prepared, k, opts, tests, packages, i == last))
            })
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the VM runner panicked")))
            })
            .collect()
    });
    let mut runs = Vec::new();
    for ((k, tests), outcome) in prepared.kernels.iter().zip(&plan).zip(outcomes) {
        let outcome = outcome?;
        let (mut passed, mut failed, mut failures) = (0, 0, Vec::new());
        let mut seen = 0;
        let mut since_last = Vec::new();
        for line in &outcome.lines {
            let Some(rest) = line.strip_prefix("GUARD-VM-TEST ") else {
                since_last.push(line.as_str());
                continue;
            };
            seen += 1;
            match rest.split_once(' ') {
                Some(("PASS", _)) => passed += 1,
                Some((_, name)) => {
                    failed += 1;
                    failures.push(format!(
                        "{} on {}{}",
                        name,
                        k.release,
                        why_it_failed(&since_last)
                    ));
                }
                None => {}
            }
            since_last.clear();
        }
        if seen < tests.len() {
            failed += tests.len() - seen;
            failures.push(format!(
                "{} test(s) never reported on {} (guest status {:?})",
                tests.len() - seen,
                k.release,
                outcome.status
            ));
        }
        runs.push(KernelRun {
            release: k.release.clone(),
            lines: outcome.lines,
            failures,
            passed,
            failed,
        });
    }
    Ok(runs)
}

/// One kernel's tests: those under init.sh in one boot, then each systemd test in a boot of
/// its own (it owns PID 1 and may reboot). Their lines follow one another; the status is the
/// first failing boot's.
fn boot_tests(
    prepared: &Prepared,
    kernel: &kernel::Kernel,
    opts: &VmOpts,
    tests: &[PathBuf],
    packages: Option<&Packages>,
    baseline: bool,
) -> Result<Outcome> {
    let (systemd, fast): (Vec<PathBuf>, Vec<PathBuf>) =
        tests.iter().cloned().partition(|t| under_systemd(t));
    let mut boots: Vec<(Vec<PathBuf>, Init)> = Vec::new();
    if !fast.is_empty() {
        boots.push((fast, Init::Fast));
    }
    boots.extend(systemd.into_iter().map(|t| (vec![t], Init::Systemd)));
    let mut all = Outcome {
        status: Some(0),
        lines: Vec::new(),
    };
    for (tests, init) in &boots {
        let payload = Payload::Tests {
            tests,
            packages: packages.filter(|_| tests.iter().any(|t| needs_packages(t))),
            init: *init,
        };
        let outcome = boot(prepared, kernel, opts, &payload, baseline)?;
        if all.status == Some(0) {
            all.status = outcome.status;
        }
        all.lines.extend(outcome.lines);
    }
    Ok(all)
}

/// A failed test's own words, for the summary (the last thing a CI log shows): its
/// `not ok` lines and the indented lines that follow each, at most 60 lines.
fn why_it_failed(lines: &[&str]) -> String {
    let mut out = Vec::new();
    let mut following = false;
    for line in lines {
        if line.contains("not ok") || line.contains("FAIL") {
            out.push(*line);
            following = true;
        } else if following && line.starts_with(' ') {
            out.push(*line);
        } else {
            following = false;
        }
    }
    out.truncate(60);
    out.iter().map(|l| format!("\n    {l}")).collect()
}

enum Payload<'a> {
    /// Empty: the demo.
    Cmd(Vec<String>),
    Tests {
        tests: &'a [PathBuf],
        /// For tests/vm/*packages*.sh and *systemd*.sh only.
        packages: Option<&'a Packages>,
        init: Init,
    },
}

/// PID 1 of a test boot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Init {
    /// xtask/vm/init.sh: seconds to a shell, for every test but those below.
    Fast,
    /// systemd, running xtask/vm/systemd-tests.sh from a unit (guard-vm-tests.service), for
    /// tests/vm/*systemd*.sh: one boot per test, which may reboot the VM.
    Systemd,
}

/// The line by which a test says it runs on one kernel of the suite (`cargo xtask test`):
/// what it shows does not depend on the kernel (a package upgrade is dpkg's and the agent's
/// work), and running it on each would cost the suite's time twice. `cargo xtask vm-test`
/// still runs it on every kernel.
const ONE_KERNEL: &str = "# guard-vm: one kernel";

fn on_one_kernel(test: &Path) -> Result<bool> {
    let text = fs::read_to_string(test).with_context(|| format!("reading {}", test.display()))?;
    Ok(text.lines().any(|l| l.trim_end() == ONE_KERNEL))
}

/// Each kernel's tests: all of them on every kernel, except those marked `ONE_KERNEL`, on the
/// first. The last kernel shows the attacks without guard (`boot`'s baseline), so the two
/// kernel-independent parts fall on different kernels when there are two.
fn assign(tests: &[(PathBuf, bool)], kernels: usize) -> Vec<Vec<PathBuf>> {
    (0..kernels)
        .map(|i| {
            tests
                .iter()
                .filter(|(_, once)| i == 0 || !once)
                .map(|(t, _)| t.clone())
                .collect()
        })
        .collect()
}

fn needs_packages(test: &Path) -> bool {
    test.file_name()
        .is_some_and(|n| n.to_string_lossy().contains("packages"))
        || under_systemd(test)
}

fn under_systemd(test: &Path) -> bool {
    test.file_name()
        .is_some_and(|n| n.to_string_lossy().contains("systemd"))
}

/// What tests/vm/*packages*.sh install through dpkg and apt, at /mnt/vm/packages: guard.deb
/// (the project's package, of the build the VM runs) and repo/ (vm/apt_repo.rs).
struct Packages {
    /// None with --no-guard.
    deb: Option<PathBuf>,
    repo: PathBuf,
}

impl Packages {
    fn prepare(prepared: &Prepared, opts: &VmOpts) -> Result<Packages> {
        let deb = if opts.no_guard {
            None
        } else {
            Some(crate::package::build(if opts.debug_build {
                crate::package::Profile::Dev
            } else {
                crate::package::Profile::Release
            })?)
        };
        let repo = apt_repo::ensure(&vm_dir(), &prepared.tree)?;
        Ok(Packages { deb, repo })
    }

    fn copy_into(&self, payload_dir: &Path) -> Result<()> {
        let dir = payload_dir.join("packages");
        let repo = dir.join("repo");
        fs::create_dir_all(&repo).with_context(|| format!("creating {}", repo.display()))?;
        // apt's file method and gpgv may read them as `_apt`, whatever the host's umask.
        for d in [payload_dir, &dir, &repo] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 755 {}", d.display()))?;
        }
        if let Some(deb) = &self.deb {
            let dst = dir.join("guard.deb");
            fs::copy(deb, &dst)
                .with_context(|| format!("copying {} to {}", deb.display(), dst.display()))?;
        }
        for e in
            fs::read_dir(&self.repo).with_context(|| format!("reading {}", self.repo.display()))?
        {
            let src = e?.path();
            let dst = repo.join(src.file_name().unwrap_or_default());
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
        Ok(())
    }
}

struct Outcome {
    /// None when the guest never printed its exit marker.
    status: Option<i32>,
    lines: Vec<String>,
}

/// Kills a child when dropped, so no error path leaves a VM or virtiofsd behind.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct RunDir(PathBuf);
impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn virtiofsd() -> Result<PathBuf> {
    // bookworm ships the C daemon with qemu, trixie the Rust one on its own.
    ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("--share needs virtiofsd (apt-get install qemu-system-common or virtiofsd)")
}

fn boot(
    prepared: &Prepared,
    kernel: &kernel::Kernel,
    opts: &VmOpts,
    payload: &Payload,
    // Whether tests also show, without guard, that each attack works: that does not
    // depend on the kernel, so one kernel of a suite does it (it is a third of the
    // attacks test's time), the last (`assign` gives the first the one-kernel tests).
    baseline: bool,
) -> Result<Outcome> {
    // Unique among the kernels booted side by side, too.
    let nonce = format!(
        "{:x}{:x}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos(),
        kernel
            .release
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    let run_dir = RunDir(vm_dir().join("runs").join(&nonce));
    let payload_dir = run_dir.0.join("payload");
    fs::create_dir_all(&payload_dir)?;

    // The guest init and helpers travel on a per-run disk, so editing them
    // never forces a root image rebuild.
    fs::write(payload_dir.join("init.sh"), include_str!("../vm/init.sh"))?;
    fs::write(payload_dir.join("demo.sh"), include_str!("../vm/demo.sh"))?;
    fs::write(
        payload_dir.join("run-tests.sh"),
        include_str!("../vm/run-tests.sh"),
    )?;
    let mut env = format!(
        "GUARD_VM_MARKER=GUARD-VM-EXIT-{nonce}\nGUARD_KEY={}\nGUARD_CERT={}\nGUARD_CERT_DER={}\n",
        rootfs::GUEST_KEY,
        rootfs::GUEST_CERT,
        rootfs::GUEST_CERT_DER
    );
    if opts.no_agent {
        env.push_str("GUARD_VM_AGENT=0\n");
    }
    env.push_str(&format!("GUARD_VM_BASELINE={}\n", u8::from(baseline)));
    if let Some(guard) = &prepared.guard {
        fs::copy(guard, payload_dir.join("guard"))
            .with_context(|| format!("copying {}", guard.display()))?;
    }
    match payload {
        Payload::Cmd(cmd) => {
            let mut argv = Vec::new();
            for a in cmd {
                argv.extend_from_slice(a.as_bytes());
                argv.push(0);
            }
            if !cmd.is_empty() {
                fs::write(payload_dir.join("cmd"), argv)?;
            }
        }
        Payload::Tests {
            tests,
            packages,
            init,
        } => {
            if let Some(packages) = packages {
                packages.copy_into(&payload_dir)?;
            }
            if *init == Init::Systemd {
                // Its presence is what makes the initramfs hand over to systemd.
                fs::write(
                    payload_dir.join("guard-vm-tests.service"),
                    include_str!("../vm/guard-vm-tests.service"),
                )?;
                fs::write(
                    payload_dir.join("systemd-tests.sh"),
                    include_str!("../vm/systemd-tests.sh"),
                )?;
            }
            let dir = payload_dir.join("tests");
            fs::create_dir_all(&dir)?;
            for t in tests.iter() {
                fs::copy(t, dir.join(t.file_name().expect("a file")))?;
            }
            // The helpers tests source or run (lib.bash, stalling_fuse.py): every file
            // there that is not a test.
            let helpers = crate::workspace_root().join("tests/vm");
            for e in
                fs::read_dir(&helpers).with_context(|| format!("reading {}", helpers.display()))?
            {
                let src = e?.path();
                if src.extension().is_some_and(|x| x == "sh") || !src.is_file() {
                    continue;
                }
                let dst = dir.join(src.file_name().unwrap_or_default());
                fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            }
            // The attack catalog the host's tests share (tests/attacks), beside the tests as
            // in the source tree: attacks.sh reads it from ../attacks.
            let shared = crate::workspace_root().join("tests/attacks");
            let attacks = payload_dir.join("attacks");
            fs::create_dir_all(&attacks)?;
            for e in
                fs::read_dir(&shared).with_context(|| format!("reading {}", shared.display()))?
            {
                let src = e?.path();
                let dst = attacks.join(src.file_name().unwrap_or_default());
                fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            }
            fs::write(
                payload_dir.join("cmd"),
                b"/bin/bash\0/mnt/vm/run-tests.sh\0",
            )?;
        }
    }

    let mut shares = String::new();
    let mut daemons = Vec::new();
    let mut qemu = Command::new("qemu-system-x86_64");
    for (i, dir) in opts.shares.iter().enumerate() {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--share {}", dir.display()))?;
        let sock = run_dir.0.join(format!("vfs{i}.sock"));
        let d = Command::new(virtiofsd()?)
            .arg(format!("--socket-path={}", sock.display()))
            .arg("-o")
            .arg(format!("source={}", dir.display()))
            // chroot sandbox: namespaces are not available in every container.
            .args(["-o", "cache=none", "-o", "xattr", "-o", "sandbox=chroot"])
            // Writing security.ima on the host needs CAP_SYS_ADMIN, which
            // virtiofsd drops by default.
            .args(["-o", "modcaps=+sys_admin"])
            .stdout(Stdio::null())
            .stderr(if opts.verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("starting virtiofsd")?;
        daemons.push(Reaper(d));
        let until = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > until {
                bail!("virtiofsd for {} did not create its socket", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        qemu.arg("-chardev")
            .arg(format!("socket,id=vfs{i},path={}", sock.display()))
            .arg("-device")
            .arg(format!("vhost-user-fs-pci,chardev=vfs{i},tag=share{i}"));
        shares.push_str(&format!("share{i} {}\n", dir.display()));
    }
    if !opts.shares.is_empty() {
        // vhost-user needs guest memory the daemon can map.
        qemu.arg("-object")
            .arg(format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                opts.memory
            ))
            .args(["-numa", "node,memdev=mem"]);
    }
    fs::write(payload_dir.join("shares"), shares)?;
    // Commands given relative paths under a share work as on the host.
    if let Ok(cwd) = std::env::current_dir()
        && opts
            .shares
            .iter()
            .filter_map(|s| s.canonicalize().ok())
            .any(|s| cwd.starts_with(s))
    {
        env.push_str(&format!("GUARD_VM_CWD={}\n", cwd.display()));
    }
    fs::write(payload_dir.join("env"), env)?;

    let run_img = run_dir.0.join("run.img");
    let size_kib = (payload_size(&payload_dir)? >> 10) * 5 / 4 + 32 * 1024;
    crate::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "guard-run", "-d"])
            .arg(&payload_dir)
            .arg(&run_img)
            .arg(format!("{size_kib}k"))
            .stdout(Stdio::null()),
    )?;

    let mut cmdline = String::from("console=ttyS0 panic=1 oops=panic rdinit=/init");
    if !opts.verbose {
        cmdline.push_str(" quiet");
    }
    let systemd = matches!(
        payload,
        Payload::Tests {
            init: Init::Systemd,
            ..
        }
    );
    if systemd {
        // Only units that fail are shown; the tests' own lines are what xtask reads.
        cmdline.push_str(" systemd.show_status=error");
    }
    // thread=single: with one host thread per vCPU, TCG sometimes runs stale
    // code after the kernel live-patches itself (text_poke), and the 6.12
    // kernel oopses on a leftover int3 during boot. Round-robin vCPUs avoid it.
    qemu.args(["-accel", "tcg,thread=single", "-cpu", "max", "-nodefaults"])
        // A systemd test reboots the guest on purpose: qemu resets it and keeps the snapshot's
        // writes (and systemd-tests.sh counts the boots, so a panic's reboot loop ends too).
        .args(if systemd {
            &[][..]
        } else {
            &["-no-reboot"][..]
        })
        .arg("-smp")
        .arg(opts.cpus.to_string())
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-m")
        .arg(opts.memory.to_string())
        .arg("-kernel")
        .arg(kernel.vmlinuz())
        .arg("-initrd")
        .arg(kernel.initrd())
        .arg("-append")
        .arg(&cmdline)
        // snapshot=on: guest writes go to a throwaway overlay, so every boot
        // starts from the same cached image.
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            prepared.image.display()
        ))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", run_img.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    step(&format!(
        "booting {} (timeout {} s)",
        kernel.release, opts.timeout
    ));
    let started = Instant::now();
    let mut child = Reaper(qemu.spawn().context("starting qemu-system-x86_64")?);
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let marker = format!("GUARD-VM-EXIT-{nonce}=");
    let deadline = started + Duration::from_secs(opts.timeout);
    let mut lines = Vec::new();
    let mut status = None;
    let out = std::io::stdout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("GUARD-VM-INIT-STARTED") {
                    step(&format!(
                        "guest init running after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ));
                    continue;
                }
                let (text, code) = match line.find(&marker) {
                    Some(at) => (
                        &line[..at],
                        line[at + marker.len()..].trim().parse::<i32>().ok(),
                    ),
                    None => (line.as_str(), None),
                };
                // After the marker only the power-off messages follow.
                let quiet = status.is_some() && !opts.verbose;
                if code.is_some() {
                    status = code;
                }
                if !(quiet || code.is_some() && text.is_empty()) {
                    let mut o = out.lock();
                    match payload {
                        Payload::Tests { .. } => {
                            let _ = writeln!(o, "[{}] {text}", kernel.release);
                        }
                        Payload::Cmd(_) => {
                            let _ = writeln!(o, "{text}");
                        }
                    }
                    let _ = o.flush();
                }
                lines.push(text.to_owned());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                step(&format!("timeout after {} s: killing the VM", opts.timeout));
                return Ok(Outcome {
                    status: None,
                    lines,
                });
            }
        }
    }
    let qemu_status = child.0.wait()?;
    step(&format!(
        "VM ran {:.1} s, qemu {qemu_status}",
        started.elapsed().as_secs_f64()
    ));
    drop(daemons);
    Ok(Outcome { status, lines })
}

fn payload_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        // Subdirectories count whole: packages/ holds guard.deb and a repository.
        n += if m.is_dir() {
            (1 << 20) + payload_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n.max(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::{assign, selected, why_it_failed};
    use std::path::PathBuf;

    #[test]
    fn a_failure_is_told_with_its_own_lines() {
        let lines = [
            "ok: one",
            "not ok: 16c writer: PAYLOAD RAN (rc=0)",
            "    big",
            "    more",
            "ok: two",
            "  not indented after an ok",
        ];
        assert_eq!(
            why_it_failed(&lines),
            "\n    not ok: 16c writer: PAYLOAD RAN (rc=0)\n        big\n        more"
        );
        assert_eq!(why_it_failed(&["ok: fine"]), "");
    }

    #[test]
    fn the_suite_runs_tests_and_bench_runs_measurements() {
        let none: Vec<String> = Vec::new();
        assert!(selected("attacks.sh", &none));
        assert!(!selected("bench_lsm_overhead.sh", &none));
        assert!(!selected("lib.bash", &none));
        assert!(selected("bench_lsm_overhead.sh", &["bench_".into()]));
        assert!(!selected("attacks.sh", &["bench_".into()]));
        assert!(selected("upgrade_packages.sh", &["packages".into()]));
    }

    #[test]
    fn one_kernel_tests_run_on_the_first_kernel_only() {
        let tests = vec![
            (PathBuf::from("attacks.sh"), false),
            (PathBuf::from("upgrade_packages.sh"), true),
        ];
        let plan = assign(&tests, 2);
        assert_eq!(
            plan[0],
            [PathBuf::from("attacks.sh"), "upgrade_packages.sh".into()]
        );
        assert_eq!(plan[1], [PathBuf::from("attacks.sh")]);
        assert_eq!(assign(&tests, 1)[0].len(), 2);
    }
}
