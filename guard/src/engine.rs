//! The decision engine: one pure function from facts to a verdict with its reasons.
//!
//! Both enforcement backends, `guard explain` and the tests call it; nothing here touches
//! the system. Facts are gathered elsewhere ([`crate::facts`]) from opened descriptors.

use std::fmt;

use guard_common::Rule;
use guard_common::exec_gate::{MODULE_INLINE_CODE, MODULE_STDIN_CODE, module_kinds};

use crate::ima::SignatureError;
use crate::keys::Verified;
use crate::launch::ProfileModules;
use crate::policy::{Mode, Permission, Policy};

/// Identity of a file: what the kernel calls it, not what a path says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            libc::major(self.dev),
            libc::minor(self.dev),
            self.ino
        )
    }
}

/// The kind of object behind a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    /// A pipe, memfd-less anonymous inode or anything without a filesystem home.
    Anonymous,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Anonymous,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Symlink => "a symbolic link",
            FileKind::Anonymous => "an anonymous inode (pipe, memfd or similar)",
        }
    }
}

/// Why an opened file counts as code for the subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeKind {
    /// Not code: a data read.
    NotCode,
    /// The interpreter's main script operand, whatever its name.
    MainScript,
    /// Matched one of the profile's code patterns.
    Source,
    /// Bytecode, recognised by its magic number.
    Bytecode,
    /// A zip archive (zipimport runs code from it).
    Archive,
    /// A native object (ELF) loaded by the interpreter.
    Native,
    /// An executable being exec'd.
    Executable,
    /// A name that decides whether the open is code could not be read (the path the
    /// interpreter asked for, the file's own): judged as code, all checks.
    Unknown,
}

impl CodeKind {
    pub fn is_code(self) -> bool {
        self != CodeKind::NotCode
    }

    pub fn name(self) -> &'static str {
        match self {
            CodeKind::NotCode => "not-code",
            CodeKind::MainScript => "main-script",
            CodeKind::Source => "source",
            CodeKind::Bytecode => "bytecode",
            CodeKind::Archive => "archive",
            CodeKind::Native => "native",
            CodeKind::Executable => "executable",
            CodeKind::Unknown => "unknown",
        }
    }
}

/// Who runs the interpreter, as far as a rule asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runner {
    /// Effective (filesystem) uid of the process.
    pub uid: u32,
    /// Effective gid and supplementary groups.
    pub gids: Vec<u32>,
}

/// The signature fact, as far as it was established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureFact {
    Verified(Verified),
    Failed(SignatureError),
}

/// What a file's content says: its signature and, when the policy wants it, its SHA-256,
/// both from the same read of the same descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentFacts {
    pub signature: SignatureFact,
    pub sha256: Option<Vec<u8>>,
}

/// The facts a decision may need beyond the file's structure, gathered only when a rule
/// asks for them: who runs the interpreter (a /proc read), and the content (a hash of the
/// whole file). A failure to gather is a fact too: the engine refuses on it.
pub trait Facts {
    fn runner(&mut self) -> std::io::Result<Runner>;
    fn content(&mut self) -> ContentFacts;
}

/// What is being opened, all read from the opened descriptor.
#[derive(Clone, Debug)]
pub struct Object {
    pub kind: FileKind,
    pub id: FileId,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
    /// Modification and change times (seconds, nanoseconds): with size they tell whether
    /// content or metadata changed since a cached verification.
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// `statfs.f_type`.
    pub fs_magic: u64,
    pub code: CodeKind,
    /// Whether someone had the file open for writing when the interpreter opened it, as
    /// the kernel layer saw it; `None` where nothing can tell (fanotify alone).
    pub open_writers: Option<bool>,
    /// Whether the file is an interpreter module's (by identity,
    /// [`crate::modules::ModuleFiles`]): allowed as an import, refused as the main script.
    pub module_file: bool,
    /// The interpreter module this file is, when it is the main script: the file of a
    /// listed module that the process's main script operand resolves to, or the `__main__`
    /// of the package directory it names.
    pub main_module: Option<String>,
    /// The file's access ACL, when it has one: named entries can let the runner write it.
    pub acl: Option<crate::acl::Acl>,
}

/// One check, passed or failed, with a reason a human can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub rule: Rule,
    pub passed: bool,
    pub reason: String,
}

/// The engine's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What the kernel is told: false only when the policy refuses and is enforced.
    pub allow: bool,
    /// What the policy says, enforced or not.
    pub policy_allows: bool,
    /// False in permissive mode.
    pub enforced: bool,
    /// The rule that decided: the first failed check, or what made it pass.
    pub rule: Rule,
    pub checks: Vec<Check>,
    /// The runner's uid when a rule asked who runs the interpreter: the verdict holds for
    /// that runner alone.
    pub runner: Option<u32>,
    /// Whether the kernel layer may keep this verdict on the file's content, for any
    /// runner and any way of running it (see [`decide_open`]).
    pub kernel_may_keep: bool,
}

impl Verdict {
    pub(crate) fn from_checks(policy: &Policy, checks: Vec<Check>, pass_rule: Rule) -> Verdict {
        let failed = checks.iter().find(|c| !c.passed).map(|c| c.rule);
        let policy_allows = failed.is_none();
        let enforced = policy.mode == Mode::Enforce;
        Verdict {
            allow: policy_allows || !enforced,
            policy_allows,
            enforced,
            rule: failed.unwrap_or(pass_rule),
            checks,
            runner: None,
            kernel_may_keep: false,
        }
    }

    /// The reason of the deciding check.
    pub fn reason(&self) -> &str {
        self.checks
            .iter()
            .find(|c| c.rule == self.rule && !c.passed)
            .or_else(|| self.checks.iter().find(|c| c.rule == self.rule))
            .map(|c| c.reason.as_str())
            .unwrap_or("")
    }
}

pub(crate) fn check(rule: Rule, passed: bool, reason: impl Into<String>) -> Check {
    Check {
        rule,
        passed,
        reason: reason.into(),
    }
}

/// The rules an exception may waive for content it names.
const WAIVABLE: [Rule; 3] = [
    Rule::TrustedOwner,
    Rule::TrustedFilesystem,
    Rule::ValidSignature,
];

/// Decides an interpreter's open of `object`: the one decision on a file as code, for the
/// fanotify backend and `guard explain` alike. `profile` is the index of the interpreter's
/// profile. The expensive facts are asked of `facts` only when a rule needs them: the
/// runner when the file's mode, owner or ACL could let someone write it, the content when
/// every structural check passed (or an exception could waive what failed).
///
/// The verdict says whether it depended on the runner and whether the kernel may keep it:
/// only an allowed regular file whose verdict holds for any runner and any way of running
/// it. An interpreter module's file is allowed as an import only, and the kernel, which
/// cannot tell an import from the main script, would let `python3 .../timeit.py` read it.
pub fn decide_open(
    policy: &Policy,
    profile: usize,
    object: &Object,
    facts: &mut dyn Facts,
) -> Verdict {
    if !object.code.is_code() {
        let why = "the interpreter opens it as data";
        return Verdict::from_checks(policy, vec![check(Rule::NotCode, true, why)], Rule::NotCode);
    }

    let mut checks = Vec::with_capacity(8);
    if let Some(module) = &object.main_module {
        main_module_checks(policy, profile, module, &mut checks);
    }
    let regular = object.kind == FileKind::Regular;
    checks.push(if regular {
        check(Rule::RegularFile, true, "a regular file")
    } else {
        check(
            Rule::RegularFile,
            false,
            format!(
                "{} is not a regular file; code must come from one",
                object.kind.describe()
            ),
        )
    });
    if !regular {
        // Ownership, mode and signatures of pipes and devices mean nothing.
        return Verdict::from_checks(policy, checks, Rule::ValidSignature);
    }

    checks.push(if object.nlink == 0 {
        check(
            Rule::NotDeleted,
            false,
            "the file has been deleted (no name links to it)",
        )
    } else {
        check(Rule::NotDeleted, true, "the file has a name")
    });

    match object.open_writers {
        Some(true) => checks.push(check(
            Rule::NoOpenWriters,
            false,
            "the file was open for writing when the interpreter opened it: its content could \
             change after the check",
        )),
        Some(false) => checks.push(check(
            Rule::NoOpenWriters,
            true,
            "nobody had it open for writing",
        )),
        None => {}
    }

    let owner_trusted = policy.trust.owners.contains(&object.uid);
    checks.push(check(
        Rule::TrustedOwner,
        owner_trusted,
        if owner_trusted {
            format!("owned by trusted uid {}", object.uid)
        } else {
            format!(
                "owned by uid {}, which is not a trusted owner {:?}",
                object.uid, policy.trust.owners
            )
        },
    ));

    let mut runner_uid = None;
    if runner_matters(policy, object) {
        match facts.runner() {
            Ok(runner) => {
                runner_uid = Some(runner.uid);
                checks.push(writability_check(policy, &runner, object));
            }
            Err(e) => {
                return facts_unavailable(
                    policy,
                    format!("cannot read who runs the interpreter: {e}"),
                );
            }
        }
    } else {
        checks.push(writability_check(
            policy,
            &Runner::nobody_in_particular(),
            object,
        ));
    }

    let fs_trusted = policy
        .trust
        .filesystems
        .iter()
        .find(|(_, magic)| *magic == object.fs_magic);
    let fs_name = guard_common::filesystem_name(object.fs_magic)
        .map(str::to_string)
        .unwrap_or_else(|| format!("unknown filesystem 0x{:x}", object.fs_magic));
    checks.push(check(
        Rule::TrustedFilesystem,
        fs_trusted.is_some(),
        match fs_trusted {
            Some((name, _)) => format!("on a trusted filesystem ({name})"),
            None => format!("on {fs_name}, which the policy does not trust"),
        },
    ));

    // The content is read only when it can change the answer: every check passed, or
    // those that failed are ones an exception for this content could waive.
    let structural_ok = checks.iter().all(|c| c.passed);
    let waivable_failures = !policy.exceptions.is_empty()
        && checks
            .iter()
            .all(|c| c.passed || WAIVABLE.contains(&c.rule));
    let content = (structural_ok || waivable_failures).then(|| facts.content());

    let signature_check = match &content {
        None => check(
            Rule::ValidSignature,
            false,
            "not checked: an earlier check already refused the file",
        ),
        Some(content) => {
            let listing = content
                .sha256
                .as_ref()
                .and_then(|digest| policy.trust.allowed_sha256.get(digest));
            match (&content.signature, listing) {
                (_, Some(listing)) => check(
                    Rule::ValidSignature,
                    true,
                    format!("sha256 digest is on the {listing}"),
                ),
                (SignatureFact::Verified(v), None) => check(
                    Rule::ValidSignature,
                    true,
                    format!(
                        "valid signature by key {:08x} ({})",
                        v.key_id,
                        v.algo.name()
                    ),
                ),
                (SignatureFact::Failed(e), None) => {
                    check(Rule::ValidSignature, false, e.to_string())
                }
            }
        }
    };
    checks.push(signature_check);

    // An exception waives the rules it names, for the content it names only.
    let exception = content
        .as_ref()
        .and_then(|c| c.sha256.as_ref())
        .and_then(|digest| policy.exceptions.iter().find(|e| &e.sha256 == digest));
    let mut waivers_used = false;
    if let Some(exception) = exception {
        for c in checks.iter_mut() {
            if !c.passed && WAIVABLE.contains(&c.rule) && exception.waive.contains(&c.rule) {
                c.passed = true;
                c.reason = format!("{}; waived by exception: {}", c.reason, exception.reason);
                waivers_used = true;
            }
        }
    }

    let pass_rule = if waivers_used {
        Rule::Exception
    } else {
        Rule::ValidSignature
    };
    let mut verdict = Verdict::from_checks(policy, checks, pass_rule);
    verdict.runner = runner_uid;
    verdict.kernel_may_keep = verdict.policy_allows && runner_uid.is_none() && !object.module_file;
    verdict
}

impl Runner {
    /// The runner of a rule that asks nothing of the runner: in no group, owning nothing.
    fn nobody_in_particular() -> Runner {
        Runner {
            uid: u32::MAX,
            gids: Vec::new(),
        }
    }
}

/// Whether a verification of the file's content may be reused for a later open while its
/// size and times stay the same: only when nobody but a trusted owner can write it. A
/// writer holding a shared writable mapping changes the bytes without moving the times
/// (tmpfs stamps them at the first write fault only), so a group's member, an untrusted
/// owner or an ACL's named writer could rewrite verified content unseen.
pub fn content_may_be_cached(policy: &Policy, object: &Object) -> bool {
    !runner_matters(policy, object)
}

/// Whether the kernel may answer later opens of the file itself, without asking, while
/// nothing about the file changes: the verdict is the same for every opener and every way
/// of opening it. Verified code (a signature or a listed digest; an exception is not
/// stretched to opens nobody sees), a verdict the kernel may keep (any runner, not an
/// interpreter module's file, which is refused as a main script), content only a trusted
/// owner can write (nobody rewrites it through a mapping unseen), and allows not logged
/// one by one.
pub fn same_for_every_open(policy: &Policy, object: &Object, verdict: &Verdict) -> bool {
    object.code.is_code()
        && verdict.policy_allows
        && verdict.kernel_may_keep
        && verdict.rule == Rule::ValidSignature
        && content_may_be_cached(policy, object)
        && !policy.audit.log_allows
}

/// Whether who runs the interpreter can change whether it may write the file: a
/// group-writable file, an owner the policy does not trust, an ACL with named write
/// entries. A trusted owner's file cannot be made writable to the runner by anyone else,
/// and its mode only by that owner: for root's 0644 files the runner is never asked.
fn runner_matters(policy: &Policy, object: &Object) -> bool {
    object.mode & 0o020 != 0
        || !policy.trust.owners.contains(&object.uid)
        || object
            .acl
            .as_ref()
            .is_some_and(crate::acl::Acl::grants_named_write)
}

/// The file of an interpreter module run as the main script is that module: refused with
/// the rule of its `-m` spelling (`python3 .../timeit.py -s CODE` is `-m timeit -s CODE`),
/// by the subject's profile's lists, matched as the exec gate matches `-m` operands.
fn main_module_checks(policy: &Policy, profile: usize, module: &str, checks: &mut Vec<Check>) {
    let Some(profile) = policy.interpreters.get(profile) else {
        return;
    };
    if module.starts_with('/') {
        return main_gadget_script_checks(profile, module, checks);
    }
    let kinds = module_kinds(module.as_bytes(), true, &ProfileModules(profile));
    // A module another profile lists is not one for this interpreter: nothing to add.
    if profile.inline_code == Permission::Deny && kinds & MODULE_INLINE_CODE != 0 {
        checks.push(check(
            Rule::NoInlineCode,
            false,
            format!(
                "the main script is the file of module {module}, which runs Python from its \
                 command line or a file it reads as data (inline_code_modules): refused like \
                 -m {module}, like -c"
            ),
        ));
    }
    if profile.stdin == Permission::Deny && kinds & MODULE_STDIN_CODE != 0 {
        checks.push(check(
            Rule::NoStdinCode,
            false,
            format!(
                "the main script is the file of module {module}, which reads Python from \
                 standard input (stdin_code_modules): refused like -m {module}, like code on \
                 stdin"
            ),
        ));
    }
}

/// A script of the distribution that is an interpreter itself, run as the main script
/// (`ruby /usr/bin/irb`): refused by the rule of what it runs, by the subject's profile's
/// lists (`inline_code_scripts`, `stdin_code_scripts`, matched against its real path).
fn main_gadget_script_checks(
    profile: &crate::policy::Profile,
    script: &str,
    checks: &mut Vec<Check>,
) {
    let listed = |patterns: &[glob::Pattern]| patterns.iter().any(|p| p.matches(script));
    if profile.inline_code == Permission::Deny && listed(&profile.inline_code_scripts) {
        checks.push(check(
            Rule::NoInlineCode,
            false,
            format!(
                "the main script is {script}, which runs code from its command line or a file \
                 it reads as data (inline_code_scripts): refused like inline code"
            ),
        ));
    }
    if profile.stdin == Permission::Deny && listed(&profile.stdin_code_scripts) {
        checks.push(check(
            Rule::NoStdinCode,
            false,
            format!(
                "the main script is {script}, which reads code from standard input \
                 (stdin_code_scripts): refused like code on stdin"
            ),
        ));
    }
}

/// The verdict when the facts cannot be established (descriptor exhaustion, a process
/// that vanished, an I/O error): refuse, in enforce mode, saying why.
pub fn facts_unavailable(policy: &Policy, reason: impl Into<String>) -> Verdict {
    Verdict::from_checks(
        policy,
        vec![check(Rule::FactsUnavailable, false, reason)],
        Rule::FactsUnavailable,
    )
}

/// W^X: the runner must not be able to change the code it runs. Trusted owners are exempt
/// as runners (root running root's files), never as writers through group or world bits.
fn writability_check(policy: &Policy, runner: &Runner, object: &Object) -> Check {
    let mode = object.mode;
    if mode & 0o002 != 0 {
        return check(
            Rule::NotWritableByRunner,
            false,
            format!("mode {:04o}: writable by everyone", mode & 0o7777),
        );
    }
    if mode & 0o020 != 0 && runner.gids.contains(&object.gid) {
        return check(
            Rule::NotWritableByRunner,
            false,
            format!(
                "mode {:04o}: writable by group {}, which the runner (uid {}) is in",
                mode & 0o7777,
                object.gid,
                runner.uid
            ),
        );
    }
    if let Some(why) = object
        .acl
        .as_ref()
        .and_then(|acl| acl.write_grant(runner.uid, &runner.gids, object.gid))
    {
        return check(Rule::NotWritableByRunner, false, why);
    }
    let runner_trusted = policy.trust.owners.contains(&runner.uid);
    if object.uid == runner.uid && !runner_trusted {
        return check(
            Rule::NotWritableByRunner,
            false,
            format!(
                "owned by the runner (uid {}), who can rewrite it",
                runner.uid
            ),
        );
    }
    check(
        Rule::NotWritableByRunner,
        true,
        format!("mode {:04o}: not writable by the runner", mode & 0o7777),
    )
}

/// The policy's executable rules (`[native] code`) for `object` as a program or a shared
/// library, by the kernel layer's own judge ([`guard_common::lsm::judge_native`]): `None`
/// when it may run (always with `code = "any"`). User space cannot read the user namespace
/// owning a file's superblock: it is taken as the initial one, which every filesystem
/// mounted outside a container is.
pub fn decide_native(policy: &Policy, object: &Object) -> Option<Rule> {
    use guard_common::lsm::CodeFile;
    let file = CodeFile {
        mode: object.mode,
        nlink: u32::try_from(object.nlink).unwrap_or(u32::MAX),
        uid: object.uid,
        // The kernel holds magics in 32 bits (see `guard_common::lsm::Trust`).
        fs_magic: {
            #[allow(clippy::cast_possible_truncation)]
            let magic = object.fs_magic as u32;
            magic
        },
        fs_user_ns_level: 0,
    };
    guard_common::lsm::judge_native(policy.native.code.flags(), &file, &policy.trust_table())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::digest::HashAlgo;
    use crate::policy::Policy;

    const EXT4: u64 = 0xEF53;
    const FUSE: u64 = 0x6573_5546;

    pub(crate) fn policy(text: &str) -> Policy {
        Policy::parse(text, "test.toml", Path::new("/")).unwrap()
    }

    /// A python profile on ext4 and tmpfs, root the trusted owner: the rules' own tests and
    /// the launch tests share it.
    pub(crate) fn default_policy() -> Policy {
        policy(
            r#"
[trust]
owners = [0]
filesystems = ["ext4", "tmpfs"]
[[interpreter]]
name = "python"
executables = ["/usr/bin/python3*"]
code_patterns = ["*.py"]
sniff = ["pyc", "zip"]
deny_env = ["PYTHONSTARTUP", "PYTHONINSPECT"]
"#,
        )
    }

    /// Who runs, as the tests spell it: a runner and a profile.
    struct Subject {
        uid: u32,
        gids: Vec<u32>,
        profile: Option<usize>,
    }

    fn runner() -> Subject {
        Subject {
            uid: 1000,
            gids: vec![1000, 27],
            profile: Some(0),
        }
    }

    /// A file as the tests spell it: its structure and what its content would say.
    #[derive(Clone)]
    struct TestFile {
        object: Object,
        signature: SignatureFact,
        sha256: Option<Vec<u8>>,
    }

    impl std::ops::Deref for TestFile {
        type Target = Object;
        fn deref(&self) -> &Object {
            &self.object
        }
    }

    impl std::ops::DerefMut for TestFile {
        fn deref_mut(&mut self) -> &mut Object {
            &mut self.object
        }
    }

    /// The facts as given, with what the engine asked for.
    struct Given {
        runner: Runner,
        content: ContentFacts,
        asked_runner: bool,
        asked_content: bool,
    }

    impl Facts for Given {
        fn runner(&mut self) -> std::io::Result<Runner> {
            self.asked_runner = true;
            Ok(self.runner.clone())
        }
        fn content(&mut self) -> ContentFacts {
            self.asked_content = true;
            self.content.clone()
        }
    }

    fn given(subject: &Subject, file: &TestFile) -> Given {
        Given {
            runner: Runner {
                uid: subject.uid,
                gids: subject.gids.clone(),
            },
            content: ContentFacts {
                signature: file.signature.clone(),
                sha256: file.sha256.clone(),
            },
            asked_runner: false,
            asked_content: false,
        }
    }

    fn decide_open(policy: &Policy, subject: &Subject, file: &TestFile) -> Verdict {
        let profile = subject.profile.unwrap_or(usize::MAX);
        super::decide_open(policy, profile, &file.object, &mut given(subject, file))
    }

    fn signed() -> SignatureFact {
        SignatureFact::Verified(Verified {
            key_id: 0x1234_abcd,
            algo: HashAlgo::Sha256,
        })
    }

    fn good_file() -> TestFile {
        TestFile {
            object: good_object(),
            signature: signed(),
            sha256: None,
        }
    }

    fn good_object() -> Object {
        Object {
            kind: FileKind::Regular,
            id: FileId { dev: 2049, ino: 42 },
            uid: 0,
            gid: 0,
            mode: libc::S_IFREG | 0o644,
            size: 100,
            nlink: 1,
            mtime: (0, 0),
            ctime: (0, 0),
            fs_magic: EXT4,
            code: CodeKind::Source,
            open_writers: None,
            module_file: false,
            main_module: None,
            acl: None,
        }
    }

    fn failed(verdict: &Verdict) -> Vec<Rule> {
        verdict
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.rule)
            .collect()
    }

    /// `[native] code` judged by the kernel's own function, on the facts explain gathers.
    #[test]
    fn native_rules_follow_the_policy() {
        let with = |code: &str| {
            policy(&format!(
                "[trust]\nowners = [0]\nfilesystems = [\"ext4\", \"tmpfs\"]\n[native]\ncode = \"{code}\"\n"
            ))
        };
        let nobodys = Object {
            uid: 65534,
            ..good_object()
        };
        let deleted = Object {
            nlink: 0,
            ..good_object()
        };
        let fifo = Object {
            mode: libc::S_IFIFO | 0o644,
            ..good_object()
        };
        let group_writable = Object {
            mode: libc::S_IFREG | 0o775,
            ..good_object()
        };
        let on_fuse = Object {
            fs_magic: FUSE,
            ..good_object()
        };
        let any = with("any");
        for object in [&nobodys, &deleted, &fifo, &on_fuse] {
            assert_eq!(decide_native(&any, object), None);
        }
        let linked = with("linked");
        assert_eq!(decide_native(&linked, &nobodys), None);
        assert_eq!(decide_native(&linked, &on_fuse), None);
        assert_eq!(decide_native(&linked, &deleted), Some(Rule::NotDeleted));
        assert_eq!(decide_native(&linked, &fifo), Some(Rule::RegularFile));
        // The default: a user's file, a writable one, FUSE's claims are refused; a root-made
        // filesystem of an untrusted type (an overlay) is not.
        let owner = with("trusted-owner");
        assert_eq!(decide_native(&owner, &good_file()), None);
        assert_eq!(decide_native(&owner, &nobodys), Some(Rule::TrustedOwner));
        assert_eq!(
            decide_native(&owner, &group_writable),
            Some(Rule::NotWritableByRunner)
        );
        assert_eq!(
            decide_native(&owner, &on_fuse),
            Some(Rule::TrustedFilesystem)
        );
        let on_overlay = Object {
            fs_magic: 0x794C_7630,
            ..good_object()
        };
        assert_eq!(decide_native(&owner, &on_overlay), None);
        let trusted = with("trusted");
        assert_eq!(
            decide_native(&trusted, &on_overlay),
            Some(Rule::TrustedFilesystem)
        );
        assert_eq!(decide_native(&trusted, &good_file()), None);
        assert_eq!(decide_native(&trusted, &nobodys), Some(Rule::TrustedOwner));
        assert_eq!(
            decide_native(&trusted, &group_writable),
            Some(Rule::NotWritableByRunner)
        );
        assert_eq!(
            decide_native(&trusted, &on_fuse),
            Some(Rule::TrustedFilesystem)
        );
        assert_eq!(decide_native(&trusted, &deleted), Some(Rule::NotDeleted));
    }

    #[test]
    fn signed_root_owned_file_is_allowed() {
        let v = decide_open(&default_policy(), &runner(), &good_file());
        assert!(v.allow && v.policy_allows && v.enforced, "{v:?}");
        assert_eq!(v.rule, Rule::ValidSignature);
        assert!(v.reason().contains("1234abcd"));
        assert!(failed(&v).is_empty());
    }

    #[test]
    fn data_reads_are_not_checked() {
        let mut object = good_file();
        object.code = CodeKind::NotCode;
        object.mode = libc::S_IFREG | 0o666;
        object.signature = SignatureFact::Failed(SignatureError::Missing);
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(v.allow);
        assert_eq!(v.rule, Rule::NotCode);
    }

    #[test]
    fn every_non_regular_kind_is_refused() {
        for (mode, kind) in [
            (libc::S_IFIFO, FileKind::Fifo),
            (libc::S_IFSOCK, FileKind::Socket),
            (libc::S_IFCHR, FileKind::CharDevice),
            (libc::S_IFBLK, FileKind::BlockDevice),
            (libc::S_IFDIR, FileKind::Directory),
            (libc::S_IFLNK, FileKind::Symlink),
            (0, FileKind::Anonymous),
        ] {
            assert_eq!(FileKind::from_mode(mode | 0o644), kind);
            let mut object = good_file();
            object.kind = kind;
            object.mode = mode | 0o644;
            object.code = CodeKind::MainScript;
            let v = decide_open(&default_policy(), &runner(), &object);
            assert!(!v.allow, "{kind:?} allowed");
            assert_eq!(v.rule, Rule::RegularFile);
            assert!(v.reason().contains("not a regular file"), "{}", v.reason());
        }
    }

    #[test]
    fn deleted_files_are_refused() {
        let mut object = good_file();
        object.nlink = 0;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::NotDeleted);
    }

    #[test]
    fn files_open_for_writing_are_refused_as_code_only() {
        let mut object = good_file();
        object.open_writers = Some(true);
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::NoOpenWriters);
        object.code = CodeKind::NotCode;
        assert!(decide_open(&default_policy(), &runner(), &object).allow);
        for unknown_or_none in [None, Some(false)] {
            let mut object = good_file();
            object.open_writers = unknown_or_none;
            assert!(decide_open(&default_policy(), &runner(), &object).allow);
        }
    }

    #[test]
    fn untrusted_owner_is_refused_even_when_signed() {
        let mut object = good_file();
        object.uid = 1001;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::TrustedOwner);
        assert!(v.reason().contains("uid 1001"), "{}", v.reason());
    }

    #[test]
    fn world_writable_is_refused() {
        let mut object = good_file();
        object.mode = libc::S_IFREG | 0o666;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::NotWritableByRunner);
        assert!(
            v.reason().contains("writable by everyone"),
            "{}",
            v.reason()
        );
    }

    #[test]
    fn group_writable_matters_only_for_members() {
        let mut object = good_file();
        object.mode = libc::S_IFREG | 0o664;
        object.gid = 27;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert_eq!(v.rule, Rule::NotWritableByRunner);
        assert!(!v.allow);
        object.gid = 50;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(v.allow, "{v:?}");
    }

    #[test]
    fn runner_owned_is_refused_unless_runner_is_trusted_owner() {
        let mut object = good_file();
        object.uid = 1000;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        // The signature is not checked then: it counts as failed.
        assert_eq!(
            failed(&v),
            vec![
                Rule::TrustedOwner,
                Rule::NotWritableByRunner,
                Rule::ValidSignature
            ]
        );
        let owner_check = &v.checks[3];
        assert!(
            owner_check.reason.contains("owned by the runner"),
            "{owner_check:?}"
        );
        // A trusted owner running its own files (root running root's) is not refused.
        let root = Subject {
            uid: 0,
            gids: vec![0],
            profile: Some(0),
        };
        let v = decide_open(&default_policy(), &root, &good_file());
        assert!(v.allow, "root running root's file: {v:?}");
    }

    #[test]
    fn untrusted_filesystem_is_refused() {
        let mut object = good_file();
        object.fs_magic = FUSE;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::TrustedFilesystem);
        assert!(v.reason().contains("fuse"), "{}", v.reason());
        object.fs_magic = 0xdead;
        let v = decide_open(&default_policy(), &runner(), &object);
        assert!(
            v.reason().contains("unknown filesystem 0xdead"),
            "{}",
            v.reason()
        );
    }

    #[test]
    fn signature_failures_are_refused_with_their_reason() {
        for error in [
            SignatureError::Missing,
            SignatureError::Truncated(2),
            SignatureError::NotASignature(4),
            SignatureError::UnsupportedVersion(3),
            SignatureError::UnsupportedAlgorithm(17),
            SignatureError::UnknownKeyId(7),
            SignatureError::BadSignature,
            SignatureError::DigestMismatch,
        ] {
            let mut object = good_file();
            object.signature = SignatureFact::Failed(error.clone());
            let v = decide_open(&default_policy(), &runner(), &object);
            assert!(!v.allow);
            assert_eq!(v.rule, Rule::ValidSignature);
            assert_eq!(v.reason(), error.to_string());
        }
    }

    #[test]
    fn content_is_asked_for_only_when_structure_passes() {
        let policy = default_policy();
        let mut file = good_file();
        let mut facts = given(&runner(), &file);
        let v = super::decide_open(&policy, 0, &file, &mut facts);
        assert!(v.allow && facts.asked_content);
        file.mode = libc::S_IFREG | 0o666;
        let mut facts = given(&runner(), &file);
        let v = super::decide_open(&policy, 0, &file, &mut facts);
        assert!(!facts.asked_content);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::NotWritableByRunner);
        let signature = v.checks.iter().find(|c| c.rule == Rule::ValidSignature);
        assert!(!signature.unwrap().passed, "{v:?}");
        // A failure an exception could waive needs the digest the exception names.
        let hex = "22".repeat(32);
        let excepting = self::policy(&format!(
            "[[exception]]\ndigest = \"sha256:{hex}\"\nwaive = [\"trusted-owner\"]\nreason = \"R\"\n"
        ));
        let mut file = good_file();
        file.uid = 1001;
        let mut facts = given(&runner(), &file);
        super::decide_open(&excepting, 0, &file, &mut facts);
        assert!(facts.asked_content);
        file.mode = libc::S_IFREG | 0o666;
        let mut facts = given(&runner(), &file);
        super::decide_open(&excepting, 0, &file, &mut facts);
        assert!(!facts.asked_content, "world-writable is never waived");
    }

    #[test]
    fn only_content_nobody_else_can_write_is_cached() {
        let policy = default_policy();
        assert!(content_may_be_cached(&policy, &good_object()));
        let mut group_writable = good_object();
        group_writable.mode = libc::S_IFREG | 0o664;
        assert!(!content_may_be_cached(&policy, &group_writable));
        let mut users = good_object();
        users.uid = 1000;
        assert!(!content_may_be_cached(&policy, &users));
    }

    #[test]
    fn only_verified_code_the_same_for_every_open_is_left_to_the_kernel() {
        let policy = default_policy();
        let left = |policy: &Policy, file: &TestFile| {
            let v = super::decide_open(policy, 0, file, &mut given(&runner(), file));
            same_for_every_open(policy, file, &v)
        };
        assert!(left(&policy, &good_file()));
        let mut group_writable = good_file();
        group_writable.mode = libc::S_IFREG | 0o664;
        assert!(!left(&policy, &group_writable), "depends on the runner");
        let mut module = good_file();
        module.module_file = true;
        assert!(!left(&policy, &module), "refused as a main script");
        let mut unsigned = good_file();
        unsigned.signature = SignatureFact::Failed(SignatureError::Missing);
        assert!(!left(&policy, &unsigned));
        let mut data = good_file();
        data.object.code = CodeKind::NotCode;
        assert!(!left(&policy, &data), "allowed as data, not verified");
        let mut logging = default_policy();
        logging.audit.log_allows = true;
        assert!(!left(&logging, &good_file()), "every allow is logged");
        let mut permissive = default_policy();
        permissive.mode = Mode::Permissive;
        assert!(
            !left(&permissive, &unsigned),
            "allowed only because permissive"
        );
    }

    #[test]
    fn the_runner_is_asked_for_only_when_it_can_matter() {
        let policy = default_policy();
        let kept = |file: &TestFile| {
            let mut facts = given(&runner(), file);
            let v = super::decide_open(&policy, 0, file, &mut facts);
            assert_eq!(facts.asked_runner, v.runner.is_some());
            (facts.asked_runner, v.kernel_may_keep)
        };
        // Root's 0644 file: any runner, and the kernel may keep it.
        assert_eq!(kept(&good_file()), (false, true));
        let mut group_writable = good_file();
        group_writable.mode = libc::S_IFREG | 0o664;
        group_writable.gid = 50;
        assert_eq!(kept(&group_writable), (true, false));
        let mut users = good_file();
        users.uid = 1001;
        assert!(kept(&users).0);
        // Allowed as an import only: not for the kernel to keep.
        let mut module = good_file();
        module.module_file = true;
        assert_eq!(kept(&module), (false, false));
        let mut unsigned = good_file();
        unsigned.signature = SignatureFact::Failed(SignatureError::Missing);
        assert_eq!(kept(&unsigned), (false, false));
        // Who runs it cannot be read: refused, saying so.
        struct Unknown;
        impl Facts for Unknown {
            fn runner(&mut self) -> std::io::Result<Runner> {
                Err(std::io::Error::from_raw_os_error(libc::ESRCH))
            }
            fn content(&mut self) -> ContentFacts {
                unreachable!("refused before the content")
            }
        }
        let v = super::decide_open(&policy, 0, &group_writable, &mut Unknown);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::FactsUnavailable);
    }

    #[test]
    fn allow_list_replaces_a_signature() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.sha256"),
            format!("{}  x\n", "11".repeat(32)),
        )
        .unwrap();
        let policy =
            Policy::parse("[trust]\nallow_digests = [\"a.sha256\"]\n", "p", dir.path()).unwrap();
        let mut object = good_file();
        object.signature = SignatureFact::Failed(SignatureError::Missing);
        object.sha256 = Some(vec![0x11; 32]);
        let v = decide_open(&policy, &runner(), &object);
        assert!(v.allow, "{v:?}");
        object.sha256 = Some(vec![0x12; 32]);
        assert!(!decide_open(&policy, &runner(), &object).allow);
    }

    #[test]
    fn exceptions_waive_only_what_they_name() {
        let hex = "22".repeat(32);
        let policy = policy(&format!(
            "[[exception]]\ndigest = \"sha256:{hex}\"\nwaive = [\"valid-signature\"]\nreason = \"SEC-1\"\n"
        ));
        let mut object = good_file();
        object.signature = SignatureFact::Failed(SignatureError::Missing);
        object.sha256 = Some(vec![0x22; 32]);
        let v = decide_open(&policy, &runner(), &object);
        assert!(v.allow, "{v:?}");
        assert_eq!(v.rule, Rule::Exception);
        object.mode = libc::S_IFREG | 0o666;
        let v = decide_open(&policy, &runner(), &object);
        assert!(!v.allow);
        assert_eq!(v.rule, Rule::NotWritableByRunner);
    }

    #[test]
    fn permissive_mode_reports_without_refusing() {
        let policy = policy("mode = \"permissive\"\n");
        let mut object = good_file();
        object.signature = SignatureFact::Failed(SignatureError::Missing);
        let v = decide_open(&policy, &runner(), &object);
        assert!(v.allow && !v.policy_allows && !v.enforced);
        assert_eq!(v.rule, Rule::ValidSignature);
    }

    #[test]
    fn a_gadget_script_as_main_script_is_refused_by_what_it_runs() {
        let policy = Policy::parse(
            "[[interpreter]]\nname = \"ruby\"\nexecutables = []\nargv = \"ruby\"\n\
             inline_code_scripts = [\"/usr/bin/erb*\"]\nstdin_code_scripts = [\"/usr/bin/irb*\"]\n",
            "p",
            Path::new("/"),
        )
        .unwrap();
        let as_main = |script: &str| {
            let mut object = good_file();
            object.code = CodeKind::MainScript;
            object.main_module = Some(script.to_string());
            decide_open(&policy, &runner(), &object)
        };
        let v = as_main("/usr/bin/irb3.1");
        assert_eq!((v.allow, v.rule), (false, Rule::NoStdinCode), "{v:?}");
        assert!(v.reason().contains("/usr/bin/irb3.1"), "{}", v.reason());
        assert_eq!(as_main("/usr/bin/erb").rule, Rule::NoInlineCode);
        assert!(as_main("/usr/bin/rake").allow);
        let e = match Policy::parse(
            "[[interpreter]]\nname = \"r\"\nexecutables = []\nstdin_code_scripts = [\"irb\"]\n",
            "p",
            Path::new("/"),
        ) {
            Ok(_) => panic!("a relative script pattern was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("not an absolute path"), "{e}");
    }

    #[test]
    fn the_file_of_an_interpreter_module_as_main_script_is_that_module() {
        let policy = default_policy();
        let as_main = |module: Option<&str>| {
            let mut object = good_file();
            object.code = CodeKind::MainScript;
            object.main_module = module.map(str::to_string);
            decide_open(&policy, &runner(), &object)
        };
        for (module, rule) in [
            ("timeit", Rule::NoInlineCode),
            ("pdb", Rule::NoInlineCode),
            ("cProfile", Rule::NoInlineCode),
            ("idlelib.pyshell", Rule::NoInlineCode),
            ("code", Rule::NoStdinCode),
            ("asyncio", Rule::NoStdinCode),
            ("asyncio.__main__", Rule::NoStdinCode),
        ] {
            let v = as_main(Some(module));
            assert_eq!((v.allow, v.rule), (false, rule), "{module}: {v:?}");
            assert!(
                v.reason().contains(&format!("the file of module {module}")),
                "{}",
                v.reason()
            );
        }
        // pdb is in both lists: both checks fail, inline code decides.
        assert_eq!(
            failed(&as_main(Some("pdb"))),
            vec![Rule::NoInlineCode, Rule::NoStdinCode, Rule::ValidSignature]
        );
        // Not an interpreter module, not the main script (an import), or no profile.
        for module in [None, Some("json.tool"), Some("codeop"), Some("pdbx")] {
            assert!(as_main(module).allow, "{module:?}");
        }
        let mut object = good_file();
        object.main_module = Some("timeit".into());
        let nobody_profiled = Subject {
            profile: None,
            ..runner()
        };
        assert!(decide_open(&policy, &nobody_profiled, &object).allow);
        // The profile's permissions and lists decide, as for `-m`.
        let text = "[[interpreter]]\nname = \"p\"\nexecutables = []\n";
        let allowed = Policy::parse(
            &format!("{text}inline_code = \"allow\"\n"),
            "p",
            Path::new("/"),
        )
        .unwrap();
        assert!(decide_open(&allowed, &runner(), &object).allow);
        object.main_module = Some("code".into());
        assert_eq!(
            decide_open(&allowed, &runner(), &object).rule,
            Rule::NoStdinCode
        );
        let cleared = Policy::parse(
            &format!("{text}stdin_code_modules = []\n"),
            "p",
            Path::new("/"),
        )
        .unwrap();
        assert!(decide_open(&cleared, &runner(), &object).allow);
        // A refused module file is refused whatever its signature says.
        object.signature = SignatureFact::Failed(SignatureError::Missing);
        assert_eq!(
            decide_open(&policy, &runner(), &object).rule,
            Rule::NoStdinCode
        );
    }
}
