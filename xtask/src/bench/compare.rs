//! A watcher's peers against the peers a storm made, as two sets: held
//! (in both), missed (made, not held) and invented (held, within the
//! storm's block of addresses, never made). Counting the watcher's
//! addresses within the storm's range instead would let a miss and an
//! invention cancel out.
use std::{fmt, net::IpAddr};

use super::table::{percent, thousands};

/// The addresses a storm may use, first to last: no other storm's peers
/// fall within, so any peer here that the storm did not make was
/// invented.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    first: IpAddr,
    last: IpAddr,
}

impl Block {
    pub fn new(first: IpAddr, last: IpAddr) -> Self {
        Self { first, last }
    }

    /// `addr` as a number, if it is within the block.
    pub fn position(self, addr: IpAddr) -> Option<u128> {
        let (addr, first, last) = match (addr, self.first, self.last) {
            (IpAddr::V4(a), IpAddr::V4(f), IpAddr::V4(l)) => {
                (a.to_bits().into(), f.to_bits().into(), l.to_bits().into())
            }
            (IpAddr::V6(a), IpAddr::V6(f), IpAddr::V6(l)) => {
                (a.to_bits(), f.to_bits(), l.to_bits())
            }
            _ => return None,
        };
        (first..=last).contains(&addr).then_some(addr)
    }
}

/// Whether a storm made a peer at an address of its block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peer {
    Made,
    /// Only tried: the connection failed. A hook at connect() sees the
    /// attempt, so a record of it is neither missing nor invented.
    Attempted,
    Not,
}

/// How a watcher's peers compare with those a storm made; several
/// storms' add up ([`Compared::plus`]).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Compared {
    pub made: u64,
    /// Made and held.
    pub held: u64,
    /// Held within the storm's block, neither made nor attempted.
    pub invented: u64,
}

impl Compared {
    /// `watched`'s peers against those `made` says the storm made, out of
    /// `count` made in all. Memory: the watched addresses within `block`,
    /// 16 bytes each, whatever else `watched` holds.
    pub fn new(
        block: Block,
        count: u64,
        made: impl Fn(IpAddr) -> Peer,
        watched: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let mut within: Vec<(u128, IpAddr)> = watched
            .into_iter()
            .filter_map(|addr| Some((block.position(addr)?, addr)))
            .collect();
        // A watcher may list an address twice (the poller, once per socket).
        within.sort_unstable_by_key(|&(position, _)| position);
        within.dedup_by_key(|&mut (position, _)| position);
        let (mut held, mut invented) = (0, 0);
        for (_, addr) in within {
            match made(addr) {
                Peer::Made => held += 1,
                Peer::Attempted => {}
                Peer::Not => invented += 1,
            }
        }
        Self {
            made: count,
            held,
            invented,
        }
    }

    pub fn missed(self) -> u64 {
        self.made.saturating_sub(self.held)
    }

    /// Every peer held and none invented.
    pub fn exact(self) -> bool {
        self.held == self.made && self.invented == 0
    }

    pub fn held_percent(self) -> f64 {
        percent(self.held, self.made)
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            made: self.made + other.made,
            held: self.held + other.held,
            invented: self.invented + other.invented,
        }
    }
}

/// `212 340 / 212 340 = 100.00%, 0 missed, 0 invented`
impl fmt::Display for Compared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} / {} = {:.2}%, {} missed, {} invented",
            thousands(self.held),
            thousands(self.made),
            self.held_percent(),
            thousands(self.missed()),
            thousands(self.invented)
        )
    }
}
