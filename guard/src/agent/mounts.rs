//! Which filesystems to mark: every mounted filesystem that can hold files a user controls
//! (trusted types and untrusted ones alike: the engine refuses code on the untrusted ones,
//! but only if it sees the open), or only those holding the paths given with `--watch`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A mounted filesystem, by its device number and one place where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub dev: u64,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount's id in the mount table (`None` for a `--watch` path, known by its
    /// device): what the mount point's path must still reach when it is marked.
    pub id: Option<u64>,
}

/// A filesystem to mark and every place it is mounted: a filesystem mark made through any
/// one of them covers them all, and one may no longer be reachable by its path (renamed
/// away, covered by another mount) while another is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub dev: u64,
    pub fs_type: String,
    pub kind: Kind,
    pub places: Vec<Mount>,
}

impl Target {
    /// Where it is mounted, for logs.
    pub fn place(&self) -> String {
        self.places
            .first()
            .map(|m| m.mount_point.display().to_string())
            .unwrap_or_default()
    }
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(id), Some(dev), Some(point), Some(fs_type)) = (
            fields.first().and_then(|id| id.parse().ok()),
            fields.get(2),
            fields.get(4),
            fields.get(separator + 1),
        ) else {
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
            id: Some(id),
        });
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape(field: &str) -> String {
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

/// Kernel pseudo filesystems, never marked: their regular files are made by the kernel or
/// by root, not by users, or they cannot carry permission marks at all.
///
/// - `proc` refuses permission marks (the kernel flags it `FS_DISALLOW_NOTIFY_PERM`: opening
///   its files takes locks that deadlock with a listener). It does serve bytes a user
///   chooses (`/proc/PID/comm`, `environ`, `cmdline`): `python3 /proc/self/environ` runs on
///   Python 3.11. fanotify cannot see that; see docs/threat-model.md.
/// - `devtmpfs`, `devpts`: device nodes. The agent opens every event's file itself, so a
///   mark would make it open terminals, tapes and exclusive devices (`/dev/watchdog`) behind
///   every opener; only root creates regular files there (`/dev/shm` is its own tmpfs).
/// - `sysfs`, `cgroup`, `cgroup2`, `mqueue`, `bpf`, `tracefs`, `debugfs`, `securityfs`,
///   `pstore`, `efivarfs`, `configfs`, `binfmt_misc`, `selinuxfs`, `smackfs`, `nfsd`,
///   `rpc_pipefs`, `fusectl`: content is formatted by the kernel from its own state; users
///   write at most a few fixed control values.
/// - `autofs`: a trigger, not storage; the filesystem it mounts is marked when it appears.
/// - `nsfs`, `pipefs`, `sockfs`, `anon_inodefs`, `pidfs`: no paths to open by name.
///
/// Everything else is marked, known or not: `hugetlbfs` (users create files in 1777 mounts
/// and fill them through mmap), `ramfs`, `overlay`, FUSE, network and disk filesystems.
pub const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "devpts",
    "mqueue",
    "bpf",
    "tracefs",
    "debugfs",
    "securityfs",
    "pstore",
    "efivarfs",
    "configfs",
    "binfmt_misc",
    "selinuxfs",
    "smackfs",
    "nfsd",
    "rpc_pipefs",
    "fusectl",
    "autofs",
    "nsfs",
    "pipefs",
    "sockfs",
    "anon_inodefs",
    "pidfs",
];

/// How a filesystem type is treated when marking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not marked (see [`PSEUDO_FILESYSTEMS`]).
    Pseudo,
    /// A type the policy trusts: its events go to the shared reader and workers.
    Trusted,
    /// Any other type: marked so that code there is refused (`trusted-filesystem`), its
    /// events read apart, so that a stalled server cannot hold up other filesystems.
    Untrusted,
}

/// The kind of a mountinfo filesystem type under a policy's trusted filesystems (name and
/// magic). A type trusted by magic is trusted here too (`ext2` when the policy names `ext4`,
/// which share a magic), as the engine, which decides on `fstatfs`, would trust it.
pub fn kind(fs_type: &str, trusted: &[(String, u64)]) -> Kind {
    if PSEUDO_FILESYSTEMS.contains(&fs_type) {
        return Kind::Pseudo;
    }
    let magic = magic_of_type(fs_type);
    if trusted
        .iter()
        .any(|(name, m)| name == fs_type || Some(*m) == magic)
    {
        Kind::Trusted
    } else {
        Kind::Untrusted
    }
}

/// The `statfs` magic behind a mountinfo type: `fuse.sshfs` and `fuseblk` are FUSE, `nfs4`
/// is NFS, `smb3` is CIFS.
fn magic_of_type(fs_type: &str) -> Option<u64> {
    let base = if fs_type.starts_with("fuse.") || fs_type == "fuseblk" {
        "fuse"
    } else if fs_type == "nfs4" {
        "nfs"
    } else if fs_type == "smb3" {
        "cifs"
    } else {
        fs_type
    };
    guard_common::filesystem_magic(base)
}

/// The filesystems to mark, each with all its mounts (in the table's order), with its kind;
/// pseudo filesystems left out. With `scope`, only filesystems mounted at or below one of
/// those paths, by the mounts there.
pub fn to_mark(
    mounts: &[Mount],
    trusted: &[(String, u64)],
    scope: Option<&[PathBuf]>,
) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    for m in mounts
        .iter()
        .filter(|m| scope.is_none_or(|roots| roots.iter().any(|r| m.mount_point.starts_with(r))))
    {
        if let Some(target) = targets.iter_mut().find(|t| t.dev == m.dev) {
            target.places.push(m.clone());
            continue;
        }
        let kind = kind(&m.fs_type, trusted);
        if kind != Kind::Pseudo {
            targets.push(Target {
                dev: m.dev,
                fs_type: m.fs_type.clone(),
                kind,
                places: vec![m.clone()],
            });
        }
    }
    targets
}

/// The filesystems a fanotify group holds marks on, from its `/proc/self/fdinfo` text:
/// one `fanotify sdev:HEX ...` line per superblock mark, with the kernel's device encoding
/// (major << 20 | minor). The kernel drops a mark when its filesystem goes away, so this is
/// what is marked now, whatever was marked before (an unmounted filesystem's device number
/// is reused by the next anonymous mount).
pub fn superblock_marks(fdinfo: &str) -> HashSet<u64> {
    fdinfo
        .lines()
        .filter_map(|line| line.strip_prefix("fanotify sdev:"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
        .filter_map(|kdev| {
            let major = u32::try_from(kdev >> 20).ok()?;
            let minor = u32::try_from(kdev & 0xf_ffff).ok()?;
            Some(libc::makedev(major, minor))
        })
        .collect()
}

/// A handle a process holds on one of the mounts `ids` (its cwd, root or an open
/// descriptor), as a place to mark `target` through: `/proc/PID/cwd`, `/proc/PID/root` or
/// `/proc/PID/fd/N`, which lead to that very mount. The descriptors are told apart by their fdinfo (no
/// filesystem is asked); cwd and root by opening them `O_PATH`, which asks none either.
pub fn held_on(ids: &[u64], target: &Target) -> Option<Mount> {
    use std::os::fd::AsRawFd;
    let procs = std::fs::read_dir("/proc").ok()?;
    let place = |path: String, id: u64| Mount {
        dev: target.dev,
        mount_point: PathBuf::from(path),
        fs_type: target.fs_type.clone(),
        id: Some(id),
    };
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        for link in ["cwd", "root"] {
            let path = format!("/proc/{pid}/{link}");
            let Ok(dir) = nix::fcntl::open(
                path.as_str(),
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ) else {
                continue;
            };
            if let Ok(id) = mount_id_of_fd(dir.as_raw_fd())
                && ids.contains(&id)
            {
                return Some(place(path, id));
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            if let Some(id) = mount_id_in_fdinfo(&text)
                && ids.contains(&id)
            {
                let n = fd.file_name().to_string_lossy().into_owned();
                return Some(place(format!("/proc/{pid}/fd/{n}"), id));
            }
        }
    }
    None
}

/// The id of the mount a descriptor of this process is on (`mnt_id` in its fdinfo, which
/// also holds for `O_PATH` descriptors).
pub fn mount_id_of_fd(fd: i32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    mount_id_in_fdinfo(&text)
        .ok_or_else(|| std::io::Error::other(format!("no mnt_id in the fdinfo of {fd}")))
}

fn mount_id_in_fdinfo(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()
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
                id: None,
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

    fn trusted(names: &[&str]) -> Vec<(String, u64)> {
        names
            .iter()
            .map(|n| (n.to_string(), guard_common::filesystem_magic(n).unwrap()))
            .collect()
    }

    #[test]
    fn every_filesystem_but_pseudo_ones_is_marked_once() {
        let mounts = parse_mountinfo(SAMPLE);
        let picked = to_mark(&mounts, &trusted(&["ext4", "tmpfs"]), None);
        let points: Vec<_> = picked
            .iter()
            .map(|t| (t.place(), t.places.len(), t.kind))
            .collect();
        assert_eq!(
            points,
            vec![
                ("/".to_string(), 2, Kind::Trusted),
                ("/tmp/with space".to_string(), 1, Kind::Trusted),
                ("/fuse".to_string(), 1, Kind::Untrusted),
            ]
        );
        // Every place of a filesystem, with its mount's id: the bind mount is the second.
        assert_eq!(picked[0].places[1].mount_point, PathBuf::from("/mnt/bind"));
        assert_eq!(picked[0].places[1].id, Some(31));
    }

    #[test]
    fn kinds_follow_the_policy_by_name_and_magic() {
        let policy = trusted(&["ext4", "tmpfs"]);
        assert_eq!(kind("ext2", &policy), Kind::Trusted); // one magic for ext2/3/4
        assert_eq!(kind("devtmpfs", &policy), Kind::Pseudo); // tmpfs's magic, still pseudo
        assert_eq!(kind("proc", &policy), Kind::Pseudo);
        for untrusted in [
            "ramfs",
            "vfat",
            "overlay",
            "nfs4",
            "fuse.sshfs",
            "9p",
            "whatever",
        ] {
            assert_eq!(kind(untrusted, &policy), Kind::Untrusted, "{untrusted}");
        }
        let fuse = trusted(&["fuse"]);
        assert_eq!(kind("fuse.sshfs", &fuse), Kind::Trusted);
        assert_eq!(kind("fuseblk", &fuse), Kind::Trusted);
    }

    #[test]
    fn a_scope_keeps_what_is_mounted_at_or_below_it() {
        let mounts = parse_mountinfo(SAMPLE);
        let scope = [PathBuf::from("/tmp"), PathBuf::from("/fuse")];
        let picked = to_mark(&mounts, &trusted(&["ext4"]), Some(&scope));
        let points: Vec<_> = picked.iter().map(Target::place).collect();
        assert_eq!(points, ["/tmp/with space", "/fuse"]);
        // A path prefix is not a parent: /tmpx is not below /tmp.
        let tmpx = parse_mountinfo("40 22 0:50 / /tmpx rw - ramfs r rw\n");
        assert!(to_mark(&tmpx, &[], Some(&scope)).is_empty());
    }

    #[test]
    fn superblock_marks_are_read_from_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
                      fanotify flags:5 event-flags:8000\n\
                      fanotify sdev:27 mflags:0 mask:50000 ignored_mask:0\n\
                      fanotify sdev:fe00001 mflags:0 mask:50000 ignored_mask:0\n\
                      fanotify ino:4d2 sdev:27 mflags:0 mask:1 ignored_mask:0\n";
        assert_eq!(mount_id_in_fdinfo(fdinfo), Some(17));
        let marks = superblock_marks(fdinfo);
        assert_eq!(
            marks,
            HashSet::from([libc::makedev(0, 39), libc::makedev(254, 1)])
        );
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_mountinfo("nonsense\n1 2 x:y / / - ext4\n").is_empty());
    }
}
