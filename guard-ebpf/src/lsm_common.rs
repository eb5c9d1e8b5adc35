//! What the LSM hooks share: the loader-set settings, the maps, and the reading of kernel
//! structs at offsets taken from the running kernel's BTF.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    btf_maps::InodeStorage,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel, generated,
    },
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, RingBuf},
};
use guard_common::{
    Rule,
    code_name::{CODE_SUFFIX_BYTES, CodeSuffix, MAX_CODE_SUFFIXES, MainScript},
    exec_gate::InterpreterKey,
    lsm::{
        AgentState, InodeState, InodeVerdict, LsmEvent, LsmOffsets, LsmSettings, PERMISSIVE, Trust,
    },
};

pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;

/// Set by the loader (`EbpfLoader::override_global`); in `.rodata`, so the verifier treats
/// its contents as constants and prunes disabled hooks.
#[unsafe(no_mangle)]
pub static LSM_SETTINGS: LsmSettings = LsmSettings {
    offsets: LsmOffsets::ZERO,
    flags: 0,
    trust: Trust::EMPTY,
    code_suffixes: [CodeSuffix {
        len: 0,
        bytes: [0; CODE_SUFFIX_BYTES],
    }; MAX_CODE_SUFFIXES],
    code_suffix_count: 0,
};

/// The profiled interpreters, by executable identity (the value is unused).
#[map]
pub static LSM_INTERPRETERS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(64, 0);

/// Executables allowed to set or remove `security.ima` (the value is unused).
#[map]
pub static LSM_SIGNERS: HashMap<InterpreterKey, u32> = HashMap::with_max_entries(16, 0);

/// What the kernel tracks per inode: changes and writers (see [`InodeState`]).
#[btf_map]
pub static LSM_INODE_STATE: InodeStorage<InodeState> = InodeStorage::new();

/// The agent's verdicts per inode (see [`InodeVerdict`]); written from user space.
#[btf_map]
pub static LSM_VERDICTS: InodeStorage<InodeVerdict> = InodeStorage::new();

/// Each interpreter task's script operand and code-link flag (see [`MainScript`]).
#[btf_map]
pub static LSM_MAIN_SCRIPTS: TaskStorage<MainScript> = TaskStorage::new();

/// Interpreters' read-only opens of regular files counted in
/// [`InodeState::code_readers`], by `struct file` address, until released.
#[map]
pub static LSM_READER_FILES: HashMap<u64, u8> = HashMap::with_max_entries(65536, 0);

/// Interpreters' read-only opens of regular files between `file_open` and
/// `file_post_open`, by `struct file` address: the inode's
/// [`InodeState::content_changes`] as `file_open` saw it. An open refused in between
/// (fanotify said no) never reaches `file_post_open`: LRU, so its entry ages out. An entry
/// is missing at `file_post_open` when `file_open` did not judge the open (an identity
/// adopted, a layer replaced in between) or, under a flood of refused opens filling the
/// map within one open's check, when it aged out: then the window is not checked.
#[map]
pub static LSM_OPENING_FILES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Whether the agent is there to check what the kernel cannot (see [`AgentState`]).
#[map]
pub static LSM_AGENT: Array<AgentState> = Array::with_max_entries(1, 0);

#[map]
pub static LSM_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

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
    pub fn current(&self, create: bool) -> *mut T {
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
    pub fn delete_current(&self) {
        // SAFETY: as in `current`.
        unsafe {
            generated::bpf_task_storage_delete(
                core::ptr::from_ref(self).cast_mut().cast(),
                generated::bpf_get_current_task_btf(),
            )
        };
    }
}

macro_rules! setting {
    ($($field:tt)+) => {
        // SAFETY: a plain read of the loader-initialised global; volatile so the compiler
        // does not fold in the zeroes it was compiled with.
        unsafe { core::ptr::read_volatile(&raw const crate::lsm_common::LSM_SETTINGS.$($field)+) }
    };
}
pub(crate) use setting;

/// Reads `*(base + offset)` from kernel memory.
#[inline(always)]
pub fn kread<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel tolerates any address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// Loads a pointer member of a kernel struct straight from a BTF-typed pointer (a hook's
/// argument or a pointer loaded this way), not through `bpf_probe_read_kernel`: the
/// verifier then knows the result's type, which the local-storage helpers require. A bad
/// pointer reads as null (the verifier turns such loads into fault-tolerant ones).
///
/// # Safety
///
/// `base` must be a BTF-typed pointer the verifier tracks and `offset` the offset of a
/// pointer member of its struct (a constant: from the read-only settings).
#[inline(always)]
pub unsafe fn btf_member(base: *const u8, offset: u32) -> *mut u8 {
    // SAFETY: per the contract; the verifier checks the access against the struct's BTF.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<*mut u8>()) }
}

/// Whether the agent is running to check signatures.
#[inline(always)]
pub fn agent_alive() -> bool {
    LSM_AGENT.get(0).is_some_and(|agent| agent.alive != 0)
}

/// An inode's identity and the facts the hooks judge.
pub struct InodeFacts {
    pub key: InterpreterKey,
    pub mode: u32,
    pub nlink: u32,
}

#[inline(always)]
pub fn inode_key(inode: *const u8) -> Result<InterpreterKey, i32> {
    let ino: u64 = kread(inode, setting!(offsets.inode_ino))?;
    let sb: *const u8 = kread(inode, setting!(offsets.inode_sb))?;
    let dev: u32 = kread(sb, setting!(offsets.sb_dev))?;
    Ok(InterpreterKey { ino, dev, pad: 0 })
}

#[inline(always)]
pub fn inode_facts(inode: *const u8) -> Result<InodeFacts, i32> {
    let key = inode_key(inode)?;
    let mode: u16 = kread(inode, setting!(offsets.inode_mode))?;
    let nlink: u32 = kread(inode, setting!(offsets.inode_nlink))?;
    Ok(InodeFacts {
        key,
        mode: mode as u32,
        nlink,
    })
}

/// The identity of the current task's executable (`current->mm->exe_file->f_inode`);
/// `None` for kernel threads.
#[inline(always)]
pub fn current_exe() -> Result<Option<InterpreterKey>, i32> {
    // SAFETY: returns the current task pointer; only read through bpf_probe_read_kernel.
    let task = unsafe { generated::bpf_get_current_task() } as *const u8;
    let mm: *const u8 = kread(task, setting!(offsets.task_mm))?;
    if mm.is_null() {
        return Ok(None);
    }
    let exe: *const u8 = kread(mm, setting!(offsets.mm_exe_file))?;
    if exe.is_null() {
        return Ok(None);
    }
    let inode: *const u8 = kread(exe, setting!(offsets.file_inode))?;
    inode_key(inode).map(Some)
}

#[inline(always)]
pub fn is_interpreter(key: &InterpreterKey) -> bool {
    // SAFETY: the value is only tested for presence, never read through.
    unsafe { LSM_INTERPRETERS.get(key) }.is_some()
}

#[inline(always)]
pub fn is_signer(key: &InterpreterKey) -> bool {
    // SAFETY: as above.
    unsafe { LSM_SIGNERS.get(key) }.is_some()
}

/// Reports a refusal and returns what the hook returns: `-errno`, or 0 when permissive.
#[inline(always)]
pub fn refuse(hook: u32, rule: Rule, facts: &InodeFacts, errno: i32) -> i32 {
    let refused = setting!(flags) & PERMISSIVE == 0;
    let pid_tgid = bpf_get_current_pid_tgid();
    let event = LsmEvent {
        hook,
        rule: rule as u32,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        refused: refused as u32,
        ino: facts.key.ino,
        dev: facts.key.dev,
        mode: facts.mode,
        nlink: facts.nlink,
        pad: 0,
    };
    // A full ring buffer loses the report, never the refusal.
    let _ = LSM_EVENTS.output::<LsmEvent>(&event, 0);
    if refused { -errno } else { 0 }
}
