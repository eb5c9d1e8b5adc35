//! Results: statistics, the Markdown report, the JSON file and the SVG chart of ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::contender::Kind;
use super::host::Machine;
use super::util::{median, min_max};

/// guard's decision latency from its own counters, one value per guard round (each round
/// a fresh agent: one cold storm, warm storms, tar).
#[derive(Serialize, Clone, Default)]
pub(super) struct Latency {
    pub decisions: f64,
    pub events: f64,
    pub cache_hits: f64,
    pub cache_misses: f64,
    pub hit_p50_us: f64,
    pub hit_p99_us: f64,
    pub miss_p50_us: f64,
    pub miss_p99_us: f64,
    pub miss_max_us: f64,
    pub all_p50_us: f64,
    pub all_p99_us: f64,
    pub all_max_us: f64,
}

#[derive(Serialize)]
pub(super) struct Signing {
    pub files: usize,
    pub bytes: u64,
    /// Tool name and wall-clock samples in ms.
    pub tools: Vec<(String, Vec<f64>)>,
}

#[derive(Serialize)]
pub(super) struct Memory {
    pub files: usize,
    pub sign_s: f64,
    pub open_all_s: f64,
    pub cache_entries: f64,
    pub cache_misses: f64,
    pub idle_hwm_kib: u64,
    pub peak_hwm_kib: u64,
    pub miss_p50_us: f64,
    pub miss_p99_us: f64,
}

/// The BPF part (`--vm`): the same workloads in the VM on each kernel, guard (`guard run
/// --backend auto`, which there is the BPF LSM layer and fanotify) against no guard.
#[derive(Serialize)]
pub(super) enum Bpf {
    /// Why not.
    NotRun(String),
    Ran(Vec<VmKernel>),
}

#[derive(Serialize, Default)]
pub(super) struct VmKernel {
    pub release: String,
    /// Workload id (P1, P2, P4, P4u) -> contender key (none, guard) -> samples in ms.
    pub samples: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// What the guest said about the run: backend, modules, checks, the LSM hook costs.
    pub notes: Vec<String>,
    /// Why this kernel's run did not complete, when it did not.
    pub failure: Option<String>,
}

impl VmKernel {
    /// The no-guard and guard rows of a workload, when both were measured.
    fn rows(&self, id: &str) -> Option<(Contender, Contender)> {
        let w = self.samples.get(id)?;
        let (none, guard) = (w.get("none")?, w.get("guard")?);
        if none.is_empty() || guard.is_empty() {
            return None;
        }
        let (base, base_min) = (median(none), min_max(none).0);
        Some((
            row("no guard", "none", none, base, base_min),
            row("guard (bpf-lsm+fanotify)", "guard", guard, base, base_min),
        ))
    }
}

#[derive(Serialize)]
pub(super) struct Contender {
    pub contender: String,
    pub key: String,
    pub measured: bool,
    pub not_measured_reason: Option<String>,
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub ratio_to_no_guard: f64,
    /// min / min of no guard: less sensitive to other load on a shared host.
    pub ratio_of_minima: f64,
}

#[derive(Serialize)]
pub(super) struct Workload {
    pub id: String,
    pub name: String,
    pub contenders: Vec<Contender>,
}

#[derive(Serialize)]
pub(super) struct Target {
    pub what: String,
    pub target: String,
    pub value: String,
    /// "yes", "**no**", "inconclusive (…)" or "not measured".
    pub met: String,
}

#[derive(Serialize)]
pub(super) struct Results {
    pub machine: Machine,
    pub methodology: Vec<String>,
    pub workloads: Vec<Workload>,
    pub latency_rounds: Vec<Latency>,
    pub latency_median: Latency,
    pub signing: Signing,
    pub signing_rows: Vec<Contender>,
    pub memory: Memory,
    pub enforcement_checks: Vec<String>,
    pub targets: Vec<Target>,
    pub bpf: Bpf,
    pub fapolicyd_rules: String,
    pub elapsed_s: f64,
}

pub(super) struct Inputs<'a> {
    pub machine: Machine,
    pub options: String,
    pub samples: &'a BTreeMap<(&'a str, Kind), Vec<f64>>,
    pub fapolicyd_unavailable: Option<&'a str>,
    /// P1, P1h and P1e in instructions executed, or why they were not counted.
    pub instructions: Result<super::instructions::Counts, String>,
    pub latency_rounds: &'a [Latency],
    pub signing: Signing,
    pub memory: Memory,
    pub bpf: Bpf,
    pub checks: Vec<String>,
    pub fapolicyd_rules: String,
    pub stdlib_files: usize,
    pub load_after: String,
    pub elapsed_s: f64,
}

const WORKLOADS: &[(&str, &str)] = &[
    ("P1", "import storm, warm"),
    (
        "P1h",
        "import storm, warm, guard's audit hook loaded first (#20)",
    ),
    (
        "P1e",
        "import storm, warm, under an audit hook that does nothing (the interpreter's own cost of any hook)",
    ),
    ("P2", "import storm, cold"),
    ("P4", "tar of the signed stdlib tree (non-Python)"),
    ("P4u", "tar of an unsigned copy of the tree (non-Python)"),
];

fn row(name: &str, key: &str, samples: &[f64], baseline: f64, baseline_min: f64) -> Contender {
    let (min, max) = min_max(samples);
    let med = median(samples);
    Contender {
        contender: name.to_string(),
        key: key.to_string(),
        measured: true,
        not_measured_reason: None,
        samples_ms: samples.to_vec(),
        median_ms: med,
        min_ms: min,
        max_ms: max,
        ratio_to_no_guard: med / baseline,
        ratio_of_minima: min / baseline_min,
    }
}

pub(super) fn build(inputs: Inputs<'_>) -> Results {
    let mut workloads = Vec::new();
    for (id, name) in WORKLOADS {
        let baseline = inputs
            .samples
            .get(&(id, Kind::None))
            .map(|s| median(s))
            .unwrap_or(f64::NAN);
        let baseline_min = inputs
            .samples
            .get(&(id, Kind::None))
            .map(|s| min_max(s).0)
            .unwrap_or(f64::NAN);
        let mut contenders = Vec::new();
        for kind in Kind::ALL {
            match inputs.samples.get(&(id, kind)) {
                Some(samples) => contenders.push(row(
                    kind.label(),
                    kind.key(),
                    samples,
                    baseline,
                    baseline_min,
                )),
                None => contenders.push(Contender {
                    contender: kind.label().to_string(),
                    key: kind.key().to_string(),
                    measured: false,
                    not_measured_reason: Some(
                        inputs
                            .fapolicyd_unavailable
                            .unwrap_or("no samples")
                            .to_string(),
                    ),
                    samples_ms: Vec::new(),
                    median_ms: f64::NAN,
                    min_ms: f64::NAN,
                    max_ms: f64::NAN,
                    ratio_to_no_guard: f64::NAN,
                    ratio_of_minima: f64::NAN,
                }),
            }
        }
        workloads.push(Workload {
            id: id.to_string(),
            name: name.to_string(),
            contenders,
        });
    }

    let lat = inputs.latency_rounds;
    let med = |f: fn(&Latency) -> f64| median(&lat.iter().map(f).collect::<Vec<_>>());
    let latency_median = Latency {
        decisions: med(|l| l.decisions),
        events: med(|l| l.events),
        cache_hits: med(|l| l.cache_hits),
        cache_misses: med(|l| l.cache_misses),
        hit_p50_us: med(|l| l.hit_p50_us),
        hit_p99_us: med(|l| l.hit_p99_us),
        miss_p50_us: med(|l| l.miss_p50_us),
        miss_p99_us: med(|l| l.miss_p99_us),
        miss_max_us: med(|l| l.miss_max_us),
        all_p50_us: med(|l| l.all_p50_us),
        all_p99_us: med(|l| l.all_p99_us),
        all_max_us: med(|l| l.all_max_us),
    };

    let sha_min = inputs
        .signing
        .tools
        .first()
        .map(|(_, s)| min_max(s).0)
        .unwrap_or(f64::NAN);
    let sha_median = inputs
        .signing
        .tools
        .first()
        .map(|(_, s)| median(s))
        .unwrap_or(f64::NAN);
    let signing_rows = inputs
        .signing
        .tools
        .iter()
        .map(|(name, s)| row(name, name, s, sha_median, sha_min))
        .collect();

    let ratio = |id: &str, key: &str| {
        workloads
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.contenders.iter().find(|c| c.key == key))
            .filter(|c| c.measured)
            .map(|c| c.ratio_to_no_guard)
    };
    let noise = |id: &str, kind: Kind| {
        noise_of(
            inputs.samples.get(&(id, Kind::None)).map(Vec::as_slice),
            inputs.samples.get(&(id, kind)).map(Vec::as_slice),
        )
    };
    let fapolicyd_missing = || {
        format!(
            "not measured: {}",
            inputs.fapolicyd_unavailable.unwrap_or("no samples")
        )
    };
    let mut targets = Vec::new();
    // #20: the hook adds at most 2 % to P1 (guard with the hook against guard without),
    // read as the median of the ratios within each pair of runs (P1 and P1h alternate),
    // judged by that median's 95 % confidence interval: the runs' own spread on a busy
    // 2-core host is far wider than 2 %, the uncertainty of a median of many pairs is not.
    // Read twice: in wall time, and in the interpreter's CPU time, which a busy host's
    // scheduling waits do not enter.
    for (without, with, what) in [
        (
            "P1",
            "P1h",
            "P1h / P1 under guard, paired runs, wall time (the audit hook's cost, #20)",
        ),
        (
            "P1cpu",
            "P1hcpu",
            "P1h / P1 under guard, paired runs, CPU time (the audit hook's cost, #20)",
        ),
    ] {
        targets.push(hook_target(
            what,
            &paired_ratios(
                inputs
                    .samples
                    .get(&(without, Kind::Guard))
                    .map(Vec::as_slice),
                inputs.samples.get(&(with, Kind::Guard)).map(Vec::as_slice),
            ),
        ));
    }
    // And in instructions executed (callgrind): no noise to see through.
    #[allow(clippy::cast_precision_loss)]
    let instructions = inputs.instructions.as_ref().map(|counts| {
        (
            counts.p1h as f64 / counts.p1 as f64,
            counts.p1e as f64 / counts.p1 as f64,
        )
    });
    targets.push(Target {
        what: "P1h / P1, instructions executed (callgrind, the host's python3; a stand-in \
               answers for the agent; the audit hook's cost, #20)"
            .into(),
        target: "<= 1.02".into(),
        value: match &instructions {
            Ok((hook, empty)) => format!("{hook:.4} (an empty hook: {empty:.4})"),
            Err(e) => format!("not measured: {e}"),
        },
        met: match &instructions {
            Ok((hook, _)) if *hook <= 1.02 => "yes".into(),
            Ok(_) => "**no**".into(),
            Err(_) => "not measured".into(),
        },
    });
    // The floor under it: what CPython itself pays once any audit hook is installed.
    let floor = paired_ratios(
        inputs
            .samples
            .get(&("P1cpu", Kind::Guard))
            .map(Vec::as_slice),
        inputs
            .samples
            .get(&("P1ecpu", Kind::Guard))
            .map(Vec::as_slice),
    );
    targets.push(Target {
        what: "P1e / P1 under guard, paired runs, CPU time (an audit hook that does nothing: \
               the interpreter's own share of P1h's cost)"
            .into(),
        target: "measured, as a ratio".into(),
        value: paired_median(&floor),
        met: if floor.is_empty() {
            "not measured".into()
        } else {
            "measured".into()
        },
    });
    // Issue #19's targets, in its order. P4u is shown beside P4 but is not one of them.
    for (id, limit, vs_fapolicyd) in [
        ("P1", 1.03, true),
        ("P2", 1.20, false),
        ("P4", 1.5, true),
        ("P4u", 1.5, true),
    ] {
        let reference = id == "P4u";
        let value = ratio(id, "guard");
        let n = noise(id, Kind::Guard);
        targets.push(Target {
            what: if reference {
                format!(
                    "{id} guard / no guard (unsigned tree: a round trip per open; shown beside \
                     P4, not a target of #19)"
                )
            } else {
                format!("{id} guard / no guard")
            },
            target: format!("<= {limit:.2}"),
            value: value.map_or("not measured".into(), |v| {
                format!("{v:.3} (noise ±{:.1} %)", n * 100.0)
            }),
            met: match value {
                None => "not measured".into(),
                Some(v) if reference => {
                    format!(
                        "not a target (P4's limit would say: {})",
                        judge(v, limit, n)
                    )
                }
                Some(v) => judge(v, limit, n),
            },
        });
        if !vs_fapolicyd {
            continue;
        }
        let guard = ratio(id, "guard");
        for key in ["fapolicyd-none", "fapolicyd-sha256"] {
            let fap = ratio(id, key);
            let (value, met) = match (guard, fap) {
                (Some(g), Some(f)) => (
                    format!(
                        "guard {:+.1} % vs {key} {:+.1} %",
                        (g - 1.0) * 100.0,
                        (f - 1.0) * 100.0
                    ),
                    // Overheads: (g-1) <= (f-1)/3, judged only when fapolicyd's overhead
                    // itself stands out of the noise.
                    if f - 1.0 <= n {
                        format!(
                            "inconclusive ({key}'s overhead is within the noise ±{:.1} %)",
                            n * 100.0
                        )
                    } else {
                        judge(g, 1.0 + (f - 1.0) / 3.0, n)
                    },
                ),
                _ => (fapolicyd_missing(), "not measured".to_string()),
            };
            let met = if reference && fap.is_some() {
                format!("not a target (the P4 rule would say: {met})")
            } else {
                met
            };
            targets.push(Target {
                what: format!("{id} guard overhead vs {key} overhead"),
                target: "<= 1/3 (at least 3× less)".into(),
                value,
                met,
            });
        }
    }

    // Signing: guard sign -r at least as fast as sha256sum over the same tree.
    let tool = |name: &str| {
        inputs
            .signing
            .tools
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
    };
    let (sha, sign) = (tool("sha256sum"), tool("guard sign -r"));
    let n = noise_of(sha, sign);
    let value = match (sha, sign) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Some(median(b) / median(a)),
        _ => None,
    };
    targets.push(Target {
        what: format!(
            "P5 `guard sign -r` / `sha256sum` ({} files, same tree)",
            inputs.signing.files
        ),
        target: "<= 1.00".into(),
        value: value.map_or("not measured".into(), |v| {
            format!("{v:.3} (noise ±{:.1} %)", n * 100.0)
        }),
        met: value.map_or("not measured".into(), |v| judge_time(v, 1.0, n)),
    });

    // Memory: agent peak RSS with 100 k cached verdicts.
    let m = &inputs.memory;
    let peak_mib = m.peak_hwm_kib as f64 / 1024.0;
    targets.push(Target {
        what: format!(
            "P6 agent peak RSS (VmHWM) with {} cached verdicts",
            m.cache_entries
        ),
        target: "<= 32 MiB with 100 k cached verdicts".into(),
        value: if m.peak_hwm_kib == 0 {
            "not measured".into()
        } else {
            format!("{peak_mib:.1} MiB ({} files opened)", m.files)
        },
        met: if m.peak_hwm_kib == 0 {
            "not measured".into()
        } else if m.cache_entries < 100_000.0 {
            format!(
                "not judged: {} cached verdicts, the target needs 100 k (--p6-files 100000)",
                m.cache_entries
            )
        } else if peak_mib <= 32.0 {
            "yes".into()
        } else {
            "**no**".into()
        },
    });

    targets.extend(bpf_targets(&inputs.bpf));

    let methodology = vec![
        format!(
            "machine: {} CPUs ({}), {} MiB RAM, kernel {}, {}, fapolicyd {}",
            inputs.machine.nproc,
            inputs.machine.cpu,
            inputs.machine.memory_mib,
            inputs.machine.kernel,
            inputs.machine.python,
            inputs.machine.fapolicyd
        ),
        format!(
            "load average (/proc/loadavg) before: {}, after: {} (the host is shared: other \
             work on it is noise in every column alike, interleaving spreads it)",
            inputs.machine.load_before, inputs.load_after
        ),
        format!("options: {}", inputs.options),
        "contenders run interleaved: each round runs no guard, guard, fapolicyd (none), \
         fapolicyd (sha256) in this order; each contender is started fresh for its turn and \
         stopped after it"
            .into(),
        "per contender turn: start daemon; `sync; echo 3 > /proc/sys/vm/drop_caches`; P2 \
         (one cold storm: empty daemon caches, empty page cache); one untimed warm-up storm; \
         N timed warm storms (P1); one untimed tar; N timed tars (P4); the same for the \
         unsigned copy (P4u); enforcement check"
            .into(),
        format!(
            "bench filesystem: a loop-mounted ext2 image in target/bench holding a copy of \
             /usr/lib/python3.11 ({} files, symlinks dereferenced), every file signed with \
             `guard sign -r` (P-256 key from `guard keygen`) and added to fapolicyd's trust \
             with `fapolicyd-cli --file add`; the host's files are never signed or trusted",
            inputs.stdlib_files
        ),
        "workloads run as nobody (uid 65534, via setpriv): `/usr/bin/python3 -S storm.py` \
         with PYTHONHOME on the bench copy, so every module, bytecode file and extension \
         comes from it; P4 is `tar -cf - -C prefix lib` read into a pipe (GNU tar skips \
         reading data when writing to /dev/null); P4u the same of `unsigned/lib`, a copy of \
         /usr/lib/python3.11 made after signing, never signed, trusted by fapolicyd like \
         the signed copy (`fapolicyd-cli --file add`)"
            .into(),
        "guard: `guard run --backend fanotify --watch <bench fs> --policy target/bench/policy.toml` \
         (release build, 4 workers, filesystem mark on the bench filesystem only, audit to \
         target/bench); fapolicyd: foreground `fapolicyd --debug-deny`, Debian's shipped \
         configuration except uid/gid root, watch_fs = ext2 (only the bench mount), \
         trust = file, integrity none/sha256, no shutdown report; rules: the sample-rules \
         'known-libs' set (README-rules) compiled as fagenrules would"
            .into(),
        "timings: wall clock from spawn to reap (Rust Instant), including setpriv and \
         interpreter start-up; medians and min-max over all samples; ratio = median / \
         median of no guard"
            .into(),
        "enforcement check (every turn, after the measurements): a signed, trusted script \
         imports `planted.py`, written after signing and trusted by nobody; guard and \
         fapolicyd must refuse it (PermissionError) or the run aborts; with no guard it \
         must run. guard must also report decisions > 0 and 0 denies on the signed workload"
            .into(),
        "P3 comes from `guard status --json` after each guard turn (cumulative over that \
         fresh agent's life: misses from the cold storm, hits from the warm ones); values \
         are the median over rounds; histogram buckets have about 9 % resolution"
            .into(),
    ];

    Results {
        machine: inputs.machine,
        methodology,
        workloads,
        latency_rounds: lat.to_vec(),
        latency_median,
        signing: inputs.signing,
        signing_rows,
        memory: inputs.memory,
        enforcement_checks: inputs.checks,
        targets,
        bpf: inputs.bpf,
        fapolicyd_rules: inputs.fapolicyd_rules,
        elapsed_s: inputs.elapsed_s,
    }
}

/// The limits #19 sets on the host's ratios, applied for reference to the VM's.
const HOST_LIMITS: &[(&str, f64)] = &[("P1", 1.03), ("P2", 1.20), ("P4", 1.5), ("P4u", 1.5)];

/// #19: "BPF mode measured: the same workloads in the VM on both kernels, guard against no
/// guard in the same VM, as ratios". One row per kernel and workload.
fn bpf_targets(bpf: &Bpf) -> Vec<Target> {
    let kernels = match bpf {
        Bpf::NotRun(why) => {
            return vec![Target {
                what: "BPF mode (BPF LSM + fanotify) / no guard, P1 P2 P4 in the VM on both \
                       kernels"
                    .into(),
                target: "measured, as ratios".into(),
                value: format!("not measured in this run: {why}"),
                met: "not measured".into(),
            }];
        }
        Bpf::Ran(kernels) => kernels,
    };
    let mut out = Vec::new();
    for k in kernels {
        for &(id, limit) in HOST_LIMITS {
            let what = format!(
                "BPF mode, VM {}: {id} guard (bpf-lsm+fanotify) / no guard",
                k.release
            );
            let target = format!(
                "measured (#19's host limit <= {limit:.2}{} for reference)",
                if id == "P4u" { ", P4's" } else { "" }
            );
            match k.rows(id) {
                Some((none, guard)) => {
                    let n = noise_of(
                        Some(none.samples_ms.as_slice()),
                        Some(guard.samples_ms.as_slice()),
                    );
                    out.push(Target {
                        what,
                        target,
                        value: format!(
                            "{:.3} (best-of {:.3}, noise ±{:.1} %, {} samples each)",
                            guard.ratio_to_no_guard,
                            guard.ratio_of_minima,
                            n * 100.0,
                            guard.samples_ms.len()
                        ),
                        met: format!(
                            "measured (against the limit: {})",
                            judge(guard.ratio_to_no_guard, limit, n)
                        ),
                    });
                }
                None => out.push(Target {
                    what,
                    target,
                    value: format!(
                        "not measured: {}",
                        k.failure
                            .as_deref()
                            .unwrap_or("the guest reported no samples for it")
                    ),
                    met: "not measured".into(),
                }),
            }
        }
    }
    out
}

/// Half the interquartile range of the baseline's samples, relative to their median,
/// combined with the contender's own (root of the sum of squares): a target is judged met
/// or missed only when the ratio clears the limit by more than this; otherwise the verdict
/// is "inconclusive" rather than a coin toss.
fn noise_of(baseline: Option<&[f64]>, contender: Option<&[f64]>) -> f64 {
    let spread = |s: Option<&[f64]>| {
        s.filter(|s| !s.is_empty())
            .map(|s| half_iqr(s) / median(s))
            .unwrap_or(f64::NAN)
    };
    spread(baseline).hypot(spread(contender))
}

/// A ratio to no guard against its limit, with the noise `n`.
fn judge(value: f64, limit: f64, n: f64) -> String {
    // guard only adds work: a ratio clearly below 1 means other load on the host
    // moved the baseline, and no verdict can be drawn from it.
    if value < 1.0 - n {
        format!(
            "inconclusive (faster than no guard beyond the noise ±{:.1} %: host load)",
            n * 100.0
        )
    } else {
        judge_time(value, limit, n)
    }
}

/// A ratio of two times against its limit, with the noise `n`.
fn judge_time(value: f64, limit: f64, n: f64) -> String {
    if value + n <= limit {
        "yes".to_string()
    } else if value - n > limit {
        "**no**".to_string()
    } else {
        format!("inconclusive (noise ±{:.1} %)", n * 100.0)
    }
}

/// The ratio within each pair of runs: the i-th sample of `with` over the i-th of `without`.
/// The hook's target (#20): at most 1.02, judged by the paired ratios' median and its
/// 95 % interval.
fn hook_target(what: &str, pairs: &[f64]) -> Target {
    Target {
        what: what.into(),
        target: "<= 1.02".into(),
        value: paired_median(pairs),
        met: if pairs.is_empty() {
            "not measured".into()
        } else {
            let (low, high) = median_interval(pairs);
            if high <= 1.02 {
                "yes".to_string()
            } else if low > 1.02 {
                "**no**".to_string()
            } else {
                format!("inconclusive (interval {low:.3}–{high:.3})")
            }
        },
    }
}

/// Paired ratios as the report shows them: their median, its 95 % interval, how many.
fn paired_median(pairs: &[f64]) -> String {
    if pairs.is_empty() {
        return "not measured".into();
    }
    let (low, high) = median_interval(pairs);
    format!(
        "{:.3} (95 % interval of the median {low:.3}–{high:.3}, {} pairs)",
        median(pairs),
        pairs.len()
    )
}

fn paired_ratios(without: Option<&[f64]>, with: Option<&[f64]>) -> Vec<f64> {
    match (without, with) {
        (Some(without), Some(with)) => without
            .iter()
            .zip(with)
            .filter(|(w, _)| **w > 0.0)
            .map(|(w, h)| h / w)
            .collect(),
        _ => Vec::new(),
    }
}

/// A distribution-free 95 % confidence interval of the median: the order statistics
/// n/2 ∓ 1.96·√n/2 (the sign test's interval), the whole range when there are too few.
fn median_interval(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let Some(last) = sorted.len().checked_sub(1) else {
        return (f64::NAN, f64::NAN);
    };
    // n is a sample count: far within f64's exact integers.
    #[allow(clippy::cast_precision_loss)]
    let n = sorted.len() as f64;
    let half_width = 1.96 * n.sqrt() / 2.0;
    // Both are within 0..=n after the clamp.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (low, high) = (
        ((n / 2.0 - half_width).floor().max(0.0)) as usize,
        ((n / 2.0 + half_width).ceil() as usize).min(last),
    );
    (sorted[low], sorted[high])
}

fn half_iqr(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.len() < 2 {
        return f64::NAN;
    }
    // q in [0, 1]: an index within the samples.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.75) - at(0.25)) / 2.0
}

/// A measured contender: median (min–max), ratio of medians and of minima.
fn cell(c: &Contender) -> String {
    format!(
        "{} ({}–{}) **×{:.3}** (best-of ×{:.3})",
        fmt_ms(c.median_ms),
        fmt_ms(c.min_ms),
        fmt_ms(c.max_ms),
        c.ratio_to_no_guard,
        c.ratio_of_minima
    )
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1}")
    }
}

pub(super) fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# guard benchmark (`cargo xtask bench`)\n");
    let _ = writeln!(
        out,
        "Wall-clock ms: median (min–max), **ratio of medians to no guard** (best-of: ratio \
         of the minima, less sensitive to other load on the host).\n"
    );
    let _ = writeln!(
        out,
        "| workload | no guard | guard (fanotify) | fapolicyd (integrity none) | fapolicyd (integrity sha256) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for w in &r.workloads {
        let cells: Vec<String> = w
            .contenders
            .iter()
            .map(|c| {
                if c.measured {
                    cell(c)
                } else {
                    format!(
                        "not measured: {}",
                        c.not_measured_reason.as_deref().unwrap_or("?")
                    )
                }
            })
            .collect();
        let _ = writeln!(out, "| {} {} | {} |", w.id, w.name, cells.join(" | "));
    }
    match &r.bpf {
        Bpf::NotRun(why) => {
            let _ = writeln!(
                out,
                "| BPF mode (BPF LSM + fanotify, VM) | not measured in this run: {why} | | | |"
            );
        }
        Bpf::Ran(kernels) => {
            for k in kernels {
                for (id, name) in WORKLOADS {
                    let label = format!("{id} {name}, **VM {}**", k.release);
                    match k.rows(id) {
                        Some((none, guard)) => {
                            let _ = writeln!(
                                out,
                                "| {label} | {} | guard (bpf-lsm+fanotify): {} | not in the VM | not in the VM |",
                                cell(&none),
                                cell(&guard)
                            );
                        }
                        None => {
                            let _ = writeln!(
                                out,
                                "| {label} | not measured: {} | | | |",
                                k.failure.as_deref().unwrap_or("no samples from the guest")
                            );
                        }
                    }
                }
            }
        }
    }
    if let Bpf::Ran(kernels) = &r.bpf {
        let _ = writeln!(
            out,
            "\nVM rows: the same workloads run by tests/vm/bench_workloads.sh in the VM (QEMU \
             TCG, an emulated CPU: compare the ratios, not the milliseconds, with the host's), \
             guard = `guard run --backend auto` (the BPF LSM layer, the exec gate and fanotify, \
             default policy, VM key) against no guard, interleaved in one boot per kernel.\n"
        );
        for k in kernels {
            for note in &k.notes {
                let _ = writeln!(out, "- VM {}: {note}", k.release);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nP4 reads the signed tree: on the host (fanotify mode) guard verifies signed files a \
         non-interpreter opens ahead, off the reader's path, and then leaves them to the kernel \
         (evictable inode ignore marks), so P4's timed runs, after an untimed warm-up in the \
         same turn, mostly do not reach the agent. With the BPF LSM layer (the VM rows) the \
         agent keeps no ignore marks and verifies nothing ahead, so there P4 too pays a round \
         trip per open. P4u reads an unsigned copy of the same tree (never \
         signed, trusted by fapolicyd the same way): every open is a fanotify round trip to \
         the agent. #19's P4 target is judged on P4; P4u is shown beside it."
    );

    let l = &r.latency_median;
    let _ = writeln!(
        out,
        "\n## P3 guard decision latency (agent counters, median over {} rounds)\n",
        r.latency_rounds.len()
    );
    let _ = writeln!(
        out,
        "| answers | p50 µs | p99 µs | max µs | count per round |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| cache hit | {:.1} | {:.1} | not exposed by `guard status` | {:.0} hits |",
        l.hit_p50_us, l.hit_p99_us, l.cache_hits
    );
    let _ = writeln!(
        out,
        "| cache miss (hash + signature) | {:.1} | {:.1} | {:.1} | {:.0} misses |",
        l.miss_p50_us, l.miss_p99_us, l.miss_max_us, l.cache_misses
    );
    let _ = writeln!(
        out,
        "| every answer (incl. non-code, other processes) | {:.1} | {:.1} | {:.1} | {:.0} events, {:.0} code decisions |",
        l.all_p50_us, l.all_p99_us, l.all_max_us, l.events, l.decisions
    );
    let _ = writeln!(
        out,
        "\nfapolicyd latency: not measured (1.1.7 has no per-decision timing counters)."
    );

    let s = &r.signing;
    let _ = writeln!(
        out,
        "\n## P5 signing throughput ({} files, {:.1} MiB, warm page cache)\n",
        s.files,
        s.bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "| tool | median ms (min–max) | files/s | MiB/s | ratio to sha256sum |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for row in &r.signing_rows {
        let secs = row.median_ms / 1000.0;
        let _ = writeln!(
            out,
            "| {} | {} ({}–{}) | {:.0} | {:.1} | ×{:.2} |",
            row.contender,
            fmt_ms(row.median_ms),
            fmt_ms(row.min_ms),
            fmt_ms(row.max_ms),
            s.files as f64 / secs,
            s.bytes as f64 / 1048576.0 / secs,
            row.ratio_to_no_guard
        );
    }

    let m = &r.memory;
    let grown = m.peak_hwm_kib.saturating_sub(m.idle_hwm_kib);
    let _ = writeln!(out, "\n## P6 agent memory\n");
    let _ = writeln!(
        out,
        "{} tiny signed `.py` files (signed with `guard sign -r` in {:.1} s), opened once each \
         with `io.open_code` by one python process ({:.1} s: {:.0} verifications/s, miss p50 \
         {:.1} µs, p99 {:.1} µs). Agent cache: {:.0} entries, {:.0} misses. Agent VmHWM: \
         {:.1} MiB idle, **{:.1} MiB peak** ({:.0} bytes per cached verdict above idle).",
        m.files,
        m.sign_s,
        m.open_all_s,
        m.cache_misses / m.open_all_s,
        m.miss_p50_us,
        m.miss_p99_us,
        m.cache_entries,
        m.cache_misses,
        m.idle_hwm_kib as f64 / 1024.0,
        m.peak_hwm_kib as f64 / 1024.0,
        grown as f64 * 1024.0 / m.cache_entries.max(1.0)
    );

    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | limit | measured | met |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what, t.target, t.value, t.met
        );
    }

    let _ = writeln!(out, "\n## Enforcement checks (first round)\n");
    for c in &r.enforcement_checks {
        let _ = writeln!(out, "- {c}");
    }
    let _ = writeln!(out, "\n## Methodology\n");
    for m in &r.methodology {
        let _ = writeln!(out, "- {m}");
    }
    let _ = writeln!(out, "- total bench time: {:.0} s", r.elapsed_s);
    let _ = writeln!(out, "\nChart: `ratios.svg`; raw samples: `results.json`.");
    out
}

/// A grouped horizontal bar chart of the ratios to no guard, with the 1.0 line.
pub(super) fn svg(r: &Results) -> String {
    let colors = ["#888888", "#2a7ab0", "#d08c2a", "#b0412a"];
    let bar_h = 16.0;
    let group_gap = 22.0;
    let left = 190.0;
    let width = 760.0;
    let plot_w = width - left - 90.0;
    let rows: Vec<&Workload> = r.workloads.iter().collect();
    let max_ratio = rows
        .iter()
        .flat_map(|w| w.contenders.iter())
        .filter(|c| c.measured && c.ratio_to_no_guard.is_finite())
        .map(|c| c.ratio_to_no_guard)
        .fold(1.1_f64, f64::max)
        * 1.05;
    let group_h = bar_h * 4.0 + group_gap;
    let top = 40.0;
    let height = top + group_h * rows.len() as f64 + 110.0;
    let x = |ratio: f64| left + plot_w * ratio / max_ratio;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14" font-weight="bold">Time relative to no guard (median; lower is better)</text>"#
    );
    for (gi, w) in rows.iter().enumerate() {
        let gy = top + gi as f64 * group_h;
        let _ = writeln!(
            s,
            r#"<text x="8" y="{:.1}" font-weight="bold">{} {}</text>"#,
            gy + bar_h * 2.0 + 4.0,
            w.id,
            escape(&w.name)
        );
        for (ci, c) in w.contenders.iter().enumerate() {
            let y = gy + ci as f64 * bar_h;
            if c.measured && c.ratio_to_no_guard.is_finite() {
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                    (x(c.ratio_to_no_guard) - left).max(1.0),
                    bar_h - 3.0,
                    colors[ci % colors.len()]
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}">×{:.3}</text>"#,
                    x(c.ratio_to_no_guard) + 4.0,
                    y + bar_h - 5.0,
                    c.ratio_to_no_guard
                );
            } else {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" fill="#b00">not measured</text>"##,
                    left + 4.0,
                    y + bar_h - 5.0
                );
            }
        }
    }
    let one = x(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{one:.1}" y1="{top}" x2="{one:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="4,3"/>"##,
        top + group_h * rows.len() as f64 - group_gap
    );
    let legend_y = top + group_h * rows.len() as f64 + 10.0;
    for (ci, kind) in Kind::ALL.iter().enumerate() {
        let lx = 8.0 + ci as f64 * 185.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{legend_y}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            colors[ci],
            lx + 16.0,
            legend_y + 10.0,
            escape(kind.label())
        );
    }
    let bpf = match &r.bpf {
        Bpf::NotRun(why) => format!("BPF mode (VM): not measured in this run: {why}"),
        Bpf::Ran(kernels) => {
            let mut text = String::from("BPF mode (VM, guard / no guard):");
            for k in kernels {
                let _ = write!(text, " {}:", k.release);
                for (id, _) in WORKLOADS {
                    if let Some((_, guard)) = k.rows(id) {
                        let _ = write!(text, " {id} ×{:.3}", guard.ratio_to_no_guard);
                    }
                }
                if k.failure.is_some() {
                    text.push_str(" (incomplete)");
                }
                text.push(';');
            }
            text
        }
    };
    for (i, line) in bpf.split(';').filter(|l| !l.trim().is_empty()).enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="8" y="{:.1}" fill="#555">{}</text>"##,
            legend_y + 36.0 + 16.0 * i as f64,
            escape(line.trim())
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes report.md, results.json and ratios.svg; returns the Markdown.
pub(super) fn write(dir: &Path, results: &Results) -> Result<String> {
    let md = markdown(results);
    std::fs::write(dir.join("report.md"), &md).context("report.md")?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )
    .context("results.json")?;
    std::fs::write(dir.join("ratios.svg"), svg(results)).context("ratios.svg")?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_read_as_paired_ratios_with_an_interval_that_narrows() {
        let ratios = paired_ratios(Some(&[100.0, 200.0, 50.0]), Some(&[101.0, 202.0]));
        assert_eq!(ratios, vec![1.01, 1.01]);
        // 100 pairs around 1.00 with a wide spread: the median's interval is narrow.
        let many: Vec<f64> = (0..100).map(|i| 0.8 + 0.4 * f64::from(i) / 99.0).collect();
        let (low, high) = median_interval(&many);
        assert!(low > 0.95 && high < 1.05 && low < high, "{low} {high}");
        // Four pairs say little: the interval is the whole range.
        assert_eq!(median_interval(&[1.0, 1.1, 0.9, 1.3]), (0.9, 1.3));
        assert!(median_interval(&[]).0.is_nan());
    }

    fn kernel(samples: &[(&str, &str, &[f64])]) -> VmKernel {
        let mut k = VmKernel {
            release: "6.12.0-test".into(),
            ..Default::default()
        };
        for (id, who, s) in samples {
            k.samples
                .entry(id.to_string())
                .or_default()
                .insert(who.to_string(), s.to_vec());
        }
        k
    }

    #[test]
    fn without_the_vm_the_bpf_row_says_why_and_never_that_the_backend_is_missing() {
        let rows = bpf_targets(&Bpf::NotRun("pass --vm".into()));
        assert_eq!(rows.len(), 1);
        assert!(rows[0].value.contains("pass --vm"));
        assert_eq!(rows[0].met, "not measured");
        assert!(!rows.iter().any(|r| r.value.contains("not landed")));
    }

    #[test]
    fn bpf_rows_are_ratios_per_kernel_and_workload() {
        let k = kernel(&[
            ("P1", "none", &[100.0, 100.0, 100.0]),
            ("P1", "guard", &[110.0, 110.0, 110.0]),
            ("P4", "none", &[50.0, 50.0, 50.0]),
            ("P4", "guard", &[60.0, 60.0, 60.0]),
        ]);
        let rows = bpf_targets(&Bpf::Ran(vec![k]));
        assert_eq!(rows.len(), HOST_LIMITS.len());
        let p1 = rows.iter().find(|r| r.what.contains("P1 ")).unwrap();
        assert!(p1.value.starts_with("1.100"), "{}", p1.value);
        assert!(p1.met.contains("**no**"), "{}", p1.met);
        let p4 = rows.iter().find(|r| r.what.contains("P4 ")).unwrap();
        assert!(p4.met.contains("yes"), "{}", p4.met);
        let p2 = rows.iter().find(|r| r.what.contains("P2 ")).unwrap();
        assert_eq!(p2.met, "not measured");
    }

    #[test]
    fn verdicts_respect_the_noise() {
        assert_eq!(judge(1.01, 1.03, 0.01), "yes");
        assert_eq!(judge(1.10, 1.03, 0.01), "**no**");
        assert!(judge(1.03, 1.03, 0.01).starts_with("inconclusive (noise"));
        assert!(judge(0.90, 1.03, 0.01).contains("host load"));
        // Signing may be faster than sha256sum: no host-load rule there.
        assert_eq!(judge_time(0.80, 1.0, 0.01), "yes");
    }
}
