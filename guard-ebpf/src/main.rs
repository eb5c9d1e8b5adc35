//! Kernel programs of guard.
//!
//! `sched_process_exec` is the exec gate: it runs in the context of the task that has just
//! exec'd, after the point of no return and before its first user instruction, so a
//! `bpf_send_signal(SIGKILL)` here kills the new program before it runs a single line.
//! The host build of this crate is an empty placeholder so `cargo build --workspace` works.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The verdict cache counts changes with an atomic add (see `verdicts`).
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod agent_exit;
#[cfg(target_arch = "bpf")]
mod bprm_creds_for_exec;
#[cfg(target_arch = "bpf")]
mod code_link;
#[cfg(target_arch = "bpf")]
mod exec_gate;
#[cfg(target_arch = "bpf")]
mod exec_map;
#[cfg(target_arch = "bpf")]
mod file_open;
#[cfg(target_arch = "bpf")]
mod inode_xattr;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod lsm_common;
#[cfg(target_arch = "bpf")]
mod main_script;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod native;
#[cfg(target_arch = "bpf")]
mod native_gate;
#[cfg(target_arch = "bpf")]
mod self_protect;
#[cfg(target_arch = "bpf")]
mod verdicts;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs where this is reachable; it only has to type-check.
    loop {}
}

#[cfg(target_arch = "bpf")]
// GPL-compatible: bpf_send_signal and the user-memory reads are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
