//! guard: lets language interpreters run only trusted code.
//!
//! The library holds everything that is not an edge: the signature format and keys, the
//! policy, the pure decision engine, and the fact gathering from open file descriptors. The
//! `guard` binary wires them to the command line and to the kernel.

pub mod acl;
pub mod agent;
pub mod btf;
pub mod cache;
pub mod digest;
pub mod dynamic_code;
pub mod ebpf_object;
pub mod elf;
pub mod engine;
pub mod exec_gate;
pub mod facts;
pub mod ima;
pub mod keys;
pub mod launch;
pub mod lsm;
pub mod modules;
pub mod packages;
pub mod policy;
pub mod python_hook;
pub mod signed_policy;
pub mod sniff;
