//! `netmon run`: attach, fold connections into the peer set, checkpoint.
//!
//! One tokio task on one thread does everything: the ring buffer (or the
//! proc poller), the checkpoint timer and the signals are branches of one
//! `select!`, so the peer set needs no locking.
use std::{fs, io, time::Duration};

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    cli::RunArgs,
    collect::{
        AttachMode, Checkpointer, Recorder,
        ladder::{self, Collector, Env},
    },
    ebpf::{
        EbpfCollector,
        events::{BATCH, register},
    },
    observe::{Bound, Observers},
    privilege,
    procnet::{Destroyed, Liveness, Scanner},
    store::{self, Snapshot},
};

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    raise_memlock_limit();
    // Held until exit: one writer per file.
    let (_lock, snapshot) = store::open_output(&args.output, args.on_corrupt)?;
    // Single-threaded on purpose: capabilities are per thread, and dropping
    // them after start-up must cover every thread netmon has.
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
    let mut checkpointer = Checkpointer::new(args.output.clone(), host, snapshot.lost_events);
    let snapshot = Snapshot {
        mode: Some(mode.to_string()),
        ..snapshot
    };
    let max_peers = usize::try_from(args.max_peers).unwrap_or(usize::MAX);
    let mut recorder = Recorder::new(snapshot, max_peers, observers);

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
    let now = store::unix_now();
    scanner
        .scan(|conn, liveness| {
            if liveness == Liveness::Open {
                recorder.record(conn, 0, now);
            }
        })
        .context("start-up scan of the socket tables")?;
    // The first checkpoint is not allowed to fail: a bad --output should
    // stop netmon now, not after a day of collecting.
    let lost = settle(&mut collector, &mut recorder);
    checkpointer.checkpoint(&mut recorder, lost, log::Level::Info)?;
    drop_capabilities(mode);
    info!(
        "ready: collecting in {mode} mode, {} peers, writing {}",
        recorder.snapshot().peers.len(),
        args.output.display()
    );

    let mut checkpoints = interval(Duration::from_secs(args.interval));
    checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checkpoints.tick().await;
    let mut polls = interval(poll_interval(args.poll_interval, destroyed.is_some()));
    polls.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            result = next_events(&mut collector, &mut recorder) => result?,
            ready = destroyed_ready(&mut destroyed) => {
                ready.context("waiting for sock_diag notifications")?;
                fold_destroyed(&mut scanner, &mut destroyed, &mut recorder);
            }
            _ = polls.tick(), if matches!(collector, Collector::Proc) => {
                if let Err(err) = poll(&mut scanner, &mut destroyed, &mut recorder) {
                    warn!("polling {}: {err}", proc_net.display());
                }
            }
            _ = checkpoints.tick() => {
                warn_if_overflowed(&mut scanner);
                let lost = settle(&mut collector, &mut recorder);
                checkpointer.warn_if_lost(lost);
                recorder.warn_if_dropped();
                checkpointer.checkpoint_or_warn(&mut recorder, lost, log::Level::Debug);
            }
            _ = sighup.recv() => {
                info!("SIGHUP: checkpoint");
                let lost = settle(&mut collector, &mut recorder);
                checkpointer.checkpoint_or_warn(&mut recorder, lost, log::Level::Info);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    if matches!(collector, Collector::Proc)
        && let Err(err) = poll(&mut scanner, &mut destroyed, &mut recorder)
    {
        warn!("final poll of {}: {err}", proc_net.display());
    }
    warn_if_overflowed(&mut scanner);
    let lost = settle(&mut collector, &mut recorder);
    recorder.warn_if_dropped();
    checkpointer
        .checkpoint(&mut recorder, lost, log::Level::Info)
        .context("final checkpoint failed; the previous checkpoint is intact")?;
    info!(
        "stopped: {} peers written to {}",
        recorder.snapshot().peers.len(),
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
    recorder: &mut Recorder,
) -> io::Result<()> {
    fold_destroyed(scanner, destroyed, recorder);
    let now = store::unix_now();
    scanner.scan(|conn, liveness| recorder.record(conn, counts(liveness), now))
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
    recorder: &mut Recorder,
) {
    let Some(destroyed) = destroyed else {
        return;
    };
    let now = store::unix_now();
    if let Err(err) = scanner.destroyed(destroyed.get_mut(), |conn, liveness| {
        recorder.record(conn, counts(liveness), now);
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
async fn next_events(collector: &mut Collector, recorder: &mut Recorder) -> anyhow::Result<()> {
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
    drain(ebpf, recorder);
    Ok(())
}

/// Folds every waiting event into the set.
fn drain(ebpf: &mut EbpfCollector, recorder: &mut Recorder) {
    let now = store::unix_now();
    let malformed = ebpf.drain(|conn, connections| recorder.record(conn, connections, now));
    if malformed > 0 {
        warn!("{malformed} records were not events: eBPF object and binary mismatch?");
    }
}

/// Brings the set up to date before a checkpoint: every waiting event and
/// every connection only the kernel's dedup map has counted so far.
/// Returns the events lost in this run.
fn settle(collector: &mut Collector, recorder: &mut Recorder) -> u64 {
    let Collector::Ebpf(ebpf) = collector else {
        return 0;
    };
    drain(ebpf, recorder);
    let now = store::unix_now();
    if let Err(err) = ebpf.harvest(|conn, connections| recorder.record(conn, connections, now)) {
        warn!("{err:#}");
    }
    ebpf.lost_events().unwrap_or_else(|err| {
        warn!("{err:#}");
        0
    })
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
