//! The one way the programs read kernel memory and the loader's settings: struct members at
//! offsets the loader took from the running kernel's BTF (one object runs on every kernel,
//! like Kunai's CO-RE shims), and globals the loader set before the verifier saw them.

use core::ffi::c_void;
use core::ops::ControlFlow;

use guard_common::code_name::NAME_BUFFER;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated,
};

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

/// Reads a field of a loader-set global (`EbpfLoader::override_global`): volatile, so the
/// compiler does not fold in the zeroes the object was compiled with.
#[inline(always)]
pub fn loader_set<T: Copy>(field: *const T) -> T {
    // SAFETY: `field` points into a static (the settings macros take `&raw const` of one),
    // valid for the program's whole life and never written by the programs.
    unsafe { core::ptr::read_volatile(field) }
}

/// A pointer-sized word of the current task's user memory.
#[inline(always)]
pub fn read_user_u64(address: u64) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_user tolerates any address; a bad one is an error.
    unsafe { bpf_probe_read_user(address as *const u64) }
}

/// The user string the user pointer at `slot` points to (an `argv` or `envp` entry), read
/// into `buf`: at most `buf.len() - 1` bytes, NUL-terminated.
#[inline(always)]
pub fn read_user_str(slot: u64, buf: &mut [u8]) -> Result<&[u8], i32> {
    let ptr = read_user_u64(slot)?;
    // SAFETY: as above; the helper writes at most `buf.len()` bytes.
    unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, buf) }
}

/// The first 32 bytes of the user string the user pointer at `slot` points to (an `envp`
/// entry), zero-filled after its NUL (so a pattern's tail cannot match stale bytes), as
/// words for masked comparison.
#[inline(always)]
pub fn read_user_words(slot: u64) -> Result<[u64; 4], i32> {
    let ptr = read_user_u64(slot)?;
    let mut entry = [0u64; 4];
    // SAFETY: writes at most 32 bytes into `entry`, which is 32 bytes long; a bad address
    // is an error.
    let n = unsafe {
        generated::bpf_probe_read_user_str(entry.as_mut_ptr().cast(), 32, ptr as *const c_void)
    };
    if n < 0 { Err(n as i32) } else { Ok(entry) }
}

/// Reads `len` (at most [`NAME_BUFFER`]) bytes of the current task's user memory into `buf`.
#[inline(always)]
pub fn read_user_name(address: u64, buf: &mut [u8; NAME_BUFFER], len: usize) -> Result<(), i32> {
    if len == 0 {
        return Ok(());
    }
    if len > NAME_BUFFER {
        return Err(-1);
    }
    // SAFETY: writes `len` (1 to NAME_BUFFER) bytes into `buf`; a bad address is an error.
    #[allow(clippy::cast_possible_truncation)]
    let ret = unsafe {
        generated::bpf_probe_read_user(
            buf.as_mut_ptr().cast(),
            verifier_bounded(len as u32),
            address as *const c_void,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret as i32) }
}

/// Reads `len` (1 to [`NAME_BUFFER`], checked by the caller) bytes of kernel memory at
/// `name` (a dentry's name) into `buf`.
#[inline(always)]
pub fn read_kernel_name(name: *const u8, buf: &mut [u8; NAME_BUFFER], len: u32) -> Result<(), i32> {
    // SAFETY: writes `len` (1 to NAME_BUFFER) bytes into `buf`; a bad address is an error.
    let ret = unsafe {
        generated::bpf_probe_read_kernel(
            buf.as_mut_ptr().cast(),
            verifier_bounded(len),
            name.cast(),
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret as i32) }
}

/// Reads the NUL-terminated kernel string at `text` (a symlink's target) into `buf`, at
/// most `buf.len() - 1` bytes and its NUL: the bytes read with the NUL.
#[inline(always)]
pub fn read_kernel_str(text: *const u8, buf: &mut [u8; NAME_BUFFER]) -> Result<usize, i32> {
    // SAFETY: writes at most NAME_BUFFER bytes into `buf`, which is that long; a bad address
    // is an error.
    let ret = unsafe {
        generated::bpf_probe_read_kernel_str(
            buf.as_mut_ptr().cast(),
            NAME_BUFFER as u32,
            text.cast(),
        )
    };
    if ret < 0 {
        Err(ret as i32)
    } else {
        Ok(ret as usize)
    }
}

/// `len`, known to be 1 to [`NAME_BUFFER`], in a form the verifier can bound: the
/// compiler folds range checks into wrapping arithmetic the verifier cannot follow.
#[inline(always)]
fn verifier_bounded(len: u32) -> u32 {
    ((len - 1) & (NAME_BUFFER as u32 - 1)) + 1
}

/// The body of a loop the verifier checks once, whatever the number of iterations
/// (`bpf_loop`): an open-coded loop over words, each with a loop over its bytes, would be
/// verified once per word and combination of states, over the instruction budget.
pub trait LoopBody {
    /// Iteration `index` (from 0); `Break` stops the loop.
    fn step(&mut self, index: u64) -> ControlFlow<()>;
}

extern "C" fn loop_step<B: LoopBody>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the body `bounded_loop` handed to bpf_loop, alive and unaliased for
    // the duration of the loop.
    let body = unsafe { &mut *ctx.cast::<B>() };
    match body.step(index) {
        ControlFlow::Continue(()) => 0,
        ControlFlow::Break(()) => 1,
    }
}

/// Runs `body` for iterations 0, 1, … at most `iterations` times, until it breaks.
#[inline(always)]
pub fn bounded_loop<B: LoopBody>(iterations: u32, body: &mut B) {
    // SAFETY: `loop_step::<B>` has the callback signature bpf_loop expects, and `body`
    // outlives the call.
    unsafe {
        generated::bpf_loop(
            iterations,
            loop_step::<B> as *mut c_void,
            core::ptr::from_mut(body).cast(),
            0,
        )
    };
}
