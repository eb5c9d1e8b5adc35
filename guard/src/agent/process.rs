//! Facts about the process behind an event, from the kernel's view in /proc.
//!
//! The subject is identified by its executable's identity (`/proc/PID/exe` is the kernel's
//! reference to the mapped binary, not a name), never by `comm` or argv[0].

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use guard_common::argv::Dialect;
use guard_common::python_argv;

use crate::engine::FileId;

/// Identity of the executable a process runs.
pub fn executable(pid: i32) -> io::Result<FileId> {
    let meta = std::fs::metadata(format!("/proc/{pid}/exe"))?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Path of the executable, for logs.
pub fn executable_path(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Effective uid and all groups (effective gid plus supplementary) of a process.
pub fn credentials(pid: i32) -> io::Result<(u32, Vec<u32>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_credentials(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc status"))
}

fn parse_credentials(status: &str) -> Option<(u32, Vec<u32>)> {
    let mut uid = None;
    let mut gids = Vec::new();
    for line in status.lines() {
        // Uid/Gid lines: real, effective, saved, filesystem. Access checks use the fs ids.
        if let Some(rest) = line.strip_prefix("Uid:") {
            uid = rest.split_whitespace().nth(3)?.parse().ok();
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            gids.push(rest.split_whitespace().nth(3)?.parse().ok()?);
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            for gid in rest.split_whitespace() {
                gids.push(gid.parse().ok()?);
            }
        }
    }
    Some((uid?, gids))
}

/// What the interpreter runs as its main program, from its command line as the kernel keeps
/// it and read with its dialect's grammar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MainOperand {
    /// A script operand: a file, a directory or a zip.
    Script(Vec<u8>),
    /// `-m NAME`: the module the import system finds by that dotted name.
    Module(Vec<u8>),
    /// None: `-c`, standard input.
    None,
}

/// The interpreter's main operand (see [`MainOperand`]).
pub fn main_operand(pid: i32, dialect: Dialect) -> io::Result<MainOperand> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let invocation =
        guard_common::argv::parse(dialect, python_argv::cmdline_words(&cmdline).skip(1));
    Ok(match (invocation.script, invocation.module) {
        (Some(script), _) if script != b"-" => MainOperand::Script(script.to_vec()),
        (_, Some(module)) if invocation.script.is_none() => MainOperand::Module(module.to_vec()),
        _ => MainOperand::None,
    })
}

/// Whether the interpreter's warning filters may name a `__main__` module. A filter's
/// category (`-W ignore::pkg.__main__.X`, or `PYTHONWARNINGS`) is a module CPython imports
/// at start-up by the name given, and a package's `__main__` imported runs its command line
/// (pygments' calls `main(sys.argv)` at module level). Read wider than CPython does: any
/// word of the interpreter's own options (not the program's arguments), and the variable
/// whatever `-E` says, that contains `__main__`.
pub fn warnings_may_import_a_main(pid: i32) -> io::Result<bool> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(options_name_a_main(&cmdline) || environ_names_a_main(&environ))
}

fn names_a_main(bytes: &[u8]) -> bool {
    bytes.windows(8).any(|w| w == b"__main__")
}

fn options_name_a_main(cmdline: &[u8]) -> bool {
    let mut reader = python_argv::Reader::new();
    for word in python_argv::cmdline_words(cmdline).skip(1) {
        let kind = reader.feed(word);
        let interpreters = matches!(
            kind,
            python_argv::Word::Options
                | python_argv::Word::OptionsWithArgument
                | python_argv::Word::Argument
                | python_argv::Word::Unread
        );
        if interpreters && names_a_main(word) {
            return true;
        }
        if reader.done() {
            break;
        }
    }
    false
}

fn environ_names_a_main(environ: &[u8]) -> bool {
    environ
        .split(|&b| b == 0)
        .any(|a| a.starts_with(b"PYTHONWARNINGS=") && names_a_main(a))
}

/// The names the interpreter may open a file on its search path by: each component of
/// each entry of the variables `vars` in its environment (as the kernel keeps it).
/// `zipimport` takes the longest prefix of an entry that is a file as the archive
/// (`lib.dat/pkg` reads `lib.dat`), so any component may be the archive's name.
pub fn search_path_names(pid: i32, vars: &[&str]) -> io::Result<Vec<Vec<u8>>> {
    if vars.is_empty() {
        return Ok(Vec::new());
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    for assignment in environ.split(|&b| b == 0) {
        let Some(eq) = assignment.iter().position(|&b| b == b'=') else {
            continue;
        };
        if !vars.iter().any(|v| v.as_bytes() == &assignment[..eq]) {
            continue;
        }
        for entry in assignment[eq + 1..].split(|&b| b == b':') {
            for name in entry_names(entry) {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_vec());
                }
            }
        }
    }
    Ok(names)
}

/// The components of a search-path entry as the interpreter opens it: CPython makes
/// entries absolute lexically (`os.path.abspath`), so `a/b/..` is `a`. Leading `..`s climb
/// out of the working directory, whose components are directories, never archives: left out.
pub fn entry_names(entry: &[u8]) -> Vec<&[u8]> {
    let mut stack: Vec<&[u8]> = Vec::new();
    for component in entry.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if stack.last().is_some_and(|top| *top != b"..") => {
                stack.pop();
            }
            _ => stack.push(component),
        }
    }
    stack.retain(|c| *c != b"..");
    stack
}

/// Identity of what the script operand names, resolved again as the process would: relative
/// to its cwd, absolute within its root.
///
/// A second walk through paths the user controls: it can fail (a name too long, links too
/// deep, a symlink flipped since the interpreter's own walk) where the interpreter's
/// succeeded, so an error here is a fact missing, never "not the main script".
/// How long the agent waits for an operand's walk through paths the user controls.
pub const WALK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// Walks that may be stuck at once (each holds a thread until its filesystem answers).
static STUCK_WALKS: super::deadline::Stuck = super::deadline::Stuck::new(8);

/// [`resolve_operand`] with a deadline: the walk goes through `/proc/PID/cwd` or `root`,
/// paths the user chose, where a FUSE daemon that never answers the agent would hold the
/// worker forever. Past `deadline`, or with 8 walks already stuck, the answer is `TimedOut`
/// (no answer, never a harmless one) and the worker goes on.
pub fn resolve_operand_within(
    pid: i32,
    operand: &[u8],
    deadline: std::time::Duration,
) -> io::Result<FileId> {
    let operand = operand.to_vec();
    super::deadline::run_within(&STUCK_WALKS, deadline, move || {
        resolve_operand(pid, &operand)
    })
}

/// The files a node command line names as code, by identity: what its script operand and
/// each preload given as a path (`-r ./notes.txt`, `--import /x.mjs`) resolve to, as Node
/// resolves them ([`node_request_files`]). Node compiles what its loader opens for them
/// whatever the file is called, and opens the real path behind a link, so no name says
/// code. A preload named as a package (`-r dotenv/config`) is found by Node's package
/// search like any `require` of signed code and is not listed.
pub fn node_named_code_within(pid: i32, deadline: std::time::Duration) -> io::Result<Vec<FileId>> {
    super::deadline::run_within(&STUCK_WALKS, deadline, move || {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let words = || python_argv::cmdline_words(&cmdline).skip(1);
        let invocation = guard_common::node_argv::parse(words());
        let requests = invocation
            .script
            .filter(|script| !script.is_empty() && *script != b"-")
            .into_iter()
            .chain(
                guard_common::node_argv::preloads(words())
                    .map(|(_, name)| name)
                    .filter(|name| node_names_a_path(name)),
            );
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
        let root = std::fs::read_link(format!("/proc/{pid}/root"))?;
        let cwd = process_view(cwd.as_os_str().as_bytes(), root.as_os_str().as_bytes())?;
        let mut files = Vec::new();
        for request in requests {
            files.extend(node_request_files(pid, &node_path_resolve(&cwd, request))?);
        }
        Ok(files)
    })
}

/// Whether node reads a module request as a path rather than a package name
/// (`Module._findPath` for a relative or absolute request; ES module specifiers the URL
/// parser would rewrite never come here: the grammar leaves them unread).
fn node_names_a_path(request: &[u8]) -> bool {
    request.starts_with(b"/")
        || request.starts_with(b"./")
        || request.starts_with(b"../")
        || request == b"."
        || request == b".."
}

/// The working directory as process `pid` names it (what `process.cwd()` returns), from the
/// agent's readings of its `cwd` and `root` links: a chrooted process's cwd without its
/// root's prefix. One outside its root, or deleted, cannot be named: no answer.
fn process_view(cwd: &[u8], root: &[u8]) -> io::Result<Vec<u8>> {
    if cwd.ends_with(b" (deleted)") || root.ends_with(b" (deleted)") {
        return Err(io::Error::other("its working directory or root is deleted"));
    }
    if root == b"/" {
        return Ok(cwd.to_vec());
    }
    match cwd.strip_prefix(root) {
        Some(b"") => Ok(b"/".to_vec()),
        Some(rest) if rest.starts_with(b"/") => Ok(rest.to_vec()),
        _ => Err(io::Error::other(
            "its working directory is outside its root",
        )),
    }
}

/// `request` made absolute as Node's `path.resolve` does, from `cwd`: lexically, so `a/..`
/// is the directory holding `a` whatever `a` links to, and `..` at the root is the root.
fn node_path_resolve(cwd: &[u8], request: &[u8]) -> Vec<u8> {
    let mut stack: Vec<&[u8]> = Vec::new();
    let start: &[u8] = if request.starts_with(b"/") { b"" } else { cwd };
    for component in start
        .split(|&b| b == b'/')
        .chain(request.split(|&b| b == b'/'))
    {
        match component {
            b"" | b"." => {}
            b".." => {
                stack.pop();
            }
            _ => stack.push(component),
        }
    }
    let mut path = Vec::new();
    for component in stack {
        path.push(b'/');
        path.extend_from_slice(component);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

/// The files Node may run for an absolute path request, by identity: the request as a file, with each
/// extension its loader tries, or as a directory: its `package.json`'s `"main"` (as a file,
/// with the extensions, or its `index`), then its `index` (Node's own order,
/// `Module._findPath`, `tryPackage`), each resolved through its links as Node's `realpath`
/// does. Those that do not exist are none; any other error (a `package.json` that cannot be
/// read) is a fact missing.
fn node_request_files(pid: i32, request: &[u8]) -> io::Result<Vec<FileId>> {
    const AS_FILE: [&[u8]; 6] = [b"", b".js", b".json", b".node", b".mjs", b".cjs"];
    const AS_INDEX: [&[u8]; 3] = [b"/index.js", b"/index.json", b"/index.node"];
    let mut files = Vec::new();
    let mut try_each = |base: &[u8], suffixes: &[&[u8]]| -> io::Result<()> {
        for suffix in suffixes {
            match resolve_operand(pid, &[base, suffix].concat()) {
                Ok(id) => files.push(id),
                Err(e) if absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    try_each(request, &AS_FILE)?;
    if let Some(main) = node_package_main(pid, request)? {
        let main = node_path_resolve(request, &main);
        try_each(&main, &AS_FILE)?;
        try_each(&main, &AS_INDEX)?;
    }
    try_each(request, &AS_INDEX)?;
    Ok(files)
}

fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The `"main"` of the `package.json` in directory `request` (a string; Node ignores any
/// other value). No file: none. A file Node could read but guard cannot parse is no
/// answer; one Node cannot parse either stops node before it runs anything.
fn node_package_main(pid: i32, request: &[u8]) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let manifest = [request, b"/package.json"].concat();
    let named = || String::from_utf8_lossy(&manifest).into_owned();
    // The user chose this file: a FIFO would hold the agent's worker in its open, a huge
    // file its memory. Neither is read; either is no answer.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(within(pid, &manifest))
    {
        Ok(file) => file,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(None);
    }
    if !meta.is_file() || meta.len() > PACKAGE_JSON_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a regular file of at most {PACKAGE_JSON_MAX} bytes",
                named()
            ),
        ));
    }
    let mut text = Vec::new();
    file.take(PACKAGE_JSON_MAX + 1).read_to_end(&mut text)?;
    if text.len() as u64 > PACKAGE_JSON_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: grew past {PACKAGE_JSON_MAX} bytes", named()),
        ));
    }
    let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&text);
    let value: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", named())))?;
    Ok(value
        .get("main")
        .and_then(serde_json::Value::as_str)
        .filter(|main| !main.is_empty())
        .map(|main| main.as_bytes().to_vec()))
}

/// The largest `package.json` the agent reads (npm's own are a few kilobytes).
const PACKAGE_JSON_MAX: u64 = 1 << 20;

/// `path` as process `pid` names it: relative to its cwd, absolute within its root.
fn within(pid: i32, path: &[u8]) -> PathBuf {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    match path.strip_prefix("/") {
        Ok(relative) => PathBuf::from(format!("/proc/{pid}/root")).join(relative),
        Err(_) => PathBuf::from(format!("/proc/{pid}/cwd")).join(path),
    }
}

pub fn resolve_operand(pid: i32, operand: &[u8]) -> io::Result<FileId> {
    let meta = std::fs::metadata(within(pid, operand))?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_requests_resolve_lexically_from_the_working_directory() {
        for (cwd, request, want) in [
            (&b"/srv/app"[..], &b"./a.js"[..], &b"/srv/app/a.js"[..]),
            (b"/srv/app", b"../lib/../b.txt", b"/srv/b.txt"),
            (b"/srv/app", b"/etc//x/./y", b"/etc/x/y"),
            (b"/srv/app", b".", b"/srv/app"),
            (b"/srv/app", b"..", b"/srv"),
            (b"/", b"../../x", b"/x"),
            (b"/srv/app", b"dir/", b"/srv/app/dir"),
        ] {
            assert_eq!(node_path_resolve(cwd, request), want, "{request:?}");
        }
        for path in [&b"/x"[..], b"./x", b"../x", b".", b".."] {
            assert!(node_names_a_path(path), "{path:?}");
        }
        for package in [&b"x"[..], b"dotenv/config", b".x", b"..x", b"@scope/x"] {
            assert!(!node_names_a_path(package), "{package:?}");
        }
        // A chrooted process names its cwd from its own root.
        assert_eq!(process_view(b"/srv/app", b"/").unwrap(), b"/srv/app");
        assert_eq!(process_view(b"/jail/app", b"/jail").unwrap(), b"/app");
        assert_eq!(process_view(b"/jail", b"/jail").unwrap(), b"/");
        assert!(process_view(b"/jailbreak", b"/jail").is_err());
        assert!(process_view(b"/elsewhere", b"/jail").is_err());
        assert!(process_view(b"/srv/app (deleted)", b"/").is_err());
    }

    #[test]
    fn a_package_json_is_read_only_when_it_is_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let at = |name: &str| {
            let pkg = dir.path().join(name);
            std::fs::create_dir(&pkg).unwrap();
            pkg
        };
        let main_of = |pkg: &std::path::Path| node_package_main(me, pkg.as_os_str().as_bytes());
        let plain = at("plain");
        std::fs::write(
            plain.join("package.json"),
            "\u{feff}{\"main\": \"notes.txt\"}",
        )
        .unwrap();
        assert_eq!(main_of(&plain).unwrap(), Some(b"notes.txt".to_vec()));
        assert_eq!(main_of(&at("none")).unwrap(), None);
        // A FIFO is refused at once, not waited on.
        let fifo = at("fifo");
        nix::unistd::mkfifo(&fifo.join("package.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(main_of(&fifo).is_err());
        let huge = at("huge");
        std::fs::File::create(huge.join("package.json"))
            .unwrap()
            .set_len(PACKAGE_JSON_MAX + 1)
            .unwrap();
        assert!(main_of(&huge).is_err());
        let broken = at("broken");
        std::fs::write(broken.join("package.json"), "{").unwrap();
        let e = main_of(&broken).unwrap_err().to_string();
        assert!(e.contains("broken/package.json"), "{e}");
    }

    #[test]
    fn warning_filters_naming_a_main_are_seen_where_cpython_reads_them() {
        let cmdline = |words: &[&str]| {
            let mut c = Vec::new();
            for w in words {
                c.extend_from_slice(w.as_bytes());
                c.push(0);
            }
            c
        };
        for words in [
            &["python3", "-W", "ignore::pygments.__main__.X", "ok.py"][..],
            &["python3", "-Wignore::pygments.__main__.X", "ok.py"],
            &["python3", "-bW", "ignore::pygments.__main__.X", "ok.py"],
            &[
                "python3",
                "-E",
                "-W",
                " ignore :: pygments.__main__ .X",
                "ok.py",
            ],
        ] {
            assert!(options_name_a_main(&cmdline(words)), "{words:?}");
        }
        for words in [
            // The program's arguments are not the interpreter's.
            &["python3", "ok.py", "-W", "ignore::pygments.__main__.X"][..],
            &["python3", "-W", "ignore", "ok.py", "__main__"],
            &["python3", "-m", "pygments", "-W", "x.__main__.X"],
        ] {
            assert!(!options_name_a_main(&cmdline(words)), "{words:?}");
        }
        assert!(environ_names_a_main(
            b"HOME=/\0PYTHONWARNINGS=default,ignore::pygments.__main__.X\0"
        ));
        assert!(!environ_names_a_main(
            b"PYTHONWARNINGS=ignore\0X=__main__\0"
        ));
    }

    #[test]
    fn walks_answer_within_their_deadline() {
        let pid = std::process::id() as i32;
        let here = std::env::current_exe().unwrap();
        let meta = std::fs::metadata(&here).unwrap();
        use std::os::unix::ffi::OsStrExt;
        let id = resolve_operand_within(
            pid,
            here.as_os_str().as_bytes(),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((id.dev, id.ino), (meta.dev(), meta.ino()));
    }

    #[test]
    fn credentials_use_filesystem_ids_and_all_groups() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 27 \n";
        assert_eq!(parse_credentials(status), Some((1003, vec![53, 4, 24, 27])));
        assert_eq!(parse_credentials("Name:\tx\n"), None);
        assert_eq!(parse_credentials("Uid:\tx\n"), None);
    }

    /// Differential: the components `entry_names` gives are those CPython's
    /// `os.path.abspath(entry)` ends with, for generated entries; what comes before them is
    /// the working directory's (or part of it: directories).
    #[test]
    fn search_path_entries_are_named_as_cpython_makes_them() {
        const PARTS: [&str; 7] = ["a", "b.dat", "..", ".", "", "x.zip", "..."];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n
        };
        let entries: Vec<String> = (0..3000)
            .map(|_| {
                let parts: Vec<&str> = (0..1 + next(6)).map(|_| PARTS[next(PARTS.len())]).collect();
                let lead = if next(3) == 0 { "/" } else { "" };
                format!("{lead}{}", parts.join("/"))
            })
            .collect();
        let cwd = tempfile::tempdir().unwrap();
        let cwd = cwd.path().join("c1").join("c2");
        std::fs::create_dir_all(&cwd).unwrap();
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import os, sys\nfor line in sys.stdin:\n    print(os.path.abspath(line[:-1]))",
            ])
            .current_dir(&cwd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = entries.iter().map(|e| format!("{e}\n")).collect();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let answers = String::from_utf8(out.stdout).unwrap();
        let answers: Vec<&str> = answers.lines().collect();
        assert_eq!(answers.len(), entries.len());
        let cwd = cwd.to_str().unwrap();
        let cwd: Vec<&str> = cwd.split('/').filter(|c| !c.is_empty()).collect();
        for (entry, python) in entries.iter().zip(answers) {
            let python: Vec<&str> = python.split('/').filter(|c| !c.is_empty()).collect();
            let ours: Vec<&str> = entry_names(entry.as_bytes())
                .into_iter()
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            assert!(python.ends_with(&ours), "{entry:?}: {python:?} vs {ours:?}");
            let before = &python[..python.len() - ours.len()];
            let absolute = entry.starts_with('/');
            assert!(
                if absolute {
                    before.is_empty()
                } else {
                    cwd.starts_with(before)
                },
                "{entry:?}: {python:?} vs {ours:?}"
            );
        }
    }

    #[test]
    fn search_path_names_from_the_environment() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .env("PYTHONPATH", "/srv/lib.dat:rel/x.zip/pkg:.:/a/..:/srv")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until the exec: before it, the child's environment is still ours.
        for _ in 0..500 {
            if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x0010\x00")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let names = search_path_names(pid, &["PYTHONPATH"]);
        child.kill().unwrap();
        child.wait().unwrap();
        let names = names.unwrap();
        let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        assert_eq!(names, [&b"srv"[..], b"lib.dat", b"rel", b"x.zip", b"pkg"]);
    }

    #[test]
    fn own_process_facts() {
        let pid = std::process::id() as i32;
        let exe = executable(pid).unwrap();
        let meta = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(exe.ino, meta.ino());
        let (uid, _) = credentials(pid).unwrap();
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
    }
}
