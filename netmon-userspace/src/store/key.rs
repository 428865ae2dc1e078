//! Which peer a record is about, and which namespaces a report shows.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::peer::NetnsId;

/// Which peer a record is about: an address, in the host's network
/// namespace or in another one. Ordered by namespace first, so the
/// host's peers come first; then IPv4 before IPv6, numerically within
/// each family.
///
/// 20 bytes: the set keeps a key per peer, so the address is 16 bytes in
/// IPv6 form with IPv4 mapped into it (`::ffff:a.b.c.d`, which no IPv6
/// peer is: those are normalised to IPv4), not a 17-byte `IpAddr` padded
/// to 24.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// The namespace's inode number; 0 for the host's (the one netmon
    /// watches from).
    pub netns: u32,
    /// The address's four words, most significant first.
    words: [u32; 4],
}

/// The first three words of an IPv4-mapped address.
const MAPPED: [u32; 3] = [0, 0, 0xffff];

impl PeerKey {
    /// `ip` in namespace `netns` (0: the host's); an IPv4-mapped `ip` is
    /// its IPv4 address.
    pub const fn new(netns: u32, ip: IpAddr) -> Self {
        let bits = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        Self {
            netns,
            words: [
                (bits >> 96) as u32,
                (bits >> 64) as u32,
                (bits >> 32) as u32,
                bits as u32,
            ],
        }
    }

    /// `ip` in the host's network namespace.
    pub const fn host(ip: IpAddr) -> Self {
        Self::new(0, ip)
    }

    pub const fn ip(self) -> IpAddr {
        let [a, b, c, d] = self.words;
        if self.is_ipv4() {
            return IpAddr::V4(Ipv4Addr::from_bits(d));
        }
        IpAddr::V6(Ipv6Addr::from_bits(
            (a as u128) << 96 | (b as u128) << 64 | (c as u128) << 32 | d as u128,
        ))
    }

    const fn is_ipv4(self) -> bool {
        self.words[0] == MAPPED[0] && self.words[1] == MAPPED[1] && self.words[2] == MAPPED[2]
    }

    /// The namespace, unless it is the host's.
    pub fn netns(self) -> Option<NetnsId> {
        (self.netns != 0).then_some(NetnsId(self.netns))
    }
}

impl PeerKey {
    /// The order as two integers: the set compares keys some twenty times
    /// a lookup.
    #[inline]
    fn rank(&self) -> (u64, u128) {
        let [a, b, c, d] = self.words;
        let family = u64::from(!self.is_ipv4());
        (
            u64::from(self.netns) << 1 | family,
            (a as u128) << 96 | (b as u128) << 64 | (c as u128) << 32 | d as u128,
        )
    }
}

impl Ord for PeerKey {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for PeerKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Which network namespaces' peers a report shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetnsScope {
    /// The host's own (the default).
    #[default]
    Host,
    /// Every namespace's, as one set.
    All,
    /// One other namespace's.
    Only(NetnsId),
}

impl NetnsScope {
    pub fn contains(self, netns: Option<NetnsId>) -> bool {
        let netns = netns.map_or(0, |id| id.0);
        match self {
            Self::Host => netns == 0,
            Self::All => true,
            Self::Only(id) => netns == id.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_namespace_then_ipv4_then_ipv6_numerically() {
        let key = |netns, ip: &str| PeerKey::new(netns, ip.parse().unwrap());
        let mut keys = [
            key(7, "10.0.0.1"),
            key(0, "fd00::10"),
            key(0, "::1"),
            key(0, "255.255.255.255"),
            key(0, "fd00::2"),
            key(0, "0.0.0.0"),
            key(0, "::ffff:9.9.9.9"),
            key(0, "::"),
        ];
        keys.sort();
        let names: Vec<_> = keys
            .iter()
            .map(|k| format!("{}/{}", k.netns, k.ip()))
            .collect();
        assert_eq!(
            names,
            [
                "0/0.0.0.0",
                "0/9.9.9.9",
                "0/255.255.255.255",
                "0/::",
                "0/::1",
                "0/fd00::2",
                "0/fd00::10",
                "7/10.0.0.1"
            ]
        );
        assert_eq!(size_of::<PeerKey>(), 20);
    }
}
