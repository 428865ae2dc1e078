//! Hooked-in rules against real IPv6 connections.
//!
//! As for IPv4 (`enforce.rs`): two namespaces of the test's own joined by
//! a veth pair, with unique-local addresses (`nodad`, usable at once).
//! `netmon run --mode proc` records real IPv6 connections in `host`; the
//! rules it gives are loaded and hooked there with the commands their
//! comments give. Every observed (peer, port) pair must still connect;
//! the same peer on another port, and a peer never seen, must be dropped,
//! with the drop counter of the chain's direction moving. Neither family
//! may pass whole, which is what the chains did before netmon recorded
//! IPv6.
//!
//! Neighbour discovery must keep working: after each side's neighbour
//! cache is flushed, an observed pair connects again, which needs a
//! neighbour solicitation to the solicited-node multicast address and its
//! advertisement. With `--any-port` rules, which filter ICMPv6 too, only
//! the hooks' neighbour discovery rules ahead of the jump let them pass.
use std::{
    io,
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use serde_json::Value;
use tempfile::TempDir;

use super::{CONNECTS, DROPPED, Family, Tool, collect, connect, listen};
use crate::{Netns, netmon_rules, veth_pair};

/// The host's address, and the peers'; a block no other test uses, and
/// only ever inside these namespaces.
const HOST: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const SEEN: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const UNSEEN: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);

/// The host's service SEEN connected to, and one nobody used.
const SERVICE: u16 = 5432;
const UNUSED_SERVICE: u16 = 5433;
/// The peers' service the host connected to, and one it never used.
const REMOTE: u16 = 8443;
const UNUSED_REMOTE: u16 = 8444;

/// The namespaces, their veth pair and addresses, ready before the first
/// packet; deleting the namespaces deletes the pair.
struct Topology {
    host: Netns,
    peers: Netns,
}

impl Topology {
    fn new() -> Self {
        let (host, peers) = veth_pair(
            ("host6", "peers6"),
            ("h6", "p6"),
            (&[HOST.into()], &[SEEN.into(), UNSEEN.into()]),
        );
        Self { host, peers }
    }

    /// Forgets every neighbour on both ends of the pair: the next packet
    /// each way needs neighbour discovery again.
    fn flush_neighbours(&self) {
        self.host.run("ip", &["-6", "neigh", "flush", "dev", "h6"]);
        self.peers.run("ip", &["-6", "neigh", "flush", "dev", "p6"]);
    }
}

/// The ports of the host namespace's peer `ip` in `field`, as written.
fn recorded_ports(checkpoint: &Value, ip: Ipv6Addr, field: &str) -> Vec<Value> {
    let peers = checkpoint["peers"].as_array().unwrap();
    peers
        .iter()
        .find(|peer| {
            peer["netns"].is_null() && peer["ip"].as_str().unwrap().parse() == Ok(IpAddr::V6(ip))
        })
        .and_then(|peer| peer[field].as_array().cloned())
        .unwrap_or_default()
}

/// The host records its connections: SEEN to our SERVICE, we to SEEN's
/// REMOTE, and we to our own address, held open until netmon has stopped,
/// so its last poll sees them whatever its timing.
fn record(topology: &Topology, checkpoint: &Path) -> Value {
    let (host, peers) = (&topology.host, &topology.peers);
    let netmon = collect(host, "host", checkpoint);
    let held = [
        connect(peers, Some(SEEN.into()), HOST, SERVICE, CONNECTS),
        connect(host, None, SEEN, REMOTE, CONNECTS),
        connect(host, None, HOST, SERVICE, CONNECTS),
    ]
    .map(|stream| stream.expect("connections before any rule"));
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    drop(held);
    serde_json::from_str(&std::fs::read_to_string(checkpoint).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn hooked_rules_filter_ipv6_as_ipv4_and_keep_neighbour_discovery() {
    let topology = Topology::new();
    let (host, peers) = (&topology.host, &topology.peers);
    let _listeners = [
        listen(host, SERVICE),
        listen(host, UNUSED_SERVICE),
        listen(peers, REMOTE),
        listen(peers, UNUSED_REMOTE),
    ];
    let dir = TempDir::new().unwrap();
    let checkpoint = dir.path().join("host.json");
    let recorded = record(&topology, &checkpoint);
    for (peer, field, port) in [
        (SEEN, "local_ports", SERVICE),
        (SEEN, "remote_ports", REMOTE),
        (HOST, "remote_ports", SERVICE),
    ] {
        let ports = recorded_ports(&recorded, peer, field);
        assert!(
            ports.contains(&format!("{port}/tcp").into()),
            "netmon did not record {peer} {field} {port}: {recorded}"
        );
    }

    // --any-port rules filter ICMPv6 too: only the hooks' neighbour
    // discovery rules let it through.
    let cases = [Tool::Nft, Tool::Ipset, Tool::Iptables]
        .into_iter()
        .flat_map(|tool| [(tool, false), (tool, true)]);
    for (tool, any_port) in cases {
        let mut args = vec!["rules", "--format", tool.format(Family::V6)];
        if any_port {
            args.push("--any-port");
        }
        args.push(checkpoint.to_str().unwrap());
        let text = netmon_rules(&args);
        let script = dir.path().join(format!("{tool:?}-{any_port}"));
        std::fs::write(&script, &text).unwrap();
        tool.apply(Family::V6, host, &script, &text);

        // We connect first: with the neighbour caches flushed, the host
        // must then solicit SEEN's address at its solicited-node multicast
        // address, which no set holds.
        let observed = || {
            for (what, result) in [
                (
                    "we to SEEN's REMOTE",
                    connect(host, None, SEEN, REMOTE, CONNECTS),
                ),
                (
                    "SEEN to our SERVICE",
                    connect(peers, Some(SEEN.into()), HOST, SERVICE, CONNECTS),
                ),
            ] {
                assert!(
                    result.is_ok(),
                    "{tool:?} (any port: {any_port}): {what}, observed, must connect: {result:?}"
                );
            }
        };
        observed();
        let blocked = [
            (
                "in",
                "SEEN to a service it never used",
                peers,
                Some(SEEN),
                HOST,
                UNUSED_SERVICE,
            ),
            (
                "in",
                "UNSEEN to our SERVICE",
                peers,
                Some(UNSEEN),
                HOST,
                SERVICE,
            ),
            (
                "out",
                "we to a service of SEEN's never used",
                host,
                None,
                SEEN,
                UNUSED_REMOTE,
            ),
            ("out", "we to UNSEEN", host, None, UNSEEN, REMOTE),
        ];
        for (direction, what, netns, from, to, port) in blocked {
            // --any-port allows an observed peer on every port.
            let observed_peer = from == Some(SEEN) || to == SEEN;
            if any_port && observed_peer {
                continue;
            }
            // --any-port rules drop every protocol in one rule.
            let tcp = (!any_port).then_some("tcp");
            let before = tool.dropped(Family::V6, host, direction, tcp);
            let result = connect(netns, from.map(IpAddr::from), to, port, DROPPED);
            assert!(
                result
                    .as_ref()
                    .is_err_and(|err| err.kind() == io::ErrorKind::TimedOut),
                "{tool:?} (any port: {any_port}): {what} must be dropped: {result:?}"
            );
            let after = tool.dropped(Family::V6, host, direction, tcp);
            assert!(
                after > before,
                "{tool:?} (any port: {any_port}): {what}: the {direction} drop counter stayed at {before}"
            );
        }
        // Each side must find the other again, in both directions.
        topology.flush_neighbours();
        observed();

        tool.undo(Family::V6, host, &["in", "out"]);
        assert!(
            connect(peers, Some(UNSEEN.into()), HOST, SERVICE, CONNECTS).is_ok(),
            "{tool:?} (any port: {any_port}): the undo must let everything through again"
        );
    }
}
