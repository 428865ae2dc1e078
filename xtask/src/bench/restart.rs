//! The restart gap: netmon A runs on a 1M-peer file while a steady stream
//! makes one connection a millisecond, each from a new loopback address;
//! A gets SIGTERM and B takes over on the same file, three ways:
//!
//! - after A has exited, as a service manager restarts a unit;
//! - at the SIGTERM (B waits for A's lock while it collects);
//! - before the SIGTERM, once B waits for the lock.
//!
//! The gap is the stream's connections in neither A's final checkpoint nor
//! B's file (B loads A's), times the period: the time no netmon collected.
use std::{
    collections::HashSet,
    fs,
    net::Ipv4Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use netmon_scenario::{
    files::write_big_checkpoint,
    harness::{Netmon, READY_TIMEOUT},
    net::Block,
    stream::{Made, Stream},
};

use super::{
    Bench, EBPF_MODE,
    netns::Netns,
    shutdown::exited,
    table::{Table, thousands},
};

const PEERS: u32 = 1_000_000;
/// One connection of the stream per period: the gap's resolution.
const PERIOD: Duration = Duration::from_millis(1);
/// Stream before the SIGTERM and after B is ready.
const MARGIN: Duration = Duration::from_millis(500);
const TARGET: Duration = Duration::from_millis(200);
/// How often the logs and /proc are looked at.
const POLL: Duration = Duration::from_millis(1);

/// When B starts, against A's SIGTERM.
#[derive(Clone, Copy)]
enum Handover {
    /// Once A has exited.
    AfterExit,
    /// At the SIGTERM.
    AtSigterm,
    /// Before it: B attaches and waits for A's lock.
    Before,
}

impl Handover {
    fn describe(self) -> &'static str {
        match self {
            Self::AfterExit => "B started when A exited (service manager)",
            Self::AtSigterm => "B started at A's SIGTERM",
            Self::Before => "B started before A's SIGTERM",
        }
    }
}

pub fn restart(bench: &Bench, table: &mut Table) {
    let source = bench.dir.join("restart").join("source.json");
    if let Err(err) = write_big_checkpoint(&source, PEERS) {
        table.failed("restart", &format!("cannot write the checkpoint: {err}"));
        return;
    }
    for handover in [Handover::AfterExit, Handover::AtSigterm, Handover::Before] {
        match measure(bench, &source, handover) {
            Ok(gap) => table.check(
                "restart",
                format!("{}: gap, 1M peers", handover.describe()),
                gap.to_string(),
                format!("< {} ms", TARGET.as_millis()),
                gap.gap() < TARGET,
            ),
            Err(err) => table.failed("restart", &format!("{}: {err:#}", handover.describe())),
        }
    }
}

/// What one handover missed, and when its steps happened.
struct Gap {
    made: usize,
    missed: usize,
    /// After the SIGTERM, A exited.
    a_exited: Duration,
    /// B said it was attached, against the SIGTERM.
    b_attached: Since,
}

/// A time against the SIGTERM, either side of it.
enum Since {
    Before(Duration),
    After(Duration),
}

impl Since {
    fn of(at: Instant, sigterm: Instant) -> Self {
        match at.checked_duration_since(sigterm) {
            Some(after) => Self::After(after),
            None => Self::Before(sigterm - at),
        }
    }
}

impl std::fmt::Display for Since {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Before(d) => write!(f, "{:.0} ms before it", d.as_secs_f64() * 1000.0),
            Self::After(d) => write!(f, "at {:.0} ms", d.as_secs_f64() * 1000.0),
        }
    }
}

impl Gap {
    fn gap(&self) -> Duration {
        PERIOD * u32::try_from(self.missed).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "{:.0} ms ({} of {} missed; after SIGTERM A exited at {:.0} ms, B attached {})",
            ms(self.gap()),
            thousands(self.missed as u64),
            thousands(self.made as u64),
            ms(self.a_exited),
            self.b_attached
        )
    }
}

fn measure(bench: &Bench, source: &Path, handover: Handover) -> anyhow::Result<Gap> {
    eprintln!("xtask: bench: restart, {}", handover.describe());
    let netns = Netns::new("restart")?;
    let dir = bench
        .dir
        .join("restart")
        .join(format!("{}", handover as u8));
    fs::create_dir_all(&dir)?;
    let output = dir.join("peers.json");
    fs::copy(source, &output).context("copying the 1M-peer file")?;
    let a = bench.start_netmon(&netns, &output, EBPF_MODE)?;
    let stream = Stream::start(Block::Handover.net(), PERIOD, netns.joiner()?);
    thread::sleep(MARGIN);
    let (early, attached_before) = match handover {
        Handover::Before => {
            let b = bench.spawn_netmon(&netns, &output, EBPF_MODE);
            let attached = wait_for(&b, "] mode: ")?;
            wait_for(&b, "waiting up to")?;
            (Some(b), Some(attached))
        }
        _ => (None, None),
    };
    let sigterm = Instant::now();
    // SAFETY: kill(2) on netmon, our child, not yet waited for.
    if unsafe { libc::kill(a.pid() as i32, libc::SIGTERM) } != 0 {
        bail!("cannot send SIGTERM to netmon");
    }
    let mut b = match (handover, early) {
        (Handover::AtSigterm, _) => Some(bench.spawn_netmon(&netns, &output, EBPF_MODE)),
        (_, early) => early,
    };
    // A's exit and B's attaching, whichever comes first, each timed when
    // it happens; B attached already if it was started before.
    let (mut a_exited, mut b_attached) = (None, None);
    let started = Instant::now();
    while a_exited.is_none() || b_attached.is_none() {
        if started.elapsed() > READY_TIMEOUT {
            bail!("A did not exit or B did not attach in {READY_TIMEOUT:?}");
        }
        if a_exited.is_none() && exited(a.pid())? {
            a_exited = Some(Instant::now());
            b = b.or_else(|| Some(bench.spawn_netmon(&netns, &output, EBPF_MODE)));
        }
        if let Some(b) = &b
            && b_attached.is_none()
        {
            let log = b.log();
            if log.contains("] mode: ") {
                b_attached = Some(attached_before.unwrap_or_else(Instant::now));
            } else if exited(b.pid())? {
                bail!(
                    "B exited before attaching: {}",
                    log.lines().last().unwrap_or_default()
                );
            }
        }
        thread::sleep(POLL);
    }
    let (Some(a_exited), Some(b_attached), Some(b)) = (a_exited, b_attached, b) else {
        bail!("the loop ends only with A exited and B attached");
    };
    let (status, log) = a.wait();
    if !status.success() {
        bail!("A exited with {status}:\n{log}");
    }
    b.wait_ready().map_err(|log| anyhow::anyhow!("B {log}"))?;
    thread::sleep(MARGIN);
    let made = stream.stop().context("the stream")?;
    let (status, log) = b.stop();
    if !status.success() {
        bail!("B exited with {status}:\n{log}");
    }
    let held = stream_peers(&output)?;
    let missed = made
        .iter()
        .filter(|Made { source, .. }| !held.contains(source))
        .count();
    Ok(Gap {
        made: made.len(),
        missed,
        a_exited: a_exited - sigterm,
        b_attached: Since::of(b_attached, sigterm),
    })
}

/// When `netmon`'s log first has `marker`.
fn wait_for(netmon: &Netmon, marker: &str) -> anyhow::Result<Instant> {
    let started = Instant::now();
    while !netmon.log().contains(marker) {
        if exited(netmon.pid())? {
            let log = netmon.log();
            bail!("netmon exited: {}", log.lines().last().unwrap_or_default());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("no {marker:?} in netmon's log:\n{}", netmon.log());
        }
        thread::sleep(POLL);
    }
    Ok(Instant::now())
}

/// The stream's peers in a checkpoint: netmon writes one peer a line, so
/// the 1M others need not be parsed.
fn stream_peers(path: &Path) -> anyhow::Result<HashSet<Ipv4Addr>> {
    let prefix = format!("{{\"ip\":\"127.{}.", Block::Handover as u8);
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line["{\"ip\":\"".len()..].split('"').next()?.parse().ok())
        .collect())
}
