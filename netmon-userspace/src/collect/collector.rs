//! The source of connections in this run: eBPF programs or proc mode's
//! poller, behind what the run loop asks of either: start, wait until
//! something arrived, fold it in, settle before a checkpoint, finish.
use anyhow::Context as _;
use log::warn;

use super::{Losses, RunConfig, ladder::Attached, recorder::Record};
use crate::{
    ebpf::EbpfCollector,
    procnet::{self, ProcCollector, Scanner},
    time::UnixTime,
};

/// Where connections come from (boxed: one per run, and either is large).
pub enum Collector {
    Ebpf(Box<EbpfCollector>),
    Proc(Box<ProcCollector>),
}

/// What woke a [`Collector`]; [`Collector::fold`] reads it.
pub enum Arrived {
    /// eBPF events (or log lines, which are already forwarded).
    Events,
    Proc(procnet::Arrived),
}

impl Collector {
    /// Opens the socket tables and records the connections already open.
    /// The eBPF programs were attached first, so that nothing opened in
    /// between is missed; proc mode subscribes first, for the same reason.
    pub fn start(
        attached: Attached,
        config: &RunConfig,
        recorder: &mut impl Record,
    ) -> anyhow::Result<Self> {
        let mut scanner = Scanner::open(&config.proc_net, config.socket_tables)?;
        let record = &mut |conn: &_, connections, now| recorder.record(conn, connections, now);
        match attached {
            Attached::Ebpf(mut ebpf) => {
                ebpf.watch_from(&config.proc_net);
                procnet::startup_scan(&mut scanner, record)?;
                Ok(Self::Ebpf(ebpf))
            }
            Attached::Proc => {
                let proc =
                    ProcCollector::start(scanner, &config.proc_net, config.poll_interval, record)?;
                Ok(Self::Proc(Box::new(proc)))
            }
        }
    }

    /// Waits until something arrived.
    pub async fn ready(&mut self) -> anyhow::Result<Arrived> {
        match self {
            Self::Ebpf(ebpf) => ebpf_ready(ebpf).await.map(|()| Arrived::Events),
            Self::Proc(proc) => proc.ready().await.map(Arrived::Proc),
        }
    }

    /// Folds what arrived into `recorder`.
    pub fn fold(&mut self, arrived: Arrived, recorder: &mut impl Record) {
        match (self, arrived) {
            (Self::Ebpf(ebpf), _) => drain(ebpf, recorder),
            (Self::Proc(proc), Arrived::Proc(arrived)) => {
                proc.fold(arrived, &mut |conn, connections, now| {
                    recorder.record(conn, connections, now)
                });
            }
            // Only an eBPF collector waits for events.
            (Self::Proc(_), Arrived::Events) => {}
        }
    }

    /// Folds what is waiting, without waiting for more: between the chunks
    /// of a checkpoint, so a large set's does not let the ring buffer (or
    /// proc mode's notifications of destroyed sockets) fill. Proc mode's
    /// polls wait for the next turn of the loop.
    pub fn drain_waiting(&mut self, recorder: &mut impl Record) {
        match self {
            Self::Ebpf(ebpf) => drain(ebpf, recorder),
            Self::Proc(proc) => proc.fold(procnet::Arrived::Notifications, &mut |conn, n, now| {
                recorder.record(conn, n, now)
            }),
        }
    }

    /// Brings the set up to date before a checkpoint: every waiting event
    /// and every connection only the kernel's dedup map has counted so far.
    /// Returns what this run lost (nothing in proc mode, whose polls are
    /// up to date when they return).
    pub fn settle(&mut self, recorder: &mut impl Record) -> Losses {
        let Self::Ebpf(ebpf) = self else {
            return Losses::default();
        };
        drain(ebpf, recorder);
        let now = UnixTime::now().secs();
        if let Err(err) = ebpf.harvest(|conn, connections| recorder.record(conn, connections, now))
        {
            warn!("{err:#}");
        }
        let read = |count: anyhow::Result<u64>| {
            count.unwrap_or_else(|err| {
                warn!("{err:#}");
                0
            })
        };
        Losses {
            events: read(ebpf.lost_events()),
            connections: read(ebpf.uncounted()),
        }
    }

    /// The capability the eBPF maps still need to be read, if any: the one
    /// netmon keeps when it drops the rest.
    pub fn keeps(&self) -> Option<u32> {
        match self {
            Self::Ebpf(ebpf) => ebpf.map_reads_need(),
            Self::Proc(_) => None,
        }
    }

    /// Says what proc mode lost since the last call: the events eBPF loses
    /// are counted by [`Collector::settle`].
    pub fn warn_if_overflowed(&mut self) {
        if let Self::Proc(proc) = self {
            proc.warn_if_overflowed();
        }
    }

    /// Settles for the final checkpoint, after a last poll in proc mode.
    pub fn finish(&mut self, recorder: &mut impl Record) -> Losses {
        if let Self::Proc(proc) = self {
            proc.finish(&mut |conn, connections, now| recorder.record(conn, connections, now));
        }
        self.settle(recorder)
    }
}

/// Waits for the ring buffer (or the eBPF log buffer, which it flushes) to
/// have data.
async fn ebpf_ready(ebpf: &mut EbpfCollector) -> anyhow::Result<()> {
    let events = &mut ebpf.events;
    let logger = ebpf.logger.as_mut();
    let logger = async move {
        match logger {
            Some(logger) => logger.readable_mut().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        ready = events.readable() => ready.context("waiting for eBPF events")?,
        guard = logger => {
            let mut guard = guard.context("waiting on the eBPF log buffer")?;
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }
    Ok(())
}

/// Folds every waiting event into the set.
fn drain(ebpf: &mut EbpfCollector, recorder: &mut impl Record) {
    let now = UnixTime::now().secs();
    let malformed = ebpf.drain(|conn, connections| recorder.record(conn, connections, now));
    if malformed > 0 {
        warn!("{malformed} records were not events: eBPF object and binary mismatch?");
    }
}
