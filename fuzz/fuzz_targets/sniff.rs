//! The pyc/zip/ELF sniffers on a real file, with the file's size both right and wrong (the
//! agent passes the fstat size, which may be stale when the file changes under it).
#![no_main]

use std::io::Write;

use guard::policy::Sniff;
use libfuzzer_sys::fuzz_target;

const ALL: &[Sniff] = &[Sniff::Pyc, Sniff::Zip, Sniff::Elf];

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(data).expect("write");
    let size = data.len() as u64;
    let _ = guard::sniff::sniff(&file, size, ALL);
    let _ = guard::sniff::sniff(&file, size / 2, ALL);
    let _ = guard::sniff::sniff(&file, size.saturating_add(0x1_0000), ALL);
    let _ = guard::sniff::sniff(&file, u64::MAX, ALL);
    for one in ALL {
        let _ = guard::sniff::sniff(&file, size, std::slice::from_ref(one));
    }
});
