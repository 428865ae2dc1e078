//! `netmon run`: attach, fold connections into the peer set, checkpoint.
//!
//! One tokio task on one thread does everything: the ring buffer (or the
//! proc poller), the checkpoint timer and the signals are branches of one
//! `select!`, so the peer set needs no locking.
use std::{
    fs::{self, DirBuilder},
    io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    cli::RunArgs,
    ebpf::{
        self, EbpfCollector,
        ladder::{self, Collector, Env},
    },
    peer::{Connection, Source},
    procnet::Scanner,
    store::{self, Count, FileFormat, Snapshot},
};

/// The socket tables of netmon's own network namespace.
const PROC_NET: &str = "/proc/net";

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    raise_memlock_limit();
    let snapshot = load_existing(&args.output)?;
    create_parent_dir(&args.output)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(collect(args, snapshot))
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; later ones use
/// memory cgroups and don't need this, so failing is not an error.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK ({}); only kernels before 5.11 need it",
            io::Error::last_os_error()
        );
    }
}

fn load_existing(path: &Path) -> anyhow::Result<Snapshot> {
    match store::load(path)? {
        None => Ok(Snapshot::default()),
        Some((snapshot, FileFormat::AddressList)) => {
            info!(
                "{}: read {} peers from an address list; the next checkpoint rewrites it in netmon's format",
                path.display(),
                snapshot.peers.len()
            );
            Ok(snapshot)
        }
        Some((snapshot, FileFormat::Checkpoint)) => {
            info!(
                "{}: continuing from {} peers",
                path.display(),
                snapshot.peers.len()
            );
            Ok(snapshot)
        }
    }
}

fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| format!("cannot create directory {} for --output", dir.display())),
        _ => Ok(()),
    }
}

/// The peer set and what a checkpoint needs besides it.
struct State {
    snapshot: Snapshot,
    /// Lost events recorded by earlier runs on this file.
    lost_before: u64,
    host: String,
    output: PathBuf,
    /// The last checkpoint error, so a persistent one is logged once.
    last_error: Option<String>,
}

impl State {
    fn record(&mut self, conn: &Connection, count: Count) {
        let now = store::unix_now();
        if self.snapshot.peers.record(conn, count, now) {
            debug!(
                "new peer {} ({}, {:?})",
                conn.peer, conn.direction, conn.source
            );
        }
    }

    fn checkpoint(&mut self, lost: u64) -> anyhow::Result<()> {
        self.snapshot.lost_events = self.lost_before + lost;
        let bytes = store::to_json(&self.snapshot, &self.host, store::unix_now())?;
        store::write_atomically(&self.output, &bytes)
    }

    /// A periodic checkpoint: failures are logged (once per distinct error)
    /// and retried at the next one, while collection goes on in memory.
    fn checkpoint_or_warn(&mut self, lost: u64) {
        match self.checkpoint(lost) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!("checkpoint to {} works again", self.output.display());
                }
                debug!(
                    "checkpoint: {} peers, {} lost events",
                    self.snapshot.peers.len(),
                    self.snapshot.lost_events
                );
            }
            Err(err) => {
                let text = format!("{err:#}");
                if self.last_error.as_ref() != Some(&text) {
                    warn!("{text}; keeping peers in memory and retrying at the next checkpoint");
                }
                self.last_error = Some(text);
            }
        }
    }
}

async fn collect(args: &RunArgs, snapshot: Snapshot) -> anyhow::Result<()> {
    // Before anything announces readiness: a SIGTERM that arrives early
    // must still end in a checkpoint, not in the default action.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let env = Env::new(Path::new(PROC_NET));
    let (mut collector, skipped) = ladder::climb(args.mode, &env)?;
    for rung in &skipped {
        info!("skipped {}: {:#}", rung.mode, rung.reason);
    }
    let mode = collector.mode();
    info!("mode: {mode}");
    let mut state = State {
        lost_before: snapshot.lost_events,
        snapshot: Snapshot {
            mode: Some(mode.to_string()),
            ..snapshot
        },
        host: hostname(),
        output: args.output.clone(),
        last_error: None,
    };

    // Connections opened before netmon started, after attaching so that
    // nothing opened in between is missed.
    let mut scanner = Scanner::new(PROC_NET);
    scan(&mut scanner, &mut state).context("start-up scan of the socket tables")?;
    // The first checkpoint is not allowed to fail: a bad --output should
    // stop netmon now, not after a day of collecting.
    state.checkpoint(lost_events(&collector))?;
    info!(
        "ready: collecting in {mode} mode, {} peers, writing {}",
        state.snapshot.peers.len(),
        args.output.display()
    );

    let mut checkpoints = interval(Duration::from_secs(args.interval));
    checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checkpoints.tick().await;
    let mut polls = interval(Duration::from_millis(args.poll_interval));
    polls.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            result = next_events(&mut collector, &mut state) => result?,
            _ = polls.tick(), if matches!(collector, Collector::Proc) => {
                if let Err(err) = scan(&mut scanner, &mut state) {
                    warn!("polling {PROC_NET}: {err}");
                }
            }
            _ = checkpoints.tick() => {
                let lost = lost_events(&collector);
                warn_if_lost(lost, &state);
                state.checkpoint_or_warn(lost);
            }
            _ = sighup.recv() => {
                info!("SIGHUP: checkpoint");
                state.checkpoint_or_warn(lost_events(&collector));
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    if let Collector::Ebpf(ebpf) = &mut collector {
        drain(ebpf, &mut state);
    } else if let Err(err) = scan(&mut scanner, &mut state) {
        warn!("final poll of {PROC_NET}: {err}");
    }
    let lost = lost_events(&collector);
    state
        .checkpoint(lost)
        .context("final checkpoint failed; the previous checkpoint is intact")?;
    info!(
        "stopped: {} peers written to {}",
        state.snapshot.peers.len(),
        args.output.display()
    );
    Ok(())
}

fn scan(scanner: &mut Scanner, state: &mut State) -> io::Result<()> {
    scanner.scan(|conn| state.record(conn, Count::Yes))
}

/// Waits for the ring buffer (or the eBPF log buffer) to have data and
/// folds it in. Never resolves in proc mode.
async fn next_events(collector: &mut Collector, state: &mut State) -> anyhow::Result<()> {
    let Collector::Ebpf(ebpf) = collector else {
        return std::future::pending().await;
    };
    let events = &mut ebpf.events;
    let logger = ebpf.logger.as_mut();
    let logger = async move {
        match logger {
            Some(logger) => logger.readable_mut().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        guard = events.readable_mut() => {
            let mut guard = guard.context("waiting on the ring buffer")?;
            guard.clear_ready();
        }
        guard = logger => {
            let mut guard = guard.context("waiting on the eBPF log buffer")?;
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }
    drain(ebpf, state);
    Ok(())
}

/// Folds every event waiting in the ring buffer into the set.
fn drain(ebpf: &mut EbpfCollector, state: &mut State) {
    let attribution_only = ebpf.accept_is_attribution_only;
    let ring = ebpf.events.get_mut();
    while let Some(item) = ring.next() {
        let Some(event) = ebpf::read_event(&item) else {
            warn!(
                "ring buffer record of {} bytes is not an event; eBPF object and binary mismatch?",
                item.len()
            );
            continue;
        };
        match Connection::try_from(&event) {
            Ok(conn) => {
                let count = if attribution_only && conn.source == Source::KretprobeAccept {
                    Count::AttributionOnly
                } else {
                    Count::Yes
                };
                state.record(&conn, count);
            }
            Err(err) => warn!("{err:#}"),
        }
    }
}

fn lost_events(collector: &Collector) -> u64 {
    match collector {
        Collector::Ebpf(ebpf) => ebpf.lost_events().unwrap_or_else(|err| {
            warn!("{err:#}");
            0
        }),
        Collector::Proc => 0,
    }
}

fn warn_if_lost(lost: u64, state: &State) {
    let before = state.snapshot.lost_events.saturating_sub(state.lost_before);
    if lost > before {
        warn!(
            "{} events lost since the last checkpoint (ring buffer full); {lost} in this run",
            lost - before
        );
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
