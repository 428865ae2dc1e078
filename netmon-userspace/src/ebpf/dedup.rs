//! Exact connection counts through the kernel's dedup map.
//!
//! Busy servers talk to the same few peers millions of times. The programs
//! send one event per connection key ([`DedupKey`]: peer, direction, port,
//! pid, hook) per window and count every connection in `DEDUP`, whose
//! `total` per series only ever grows. Userspace remembers, per key, the
//! series and the total it has accounted for; an event or a harvest of the
//! map adds the difference. Nothing is ever reset, so counts are exact
//! whatever the interleaving, and a peer whose event was lost (ring buffer
//! full) is still found at the next harvest. An event in no series (a
//! key's first sighting, which the kernel keeps out of the map) counts by
//! itself.
use std::collections::{HashMap, hash_map::Entry};

use netmon_common::{DIRECTION_OUTBOUND, DedupKey, DedupValue, PeerEvent, SERIES_NONE};

/// Harvests a key may go unseen before its series is forgotten. Map
/// iteration can skip keys while the kernel evicts others; forgetting a
/// live series would count it again, so one miss is tolerated.
const MISSES_BEFORE_FORGETTING: u32 = 2;

#[derive(Debug)]
struct Series {
    id: u64,
    accounted: u64,
    /// The harvest that last saw it (or an event since).
    seen: u32,
}

/// Per-key accounting of the kernel's dedup series.
#[derive(Debug, Default)]
pub struct Counter {
    series: HashMap<DedupKey, Series>,
    harvest: u32,
}

impl Counter {
    /// Connections `event` adds to its peer's count.
    pub fn on_event(&mut self, event: &PeerEvent) -> u64 {
        if event.series == SERIES_NONE {
            return event.total;
        }
        self.advance(DedupKey::of(event), event.series, event.total)
    }

    /// Takes in the kernel map's `entries` and calls `sink` with every key
    /// that has connections not yet accounted for, and how many.
    pub fn harvest(
        &mut self,
        entries: impl IntoIterator<Item = (DedupKey, DedupValue)>,
        mut sink: impl FnMut(&DedupKey, u64),
    ) {
        self.harvest = self.harvest.wrapping_add(1);
        let mut seen = 0usize;
        for (key, value) in entries {
            seen += 1;
            let new = self.advance(key, value.series, value.total);
            if new > 0 {
                sink(&key, new);
            }
        }
        let now = self.harvest;
        self.series
            .retain(|_, series| now.wrapping_sub(series.seen) < MISSES_BEFORE_FORGETTING);
        log::debug!(
            "dedup: {seen} keys in the kernel map, {} tracked",
            self.series.len()
        );
    }

    /// Accounts for `total` connections of `series` under `key`; returns
    /// how many were not accounted for yet.
    fn advance(&mut self, key: DedupKey, series: u64, total: u64) -> u64 {
        let seen = self.harvest;
        match self.series.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(Series {
                    id: series,
                    accounted: total,
                    seen,
                });
                total
            }
            Entry::Occupied(mut slot) => {
                let known = slot.get_mut();
                known.seen = seen;
                if series > known.id {
                    // The LRU evicted the old series and the key came back.
                    *known = Series {
                        id: series,
                        accounted: total,
                        seen,
                    };
                    total
                } else if series < known.id {
                    // A late event of a series already replaced.
                    0
                } else {
                    let new = total.saturating_sub(known.accounted);
                    known.accounted = known.accounted.max(total);
                    new
                }
            }
        }
    }
}

/// An event standing for `key`'s connections, for a harvest to report
/// (no process name: the map does not keep one).
pub fn event_of(key: &DedupKey) -> PeerEvent {
    let (remote_port, local_port) = if key.direction == DIRECTION_OUTBOUND {
        (key.port, 0)
    } else {
        (0, key.port)
    };
    PeerEvent {
        addr: key.addr,
        remote_port,
        local_port,
        pid: key.pid,
        direction: key.direction,
        source: key.source,
        ..PeerEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(series: u64, total: u64) -> PeerEvent {
        PeerEvent {
            addr: 1,
            remote_port: 80,
            direction: DIRECTION_OUTBOUND,
            source: 1,
            series,
            total,
            ..PeerEvent::default()
        }
    }

    #[test]
    fn counts_are_the_differences_of_totals() {
        let mut counter = Counter::default();
        assert_eq!(counter.on_event(&event(10, 1)), 1);
        // Repeats suppressed in the kernel show up in the next event's total.
        assert_eq!(counter.on_event(&event(10, 7)), 6);
        // Events from two CPUs can arrive out of order.
        assert_eq!(counter.on_event(&event(10, 5)), 0);
        assert_eq!(counter.on_event(&event(10, 9)), 2);
    }

    #[test]
    fn an_event_in_no_series_counts_alone() {
        let mut counter = Counter::default();
        assert_eq!(counter.on_event(&event(10, 3)), 3);
        assert_eq!(counter.on_event(&event(SERIES_NONE, 1)), 1);
        assert_eq!(counter.on_event(&event(SERIES_NONE, 1)), 1);
        // ... and leaves the key's series alone.
        assert_eq!(counter.on_event(&event(10, 4)), 1);
    }

    #[test]
    fn a_new_series_counts_from_its_start_and_late_events_of_the_old_none() {
        let mut counter = Counter::default();
        assert_eq!(counter.on_event(&event(10, 4)), 4);
        assert_eq!(counter.on_event(&event(20, 1)), 1);
        assert_eq!(counter.on_event(&event(10, 6)), 0);
        assert_eq!(counter.on_event(&event(20, 3)), 2);
    }
}
