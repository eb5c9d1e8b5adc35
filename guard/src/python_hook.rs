//! guard's Python audit hook as files: the hook module, made for one agent socket, and the
//! `.pth` file that makes `site` load it at start-up, before the program's own code.
//!
//! The hook's source is `python_hook.py`; what it listens to comes from
//! [`crate::dynamic_code::HOOKED_EVENTS`], so the hook and the agent never disagree on an
//! event. Both files are code to the interpreter: sign them like its library.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::dynamic_code::HOOKED_EVENTS;

/// The module the `.pth` file imports.
pub const MODULE_NAME: &str = "guard_audit_hook";
/// Sorted before the `.pth` files packages install (`site` reads them in name order), so
/// the hook sees what theirs run.
pub const PTH_NAME: &str = "00-guard-audit-hook.pth";
/// Where the agent listens for its hooks when its status socket is at the default place.
pub const DEFAULT_SOCKET: &str = "/run/guard/python-hook.sock";
/// The file name of the hook socket, beside the agent's status socket.
pub const SOCKET_NAME: &str = "python-hook.sock";

const SOURCE: &str = include_str!("python_hook.py");

/// The hook's native front (`guard-pyhook`, a CPython stable-ABI extension module), which
/// the hook module loads from its own directory by this name.
pub const EXTENSION_NAME: &str = "guard_audit_fast.abi3.so";
const EXTENSION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guard_audit_fast.abi3.so"));

#[derive(Debug, Error)]
pub enum HookError {
    #[error(
        "the hook socket {0:?} is not an absolute path a unix socket can have (at most 107 bytes)"
    )]
    SocketPath(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The agent's hook socket, beside its status socket (`/run/guard/guard.sock` →
/// `/run/guard/python-hook.sock`).
pub fn socket_beside(status_socket: &Path) -> PathBuf {
    status_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join(SOCKET_NAME)
}

/// A Python bytes literal holding `bytes` exactly, whatever they are.
fn bytes_literal(bytes: &[u8]) -> String {
    let mut literal = String::from("b\"");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            literal.push(char::from(b));
        } else {
            literal.push_str(&format!("\\x{b:02x}"));
        }
    }
    literal.push('"');
    literal
}

fn names_literal(names: impl Iterator<Item = &'static str>) -> String {
    let quoted: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    format!("({},)", quoted.join(", "))
}

/// What the hook does when no agent can be asked (none runs, or a namespace hides its
/// socket from the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Unreachable {
    /// Refuse code made at run time, but by the files the default policy expects
    /// ([`crate::policy::DEFAULT_DYNAMIC_CODE_CALLERS`]): fail closed.
    #[default]
    Refuse,
    /// Stay out of the way.
    Allow,
}

/// The hook module's source, talking to the agent at `socket`.
pub fn render(socket: &Path, unreachable: Unreachable) -> Result<String, HookError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_os_str().as_bytes();
    if !socket.is_absolute() || bytes.len() > 107 || bytes.contains(&0) {
        return Err(HookError::SocketPath(socket.to_path_buf()));
    }
    let fallback: Vec<String> = crate::policy::DEFAULT_DYNAMIC_CODE_CALLERS
        .iter()
        .map(|(file, function)| format!("({file:?}, {function:?})"))
        .collect();
    Ok(SOURCE
        .replace("__SOCKET__", &bytes_literal(bytes))
        .replace(
            "__UNREACHABLE__",
            match unreachable {
                Unreachable::Refuse => "b\"deny\"",
                Unreachable::Allow => "b\"allow\"",
            },
        )
        .replace(
            "__FALLBACK_CALLERS__",
            &format!("({},)", fallback.join(", ")),
        )
        .replace(
            "__EVENTS__",
            &names_literal(HOOKED_EVENTS.iter().map(|(name, _)| *name)),
        )
        .replace(
            "__MAKES_CODE__",
            &names_literal(
                HOOKED_EVENTS
                    .iter()
                    .filter(|(_, event)| event.makes_code())
                    .map(|(name, _)| *name),
            ),
        ))
}

/// The `.pth` file's content: `site` runs a line that starts with `import`.
pub fn pth() -> String {
    format!("import {MODULE_NAME}\n")
}

/// Writes the hook module, its native front and its `.pth` file into the site directory
/// `site` (each replaced whole: a reader sees the old file or the new one), mode 0644.
/// Returns the files written, to be signed.
pub fn install(
    site: &Path,
    socket: &Path,
    unreachable: Unreachable,
) -> Result<Vec<PathBuf>, HookError> {
    let module = render(socket, unreachable)?;
    let pth = pth();
    // The front first: a hook module that finds no front runs without it.
    let files = [
        (site.join(EXTENSION_NAME), EXTENSION),
        (site.join(format!("{MODULE_NAME}.py")), module.as_bytes()),
        (site.join(PTH_NAME), pth.as_bytes()),
    ];
    let mut written = Vec::new();
    for (path, content) in files {
        write_whole(&path, content).map_err(|source| HookError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_whole(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".guard-new");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temporary)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_path_is_written_byte_for_byte() {
        assert_eq!(
            bytes_literal(b"/run/guard/x.sock"),
            "b\"/run/guard/x.sock\""
        );
        assert_eq!(bytes_literal(b"/a b\"\\\n"), "b\"/a\\x20b\\x22\\x5c\\x0a\"");
        let refuse = Unreachable::Refuse;
        assert!(render(Path::new("relative.sock"), refuse).is_err());
        assert!(render(Path::new(&format!("/{}", "x".repeat(107))), refuse).is_err());
        let source = render(Path::new("/run/guard/python-hook.sock"), refuse).unwrap();
        for placeholder in [
            "__SOCKET__",
            "__EVENTS__",
            "__MAKES_CODE__",
            "__UNREACHABLE__",
            "__FALLBACK_CALLERS__",
        ] {
            assert!(!source.contains(placeholder), "{placeholder} left");
        }
        assert!(source.contains("\"compile\"") && source.contains("\"pickle.find_class\""));
    }

    /// Real CPython with the hook and no agent to ask: `exec` of a string refused or
    /// allowed as installed; the stdlib's own dynamic code (namedtuple) runs either way.
    #[test]
    fn with_no_agent_the_hook_does_what_it_was_installed_to_do() {
        for (unreachable, refused) in [(Unreachable::Refuse, true), (Unreachable::Allow, false)] {
            let dir = tempfile::tempdir().unwrap();
            let socket = Path::new("/nonexistent/python-hook.sock");
            let files = install(dir.path(), socket, unreachable).unwrap();
            assert_eq!(files.len(), 3);
            let out = std::process::Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(format!(
                    "import sys; sys.path.insert(0, {:?}); import {MODULE_NAME}\n\
                     import collections; collections.namedtuple('P', 'a b')\n\
                     exec('print(6*7)')",
                    dir.path().to_str().unwrap()
                ))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if refused {
                assert!(!out.status.success(), "{unreachable:?}: exec ran");
                assert!(stderr.contains("guard: dynamic code refused"), "{stderr}");
            } else {
                assert!(out.status.success(), "{unreachable:?}: {stderr}");
                assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
            }
        }
    }

    /// The native front, driven directly with a Python hook that counts what reaches it:
    /// the import system's own `exec` and `marshal.loads` never do, any other `exec` and
    /// `marshal.loads` do, and an event the hook settled (returned the calling code for) stops reaching
    /// it from that calling code only.
    #[test]
    fn the_native_front_hands_on_all_but_the_import_systems_own_events() {
        let dir = tempfile::tempdir().unwrap();
        install(
            dir.path(),
            Path::new("/nonexistent/python-hook.sock"),
            Unreachable::Allow,
        )
        .unwrap();
        let front = dir.path().join(EXTENSION_NAME);
        let script = format!(
            "import sys, marshal, collections\n\
             b = sys.modules['_frozen_importlib']\n\
             e = sys.modules['_frozen_importlib_external']\n\
             loader = e.ExtensionFileLoader('guard_audit_fast', {front:?})\n\
             front = loader.create_module(b.spec_from_loader('guard_audit_fast', loader))\n\
             loader.exec_module(front)\n\
             seen = collections.Counter()\n\
             def python_hook(event, args):\n\
             \x20   # Code from files, the unmarshalled, the compiles to settle.\n\
             \x20   if event == 'exec' and args[0].co_filename != '<string>' or \\\n\
             \x20           event == 'marshal.loads' or \\\n\
             \x20           event == 'compile' and args[1] == 'settled':\n\
             \x20       seen[event] += 1\n\
             \x20   if event == 'compile' and args[1] == 'settled':\n\
             \x20       return sys._getframe(1).f_code\n\
             kinds = {{'exec': 1, 'marshal.loads': 2, 'compile': 3}}\n\
             sys.addaudithook(front.hook_for(python_hook, kinds, {{}},\n\
             \x20   b.FrozenImporter.exec_module.__code__,\n\
             \x20   b.FrozenImporter.get_code.__func__.__closure__[0].cell_contents.__code__,\n\
             \x20   b._call_with_frames_removed.__code__, e._LoaderBasics.exec_module.__code__,\n\
             \x20   e._compile_bytecode.__code__, e.SourceLoader.get_code.__code__,\n\
             \x20   e.SourcelessFileLoader.get_code.__code__, e.FileLoader.get_data,\n\
             \x20   'self', 'bytecode_path', 'path'))\n\
             import json, email.parser, zipfile, decimal, fractions, statistics\n\
             print(seen['exec'], seen['marshal.loads'])\n\
             exec(marshal.loads(marshal.dumps(compile('x = 1', 'c', 'exec'))))\n\
             print(seen['exec'], seen['marshal.loads'])\n\
             def make(): compile('y = 1', 'settled', 'exec')\n\
             def other(): compile('y = 1', 'settled', 'exec')\n\
             make(); make(); other(); other()\n\
             print(seen['compile'])\n"
        );
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-I", "-S", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Six modules and what they import, from the stdlib's bytecode: none of their
        // modules' exec or unmarshalling reached the Python hook; the program's own did;
        // the settled `compile`, once per calling function.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0 0\n1 1\n2\n");
    }

    /// The import system's frames are exempt only for what its own loaders read from files:
    /// real CPython, with no agent, so the installed fallback answers (refuse but the
    /// default policy's stdlib callers). Each spelling runs its payload without the hook.
    #[test]
    fn the_import_system_is_exempt_only_for_what_its_own_loaders_read() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook");
        std::fs::create_dir(&hook).unwrap();
        install(
            &hook,
            Path::new("/nonexistent/python-hook.sock"),
            Unreachable::Refuse,
        )
        .unwrap();
        let marker = dir.path().join("ran");
        let data = dir.path().join("data.txt");
        std::fs::write(
            &data,
            format!(
                "import os; open({:?}, 'w').write('ran')\n",
                marker.to_str().unwrap()
            ),
        )
        .unwrap();
        // The payload as bytecode, made without the hook.
        let bytecode = dir.path().join("data.bin");
        let made = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!(
                "import marshal; open({:?}, 'wb').write(marshal.dumps(compile(open({:?}).read(), 'm', 'exec')))",
                bytecode.to_str().unwrap(),
                data.to_str().unwrap()
            ))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let data = format!("{:?}", data.to_str().unwrap());
        let bytecode = format!("{:?}", bytecode.to_str().unwrap());
        let modules = [
            (
                "baseline",
                "from __future__ import annotations\n\
                 import collections, dataclasses, enum, json, typing, types, email, zipfile\n\
                 P = collections.namedtuple('P', 'a b')\n\
                 @dataclasses.dataclass(frozen=True)\nclass D:\n    a: int = 1\n\
                 @types.coroutine\ndef c(): yield\n\
                 print('baseline ok')\n"
                    .to_string(),
            ),
            ("exec_data", format!("exec(open({data}).read())\n")),
            // A listed file's other functions, and typing's evaluation of a string.
            (
                "counter_trampoline",
                format!(
                    "import collections\n\
                     class C(collections.Counter):\n\
                     \x20   update = exec\n\
                     C(open({data}).read())\n"
                ),
            ),
            (
                "forward_ref",
                format!(
                    "import typing\n\
                     expression = open({data}).read().split('; ', 1)[1]\n\
                     typing.ForwardRef(expression)._evaluate(globals(), None, frozenset())\n"
                ),
            ),
            (
                "loader_subclass",
                format!(
                    "import importlib.machinery\n\
                     class L(importlib.machinery.SourceFileLoader):\n\
                     \x20   def get_data(self, path):\n\
                     \x20       return open({data}, 'rb').read()\n\
                     L('m', '/nonexistent/m.py').load_module()\n"
                ),
            ),
            (
                "source_to_code",
                format!(
                    "import importlib.machinery\n\
                     loader = importlib.machinery.SourceFileLoader('m', '/nonexistent/m.py')\n\
                     exec(loader.source_to_code(open({data}, 'rb').read(), '/nonexistent/m.py'))\n"
                ),
            ),
            (
                "data_loader",
                format!(
                    "import importlib.machinery\n\
                     importlib.machinery.SourceFileLoader('m', {data}).load_module()\n"
                ),
            ),
            // Bytecode: a stock get_code whose loader reads with its own get_data, and the
            // import system's unmarshalling step called directly.
            (
                "bytecode_loader_subclass",
                format!(
                    "import importlib.machinery, importlib.util\n\
                     pyc = importlib.util.MAGIC_NUMBER + bytes(12) + open({bytecode}, 'rb').read()\n\
                     class L(importlib.machinery.SourcelessFileLoader):\n\
                     \x20   def get_data(self, path):\n\
                     \x20       return pyc\n\
                     L('m', '/nonexistent/m.pyc').load_module()\n"
                ),
            ),
            (
                "compile_bytecode",
                format!(
                    "import importlib._bootstrap_external as external\n\
                     exec(external._compile_bytecode(open({bytecode}, 'rb').read()))\n"
                ),
            ),
        ];
        for (name, body) in &modules {
            std::fs::write(dir.path().join(format!("{name}.py")), body).unwrap();
        }
        // With the native front (as installed), then without (the hook alone, as where the
        // front cannot load): each must refuse every spelling.
        for front in [true, false] {
            if !front {
                std::fs::remove_file(hook.join(EXTENSION_NAME)).unwrap();
            }
            let run = |name: &str, hooked: bool| {
                let hook_line = if hooked {
                    format!(
                        "sys.path.insert(0, {:?}); import {MODULE_NAME}; \
                         assert ('guard_audit_fast' in sys.modules) == {}; ",
                        hook.to_str().unwrap(),
                        if front { "True" } else { "False" }
                    )
                } else {
                    String::new()
                };
                std::process::Command::new("/usr/bin/python3")
                    .arg("-B")
                    .arg("-c")
                    .arg(format!(
                        "import sys, importlib; {hook_line}sys.path.insert(0, {:?}); \
                         importlib.import_module({name:?})",
                        dir.path().to_str().unwrap()
                    ))
                    .output()
                    .unwrap()
            };
            let out = run("baseline", true);
            assert!(
                out.status.success(),
                "front {front}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), "baseline ok\n");
            for (name, _) in &modules[1..] {
                let out = run(name, false);
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    std::fs::remove_file(&marker).is_ok(),
                    "{name} ran nothing unhooked"
                );
                let out = run(name, true);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    stderr.contains("guard: dynamic code refused"),
                    "front {front}, {name}: {stderr}"
                );
                assert!(
                    !marker.exists(),
                    "front {front}: {name} ran its payload with the hook"
                );
            }
        }
    }
}
