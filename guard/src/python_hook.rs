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

/// The hook module's source, talking to the agent at `socket`.
pub fn render(socket: &Path) -> Result<String, HookError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_os_str().as_bytes();
    if !socket.is_absolute() || bytes.len() > 107 || bytes.contains(&0) {
        return Err(HookError::SocketPath(socket.to_path_buf()));
    }
    Ok(SOURCE
        .replace("__SOCKET__", &bytes_literal(bytes))
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

/// Writes the hook module and its `.pth` file into the site directory `site` (each
/// replaced whole: a reader sees the old file or the new one), mode 0644. Returns the
/// files written, to be signed.
pub fn install(site: &Path, socket: &Path) -> Result<Vec<PathBuf>, HookError> {
    let module = render(socket)?;
    let files = [
        (site.join(format!("{MODULE_NAME}.py")), module),
        (site.join(PTH_NAME), pth()),
    ];
    let mut written = Vec::new();
    for (path, content) in files {
        write_whole(&path, content.as_bytes()).map_err(|source| HookError::Io {
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
        assert!(render(Path::new("relative.sock")).is_err());
        assert!(render(Path::new(&format!("/{}", "x".repeat(107)))).is_err());
        let source = render(Path::new("/run/guard/python-hook.sock")).unwrap();
        assert!(!source.contains("__SOCKET__") && !source.contains("__EVENTS__"));
        assert!(source.contains("\"compile\"") && source.contains("\"pickle.find_class\""));
    }

    #[test]
    fn the_hook_compiles_as_python() {
        let dir = tempfile::tempdir().unwrap();
        let files = install(dir.path(), Path::new("/nonexistent/python-hook.sock")).unwrap();
        assert_eq!(files.len(), 2);
        // Real CPython: the module compiles, and with no agent it installs nothing and
        // the program runs.
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import sys; sys.path.insert(0, {:?}); import {MODULE_NAME}; exec('print(6*7)')",
                dir.path().to_str().unwrap()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    }
}
