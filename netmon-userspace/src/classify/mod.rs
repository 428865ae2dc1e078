//! What kind of address a peer is: public, private, or one of the
//! special-purpose ranges that are neither.
//!
//! An allow list is a decision about each address, and "not private" does
//! not mean "public": a carrier-grade NAT address is someone's internal
//! network, and a documentation address in the set means a
//! misconfiguration. [`SPECIAL`] is the one table of those ranges, of both
//! families; every report and filter classifies through it.
mod cidr;
mod special;

use std::{
    cmp::Reverse,
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
    sync::LazyLock,
};

use serde::{Serialize, Serializer};

pub use self::{
    cidr::Cidr,
    special::{SPECIAL, Special},
};

/// The kinds of address a report tells apart. Declared in [`Class::ALL`]'s
/// order, which metrics index by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    ThisNetwork,
    Unspecified,
    Private,
    Shared,
    Loopback,
    LinkLocal,
    IetfProtocol,
    Anycast,
    Documentation,
    SixToFourRelay,
    SixToFour,
    Teredo,
    Translation,
    Ipv4Mapped,
    Benchmarking,
    Orchid,
    DiscardOnly,
    Dummy,
    Srv6,
    Multicast,
    Reserved,
    Broadcast,
    /// Every address in none of the [`SPECIAL`] blocks.
    Public,
}

impl Class {
    /// Every class, in the order reports list them.
    pub const ALL: [Self; 23] = [
        Self::ThisNetwork,
        Self::Unspecified,
        Self::Private,
        Self::Shared,
        Self::Loopback,
        Self::LinkLocal,
        Self::IetfProtocol,
        Self::Anycast,
        Self::Documentation,
        Self::SixToFourRelay,
        Self::SixToFour,
        Self::Teredo,
        Self::Translation,
        Self::Ipv4Mapped,
        Self::Benchmarking,
        Self::Orchid,
        Self::DiscardOnly,
        Self::Dummy,
        Self::Srv6,
        Self::Multicast,
        Self::Reserved,
        Self::Broadcast,
        Self::Public,
    ];

    /// The name used on the command line and in every output format.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ThisNetwork => "this-network",
            Self::Unspecified => "unspecified",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::IetfProtocol => "ietf-protocol",
            Self::Anycast => "anycast",
            Self::Documentation => "documentation",
            Self::SixToFourRelay => "6to4-relay",
            Self::SixToFour => "6to4",
            Self::Teredo => "teredo",
            Self::Translation => "translation",
            Self::Ipv4Mapped => "ipv4-mapped",
            Self::Benchmarking => "benchmarking",
            Self::Orchid => "orchid",
            Self::DiscardOnly => "discard-only",
            Self::Dummy => "dummy",
            Self::Srv6 => "srv6",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::Broadcast => "broadcast",
            Self::Public => "public",
        }
    }

    /// Whether no one host owns an address of this class: loopback,
    /// 0.0.0.0/8 and `::`, multicast and broadcast addresses. Neither a
    /// host's own address nor a peer a firewall chain could filter.
    pub const fn names_no_host(self) -> bool {
        matches!(
            self,
            Self::ThisNetwork
                | Self::Unspecified
                | Self::Loopback
                | Self::Multicast
                | Self::Broadcast
        )
    }

    /// The class of `addr`: that of the most specific [`SPECIAL`] block
    /// holding it, or public. An IPv4-mapped address is classed as such,
    /// not as the IPv4 address it maps: every peer is normalised to IPv4
    /// before it is stored, so none reaches a report.
    pub fn of(addr: IpAddr) -> Self {
        // Most specific first, so the first block holding `addr` is the
        // answer: every new peer is classed (metrics), so this is on the
        // path of a storm of new peers. Blocks of one prefix length are
        // disjoint, so their order among themselves does not matter. An
        // IPv4 address looks only at the blocks that meet its /8.
        static BY_PREFIX: LazyLock<Vec<Special>> = LazyLock::new(|| {
            let mut table = SPECIAL.to_vec();
            table.sort_by_key(|special| Reverse(special.block.prefix()));
            table
        });
        static BY_OCTET: LazyLock<Vec<Vec<Special>>> = LazyLock::new(|| {
            (0..=255u8)
                .map(|octet| {
                    let slash8 = Cidr::v4(Ipv4Addr::new(octet, 0, 0, 0), 8);
                    let first = IpAddr::V4(Ipv4Addr::new(octet, 0, 0, 0));
                    BY_PREFIX
                        .iter()
                        .filter(|special| {
                            special.block.contains(first) || slash8.contains(special.block.first())
                        })
                        .copied()
                        .collect()
                })
                .collect()
        });
        let table = match addr {
            IpAddr::V4(v4) => &BY_OCTET[usize::from(v4.octets()[0])],
            IpAddr::V6(_) => &*BY_PREFIX,
        };
        table
            .iter()
            .find(|special| special.block.contains(addr))
            .map_or(Self::Public, |special| special.class)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|class| class.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown class {name:?} (one of {})", names.join(", "))
            })
    }
}

impl Serialize for Class {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An address family, as `--family 4|6` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// An IPv4-mapped address counts as IPv6 here; peers never are one,
    /// since they are stored as the IPv4 address they map.
    pub const fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The name used on the command line: `4` or `6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "4",
            Self::V6 => "6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// An address as (is IPv4, its bits), and back.
    fn bits(addr: IpAddr) -> (bool, u128) {
        match addr {
            IpAddr::V4(addr) => (true, u128::from(addr.to_bits())),
            IpAddr::V6(addr) => (false, addr.to_bits()),
        }
    }

    fn addr(v4: bool, bits: u128) -> IpAddr {
        if v4 {
            IpAddr::V4(Ipv4Addr::from_bits(u32::try_from(bits).unwrap()))
        } else {
            IpAddr::V6(Ipv6Addr::from_bits(bits))
        }
    }

    /// The first and last address of `special`'s block, worked out as a
    /// count of addresses rather than with masks.
    fn range(special: &Special) -> (bool, u128, u128) {
        let (v4, first) = bits(special.block.first());
        let width = if v4 { 32 } else { 128 };
        let size = 1u128.checked_shl(width - u32::from(special.block.prefix()));
        (v4, first, size.map_or(u128::MAX, |size| first + (size - 1)))
    }

    /// What `Class::of` must say, worked out another way: as ranges of
    /// integers rather than masks, the narrowest range winning.
    fn reference(target: IpAddr) -> Class {
        let (family, target) = bits(target);
        SPECIAL
            .iter()
            .map(range)
            .zip(SPECIAL.iter().map(|s| s.class))
            .filter(|&((v4, first, last), _)| v4 == family && (first..=last).contains(&target))
            .min_by_key(|&((_, first, last), _)| last - first)
            .map_or(Class::Public, |(_, class)| class)
    }

    #[test]
    fn every_block_boundary() {
        for special in SPECIAL {
            let (v4, first, last) = range(&special);
            assert_eq!(
                (addr(v4, first), addr(v4, last)),
                (special.block.first(), special.block.last()),
                "{}",
                special.block
            );
            let top = if v4 { u128::from(u32::MAX) } else { u128::MAX };
            let edges = [
                first.checked_sub(1),
                Some(first),
                Some(last),
                last.checked_add(1).filter(|&next| next <= top),
            ];
            for edge in edges.into_iter().flatten().map(|bits| addr(v4, bits)) {
                assert_eq!(
                    Class::of(edge),
                    reference(edge),
                    "{edge} at {}",
                    special.block
                );
            }
            // The block's own edges are its class unless a narrower block
            // nests there (255.255.255.255 in 240.0.0.0/4, Teredo's
            // 2001::/32 at the start of 2001::/23).
            let nested = |edge| {
                SPECIAL
                    .iter()
                    .any(|s| s.block.prefix() > special.block.prefix() && s.block.contains(edge))
            };
            for edge in [first, last].map(|bits| addr(v4, bits)) {
                assert!(
                    nested(edge) || Class::of(edge) == special.class,
                    "{edge} in {}",
                    special.block
                );
            }
        }
    }

    fn check(cases: &[(&str, Class)]) {
        for &(text, class) in cases {
            assert_eq!(Class::of(text.parse().unwrap()), class, "{text}");
        }
    }

    /// The neighbours spelled out, so a wrong row in the table cannot make
    /// the generic test above agree with itself.
    #[test]
    fn known_ipv4_addresses() {
        check(&[
            ("0.0.0.0", Class::ThisNetwork),
            ("0.255.255.255", Class::ThisNetwork),
            ("1.0.0.0", Class::Public),
            ("9.255.255.255", Class::Public),
            ("10.0.0.0", Class::Private),
            ("10.0.255.1", Class::Private),
            ("10.255.255.255", Class::Private),
            ("11.0.0.0", Class::Public),
            ("100.63.255.255", Class::Public),
            ("100.64.0.0", Class::Shared),
            ("100.127.255.255", Class::Shared),
            ("100.128.0.0", Class::Public),
            ("126.255.255.255", Class::Public),
            ("127.0.0.0", Class::Loopback),
            ("127.255.255.255", Class::Loopback),
            ("128.0.0.0", Class::Public),
            ("169.253.255.255", Class::Public),
            ("169.254.0.0", Class::LinkLocal),
            ("169.254.255.255", Class::LinkLocal),
            ("169.255.0.0", Class::Public),
            ("172.15.255.255", Class::Public),
            ("172.16.0.0", Class::Private),
            ("172.31.255.255", Class::Private),
            ("172.32.0.0", Class::Public),
            ("191.255.255.255", Class::Public),
            ("192.0.0.0", Class::IetfProtocol),
            ("192.0.0.255", Class::IetfProtocol),
            ("192.0.1.0", Class::Public),
            ("192.0.1.255", Class::Public),
            ("192.0.2.0", Class::Documentation),
            ("192.0.2.255", Class::Documentation),
            ("192.0.3.0", Class::Public),
            ("192.88.98.255", Class::Public),
            ("192.88.99.0", Class::SixToFourRelay),
            ("192.88.99.255", Class::SixToFourRelay),
            ("192.88.100.0", Class::Public),
            ("192.167.255.255", Class::Public),
            ("192.168.0.0", Class::Private),
            ("192.168.255.255", Class::Private),
            ("192.169.0.0", Class::Public),
            ("198.17.255.255", Class::Public),
            ("198.18.0.0", Class::Benchmarking),
            ("198.19.255.255", Class::Benchmarking),
            ("198.20.0.0", Class::Public),
            ("198.51.99.255", Class::Public),
            ("198.51.100.0", Class::Documentation),
            ("198.51.100.255", Class::Documentation),
            ("198.51.101.0", Class::Public),
            ("203.0.112.255", Class::Public),
            ("203.0.113.0", Class::Documentation),
            ("203.0.113.255", Class::Documentation),
            ("203.0.114.0", Class::Public),
            ("223.255.255.255", Class::Public),
            ("224.0.0.0", Class::Multicast),
            ("239.255.255.255", Class::Multicast),
            ("240.0.0.0", Class::Reserved),
            ("255.255.255.254", Class::Reserved),
            ("255.255.255.255", Class::Broadcast),
            ("8.8.255.255", Class::Public),
        ]);
    }

    /// IPv6's, first and last of each block and a neighbour outside where
    /// one differs; nested blocks take the inner class at their edges.
    #[test]
    fn known_ipv6_addresses() {
        check(&[
            ("::", Class::Unspecified),
            ("::1", Class::Loopback),
            ("::2", Class::Public),
            ("::fffe:ffff:ffff", Class::Public),
            ("::ffff:0:0", Class::Ipv4Mapped),
            ("::ffff:127.0.0.1", Class::Ipv4Mapped),
            ("::ffff:ffff:ffff", Class::Ipv4Mapped),
            ("::1:0:0:0", Class::Public),
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("64:ff9b::", Class::Translation),
            ("64:ff9b::ffff:ffff", Class::Translation),
            ("64:ff9b::1:0:0", Class::Public),
            ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("64:ff9b:1::", Class::Translation),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Class::Translation),
            ("64:ff9b:2::", Class::Public),
            ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("100::", Class::DiscardOnly),
            ("100::ffff:ffff:ffff:ffff", Class::DiscardOnly),
            ("100:0:0:1::", Class::Dummy),
            ("100:0:0:1:ffff:ffff:ffff:ffff", Class::Dummy),
            ("100:0:0:2::", Class::Public),
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("2001::", Class::Teredo),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Class::Teredo),
            ("2001:1::", Class::IetfProtocol),
            ("2001:1::1", Class::Anycast),
            ("2001:1::2", Class::Anycast),
            ("2001:1::3", Class::Anycast),
            ("2001:1::4", Class::IetfProtocol),
            ("2001:2::", Class::Benchmarking),
            ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Class::Benchmarking),
            ("2001:2:1::", Class::IetfProtocol),
            ("2001:3::", Class::Anycast),
            ("2001:3:ffff:ffff:ffff:ffff:ffff:ffff", Class::Anycast),
            ("2001:4:111:ffff:ffff:ffff:ffff:ffff", Class::IetfProtocol),
            ("2001:4:112::", Class::Anycast),
            ("2001:4:112:ffff:ffff:ffff:ffff:ffff", Class::Anycast),
            ("2001:4:113::", Class::IetfProtocol),
            ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", Class::IetfProtocol),
            ("2001:10::", Class::Orchid),
            ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Class::Orchid),
            ("2001:20::", Class::Orchid),
            ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Class::Orchid),
            ("2001:30::", Class::Orchid),
            ("2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", Class::Orchid),
            ("2001:40::", Class::IetfProtocol),
            (
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                Class::IetfProtocol,
            ),
            ("2001:200::", Class::Public),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("2001:db8::", Class::Documentation),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Class::Documentation,
            ),
            ("2001:db9::", Class::Public),
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("2002::", Class::SixToFour),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::SixToFour),
            ("2003::", Class::Public),
            ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("2620:4f:8000::", Class::Anycast),
            ("2620:4f:8000:ffff:ffff:ffff:ffff:ffff", Class::Anycast),
            ("2620:4f:8001::", Class::Public),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("3fff::", Class::Documentation),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Class::Documentation,
            ),
            ("3fff:1000::", Class::Public),
            ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("5f00::", Class::Srv6),
            ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Srv6),
            ("5f01::", Class::Public),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("fc00::", Class::Private),
            ("fd12:3456::1", Class::Private),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Private),
            ("fe00::", Class::Public),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("fe80::", Class::LinkLocal),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::LinkLocal),
            ("fec0::", Class::Public),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Public),
            ("ff00::", Class::Multicast),
            ("ff02::1", Class::Multicast),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Class::Multicast),
            ("2606:4700:4700::1111", Class::Public),
        ]);
    }

    #[test]
    fn names_round_trip_and_are_distinct() {
        for class in Class::ALL {
            assert_eq!(class.as_str().parse::<Class>(), Ok(class));
        }
        let err = "privat".parse::<Class>().unwrap_err();
        assert!(
            err.contains("\"privat\"") && err.contains("6to4-relay"),
            "{err}"
        );
    }

    /// The class table in docs/operating.md says what [`SPECIAL`] does.
    #[test]
    fn the_manual_lists_every_block() {
        let manual = include_str!("../../../docs/operating.md");
        let table = manual
            .lines()
            .skip_while(|line| !line.starts_with("| Class | IPv4 | IPv6 |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'));
        let mut documented = std::collections::BTreeSet::new();
        for row in table {
            let cells: Vec<_> = row.split('|').map(str::trim).collect();
            let class: Class = cells[1].trim_matches('`').parse().unwrap();
            for block in cells[2..4].iter().flat_map(|cell| cell.split(", ")) {
                if let Some((network, prefix)) = block.split_once('/') {
                    let network: IpAddr = network.parse().unwrap();
                    documented.insert((network, prefix.parse::<u8>().unwrap(), class));
                }
            }
        }
        let special: std::collections::BTreeSet<_> = SPECIAL
            .iter()
            .map(|s| (s.block.first(), s.block.prefix(), s.class))
            .collect();
        assert_eq!(documented, special);
    }

    #[test]
    fn all_is_in_declaration_order() {
        for (index, class) in Class::ALL.into_iter().enumerate() {
            assert_eq!(class as usize, index, "{class}");
        }
    }

    #[test]
    fn every_class_but_public_has_a_block() {
        for class in Class::ALL {
            let blocks = SPECIAL.iter().filter(|s| s.class == class).count();
            assert_eq!(blocks == 0, class == Class::Public, "{class}");
        }
    }
}
