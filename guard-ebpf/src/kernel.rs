//! The one way the programs read kernel memory and the loader's settings: struct members at
//! offsets the loader took from the running kernel's BTF (one object runs on every kernel,
//! like Kunai's CO-RE shims), and globals the loader set before the verifier saw them.

use aya_ebpf::helpers::bpf_probe_read_kernel;

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
