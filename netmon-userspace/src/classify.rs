//! What kind of address a peer is: public, private, or one of the
//! special-purpose ranges that are neither.
//!
//! An allow list is a decision about each address, and "not private" does
//! not mean "public": a carrier-grade NAT address is someone's internal
//! network, and a documentation address in the set means a
//! misconfiguration. [`SPECIAL`] is the one table of those ranges; every
//! report and filter classifies through it.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use serde::{Serialize, Serializer};

/// An IPv4 network: an address whose host bits are zero, and a prefix
/// length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    /// Panics when `prefix` exceeds 32 or `network` has host bits set; in
    /// a `const` such as [`SPECIAL`] that is a compile error.
    pub const fn new(network: Ipv4Addr, prefix: u8) -> Self {
        assert!(prefix <= 32, "prefix longer than 32 bits");
        let network = network.to_bits();
        assert!(network & !mask(prefix) == 0, "host bits set in a network");
        Self { network, prefix }
    }

    pub const fn prefix(self) -> u8 {
        self.prefix
    }

    pub const fn first(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network)
    }

    /// Reports and rules only need a block's start; tests check its end.
    #[cfg(test)]
    pub const fn last(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.network | !mask(self.prefix))
    }

    pub const fn contains(self, addr: Ipv4Addr) -> bool {
        addr.to_bits() & mask(self.prefix) == self.network
    }
}

/// The network bits of a `prefix`-long prefix.
const fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        _ => u32::MAX << (32 - prefix),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.first(), self.prefix)
    }
}

/// The kinds of address a report tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    ThisNetwork,
    Private,
    Shared,
    Loopback,
    LinkLocal,
    IetfProtocol,
    Documentation,
    SixToFourRelay,
    Benchmarking,
    Multicast,
    Reserved,
    Broadcast,
    /// Every address in none of the [`SPECIAL`] blocks.
    Public,
}

impl Class {
    /// Every class, in the order reports list them.
    pub const ALL: [Self; 13] = [
        Self::ThisNetwork,
        Self::Private,
        Self::Shared,
        Self::Loopback,
        Self::LinkLocal,
        Self::IetfProtocol,
        Self::Documentation,
        Self::SixToFourRelay,
        Self::Benchmarking,
        Self::Multicast,
        Self::Reserved,
        Self::Broadcast,
        Self::Public,
    ];

    /// The name used on the command line and in every output format.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ThisNetwork => "this-network",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::IetfProtocol => "ietf-protocol",
            Self::Documentation => "documentation",
            Self::SixToFourRelay => "6to4-relay",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::Broadcast => "broadcast",
            Self::Public => "public",
        }
    }

    /// The class of `addr`: that of the most specific [`SPECIAL`] block
    /// holding it, or public.
    pub fn of(addr: IpAddr) -> Self {
        let IpAddr::V4(addr) = addr else {
            return Self::Public;
        };
        SPECIAL
            .iter()
            .filter(|special| special.block.contains(addr))
            .max_by_key(|special| special.block.prefix())
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

/// One row of [`SPECIAL`].
#[derive(Clone, Copy, Debug)]
pub struct Special {
    pub block: Cidr,
    pub class: Class,
    /// The RFC that sets the block aside.
    pub rfc: &'static str,
}

const fn special(network: [u8; 4], prefix: u8, class: Class, rfc: &'static str) -> Special {
    let [a, b, c, d] = network;
    Special {
        block: Cidr::new(Ipv4Addr::new(a, b, c, d), prefix),
        class,
        rfc,
    }
}

/// The special-purpose IPv4 blocks (after IANA's registry), each with the
/// RFC that reserves it. Where blocks nest, the longer prefix wins
/// (255.255.255.255 is broadcast although 240.0.0.0/4 holds it).
pub const SPECIAL: [Special; 16] = [
    special([0, 0, 0, 0], 8, Class::ThisNetwork, "RFC 791"),
    special([10, 0, 0, 0], 8, Class::Private, "RFC 1918"),
    special([100, 64, 0, 0], 10, Class::Shared, "RFC 6598"),
    special([127, 0, 0, 0], 8, Class::Loopback, "RFC 1122"),
    special([169, 254, 0, 0], 16, Class::LinkLocal, "RFC 3927"),
    special([172, 16, 0, 0], 12, Class::Private, "RFC 1918"),
    special([192, 0, 0, 0], 24, Class::IetfProtocol, "RFC 6890"),
    special([192, 0, 2, 0], 24, Class::Documentation, "RFC 5737"),
    special([192, 88, 99, 0], 24, Class::SixToFourRelay, "RFC 7526"),
    special([192, 168, 0, 0], 16, Class::Private, "RFC 1918"),
    special([198, 18, 0, 0], 15, Class::Benchmarking, "RFC 2544"),
    special([198, 51, 100, 0], 24, Class::Documentation, "RFC 5737"),
    special([203, 0, 113, 0], 24, Class::Documentation, "RFC 5737"),
    special([224, 0, 0, 0], 4, Class::Multicast, "RFC 5771"),
    special([240, 0, 0, 0], 4, Class::Reserved, "RFC 1112"),
    special([255, 255, 255, 255], 32, Class::Broadcast, "RFC 919"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(bits: u32) -> Ipv4Addr {
        Ipv4Addr::from_bits(bits)
    }

    /// What `Class::of` must say, worked out another way: as ranges of
    /// integers rather than masks, the narrowest range winning.
    fn reference(target: Ipv4Addr) -> Class {
        let target = u64::from(target.to_bits());
        SPECIAL
            .iter()
            .map(|s| {
                let first = u64::from(s.block.first().to_bits());
                (first, first + (1 << (32 - s.block.prefix())) - 1, s.class)
            })
            .filter(|&(first, last, _)| (first..=last).contains(&target))
            .min_by_key(|&(first, last, _)| last - first)
            .map_or(Class::Public, |(.., class)| class)
    }

    #[test]
    fn every_block_boundary() {
        for special in SPECIAL {
            let first = special.block.first().to_bits();
            let last = special.block.last().to_bits();
            let edges = [
                first.checked_sub(1),
                Some(first),
                Some(last),
                last.checked_add(1),
            ];
            for edge in edges.into_iter().flatten().map(addr) {
                assert_eq!(
                    Class::of(edge.into()),
                    reference(edge),
                    "{edge} at {}",
                    special.block
                );
            }
            // The block's own edges are its class unless a narrower block
            // nests there (255.255.255.255 in 240.0.0.0/4).
            let nested = |edge| {
                SPECIAL
                    .iter()
                    .any(|s| s.block.prefix() > special.block.prefix() && s.block.contains(edge))
            };
            for edge in [first, last].map(addr) {
                assert!(
                    nested(edge) || Class::of(edge.into()) == special.class,
                    "{edge} in {}",
                    special.block
                );
            }
        }
    }

    /// The neighbours spelled out, so a wrong row in the table cannot make
    /// the generic test above agree with itself.
    #[test]
    fn known_addresses() {
        for (text, class) in [
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
        ] {
            assert_eq!(Class::of(text.parse().unwrap()), class, "{text}");
        }
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

    #[test]
    fn every_class_but_public_has_a_block() {
        for class in Class::ALL {
            let blocks = SPECIAL.iter().filter(|s| s.class == class).count();
            assert_eq!(blocks == 0, class == Class::Public, "{class}");
        }
    }

    #[test]
    fn cidr_bounds() {
        let all = Cidr::new(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!((all.first(), all.last()), (addr(0), addr(u32::MAX)));
        let one = Cidr::new(Ipv4Addr::BROADCAST, 32);
        assert_eq!(one.to_string(), "255.255.255.255/32");
        assert!(one.contains(Ipv4Addr::BROADCAST));
        assert!(!one.contains(addr(u32::MAX - 1)));
    }

    #[test]
    #[should_panic(expected = "host bits")]
    fn cidr_rejects_host_bits() {
        let _ = Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 24);
    }
}
