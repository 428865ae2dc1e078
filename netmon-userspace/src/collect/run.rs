//! `netmon run`: attach, fold connections into the peer set, checkpoint.
//!
//! One tokio task on one thread does everything with the set: the
//! collector, the checkpoint timer, the chunks of a checkpoint under way and
//! the signals are branches of one `select!`, so the peer set needs no
//! locking. Only the checkpoint's bytes leave it, for the writer thread.
use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use log::{debug, info, warn};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use super::{
    Checkpointer, Collector, Losses, Recorder, Step,
    ladder::{self, Env},
    startup::{self, Backlog},
};
use crate::{
    ebpf::events::TransportRequest,
    follow::LineFormat,
    mode::{AttachMode, ModeRequest},
    observe::{Bound, Observers},
    privilege,
    procnet::TablesRequest,
    store::{self, OnCorrupt, Snapshot},
};

/// What `netmon run` is asked to do.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The checkpoint file.
    pub output: PathBuf,
    /// Between checkpoints.
    pub interval: Duration,
    pub mode: ModeRequest,
    /// Between proc mode's polls; `None` picks a default.
    pub poll_interval: Option<Duration>,
    pub transport: TransportRequest,
    /// The eBPF ring buffer's size.
    pub ring_bytes: u32,
    pub on_corrupt: OnCorrupt,
    /// Most peers to keep.
    pub max_peers: usize,
    /// How long to wait for another netmon's lock on `output`.
    pub lock_wait: Duration,
    /// The socket tables' directory, such as `/proc/net`.
    pub proc_net: PathBuf,
    pub socket_tables: TablesRequest,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// Print each new sighting on stdout, in this format.
    pub follow: Option<LineFormat>,
}

pub fn run(config: &RunConfig) -> anyhow::Result<()> {
    raise_memlock_limit();
    // The cheap checks, before attaching: a wrong --output stops netmon at
    // once. Locking and loading it wait until the programs are attached.
    let target = store::check_output(&config.output)?;
    // Single-threaded on purpose: capabilities are per thread, and dropping
    // them after start-up must cover every thread netmon has.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(collect(config, target))
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

async fn collect(config: &RunConfig, target: store::Target) -> anyhow::Result<()> {
    // Before anything announces readiness: a SIGTERM that arrives early
    // must still end in a checkpoint, not in the default action.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let bound = Bound::bind(config.metrics)?;
    let env = Env::new(&config.proc_net, config.transport, config.ring_bytes);
    let (attached, skipped) = ladder::climb(config.mode, &env)?;
    for rung in &skipped {
        info!("skipped {}: {:#}", rung.mode, rung.reason);
    }
    let mode = attached.mode();
    info!("mode: {mode}");
    // Attached: from here on connections are held, in a backlog until the
    // file (which a netmon being restarted may still be writing) is in.
    let mut backlog = Backlog::default();
    let mut collector = Collector::start(attached, config, &mut backlog)?;
    let stop = async {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        }
    };
    let (output, snapshot) =
        startup::load_while_collecting(target, config, &mut collector, &mut backlog, stop).await?;
    let host = hostname();
    let observers = Observers::start(bound, mode, &snapshot.peers, config.follow, &host)?;
    let lost_before = Losses {
        events: snapshot.lost_events,
        connections: snapshot.uncounted_connections,
    };
    let mut checkpointer = Checkpointer::new(output, host, lost_before);
    let snapshot = Snapshot {
        mode: Some(mode.to_string()),
        ..snapshot
    };
    let mut recorder = Recorder::new(snapshot, config.max_peers, observers);
    backlog.replay(&mut recorder);
    // The first checkpoint may fail only as later ones may, on a disk that
    // is full or read-only: a bad --output should stop netmon now, not
    // after a day of collecting.
    let lost = collector.settle(&mut recorder);
    checkpointer.first_checkpoint(&mut recorder, lost)?;
    confine(&config.output, mode, collector.keeps())?;
    recorder.observers_mut().start_follow()?;
    checkpointer.start_writer()?;
    info!(
        "ready: collecting in {mode} mode, {}, writing {}",
        crate::words::count(recorder.snapshot().peers.len() as u64, "peer", "peers"),
        config.output.display()
    );

    let mut checkpoints = interval(config.interval);
    checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checkpoints.tick().await;
    loop {
        // In this order: what happens rarely first, so a storm of events
        // cannot starve it; a checkpoint's chunks before the events, as
        // the events waiting are drained after each chunk anyway.
        tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                info!("SIGHUP: checkpoint");
                let lost = collector.settle(&mut recorder);
                checkpointer.begin(&mut recorder, lost, log::Level::Info)?;
            }
            _ = checkpoints.tick() => {
                collector.warn_if_overflowed();
                let lost = collector.settle(&mut recorder);
                checkpointer.warn_if_lost(lost);
                recorder.warn_if_dropped();
                recorder.observers_mut().warn_if_follow_dropped();
                checkpointer.begin(&mut recorder, lost, log::Level::Debug)?;
            }
            step = checkpointer.step(), if checkpointer.busy() => match step {
                Step::Room(permit) => {
                    checkpointer.send_chunk(permit, &recorder);
                    collector.drain_waiting(&mut recorder);
                }
                Step::Written(written) => {
                    if let Some(level) = checkpointer.finished(written, &recorder)? {
                        let lost = collector.settle(&mut recorder);
                        checkpointer.begin(&mut recorder, lost, level)?;
                    }
                }
            },
            arrived = collector.ready() => collector.fold(arrived?, &mut recorder),
        }
    }

    checkpointer.stop_writer();
    let lost = collector.finish(&mut recorder);
    checkpointer.warn_if_lost(lost);
    recorder.warn_if_dropped();
    recorder.observers_mut().warn_if_follow_dropped();
    checkpointer
        .checkpoint(&mut recorder, lost, log::Level::Info)
        .context("final checkpoint failed; the file on disk is left as it was")?;
    info!(
        "stopped: {} written to {}",
        crate::words::count(recorder.snapshot().peers.len() as u64, "peer", "peers"),
        config.output.display()
    );
    Ok(())
}

/// Everything privileged (attaching, opening files, binding the metrics
/// socket) is done: from here on netmon runs with no capabilities, and
/// writes only in the output's directory where the kernel has Landlock.
fn confine(output: &Path, mode: AttachMode, keep: Option<u32>) -> anyhow::Result<()> {
    if mode == AttachMode::Proc && privilege::effective().is_ok_and(|caps| caps == 0) {
        info!("running without capabilities: proc mode needs none");
    }
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let confined = privilege::confine(dir, keep)
        .context("cannot drop capabilities and set no_new_privs after attaching")?;
    let bounding = if confined.bounding_emptied {
        "bounding set included"
    } else {
        "bounding set kept: no CAP_SETPCAP to empty it"
    };
    match keep {
        None => info!("dropped all capabilities ({bounding}) and set no_new_privs"),
        Some(cap) => info!(
            "dropped all capabilities but {} ({bounding}), which this kernel wants for reading \
             the eBPF maps (kernel.unprivileged_bpf_disabled), and set no_new_privs",
            if cap == privilege::CAP_BPF {
                "CAP_BPF"
            } else {
                "CAP_SYS_ADMIN"
            }
        ),
    }
    match confined.landlock {
        Ok(abi) => info!(
            "Landlock (ABI {abi}): writes only in {}; {}",
            dir.display(),
            privilege::landlock_also(abi)
        ),
        Err(privilege::Unconfined::Unsupported(err)) => warn!(
            "writes are not confined to {}: Landlock is unavailable ({err}); \
             no capabilities and no_new_privs still hold",
            dir.display()
        ),
        Err(privilege::Unconfined::Failed(err)) => warn!(
            "writes are not confined to {}: Landlock refused the rules ({err})",
            dir.display()
        ),
    }
    Ok(())
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
