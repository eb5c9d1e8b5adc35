//! Exists so cargo sees a library target (aya-build builds the binary for the BPF target;
//! guard depends on this crate only so cargo rebuilds guard when these sources change).
#![no_std]
