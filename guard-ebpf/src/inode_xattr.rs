//! `lsm/inode_setxattr` and `lsm/inode_removexattr`: only the executables the configuration
//! names as signers (guard, evmctl) may change `security.ima`; anyone else, root included,
//! gets `EPERM`. Without this, root could swap the signature the other layers trust.
//! Every xattr change allowed here voids the inode's cached verdicts.

use aya_ebpf::{helpers::generated, macros::lsm, programs::LsmContext};
use guard_common::lsm::Hook;
use guard_common::{Rule, lsm::PROTECT_SIGNATURES};

use crate::kernel::kread;
use crate::lsm_common::{EPERM, current_exe, inode_facts, refuse, setting};
use crate::maps::is_signer;
use crate::verdicts::dentry_changed;

/// `"security.ima\0"` zero-padded to 16 bytes, as two native-endian words.
const IMA_NAME: [u64; 2] = {
    let mut bytes = [0u8; 16];
    let name = b"security.ima";
    let mut i = 0;
    while i < name.len() {
        bytes[i] = name[i];
        i += 1;
    }
    [
        u64::from_ne_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]),
        u64::from_ne_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ]),
    ]
};

// inode_setxattr(struct mnt_idmap *, struct dentry *, const char *name, const void *value,
//                size_t size, int flags), then the previous verdict.
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(6);
    if retval != 0 {
        return retval;
    }
    allowed_change(
        judge(Hook::InodeSetxattr as u32, ctx.arg(1), ctx.arg(2)),
        ctx.arg(1),
    )
}

// inode_removexattr(struct mnt_idmap *, struct dentry *, const char *name), then the
// previous verdict.
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    allowed_change(
        judge(Hook::InodeRemovexattr as u32, ctx.arg(1), ctx.arg(2)),
        ctx.arg(1),
    )
}

/// Any xattr change that goes ahead voids the inode's verdicts (the signature, or what a
/// future policy may read, may have changed).
#[inline(always)]
fn allowed_change(verdict: i32, dentry: *const u8) -> i32 {
    if verdict == 0 {
        dentry_changed(dentry);
    }
    verdict
}

#[inline(always)]
fn judge(hook: u32, dentry: *const u8, name: *const u8) -> i32 {
    if setting!(flags) & PROTECT_SIGNATURES == 0 {
        return 0;
    }
    let mut buf = [0u64; 2];
    // SAFETY: writes at most 16 bytes into `buf`, which is 16 bytes long; `name` is a
    // kernel string, and a bad address is an error.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            buf.as_mut_ptr().cast(),
            16,
            name as *const core::ffi::c_void,
        )
    };
    // Longer names filled the buffer without matching the NUL: not ours.
    if n < 0 {
        return -EPERM;
    }
    if buf[0] != IMA_NAME[0] || buf[1] != IMA_NAME[1] {
        return 0;
    }
    match current_exe() {
        Ok(Some(exe)) if is_signer(&exe) => return 0,
        _ => {}
    }
    let Ok(inode) = kread::<*const u8>(dentry, setting!(offsets.dentry_inode)) else {
        return -EPERM;
    };
    match inode_facts(inode) {
        Ok(facts) => refuse(hook, Rule::SignerOnly, &facts, EPERM),
        Err(_) => -EPERM,
    }
}
