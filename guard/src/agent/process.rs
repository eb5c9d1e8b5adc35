//! Facts about the process behind an event, from the kernel's view in /proc.
//!
//! The subject is identified by its executable's identity (`/proc/PID/exe` is the kernel's
//! reference to the mapped binary, not a name), never by `comm` or argv[0].

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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

/// The interpreter's script operand, from its command line as the kernel keeps it and read
/// as CPython reads it: `None` when there is none (`-c`, `-m`, standard input).
pub fn script_operand(pid: i32) -> io::Result<Option<Vec<u8>>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(python_argv::parse_cmdline(&cmdline)
        .script
        .filter(|script| *script != b"-")
        .map(<[u8]>::to_vec))
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

pub fn resolve_operand(pid: i32, operand: &[u8]) -> io::Result<FileId> {
    let operand = std::path::Path::new(std::ffi::OsStr::from_bytes(operand));
    let path: PathBuf = match operand.strip_prefix("/") {
        Ok(relative) => PathBuf::from(format!("/proc/{pid}/root")).join(relative),
        Err(_) => PathBuf::from(format!("/proc/{pid}/cwd")).join(operand),
    };
    let meta = std::fs::metadata(path)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
