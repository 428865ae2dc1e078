//! Recording: the peer set, its limit, and who hears of each connection.
use log::{debug, warn};

use super::Losses;
use crate::{
    observe::Observers,
    peer::Connection,
    store::{PeerRecord, Snapshot},
};

/// Where a [`super::Collector`] puts each connection: the [`Recorder`],
/// or while the file is still being loaded, the start-up backlog.
pub trait Record {
    /// Folds `connections` connections of `conn`, seen at `now`, in.
    fn record(&mut self, conn: &Connection, connections: u64, now: u64);
}

impl Record for Recorder {
    fn record(&mut self, conn: &Connection, connections: u64, now: u64) {
        Recorder::record(self, conn, connections, now);
    }
}

/// The peer set being collected into.
pub struct Recorder {
    snapshot: Snapshot,
    /// `--max-peers`: beyond it new peers are dropped, not stored, so a
    /// flood of addresses cannot exhaust memory.
    max_peers: usize,
    /// Sightings of new peers dropped at the limit (a peer seen twice
    /// counts twice; nothing keeps which were seen): in this run, and when
    /// last warned.
    dropped: u64,
    dropped_warned: u64,
    /// Metrics and `--follow`, told of every recorded connection.
    observers: Observers,
}

impl Recorder {
    pub fn new(snapshot: Snapshot, max_peers: usize, observers: Observers) -> Self {
        Self {
            snapshot,
            max_peers,
            dropped: 0,
            dropped_warned: 0,
            observers,
        }
    }

    /// Folds one connection in, as seen at `now` (read once per batch:
    /// times are in seconds, and a clock read per event is wasted work).
    pub fn record(&mut self, conn: &Connection, connections: u64, now: u64) {
        let recorded = self.snapshot.peers.record_within(
            conn,
            connections,
            now,
            self.max_peers,
            PeerRecord::directions,
        );
        let Some((before, record)) = recorded else {
            self.dropped += 1;
            self.observers.dropped();
            return;
        };
        if before.is_none() {
            debug!(
                "new peer {} ({}, {:?})",
                conn.peer, conn.direction, conn.source
            );
        }
        self.observers.recorded(conn, connections, before, record);
    }

    /// One warning per checkpoint interval at most, however many drops.
    pub fn warn_if_dropped(&mut self) {
        if self.dropped > self.dropped_warned {
            warn!(
                "--max-peers {} reached: {} sightings of new peers dropped since the last checkpoint ({} in this run)",
                self.max_peers,
                self.dropped - self.dropped_warned,
                self.dropped
            );
            self.dropped_warned = self.dropped;
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The host's own addresses as of now, for the checkpoints to come.
    pub(super) fn set_addresses(&mut self, addresses: Vec<std::net::IpAddr>) {
        self.snapshot.addresses = addresses;
    }

    /// The set as a checkpoint writes it, with the losses filled in.
    pub(super) fn snapshot_with_losses(&mut self, losses: Losses) -> &Snapshot {
        self.snapshot.lost_events = losses.events;
        self.snapshot.uncounted_connections = losses.connections;
        &self.snapshot
    }

    pub(super) fn observers(&self) -> &Observers {
        &self.observers
    }

    pub(super) fn observers_mut(&mut self) -> &mut Observers {
        &mut self.observers
    }
}
