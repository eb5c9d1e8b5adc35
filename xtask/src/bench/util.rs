//! Process, timing and statistics helpers for the benchmark.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Set by SIGINT/SIGTERM: the harness stops at the next step and its guards restore the host.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C must not kill the harness outright: the Drop guards (fapolicyd config, mounts,
/// daemons) only run if we return normally.
// The one handler the harness installs: libc's signal(2) has no safe wrapper.
#[allow(unsafe_code)]
pub(super) fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

/// What a bounded run produced.
pub(super) struct Ran {
    pub elapsed: Duration,
    /// User and system time of the children reaped during the run: the workload's own, as
    /// nothing else is reaped meanwhile (the bench runs one workload at a time).
    pub cpu: Duration,
    pub output: Output,
}

/// User and system time of every child reaped so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |usage| {
        let time = |t: nix::sys::time::TimeVal| {
            Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_usec()).unwrap_or(0) * 1000,
            )
        };
        time(usage.user_time()) + time(usage.system_time())
    })
}

impl Ran {
    pub(super) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub(super) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// Runs a command with a deadline and measures its wall-clock time from spawn to reap.
/// With `discard_stdout` the output is read and thrown away (tar writes its archive there:
/// it must really be produced, GNU tar skips reading file data when writing to /dev/null).
pub(super) fn run_timed(cmd: &mut Command, limit: Duration, discard_stdout: bool) -> Result<Ran> {
    check_interrupted()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu_before = children_cpu();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = out_pipe.as_mut() {
            if discard_stdout {
                let _ = std::io::copy(pipe, &mut std::io::sink());
            } else {
                let _ = pipe.read_to_end(&mut buf);
            }
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = err_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });
    let status = wait_deadline(&mut child, limit)
        .with_context(|| format!("{cmd:?} did not finish within {limit:?}"))?;
    let elapsed = start.elapsed();
    Ok(Ran {
        elapsed,
        cpu: children_cpu().saturating_sub(cpu_before),
        output: Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        },
    })
}

/// Waits for a child; kills it on timeout.
pub(super) fn wait_deadline(
    child: &mut Child,
    limit: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {limit:?}");
        }
        // Short sleeps: the timed workloads last tens of milliseconds.
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Runs a setup command that must succeed (bounded).
pub(super) fn must(cmd: &mut Command, limit: Duration) -> Result<Ran> {
    let ran = run_timed(cmd, limit, false)?;
    if !ran.output.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            ran.output.status,
            ran.stdout(),
            ran.stderr()
        );
    }
    Ok(ran)
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes.
pub(super) fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the page cache")
}

/// Sends a signal to a process we started.
pub(super) fn signal(pid: u32, signal: libc::c_int) {
    if let (Ok(pid), Ok(signal)) = (
        i32::try_from(pid),
        nix::sys::signal::Signal::try_from(signal),
    ) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

pub(super) fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub(super) fn min_max(samples: &[f64]) -> (f64, f64) {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub(super) fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// Counts regular files under a directory (without following links).
pub(super) fn count_files(dir: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                walk(&entry.path(), n);
            } else if kind.is_file() {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}
