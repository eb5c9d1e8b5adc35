//! Loading the layer: kernel offsets from BTF, the programs attached, their pins (which
//! outlive the loader: fail closed), self-protection, hand-over to a successor.

use super::*;

/// The loaded and attached LSM programs. Detached when dropped.
pub struct LsmLayer {
    events: RingBuf<MapData>,
    verdicts: Option<std::sync::Arc<KernelVerdicts>>,
    /// Dropping an unpinned link detaches its program; a pinned one stays.
    _links: Vec<FdLink>,
    // Owns the programs and their links; dropped after `events`.
    ebpf: Ebpf,
    hooks: Vec<&'static str>,
}

impl LsmLayer {
    /// Loads, configures and attaches the hooks `config` enables. Needs root and a kernel
    /// with `bpf` among its active LSMs ([`LsmError::Unsupported`] otherwise).
    pub fn load(config: &LsmConfig) -> Result<LsmLayer, LsmError> {
        if let Some(why) = unsupported_reason() {
            return Err(LsmError::Unsupported(why));
        }
        if config.interpreters.len() > MAX_INTERPRETERS {
            return Err(LsmError::TooMany(
                "interpreters",
                config.interpreters.len(),
                MAX_INTERPRETERS,
            ));
        }
        if config.signers.len() > MAX_SIGNERS {
            return Err(LsmError::TooMany(
                "signers",
                config.signers.len(),
                MAX_SIGNERS,
            ));
        }
        if config.controllers.len() > MAX_CONTROLLERS {
            return Err(LsmError::TooMany(
                "controllers",
                config.controllers.len(),
                MAX_CONTROLLERS,
            ));
        }
        if let Some(dir) = &config.pin_dir {
            // Without this the refusal comes as an EPERM on the first `LSM_` map created.
            pinned_controllers(dir)?;
        }
        let kernel_btf = Btf::from_kernel()?;
        let offsets = crate::ebpf_object::kernel_offsets(&kernel_btf)?;
        let settings = config.settings(offsets);
        let protect = self_protect_settings(&kernel_btf, config)?;
        let mut ebpf = EbpfLoader::new()
            .override_global(SETTINGS_GLOBAL, &settings, true)
            .override_global(SELF_PROTECT_GLOBAL, &protect, true)
            // LSM_MAIN_SCRIPTS is task storage, which aya has no user-space type for: only
            // the kernel programs use it.
            .allow_unsupported_maps()
            .load(EBPF_OBJECT)?;

        // Maps first, attach last: no program may run with a half-filled map.
        fill_interpreters(&mut ebpf, &config.interpreters)?;
        fill(&mut ebpf, SIGNERS_MAP, &config.signers)?;
        fill(&mut ebpf, CONTROLLERS_MAP, &config.controllers)?;
        if config.protect_agent {
            let mut protected: Array<_, u32> = Array::try_from(
                ebpf.map_mut(PROTECTED_MAP)
                    .ok_or(LsmError::Missing(PROTECTED_MAP))?,
            )?;
            protected.set(0, std::process::id(), 0)?;
        }
        if let Some(tgid) = config.agent {
            let mut agent: Array<_, AgentState> = Array::try_from(
                ebpf.map_mut(AGENT_MAP)
                    .ok_or(LsmError::Missing(AGENT_MAP))?,
            )?;
            agent.set(0, AgentState { tgid, alive: 1 }, 0)?;
        }
        let btf = aya::Btf::from_sys_fs()?;
        let mut hooks = Vec::new();
        let mut links = Vec::new();
        // LSM hooks and tracepoints differ only in their program type.
        macro_rules! attach_all {
            ($kind:ty, $names:expr) => {
                for name in $names {
                    let program: &mut $kind = ebpf
                        .program_mut(name)
                        .ok_or(LsmError::Missing(name))?
                        .try_into()
                        .map_err(|e| LsmError::Program(name, e))?;
                    program
                        .load(hook_of(name), &btf)
                        .map_err(|e| LsmError::Program(name, e))?;
                    let id = program.attach().map_err(|e| LsmError::Program(name, e))?;
                    let link = program
                        .take_link(id)
                        .map_err(|e| LsmError::Program(name, e))?;
                    links.push(FdLink::from(link));
                    hooks.push(name);
                }
            };
        }
        attach_all!(Lsm, config.programs(&offsets));
        attach_all!(BtfTracePoint, config.tracepoints());
        if config.protect_agent {
            // After attaching: a descriptor for a program only lets one read it or attach
            // it once more, so the moment without protection costs nothing (unlike maps,
            // which are protected by name from their creation).
            own_programs(&mut ebpf, &hooks)?;
        }
        // Everything is attached: only now may the old pins (a previous loader's programs)
        // go, so enforcement never lapses.
        if let Some(dir) = &config.pin_dir {
            links = pin(&ebpf, dir, &hooks, links)?;
        }
        let events = RingBuf::try_from(
            ebpf.take_map(EVENTS_MAP)
                .ok_or(LsmError::Missing(EVENTS_MAP))?,
        )?;
        let verdicts = if config.verdict_cache {
            Some(std::sync::Arc::new(KernelVerdicts::take(&mut ebpf)?))
        } else {
            None
        };
        Ok(LsmLayer {
            events,
            verdicts,
            _links: links,
            ebpf,
            hooks,
        })
    }

    /// The verdict cache, when [`LsmConfig::verdict_cache`] is on.
    pub fn verdicts(&self) -> Option<std::sync::Arc<KernelVerdicts>> {
        self.verdicts.clone()
    }

    /// Removes the pins under `dir`, detaching the programs no loader holds any more (the
    /// way to turn a pinned layer off). Returns how many pins were removed.
    /// The directories right under `dir` are cleared too, so [`GUARD_PIN_ROOT`] turns off
    /// the layer and the exec gate pinned beside it.
    pub fn unpin(dir: &Path) -> Result<usize, LsmError> {
        let mut found = pins(dir)?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    found.extend(pins(&entry.path())?);
                }
            }
        }
        let mut removed = 0;
        for entry in found {
            std::fs::remove_file(&entry).map_err(|e| LsmError::Pin(entry, e.to_string()))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Adds `successor` (an upgraded guard binary) to the controllers of the layer pinned in
    /// `dir`, so that, started as the agent, it may replace the layer. Only a controller
    /// (the binary that loaded the layer, or one handed over to before) gets the map.
    /// Returns false when no layer is pinned there.
    pub fn hand_over(dir: &Path, successor: Identity) -> Result<bool, LsmError> {
        let Some(mut controllers) = pinned_controllers(dir)? else {
            return Ok(false);
        };
        // A full map (MAX_CONTROLLERS) fails here with E2BIG.
        controllers.insert(successor.kernel_key(), 0, 0)?;
        Ok(true)
    }

    /// Programs named as this layer's still loaded in the kernel (by any loader). After
    /// [`Self::unpin`] the kernel releases them from a workqueue, a little later.
    pub fn loaded_programs() -> Result<Vec<String>, LsmError> {
        let mut found = Vec::new();
        for info in programs_now() {
            let info = info?;
            if let Some(name) = info.name_as_str()
                && is_ours(name)
            {
                found.push(name.to_string());
            }
        }
        Ok(found)
    }

    /// Run counts and total run time (ns) of this layer's programs loaded now, summed per
    /// name (kept by the kernel while BPF statistics are on).
    pub fn program_stats() -> Result<std::collections::BTreeMap<String, (u64, u64)>, LsmError> {
        let mut stats = std::collections::BTreeMap::new();
        for info in programs_now() {
            let info = info?;
            if let Some(name) = info.name_as_str()
                && is_ours(name)
            {
                let entry: &mut (u64, u64) = stats.entry(name.to_string()).or_default();
                entry.0 += info.run_count();
                entry.1 += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            }
        }
        Ok(stats)
    }

    /// [`Self::load`] for an agent that runs on regardless: the layer when active, and the
    /// status to report either way.
    pub fn start(config: &LsmConfig) -> (Option<LsmLayer>, LsmStatus) {
        match LsmLayer::load(config) {
            Ok(layer) => (Some(layer), LsmStatus::Active),
            Err(LsmError::Unsupported(why)) => (None, LsmStatus::Unsupported(why)),
            Err(e @ LsmError::NotController(..)) => (None, LsmStatus::Locked(e.to_string())),
            Err(e) => (None, LsmStatus::Failed(e.to_string())),
        }
    }

    /// The hooks attached.
    pub fn hooks(&self) -> &[&'static str] {
        &self.hooks
    }

    /// Instructions the verifier processed for each attached program.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        self.hooks
            .iter()
            .map(|name| {
                let count = self
                    .ebpf
                    .program(name)
                    .and_then(|p| p.info().ok())
                    .and_then(|info| info.verified_instruction_count());
                (*name, count)
            })
            .collect()
    }

    /// The refusals reported since the last call (non-blocking; poll [`Self::as_fd`] for
    /// readability to wait).
    pub fn events(&mut self) -> impl Iterator<Item = LsmEvent> + '_ {
        std::iter::from_fn(move || {
            loop {
                let item = self.events.next()?;
                let Some(raw) = crate::ebpf_object::decode::<guard_common::lsm::LsmEvent>(&item)
                else {
                    log::warn!("lsm: short event ({} bytes)", item.len());
                    continue;
                };
                let (Some(hook), Some(rule)) =
                    (LsmHook::from_u32(raw.hook), Rule::from_u32(raw.rule))
                else {
                    log::warn!("lsm: unknown hook {} or rule {}", raw.hook, raw.rule);
                    continue;
                };
                return Some(LsmEvent {
                    hook,
                    rule,
                    pid: raw.tgid,
                    tid: raw.pid,
                    uid: raw.uid,
                    refused: raw.refused != 0,
                    object: Identity::from_kernel(raw.dev, raw.ino),
                    mode: raw.mode,
                    nlink: raw.nlink,
                });
            }
        })
    }
}

/// `LSM_CONTROLLERS` is pinned too: a successor binary is added to it before an upgrade
/// (see [`LsmLayer::hand_over`]).
pub(super) const PINNED_MAPS: [&str; 4] =
    [INTERPRETERS_MAP, SIGNERS_MAP, EVENTS_MAP, CONTROLLERS_MAP];

/// The self-protection hooks' offsets and the pin tree they protect (created if missing).
pub(super) fn self_protect_settings(
    btf: &Btf,
    config: &LsmConfig,
) -> Result<SelfProtectSettings, LsmError> {
    if !config.protect_agent {
        return Ok(SelfProtectSettings::default());
    }
    let (pins_dev, pins_ino) = match &config.protected_pins {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| LsmError::Pin(dir.clone(), e.to_string()))?;
            let key = Identity::of_path(dir)
                .map_err(|e| LsmError::Pin(dir.clone(), e.to_string()))?
                .kernel_key();
            (key.dev, key.ino)
        }
        None => (0, 0),
    };
    Ok(SelfProtectSettings {
        task_tgid: btf.member_offset("task_struct", "tgid", 4)?,
        map_id: btf.member_offset("bpf_map", "id", 4)?,
        map_name: btf.member_offset("bpf_map", "name", 16)?,
        prog_aux: btf.member_offset("bpf_prog", "aux", 8)?,
        aux_id: btf.member_offset("bpf_prog_aux", "id", 4)?,
        dentry_parent: btf.member_offset("dentry", "d_parent", 8)?,
        vfsmount_sb: btf.member_offset("vfsmount", "mnt_sb", 8)?,
        pins_dev,
        pins_ino,
    })
}

/// Records the ids of the layer's programs for `bpf_prog`.
pub(super) fn own_programs(ebpf: &mut Ebpf, names: &[&'static str]) -> Result<(), LsmError> {
    let mut ids = Vec::new();
    for name in names {
        let program = ebpf.program(name).ok_or(LsmError::Missing(name))?;
        let info = program.info().map_err(|e| LsmError::Program(name, e))?;
        ids.push(info.id());
    }
    let mut map: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut(OWN_PROGS_MAP)
            .ok_or(LsmError::Missing(OWN_PROGS_MAP))?,
    )?;
    for id in ids {
        map.insert(id, 0, 0)?;
    }
    Ok(())
}

/// The controllers map of the layer pinned in `dir` (`None`: no layer with self-protection
/// is pinned there). [`LsmError::NotController`] when its self-protection refuses this
/// executable.
pub(super) fn pinned_controllers(
    dir: &Path,
) -> Result<Option<HashMap<MapData, InterpreterKey, u32>>, LsmError> {
    let path = dir.join(format!("map_{CONTROLLERS_MAP}"));
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    match MapData::from_pin(&path) {
        Ok(data) => Ok(Some(HashMap::try_from(aya::maps::Map::HashMap(data))?)),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EPERM) => {
            let exe = std::fs::read_link("/proc/self/exe")
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "this guard".into());
            Err(LsmError::NotController(dir.to_owned(), exe))
        }
        Err(e) => Err(LsmError::Pin(path, e.to_string())),
    }
}

/// The programs loaded in the kernel. One released between the listing of its id and the
/// open of that id (what unpinning sets off) is gone, not an error.
fn programs_now() -> impl Iterator<Item = Result<aya::programs::ProgramInfo, LsmError>> {
    aya::programs::loaded_programs().filter_map(|info| match info {
        Err(aya::programs::ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            None
        }
        other => Some(other.map_err(|e| LsmError::Program("(listing)", e))),
    })
}

/// The pin files (`link_*`, `map_*`) in `dir`; none when it does not exist.
pub(super) fn pins(dir: &Path) -> Result<Vec<PathBuf>, LsmError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LsmError::Pin(dir.to_owned(), e.to_string())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LsmError::Pin(dir.to_owned(), e.to_string()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("link_") || name.starts_with("map_") {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Replaces the pins in `dir` with this layer's links and maps.
pub(super) fn pin(
    ebpf: &Ebpf,
    dir: &Path,
    hooks: &[&'static str],
    links: Vec<FdLink>,
) -> Result<Vec<FdLink>, LsmError> {
    let err = |e: &dyn std::fmt::Display| LsmError::Pin(dir.to_owned(), e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    // A previous loader's pins, including hooks this configuration no longer enables.
    for old in pins(dir)? {
        std::fs::remove_file(&old).map_err(|e| err(&e))?;
    }
    let mut pinned = Vec::new();
    for (hook, link) in hooks.iter().zip(links) {
        let link = link
            .pin(dir.join(format!("link_{hook}")))
            .map_err(|e: PinError| err(&e))?;
        pinned.push(FdLink::from(link));
    }
    for name in PINNED_MAPS {
        ebpf.map(name)
            .ok_or(LsmError::Missing(name))?
            .pin(dir.join(format!("map_{name}")))
            .map_err(|e| err(&e))?;
    }
    Ok(pinned)
}

/// The interpreter map: each profiled interpreter with its dialect (the grammar
/// `main_script_exec` reads its command line with).
fn fill_interpreters(
    ebpf: &mut Ebpf,
    interpreters: &[crate::ebpf_object::Interpreter],
) -> Result<(), LsmError> {
    let mut map: HashMap<_, InterpreterKey, u32> = HashMap::try_from(
        ebpf.map_mut(INTERPRETERS_MAP)
            .ok_or(LsmError::Missing(INTERPRETERS_MAP))?,
    )?;
    for interpreter in interpreters {
        map.insert(interpreter.identity.kernel_key(), interpreter.kind(), 0)?;
    }
    Ok(())
}

pub(super) fn fill(
    ebpf: &mut Ebpf,
    name: &'static str,
    identities: &[Identity],
) -> Result<(), LsmError> {
    let mut map: HashMap<_, InterpreterKey, u32> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(LsmError::Missing(name))?)?;
    for identity in identities {
        map.insert(identity.kernel_key(), 0, 0)?;
    }
    Ok(())
}

impl AsFd for LsmLayer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl AsRawFd for LsmLayer {
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}
