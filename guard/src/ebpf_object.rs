//! The kernel programs, one eBPF object for the exec gate ([`crate::exec_gate`]) and the
//! LSM layer ([`crate::lsm`]), built for the BPF target from `guard-ebpf` by `build.rs`
//! (each loader attaches only its own programs), and the one way user space reads the
//! records they report. What both loaders share lives here: the kernel struct offsets read
//! from BTF, and the identity of a file as the programs' maps key it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use guard_common::exec_gate::InterpreterKey;
use guard_common::lsm::LsmOffsets;

use crate::btf::{Btf, BtfError};

pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard-ebpf"));

/// One record of a kernel program's ring buffer, as the program wrote it; `None` when the
/// item is shorter than a `T` (never read past what the kernel wrote).
#[allow(unsafe_code)]
pub(crate) fn decode<T: aya::Pod>(item: &[u8]) -> Option<T> {
    if item.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `item` holds at least `size_of::<T>()` bytes (checked above) and `T: Pod` is
    // valid for any bit pattern; the ring buffer gives no alignment guarantee, hence
    // read_unaligned.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })
}

/// A profiled interpreter as the kernel layers know it: its executable's identity, and the
/// grammar its command line is read with (the value their maps hold for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interpreter {
    pub identity: Identity,
    pub dialect: guard_common::argv::Dialect,
}

impl Interpreter {
    /// A CPython interpreter.
    pub fn python(identity: Identity) -> Interpreter {
        Interpreter {
            identity,
            dialect: guard_common::argv::Dialect::Python,
        }
    }

    /// The value of the kernel maps' entry for it.
    pub(crate) fn kind(self) -> u32 {
        self.dialect as u32
    }
}

/// An executable's identity as `stat(2)` reports it (`st_dev` in user-space encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl From<crate::engine::FileId> for Identity {
    fn from(id: crate::engine::FileId) -> Identity {
        Identity {
            dev: id.dev,
            ino: id.ino,
        }
    }
}

impl Identity {
    /// The identity of the file `path` resolves to (symlinks followed: `/usr/bin/python3`
    /// is the `python3.11` it points at).
    pub fn of_path(path: &Path) -> std::io::Result<Identity> {
        let meta = std::fs::metadata(path)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// `sb->s_dev` is `MKDEV(major, minor)` = `major << 20 | minor`, while `st_dev` is
    /// `new_encode_dev` (minor split around the major): the same device, other bits.
    pub(crate) fn kernel_key(self) -> InterpreterKey {
        let major = libc::major(self.dev) as u32;
        let minor = libc::minor(self.dev) as u32;
        InterpreterKey {
            ino: self.ino,
            dev: (major << 20) | (minor & 0xf_ffff),
            pad: 0,
        }
    }

    pub(crate) fn from_kernel(dev: u32, ino: u64) -> Identity {
        Identity {
            dev: libc::makedev(dev >> 20, dev & 0xf_ffff),
            ino,
        }
    }
}

/// The offsets of the kernel struct members the programs read, from the running kernel's
/// BTF: one object runs on every kernel.
pub(crate) fn kernel_offsets(btf: &Btf) -> Result<LsmOffsets, BtfError> {
    // Before 6.14 there is no AT_EXECVE_CHECK: a zero mask never matches.
    let (bprm_is_check, mask) = match btf.member_bit("linux_binprm", "is_check") {
        Ok(found) => found,
        Err(BtfError::NoMember(..)) => (0, 0),
        Err(e) => return Err(e),
    };
    let file_path = btf.member_offset("file", "f_path", btf.struct_size("path")?)?;
    let dentry_name = btf.member_offset("dentry", "d_name", btf.struct_size("qstr")?)?;
    Ok(LsmOffsets {
        task_mm: btf.member_offset("task_struct", "mm", 8)?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file", 8)?,
        file_inode: btf.member_offset("file", "f_inode", 8)?,
        file_mode: btf.member_offset("file", "f_mode", 4)?,
        inode_mode: btf.member_offset("inode", "i_mode", 2)?,
        inode_nlink: btf.member_offset("inode", "i_nlink", 4)?,
        inode_uid: btf.member_offset("inode", "i_uid", 4)?,
        inode_ino: btf.member_offset("inode", "i_ino", 8)?,
        inode_sb: btf.member_offset("inode", "i_sb", 8)?,
        sb_dev: btf.member_offset("super_block", "s_dev", 4)?,
        bprm_file: btf.member_offset("linux_binprm", "file", 8)?,
        bprm_is_check,
        bprm_is_check_mask: mask as u32,
        dentry_inode: btf.member_offset("dentry", "d_inode", 8)?,
        vma_file: btf.member_offset("vm_area_struct", "vm_file", 8)?,
        inode_writecount: btf.member_offset("inode", "i_writecount", 4)?,
        sb_user_ns: btf.member_offset("super_block", "s_user_ns", 8)?,
        user_ns_level: btf.member_offset("user_namespace", "level", 4)?,
        iattr_valid: btf.member_offset("iattr", "ia_valid", 4)?,
        sb_magic: btf.member_offset("super_block", "s_magic", 8)?,
        bprm_p: btf.member_offset("linux_binprm", "p", 8)?,
        bprm_argc: btf.member_offset("linux_binprm", "argc", 4)?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end", 8)?,
        file_path_mnt: file_path + btf.member_offset("path", "mnt", 8)?,
        file_path_dentry: file_path + btf.member_offset("path", "dentry", 8)?,
        dentry_name_len: dentry_name + btf.member_offset("qstr", "len", 4)?,
        dentry_name: dentry_name + btf.member_offset("qstr", "name", 8)?,
        vfsmount_root: btf.member_offset("vfsmount", "mnt_root", 8)?,
        mount_vfsmount: btf.member_offset("mount", "mnt", btf.struct_size("vfsmount")?)?,
        mount_mountpoint: btf.member_offset("mount", "mnt_mountpoint", 8)?,
        mount_parent: btf.member_offset("mount", "mnt_parent", 8)?,
        bprm_envc: btf.member_offset("linux_binprm", "envc", 4)?,
        vma_flags: btf.member_offset("vm_area_struct", "vm_flags", 8)?,
        vma_end: btf.member_offset("vm_area_struct", "vm_end", 8)?,
        mm_saved_auxv: btf.array_member_offset("mm_struct", "saved_auxv", 16)?,
        task_files: btf.member_offset("task_struct", "files", 8)?,
        files_fdt: btf.member_offset("files_struct", "fdt", 8)?,
        fdt_fd: btf.member_offset("fdtable", "fd", 8)?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds", 4)?,
        task_personality: btf.member_offset("task_struct", "personality", 4)?,
        inode_link: btf.member_offset("inode", "i_link", 8)?,
        pad: 0,
    })
}
