//! Exact connection counts through the kernel's dedup map.
//!
//! Busy servers talk to the same few peers millions of times. The programs
//! send one event per connection key ([`DedupKey`]: peer, direction, port,
//! pid, hook, generation) per window and count every connection in
//! `DEDUP`, whose `total` per series only ever grows. Userspace remembers,
//! per key, the series and the total it has accounted for; an event or a
//! harvest of the map adds the difference. An event in no series (a key's
//! first sighting, which the kernel keeps out of the map) counts by itself.
//!
//! The map never evicts: a connection whose event did not fit in the ring
//! buffer waits there, with its process name, until a harvest finds it.
//! It is emptied in two generations instead. Programs count in the one
//! `GENERATION` names; each harvest reads the whole map, then empties the
//! other generation, which no program has chosen since the harvest before
//! (at least a second ago: a program run takes microseconds and is
//! not preempted), and points the programs at it. So nothing is deleted
//! while a program may still add to it, and no count is lost.
use std::{
    collections::{HashMap, hash_map::Entry},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
};
use netmon_common::{DIRECTION_OUTBOUND, DedupKey, DedupValue, PeerEvent, SERIES_NONE, maps};

/// How long a generation goes unchosen before a harvest empties it.
const RETIRE_AFTER: Duration = Duration::from_secs(1);

/// Map entries a harvest reads between two drains of the events: about a
/// millisecond of system calls.
pub const HARVEST_BATCH: usize = 1024;

#[derive(Debug)]
struct Series {
    id: u64,
    accounted: u64,
}

/// The kernel's dedup map and what userspace has accounted for in it.
pub struct Dedup {
    map: BpfHashMap<MapData, DedupKey, DedupValue>,
    /// The same map, for asking whether reading it needs a capability
    /// (aya's typed maps do not lend their descriptor).
    probe: OwnedFd,
    generation: Array<MapData, u32>,
    uncounted: PerCpuArray<MapData, u64>,
    /// The generation programs count in.
    current: u8,
    /// When programs last switched generation.
    switched: Instant,
    accounts: Accounts,
}

/// Per key (generation included), the series last seen and the total
/// accounted for in it.
#[derive(Debug, Default)]
pub struct Accounts(HashMap<DedupKey, Series>);

impl Dedup {
    /// Takes the maps out of the loaded object; programs start counting in
    /// generation 0.
    pub fn open(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
        };
        let map = take(maps::DEDUP)?;
        let probe = match &map {
            aya::maps::Map::HashMap(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => anyhow::bail!("the eBPF object's {} is not a hash map", maps::DEDUP),
        };
        Ok(Self {
            map: BpfHashMap::try_from(map)?,
            probe,
            generation: Array::try_from(take(maps::GENERATION)?)?,
            uncounted: PerCpuArray::try_from(take(maps::UNCOUNTED)?)?,
            current: 0,
            switched: Instant::now(),
            accounts: Accounts::default(),
        })
    }

    /// A descriptor of the map, to ask the kernel whether reading it needs
    /// a capability.
    pub fn probe_fd(&self) -> BorrowedFd<'_> {
        self.probe.as_fd()
    }

    /// What events are accounted through.
    pub fn accounts(&mut self) -> &mut Accounts {
        &mut self.accounts
    }

    /// Walks the kernel's map and calls `sink` with an event standing for
    /// every key that has connections not yet accounted for, and how many;
    /// then empties the generation programs no longer count in, if it is
    /// old enough, and switches them to it.
    ///
    /// The walk takes two system calls an entry, long enough for a storm
    /// to fill the ring buffer: `between` is called every
    /// [`HARVEST_BATCH`] entries to drain it, accounting through the
    /// [`Accounts`] it is given. Counting is exact whatever the
    /// interleaving: an entry read before a newer event of its key adds
    /// nothing.
    pub fn harvest(
        &mut self,
        mut between: impl FnMut(&mut Accounts),
        mut sink: impl FnMut(&PeerEvent, u64),
    ) -> anyhow::Result<()> {
        let retiring = self.current ^ 1;
        let retire = self.switched.elapsed() >= RETIRE_AFTER;
        let mut entries = Vec::new();
        for entry in self.map.iter() {
            entries.push(entry.context("cannot read the dedup map")?);
            if entries.len() % HARVEST_BATCH == 0 {
                between(&mut self.accounts);
            }
        }
        let mut retired = Vec::new();
        for (key, value) in &entries {
            let new = self.accounts.advance(*key, value.series, value.total);
            if new > 0 {
                sink(&event_of(key, value), new);
            }
            if retire && key.generation == retiring {
                retired.push(*key);
            }
        }
        if !retire {
            return Ok(());
        }
        for key in &retired {
            match self.map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(err).context("cannot empty the dedup map"),
            }
            self.accounts.0.remove(key);
        }
        self.generation
            .set(0, u32::from(retiring), 0)
            .context("cannot switch the dedup map's generation")?;
        self.current = retiring;
        self.switched = Instant::now();
        log::debug!(
            "dedup: emptied generation {retiring} ({} keys); {} keys tracked",
            retired.len(),
            self.accounts.0.len()
        );
        Ok(())
    }

    /// Connections the programs could neither send nor keep in the map
    /// (ring buffer and map both full), since they were loaded.
    pub fn uncounted(&self) -> anyhow::Result<u64> {
        let per_cpu = self
            .uncounted
            .get(&0, 0)
            .context("cannot read the uncounted-connection counters")?;
        Ok(per_cpu
            .iter()
            .fold(0, |sum, &n| u64::saturating_add(sum, n)))
    }
}

impl Accounts {
    /// Connections `event` adds to its peer's count.
    pub fn on_event(&mut self, event: &PeerEvent) -> u64 {
        if event.series == SERIES_NONE {
            return event.total;
        }
        self.advance(DedupKey::of(event), event.series, event.total)
    }

    /// Accounts for `total` connections of `series` under `key`; returns
    /// how many were not accounted for yet.
    fn advance(&mut self, key: DedupKey, series: u64, total: u64) -> u64 {
        match self.0.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(Series {
                    id: series,
                    accounted: total,
                });
                total
            }
            Entry::Occupied(mut slot) => {
                let known = slot.get_mut();
                if series > known.id {
                    // The generation was emptied and the key came back.
                    *known = Series {
                        id: series,
                        accounted: total,
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

/// An event standing for `key`'s connections, for a harvest to report,
/// named after the process that started the series.
fn event_of(key: &DedupKey, value: &DedupValue) -> PeerEvent {
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
        generation: key.generation,
        protocol: key.protocol,
        comm: if key.pid == 0 { [0; _] } else { value.comm },
        cgroup: key.cgroup,
        netns: key.netns,
        ..PeerEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netmon_common::Addr;

    fn event(series: u64, total: u64) -> PeerEvent {
        PeerEvent {
            addr: Addr::v4_mapped(1),
            remote_port: 80,
            direction: DIRECTION_OUTBOUND,
            source: 1,
            series,
            total,
            ..PeerEvent::default()
        }
    }

    fn on_event(known: &mut Accounts, event: &PeerEvent) -> u64 {
        known.on_event(event)
    }

    #[test]
    fn counts_are_the_differences_of_totals() {
        let known = &mut Accounts::default();
        assert_eq!(on_event(known, &event(10, 1)), 1);
        // Repeats suppressed in the kernel show up in the next event's total.
        assert_eq!(on_event(known, &event(10, 7)), 6);
        // Events from two CPUs can arrive out of order.
        assert_eq!(on_event(known, &event(10, 5)), 0);
        assert_eq!(on_event(known, &event(10, 9)), 2);
    }

    #[test]
    fn an_event_in_no_series_counts_alone() {
        let known = &mut Accounts::default();
        assert_eq!(on_event(known, &event(10, 3)), 3);
        assert_eq!(on_event(known, &event(SERIES_NONE, 1)), 1);
        assert_eq!(on_event(known, &event(SERIES_NONE, 1)), 1);
        // ... and leaves the key's series alone.
        assert_eq!(on_event(known, &event(10, 4)), 1);
    }

    #[test]
    fn a_new_series_counts_from_its_start_and_late_events_of_the_old_none() {
        let known = &mut Accounts::default();
        assert_eq!(on_event(known, &event(10, 4)), 4);
        assert_eq!(on_event(known, &event(20, 1)), 1);
        assert_eq!(on_event(known, &event(10, 6)), 0);
        assert_eq!(on_event(known, &event(20, 3)), 2);
    }

    #[test]
    fn generations_are_counted_apart() {
        let known = &mut Accounts::default();
        let other = PeerEvent {
            generation: 1,
            ..event(20, 2)
        };
        assert_eq!(on_event(known, &event(10, 4)), 4);
        assert_eq!(on_event(known, &other), 2);
        // The older generation's series is still counted, not replaced.
        assert_eq!(on_event(known, &event(10, 5)), 1);
    }
}
