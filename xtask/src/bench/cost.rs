//! User cost: netmon (raw-tracepoint mode) and the psutil poller watching the
//! same storm at once, so both are charged for the same connections in the
//! same window; once with a few peers over and over (what busy servers
//! do, and what the in-kernel dedup is for), once with every peer new.
//!
//! netmon's whole cost is its programs' run time in the kernel (the bpf
//! stats) plus its process's: users pay both. The poller has no kernel
//! side to add, so it is compared with netmon's process alone.
use std::fmt;

use super::{
    Bench, EBPF_MODE,
    bpf_stats::Runs,
    capture::{self, storm_size},
    procfs,
    storm::{Pattern, Protocol, REPEATED_PEERS},
    table::Table,
    watch::{NetmonSaw, Watchers},
};

/// netmon's whole CPU (programs and process) per new connection, µs.
const NEW_TARGET_US: f64 = 1.0;
/// ... and per connection between peers it has already seen.
const REPEATED_TARGET_US: f64 = 0.3;

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
            REPEATED_TARGET_US,
        ),
        (
            Pattern::Distinct,
            "distinct",
            "every peer new".to_owned(),
            NEW_TARGET_US,
        ),
    ];
    for (block, (pattern, label, peers, target)) in (capture::BLOCKS..).zip(cases) {
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
        match WholeCost::of(netmon, connections as f64) {
            Some(whole) => table.check(
                "user",
                format!("netmon's CPU per connection, {label}: kernel + user = total"),
                format!(
                    "{whole} µs (= ms per 1000); {:.1} program runs per connection",
                    whole.runs
                ),
                format!("<= {target} µs"),
                whole.total_us() <= target,
            ),
            None => table.failed(
                "user",
                &format!("{label} storm: no run of netmon's programs counted"),
            ),
        }
        table.check(
            "user",
            format!("CPU ms per 1000 connections, {label}: netmon's process / poller"),
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
struct Cost {
    at_most: f64,
    under_one_tick: bool,
}

impl Cost {
    fn new(cpu_ms: f64, connections: u64) -> Self {
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

/// netmon's whole CPU over a storm, per connection (or datagram): its
/// programs' run time (the kernel's bpf stats, which count every socket
/// on the host, not only the storm's, and which add two clock reads to
/// each run while on) and its threads' run time (schedstat).
pub struct WholeCost {
    kernel_us: f64,
    user_us: f64,
    /// Program runs per connection.
    pub runs: f64,
}

impl WholeCost {
    /// Over `units` connections or datagrams; `None` if its programs
    /// were not timed, or there were none.
    pub fn of(netmon: &NetmonSaw, units: f64) -> Option<Self> {
        let runs = netmon.runs?;
        (units > 0.0).then(|| Self {
            kernel_us: runs.nanos as f64 / 1000.0 / units,
            user_us: netmon.run_ns as f64 / 1000.0 / units,
            runs: runs.count as f64 / units,
        })
    }

    pub fn total_us(&self) -> f64 {
        self.kernel_us + self.user_us
    }
}

/// `1.620 + 0.850 = 2.470`
impl fmt::Display for WholeCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} + {:.3} = {:.3}",
            self.kernel_us,
            self.user_us,
            self.total_us()
        )
    }
}
