//! Hooked-in rules against real connections.
//!
//! Two namespaces of the test's own joined by a veth pair: `host`, where
//! `netmon run --mode proc` records real connections and where the rules
//! it gives are then loaded and hooked, and `peers`, which holds a peer
//! that connected (`SEEN`) and one that never did (`UNSEEN`). Every
//! (peer, port) pair netmon recorded must still connect; the same peer on
//! another port, and the other peer, must be dropped, and the drop counter
//! of the chain's direction must move. The host also connected to its own
//! address, which thus is a peer: no rule may let a stranger in for it.
//!
//! The rules are the host's from the whole fleet (`--host`): `peers` ran
//! netmon too, before the host did, and recorded a connection of SEEN to
//! the host's FLEET_SERVICE that only its own file holds; the host's rules
//! must allow it all the same.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use netmon_scenario::{
    check::{read_peers, tcp_port},
    fleet,
    harness::Netmon,
};
use socket2::{Domain, Socket, Type};
use tempfile::TempDir;

use super::{Netns, SBIN, check, netmon_rules, veth_pair};

/// UDP: dnsmasq and dig.
#[path = "enforce_udp.rs"]
mod udp;
/// IPv6: the same, over unique-local addresses.
#[path = "enforce_v6.rs"]
mod v6;

/// The host's address, and the peers'; a block no test on the host uses,
/// and only ever inside these namespaces.
const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SEEN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const UNSEEN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

/// The host's service SEEN connected to, and one nobody used.
const SERVICE: u16 = 5432;
const UNUSED_SERVICE: u16 = 5433;
/// The host's service SEEN connected to while only `peers` collected.
const FLEET_SERVICE: u16 = 5435;
/// The peers' service the host connected to, and one it never used.
const REMOTE: u16 = 8443;
const UNUSED_REMOTE: u16 = 8444;

/// How long a connection that must succeed may take; it is a hang
/// detector, over a veth pair it takes well under a millisecond.
const CONNECTS: Duration = Duration::from_secs(10);
/// How long a dropped SYN is waited for: the drop counter, not this
/// timeout, is what shows it was dropped.
const DROPPED: Duration = Duration::from_secs(1);

/// The namespaces, their veth pair and addresses, ready before the first
/// packet; deleting the namespaces deletes the pair.
struct Topology {
    host: Netns,
    peers: Netns,
}

impl Topology {
    fn new() -> Self {
        let (host, peers) = veth_pair(
            ("host", "peers"),
            ("h0", "p0"),
            (&[HOST.into()], &[SEEN.into(), UNSEEN.into()]),
        );
        Self { host, peers }
    }
}

/// Runs `f` on a thread inside `netns`: sockets it makes stay there.
fn inside<T: Send>(netns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    fleet::run_in(&netns.name, f)
}

/// A listener on `port` of every address of `netns`, both families'
/// (`[::]` takes IPv4 connections too, as IPv4-mapped addresses).
pub(super) fn listen(netns: &Netns, port: u16) -> TcpListener {
    inside(netns, || {
        TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).unwrap()
    })
}

/// A connection from `netns`, from `from` if given, to `to:port`.
pub(super) fn connect(
    netns: &Netns,
    from: Option<IpAddr>,
    to: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let to = SocketAddr::from((to.into(), port));
    let from = from.map(|from| SocketAddr::from((from, 0)));
    inside(netns, || {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        if let Some(from) = from {
            socket.bind(&from.into())?;
        }
        socket.connect_timeout(&to.into(), timeout)?;
        Ok(socket.into())
    })
}

/// Which family a setup filters: iptables' or ip6tables' tables, and
/// ipset's sets of that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    fn iptables(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    /// What ipset's set names end in.
    fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "",
            Self::V6 => "6",
        }
    }
}

/// A firewall setup under test: how its rules are loaded, hooked, read and
/// removed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Tool {
    Nft,
    /// ipset's sets, matched by the iptables and ip6tables rules its
    /// script suggests.
    Ipset,
    /// iptables' script, or ip6tables' for IPv6.
    Iptables,
}

impl Tool {
    pub(super) fn format(self, family: Family) -> &'static str {
        match self {
            Self::Nft => "nft",
            Self::Ipset => "ipset",
            Self::Iptables => family.iptables(),
        }
    }

    /// Loads `script` and hooks it in, with the commands its comments give
    /// (what must always pass ahead of the jump, as docs/firewall.md
    /// says, then the jump or the DROP rules).
    pub(super) fn apply(self, family: Family, netns: &Netns, script: &Path, text: &str) {
        let script = script.to_str().unwrap();
        match self {
            Self::Nft => netns.run("nft", &["-f", script]),
            Self::Ipset => netns.run("ipset", &["restore", "-f", script]),
            Self::Iptables => netns.run(
                &format!("{}-restore", family.iptables()),
                &["--noflush", script],
            ),
        };
        for command in text.lines().filter_map(|line| line.strip_prefix("#   ")) {
            shell(netns, command);
        }
    }

    /// The packets of `family` the chain (or rule) of `direction` dropped
    /// so far: of `protocol`, or of every protocol for `--any-port`
    /// rules, which drop them in one rule (nft counts every drop of the
    /// chain together, both families').
    pub(super) fn dropped(
        self,
        family: Family,
        netns: &Netns,
        direction: &str,
        protocol: Option<&str>,
    ) -> u64 {
        let matched = protocol.map_or_else(String::new, |protocol| format!("-p {protocol} "));
        let rule = match self {
            Self::Nft => {
                let chain = format!("allow_peers_v4_{direction}");
                let listed = netns.run("nft", &["list", "chain", "inet", "netmon", &chain]);
                let counter = listed
                    .split_once("counter packets ")
                    .unwrap_or_else(|| panic!("no counter in {listed}"))
                    .1;
                return counter.split(' ').next().unwrap().parse().unwrap();
            }
            Self::Iptables => {
                let chain = direction.to_uppercase();
                format!("-A NETMON-PEERS-{chain} {matched}-j DROP")
            }
            Self::Ipset => {
                let (hook, side) = if direction == "in" {
                    ("INPUT", "src")
                } else {
                    ("OUTPUT", "dst")
                };
                let side = if protocol.is_some() {
                    format!("{side},dst")
                } else {
                    side.to_owned()
                };
                let set = format!("netmon_peers_{direction}{}", family.suffix());
                format!("-A {hook} {matched}-m set ! --match-set {set} {side} -j DROP")
            }
        };
        let save = format!("{}-save", family.iptables());
        let saved = netns.run(&save, &["-c", "-t", "filter"]);
        let line = saved
            .lines()
            .find(|line| line.ends_with(&rule))
            .unwrap_or_else(|| panic!("no {rule:?} in\n{saved}"));
        let packets = line.trim_start_matches('[').split(':').next().unwrap();
        packets.parse().unwrap()
    }

    /// Removes the rules and the hooks of `directions` ("in", "out"), as
    /// docs/firewall.md says: both families' hooks, which the ipset
    /// script's comments add for both.
    pub(super) fn undo(self, family: Family, netns: &Netns, directions: &[&str]) {
        let mut commands = vec![];
        match self {
            Self::Nft => commands.push("nft delete table inet netmon".to_owned()),
            Self::Ipset | Self::Iptables => {
                for tool in ["iptables", "ip6tables"] {
                    commands.extend([format!("{tool} -F INPUT"), format!("{tool} -F OUTPUT")]);
                }
            }
        }
        for direction in directions {
            let chain = format!("NETMON-PEERS-{}", direction.to_uppercase());
            match self {
                Self::Nft => {}
                Self::Ipset => commands.extend([
                    format!("ipset destroy netmon_peers_{direction}"),
                    format!("ipset destroy netmon_peers_{direction}6"),
                ]),
                Self::Iptables => {
                    let tool = family.iptables();
                    commands.extend([format!("{tool} -F {chain}"), format!("{tool} -X {chain}")]);
                }
            }
        }
        for command in commands {
            shell(netns, &command);
        }
    }
}

/// Runs a command line as an admin would type it, inside `netns`.
fn shell(netns: &Netns, command: &str) {
    let path = std::env::var("PATH").unwrap_or_default();
    let output = Command::new(super::find("ip").unwrap())
        .args(["netns", "exec", &netns.name, "sh", "-c", command])
        .env("PATH", format!("{}:{path}", SBIN.join(":")))
        .output()
        .unwrap();
    check(command, output);
}

/// `netmon run --mode proc` in `netmon`'s namespace, under the host name
/// `name` (a UTS namespace of its own), ready.
fn collect(netns: &Netns, name: &str, checkpoint: &Path) -> Netmon {
    let mut command = fleet::command_in(&netns.name, name, env!("CARGO_BIN_EXE_netmon"));
    command
        .args(["run", "--mode", "proc", "--output"])
        .arg(checkpoint);
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    netmon
}

/// First `peers` collects alone while SEEN connects to our FLEET_SERVICE
/// (closed, client first, before the host's netmon starts: only `peers`'
/// file has it). Then the host records its connections: SEEN to our
/// SERVICE, we to SEEN's REMOTE, and we to our own address, held open
/// until netmon has stopped, so its last poll sees them whatever its
/// timing.
fn record(topology: &Topology, dir: &Path, fleet: &TcpListener) {
    let (host, peers) = (&topology.host, &topology.peers);
    let netmon = collect(peers, "peers", &dir.join("peers.json"));
    let client = connect(peers, Some(SEEN.into()), HOST, FLEET_SERVICE, CONNECTS)
        .expect("connections before any rule");
    let (server, _) = fleet.accept().unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    drop(client);
    drop(server);

    let netmon = collect(host, "host", &dir.join("host.json"));
    let held = [
        connect(peers, Some(SEEN.into()), HOST, SERVICE, CONNECTS),
        connect(host, None, SEEN, REMOTE, CONNECTS),
        connect(host, None, HOST, SERVICE, CONNECTS),
    ]
    .map(|stream| stream.expect("connections before any rule"));
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    drop(held);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn hooked_rules_pass_observed_pairs_and_drop_the_rest() {
    let topology = Topology::new();
    let (host, peers) = (&topology.host, &topology.peers);
    let fleet = listen(host, FLEET_SERVICE);
    let _listeners = [
        listen(host, SERVICE),
        listen(host, UNUSED_SERVICE),
        listen(peers, REMOTE),
        listen(peers, UNUSED_REMOTE),
    ];
    let dir = TempDir::new().unwrap();
    record(&topology, dir.path(), &fleet);
    let files = [dir.path().join("host.json"), dir.path().join("peers.json")];
    let recorded = read_peers(&files[0]);
    let ports_of = |peer, field: &str| recorded[&peer][field].as_array().unwrap().clone();
    for (peer, field, port) in [
        (SEEN, "local_ports", SERVICE),
        (SEEN, "remote_ports", REMOTE),
        (HOST, "remote_ports", SERVICE),
    ] {
        assert!(
            ports_of(peer, field).contains(&tcp_port(port)),
            "netmon did not record {peer} {field} {port}: {recorded:?}"
        );
    }
    assert!(
        !ports_of(SEEN, "local_ports").contains(&tcp_port(FLEET_SERVICE)),
        "the host's own file has the connection only peers' should: {recorded:?}"
    );
    let theirs = read_peers(&files[1]);
    assert!(
        theirs[&HOST]["remote_ports"]
            .as_array()
            .unwrap()
            .contains(&tcp_port(FLEET_SERVICE)),
        "peers' netmon did not record its connection to our FLEET_SERVICE: {theirs:?}"
    );

    for tool in [Tool::Nft, Tool::Ipset, Tool::Iptables] {
        // The host's rules from both files, without --direction: both
        // chains.
        let [ours, theirs] = files.each_ref().map(|path| path.to_str().unwrap());
        let format = tool.format(Family::V4);
        let text = netmon_rules(&["rules", "--host", "host", "--format", format, ours, theirs]);
        let script = dir.path().join(format);
        std::fs::write(&script, &text).unwrap();
        tool.apply(Family::V4, host, &script, &text);

        for (what, result) in [
            (
                "SEEN to our SERVICE",
                connect(peers, Some(SEEN.into()), HOST, SERVICE, CONNECTS),
            ),
            (
                "we to SEEN's REMOTE",
                connect(host, None, SEEN, REMOTE, CONNECTS),
            ),
            (
                "SEEN to our FLEET_SERVICE, in peers' file only",
                connect(peers, Some(SEEN.into()), HOST, FLEET_SERVICE, CONNECTS),
            ),
        ] {
            assert!(
                result.is_ok(),
                "{tool:?}: {what}, observed, must connect: {result:?}"
            );
        }
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
            // Our own address is an (outbound) peer: before port rules,
            // its `daddr` match on input let every stranger in.
            (
                "in",
                "UNSEEN to our own address, a peer",
                peers,
                Some(UNSEEN),
                HOST,
                UNUSED_SERVICE,
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
            let before = tool.dropped(Family::V4, host, direction, Some("tcp"));
            let result = connect(netns, from.map(IpAddr::from), to, port, DROPPED);
            assert!(
                result
                    .as_ref()
                    .is_err_and(|err| err.kind() == io::ErrorKind::TimedOut),
                "{tool:?}: {what} must be dropped: {result:?}"
            );
            let after = tool.dropped(Family::V4, host, direction, Some("tcp"));
            assert!(
                after > before,
                "{tool:?}: {what}: the {direction} drop counter stayed at {before}"
            );
        }
        tool.undo(Family::V4, host, &["in", "out"]);
        assert!(
            connect(peers, Some(UNSEEN.into()), HOST, SERVICE, CONNECTS).is_ok(),
            "{tool:?}: the undo must let everything through again"
        );
    }
}
