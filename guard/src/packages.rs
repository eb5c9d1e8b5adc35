//! Trust that follows the package manager (`[packages]` in the policy).
//!
//! apt verifies every `.deb` it installs: the source's `InRelease` is signed by a key apt
//! trusts, it names the `Packages` index by digest, and the index names each `.deb` by
//! SHA-256. `guard packages trust` runs as apt's `DPkg::Pre-Install-Pkgs` hook, before dpkg
//! unpacks anything: it hashes each `.deb` apt hands over, looks the digest up in the indexes
//! apt itself reports as verified (`apt-get indextargets`, `Trusted: yes`), and only for a
//! match from a trusted origin writes one digest list per package — the SHA-256 of every
//! regular file in the verified archive — into a root-only store the agent reads as an
//! allow-list. A `.deb` apt did not verify (`dpkg -i ./x.deb`, `apt install ./x.deb`) matches
//! no index and gets no list. The identity written in the list (package, version,
//! architecture) is the index's, never the file name's or the archive's own control data.
//!
//! Bytecode is not in the archive: maintainer scripts compile it after unpacking.
//! `guard packages sync` (apt's `DPkg::Post-Invoke`, dpkg's `post-invoke`) adds to a
//! package's list each root-owned `__pycache__` file that names, by the timestamp and size in
//! its header, a source file of that list whose content on disk is still the listed one; and
//! drops the lists of packages dpkg no longer has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::digest::{HashAlgo, digest_reader};

/// The store's lists: one per package version, `sha256sum` format with a `#` header.
pub const LIST_SUFFIX: &str = ".sha256";

const MAGIC: &str = "# guard package list";
const KEY_PACKAGE: &str = "package";
const KEY_VERSION: &str = "version";
const KEY_ARCH: &str = "architecture";
const KEY_SOURCE: &str = "source";
const KEY_DEB: &str = "deb-sha256";
const KEY_BYTECODE: &str = "bytecode";
const BYTECODE_PENDING: &str = "pending";
const BYTECODE_MARK: &str = "# compiled by maintainer scripts from the sources above:";

/// Why package trust could not be established or stored.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    UnsafeStore { path: PathBuf, reason: String },
    #[error("{command}: {reason}")]
    Tool { command: String, reason: String },
    #[error("{path}: not a guard package list ({reason})")]
    BadList { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadArchive { path: PathBuf, reason: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lists in `store`, sorted. No store yet is no lists; a store someone other than root
/// can write to is refused: its lists would let anyone who can write there vouch for code.
pub fn lists_in(store: &Path) -> Result<Vec<PathBuf>, PackageError> {
    let meta = match std::fs::symlink_metadata(store) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at(store)(e)),
    };
    root_only(store, &meta)?;
    if !meta.is_dir() {
        return Err(PackageError::UnsafeStore {
            path: store.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut lists = Vec::new();
    for entry in std::fs::read_dir(store).map_err(io_at(store))? {
        let path = entry.map_err(io_at(store))?.path();
        if !path.to_string_lossy().ends_with(LIST_SUFFIX) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
        root_only(&path, &meta)?;
        if meta.is_file() {
            lists.push(path);
        }
    }
    lists.sort();
    Ok(lists)
}

fn root_only(path: &Path, meta: &std::fs::Metadata) -> Result<(), PackageError> {
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 || meta.file_type().is_symlink() {
        return Err(PackageError::UnsafeStore {
            path: path.to_path_buf(),
            reason: format!(
                "must be root's and writable by root only (owner uid {}, mode {:o}{})",
                meta.uid(),
                meta.mode() & 0o7777,
                if meta.file_type().is_symlink() {
                    ", a symlink"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

/// What a list's header says of its package, as `guard explain` names it:
/// `NAME VERSION (ARCH) from SOURCE`; None for a list that is not a package list.
pub fn provenance(text: &str) -> Option<String> {
    if !text.starts_with(MAGIC) {
        return None;
    }
    let header = header_of(text);
    Some(format!(
        "{} {} ({}) from {}",
        header.get(KEY_PACKAGE)?,
        header.get(KEY_VERSION)?,
        header.get(KEY_ARCH)?,
        header.get(KEY_SOURCE)?
    ))
}

fn header_of(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# ")?.split_once(": "))
        .collect()
}

/// A package as the verified index names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageId {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl std::fmt::Display for PackageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

/// One package's digest list, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageList {
    pub id: PackageId,
    /// The apt source that verified it: `ORIGIN SUITE (REPO-URI)`.
    pub source: String,
    pub deb_sha256: String,
    /// Absolute path -> hex SHA-256 of each regular file in the archive.
    pub files: BTreeMap<String, String>,
    /// Bytecode compiled from `files` after unpacking; None until `sync` looked.
    pub bytecode: Option<BTreeMap<String, String>>,
}

impl PackageList {
    /// `NAME_VERSION_ARCH.sha256`, as apt names archives (`:` of an epoch as `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}{LIST_SUFFIX}",
            self.id.name,
            self.id.version.replace(':', "%3a"),
            self.id.arch
        )
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(MAGIC);
        out.push_str(": written by `guard packages`, read by the agent as an allow-list\n");
        let bytecode = match &self.bytecode {
            None => BYTECODE_PENDING.to_string(),
            Some(pycs) => pycs.len().to_string(),
        };
        for (key, value) in [
            (KEY_PACKAGE, self.id.name.as_str()),
            (KEY_VERSION, &self.id.version),
            (KEY_ARCH, &self.id.arch),
            (KEY_SOURCE, &self.source),
            (KEY_DEB, &self.deb_sha256),
            (KEY_BYTECODE, &bytecode),
        ] {
            out.push_str(&format!("# {key}: {value}\n"));
        }
        for (path, hex) in &self.files {
            out.push_str(&format!("{hex}  {path}\n"));
        }
        if let Some(pycs) = &self.bytecode {
            out.push_str(BYTECODE_MARK);
            out.push('\n');
            for (path, hex) in pycs {
                out.push_str(&format!("{hex}  {path}\n"));
            }
        }
        out
    }

    pub fn parse(path: &Path, text: &str) -> Result<PackageList, PackageError> {
        let bad = |reason: &str| PackageError::BadList {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if !text.starts_with(MAGIC) {
            return Err(bad("no header"));
        }
        let header = header_of(text);
        let field = |key: &str| {
            header
                .get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| bad(&format!("no `{key}` in the header")))
        };
        let mut files = BTreeMap::new();
        let mut pycs = BTreeMap::new();
        let mut in_bytecode = false;
        for line in text.lines() {
            if line == BYTECODE_MARK {
                in_bytecode = true;
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (hex, file) = line
                .split_once("  ")
                .ok_or_else(|| bad("a line is not `<sha256>  <path>`"))?;
            let into = if in_bytecode { &mut pycs } else { &mut files };
            into.insert(file.to_string(), hex.to_string());
        }
        let bytecode = match field(KEY_BYTECODE)?.as_str() {
            BYTECODE_PENDING => None,
            _ => Some(pycs),
        };
        Ok(PackageList {
            id: PackageId {
                name: field(KEY_PACKAGE)?,
                version: field(KEY_VERSION)?,
                arch: field(KEY_ARCH)?,
            },
            source: field(KEY_SOURCE)?,
            deb_sha256: field(KEY_DEB)?,
            files,
            bytecode,
        })
    }

    pub fn read(path: &Path) -> Result<PackageList, PackageError> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        PackageList::parse(path, &text)
    }

    /// Writes the list into `store` atomically (root-only), creating the store.
    pub fn store(&self, store: &Path) -> Result<PathBuf, PackageError> {
        std::fs::create_dir_all(store).map_err(io_at(store))?;
        let meta = std::fs::symlink_metadata(store).map_err(io_at(store))?;
        root_only(store, &meta)?;
        let path = store.join(self.file_name());
        let tmp = store.join(format!(".{}.tmp", self.file_name()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_at(&tmp))?;
        file.write_all(self.render().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        Ok(path)
    }
}

/// A `Packages` index apt reports (`apt-get indextargets`), with its source's Release facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AptIndex {
    pub filename: PathBuf,
    pub origin: String,
    pub suite: String,
    pub repo_uri: String,
    /// apt verified the source's signed Release, or the administrator marked the source
    /// `[trusted=yes]`, which apt reports the same way...
    pub trusted: bool,
    /// ...and this says which (from the sources entry apt names).
    pub unsigned_by_choice: bool,
}

impl AptIndex {
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.origin, self.suite, self.repo_uri)
    }
}

/// Parses `apt-get indextargets` output (deb822 stanzas).
pub fn parse_indextargets(text: &str) -> Vec<AptIndex> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        // A source guard cannot tell signed is not: Sourcesentry must say it.
        let mut index = AptIndex {
            unsigned_by_choice: true,
            ..AptIndex::default()
        };
        let mut packages = false;
        for line in stanza.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Filename" => index.filename = PathBuf::from(value),
                "Origin" => index.origin = value.to_string(),
                "Suite" => index.suite = value.to_string(),
                "Repo-URI" => index.repo_uri = value.to_string(),
                "Trusted" => index.trusted = value == "yes",
                "Sourcesentry" => index.unsigned_by_choice = marked_trusted(value),
                "Created-By" => packages = value == "Packages",
                _ => {}
            }
        }
        if packages && !index.filename.as_os_str().is_empty() {
            out.push(index);
        }
    }
    out
}

/// The indexes of the sources apt verified whose origin the policy trusts. A source the
/// administrator marked `[trusted=yes]` is "trusted" to apt without any signature: not
/// verified, so never trusted here.
pub fn trusted_indexes(origins: &[String]) -> Result<Vec<AptIndex>, PackageError> {
    let text = run_tool(Command::new("apt-get").args(["indextargets", "Created-By: Packages"]))?;
    Ok(parse_indextargets(&text)
        .into_iter()
        .filter(|index| {
            index.trusted
                && !index.unsigned_by_choice
                && origins.iter().any(|o| o == "*" || *o == index.origin)
        })
        .collect())
}

/// Whether the sources entry (`FILE:LINE`, as indextargets names it) says `trusted=yes`
/// (one-line format) or `Trusted: yes` (deb822, in the stanza starting at LINE). An entry
/// guard cannot read counts as marked: never evidence of a signature.
fn marked_trusted(entry: &str) -> bool {
    let Some((file, line)) = entry.rsplit_once(':') else {
        return true;
    };
    let (Ok(text), Ok(line)) = (std::fs::read_to_string(file), line.parse::<usize>()) else {
        return true;
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return true;
    };
    if file.ends_with(".sources") {
        lines[line - 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_once(':'))
            .any(|(k, v)| k.trim().eq_ignore_ascii_case("trusted") && v.trim() == "yes")
    } else {
        first
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .is_some_and(|(options, _)| {
                options
                    .split_whitespace()
                    .any(|o| o.eq_ignore_ascii_case("trusted=yes"))
            })
    }
}

fn run_tool(cmd: &mut Command) -> Result<String, PackageError> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| PackageError::Tool {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PackageError::Tool {
            command,
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    // A field guard does not read (a maintainer's name in Latin-1) must not stop apt.
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For each wanted `.deb` digest (hex), the package an index names with it and that index:
/// one pass over each index, read through apt's own decompressor (`apt-helper cat-file`).
pub fn find_in_indexes(
    indexes: &[AptIndex],
    wanted: &HashSet<String>,
) -> Result<HashMap<String, (PackageId, AptIndex)>, PackageError> {
    let mut found = HashMap::new();
    for index in indexes {
        if found.len() == wanted.len() {
            break;
        }
        let mut child = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&index.filename)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| PackageError::Tool {
                command: "/usr/lib/apt/apt-helper cat-file".into(),
                reason: e.to_string(),
            })?;
        let stdout = child.stdout.take().expect("piped");
        let result = scan_index(BufReader::new(stdout), wanted, &mut |hex, id| {
            found
                .entry(hex.to_string())
                .or_insert_with(|| (id, index.clone()));
        });
        let status = child.wait().map_err(io_at(&index.filename))?;
        result.map_err(io_at(&index.filename))?;
        if !status.success() {
            return Err(PackageError::Tool {
                command: format!("apt-helper cat-file {}", index.filename.display()),
                reason: status.to_string(),
            });
        }
    }
    Ok(found)
}

/// Streams a `Packages` index, calling `hit` for each stanza whose SHA256 is wanted.
pub fn scan_index(
    reader: impl BufRead,
    wanted: &HashSet<String>,
    hit: &mut dyn FnMut(&str, PackageId),
) -> io::Result<()> {
    let (mut name, mut version, mut arch, mut sha) = (None, None, None, None);
    let mut flush = |name: &mut Option<String>,
                     version: &mut Option<String>,
                     arch: &mut Option<String>,
                     sha: &mut Option<String>| {
        if let (Some(n), Some(v), Some(a), Some(s)) =
            (name.take(), version.take(), arch.take(), sha.take())
            && wanted.contains(&s)
        {
            hit(
                &s,
                PackageId {
                    name: n,
                    version: v,
                    arch: a,
                },
            );
        }
        *name = None;
        *version = None;
        *arch = None;
        *sha = None;
    };
    for line in reader.split(b'\n') {
        let line = line?;
        // Only ASCII fields are read; the rest of a stanza may be in any encoding.
        let line = String::from_utf8_lossy(&line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            flush(&mut name, &mut version, &mut arch, &mut sha);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_string());
        match key {
            "Package" => name = value,
            // dpkg shows `0:V` as `V`: the same version, one spelling.
            "Version" => {
                version = value.map(|v| v.strip_prefix("0:").map(str::to_string).unwrap_or(v))
            }
            "Architecture" => arch = value,
            "SHA256" => sha = value.map(|v| v.to_ascii_lowercase()),
            _ => {}
        }
    }
    flush(&mut name, &mut version, &mut arch, &mut sha);
    Ok(())
}

/// A `.deb` read once: its SHA-256 and the SHA-256 of each file in it come from the same
/// bytes, streamed through the hash into dpkg's own extractor. (Hashing first and extracting
/// after would read the file twice: whoever can write it — `apt install ./x.deb` of a file a
/// user owns — could swap the content in between.)
pub struct Deb {
    pub path: PathBuf,
    pub sha256: String,
    /// Absolute path -> hex SHA-256 of each regular file in the archive's data, or why the
    /// archive could not be read (an error only for an archive an index vouches for).
    pub files: Result<BTreeMap<String, String>, PackageError>,
}

impl Deb {
    pub fn read(path: &Path) -> Result<Deb, PackageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(io_at(path))?;
        let meta = file.metadata().map_err(io_at(path))?;
        if !meta.is_file() {
            return Err(PackageError::BadArchive {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let mut child = Command::new("dpkg-deb")
            // Not /dev/stdin: a minimal /dev (a container's, an initramfs's) may lack it.
            .args(["--fsys-tarfile", "/proc/self/fd/0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PackageError::Tool {
                command: "dpkg-deb --fsys-tarfile".into(),
                reason: e.to_string(),
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let feeder = std::thread::spawn(move || -> io::Result<String> {
            let tee = Tee {
                from: file,
                to: Some(stdin),
            };
            Ok(digest_reader(tee, HashAlgo::Sha256)?.hex())
        });
        let digests = tar_digests(stdout);
        let sha256 = feeder
            .join()
            .map_err(|_| PackageError::BadArchive {
                path: path.to_path_buf(),
                reason: "the reader thread panicked".into(),
            })?
            .map_err(io_at(path))?;
        let out = child.wait_with_output().map_err(io_at(path))?;
        let files = if !out.status.success() {
            Err(PackageError::BadArchive {
                path: path.to_path_buf(),
                reason: format!(
                    "dpkg-deb --fsys-tarfile: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        } else {
            digests.map_err(|reason| PackageError::BadArchive {
                path: path.to_path_buf(),
                reason,
            })
        };
        Ok(Deb {
            path: path.to_path_buf(),
            sha256,
            files,
        })
    }
}

/// A reader that also writes what it reads to `to`, until `to` stops taking it (dpkg-deb
/// may stop reading a file that is not an archive): the digest of `from` stays whole.
struct Tee<R, W> {
    from: R,
    to: Option<W>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.from.read(buf)?;
        if let Some(to) = &mut self.to
            && to.write_all(&buf[..n]).is_err()
        {
            self.to = None;
        }
        Ok(n)
    }
}

/// Digests of the regular files of a tar stream, by path; hard links and symlinks to them
/// (within the archive) too: CPython names a module's bytecode after the path it imported,
/// `/usr/lib/python3.11/sitecustomize.py -> /etc/python3.11/sitecustomize.py` included.
pub fn tar_digests(reader: impl Read) -> Result<BTreeMap<String, String>, String> {
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let mut symlinks = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry.path().map_err(|e| e.to_string())?;
        let Some(name) = absolute(&name) else {
            continue;
        };
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let hex = digest_reader(&mut entry, HashAlgo::Sha256)
                    .map_err(|e| format!("{name}: {e}"))?
                    .hex();
                files.insert(name, hex);
            }
            tar::EntryType::Link | tar::EntryType::Symlink => {
                let Some(target) = entry.link_name().map_err(|e| e.to_string())? else {
                    continue;
                };
                let target = if kind == tar::EntryType::Link {
                    absolute(&target)
                } else {
                    resolve_symlink(&name, &target)
                };
                if let Some(target) = target {
                    symlinks.push((name, target));
                }
            }
            _ => {}
        }
    }
    // A link to a link: a few rounds settle any chain an archive has.
    for _ in 0..8 {
        let mut added = false;
        for (name, target) in &symlinks {
            if !files.contains_key(name)
                && let Some(hex) = files.get(target).cloned()
            {
                files.insert(name.clone(), hex);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    Ok(files)
}

/// The absolute, normalised path a symlink at `link` pointing to `target` names.
fn resolve_symlink(link: &str, target: &Path) -> Option<String> {
    let base = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        Path::new(link).parent()?.to_path_buf()
    };
    let mut parts: Vec<String> = base
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_str()?.to_string()),
            _ => None,
        })
        .collect();
    for component in target.components() {
        match component {
            std::path::Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    absolute(Path::new(&parts.join("/")))
}

/// `./usr/bin/x` as `/usr/bin/x`; None for a name a list line cannot hold (never trusted).
fn absolute(name: &Path) -> Option<String> {
    let text = name.to_str()?;
    let text = text.strip_prefix("./").unwrap_or(text);
    if text.is_empty()
        || text.contains('\n')
        || text.contains('\\')
        || name
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return None;
    }
    Some(format!("/{}", text.trim_start_matches('/')))
}

/// What dpkg has of each package: `(name, arch)` -> (version, status abbreviation).
pub type Installed = HashMap<(String, String), (String, String)>;

pub fn installed() -> Result<Installed, PackageError> {
    let text = run_tool(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n",
    ]))?;
    Ok(parse_installed(&text))
}

pub fn parse_installed(text: &str) -> Installed {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.to_string();
            let arch = fields.next()?.to_string();
            let version = fields.next()?.to_string();
            let status = fields.next()?.trim().to_string();
            Some(((name, arch), (version, status)))
        })
        .collect()
}

/// Whether dpkg's status (`db:Status-Abbrev`, e.g. `ii `, `iU `, `rc `) means the package's
/// files may be on disk: anything but not-installed and config-files.
pub fn files_present(status: &str) -> bool {
    !matches!(status.chars().nth(1), Some('n') | Some('c') | None)
}

/// Whether a list stays, given what dpkg has of its package (version, status). At the end
/// of apt's run only the installed version's list stays. Within the run (dpkg's
/// post-invoke between apt's dpkg calls) a list whose package was never configured may be
/// for a package still to be unpacked: kept until the run ends; one that was configured and
/// whose package is gone now was removed.
pub fn keeps(list: &PackageList, on_disk: Option<&(String, String)>, end_of_run: bool) -> bool {
    let present = on_disk.is_some_and(|(_, status)| files_present(status));
    let same_version = on_disk.is_some_and(|(version, _)| *version == list.id.version);
    if end_of_run {
        present && same_version
    } else {
        present || list.bytecode.is_none()
    }
}

/// Whether dpkg's status means the maintainer scripts finished (`ii`).
pub fn configured(status: &str) -> bool {
    status.chars().nth(1) == Some('i')
}

/// Whether `a` sorts after `b` as dpkg compares versions.
pub fn version_newer(a: &str, b: &str) -> Result<bool, PackageError> {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .map_err(|e| PackageError::Tool {
            command: "dpkg --compare-versions".into(),
            reason: e.to_string(),
        })?;
    Ok(status.success())
}

/// The bytecode the maintainer scripts compiled from the list's sources: each root-owned
/// `__pycache__/NAME.*.pyc` beside a listed `NAME.py` whose header records (timestamp-based
/// pyc) the mtime and size of that source as it is on disk, with the source's content
/// still the listed one. Hash-based pycs name their source by a hash guard does not compute
/// here: never added. Returns pyc path -> hex SHA-256.
pub fn compiled_bytecode(list: &PackageList) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut caches: HashMap<PathBuf, Vec<String>> = HashMap::new();
    for (source, hex) in &list.files {
        let path = Path::new(source);
        let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        let Some(stem) = stem.to_str() else { continue };
        let cache = dir.join("__pycache__");
        let names = caches.entry(cache.clone()).or_insert_with(|| {
            // Root's own directory, not a link to one somebody else can fill.
            let root_dir = std::fs::symlink_metadata(&cache)
                .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0);
            if !root_dir {
                return Vec::new();
            }
            std::fs::read_dir(&cache)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default()
        });
        let prefix = format!("{stem}.");
        let candidates: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with(&prefix) && n.ends_with(".pyc"))
            // `NAME.TAG[.opt-N].pyc`: the tag has no dot-separated module name in it.
            .filter(|n| n[prefix.len()..].matches('.').count() <= 2)
            .cloned()
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let Some(source_facts) = source_facts(path, hex) else {
            continue;
        };
        for name in candidates {
            let pyc = cache.join(&name);
            if let Some(pyc_hex) = pyc_of(&pyc, source_facts) {
                out.insert(pyc.to_string_lossy().into_owned(), pyc_hex);
            }
        }
    }
    out
}

/// The source's (mtime, size) as a pyc header stores them (both truncated to 32 bits), if
/// the file on disk is a regular file with the listed content. Symlinks are followed, as
/// CPython's stat of the source does: the content decides.
fn source_facts(path: &Path, hex: &str) -> Option<(u32, u32)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let digest = digest_reader(&mut file, HashAlgo::Sha256).ok()?;
    // PEP 552 headers hold the source's mtime and size modulo 2^32, as CPython writes them.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let stamp = (meta.mtime() as u32, meta.size() as u32);
    (digest.hex() == hex).then_some(stamp)
}

fn pyc_of(path: &Path, (mtime, size): (u32, u32)) -> Option<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut header = [0u8; 16];
    file.read_exact(&mut header).ok()?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    // PEP 552: flags 0 is a timestamp pyc; anything else names its source by hash.
    if word(4) != 0 || word(8) != mtime || word(12) != size {
        return None;
    }
    file.rewind().ok()?;
    Some(digest_reader(&mut file, HashAlgo::Sha256).ok()?.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> PackageList {
        PackageList {
            id: PackageId {
                name: "python3.11".into(),
                version: "1:3.11.2-6".into(),
                arch: "amd64".into(),
            },
            source: "Debian bookworm (http://deb.debian.org/debian/)".into(),
            deb_sha256: "ab".repeat(32),
            files: BTreeMap::from([("/usr/bin/python3.11".into(), "01".repeat(32))]),
            bytecode: None,
        }
    }

    #[test]
    fn lists_round_trip_and_name_their_package() {
        let mut l = list();
        assert_eq!(l.file_name(), "python3.11_1%3a3.11.2-6_amd64.sha256");
        let text = l.render();
        assert_eq!(PackageList::parse(Path::new("x"), &text).unwrap(), l);
        assert_eq!(
            provenance(&text).unwrap(),
            "python3.11 1:3.11.2-6 (amd64) from Debian bookworm (http://deb.debian.org/debian/)"
        );
        l.bytecode = Some(BTreeMap::from([(
            "/usr/lib/python3.11/__pycache__/os.cpython-311.pyc".into(),
            "02".repeat(32),
        )]));
        let text = l.render();
        assert_eq!(PackageList::parse(Path::new("x"), &text).unwrap(), l);
        assert!(provenance("0101  /x\n").is_none());
    }

    #[test]
    fn index_scan_takes_the_identity_from_the_matching_stanza() {
        let index = "Package: a\nVersion: 0:1\nArchitecture: all\nMaintainer: Jos\u{e9}\nSHA256: AA\n\n\
                     Package: b\nVersion: 2\nArchitecture: amd64\nSHA256: bb\n";
        // Latin-1 where guard reads nothing: still scanned.
        let index = index.replace('\u{e9}', "\u{0}").into_bytes();
        let index: Vec<u8> = index
            .iter()
            .map(|&b| if b == 0 { 0xe9 } else { b })
            .collect();
        let index = &index[..];
        let wanted = HashSet::from(["aa".to_string(), "cc".to_string()]);
        let mut hits = Vec::new();
        scan_index(index, &wanted, &mut |hex, id| {
            hits.push((hex.to_string(), id))
        })
        .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1.name, "a");
        assert_eq!(hits[0].1.version, "1", "epoch 0 spelled as dpkg shows it");
    }

    #[test]
    fn indextargets_keep_packages_indexes_with_their_trust() {
        let text = "MetaKey: main/binary-amd64/Packages\nFilename: /var/lib/apt/lists/x_Packages.lz4\n\
                    Origin: Debian\nSuite: stable\nTrusted: yes\nRepo-URI: http://d/\nCreated-By: Packages\n\n\
                    Filename: /var/lib/apt/lists/y_Translation\nCreated-By: Translations\nTrusted: yes\n\n\
                    Filename: /var/lib/apt/lists/z_Packages\nOrigin: Other\nTrusted: no\nCreated-By: Packages\n";
        let indexes = parse_indextargets(text);
        assert_eq!(indexes.len(), 2);
        assert!(indexes[0].trusted && indexes[0].origin == "Debian");
        assert!(!indexes[1].trusted);
    }

    #[test]
    fn sources_marked_trusted_are_not_verified() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("a.list");
        std::fs::write(
            &list,
            "deb http://d/ x main\ndeb [ arch=amd64 trusted=yes ] file:/srv ./\n",
        )
        .unwrap();
        let sources = dir.path().join("b.sources");
        std::fs::write(
            &sources,
            "Types: deb\nURIs: http://d/\n\nTypes: deb\nURIs: file:/srv\nTrusted: yes\n",
        )
        .unwrap();
        let at = |p: &Path, n: u32| format!("{}:{n}", p.display());
        assert!(!marked_trusted(&at(&list, 1)));
        assert!(marked_trusted(&at(&list, 2)));
        assert!(!marked_trusted(&at(&sources, 1)));
        assert!(marked_trusted(&at(&sources, 4)));
        // What cannot be read is no evidence of a signature.
        assert!(marked_trusted(&at(&list, 9)));
        assert!(marked_trusted("/nonexistent:1"));
        let text = format!(
            "Filename: /x_Packages\nTrusted: yes\nCreated-By: Packages\nSourcesentry: {}\n",
            at(&list, 1)
        );
        assert!(!parse_indextargets(&text)[0].unsigned_by_choice);
        assert!(
            parse_indextargets("Filename: /x\nTrusted: yes\nCreated-By: Packages\n")[0]
                .unsigned_by_choice
        );
    }

    #[test]
    fn lists_stay_while_their_package_may_still_be_unpacked() {
        let pending = list();
        let mut configured = list();
        configured.bytecode = Some(BTreeMap::new());
        let at = |v: &str, s: &str| Some((v.to_string(), s.to_string()));
        let v = pending.id.version.clone();
        // Between apt's dpkg calls: not yet unpacked, or being replaced, stays.
        assert!(keeps(&pending, None, false));
        assert!(keeps(&configured, at("0.9", "ii ").as_ref(), false));
        // Removed with dpkg -r after it was configured: goes at once.
        assert!(!keeps(&configured, None, false));
        assert!(!keeps(&configured, at(&v, "rc ").as_ref(), false));
        // End of apt's run: the installed version's list only.
        assert!(keeps(&configured, at(&v, "ii ").as_ref(), true));
        assert!(!keeps(&configured, at("0.9", "ii ").as_ref(), true));
        assert!(!keeps(&pending, None, true));
    }

    #[test]
    fn an_archive_is_read_once_by_dpkg_deb() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(tree.join("usr/lib/x")).unwrap();
        std::fs::write(
            tree.join("DEBIAN/control"),
            "Package: x\nVersion: 1\nArchitecture: all\nMaintainer: x <x@x>\nDescription: x\n",
        )
        .unwrap();
        std::fs::write(tree.join("usr/lib/x/a.py"), "abc").unwrap();
        std::os::unix::fs::symlink("a.py", tree.join("usr/lib/x/b.py")).unwrap();
        let deb = dir.path().join("x.deb");
        let built = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .expect("dpkg-deb (the hook runs it too)");
        assert!(built.status.success(), "{built:?}");
        let read = Deb::read(&deb).unwrap();
        let whole = digest_reader(std::fs::File::open(&deb).unwrap(), HashAlgo::Sha256).unwrap();
        assert_eq!(read.sha256, whole.hex());
        let files = read.files.unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(files["/usr/lib/x/a.py"], abc);
        assert_eq!(files["/usr/lib/x/b.py"], abc);
        // Not an archive: its digest still, and why it could not be read.
        let junk = dir.path().join("junk.deb");
        std::fs::write(&junk, vec![7u8; 300_000]).unwrap();
        let read = Deb::read(&junk).unwrap();
        let whole = digest_reader(std::fs::File::open(&junk).unwrap(), HashAlgo::Sha256).unwrap();
        assert_eq!(read.sha256, whole.hex());
        assert!(read.files.is_err());
        // A symlink or a FIFO is refused, never read through.
        let link = dir.path().join("link.deb");
        std::os::unix::fs::symlink(&deb, &link).unwrap();
        assert!(Deb::read(&link).is_err());
    }

    #[test]
    fn dpkg_states_with_files_on_disk() {
        assert!(files_present("ii "));
        assert!(files_present("iU "));
        assert!(files_present("iF "));
        assert!(!files_present("rc "));
        assert!(!files_present("un "));
        assert!(configured("ii "));
        assert!(!configured("iU "));
        let m = parse_installed("python3.11\tamd64\t3.11.2\tii \n");
        assert_eq!(m[&("python3.11".into(), "amd64".into())].0, "3.11.2");
    }

    #[test]
    fn tar_digests_follow_links_within_the_archive() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "./usr/lib/a.py", &b"abc"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Link);
        link.set_size(0);
        builder
            .append_link(&mut link, "./usr/lib/b.py", "./usr/lib/a.py")
            .unwrap();
        let mut sym = tar::Header::new_gnu();
        sym.set_entry_type(tar::EntryType::Symlink);
        sym.set_size(0);
        builder
            .append_link(&mut sym, "./usr/lib/python/c.py", "../a.py")
            .unwrap();
        let mut dangling = tar::Header::new_gnu();
        dangling.set_entry_type(tar::EntryType::Symlink);
        dangling.set_size(0);
        builder
            .append_link(&mut dangling, "./usr/lib/d.py", "/etc/elsewhere.py")
            .unwrap();
        let data = builder.into_inner().unwrap();
        let files = tar_digests(&data[..]).unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(files["/usr/lib/a.py"], abc);
        assert_eq!(files["/usr/lib/b.py"], abc);
        assert_eq!(files["/usr/lib/python/c.py"], abc);
        assert!(!files.contains_key("/usr/lib/d.py"));
        assert_eq!(files.len(), 3);
    }
}
