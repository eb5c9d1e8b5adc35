//! Which filesystems to mark: every mounted filesystem of a trusted type, or only those
//! holding the paths given with `--watch`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A mounted filesystem, by its device number and one place where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(dev), Some(point), Some(fs_type)) =
            (fields.get(2), fields.get(4), fields.get(separator + 1))
        else {
            continue;
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        mounts.push(Mount {
            dev: libc::makedev(major, minor),
            mount_point: PathBuf::from(unescape(point)),
            fs_type: fs_type.to_string(),
        });
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mount per filesystem of a trusted type (a filesystem mark covers all its mounts).
pub fn trusted_filesystems(mounts: &[Mount], trusted_types: &[String]) -> Vec<Mount> {
    let mut seen = HashSet::new();
    mounts
        .iter()
        .filter(|m| trusted_types.contains(&m.fs_type))
        .filter(|m| seen.insert(m.dev))
        .cloned()
        .collect()
}

/// The filesystems holding `paths`, one entry per filesystem.
pub fn filesystems_of(paths: &[PathBuf]) -> anyhow::Result<Vec<Mount>> {
    use anyhow::Context;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("--watch {}", path.display()))?;
        if seen.insert(meta.dev()) {
            out.push(Mount {
                dev: meta.dev(),
                mount_point: path.clone(),
                fs_type: fs_type_name(path),
            });
        }
    }
    Ok(out)
}

fn fs_type_name(path: &Path) -> String {
    nix::sys::statfs::statfs(path)
        .ok()
        .and_then(|s| guard_common::filesystem_name(s.filesystem_type().0 as u64))
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev rw - devtmpfs udev rw
30 22 0:40 / /tmp/with\\040space rw - tmpfs tmpfs rw
31 22 254:0 /srv /mnt/bind rw - ext4 /dev/vda rw
32 22 0:41 / /fuse rw - fuse.sshfs host: rw
";

    #[test]
    fn parses_and_unescapes() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[0].dev, libc::makedev(254, 0));
        assert_eq!(mounts[3].mount_point, PathBuf::from("/tmp/with space"));
        assert_eq!(mounts[5].fs_type, "fuse.sshfs");
    }

    #[test]
    fn one_mark_per_trusted_filesystem() {
        let mounts = parse_mountinfo(SAMPLE);
        let picked = trusted_filesystems(&mounts, &["ext4".into(), "tmpfs".into()]);
        let points: Vec<_> = picked.iter().map(|m| m.mount_point.clone()).collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/tmp/with space")]
        );
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_mountinfo("nonsense\n1 2 x:y / / - ext4\n").is_empty());
    }
}
