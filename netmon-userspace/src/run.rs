//! `netmon run`: attach, fold connections into the peer set, checkpoint.
//!
//! One tokio task on one thread does everything: the ring buffer (or the
//! proc poller), the checkpoint timer and the signals are branches of one
//! `select!`, so the peer set needs no locking.
use std::{
    fs::{self, DirBuilder},
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use log::{debug, info, warn};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    cli::{OnCorrupt, RunArgs},
    ebpf::{
        AttachMode, EbpfCollector,
        events::{BATCH, register},
        ladder::{self, Collector, Env},
    },
    lockfile,
    observe::{Bound, Observers},
    peer::Connection,
    privilege,
    procnet::{Destroyed, Liveness, Scanner},
    report::Directions,
    store::{self, FileFormat, LoadError, Snapshot},
    time::UnixTime,
};

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    raise_memlock_limit();
    refuse_symlink(&args.output)?;
    create_parent_dir(&args.output)?;
    warn_if_others_can_write(&args.output);
    // Held until exit: one writer per file.
    let _lock = lockfile::acquire(&args.output)?;
    store::remove_stale_temp_files(&args.output);
    let snapshot = load_existing(&args.output, args.on_corrupt)?;
    // Single-threaded on purpose: capabilities are per thread, and dropping
    // them after start-up must cover every thread netmon has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(collect(args, snapshot))
}

/// A symlink at the output path is someone trying to make root write
/// elsewhere; netmon neither reads through it nor replaces it blindly.
fn refuse_symlink(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "--output {} is a symlink; refusing to follow it (remove it or point --output at a regular file)",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Anyone who can write the directory can swap the checkpoint file.
fn warn_if_others_can_write(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(meta) = fs::metadata(dir)
        && meta.permissions().mode() & 0o002 != 0
    {
        warn!(
            "{} is writable by every user: anyone can replace the checkpoint; use a directory only root can write",
            dir.display()
        );
    }
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

fn load_existing(path: &Path, on_corrupt: OnCorrupt) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    let loaded = match store::load(path) {
        Err(LoadError::Corrupt { .. }) if on_corrupt == OnCorrupt::Backup => {
            let backup = store::backup_corrupt(path)?;
            warn!(
                "{}: corrupt; moved it to {} and starting fresh",
                path.display(),
                backup.display()
            );
            return Ok(Snapshot::default());
        }
        other => other?,
    };
    match loaded {
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
                "{}: continuing from {} peers (loaded in {} ms)",
                path.display(),
                snapshot.peers.len(),
                started.elapsed().as_millis()
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
    /// `--max-peers`: beyond it new peers are dropped, not stored, so a
    /// flood of addresses cannot exhaust memory.
    max_peers: usize,
    /// New peers dropped at the limit: in this run, and when last warned.
    dropped: u64,
    dropped_warned: u64,
    /// Metrics and `--follow`, told of every recorded connection.
    observers: Observers,
}

impl State {
    /// Folds one connection in, as seen at `now` (read once per batch:
    /// times are in seconds, and a clock read per event is wasted work).
    fn record(&mut self, conn: &Connection, connections: u64, now: u64) {
        let recorded = self.snapshot.peers.record_within(
            conn,
            connections,
            now,
            self.max_peers,
            Directions::of,
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
    fn warn_if_dropped(&mut self) {
        if self.dropped > self.dropped_warned {
            warn!(
                "--max-peers {} reached: {} new peers dropped since the last checkpoint ({} in this run)",
                self.max_peers,
                self.dropped - self.dropped_warned,
                self.dropped
            );
            self.dropped_warned = self.dropped;
        }
    }

    /// Writes a checkpoint and logs how long it took, at `level`.
    fn checkpoint(&mut self, lost: u64, level: log::Level) -> anyhow::Result<()> {
        self.snapshot.lost_events = self.lost_before + lost;
        let started = Instant::now();
        let written = store::write_checkpoint(
            &self.output,
            &self.snapshot,
            &self.host,
            UnixTime::now().secs(),
        );
        self.observers
            .checkpointed(written.is_ok(), started.elapsed(), lost);
        written?;
        log::log!(
            level,
            "checkpoint: {} peers in {} ms ({} lost events)",
            self.snapshot.peers.len(),
            started.elapsed().as_millis(),
            self.snapshot.lost_events
        );
        Ok(())
    }

    /// A periodic checkpoint: failures are logged (once per distinct error)
    /// and retried at the next one, while collection goes on in memory.
    fn checkpoint_or_warn(&mut self, lost: u64, level: log::Level) {
        match self.checkpoint(lost, level) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!("checkpoint to {} works again", self.output.display());
                }
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
    let bound = Bound::bind(args.metrics)?;
    let proc_net = args.proc_net.as_path();
    let env = Env::new(proc_net, args.transport, args.ring_buffer * 1024);
    let (mut collector, skipped) = ladder::climb(args.mode, &env)?;
    for rung in &skipped {
        info!("skipped {}: {:#}", rung.mode, rung.reason);
    }
    let mode = collector.mode();
    info!("mode: {mode}");
    let host = hostname();
    let observers = Observers::start(bound, mode, &snapshot.peers, args.follow(), &host)?;
    let mut state = State {
        lost_before: snapshot.lost_events,
        snapshot: Snapshot {
            mode: Some(mode.to_string()),
            ..snapshot
        },
        host,
        output: args.output.clone(),
        last_error: None,
        max_peers: usize::try_from(args.max_peers).unwrap_or(usize::MAX),
        dropped: 0,
        dropped_warned: 0,
        observers,
    };

    // Subscribed before the start-up scan, so that no socket closes
    // unseen in between.
    let mut scanner = Scanner::open(proc_net, args.socket_tables)?;
    let mut destroyed = match mode {
        AttachMode::Proc => subscribe(&mut scanner)?,
        _ => None,
    };
    info!("socket tables: {}", scanner.describe());

    // Connections still open from before netmon started, scanned after
    // attaching so that nothing opened in between is missed. They are
    // recorded as peers but not counted: counts are connections seen
    // opening, and a restart would otherwise count every surviving
    // connection again. Closed ones (TIME_WAIT) are left out: the run
    // before this one, if any, saw them.
    let now = UnixTime::now().secs();
    scanner
        .scan(|conn, liveness| {
            if liveness == Liveness::Open {
                state.record(conn, 0, now);
            }
        })
        .context("start-up scan of the socket tables")?;
    // The first checkpoint is not allowed to fail: a bad --output should
    // stop netmon now, not after a day of collecting.
    let lost = settle(&mut collector, &mut state);
    state.checkpoint(lost, log::Level::Info)?;
    drop_capabilities(mode);
    info!(
        "ready: collecting in {mode} mode, {} peers, writing {}",
        state.snapshot.peers.len(),
        args.output.display()
    );

    let mut checkpoints = interval(Duration::from_secs(args.interval));
    checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checkpoints.tick().await;
    let mut polls = interval(poll_interval(args.poll_interval, destroyed.is_some()));
    polls.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            result = next_events(&mut collector, &mut state) => result?,
            ready = destroyed_ready(&mut destroyed) => {
                ready.context("waiting for sock_diag notifications")?;
                fold_destroyed(&mut scanner, &mut destroyed, &mut state);
            }
            _ = polls.tick(), if matches!(collector, Collector::Proc) => {
                if let Err(err) = poll(&mut scanner, &mut destroyed, &mut state) {
                    warn!("polling {}: {err}", proc_net.display());
                }
            }
            _ = checkpoints.tick() => {
                warn_if_overflowed(&mut scanner);
                let lost = settle(&mut collector, &mut state);
                warn_if_lost(lost, &state);
                state.warn_if_dropped();
                state.checkpoint_or_warn(lost, log::Level::Debug);
            }
            _ = sighup.recv() => {
                info!("SIGHUP: checkpoint");
                let lost = settle(&mut collector, &mut state);
                state.checkpoint_or_warn(lost, log::Level::Info);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    if matches!(collector, Collector::Proc)
        && let Err(err) = poll(&mut scanner, &mut destroyed, &mut state)
    {
        warn!("final poll of {}: {err}", proc_net.display());
    }
    warn_if_overflowed(&mut scanner);
    let lost = settle(&mut collector, &mut state);
    state.warn_if_dropped();
    state
        .checkpoint(lost, log::Level::Info)
        .context("final checkpoint failed; the previous checkpoint is intact")?;
    info!(
        "stopped: {} peers written to {}",
        state.snapshot.peers.len(),
        args.output.display()
    );
    Ok(())
}

/// Everything privileged (attaching, opening files) is done: from here on
/// netmon runs with no capabilities.
fn drop_capabilities(mode: AttachMode) {
    match privilege::effective() {
        Ok(0) if mode == AttachMode::Proc => {
            info!("running without capabilities: proc mode needs none");
            return;
        }
        Ok(0) => return,
        _ => {}
    }
    match privilege::drop_all() {
        Ok(()) => {
            info!("dropped all capabilities: attached programs and open files are all it needs now")
        }
        Err(err) => {
            warn!("could not drop capabilities ({err}); running with the ones it started with")
        }
    }
}

/// `--poll-interval`, or its default: what polls are for depends on
/// whether the kernel also reports the sockets closed between them.
fn poll_interval(flag: Option<u64>, notified: bool) -> Duration {
    match (flag, notified) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, true) => Duration::from_secs(1),
        (None, false) => Duration::from_millis(100),
    }
}

/// A proc-mode poll: each connection new since the previous poll counts,
/// except one recovered after notifications were lost. Notifications
/// waiting are read first: a socket this poll no longer shows must meet
/// the poll that did show it, or it would count twice.
fn poll(
    scanner: &mut Scanner,
    destroyed: &mut Option<AsyncFd<Destroyed>>,
    state: &mut State,
) -> io::Result<()> {
    fold_destroyed(scanner, destroyed, state);
    let now = UnixTime::now().secs();
    scanner.scan(|conn, liveness| state.record(conn, counts(liveness), now))
}

fn counts(liveness: Liveness) -> u64 {
    u64::from(liveness != Liveness::Recovered)
}

/// proc mode over netlink hears of every socket the kernel destroys, so
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

/// Counts each destroyed socket that no poll saw (nothing to do without a
/// subscription).
fn fold_destroyed(
    scanner: &mut Scanner,
    destroyed: &mut Option<AsyncFd<Destroyed>>,
    state: &mut State,
) {
    let Some(destroyed) = destroyed else {
        return;
    };
    let now = UnixTime::now().secs();
    if let Err(err) = scanner.destroyed(destroyed.get_mut(), |conn, liveness| {
        state.record(conn, counts(liveness), now);
    }) {
        warn!("reading sock_diag notifications: {err}");
    }
}

fn warn_if_overflowed(scanner: &mut Scanner) {
    let overflows = scanner.take_overflows();
    if overflows > 0 {
        warn!(
            "sock_diag notifications were lost {overflows} times since the last checkpoint (receive buffer full); the next poll recovers their peers from TIME_WAIT sockets, uncounted"
        );
    }
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
        ready = events.readable() => ready.context("waiting for eBPF events")?,
        guard = logger => {
            let mut guard = guard.context("waiting on the eBPF log buffer")?;
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }
    drain(ebpf, state);
    Ok(())
}

/// Folds every waiting event into the set.
fn drain(ebpf: &mut EbpfCollector, state: &mut State) {
    let now = UnixTime::now().secs();
    let malformed = ebpf.drain(|conn, connections| state.record(conn, connections, now));
    if malformed > 0 {
        warn!("{malformed} records were not events: eBPF object and binary mismatch?");
    }
}

/// Brings the set up to date before a checkpoint: every waiting event and
/// every connection only the kernel's dedup map has counted so far.
/// Returns the events lost in this run.
fn settle(collector: &mut Collector, state: &mut State) -> u64 {
    let Collector::Ebpf(ebpf) = collector else {
        return 0;
    };
    drain(ebpf, state);
    let now = UnixTime::now().secs();
    if let Err(err) = ebpf.harvest(|conn, connections| state.record(conn, connections, now)) {
        warn!("{err:#}");
    }
    ebpf.lost_events().unwrap_or_else(|err| {
        warn!("{err:#}");
        0
    })
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
