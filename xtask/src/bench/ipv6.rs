//! An IPv6 storm: the capture storm between addresses of a unique-local
//! /64 that the storm's namespace routes to itself, every connection from
//! a source of its own to a destination of its own, watched by netmon in
//! raw-tracepoint mode and, in a storm of its own, in plain tracepoint
//! mode: every peer held, no event lost, and what a run costs.
use super::{
    Bench, EBPF_MODE,
    capture::{cost_per_run, held_and_lost, storm_size},
    storm::{Family, Pattern, Protocol},
    table::Table,
    watch::{StormOf, Watchers},
};

/// Each storm has a namespace and so a /64 of its own.
const BLOCK: u8 = 6;

pub fn ipv6(bench: &Bench, table: &mut Table) {
    for mode in [EBPF_MODE, "tracepoint"] {
        let storm = StormOf {
            family: Family::V6,
            block: BLOCK,
            protocol: Protocol::Tcp,
            pattern: Pattern::Distinct,
            duration: bench.storm,
        };
        let watchers = Watchers {
            netmon: Some(mode),
            poller: false,
            timed: true,
        };
        let label = format!("ipv6-{mode}");
        match bench.watch_storm(&label, storm, watchers) {
            Ok(watched) => {
                let what = format!("{mode}, IPv6");
                table.info(
                    "ipv6",
                    format!("IPv6 storm ({}/64), {mode}", Family::v6_prefix(BLOCK)),
                    storm_size(&[&watched.storm]),
                );
                held_and_lost(table, &what, &[&watched]);
                cost_per_run(table, &what, &[&watched]);
            }
            Err(err) => table.failed("ipv6", &format!("{label} storm: {err:#}")),
        }
    }
}
