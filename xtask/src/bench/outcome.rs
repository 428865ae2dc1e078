//! What a storm did: its workers' result lines, the peers that makes,
//! and how a watcher's peers compare with them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;

use super::compare::{Block, Compared, Peer};

/// Addresses in a worker's /15, from .0.1 on: the most connections a
/// distinct storm's worker makes. A /16 could run out before a pair's
/// storm ended when the host was quick.
const PER_WORKER: u32 = (1 << 17) - 2;
/// Peers per worker in a repeated storm: "a few peers connecting over and
/// over", each direction.
pub const REPEATED_PEERS: u32 = 4;

/// Whether every connection brings new peers or the same few again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Distinct,
    Repeated,
}

impl Pattern {
    pub fn peers(self) -> u32 {
        match self {
            Self::Distinct => PER_WORKER,
            Self::Repeated => REPEATED_PEERS,
        }
    }
}

/// The first address of a worker's destinations and of its sources.
#[derive(Clone, Copy)]
pub struct Ranges {
    pub(super) dests: IpAddr,
    pub(super) sources: IpAddr,
    /// Its UDP service's port, in a UDP storm.
    pub(super) udp_port: Option<u16>,
}

/// A worker's result line.
pub struct Made {
    pub(super) connections: u64,
    pub(super) failed: u64,
    pub(super) secs: f64,
    /// Peers (indexes of its addresses) it tried and never connected to,
    /// ascending; a UDP worker's are none (its queries were all sent).
    pub(super) unmade: Vec<u32>,
}

impl std::str::FromStr for Made {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> anyhow::Result<Self> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("worker said {line:?}, without {name}="))
        };
        Ok(Self {
            connections: field("made")?.parse()?,
            failed: field("failed")?.parse()?,
            secs: field("secs")?.parse()?,
            unmade: match field("unmade") {
                Err(_) => Vec::new(),
                Ok("-") => Vec::new(),
                Ok(list) => {
                    let mut unmade = list
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<u32>, _>>()
                        .with_context(|| format!("worker said {line:?}: unmade= is not a list"))?;
                    unmade.sort_unstable();
                    unmade
                }
            },
        })
    }
}

/// Address `base` + 1 + `i`, in `base`'s family.
pub fn nth(base: IpAddr, i: u64) -> IpAddr {
    match base {
        IpAddr::V4(base) => IpAddr::V4(Ipv4Addr::from(base.to_bits() + 1 + i as u32)),
        IpAddr::V6(base) => IpAddr::V6(Ipv6Addr::from(base.to_bits() + 1 + u128::from(i))),
    }
}

/// A peer of a UDP storm (IPv4 only) and what its record must say.
pub struct UdpPeer {
    pub ip: Ipv4Addr,
    /// Sent to (outbound), or heard from by the service (inbound).
    pub outbound: bool,
    pub port: u16,
    pub times: u64,
}

/// What a storm did.
pub struct Outcome {
    pattern: Pattern,
    /// The longest worker's time.
    pub secs: f64,
    block: Block,
    ranges: Vec<Ranges>,
    made: Vec<Made>,
}

impl Outcome {
    pub fn new(pattern: Pattern, block: Block, ranges: Vec<Ranges>, made: Vec<Made>) -> Self {
        Self {
            pattern,
            secs: made.iter().map(|m| m.secs).fold(0.0, f64::max),
            block,
            ranges,
            made,
        }
    }

    pub fn connections(&self) -> u64 {
        self.made.iter().map(|m| m.connections).sum()
    }

    pub fn failed(&self) -> u64 {
        self.made.iter().map(|m| m.failed).sum()
    }

    pub fn workers(&self) -> usize {
        self.made.len()
    }

    /// Connections per second: each worker's rate, summed. A worker that
    /// runs out of addresses stops early, and its connections over the
    /// longest worker's time would undersell the storm.
    pub fn rate(&self) -> f64 {
        self.made
            .iter()
            .filter(|m| m.secs > 0.0)
            .map(|m| m.connections as f64 / m.secs)
            .sum()
    }

    /// `watched`'s peers against those the storm made: each worker's
    /// destinations and sources it connected (TCP) or sent to (UDP).
    pub fn compare(&self, watched: impl IntoIterator<Item = IpAddr>) -> Compared {
        let made = self
            .made
            .iter()
            .map(|m| 2 * self.used(m).saturating_sub(m.unmade.len() as u64))
            .sum();
        Compared::new(self.block, made, |addr| self.peer(addr), watched)
    }

    /// Addresses of its destinations, and of its sources, that a worker
    /// used: one per attempt, or the few it cycled through.
    fn used(&self, m: &Made) -> u64 {
        (m.connections + m.failed).min(u64::from(self.pattern.peers()))
    }

    /// Whether `addr` is a peer the storm made.
    fn peer(&self, addr: IpAddr) -> Peer {
        for (ranges, m) in self.ranges.iter().zip(&self.made) {
            for base in [ranges.dests, ranges.sources] {
                let Some(i) = index(addr, base).filter(|&i| i < self.used(m)) else {
                    continue;
                };
                let tried_only = u32::try_from(i).is_ok_and(|i| m.unmade.binary_search(&i).is_ok());
                return if tried_only {
                    Peer::Attempted
                } else {
                    Peer::Made
                };
            }
        }
        Peer::Not
    }

    /// Every peer a UDP storm made, with the exchanges it must be counted
    /// for: each destination outbound, each source inbound, both to the
    /// worker's service port. Each peer is one client socket's (one
    /// exchange), however many queries it sent.
    pub fn udp_peers(&self) -> Vec<UdpPeer> {
        let mut peers = Vec::new();
        for (ranges, m) in self.ranges.iter().zip(&self.made) {
            let Some(port) = ranges.udp_port else {
                continue;
            };
            let attempts = m.connections + m.failed;
            let n = attempts.min(u64::from(self.pattern.peers()));
            for i in 0..n {
                let times = 1;
                for (ip, outbound) in [
                    (nth(ranges.dests, i), true),
                    (nth(ranges.sources, i), false),
                ] {
                    let IpAddr::V4(ip) = ip else {
                        continue;
                    };
                    peers.push(UdpPeer {
                        ip,
                        outbound,
                        port,
                        times,
                    });
                }
            }
        }
        peers
    }
}

/// `i` such that `addr` is [`nth`]`(base, i)`, if there is one.
fn index(addr: IpAddr, base: IpAddr) -> Option<u64> {
    let offset = match (addr, base) {
        (IpAddr::V4(addr), IpAddr::V4(base)) => {
            u128::from(addr.to_bits().checked_sub(base.to_bits())?)
        }
        (IpAddr::V6(addr), IpAddr::V6(base)) => addr.to_bits().checked_sub(base.to_bits())?,
        _ => return None,
    };
    u64::try_from(offset.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::storm::Family;

    /// A storm of one worker in 127.100.0.0/12, with `made` its line.
    fn outcome(pattern: Pattern, made: &str) -> Outcome {
        let block = Block::new(
            Ipv4Addr::new(127, 100, 0, 0).into(),
            Ipv4Addr::new(127, 115, 255, 255).into(),
        );
        let ranges = vec![Ranges {
            dests: Ipv4Addr::new(127, 100, 0, 0).into(),
            sources: Ipv4Addr::new(127, 108, 0, 0).into(),
            udp_port: None,
        }];
        Outcome::new(pattern, block, ranges, vec![made.parse().unwrap()])
    }

    fn compared(held: u64, made: u64, invented: u64) -> Compared {
        Compared {
            made,
            held,
            invented,
        }
    }

    #[test]
    fn distinct_storm_compares_sets() {
        let storm = outcome(Pattern::Distinct, "made=3 accepted=3 failed=0 secs=2.000");
        assert_eq!(storm.rate(), 1.5);
        let watched = [
            Ipv4Addr::new(127, 100, 0, 1),
            Ipv4Addr::new(127, 100, 0, 3),
            Ipv4Addr::new(127, 108, 0, 2),
            Ipv4Addr::new(127, 108, 0, 2),
            // Not this storm's: outside its block.
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 116, 0, 1),
        ];
        let seen = storm.compare(watched.map(IpAddr::V4));
        assert_eq!(seen, compared(3, 6, 0));
        assert_eq!(seen.missed(), 3);
        assert!(!seen.exact());
    }

    /// Held used to count the watcher's addresses within the range the
    /// storm used: a peer missed and one invented there made 100%.
    #[test]
    fn a_miss_and_an_invention_do_not_cancel() {
        let storm = outcome(
            Pattern::Distinct,
            "made=2 accepted=2 failed=1 secs=2 unmade=1",
        );
        let watched = [
            // Made: dests 1 and 3, sources 1 and 3 (2 failed).
            Ipv4Addr::new(127, 100, 0, 1),
            Ipv4Addr::new(127, 108, 0, 1),
            Ipv4Addr::new(127, 108, 0, 3),
            // Tried only: neither missing nor invented.
            Ipv4Addr::new(127, 100, 0, 2),
            // Invented: in the block, past what the storm used.
            Ipv4Addr::new(127, 100, 0, 4),
            Ipv4Addr::new(127, 112, 0, 9),
        ];
        let seen = storm.compare(watched.map(IpAddr::V4));
        assert_eq!(seen, compared(3, 4, 2));
        assert_eq!(seen.to_string(), "3 / 4 = 75.00%, 1 missed, 2 invented");
        let all = storm.compare(
            watched[..3]
                .iter()
                .copied()
                .chain([Ipv4Addr::new(127, 100, 0, 3)])
                .map(IpAddr::V4),
        );
        assert!(all.exact());
    }

    #[test]
    fn ipv6_storm_compares_sets() {
        let base = Family::v6_prefix(3);
        let mut storm = outcome(Pattern::Distinct, "made=2 accepted=2 failed=0 secs=2.000");
        storm.block = Block::new(
            base.into(),
            Ipv6Addr::from(base.to_bits() | u128::from(u64::MAX)).into(),
        );
        storm.ranges[0].dests = base.into();
        storm.ranges[0].sources = Ipv6Addr::from(base.to_bits() | 4 << 32).into();
        let watched: [IpAddr; 4] = [
            "fdbe:4e4d:0:3::1".parse().unwrap(),
            "fdbe:4e4d:0:3:0:4:0:2".parse().unwrap(),
            // Past what it used; an IPv4 address of the same offset.
            "fdbe:4e4d:0:3::3".parse().unwrap(),
            Ipv4Addr::new(0, 0, 0, 1).into(),
        ];
        assert_eq!(storm.compare(watched), compared(2, 4, 1));
        assert_eq!(nth(base.into(), 1).to_string(), "fdbe:4e4d:0:3::2");
    }

    #[test]
    fn repeated_storm_made_only_a_few_peers() {
        let storm = outcome(Pattern::Repeated, "made=1000 accepted=4 failed=0 secs=2");
        let peers = u64::from(REPEATED_PEERS);
        let watched = (0..peers).flat_map(|i| {
            [
                nth(Ipv4Addr::new(127, 100, 0, 0).into(), i),
                nth(Ipv4Addr::new(127, 108, 0, 0).into(), i),
            ]
        });
        assert_eq!(storm.compare(watched), compared(2 * peers, 2 * peers, 0));
    }

    #[test]
    fn worker_lines_must_be_complete() {
        assert!("made=1 accepted=1 secs=1".parse::<Made>().is_err());
        assert!(
            "made=1 accepted=1 failed=1 secs=1 unmade=x"
                .parse::<Made>()
                .is_err()
        );
    }
}
