//! The one ELF fact guard needs: an executable's program interpreter (`PT_INTERP`).
//!
//! A dynamically linked interpreter names the loader (`ld.so`) that maps it. Exec'd
//! directly, that loader runs any program under its own identity, so the exec gate learns
//! the loaders of the profiled interpreters from their `PT_INTERP` (see `facts`). Read
//! from an open descriptor with bounded sizes: a hostile or truncated file is an error,
//! never a panic or an unbounded read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// At most this many program headers are read (real executables have about a dozen).
const MAX_PROGRAM_HEADERS: u64 = 256;
/// `PATH_MAX`: a longer `PT_INTERP` is not a path the kernel would load.
const MAX_INTERP: u64 = 4096;
const PT_INTERP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
}

/// The program interpreter an ELF executable names, if it names one (a static executable
/// does not).
pub fn program_interpreter(file: &File) -> Result<Option<PathBuf>, ElfError> {
    let mut ident = [0u8; 16];
    read_exact_at(file, &mut ident, 0)?;
    if ident[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(ElfError::Malformed("unknown class")),
    };
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(ElfError::Malformed("unknown byte order")),
    };
    let reader = Fields { little };
    // e_phoff, e_phentsize, e_phnum.
    let (phoff, phentsize, phnum) = if wide {
        let mut header = [0u8; 64];
        read_exact_at(file, &mut header, 0)?;
        (
            reader.u64(&header[32..40]),
            reader.u16(&header[54..56]),
            reader.u16(&header[56..58]),
        )
    } else {
        let mut header = [0u8; 52];
        read_exact_at(file, &mut header, 0)?;
        (
            u64::from(reader.u32(&header[28..32])),
            reader.u16(&header[42..44]),
            reader.u16(&header[44..46]),
        )
    };
    let entry_size: u16 = if wide { 56 } else { 32 };
    if phnum == 0 {
        return Ok(None);
    }
    if phentsize < entry_size {
        return Err(ElfError::Malformed("program header entries too small"));
    }
    if u64::from(phnum) > MAX_PROGRAM_HEADERS {
        return Err(ElfError::Malformed("too many program headers"));
    }
    let mut entry = vec![0u8; usize::from(entry_size)];
    for index in 0..u64::from(phnum) {
        let at = index
            .checked_mul(u64::from(phentsize))
            .and_then(|offset| offset.checked_add(phoff))
            .ok_or(ElfError::Malformed("program header offset overflows"))?;
        read_exact_at(file, &mut entry, at)?;
        if reader.u32(&entry[0..4]) != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (reader.u64(&entry[8..16]), reader.u64(&entry[32..40]))
        } else {
            (
                u64::from(reader.u32(&entry[4..8])),
                u64::from(reader.u32(&entry[16..20])),
            )
        };
        if size == 0 || size > MAX_INTERP {
            return Err(ElfError::Malformed("PT_INTERP size"));
        }
        let size = usize::try_from(size).map_err(|_| ElfError::Malformed("PT_INTERP size"))?;
        let mut path = vec![0u8; size];
        read_exact_at(file, &mut path, offset)?;
        // The segment holds a NUL-terminated path; what follows the NUL is not part of it.
        let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
        path.truncate(end);
        if path.is_empty() {
            return Err(ElfError::Malformed("empty PT_INTERP"));
        }
        use std::os::unix::ffi::OsStringExt;
        return Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(path))));
    }
    Ok(None)
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), ElfError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ElfError::Malformed("truncated")
        } else {
            ElfError::Io(e)
        }
    })
}

/// Reads integers in the file's byte order. Callers pass slices of exactly the width.
struct Fields {
    little: bool,
}

impl Fields {
    fn u16(&self, bytes: &[u8]) -> u16 {
        let mut raw = [0u8; 2];
        raw.copy_from_slice(&bytes[..2]);
        if self.little {
            u16::from_le_bytes(raw)
        } else {
            u16::from_be_bytes(raw)
        }
    }

    fn u32(&self, bytes: &[u8]) -> u32 {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&bytes[..4]);
        if self.little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    }

    fn u64(&self, bytes: &[u8]) -> u64 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[..8]);
        if self.little {
            u64::from_le_bytes(raw)
        } else {
            u64::from_be_bytes(raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn reads_the_host_pythons_loader() {
        let file = File::open("/usr/bin/python3").unwrap();
        let interp = program_interpreter(&file)
            .unwrap()
            .expect("dynamic python3");
        assert!(
            interp.to_string_lossy().contains("ld-linux"),
            "{}",
            interp.display()
        );
    }

    #[test]
    fn hostile_headers_are_errors() {
        assert!(matches!(
            program_interpreter(&file_with(b"#!/bin/sh\n")),
            Err(ElfError::NotElf) | Err(ElfError::Malformed(_))
        ));
        assert!(matches!(
            program_interpreter(&file_with(b"\x7fELF\x02\x01\x01")),
            Err(ElfError::Malformed("truncated"))
        ));
        // A 64-bit header whose program headers lie beyond the end of the file.
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        header[54..56].copy_from_slice(&56u16.to_le_bytes());
        header[56..58].copy_from_slice(&2u16.to_le_bytes());
        assert!(program_interpreter(&file_with(&header)).is_err());
        // A PT_INTERP that claims to be huge.
        let mut elf = header.clone();
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut phdr = vec![0u8; 56];
        phdr[0..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        phdr[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        elf.extend_from_slice(&phdr);
        assert!(matches!(
            program_interpreter(&file_with(&elf)),
            Err(ElfError::Malformed("PT_INTERP size"))
        ));
        // No program headers: an object without a loader.
        let mut bare = header.clone();
        bare[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(program_interpreter(&file_with(&bare)), Ok(None)));
    }
}
