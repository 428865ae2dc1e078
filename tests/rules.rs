//! Integration tests of `netmon rules`: each format is loaded by the real
//! tool (nft, ipset, iptables-restore) inside a network namespace the test
//! creates and removes, read back, and compared with the peers.
//!
//! They need root and the nftables, ipset and iptables packages; `cargo
//! xtask test` installs those and runs them. Without them the tests fail
//! saying so. They send no traffic: they only load and list rules.
use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Output},
};

use netmon_scenario::files::{rfc3339, unix_now};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The tools the tests run, and where Debian installs them.
const TOOLS: [&str; 5] = ["ip", "nft", "ipset", "iptables-restore", "iptables-save"];
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
        let output = Command::new(find("ip").unwrap())
            .args(["netns", "exec", &self.name])
            .arg(find(tool).unwrap())
            .args(args)
            .output()
            .unwrap();
        check(&format!("{tool} {args:?}"), output)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(find("ip").unwrap_or_else(|| "ip".into()))
            .args(["netns", "delete", &self.name])
            .output();
    }
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
        Side::Either => &[INBOUND_ONLY, BOTH_WAYS, OUTBOUND_ONLY],
    };
    let mut blocks: Vec<_> = groups.concat();
    blocks.sort_by_key(|block| bounds(block));
    blocks
}

/// The cases: `--direction`, and the side of a packet it matches.
const CASES: [(Option<&str>, Side); 3] = [
    (Some("in"), Side::Source),
    (Some("out"), Side::Destination),
    (None, Side::Either),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
    Either,
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
                json!({"ip": ip, "first_seen": now, "last_seen": now,
                       "outbound": outbound, "inbound": inbound})
            })
            .collect();
        let file = json!({"version": 1, "host": "test", "updated": now, "peers": peers});
        let checkpoint = dir.path().join("peers.json");
        fs::write(&checkpoint, serde_json::to_vec(&file).unwrap()).unwrap();
        Self { dir, checkpoint }
    }

    /// `netmon rules` on the checkpoint, written to a file for the tool.
    fn rules(&self, format: &str, direction: Option<&str>) -> PathBuf {
        let mut args = vec!["rules", "--format", format];
        args.extend(direction.iter().flat_map(|d| ["--direction", d]));
        args.push(self.checkpoint.to_str().unwrap());
        let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
            .args(&args)
            .output()
            .unwrap();
        let script = self
            .dir
            .path()
            .join(format!("{format}-{}", direction.unwrap_or("any")));
        fs::write(&script, check(&format!("netmon {args:?}"), output)).unwrap();
        script
    }
}

/// The addresses a direction selects, straight from [`peers`].
fn expected_addresses(side: Side) -> BTreeSet<u32> {
    peers()
        .into_iter()
        .filter(|(_, seen)| match side {
            Side::Source => *seen != Seen::Out,
            Side::Destination => *seen != Seen::In,
            Side::Either => true,
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
/// each case, in one namespace made ready by `setup`.
fn each_case(format: &str, setup: impl FnOnce(&Netns), check: impl Fn(&Netns, &str, Side)) {
    let fixture = Fixture::new();
    let netns = Netns::new(format);
    setup(&netns);
    for (direction, side) in CASES {
        let script = fixture.rules(format, direction);
        check(&netns, script.to_str().unwrap(), side);
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn nft_loads_the_fewest_blocks_and_replaces_them_on_reapply() {
    each_case(
        "nft",
        |_| {},
        |netns, script, side| {
            netns.run("nft", &["-c", "-f", script]);
            // Twice: the second load must replace, not add to, the first.
            netns.run("nft", &["-f", script]);
            netns.run("nft", &["-f", script]);
            let listed: Value = serde_json::from_str(
                &netns.run("nft", &["-j", "list", "set", "inet", "netmon", "peers_v4"]),
            )
            .unwrap();
            let set = listed["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|item| item.get("set"))
                .expect("the set is listed");
            let loaded = set["elem"]
                .as_array()
                .unwrap()
                .iter()
                .map(|elem| match elem {
                    Value::String(addr) => addr.clone(),
                    _ => format!(
                        "{}/{}",
                        elem["prefix"]["addr"].as_str().unwrap(),
                        elem["prefix"]["len"]
                    ),
                })
                .collect();
            assert_loaded("nft", loaded, side);
            let chain = netns.run(
                "nft",
                &["list", "chain", "inet", "netmon", "allow_peers_v4"],
            );
            let matches: Vec<_> = ["saddr", "daddr"]
                .into_iter()
                .filter(|field| chain.contains(&format!("ip {field} @peers_v4 return")))
                .collect();
            let expected = match side {
                Side::Source => vec!["saddr"],
                Side::Destination => vec!["daddr"],
                Side::Either => vec!["saddr", "daddr"],
            };
            assert_eq!(matches, expected, "{chain}");
            assert_eq!(
                chain
                    .lines()
                    .filter(|l| l.trim().ends_with(" drop"))
                    .count(),
                1,
                "{chain}"
            );
            // Not hooked: loading filters nothing by itself.
            assert!(!netns.run("nft", &["list", "ruleset"]).contains("hook"));
        },
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn ipset_restores_the_fewest_blocks_and_swaps_on_reapply() {
    each_case(
        "ipset",
        |_| {},
        |netns, script, side| {
            netns.run("ipset", &["restore", "-f", script]);
            netns.run("ipset", &["restore", "-f", script]);
            let listed = netns.run("ipset", &["list", "netmon_peers"]);
            assert!(listed.contains("Type: hash:net"), "{listed}");
            let members = listed
                .lines()
                .skip_while(|line| *line != "Members:")
                .skip(1)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            assert_loaded("ipset", members, side);
            let sets = netns.run("ipset", &["list", "-n"]);
            assert_eq!(
                sets.trim(),
                "netmon_peers",
                "the swapped-out set is destroyed"
            );
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
    each_case("iptables", setup, |netns, script, side| {
        netns.run("iptables-restore", &["--test", "--noflush", script]);
        netns.run("iptables-restore", &["--noflush", script]);
        netns.run("iptables-restore", &["--noflush", script]);
        let saved = netns.run("iptables-save", &["-t", "filter"]);
        assert!(
            saved.contains("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
            "{saved}"
        );
        let rules: Vec<_> = saved
            .lines()
            .filter_map(|line| line.strip_prefix("-A NETMON-PEERS "))
            .collect();
        assert_eq!(rules.last(), Some(&"-j DROP"), "{saved}");
        let mut sources = Vec::new();
        let mut destinations = Vec::new();
        for rule in &rules[..rules.len() - 1] {
            let words: Vec<_> = rule.split_whitespace().collect();
            match words.as_slice() {
                ["-s", block, "-j", "RETURN"] => sources.push(block.to_string()),
                ["-d", block, "-j", "RETURN"] => destinations.push(block.to_string()),
                _ => panic!("unexpected rule {rule:?} in\n{saved}"),
            }
        }
        match side {
            Side::Source => assert!(destinations.is_empty(), "{saved}"),
            Side::Destination => assert!(sources.is_empty(), "{saved}"),
            Side::Either => assert_eq!(sources, destinations, "{saved}"),
        }
        let matched = if side == Side::Destination {
            destinations
        } else {
            sources
        };
        assert_loaded("iptables", matched, side);
    });
}

/// Rules allowing nobody would block everything once hooked: refused.
#[test]
fn an_empty_selection_is_refused() {
    let fixture = Fixture::new();
    let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(["rules", "--format", "nft", "--class", "multicast"])
        .arg(&fixture.checkpoint)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no peers match --class multicast"),
        "{stderr}"
    );
}

/// A built-in chain, a target or a keyword as `--name` would put the DROP
/// rule straight into the host's chain or give a script the tool refuses:
/// refused before any script is written, saying why.
#[test]
fn reserved_names_are_refused() {
    let fixture = Fixture::new();
    for (format, name, why) in [
        ("iptables", "INPUT", "built-in iptables chain"),
        ("iptables", "FORWARD", "built-in iptables chain"),
        ("iptables", "DROP", "iptables target"),
        ("iptables", "LOG", "iptables target"),
        ("nft", "drop", "nft keyword"),
        ("nft", "set", "nft keyword"),
        ("nft", "counter", "nft keyword"),
        ("ipset", "REJECT", "iptables target"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
            .args(["rules", "--format", format, "--name", name])
            .arg(&fixture.checkpoint)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{format} {name}");
        assert!(output.stdout.is_empty(), "{format} {name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--name") && stderr.contains(name) && stderr.contains(why),
            "{format} {name}: {stderr}"
        );
    }
}
