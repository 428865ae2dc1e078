//! One storm and whatever watches it (netmon in some mode, the poller, or
//! nothing), each in the storm's own network namespace, with the CPU each
//! watcher spent over the storm and what each held at the end.
use std::{collections::BTreeMap, fs, net::IpAddr, thread, time::Duration};

use anyhow::{Context as _, bail};
use netmon_scenario::{
    check::{Peers, peers_of},
    harness::Netmon,
};

use super::{
    Bench,
    bpf_stats::{Runs, StatsEnabled},
    netns::Netns,
    outcome::Outcome,
    poller::Poller,
    procfs,
    storm::{Family, Pattern, Protocol, Storm},
};

/// After the storm, before the watchers stop: long enough for netmon to
/// drain its buffer, and for the poller's walk in progress to end (it
/// walks once more when told to stop).
const SETTLE: Duration = Duration::from_millis(1200);

/// What watches a storm.
#[derive(Clone, Copy)]
pub struct Watchers {
    /// netmon in this `--mode`.
    pub netmon: Option<&'static str>,
    pub poller: bool,
    /// Count netmon's eBPF program runs and their time
    /// (`kernel.bpf_stats_enabled`). The counters cost every run two clock
    /// reads, so storms that compare rates leave them off.
    pub timed: bool,
}

/// A storm and what its watchers made of it.
pub struct Watched {
    pub storm: Outcome,
    pub netmon: Option<NetmonSaw>,
    pub poller: Option<PollerSaw>,
}

pub struct NetmonSaw {
    /// Its peers in its own namespace, either family.
    pub peers: Vec<IpAddr>,
    pub lost_events: u64,
    /// Connections (or datagrams) neither delivered nor kept in the
    /// kernel's dedup map: their peers may be missing.
    pub uncounted: u64,
    /// CPU over the storm and [`SETTLE`] (utime + stime: whole ticks).
    pub cpu_ms: f64,
    /// Its threads' run time over the same window, to the nanosecond.
    pub run_ns: u64,
    /// Its eBPF programs' runs over the same window, when
    /// [`Watchers::timed`] (and not in proc mode).
    pub runs: Option<Runs>,
    /// The same by program name.
    pub programs: BTreeMap<String, Runs>,
    /// Every record of the checkpoint, after a UDP storm: its checks
    /// read the counts and ports.
    pub records: Option<Peers>,
}

pub struct PollerSaw {
    pub peers: Vec<IpAddr>,
    pub cpu_ms: f64,
}

impl Bench {
    /// Runs storm number `block` (its IPv4 addresses) for `duration`
    /// under `watchers`.
    pub fn watch(
        &self,
        label: &str,
        block: u8,
        protocol: Protocol,
        pattern: Pattern,
        duration: Duration,
        watchers: Watchers,
    ) -> anyhow::Result<Watched> {
        let storm = StormOf {
            family: Family::V4,
            block,
            protocol,
            pattern,
            duration,
        };
        self.watch_storm(label, storm, watchers)
    }

    /// [`Bench::watch`], for a storm of either family.
    pub fn watch_storm(
        &self,
        label: &str,
        storm: StormOf,
        watchers: Watchers,
    ) -> anyhow::Result<Watched> {
        let StormOf {
            family,
            block,
            protocol,
            pattern,
            duration,
        } = storm;
        eprintln!("xtask: bench: {label} storm");
        let netns = Netns::new(label)?;
        if family == Family::V6 {
            netns.route_local_v6(Family::v6_prefix(block))?;
        }
        let dir = self.dir.join(label);
        fs::create_dir_all(&dir)?;
        let output = dir.join("peers.json");
        // The counters must be on before netmon loads its programs.
        let stats = watchers
            .netmon
            .filter(|&mode| watchers.timed && mode != "proc")
            .map(|_| StatsEnabled::enable())
            .transpose()?;
        let netmon = watchers
            .netmon
            .map(|mode| self.start_netmon(&netns, &output, mode))
            .transpose()?;
        let poller = watchers
            .poller
            .then(|| Poller::start(&netns, &dir))
            .transpose()?;
        let storm = Storm::prepare(&netns, family, block, protocol, pattern, duration)?;

        // Untimed programs count nothing: no bpftool calls for them.
        let timed = netmon.as_ref().filter(|_| stats.is_some());
        let before = Sample::take(netmon.as_ref(), timed, poller.as_ref())?;
        let outcome = storm.go()?;
        eprintln!(
            "xtask: bench: {label} storm: {:.0} conn/s over {:.2} s",
            outcome.rate(),
            outcome.secs
        );
        thread::sleep(SETTLE);
        let after = Sample::take(netmon.as_ref(), timed, poller.as_ref())?;

        let netmon = match netmon {
            None => None,
            Some(netmon) => {
                let (status, log) = netmon.stop();
                if !status.success() {
                    bail!(
                        "netmon --mode {} exited with {status}:\n{log}",
                        watchers.netmon.unwrap_or("?")
                    );
                }
                let file = read_file(&output)?;
                // Read whole only after a UDP storm, whose peers are IPv4.
                let records = (protocol == Protocol::Udp).then(|| peers_of(&file));
                let programs = match (&after.runs, &before.runs) {
                    (Some(after), Some(before)) => after
                        .iter()
                        .map(|(name, runs)| {
                            let earlier = before.get(name).copied().unwrap_or_default();
                            (name.clone(), runs.since(earlier))
                        })
                        .collect(),
                    _ => BTreeMap::new(),
                };
                Some(NetmonSaw {
                    peers: own_peers(&file),
                    records,
                    programs,
                    lost_events: file["lost_events"]
                        .as_u64()
                        .context("checkpoint without lost_events")?,
                    uncounted: file["uncounted_connections"]
                        .as_u64()
                        .context("checkpoint without uncounted_connections")?,
                    cpu_ms: after.netmon_cpu_ms - before.netmon_cpu_ms,
                    run_ns: after.netmon_run_ns.saturating_sub(before.netmon_run_ns),
                    runs: after
                        .runs
                        .zip(before.runs)
                        .map(|(a, b)| Runs::total(&a).since(Runs::total(&b))),
                })
            }
        };
        let poller = match poller {
            None => None,
            Some(poller) => Some(PollerSaw {
                peers: poller.stop()?.into_iter().map(IpAddr::from).collect(),
                cpu_ms: after.poller_cpu_ms - before.poller_cpu_ms,
            }),
        };
        Ok(Watched {
            storm: outcome,
            netmon,
            poller,
        })
    }
}

impl Watched {
    /// What the storm's watcher held and the CPU it spent: netmon's, if it
    /// watched, else the poller's (nothing when nothing watched).
    pub fn watcher(&self) -> (&[IpAddr], f64) {
        match (&self.netmon, &self.poller) {
            (Some(netmon), _) => (&netmon.peers, netmon.cpu_ms),
            (None, Some(poller)) => (&poller.peers, poller.cpu_ms),
            (None, None) => (&[], 0.0),
        }
    }
}

/// What a storm is: its family, its block of addresses, what it
/// exchanges, how and how long.
#[derive(Clone, Copy)]
pub struct StormOf {
    pub family: Family,
    pub block: u8,
    pub protocol: Protocol,
    pub pattern: Pattern,
    pub duration: Duration,
}

/// The checkpoint at `path`, whatever its format's version: the baseline
/// part measures builds that write different ones.
fn read_file(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// The addresses of the checkpoint's peers in netmon's own namespace
/// (the storm's), whichever their family.
fn own_peers(file: &serde_json::Value) -> Vec<IpAddr> {
    let peers = file["peers"].as_array().map_or(&[][..], Vec::as_slice);
    peers
        .iter()
        .filter(|peer| peer["netns"].is_null())
        .filter_map(|peer| peer["ip"].as_str()?.parse().ok())
        .collect()
}

/// The watchers' counters at one instant (zero for a watcher not there).
struct Sample {
    netmon_cpu_ms: f64,
    netmon_run_ns: u64,
    runs: Option<BTreeMap<String, Runs>>,
    poller_cpu_ms: f64,
}

impl Sample {
    /// `timed`: the netmon whose programs the bpf stats are counting.
    fn take(
        netmon: Option<&Netmon>,
        timed: Option<&Netmon>,
        poller: Option<&Poller>,
    ) -> anyhow::Result<Self> {
        let cpu = |pid: Option<u32>| pid.map_or(Ok(0.0), procfs::cpu_ms);
        Ok(Self {
            netmon_cpu_ms: cpu(netmon.map(Netmon::pid))?,
            netmon_run_ns: netmon.map_or(Ok(0), |n| procfs::run_ns(n.pid()))?,
            runs: timed.map(|n| Runs::by_program(n.pid())).transpose()?,
            poller_cpu_ms: cpu(poller.map(Poller::pid))?,
        })
    }
}
