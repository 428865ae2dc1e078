//! Per-peer checks on a checkpoint file: every address of a workload is
//! looked up, and every miss is reported with what was recorded instead.
use std::{
    collections::BTreeMap,
    fmt::Display,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    str::FromStr,
};

use serde_json::Value;

use crate::workload::Workload;

/// A checkpoint's IPv4 peers by address.
pub type Peers = BTreeMap<Ipv4Addr, Value>;

/// A checkpoint's peers of both families by address.
pub type IpPeers = BTreeMap<IpAddr, Value>;

/// The checkpoint's IPv4 peers by address.
pub fn read_peers(path: &Path) -> Peers {
    peers_of(&read_checkpoint(path))
}

/// The checkpoint's peers of both families by address, in the network
/// namespace netmon ran in.
pub fn read_ip_peers(path: &Path) -> IpPeers {
    peers_in(&read_checkpoint(path), None)
}

/// The whole checkpoint, for what [`read_peers`] leaves out
/// (`lost_events`, `mode`).
pub fn read_checkpoint(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["version"], 4, "{text}");
    file
}

/// A checkpoint's IPv4 peers by address, in the host's network namespace
/// (the one netmon ran in).
pub fn peers_of(file: &Value) -> Peers {
    peers_in(file, None)
}

/// A checkpoint's peers by address, seen from the network namespace
/// whose inode is `netns` (`None`: the host's): those of both families
/// ([`IpPeers`]), or of IPv4 alone ([`Peers`]), leaving out the IPv6
/// peers anything else on the host made.
pub fn peers_in<A: FromStr + Ord>(file: &Value, netns: Option<u64>) -> BTreeMap<A, Value> {
    file["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|peer| peer["netns"].as_u64() == netns)
        .filter_map(|peer| Some((peer["ip"].as_str()?.parse().ok()?, peer.clone())))
        .collect()
}

/// A TCP port as a checkpoint writes it.
pub fn tcp_port(port: u16) -> Value {
    format!("{port}/tcp").into()
}

/// A UDP port as a checkpoint writes it.
pub fn udp_port(port: u16) -> Value {
    format!("{port}/udp").into()
}

/// A list of TCP ports as a checkpoint writes it.
pub fn tcp_ports(ports: &[u16]) -> Value {
    ports.iter().map(|&port| tcp_port(port)).collect()
}

pub fn has(list: &Value, wanted: Value) -> bool {
    list.as_array().is_some_and(|items| items.contains(&wanted))
}

/// The addresses whose peer fails `check`, each with what was recorded.
pub fn misses<A: Ord + Display>(
    peers: &BTreeMap<A, Value>,
    addrs: &[A],
    check: impl Fn(&Value) -> bool,
) -> Vec<String> {
    addrs
        .iter()
        .filter(|addr| !peers.get(addr).is_some_and(&check))
        .map(|addr| {
            format!(
                "{addr}: {}",
                peers.get(addr).map_or("absent".into(), Value::to_string)
            )
        })
        .collect()
}

/// Checks one expectation per peer and reports every miss at once.
pub fn expect_peers(peers: &Peers, addrs: &[Ipv4Addr], what: &str, check: impl Fn(&Value) -> bool) {
    Tally::new(peers, addrs, what, check).assert_met();
}

/// Exactly `[port]`: every workload peer has one connection, so a second
/// port is a hook reading a wrong offset beside a hook reading the right
/// one.
fn only(ports: &Value, port: u16) -> bool {
    ports
        .as_array()
        .is_some_and(|ports| ports == &[tcp_port(port)])
}

pub fn outbound(port: u16, process: bool) -> impl Fn(&Value) -> bool {
    outbound_port_kept_or_not(port, process, true)
}

/// Outbound with `port`, or, unless `always_port`, with none: a socket
/// reset or refused is only seen as the kernel destroys it when proc mode
/// has nothing else, and by then the kernel has cleared its port.
fn outbound_port_kept_or_not(
    port: u16,
    process: bool,
    always_port: bool,
) -> impl Fn(&Value) -> bool {
    move |peer| {
        peer["outbound"].as_u64() > Some(0)
            && (only(&peer["remote_ports"], port)
                || !always_port && peer["remote_ports"].as_array().is_some_and(Vec::is_empty))
            && (!process || has(&peer["processes"], "nm-client".into()))
    }
}

pub fn inbound(port: u16, process: bool) -> impl Fn(&Value) -> bool {
    move |peer| {
        peer["inbound"].as_u64() > Some(0)
            && only(&peer["local_ports"], port)
            && (!process || has(&peer["processes"], "nm-acceptor".into()))
    }
}

/// One expectation over a group of peers, and the peers that missed it.
pub struct Tally {
    pub what: String,
    pub expected: usize,
    pub misses: Vec<String>,
}

impl Tally {
    pub fn new<A: Ord + Display>(
        peers: &BTreeMap<A, Value>,
        addrs: &[A],
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Self {
        Self {
            what: what.to_owned(),
            expected: addrs.len(),
            misses: misses(peers, addrs, check),
        }
    }

    pub fn captured(&self) -> usize {
        self.expected - self.misses.len()
    }

    pub fn assert_met(&self) {
        assert!(
            self.misses.is_empty(),
            "{} of {} peers are not {}:\n{}",
            self.misses.len(),
            self.expected,
            self.what,
            self.misses.join("\n")
        );
    }
}

/// What a mode can see of a workload (docs/design.md, "The attach ladder").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sees {
    /// Refused attempts: the eBPF modes see the SYN go out; proc mode with
    /// the kernel's notifications hears the socket destroyed; polls alone
    /// only see what is in the socket table at the time.
    pub refused: bool,
    /// The remote port of every outbound connection: the kernel clears it
    /// from a socket that is reset or refused before it destroys it, and
    /// proc mode may only hear of the socket then.
    pub outbound_ports: bool,
    /// The connecting process's name on outbound peers.
    pub outbound_process: bool,
    /// The accepting process's name on inbound peers: only the kretprobe
    /// runs in the accepting process; the tracepoint's inbound transition
    /// runs in softirq.
    pub inbound_process: bool,
}

impl Sees {
    pub fn mode(mode: &str) -> Self {
        let ebpf = mode != "proc";
        Self {
            refused: ebpf,
            outbound_ports: true,
            outbound_process: ebpf,
            inbound_process: mode == "kprobe",
        }
    }
}

impl Sees {
    /// proc mode hearing of every socket the kernel destroys (sock_diag
    /// over netlink).
    pub fn proc_notified() -> Self {
        Self {
            refused: true,
            outbound_ports: false,
            ..Self::mode("proc")
        }
    }
}

/// Every check of one workload against one checkpoint.
pub struct Verdict {
    pub outbound: Vec<Tally>,
    pub inbound: Vec<Tally>,
    /// Addresses that made no connection, so they must not be peers:
    /// refused sources, or what a hook read from a socket that is no
    /// connection.
    pub phantom: Vec<IpAddr>,
}

/// Checks every peer of `work` in the way a mode that `sees` can.
pub fn check_workload(peers: &Peers, work: &Workload, sees: Sees) -> Verdict {
    let with_process = if sees.outbound_process {
        " and process"
    } else {
        ""
    };
    let outbound_to =
        |port| outbound_port_kept_or_not(port, sees.outbound_process, sees.outbound_ports);
    let port_kept = if sees.outbound_ports {
        ""
    } else {
        " where kept"
    };
    let mut outbound_tallies = vec![Tally::new(
        peers,
        &work.destinations,
        &format!("outbound with port{port_kept}{with_process}"),
        outbound_to(work.port),
    )];
    if sees.refused {
        outbound_tallies.push(Tally::new(
            peers,
            &work.refused,
            &format!("outbound (refused) with port{port_kept}{with_process}"),
            outbound_to(work.refused_port),
        ));
    }
    let inbound_what = if sees.inbound_process {
        "inbound with our port and the accepting process"
    } else {
        "inbound with our port"
    };
    Verdict {
        outbound: outbound_tallies,
        inbound: vec![Tally::new(
            peers,
            &work.sources,
            inbound_what,
            inbound(work.port, sees.inbound_process),
        )],
        phantom: work
            .refused_sources
            .iter()
            .copied()
            .filter(|a| peers.contains_key(a))
            .map(IpAddr::V4)
            .collect(),
    }
}

impl Verdict {
    fn tallies(&self) -> impl Iterator<Item = &Tally> {
        self.outbound.iter().chain(&self.inbound)
    }

    pub fn complete(&self) -> bool {
        self.phantom.is_empty() && self.tallies().all(|t| t.misses.is_empty())
    }

    /// (captured, expected) outbound peers.
    pub fn outbound_count(&self) -> (usize, usize) {
        count(&self.outbound)
    }

    /// (captured, expected) inbound peers.
    pub fn inbound_count(&self) -> (usize, usize) {
        count(&self.inbound)
    }

    /// Every problem, one per line, each with its first few misses, for a
    /// result line.
    pub fn problems(&self) -> Vec<String> {
        const SHOWN: usize = 2;
        let mut problems: Vec<String> = self
            .tallies()
            .filter(|t| !t.misses.is_empty())
            .map(|t| {
                let more = t.misses.len().saturating_sub(SHOWN);
                let more = if more > 0 {
                    format!("; {more} more")
                } else {
                    String::new()
                };
                format!(
                    "{} of {} peers are not {}: {}{more}",
                    t.misses.len(),
                    t.expected,
                    t.what,
                    t.misses[..t.misses.len().min(SHOWN)].join("; ")
                )
            })
            .collect();
        if !self.phantom.is_empty() {
            problems.push(format!("never connected, yet recorded: {:?}", self.phantom));
        }
        problems
    }

    /// Panics with every miss of the first unmet expectation, as the
    /// integration tests report them.
    pub fn assert_complete(&self) {
        self.tallies().for_each(Tally::assert_met);
        assert!(
            self.phantom.is_empty(),
            "never connected, yet recorded: {:?}",
            self.phantom
        );
    }
}

fn count(tallies: &[Tally]) -> (usize, usize) {
    tallies.iter().fold((0, 0), |(captured, expected), t| {
        (captured + t.captured(), expected + t.expected)
    })
}
