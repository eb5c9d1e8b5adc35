//! Types shared by the agent and the kernel programs.
//!
//! Everything here is `no_std` and `#[repr(C)]`/`#[repr(u32)]` so that the eBPF side and the
//! user side agree on the wire format, and so that a rule named in a kernel verdict is the
//! same rule the user-space engine reports: the layers cannot drift apart.
#![no_std]

pub mod argv;
pub mod code_name;
pub mod exec_gate;
pub mod loader_argv;
pub mod lsm;
pub mod node_argv;
pub mod perl_argv;
pub mod python_argv;
pub mod ruby_argv;

/// Every check the decision engine can make. The discriminants are part of the kernel ABI
/// (the eBPF programs report them in events): never renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Code must come from a regular file (not a pipe, FIFO, socket, device, memfd...).
    RegularFile = 1,
    /// Code must not come from a file that has been unlinked.
    NotDeleted = 2,
    /// The file's owner must be one of the policy's trusted owners.
    TrustedOwner = 3,
    /// The file must not be writable by the user running the interpreter (W^X).
    NotWritableByRunner = 4,
    /// The file must live on a filesystem type the policy trusts.
    TrustedFilesystem = 5,
    /// The file must carry a valid signature by a trusted key (or be on a digest allow-list).
    ValidSignature = 6,
    /// Inline code (`-c`) is refused.
    NoInlineCode = 7,
    /// Code read from standard input is refused.
    NoStdinCode = 8,
    /// Interactive consoles are refused.
    NoInteractive = 9,
    /// Environment variables that make the interpreter run or find extra code are refused.
    NoCodeEnvironment = 10,
    /// The main script operand (and a module the command line names to load first, such
    /// as `node -r NAME`) must name a file, not a file-descriptor link.
    ScriptIsFile = 11,
    /// A policy exception allowed the access.
    Exception = 12,
    /// The access is not a code load for this subject: nothing to check.
    NotCode = 13,
    /// The file must not be open for writing while it is loaded as code.
    NoOpenWriters = 14,
    /// The agent could not establish the facts (I/O error, resource exhaustion): fail closed.
    FactsUnavailable = 15,
    /// Only the executables the configuration names as signers may change a file's
    /// signature (`security.ima`).
    SignerOnly = 16,
    /// While the agent is down, an interpreter may open only files the agent verified
    /// before (a verdict the kernel holds for the unchanged inode): fail closed.
    KernelVerdict = 17,
    /// The system's dynamic loader (`ld.so`), exec'd directly, may not launch a program: the
    /// process would run under the loader's identity, so no layer would see the interpreter
    /// it starts. Only the loader's modes that run nothing (`ldd`'s `--verify` and
    /// `LD_TRACE_LOADED_OBJECTS`, `--list`, `--help`, `--version`...) are allowed.
    NoLoaderLaunch = 18,
    /// Only the agent's controllers (PID 1, guard itself, executables the configuration
    /// names) may signal or trace it, reach its kernel maps and programs, or remove its pins.
    ControllerOnly = 19,
    /// A profile whose dynamic code is denied must start with guard's audit hook: a
    /// start-up that skips it (`-S`, no `site`) is refused.
    AuditHookRequired = 20,
    /// Code compiled or loaded at run time from something other than a file the interpreter
    /// opened as code (`exec`/`eval`/`compile` of a string, `marshal.loads`, a code object
    /// built by hand), reported by the audit hook.
    DynamicCode = 21,
    /// A native library loaded, or memory read or written, through `ctypes`.
    NativeCall = 22,
    /// A class looked up by `pickle` while loading data: unpickling runs what it names.
    Unpickle = 23,
    /// Another audit hook added (it sees, and may change, what guard's hook sees).
    AuditHookAdded = 24,
    /// A program started from Python (`os.system`, `subprocess`, `os.exec*`, `os.spawn*`,
    /// `os.posix_spawn`).
    ProcessLaunch = 25,
    /// A symbolic link named as code must point to a name that is code too: an interpreter
    /// that resolves the link itself (node's `realpath` before `require` opens) opens the
    /// target by the target's name, so a data name would carry code past every check of
    /// code by name.
    CodeNamedLink = 26,
}

impl Rule {
    pub const ALL: [Rule; 26] = [
        Rule::RegularFile,
        Rule::NotDeleted,
        Rule::TrustedOwner,
        Rule::NotWritableByRunner,
        Rule::TrustedFilesystem,
        Rule::ValidSignature,
        Rule::NoInlineCode,
        Rule::NoStdinCode,
        Rule::NoInteractive,
        Rule::NoCodeEnvironment,
        Rule::ScriptIsFile,
        Rule::Exception,
        Rule::NotCode,
        Rule::NoOpenWriters,
        Rule::FactsUnavailable,
        Rule::SignerOnly,
        Rule::KernelVerdict,
        Rule::NoLoaderLaunch,
        Rule::ControllerOnly,
        Rule::AuditHookRequired,
        Rule::DynamicCode,
        Rule::NativeCall,
        Rule::Unpickle,
        Rule::AuditHookAdded,
        Rule::ProcessLaunch,
        Rule::CodeNamedLink,
    ];

    /// Stable identifier used in logs, the audit trail and `guard explain`.
    pub const fn id(self) -> &'static str {
        match self {
            Rule::RegularFile => "regular-file",
            Rule::NotDeleted => "not-deleted",
            Rule::TrustedOwner => "trusted-owner",
            Rule::NotWritableByRunner => "not-writable-by-runner",
            Rule::TrustedFilesystem => "trusted-filesystem",
            Rule::ValidSignature => "valid-signature",
            Rule::NoInlineCode => "no-inline-code",
            Rule::NoStdinCode => "no-stdin-code",
            Rule::NoInteractive => "no-interactive",
            Rule::NoCodeEnvironment => "no-code-environment",
            Rule::ScriptIsFile => "script-is-file",
            Rule::Exception => "exception",
            Rule::NotCode => "not-code",
            Rule::NoOpenWriters => "no-open-writers",
            Rule::FactsUnavailable => "facts-unavailable",
            Rule::SignerOnly => "signer-only",
            Rule::KernelVerdict => "kernel-verdict",
            Rule::NoLoaderLaunch => "no-loader-launch",
            Rule::ControllerOnly => "controller-only",
            Rule::AuditHookRequired => "audit-hook-required",
            Rule::DynamicCode => "dynamic-code",
            Rule::NativeCall => "native-call",
            Rule::Unpickle => "unpickle",
            Rule::AuditHookAdded => "audit-hook-added",
            Rule::ProcessLaunch => "process-launch",
            Rule::CodeNamedLink => "code-named-link",
        }
    }

    pub const fn from_u32(value: u32) -> Option<Rule> {
        let mut i = 0;
        while i < Rule::ALL.len() {
            if Rule::ALL[i] as u32 == value {
                return Some(Rule::ALL[i]);
            }
            i += 1;
        }
        None
    }
}

/// In every kernel program's flags (the exec gate's and the LSM layer's): report refusals
/// but allow (do not kill). One bit, the same in both wire formats, far from the
/// per-layer bits.
pub const PERMISSIVE: u32 = 1 << 31;

/// Filesystem magic numbers (`statfs.f_type`) the policy may name, with their names.
/// Shared so the kernel layer and user space map names to magics identically.
pub const FILESYSTEM_MAGICS: &[(&str, u64)] = &[
    ("ext2", 0xEF53), // ext2, ext3 and ext4 share one magic
    ("ext3", 0xEF53),
    ("ext4", 0xEF53),
    ("xfs", 0x5846_5342),
    ("btrfs", 0x9123_683E),
    ("f2fs", 0xF2F5_2010),
    ("tmpfs", 0x0102_1994),
    ("ramfs", 0x8584_58F6),
    ("squashfs", 0x7371_7368),
    ("erofs", 0xE0F5_E1E2),
    ("iso9660", 0x9660),
    ("vfat", 0x4d44),
    ("overlay", 0x794C_7630),
    ("fuse", 0x6573_5546),
    ("nfs", 0x6969),
    ("cifs", 0xFF53_4D42),
    ("smb2", 0xFE53_4D42),
    ("9p", 0x0102_1997),
    ("virtiofs", 0x6573_5546), // virtiofs reports the FUSE magic
    ("zfs", 0x2FC1_2FC1),
    ("bcachefs", 0xCA45_1A4E),
    ("proc", 0x9fa0),
    ("sysfs", 0x6265_6572),
    ("devtmpfs", 0x0102_1994),
    ("pipefs", 0x5049_5045),
    ("sockfs", 0x534F_434B),
    ("anon_inode", 0x0904_1934),
];

/// The name of a filesystem magic, if known (first name wins for shared magics).
pub fn filesystem_name(magic: u64) -> Option<&'static str> {
    FILESYSTEM_MAGICS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(name, _)| *name)
}

/// The magic of a filesystem name, if known.
pub fn filesystem_magic(name: &str) -> Option<u64> {
    FILESYSTEM_MAGICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, magic)| *magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip_and_are_unique() {
        for (i, a) in Rule::ALL.iter().enumerate() {
            assert_eq!(Rule::from_u32(*a as u32), Some(*a));
            for b in &Rule::ALL[i + 1..] {
                assert_ne!(a.id(), b.id());
                assert_ne!(*a as u32, *b as u32);
            }
        }
        assert_eq!(Rule::from_u32(0), None);
    }

    #[test]
    fn filesystem_names_map_both_ways() {
        assert_eq!(filesystem_magic("ext4"), Some(0xEF53));
        assert_eq!(filesystem_name(0xEF53), Some("ext2"));
        assert_eq!(filesystem_name(0x0102_1994), Some("tmpfs"));
        assert_eq!(filesystem_magic("nope"), None);
    }
}
