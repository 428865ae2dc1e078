//! The fewest CIDR blocks that cover exactly the observed addresses.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::classify::Cidr;

/// The fewest CIDR blocks covering exactly `addrs`: IPv4's first, then
/// IPv6's, each family in numeric order. An IPv4-mapped IPv6 address is
/// its IPv4 address.
pub fn aggregate(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Cidr> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for addr in addrs {
        match addr.to_canonical() {
            IpAddr::V4(addr) => v4.push(u128::from(addr.to_bits())),
            IpAddr::V6(addr) => v6.push(addr.to_bits()),
        }
    }
    let mut blocks = Vec::new();
    for (mut addrs, width) in [(v4, Width::V4), (v6, Width::V6)] {
        addrs.sort_unstable();
        addrs.dedup();
        for run in addrs.chunk_by(|a, b| a.checked_add(1) == Some(*b)) {
            cover(run[0], run[run.len() - 1], width, &mut blocks);
        }
    }
    blocks
}

/// An address family's width: IPv4 addresses are held in the low 32 bits
/// of a `u128`, IPv6 addresses use all 128.
#[derive(Clone, Copy, Debug)]
enum Width {
    V4,
    V6,
}

impl Width {
    const fn bits(self) -> u32 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// The block of `network` (its host bits zero) `bits` host bits wide.
    fn block(self, network: u128, bits: u32) -> Cidr {
        let prefix = u8::try_from(self.bits() - bits).expect("at most 128");
        match self {
            Self::V4 => Cidr::v4(
                Ipv4Addr::from_bits(u32::try_from(network).expect("an IPv4 address fits 32 bits")),
                prefix,
            ),
            Self::V6 => Cidr::v6(Ipv6Addr::from_bits(network), prefix),
        }
    }
}

/// Appends the fewest blocks covering exactly `first..=last`.
///
/// Blocks that cover a run and nothing else cannot straddle its ends, and
/// from its start the largest aligned block that fits is never worse than
/// a smaller one, so taking it greedily is optimal. Blocks of different
/// runs cannot merge, since a gap separates them. Bounds are inclusive, so
/// the whole IPv6 space (`last` = `u128::MAX`) needs no overflow.
fn cover(first: u128, last: u128, width: Width, blocks: &mut Vec<Cidr>) {
    let mut at = first;
    loop {
        // 0 is aligned for any size: trailing_zeros(0) is 128.
        let aligned = at.trailing_zeros().min(width.bits());
        // The largest power of two no more than last - at + 1 addresses.
        let fits = match (last - at).checked_add(1) {
            Some(count) => count.ilog2(),
            None => 128,
        };
        let bits = aligned.min(fits);
        blocks.push(width.block(at, bits));
        let end = at | u128::MAX.checked_shr(128 - bits).unwrap_or(0);
        if end == last {
            return;
        }
        at = end + 1;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::{BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn blocks(addrs: &[&str]) -> Vec<String> {
        aggregate(addrs.iter().map(|a| a.parse().unwrap()))
            .iter()
            .map(Cidr::to_string)
            .collect()
    }

    /// `count` addresses from `first` on.
    pub(in crate::rules) fn range(first: [u8; 4], count: u32) -> Vec<IpAddr> {
        let first = Ipv4Addr::from(first).to_bits();
        (first..first + count)
            .map(|bits| Ipv4Addr::from_bits(bits).into())
            .collect()
    }

    /// `count` IPv6 addresses from `first` on.
    pub(in crate::rules) fn range6(first: &str, count: u128) -> Vec<IpAddr> {
        let first = first.parse::<Ipv6Addr>().unwrap().to_bits();
        (first..first + count)
            .map(|bits| Ipv6Addr::from_bits(bits).into())
            .collect()
    }

    fn cidr(text: &str) -> Cidr {
        let (addr, prefix) = text.split_once('/').unwrap();
        let prefix = prefix.parse().unwrap();
        match addr.parse().unwrap() {
            IpAddr::V4(addr) => Cidr::v4(addr, prefix),
            IpAddr::V6(addr) => Cidr::v6(addr, prefix),
        }
    }

    #[test]
    fn a_whole_24_is_one_block() {
        let blocks = aggregate(range([10, 0, 0, 0], 256));
        assert_eq!(blocks, [cidr("10.0.0.0/24")]);
    }

    #[test]
    fn neighbours_merge_only_where_exact() {
        assert_eq!(
            blocks(&["10.0.0.1", "10.0.0.2"]),
            ["10.0.0.1/32", "10.0.0.2/32"]
        );
        assert_eq!(blocks(&["10.0.0.3", "10.0.0.2"]), ["10.0.0.2/31"]);
        assert_eq!(
            blocks(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/32"]
        );
        assert_eq!(
            blocks(&["fd77::1", "fd77::2", "fd77::3", "fd77::4"]),
            ["fd77::1/128", "fd77::2/127", "fd77::4/128"]
        );
    }

    #[test]
    fn runs_split_at_alignment() {
        // 10.0.0.255 .. 10.0.2.0: a /32, a /24, a /32.
        let blocks = aggregate(range([10, 0, 0, 255], 258));
        let names: Vec<_> = blocks.iter().map(Cidr::to_string).collect();
        assert_eq!(names, ["10.0.0.255/32", "10.0.1.0/24", "10.0.2.0/32"]);
        let blocks = aggregate(range6("2001:db8::ff", 258));
        let names: Vec<_> = blocks.iter().map(Cidr::to_string).collect();
        assert_eq!(
            names,
            ["2001:db8::ff/128", "2001:db8::100/120", "2001:db8::200/128"]
        );
    }

    /// IPv4's blocks come first, and an IPv4-mapped address is the IPv4
    /// address it maps, merging with its neighbours: no block is ever
    /// written in `::ffff:0:0/96`.
    #[test]
    fn families_stay_apart_and_mapped_addresses_are_ipv4() {
        assert_eq!(
            blocks(&["fd77::1", "10.0.0.3", "::ffff:10.0.0.2", "::2", "0.0.0.2"]),
            ["0.0.0.2/32", "10.0.0.2/31", "::2/128", "fd77::1/128"]
        );
    }

    #[test]
    fn edges_of_the_address_space() {
        assert_eq!(
            blocks(&["255.255.255.255", "0.0.0.0"]),
            ["0.0.0.0/32", "255.255.255.255/32"]
        );
        assert_eq!(
            blocks(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::"]),
            ["::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
        for (width, max, whole, top) in [
            (
                Width::V4,
                u128::from(u32::MAX),
                "0.0.0.0/0",
                "255.255.255.252/30",
            ),
            (
                Width::V6,
                u128::MAX,
                "::/0",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126",
            ),
        ] {
            let mut blocks = Vec::new();
            cover(0, max, width, &mut blocks);
            assert_eq!(blocks, [cidr(whole)]);
            blocks.clear();
            cover(max - 3, max, width, &mut blocks);
            assert_eq!(blocks, [cidr(top)]);
        }
    }

    /// The canonical cover, built the slow way: every address as a
    /// host-sized block, then sibling blocks merged into their parent,
    /// level by level.
    fn naive(addrs: &BTreeSet<u128>, bits: u8) -> BTreeSet<(u128, u8)> {
        let mut level: HashSet<u128> = addrs.iter().copied().collect();
        let mut done = BTreeSet::new();
        for prefix in (1..=bits).rev() {
            let size = 1u128 << (bits - prefix);
            let mut parents = HashSet::new();
            for &network in &level {
                let sibling = network ^ size;
                if level.contains(&sibling) {
                    parents.insert(network.min(sibling));
                } else {
                    done.insert((network, prefix));
                }
            }
            level = parents;
        }
        done.extend(level.into_iter().map(|network| (network, 0)));
        done
    }

    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(addr) => addr.to_bits().into(),
            IpAddr::V6(addr) => addr.to_bits(),
        }
    }

    /// Every address `blocks` covers, small blocks only.
    fn expand(blocks: &[Cidr]) -> BTreeSet<u128> {
        blocks
            .iter()
            .flat_map(|b| bits(b.first())..=bits(b.last()))
            .collect()
    }

    /// Clusters of nearby addresses, so runs, gaps and alignment all
    /// occur; `mask` keeps them within a family.
    fn clustered(mask: u128) -> impl Strategy<Value = BTreeSet<u128>> {
        prop::collection::vec(
            (any::<u128>(), prop::collection::vec(0u128..600, 0..200)),
            1..6,
        )
        .prop_map(move |clusters| {
            clusters
                .into_iter()
                .flat_map(|(base, offsets)| {
                    let base = base & mask & !0xfff;
                    offsets.into_iter().map(move |o| (base + o) & mask)
                })
                .collect()
        })
    }

    fn check(blocks: &[Cidr], addrs: &BTreeSet<u128>, width: u8) -> Result<(), TestCaseError> {
        prop_assert_eq!(&expand(blocks), addrs);
        let got: BTreeSet<_> = blocks
            .iter()
            .map(|b| (bits(b.first()), b.prefix()))
            .collect();
        prop_assert_eq!(got.len(), blocks.len(), "blocks overlap");
        prop_assert_eq!(got, naive(addrs, width));
        prop_assert!(blocks.is_sorted());
        Ok(())
    }

    proptest! {
        #[test]
        fn aggregation_matches_the_naive_cover(addrs in clustered(u32::MAX.into())) {
            let ips = addrs.iter().map(|&a| IpAddr::from(Ipv4Addr::from_bits(a as u32)));
            check(&aggregate(ips), &addrs, 32)?;
        }

        #[test]
        fn ipv6_aggregation_matches_the_naive_cover(addrs in clustered(u128::MAX)) {
            let ips = addrs.iter().map(|&a| IpAddr::from(Ipv6Addr::from_bits(a)));
            let blocks = aggregate(ips);
            // The generator may land in ::ffff:0:0/96, whose addresses
            // are IPv4's: those are checked by the IPv4 property.
            let mapped = |a: &u128| Ipv6Addr::from_bits(*a).to_ipv4_mapped().is_some();
            prop_assume!(!addrs.iter().any(mapped));
            check(&blocks, &addrs, 128)?;
        }
    }
}
