//! Capture, lost events and kernel cost: the same distinct storm with
//! nothing watching, with netmon in btf-tracepoint mode (and once each in
//! raw and plain tracepoint mode), in proc mode and with the psutil
//! poller, each alone so none slows another.
use std::time::Duration;

use super::{
    Bench, EBPF_MODE,
    bpf_stats::Runs,
    compare::Compared,
    outcome::Outcome,
    storm::{Pattern, Protocol},
    table::{Table, thousands},
    watch::{Watched, Watchers},
};

/// The pairs' storms last this many times `--storm-seconds`: a storm's
/// rate wanders from one half second to the next even with nothing
/// watching, as other guests load the host's cores, and a longer storm
/// averages that out. It does not still the load that shifts from one
/// storm to the next, which is why the row takes the median of several
/// pairs (docs/performance.md, "Reading the on/off ratio").
pub const PAIR_LENGTH: u32 = 2;
/// The pairs' storms with netmon off share one address block, and those
/// with it on another: each storm runs in a namespace of its own, watched
/// by a netmon of its own writing a file of its own, so none can count
/// another's peers.
const OFF_BLOCK: u8 = 0;
const ON_BLOCK: u8 = 1;
/// Address blocks the capture storms use; later parts take the next ones.
pub const BLOCKS: u8 = ON_BLOCK + 6;
/// Storm rate with netmon on, as a share of the rate with it off.
const ON_OFF_TARGET: f64 = 98.0;
/// Mean cost of one eBPF program run.
pub const NS_PER_RUN_TARGET: f64 = 500.0;

/// One storm with netmon off and one with it on, right after each other.
struct Pair {
    off: Option<Outcome>,
    on: Option<Watched>,
}

const OFF: Watchers = Watchers {
    netmon: None,
    poller: false,
    timed: false,
};
/// The pairs' storms with netmon on are not timed: the bpf stats would
/// slow every program run, and with it the rate the pair compares. A
/// storm of its own times the programs.
const ON: Watchers = Watchers {
    netmon: Some(EBPF_MODE),
    poller: false,
    timed: false,
};
const ON_TIMED: Watchers = Watchers { timed: true, ..ON };
const TRACEPOINT: Watchers = Watchers {
    netmon: Some("tracepoint"),
    poller: false,
    timed: true,
};
const RAW_TRACEPOINT: Watchers = Watchers {
    netmon: Some("raw-tracepoint"),
    ..TRACEPOINT
};
const PROC: Watchers = Watchers {
    netmon: Some("proc"),
    poller: false,
    timed: false,
};
const POLLER: Watchers = Watchers {
    netmon: None,
    poller: true,
    timed: false,
};

pub fn capture(bench: &Bench, table: &mut Table) {
    let mut storm = |label: &str, block: u8, length: Duration, watchers: Watchers| match bench
        .watch(
            label,
            block,
            Protocol::Tcp,
            Pattern::Distinct,
            length,
            watchers,
        ) {
        Ok(watched) => Some(watched),
        Err(err) => {
            table.failed("capture", &format!("{label} storm: {err:#}"));
            None
        }
    };
    let pair_length = bench.storm * PAIR_LENGTH;
    let mut pairs = Vec::new();
    // Storms with netmon off and on (`--pairs` of them), alternating which
    // goes first, so that a load that rises or falls over the run weighs
    // on both sides.
    for pair in 0..bench.pairs {
        let mut run = |on: bool| {
            let (name, watchers) = if on { (EBPF_MODE, ON) } else { ("off", OFF) };
            let block = if on { ON_BLOCK } else { OFF_BLOCK };
            storm(&format!("{name}-{pair}"), block, pair_length, watchers)
        };
        let (off, on) = if pair.is_multiple_of(2) {
            let off = run(false);
            (off, run(true))
        } else {
            let on = run(true);
            (run(false), on)
        };
        pairs.push(Pair {
            off: off.map(|off| off.storm),
            on,
        });
    }
    let offs: Vec<&Outcome> = pairs.iter().filter_map(|p| p.off.as_ref()).collect();
    let proc = storm("proc", ON_BLOCK + 1, bench.storm, PROC);
    let poller = storm("poller", ON_BLOCK + 2, bench.storm, POLLER);
    let tracepoint = storm("tracepoint", ON_BLOCK + 3, bench.storm, TRACEPOINT);
    let timed = storm(
        &format!("{EBPF_MODE}-timed"),
        ON_BLOCK + 4,
        bench.storm,
        ON_TIMED,
    );
    let raw = storm("raw-tracepoint", ON_BLOCK + 5, bench.storm, RAW_TRACEPOINT);
    let ons: Vec<&Watched> = pairs
        .iter()
        .filter_map(|p| p.on.as_ref())
        .chain(&timed)
        .collect();

    if !offs.is_empty() {
        table.info("capture", "storm with netmon off", storm_size(&offs));
    }
    held_and_lost(table, EBPF_MODE, &ons);
    held_and_lost(table, "raw-tracepoint", &Vec::from_iter(&raw));
    held_and_lost(table, "tracepoint", &Vec::from_iter(&tracepoint));
    let poller = poller.as_ref().map(held_by_watcher);
    if let Some((share, text)) = proc.as_ref().map(held_by_watcher) {
        let what = "proc: peers held / made";
        match &poller {
            Some((poller, _)) => {
                table.check(
                    "capture",
                    what,
                    text,
                    format!("> poller's {poller:.2}%"),
                    share > *poller,
                );
            }
            None => table.info("capture", what, text),
        }
    }
    if let Some((_, text)) = poller {
        table.info("capture", "psutil 1 s poller: peers held / made", text);
    }
    cost_per_run(table, EBPF_MODE, &Vec::from_iter(&timed));
    cost_per_run(table, "raw-tracepoint", &Vec::from_iter(&raw));
    cost_per_run(table, "tracepoint", &Vec::from_iter(&tracepoint));
    on_off(table, &pairs);
}

/// Peers held and events lost by netmon in `mode` over its storms.
pub fn held_and_lost(table: &mut Table, mode: &str, ons: &[&Watched]) {
    if ons.is_empty() {
        return;
    }
    let (compared, text) = held_over(ons);
    let count = match ons.len() {
        1 => "1 storm".to_owned(),
        n => format!("{n} storms"),
    };
    table.check(
        "capture",
        format!("{mode}: peers held / made ({count})"),
        text,
        "100%, 0 invented",
        compared.exact(),
    );
    let lost: u64 = ons
        .iter()
        .filter_map(|on| on.netmon.as_ref())
        .map(|n| n.lost_events)
        .sum();
    table.check(
        "lost",
        format!("lost events, {mode} storms"),
        lost.to_string(),
        "0",
        lost == 0,
    );
}

/// `21345 conn/s: 106 725 connections by 4 processes in 5.00 s`, or for
/// several storms `... in 5 storms of 5.00 s`.
pub fn storm_size(storms: &[&Outcome]) -> String {
    let connections: u64 = storms.iter().map(|s| s.connections()).sum();
    let failed: u64 = storms.iter().map(|s| s.failed()).sum();
    let failed = if failed == 0 {
        String::new()
    } else {
        format!(", {failed} failed")
    };
    let workers = storms.first().map_or(0, |s| s.workers());
    let secs = storms.iter().map(|s| s.secs).sum::<f64>() / storms.len() as f64;
    let storms_of = match storms.len() {
        1 => String::new(),
        n => format!("{n} storms of "),
    };
    format!(
        "{:.0} conn/s: {} connections by {workers} processes in {storms_of}{secs:.2} s{failed}",
        rate(storms),
        thousands(connections),
    )
}

/// Connections per second over several storms taken together.
/// The storms' rates ([`Outcome::rate`]), weighted by how long each ran.
fn rate(storms: &[&Outcome]) -> f64 {
    let connections: f64 = storms.iter().map(|s| s.rate() * s.secs).sum();
    connections / storms.iter().map(|s| s.secs).sum::<f64>()
}

/// The share of the storm's peers its one watcher held, and a figure
/// saying so with the storm's rate and the watcher's CPU.
fn held_by_watcher(watched: &Watched) -> (f64, String) {
    let (compared, text) = held_over(&[watched]);
    (compared.held_percent(), text)
}

/// The watchers' peers against those `storms` made, and a figure saying
/// so with the storms' rate and the watchers' CPU.
fn held_over(storms: &[&Watched]) -> (Compared, String) {
    let (compared, cpu_ms) =
        storms
            .iter()
            .fold((Compared::default(), 0.0), |(compared, cpu), on| {
                let (peers, cpu_ms) = on.watcher();
                let this = on.storm.compare(peers.iter().copied());
                (compared.plus(this), cpu + cpu_ms)
            });
    let outcomes: Vec<&Outcome> = storms.iter().map(|on| &on.storm).collect();
    let text = format!(
        "{compared} at {:.0} conn/s; CPU {cpu_ms:.0} ms",
        rate(&outcomes)
    );
    (compared, text)
}

/// The storm rate with netmon on over the rate with it off, per pair.
fn on_off(table: &mut Table, pairs: &[Pair]) {
    let rates: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|p| Some((p.on.as_ref()?.storm.rate(), p.off.as_ref()?.rate())))
        .collect();
    on_off_row(
        table,
        "kernel",
        "storm rate, netmon on / off (median pair)",
        &rates,
    );
}

/// The median of the pairs' ratios of `(on, off)` rates against the
/// target, with all pairs taken together and each pair's ratio beside it.
pub fn on_off_row(table: &mut Table, part: &'static str, what: &str, rates: &[(f64, f64)]) {
    // Each pair's ratio, and their median: one pair that some other job on
    // the machine slowed on one side only moves the median little.
    if rates.is_empty() {
        return;
    }
    let mut ratios: Vec<f64> = rates.iter().map(|(on, off)| on * 100.0 / off).collect();
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.0}%")).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    // All the pairs' storms with netmon on against all those with it off,
    // as a second view of the same storms.
    let (on, off) = rates
        .iter()
        .fold((0.0, 0.0), |(on, off), (a, b)| (on + a, off + b));
    table.check(
        part,
        what,
        format!(
            "{median:.1}% (all pairs: {:.1}%; each: {})",
            on * 100.0 / off,
            each.join(", ")
        ),
        format!(">= {ON_OFF_TARGET:.0}%"),
        median >= ON_OFF_TARGET,
    );
}

/// Mean ns per run of netmon's programs in `mode` over its storms.
pub fn cost_per_run(table: &mut Table, mode: &str, ons: &[&Watched]) {
    let runs = ons
        .iter()
        .filter_map(|on| on.netmon.as_ref()?.runs)
        .fold(Runs::default(), Runs::plus);
    let connections: u64 = ons.iter().map(|on| on.storm.connections()).sum();
    match runs.mean_ns() {
        // Runs include those of any other TCP traffic on the machine meanwhile:
        // the tracepoint fires for every socket.
        Some(ns) => table.check(
            "kernel",
            format!("mean ns per eBPF program run, {mode}"),
            format!(
                "{ns:.0} ns over {} runs, {:.1} per storm connection: {:.0} ns a connection",
                thousands(runs.count),
                runs.count as f64 / connections as f64,
                runs.nanos as f64 / connections as f64
            ),
            format!("< {NS_PER_RUN_TARGET:.0} ns"),
            ns < NS_PER_RUN_TARGET,
        ),
        None if ons.is_empty() => {}
        None => table.failed(
            "kernel",
            &format!("no run of netmon's eBPF programs counted in {mode} mode"),
        ),
    }
}
