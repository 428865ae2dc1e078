//! A network of either family, as the special-purpose table and firewall
//! rules hold one.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An IPv4 or IPv6 network: an address whose host bits are zero, and a
/// prefix length. Orders IPv4 networks before IPv6 ones, numerically
/// within each family, as [`IpAddr`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Panics when `prefix` exceeds 32 or `network` has host bits set; in
    /// a `const` such as [`SPECIAL`](super::SPECIAL) that is a compile error.
    pub const fn v4(network: Ipv4Addr, prefix: u8) -> Self {
        assert!(prefix <= 32, "prefix longer than 32 bits");
        assert!(
            network.to_bits() & !mask(prefix, 32) as u32 == 0,
            "host bits set in a network"
        );
        Self {
            network: IpAddr::V4(network),
            prefix,
        }
    }

    /// Panics when `prefix` exceeds 128 or `network` has host bits set; in
    /// a `const` that is a compile error.
    pub const fn v6(network: Ipv6Addr, prefix: u8) -> Self {
        assert!(prefix <= 128, "prefix longer than 128 bits");
        assert!(
            network.to_bits() & !mask(prefix, 128) == 0,
            "host bits set in a network"
        );
        Self {
            network: IpAddr::V6(network),
            prefix,
        }
    }

    pub const fn prefix(self) -> u8 {
        self.prefix
    }

    pub const fn first(self) -> IpAddr {
        self.network
    }

    pub const fn is_ipv4(self) -> bool {
        self.network.is_ipv4()
    }

    /// Reports and rules only need a block's start; tests check its end.
    #[cfg(test)]
    pub const fn last(self) -> IpAddr {
        match self.network {
            IpAddr::V4(network) => IpAddr::V4(Ipv4Addr::from_bits(
                network.to_bits() | !mask(self.prefix, 32) as u32,
            )),
            IpAddr::V6(network) => IpAddr::V6(Ipv6Addr::from_bits(
                network.to_bits() | !mask(self.prefix, 128),
            )),
        }
    }

    /// Whether `addr` is in this network; never across families, so an
    /// IPv4-mapped IPv6 address is not in an IPv4 network (peers reach
    /// here already normalised to IPv4).
    pub const fn contains(self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(network), IpAddr::V4(addr)) => {
                addr.to_bits() & mask(self.prefix, 32) as u32 == network.to_bits()
            }
            (IpAddr::V6(network), IpAddr::V6(addr)) => {
                addr.to_bits() & mask(self.prefix, 128) == network.to_bits()
            }
            _ => false,
        }
    }
}

/// The network bits of a `prefix`-long prefix of a `width`-bit address, in
/// its low `width` bits.
const fn mask(prefix: u8, width: u32) -> u128 {
    match prefix {
        0 => 0,
        _ => (u128::MAX << (128 - prefix as u32)) >> (128 - width),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both families' blocks are told apart: an IPv4 address's bits read as
    /// IPv6 (or mapped) are not in its IPv4 block.
    #[test]
    fn families_do_not_mix() {
        let ten = Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 8);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let compatible: IpAddr = "::10.0.0.1".parse().unwrap();
        assert!(ten.contains("10.0.0.1".parse().unwrap()));
        assert!(!ten.contains(mapped) && !ten.contains(compatible));
        let everything6 = Cidr::v6(Ipv6Addr::UNSPECIFIED, 0);
        assert!(everything6.contains(mapped) && !everything6.contains("10.0.0.1".parse().unwrap()));
        assert!(ten.is_ipv4() && !everything6.is_ipv4());
        // IPv4 networks sort before IPv6 ones, as addresses do.
        assert!(Cidr::v4(Ipv4Addr::BROADCAST, 32) < everything6);
    }

    #[test]
    fn cidr_bounds() {
        let all = Cidr::v4(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!(
            (all.first(), all.last()),
            (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into())
        );
        let one = Cidr::v4(Ipv4Addr::BROADCAST, 32);
        assert_eq!(one.to_string(), "255.255.255.255/32");
        assert!(one.contains(Ipv4Addr::BROADCAST.into()));
        assert!(!one.contains(Ipv4Addr::new(255, 255, 255, 254).into()));
        let all6 = Cidr::v6(Ipv6Addr::UNSPECIFIED, 0);
        assert_eq!(all6.last(), IpAddr::V6(Ipv6Addr::from_bits(u128::MAX)));
        let ula = Cidr::v6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8);
        assert_eq!(ula.to_string(), "fd00::/8");
        assert_eq!(
            ula.last().to_string(),
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        let host = Cidr::v6(Ipv6Addr::LOCALHOST, 128);
        assert_eq!(
            (host.first(), host.last()),
            (host.first(), Ipv6Addr::LOCALHOST.into())
        );
        assert!(!host.contains(Ipv6Addr::UNSPECIFIED.into()));
    }

    #[test]
    #[should_panic(expected = "host bits")]
    fn cidr_rejects_host_bits() {
        let _ = Cidr::v4(Ipv4Addr::new(10, 0, 0, 1), 24);
    }

    #[test]
    #[should_panic(expected = "host bits")]
    fn cidr_rejects_ipv6_host_bits() {
        let _ = Cidr::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 64);
    }

    #[test]
    #[should_panic(expected = "longer than 128")]
    fn cidr_rejects_long_ipv6_prefix() {
        let _ = Cidr::v6(Ipv6Addr::UNSPECIFIED, 129);
    }
}
