//! Streaming file digests (never a whole-file read into memory).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Hash algorithms of the IMA signature header (`enum hash_algo` in the kernel).
/// Ordered weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgo {
    /// The kernel's `HASH_ALGO_*` number, as stored in the signature header.
    pub const fn ima_id(self) -> u8 {
        match self {
            HashAlgo::Sha1 => 2,
            HashAlgo::Sha256 => 4,
            HashAlgo::Sha384 => 5,
            HashAlgo::Sha512 => 6,
        }
    }

    pub const fn from_ima_id(id: u8) -> Option<HashAlgo> {
        match id {
            2 => Some(HashAlgo::Sha1),
            4 => Some(HashAlgo::Sha256),
            5 => Some(HashAlgo::Sha384),
            6 => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha384 => "sha384",
            HashAlgo::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<HashAlgo> {
        [
            HashAlgo::Sha1,
            HashAlgo::Sha256,
            HashAlgo::Sha384,
            HashAlgo::Sha512,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// A file digest together with the algorithm that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algo: HashAlgo,
    pub bytes: Vec<u8>,
}

impl Digest {
    pub fn hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Hashes the whole content of an open file, from offset 0 whatever the descriptor's own
/// offset (which it leaves alone).
pub fn digest_file(file: &File, algo: HashAlgo) -> io::Result<Digest> {
    digest_reader(PositionalReader::new(file), algo)
}

/// A `Read` over a descriptor with its own position, starting at 0 (`pread`), so hashing
/// does not depend on or disturb the descriptor's offset.
pub struct PositionalReader<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> PositionalReader<'a> {
    pub fn new(file: &'a File) -> Self {
        PositionalReader { file, offset: 0 }
    }
}

impl io::Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Hashes everything `reader` yields, in fixed-size chunks.
pub fn digest_reader(mut reader: impl Read, algo: HashAlgo) -> io::Result<Digest> {
    fn run<D: sha2::Digest>(reader: &mut dyn Read, mut hasher: D) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(hasher.finalize().to_vec())
    }
    let bytes = match algo {
        HashAlgo::Sha1 => run(&mut reader, sha1::Sha1::default())?,
        HashAlgo::Sha256 => run(&mut reader, sha2::Sha256::default())?,
        HashAlgo::Sha384 => run(&mut reader, sha2::Sha384::default())?,
        HashAlgo::Sha512 => run(&mut reader, sha2::Sha512::default())?,
    };
    Ok(Digest { algo, bytes })
}
