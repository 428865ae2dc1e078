//! User cost: netmon (tracepoint mode) and the psutil poller watching the
//! same storm at once, so both are charged for the same connections in the
//! same window; once with a few peers over and over (what busy servers
//! do, and what the in-kernel dedup is for), once with every peer new.
use super::{
    Bench,
    capture::{self, storm_size},
    storm::{Pattern, REPEATED_PEERS},
    table::Table,
    watch::Watchers,
};

pub fn user_cost(bench: &Bench, table: &mut Table) {
    let both = Watchers {
        netmon: Some("tracepoint"),
        poller: true,
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
        let watched = match bench.watch(label, block, pattern, both) {
            Ok(watched) => watched,
            Err(err) => {
                table.failed("user", &format!("{label} storm: {err:#}"));
                continue;
            }
        };
        let (Some(netmon), Some(poller)) = (&watched.netmon, &watched.poller) else {
            unreachable!("both watched")
        };
        let per_1000 = |cpu_ms: f64| cpu_ms * 1000.0 / watched.storm.connections() as f64;
        let (netmon_cost, poller_cost) = (per_1000(netmon.cpu_ms), per_1000(poller.cpu_ms));
        let ebpf = netmon
            .runs
            .mean_ns()
            .map_or(String::new(), |ns| format!("; eBPF {ns:.0} ns per run"));
        table.info(
            "user",
            format!("{label} storm ({peers}), both watching"),
            format!("{}{ebpf}", storm_size(std::slice::from_ref(&watched.storm))),
        );
        table.check(
            "user",
            format!("CPU ms per 1000 connections, {label}: netmon / poller"),
            format!(
                "{netmon_cost:.3} / {poller_cost:.3} ms ({:.0} / {:.0} ms in all)",
                netmon.cpu_ms, poller.cpu_ms
            ),
            "netmon < poller",
            netmon_cost < poller_cost,
        );
    }
}
