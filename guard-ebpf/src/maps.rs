//! The programs' maps (the LSM layer's and the exec gate's), behind typed functions that hold their `unsafe`: the hooks read
//! and change what the maps hold, never the maps themselves. User space finds each map by
//! its name (`LSM_…`), so names are part of the wire format.

use crate::native_gate::Pending;
use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, BPF_NOEXIST, bpf_map_type, inode,
    },
    btf_maps::InodeStorage,
    helpers::generated,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use guard_common::{
    code_name::MainScript,
    exec_gate::{GateEvent, InterpreterKey, MAX_EVAL_MODULES, ModuleKey},
    lsm::{AgentState, InodeState, InodeVerdict, LsmEvent},
};

/// The profiled interpreters, by executable identity; the value is the grammar of their
/// command line (a `guard_common::argv::Dialect`).
#[map]
static LSM_INTERPRETERS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(64, 0);

/// Executables allowed to set or remove `security.ima` (the value is unused).
#[map]
static LSM_SIGNERS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(16, 0);

/// What the kernel tracks per inode: changes and writers (see [`InodeState`]).
#[btf_map]
static LSM_INODE_STATE: InodeStorage<InodeState> = InodeStorage::new();

/// The agent's verdicts per inode (see [`InodeVerdict`]); written from user space.
#[btf_map]
static LSM_VERDICTS: InodeStorage<InodeVerdict> = InodeStorage::new();

/// Each interpreter task's script operand and code-link flag (see [`MainScript`]).
#[btf_map]
static LSM_MAIN_SCRIPTS: TaskStorage<MainScript> = TaskStorage::new();

/// Interpreters' read-only opens of regular files counted in
/// [`InodeState::code_readers`], by `struct file` address, until released.
#[map]
static LSM_READER_FILES: HashMap<u64, u8> = HashMap::with_max_entries(65536, 0);

/// Whether the agent is there to check what the kernel cannot (see [`AgentState`]).
#[map]
static LSM_AGENT: Array<AgentState> = Array::with_max_entries(1, 0);

#[map]
static LSM_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// A task storage map. aya-ebpf has none: the same BTF layout as its `InodeStorage`.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader reads from BTF; never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The current task's value (created zeroed with `create`); null when there is none
    /// or no memory for it.
    #[inline(always)]
    fn current(&self, create: bool) -> *mut T {
        let flags = if create {
            BPF_LOCAL_STORAGE_GET_F_CREATE as u64
        } else {
            0
        };
        // SAFETY: the map is this static; the task pointer is the BTF-typed current task;
        // a null value asks the kernel to zero a new entry.
        unsafe {
            generated::bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                generated::bpf_get_current_task_btf(),
                core::ptr::null_mut(),
                flags,
            )
        }
        .cast()
    }

    /// Removes the current task's value, if any.
    #[inline(always)]
    fn delete_current(&self) {
        // SAFETY: as in `current`.
        unsafe {
            generated::bpf_task_storage_delete(
                core::ptr::from_ref(self).cast_mut().cast(),
                generated::bpf_get_current_task_btf(),
            )
        };
    }
}

/// The dialect of a profiled interpreter's executable; `None` for any other.
#[inline(always)]
pub fn interpreter_dialect(key: &InterpreterKey) -> Option<u32> {
    // SAFETY: the value is a plain u32 copied out at once.
    unsafe { LSM_INTERPRETERS.get(key) }.copied()
}

/// Whether `key` is a profiled interpreter.
#[inline(always)]
pub fn is_interpreter(key: &InterpreterKey) -> bool {
    // SAFETY: the value is only tested for presence, never read through.
    unsafe { LSM_INTERPRETERS.get(key) }.is_some()
}

/// Whether `key` is an executable allowed to change `security.ima`.
#[inline(always)]
pub fn is_signer(key: &InterpreterKey) -> bool {
    // SAFETY: as above.
    unsafe { LSM_SIGNERS.get(key) }.is_some()
}

/// Whether the agent is running to check signatures.
#[inline(always)]
pub fn agent_alive() -> bool {
    LSM_AGENT.get(0).is_some_and(|agent| agent.alive != 0)
}

/// The agent's process `tgid` is gone: nobody checks signatures until one says it does.
#[inline(always)]
pub fn agent_exited(tgid: u32) {
    if let Some(agent) = LSM_AGENT.get_ptr_mut(0) {
        // SAFETY: a pointer into the array's only entry, valid for the program's run.
        unsafe {
            if (*agent).tgid == tgid {
                (*agent).alive = 0;
            }
        }
    }
}

/// Reports a refusal to user space. A full ring buffer loses the report, never the refusal.
#[inline(always)]
pub fn report(event: &LsmEvent) {
    let _ = LSM_EVENTS.output::<LsmEvent>(event, 0);
}

/// The current task's main-script record, created zeroed with `create`; `None` when there
/// is none (or no memory for it).
#[inline(always)]
pub fn main_script(create: bool) -> Option<&'static mut MainScript> {
    // SAFETY: a non-null task storage pointer is the current task's value, alive while the
    // task is, and only the task itself runs the programs that touch it.
    unsafe { LSM_MAIN_SCRIPTS.current(create).as_mut() }
}

/// Forgets the current task's main-script record.
#[inline(always)]
pub fn forget_main_script() {
    LSM_MAIN_SCRIPTS.delete_current();
}

/// A `struct inode *` the verifier tracks as BTF-typed (`file->f_inode`, `dentry->d_inode`
/// loaded from a hook's argument by [`crate::lsm_common::btf_member`]); may be null. The
/// inode-storage helpers accept nothing else, and refuse null.
#[derive(Clone, Copy)]
pub struct Inode(pub *mut u8);

impl Inode {
    #[inline(always)]
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    #[inline(always)]
    fn storage_key(self) -> *mut inode {
        self.0.cast::<inode>()
    }
}

/// The kernel's record of an inode an interpreter opened (see [`InodeState`]): a pointer
/// into inode storage, valid for the program's run. Fields several CPUs change are read
/// volatile and added to atomically.
#[derive(Clone, Copy)]
pub struct InodeStateRef(*mut InodeState);

impl InodeStateRef {
    /// The inode's record, if it has one.
    #[inline(always)]
    pub fn of(inode: Inode) -> Option<InodeStateRef> {
        // SAFETY: `inode` is BTF-typed (or null, which the helper rejects); looked up, never
        // created.
        let state = unsafe { LSM_INODE_STATE.get_ptr_mut(inode.storage_key()) };
        (!state.is_null()).then_some(InodeStateRef(state))
    }

    /// The inode's record, created zeroed if it has none; `None` when there is no memory.
    #[inline(always)]
    pub fn of_or_create(inode: Inode) -> Option<InodeStateRef> {
        let mut fresh = InodeState::default();
        // SAFETY: as in `of`; `fresh` is the initial value copied in on creation.
        let state =
            unsafe { LSM_INODE_STATE.get_or_insert_ptr_mut(inode.storage_key(), Some(&mut fresh)) };
        (!state.is_null()).then_some(InodeStateRef(state))
    }

    #[inline(always)]
    pub fn changes(self) -> u64 {
        // SAFETY: the inode's value, alive for the program's run.
        unsafe { core::ptr::read_volatile(&raw const (*self.0).changes) }
    }

    #[inline(always)]
    pub fn content_changes(self) -> u64 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.0).content_changes) }
    }

    #[inline(always)]
    pub fn code_readers(self) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.0).code_readers) }
    }

    /// Concurrent opens all store the same meaning: the last one stands.
    #[inline(always)]
    pub fn set_writers_at_open(self, writers: bool) {
        // SAFETY: as above.
        unsafe { (*self.0).writers_at_open = writers as u32 };
    }

    /// Counts a change (and, with `content`, a change of the bytes). Atomic
    /// (BPF_ATOMIC_ADD) so that concurrent changes are all counted: a lost count could
    /// leave a truncation racing another change unseen. core's AtomicU64 has no fetch_add
    /// on this target.
    #[inline(always)]
    pub fn count_change(self, content: bool) {
        // SAFETY: the inode's value, alive for the program's run.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                &raw mut (*self.0).changes,
                1,
            );
            if content {
                core::intrinsics::atomic_xadd::<
                    u64,
                    u64,
                    { core::intrinsics::AtomicOrdering::Relaxed },
                >(&raw mut (*self.0).content_changes, 1);
            }
        }
    }

    /// Adds `delta` to the interpreters reading the inode (`u32::MAX` takes one away).
    #[inline(always)]
    pub fn add_code_readers(self, delta: u32) {
        // SAFETY: as in `count_change`.
        unsafe {
            core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
                &raw mut (*self.0).code_readers,
                delta,
            )
        };
    }
}

/// The change count the agent's verdict on the inode is stamped with, if it recorded one.
#[inline(always)]
pub fn verdict_changes(inode: Inode) -> Option<u64> {
    // SAFETY: `inode` is BTF-typed; the verdict is looked up, never created here.
    let verdict = unsafe { LSM_VERDICTS.get_ptr_mut(inode.storage_key()) };
    // SAFETY: non-null means the inode's value, alive for the program's run.
    (!verdict.is_null()).then(|| unsafe { (*verdict).changes })
}

/// Records an interpreter's read-only open `file` (a `struct file` address) as counted;
/// false when it already was, or the table is full.
#[inline(always)]
pub fn reader_file_add(file: u64) -> bool {
    LSM_READER_FILES
        .insert(&file, &1, BPF_NOEXIST.into())
        .is_ok()
}

/// Forgets a counted reader's `file`; whether it was counted.
#[inline(always)]
pub fn reader_file_take(file: u64) -> bool {
    // SAFETY: presence test only.
    if unsafe { LSM_READER_FILES.get(&file) }.is_none() {
        return false;
    }
    let _ = LSM_READER_FILES.remove(&file);
    true
}

// The exec gate's maps.

/// The profiled interpreters and the dynamic loaders, by executable identity; the value is
/// `KIND_INTERPRETER` or `KIND_LOADER`. The gate's maps are named `LSM_…`: the BPF LSM
/// layer's self-protection refuses descriptors for maps by that prefix to all but the
/// agent's controllers, so nobody can empty this one to switch the gate off.
#[map]
static LSM_GATE_EXECS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(64, 0);

/// The interpreter modules (`-m NAME` that amounts to `-c` or stdin code), by NUL-padded
/// name; the value holds `MODULE_INLINE_CODE` / `MODULE_STDIN_CODE` bits.
#[map]
static LSM_GATE_MODULES: HashMap<ModuleKey, u32> =
    HashMap::with_max_entries(MAX_EVAL_MODULES as u32, 0);

#[map]
static LSM_GATE_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Room for the gate's walk over a command line, one slot per CPU. On the stack, the walk
/// (its word buffer, the judge) would push the program, its `bpf_loop` step and what the
/// step calls past the verifier's 512 bytes of combined stack.
#[map]
static LSM_GATE_SCRATCH: PerCpuArray<GateScratch> = PerCpuArray::with_max_entries(1, 0);

/// The scratch slot's bytes, aligned for any walk.
#[repr(C, align(8))]
pub struct GateScratch([u8; GATE_SCRATCH]);

const GATE_SCRATCH: usize = 512;

/// This CPU's scratch slot, for a `T` the caller writes whole before reading any of it.
#[inline(always)]
pub fn gate_scratch<T>() -> Option<*mut T> {
    const {
        assert!(core::mem::size_of::<T>() <= GATE_SCRATCH);
        assert!(core::mem::align_of::<T>() <= 8);
    }
    LSM_GATE_SCRATCH.get_ptr_mut(0).map(|slot| slot.cast::<T>())
}

/// Room for the LSM layer's walk over an exec's command line (`main_script_exec`), one slot
/// per CPU: the walk's reader then lives in a map, whose contents the verifier does not
/// track, rather than on the stack, where it tracks every byte a reader keeps (perl's
/// reader keeps its cluster's state in memory for the exec gate's sake: on the stack its
/// walk went past the verifier's million instructions).
#[map]
static LSM_OPERAND_SCRATCH: PerCpuArray<GateScratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's slot for the operand walk, for a `T` the caller writes whole before reading
/// any of it.
#[inline(always)]
pub fn operand_scratch<T>() -> Option<*mut T> {
    const {
        assert!(core::mem::size_of::<T>() <= GATE_SCRATCH);
        assert!(core::mem::align_of::<T>() <= 8);
    }
    LSM_OPERAND_SCRATCH
        .get_ptr_mut(0)
        .map(|slot| slot.cast::<T>())
}

/// `KIND_INTERPRETER` or `KIND_LOADER` for an executable the gate watches.
#[inline(always)]
pub fn gate_exec_kind(key: &InterpreterKey) -> Option<u32> {
    // SAFETY: the value is a plain u32 copied out at once; the user side only inserts.
    unsafe { LSM_GATE_EXECS.get(key) }.copied()
}

/// The `MODULE_*` bits of an interpreter module (0: not one).
#[inline(always)]
pub fn gate_module_kinds(key: &ModuleKey) -> u32 {
    // SAFETY: the value is a plain u32 copied out at once; the user side fills the map
    // before the program is attached and never changes it afterwards.
    unsafe { LSM_GATE_MODULES.get(key) }.copied().unwrap_or(0)
}

/// Reports a kill. A full ring buffer loses the report, never the kill.
#[inline(always)]
pub fn gate_report(event: &GateEvent) {
    let _ = LSM_GATE_EVENTS.output::<GateEvent>(event, 0);
}

// The native-code gate's maps.

/// Return-path checks skipped because the address space stayed locked (one slot per CPU;
/// the agent sums them into `guard status`).
#[map]
static LSM_GATE_UNVERIFIED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Executable-mapping calls in flight, keyed by `pid_tgid`. LRU: a thread that never
/// returns (killed inside) leaves no debris; evicting an entry needs thousands of calls in
/// flight at once, and `mmap`'s entry check has already judged its descriptor.
#[map]
static LSM_GATE_MAPPINGS: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Counts a return-path check skipped on this CPU.
#[inline(always)]
pub fn count_unverified() {
    if let Some(slot) = LSM_GATE_UNVERIFIED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a tracing program is not preempted while it runs.
        unsafe { *slot += 1 };
    }
}

/// Records thread `pid_tgid`'s executable-mapping call in flight.
#[inline(always)]
pub fn pending_mapping_record(pid_tgid: u64, pending: &Pending) {
    let _ = LSM_GATE_MAPPINGS.insert(&pid_tgid, pending, 0);
}

/// Thread `pid_tgid`'s call in flight, forgotten.
#[inline(always)]
pub fn pending_mapping_take(pid_tgid: u64) -> Option<Pending> {
    // SAFETY: the value is copied out at once.
    let pending = unsafe { LSM_GATE_MAPPINGS.get(&pid_tgid) }.copied()?;
    let _ = LSM_GATE_MAPPINGS.remove(&pid_tgid);
    Some(pending)
}

// Self-protection's maps.

/// Executables that may stop, trace and unpin the agent (the value is unused).
#[map]
static LSM_CONTROLLERS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(16, 0);

/// The protected process (its thread group id; 0: none). Set by the loader, cleared by
/// `sched_process_exit` when it exits, so a recycled pid is never protected.
#[map]
static LSM_PROTECTED: Array<u32> = Array::with_max_entries(1, 0);

/// Ids of the layer's programs (the value is unused), filled by the loader.
#[map]
static LSM_OWN_PROGS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// The protected process's thread group id (0: none).
#[inline(always)]
pub fn protected_tgid() -> u32 {
    LSM_PROTECTED.get(0).copied().unwrap_or(0)
}

/// The protected process `tgid` exited: a recycled pid is never protected.
#[inline(always)]
pub fn protected_exited(tgid: u32) {
    if let Some(protected) = LSM_PROTECTED.get_ptr_mut(0) {
        // SAFETY: a pointer into the array's only entry, valid for the program's run.
        unsafe {
            if *protected == tgid {
                *protected = 0;
            }
        }
    }
}

/// Whether `exe` may stop, trace and unpin the agent.
#[inline(always)]
pub fn is_controller(exe: &InterpreterKey) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { LSM_CONTROLLERS.get(exe) }.is_some()
}

/// Whether `id` is one of the layer's programs.
#[inline(always)]
pub fn is_own_program(id: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { LSM_OWN_PROGS.get(&id) }.is_some()
}
