//! proc mode: polling the socket tables, and hearing of the sockets the
//! kernel destroys between polls.
//!
//! Its ordering rules are the order of what [`ProcCollector`] does:
//! - [`start`](ProcCollector::start) subscribes to destroyed sockets before
//!   the start-up scan, so that no socket closes unseen in between;
//! - each poll first reads the notifications waiting, so that a socket the
//!   poll no longer shows meets the poll that did show it, and is not
//!   counted twice;
//! - after notifications were lost, the next poll also reads TIME_WAIT
//!   sockets ([`Scanner`] keeps track), uncounted, and the next checkpoint
//!   says so;
//! - at the end, the last poll is followed by the notifications of every
//!   socket destroyed before it, which the kernel sends some time after
//!   the socket has left the tables ([`Scanner::settle`]).
//!
//! Connections go to a `record(connection, connections, now)` callback:
//! the connections it counts, and the time it was read at (Unix seconds,
//! read once per batch).
use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

/// How long the end waits for the kernel's last notifications: they
/// normally take milliseconds.
const SETTLE_PATIENCE: Duration = Duration::from_secs(2);

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::{
    io::unix::AsyncFd,
    time::{Interval, MissedTickBehavior, interval},
};

use super::{Destroyed, Liveness, Scanner};
use crate::{
    ebpf::events::{BATCH, register},
    peer::Connection,
    time::UnixTime,
};

/// The socket tables of proc mode, and what it hears between polls.
pub struct ProcCollector {
    scanner: Scanner,
    /// Notifications of the sockets the kernel destroys, where it sends
    /// them.
    destroyed: Option<AsyncFd<Destroyed>>,
    /// Between polls.
    period: Duration,
    /// Started by the first wait, so that the first poll comes as soon as
    /// collecting does.
    polls: Option<Interval>,
    /// `--proc-net`, for the log.
    proc_net: PathBuf,
}

/// What woke a [`ProcCollector`].
#[derive(Clone, Copy, Debug)]
pub enum Arrived {
    Notifications,
    PollDue,
}

impl ProcCollector {
    /// Subscribes to destroyed sockets, then records the connections open
    /// in `scanner`'s tables; `poll_interval` is `--poll-interval`.
    pub fn start(
        mut scanner: Scanner,
        proc_net: &Path,
        poll_interval: Option<Duration>,
        record: &mut impl FnMut(&Connection, u64, u64),
    ) -> anyhow::Result<Self> {
        let destroyed = subscribe(&mut scanner)?;
        startup_scan(&mut scanner, record)?;
        Ok(Self {
            scanner,
            period: default_poll_interval(poll_interval, destroyed.is_some()),
            destroyed,
            polls: None,
            proc_net: proc_net.to_owned(),
        })
    }

    /// Waits until notifications are waiting or a poll is due.
    pub async fn ready(&mut self) -> anyhow::Result<Arrived> {
        let period = self.period;
        let polls = self.polls.get_or_insert_with(|| {
            let mut polls = interval(period);
            polls.set_missed_tick_behavior(MissedTickBehavior::Skip);
            polls
        });
        tokio::select! {
            ready = destroyed_ready(&mut self.destroyed) => {
                ready.context("waiting for sock_diag notifications")?;
                Ok(Arrived::Notifications)
            }
            _ = polls.tick() => Ok(Arrived::PollDue),
        }
    }

    /// Reads what woke it.
    pub fn fold(&mut self, arrived: Arrived, record: &mut impl FnMut(&Connection, u64, u64)) {
        match arrived {
            Arrived::Notifications => self.fold_destroyed(record),
            Arrived::PollDue => {
                if let Err(err) = self.poll(record) {
                    warn!("polling {}: {err}", self.proc_net.display());
                }
            }
        }
    }

    /// Says how often notifications were lost since the last call.
    pub fn warn_if_overflowed(&mut self) {
        let overflows = self.scanner.take_overflows();
        if overflows > 0 {
            warn!(
                "sock_diag notifications were lost {overflows} times since the last checkpoint (receive buffer full); the next poll recovers their peers from TIME_WAIT sockets, uncounted"
            );
        }
    }

    /// A last poll before the final checkpoint, and the notifications of
    /// what closed before it.
    pub fn finish(&mut self, record: &mut impl FnMut(&Connection, u64, u64)) {
        if let Err(err) = self.poll(record) {
            warn!("final poll of {}: {err}", self.proc_net.display());
        }
        self.settle(record);
        self.warn_if_overflowed();
    }

    /// Each connection new since the previous poll counts, except one
    /// recovered after notifications were lost. Notifications waiting are
    /// read first (see the module's ordering rules).
    fn poll(&mut self, record: &mut impl FnMut(&Connection, u64, u64)) -> io::Result<()> {
        self.fold_destroyed(record);
        let now = UnixTime::now().secs();
        self.scanner
            .scan(|conn, liveness| record(conn, counts(liveness), now))
    }

    /// Counts each socket destroyed before now that no poll saw, waiting
    /// for the kernel to have sent them all.
    fn settle(&mut self, record: &mut impl FnMut(&Connection, u64, u64)) {
        let Some(destroyed) = &mut self.destroyed else {
            return;
        };
        let now = UnixTime::now().secs();
        let started = std::time::Instant::now();
        let settled =
            self.scanner
                .settle(destroyed.get_mut(), SETTLE_PATIENCE, |conn, liveness| {
                    record(conn, counts(liveness), now);
                });
        match settled {
            Ok(true) => debug!(
                "the kernel's last notifications came in {:?}",
                started.elapsed()
            ),
            Ok(false) => warn!(
                "the kernel had not sent every notification of a socket closed before the last poll after {SETTLE_PATIENCE:?}: some connections may be missing"
            ),
            Err(err) => warn!("reading the last sock_diag notifications: {err}"),
        }
    }

    /// Counts each destroyed socket that no poll saw.
    fn fold_destroyed(&mut self, record: &mut impl FnMut(&Connection, u64, u64)) {
        let Some(destroyed) = &mut self.destroyed else {
            return;
        };
        let now = UnixTime::now().secs();
        if let Err(err) = self
            .scanner
            .destroyed(destroyed.get_mut(), |conn, liveness| {
                record(conn, counts(liveness), now);
            })
        {
            warn!("reading sock_diag notifications: {err}");
        }
    }
}

/// Records the connections still open from before netmon started, the
/// start-up scan of every mode. They are recorded as peers but not
/// counted: counts are connections seen opening, and a restart would
/// otherwise count every surviving connection again. Closed ones
/// (TIME_WAIT) are left out: the run before this one, if any, saw them.
pub fn startup_scan(
    scanner: &mut Scanner,
    record: &mut impl FnMut(&Connection, u64, u64),
) -> anyhow::Result<()> {
    info!("socket tables: {}", scanner.describe());
    let now = UnixTime::now().secs();
    scanner
        .scan(|conn, liveness| {
            if liveness == Liveness::Open {
                record(conn, 0, now);
            }
        })
        .context("start-up scan of the socket tables")
}

fn counts(liveness: Liveness) -> u64 {
    u64::from(liveness != Liveness::Recovered)
}

/// `--poll-interval`, or its default: what polls are for depends on
/// whether the kernel also reports the sockets closed between them.
fn default_poll_interval(flag: Option<Duration>, notified: bool) -> Duration {
    match (flag, notified) {
        (Some(period), _) => period,
        (None, true) => Duration::from_secs(1),
        (None, false) => Duration::from_millis(100),
    }
}

/// Over netlink, proc mode hears of every socket the kernel destroys, so
/// it sees connections that open and close between polls. Where the
/// kernel cannot tell (the text tables, a kernel before 4.10), polls read
/// TIME_WAIT sockets instead, and `--socket-tables auto` says why.
fn subscribe(scanner: &mut Scanner) -> anyhow::Result<Option<AsyncFd<Destroyed>>> {
    match scanner.subscribe() {
        Ok(destroyed) => register(destroyed)
            .map(Some)
            .context("cannot poll the sock_diag notification socket"),
        Err(err) => {
            info!("no notifications of closed sockets ({err}): polls read TIME_WAIT sockets");
            Ok(None)
        }
    }
}

/// Waits until notifications are waiting, then [`BATCH`] more so that a
/// storm's notifications are read many at a time. Never resolves without
/// a subscription.
async fn destroyed_ready(destroyed: &mut Option<AsyncFd<Destroyed>>) -> io::Result<()> {
    let Some(destroyed) = destroyed else {
        return std::future::pending().await;
    };
    destroyed.readable().await?.retain_ready();
    tokio::time::sleep(BATCH).await;
    // Cleared before reading: whatever arrives meanwhile wakes us again.
    destroyed.readable().await?.clear_ready();
    Ok(())
}
