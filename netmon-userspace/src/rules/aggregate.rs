//! The fewest CIDR blocks that cover exactly the observed addresses.
use std::net::Ipv4Addr;

use crate::classify::Cidr;

/// The fewest CIDR blocks covering exactly `addrs`, in numeric order.
pub fn aggregate(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Vec<Cidr> {
    let mut addrs: Vec<u32> = addrs.into_iter().map(Ipv4Addr::to_bits).collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut blocks = Vec::new();
    for run in addrs.chunk_by(|a, b| a.checked_add(1) == Some(*b)) {
        cover(run[0], run[run.len() - 1], &mut blocks);
    }
    blocks
}

/// Appends the fewest blocks covering exactly `first..=last`.
///
/// Blocks that cover a run and nothing else cannot straddle its ends, and
/// from its start the largest aligned block that fits is never worse than
/// a smaller one, so taking it greedily is optimal. Blocks of different
/// runs cannot merge, since a gap separates them.
fn cover(first: u32, last: u32, blocks: &mut Vec<Cidr>) {
    let (mut at, end) = (u64::from(first), u64::from(last) + 1);
    while at < end {
        // 0.0.0.0 is aligned for any size: trailing_zeros(0) is 64.
        let aligned = at.trailing_zeros().min(32);
        let fits = (end - at).ilog2();
        let bits = aligned.min(fits);
        let network = u32::try_from(at).expect("below end, so at most u32::MAX");
        blocks.push(Cidr::v4(
            Ipv4Addr::from_bits(network),
            32 - u8::try_from(bits).expect("at most 32"),
        ));
        at += 1 << bits;
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
    pub(in crate::rules) fn range(first: [u8; 4], count: u32) -> Vec<Ipv4Addr> {
        let first = Ipv4Addr::from(first).to_bits();
        (first..first + count).map(Ipv4Addr::from_bits).collect()
    }

    #[test]
    fn a_whole_24_is_one_block() {
        let blocks = aggregate(range([10, 0, 0, 0], 256));
        assert_eq!(blocks, [Cidr::v4(Ipv4Addr::new(10, 0, 0, 0), 24)]);
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
    }

    #[test]
    fn runs_split_at_alignment() {
        // 10.0.0.255 .. 10.0.2.0: a /32, a /24, a /32.
        let blocks = aggregate(range([10, 0, 0, 255], 258));
        let names: Vec<_> = blocks.iter().map(Cidr::to_string).collect();
        assert_eq!(names, ["10.0.0.255/32", "10.0.1.0/24", "10.0.2.0/32"]);
    }

    #[test]
    fn edges_of_the_address_space() {
        assert_eq!(
            blocks(&["255.255.255.255", "0.0.0.0"]),
            ["0.0.0.0/32", "255.255.255.255/32"]
        );
        let mut whole = Vec::new();
        cover(0, u32::MAX, &mut whole);
        assert_eq!(whole, [Cidr::v4(Ipv4Addr::UNSPECIFIED, 0)]);
        let mut top = Vec::new();
        cover(u32::MAX - 3, u32::MAX, &mut top);
        assert_eq!(top, [Cidr::v4(Ipv4Addr::new(255, 255, 255, 252), 30)]);
    }

    /// The canonical cover, built the slow way: every address as a /32,
    /// then sibling blocks merged into their parent, level by level.
    fn naive(addrs: &BTreeSet<u32>) -> BTreeSet<(u32, u8)> {
        let mut level: HashSet<u32> = addrs.iter().copied().collect();
        let mut done = BTreeSet::new();
        for prefix in (1..=32u8).rev() {
            let size = 1u64 << (32 - prefix);
            let mut parents = HashSet::new();
            for &network in &level {
                let sibling = u32::try_from(u64::from(network) ^ size).unwrap();
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

    fn bits(addr: std::net::IpAddr) -> u32 {
        match addr {
            std::net::IpAddr::V4(addr) => addr.to_bits(),
            std::net::IpAddr::V6(addr) => panic!("{addr}: an IPv6 block from IPv4 addresses"),
        }
    }

    fn expand(blocks: &[Cidr]) -> BTreeSet<u32> {
        blocks
            .iter()
            .flat_map(|b| bits(b.first())..=bits(b.last()))
            .collect()
    }

    /// Clusters of nearby addresses, so runs, gaps and alignment all occur.
    fn clustered() -> impl Strategy<Value = BTreeSet<u32>> {
        prop::collection::vec(
            (any::<u32>(), prop::collection::vec(0u32..600, 0..200)),
            1..6,
        )
        .prop_map(|clusters| {
            clusters
                .into_iter()
                .flat_map(|(base, offsets)| {
                    let base = base & !0xfff;
                    offsets.into_iter().map(move |o| base.wrapping_add(o))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn aggregation_matches_the_naive_cover(addrs in clustered()) {
            let blocks = aggregate(addrs.iter().copied().map(Ipv4Addr::from_bits));
            prop_assert_eq!(&expand(&blocks), &addrs);
            let got: BTreeSet<_> = blocks.iter().map(|b| (bits(b.first()), b.prefix())).collect();
            prop_assert_eq!(got.len(), blocks.len(), "blocks overlap");
            prop_assert_eq!(got, naive(&addrs));
            prop_assert!(blocks.is_sorted());
        }
    }
}
