//! `struct sock` member offsets from the kernel's BTF.
//!
//! The kprobes read the connection's addresses straight out of `struct
//! sock`. Rather than compile one object per kernel (or depend on CO-RE),
//! userspace looks the offsets up in /sys/kernel/btf/vmlinux and hands them
//! to the programs in their load-time config. Only the small part of the BTF
//! format needed to walk struct and union members is parsed here.
use std::{collections::HashMap, fs, io, path::Path};

use anyhow::{Context as _, anyhow, bail, ensure};
use netmon_common::config::{ContextOffsets, PROTOCOL_UNKNOWN, SockOffsets, default_offsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where the offsets came from, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsOrigin {
    Btf,
    /// No BTF, or BTF without the struct: the reason is kept for the log.
    Default(String),
}

/// Reads the offsets from `path`, falling back to the defaults when the
/// kernel has no BTF there; and the offsets that say where a connection
/// was made, each unknown (0) that BTF does not give.
pub fn offsets(path: &Path) -> (SockOffsets, OffsetsOrigin, ContextOffsets) {
    let unknown = |why: String| {
        (
            SockOffsets::default(),
            OffsetsOrigin::Default(why),
            ContextOffsets::UNKNOWN,
        )
    };
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return unknown(format!(
                "{} does not exist (kernel built without CONFIG_DEBUG_INFO_BTF)",
                path.display()
            ));
        }
        Err(err) => return unknown(format!("cannot read {}: {err}", path.display())),
    };
    let btf = match Btf::parse(&data) {
        Ok(btf) => btf,
        Err(err) => return unknown(format!("{}: {err:#}", path.display())),
    };
    let context = btf.context_offsets();
    match btf.sock_offsets() {
        Ok(offsets) => (offsets, OffsetsOrigin::Btf, context),
        Err(err) => {
            let why = format!("{}: {err:#}", path.display());
            (SockOffsets::default(), OffsetsOrigin::Default(why), context)
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
    /// Non-zero for a bitfield whose struct says so (`kind_flag`); older
    /// BTF says it with an INT type of fewer bits than its size instead.
    bitfield_size: u32,
}

#[derive(Debug)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Size in bytes for INT, STRUCT, UNION and ENUM; the type referred
    /// to for PTR, TYPEDEF and the qualifiers.
    size_or_type: u32,
    /// The bits an INT holds (its encoding's low byte); 0 for other kinds.
    int_bits: u32,
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
            let (name_off, info, size_or_type) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let mut members = Vec::new();
            let int_bits = if kind == KIND_INT {
                u32_at(at)? & 0xff
            } else {
                0
            };
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
                            bitfield_size: if kind_flag { offset >> 24 } else { 0 },
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
                size_or_type,
                int_bits,
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

    /// The INT that `id` names, through typedefs and qualifiers.
    fn int(&self, mut id: u32) -> Option<&Type> {
        // A bound, not a depth any kernel's BTF comes near.
        for _ in 0..16 {
            let ty = self.by_id(id)?;
            match ty.kind {
                KIND_INT => return Some(ty),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return None,
            }
        }
        None
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
            protocol: self.whole_u16("sock", "sk_protocol")?,
        })
    }

    fn context_offsets(&self) -> ContextOffsets {
        let net_ns = self.member_offset("net", "ns");
        let ns_inum = self.member_offset("ns_common", "inum");
        ContextOffsets {
            sk_net: self.member_offset("sock_common", "skc_net"),
            net_inum: if net_ns == 0 && ns_inum == 0 {
                0
            } else {
                net_ns + ns_inum
            },
            sk_cgroup: self.member_offset("sock", "sk_cgrp_data"),
            cgroup_kn: self.member_offset("cgroup", "kn"),
            kn_id: self.member_offset("kernfs_node", "id"),
            task_nsproxy: self.member_offset("task_struct", "nsproxy"),
            nsproxy_net: self.member_offset("nsproxy", "net_ns"),
            // From the tracepoint's format, not BTF.
            tracepoint_skaddr: 0,
            sk_cgroup_typed: u32::from(self.has_member("sock_cgroup_data", "cgroup")),
        }
    }

    /// The byte offset of `member` (through anonymous structs and unions)
    /// of `struct name`, or 0 if either is missing: a struct that moves
    /// with the kernel's configuration may lack what the programs read.
    /// Whether `struct name` has `member`, at any offset (0 included,
    /// which [`Self::member_offset`] cannot tell from absent).
    fn has_member(&self, name: &str, member: &str) -> bool {
        let Ok(ty) = self.struct_named(name) else {
            return false;
        };
        let mut members = HashMap::new();
        self.flatten(ty, 0, &mut members);
        members.contains_key(member.as_bytes())
    }

    fn member_offset(&self, name: &str, member: &str) -> u32 {
        let Ok(ty) = self.struct_named(name) else {
            return 0;
        };
        let mut members = HashMap::new();
        self.flatten(ty, 0, &mut members);
        members.get(member.as_bytes()).copied().unwrap_or(0)
    }

    /// The byte offset of `member` of `struct name` if it is a whole
    /// 16-bit integer, else [`PROTOCOL_UNKNOWN`]: before Linux 5.6,
    /// `sk_protocol` is 8 bits of a bitfield word.
    fn whole_u16(&self, name: &str, member: &str) -> anyhow::Result<u32> {
        let ty = self.struct_named(name)?;
        let found = ty
            .members
            .iter()
            .find(|m| self.name(m.name_off) == member.as_bytes());
        let whole = found.filter(|m| {
            m.bitfield_size == 0
                && m.bit_offset % 16 == 0
                && self
                    .int(m.type_id)
                    .is_some_and(|int| int.size_or_type == 2 && int.int_bits == 16)
        });
        Ok(whole.map_or(PROTOCOL_UNKNOWN, |m| m.bit_offset / 8))
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
        let (offsets, origin, context) = self::offsets(path);
        assert_eq!(origin, OffsetsOrigin::Btf);
        // Every kernel with BTF has the members that say where a
        // connection was made (skc_net is a pointer past the addresses).
        assert_eq!(context.sk_net, 48, "{context:?}");
        for offset in [
            context.net_inum,
            context.sk_cgroup,
            context.cgroup_kn,
            context.kn_id,
            context.task_nsproxy,
            context.nsproxy_net,
        ] {
            assert_ne!(offset, 0, "{context:?}");
        }
        // sk_protocol lies past sock_common, where the layout moves.
        let protocol = offsets.protocol;
        assert_eq!(
            SockOffsets {
                protocol: PROTOCOL_UNKNOWN,
                ..offsets
            },
            SockOffsets::default()
        );
        // MPTCP came with the whole field, in 5.6.
        if Path::new("/proc/sys/net/mptcp").exists() {
            assert_ne!(protocol, PROTOCOL_UNKNOWN, "sk_protocol is a whole u16");
        }
    }

    #[test]
    fn missing_btf_falls_back_to_defaults() {
        let (offsets, origin, context) = self::offsets(Path::new("/nonexistent/vmlinux"));
        assert_eq!(context, ContextOffsets::UNKNOWN);
        assert_eq!(offsets, SockOffsets::default());
        assert!(
            matches!(origin, OffsetsOrigin::Default(why) if why.contains("CONFIG_DEBUG_INFO_BTF"))
        );
    }

    /// Type ids in [`sock_btf`]'s blob, for `sk_protocol`.
    const U16: u32 = 2;
    const U32: u32 = 3;
    /// An INT of 8 bits in 4 bytes: how BTF before `kind_flag` spells a
    /// bitfield of 8 bits.
    const BITS_8: u32 = 4;

    /// BTF of a `struct sock` whose `sk_protocol` has type `type_id` at
    /// `bit_offset`, a bitfield of `bitfield_size` bits if that is not 0.
    fn sock_btf(type_id: u32, bit_offset: u32, bitfield_size: u32) -> Vec<u8> {
        let names = [
            "u16",
            "short",
            "int",
            "sock_common",
            "skc_daddr",
            "skc_dport",
            "skc_num",
            "skc_family",
            "sock",
            "__sk_common",
            "sk_protocol",
        ];
        let mut strings = vec![0];
        let mut offsets = HashMap::new();
        for name in names {
            offsets.insert(name, strings.len() as u32);
            strings.extend(name.bytes().chain([0]));
        }
        let name = |name: &str| offsets[name];
        let int = |name_off: u32, size: u32, bits: u32| [name_off, KIND_INT << 24, size, bits];
        let mut types: Vec<u32> = Vec::new();
        types.extend(int(name("short"), 2, 16)); // 1
        types.extend([name("u16"), KIND_TYPEDEF << 24, 1]); // 2: U16
        types.extend(int(name("int"), 4, 32)); // 3: U32
        types.extend(int(name("int"), 4, 8)); // 4: BITS_8
        types.extend([name("sock_common"), KIND_STRUCT << 24 | 4, 136]); // 5
        for (member, type_id, bits) in [
            ("skc_daddr", U32, 0),
            ("skc_dport", 1, 96),
            ("skc_num", 1, 112),
            ("skc_family", 1, 128),
        ] {
            types.extend([name(member), type_id, bits]);
        }
        let kind_flag = u32::from(bitfield_size != 0) << 31;
        types.extend([name("sock"), kind_flag | KIND_STRUCT << 24 | 2, 1024]); // 6
        types.extend([name("__sk_common"), 5, 0]);
        types.extend([
            name("sk_protocol"),
            type_id,
            bitfield_size << 24 | bit_offset,
        ]);
        let types: Vec<u8> = types.iter().flat_map(|word| word.to_le_bytes()).collect();
        let header = [
            u32::from(BTF_MAGIC) | 1 << 16,
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ];
        let mut blob: Vec<u8> = header.iter().flat_map(|word| word.to_le_bytes()).collect();
        blob.extend(types);
        blob.extend(strings);
        blob
    }

    fn protocol_offset(blob: &[u8]) -> u32 {
        Btf::parse(blob).unwrap().sock_offsets().unwrap().protocol
    }

    #[test]
    fn sk_protocol_is_read_only_where_it_is_a_whole_u16() {
        assert_eq!(protocol_offset(&sock_btf(U16, 516 * 8, 0)), 516);
        // Before 5.6, `unsigned int ... sk_protocol:8` in a word of flags,
        // 8 bits in: a u16 read there would take in sk_type's low byte.
        assert_eq!(
            protocol_offset(&sock_btf(U32, 512 * 8 + 8, 8)),
            PROTOCOL_UNKNOWN
        );
        assert_eq!(
            protocol_offset(&sock_btf(BITS_8, 512 * 8 + 8, 0)),
            PROTOCOL_UNKNOWN
        );
        assert_eq!(
            protocol_offset(&sock_btf(U32, 512 * 8, 0)),
            PROTOCOL_UNKNOWN
        );
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
    }
}
