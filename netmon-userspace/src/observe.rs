//! What `netmon run` tells the outside while it collects: its metrics and,
//! with `--follow`, each peer the first time it is seen in a direction.
//!
//! Both hang off one question the collection loop answers for every
//! connection it records: did the peer's directions change? The loop asks
//! [`Observers`] and nothing else, so it stays about collecting.
use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

use crate::{
    classify::Class,
    collect::Losses,
    follow::{Follow, LineFormat, Sent, Sighting},
    metrics::{Endpoint, Metrics},
    mode::AttachMode,
    peer::{Connection, Direction, Directions},
    store::{PeerRecord, PeerSet},
};

/// The metrics endpoint, bound before attaching (so a bad `--metrics`
/// fails at once, and a low port is bound while netmon may), but served
/// only once the mode is known.
pub struct Bound(Option<Endpoint>);

impl Bound {
    pub fn bind(metrics: Option<SocketAddr>) -> anyhow::Result<Self> {
        metrics.map(Endpoint::bind).transpose().map(Self)
    }
}

pub struct Observers {
    metrics: Metrics,
    follow: Option<Follow>,
    host: String,
}

impl Observers {
    /// Starts serving metrics, if asked to, for a run in `mode` that
    /// continues `peers`.
    pub fn start(
        bound: Bound,
        mode: AttachMode,
        peers: &PeerSet,
        follow: Option<LineFormat>,
        host: &str,
    ) -> anyhow::Result<Self> {
        let metrics = Metrics::new(mode, peers);
        if let Some(endpoint) = bound.0 {
            endpoint.serve(metrics.registry())?;
        }
        let follow = follow.map(Follow::new);
        Ok(Self {
            metrics,
            follow,
            host: host.to_owned(),
        })
    }

    /// `conn` was just recorded in `peers`, counting `connections`; the
    /// peer's directions were `before` (`None`: it was not in the set).
    pub fn recorded(
        &mut self,
        conn: &Connection,
        connections: u64,
        before: Option<Directions>,
        record: &PeerRecord,
    ) {
        self.metrics.event(conn.source, conn.direction, connections);
        let after = record.directions();
        if before == Some(after) {
            return;
        }
        let class = Class::of(conn.peer);
        self.metrics.peer_moved(class, before, after);
        let Some(follow) = &mut self.follow else {
            return;
        };
        let port = match conn.direction {
            Direction::Outbound => conn.remote_port,
            Direction::Inbound => conn.local_port,
        };
        let sighting = Sighting {
            time: record.last_seen,
            host: &self.host,
            ip: conn.peer,
            direction: conn.direction,
            class,
            port: (port != 0).then_some(port),
            protocol: conn.protocol,
            process: conn.process,
            owner: conn.owner,
            netns: conn.netns.map(|id| id.0),
        };
        match follow.write(&sighting) {
            Sent::Queued => {}
            Sent::Dropped => self.metrics.follow_dropped(),
            Sent::Closed => self.follow = None,
        }
    }

    /// Starts writing `--follow` lines, queued until now; called once
    /// netmon is confined, since the writer is a thread of its own.
    pub fn start_follow(&mut self) -> anyhow::Result<()> {
        match &mut self.follow {
            Some(follow) => follow
                .start()
                .context("--follow: cannot start the thread that writes its lines"),
            None => Ok(()),
        }
    }

    /// Says how many `--follow` lines the reader missed since it last said.
    pub fn warn_if_follow_dropped(&mut self) {
        if let Some(follow) = &mut self.follow {
            follow.warn_if_dropped();
        }
    }

    /// A new peer the full set could not take.
    pub fn dropped(&self) {
        self.metrics.dropped();
    }

    /// A checkpoint attempt; `lost` counts this run's losses.
    pub fn checkpointed(&self, ok: bool, took: Duration, lost: Losses) {
        self.metrics.checkpointed(ok, took, lost);
    }
}
