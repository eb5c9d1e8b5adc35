//! The policy: parsing and validation of the TOML file into a checked, ready-to-use form.
//!
//! Parsing is kept apart from decisions: the engine only ever sees a [`Policy`] that has
//! been fully validated (keys loaded, owners resolved, allow-lists read), so a policy that
//! loads is a policy that can be enforced. Every error names the file, line and column.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::digest::HashAlgo;
use crate::keys::Keyring;

/// The complete default policy, embedded so the agent can enforce with no file at all.
pub const DEFAULT_POLICY: &str = include_str!("../policy/default.toml");
/// Name used for the embedded policy in messages.
pub const DEFAULT_ORIGIN: &str = "<embedded default policy>";

/// Why a policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Permissive,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Permissive => "permissive",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

/// What a profile's audit hook does with code made at run time: `exec`, `eval` or
/// `compile` of a string, `marshal.loads`, a code object built by hand
/// (`[[interpreter]] dynamic_code`, see [`crate::dynamic_code`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynamicCode {
    /// Neither recorded nor refused; the hook is not required.
    Allow,
    /// Recorded in the audit trail, never refused.
    #[default]
    Audit,
    /// Refused unless the code that makes it is one of `dynamic_code_callers`, and
    /// recorded; the hook is required at start-up.
    Deny,
}

impl fmt::Display for DynamicCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DynamicCode::Allow => "allow",
            DynamicCode::Audit => "audit",
            DynamicCode::Deny => "deny",
        })
    }
}

/// Content sniffers that make a file code whatever its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sniff {
    /// CPython bytecode (any version's magic: two bytes, then `\r\n`).
    Pyc,
    /// Zip archives (zipimport runs code from them whatever their extension).
    Zip,
    /// ELF objects (extension modules, ctypes libraries).
    Elf,
}

/// The policy's executable rules (`[native] code`): which native code any process may run,
/// enforced by the BPF LSM layer (`bprm_check_security` for each file an exec runs,
/// `mmap_file`/`file_mprotect` for executable mappings).
/// The rule is [`guard_common::lsm::judge_native`]; host mode's exec gate enforces it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NativeCode {
    /// Nothing beyond the interpreters' own rules.
    Any,
    /// From a linked regular file: no `fexecve` of a memfd, no exec of an `O_TMPFILE` or a
    /// deleted file, no executable mapping of one (the complement of `noexec` mounts).
    Linked,
    /// The default, W^X for native code: from a linked regular file that no untrusted user
    /// owns or can write — owned by one of `[trust] owners`, not writable by group or
    /// others (nor by an ACL's named entries), on a filesystem whose owners are facts (not
    /// FUSE, not mounted in another user namespace). A user's copy of python3, own build,
    /// `LD_PRELOAD` or `ctypes` library does not run.
    #[default]
    TrustedOwner,
    /// As `trusted-owner`, and only on a `[trust] filesystems` type.
    Trusted,
}

impl NativeCode {
    /// The kernel programs' flag bits for this level (`guard_common::lsm::NATIVE_*`).
    pub fn flags(self) -> u32 {
        use guard_common::lsm::{NATIVE_LINKED, NATIVE_OWNER, NATIVE_TRUSTED};
        match self {
            NativeCode::Any => 0,
            NativeCode::Linked => NATIVE_LINKED,
            NativeCode::TrustedOwner => NATIVE_LINKED | NATIVE_OWNER,
            NativeCode::Trusted => NATIVE_LINKED | NATIVE_OWNER | NATIVE_TRUSTED,
        }
    }
}

impl fmt::Display for NativeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NativeCode::Any => "any",
            NativeCode::Linked => "linked",
            NativeCode::TrustedOwner => "trusted-owner",
            NativeCode::Trusted => "trusted",
        })
    }
}

/// How the interpreter's command line is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgvDialect {
    Python,
    Perl,
    Ruby,
    Node,
}

impl ArgvDialect {
    /// The grammar the exec gate and user space read this command line with.
    pub fn dialect(self) -> guard_common::argv::Dialect {
        match self {
            ArgvDialect::Python => guard_common::argv::Dialect::Python,
            ArgvDialect::Perl => guard_common::argv::Dialect::Perl,
            ArgvDialect::Ruby => guard_common::argv::Dialect::Ruby,
            ArgvDialect::Node => guard_common::argv::Dialect::Node,
        }
    }

    /// Environment variables whose entries the interpreter imports from, a file entry as
    /// an archive whatever its name: Python's `zipimport` reads modules out of any regular
    /// file on `sys.path`, and `PYTHONPATH` puts the user's names there.
    pub fn search_path_env(self) -> &'static [&'static str] {
        match self {
            ArgvDialect::Python => &["PYTHONPATH"],
            // Their search paths hold directories whose files are code by name.
            ArgvDialect::Perl | ArgvDialect::Ruby | ArgvDialect::Node => &[],
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_mode")]
    mode: Mode,
    #[serde(default)]
    trust: RawTrust,
    #[serde(default, rename = "interpreter")]
    interpreters: Vec<RawProfile>,
    #[serde(default, rename = "exception")]
    exceptions: Vec<RawException>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    native: RawNative,
    #[serde(default)]
    packages: RawPackages,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPackages {
    store: Option<Spanned<PathBuf>>,
    origins: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNative {
    #[serde(default)]
    code: NativeCode,
}

fn default_mode() -> Mode {
    Mode::Enforce
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    #[serde(default)]
    allow_digests: Vec<Spanned<String>>,
    #[serde(default)]
    owners: Option<Vec<Spanned<OwnerSpec>>>,
    #[serde(default)]
    filesystems: Option<Vec<Spanned<String>>>,
    /// The weakest digest a signature may be over.
    #[serde(default)]
    min_digest: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OwnerSpec {
    Uid(u32),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    executables: Vec<String>,
    #[serde(default = "default_dialect")]
    argv: ArgvDialect,
    #[serde(default)]
    code_patterns: Vec<Spanned<String>>,
    #[serde(default)]
    sniff: Vec<Sniff>,
    #[serde(default = "yes")]
    main_script_is_code: bool,
    #[serde(default = "deny")]
    inline_code: Permission,
    #[serde(default = "deny")]
    stdin: Permission,
    #[serde(default = "deny")]
    interactive: Permission,
    #[serde(default)]
    deny_env: Vec<String>,
    #[serde(default)]
    inline_code_modules: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    stdin_code_modules: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    inline_code_scripts: Vec<Spanned<String>>,
    #[serde(default)]
    stdin_code_scripts: Vec<Spanned<String>>,
    #[serde(default)]
    loaders: Vec<String>,
    #[serde(default = "deny")]
    loader_launch: Permission,
    #[serde(default)]
    dynamic_code: Option<DynamicCode>,
    #[serde(default)]
    dynamic_code_callers: Option<Vec<RawCaller>>,
    #[serde(default)]
    require_audit_hook: Option<bool>,
}

/// A `dynamic_code_callers` entry: a file (any of its functions), or a file and the one
/// function in it (its qualified name, `Class.method`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCaller {
    File(String),
    Function { file: String, function: String },
}

fn default_dialect() -> ArgvDialect {
    ArgvDialect::Python
}
fn yes() -> bool {
    true
}
fn deny() -> Permission {
    Permission::Deny
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    digest: Spanned<String>,
    waive: Vec<Spanned<String>>,
    reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: Option<PathBuf>,
    #[serde(default)]
    log_allows: bool,
    max_file_size: Option<Spanned<ByteSize>>,
    max_files: Option<Spanned<u32>>,
    #[serde(default)]
    disk_full: DiskFull,
    #[serde(default)]
    kernel: KernelAudit,
}

/// Whether refusals also go to the kernel audit log (`[audit] kernel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelAudit {
    /// When an audit daemon (auditd) has registered with the kernel, checked at start and
    /// at every reload: without one the kernel would print every record to its log.
    #[default]
    Auto,
    On,
    Off,
}

/// A size as written: bytes, or a number with a `K`, `M` or `G` suffix (powers of 1024).
#[derive(Deserialize)]
#[serde(untagged)]
enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            ByteSize::Bytes(bytes) => return Ok(*bytes),
            ByteSize::Text(text) => text.trim(),
        };
        let (digits, shift) = match text.char_indices().last() {
            Some((at, 'K' | 'k')) => (&text[..at], 10),
            Some((at, 'M' | 'm')) => (&text[..at], 20),
            Some((at, 'G' | 'g')) => (&text[..at], 30),
            _ => (text, 0),
        };
        digits
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift))
            .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))
    }
}

// ---------------------------------------------------------------------------------------
// The checked policy.

/// A validated policy, ready for the engine.
pub struct Policy {
    pub mode: Mode,
    pub trust: Trust,
    pub interpreters: Vec<Profile>,
    pub exceptions: Vec<Exception>,
    pub audit: Audit,
    pub native: Native,
    pub packages: Packages,
    /// Where the policy came from (a path or [`DEFAULT_ORIGIN`]).
    pub origin: String,
    /// The policy text as loaded, for `guard policy show`.
    pub text: String,
}

pub struct Trust {
    /// Key files the keyring was built from (globs expanded).
    pub key_files: Vec<PathBuf>,
    pub keyring: Keyring,
    /// SHA-256 digests allowed without a signature, each with the list that allows it.
    pub allowed_sha256: HashMap<Vec<u8>, Arc<Listing>>,
    /// The lists they come from, in reading order.
    pub lists: Vec<Arc<Listing>>,
    pub owners: Vec<u32>,
    /// Trusted filesystem types, by name and magic.
    pub filesystems: Vec<(String, u64)>,
}

pub struct Profile {
    pub name: String,
    /// Executable path globs; resolved to file identities by the agent at start and reload.
    pub executables: Vec<String>,
    pub argv: ArgvDialect,
    pub code_patterns: Vec<glob::Pattern>,
    pub sniff: Vec<Sniff>,
    pub main_script_is_code: bool,
    pub inline_code: Permission,
    pub stdin: Permission,
    pub interactive: Permission,
    pub deny_env: Vec<String>,
    /// Interpreter modules refused as inline code: `-m NAME` (or a submodule) runs Python
    /// from its command line or a data file ([`DEFAULT_INLINE_CODE_MODULES`] when absent).
    pub inline_code_modules: Vec<String>,
    /// Interpreter modules refused as code on standard input: `-m NAME` (or a submodule)
    /// reads Python from stdin ([`DEFAULT_STDIN_CODE_MODULES`] when absent).
    pub stdin_code_modules: Vec<String>,
    /// Scripts of the distribution that are interpreters themselves, run as the main script
    /// (`ruby /usr/bin/erb`, its `#!` line's spelling): they run code from their command line
    /// or a data file, refused as inline code. Absolute path globs, resolved to identities.
    pub inline_code_scripts: Vec<glob::Pattern>,
    /// As [`Self::inline_code_scripts`], for scripts that read code from standard input (a
    /// REPL: `irb`, the CPAN shell), refused as code on stdin.
    pub stdin_code_scripts: Vec<glob::Pattern>,
    /// Path globs of dynamic loaders besides the executables' own `PT_INTERP` loaders;
    /// resolved to identities like `executables`.
    pub loaders: Vec<String>,
    /// A loader exec'd directly launching a program (`ld.so python3 …`).
    pub loader_launch: Permission,
    /// What the audit hook does with code made at run time.
    pub dynamic_code: DynamicCode,
    /// The files whose own dynamic code is expected (matched against the calling frame's
    /// file, `/` matched only by `/`): never refused, counted but not recorded one by one
    /// ([`DEFAULT_DYNAMIC_CODE_CALLERS`] when absent).
    pub dynamic_code_callers: Vec<Caller>,
    /// A start-up that skips the audit hook (`-S`) is refused ([`guard_common::Rule::AuditHookRequired`]);
    /// by default where `dynamic_code = "deny"`.
    pub require_audit_hook: bool,
}

pub struct Exception {
    pub sha256: Vec<u8>,
    pub waive: Vec<guard_common::Rule>,
    pub reason: String,
}

pub struct Native {
    pub code: NativeCode,
}

/// Trust that follows the package manager (`[packages]`, see [`crate::packages`]).
pub struct Packages {
    /// Where `guard packages trust` writes one digest list per verified package; every
    /// list there is allowed like an `allow_digests` list. None: no package trust.
    pub store: Option<PathBuf>,
    /// The apt origins (the `Origin` of a source's signed Release) whose verified packages
    /// are trusted; `*` is every source apt verifies.
    pub origins: Vec<String>,
}

/// The list a digest is allowed by, as `guard explain` names it.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    pub list: PathBuf,
    /// For a package list: `NAME VERSION (ARCH) from SOURCE`, from its header.
    pub package: Option<String>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.package {
            Some(package) => write!(f, "list of package {package} ({})", self.list.display()),
            None => write!(f, "allow-list {}", self.list.display()),
        }
    }
}

pub struct Audit {
    pub file: Option<PathBuf>,
    pub log_allows: bool,
    /// Rotate the file when a record would take it past this size (bytes); 0: never.
    pub max_file_size: u64,
    /// Rotated files kept beside the current one (`FILE.1` newest .. `FILE.N` oldest).
    pub max_files: u32,
    pub disk_full: DiskFull,
    pub kernel: KernelAudit,
}

/// What the agent does while the audit file cannot be written (a full disk, a quota, an
/// I/O error), as auditd's `disk_full_action`: the records are counted either way
/// (`guard status`), and still reach the agent's log (the journal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFull {
    /// Drop the records that cannot be written, count them, and go on deciding as before.
    #[default]
    Drop,
    /// Also, in enforce mode, refuse every interpreter's code load the agent answers until
    /// the file is writable again: nothing runs that the trail does not record.
    Refuse,
}

impl fmt::Display for DiskFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFull::Drop => "drop",
            DiskFull::Refuse => "refuse",
        })
    }
}

/// auditd's defaults (`max_log_file = 8`, `num_logs = 5`): the trail takes 48 MiB at most.
pub const DEFAULT_AUDIT_MAX_FILE_SIZE: u64 = 8 << 20;
pub const DEFAULT_AUDIT_MAX_FILES: u32 = 5;
/// A rotated file holds at least a few whole records (one is a few hundred bytes).
const MIN_AUDIT_FILE_SIZE: u64 = 4096;
/// Renaming every kept file at each rotation: more would make rotation itself the cost.
const MAX_AUDIT_FILES: u32 = 1000;

/// Whether `[trust] KEY` (`count` distinct entries) fits the kernel programs' table.
fn table_fits(key: &str, count: usize, max: usize) -> Result<(), String> {
    if count > max {
        return Err(format!(
            "[trust] {key}: {count} distinct entries, at most {max} are supported"
        ));
    }
    Ok(())
}

/// The filesystem types trusted when the policy names none.
pub const DEFAULT_FILESYSTEMS: &[&str] = &["ext4", "xfs", "btrfs", "f2fs", "tmpfs"];

/// Modules whose `__main__` runs Python given on its command line or read from a file it
/// opens as data: `-m NAME` is `-c` in another spelling. The stdlib's, and installed ones a
/// distribution ships widely (pygments). The embedded default policy lists the same names,
/// each with its reason.
pub const DEFAULT_INLINE_CODE_MODULES: &[&str] = &[
    "timeit", "pdb", "profile", "cProfile", "trace", "runpy", "doctest", "pickle", "pydoc",
    "idlelib", "pygments",
];

/// Stdlib modules whose `__main__` reads Python from standard input (a REPL), or launches
/// any module as main: `-m NAME` is a bare interpreter reading stdin in another spelling.
pub const DEFAULT_STDIN_CODE_MODULES: &[&str] = &[
    "code", "asyncio", "pdb", "profile", "cProfile", "trace", "runpy", "idlelib",
];

/// Code whose dynamic code is expected: the function (qualified name, `Class.method`) of a
/// file, or any function of it. A function is named by its code object, which no caller
/// can rename without making code first; a whole file lets every function in it pass on
/// whatever it is handed (`Counter.update = exec`), so name the function where you can.
#[derive(Clone, Debug)]
pub struct Caller {
    pub file: glob::Pattern,
    pub function: Option<String>,
}

/// The stdlib functions that make code from strings on their own, in every program that
/// uses them, each from a template of identifiers they check: `collections.namedtuple`
/// and `dataclasses._create_fn` write methods as source and run it, `types.coroutine`
/// rebuilds a code object with other flags, `ast.parse` compiles to a tree, not code.
/// Left out on purpose, as gadgets that run what their caller hands them: `typing`
/// (string annotations are evaluated: `ForwardRef(expr)._evaluate` runs any expression),
/// `timeit`, `code`, `pdb`, `cProfile.run`, `doctest`, `runpy.run_path`.
pub const DEFAULT_DYNAMIC_CODE_CALLERS: &[(&str, &str)] = &[
    ("/usr/lib/python3*/collections/__init__.py", "namedtuple"),
    ("/usr/lib/python3*/dataclasses.py", "_create_fn"),
    ("/usr/lib/python3*/types.py", "coroutine"),
    ("/usr/lib/python3*/ast.py", "parse"),
    ("/usr/lib64/python3*/collections/__init__.py", "namedtuple"),
    ("/usr/lib64/python3*/dataclasses.py", "_create_fn"),
    ("/usr/lib64/python3*/types.py", "coroutine"),
    ("/usr/lib64/python3*/ast.py", "parse"),
];

/// Start-up configuration that is code where the audit hook is required: it decides which
/// site directories, and so whether the hook, load.
const HOOK_START_UP_CODE: &[&str] = &["pyvenv.cfg"];
/// Environment variables refused where the audit hook is required.
const HOOK_REFUSED_ENV: &[&str] = &["PYTHONHOME"];

/// Rules an exception may waive: content and placement, never file kind or W^X.
const WAIVABLE: &[guard_common::Rule] = &[
    guard_common::Rule::ValidSignature,
    guard_common::Rule::TrustedFilesystem,
    guard_common::Rule::TrustedOwner,
];

impl Policy {
    /// The trusted owners and filesystem types as the kernel programs hold them.
    pub fn trust_table(&self) -> guard_common::lsm::Trust {
        let magics: Vec<u64> = self.trust.filesystems.iter().map(|(_, m)| *m).collect();
        guard_common::lsm::Trust::new(&self.trust.owners, &magics)
    }

    /// Loads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            origin: origin.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        Policy::parse(&text, &origin, base)
    }

    /// The embedded default policy.
    pub fn embedded_default() -> Result<Policy, PolicyError> {
        Policy::parse(DEFAULT_POLICY, DEFAULT_ORIGIN, Path::new("/"))
    }

    /// Loads `path` if given, else the embedded default.
    pub fn load_or_default(path: Option<&Path>) -> Result<Policy, PolicyError> {
        match path {
            Some(path) => Policy::load(path),
            None => Policy::embedded_default(),
        }
    }

    /// Parses and validates policy text. Relative paths inside are relative to `base`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Policy, PolicyError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = line_column(text, span.map(|s| s.start).unwrap_or(0));
            PolicyError::At {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;

        let mut key_files = Vec::new();
        let mut keyring = Keyring::new();
        if let Some(name) = &raw.trust.min_digest {
            let algo = crate::digest::HashAlgo::from_name(name.get_ref()).ok_or_else(|| {
                at(
                    Some(name.span()),
                    format!(
                        "min_digest: unknown digest {:?} (sha1, sha256, sha384 or sha512)",
                        name.get_ref()
                    ),
                )
            })?;
            keyring.set_min_digest(algo);
        }
        for pattern in &raw.trust.keys {
            let files = expand(base, pattern.get_ref())
                .map_err(|message| at(Some(pattern.span()), message))?;
            for file in files {
                keyring
                    .add_file(&file)
                    .map_err(|e| at(Some(pattern.span()), format!("trusted key: {e}")))?;
                key_files.push(file);
            }
        }

        let mut allowed_sha256 = HashMap::new();
        let mut lists = Vec::new();
        for pattern in &raw.trust.allow_digests {
            let files = expand(base, pattern.get_ref())
                .map_err(|message| at(Some(pattern.span()), message))?;
            for file in files {
                lists.push(
                    read_sha256_list(&file, &mut allowed_sha256)
                        .map_err(|message| at(Some(pattern.span()), message))?,
                );
            }
        }
        let store = raw
            .packages
            .store
            .as_ref()
            .map(|store| base.join(store.get_ref()));
        if let (Some(dir), Some(spanned)) = (&store, &raw.packages.store) {
            for file in crate::packages::lists_in(dir)
                .map_err(|e| at(Some(spanned.span()), format!("[packages] store: {e}")))?
            {
                lists.push(
                    read_sha256_list(&file, &mut allowed_sha256)
                        .map_err(|message| at(Some(spanned.span()), message))?,
                );
            }
        }
        let packages = Packages {
            store,
            origins: raw.packages.origins.unwrap_or_else(|| vec!["*".into()]),
        };

        let owners = match &raw.trust.owners {
            None => vec![0],
            Some(specs) => {
                let mut owners = Vec::new();
                for spec in specs {
                    let uid = match spec.get_ref() {
                        OwnerSpec::Uid(uid) => *uid,
                        OwnerSpec::Name(name) => {
                            resolve_user(name).map_err(|message| at(Some(spec.span()), message))?
                        }
                    };
                    if !owners.contains(&uid) {
                        owners.push(uid);
                    }
                }
                // The kernel programs hold a fixed table: never truncated.
                table_fits(
                    "owners",
                    owners.len(),
                    guard_common::lsm::MAX_TRUSTED_OWNERS,
                )
                .map_err(|message| at(None, message))?;
                owners
            }
        };

        let filesystems = match &raw.trust.filesystems {
            None => DEFAULT_FILESYSTEMS
                .iter()
                .map(|name| {
                    let magic = guard_common::filesystem_magic(name).unwrap_or_default();
                    (name.to_string(), magic)
                })
                .collect(),
            Some(names) => {
                let mut filesystems = Vec::new();
                for name in names {
                    let magic =
                        guard_common::filesystem_magic(name.get_ref()).ok_or_else(|| {
                            at(
                                Some(name.span()),
                                format!(
                                    "unknown filesystem type {:?} (known: {})",
                                    name.get_ref(),
                                    known_filesystems()
                                ),
                            )
                        })?;
                    filesystems.push((name.get_ref().clone(), magic));
                }
                // The kernel holds magics in 32 bits (see `guard_common::lsm::Trust`).
                #[allow(clippy::cast_possible_truncation)]
                let mut magics: Vec<u32> = filesystems.iter().map(|(_, m)| *m as u32).collect();
                magics.sort_unstable();
                magics.dedup();
                table_fits(
                    "filesystems",
                    magics.len(),
                    guard_common::lsm::MAX_TRUSTED_FILESYSTEMS,
                )
                .map_err(|message| at(None, message))?;
                filesystems
            }
        };

        let mut interpreters = Vec::new();
        let mut deny_env_names: Vec<String> = Vec::new();
        for profile in raw.interpreters {
            // CPython alone has interpreter modules (`-m`) and guard's audit hook: a setting
            // of theirs in another interpreter's profile would be silently void.
            let python = profile.argv == ArgvDialect::Python;
            if !python {
                let dialect = profile.argv.dialect().name();
                for (set, setting) in [
                    (profile.inline_code_modules.is_some(), "inline_code_modules"),
                    (profile.stdin_code_modules.is_some(), "stdin_code_modules"),
                    (
                        profile.dynamic_code_callers.is_some(),
                        "dynamic_code_callers",
                    ),
                    (profile.require_audit_hook.is_some(), "require_audit_hook"),
                    (
                        profile
                            .dynamic_code
                            .is_some_and(|d| d != DynamicCode::Allow),
                        "dynamic_code (other than \"allow\")",
                    ),
                ] {
                    if set {
                        return Err(at(
                            None,
                            format!(
                                "interpreter {:?}: {setting} is CPython's (its `-m` modules and \
                                 guard's audit hook); argv = {dialect:?} has none",
                                profile.name
                            ),
                        ));
                    }
                }
            }
            let dynamic_code = profile.dynamic_code.unwrap_or(if python {
                DynamicCode::Audit
            } else {
                DynamicCode::Allow
            });
            let mut code_patterns = Vec::new();
            for pattern in &profile.code_patterns {
                code_patterns.push(
                    glob::Pattern::new(pattern.get_ref())
                        .map_err(|e| at(Some(pattern.span()), format!("bad code pattern: {e}")))?,
                );
            }
            let dynamic_code_callers = match &profile.dynamic_code_callers {
                None if !python => Vec::new(),
                None => DEFAULT_DYNAMIC_CODE_CALLERS
                    .iter()
                    .map(|(file, function)| Caller {
                        file: glob::Pattern::new(file).expect("valid default pattern"),
                        function: Some(function.to_string()),
                    })
                    .collect(),
                Some(entries) => entries
                    .iter()
                    .map(|entry| {
                        let (file, function) = match entry {
                            RawCaller::File(file) => (file, None),
                            RawCaller::Function { file, function } => {
                                (file, Some(function.clone()))
                            }
                        };
                        glob::Pattern::new(file)
                            .map(|file| Caller { file, function })
                            .map_err(|e| {
                                at(
                                    None,
                                    format!("bad dynamic_code_callers pattern {file:?}: {e}"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let module_list = |names: &Option<Vec<Spanned<String>>>, default: &[&str]| match names {
                None if !python => Ok(Vec::new()),
                None => Ok(default.iter().map(|n| n.to_string()).collect()),
                Some(names) => {
                    if names.len() > guard_common::exec_gate::MAX_EVAL_MODULES {
                        return Err(at(
                            names.first().map(|n| n.span()),
                            format!(
                                "too many interpreter modules ({}, at most {})",
                                names.len(),
                                guard_common::exec_gate::MAX_EVAL_MODULES
                            ),
                        ));
                    }
                    let mut list: Vec<String> = Vec::new();
                    for name in names {
                        if guard_common::exec_gate::ModuleKey::new(name.get_ref().as_bytes())
                            .is_none()
                        {
                            return Err(at(
                                Some(name.span()),
                                format!(
                                    "{:?} is not a module name (dotted ASCII identifiers, \
                                         at most {} bytes)",
                                    name.get_ref(),
                                    guard_common::exec_gate::MODULE_NAME_LEN
                                ),
                            ));
                        }
                        if !list.contains(name.get_ref()) {
                            list.push(name.get_ref().clone());
                        }
                    }
                    Ok(list)
                }
            };
            let require_audit_hook = profile
                .require_audit_hook
                .unwrap_or(dynamic_code == DynamicCode::Deny);
            let mut deny_env = profile.deny_env;
            if require_audit_hook {
                // The hook comes from the site directories of the interpreter's prefix. What
                // moves the prefix decides whether it loads: a virtual environment's
                // `pyvenv.cfg` (its own site directory, without the system's) is code, held
                // to every rule a script is; `PYTHONHOME` (any prefix, a tree of links to
                // the real stdlib) is refused at exec.
                for name in HOOK_START_UP_CODE {
                    if !code_patterns.iter().any(|p| p.as_str() == *name) {
                        code_patterns.push(glob::Pattern::new(name).expect("a literal name"));
                    }
                }
                for name in HOOK_REFUSED_ENV {
                    if !deny_env.iter().any(|n| n == name) {
                        deny_env.push(name.to_string());
                    }
                }
            }
            // The exec gate matches refused names in the kernel, from a table of
            // MAX_ENV_NAMES patterns: a name it cannot hold would go unchecked.
            for name in &deny_env {
                if guard_common::exec_gate::EnvPattern::new(name.as_bytes()).is_none() {
                    return Err(at(
                        None,
                        format!(
                            "deny_env: {name:?} is not a name the exec gate can match (not \
                             empty, no '=', at most {} bytes)",
                            guard_common::exec_gate::MAX_ENV_NAME_LEN
                        ),
                    ));
                }
                if !deny_env_names.contains(name) {
                    deny_env_names.push(name.clone());
                }
            }
            if deny_env_names.len() > guard_common::exec_gate::MAX_ENV_NAMES {
                return Err(at(
                    None,
                    format!(
                        "deny_env: {} refused environment variables in all, the exec gate \
                         checks at most {}",
                        deny_env_names.len(),
                        guard_common::exec_gate::MAX_ENV_NAMES
                    ),
                ));
            }
            let inline_code_modules =
                module_list(&profile.inline_code_modules, DEFAULT_INLINE_CODE_MODULES)?;
            let stdin_code_modules =
                module_list(&profile.stdin_code_modules, DEFAULT_STDIN_CODE_MODULES)?;
            let script_list = |patterns: &[Spanned<String>], setting: &str| {
                patterns
                    .iter()
                    .map(|pattern| {
                        let text = pattern.get_ref();
                        if !text.starts_with('/') {
                            return Err(at(
                                Some(pattern.span()),
                                format!("{setting}: {text:?} is not an absolute path"),
                            ));
                        }
                        glob::Pattern::new(text).map_err(|e| {
                            at(Some(pattern.span()), format!("{setting}: bad pattern: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let inline_code_scripts =
                script_list(&profile.inline_code_scripts, "inline_code_scripts")?;
            let stdin_code_scripts =
                script_list(&profile.stdin_code_scripts, "stdin_code_scripts")?;
            interpreters.push(Profile {
                name: profile.name,
                executables: profile.executables,
                argv: profile.argv,
                code_patterns,
                sniff: profile.sniff,
                main_script_is_code: profile.main_script_is_code,
                inline_code: profile.inline_code,
                stdin: profile.stdin,
                interactive: profile.interactive,
                deny_env,
                inline_code_modules,
                stdin_code_modules,
                inline_code_scripts,
                stdin_code_scripts,
                loaders: profile.loaders,
                loader_launch: profile.loader_launch,
                dynamic_code,
                dynamic_code_callers,
                require_audit_hook,
            });
        }

        // The BPF LSM layer compares every profile's code suffixes in the kernel, from a
        // table of MAX_CODE_SUFFIXES: one it cannot hold would go unchecked there.
        let suffixes = guard_common::code_name::distinct_code_suffixes(
            interpreters
                .iter()
                .flat_map(|p: &Profile| p.code_patterns.iter().map(glob::Pattern::as_str)),
        );
        if suffixes > guard_common::code_name::MAX_CODE_SUFFIXES {
            return Err(at(
                None,
                format!(
                    "code_patterns: {suffixes} distinct code suffixes (`*.ext`) in all profiles, \
                     the kernel layer compares at most {}",
                    guard_common::code_name::MAX_CODE_SUFFIXES
                ),
            ));
        }

        let max_file_size = match &raw.audit.max_file_size {
            None => DEFAULT_AUDIT_MAX_FILE_SIZE,
            Some(size) => {
                let bytes = size.get_ref().bytes().map_err(|message| {
                    at(Some(size.span()), format!("max_file_size: {message}"))
                })?;
                if bytes != 0 && bytes < MIN_AUDIT_FILE_SIZE {
                    return Err(at(
                        Some(size.span()),
                        format!(
                            "max_file_size: {bytes} bytes is too small (0 never rotates, else at \
                             least {MIN_AUDIT_FILE_SIZE})"
                        ),
                    ));
                }
                bytes
            }
        };
        let max_files = match &raw.audit.max_files {
            None => DEFAULT_AUDIT_MAX_FILES,
            Some(count) if (1..=MAX_AUDIT_FILES).contains(count.get_ref()) => *count.get_ref(),
            Some(count) => {
                return Err(at(
                    Some(count.span()),
                    format!(
                        "max_files: {} rotated files (1 to {MAX_AUDIT_FILES})",
                        count.get_ref()
                    ),
                ));
            }
        };
        let mut exceptions = Vec::new();
        for exception in raw.exceptions {
            let sha256 = parse_sha256_spec(exception.digest.get_ref())
                .map_err(|message| at(Some(exception.digest.span()), message))?;
            let mut waive = Vec::new();
            for rule in &exception.waive {
                let found = WAIVABLE
                    .iter()
                    .find(|r| r.id() == rule.get_ref())
                    .ok_or_else(|| {
                        let names: Vec<_> = WAIVABLE.iter().map(|r| r.id()).collect();
                        at(
                            Some(rule.span()),
                            format!(
                                "rule {:?} cannot be waived (waivable: {})",
                                rule.get_ref(),
                                names.join(", ")
                            ),
                        )
                    })?;
                waive.push(*found);
            }
            exceptions.push(Exception {
                sha256,
                waive,
                reason: exception.reason,
            });
        }

        Ok(Policy {
            mode: raw.mode,
            trust: Trust {
                key_files,
                keyring,
                allowed_sha256,
                lists,
                owners,
                filesystems,
            },
            interpreters,
            exceptions,
            audit: Audit {
                file: raw.audit.file,
                log_allows: raw.audit.log_allows,
                max_file_size,
                max_files,
                disk_full: raw.audit.disk_full,
                kernel: raw.audit.kernel,
            },
            native: Native {
                code: raw.native.code,
            },
            packages,
            origin: origin.to_string(),
            text: text.to_string(),
        })
    }

    /// Adds keys given on the command line (`--key`), on top of the policy's.
    pub fn add_keys(&mut self, paths: &[PathBuf]) -> Result<(), crate::keys::KeyError> {
        for path in paths {
            self.trust.keyring.add_file(path)?;
            self.trust.key_files.push(path.clone());
        }
        Ok(())
    }

    /// Whether the digest allow-list or an exception needs a SHA-256 of code files.
    pub fn wants_sha256(&self) -> bool {
        !self.trust.allowed_sha256.is_empty() || !self.exceptions.is_empty()
    }

    /// A summary of the effective policy, for `guard policy show`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "# effective policy from {}", self.origin);
        let _ = writeln!(out, "# mode: {}", self.mode);
        let _ = writeln!(out, "# trusted keys: {}", self.trust.keyring.len());
        for file in &self.trust.key_files {
            let _ = writeln!(out, "#   {}", file.display());
        }
        let _ = writeln!(
            out,
            "# allow-listed digests: {} from {} lists",
            self.trust.allowed_sha256.len(),
            self.trust.lists.len()
        );
        for listing in &self.trust.lists {
            let _ = writeln!(out, "#   {listing}");
        }
        if let Some(store) = &self.packages.store {
            let _ = writeln!(
                out,
                "# package store: {} (apt origins trusted: {})",
                store.display(),
                self.packages.origins.join(", ")
            );
        }
        let _ = writeln!(out, "# trusted owners (uid): {:?}", self.trust.owners);
        let names: Vec<_> = self
            .trust
            .filesystems
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let _ = writeln!(out, "# trusted filesystems: {}", names.join(", "));
        for profile in &self.interpreters {
            let _ = writeln!(
                out,
                "# interpreter {}: {} executable pattern(s), {} code pattern(s)",
                profile.name,
                profile.executables.len(),
                profile.code_patterns.len()
            );
        }
        let _ = writeln!(out, "# exceptions: {}", self.exceptions.len());
        let _ = writeln!(out, "# native code: {}", self.native.code);
        out.push_str(&self.text);
        out
    }
}

fn known_filesystems() -> String {
    let names: Vec<_> = guard_common::FILESYSTEM_MAGICS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    names.join(", ")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Expands a path or glob (relative to `base`). A plain path must exist; a glob may match
/// nothing (a keys directory that is still empty is not an error).
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let full_text = full.to_string_lossy().to_string();
    let is_glob = pattern.contains(['*', '?', '[']);
    if !is_glob {
        let meta = std::fs::metadata(&full).map_err(|e| format!("{full_text}: {e}"))?;
        if meta.is_dir() {
            return Err(format!("{full_text}: is a directory, expected a file"));
        }
        return Ok(vec![full]);
    }
    let mut files = Vec::new();
    for entry in glob::glob(&full_text).map_err(|e| format!("bad pattern {pattern:?}: {e}"))? {
        let path = entry.map_err(|e| format!("{e}"))?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn resolve_user(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {name:?}")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

/// `sha256:<64 hex>` or bare hex.
fn parse_sha256_spec(spec: &str) -> Result<Vec<u8>, String> {
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    parse_hex(hex, HashAlgo::Sha256).ok_or_else(|| format!("not a sha256 digest: {spec:?}"))
}

fn parse_hex(hex: &str, algo: HashAlgo) -> Option<Vec<u8>> {
    let expected = match algo {
        HashAlgo::Sha1 => 20,
        HashAlgo::Sha256 => 32,
        HashAlgo::Sha384 => 48,
        HashAlgo::Sha512 => 64,
    };
    if hex.len() != expected * 2 || !hex.is_ascii() {
        return None;
    }
    (0..expected)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Reads a `sha256sum` output file (`<hex>  <name>` per line; `#` comments allowed; a
/// package list's header names its package, see [`crate::packages::provenance`]).
fn read_sha256_list(
    path: &Path,
    into: &mut HashMap<Vec<u8>, Arc<Listing>>,
) -> Result<Arc<Listing>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let listing = Arc::new(Listing {
        list: path.to_path_buf(),
        package: crate::packages::provenance(&text),
    });
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let hex = line.split_whitespace().next().unwrap_or_default();
        let digest = parse_hex(hex, HashAlgo::Sha256).ok_or_else(|| {
            format!(
                "{}:{}: not a sha256sum line (expected 64 hex digits, then the file name)",
                path.display(),
                number + 1
            )
        })?;
        // The first list that allows a digest names it: files stay where sorting put them.
        into.entry(digest).or_insert_with(|| listing.clone());
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, "test.toml", Path::new("/"))
    }

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("policy should be refused:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn code_suffixes_beyond_the_kernel_table_are_refused_not_cut() {
        let profile = |name: &str, suffixes: std::ops::Range<usize>| {
            let patterns: Vec<String> = suffixes.map(|i| format!("\"*.x{i}\"")).collect();
            format!(
                "[[interpreter]]\nname = \"{name}\"\nexecutables = []\nargv = \"perl\"\n\
                 code_patterns = [{}]\n",
                patterns.join(", ")
            )
        };
        // Two profiles sharing some: the union is what the kernel holds.
        assert!(parse(&(profile("a", 0..20) + &profile("b", 12..32))).is_ok());
        let e = error_of(&(profile("a", 0..20) + &profile("b", 12..33)));
        assert!(e.contains("33 distinct code suffixes"), "{e}");
    }

    #[test]
    fn settings_of_cpython_alone_are_refused_in_other_profiles() {
        for setting in [
            "dynamic_code = \"deny\"",
            "dynamic_code = \"audit\"",
            "require_audit_hook = false",
            "inline_code_modules = []",
            "stdin_code_modules = [\"x\"]",
            "dynamic_code_callers = []",
        ] {
            let e = error_of(&format!(
                "[[interpreter]]\nname = \"perl\"\nexecutables = []\nargv = \"perl\"\n{setting}\n"
            ));
            assert!(e.contains("CPython's"), "{setting}: {e}");
        }
        let policy =
            parse("[[interpreter]]\nname = \"ruby\"\nexecutables = []\nargv = \"ruby\"\n").unwrap();
        let ruby = &policy.interpreters[0];
        assert_eq!(ruby.dynamic_code, DynamicCode::Allow);
        assert!(ruby.inline_code_modules.is_empty() && ruby.dynamic_code_callers.is_empty());
        assert!(!ruby.require_audit_hook);
        let policy =
            parse("[[interpreter]]\nname = \"node\"\nexecutables = []\nargv = \"node\"\n").unwrap();
        assert_eq!(
            policy.interpreters[0].argv.dialect(),
            guard_common::argv::Dialect::Node
        );
        let e = error_of(
            "[[interpreter]]\nname = \"node\"\nexecutables = []\nargv = \"node\"\nrequire_audit_hook = true\n",
        );
        assert!(e.contains("CPython's"), "{e}");
    }

    #[test]
    fn embedded_default_is_complete() {
        let policy = Policy::embedded_default().unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.trust.owners, vec![0]);
        let python = &policy.interpreters[0];
        assert_eq!(python.name, "python");
        assert_eq!(python.inline_code, Permission::Deny);
        assert_eq!(python.stdin, Permission::Deny);
        assert_eq!(python.interactive, Permission::Deny);
        assert!(python.sniff.contains(&Sniff::Pyc));
        assert!(python.sniff.contains(&Sniff::Zip));
        for var in ["PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONPYCACHEPREFIX"] {
            assert!(python.deny_env.iter().any(|v| v == var), "{var}");
        }
    }

    #[test]
    fn default_code_patterns_match_libraries_but_not_their_cache() {
        let policy = Policy::embedded_default().unwrap();
        let python = &policy.interpreters[0];
        let is_code = |name: &str| python.code_patterns.iter().any(|p| p.matches(name));
        for code in [
            "os.py",
            "os.cpython-311.pyc",
            "a.pth",
            "_ssl.cpython-311-x86_64-linux-gnu.so",
            "libm.so.6",
            "lib.zip",
            "x.whl",
        ] {
            assert!(is_code(code), "{code}");
        }
        for data in ["ld.so.cache", "pyvenv.cfg", "notes.txt", "LC_CTYPE"] {
            assert!(!is_code(data), "{data}");
        }
    }

    #[test]
    fn empty_policy_has_safe_defaults() {
        let policy = parse("").unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.trust.owners, vec![0]);
        assert!(policy.trust.filesystems.iter().any(|(n, _)| n == "ext4"));
        assert!(!policy.trust.filesystems.iter().any(|(n, _)| n == "fuse"));
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = error_of("mode = \"enforce\"\n[trust]\n  ownerz = [\"root\"]\n");
        assert!(e.starts_with("test.toml:3:3: "), "{e}");
        assert!(e.contains("ownerz"), "{e}");
    }

    #[test]
    fn wrong_type_has_line_and_column() {
        let e = error_of("mode = 3\n");
        assert!(e.starts_with("test.toml:1:8: "), "{e}");
        let e = error_of("mode = \"sometimes\"\n");
        assert!(e.starts_with("test.toml:1:8: "), "{e}");
    }

    #[test]
    fn unreadable_key_file_is_located() {
        let e = error_of("[trust]\nkeys = [\"/nonexistent/key.pem\"]\n");
        assert!(e.starts_with("test.toml:2:9: "), "{e}");
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
        let e = error_of("[trust]\nkeys = [\"/etc\"]\n");
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn unknown_owner_and_filesystem_are_located() {
        let e = error_of("[trust]\nowners = [\"root\", \"no-such-user-here\"]\n");
        assert!(e.starts_with("test.toml:2:19: "), "{e}");
        let e = error_of("[trust]\nfilesystems = [\"ext5\"]\n");
        assert!(e.starts_with("test.toml:2:16: "), "{e}");
    }

    #[test]
    fn owners_by_name_and_uid() {
        let policy = parse("[trust]\nowners = [\"root\", 998]\n").unwrap();
        assert_eq!(policy.trust.owners, vec![0, 998]);
    }

    #[test]
    fn exceptions_are_validated() {
        let hex = "ab".repeat(32);
        let ok = format!(
            "[[exception]]\ndigest = \"sha256:{hex}\"\nwaive = [\"valid-signature\"]\nreason = \"vendor blob\"\n"
        );
        let policy = parse(&ok).unwrap();
        assert_eq!(policy.exceptions[0].sha256, vec![0xab; 32]);
        let e = error_of(&ok.replace("valid-signature", "regular-file"));
        assert!(e.contains("cannot be waived"), "{e}");
        let e = error_of(&ok.replace(&hex, "abc"));
        assert!(e.starts_with("test.toml:2:10: "), "{e}");
    }

    #[test]
    fn package_lists_name_their_package_and_need_a_root_only_store() {
        use std::os::unix::fs::PermissionsExt;
        // The store must be root's: only root can make one (the suite runs as root).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = crate::packages::PackageList {
            id: crate::packages::PackageId {
                name: "demo".into(),
                version: "1.0".into(),
                arch: "all".into(),
            },
            source: "Test suite (file:/x/)".into(),
            deb_sha256: "00".repeat(32),
            files: [("/x.py".to_string(), "03".repeat(32))].into(),
            bytecode: None,
        };
        list.store(&store).unwrap();
        let text = "[packages]\nstore = \"store\"\n";
        let policy = Policy::parse(text, "p.toml", dir.path()).unwrap();
        let listing = &policy.trust.allowed_sha256[&vec![3u8; 32]];
        assert_eq!(
            listing.package.as_deref(),
            Some("demo 1.0 (all) from Test suite (file:/x/)")
        );
        assert_eq!(policy.packages.origins, vec!["*"]);
        // Only root may vouch for code: a store others can write to is refused, not skipped.
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = Policy::parse(text, "p.toml", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("writable by root only"), "{e}");
    }

    #[test]
    fn allow_lists_read_sha256sum_format() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("allow.sha256");
        let hex = "01".repeat(32);
        std::fs::write(&list, format!("# vendor\n{hex}  /opt/x.py\n")).unwrap();
        let text = "[trust]\nallow_digests = [\"allow.sha256\"]\n";
        let policy = Policy::parse(text, "p.toml", dir.path()).unwrap();
        assert!(policy.trust.allowed_sha256.contains_key(&vec![1u8; 32]));
        std::fs::write(&list, "zz  /opt/x.py\n").unwrap();
        let e = Policy::parse(text, "p.toml", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("allow.sha256:1: not a sha256sum line"), "{e}");
    }

    #[test]
    fn native_code_rule() {
        // W^X for native code unless the policy says otherwise.
        assert_eq!(
            Policy::embedded_default().unwrap().native.code,
            NativeCode::TrustedOwner
        );
        assert_eq!(parse("").unwrap().native.code, NativeCode::TrustedOwner);
        for (text, code) in [
            ("any", NativeCode::Any),
            ("linked", NativeCode::Linked),
            ("trusted-owner", NativeCode::TrustedOwner),
            ("trusted", NativeCode::Trusted),
        ] {
            let policy = parse(&format!("[native]\ncode = \"{text}\"\n")).unwrap();
            assert_eq!(policy.native.code, code);
            assert_eq!(policy.native.code.to_string(), text);
        }
        let e = error_of("mode = \"enforce\"\n[native]\ncode = \"signed\"\n");
        assert!(e.starts_with("test.toml:3:8: "), "{e}");
        assert!(e.contains("signed"), "{e}");
        let e = error_of("[native]\ncode = \"any\"\nexec = true\n");
        assert!(e.starts_with("test.toml:3:1: "), "{e}");
    }

    #[test]
    fn interpreter_modules_default_and_are_validated() {
        // The embedded policy spells out the built-in lists.
        let python = &Policy::embedded_default().unwrap().interpreters[0];
        assert_eq!(python.inline_code_modules, DEFAULT_INLINE_CODE_MODULES);
        assert_eq!(python.stdin_code_modules, DEFAULT_STDIN_CODE_MODULES);
        for name in ["timeit", "pdb", "doctest", "pickle", "runpy"] {
            assert!(DEFAULT_INLINE_CODE_MODULES.contains(&name), "{name}");
        }
        for name in ["code", "asyncio", "pdb", "runpy"] {
            assert!(DEFAULT_STDIN_CODE_MODULES.contains(&name), "{name}");
        }
        let head = "[[interpreter]]\nname = \"p\"\nexecutables = []\n";
        let policy = parse(&format!(
            "{head}inline_code_modules = [\"a.b\", \"a.b\"]\nstdin_code_modules = []\n"
        ))
        .unwrap();
        assert_eq!(policy.interpreters[0].inline_code_modules, vec!["a.b"]);
        assert!(policy.interpreters[0].stdin_code_modules.is_empty());
        let e = error_of(&format!(
            "{head}stdin_code_modules = [\"code\", \"-m code\"]\n"
        ));
        assert!(e.starts_with("test.toml:4:31: "), "{e}");
        assert!(e.contains("not a module name"), "{e}");
        let long = "m".repeat(33);
        let e = error_of(&format!("{head}inline_code_modules = [\"{long}\"]\n"));
        assert!(e.starts_with("test.toml:4:24: "), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("\"m{i}\"")).collect();
        let e = error_of(&format!(
            "{head}inline_code_modules = [{}]\n",
            many.join(", ")
        ));
        assert!(e.contains("too many interpreter modules"), "{e}");
    }

    #[test]
    fn audit_trail_is_bounded_by_default_and_checked() {
        let audit = parse("").unwrap().audit;
        assert_eq!(audit.max_file_size, DEFAULT_AUDIT_MAX_FILE_SIZE);
        assert_eq!(audit.max_files, DEFAULT_AUDIT_MAX_FILES);
        assert_eq!(audit.disk_full, DiskFull::Drop);
        let default = Policy::embedded_default().unwrap().audit;
        assert_eq!(default.max_file_size, DEFAULT_AUDIT_MAX_FILE_SIZE);
        assert_eq!(default.disk_full, DiskFull::Drop);
        for (size, bytes) in [
            ("65536", 65536),
            ("\"64K\"", 65536),
            ("\"8M\"", 8 << 20),
            ("0", 0),
        ] {
            let text = format!("[audit]\nmax_file_size = {size}\nmax_files = 3\n");
            let audit = parse(&text).unwrap().audit;
            assert_eq!(audit.max_file_size, bytes, "{size}");
            assert_eq!(audit.max_files, 3);
        }
        let audit = parse("[audit]\ndisk_full = \"refuse\"\n").unwrap().audit;
        assert_eq!(audit.disk_full, DiskFull::Refuse);
        assert_eq!(audit.kernel, KernelAudit::Auto);
        let audit = parse("[audit]\nkernel = \"off\"\n").unwrap().audit;
        assert_eq!(audit.kernel, KernelAudit::Off);
        let e = error_of("[audit]\nmax_file_size = \"8 MB\"\n");
        assert!(
            e.starts_with("test.toml:2:17: ") && e.contains("not a size"),
            "{e}"
        );
        let e = error_of("[audit]\nmax_file_size = 100\n");
        assert!(e.contains("too small"), "{e}");
        let e = error_of("[audit]\nmax_files = 0\n");
        assert!(e.starts_with("test.toml:2:13: "), "{e}");
        let e = error_of("[audit]\ndisk_full = \"halt\"\n");
        assert!(e.starts_with("test.toml:2:13: "), "{e}");
    }

    #[test]
    fn bad_code_pattern_is_located() {
        let e =
            error_of("[[interpreter]]\nname = \"p\"\nexecutables = []\ncode_patterns = [\"[\"]\n");
        assert!(e.starts_with("test.toml:4:18: "), "{e}");
    }
}
