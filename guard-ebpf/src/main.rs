//! Kernel programs of guard. Built for the BPF target by the eBPF pipeline (issue #4);
//! until then this crate only has to build.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}
