//! User cost: netmon (raw-tracepoint mode) and the psutil poller watching the
//! same storm at once, so both are charged for the same connections in the
//! same window; once with a few peers over and over (what busy servers
//! do, and what the in-kernel dedup is for), once with every peer new.
use std::fmt;

use super::{
    Bench, EBPF_MODE,
    bpf_stats::Runs,
    capture::{self, storm_size},
    procfs,
    storm::{Pattern, Protocol, REPEATED_PEERS},
    table::Table,
    watch::Watchers,
};

/// Address blocks the capture and user-cost storms use (one per case
/// below); later parts take the next ones.
pub const BLOCKS: u8 = capture::BLOCKS + 2;

pub fn user_cost(bench: &Bench, table: &mut Table) {
    let both = Watchers {
        netmon: Some(EBPF_MODE),
        poller: true,
        timed: true,
    };
    let cases = [
        (
            Pattern::Repeated,
            "repeated",
            format!("{REPEATED_PEERS} peers each way per process"),
        ),
        (Pattern::Distinct, "distinct", "every peer new".to_owned()),
    ];
    for (block, (pattern, label, peers)) in (capture::BLOCKS..).zip(cases) {
        let watched = match bench.watch(label, block, Protocol::Tcp, pattern, bench.storm, both) {
            Ok(watched) => watched,
            Err(err) => {
                table.failed("user", &format!("{label} storm: {err:#}"));
                continue;
            }
        };
        let (Some(netmon), Some(poller)) = (&watched.netmon, &watched.poller) else {
            unreachable!("both watched")
        };
        let connections = watched.storm.connections();
        let (netmon_cost, poller_cost) = (
            Cost::new(netmon.cpu_ms, connections),
            Cost::new(poller.cpu_ms, connections),
        );
        let ebpf = netmon
            .runs
            .and_then(Runs::mean_ns)
            .map_or(String::new(), |ns| format!("; eBPF {ns:.0} ns per run"));
        table.info(
            "user",
            format!("{label} storm ({peers}), both watching"),
            format!("{}{ebpf}", storm_size(&[&watched.storm])),
        );
        table.check(
            "user",
            format!("CPU ms per 1000 connections, {label}: netmon / poller"),
            format!(
                "{netmon_cost} / {poller_cost} ms ({:.0} / {:.0} ms in all)",
                netmon.cpu_ms, poller.cpu_ms
            ),
            "netmon < poller",
            netmon_cost.at_most < poller_cost.at_most,
        );
    }
}

/// CPU ms per 1000 connections. utime and stime advance in clock ticks
/// (10 ms at the usual USER_HZ of 100), so a process that ran for less than
/// one shows 0: its cost is then only known to be under one tick's worth.
pub struct Cost {
    at_most: f64,
    under_one_tick: bool,
}

impl Cost {
    pub fn new(cpu_ms: f64, connections: u64) -> Self {
        let under_one_tick = cpu_ms < procfs::tick_ms();
        Self {
            at_most: cpu_ms.max(procfs::tick_ms()) * 1000.0 / connections as f64,
            under_one_tick,
        }
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let under = if self.under_one_tick { "< " } else { "" };
        write!(f, "{under}{:.3}", self.at_most)
    }
}
