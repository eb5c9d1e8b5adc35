//! POSIX access ACLs (`system.posix_acl_access`): who besides the owner, the owning group and
//! everyone may write a file. Mode bits alone miss a named user or group entry that lets the
//! runner rewrite signed code (W^X).

use std::fs::File;
use std::io;

/// The xattr holding a file's access ACL.
pub const XATTR_NAME: &str = "system.posix_acl_access";

const VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_WRITE: u16 = 0x02;

/// An access ACL's entries that can grant write to someone other than the owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// Named users with write in their entry, before the mask.
    users: Vec<u32>,
    /// Named groups with write, before the mask.
    groups: Vec<u32>,
    /// The owning group's entry has write, before the mask.
    owning_group: bool,
    /// The mask allows write (no mask: entries apply as they are).
    mask: bool,
    /// The value could not be read as an ACL: nobody can tell who may write.
    malformed: bool,
}

impl Acl {
    /// The ACL in `value`, as the kernel stores it: a version word (2), then entries of tag
    /// (u16), permissions (u16) and id (u32), little-endian.
    pub fn parse(value: &[u8]) -> Acl {
        let malformed = Acl {
            malformed: true,
            ..Acl::default()
        };
        let Some((version, entries)) = value.split_first_chunk::<4>() else {
            return malformed;
        };
        if u32::from_le_bytes(*version) != VERSION || entries.len() % 8 != 0 {
            return malformed;
        }
        let mut acl = Acl {
            mask: true,
            ..Acl::default()
        };
        for entry in entries.chunks_exact(8) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let write = u16::from_le_bytes([entry[2], entry[3]]) & ACL_WRITE != 0;
            let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
            match tag {
                ACL_USER if write => acl.users.push(id),
                ACL_GROUP if write => acl.groups.push(id),
                ACL_GROUP_OBJ => acl.owning_group = write,
                ACL_MASK => acl.mask = write,
                _ => {}
            }
        }
        acl
    }

    /// Whether an entry for a named user or group lets someone write (the owner's and
    /// everyone's rights are in the mode bits).
    pub fn grants_named_write(&self) -> bool {
        self.malformed || (self.mask && (!self.users.is_empty() || !self.groups.is_empty()))
    }

    /// Why user `uid` with groups `gids` may write a file with this ACL owned by group
    /// `gid`, as the kernel's permission check reads it, or `None`.
    pub fn write_grant(&self, uid: u32, gids: &[u32], gid: u32) -> Option<String> {
        if self.malformed {
            return Some("its ACL cannot be read, so anyone may be able to write it".into());
        }
        if !self.mask {
            return None;
        }
        if self.users.contains(&uid) {
            return Some(format!("an ACL entry lets the runner (uid {uid}) write it"));
        }
        if let Some(group) = self.groups.iter().find(|g| gids.contains(g)) {
            return Some(format!(
                "an ACL entry lets group {group}, which the runner is in, write it"
            ));
        }
        if self.owning_group && gids.contains(&gid) {
            return Some(format!(
                "its ACL lets the owning group {gid}, which the runner is in, write it"
            ));
        }
        None
    }
}

/// The access ACL of an opened file: `None` when it has none (or its filesystem has no
/// ACLs); an error when it cannot be read.
pub fn read(file: &File) -> io::Result<Option<Acl>> {
    use xattr::FileExt;
    match file.get_xattr(XATTR_NAME) {
        Ok(Some(value)) => Ok(Some(Acl::parse(&value))),
        Ok(None) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut value = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            value.extend_from_slice(&tag.to_le_bytes());
            value.extend_from_slice(&perm.to_le_bytes());
            value.extend_from_slice(&id.to_le_bytes());
        }
        value
    }

    const RW: u16 = 6;
    const R: u16 = 4;

    #[test]
    fn named_entries_grant_write_through_the_mask() {
        let base = [
            (0x01, RW, u32::MAX),
            (0x04, R, u32::MAX),
            (0x20, R, u32::MAX),
        ];
        let with = |extra: &[(u16, u16, u32)]| {
            let mut entries = base.to_vec();
            entries.extend_from_slice(extra);
            Acl::parse(&acl(&entries))
        };
        let user = with(&[(0x02, RW, 1000), (0x10, RW, u32::MAX)]);
        assert!(user.grants_named_write());
        assert!(user.write_grant(1000, &[1000], 0).is_some());
        assert!(user.write_grant(1001, &[1001], 0).is_none());
        let group = with(&[(0x08, RW, 50), (0x10, RW, u32::MAX)]);
        assert!(group.write_grant(1000, &[1000, 50], 0).is_some());
        assert!(group.write_grant(1000, &[1000], 0).is_none());
        // The mask takes write away from every named entry.
        let masked = with(&[(0x02, RW, 1000), (0x10, R, u32::MAX)]);
        assert!(!masked.grants_named_write());
        assert!(masked.write_grant(1000, &[1000], 0).is_none());
        // Read-only named entries grant nothing.
        let read_only = with(&[(0x02, R, 1000), (0x10, RW, u32::MAX)]);
        assert!(!read_only.grants_named_write());
        // The owning group's entry, for a member.
        let owning = Acl::parse(&acl(&[(0x04, RW, u32::MAX), (0x10, RW, u32::MAX)]));
        assert!(owning.write_grant(1000, &[7], 7).is_some());
        assert!(owning.write_grant(1000, &[8], 7).is_none());
    }

    #[test]
    fn malformed_acls_grant_everything() {
        for value in [
            &b""[..],
            b"\x02\x00\x00",
            b"\x01\x00\x00\x00",
            b"\x02\x00\x00\x00\x01",
        ] {
            let acl = Acl::parse(value);
            assert!(acl.grants_named_write(), "{value:?}");
            assert!(acl.write_grant(1, &[1], 1).is_some(), "{value:?}");
        }
    }
}
