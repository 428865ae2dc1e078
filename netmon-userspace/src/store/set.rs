//! The peer set: what is known about each peer, kept in address order.
use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::{IpAddr, Ipv4Addr},
    ops::Bound,
};

use super::{PeerKey, PeerRecord};
use crate::peer::{Connection, Direction, Directions, NetnsId, Service};

// The record's fields are the checkpoint's, declared once in
// `super::schema`; here is how the collector fills them in.
impl PeerRecord {
    /// Connections count, and so do ports: a record merged from files
    /// might carry a port whose connection was counted elsewhere.
    pub fn directions(&self) -> Directions {
        Directions {
            outbound: self.outbound > 0 || !self.remote_ports.is_empty(),
            inbound: self.inbound > 0 || !self.local_ports.is_empty(),
        }
    }

    /// A peer first seen at `now`.
    pub(super) fn new(now: u64) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            ..Self::default()
        }
    }

    /// Adds an observation of `connections` connections.
    fn add(&mut self, conn: &Connection, connections: u64, now: u64) {
        self.last_seen = self.last_seen.max(now);
        let service = |port| Service {
            protocol: conn.protocol,
            port,
        };
        match conn.direction {
            // Port 0 means unknown: a child socket reset before accept()
            // returned it has already given its port back.
            Direction::Outbound => {
                self.outbound = self.outbound.saturating_add(connections);
                if conn.remote_port != 0 {
                    self.remote_ports.insert(service(conn.remote_port));
                }
            }
            Direction::Inbound => {
                self.inbound = self.inbound.saturating_add(connections);
                if conn.local_port != 0 {
                    self.local_ports.insert(service(conn.local_port));
                }
            }
        }
        if let Some(process) = conn.process {
            self.processes.insert(process);
        }
        if let Some(owner) = conn.owner {
            self.owners.insert(owner);
        }
    }
}

/// The deduplicated set of peers.
///
/// A sorted vector of keys, each with its record's position, plus the
/// peers added since the keys were last sorted in, in a small ordered map;
/// the 64-byte records are appended to one vector and never move. The
/// keys give checkpoints and reports numeric address order; a file's keys,
/// read in order, are the index as they are (no tree is built beside them,
/// so loading peaks no higher than the set), and a file's records stay in
/// the vector the reader put them in. The recent peers are sorted into the
/// keys, in place, once they are a quarter as many.
///
/// The vector does not ask for huge pages as it grows, as the reader's
/// does: with THP defrag at `madvise`, a fault in an advised range may
/// compact memory on the spot, and a collector stalled there loses events.
#[derive(Debug, Default)]
pub struct PeerSet {
    /// Sorted, each once, none of them in `recent`.
    keys: Vec<PeerKey>,
    /// `keys[i]`'s position in `records`; empty while that is `i` (a
    /// file's set, as read). Positions are `u32`: four billion records
    /// would take over 250 GB, far past any memory.
    at: Vec<u32>,
    /// Every [`FENCE`]th key of `keys`, searched first: a thirty-second
    /// as large, it stays in cache where a search of all the keys would
    /// miss it at each step.
    fences: Vec<PeerKey>,
    /// Every [`FENCE`]th fence, searched before them: small enough (a
    /// thousandth of the keys) to stay in the nearest cache, so a search
    /// misses it at none of its steps and then reads two blocks.
    top: Vec<PeerKey>,
    /// Where the last few new peers would have gone in `keys`: a storm's
    /// new addresses come in a few ascending runs, each of which keeps
    /// missing at the same place, found again with two comparisons.
    /// Checked, never trusted: a stale hint only fails to answer.
    hints: [u32; HINTS],
    /// Peers added since `keys` was last sorted, to their positions.
    recent: BTreeMap<PeerKey, u32>,
    /// In arrival order (in key order, as read from a file).
    records: Vec<PeerRecord>,
}

/// Insertion points remembered (see `PeerSet::hints`).
const HINTS: usize = 8;

/// Recent peers kept apart from the sorted keys, at least: sorting them
/// in moves every key after them.
const RECENT_MIN: usize = 4096;

/// Keys per fence: a block of them spans ten cache lines.
const FENCE: usize = 32;

impl PeerSet {
    /// The tests' shorthand for [`Self::record_within`] without a limit:
    /// true when the peer is new.
    #[cfg(test)]
    pub fn record(&mut self, conn: &Connection, connections: u64, now: u64) -> bool {
        self.record_within(conn, connections, now, usize::MAX, |_| ())
            .is_some_and(|(before, _)| before.is_none())
    }

    /// Folds one observation of `connections` connections in (0 when it
    /// only adds what it knows, such as the accepting process of a
    /// connection another hook counted), in one search of the sorted keys
    /// and at most one of the recent ones: a new peer is
    /// refused (`None`) once the set holds `limit`. Gives what
    /// `before` makes of the record as it was (`None` for a new peer) and
    /// the record as it is now.
    pub fn record_within<T>(
        &mut self,
        conn: &Connection,
        connections: u64,
        now: u64,
        limit: usize,
        before: impl FnOnce(&PeerRecord) -> T,
    ) -> Option<(Option<T>, &PeerRecord)> {
        let key = PeerKey::new(conn.netns.map_or(0, |id| id.0), conn.peer);
        let full = self.records.len() >= limit;
        // One search of the sorted keys, then one of the recent ones that
        // inserts there too.
        let (was, at) = match self.search_hinted(key) {
            Ok(i) => {
                let at = self.position(i);
                (Some(before(&self.records[at])), at)
            }
            Err(_) => match self.recent.entry(key) {
                Entry::Occupied(slot) => {
                    let at = *slot.get() as usize;
                    (Some(before(&self.records[at])), at)
                }
                Entry::Vacant(_) if full => return None,
                Entry::Vacant(slot) => {
                    let at = self.records.len();
                    slot.insert(at as u32);
                    self.records.push(PeerRecord::new(now));
                    self.sort_in_recent_if_many();
                    (None, at)
                }
            },
        };
        let record = &mut self.records[at];
        record.add(conn, connections, now);
        Some((was, record))
    }

    /// `key`'s index in the sorted keys, or where it would go: its block
    /// by the fences, then within the block.
    fn search(&self, key: PeerKey) -> Result<usize, usize> {
        let first = match self.top.partition_point(|fence| *fence <= key) {
            0 => return Err(0),
            block => (block - 1) * FENCE,
        };
        let last = (first + FENCE).min(self.fences.len());
        let start = match self.fences[first..last].partition_point(|fence| *fence <= key) {
            0 => return Err(0),
            block => (first + block - 1) * FENCE,
        };
        let end = (start + FENCE).min(self.keys.len());
        match self.keys[start..end].binary_search(&key) {
            Ok(i) => Ok(start + i),
            Err(i) => Err(start + i),
        }
    }

    /// [`Self::search`], trying first where the last misses went.
    fn search_hinted(&mut self, key: PeerKey) -> Result<usize, usize> {
        let keys = &self.keys;
        let between = |at: usize| {
            at <= keys.len()
                && (at == 0 || keys[at - 1] < key)
                && keys.get(at).is_none_or(|next| key < *next)
        };
        if let Some(&at) = self.hints.iter().find(|&&at| between(at as usize)) {
            return Err(at as usize);
        }
        let found = self.search(key);
        if let Err(at) = found {
            self.hints.rotate_right(1);
            self.hints[0] = at as u32;
        }
        found
    }

    /// Sets the fences of the keys as they now are.
    fn build_fences(&mut self) {
        self.fences.clear();
        self.fences.extend(self.keys.iter().step_by(FENCE).copied());
        self.top.clear();
        self.top.extend(self.fences.iter().step_by(FENCE).copied());
    }

    /// Where `key`'s record is.
    fn find(&self, key: PeerKey) -> Option<usize> {
        match self.search(key) {
            Ok(i) => Some(self.position(i)),
            Err(_) => self.recent.get(&key).map(|&at| at as usize),
        }
    }

    /// The position of `keys[i]`'s record.
    fn position(&self, i: usize) -> usize {
        self.at.get(i).map_or(i, |&at| at as usize)
    }

    /// Adds a peer that is not in the set.
    fn push(&mut self, key: PeerKey, record: PeerRecord) {
        self.recent.insert(key, self.records.len() as u32);
        self.records.push(record);
        self.sort_in_recent_if_many();
    }

    fn sort_in_recent_if_many(&mut self) {
        if self.recent.len() > RECENT_MIN.max(self.keys.len() / 4) {
            self.sort_in_recent();
        }
    }

    /// Merges the recent peers into the sorted keys, from the back, in
    /// place: no second copy of the keys exists at any time.
    fn sort_in_recent(&mut self) {
        let recent = std::mem::take(&mut self.recent);
        let (old, new) = (self.keys.len(), self.keys.len() + recent.len());
        if self.at.is_empty() {
            self.at.reserve(new);
            self.at.extend(0..old as u32);
        }
        self.keys
            .resize(new, PeerKey::host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        self.at.resize(new, 0);
        let (mut kept, mut to) = (old, new);
        for (key, at) in recent.into_iter().rev() {
            while kept > 0 && self.keys[kept - 1] > key {
                kept -= 1;
                to -= 1;
                self.keys[to] = self.keys[kept];
                self.at[to] = self.at[kept];
            }
            to -= 1;
            self.keys[to] = key;
            self.at[to] = at;
        }
        self.build_fences();
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The peer at `addr` in the host's network namespace.
    pub fn get(&self, addr: IpAddr) -> Option<&PeerRecord> {
        Some(&self.records[self.find(PeerKey::host(addr))?])
    }

    /// The host's network namespace's peers, in numeric address order:
    /// what a host's reports, rules and metrics are about.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &PeerRecord)> {
        self.entries()
            .take_while(|(key, _)| key.netns == 0)
            .map(|(key, record)| (key.ip(), record))
    }

    /// Every peer, other namespaces' after the host's.
    pub fn entries(&self) -> impl Iterator<Item = (PeerKey, &PeerRecord)> {
        self.entries_after(None)
    }

    /// Peers in key order after `after` (all of them for `None`): a
    /// checkpoint written a chunk at a time resumes here, so the set may
    /// change between chunks.
    pub fn entries_after(
        &self,
        after: Option<PeerKey>,
    ) -> impl Iterator<Item = (PeerKey, &PeerRecord)> {
        self.positions_after(after)
            .map(|(key, at)| (key, &self.records[at]))
    }

    /// Keys in order after `after`, with their records' positions: the
    /// sorted keys and the recent ones, merged.
    fn positions_after(&self, after: Option<PeerKey>) -> impl Iterator<Item = (PeerKey, usize)> {
        let first = after.map_or(0, |after| self.keys.partition_point(|key| *key <= after));
        let mut sorted = (first..self.keys.len())
            .map(|i| (self.keys[i], self.position(i)))
            .peekable();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut recent = self
            .recent
            .range((from, Bound::Unbounded))
            .map(|(key, &at)| (*key, at as usize))
            .peekable();
        std::iter::from_fn(move || match (sorted.peek(), recent.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => recent.next(),
            (Some(_), _) => sorted.next(),
            (None, _) => recent.next(),
        })
    }

    /// The network namespaces other than the host's that have peers, with
    /// how many.
    pub fn namespaces(&self) -> BTreeMap<NetnsId, usize> {
        let mut namespaces = BTreeMap::new();
        let others = PeerKey::new(1, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let first = self.keys.partition_point(|key| *key < others);
        let keys = self.keys[first..]
            .iter()
            .chain(self.recent.range(others..).map(|(key, _)| key));
        for key in keys {
            *namespaces.entry(NetnsId(key.netns)).or_default() += 1;
        }
        namespaces
    }

    /// Folds a whole set in, as [`Self::merge_record`] does each record.
    pub fn merge(&mut self, other: PeerSet) {
        if self.is_empty() {
            // Reading one file: take its set rather than re-insert it.
            *self = other;
        } else {
            let order: Vec<(PeerKey, usize)> = other.positions_after(None).collect();
            let mut records = other.records;
            for (key, at) in order {
                self.merge_record(key, std::mem::take(&mut records[at]));
            }
        }
    }

    /// Adds a whole record (from a file), merging with what is there.
    pub fn merge_record(&mut self, key: PeerKey, other: PeerRecord) {
        match self.find(key) {
            Some(at) => self.records[at].merge(&other),
            None => self.push(key, other),
        }
    }

    /// A set of records in any order, repeated addresses merged as
    /// [`Self::merge_record`] merges them.
    pub(super) fn from_records(records: Vec<(PeerKey, PeerRecord)>) -> Self {
        let (keys, records) = records.into_iter().unzip();
        Self::from_read(FilePeers { keys, records })
    }

    /// A file's peers, as read: in key order, as netmon writes them, the
    /// keys are the index and the records stay where the reader put them.
    /// Out of order, or repeated (a merge's input, an old poller's list),
    /// they are sorted first, the records moved once into key order;
    /// sorting keeps repeats in file order for [`PeerRecord::merge`].
    pub(super) fn from_read(read: FilePeers) -> Self {
        let FilePeers {
            mut keys,
            mut records,
        } = read;
        if keys.is_sorted_by(|a, b| a < b) {
            return Self::sorted(keys, records);
        }
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_by_key(|&at| keys[at as usize]);
        let mut sorted = Vec::with_capacity(records.len());
        let mut last: Option<PeerKey> = None;
        for at in order {
            let (key, record) = (keys[at as usize], std::mem::take(&mut records[at as usize]));
            match sorted.last_mut() {
                Some(kept) if last == Some(key) => PeerRecord::merge(kept, &record),
                _ => {
                    last = Some(key);
                    sorted.push(record);
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Self::sorted(keys, sorted)
    }

    /// A set of `keys`, sorted and each once, and their records, in the
    /// same order.
    fn sorted(keys: Vec<PeerKey>, records: Vec<PeerRecord>) -> Self {
        let mut set = Self {
            keys,
            records,
            ..Self::default()
        };
        set.build_fences();
        set
    }
}

/// A file's peers as the reader met them: keys and records side by side,
/// so the records need not move to lose their keys.
#[derive(Debug, Default)]
pub struct FilePeers {
    pub keys: Vec<PeerKey>,
    pub records: Vec<PeerRecord>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::peer::{Comm, Source};

    /// A connection with fixed ports, for the store's tests.
    pub(in crate::store) fn conn(peer: [u8; 4], direction: Direction, process: &str) -> Connection {
        Connection {
            peer: Ipv4Addr::from(peer).into(),
            remote_port: 443,
            local_port: 22,
            protocol: crate::peer::Protocol::Tcp,
            direction,
            process: Comm::from_name(process),
            source: Source::Tracepoint,
            origin: crate::peer::Origin::default(),
            netns: None,
            owner: None,
        }
    }

    #[test]
    fn record_counts_and_dedupes() {
        let mut set = PeerSet::default();
        assert!(set.record(&conn([10, 0, 0, 1], Direction::Outbound, "curl"), 1, 100));
        assert!(!set.record(&conn([10, 0, 0, 1], Direction::Outbound, "curl"), 1, 105));
        assert!(!set.record(&conn([10, 0, 0, 1], Direction::Inbound, "sshd"), 0, 106));
        let record = set.get(Ipv4Addr::new(10, 0, 0, 1).into()).unwrap();
        assert_eq!((record.outbound, record.inbound), (2, 0));
        assert_eq!((record.first_seen, record.last_seen), (100, 106));
        assert_eq!(record.processes.iter().count(), 2);
        assert_eq!(
            record.local_ports.iter().collect::<Vec<_>>(),
            [Service::tcp(22)]
        );
    }

    #[test]
    fn port_zero_is_not_a_port() {
        let mut set = PeerSet::default();
        let mut reset = conn([10, 0, 0, 2], Direction::Inbound, "sshd");
        reset.local_port = 0;
        set.record(&reset, 1, 100);
        let record = set.get(Ipv4Addr::new(10, 0, 0, 2).into()).unwrap();
        assert_eq!(record.inbound, 1);
        assert!(record.local_ports.is_empty());
    }

    #[test]
    fn recent_peers_sort_into_the_keys_in_order() {
        // A file's set, then more new peers than stay apart, interleaved
        // with the file's and each other's, some in another namespace.
        let total = 3 * RECENT_MIN as u32;
        let key_of = |n: u32| {
            PeerKey::new(
                n % 3 * 7,
                Ipv4Addr::from(n.wrapping_mul(2_654_435_761)).into(),
            )
        };
        let file = (0..3000).map(|n| (key_of(n), PeerRecord::new(u64::from(n))));
        let mut set = PeerSet::from_records(file.collect());
        for n in (3000..total).rev() {
            let IpAddr::V4(ip) = key_of(n).ip() else {
                unreachable!()
            };
            let mut peer = conn(ip.octets(), Direction::Outbound, "curl");
            peer.netns = key_of(n).netns();
            assert!(set.record(&peer, 1, u64::from(n)));
        }
        assert!(set.recent.len() <= RECENT_MIN && !set.at.is_empty());
        for n in 0..total {
            assert_eq!(
                set.find(key_of(n)).map(|at| set.records[at].first_seen),
                Some(u64::from(n))
            );
        }
        let numbers: std::collections::HashMap<PeerKey, u32> =
            (0..total).map(|n| (key_of(n), n)).collect();
        let mut expected: Vec<PeerKey> = numbers.keys().copied().collect();
        expected.sort();
        assert!(
            set.entries()
                .map(|(key, _)| key)
                .eq(expected.iter().copied())
        );
        for (key, record) in set.entries() {
            let n = numbers[&key];
            assert_eq!(record.first_seen, u64::from(n));
            assert_eq!(record.outbound, u64::from(n >= 3000));
        }
        let after = Some(expected[100]);
        assert!(
            set.entries_after(after)
                .map(|(key, _)| key)
                .eq(expected[101..].iter().copied())
        );
        let host = expected.iter().filter(|key| key.netns == 0).count();
        assert_eq!(set.iter().count(), host);
        assert_eq!(
            set.namespaces().values().sum::<usize>(),
            expected.len() - host
        );
        assert_eq!(set.len(), expected.len());
    }

    #[test]
    fn records_of_one_peer_merge_field_by_field() {
        let mut set = PeerSet::default();
        set.record(&conn([10, 0, 0, 3], Direction::Outbound, "curl"), 2, 200);
        let mut other = PeerSet::default();
        other.record(&conn([10, 0, 0, 3], Direction::Inbound, "sshd"), 1, 100);
        other.record(&conn([10, 0, 0, 3], Direction::Inbound, "sshd"), 1, 300);
        for (addr, record) in other.iter() {
            set.merge_record(PeerKey::host(addr), record.clone());
        }
        let record = set.get(Ipv4Addr::new(10, 0, 0, 3).into()).unwrap();
        assert_eq!((record.first_seen, record.last_seen), (100, 300));
        assert_eq!((record.outbound, record.inbound), (2, 2));
        assert_eq!(
            record.remote_ports.iter().collect::<Vec<_>>(),
            [Service::tcp(443)]
        );
        assert_eq!(
            record.local_ports.iter().collect::<Vec<_>>(),
            [Service::tcp(22)]
        );
        assert_eq!(record.processes.iter().count(), 2);
    }
}
