//! The files of interpreter modules, by identity.
//!
//! `python3 -m timeit` is refused at exec; `python3 /usr/lib/python3.11/timeit.py` runs the
//! same file as the main script, and `python3 /usr/lib/python3.11/asyncio` runs
//! `asyncio/__main__.py`. The file of an interpreter module run as the main script *is* that
//! interpreter module, so the engine refuses it with the rule of its `-m` spelling.
//!
//! Which file that is must not be read from a path (a user namespace can bind any file
//! anywhere): the agent resolves, when the policy is loaded, the identity (device, inode)
//! of every file of every listed module in the stdlib directories of every profiled
//! interpreter, and compares the opened descriptor's identity with them. A hard link or a
//! bind mount of those files is the same inode; a copy is a new, unsigned file.
//!
//! The stdlib directories are found without running the interpreter (under enforcement
//! the agent must not start the interpreter it judges), as CPython's `getpath` finds them:
//! from the interpreter's real path, the first ancestor of its directory holding
//! `lib/pythonX.Y/os.py` (or `lib64/`); `X.Y` from the executable's name (`python3.11`),
//! any `python3.*` when the name has no minor version (`python3`). A relocated copy with no
//! such ancestor falls back, as CPython does, to its build prefix: taken as `/usr/local`
//! and `/usr` here, the prefixes of distribution and source builds.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::engine::FileId;
use crate::policy::Policy;

/// How deep a package's files are collected (`idlelib/idle_test/...` is 2).
const MAX_PACKAGE_DEPTH: usize = 6;

/// One file of an interpreter module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// The dotted module name the file is, as `-m` would name it (`timeit`,
    /// `asyncio.__main__`, `idlelib.pyshell`); for a script a profile lists
    /// (`inline_code_scripts`), its real path.
    pub module: String,
    /// For a package's `__main__` (source or bytecode): the package directory, which run
    /// as the main script (`python3 .../asyncio`) runs this file.
    pub package_dir: Option<FileId>,
    /// The names the file has where it was found (`timeit.py`, `timeit.cpython-311.pyc`):
    /// an import of the module asks for one of them.
    pub names: Vec<String>,
    /// Size, modification and change times when it was found: an inode number the
    /// filesystem gave to another file since (a package upgrade replaces every file) is
    /// not this module.
    stamp: Stamp,
    /// Where it was found (its real path): a file with its identity but another stamp is
    /// still this module while that path leads to it (a chmod, a touch, a new signature).
    found_at: PathBuf,
}

/// What tells one file from another that got the same inode number later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl ModuleFile {
    /// Whether `name`, the last component of the path an interpreter asked for, is one of
    /// the file's own. Under another name (a link `x.py` or `d/__main__.py` to it, run by
    /// `-m x` or as the directory `d`) the interpreter runs it as another module, the main
    /// one among them: it is then the main script.
    pub fn opened_as_itself(&self, name: &[u8]) -> bool {
        self.names.iter().any(|own| own.as_bytes() == name)
    }

    /// Whether this file, with identity `file`, is what a main script operand resolving to
    /// `main` runs as `__main__`.
    pub fn runs_as_main(&self, file: FileId, main: FileId) -> bool {
        file == main || self.package_dir == Some(main)
    }
}

/// The interpreter modules' files of a policy's interpreters, by identity.
#[derive(Clone, Debug, Default)]
pub struct ModuleFiles {
    files: HashMap<FileId, ModuleFile>,
    /// The same by real path: a package update renames a new file over a module's (a new
    /// identity at the same place), which is that module until the next resolution.
    paths: HashMap<PathBuf, ModuleFile>,
    /// The stdlib directories they were found in, for logs.
    pub stdlib_dirs: Vec<PathBuf>,
}

impl ModuleFiles {
    /// Resolves the files of every module a profile lists, in the stdlib directories of
    /// every executable its globs match.
    pub fn resolve(policy: &Policy) -> ModuleFiles {
        let mut found = ModuleFiles::default();
        for profile in &policy.interpreters {
            // The distribution's scripts that are interpreters themselves, each under its
            // real path (what the engine matches the profile's globs against).
            for pattern in profile
                .inline_code_scripts
                .iter()
                .chain(&profile.stdin_code_scripts)
            {
                for path in glob::glob(pattern.as_str()).into_iter().flatten().flatten() {
                    if let Ok(real) = std::fs::canonicalize(&path) {
                        found.add(&path, real.display().to_string(), None);
                    }
                }
            }
            let names: Vec<&String> = profile
                .inline_code_modules
                .iter()
                .chain(&profile.stdin_code_modules)
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut dirs = Vec::new();
            let mut bin_dirs: Vec<PathBuf> = Vec::new();
            for pattern in &profile.executables {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    for dir in stdlib_dirs(&path) {
                        if !dirs.contains(&dir) {
                            dirs.push(dir);
                        }
                    }
                    if let Some(bin) = path.parent()
                        && !bin_dirs.iter().any(|d| d == bin)
                    {
                        bin_dirs.push(bin.to_owned());
                    }
                }
            }
            for bin in &bin_dirs {
                found.collect_front_ends(bin, &names);
            }
            // Installed packages count too: a listed third-party module (pygments) run by
            // path from dist-packages is that module as much as timeit.py is.
            let site: Vec<PathBuf> = dirs.iter().flat_map(|d| site_dirs(d)).collect();
            for dir in dirs.iter().chain(&site) {
                for name in &names {
                    found.collect(dir, name);
                }
                if !found.stdlib_dirs.contains(dir) {
                    found.stdlib_dirs.push(dir.clone());
                }
            }
        }
        found
    }

    /// The module file with this identity, if it is one.
    pub fn get(&self, id: FileId) -> Option<&ModuleFile> {
        self.files.get(&id)
    }

    /// The module file with this identity, if it is still the file found there: `stamp`,
    /// the opened file's, is the one it had when found. A file replaced since (a package
    /// upgrade, whose new files may reuse old inode numbers) is looked up by its path
    /// ([`Self::at_path`]).
    pub fn get_unchanged(&self, id: FileId, stamp: Stamp) -> Option<&ModuleFile> {
        self.files.get(&id).filter(|entry| {
            entry.stamp == stamp
                // Changed since it was found, or another file that got its inode number:
                // the module while its path still leads to it. Gone from its path (an
                // upgrade's py3clean removed the pyc; its inode number went to another
                // file) it is not; a path that cannot be looked at otherwise may still be.
                || match std::fs::metadata(&entry.found_at) {
                    Ok(now) => identity(&now) == id,
                    Err(e) => e.kind() != std::io::ErrorKind::NotFound,
                }
        })
    }

    /// The module file at this real path, if one was resolved there.
    pub fn at_path(&self, path: &Path) -> Option<&ModuleFile> {
        self.paths.get(path)
    }

    /// Whether the file is, or may be, a module's: known by identity whatever its stamp, or
    /// at a module's path. A path that could not be read may be one.
    pub fn may_be_one(&self, id: FileId, path: Option<&Path>) -> bool {
        self.files.contains_key(&id) || path.is_none_or(|path| self.paths.contains_key(path))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The module a file is when it runs as the main script: `file` opened by a process
    /// whose main script operand resolves to `main` (a file, or a package directory).
    pub fn main_module(&self, file: FileId, main: Option<FileId>) -> Option<&str> {
        let entry = self.files.get(&file)?;
        main.filter(|m| entry.runs_as_main(file, *m))
            .map(|_| entry.module.as_str())
    }

    fn add(&mut self, path: &Path, module: String, package_dir: Option<FileId>) {
        // Followed: the interpreter follows a symlink in its tree to the file it opens.
        if let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
        {
            let real = std::fs::canonicalize(path).ok();
            let entry = self.files.entry(identity(&meta)).or_insert(ModuleFile {
                module,
                package_dir: None,
                names: Vec::new(),
                stamp: Stamp::of(&meta),
                found_at: real.clone().unwrap_or_else(|| path.to_path_buf()),
            });
            // A `__main__` listed by its own name is still its package's.
            entry.package_dir = entry.package_dir.or(package_dir);
            if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && !entry.names.iter().any(|n| n == name)
            {
                entry.names.push(name.to_string());
            }
            let entry = entry.clone();
            if let Some(real) = real {
                self.paths.insert(real, entry);
            }
        }
    }

    /// The files of module `name` under the stdlib directory `dir`: `NAME.py`, its bytecode
    /// (`__pycache__/NAME.*.pyc`, a sourceless `NAME.pyc`) and, for a package, every module
    /// file below it (a name covers its submodules, as `-m` does), with `__main__` tied to
    /// its package directory.
    fn collect(&mut self, dir: &Path, name: &str) {
        let parts: Vec<&str> = name.split('.').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.contains('/') || p.starts_with('.'))
        {
            return;
        }
        let (last, parents) = match parts.split_last() {
            Some(split) => split,
            None => return,
        };
        let parent = parents
            .iter()
            .fold(dir.to_path_buf(), |p, part| p.join(part));
        // `NAME.__main__` is what its package directory runs as the main script.
        let tied = match (*last, parents.is_empty()) {
            ("__main__", false) => std::fs::metadata(&parent).ok().map(|m| identity(&m)),
            _ => None,
        };
        self.add(&parent.join(format!("{last}.py")), name.to_string(), tied);
        self.add(&parent.join(format!("{last}.pyc")), name.to_string(), tied);
        self.add_bytecode(&parent, last, name, tied);
        let package = parent.join(last);
        if std::fs::metadata(&package).is_ok_and(|m| m.is_dir()) {
            self.collect_package(&package, name, 0);
        }
    }

    /// `dir/__pycache__/STEM.TAG.pyc` (`timeit.cpython-311.pyc`, `….opt-1.pyc`).
    fn add_bytecode(&mut self, dir: &Path, stem: &str, module: &str, package: Option<FileId>) {
        let Ok(entries) = std::fs::read_dir(dir.join("__pycache__")) else {
            return;
        };
        let prefix = format!("{stem}.");
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with(&prefix) && file_name.ends_with(".pyc") {
                self.add(&entry.path(), module.to_string(), package);
            }
        }
    }

    /// The front ends beside the interpreter (`/usr/bin/pydoc3`, `idle3`): scripts whose
    /// whole work is to run a listed module's entry point are that module.
    fn collect_front_ends(&mut self, bin: &Path, names: &[&String]) {
        let Ok(entries) = std::fs::read_dir(bin) else {
            return;
        };
        for entry in entries.flatten() {
            // Not followed: a link into the stdlib is the module's own file, found above.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            let mut head = Vec::with_capacity(FRONT_END_BYTES);
            use std::io::Read;
            if file
                .take(FRONT_END_BYTES as u64 + 1)
                .read_to_end(&mut head)
                .is_err()
                || head.len() > FRONT_END_BYTES
            {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&head) else {
                continue;
            };
            if let Some(module) = front_end_of(text, names) {
                self.add(&path, module, None);
            }
        }
    }

    fn collect_package(&mut self, package: &Path, name: &str, depth: usize) {
        if depth > MAX_PACKAGE_DEPTH {
            return;
        }
        let Ok(meta) = std::fs::metadata(package) else {
            return;
        };
        let package_id = identity(&meta);
        let Ok(entries) = std::fs::read_dir(package) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if file_name != "__pycache__" && !file_name.contains('.') {
                    self.collect_package(&entry.path(), &format!("{name}.{file_name}"), depth + 1);
                }
                continue;
            }
            let Some(stem) = file_name.strip_suffix(".py") else {
                continue;
            };
            let (module, tied) = match stem {
                "__init__" => (name.to_string(), None),
                "__main__" => (format!("{name}.__main__"), Some(package_id)),
                _ => (format!("{name}.{stem}"), None),
            };
            self.add(&entry.path(), module.clone(), tied);
            self.add_bytecode(package, stem, &module, tied);
        }
    }
}

/// Front ends are a few lines; anything larger is a program of its own.
const FRONT_END_BYTES: usize = 2048;
const FRONT_END_LINES: usize = 12;

/// The listed module a Python script hands control to, when that is all it does: a `#!`
/// line naming a Python, at most [`FRONT_END_LINES`] statements, an import of a listed
/// module (or of a name from it, or a submodule), and a call. Debian's `pydoc3` is
/// `import pydoc` then `pydoc.cli()`; `idle3` is `from idlelib.pyshell import main` then
/// `main()`.
pub fn front_end_of(text: &str, names: &[&String]) -> Option<String> {
    let mut lines = text.lines();
    let shebang = lines.next()?;
    if !shebang.starts_with("#!") || !shebang.contains("python") {
        return None;
    }
    let statements: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if statements.len() > FRONT_END_LINES || !statements.iter().any(|l| l.contains('(')) {
        return None;
    }
    let listed = |module: &str| {
        names
            .iter()
            .find(|name| module == name.as_str() || module.starts_with(&format!("{name}.")))
            .map(|name| name.to_string())
    };
    statements.iter().find_map(|line| {
        if let Some(rest) = line.strip_prefix("import ") {
            // `import a, b as c`
            rest.split(',')
                .filter_map(|part| part.split_whitespace().next())
                .find_map(listed)
        } else {
            listed(line.strip_prefix("from ")?.split_whitespace().next()?)
        }
    })
}

fn identity(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// The stdlib directories of the interpreter executable at `exe`, without running it (see
/// the module documentation). Empty when none is found.
pub fn stdlib_dirs(exe: &Path) -> Vec<PathBuf> {
    let Ok(real) = std::fs::canonicalize(exe) else {
        return Vec::new();
    };
    let version = real
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(version_of);
    let version = version.as_deref();
    let mut found = Vec::new();
    if let Some(bin) = real.parent() {
        for prefix in bin.ancestors() {
            found = stdlib_dirs_under(prefix, version);
            if !found.is_empty() {
                return found;
            }
        }
    }
    for prefix in ["/usr/local", "/usr"] {
        for dir in stdlib_dirs_under(Path::new(prefix), version) {
            if !found.contains(&dir) {
                found.push(dir);
            }
        }
    }
    found
}

/// The directories of installed packages beside a stdlib directory `lib/pythonX.Y`: its
/// `site-packages` and `dist-packages`, and Debian's version-independent
/// `lib/python3/dist-packages`; canonical, those that exist.
fn site_dirs(stdlib: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![stdlib.join("site-packages"), stdlib.join("dist-packages")];
    if let Some(lib) = stdlib.parent() {
        dirs.push(lib.join("python3/dist-packages"));
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if let Ok(real) = std::fs::canonicalize(&dir)
            && real.is_dir()
            && !found.contains(&real)
        {
            found.push(real);
        }
    }
    found
}

/// `X.Y` of an executable named `pythonX.Y` (`python3.11`, `python3.11d`); `None` for
/// `python3` or another name.
fn version_of(name: &str) -> Option<String> {
    let rest = name.strip_prefix("python")?;
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (major, minor) = version.split_once('.')?;
    (!major.is_empty() && !minor.is_empty() && !minor.contains('.')).then_some(version)
}

/// `PREFIX/lib/pythonX.Y` and `PREFIX/lib64/pythonX.Y` holding the landmark `os.py`, any
/// `python3.*` when `version` is unknown; canonical, without duplicates.
fn stdlib_dirs_under(prefix: &Path, version: Option<&str>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| match version {
                Some(v) => n.strip_prefix("python") == Some(v),
                None => n.strip_prefix("python").and_then(version_of_dir).is_some(),
            })
            .collect();
        names.sort();
        for name in names {
            let dir = prefix.join(lib).join(name);
            if dir.join("os.py").is_file()
                && let Ok(real) = std::fs::canonicalize(&dir)
                && !found.contains(&real)
            {
                found.push(real);
            }
        }
    }
    found
}

/// `3.11` of a directory named `python3.11`.
fn version_of_dir(rest: &str) -> Option<()> {
    let (major, minor) = rest.split_once('.')?;
    (major == "3" && !minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(path: &Path) -> FileId {
        identity(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn front_ends_are_told_by_what_they_run() {
        let pydoc = String::from("pydoc");
        let idlelib = String::from("idlelib");
        let timeit = String::from("timeit");
        let names = [&pydoc, &idlelib, &timeit];
        // Debian's pydoc3.11 and idle-python3.11.
        let debian_pydoc =
            "#!/usr/bin/python3.11\n\nimport pydoc\nif __name__ == '__main__':\n    pydoc.cli()\n";
        assert_eq!(front_end_of(debian_pydoc, &names).as_deref(), Some("pydoc"));
        let idle = "#! /usr/bin/python3.11\n\nfrom idlelib.pyshell import main\nif __name__ == '__main__':\n    main()\n";
        assert_eq!(front_end_of(idle, &names).as_deref(), Some("idlelib"));
        let env = "#!/usr/bin/env python3\nimport sys, timeit\nsys.exit(timeit.main())\n";
        assert_eq!(front_end_of(env, &names).as_deref(), Some("timeit"));
        // Not front ends: another module, no call, not Python, a program of its own.
        let other = "#!/usr/bin/python3\nimport json\njson.tool.main()\n";
        assert_eq!(front_end_of(other, &names), None);
        assert_eq!(
            front_end_of("#!/usr/bin/python3\nimport pydoc\n", &names),
            None
        );
        assert_eq!(
            front_end_of("#!/bin/sh\nimport pydoc\npydoc.cli()\n", &names),
            None
        );
        let long = format!(
            "#!/usr/bin/python3\nimport pydoc\n{}",
            "x = f()\n".repeat(20)
        );
        assert_eq!(front_end_of(&long, &names), None);
        // `pydocx` is not `pydoc`.
        assert_eq!(
            front_end_of("#!/usr/bin/python3\nimport pydocx\npydocx.cli()\n", &names),
            None
        );
    }

    #[test]
    fn versions_come_from_the_executable_name() {
        assert_eq!(version_of("python3.11").as_deref(), Some("3.11"));
        assert_eq!(version_of("python3.12d").as_deref(), Some("3.12"));
        assert_eq!(version_of("python3"), None);
        assert_eq!(version_of("python"), None);
        assert_eq!(version_of("perl5.36"), None);
        assert_eq!(version_of("python3.1.1"), None);
        assert!(version_of_dir("3.11").is_some());
        assert!(version_of_dir("3").is_none());
        assert!(version_of_dir("3.11-config").is_none());
    }

    /// A fake prefix: `bin/python3.11`, `lib/python3.11/{os,timeit,codeop}.py` with
    /// bytecode, a package `asyncio` with `__main__`, a subpackage, and a look-alike name.
    fn prefix() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("lib/python3.11");
        for file in [
            "os.py",
            "timeit.py",
            "codeop.py",
            "code.py",
            "__pycache__/timeit.cpython-311.pyc",
            "__pycache__/timeit.cpython-311.opt-1.pyc",
            "__pycache__/codeop.cpython-311.pyc",
            "asyncio/__init__.py",
            "asyncio/__main__.py",
            "asyncio/events.py",
            "asyncio/__pycache__/__main__.cpython-311.pyc",
            "asyncio/sub/__init__.py",
            "asyncio/sub/__main__.py",
        ] {
            let path = lib.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, file).unwrap();
        }
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/python3.11"), b"").unwrap();
        std::os::unix::fs::symlink("python3.11", root.path().join("bin/python3")).unwrap();
        root
    }

    #[test]
    fn stdlib_is_found_from_the_real_path() {
        let root = prefix();
        let lib = std::fs::canonicalize(root.path().join("lib/python3.11")).unwrap();
        assert_eq!(
            stdlib_dirs(&root.path().join("bin/python3")),
            vec![lib.clone()]
        );
        assert_eq!(
            stdlib_dirs(&root.path().join("bin/python3.11")),
            vec![lib.clone()]
        );
        // Another version's name does not take this stdlib.
        std::fs::write(root.path().join("bin/python3.99"), b"").unwrap();
        assert!(!stdlib_dirs(&root.path().join("bin/python3.99")).contains(&lib));
    }

    #[test]
    fn a_file_known_by_identity_or_at_a_module_path_may_be_one() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("timeit.py"), "").unwrap();
        std::fs::write(lib.join("other.py"), "").unwrap();
        let mut files = ModuleFiles::default();
        files.collect(&lib, "timeit");
        let timeit = lib.join("timeit.py");
        let other = lib.join("other.py");
        assert!(files.may_be_one(id_of(&timeit), Some(&timeit)));
        assert!(files.may_be_one(id_of(&timeit), Some(Path::new("/elsewhere/x.py"))));
        assert!(files.may_be_one(id_of(&other), Some(&timeit)));
        assert!(files.may_be_one(id_of(&other), None), "a path not read");
        assert!(!files.may_be_one(id_of(&other), Some(&other)));
    }

    #[test]
    fn installed_packages_beside_the_stdlib_are_searched_too() {
        let root = tempfile::tempdir().unwrap();
        let stdlib = root.path().join("lib/python3.11");
        std::fs::create_dir_all(stdlib.join("site-packages")).unwrap();
        std::fs::create_dir_all(root.path().join("lib/python3/dist-packages/pygments")).unwrap();
        std::fs::write(
            root.path()
                .join("lib/python3/dist-packages/pygments/__main__.py"),
            "",
        )
        .unwrap();
        let real = |p: &str| std::fs::canonicalize(root.path().join(p)).unwrap();
        let site = site_dirs(&stdlib);
        assert_eq!(
            site,
            vec![
                real("lib/python3.11/site-packages"),
                real("lib/python3/dist-packages")
            ]
        );
        let mut files = ModuleFiles::default();
        for dir in &site {
            files.collect(dir, "pygments");
        }
        let main = files.get(id_of(
            &root
                .path()
                .join("lib/python3/dist-packages/pygments/__main__.py"),
        ));
        assert_eq!(main.map(|m| m.module.as_str()), Some("pygments.__main__"));
    }

    #[test]
    fn module_files_are_collected_by_identity() {
        let root = prefix();
        let lib = root.path().join("lib/python3.11");
        let mut files = ModuleFiles::default();
        files.collect(&lib, "timeit");
        files.collect(&lib, "asyncio");
        files.collect(&lib, "code");
        let module = |rel: &str| files.get(id_of(&lib.join(rel))).map(|f| f.module.clone());
        assert_eq!(module("timeit.py").as_deref(), Some("timeit"));
        assert_eq!(
            module("__pycache__/timeit.cpython-311.pyc").as_deref(),
            Some("timeit")
        );
        assert_eq!(
            module("__pycache__/timeit.cpython-311.opt-1.pyc").as_deref(),
            Some("timeit")
        );
        assert_eq!(module("code.py").as_deref(), Some("code"));
        // `code` names neither `codeop` nor its bytecode.
        assert_eq!(module("codeop.py"), None);
        assert_eq!(module("__pycache__/codeop.cpython-311.pyc"), None);
        assert_eq!(module("os.py"), None);
        assert_eq!(module("asyncio/__init__.py").as_deref(), Some("asyncio"));
        assert_eq!(
            module("asyncio/events.py").as_deref(),
            Some("asyncio.events")
        );
        assert_eq!(
            module("asyncio/sub/__main__.py").as_deref(),
            Some("asyncio.sub.__main__")
        );

        // As the main script: the file itself, or the package directory for `__main__`.
        let main = id_of(&lib.join("asyncio/__main__.py"));
        let pyc = id_of(&lib.join("asyncio/__pycache__/__main__.cpython-311.pyc"));
        let package = id_of(&lib.join("asyncio"));
        let timeit = id_of(&lib.join("timeit.py"));
        let other = id_of(&lib.join("os.py"));
        assert_eq!(
            files.main_module(main, Some(package)),
            Some("asyncio.__main__")
        );
        assert_eq!(
            files.main_module(pyc, Some(package)),
            Some("asyncio.__main__")
        );
        assert_eq!(
            files.main_module(main, Some(main)),
            Some("asyncio.__main__")
        );
        assert_eq!(files.main_module(timeit, Some(timeit)), Some("timeit"));
        // Imported by another main script, or with none: not the main script.
        assert_eq!(files.main_module(timeit, Some(other)), None);
        assert_eq!(files.main_module(timeit, None), None);
        assert_eq!(files.main_module(main, Some(timeit)), None);
        // The package directory runs only its own `__main__`.
        let events = id_of(&lib.join("asyncio/events.py"));
        assert_eq!(files.main_module(events, Some(package)), None);
        assert_eq!(
            files.main_module(id_of(&lib.join("asyncio/sub/__main__.py")), Some(package)),
            None
        );

        // An import asks for one of the file's own names; any other is another module.
        let timeit = files.get(timeit).unwrap();
        assert!(timeit.opened_as_itself(b"timeit.py"));
        assert!(!timeit.opened_as_itself(b"x.py"));
        assert!(!timeit.opened_as_itself(b"__main__.py"));
        assert!(!timeit.opened_as_itself(b"timeit.cpython-311.pyc"));
        let timeit_pyc = files
            .get(id_of(&lib.join("__pycache__/timeit.cpython-311.pyc")))
            .unwrap();
        assert!(timeit_pyc.opened_as_itself(b"timeit.cpython-311.pyc"));
        assert!(!timeit_pyc.opened_as_itself(b"x.cpython-311.pyc"));
        let main = files.get(main).unwrap();
        assert!(main.opened_as_itself(b"__main__.py"));
        assert!(!main.opened_as_itself(b"asyncio.py"));

        // Changed in place (a chmod, a rewrite): still the module, by identity too, while
        // its path leads to it (reached by another path, a bind mount, it is no less).
        let path = lib.join("timeit.py");
        let meta = std::fs::metadata(&path).unwrap();
        let id = identity(&meta);
        assert!(files.get_unchanged(id, Stamp::of(&meta)).is_some());
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, "changed = True\n").unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(identity(&after), id);
        assert!(files.get_unchanged(id, Stamp::of(&after)).is_some());
        // Replaced (what a package upgrade does: a new file renamed over it): the old
        // identity, which another file may get, is not the module any more; by path, the
        // file at the module's place still is.
        let new = lib.join("timeit.py.new");
        std::fs::write(&new, "replaced = True\n").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_ne!(identity(&std::fs::metadata(&path).unwrap()), id);
        assert!(files.get_unchanged(id, Stamp::of(&after)).is_none());
        // Removed (a package's bytecode cleaned before an upgrade): its inode number may go
        // to any new file, which is not the module.
        let pyc = lib.join("__pycache__/timeit.cpython-311.pyc");
        let pyc_meta = std::fs::metadata(&pyc).unwrap();
        std::fs::remove_file(&pyc).unwrap();
        let other = Stamp {
            size: 1,
            ..Stamp::of(&pyc_meta)
        };
        assert!(files.get_unchanged(identity(&pyc_meta), other).is_none());
        let real = std::fs::canonicalize(&path).unwrap();
        assert_eq!(
            files.at_path(&real).map(|m| m.module.as_str()),
            Some("timeit")
        );
    }

    #[test]
    fn the_hosts_stdlib_resolves_for_the_default_policy() {
        let policy = Policy::embedded_default().unwrap();
        let files = ModuleFiles::resolve(&policy);
        let Ok(timeit) = std::fs::metadata("/usr/lib/python3.11/timeit.py") else {
            return; // Not a Debian CPython 3.11 host.
        };
        assert_eq!(
            files.get(identity(&timeit)).map(|f| f.module.as_str()),
            Some("timeit")
        );
        let json = std::fs::metadata("/usr/lib/python3.11/json/tool.py").unwrap();
        assert_eq!(files.get(identity(&json)), None);
    }
}
