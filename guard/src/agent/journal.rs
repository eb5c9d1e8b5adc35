//! The journal's native protocol: one datagram per entry on journald's socket, each field
//! `NAME=value\n` (or, for a value holding a newline, `NAME\n`, its length as 64-bit
//! little endian, the value, `\n`). Audit records become entries with fields an operator
//! filters on (`journalctl -u guard GUARD_RULE=valid-signature`), at the priority of what
//! they say.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::audit::AuditRecord;

/// Where journald listens for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// Every guard decision carries this `MESSAGE_ID` (`journalctl MESSAGE_ID=…` finds them all).
pub const DECISION_MESSAGE_ID: &str = "3c1b9e0f7a2d4e8b9f6a5c4d2e1b0a97";

/// syslog priorities, as journald reads them.
pub const PRIORITY_ERR: u8 = 3;
pub const PRIORITY_WARNING: u8 = 4;
pub const PRIORITY_INFO: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sending to the journal: {0}")]
    Send(#[source] std::io::Error),
}

pub struct Journal {
    socket: UnixDatagram,
    buffer: Vec<u8>,
}

impl Journal {
    pub fn connect(path: &Path) -> Result<Journal, JournalError> {
        let connect = || -> std::io::Result<UnixDatagram> {
            let socket = UnixDatagram::unbound()?;
            socket.connect(path)?;
            // A stalled journald backs up the audit thread's queue (its records are then
            // dropped and counted), never an answer to the kernel.
            socket.set_write_timeout(Some(Duration::from_secs(1)))?;
            Ok(socket)
        };
        connect()
            .map(|socket| Journal {
                socket,
                buffer: Vec::with_capacity(2048),
            })
            .map_err(|source| JournalError::Connect {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Whether the standard error is the journal (systemd sets `JOURNAL_STREAM` to its
    /// `device:inode`): then the agent's entries go to journald's own socket.
    pub fn stderr_is_journal() -> bool {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(stderr).metadata() else {
            return false;
        };
        stream == format!("{}:{}", meta.dev(), meta.ino())
    }

    /// Sends one decision as a journal entry: the human line as `MESSAGE`, its facts as
    /// `GUARD_*` fields.
    pub fn send_record(&mut self, record: &AuditRecord, message: &str) -> Result<(), JournalError> {
        let priority = if record.decision == "deny" {
            PRIORITY_WARNING
        } else {
            PRIORITY_INFO
        };
        let pid = record.pid.to_string();
        let uid = record.uid.to_string();
        let priority = priority.to_string();
        let mut fields: Vec<(&str, &str)> = vec![
            ("MESSAGE", message),
            ("PRIORITY", &priority),
            ("SYSLOG_IDENTIFIER", "guard"),
            ("MESSAGE_ID", DECISION_MESSAGE_ID),
            ("GUARD_DECISION", record.decision),
            (
                "GUARD_MODE",
                if record.enforced {
                    "enforce"
                } else {
                    "permissive"
                },
            ),
            ("GUARD_RULE", record.rule),
            ("GUARD_REASON", &record.reason),
            ("GUARD_PID", &pid),
            ("GUARD_UID", &uid),
            ("GUARD_EXE", &record.exe),
            ("GUARD_ID", &record.id),
            ("GUARD_CODE", record.code),
        ];
        // The kernel layers report identities, not paths.
        if !record.path.is_empty() {
            fields.push(("GUARD_PATH", &record.path));
        }
        if let Some(missing) = &record.missing {
            fields.push(("GUARD_MISSING", missing));
        }
        self.send(&fields)
    }

    pub fn send(&mut self, fields: &[(&str, &str)]) -> Result<(), JournalError> {
        encode(&mut self.buffer, fields);
        self.socket
            .send(&self.buffer)
            .map(|_| ())
            .map_err(JournalError::Send)
    }
}

/// The native protocol's encoding of one entry into `out` (cleared first).
pub fn encode(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    out.clear();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
}

/// Reads an entry in the native protocol: the fields in order. What journald would
/// reject (a name without `=` or length, a length past the end) is an error.
#[cfg(test)]
fn decode(mut entry: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut fields = Vec::new();
    while !entry.is_empty() {
        let end = entry
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a field without its newline")?;
        let line = &entry[..end];
        if let Some(equals) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..equals]).into_owned(),
                line[equals + 1..].to_vec(),
            ));
            entry = &entry[end + 1..];
            continue;
        }
        let name = String::from_utf8_lossy(line).into_owned();
        let rest = &entry[end + 1..];
        let length: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{name}: no length"))?;
        let length = usize::try_from(u64::from_le_bytes(length))
            .map_err(|_| format!("{name}: length too large"))?;
        let value = rest
            .get(8..8 + length)
            .ok_or_else(|| format!("{name}: {length} bytes past the end"))?;
        if rest.get(8 + length) != Some(&b'\n') {
            return Err(format!("{name}: value not followed by a newline"));
        }
        fields.push((name, value.to_vec()));
        entry = &rest[8 + length + 1..];
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_with_newlines_in_values() {
        let mut out = Vec::new();
        let fields = [
            ("MESSAGE", "deny pid=1"),
            ("GUARD_PATH", "/srv/a\nb.py"),
            ("GUARD_RULE", "valid-signature"),
        ];
        encode(&mut out, &fields);
        assert!(
            out.starts_with(b"MESSAGE=deny pid=1\nGUARD_PATH\n\x0b\0\0\0\0\0\0\0/srv/a\nb.py\n")
        );
        let decoded = decode(&out).unwrap();
        let decoded: Vec<(&str, &[u8])> = decoded
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let expected: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        assert_eq!(decoded, expected);
        assert!(decode(b"GUARD_PATH\n\xff\0\0\0\0\0\0\0ab\n").is_err());
    }
}
