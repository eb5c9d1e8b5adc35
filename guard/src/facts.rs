//! Fact gathering: everything the engine decides on, read from an opened descriptor
//! (fstat, fstatfs, fgetxattr, the digest of the same descriptor) or from the kernel's
//! view of a process. Paths are used to name things in logs and to match code patterns on
//! a file's name, never to decide whether content is trusted.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cache::{ContentKey, VerificationCache};
use crate::digest::{Digest, HashAlgo, digest_file};
use crate::engine::{
    CodeKind, ContentFacts, Facts, FileId, FileKind, Object, Runner, SignatureFact, Verdict,
};
use crate::ima::SignatureError;
use crate::keys::read_signature;
use crate::policy::{Policy, Profile, Sniff};
use crate::sniff::sniff;

/// Structural facts of an opened file: what fstat, fstatfs and the ACL xattr say.
pub fn object_of(file: &File, code: CodeKind) -> io::Result<Object> {
    object_with(file, &file.metadata()?, code)
}

/// [`object_of`] with the descriptor's fstat already taken (`meta`, of `file`): the
/// content is verified against this snapshot, so any change since fails the verification.
pub fn object_with(file: &File, meta: &std::fs::Metadata, code: CodeKind) -> io::Result<Object> {
    let statfs = nix::sys::statfs::fstatfs(file.as_fd()).map_err(io::Error::from)?;
    Ok(Object {
        kind: FileKind::from_mode(meta.mode()),
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
        size: meta.size(),
        nlink: meta.nlink(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        fs_magic: statfs.filesystem_type().0 as u64,
        code,
        open_writers: None,
        module_file: false,
        main_module: None,
        acl: crate::acl::read(file)?,
    })
}

/// What makes `file` code for an interpreter with `profile`: being its main script, a code
/// pattern on any name the open reached it by (the file's own, the one the interpreter
/// asked for), one of those names being a component of an entry of its search path
/// (`search_path`: `zipimport` opens the longest prefix of an entry that is a file), or its
/// content. When a name could not be read
/// (`missing` says why), the open is judged as code: a fact guard could not establish never
/// makes it data.
///
/// A file on the search path is an archive whatever its bytes: the interpreter reads code
/// out of it by that name, and bytes its owner can change between the agent's read and the
/// interpreter's are no verdict (issue 22).
pub fn classify(
    profile: &Profile,
    file: &File,
    size: u64,
    names: &[&[u8]],
    search_path: &[Vec<u8>],
    is_main_script: bool,
    missing: Option<&str>,
) -> io::Result<CodeKind> {
    if is_main_script && profile.main_script_is_code {
        return Ok(CodeKind::MainScript);
    }
    if let Some(kind) = code_by_name(profile, names) {
        return Ok(kind);
    }
    if names
        .iter()
        .any(|name| search_path.iter().any(|entry| entry == name))
    {
        return Ok(CodeKind::Archive);
    }
    Ok(match sniff(file, size, &profile.sniff)? {
        Some(Sniff::Pyc) => CodeKind::Bytecode,
        Some(Sniff::Zip) => CodeKind::Archive,
        Some(Sniff::Elf) => CodeKind::Native,
        None if missing.is_some() => CodeKind::Unknown,
        None => CodeKind::NotCode,
    })
}

/// The code kind of the first of `names` a code pattern matches. Names are bytes: one that
/// is not UTF-8 is matched with its invalid bytes replaced, which keeps its suffix.
pub fn code_by_name(profile: &Profile, names: &[&[u8]]) -> Option<CodeKind> {
    names.iter().find_map(|name| {
        let name = String::from_utf8_lossy(name);
        profile
            .code_patterns
            .iter()
            .any(|p| p.matches(&name))
            .then(|| kind_by_name(&name))
    })
}

/// What a file matched by a code pattern is, for the audit trail, from its name alone:
/// reading it again on every cache hit only to label it would cost an I/O per decision.
fn kind_by_name(name: &str) -> CodeKind {
    let extension = name.rsplit('.').next().unwrap_or_default();
    let shared_object = name.ends_with(".so") || name.contains(".so.");
    match extension {
        "pyc" | "pyo" => CodeKind::Bytecode,
        "zip" | "whl" | "egg" | "pyz" => CodeKind::Archive,
        _ if shared_object => CodeKind::Native,
        _ => CodeKind::Source,
    }
}

/// Reads the signature xattr of `file`, verifies it and, when the policy needs one, takes
/// the SHA-256 of the same descriptor. The file is hashed at most once per algorithm, and
/// any change to it while it is hashed (against `object`, the facts the decision and its
/// cache key were made on) makes the signature fail: bytes that were not verified are
/// never allowed.
pub fn verify_content(policy: &Policy, file: &File, object: &Object) -> ContentFacts {
    let mut sha256: Option<Digest> = None;
    let mut hash = |algo: HashAlgo| -> io::Result<Digest> {
        if let Some(d) = sha256.as_ref().filter(|d| d.algo == algo) {
            return Ok(d.clone());
        }
        let digest = digest_file(file, algo)?;
        if algo == HashAlgo::Sha256 {
            sha256 = Some(digest.clone());
        }
        Ok(digest)
    };

    let signature = match read_signature(file) {
        Ok(value) => match policy.trust.keyring.verify(&value, &mut hash) {
            Ok(verified) => SignatureFact::Verified(verified),
            Err(e) => SignatureFact::Failed(e),
        },
        Err(e) => SignatureFact::Failed(e),
    };
    let signature_ok = matches!(signature, SignatureFact::Verified(_));
    let sha256 = if !signature_ok && policy.wants_sha256() {
        hash(HashAlgo::Sha256).ok().map(|d| d.bytes)
    } else if policy.wants_sha256() {
        sha256.map(|d| d.bytes)
    } else {
        None
    };

    let changed = match file.metadata() {
        Ok(after) => {
            after.size() != object.size
                || (after.mtime(), after.mtime_nsec()) != object.mtime
                || (after.ctime(), after.ctime_nsec()) != object.ctime
        }
        Err(_) => true,
    };
    if changed {
        return ContentFacts {
            signature: SignatureFact::Failed(SignatureError::Unreadable(
                "the file changed while it was being verified".into(),
            )),
            sha256: None,
        };
    }
    ContentFacts { signature, sha256 }
}

/// The facts of one open as the engine asks for them: the runner from `runner` (read only
/// when a rule needs it), the content of `file` through `cache` when one is given.
pub struct OpenFacts<'a, R: FnMut() -> io::Result<Runner>> {
    pub policy: &'a Policy,
    pub file: &'a File,
    pub object: &'a Object,
    pub cache: Option<&'a VerificationCache>,
    pub runner: R,
    /// Whether the content was needed, and where it came from.
    pub lookup: Lookup,
}

impl<R: FnMut() -> io::Result<Runner>> Facts for OpenFacts<'_, R> {
    fn runner(&mut self) -> io::Result<Runner> {
        (self.runner)()
    }

    fn content(&mut self) -> ContentFacts {
        let cache = self
            .cache
            .filter(|_| crate::engine::content_may_be_cached(self.policy, self.object));
        let key = ContentKey::of(self.object);
        if let Some(known) = cache.and_then(|c| c.get(&key)) {
            self.lookup = Lookup::Hit;
            return known;
        }
        self.lookup = Lookup::Miss;
        // Read before verifying: a reload meanwhile (keys revoked) keeps this result out.
        let epoch = cache.map(VerificationCache::epoch);
        let content = verify_content(self.policy, self.file, self.object);
        if let (Some(cache), Some(epoch)) = (cache, epoch) {
            cache.put_since(key, content.clone(), epoch);
        }
        content
    }
}

/// Decides `profile`'s open of `file` (structural facts `object`), asking `runner` for who
/// runs it only when a rule needs to know, and verifying the content (through `cache` when
/// one is given) only when it can change the answer.
pub fn decide_file(
    policy: &Policy,
    profile: usize,
    file: &File,
    object: &Object,
    runner: impl FnMut() -> io::Result<Runner>,
    cache: Option<&VerificationCache>,
) -> (Verdict, Lookup) {
    let mut facts = OpenFacts {
        policy,
        file,
        object,
        cache,
        runner,
        lookup: Lookup::NotNeeded,
    };
    let verdict = crate::engine::decide_open(policy, profile, object, &mut facts);
    (verdict, facts.lookup)
}

/// Whether a decision needed the content verification, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    NotNeeded,
    Hit,
    Miss,
}

/// File identities of every executable the profiles name, with the profile index.
/// Symlinks are followed (python3 -> python3.11), so the identity is the real binary.
pub fn resolve_interpreters(policy: &Policy) -> Vec<(FileId, usize)> {
    let mut found = Vec::new();
    for (index, path) in executable_matches(policy) {
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.is_file()
            && meta.mode() & 0o111 != 0
        {
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if !found.iter().any(|(f, _)| *f == id) {
                found.push((id, index));
            }
        }
    }
    found
}

/// Every path a profile's `executables` globs match, with the profile's index.
fn executable_matches(policy: &Policy) -> impl Iterator<Item = (usize, PathBuf)> + '_ {
    policy
        .interpreters
        .iter()
        .enumerate()
        .flat_map(|(index, profile)| {
            profile
                .executables
                .iter()
                .filter_map(|pattern| glob::glob(pattern).ok())
                .flat_map(|paths| paths.flatten())
                .map(move |path| (index, path))
        })
}

/// The dynamic loaders that must not launch programs when exec'd directly: for every
/// profile refusing `loader_launch`, the `PT_INTERP` loader of each of its executables
/// (the loader that can run that very interpreter) and its `loaders` globs, as identities
/// (symlinks followed, as the kernel follows them at exec). A static or non-ELF executable
/// names no loader; an unreadable one is skipped with a warning, as a missing interpreter
/// is.
pub fn resolve_loaders(policy: &Policy) -> Vec<(FileId, PathBuf)> {
    let mut found: Vec<(FileId, PathBuf)> = Vec::new();
    let mut add = |path: &Path| {
        if let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
        {
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if !found.iter().any(|(known, _)| *known == id) {
                let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
                found.push((id, real));
            }
        }
    };
    for profile in &policy.interpreters {
        if profile.loader_launch != crate::policy::Permission::Deny {
            continue;
        }
        for pattern in &profile.executables {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                // Non-blocking, then judged on the descriptor: a FIFO matched by a glob
                // must not hang the agent, and only a regular file has a PT_INTERP.
                let Ok(file) = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                else {
                    continue;
                };
                if !file.metadata().is_ok_and(|meta| meta.is_file()) {
                    continue;
                }
                match crate::elf::program_interpreter(&file) {
                    Ok(Some(loader)) => add(&loader),
                    Ok(None) | Err(crate::elf::ElfError::NotElf) => {}
                    Err(e) => log::warn!(
                        "cannot read the loader of {}: {e}; its ld.so launches are judged \
                         only if `loaders` names it",
                        path.display()
                    ),
                }
            }
        }
        for pattern in &profile.loaders {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                add(&path);
            }
        }
    }
    found
}

/// The real paths (symlinks resolved) of the profiles' executables, with their profile: a
/// package update replaces the file at that path with a new inode (a new identity), which
/// the agent recognises by this path when it is exec'd.
pub fn resolve_executable_paths(policy: &Policy) -> Vec<(PathBuf, usize)> {
    let mut found: Vec<(PathBuf, usize)> = Vec::new();
    for (index, path) in executable_matches(policy) {
        if let Ok(real) = std::fs::canonicalize(&path)
            && !found.iter().any(|(known, _)| *known == real)
        {
            found.push((real, index));
        }
    }
    found
}

/// The profile an executable file belongs to, if any.
pub fn profile_of_executable(interpreters: &[(FileId, usize)], exe: FileId) -> Option<usize> {
    interpreters
        .iter()
        .find(|(id, _)| *id == exe)
        .map(|(_, index)| *index)
}

/// Uid and groups of a user, for `--user`.
pub fn user_credentials(user: &str) -> Result<(u32, Vec<u32>), String> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    let entry = match found {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return match user.parse::<u32>() {
                // A uid without a passwd entry still has an identity and its own gid.
                Ok(uid) => Ok((uid, vec![uid])),
                Err(_) => Err(format!("unknown user {user:?}")),
            };
        }
        Err(e) => return Err(format!("cannot look up user {user:?}: {e}")),
    };
    let name = std::ffi::CString::new(entry.name.clone()).map_err(|e| e.to_string())?;
    let mut gids: Vec<u32> = nix::unistd::getgrouplist(&name, entry.gid)
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![entry.gid.as_raw()]);
    if !gids.contains(&entry.gid.as_raw()) {
        gids.push(entry.gid.as_raw());
    }
    Ok((entry.uid.as_raw(), gids))
}

/// Opens a path for inspection without blocking on FIFOs or acquiring a terminal. Sockets
/// cannot be opened for reading; they get an `O_PATH` descriptor, enough for fstat.
pub fn open_for_inspection(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    match opened {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_facts_come_from_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.py");
        std::fs::write(&path, b"print(1)\n").unwrap();
        let file = File::open(&path).unwrap();
        // Renaming and replacing the path does not change what the descriptor is.
        std::fs::rename(&path, dir.path().join("old.py")).unwrap();
        std::fs::write(&path, b"other content, longer\n").unwrap();
        let object = object_of(&file, CodeKind::Source).unwrap();
        assert_eq!(object.size, 9);
        assert_eq!(object.kind, FileKind::Regular);
        assert_eq!(object.nlink, 1);
        std::fs::remove_file(dir.path().join("old.py")).unwrap();
        assert_eq!(object_of(&file, CodeKind::Source).unwrap().nlink, 0);
    }

    #[test]
    fn pattern_matches_are_labelled_by_name() {
        assert_eq!(kind_by_name("os.py"), CodeKind::Source);
        assert_eq!(kind_by_name("os.cpython-311.pyc"), CodeKind::Bytecode);
        assert_eq!(kind_by_name("libm.so.6"), CodeKind::Native);
        assert_eq!(
            kind_by_name("_ssl.cpython-311-x86_64-linux-gnu.so"),
            CodeKind::Native
        );
        assert_eq!(kind_by_name("app.whl"), CodeKind::Archive);
        assert_eq!(kind_by_name("a.pth"), CodeKind::Source);
    }

    #[test]
    fn fifos_open_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = open_for_inspection(&path).unwrap();
        assert_eq!(
            object_of(&file, CodeKind::MainScript).unwrap().kind,
            FileKind::Fifo
        );
    }

    #[test]
    fn root_has_credentials() {
        let (uid, gids) = user_credentials("root").unwrap();
        assert_eq!(uid, 0);
        assert!(gids.contains(&0));
        assert!(user_credentials("no-such-user-x").is_err());
        assert_eq!(user_credentials("54321").unwrap(), (54321, vec![54321]));
    }
}
