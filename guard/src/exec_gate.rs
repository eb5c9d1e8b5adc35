//! The exec gate: the kernel program that kills forbidden interpreter invocations at exec.
//!
//! Where BPF LSM is unavailable, `tp_btf/sched_process_exec` still sees every new process
//! before its first user instruction. For executables whose identity (dev, ino) the agent
//! registered, it reads argv/envp and sends SIGKILL to invocations the policy refuses
//! (`-c`, code on stdin, `-i`, a descriptor as the script, refused environment variables),
//! reporting each refusal through a ring buffer. The judgement itself is
//! [`guard_common::exec_gate::ArgvJudge`], shared with the kernel.
//!
//! Dropping [`ExecGate`] detaches the program.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, MapError, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use guard_common::Rule;
use guard_common::argv::Dialect;
use guard_common::exec_gate::{
    DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_NO_SITE, DENY_STDIN_CODE,
    EnvPattern, GateSettings, InterpreterKey, KIND_LOADER, MAX_ENV_NAME_LEN, MAX_ENV_NAMES,
    MAX_EVAL_MODULES, MODULE_INLINE_CODE, MODULE_NAME_LEN, MODULE_STDIN_CODE, ModuleKey,
    PERMISSIVE,
};
use guard_common::lsm::{LsmOffsets, Trust};

use crate::btf::{Btf, BtfError};
use crate::ebpf_object::{Identity, Interpreter};

const PROGRAM: &str = "sched_process_exec";
/// The other interpreters' command lines, each a program of its own on the same tracepoint
/// (see `guard-ebpf/src/exec_gate.rs`), loaded for the dialects the policy profiles.
fn dialect_program(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Python => None,
        Dialect::Perl => Some("perl_exec"),
        Dialect::Ruby => Some("ruby_exec"),
        Dialect::Node => Some("node_exec"),
    }
}
/// The native-code rule at exec, on the same tracepoint (see `guard-ebpf/src/exec_gate.rs`).
const NATIVE_EXEC_PROGRAM: &str = "native_exec";
/// The native-code rule's syscall tracepoints (category `syscalls`), attached when the
/// gate enforces it (see `guard-ebpf/src/native_gate.rs`).
const NATIVE_TRACEPOINTS: [&str; 8] = [
    "sys_enter_mmap",
    "sys_exit_mmap",
    "sys_enter_mprotect",
    "sys_exit_mprotect",
    "sys_enter_pkey_mprotect",
    "sys_exit_pkey_mprotect",
    "sys_enter_shmat",
    "sys_exit_shmat",
];
const INTERPRETERS_MAP: &str = "LSM_GATE_EXECS";
const MODULES_MAP: &str = "LSM_GATE_MODULES";
const EVENTS_MAP: &str = "LSM_GATE_EVENTS";
const SETTINGS_GLOBAL: &str = "GATE_SETTINGS";
const UNVERIFIED_MAP: &str = "LSM_GATE_UNVERIFIED";
/// Size of the kernel's executable map (interpreters and loaders together).
pub const MAX_INTERPRETERS: usize = 64;

/// Why the gate could not be loaded. The caller decides whether that is fatal.
#[derive(Debug, thiserror::Error)]
pub enum ExecGateError {
    #[error("cannot read kernel BTF for struct offsets: {0}")]
    Btf(#[from] BtfError),
    #[error("cannot read kernel BTF for the tracepoint: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("cannot load the exec gate object: {0}")]
    Load(#[from] EbpfError),
    #[error("the exec gate program was refused: {0}")]
    Program(#[from] ProgramError),
    #[error("exec gate map error: {0}")]
    Map(#[from] MapError),
    #[error("the exec gate object has no {0}")]
    Missing(&'static str),
    #[error("cannot pin the exec gate under {0}: {1}")]
    Pin(PathBuf, String),
    #[error("too many interpreters and loaders ({0}, at most {MAX_INTERPRETERS})")]
    TooManyInterpreters(usize),
    #[error(
        "refused environment variable name {0:?} is empty, longer than {MAX_ENV_NAME_LEN} bytes or holds '='"
    )]
    EnvName(String),
    #[error("too many refused environment variables ({0}, at most {MAX_ENV_NAMES})")]
    TooManyEnvNames(usize),
    #[error(
        "interpreter module name {0:?} is not dotted ASCII identifiers of at most {MODULE_NAME_LEN} bytes"
    )]
    ModuleName(String),
    #[error("too many interpreter modules ({0}, at most {MAX_EVAL_MODULES})")]
    TooManyModules(usize),
    #[error(
        "no tracefs for the native-code tracepoints, and mounting it on /sys/kernel/tracing failed: {0}"
    )]
    Tracefs(String),
}

/// What the gate refuses, and for which executables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecGateConfig {
    /// The profiled interpreters, each read with its dialect's grammar. Other executables
    /// are never touched.
    pub interpreters: Vec<Interpreter>,
    /// The dialects of every profile: their programs are loaded even before an executable
    /// of theirs is found (one adopted later is judged from its first exec).
    pub dialects: Vec<Dialect>,
    /// Dynamic loaders (`ld.so`): exec'd directly, they may not launch a program (only
    /// their modes that run nothing, as `ldd` uses them). An identity in both lists is
    /// judged as a loader.
    pub loaders: Vec<Identity>,
    pub deny_inline_code: bool,
    pub deny_stdin_code: bool,
    pub deny_interactive: bool,
    /// Refuse `-S`: a start-up without `site` skips the audit hook a profile requires.
    pub deny_no_site: bool,
    /// Refuse a script operand naming a descriptor (`/dev/fd/*`, `/dev/stdin`, `/proc/*/fd/*`).
    pub deny_descriptor_script: bool,
    /// Environment variables whose presence is refused (at most [`MAX_ENV_NAMES`]).
    pub refused_env: Vec<String>,
    /// Interpreter modules whose `-m` is refused as inline code (with `deny_inline_code`).
    pub inline_code_modules: Vec<String>,
    /// Interpreter modules whose `-m` is refused as code on stdin (with `deny_stdin_code`).
    pub stdin_code_modules: Vec<String>,
    /// Report refusals, do not kill.
    pub permissive: bool,
    /// The native-code level to enforce for every task (`[native] code`); `Any` when the
    /// BPF LSM layer enforces it.
    pub native: crate::policy::NativeCode,
    /// The owners and filesystem types the native-code rule trusts.
    pub trust: Trust,
    /// Pin the gate's link in this directory of a BPF filesystem (e.g.
    /// [`DEFAULT_GATE_PIN_DIR`]), replacing a previous loader's pin: the gate then keeps
    /// killing after the loader dies, until a new loader replaces it or the pin is removed.
    pub pin_dir: Option<PathBuf>,
}

/// Where the agent pins the gate when it runs with the BPF LSM layer (fail closed).
pub const DEFAULT_GATE_PIN_DIR: &str = "/sys/fs/bpf/guard/exec-gate";

impl ExecGateConfig {
    /// Everything refused, for these interpreters, with the environment variables that make
    /// CPython run extra code or load code from elsewhere.
    pub fn strict(interpreters: Vec<Identity>) -> ExecGateConfig {
        ExecGateConfig {
            interpreters: interpreters.into_iter().map(Interpreter::python).collect(),
            dialects: vec![Dialect::Python],
            loaders: Vec::new(),
            deny_inline_code: true,
            deny_stdin_code: true,
            deny_interactive: true,
            deny_no_site: false,
            deny_descriptor_script: true,
            refused_env: ["PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONPYCACHEPREFIX"]
                .map(String::from)
                .to_vec(),
            inline_code_modules: crate::policy::DEFAULT_INLINE_CODE_MODULES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            stdin_code_modules: crate::policy::DEFAULT_STDIN_CODE_MODULES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            permissive: false,
            native: crate::policy::NativeCode::Any,
            trust: Trust::new(&[0], &[]),
            pin_dir: None,
        }
    }

    /// The module map's entries: each name with the `MODULE_*` bits of the lists naming it.
    fn module_entries(&self) -> Result<Vec<(ModuleKey, u32)>, ExecGateError> {
        let mut entries: Vec<(ModuleKey, u32)> = Vec::new();
        for (names, kind) in [
            (&self.inline_code_modules, MODULE_INLINE_CODE),
            (&self.stdin_code_modules, MODULE_STDIN_CODE),
        ] {
            for name in names {
                let key = ModuleKey::new(name.as_bytes())
                    .ok_or_else(|| ExecGateError::ModuleName(name.clone()))?;
                match entries.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, kinds)) => *kinds |= kind,
                    None => entries.push((key, kind)),
                }
            }
        }
        if entries.len() > MAX_EVAL_MODULES {
            return Err(ExecGateError::TooManyModules(entries.len()));
        }
        Ok(entries)
    }

    fn settings(&self, offsets: LsmOffsets) -> Result<GateSettings, ExecGateError> {
        if self.refused_env.len() > MAX_ENV_NAMES {
            return Err(ExecGateError::TooManyEnvNames(self.refused_env.len()));
        }
        let mut settings = GateSettings {
            offsets,
            loader_trace: EnvPattern::new(guard_common::loader_argv::TRACE_VARIABLE).ok_or_else(
                || {
                    ExecGateError::EnvName(
                        String::from_utf8_lossy(guard_common::loader_argv::TRACE_VARIABLE)
                            .into_owned(),
                    )
                },
            )?,
            native: self.native.flags(),
            trust: self.trust,
            ..Default::default()
        };
        for (slot, name) in settings.env.iter_mut().zip(&self.refused_env) {
            *slot = EnvPattern::new(name.as_bytes())
                .ok_or_else(|| ExecGateError::EnvName(name.clone()))?;
        }
        settings.env_count = u32::try_from(self.refused_env.len()).unwrap_or(u32::MAX);
        for (on, bit) in [
            (self.deny_inline_code, DENY_INLINE_CODE),
            (self.deny_stdin_code, DENY_STDIN_CODE),
            (self.deny_interactive, DENY_INTERACTIVE),
            (self.deny_no_site, DENY_NO_SITE),
            (self.deny_descriptor_script, DENY_DESCRIPTOR_SCRIPT),
            (self.permissive, PERMISSIVE),
        ] {
            if on {
                settings.flags |= bit;
            }
        }
        Ok(settings)
    }
}

/// Where the kernel's tracing filesystem lives; the syscall tracepoints are found there.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes tracefs available, as systemd's automount would: hosts without it (containers,
/// minimal systems) leave `/sys/kernel/tracing` an empty directory, and the tracepoints'
/// ids cannot be read. aya looks for it once per process, so this runs before the first
/// attach.
fn ensure_tracefs() -> Result<(), ExecGateError> {
    let populated = |dir: &str| {
        std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    };
    if populated(TRACEFS) || populated("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| ExecGateError::Tracefs(e.to_string()))?;
    log::info!("mounted tracefs on {TRACEFS} for the native-code tracepoints");
    Ok(())
}

/// Pins `link` as `dir/link_<program>`, replacing what a previous loader pinned there.
fn pin(
    dir: &Path,
    program: &str,
    link: aya::programs::links::FdLink,
) -> Result<aya::programs::links::PinnedLink, ExecGateError> {
    let err = |e: &dyn std::fmt::Display| ExecGateError::Pin(dir.to_owned(), e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let path = dir.join(format!("link_{program}"));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(&e)),
    }
    link.pin(&path).map_err(|e| err(&e))
}

/// One refusal, as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateEvent {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub rule: Rule,
    /// False in permissive mode.
    pub killed: bool,
    /// The refused file: a profiled interpreter or a loader launched, a program or library
    /// refused as native code. `0:0` when the refusal is of a fact the kernel could not
    /// read.
    pub file: Identity,
    /// What refused (`guard_common::lsm::HOOK_*`).
    pub hook: u32,
    /// The refused task's name (`comm`, at most 15 bytes).
    pub comm: String,
}

/// The loaded and attached exec gate. Detached when dropped.
pub struct ExecGate {
    events: RingBuf<MapData>,
    /// The links, when pinned (dropping them then leaves the programs attached).
    _pinned: Vec<aya::programs::links::PinnedLink>,
    // Owns the program and its link; dropped after `events`.
    ebpf: Ebpf,
}

impl ExecGate {
    /// Loads, configures and attaches the gate. Needs CAP_BPF/CAP_PERFMON (root) and kernel
    /// BTF.
    pub fn load(config: &ExecGateConfig) -> Result<ExecGate, ExecGateError> {
        let executables = config.interpreters.len() + config.loaders.len();
        if executables > MAX_INTERPRETERS {
            return Err(ExecGateError::TooManyInterpreters(executables));
        }
        let offsets = crate::ebpf_object::kernel_offsets(&Btf::from_kernel()?)?;
        let settings = config.settings(offsets)?;
        let modules = config.module_entries()?;
        let mut ebpf = EbpfLoader::new()
            .override_global(SETTINGS_GLOBAL, &settings, true)
            // The object's maps are all created, the LSM layer's task storage among them
            // (no user-space type in aya).
            .allow_unsupported_maps()
            .load(crate::ebpf_object::EBPF_OBJECT)?;

        // Identities first, attach last: the program must never run with a half-filled map.
        let mut interpreters: HashMap<_, InterpreterKey, u32> = HashMap::try_from(
            ebpf.map_mut(INTERPRETERS_MAP)
                .ok_or(ExecGateError::Missing(INTERPRETERS_MAP))?,
        )?;
        // Loaders last: should an identity be in both lists, the stricter loader judgement
        // wins (an interpreter's argv grammar says nothing about a loader's).
        for interpreter in &config.interpreters {
            interpreters.insert(interpreter.identity.kernel_key(), interpreter.kind(), 0)?;
        }
        for identity in &config.loaders {
            interpreters.insert(identity.kernel_key(), KIND_LOADER, 0)?;
        }
        let mut module_map: HashMap<_, ModuleKey, u32> = HashMap::try_from(
            ebpf.map_mut(MODULES_MAP)
                .ok_or(ExecGateError::Missing(MODULES_MAP))?,
        )?;
        for (key, kinds) in modules {
            module_map.insert(key, kinds, 0)?;
        }
        let events = RingBuf::try_from(
            ebpf.take_map(EVENTS_MAP)
                .ok_or(ExecGateError::Missing(EVENTS_MAP))?,
        )?;

        let btf = aya::Btf::from_sys_fs()?;
        let program: &mut BtfTracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(ExecGateError::Missing(PROGRAM))?
            .try_into()?;
        program.load(PROGRAM, &btf)?;
        let id = program.attach()?;
        let mut pinned = Vec::new();
        if let Some(dir) = &config.pin_dir {
            // Attached first, then the old pin replaced: no exec goes unjudged.
            pinned.push(pin(dir, PROGRAM, program.take_link(id)?.into())?);
        }
        let mut dialects: Vec<Dialect> = config.dialects.clone();
        dialects.extend(config.interpreters.iter().map(|i| i.dialect));
        dialects.sort();
        dialects.dedup();
        let loaded: Vec<&str> = dialects.into_iter().filter_map(dialect_program).collect();
        if let Some(dir) = &config.pin_dir {
            // A dialect an earlier policy profiled and this one does not: its pinned program
            // would go on judging with that policy's map.
            for name in Dialect::ALL.into_iter().filter_map(dialect_program) {
                if !loaded.contains(&name) {
                    let _ = std::fs::remove_file(dir.join(format!("link_{name}")));
                }
            }
        }
        for name in loaded {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(ExecGateError::Missing(name))?
                .try_into()?;
            program.load("sched_process_exec", &btf)?;
            let id = program.attach()?;
            if let Some(dir) = &config.pin_dir {
                pinned.push(pin(dir, name, program.take_link(id)?.into())?);
            }
        }
        if config.native != crate::policy::NativeCode::Any {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(NATIVE_EXEC_PROGRAM)
                .ok_or(ExecGateError::Missing(NATIVE_EXEC_PROGRAM))?
                .try_into()?;
            program.load("sched_process_exec", &btf)?;
            let id = program.attach()?;
            if let Some(dir) = &config.pin_dir {
                pinned.push(pin(
                    dir,
                    NATIVE_EXEC_PROGRAM,
                    program.take_link(id)?.into(),
                )?);
            }
            ensure_tracefs()?;
            for name in NATIVE_TRACEPOINTS {
                let program: &mut TracePoint = ebpf
                    .program_mut(name)
                    .ok_or(ExecGateError::Missing(name))?
                    .try_into()?;
                program.load()?;
                let id = program.attach("syscalls", name)?;
                if let Some(dir) = &config.pin_dir {
                    let link = aya::programs::links::FdLink::try_from(program.take_link(id)?)
                        .map_err(|e| ExecGateError::Pin(dir.clone(), e.to_string()))?;
                    pinned.push(pin(dir, name, link)?);
                }
            }
        }
        Ok(ExecGate {
            events,
            _pinned: pinned,
            ebpf,
        })
    }

    /// Instructions the verifier processed to accept the program (its budget is one
    /// million): how close the argv walk is to being refused on a new kernel.
    pub fn verified_instructions(&self) -> Option<u32> {
        self.ebpf
            .program(PROGRAM)?
            .info()
            .ok()?
            .verified_instruction_count()
    }

    /// The executables map (`LSM_GATE_EXECS`), for the agent to add identities to while the
    /// gate runs (`agent::identities`); `None` once taken.
    pub fn take_identity_map(&mut self) -> Option<HashMap<MapData, InterpreterKey, u32>> {
        HashMap::try_from(self.ebpf.take_map(INTERPRETERS_MAP)?).ok()
    }

    /// Executable mappings whose return-path check was skipped because the task's address
    /// space stayed locked (summed over CPUs).
    pub fn unverified_mappings(&self) -> u64 {
        let Some(map) = self.ebpf.map(UNVERIFIED_MAP) else {
            return 0;
        };
        let Ok(array) = aya::maps::PerCpuArray::<_, u64>::try_from(map) else {
            return 0;
        };
        array
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }

    /// The refusals reported since the last call (non-blocking; poll [`Self::as_fd`] for
    /// readability to wait).
    pub fn events(&mut self) -> impl Iterator<Item = GateEvent> + '_ {
        std::iter::from_fn(move || {
            loop {
                let item = self.events.next()?;
                let Some(raw) =
                    crate::ebpf_object::decode::<guard_common::exec_gate::GateEvent>(&item)
                else {
                    log::warn!("exec gate: short event ({} bytes)", item.len());
                    continue;
                };
                let Some(rule) = Rule::from_u32(raw.rule) else {
                    log::warn!("exec gate: unknown rule id {}", raw.rule);
                    continue;
                };
                return Some(GateEvent {
                    pid: raw.tgid,
                    tid: raw.pid,
                    uid: raw.uid,
                    gid: raw.gid,
                    rule,
                    killed: raw.killed != 0,
                    file: Identity::from_kernel(raw.dev, raw.ino),
                    hook: raw.hook,
                    comm: {
                        let end = raw.comm.iter().position(|b| *b == 0).unwrap_or(16);
                        String::from_utf8_lossy(&raw.comm[..end]).into_owned()
                    },
                });
            }
        })
    }
}

impl AsFd for ExecGate {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl AsRawFd for ExecGate {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_encodings_round_trip() {
        // 254:0 (virtio disk) and a device whose minor needs more than 8 bits.
        for (major, minor) in [(254u32, 0u32), (8, 1), (259, 300), (0, 0x1_2345)] {
            let identity = Identity {
                dev: libc::makedev(major, minor),
                ino: 7,
            };
            let key = identity.kernel_key();
            assert_eq!(key.dev, (major << 20) | minor);
            assert_eq!(Identity::from_kernel(key.dev, key.ino), identity);
        }
    }

    #[test]
    fn settings_reject_bad_env_names() {
        let mut config = ExecGateConfig::strict(vec![]);
        assert!(config.settings(LsmOffsets::default()).is_ok());
        config.refused_env.push("A=B".into());
        assert!(matches!(
            config.settings(LsmOffsets::default()),
            Err(ExecGateError::EnvName(_))
        ));
        config.refused_env = (0..=MAX_ENV_NAMES).map(|i| format!("V{i}")).collect();
        assert!(matches!(
            config.settings(LsmOffsets::default()),
            Err(ExecGateError::TooManyEnvNames(n)) if n == MAX_ENV_NAMES + 1
        ));
    }

    #[test]
    fn module_entries_merge_the_two_lists() {
        let mut config = ExecGateConfig::strict(vec![]);
        let entries = config.module_entries().unwrap();
        let kinds = |name: &str| {
            let key = ModuleKey::new(name.as_bytes()).unwrap();
            entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        };
        assert_eq!(kinds("timeit"), Some(MODULE_INLINE_CODE));
        assert_eq!(kinds("code"), Some(MODULE_STDIN_CODE));
        assert_eq!(kinds("pdb"), Some(MODULE_INLINE_CODE | MODULE_STDIN_CODE));
        assert_eq!(kinds("json"), None);
        config.stdin_code_modules.push("not a module".into());
        assert!(matches!(
            config.module_entries(),
            Err(ExecGateError::ModuleName(_))
        ));
        config.stdin_code_modules = (0..70).map(|i| format!("m{i}")).collect();
        assert!(matches!(
            config.module_entries(),
            Err(ExecGateError::TooManyModules(_))
        ));
    }
}
