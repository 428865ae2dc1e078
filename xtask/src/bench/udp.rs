//! UDP: a resolver-like service answering queries on loopback
//! (udp_storm.rs), with every peer new and with the same few over and
//! over; netmon's cgroup programs record both ends of every query.
//!
//! The same figures as the TCP rows, by the same means: peers held (here
//! with their exact counts, one exchange each, and `PORT/udp`), lost events, the
//! kernel's ns per run of each cgroup program, netmon's CPU, and the
//! query rate with netmon on against off, the median of on/off pairs.
use std::net::IpAddr;

use serde_json::Value;

use super::{
    Bench, EBPF_MODE,
    bpf_stats::Runs,
    capture::{NS_PER_RUN_TARGET, on_off_row},
    cost::WholeCost,
    outcome::Outcome,
    storm::{Pattern, Protocol, REPEATED_PEERS},
    table::{Table, percent, thousands},
    watch::{Watched, Watchers},
};

/// The address block of every UDP storm. The storms run one at a time,
/// each watched by a netmon of its own, and count only records with UDP
/// ports, which no TCP storm makes: they can share a block with the TCP
/// storms before them (the blocks run out at 127.243).
const BLOCK: u8 = 0;
/// netmon's IPv4 cgroup programs, as bpftool names them (the storms
/// make no IPv6 socket).
const PROGRAMS: [&str; 3] = ["udp_sendmsg4", "udp_recvmsg4", "udp_connect4"];
/// A program that ran fewer times than one per this many datagrams ran
/// for other processes' sockets only.
const FOREIGN_ONLY: f64 = 1000.0;
/// Each answered query is two datagrams: the query and its answer.
const DATAGRAMS_PER_QUERY: f64 = 2.0;

const OFF: Watchers = Watchers {
    netmon: None,
    poller: false,
    timed: false,
};
/// Untimed, as the TCP pairs are: the bpf stats would slow every run.
const ON: Watchers = Watchers {
    netmon: Some(EBPF_MODE),
    poller: false,
    timed: false,
};
const ON_TIMED: Watchers = Watchers { timed: true, ..ON };

pub fn udp(bench: &Bench, table: &mut Table) {
    let mut timed = Vec::new();
    for (pattern, label) in [
        (Pattern::Distinct, "distinct"),
        (Pattern::Repeated, "repeated"),
    ] {
        let mut storm = |name: String, watchers: Watchers, length| match bench.watch(
            &name,
            BLOCK,
            Protocol::Udp,
            pattern,
            length,
            watchers,
        ) {
            Ok(watched) => Some(watched),
            Err(err) => {
                table.failed("udp", &format!("{name} storm: {err:#}"));
                None
            }
        };
        let mut pairs = Vec::new();
        for pair in 0..bench.pairs {
            let mut run = |on: bool| {
                let (side, watchers) = if on { ("on", ON) } else { ("off", OFF) };
                storm(
                    format!("udp-{label}-{side}-{pair}"),
                    watchers,
                    bench.storm * 2,
                )
            };
            // Which side goes first alternates, as in the TCP pairs.
            let (off, on) = if pair.is_multiple_of(2) {
                let off = run(false);
                (off, run(true))
            } else {
                let on = run(true);
                (run(false), on)
            };
            pairs.push((off, on));
        }
        let timed_storm = storm(format!("udp-{label}-timed"), ON_TIMED, bench.storm);
        report(table, label, &pairs, timed_storm.as_ref());
        timed.extend(timed_storm);
    }
    cost_per_program(table, &timed);
}

/// The rows of one pattern's storms.
fn report(
    table: &mut Table,
    label: &str,
    pairs: &[(Option<Watched>, Option<Watched>)],
    timed: Option<&Watched>,
) {
    let offs: Vec<&Outcome> = pairs
        .iter()
        .filter_map(|(off, _)| Some(&off.as_ref()?.storm))
        .collect();
    let ons: Vec<&Watched> = pairs
        .iter()
        .filter_map(|(_, on)| on.as_ref())
        .chain(timed)
        .collect();
    let peers = match label {
        "repeated" => format!("{REPEATED_PEERS} peers each way per process"),
        _ => "every peer new".to_owned(),
    };
    if !offs.is_empty() {
        table.info(
            "udp",
            format!("{label} storm ({peers}), netmon off"),
            size(&offs),
        );
    }
    if !ons.is_empty() {
        let (exact, made, invented) = ons.iter().fold((0, 0, 0), |(exact, made, invented), on| {
            let (e, m) = counted_exactly(on);
            (exact + e, made + m, invented + invented_by(on))
        });
        let outcomes: Vec<&Outcome> = ons.iter().map(|on| &on.storm).collect();
        table.check(
            "udp",
            format!(
                "{label}: peers with exact count and PORT/udp / made ({} storms)",
                ons.len()
            ),
            format!(
                "{} / {} = {:.2}%, {} invented at {:.0} dgram/s",
                thousands(exact),
                thousands(made),
                percent(exact, made),
                thousands(invented),
                datagram_rate(&outcomes)
            ),
            "100%, 0 invented",
            exact == made && invented == 0,
        );
        let (lost, uncounted) = ons
            .iter()
            .filter_map(|on| on.netmon.as_ref())
            .fold((0, 0), |(lost, uncounted), n| {
                (lost + n.lost_events, uncounted + n.uncounted)
            });
        table.check(
            "udp",
            format!("lost events (uncounted datagrams), {label} storms"),
            format!("{lost} ({uncounted})"),
            "0",
            lost == 0,
        );
    }
    if let Some(timed) = timed
        && let Some(netmon) = &timed.netmon
    {
        let datagrams = datagrams(&timed.storm);
        match WholeCost::of(netmon, datagrams) {
            Some(whole) => table.info(
                "udp",
                format!("netmon's CPU per datagram, {label}: kernel + user = total"),
                format!(
                    "{whole} µs (= ms per 1000) over {} datagrams; {:.2} program runs per datagram",
                    thousands(datagrams as u64),
                    whole.runs,
                ),
            ),
            None => table.failed(
                "udp",
                &format!("{label} storm: no run of netmon's programs counted"),
            ),
        }
    }
    let rates: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|(off, on)| Some((on.as_ref()?.storm.rate(), off.as_ref()?.storm.rate())))
        .collect();
    on_off_row(
        table,
        "udp",
        &format!("query rate, netmon on / off, {label} (median pair)"),
        &rates,
    );
}

/// Mean ns per run of each cgroup program over the timed storms.
fn cost_per_program(table: &mut Table, timed: &[Watched]) {
    if timed.is_empty() {
        return;
    }
    let datagrams: f64 = timed.iter().map(|t| datagrams(&t.storm)).sum();
    for name in PROGRAMS {
        let runs = timed
            .iter()
            .filter_map(|t| t.netmon.as_ref()?.programs.get(name).copied())
            .fold(Runs::default(), Runs::plus);
        let what = format!("mean ns per run, {name}");
        match runs.mean_ns() {
            // The programs run for every socket on the host: a program the
            // storms never call (connect4: no storm socket connects) counts
            // only a few runs of other processes, too few to judge, and
            // the first runs after loading are the slow ones.
            Some(ns) if (runs.count as f64) < datagrams / FOREIGN_ONLY => table.info(
                "udp",
                what,
                format!(
                    "{ns:.0} ns over {} runs, all from other sockets on the machine",
                    runs.count
                ),
            ),
            Some(ns) => table.check(
                "udp",
                what,
                format!(
                    "{ns:.0} ns over {} runs, {:.2} per datagram",
                    thousands(runs.count),
                    runs.count as f64 / datagrams
                ),
                format!("< {NS_PER_RUN_TARGET:.0} ns"),
                ns < NS_PER_RUN_TARGET,
            ),
            None => table.info("udp", what, "not run: no socket of the storms called it"),
        }
    }
}

/// Peers of `watched`'s storm whose record has exactly its exchanges, in
/// its direction only, with its service's `PORT/udp`; and peers made.
fn counted_exactly(watched: &Watched) -> (u64, u64) {
    let peers = watched.storm.udp_peers();
    let records = watched.netmon.as_ref().and_then(|n| n.records.as_ref());
    let Some(records) = records else {
        return (0, peers.len() as u64);
    };
    let exact = peers
        .iter()
        .filter(|peer| {
            let Some(record) = records.get(&peer.ip) else {
                return false;
            };
            let port = Value::from(format!("{}/udp", peer.port));
            let (count, other, ports, no_ports) = if peer.outbound {
                ("outbound", "inbound", "remote_ports", "local_ports")
            } else {
                ("inbound", "outbound", "local_ports", "remote_ports")
            };
            record[count].as_u64() == Some(peer.times)
                && record[other].as_u64() == Some(0)
                && record[ports].as_array().is_some_and(|p| p == &[port])
                && record[no_ports].as_array().is_some_and(Vec::is_empty)
        })
        .count();
    (exact as u64, peers.len() as u64)
}

/// Peers in `watched`'s file, within its storm's block, that the storm
/// did not make (none without its records).
fn invented_by(watched: &Watched) -> u64 {
    let records = watched.netmon.as_ref().and_then(|n| n.records.as_ref());
    records.map_or(0, |records| {
        let peers = records.keys().map(|&ip| IpAddr::V4(ip));
        watched.storm.compare(peers).invented
    })
}

/// Datagrams a storm sent: each answered query and its answer, and each
/// unanswered query.
fn datagrams(storm: &Outcome) -> f64 {
    storm.connections() as f64 * DATAGRAMS_PER_QUERY + storm.failed() as f64
}

/// Datagrams per second over several storms taken together, weighted by
/// how long each ran.
fn datagram_rate(storms: &[&Outcome]) -> f64 {
    let queries: f64 = storms.iter().map(|s| s.rate() * s.secs).sum();
    queries * DATAGRAMS_PER_QUERY / storms.iter().map(|s| s.secs).sum::<f64>()
}

/// `41000 dgram/s: 102 500 queries answered by 4 processes in 9 storms
/// of 10.00 s`.
fn size(storms: &[&Outcome]) -> String {
    let queries: u64 = storms.iter().map(|s| s.connections()).sum();
    let failed: u64 = storms.iter().map(|s| s.failed()).sum();
    let failed = if failed == 0 {
        String::new()
    } else {
        format!(", {failed} unanswered")
    };
    let workers = storms.first().map_or(0, |s| s.workers());
    let secs = storms.iter().map(|s| s.secs).sum::<f64>() / storms.len() as f64;
    format!(
        "{:.0} dgram/s: {} queries answered by {workers} processes in {} storms of {secs:.2} s{failed}",
        datagram_rate(storms),
        thousands(queries),
        storms.len(),
    )
}
