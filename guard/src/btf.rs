//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust BPF programs have no CO-RE relocations, so the agent looks the offsets up here and
//! hands them to the programs as globals: one object works on every kernel. Only the little
//! of the format needed for member offsets is read (aya's `Btf` keeps its type table private).

use std::path::Path;

/// Errors reading kernel BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("kernel struct {0} member {1} is a bitfield")]
    Bitfield(String, String),
    #[error("kernel struct {0} member {1} is {2} bytes, expected {3}")]
    UnexpectedSize(String, String, u32, u32),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: u32,
    /// `size` for sized kinds, `type` for references.
    size_or_type: u32,
    /// Where the kind-specific data (members...) starts in `Btf::types`.
    extra: usize,
}

/// A parsed BTF blob (types and strings only).
pub struct Btf {
    data: Vec<u8>,
    strings_start: usize,
    strings_len: usize,
    /// Index `id` holds type `id`; index 0 is `void`.
    types: Vec<Type>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_kernel() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let u16_at = |d: &[u8], o: usize| d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(&data, 0) != Some(0xeb9f) {
            return Err(BtfError::Malformed("bad magic (or big-endian BTF)"));
        }
        let hdr_len = read_u32(&data, 4)? as usize;
        let type_off = read_u32(&data, 8)? as usize;
        let type_len = read_u32(&data, 12)? as usize;
        let str_off = read_u32(&data, 16)? as usize;
        let str_len = read_u32(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings_start = hdr_len + str_off;
        if types_end > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Malformed("sections out of bounds"));
        }
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = types_start;
        while at < types_end {
            let name_off = read_u32(&data, at)?;
            let info = read_u32(&data, at + 4)?;
            let size_or_type = read_u32(&data, at + 8)?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let extra = at + 12;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                0..=19 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                vlen,
                size_or_type,
                extra,
            });
            at = extra + extra_len;
        }
        Ok(Btf {
            data,
            strings_start,
            strings_len: str_len,
            types,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings_start + offset as usize;
        let end = self.strings_start + self.strings_len;
        let Some(rest) = self.data.get(start..end) else {
            return b"";
        };
        let len = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..len]
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let ty = self.resolve(id)?;
        match ty.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Some(ty.size_or_type),
            KIND_PTR => Some(8),
            // struct btf_array { type, index_type, nelems } (`bpf_map.name`, char[16]).
            KIND_ARRAY => {
                let element = read_u32(&self.data, ty.extra).ok()?;
                let count = read_u32(&self.data, ty.extra + 8).ok()?;
                self.size_of(element)?.checked_mul(count)
            }
            _ => None,
        }
    }

    /// Finds `member` in `ty`, looking inside anonymous struct/union members (as in
    /// `mm_struct` and `file` on recent kernels). Returns (bit offset, bitfield size in
    /// bits or 0 for a plain member, type id).
    fn find_member(&self, ty: &Type, member: &str, depth: u32) -> Option<(u32, u32, u32)> {
        if depth > 8 {
            return None;
        }
        for i in 0..ty.vlen as usize {
            let at = ty.extra + 12 * i;
            let name_off = read_u32(&self.data, at).ok()?;
            let member_type = read_u32(&self.data, at + 4).ok()?;
            let offset = read_u32(&self.data, at + 8).ok()?;
            // With kind_flag, the top 8 bits are a bitfield size.
            let (bit_offset, bits) = if ty.kind_flag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            let name = self.name(name_off);
            if name == member.as_bytes() {
                return Some((bit_offset, bits, member_type));
            }
            if name.is_empty()
                && bits == 0
                && let Some(inner) = self.resolve(member_type)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some((inner_offset, inner_bits, id)) =
                    self.find_member(inner, member, depth + 1)
            {
                return Some((bit_offset + inner_offset, inner_bits, id));
            }
        }
        None
    }

    fn find_struct(&self, strukt: &str) -> Result<&Type, BtfError> {
        self.types
            .iter()
            .find(|t| {
                t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == strukt.as_bytes()
            })
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))
    }

    /// The byte holding the one-bit bitfield `strukt.member`, and the bit's mask in it
    /// (little-endian bit numbering, as on x86-64 and arm64).
    pub fn member_bit(&self, strukt: &str, member: &str) -> Result<(u32, u8), BtfError> {
        let ty = self.find_struct(strukt)?;
        let (bit_offset, bits, id) = self
            .find_member(ty, member, 0)
            .ok_or_else(|| BtfError::NoMember(strukt.to_owned(), member.to_owned()))?;
        // A plain one-byte member (bool) would do as well, but kernels declare these as
        // `unsigned int x:1`.
        let bits = if bits == 0 {
            self.size_of(id).unwrap_or(0) * 8
        } else {
            bits
        };
        if bits != 1 {
            return Err(BtfError::UnexpectedSize(
                strukt.to_owned(),
                member.to_owned(),
                bits,
                1,
            ));
        }
        Ok((bit_offset / 8, 1u8 << (bit_offset % 8)))
    }

    /// Size in bytes of `strukt`.
    pub fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        let ty = self.find_struct(strukt)?;
        Ok(ty.size_or_type)
    }

    /// Byte offset of `strukt.member`, checking the member's size.
    pub fn member_offset(&self, strukt: &str, member: &str, size: u32) -> Result<u32, BtfError> {
        self.sized_member(strukt, member, size, |actual| actual == size)
    }

    /// The byte offset of array member `strukt.member` whose elements are `element` bytes
    /// (its length differs between kernels: `mm_struct.saved_auxv`).
    pub fn array_member_offset(
        &self,
        strukt: &str,
        member: &str,
        element: u32,
    ) -> Result<u32, BtfError> {
        self.sized_member(strukt, member, element, |actual| {
            actual >= element && actual % element == 0
        })
    }

    /// Byte offset of a byte-aligned, non-bitfield member whose size `fits`.
    fn sized_member(
        &self,
        strukt: &str,
        member: &str,
        expected: u32,
        fits: impl Fn(u32) -> bool,
    ) -> Result<u32, BtfError> {
        let ty = self.find_struct(strukt)?;
        let (bit_offset, bits, id) = self
            .find_member(ty, member, 0)
            .ok_or_else(|| BtfError::NoMember(strukt.to_owned(), member.to_owned()))?;
        if bits != 0 || bit_offset % 8 != 0 {
            return Err(BtfError::Bitfield(strukt.to_owned(), member.to_owned()));
        }
        match self.size_of(id) {
            Some(actual) if fits(actual) => Ok(bit_offset / 8),
            actual => Err(BtfError::UnexpectedSize(
                strukt.to_owned(),
                member.to_owned(),
                actual.unwrap_or(0),
                expected,
            )),
        }
    }

    #[cfg(test)]
    fn type_count(&self) -> usize {
        self.types.len()
    }
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_offsets_when_btf_is_present() {
        let Ok(btf) = Btf::from_kernel() else {
            eprintln!("no kernel BTF here; skipped");
            return;
        };
        assert!(btf.type_count() > 1000);
        // Members at offset 0 would make a lookup bug invisible: check a few known shapes.
        let arg_start = btf.member_offset("mm_struct", "arg_start", 8).unwrap();
        let arg_end = btf.member_offset("mm_struct", "arg_end", 8).unwrap();
        assert_eq!(arg_end, arg_start + 8);
        btf.member_offset("linux_binprm", "file", 8).unwrap();
        btf.member_offset("super_block", "s_dev", 4).unwrap();
        // Kernels before 6.14 have no is_check; where it exists it is a one-bit field.
        match btf.member_bit("linux_binprm", "is_check") {
            Ok((byte, mask)) => {
                assert!(mask.is_power_of_two());
                assert!(byte > 0);
            }
            Err(BtfError::NoMember(..)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(btf.member_bit("linux_binprm", "file").is_err());
        assert!(matches!(
            btf.member_offset("linux_binprm", "nope", 8),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member_offset("super_block", "s_dev", 8),
            Err(BtfError::UnexpectedSize(..))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![0; 32]).is_err());
        assert!(Btf::parse(vec![]).is_err());
    }
}
