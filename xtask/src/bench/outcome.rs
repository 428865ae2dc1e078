//! What a storm did: its workers' result lines, the peers that makes,
//! and how a watcher's peers compare with them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;

#[cfg(test)]
use super::storm::Family;
use super::storm::{Pattern, REPEATED_PEERS, Ranges};

/// A worker's result line.
pub struct Made {
    pub(super) connections: u64,
    pub(super) accepted: u64,
    pub(super) failed: u64,
    pub(super) secs: f64,
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
            accepted: field("accepted")?.parse()?,
            failed: field("failed")?.parse()?,
            secs: field("secs")?.parse()?,
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
    ranges: Vec<Ranges>,
    made: Vec<Made>,
}

impl Outcome {
    pub fn new(pattern: Pattern, ranges: Vec<Ranges>, made: Vec<Made>) -> Self {
        Self {
            pattern,
            secs: made.iter().map(|m| m.secs).fold(0.0, f64::max),
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

    /// Distinct peers the storm made: destinations connected to plus
    /// sources accepted from.
    pub fn peers_made(&self) -> u64 {
        self.made
            .iter()
            .map(|m| {
                let dests = match self.pattern {
                    Pattern::Distinct => m.connections,
                    Pattern::Repeated => m.connections.min(u64::from(REPEATED_PEERS)),
                };
                dests + m.accepted
            })
            .sum()
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

    /// How many of `held` are peers of this storm: addresses in the part
    /// of a worker's ranges it used.
    pub fn held(&self, held: impl IntoIterator<Item = IpAddr>) -> u64 {
        let used: Vec<(Ranges, u32)> = self
            .ranges
            .iter()
            .zip(&self.made)
            .map(|(ranges, m)| {
                let attempts = m.connections + m.failed;
                (
                    *ranges,
                    attempts.min(u64::from(self.pattern.peers())) as u32,
                )
            })
            .collect();
        let within = |addr: IpAddr, base: IpAddr, count: u32| {
            let offset = match (addr, base) {
                (IpAddr::V4(addr), IpAddr::V4(base)) => {
                    u128::from(addr.to_bits().wrapping_sub(base.to_bits()))
                }
                (IpAddr::V6(addr), IpAddr::V6(base)) => addr.to_bits().wrapping_sub(base.to_bits()),
                _ => return false,
            };
            (1..=u128::from(count)).contains(&offset)
        };
        held.into_iter()
            .filter(|&addr| {
                used.iter().any(|&(r, count)| {
                    within(addr, r.dests, count) || within(addr, r.sources, count)
                })
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(pattern: Pattern, made: &str) -> Outcome {
        Outcome {
            pattern,
            secs: 2.0,
            ranges: vec![Ranges {
                dests: Ipv4Addr::new(127, 100, 0, 0).into(),
                sources: Ipv4Addr::new(127, 104, 0, 0).into(),
                udp_port: None,
            }],
            made: vec![made.parse().unwrap()],
        }
    }

    #[test]
    fn distinct_storm_counts_each_address_it_used() {
        let storm = outcome(Pattern::Distinct, "made=3 accepted=3 failed=0 secs=2.000");
        assert_eq!(storm.peers_made(), 6);
        assert_eq!(storm.rate(), 1.5);
        let held = [
            Ipv4Addr::new(127, 100, 0, 1),
            Ipv4Addr::new(127, 100, 0, 3),
            Ipv4Addr::new(127, 104, 0, 2),
            // Not this storm's: past what it used, or elsewhere.
            Ipv4Addr::new(127, 100, 0, 4),
            Ipv4Addr::new(127, 100, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
        ];
        assert_eq!(storm.held(held.map(IpAddr::V4)), 3);
    }

    #[test]
    fn ipv6_storm_counts_each_address_it_used() {
        let mut storm = outcome(Pattern::Distinct, "made=2 accepted=2 failed=0 secs=2.000");
        let base = Family::v6_prefix(3);
        storm.ranges[0].dests = base.into();
        storm.ranges[0].sources = Ipv6Addr::from(base.to_bits() | 4 << 32).into();
        let held: [IpAddr; 4] = [
            "fdbe:4e4d:0:3::1".parse().unwrap(),
            "fdbe:4e4d:0:3:0:4:0:2".parse().unwrap(),
            // Past what it used, and an IPv4 address of the same offset.
            "fdbe:4e4d:0:3::3".parse().unwrap(),
            Ipv4Addr::new(0, 0, 0, 1).into(),
        ];
        assert_eq!(storm.held(held), 2);
        assert_eq!(nth(base.into(), 1).to_string(), "fdbe:4e4d:0:3::2");
    }

    #[test]
    fn repeated_storm_made_only_a_few_peers() {
        let storm = outcome(Pattern::Repeated, "made=1000 accepted=4 failed=0 secs=2");
        assert_eq!(storm.peers_made(), 2 * u64::from(REPEATED_PEERS));
    }

    #[test]
    fn worker_lines_must_be_complete() {
        assert!("made=1 accepted=1 secs=1".parse::<Made>().is_err());
    }
}
