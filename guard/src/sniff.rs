//! Content sniffers: recognise code by what a file holds, not by its name.
//!
//! All reads are positional (`pread`) on the caller's descriptor, so sniffing never moves a
//! file offset that someone else relies on and never reopens a path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::policy::Sniff;

/// A zip's end-of-central-directory record is 22 bytes plus a comment of at most 64 KiB.
const EOCD_MIN: u64 = 22;
const EOCD_MAX_SEARCH: u64 = EOCD_MIN + 0xFFFF;

/// Which of the `wanted` sniffers recognise the content, first match wins.
pub fn sniff(file: &File, size: u64, wanted: &[Sniff]) -> io::Result<Option<Sniff>> {
    if wanted.is_empty() || size < 4 {
        return Ok(None);
    }
    let mut head = [0u8; 4];
    read_exact_at(file, &mut head, 0)?;
    for kind in wanted {
        let hit = match kind {
            Sniff::Pyc => is_pyc_header(&head) && size >= 16,
            Sniff::Elf => head == *b"\x7fELF",
            Sniff::Zip => {
                head == *b"PK\x03\x04" || head == *b"PK\x05\x06" || has_zip_trailer(file, size)?
            }
        };
        if hit {
            return Ok(Some(*kind));
        }
    }
    Ok(None)
}

/// CPython's magic: a 2-byte little-endian version number followed by `\r\n`
/// (this is how `pkgutil`/`runpy`'s `maybe_pyc_file` recognises bytecode too).
pub fn is_pyc_header(head: &[u8]) -> bool {
    head.len() >= 4 && head[2] == b'\r' && head[3] == b'\n'
}

/// Zip files may carry anything in front (a shebang, an executable stub): zipimport finds
/// them by the end-of-central-directory record, so look for it at the end.
fn has_zip_trailer(file: &File, size: u64) -> io::Result<bool> {
    if size < EOCD_MIN {
        return Ok(false);
    }
    #[allow(clippy::cast_possible_truncation)]
    let mut tail = [0u8; EOCD_MIN as usize];
    read_exact_at(file, &mut tail, size - EOCD_MIN)?;
    if tail[..4] == *b"PK\x05\x06" {
        return Ok(true);
    }
    // With an archive comment the record sits further back.
    let span = size.min(EOCD_MAX_SEARCH);
    let mut window = vec![0u8; span as usize];
    read_exact_at(file, &mut window, size - span)?;
    Ok(window.windows(4).any(|w| w == b"PK\x05\x06"))
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    const ALL: &[Sniff] = &[Sniff::Pyc, Sniff::Zip, Sniff::Elf];

    #[test]
    fn recognises_pyc_of_any_version() {
        let mut pyc = vec![0xa7, 0x0d, b'\r', b'\n'];
        pyc.extend([0u8; 12]);
        let (f, size) = file_with(&pyc);
        assert_eq!(sniff(f.as_file(), size, ALL).unwrap(), Some(Sniff::Pyc));
        let (f, size) = file_with(&pyc[..8]);
        assert_eq!(
            sniff(f.as_file(), size, ALL).unwrap(),
            None,
            "too short for a header"
        );
    }

    #[test]
    fn recognises_zip_with_a_prefix_and_a_comment() {
        let mut zip = b"#!/usr/bin/python3\n".to_vec();
        zip.extend(b"PK\x05\x06");
        zip.extend([0u8; 16]);
        zip.extend(&[5, 0]); // comment length
        zip.extend(b"hello");
        let (f, size) = file_with(&zip);
        assert_eq!(sniff(f.as_file(), size, ALL).unwrap(), Some(Sniff::Zip));
        assert_eq!(sniff(f.as_file(), size, &[Sniff::Pyc]).unwrap(), None);
    }

    #[test]
    fn recognises_elf_and_ignores_text() {
        let (f, size) = file_with(b"\x7fELF\x02\x01\x01");
        assert_eq!(sniff(f.as_file(), size, ALL).unwrap(), Some(Sniff::Elf));
        let (f, size) = file_with(b"print('hello')\n");
        assert_eq!(sniff(f.as_file(), size, ALL).unwrap(), None);
        let (f, size) = file_with(b"");
        assert_eq!(sniff(f.as_file(), size, ALL).unwrap(), None);
    }

    #[test]
    fn a_size_larger_than_the_file_is_an_error_not_a_panic() {
        let (f, _) = file_with(b"PKxx");
        assert!(sniff(f.as_file(), 100_000, &[Sniff::Zip]).is_err());
    }
}
