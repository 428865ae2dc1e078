//! The special-purpose address registries, both families', as one table:
//! what [`Class::of`] and the reports' help text read.
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Cidr, Class};

/// One row of [`SPECIAL`].
#[derive(Clone, Copy, Debug)]
pub struct Special {
    pub block: Cidr,
    pub class: Class,
    /// The RFC that sets the block aside.
    pub rfc: &'static str,
}

const fn v4(network: [u8; 4], prefix: u8, class: Class, rfc: &'static str) -> Special {
    let [a, b, c, d] = network;
    Special {
        block: Cidr::v4(Ipv4Addr::new(a, b, c, d), prefix),
        class,
        rfc,
    }
}

const fn v6(network: [u16; 8], prefix: u8, class: Class, rfc: &'static str) -> Special {
    let [a, b, c, d, e, f, g, h] = network;
    Special {
        block: Cidr::v6(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix),
        class,
        rfc,
    }
}

/// The special-purpose blocks of both families, each with the RFC that
/// reserves it: IANA's IPv4 and IPv6 special-purpose address registries,
/// with IPv4's reserved and broadcast space and IPv6's multicast added.
/// Where blocks nest, the longer prefix wins (255.255.255.255 is broadcast
/// although 240.0.0.0/4 holds it; 2001:db8::/32 is documentation although
/// 2001::/23 is IETF protocol space).
///
/// IPv6 rows reuse an IPv4 class where the meaning is the same; the
/// well-known anycast services (PCP, TURN, DNS-SD SRP, AMT relays, AS112)
/// are one class because the registry marks them globally reachable,
/// unlike the IETF protocol block around most of them; DRIP entity tags
/// are ORCHIDs (RFC 9374), as is the deprecated first ORCHID block.
#[rustfmt::skip]
pub const SPECIAL: [Special; 42] = [
    v4([0, 0, 0, 0],                          8,   Class::ThisNetwork,    "RFC 791"),
    v4([10, 0, 0, 0],                         8,   Class::Private,        "RFC 1918"),
    v4([100, 64, 0, 0],                       10,  Class::Shared,         "RFC 6598"),
    v4([127, 0, 0, 0],                        8,   Class::Loopback,       "RFC 1122"),
    v4([169, 254, 0, 0],                      16,  Class::LinkLocal,      "RFC 3927"),
    v4([172, 16, 0, 0],                       12,  Class::Private,        "RFC 1918"),
    v4([192, 0, 0, 0],                        24,  Class::IetfProtocol,   "RFC 6890"),
    v4([192, 0, 2, 0],                        24,  Class::Documentation,  "RFC 5737"),
    v4([192, 88, 99, 0],                      24,  Class::SixToFourRelay, "RFC 7526"),
    v4([192, 168, 0, 0],                      16,  Class::Private,        "RFC 1918"),
    v4([198, 18, 0, 0],                       15,  Class::Benchmarking,   "RFC 2544"),
    v4([198, 51, 100, 0],                     24,  Class::Documentation,  "RFC 5737"),
    v4([203, 0, 113, 0],                      24,  Class::Documentation,  "RFC 5737"),
    v4([224, 0, 0, 0],                        4,   Class::Multicast,      "RFC 5771"),
    v4([240, 0, 0, 0],                        4,   Class::Reserved,       "RFC 1112"),
    v4([255, 255, 255, 255],                  32,  Class::Broadcast,      "RFC 919"),
    v6([0, 0, 0, 0, 0, 0, 0, 0],              128, Class::Unspecified,    "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0, 0, 1],              128, Class::Loopback,       "RFC 4291"),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0],         96,  Class::Ipv4Mapped,     "RFC 4291"),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0],      96,  Class::Translation,    "RFC 6052"),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0],      48,  Class::Translation,    "RFC 8215"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0],          64,  Class::DiscardOnly,    "RFC 6666"),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0],          64,  Class::Dummy,          "RFC 9780"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0],         23,  Class::IetfProtocol,   "RFC 2928"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0],         32,  Class::Teredo,         "RFC 4380"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1],         128, Class::Anycast,        "RFC 7723"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2],         128, Class::Anycast,        "RFC 8155"),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3],         128, Class::Anycast,        "RFC 9665"),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0],         48,  Class::Benchmarking,   "RFC 5180"),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0],         32,  Class::Anycast,        "RFC 7450"),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0],     48,  Class::Anycast,        "RFC 7535"),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0],      28,  Class::Orchid,         "RFC 4843"),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0],      28,  Class::Orchid,         "RFC 7343"),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0],      28,  Class::Orchid,         "RFC 9374"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],     32,  Class::Documentation,  "RFC 3849"),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0],         16,  Class::SixToFour,      "RFC 3056"),
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48,  Class::Anycast,        "RFC 7534"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0],         20,  Class::Documentation,  "RFC 9637"),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0],         16,  Class::Srv6,           "RFC 9602"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0],         7,   Class::Private,        "RFC 4193"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0],         10,  Class::LinkLocal,      "RFC 4291"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0],         8,   Class::Multicast,      "RFC 4291"),
];
