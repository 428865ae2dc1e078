//! IPv6 in the scripts: loaded by the real tools, and no family let
//! through whole.
//!
//! Before netmon recorded IPv6 peers, the nft chains began with `meta
//! nfproto ipv6 return` and the iptables and ipset scripts touched IPv4
//! only: once hooked, anyone reaching the host over IPv6 passed. Every
//! format's every statement, and every hook its comments suggest, is
//! read here: a rule that lets traffic through must name addresses (a set
//! or a block), or be one of the basics the runbook keeps ahead of the
//! jump (loopback, established connections, SSH, neighbour discovery).
//!
//! IPv6's sets and chains are loaded by nft, ipset and ip6tables-restore
//! and read back: each must hold exactly the fewest blocks covering the
//! peers, in IPv6's own set (nft's `ipv6_addr` set, ipset's `family
//! inet6`) or ip6tables' chain. No traffic is sent.
use std::{fs, net::Ipv6Addr, path::Path};

use netmon_scenario::files::{rfc3339, unix_now};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Netns, netmon_rules};

/// A checkpoint of IPv4 and IPv6 peers, each seen both ways: peers the
/// rules allow, and addresses no rule may hold.
fn checkpoint(dir: &Path) -> String {
    let now = rfc3339(unix_now());
    let peers: Vec<_> = ALLOWED
        .iter()
        .chain(NEVER)
        .map(|(ip, _)| {
            json!({"ip": ip, "first_seen": now, "last_seen": now, "outbound": 1, "inbound": 1,
                   "remote_ports": ["443/tcp", "53/udp"], "local_ports": ["22/tcp"]})
        })
        .collect();
    let file = json!({"version": 4, "host": "test", "updated": now,
                      "addresses": ["192.0.2.1", "2001:db8::1"], "peers": peers});
    let path = dir.join("peers.json");
    fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Peers, each with the block it must be allowed in. An IPv4-mapped
/// address is its IPv4 address, merging with its neighbour; a link-local
/// peer is allowed as observed (docs/firewall.md says why).
const ALLOWED: &[(&str, &str)] = &[
    ("192.0.2.7", "192.0.2.6/31"),
    ("::ffff:192.0.2.6", "192.0.2.6/31"),
    ("2001:db8::7", "2001:db8::6/127"),
    ("2001:db8::6", "2001:db8::6/127"),
    ("fe80::1", "fe80::1/128"),
];

/// Peers no rule may allow: loopback, unspecified, multicast, and the
/// host's own address.
const NEVER: &[(&str, &str)] = &[
    ("::1", "::1/128"),
    ("::", "::/128"),
    ("ff02::1", "ff02::1/128"),
    ("2001:db8::1", "2001:db8::1/128"),
];

/// Why `rule` (a statement, or a hook from the comments) lets a whole
/// family, or everything, through; `None` if it does not.
fn whole_family(rule: &str) -> Option<&'static str> {
    let words: Vec<_> = rule.split_whitespace().collect();
    let has = |word: &str| words.contains(&word);
    let lets_through = has("return") || has("accept") || has("RETURN") || has("ACCEPT");
    if rule.contains("nfproto") {
        return Some("matches a family");
    }
    if !lets_through {
        return None;
    }
    // What the hooks keep ahead of the jump, and the chains' leaving of
    // protocols netmon does not record to other rules.
    let basics = [
        "iif lo",
        "oif lo",
        "-i lo",
        "-o lo",
        "established",
        "ESTABLISHED",
        "dport 22",
        "sport 22",
        "icmpv6 type { nd-",
        "--icmpv6-type",
        "meta l4proto != { tcp, udp } return",
    ];
    let names_addresses = rule.contains(" @")
        || words
            .windows(2)
            .any(|pair| matches!(pair[0], "-s" | "-d") && pair[1].contains('/'));
    if names_addresses || basics.iter().any(|basic| rule.contains(basic)) {
        None
    } else {
        Some("lets packets through by no address")
    }
}

#[test]
fn no_rule_lets_a_whole_family_through() {
    let dir = TempDir::new().unwrap();
    let checkpoint = checkpoint(dir.path());
    for format in ["nft", "ipset", "iptables", "ip6tables"] {
        for any_port in [false, true] {
            let mut args = vec!["rules", "--format", format];
            if any_port {
                args.push("--any-port");
            }
            args.push(&checkpoint);
            let text = netmon_rules(&args);
            let rules = text
                .lines()
                .filter_map(|line| match line.strip_prefix("#   ") {
                    Some(hook) => Some(hook),
                    None => (!line.starts_with('#')).then_some(line),
                });
            for rule in rules {
                if let Some(why) = whole_family(rule) {
                    panic!("{format} (any port: {any_port}): {rule:?} {why}:\n{text}");
                }
            }
            // Each family's peers are in the script of each tool that
            // filters the family, and what no rule may allow is in none.
            let words: Vec<_> = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .collect();
            let filters = |block: &str| match format {
                "iptables" => !block.contains(':'),
                "ip6tables" => block.contains(':'),
                _ => true,
            };
            for (peer, block) in ALLOWED {
                assert_eq!(
                    words.contains(block),
                    filters(block),
                    "{format} (any port: {any_port}): {peer} as {block}:\n{text}"
                );
            }
            for (peer, block) in NEVER {
                assert!(
                    !words.contains(block),
                    "{format} (any port: {any_port}): {peer} allowed:\n{text}"
                );
            }
        }
    }
}

/// The checker itself: what the old scripts did is caught.
#[test]
fn the_check_catches_family_holes() {
    for hole in [
        "add rule inet netmon allow_peers_v4_in meta nfproto ipv6 return",
        "add rule inet netmon allow_peers_v4_in meta nfproto ipv6 accept",
        "-A NETMON-PEERS-IN -j RETURN",
        "ip6tables -A INPUT -j ACCEPT",
        "-A NETMON-PEERS-IN -p tcp -j ACCEPT",
    ] {
        assert!(whole_family(hole).is_some(), "{hole}");
    }
    for fine in [
        "add rule inet netmon allow_peers_v4_in ip6 saddr @peers_v4_in6 return",
        "-A NETMON-PEERS-IN -s 2001:db8::6/127 -p tcp -m tcp --dport 22 -j RETURN",
        "-A NETMON-PEERS-IN -p tcp -j DROP",
    ] {
        assert!(whole_family(fine).is_none(), "{fine}");
    }
}

/// Inbound peers (to our 22/tcp): a run of 18 adjacent addresses, which
/// no single block covers. Both ways: one address. Outbound (to their
/// 443/tcp): two adjacent /120s, which make a /119, and one address.
fn ipv6_peers() -> Vec<(Ipv6Addr, bool, bool)> {
    let run = |first: &str, count: u128, inbound, outbound| {
        let first = first.parse::<Ipv6Addr>().unwrap().to_bits();
        (first..first + count).map(move |bits| (Ipv6Addr::from_bits(bits), inbound, outbound))
    };
    run("fd00:1::3", 18, true, false)
        .chain(run("2001:db8::8:8", 1, true, true))
        .chain(run("fd00:7::", 512, false, true))
        .chain(run("fd00:9::9", 1, false, true))
        .collect()
}

/// The fewest blocks of each direction, worked out by hand.
const INBOUND: [&str; 6] = [
    "2001:db8::8:8/128",
    "fd00:1::3/128",
    "fd00:1::4/126",
    "fd00:1::8/125",
    "fd00:1::10/126",
    "fd00:1::14/128",
];
const OUTBOUND: [&str; 3] = ["2001:db8::8:8/128", "fd00:7::/119", "fd00:9::9/128"];

fn load_checkpoint(dir: &Path) -> String {
    let now = rfc3339(unix_now());
    let peers: Vec<_> = ipv6_peers()
        .into_iter()
        .map(|(ip, inbound, outbound)| {
            let ports = |seen: bool, port: &'static str| if seen { vec![port] } else { vec![] };
            json!({"ip": ip, "first_seen": now, "last_seen": now,
                   "outbound": u64::from(outbound), "inbound": u64::from(inbound),
                   "remote_ports": ports(outbound, "443/tcp"),
                   "local_ports": ports(inbound, "22/tcp")})
        })
        .collect();
    let file = json!({"version": 4, "host": "test", "updated": now, "peers": peers});
    let path = dir.join("peers.json");
    fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A block as a tool lists it (a bare address is a /128), in the form
/// netmon writes it.
fn normal(block: &str) -> String {
    let (addr, len) = block.split_once('/').unwrap_or((block, "128"));
    let addr: Ipv6Addr = addr.parse().unwrap();
    format!("{addr}/{len}")
}

/// Each direction's entries must be the fewest blocks, each on the
/// direction's port.
fn assert_blocks(tool: &str, direction: &str, entries: Vec<(String, u16)>) {
    let (expected, port): (&[&str], u16) = match direction {
        "in" => (&INBOUND, 22),
        _ => (&OUTBOUND, 443),
    };
    assert!(
        entries.iter().all(|(_, p)| *p == port),
        "{tool} {direction}: not all on {port}: {entries:?}"
    );
    let mut blocks: Vec<_> = entries.iter().map(|(block, _)| normal(block)).collect();
    let key = |block: &String| {
        let (addr, len) = block.split_once('/').unwrap();
        (
            addr.parse::<Ipv6Addr>().unwrap(),
            len.parse::<u8>().unwrap(),
        )
    };
    blocks.sort_by_key(key);
    assert_eq!(blocks, expected, "{tool} {direction}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn ipv6_sets_and_chains_load_the_fewest_blocks() {
    let dir = TempDir::new().unwrap();
    let checkpoint = load_checkpoint(dir.path());
    let script = |format: &str| {
        let path = dir.path().join(format);
        fs::write(
            &path,
            netmon_rules(&["rules", "--format", format, &checkpoint]),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let netns = Netns::new("load6");

    let nft = script("nft");
    netns.run("nft", &["-c", "-f", &nft]);
    netns.run("nft", &["-f", &nft]);
    netns.run("nft", &["-f", &nft]);
    for direction in ["in", "out"] {
        let set = format!("peers_v4_{direction}6");
        let listed: Value =
            serde_json::from_str(&netns.run("nft", &["-j", "list", "set", "inet", "netmon", &set]))
                .unwrap();
        let set_json = listed["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|item| item.get("set"))
            .expect("the set is listed");
        assert_eq!(
            set_json["type"],
            json!(["ipv6_addr", "inet_proto", "inet_service"])
        );
        let entries = set_json["elem"]
            .as_array()
            .unwrap()
            .iter()
            .map(|elem| {
                let parts = elem["concat"].as_array().expect("a concatenation");
                let block = match &parts[0] {
                    Value::String(addr) => addr.clone(),
                    prefix => format!(
                        "{}/{}",
                        prefix["prefix"]["addr"].as_str().unwrap(),
                        prefix["prefix"]["len"]
                    ),
                };
                assert_eq!(parts[1], "tcp", "{elem}");
                (block, u16::try_from(parts[2].as_u64().unwrap()).unwrap())
            })
            .collect();
        assert_blocks("nft", direction, entries);
        // IPv4's set is there too, empty: no peer of it was seen.
        let ipv4 = netns.run(
            "nft",
            &[
                "list",
                "set",
                "inet",
                "netmon",
                &format!("peers_v4_{direction}"),
            ],
        );
        assert!(!ipv4.contains("elements"), "{ipv4}");
    }

    let ipset = script("ipset");
    netns.run("ipset", &["restore", "-f", &ipset]);
    netns.run("ipset", &["restore", "-f", &ipset]);
    for direction in ["in", "out"] {
        let listed = netns.run("ipset", &["list", &format!("netmon_peers_{direction}6")]);
        assert!(listed.contains("Type: hash:net,port\n"), "{listed}");
        assert!(listed.contains(" family inet6 "), "{listed}");
        let entries = listed
            .lines()
            .skip_while(|line| *line != "Members:")
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(|member| {
                let (block, port) = member.split_once(",tcp:").expect(member);
                (block.to_owned(), port.parse().unwrap())
            })
            .collect();
        assert_blocks("ipset", direction, entries);
    }

    let ip6tables = script("ip6tables");
    netns.run("ip6tables-restore", &["--test", "--noflush", &ip6tables]);
    netns.run("ip6tables-restore", &["--noflush", &ip6tables]);
    netns.run("ip6tables-restore", &["--noflush", &ip6tables]);
    let saved = netns.run("ip6tables-save", &["-t", "filter"]);
    for (direction, option) in [("in", "-s"), ("out", "-d")] {
        let chain = format!("NETMON-PEERS-{}", direction.to_uppercase());
        let mut rules: Vec<_> = saved
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("-A {chain} ")))
            .collect();
        assert!(
            rules.ends_with(&["-p tcp -j DROP", "-p udp -j DROP"]),
            "{saved}"
        );
        rules.truncate(rules.len() - 2);
        let entries = rules
            .iter()
            .map(|rule| {
                let words: Vec<_> = rule.split_whitespace().collect();
                match words.as_slice() {
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
                    ] if *o == option => (block.to_string(), port.parse().unwrap()),
                    _ => panic!("unexpected rule {rule:?} in\n{saved}"),
                }
            })
            .collect();
        assert_blocks("ip6tables", direction, entries);
    }
    // And iptables' tables hold none of it.
    let ipv4 = netns.run("iptables-save", &["-t", "filter"]);
    assert!(!ipv4.contains("NETMON"), "{ipv4}");
}
