//! `struct sock_common` member offsets from the kernel's BTF.
//!
//! The kprobes read the connection's addresses straight out of `struct
//! sock`. Rather than compile one object per kernel (or depend on CO-RE),
//! userspace looks the offsets up in /sys/kernel/btf/vmlinux and hands them
//! to the programs in their load-time config. Only the small part of the BTF
//! format needed to walk struct and union members is parsed here.
use std::{collections::HashMap, fs, io, path::Path};

use anyhow::{Context as _, anyhow, bail, ensure};
use netmon_common::config::{SockOffsets, default_offsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the offsets came from, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsOrigin {
    Btf,
    /// No BTF, or BTF without the struct: the reason is kept for the log.
    Default(String),
}

/// Reads the offsets from `path`, falling back to the defaults when the
/// kernel has no BTF there.
pub fn sock_offsets(path: &Path) -> (SockOffsets, OffsetsOrigin) {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let why = format!(
                "{} does not exist (kernel built without CONFIG_DEBUG_INFO_BTF)",
                path.display()
            );
            return (SockOffsets::default(), OffsetsOrigin::Default(why));
        }
        Err(err) => {
            let why = format!("cannot read {}: {err}", path.display());
            return (SockOffsets::default(), OffsetsOrigin::Default(why));
        }
    };
    match Btf::parse(&data).and_then(|btf| btf.sock_offsets()) {
        Ok(offsets) => (offsets, OffsetsOrigin::Btf),
        Err(err) => {
            let why = format!("{}: {err:#}", path.display());
            (SockOffsets::default(), OffsetsOrigin::Default(why))
        }
    }
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset within the enclosing struct or union.
    bit_offset: u32,
}

#[derive(Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Members of a struct or union; empty for other kinds.
    members: Vec<Member>,
}

/// The types of a BTF blob, only as far as structs and unions go.
struct Btf<'a> {
    strings: &'a [u8],
    /// Index `id - 1`: type ids start at 1.
    types: Vec<Type>,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> anyhow::Result<Self> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| anyhow!("truncated at byte {at}"))
        };
        ensure!(
            u16_at(0) == Some(BTF_MAGIC),
            "not BTF (bad magic; big-endian BTF is not supported)"
        );
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| anyhow!("string section out of bounds"))?;
        let mut types = Vec::new();
        let mut at = hdr_len + type_off;
        let end = at + type_len;
        while at < end {
            let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let trailing = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(m + 8)?;
                        members.push(Member {
                            name_off: u32_at(m)?,
                            type_id: u32_at(m + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                other => bail!("unknown BTF kind {other} at byte {at}"),
            };
            at += trailing;
            types.push(Type {
                name_off,
                kind,
                members,
            });
        }
        Ok(Self { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn by_id(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    fn struct_named(&self, name: &str) -> anyhow::Result<&Type> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| anyhow!("no struct {name} in BTF"))
    }

    /// Every named member reachable from `ty`, through anonymous structs and
    /// unions, with its byte offset from the start of `ty`.
    fn flatten(&self, ty: &Type, base_bits: u32, out: &mut HashMap<Vec<u8>, u32>) {
        for member in &ty.members {
            let bits = base_bits + member.bit_offset;
            let name = self.name(member.name_off);
            if name.is_empty() {
                if let Some(inner) = self.by_id(member.type_id)
                    && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                {
                    self.flatten(inner, bits, out);
                }
            } else {
                out.entry(name.to_vec()).or_insert(bits / 8);
            }
        }
    }

    fn sock_offsets(&self) -> anyhow::Result<SockOffsets> {
        let sock_common = self.struct_named("sock_common")?;
        let mut members = HashMap::new();
        self.flatten(sock_common, 0, &mut members);
        let get = |name: &str| {
            members
                .get(name.as_bytes())
                .copied()
                .with_context(|| format!("struct sock_common has no member {name}"))
        };
        Ok(SockOffsets {
            family: get("skc_family")?,
            daddr: get("skc_daddr")?,
            dport: get("skc_dport")?,
            num: get("skc_num")?,
            // Kernels without IPv6 have no v6 address; no socket can then be
            // AF_INET6 and the program never reads it.
            v6_daddr: get("skc_v6_daddr").unwrap_or(default_offsets::SK_V6_DADDR),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_matches_the_long_stable_layout() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX_BTF} does not exist on this kernel");
            return;
        }
        let (offsets, origin) = sock_offsets(path);
        assert_eq!(origin, OffsetsOrigin::Btf);
        assert_eq!(offsets, SockOffsets::default());
    }

    #[test]
    fn missing_btf_falls_back_to_defaults() {
        let (offsets, origin) = sock_offsets(Path::new("/nonexistent/vmlinux"));
        assert_eq!(offsets, SockOffsets::default());
        assert!(
            matches!(origin, OffsetsOrigin::Default(why) if why.contains("CONFIG_DEBUG_INFO_BTF"))
        );
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
    }
}
