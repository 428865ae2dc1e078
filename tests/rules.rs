//! Integration tests of `netmon rules`: each format is loaded by the real
//! tool (nft, ipset, iptables-restore) inside a network namespace the test
//! creates and removes, read back, and compared with the peers; then
//! (`enforce.rs`, and for UDP `enforce_udp.rs`) hooked in, with real
//! software across veth pairs between namespaces the test creates.
//!
//! They need root and the nftables, ipset and iptables packages; `cargo
//! xtask test` installs those and runs them. Without them the tests fail
//! saying so. The loading tests send no traffic.
#[path = "rules/enforce.rs"]
mod enforce;
#[path = "rules/ipv6.rs"]
mod ipv6;
#[path = "rules/refusals.rs"]
mod refusals;

use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, Output},
};

use netmon_scenario::files::{rfc3339, unix_now};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The tools the tests run, and where Debian installs them.
const TOOLS: [&str; 7] = [
    "ip",
    "nft",
    "ipset",
    "iptables-restore",
    "iptables-save",
    "ip6tables-restore",
    "ip6tables-save",
];
const SBIN: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Fails the test, with what to do, unless it can create namespaces and
/// every tool is installed.
fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the rules tests create a network namespace and need root (cargo xtask test runs them so)"
    );
    let missing: Vec<_> = TOOLS.iter().filter(|tool| find(tool).is_none()).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install them with `apt-get install -y iproute2 nftables ipset iptables` \
         (cargo xtask test does)"
    );
}

fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

fn check(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A network namespace of this test's own, deleted when dropped, so no
/// rule the tests load ever touches the host's firewall.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        require_root_and_tools();
        let name = format!("netmon-test-rules-{}-{tag}", std::process::id());
        let ip = find("ip").unwrap();
        // A namespace left by a crashed run with the same pid would clash.
        let _ = Command::new(&ip).args(["netns", "delete", &name]).output();
        check(
            "ip netns add",
            Command::new(&ip)
                .args(["netns", "add", &name])
                .output()
                .unwrap(),
        );
        Self { name }
    }

    /// Runs `tool` inside the namespace; its stdout, or a failed test.
    fn run(&self, tool: &str, args: &[&str]) -> String {
        check(&format!("{tool} {args:?}"), self.try_run(tool, args))
    }

    /// Runs `tool` inside the namespace, whatever comes of it.
    fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(find("ip").unwrap())
            .args(["netns", "exec", &self.name])
            .arg(find(tool).unwrap())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(find("ip").unwrap_or_else(|| "ip".into()))
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Two namespaces of the test's own joined by a veth pair, `links.0` in
/// the first and `links.1` in the second, each end with its addresses
/// (IPv6 ones `nodad`, usable at once) and up before the first packet.
/// Deleting the namespaces deletes the pair.
fn veth_pair(
    names: (&str, &str),
    links: (&str, &str),
    addrs: (&[IpAddr], &[IpAddr]),
) -> (Netns, Netns) {
    let (first, second) = (Netns::new(names.0), Netns::new(names.1));
    let veth = [
        "link", "add", links.0, "type", "veth", "peer", "name", links.1,
    ];
    first.run("ip", &[&veth[..], &["netns", &second.name]].concat());
    for (netns, link, addrs) in [(&first, links.0, addrs.0), (&second, links.1, addrs.1)] {
        for addr in addrs {
            let (addr, nodad) = match addr {
                IpAddr::V4(_) => (format!("{addr}/24"), None),
                IpAddr::V6(_) => (format!("{addr}/64"), Some("nodad")),
            };
            let add = ["addr", "add", &addr, "dev", link];
            netns.run("ip", &[&add[..], nodad.as_slice()].concat());
        }
        netns.run("ip", &["link", "set", link, "up"]);
        netns.run("ip", &["link", "set", "lo", "up"]);
    }
    (first, second)
}

/// Who opened the connections to a group of peers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    In,
    Out,
    Both,
}

/// The peers: a run of adjacent addresses that no single block covers,
/// isolated addresses, and whole /24s, two of which make a /23.
fn peers() -> Vec<(Ipv4Addr, Seen)> {
    let range = |first: [u8; 4], count: u32, seen| {
        let first = Ipv4Addr::from(first).to_bits();
        (first..first + count).map(move |bits| (Ipv4Addr::from_bits(bits), seen))
    };
    range([10, 1, 0, 3], 18, Seen::In)
        .chain(range([8, 8, 8, 8], 1, Seen::Both))
        .chain(range([10, 9, 9, 9], 1, Seen::Out))
        .chain(range([172, 16, 5, 1], 1, Seen::Out))
        .chain(range([192, 168, 7, 0], 512, Seen::Out))
        .chain(range([192, 168, 10, 0], 512, Seen::Out))
        .collect()
}

/// The fewest blocks covering each group of [`peers`], worked out by hand:
/// no block of one group can merge with a block of another.
const INBOUND_ONLY: &[&str] = &[
    "10.1.0.3/32",
    "10.1.0.4/30",
    "10.1.0.8/29",
    "10.1.0.16/30",
    "10.1.0.20/32",
];
const BOTH_WAYS: &[&str] = &["8.8.8.8/32"];
const OUTBOUND_ONLY: &[&str] = &[
    "10.9.9.9/32",
    "172.16.5.1/32",
    "192.168.7.0/24",
    "192.168.8.0/24",
    "192.168.10.0/23",
];

/// The fewest blocks for the peers `side` selects, in numeric order.
fn minimal(side: Side) -> Vec<&'static str> {
    let groups: &[&[&str]] = match side {
        Side::Source => &[INBOUND_ONLY, BOTH_WAYS],
        Side::Destination => &[OUTBOUND_ONLY, BOTH_WAYS],
    };
    let mut blocks: Vec<_> = groups.concat();
    blocks.sort_by_key(|block| bounds(block));
    blocks
}

/// The port each direction's peers were seen on: inbound to our SSH,
/// outbound to their HTTPS.
const INBOUND_PORT: u16 = 22;
const OUTBOUND_PORT: u16 = 443;

/// The cases: `--direction`, and the chains it gives, each matching one
/// side of a packet.
const CASES: [(Option<&str>, &[Side]); 3] = [
    (Some("in"), &[Side::Source]),
    (Some("out"), &[Side::Destination]),
    (None, &[Side::Source, Side::Destination]),
];

/// Which address of a packet a chain matches: the source on input, the
/// destination on output, never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

impl Side {
    /// What the chain's and set's names end in, as nft and ipset, and as
    /// iptables, name them.
    fn suffix(self) -> (&'static str, &'static str) {
        match self {
            Self::Source => ("_in", "-IN"),
            Self::Destination => ("_out", "-OUT"),
        }
    }

    /// The port its peers were seen on.
    fn port(self) -> u16 {
        match self {
            Self::Source => INBOUND_PORT,
            Self::Destination => OUTBOUND_PORT,
        }
    }
}

/// Whether a script allows pairs (the default) or addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ports {
    Observed,
    Any,
}

/// A checkpoint of [`peers`] in a temporary directory.
struct Fixture {
    dir: TempDir,
    checkpoint: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let now = rfc3339(unix_now());
        let peers: Vec<_> = peers()
            .into_iter()
            .map(|(ip, seen)| {
                let (outbound, inbound) = match seen {
                    Seen::In => (0, 1),
                    Seen::Out => (1, 0),
                    Seen::Both => (1, 1),
                };
                let ports = |count: u64, port: u16| if count > 0 { vec![port] } else { vec![] };
                json!({"ip": ip, "first_seen": now, "last_seen": now,
                       "outbound": outbound, "inbound": inbound,
                       "remote_ports": ports(outbound, OUTBOUND_PORT),
                       "local_ports": ports(inbound, INBOUND_PORT)})
            })
            .collect();
        let file = json!({"version": 1, "host": "test", "updated": now, "peers": peers});
        let checkpoint = dir.path().join("peers.json");
        fs::write(&checkpoint, serde_json::to_vec(&file).unwrap()).unwrap();
        Self { dir, checkpoint }
    }

    /// `netmon rules` on the checkpoint, written to a file for the tool.
    fn rules(&self, format: &str, direction: Option<&str>, ports: Ports) -> PathBuf {
        let mut args = vec!["rules", "--format", format];
        args.extend(direction.iter().flat_map(|d| ["--direction", d]));
        if ports == Ports::Any {
            args.push("--any-port");
        }
        args.push(self.checkpoint.to_str().unwrap());
        let script = self.dir.path().join(format!(
            "{format}-{}-{ports:?}",
            direction.unwrap_or("both")
        ));
        fs::write(&script, netmon_rules(&args)).unwrap();
        script
    }
}

/// What `netmon ARGS` printed; a failed test if it failed.
fn netmon_rules(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(args)
        .output()
        .unwrap();
    check(&format!("netmon {args:?}"), output)
}

/// The addresses a direction selects, straight from [`peers`].
fn expected_addresses(side: Side) -> BTreeSet<u32> {
    peers()
        .into_iter()
        .filter(|(_, seen)| match side {
            Side::Source => *seen != Seen::Out,
            Side::Destination => *seen != Seen::In,
        })
        .map(|(ip, _)| ip.to_bits())
        .collect()
}

/// `a.b.c.d/len` (or a bare address, a /32) as (first, last) address.
fn bounds(block: &str) -> (u32, u32) {
    let (addr, len) = block.split_once('/').unwrap_or((block, "32"));
    let first = addr.parse::<Ipv4Addr>().unwrap().to_bits();
    let len: u32 = len.parse().unwrap();
    let size = 1u64 << (32 - len);
    assert_eq!(u64::from(first) % size, 0, "{block} is not aligned");
    (first, u32::try_from(u64::from(first) + size - 1).unwrap())
}

/// What a tool reports back: the blocks must be exactly the minimal ones,
/// and cover exactly the selected peers.
fn assert_loaded(tool: &str, mut loaded: Vec<String>, side: Side) {
    let normal = |block: &str| {
        let (first, last) = bounds(block);
        let len = 32 - (u64::from(last) - u64::from(first) + 1).ilog2();
        (first, format!("{}/{len}", Ipv4Addr::from_bits(first)))
    };
    let mut blocks: Vec<_> = loaded.drain(..).map(|block| normal(&block)).collect();
    blocks.sort();
    let names: Vec<_> = blocks.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        minimal(side),
        "{tool} holds other blocks than the fewest for {side:?}"
    );
    let covered: BTreeSet<u32> = names
        .iter()
        .flat_map(|block| {
            let (first, last) = bounds(block);
            first..=last
        })
        .collect();
    assert!(
        covered == expected_addresses(side),
        "{tool}: the blocks for {side:?} cover other addresses than the peers"
    );
}

/// Runs `check` on the script `netmon rules --format FORMAT` writes for
/// each case, by pairs and by address, in one namespace made ready by
/// `setup`.
fn each_case(
    format: &str,
    setup: impl FnOnce(&Netns),
    check: impl Fn(&Netns, &str, &[Side], Ports),
) {
    let fixture = Fixture::new();
    let netns = Netns::new(format);
    setup(&netns);
    for ports in [Ports::Observed, Ports::Any] {
        for (direction, sides) in CASES {
            let script = fixture.rules(format, direction, ports);
            check(&netns, script.to_str().unwrap(), sides, ports);
        }
    }
}

/// Loaded entries, each a block and, for pair rules, a TCP port: they
/// must be the fewest blocks for `side`, each on its port.
fn assert_entries(tool: &str, entries: Vec<(String, Option<u16>)>, side: Side, ports: Ports) {
    let port = match ports {
        Ports::Observed => Some(side.port()),
        Ports::Any => None,
    };
    assert!(
        entries.iter().all(|(_, p)| *p == port),
        "{tool}: {side:?} entries not all on {port:?}: {entries:?}"
    );
    assert_loaded(
        tool,
        entries.into_iter().map(|(block, _)| block).collect(),
        side,
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn nft_loads_the_fewest_blocks_and_replaces_them_on_reapply() {
    each_case(
        "nft",
        |_| {},
        |netns, script, sides, ports| {
            // A set's type differs between pairs and addresses.
            let _ = netns.try_run("nft", &["delete", "table", "inet", "netmon"]);
            netns.run("nft", &["-c", "-f", script]);
            // Twice: the second load must replace, not add to, the first.
            netns.run("nft", &["-f", script]);
            netns.run("nft", &["-f", script]);
            for &side in sides {
                let set = format!("peers_v4{}", side.suffix().0);
                let listed: Value = serde_json::from_str(
                    &netns.run("nft", &["-j", "list", "set", "inet", "netmon", &set]),
                )
                .unwrap();
                let set_json = listed["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find_map(|item| item.get("set"))
                    .expect("the set is listed");
                let entries = set_json["elem"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|elem| nft_entry(elem, ports))
                    .collect();
                assert_entries("nft", entries, side, ports);
                let chain = netns.run(
                    "nft",
                    &["list", "chain", "inet", "netmon", &format!("allow_{set}")],
                );
                let (field, other) = match side {
                    Side::Source => ("saddr", "daddr"),
                    Side::Destination => ("daddr", "saddr"),
                };
                let matched = match ports {
                    Ports::Observed => {
                        format!("ip {field} . meta l4proto . th dport @{set} return")
                    }
                    Ports::Any => format!("ip {field} @{set} return"),
                };
                assert!(chain.contains(&matched), "{chain}");
                assert!(!chain.contains(other), "{chain}");
                assert_eq!(
                    chain
                        .lines()
                        .filter(|l| l.trim().ends_with(" drop"))
                        .count(),
                    1,
                    "{chain}"
                );
            }
            let ruleset = netns.run("nft", &["list", "ruleset"]);
            // Not hooked: loading filters nothing by itself.
            assert!(!ruleset.contains("hook"), "{ruleset}");
            assert_eq!(
                ruleset.matches("\tchain ").count(),
                sides.len(),
                "{ruleset}"
            );
        },
    );
}

/// An element of nft's JSON listing as (block, port): a prefix or an
/// address, alone or concatenated with a protocol and a port.
fn nft_entry(elem: &Value, ports: Ports) -> (String, Option<u16>) {
    let block = |value: &Value| match value {
        Value::String(addr) => addr.clone(),
        _ => format!(
            "{}/{}",
            value["prefix"]["addr"].as_str().unwrap(),
            value["prefix"]["len"]
        ),
    };
    match ports {
        Ports::Any => (block(elem), None),
        Ports::Observed => {
            let parts = elem["concat"].as_array().expect("a concatenation");
            assert_eq!(parts[1], "tcp", "{elem}");
            let port = u16::try_from(parts[2].as_u64().unwrap()).unwrap();
            (block(&parts[0]), Some(port))
        }
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn ipset_restores_the_fewest_blocks_and_swaps_on_reapply() {
    each_case(
        "ipset",
        |_| {},
        |netns, script, sides, ports| {
            // A set's type differs between pairs and addresses.
            let _ = netns.try_run("ipset", &["destroy"]);
            netns.run("ipset", &["restore", "-f", script]);
            netns.run("ipset", &["restore", "-f", script]);
            let mut names = Vec::new();
            for &side in sides {
                let set = format!("netmon_peers{}", side.suffix().0);
                let listed = netns.run("ipset", &["list", &set]);
                let kind = match ports {
                    Ports::Observed => "Type: hash:net,port\n",
                    Ports::Any => "Type: hash:net\n",
                };
                assert!(listed.contains(kind), "{listed}");
                let entries = listed
                    .lines()
                    .skip_while(|line| *line != "Members:")
                    .skip(1)
                    .filter(|line| !line.is_empty())
                    .map(|member| match member.split_once(",tcp:") {
                        Some((block, port)) => (block.to_owned(), Some(port.parse().unwrap())),
                        None => (member.to_owned(), None),
                    })
                    .collect();
                assert_entries("ipset", entries, side, ports);
                // IPv6's set beside it, empty: these peers are IPv4's.
                let listed = netns.run("ipset", &["list", &format!("{set}6")]);
                assert!(listed.contains(" family inet6 "), "{listed}");
                assert!(listed.ends_with("Members:\n"), "{listed}");
                names.extend([set.clone(), format!("{set}6")]);
            }
            let mut sets: Vec<_> = netns
                .run("ipset", &["list", "-n"])
                .lines()
                .map(str::to_owned)
                .collect();
            sets.sort();
            assert_eq!(sets, names, "the swapped-out sets are destroyed");
        },
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn iptables_restores_the_fewest_blocks_and_keeps_other_rules() {
    // An admin's rule, which --noflush must keep.
    let admin_rule = ["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"];
    let setup = |netns: &Netns| {
        netns.run("iptables", &admin_rule);
    };
    each_case("iptables", setup, |netns, script, sides, ports| {
        netns.run("iptables-restore", &["--test", "--noflush", script]);
        netns.run("iptables-restore", &["--noflush", script]);
        netns.run("iptables-restore", &["--noflush", script]);
        let saved = netns.run("iptables-save", &["-t", "filter"]);
        assert!(
            saved.contains("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
            "{saved}"
        );
        for &side in sides {
            let chain = format!("NETMON-PEERS{}", side.suffix().1);
            let mut rules: Vec<_> = saved
                .lines()
                .filter_map(|line| line.strip_prefix(&format!("-A {chain} ")))
                .collect();
            let drops: &[&str] = match ports {
                Ports::Observed => &["-p tcp -j DROP", "-p udp -j DROP"],
                Ports::Any => &["-j DROP"],
            };
            assert!(rules.ends_with(drops), "{saved}");
            rules.truncate(rules.len() - drops.len());
            let (option, other) = match side {
                Side::Source => ("-s", "-d"),
                Side::Destination => ("-d", "-s"),
            };
            let entries = rules
                .iter()
                .map(|rule| {
                    let words: Vec<_> = rule.split_whitespace().collect();
                    assert!(!words.contains(&other), "{rule}");
                    match words.as_slice() {
                        [o, block, "-j", "RETURN"] if *o == option => (block.to_string(), None),
                        [
                            o,
                            block,
                            "-p",
                            "tcp",
                            "-m",
                            "tcp",
                            "--dport",
                            port,
                            "-j",
                            "RETURN",
                        ] if *o == option => (block.to_string(), Some(port.parse().unwrap())),
                        _ => panic!("unexpected rule {rule:?} in\n{saved}"),
                    }
                })
                .collect();
            assert_entries("iptables", entries, side, ports);
        }
    });
}
