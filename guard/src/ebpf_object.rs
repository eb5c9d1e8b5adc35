//! The kernel programs, one eBPF object for the exec gate ([`crate::exec_gate`]) and the
//! LSM layer ([`crate::lsm`]): built for the BPF target from `guard-ebpf` by `build.rs`,
//! each loader attaches only its own programs.

pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));
