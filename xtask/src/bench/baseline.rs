//! This build's kernel cost beside another build's (`--baseline BINARY`,
//! say the previous commit's): ns per program run and per connection in
//! the mode auto picks (each build's own: an older build may lack this
//! one's best rung) and in plain tracepoint mode, peers held, lost events
//! and on/off pairs, on IPv4 storms.
//! Two benches run at different times differ by more than a small change
//! costs, as the machine's other load comes and goes; here the two builds
//! take turns, storm by storm, in one run, which goes first alternating
//! from round to round, so the load of the moment weighs on both alike.
use std::path::Path;

use super::{
    Bench,
    bpf_stats::Runs,
    capture::{PAIR_LENGTH, cost_per_run, held_and_lost, on_off_row},
    storm::{Pattern, Protocol},
    table::Table,
    watch::{Watched, Watchers},
};

/// Every storm runs in a namespace of its own, watched by a netmon of its
/// own: they can all share one block.
const BLOCK: u8 = 0;

/// The mode each build runs in: whichever its auto picks, so a build
/// with a better rung is measured in it, and one without in its best.
const AUTO: &str = "auto";

/// One build's storms over all rounds.
#[derive(Default)]
struct Storms {
    auto: Vec<Watched>,
    tracepoint: Vec<Watched>,
    /// Storm rates with netmon on and, right after or before, off.
    pairs: Vec<(f64, f64)>,
}

pub fn baseline(bench: &Bench, baseline: &Path, table: &mut Table) {
    let other = Bench {
        netmon: baseline.to_owned(),
        dir: bench.dir.join("baseline"),
        storm: bench.storm,
        pairs: bench.pairs,
    };
    let builds = [(bench, "this build"), (&other, "baseline")];
    let mut storms = [Storms::default(), Storms::default()];
    for round in 0..bench.pairs {
        let order: [usize; 2] = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        // `mode` None: netmon off (built or not, it does not run).
        let mut storm = |which: usize, mode: Option<&'static str>, timed: bool, length| {
            let (build, name) = builds[which];
            // Each storm's files stay apart for a look afterwards.
            let kind = if timed { "timed" } else { "pair" };
            let label = match mode {
                Some(mode) => format!("{}-{mode}-{kind}-{round}", name.replace(' ', "-")),
                None => format!("off-{round}"),
            };
            let watchers = Watchers {
                netmon: mode,
                poller: false,
                timed,
            };
            build
                .watch(
                    &label,
                    BLOCK,
                    Protocol::Tcp,
                    Pattern::Distinct,
                    length,
                    watchers,
                )
                .map_err(|err| table.failed("baseline", &format!("{label} storm: {err:#}")))
                .ok()
        };
        for which in order {
            storms[which]
                .auto
                .extend(storm(which, Some(AUTO), true, bench.storm));
        }
        for which in order {
            storms[which]
                .tracepoint
                .extend(storm(which, Some("tracepoint"), true, bench.storm));
        }
        // The pair: one build on, netmon off, the other build on.
        let length = bench.storm * PAIR_LENGTH;
        let first = storm(order[0], Some(AUTO), false, length);
        let off = storm(0, None, false, length).map(|off| off.storm.rate());
        let second = storm(order[1], Some(AUTO), false, length);
        for (which, on) in [(order[0], first), (order[1], second)] {
            if let (Some(on), Some(off)) = (on, off) {
                storms[which].pairs.push((on.storm.rate(), off));
            }
        }
    }
    for ((_, name), storms) in builds.iter().zip(&storms) {
        let auto = format!("{AUTO}, {name}");
        let tracepoint = format!("tracepoint, {name}");
        held_and_lost(table, &auto, &Vec::from_iter(&storms.auto));
        held_and_lost(table, &tracepoint, &Vec::from_iter(&storms.tracepoint));
        cost_per_run(table, &auto, &Vec::from_iter(&storms.auto));
        cost_per_run(table, &tracepoint, &Vec::from_iter(&storms.tracepoint));
        on_off_row(
            table,
            "kernel",
            &format!("storm rate, netmon on / off, {name} (median pair)"),
            &storms.pairs,
        );
    }
    for (mode, of) in [
        (AUTO, (|s: &Storms| &s.auto) as fn(&Storms) -> &Vec<Watched>),
        ("tracepoint", |s: &Storms| &s.tracepoint),
    ] {
        let mean = |storms: &Storms| {
            of(storms)
                .iter()
                .filter_map(|w| w.netmon.as_ref()?.runs)
                .fold(Runs::default(), Runs::plus)
                .mean_ns()
        };
        if let (Some(this), Some(base)) = (mean(&storms[0]), mean(&storms[1])) {
            table.info(
                "baseline",
                format!("ns per run, {mode}: this build / baseline"),
                format!("{this:.0} / {base:.0} ns = {:.1}%", this * 100.0 / base),
            );
        }
    }
}
