//! The kernel programs, one eBPF object for the exec gate ([`crate::exec_gate`]) and the
//! LSM layer ([`crate::lsm`]), built for the BPF target from `guard-ebpf` by `build.rs`
//! (each loader attaches only its own programs), and the one way user space reads the
//! records they report.

pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

/// One record of a kernel program's ring buffer, as the program wrote it; `None` when the
/// item is shorter than a `T` (never read past what the kernel wrote).
pub(crate) fn decode<T: aya::Pod>(item: &[u8]) -> Option<T> {
    if item.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `item` holds at least `size_of::<T>()` bytes (checked above) and `T: Pod` is
    // valid for any bit pattern; the ring buffer gives no alignment guarantee, hence
    // read_unaligned.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
}
